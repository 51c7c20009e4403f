#![allow(clippy::tests_outside_test_module)]
//! libvirt's keepalive program: PINGs are answered, and a client that asked
//! for keepalive but stops answering ours is disconnected.

mod common;

use std::time::{Duration, Instant};

use common::raw::{frame, Raw, CALL, KEEPALIVE, MESSAGE, OK, REMOTE};
use common::Daemon;

const PING: i32 = 1;
const PONG: i32 = 2;
const CONNECT_SUPPORTS_FEATURE: i32 = 60;

#[test]
fn a_ping_gets_a_pong() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    let pong = s.exchange(&frame(KEEPALIVE, 1, PING, MESSAGE, 0, OK, &[]));
    assert_eq!(
        (pong.prog, pong.proc_, pong.kind),
        (KEEPALIVE, PONG, MESSAGE)
    );
}

#[test]
fn a_client_that_stops_answering_is_dropped() {
    let daemon = Daemon::start_with(&["--keepalive-interval", "1", "--keepalive-count", "2"]);
    let mut s = Raw::connect(&daemon.socket());
    // SUPPORTS_FEATURE(PROGRAM_KEEPALIVE) turns our pings on, as in libvirtd.
    let feature = 10u32.to_be_bytes();
    let reply = s.exchange(&frame(
        REMOTE,
        1,
        CONNECT_SUPPORTS_FEATURE,
        CALL,
        0,
        OK,
        &feature,
    ));
    assert_eq!(reply.proc_, CONNECT_SUPPORTS_FEATURE);
    let start = Instant::now();
    let mut pings = 0;
    while let Some(ping) = s.next() {
        assert_eq!(
            (ping.prog, ping.proc_),
            (KEEPALIVE, PING),
            "only pings are expected"
        );
        pings += 1;
    }
    assert_eq!(pings, 2);
    assert!(start.elapsed() < Duration::from_secs(15));
    // Everyone else is still served.
    daemon.virsh(&["list", "--all"]).ok();
}

#[test]
fn virsh_answers_our_pings_and_stays_connected() {
    let daemon = Daemon::start_with(&["--keepalive-interval", "1", "--keepalive-count", "2"]);
    // virsh event idles for 5 s, far longer than 1 s x 2 unanswered pings;
    // it ends by its timeout (exit status 1), not by a lost connection.
    let run = daemon.virsh(&["event", "--event", "lifecycle", "--timeout", "5"]);
    assert!(
        run.stdout.contains("event loop timed out"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr.trim(), "");
}
