//! Data-driven tests of the domain model.
//!
//! - `fixtures/domain/in/NAME.xml` is parsed and formatted; the result must
//!   equal `out/NAME.xml` (inactive) and, where it exists,
//!   `out/NAME-live.xml` (live, id 1).
//! - `fixtures/domain/err/NAME.xml` must fail to parse with the error in
//!   `err/NAME.err`; `nostart/NAME.xml` must parse but fail
//!   `check_startable` with `nostart/NAME.err`. The `.err` files hold
//!   `code: N`, `domain: N` and `message: ...` (the full text virsh prints
//!   after `error: `, as libvirt would send it).
//! - `reference.rs` holds the comparisons with the libvirtd captures.

mod reference;

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::conf::error::ConfErrorKind;

pub(super) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The message libvirt would send: virerror.c's per-code format applied to
/// the detail. The rpc layer owns the real mapping; this copy only lets the
/// tests compare with what virsh printed.
pub(super) fn libvirt_message(e: &ConfError) -> String {
    let (bare, with): (&str, &str) = match e.kind() {
        ConfErrorKind::InternalError => ("internal error", "internal error: %s"),
        ConfErrorKind::InvalidArg => ("invalid argument", "invalid argument: %s"),
        ConfErrorKind::NoSource => (
            "missing source information for device",
            "missing source information for device %s",
        ),
        ConfErrorKind::NoTarget => (
            "missing target information for device",
            "missing target information for device %s",
        ),
        ConfErrorKind::NoName => ("missing name information", "missing name information in %s"),
        ConfErrorKind::XmlError => (
            "XML description is invalid or not well formed",
            "XML error: %s",
        ),
        ConfErrorKind::XmlDetail => ("parser error", "%s"),
        ConfErrorKind::ConfigUnsupported => {
            ("unsupported configuration", "unsupported configuration: %s")
        }
        ConfErrorKind::Overflow => ("numerical overflow", "numerical overflow: %s"),
        ConfErrorKind::XmlInvalidSchema => (
            "XML document failed to validate against schema",
            "XML document failed to validate against schema: %s",
        ),
        ConfErrorKind::OperationUnsupported => {
            ("Operation not supported", "Operation not supported: %s")
        }
        ConfErrorKind::NoDomainCheckpoint => (
            "Domain checkpoint not found",
            "Domain checkpoint not found: %s",
        ),
        ConfErrorKind::CheckpointInconsistent => {
            ("checkpoint inconsistent", "checkpoint inconsistent: %s")
        }
    };
    match e.detail() {
        Some(d) => with.replacen("%s", d, 1),
        None => bare.to_owned(),
    }
}

/// `code: N` / `domain: N` / `message: ...` as in the `.err` sidecars.
fn describe(e: &ConfError) -> String {
    format!(
        "code: {}\ndomain: {}\nmessage: {}\n",
        e.kind().code(),
        e.domain().code(),
        libvirt_message(e)
    )
}

fn xml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures().join("domain").join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn golden_in_out() {
    let files = xml_files("in");
    assert!(!files.is_empty());
    for input in files {
        let stem = input
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let def = DomainDef::parse(&read(&input))
            .unwrap_or_else(|e| panic!("{stem}: {}", libvirt_message(&e)));
        let out_dir = fixtures().join("domain/out");
        assert_eq!(
            def.format(FormatMode::Inactive, Secrets::Shown),
            read(&out_dir.join(format!("{stem}.xml"))),
            "{stem} (inactive)"
        );
        let live = out_dir.join(format!("{stem}-live.xml"));
        if live.exists() {
            assert_eq!(
                def.format(FormatMode::Live { id: 1 }, Secrets::Shown),
                read(&live),
                "{stem} (live)"
            );
        }
        // Our output parses and, from the second round on, formats to
        // itself. (The first round may reorder disks: once the bus is
        // written out, libvirt's insertion order sorts them by target, and
        // libvirtd does the same when it rereads its own files.)
        let round = |xml: &str| {
            DomainDef::parse(xml)
                .expect("reparse")
                .format(FormatMode::Inactive, Secrets::Shown)
        };
        let twice = round(&def.format(FormatMode::Inactive, Secrets::Shown));
        assert_eq!(round(&twice), twice, "{stem} reparse");
        assert!(
            def.check_startable().is_ok() || stem.starts_with("kept"),
            "{stem}"
        );
    }
}

#[test]
fn errors_match_sidecars() {
    for (dir, startable) in [("err", false), ("nostart", true)] {
        for input in xml_files(dir) {
            let want = read(&input.with_extension("err"));
            let got = match DomainDef::parse(&read(&input)) {
                Err(e) if !startable => e,
                Ok(def) if startable => def
                    .check_startable()
                    .expect_err(&format!("{} should not start", input.display())),
                other => panic!("{}: unexpected {other:?}", input.display()),
            };
            assert_eq!(describe(&got), want, "{}", input.display());
        }
    }
}

#[test]
fn uuid_is_generated_when_absent() {
    let xml =
        "<domain type='qemu'><name>g</name><memory>1024</memory><os><type>hvm</type></os></domain>";
    let a = DomainDef::parse(xml).expect("parses");
    let b = DomainDef::parse(xml).expect("parses");
    assert_ne!(a.uuid(), b.uuid());
    assert_eq!(a.uuid().get_version_num(), 4);
    // The generated uuid is part of the definition from then on.
    let again = DomainDef::parse(&a.format(FormatMode::Inactive, Secrets::Shown)).expect("reparse");
    assert_eq!(again.uuid(), a.uuid());
}

#[test]
fn accessors_give_what_the_driver_needs() {
    let def = DomainDef::parse(&read(&fixtures().join("reference/xml/vm1.xml"))).expect("vm1");
    assert_eq!(def.name(), "vm1");
    assert_eq!(def.virt_type(), VirtType::Qemu);
    assert_eq!(def.memory_kib(), 131_072);
    assert_eq!(def.current_memory_kib(), 131_072);
    assert_eq!((def.vcpus(), def.vcpus_max()), (1, 1));
    assert_eq!((def.arch(), def.machine()), ("x86_64", "pc-i440fx-7.2"));
    assert_eq!(def.emulator(), "/usr/bin/qemu-system-x86_64");
    let disks: Vec<_> = def
        .disks()
        .iter()
        .map(|d| {
            (
                d.target(),
                d.node_index(),
                d.alias(),
                d.format().as_str(),
                d.source(),
                d.readonly(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        vec![
            (
                "vda",
                2,
                "virtio-disk0".to_owned(),
                "qcow2",
                Some("/tmp/ref/vda.qcow2"),
                false
            ),
            (
                "vdb",
                1,
                "virtio-disk1".to_owned(),
                "raw",
                Some("/tmp/ref/vdb.raw"),
                false
            ),
        ]
    );
    assert!(def.disk_by_target("vdb").is_some());
    assert!(def.check_startable().is_ok());
    assert!(def.check_virt_type(false).is_ok());
}

#[test]
fn kvm_needs_kvm() {
    let xml =
        read(&fixtures().join("reference/xml/vm1.xml")).replace("type='qemu'>", "type='kvm'>");
    let def = DomainDef::parse(&xml).expect("kvm parses");
    assert!(def.check_virt_type(true).is_ok());
    let e = def.check_virt_type(false).expect_err("no kvm");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: Emulator '/usr/bin/qemu-system-x86_64' does not support virt type 'kvm'"
    );
    assert_eq!(e.domain().code(), 10);
}

#[test]
fn hostile_inputs_fail_cleanly() {
    // 10 MB of nesting: refused by size or depth, without recursion.
    let deep = "<domain>".repeat(10 * 1024 * 1024 / 8);
    let e = DomainDef::parse(&deep).expect_err("too big");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
    let deep = "<a>".repeat(1_000_000);
    let e = DomainDef::parse(&deep).expect_err("too deep");
    assert!(e.detail().unwrap_or_default().contains("Excessive depth"));

    // Entity expansion ("billion laughs") never starts: no DTDs.
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<domain type='qemu'><name>&lol3;</name></domain>"#;
    let e = DomainDef::parse(laughs).expect_err("dtd");
    assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
    assert!(DomainDef::parse("<domain type='qemu'><name>&lol;</name></domain>").is_err());

    let base = read(&fixtures().join("reference/xml/vm1.xml"));
    let e = DomainDef::parse(&base.replace("<name>vm1</name>", "<name>../x</name>"))
        .expect_err("slash");
    assert_eq!(
        libvirt_message(&e),
        "XML error: name ../x cannot contain '/'"
    );

    let e = DomainDef::parse_bytes(b"<domain type='qemu'><name>caf\xe9</name></domain>")
        .expect_err("latin1");
    assert!(e
        .detail()
        .unwrap_or_default()
        .starts_with("(domain_definition):1: Input is not proper UTF-8, indicate encoding !\nBytes: 0xE9 0x3C 0x2F 0x6E\n"));
    assert!(DomainDef::parse_bytes(b"\xff\xfe<\x00").is_err());
    assert!(DomainDef::parse(&base.replace("vm1</name>", "vm1\u{7}</name>")).is_err());
    assert!(DomainDef::parse(&base.replace("vm1</name>", "vm1&#xFFFE;</name>")).is_err());

    // Many disks are refused before they are sorted.
    let disk = "<disk type='file'><source file='/x'/><target dev='vdq'/></disk>";
    let many = base.replace("</devices>", &(disk.repeat(5000) + "</devices>"));
    let e = DomainDef::parse(&many).expect_err("many");
    assert_eq!(e.kind(), ConfErrorKind::ConfigUnsupported);

    // Deep unknown content within the limits formats without trouble.
    let nested = "<x>".repeat(250) + &"</x>".repeat(250);
    let def = DomainDef::parse(&base.replace("</domain>", &format!("{nested}</domain>")))
        .expect("deep but allowed");
    assert!(def
        .format(FormatMode::Inactive, Secrets::Shown)
        .contains("<x/>"));
}

#[test]
fn disks_are_ordered_like_libvirt() {
    // libvirtd's domblklist for this input: vda, hda, vdb, sda. Disks with
    // the same bus *as written* (here: none) are kept sorted by target.
    let xml = "<domain type='qemu'><name>nobus</name><memory>131072</memory><os><type>hvm</type></os><devices>\
        <disk type='file'><source file='/b'/><target dev='vdb'/></disk>\
        <disk type='file'><source file='/a'/><target dev='vda'/></disk>\
        <disk type='file'><source file='/s'/><target dev='sda' bus='sata'/></disk>\
        <disk type='file'><source file='/h'/><target dev='hda'/></disk></devices></domain>";
    let def = DomainDef::parse(xml).expect("parses");
    let order: Vec<(&str, u32)> = def
        .disks()
        .iter()
        .map(|d| (d.target(), d.node_index()))
        .collect();
    assert_eq!(order, vec![("vda", 4), ("hda", 3), ("vdb", 2), ("sda", 1)]);
}

#[test]
fn only_virtio_file_and_block_disks_start() {
    let base = read(&fixtures().join("reference/xml/vm1.xml"));
    let cases = [
        (
            base.replace("dev='vdb' bus='virtio'", "dev='sda' bus='virtio'"),
            "unsupported configuration: disks 'vda' and 'sda' would both be device 'virtio-disk0'",
        ),
        (
            base.replace("dev='vdb' bus='virtio'", "dev='sdb' bus='sata'"),
            "unsupported configuration: disk bus 'sata' is not supported for disk 'sdb'",
        ),
        (
            base.replace("type='raw'", "type='vmdk'"),
            "unsupported configuration: disk format 'vmdk' is not supported for disk 'vdb'",
        ),
    ];
    for (xml, want) in cases {
        let def = DomainDef::parse(&xml).expect("parses");
        let e = def.check_startable().expect_err("unstartable");
        assert_eq!(libvirt_message(&e), want);
    }
}
