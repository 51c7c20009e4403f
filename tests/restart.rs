#![allow(clippy::tests_outside_test_module)]
//! Killing the daemon does not kill running domains; the next daemon takes
//! them back.

mod common;

use common::{words, Daemon};

#[test]
fn sigkill_and_restart_keep_running_domains() {
    let mut daemon = Daemon::start();
    daemon.define_two_disk("keep");
    daemon.virsh(&["start", "keep"]).ok();
    let id = daemon.answer(&["domid", "keep"]);
    let pids = daemon.qemu_pids();
    assert_eq!(pids.len(), 1);

    daemon.restart();

    assert_eq!(daemon.qemu_pids(), pids, "QEMU must survive the daemon");
    assert_eq!(
        words(&daemon.virsh(&["list"]).ok().stdout),
        format!("{id} keep running")
    );
    let status = daemon
        .virsh(&["qemu-monitor-command", "keep", "--hmp", "info status"])
        .ok()
        .stdout;
    assert!(status.contains("running"), "{status}");
    // A pause through the monitor is seen, and survives the next restart.
    daemon
        .virsh(&["qemu-monitor-command", "keep", "--hmp", "stop"])
        .ok();
    daemon.wait_state("keep", "paused (unknown)");
    daemon.restart();
    assert_eq!(daemon.answer(&["domstate", "keep"]), "paused");

    daemon.virsh(&["destroy", "keep"]).ok();
    assert!(daemon.qemu_pids().is_empty());
    assert_eq!(daemon.answer(&["domstate", "keep"]), "shut off");
}
