//! Comparisons with what the real libvirtd 9.0 did
//! (`fixtures/reference/backup/`, described in its README.md).
//!
//! - Every `api-begin-*` capture on `bkvm` is replayed: the same document
//!   through parse → align → the QEMU driver's preparation, with the
//!   checkpoints the domain had at that point (cp1, cp2). Where libvirtd
//!   refused it from a check this module models, we must refuse it with
//!   the same code, error domain and message; where the refusal belongs to
//!   the driver or QEMU, the capture is listed in [`NOT_CONF`] with why.
//! - The running-job `backup-dumpxml-*` captures must come out of the
//!   documents that started those jobs byte for byte, with the storage
//!   ids the daemon had reached.

use crate::conf::test_support::Capture;
use std::fs;

use super::{describe, fixtures, read, FakeEnv};
use crate::conf::backup::{default_suffix, BackupDef};
use crate::conf::domain::DomainDef;

/// Captures whose outcome is not this module's to reproduce.
const NOT_CONF: &[(&str, &str)] = &[
    ("api-begin-bad-flag", "flags: driver"),
    ("api-begin-inactive", "domain not running: driver"),
    ("api-begin-second", "job lock: driver"),
    ("api-begin-exists", "existing target file: driver"),
    ("api-begin-target-is-source", "existing target file: driver"),
    ("api-begin-nodir", "creating the image: driver"),
    ("api-begin-reuse-missing", "stat of a reused image: driver"),
    ("api-begin-block-target", "stat of the block device: driver"),
    ("api-begin-cp-bad", "checkpoint document: checkpoint model"),
    (
        "api-begin-cp-default",
        "checkpoint document: checkpoint model",
    ),
    ("api-begin-cp-dup", "checkpoint document: checkpoint model"),
    ("api-begin-cp-dup-disks", "checkpoint name taken: driver"),
    (
        "api-begin-encryption",
        "libvirt looks up the secret; this model refuses encryption at parse",
    ),
    ("api-begin-ok-driver-vmdk", "succeeded: QEMU did the rest"),
    (
        "api-begin-ok-incremental-raw-target",
        "succeeded: QEMU did the rest",
    ),
];

fn capture(path: &std::path::Path) -> Capture {
    crate::conf::test_support::capture_file(path)
}

fn reference_domain(file: &str) -> DomainDef {
    DomainDef::parse(&read(&fixtures().join("reference/backup").join(file)))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `code: C domain: D level: 2\nmessage: M` as bkapi.py prints it, in
/// the shape `describe` gives.
fn bkapi_error(stdout: &str) -> Option<String> {
    let (head, message) = stdout.split_once("\nmessage: ")?;
    let mut words = head.split_whitespace();
    let (Some("code:"), Some(code), Some("domain:"), Some(domain)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let message = message.strip_suffix('\n').unwrap_or(message);
    Some(format!(
        "code: {code}\ndomain: {domain}\nmessage: {message}\n"
    ))
}

#[test]
fn begin_errors_match_libvirtd() {
    let dir = fixtures().join("reference/backup");
    let mut captures: Vec<_> = fs::read_dir(&dir)
        .expect("reference dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("api-begin-") && n.ends_with(".txt"))
        })
        .collect();
    captures.sort();
    let mut replayed = 0;
    for path in captures {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if NOT_CONF.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let cap = capture(&path);
        // ./bkapi.py begin DOM BACKUP.xml [CHECKPOINT.xml] FLAGS
        let args: Vec<&str> = cap.command.split_whitespace().collect();
        assert_eq!(
            args.get(..3),
            Some(&["$", "./bkapi.py", "begin"][..]),
            "{name}"
        );
        assert_eq!(args.len(), 6, "{name}: no checkpoint document expected");
        let dom = reference_domain(&format!("{}.xml", args[3]));
        let xml = read(&dir.join(args[4]));
        let mut env = FakeEnv {
            checkpoints: vec!["cp1".to_owned(), "cp2".to_owned()],
            broken: Vec::new(),
            next_id: 10,
        };
        let result = BackupDef::parse(&xml)
            .and_then(|p| p.align(&dom, &default_suffix(None, 1)))
            .and_then(|mut def| {
                def.prepare_server()?;
                def.prepare_disks(&dom, &mut env)?;
                Ok(def)
            });
        let want = bkapi_error(&cap.stdout).unwrap_or_else(|| panic!("{name}: not an error"));
        match result {
            Err(e) => assert_eq!(describe(&e), want, "{name}"),
            Ok(_) => panic!("{name}: accepted, libvirtd said {want}"),
        }
        replayed += 1;
    }
    assert!(replayed >= 20, "only {replayed} captures replayed");
}

#[test]
fn running_dumpxml_matches_libvirtd() {
    // (capture, document, checkpoint created with it, first storage id)
    let cases = [
        ("backup-dumpxml-running", "xml/big.xml", None, 5),
        (
            "backup-dumpxml-running-incremental",
            "xml/big-incr.xml",
            Some("cpb2"),
            3,
        ),
        (
            "backup-dumpxml-running-unselected",
            "xml/big-vda-only.xml",
            None,
            3,
        ),
    ];
    let dir = fixtures().join("reference/backup");
    let dom = reference_domain("bkbig.xml");
    for (name, doc, checkpoint, first_id) in cases {
        let cap = capture(&dir.join(format!("{name}.txt")));
        assert!(cap.command.contains("backup-dumpxml bkbig"), "{name}");
        let mut env = FakeEnv {
            checkpoints: vec!["cpb".to_owned()],
            broken: Vec::new(),
            next_id: first_id - 1,
        };
        let mut def = BackupDef::parse(&read(&dir.join(doc)))
            .and_then(|p| p.align(&dom, &default_suffix(checkpoint, 1)))
            .unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        def.prepare_server().expect("push");
        def.prepare_disks(&dom, &mut env)
            .unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        // virsh prints the document and a newline of its own.
        assert_eq!(format!("{}\n", def.format()), cap.stdout, "{name}");
    }
}
