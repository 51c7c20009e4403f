#![allow(clippy::tests_outside_test_module)]
//! Bytes that libvirtd 9.0 accepts though no libvirt client writes them,
//! and header fields it checks in its own order: each case here was sent
//! to libvirtd too, and the answers asserted are the ones it gave.

mod common;

use std::time::Duration;

use common::raw::{self, call, frame, xdr_string, Raw, CALL, KEEPALIVE, MESSAGE, OK};
use common::Daemon;
use virtbackupd::rpc::wire::remote_connect_get_uri_ret;
use virtbackupd::xdr::from_bytes;

const AUTH_LIST: i32 = 66;
const CONNECT_OPEN: i32 = 1;
const CONNECT_GET_TYPE: i32 = 3;
const DOMAIN_DEFINE_XML: i32 = 11;
const DOMAIN_LOOKUP_BY_NAME: i32 = 23;
const CONNECT_SUPPORTS_FEATURE: i32 = 60;
const CONNECT_GET_URI: i32 = 110;

fn open_args(flag: u32, name: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut args = flag.to_be_bytes().to_vec();
    args.extend(xdr_string(name));
    args.extend([0, 0, 0, 0]);
    args.extend_from_slice(extra);
    args
}

/// Opens with these args and returns the URI the connection got.
fn open_with(daemon: &Daemon, args: &[u8]) -> String {
    let mut s = Raw::connect(&daemon.socket());
    assert_eq!(s.exchange(&call(AUTH_LIST, 1, &[])).status, OK);
    let reply = s.exchange(&call(CONNECT_OPEN, 2, args));
    assert_eq!(reply.status, OK, "{:?}", reply.error());
    let reply = s.exchange(&call(CONNECT_GET_URI, 3, &[]));
    from_bytes::<remote_connect_get_uri_ret>(&reply.body)
        .expect("uri")
        .uri
}

#[test]
fn any_non_zero_option_flag_and_extra_bytes_open_the_connection() {
    let daemon = Daemon::start();
    for flag in [1, 2, 0x0100_0000, 0xffff_ffff] {
        assert_eq!(
            open_with(&daemon, &open_args(flag, b"qemu:///system", &[])),
            "qemu:///system",
            "flag {flag:#x}"
        );
    }
    // libvirtd reads the args and ignores what follows them.
    for extra in [&[0, 0, 0, 7][..], &[9]] {
        assert_eq!(
            open_with(&daemon, &open_args(1, b"qemu:///system", extra)),
            "qemu:///system"
        );
    }
    let mut s = Raw::connect(&daemon.socket());
    assert_eq!(s.exchange(&call(AUTH_LIST, 1, &[1, 2, 3, 4, 5])).status, OK);
    // Missing words are still a payload that does not decode.
    let short = &open_args(1, b"qemu:///system", &[])[..20];
    assert_eq!(
        s.exchange(&call(CONNECT_OPEN, 2, short)).error(),
        (39, 7, "Unable to decode message payload".into())
    );
}

#[test]
fn strings_end_at_their_first_nul() {
    let daemon = Daemon::start();
    assert_eq!(
        open_with(&daemon, &open_args(1, b"qemu:///system\0garbage", &[])),
        "qemu:///system"
    );
    let mut s = Raw::connect(&daemon.socket());
    s.open();
    let reply = s.exchange(&call(
        DOMAIN_LOOKUP_BY_NAME,
        5,
        &xdr_string(b"nosuch\0\xc3\x28"),
    ));
    assert_eq!(
        reply.error(),
        (
            42,
            10,
            "Domain not found: no domain with matching name 'nosuch'".into()
        )
    );
    // Text that is not UTF-8 is refused (libvirtd would look the bytes up
    // and find nothing): see xdr::Reader::string.
    let reply = s.exchange(&call(DOMAIN_LOOKUP_BY_NAME, 6, &xdr_string(b"no\xc3\x28")));
    assert_eq!(
        reply.error(),
        (39, 7, "Unable to decode message payload".into())
    );
}

#[test]
fn the_program_is_checked_before_the_status_and_printed_as_c_ints() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    let reply = s.exchange(&frame(0x1234_5678, 1, 3, CALL, 1, 1, &[]));
    assert_eq!(
        reply.error(),
        (39, 7, "Cannot find program 305419896 version 1".into())
    );
    let reply = s.exchange(&frame(0xffff_ffff, 0xffff_fffe, 3, CALL, 2, 0, &[]));
    assert_eq!(reply.error().2, "Cannot find program -1 version -2");
    let reply = s.exchange(&frame(raw::REMOTE, 1, 3, CALL, 3, 2, &[]));
    assert_eq!(reply.error().2, "Unexpected message status 2");
}

#[test]
fn keepalive_is_a_version_1_message_and_nothing_else() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    // PING as a call: the keepalive program takes no calls.
    let reply = s.exchange(&frame(KEEPALIVE, 1, 1, CALL, 1, OK, &[]));
    assert_eq!(
        reply.error(),
        (39, 7, "Cannot find program 1801807216 version 1".into())
    );
    // PING of another version: dropped, so AUTH_LIST's reply comes next.
    s.send(&frame(KEEPALIVE, 2, 1, MESSAGE, 0, OK, &[]));
    let reply = s.exchange(&call(AUTH_LIST, 7, &[]));
    assert_eq!((reply.proc_, reply.serial), (AUTH_LIST, 7));
    // The real thing.
    let pong = s.exchange(&frame(KEEPALIVE, 1, 1, MESSAGE, 0, OK, &[]));
    assert_eq!((pong.prog, pong.proc_, pong.kind), (KEEPALIVE, 2, MESSAGE));
}

#[test]
fn args_are_decoded_before_the_connection_is_judged() {
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    assert_eq!(s.exchange(&call(AUTH_LIST, 1, &[])).status, OK);
    let bad = [0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        s.exchange(&call(DOMAIN_LOOKUP_BY_NAME, 2, &bad)).error(),
        (39, 7, "Unable to decode message payload".into())
    );
    assert_eq!(
        s.exchange(&call(DOMAIN_LOOKUP_BY_NAME, 3, &xdr_string(b"x")))
            .error(),
        (
            1,
            7,
            "internal error: hypervisor connection not open".into()
        )
    );
    // CONNECT_SUPPORTS_FEATURE(REMOTE_EVENT_CALLBACK) asks the connection.
    let feature = [0, 0, 0, 14, 0, 0, 0, 0];
    assert_eq!(
        s.exchange(&call(CONNECT_SUPPORTS_FEATURE, 4, &feature))
            .error(),
        (
            1,
            7,
            "internal error: hypervisor connection not open".into()
        )
    );

    let mut ro = Raw::connect(&daemon.socket_ro());
    assert_eq!(ro.exchange(&call(AUTH_LIST, 1, &[])).status, OK);
    let reply = ro.exchange(&call(
        CONNECT_OPEN,
        2,
        &open_args(1, b"qemu:///system", &[]),
    ));
    assert_eq!(reply.status, OK);
    assert_eq!(
        ro.exchange(&call(DOMAIN_DEFINE_XML, 3, &bad)).error().2,
        "Unable to decode message payload"
    );
    assert_eq!(
        ro.exchange(&call(DOMAIN_DEFINE_XML, 4, &xdr_string(b"<domain/>")))
            .error()
            .2,
        "operation forbidden: read only access prevents virDomainDefineXML"
    );
}

/// libvirt's VIR_NET_MESSAGE_MAX does not count the length word.
#[test]
fn a_message_of_the_largest_size_is_read() {
    const MESSAGE_MAX: usize = 33_554_432;
    let daemon = Daemon::start();
    let mut s = Raw::connect(&daemon.socket());
    s.open();
    // CONNECT_GET_TYPE takes no args: the body is all extra bytes.
    let body = vec![0; MESSAGE_MAX - 24];
    let reply = s.exchange(&call(CONNECT_GET_TYPE, 5, &body));
    assert_eq!(reply.status, OK);
    // One byte more and libvirtd drops the connection.
    let _ = s.try_send(&call(CONNECT_GET_TYPE, 6, &vec![0; MESSAGE_MAX - 23]));
    assert!(s.next_within(Duration::from_secs(10)).is_none());
}
