#![allow(clippy::tests_outside_test_module)]
//! libvirt's keepalive program: PINGs are answered, and a client that asked
//! for keepalive but stops answering ours is disconnected.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Daemon;

const REMOTE: u32 = 0x2000_8086;
const KEEPALIVE: u32 = 0x6b65_6570;

fn message(prog: u32, proc_: u32, kind: u32, serial: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(28 + body.len()).unwrap();
    let mut out = Vec::new();
    for word in [len, prog, 1, proc_, kind, serial, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// (prog, proc, type) of the next message, or None once the peer closed.
fn next(stream: &mut UnixStream) -> Option<(u32, u32, u32)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
    stream.read_exact(&mut rest).ok()?;
    let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
    Some((word(0), word(8), word(12)))
}

#[test]
fn a_ping_gets_a_pong() {
    let daemon = Daemon::start();
    let mut s = UnixStream::connect(daemon.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&message(KEEPALIVE, 1, 2, 0, &[])).unwrap();
    assert_eq!(next(&mut s), Some((KEEPALIVE, 2, 2)));
}

#[test]
fn a_client_that_stops_answering_is_dropped() {
    let daemon = Daemon::start_with(&["--keepalive-interval", "1", "--keepalive-count", "2"]);
    let mut s = UnixStream::connect(daemon.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // SUPPORTS_FEATURE(PROGRAM_KEEPALIVE) turns our pings on, as in libvirtd.
    s.write_all(&message(REMOTE, 60, 0, 0, &10u32.to_be_bytes()))
        .unwrap();
    assert_eq!(next(&mut s).map(|m| m.1), Some(60));
    let start = Instant::now();
    let mut pings = 0;
    while let Some((prog, proc_, _)) = next(&mut s) {
        assert_eq!((prog, proc_), (KEEPALIVE, 1), "only pings are expected");
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
