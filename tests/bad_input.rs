#![allow(clippy::tests_outside_test_module)]
//! Hostile bytes on the socket: the daemon answers with libvirt's errors or
//! closes that one connection, and keeps serving everyone else.

mod common;

use common::raw::{call, frame, xdr_string, Raw, Reply, CALL, OK};
use common::Daemon;

/// A connection opened with CONNECT_OPEN(name = NULL, flags = 0).
fn opened(daemon: &Daemon) -> Raw {
    Raw::opened(&daemon.socket(), 0)
}

/// The code and message of an error reply.
#[track_caller]
fn error_message(reply: &Reply) -> (i32, String) {
    let (code, _, message) = reply.error();
    (code, message)
}

#[test]
fn an_unknown_procedure_gets_libvirts_rpc_error() {
    let daemon = Daemon::start();
    let mut s = opened(&daemon);
    let reply = s.exchange(&call(9999, 2, &[]));
    assert_eq!((reply.proc_, reply.status), (9999, 1));
    assert_eq!(
        error_message(&reply),
        (39, "unknown procedure: 9999".to_string())
    );
}

#[test]
fn an_unimplemented_procedure_is_not_supported() {
    let daemon = Daemon::start();
    let mut s = opened(&daemon);
    // REMOTE_PROC_NODE_GET_CPU_STATS (227) is a real procedure we do not serve.
    let reply = s.exchange(&call(227, 2, &[]));
    assert_eq!(reply.status, 1);
    let (code, message) = error_message(&reply);
    assert_eq!(code, 3);
    assert!(
        message.starts_with("this function is not supported by the connection driver: vir"),
        "{message}"
    );
}

#[test]
fn an_unknown_program_gets_an_error_reply() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    let reply = s.exchange(&frame(0x1234_5678, 1, 1, CALL, 0, OK, &[]));
    assert_eq!(reply.status, 1);
    assert_eq!(
        error_message(&reply).1,
        format!("Cannot find program {} version 1", 0x1234_5678)
    );
}

#[test]
fn a_body_that_does_not_decode_gets_an_error_and_the_connection_lives() {
    let daemon = Daemon::start();
    let mut s = opened(&daemon);
    // DOMAIN_LOOKUP_BY_NAME with a string length of 4 GiB - 1.
    let reply = s.exchange(&call(
        23,
        2,
        &[0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd'],
    ));
    assert_eq!(reply.status, 1);
    assert_eq!(
        error_message(&reply),
        (39, "Unable to decode message payload".to_string())
    );
    // The same connection still answers.
    assert_eq!(s.exchange(&call(3, 3, &[])).status, 0);
}

#[test]
fn calls_before_open_are_refused() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    let reply = s.exchange(&call(3, 0, &[]));
    assert_eq!(reply.status, 1);
    assert_eq!(
        error_message(&reply).1,
        "internal error: hypervisor connection not open"
    );
}

#[test]
fn garbage_closes_only_that_connection() {
    let daemon = Daemon::start();
    let connect = || Raw::connect(&daemon.socket());
    let mut bad = [connect(), connect(), connect()];
    // A length of 4 GiB, a length below the header, random bytes.
    bad[0].send(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    bad[1].send(&[0, 0, 0, 8, 1, 2, 3, 4]);
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = bad[2].try_send(&noise);
    for raw in &mut bad[..2] {
        assert!(raw.next().is_none(), "connection should be closed");
    }
    // A truncated message followed by a close must not disturb anyone either.
    let mut truncated = connect();
    truncated.send(&call(66, 0, &[])[..10]);
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

/// xorshift64*: a fixed sequence, so a failure names a reproducible case.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// XDR-shaped noise: words that are likely lengths, counts, flags and
    /// discriminants (0, 1, small, huge, negative), and strings with a
    /// length that may or may not match what follows.
    fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        // Most args are a few words (flags, a string and flags), so short
        // bodies decode often enough to reach the handlers.
        let words = if self.below(4) == 0 {
            self.below(12)
        } else {
            self.below(4)
        };
        for _ in 0..words {
            let word: u32 = match self.below(10) {
                0 => 0,
                1 => 1,
                2 => self.below(8) as u32,
                3 => 0xffff_ffff,
                4 => 0x8000_0000,
                5 => 0x0010_0000,
                6 => self.next() as u32,
                _ => {
                    let len = self.below(24) as usize;
                    out.extend_from_slice(&(len as u32).to_be_bytes());
                    // Mostly text that XML and names are made of, now
                    // and then a NUL or a byte that is not UTF-8.
                    let text: Vec<u8> = (0..len)
                        .map(|_| b"<>/'\"a.-_x\x00\xff"[self.below(12) as usize])
                        .collect();
                    out.extend_from_slice(&text);
                    out.resize(out.len() + (4 - len % 4) % 4, 0);
                    continue;
                }
            };
            out.extend_from_slice(&word.to_be_bytes());
        }
        // Sometimes cut mid-word.
        if self.below(8) == 0 && !out.is_empty() {
            out.truncate(self.below(out.len() as u64) as usize);
        }
        out
    }
}

/// The args of a domain procedure begin with remote_nonnull_domain.
fn domain_prefix(name: &str, uuid: &[u8; 16]) -> Vec<u8> {
    let mut out = xdr_string(name.as_bytes());
    out.extend_from_slice(uuid);
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out
}

/// Every procedure number of the remote program, and some beyond it, with
/// XDR-shaped noise as args: bare, and after the name and uuid of a
/// running domain so that what decodes reaches the driver with garbage
/// flags, strings and counts. Every call gets a reply (none hangs, none
/// takes the connection down except CONNECT_CLOSE), and the daemon serves
/// virsh afterwards. A fixed seed: the same calls every run
/// (`NOISE_SEED=N cargo test --test bad_input noise` tries another).
#[test]
fn noise_in_every_procedure_gets_replies_and_no_panic() {
    let daemon = Daemon::start();
    let disk = daemon.image("fz.qcow2", "qcow2", "16M");
    let xml = daemon.domain_xml("fz", &[("vda", &disk, "qcow2")]);
    daemon.define("fz", &xml);
    daemon.virsh(&["start", "fz"]).ok();
    let uuid_text = daemon.answer(&["domuuid", "fz"]);
    let hex: String = uuid_text.chars().filter(|c| *c != '-').collect();
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let prefix = domain_prefix("fz", &uuid);

    let mut s = opened(&daemon);
    let mut serial = 10;
    let mut send = |s: &mut Raw, proc_: i32, body: &[u8]| {
        serial += 1;
        s.try_send(&call(proc_, serial, body))
            .unwrap_or_else(|e| panic!("proc {proc_}: {e}"));
        let Some(reply) = s.next() else {
            panic!("proc {proc_}: no reply to {body:02x?}\n{}", daemon.log());
        };
        assert_eq!(reply.proc_, proc_);
        reply
    };
    // Which procedures the daemon serves: the others answer "not
    // supported" or "unknown procedure" before looking at the args.
    let served: Vec<i32> = (1..=460)
        .filter(|&proc_| proc_ != 2)
        .filter(|&proc_| {
            let reply = send(&mut s, proc_, &[]);
            let message = if reply.status == 0 {
                String::new()
            } else {
                error_message(&reply).1
            };
            !message.starts_with("this function is not supported")
                && !message.starts_with("unknown procedure")
        })
        .collect();
    assert!(served.len() > 60, "{served:?}");

    let mut noise = Noise(
        std::env::var("NOISE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15),
    );
    let (mut decoded, mut calls) = (0, 0);
    for &proc_ in &served {
        for round in 0..300 {
            let mut body = if round % 4 == 0 {
                Vec::new()
            } else {
                prefix.clone()
            };
            body.extend(noise.body());
            let reply = send(&mut s, proc_, &body);
            calls += 1;
            if reply.status == 0 || error_message(&reply).1 != "Unable to decode message payload" {
                decoded += 1;
            }
        }
    }
    // Enough of the noise got past decoding to reach the handlers (about
    // one call in 14 with this seed).
    assert!(decoded * 20 > calls, "{decoded} of {calls} decoded");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    daemon.virsh(&["list", "--all"]).ok();
}
