//! Tests of the snapshot model.
//!
//! - `fixtures/snapshot/in/NAME.xml` is parsed, checked, prepared against a
//!   domain and formatted; the result must equal `out/NAME.xml`.
//! - `fixtures/snapshot/err/NAME.xml` must fail with the triple in
//!   `err/NAME.err` (`code:`, `domain:`, `message:` as virsh prints it after
//!   `error: `).
//!
//!   The first line of a leading comment sets the case up (words, in any
//!   order): `create` or `redefine`; the flags `disk-only`, `validate`,
//!   `no-metadata`, `live`, `internal`; `inactive` (the domain is shut off;
//!   otherwise it runs); `not-regular` (no disk source is a regular file);
//!   `domain=FILE` (instead of `domain.xml`, the captures' `snvm`);
//!   `existing=FILE` (a redefine replaces that snapshot, read as the
//!   daemon's own metadata). After a colon comes prose. The clock is
//!   [`NOW`].
//!   With `SNAPSHOT_BLESS=1` in the environment the expected files are
//!   (re)written instead of compared: review the diff before committing.
//! - `reference.rs` holds the comparisons with the libvirtd captures.

mod reference;

use std::fs;
use std::path::PathBuf;

use super::*;
use crate::conf::error::ConfErrorKind;
use crate::conf::test_support::{describe, fixtures, libvirt_message, read, NOW};

fn domain(file: &str) -> DomainDef {
    crate::conf::test_support::domain("snapshot", file)
}

/// A case's set-up, from the first line of its leading comment.
#[derive(Default)]
struct Setup {
    redefine: bool,
    disk_only: bool,
    validate: bool,
    no_metadata: bool,
    live: bool,
    internal: bool,
    inactive: bool,
    not_regular: bool,
    domain: Option<String>,
    existing: Option<String>,
}

impl Setup {
    fn of(xml: &str) -> Self {
        let line = xml
            .trim_start()
            .strip_prefix("<!--")
            .and_then(|rest| rest.split_once("-->"))
            .and_then(|(d, _)| d.lines().next())
            .unwrap_or("");
        // What follows a colon is for the reader.
        let line = line.split_once(':').map_or(line, |(words, _)| words);
        let mut s = Setup::default();
        for word in line.split_whitespace() {
            match word {
                "redefine" => s.redefine = true,
                "disk-only" => s.disk_only = true,
                "validate" => s.validate = true,
                "no-metadata" => s.no_metadata = true,
                "live" => s.live = true,
                "internal" => s.internal = true,
                "inactive" => s.inactive = true,
                "not-regular" => s.not_regular = true,
                w => {
                    if let Some(f) = w.strip_prefix("domain=") {
                        s.domain = Some(f.to_owned());
                    } else if let Some(f) = w.strip_prefix("existing=") {
                        s.existing = Some(f.to_owned());
                    }
                }
            }
        }
        s
    }
}

/// Read back what we wrote, as the daemon reads its own metadata.
fn load(xml: &str) -> SnapshotDef {
    SnapshotDef::parse(
        xml,
        ParseFlags {
            redefine: true,
            ..ParseFlags::default()
        },
        0,
    )
    .unwrap_or_else(|e| panic!("reload: {}", describe(&e)))
    .loaded()
}

/// Parse, check and prepare as the driver would.
fn run_case(xml: &str) -> Result<(SnapshotDef, Uuid), ConfError> {
    let s = Setup::of(xml);
    let dom = domain(s.domain.as_deref().unwrap_or("domain.xml"));
    let active = !s.inactive;
    let state = if active {
        SnapshotState::Running
    } else {
        SnapshotState::Shutoff
    };
    let parsed = SnapshotDef::parse(
        xml,
        ParseFlags {
            redefine: s.redefine,
            offline: s.disk_only || s.inactive,
            validate: s.validate,
            internal: s.internal,
        },
        NOW,
    )?;
    let flags = CreateFlags {
        redefine: s.redefine,
        no_metadata: s.no_metadata,
        disk_only: s.disk_only,
        live: s.live,
    };
    parsed.check_create(flags, active, state)?;
    let regular = |_: &str| !s.not_regular;
    let def = if s.redefine {
        let existing = s
            .existing
            .as_deref()
            .map(|f| load(&read(&fixtures().join("snapshot").join(f))));
        parsed.prepare_redefine(dom.uuid(), existing.as_ref(), s.disk_only, &regular)?
    } else {
        let ctx = CreateContext {
            domain: &dom,
            inactive_domain: None,
            state,
            active,
            disk_only: s.disk_only,
            is_regular_file: &regular,
        };
        parsed.prepare_create(&ctx)?.def
    };
    Ok((def, dom.uuid()))
}

fn xml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures().join("snapshot").join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    v.sort();
    v
}

fn bless() -> bool {
    std::env::var_os("SNAPSHOT_BLESS").is_some()
}

#[test]
fn golden_in_out() {
    let files = xml_files("in");
    assert!(files.len() >= 20);
    for input in files {
        let name = input
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let (def, uuid) =
            run_case(&read(&input)).unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        let flags = FormatFlags {
            domain_uuid: Some(uuid),
            ..FormatFlags::default()
        };
        let out = def.format(&flags);
        let want_path = fixtures().join("snapshot/out").join(name);
        if bless() {
            fs::write(&want_path, &out).expect("bless");
            continue;
        }
        assert_eq!(out, read(&want_path), "{name}");

        // What we write, we read back as the same definition.
        assert_eq!(load(&out).format(&flags), out, "{name} reparse");
    }
}

#[test]
fn errors_match_sidecars() {
    let files = xml_files("err");
    assert!(files.len() >= 60);
    for input in files {
        let got = run_case(&read(&input))
            .map(|_| ())
            .expect_err(&format!("{} should fail", input.display()));
        let sidecar = input.with_extension("err");
        if bless() {
            fs::write(&sidecar, describe(&got)).expect("bless");
            continue;
        }
        assert_eq!(describe(&got), read(&sidecar), "{}", input.display());
    }
}

#[test]
fn create_reports_what_the_driver_must_do() {
    let dom = domain("domain.xml");
    let regular = |_: &str| true;
    let ctx = |active: bool, disk_only: bool| CreateContext {
        domain: &dom,
        inactive_domain: Some(&dom),
        state: if active {
            SnapshotState::Running
        } else {
            SnapshotState::Shutoff
        },
        active,
        disk_only,
        is_regular_file: &regular,
    };
    let parse = |xml: &str, offline: bool| {
        SnapshotDef::parse(
            xml,
            ParseFlags {
                offline,
                ..ParseFlags::default()
            },
            NOW,
        )
        .expect("parses")
    };

    let external = "<domainsnapshot><name>e</name><disks><disk name='vda' snapshot='external'/>\
        <disk name='vdb' snapshot='manual'/></disks></domainsnapshot>";
    let p = parse(external, true)
        .prepare_create(&ctx(false, true))
        .expect("prepares");
    assert!(p.has_manual);
    assert!(p.disk_only);
    assert_eq!(p.def.state(), Some(SnapshotState::Shutoff));
    assert!(p.def.is_external());
    let vda = &p.def.disks()[0];
    assert_eq!(
        (vda.name(), vda.snapshot(), vda.path(), vda.format()),
        (
            "vda",
            Some(SnapshotLocation::External),
            Some("/tmp/snref/vda.e"),
            Some("qcow2")
        )
    );
    assert_eq!(vda.disk_type(), SnapshotDiskType::File);
    assert_eq!(vda.metadata_cache_max(), 0);

    let mut p = parse("<domainsnapshot><name>i</name></domainsnapshot>", false)
        .prepare_create(&ctx(true, false))
        .expect("prepares");
    assert!(!p.has_manual && !p.disk_only);
    assert_eq!(p.def.memory(), Some(SnapshotLocation::Internal));
    assert_eq!(p.def.memory_file(), None);
    assert!(!p.def.is_external() && !p.def.is_disk_only());
    assert_eq!(p.def.inactive_domain().map(DomainDef::name), Some("snvm"));
    assert_eq!(p.def.domain().map(DomainDef::name), Some("snvm"));
    p.def.set_parent(Some("s0".to_owned()));
    p.def.set_cookie(Some(SaveCookie::new(None, true)));
    let text = p.def.format(&FormatFlags {
        internal: Some(true),
        ..FormatFlags::default()
    });
    assert!(text.contains("  <parent>\n    <name>s0</name>\n  </parent>\n"));
    assert!(text.contains("  <inactiveDomain type='qemu'>\n"));
    assert!(text.ends_with(
        "  <cookie>\n    <slirpHelper/>\n  </cookie>\n  <active>1</active>\n</domainsnapshot>\n"
    ));
    assert_eq!(p.def.cookie().map(SaveCookie::cpu), Some(None));

    // The metadata form reads back with its <active>.
    let parsed = SnapshotDef::parse(
        &text,
        ParseFlags {
            redefine: true,
            internal: true,
            ..ParseFlags::default()
        },
        0,
    )
    .expect("reads back");
    assert_eq!(parsed.current(), Some(true));
    assert_eq!(parsed.parent(), Some("s0"));
    assert_eq!(parsed.name(), "i");
    assert_eq!(
        parsed.loaded().format(&FormatFlags {
            internal: Some(true),
            ..FormatFlags::default()
        }),
        text
    );
}

#[test]
fn a_path_naming_two_disks_names_none() {
    let xml = read(&fixtures().join("snapshot/domain.xml"))
        .replace("/tmp/snref/vdb.qcow2", "/tmp/snref/vda.qcow2");
    let dom = DomainDef::parse(&xml).expect("two disks, one image");
    let regular = |_: &str| true;
    let ctx = CreateContext {
        domain: &dom,
        inactive_domain: None,
        state: SnapshotState::Running,
        active: true,
        disk_only: true,
        is_regular_file: &regular,
    };
    let e = SnapshotDef::parse(
        "<domainsnapshot><disks><disk name='/tmp/snref/vda.qcow2'/></disks></domainsnapshot>",
        ParseFlags {
            offline: true,
            ..ParseFlags::default()
        },
        NOW,
    )
    .and_then(|p| p.prepare_create(&ctx))
    .expect_err("ambiguous");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: no disk named '/tmp/snref/vda.qcow2'"
    );
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let e =
        SnapshotDef::parse(&"<a>".repeat(100_000), ParseFlags::default(), NOW).expect_err("deep");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
    assert_eq!(e.domain().code(), 35);

    // More disks than the domain has are refused before any lookup.
    let many = format!(
        "<domainsnapshot><disks>{}</disks></domainsnapshot>",
        "<disk name='vda'/>".repeat(50_000)
    );
    let dom = domain("domain.xml");
    let regular = |_: &str| true;
    let ctx = CreateContext {
        domain: &dom,
        inactive_domain: None,
        state: SnapshotState::Running,
        active: true,
        disk_only: false,
        is_regular_file: &regular,
    };
    let e = SnapshotDef::parse(&many, ParseFlags::default(), NOW)
        .and_then(|p| p.prepare_create(&ctx))
        .expect_err("many");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: too many disk snapshot requests for domain"
    );

    let deep = format!(
        "<domainsnapshot><name>c</name><creationTime>1</creationTime><state>running</state>\
         <domain type='qemu'>{}{}</domain></domainsnapshot>",
        "<x>".repeat(300),
        "</x>".repeat(300)
    );
    let e = SnapshotDef::parse(
        &deep,
        ParseFlags {
            redefine: true,
            ..ParseFlags::default()
        },
        NOW,
    )
    .expect_err("deep domain");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
}
