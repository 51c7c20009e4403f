#![allow(clippy::tests_outside_test_module)]
//! Lifecycle events reach `virsh event` (callback registration, delivery,
//! deregistration).

mod common;

use common::events::EventLog;
use common::Daemon;

#[test]
fn virsh_event_sees_the_lifecycle() {
    let daemon = Daemon::start();
    // A domain defined again and again tells when the watcher listens and
    // when it has seen everything before.
    daemon.define_two_disk("probe");
    let again = daemon.path("probe-again.xml");
    let xml = daemon
        .virsh(&["dumpxml", "--inactive", "probe"])
        .ok()
        .stdout;
    std::fs::write(&again, xml).unwrap();
    let watcher = EventLog::start(&daemon, &["--event", "lifecycle"], "probe", again);

    daemon.define_two_disk("ev1");
    daemon.virsh(&["start", "ev1"]).ok();
    daemon.virsh(&["destroy", "ev1"]).ok();
    daemon.virsh(&["undefine", "ev1"]).ok();

    // virsh deregisters when interrupted.
    let lines = watcher.finish(&daemon);
    let got: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("event 'lifecycle'"))
        .collect();
    assert_eq!(
        got,
        [
            "event 'lifecycle' for domain 'ev1': Defined Added",
            // libvirtd reports QEMU's first RESUME before the start
            // (fixtures/reference/pause/events-session.txt).
            "event 'lifecycle' for domain 'ev1': Resumed Unpaused",
            "event 'lifecycle' for domain 'ev1': Started Booted",
            "event 'lifecycle' for domain 'ev1': Shutdown Finished after host request",
            "event 'lifecycle' for domain 'ev1': Stopped Destroyed",
            "event 'lifecycle' for domain 'ev1': Undefined Removed",
        ],
        "{lines:#?}"
    );
}
