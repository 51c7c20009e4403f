#![allow(clippy::tests_outside_test_module)]
//! `--backup-cbw-timeout` (issue 16, item 3): push backups read the disk
//! through a copy-before-write filter of their own whose copies go to a
//! scratch image next to the disk and may take only so long. Through the
//! stock virsh against real QEMU: the targets are true copies of the disk
//! as it was at the start, with the guest writing meanwhile; nothing is
//! left behind; and a copy that stalls breaks the backup (failed, cleanly)
//! instead of holding the guest's write. Without the option nothing
//! changes (tests/backup.rs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::events::EventLog;
use common::images::{identical, qemu_img};
use common::qemu_io;
use common::{files, words, Daemon};
use serde_json::Value;

const DOM: &str = "cbw";
/// vda's format node (the only disk).
const VDA: &str = "libvirt-1-format";

/// A running domain with one 64 MiB qcow2 disk whose first 32 MiB hold
/// 0x3c, written before QEMU opened it; returns the disk and a copy of it
/// as it was then.
fn start_domain(d: &Daemon) -> (PathBuf, PathBuf) {
    let vda = d.image("cbw-vda.qcow2", "qcow2", "64M");
    qemu_io::write(&vda, "qcow2", "write -P 0x3c 0 32M");
    let before = d.path("before.qcow2");
    fs::copy(&vda, &before).unwrap();
    d.define(DOM, &d.domain_xml(DOM, &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", DOM]).ok();
    (vda, before)
}

/// The node the guest device reads now.
fn device_node(d: &Daemon) -> String {
    let run = d
        .virsh(&["qemu-monitor-command", DOM, r#"{"execute":"query-block"}"#])
        .ok();
    let reply: Value = serde_json::from_str(&run.stdout).unwrap();
    reply["return"][0]["inserted"]["node-name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The filter, its snapshot-access node and its scratch image are gone,
/// the device is back on the disk's format node, and the nodes are the
/// ones there were before the backup.
#[track_caller]
fn nothing_left(d: &Daemon, nodes_before: &[String]) {
    assert_eq!(device_node(d), VDA);
    assert_eq!(d.node_names(DOM), nodes_before);
    let scratch: Vec<String> = files(d.path("").as_path())
        .into_iter()
        .filter(|f| f.ends_with(".cbw"))
        .collect();
    assert!(scratch.is_empty(), "scratch files left: {scratch:?}");
}

/// Brings a disk image's contents out while the domain is paused (QEMU
/// flushed it when it stopped).
fn snapshot_of(d: &Daemon, vda: &Path, name: &str) -> PathBuf {
    let copy = d.path(name);
    d.virsh(&["suspend", DOM]).ok();
    let run = qemu_img(&[
        "convert",
        "-U",
        "-O",
        "qcow2",
        vda.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    d.virsh(&["resume", DOM]).ok();
    copy
}

/// With the option on, a full and then an incremental push backup are
/// copies of the disk as it was when each began, though the guest wrote
/// meanwhile; the device reads the disk again afterwards and no node or
/// scratch file is left.
#[test]
fn full_and_incremental_backups_through_the_filter_are_true_copies() {
    // 1 MiB/s: the copies are still running when the guest writes.
    let d = Daemon::start_with(&["--backup-cbw-timeout", "10", "--backup-bandwidth", "1"]);
    let (vda, before) = start_domain(&d);
    let nodes_before = d.node_names(DOM);
    assert_eq!(device_node(&d), VDA);

    let full = d.path("full.qcow2");
    let xml = d.push_backup_xml("full", &full, None);
    let cp1 = d.checkpoint_xml("cp1");
    d.virsh(&["backup-begin", DOM, &xml, &cp1]).ok();
    // During the backup the guest device reads through the filter.
    assert_eq!(device_node(&d), "libvirt-3-cbw");
    assert!(d.path("cbw-vda.qcow2.cp1.cbw").exists());
    for offset in ["30M", "16M", "1M", "40M"] {
        d.guest_write(DOM, 0, &format!("write -P 0x77 {offset} 64k"));
    }
    d.virsh(&["blockjob", DOM, "vda", "--bandwidth", "0"]).ok();
    d.wait_idle(DOM);
    let done = words(&d.virsh(&["domjobinfo", DOM, "--completed"]).ok().stdout);
    assert!(done.starts_with("Job type: Completed"), "{done}");
    identical(&full, &before);
    nothing_left(&d, &nodes_before);
    assert_eq!(d.bitmap_names(DOM, VDA), ["cp1"]);

    // What the incremental backup is to hold: the full one's writes and
    // 4 MiB more, then the disk as it is when it begins.
    d.guest_write(DOM, 0, "write -P 0x55 8M 4M");
    let at_inc = snapshot_of(&d, &vda, "at-inc.qcow2");
    let inc = d.path("inc.qcow2");
    let xml = d.push_backup_xml("inc", &inc, Some("cp1"));
    let cp2 = d.checkpoint_xml("cp2");
    d.virsh(&["backup-begin", DOM, &xml, &cp2]).ok();
    for offset in ["11M", "9M", "20M"] {
        d.guest_write(DOM, 0, &format!("write -P 0x99 {offset} 64k"));
    }
    d.virsh(&["blockjob", DOM, "vda", "--bandwidth", "0"]).ok();
    d.wait_idle(DOM);
    let done = words(&d.virsh(&["domjobinfo", DOM, "--completed"]).ok().stdout);
    assert!(done.starts_with("Job type: Completed"), "{done}");
    nothing_left(&d, &nodes_before);
    assert_eq!(d.bitmap_names(DOM, VDA), ["cp1", "cp2"]);
    // The incremental target on top of the full one is the disk as it was.
    let run = qemu_img(&[
        "rebase",
        "-u",
        "-F",
        "qcow2",
        "-b",
        full.to_str().unwrap(),
        inc.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    identical(&inc, &at_inc);
    d.virsh(&["destroy", DOM]).ok();
}

/// With the option on and a copy-before-write that stalls (the test-only
/// VIRTBACKUPD_CBW_LATENCY_MS makes each copy take 3 s) beyond the
/// timeout, the guest's write goes on and the backup fails, as any failed
/// push backup: failed in domjobinfo and in the block-job events,
/// job-completed raised, its target and the checkpoint begun with it gone;
/// the domain runs on its disk, nothing of the filter is left.
#[test]
fn a_stalled_copy_fails_the_backup_not_the_guest() {
    let mut d = Daemon::start_with(&["--backup-cbw-timeout", "1", "--backup-bandwidth", "1"]);
    d.set_env(&[("VIRTBACKUPD_CBW_LATENCY_MS", "3000")]);
    d.restart();
    let (vda, _) = start_domain(&d);
    let nodes_before = d.node_names(DOM);
    d.virsh(&["checkpoint-create-as", DOM, "cp0"]).ok();

    let probe = d.image("probe.qcow2", "qcow2", "1M");
    d.define("probe", &d.domain_xml("probe", &[("vda", &probe, "qcow2")]));
    let again = d.path("probe-again.xml");
    fs::write(&again, d.answer(&["dumpxml", "--inactive", "probe"])).unwrap();
    let events = EventLog::start(&d, &["--all"], "probe", again);

    let full = d.path("full.qcow2");
    let xml = d.push_backup_xml("full", &full, None);
    let cp1 = d.checkpoint_xml("cp1");
    d.virsh(&["backup-begin", DOM, &xml, &cp1]).ok();
    // Where the copy at 1 MiB/s has not got to: the old data must be
    // saved first, which stalls; the write completes all the same.
    d.guest_write(DOM, 0, "write -P 0x77 24M 64k");
    d.wait_idle(DOM);
    let done = words(&d.virsh(&["domjobinfo", DOM, "--completed"]).ok().stdout);
    assert!(done.starts_with("Job type: Failed"), "{done}");
    let events = events.finish(&d);
    let vda_path = vda.display();
    for line in [
        format!("event 'block-job' for domain 'cbw': Backup for {vda_path} failed"),
        "event 'block-job-2' for domain 'cbw': Backup for vda failed".to_string(),
    ] {
        assert!(events.contains(&line), "{line} not in {events:#?}");
    }
    assert!(
        events
            .iter()
            .any(|l| l.starts_with("event 'job-completed' for domain 'cbw'")),
        "{events:#?}"
    );
    // QEMU's reason, in its event: the snapshot-access node refuses
    // reads once the filter has broken the snapshot.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("BLOCK_JOB_COMPLETED")
                && l.contains("\"error\": \"Permission denied\"")),
        "the job did not fail on the broken snapshot"
    );
    assert_eq!(d.answer(&["domstate", DOM]), "running");
    assert!(!full.exists(), "the failed backup's target is left");
    nothing_left(&d, &nodes_before);
    // The checkpoint begun with the backup went with it; the one before
    // stays, bitmap and all.
    assert_eq!(d.answer(&["checkpoint-list", DOM, "--name"]), "cp0");
    assert_eq!(d.bitmap_names(DOM, VDA), ["cp0"]);
    d.virsh(&["destroy", DOM]).ok();
    assert!(
        qemu_io::holds(&vda, 0x77, "24M", "64k"),
        "the guest's write is lost"
    );
}

/// The highest QMP step the fault switch logged (src/fault.rs).
fn qmp_steps(log: &str) -> u32 {
    log.lines()
        .filter_map(|l| l.split("fault-injection step qmp ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// A daemon killed after any QMP step of a backup-begin with the option
/// (the begin and the job's end it sets off): the next one settles it,
/// and whatever the outcome, the device is back on the disk's node, no
/// node and no scratch file is left, and the checkpoint made with the
/// backup stays exactly when its target does. tests/crash.rs checks the
/// rest (`VIRTBACKUPD_TEST_ARGS="--backup-cbw-timeout 5"`), but not the
/// scratch files, which it does not know of.
#[test]
fn a_daemon_killed_at_any_step_leaves_no_filter_and_no_scratch() {
    let args = ["--backup-cbw-timeout", "10"];
    let run = |fault: &str| {
        let mut d = Daemon::start_with(&args);
        start_domain(&d);
        d.virsh(&["checkpoint-create-as", DOM, "cp0"]).ok();
        let nodes_before = d.node_names(DOM);
        d.set_env(&[("VIRTBACKUPD_FAULT", &format!("op=backup-begin,{fault}"))]);
        d.restart();
        let full = d.path("full.qcow2");
        let xml = d.push_backup_xml("full", &full, Some("cp0"));
        let cp1 = d.checkpoint_xml("cp1");
        let _ = d.virsh(&["backup-begin", DOM, &xml, &cp1]);
        common::wait_until(common::PATIENCE, || {
            d.exited() || words(&d.virsh(&["domjobinfo", DOM]).stdout) == "Job type: None"
        });
        d.set_env(&[]);
        d.restart();
        d.wait_idle(DOM);
        (d, nodes_before, full)
    };
    let (d, _, full) = run("kind=count");
    assert!(full.exists(), "the backup did not complete without a fault");
    let steps = qmp_steps(&d.log());
    assert!(steps > 10, "too few steps counted: {steps}");
    drop(d);
    for n in 1..=steps {
        let (d, nodes_before, full) = run(&format!("kind=kill-daemon,at=qmp:{n}:after"));
        let at = format!("killed after QMP step {n}");
        assert_eq!(device_node(&d), VDA, "{at}");
        assert_eq!(d.node_names(DOM), nodes_before, "{at}");
        let scratch: Vec<String> = files(d.path("").as_path())
            .into_iter()
            .filter(|f| f.ends_with(".cbw"))
            .collect();
        assert!(scratch.is_empty(), "{at}: scratch files left: {scratch:?}");
        let checkpoints = d.answer(&["checkpoint-list", DOM, "--name"]);
        let bitmaps = d.bitmap_names(DOM, VDA).join("\n");
        assert_eq!(checkpoints, bitmaps, "{at}");
        assert_eq!(checkpoints.contains("cp1"), full.exists(), "{at}");
        d.virsh(&["destroy", DOM]).ok();
    }
}
