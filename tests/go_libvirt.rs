#![allow(clippy::tests_outside_test_module)]
//! The pure-Go client github.com/digitalocean/go-libvirt (Terraform's
//! libvirt provider, Prometheus exporters): its bytes, replayed, and the
//! client itself, built from Debian's package.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::raw::{self, Raw, ERROR, OK, REPLY};
use common::{Daemon, Run};
use virtbackupd::rpc::wire::*;
use virtbackupd::xdr::{from_bytes, Unpack};

/// The domain fixtures/wire/go_libvirt_session.hex was recorded with.
const GO1_XML: &str = "<domain type='qemu'>\n  <name>go1</name>\n  \
    <uuid>00112233-4455-6677-8899-aabbccddeeff</uuid>\n  <memory unit='MiB'>64</memory>\n  \
    <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n</domain>\n";

fn go1() -> remote_nonnull_domain {
    remote_nonnull_domain {
        name: "go1".into(),
        uuid: [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ],
        id: -1,
    }
}

#[track_caller]
fn ok<T: Unpack>(reply: &raw::Reply) -> T {
    assert_eq!(reply.status, OK, "{:?}", reply.error());
    from_bytes(&reply.body).expect("reply body")
}

/// Each of go-libvirt's frames, the CONNECT_OPEN with its 0x01000000
/// "name present" flag first among them, gets the answer libvirtd gives.
#[test]
fn go_libvirts_recorded_calls_are_answered() {
    let daemon = Daemon::start();
    daemon.define("go1", GO1_XML);
    let session = raw::hex_fixture(include_str!("../fixtures/wire/go_libvirt_session.hex"));
    let frames = raw::split_frames(&session);
    assert_eq!(frames.len(), 14);

    let mut s = Raw::connect(&daemon.socket());
    let mut replies = Vec::new();
    for frame in &frames {
        let reply = s.exchange(frame);
        let sent = |i: usize| u32::from_be_bytes(frame[i..i + 4].try_into().unwrap());
        assert_eq!(
            (
                reply.prog,
                reply.vers,
                reply.proc_ as u32,
                reply.kind,
                reply.serial
            ),
            (sent(4), sent(8), sent(12), REPLY, sent(20)),
        );
        replies.push(reply);
    }

    let auth: remote_auth_list_ret = ok(&replies[0]);
    assert_eq!(auth.types, [REMOTE_AUTH_NONE]);
    let () = ok(&replies[1]);
    let lib: remote_connect_get_lib_version_ret = ok(&replies[2]);
    assert_eq!(lib.lib_ver, 9_000_000);
    let hv: remote_connect_get_type_ret = ok(&replies[3]);
    assert_eq!(hv.r#type, "QEMU");
    let uri: remote_connect_get_uri_ret = ok(&replies[4]);
    assert_eq!(uri.uri, "qemu:///system");
    let all: remote_connect_list_all_domains_ret = ok(&replies[5]);
    assert_eq!((all.domains, all.ret), (vec![go1()], 1));
    let found: remote_domain_lookup_by_name_ret = ok(&replies[6]);
    assert_eq!(found.dom, go1());
    let state: remote_domain_get_state_ret = ok(&replies[7]);
    assert_eq!(state.state, 5, "VIR_DOMAIN_SHUTOFF");
    let info: remote_domain_get_info_ret = ok(&replies[8]);
    assert_eq!((info.state, info.maxMem, info.nrVirtCpu), (5, 65536, 1));
    let xml: remote_domain_get_xml_desc_ret = ok(&replies[9]);
    assert!(xml.xml.contains("<name>go1</name>"), "{}", xml.xml);
    assert!(
        xml.xml
            .contains("<uuid>00112233-4455-6677-8899-aabbccddeeff</uuid>"),
        "{}",
        xml.xml
    );
    let cps: remote_domain_list_all_checkpoints_ret = ok(&replies[10]);
    assert_eq!((cps.checkpoints.len(), cps.ret), (0, 0));
    assert_eq!(
        replies[11].error(),
        (
            42,
            10,
            "Domain not found: no domain with matching name 'go1-missing'".into()
        )
    );
    // The args decoded (OptString and all): the refusal is the driver's.
    assert_eq!(replies[12].status, ERROR);
    assert_eq!(
        replies[12].error().2,
        "Operation not supported: cannot perform disk backup for inactive domain"
    );
    let () = ok(&replies[13]);
}

/// Builds tests/go/golibvirt_probe against Debian's go-libvirt
/// (golang-github-digitalocean-go-libvirt-dev, which scripts/install-deps.sh
/// installs) in GOPATH mode: no module download is involved.
fn build_go_probe() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("golibvirt_probe");
    // Needs go (golang-go).
    Run::of(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/go/golibvirt_probe"
            ))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", tmp.join("go-build"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", ""),
    )
    .ok();
    out
}

/// The real client: connect, the calls a typical Go tool makes, a refusal
/// or two, disconnect.
#[test]
fn the_go_libvirt_client_connects_and_reads() {
    let probe = build_go_probe();
    let daemon = Daemon::start();
    daemon.define("go1", GO1_XML);
    let run = Run::of(Command::new(&probe).arg(daemon.socket()).arg("go1")).ok();
    let want = "\
version 9.0.0
type QEMU
uri qemu:///system
domains go1
lookup go1 -1
state 5 0
info 5 65536 1
xml names domain true
checkpoints 0 0
missing: Domain not found: no domain with matching name 'go1-missing'
backup: Operation not supported: cannot perform disk backup for inactive domain
disconnected
";
    assert_eq!(run.stdout, want);
}
