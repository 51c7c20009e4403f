#![allow(clippy::tests_outside_test_module)]
//! Hostile bytes on the socket: the daemon answers with libvirt's errors or
//! closes that one connection, and keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Daemon;

const REMOTE: u32 = 0x2000_8086;

fn call(prog: u32, vers: u32, proc_: i32, serial: u32, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::new();
    let len = u32::try_from(28 + body.len()).unwrap();
    for word in [len, prog, vers, proc_ as u32, 0, serial, 0] {
        msg.extend_from_slice(&word.to_be_bytes());
    }
    msg.extend_from_slice(body);
    msg
}

fn connect(daemon: &Daemon) -> UnixStream {
    let stream = UnixStream::connect(daemon.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one reply: (proc, status, body).
fn reply(stream: &mut UnixStream) -> Option<(i32, u32, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    let mut rest = vec![0u8; len - 4];
    stream.read_exact(&mut rest).ok()?;
    let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
    Some((word(8) as i32, word(20), rest[24..].to_vec()))
}

/// The message text of an error reply body (remote_error: code, domain, message?...).
fn error_message(body: &[u8]) -> (i32, String) {
    let code = i32::from_be_bytes(body[0..4].try_into().unwrap());
    assert_eq!(&body[8..12], &[0, 0, 0, 1], "message present");
    let len = u32::from_be_bytes(body[12..16].try_into().unwrap()) as usize;
    (
        code,
        String::from_utf8_lossy(&body[16..16 + len]).into_owned(),
    )
}

fn open(stream: &mut UnixStream) {
    // CONNECT_OPEN(name = NULL, flags = 0)
    stream
        .write_all(&call(REMOTE, 1, 1, 1, &[0, 0, 0, 0, 0, 0, 0, 0]))
        .unwrap();
    let (_, status, _) = reply(stream).unwrap();
    assert_eq!(status, 0);
}

#[test]
fn an_unknown_procedure_gets_libvirts_rpc_error() {
    let daemon = Daemon::start();
    let mut s = connect(&daemon);
    open(&mut s);
    s.write_all(&call(REMOTE, 1, 9999, 2, &[])).unwrap();
    let (proc_, status, body) = reply(&mut s).unwrap();
    assert_eq!((proc_, status), (9999, 1));
    assert_eq!(
        error_message(&body),
        (39, "unknown procedure: 9999".to_string())
    );
}

#[test]
fn an_unimplemented_procedure_is_not_supported() {
    let daemon = Daemon::start();
    let mut s = connect(&daemon);
    open(&mut s);
    // REMOTE_PROC_NODE_GET_CPU_STATS (344) is a real procedure we do not serve.
    s.write_all(&call(REMOTE, 1, 344, 2, &[])).unwrap();
    let (_, status, body) = reply(&mut s).unwrap();
    assert_eq!(status, 1);
    let (code, message) = error_message(&body);
    assert_eq!(code, 3);
    assert!(
        message.starts_with("this function is not supported by the connection driver: vir"),
        "{message}"
    );
}

#[test]
fn an_unknown_program_gets_an_error_reply() {
    let daemon = Daemon::start();
    let mut s = connect(&daemon);
    s.write_all(&call(0x1234_5678, 1, 1, 0, &[])).unwrap();
    let (_, status, body) = reply(&mut s).unwrap();
    assert_eq!(status, 1);
    assert_eq!(
        error_message(&body).1,
        format!("Cannot find program {} version 1", 0x1234_5678)
    );
}

#[test]
fn a_body_that_does_not_decode_gets_an_error_and_the_connection_lives() {
    let daemon = Daemon::start();
    let mut s = connect(&daemon);
    open(&mut s);
    // DOMAIN_LOOKUP_BY_NAME with a string length of 4 GiB - 1.
    s.write_all(&call(
        REMOTE,
        1,
        23,
        2,
        &[0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd'],
    ))
    .unwrap();
    let (_, status, body) = reply(&mut s).unwrap();
    assert_eq!(status, 1);
    assert_eq!(
        error_message(&body),
        (39, "Unable to decode message payload".to_string())
    );
    // The same connection still answers.
    s.write_all(&call(REMOTE, 1, 3, 3, &[])).unwrap();
    assert_eq!(reply(&mut s).unwrap().1, 0);
}

#[test]
fn calls_before_open_are_refused() {
    let daemon = Daemon::start();
    let mut s = connect(&daemon);
    s.write_all(&call(REMOTE, 1, 3, 0, &[])).unwrap();
    let (_, status, body) = reply(&mut s).unwrap();
    assert_eq!(status, 1);
    assert_eq!(
        error_message(&body).1,
        "internal error: hypervisor connection not open"
    );
}

#[test]
fn garbage_closes_only_that_connection() {
    let daemon = Daemon::start();
    let mut bad = [connect(&daemon), connect(&daemon), connect(&daemon)];
    // A length of 4 GiB, a length below the header, random bytes.
    bad[0]
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    bad[1].write_all(&[0, 0, 0, 8, 1, 2, 3, 4]).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = bad[2].write_all(&noise);
    for stream in &mut bad[..2] {
        assert!(reply(stream).is_none(), "connection should be closed");
    }
    // A truncated message followed by a close must not disturb anyone either.
    let mut truncated = connect(&daemon);
    truncated
        .write_all(&call(REMOTE, 1, 66, 0, &[])[..10])
        .unwrap();
    drop(truncated);

    daemon.virsh(&["list", "--all"]).ok();
}

#[test]
fn hostile_domain_xml_is_refused_and_leaves_nothing_on_disk() {
    let daemon = Daemon::start();
    let run = daemon
        .python_quiet(
            r#"import libvirt, os
c = libvirt.open(os.environ['URI'])
docs = {
    'nesting': "<domain type='qemu'><name>n</name><memory>65536</memory><os><type>hvm</type></os>"
               + '<metadata>' + '<a>' * 200000 + '</a>' * 200000 + '</metadata></domain>',
    'entities': '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                "<domain type='qemu'><name>&b;</name><memory>65536</memory><os><type>hvm</type></os></domain>",
    'slash': "<domain type='qemu'><name>../x</name><memory>65536</memory><os><type>hvm</type></os></domain>",
    'not-xml': '\x01garbage',
    'huge-line': "<domain type='qemu'><name>" + 'x' * 3500000 + '</nam></domain>',
}
for key, doc in docs.items():
    try:
        c.defineXML(doc)
        print(key, 'defined')
    except libvirt.libvirtError as e:
        print(key, e.get_error_code())
print('domains', len(c.listAllDomains()))
"#,
        )
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "nesting 35", "{}", run.stdout);
    assert!(lines[1].starts_with("entities "), "{}", run.stdout);
    assert_ne!(lines[1], "entities defined");
    assert_eq!(lines[2], "slash 27");
    assert!(
        lines[3].starts_with("not-xml ") && lines[3] != "not-xml defined",
        "{}",
        run.stdout
    );
    assert_eq!(lines[4], "huge-line 35", "{}", run.stdout);
    assert_eq!(lines[5], "domains 0");
    let stored = std::fs::read_dir(daemon.path("state/domains"))
        .unwrap()
        .count();
    assert_eq!(stored, 0);
    daemon.virsh(&["list", "--all"]).ok();
}
