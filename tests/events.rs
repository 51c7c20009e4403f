#![allow(clippy::tests_outside_test_module)]
//! Lifecycle events reach `virsh event` (callback registration, delivery,
//! deregistration).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Daemon;

#[test]
fn virsh_event_sees_the_lifecycle() {
    let daemon = Daemon::start();
    let uri = daemon.uri();
    let watcher = Command::new("virsh")
        .args([
            "-q",
            "-c",
            &uri,
            "event",
            "--event",
            "lifecycle",
            "--loop",
            "--timeout",
            "6",
        ])
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Time for the watcher to connect and register before anything happens.
    std::thread::sleep(Duration::from_millis(1500));

    daemon.define_two_disk("ev1");
    daemon.virsh(&["start", "ev1"]).ok();
    daemon.virsh(&["destroy", "ev1"]).ok();
    daemon.virsh(&["undefine", "ev1"]).ok();

    // virsh ends the loop itself after its timeout.
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("event 'lifecycle'"))
        .collect();
    assert_eq!(
        got,
        [
            "event 'lifecycle' for domain 'ev1': Defined Added",
            "event 'lifecycle' for domain 'ev1': Started Booted",
            "event 'lifecycle' for domain 'ev1': Shutdown Finished after host request",
            "event 'lifecycle' for domain 'ev1': Stopped Destroyed",
            "event 'lifecycle' for domain 'ev1': Undefined Removed",
        ],
        "{text}"
    );
}
