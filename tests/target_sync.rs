#![allow(clippy::tests_outside_test_module)]
//! A push backup's target is synced by the daemon, not by QEMU (issue 16,
//! src/qemu/writeback.rs): QEMU opens it with `cache.no-flush`, and the
//! daemon syncs it once QEMU has closed it, before the backup counts as
//! complete. Through the stock virsh against real QEMU: the flags QEMU
//! reports on each node, the target a true copy, and a sync that fails
//! failing the backup as any failed push backup, leaving nothing behind.

mod common;

use std::fs;
use std::path::PathBuf;

use common::events::EventLog;
use common::images::identical;
use common::qemu_io;
use common::{words, Daemon};
use serde_json::Value;

const DOM: &str = "sync";
/// vda's nodes (the only disk) and the first backup target's.
const VDA: &str = "libvirt-1-format";
const VDA_STORAGE: &str = "libvirt-1-storage";
const TARGET_STORAGE: &str = "libvirt-2-storage";

/// A running domain with one 64 MiB qcow2 disk whose first 48 MiB hold
/// 0x3c, written before QEMU opened it.
fn start_domain(d: &Daemon) -> PathBuf {
    let vda = d.image("sync-vda.qcow2", "qcow2", "64M");
    qemu_io::write(&vda, "qcow2", "write -P 0x3c 0 48M");
    d.define(DOM, &d.domain_xml(DOM, &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", DOM]).ok();
    vda
}

/// QEMU's cache flags of a node: (direct, no-flush).
fn cache(nodes: &std::collections::BTreeMap<String, Value>, node: &str) -> (bool, bool) {
    let cache = &nodes[node]["cache"];
    (
        cache["direct"].as_bool().unwrap(),
        cache["no-flush"].as_bool().unwrap(),
    )
}

/// While the job copies (at 1 MiB/s, the daemon's default bandwidth),
/// QEMU has the target's file without flushes and the disk's with them;
/// the completed backup is the disk, and its checkpoint is there.
#[test]
fn qemu_never_syncs_a_push_target_and_the_daemon_does_before_it_completes() {
    let d = Daemon::start_with(&["--backup-bandwidth", "1"]);
    let vda = start_domain(&d);
    let target = d.path("full.qcow2");
    let xml = d.push_backup_xml("full", &target, None);
    let cp = d.checkpoint_xml("cp1");
    d.virsh(&["backup-begin", DOM, &xml, &cp]).ok();
    let nodes = d.nodes(DOM);
    assert_eq!(cache(&nodes, TARGET_STORAGE), (false, true));
    assert_eq!(cache(&nodes, VDA_STORAGE), (false, false));
    d.virsh(&["blockjob", DOM, "vda", "--bandwidth", "0"]).ok();
    d.wait_idle(DOM);
    let done = words(&d.virsh(&["domjobinfo", DOM, "--completed"]).ok().stdout);
    assert!(done.starts_with("Job type: Completed"), "{done}");
    assert_eq!(d.answer(&["checkpoint-list", DOM, "--name"]), "cp1");
    d.virsh(&["destroy", DOM]).ok();
    identical(&vda, &target);
}

/// The test-only VIRTBACKUPD_TARGET_SYNC_EIO makes the target's last sync
/// fail with EIO: the backup fails with that error in domjobinfo and in
/// the block-job events, job-completed is raised, its target and the
/// checkpoint begun with it are gone, the one before stays, and QEMU has
/// no node of the backup left.
#[test]
fn a_target_that_cannot_be_synced_fails_the_backup_and_leaves_nothing() {
    let mut d = Daemon::start();
    d.set_env(&[("VIRTBACKUPD_TARGET_SYNC_EIO", "1")]);
    d.restart();
    let vda = start_domain(&d);
    d.virsh(&["checkpoint-create-as", DOM, "cp0"]).ok();
    let nodes_before = d.node_names(DOM);

    let probe = d.image("probe.qcow2", "qcow2", "1M");
    d.define("probe", &d.domain_xml("probe", &[("vda", &probe, "qcow2")]));
    let again = d.path("probe-again.xml");
    fs::write(&again, d.answer(&["dumpxml", "--inactive", "probe"])).unwrap();
    let events = EventLog::start(&d, &["--all"], "probe", again);

    let target = d.path("full.qcow2");
    let xml = d.push_backup_xml("full", &target, None);
    let cp = d.checkpoint_xml("cp1");
    d.virsh(&["backup-begin", DOM, &xml, &cp]).ok();
    d.wait_idle(DOM);
    let done = words(&d.virsh(&["domjobinfo", DOM, "--completed"]).ok().stdout);
    assert!(done.starts_with("Job type: Failed"), "{done}");
    let events = events.finish(&d);
    // virsh 9.0's domjobinfo shows a failed job's type only; its event
    // has the error.
    let error = format!(
        "errmsg: unable to sync backup target '{}': Input/output error",
        target.display()
    );
    assert!(
        events.iter().any(|l| l.trim() == error),
        "{error} not in {events:#?}"
    );
    for line in [
        format!(
            "event 'block-job' for domain '{DOM}': Backup for {} failed",
            vda.display()
        ),
        format!("event 'block-job-2' for domain '{DOM}': Backup for vda failed"),
    ] {
        assert!(events.contains(&line), "{line} not in {events:#?}");
    }
    assert!(
        events
            .iter()
            .any(|l| l.starts_with(&format!("event 'job-completed' for domain '{DOM}'"))),
        "{events:#?}"
    );
    assert!(!target.exists(), "the failed backup's target is left");
    assert_eq!(d.answer(&["checkpoint-list", DOM, "--name"]), "cp0");
    assert_eq!(d.bitmap_names(DOM, VDA), ["cp0"]);
    assert_eq!(d.node_names(DOM), nodes_before);
    assert_eq!(d.answer(&["domstate", DOM]), "running");
}

/// Images that hold the guest's data are synced as the guest asks, as
/// libvirtd has them: an external snapshot's overlay and a block copy's
/// destination keep QEMU's flushes (only a backup's own images go
/// without, which the comparison with libvirtd's QMP takes out:
/// tests/common/reference.rs).
#[test]
fn the_guests_own_images_keep_qemus_flushes() {
    let d = Daemon::start();
    start_domain(&d);
    d.virsh(&[
        "snapshot-create-as",
        DOM,
        "s1",
        "--disk-only",
        "--no-metadata",
    ])
    .ok();
    let copy = d.path("copy.qcow2");
    d.virsh(&[
        "blockcopy",
        DOM,
        "vda",
        copy.to_str().unwrap(),
        "--transient-job",
        "--wait",
    ])
    .ok();
    // Ready to switch: the disk, its overlay and the copy are all open.
    let nodes = d.nodes(DOM);
    let flushed: Vec<(&String, (bool, bool))> = nodes
        .keys()
        .map(|name| (name, cache(&nodes, name)))
        .collect();
    assert!(flushed.len() >= 4, "{flushed:?}");
    assert!(
        flushed.iter().all(|(_, c)| *c == (false, false)),
        "{flushed:?}"
    );
    let files: Vec<&str> = nodes.values().filter_map(|n| n["file"].as_str()).collect();
    assert!(files.iter().any(|f| f.ends_with("copy.qcow2")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(".s1")), "{files:?}");
    d.virsh(&["blockjob", DOM, "vda", "--abort"]).ok();
}
