//! Tests of the checkpoint model.
//!
//! - `fixtures/checkpoint/in/NAME.xml` is parsed, prepared against a
//!   domain and formatted; the result must equal `out/NAME.xml`.
//! - `fixtures/checkpoint/err/NAME.xml` must fail with the triple in
//!   `err/NAME.err` (`code:`, `domain:`, `message:` as virsh prints it after
//!   `error: `).
//!
//!   The first line of a leading comment in the input sets up the case:
//!   `<!-- redefine domain=domain-ro.xml` parses with REDEFINE and
//!   prepares against `fixtures/checkpoint/domain-ro.xml`. Without it: a
//!   plain create against `domain.xml` (the captures' `cpvm`), at
//!   [`NOW`].
//! - `reference.rs` holds the comparisons with the libvirtd captures.

mod reference;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::*;
use crate::conf::error::ConfErrorKind;
use crate::conf::test_support::{describe, fixtures, libvirt_message, read, NOW};

fn domain(file: &str) -> DomainDef {
    crate::conf::test_support::domain("checkpoint", file)
}

/// Parse and prepare as the driver would, with the directives of the
/// input's leading comment.
fn run_case(xml: &str) -> Result<CheckpointDef, ConfError> {
    // The first line of a leading comment; the rest is for the reader.
    let directives = xml
        .trim_start()
        .strip_prefix("<!--")
        .and_then(|rest| rest.split_once("-->"))
        .and_then(|(d, _)| d.lines().next())
        .unwrap_or("");
    let redefine = directives.split_whitespace().any(|w| w == "redefine");
    let domain_file = directives
        .split_whitespace()
        .find_map(|w| w.strip_prefix("domain="))
        .unwrap_or("domain.xml");
    let dom = domain(domain_file);
    let parsed = CheckpointDef::parse(xml, ParseFlags { redefine }, NOW)?;
    if redefine {
        parsed.prepare_redefine(&dom)
    } else {
        parsed.prepare_create(&dom)
    }
}

fn xml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures().join("checkpoint").join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    v.sort();
    v
}

#[test]
fn golden_in_out() {
    let files = xml_files("in");
    assert!(!files.is_empty());
    for input in files {
        let name = input
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let def = run_case(&read(&input)).unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        let out = def.format(&FormatFlags::default());
        let want = read(&fixtures().join("checkpoint/out").join(name));
        assert_eq!(out, want, "{name}");

        // What we write, we read back as the same definition; except that
        // a creation time of 0 is not written, and a redefine needs one
        // (libvirt cannot reload such a checkpoint either).
        if def.creation_time() == 0 {
            continue;
        }
        let again = CheckpointDef::parse(&out, ParseFlags { redefine: true }, 0)
            .unwrap_or_else(|e| panic!("{name} reparse: {}", describe(&e)))
            .loaded();
        assert_eq!(again.format(&FormatFlags::default()), out, "{name} reparse");
    }
}

#[test]
fn errors_match_sidecars() {
    let files = xml_files("err");
    assert!(!files.is_empty());
    for input in files {
        let want = read(&input.with_extension("err"));
        let got = run_case(&read(&input)).expect_err(&format!("{} should fail", input.display()));
        assert_eq!(describe(&got), want, "{}", input.display());
    }
}

#[test]
fn accessors_give_what_the_driver_needs() {
    let xml = "<domaincheckpoint><name>cp1</name><description>d</description>\
        <disks><disk name='vda'/><disk name='vdb'/></disks></domaincheckpoint>";
    let parsed = CheckpointDef::parse(xml, ParseFlags::default(), NOW).expect("parses");
    assert_eq!(
        (parsed.name(), parsed.parent(), parsed.has_domain()),
        ("cp1", None, false)
    );
    let mut def = parsed
        .prepare_create(&domain("domain.xml"))
        .expect("prepares");
    assert_eq!(def.name(), "cp1");
    assert_eq!(def.description(), Some("d"));
    assert_eq!(def.creation_time(), NOW);
    assert_eq!(def.parent(), None);
    assert_eq!(def.domain().map(DomainDef::name), Some("cpvm"));
    let bitmaps: Vec<_> = def.bitmaps().collect();
    assert_eq!(bitmaps, vec![("vda", "cp1"), ("vdb", "cp1")]);
    let disks: Vec<_> = def.disks().iter().map(|d| (d.name(), d.bitmap())).collect();
    assert_eq!(
        disks,
        vec![("vda", Some("cp1")), ("vdb", Some("cp1")), ("vdc", None)]
    );

    def.set_parent(Some("cp0".to_owned()));
    assert_eq!(def.parent(), Some("cp0"));
    let text = def.format(&FormatFlags {
        no_domain: true,
        ..FormatFlags::default()
    });
    assert!(text.contains("  <parent>\n    <name>cp0</name>\n  </parent>\n"));
    assert!(!text.contains("<domain "));
}

#[test]
fn redefine_keeps_the_parent_for_the_driver_to_check() {
    let xml = "<domaincheckpoint><name>c2</name><parent><name>c1</name></parent>\
        <creationTime>5</creationTime></domaincheckpoint>";
    let parsed = CheckpointDef::parse(xml, ParseFlags { redefine: true }, NOW).expect("parses");
    assert_eq!(parsed.parent(), Some("c1"));
    let def = parsed
        .prepare_redefine(&domain("domain.xml"))
        .expect("prepares");
    assert_eq!(
        (def.parent(), def.creation_time(), def.domain()),
        (Some("c1"), 5, None)
    );

    // A plain create takes neither the parent nor the time.
    let parsed = CheckpointDef::parse(xml, ParseFlags::default(), NOW).expect("parses");
    assert_eq!(parsed.parent(), None);
}

#[test]
fn sizes_only_for_measured_bitmaps() {
    let xml = "<domaincheckpoint><name>cp2</name><disks><disk name='vda'/>\
        <disk name='vdb'/></disks></domaincheckpoint>";
    let def = CheckpointDef::parse(xml, ParseFlags::default(), NOW)
        .and_then(|p| p.prepare_create(&domain("domain.xml")))
        .expect("prepares");
    // vdb's bitmap could not be measured (missing): no size=, as libvirt.
    let sizes = BTreeMap::from([("vda".to_owned(), 0u64), ("vdc".to_owned(), 9)]);
    let text = def.format(&FormatFlags {
        no_domain: true,
        sizes: Some(&sizes),
        ..FormatFlags::default()
    });
    assert!(text.contains("<disk name='vda' checkpoint='bitmap' bitmap='cp2' size='0'/>"));
    assert!(text.contains("<disk name='vdb' checkpoint='bitmap' bitmap='cp2'/>"));
    assert!(text.contains("<disk name='vdc' checkpoint='no'/>"));
}

#[test]
fn a_path_naming_two_disks_names_none() {
    let xml = read(&fixtures().join("checkpoint/domain.xml"))
        .replace("/tmp/cpref/vdb.qcow2", "/tmp/cpref/vda.qcow2");
    let dom = DomainDef::parse(&xml).expect("two disks, one image");
    let cp = "<domaincheckpoint><name>c</name><disks>\
        <disk name='/tmp/cpref/vda.qcow2'/></disks></domaincheckpoint>";
    let e = CheckpointDef::parse(cp, ParseFlags::default(), NOW)
        .and_then(|p| p.prepare_create(&dom))
        .expect_err("ambiguous");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: no disk named '/tmp/cpref/vda.qcow2'"
    );
}

#[test]
fn loaded_metadata_is_taken_as_written() {
    let xml = "<domaincheckpoint><name>c</name><creationTime>7</creationTime><disks>\
        <disk name='vdq'/><disk name='vda' checkpoint='no'/></disks></domaincheckpoint>";
    let def = CheckpointDef::parse(xml, ParseFlags { redefine: true }, NOW)
        .expect("parses")
        .loaded();
    let disks: Vec<_> = def.disks().iter().map(|d| (d.name(), d.bitmap())).collect();
    assert_eq!(disks, vec![("vdq", Some("c")), ("vda", None)]);
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let e =
        CheckpointDef::parse(&"<a>".repeat(100_000), ParseFlags::default(), NOW).expect_err("deep");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
    assert_eq!(e.domain().code(), 69);

    let huge = format!(
        "<domaincheckpoint><description>{}</description></domaincheckpoint>",
        "x".repeat(11 * 1024 * 1024)
    );
    let e = CheckpointDef::parse(&huge, ParseFlags::default(), NOW).expect_err("huge");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);

    // More disks than the domain has are refused before any lookup.
    let many = format!(
        "<domaincheckpoint><disks>{}</disks></domaincheckpoint>",
        "<disk name='vda'/>".repeat(50_000)
    );
    let e = CheckpointDef::parse(&many, ParseFlags::default(), NOW)
        .and_then(|p| p.prepare_create(&domain("domain.xml")))
        .expect_err("many");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: too many disk checkpoint requests for domain"
    );

    // The embedded domain of a redefine is bounded like any document: a
    // billion laughs never starts (no DTDs), deep nesting inside it is
    // refused by depth.
    let deep = format!(
        "<domaincheckpoint><name>c</name><creationTime>1</creationTime><domain type='qemu'>{}{}</domain></domaincheckpoint>",
        "<x>".repeat(300),
        "</x>".repeat(300)
    );
    let e =
        CheckpointDef::parse(&deep, ParseFlags { redefine: true }, NOW).expect_err("deep domain");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
}
