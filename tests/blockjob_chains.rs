#![allow(clippy::tests_outside_test_module)]
//! Domains started on a qcow2 image with a backing file: every layer has
//! a node of ours, as under libvirt 9.0, so an active commit folds the
//! overlay back into its base — a disk defined on an overlay, and the
//! snapshot-and-commit recipe with the domain restarted in between — and
//! a restarted daemon takes such a domain back.

mod common;

use common::blockjob::source_of;

use common::images::qemu_img;
use common::qemu_io;
use common::Daemon;
use std::path::Path;

/// `qemu-img create -f qcow2 -b BACKING -F qcow2 IMAGE`, the backing
/// named as given (relative names are relative to the image's directory).
fn overlay(image: &Path, backing: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        backing,
        image.to_str().unwrap(),
    ])
    .ok();
}

fn commit(d: &Daemon, dom: &str) {
    let out = d
        .virsh_loud(&["blockcommit", dom, "vda", "--active", "--pivot", "--wait"])
        .ok();
    assert!(out.stdout.contains("Successfully pivoted"), "{out:?}");
}

/// `qemu-img compare` of a raw image holding what was written with the
/// qcow2 image: identical.
fn same_data(want: &Path, image: &Path) {
    let out = qemu_img(&[
        "compare",
        "-U",
        "-f",
        "raw",
        "-F",
        "qcow2",
        want.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A disk defined on an overlay whose header names its base relatively:
/// after an active commit with pivot the domain runs on the base, which
/// holds every write; a daemon restart takes it back, and the node
/// numbers handed out afterwards stay clear of the chain's.
#[test]
fn active_commit_of_a_disk_defined_on_an_overlay() {
    let mut d = Daemon::start();
    let base = d.image("ov-base.qcow2", "qcow2", "64M");
    let want = d.image("ov-want.raw", "raw", "64M");
    qemu_io::write(&base, "qcow2", "write -P 0x11 0 4M");
    qemu_io::write(&want, "raw", "write -P 0x11 0 4M");
    let write = |d: &Daemon, cmd: &str| {
        d.guest_write("ov", 0, cmd);
        qemu_io::write(&want, "raw", cmd);
    };
    let top = d.path("ov-top.qcow2");
    overlay(&top, "ov-base.qcow2");
    d.define("ov", &d.domain_xml("ov", &[("vda", &top, "qcow2")]));
    d.virsh(&["start", "ov"]).ok();
    // The chain's lower layer is named as libvirt names it.
    let nodes = d
        .virsh(&[
            "qemu-monitor-command",
            "ov",
            r#"{"execute":"query-named-block-nodes","arguments":{"flat":true}}"#,
        ])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let named: Vec<(&str, &str)> = v["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["drv"] == "qcow2")
        .map(|n| {
            (
                n["node-name"].as_str().unwrap(),
                n["file"].as_str().unwrap(),
            )
        })
        .collect();
    let base_name = base.display().to_string();
    assert!(
        named.iter().any(|(n, _)| *n == "libvirt-1-format")
            && named.contains(&("libvirt-2-format", base_name.as_str())),
        "{named:?}"
    );
    // A daemon restart before the job: the snapshot's overlay takes a
    // number past the chain's.
    d.restart();
    assert_eq!(d.virsh(&["domstate", "ov"]).ok().stdout.trim(), "running");
    let bk = d.path("ov-top.bk");
    d.virsh(&[
        "snapshot-create-as",
        "ov",
        "bk",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    assert_eq!(source_of(&d, "ov", false), bk.display().to_string());
    write(&d, "write -P 0x22 1M 2M");
    write(&d, "write -P 0x33 8M 1M");
    commit(&d, "ov");
    assert_eq!(source_of(&d, "ov", false), base_name);
    assert_eq!(source_of(&d, "ov", true), base_name);
    write(&d, "write -P 0x44 5M 1M");
    // Taken back after a restart, on the base.
    d.restart();
    assert_eq!(d.virsh(&["domstate", "ov"]).ok().stdout.trim(), "running");
    assert_eq!(source_of(&d, "ov", false), base_name);
    write(&d, "write -P 0x55 6M 1M");
    d.virsh(&["destroy", "ov"]).ok();
    same_data(&want, &base);
    // The next start runs on the base alone.
    d.virsh(&["start", "ov"]).ok();
    assert_eq!(source_of(&d, "ov", false), base_name);
    d.virsh(&["destroy", "ov"]).ok();
}

/// The backup recipe with the domain restarted between the snapshot and
/// the commit: the commit still folds the overlay back, the copy is the
/// disk as it was at the snapshot, and a restarted daemon takes the
/// domain back.
#[test]
fn recipe_with_a_restart_between_snapshot_and_commit() {
    let mut d = Daemon::start();
    let vda = d.image("rs.qcow2", "qcow2", "64M");
    let want = d.image("rs-want.raw", "raw", "64M");
    d.define("rs", &d.domain_xml("rs", &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", "rs"]).ok();
    let write = |d: &Daemon, cmd: &str| {
        d.guest_write("rs", 0, cmd);
        qemu_io::write(&want, "raw", cmd);
    };
    write(&d, "write -P 0x11 0 4M");
    d.virsh(&[
        "snapshot-create-as",
        "rs",
        "bk",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    let copy = d.path("rs-copy.qcow2");
    qemu_img(&[
        "convert",
        "-U",
        "-O",
        "qcow2",
        vda.to_str().unwrap(),
        copy.to_str().unwrap(),
    ])
    .ok();
    write(&d, "write -P 0x22 1M 1M");
    d.virsh(&["destroy", "rs"]).ok();
    d.virsh(&["start", "rs"]).ok();
    let bk = d.path("rs.bk").display().to_string();
    assert_eq!(source_of(&d, "rs", false), bk);
    write(&d, "write -P 0x33 2M 1M");
    commit(&d, "rs");
    assert_eq!(source_of(&d, "rs", false), vda.display().to_string());
    assert_eq!(source_of(&d, "rs", true), vda.display().to_string());
    write(&d, "write -P 0x44 3M 1M");
    d.restart();
    assert_eq!(d.virsh(&["domstate", "rs"]).ok().stdout.trim(), "running");
    assert_eq!(source_of(&d, "rs", false), vda.display().to_string());
    write(&d, "write -P 0x55 9M 1M");
    // Another round of the recipe on the restarted daemon.
    d.virsh(&[
        "snapshot-create-as",
        "rs",
        "bk2",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    write(&d, "write -P 0x66 10M 1M");
    commit(&d, "rs");
    assert_eq!(source_of(&d, "rs", false), vda.display().to_string());
    d.virsh(&["destroy", "rs"]).ok();
    same_data(&want, &vda);
    qemu_io::reads(&copy, 0x11, "0", "4M");
    qemu_io::reads(&copy, 0x00, "4M", "4M");
}
