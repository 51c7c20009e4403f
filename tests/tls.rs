#![allow(clippy::tests_outside_test_module)]
//! libvirt's TLS transport (qemu+tls://) with the stock virsh and an
//! openssl-made PKI, the refusals libvirtd makes, plain TCP, and the
//! configuration file's mistakes. None of these touch libvirt's standard
//! sockets, so they run beside the other tests.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::service::{bare, make_pki, run_daemon};
use common::{words, Daemon};

const CLIENT_DN: &str = "C=GB,L=London,O=virtbackupd test,CN=client";

/// A daemon serving TLS on a free port of 127.0.0.1 with the test PKI,
/// started through a configuration file as the unit starts it.
fn tls_daemon(extra: &str) -> (Daemon, u16) {
    let mut daemon = bare();
    make_pki(&daemon.path("pki"));
    let pki = daemon.path("pki");
    let conf = daemon.config_file(&format!(
        "# as the package's file, with the test's paths\n\
         listen = \"{dir}/sock\"\nlisten_ro = \"{dir}/sock-ro\"\n\
         state_dir = \"{dir}/state\"\nrun_dir = \"{dir}/run\"\n\
         listen_tls = \"127.0.0.1:0\"\n\
         tls_ca = \"{pki}/cacert.pem\"\ntls_cert = \"{pki}/servercert.pem\"\n\
         tls_key = \"{pki}/serverkey.pem\"\n{extra}\n",
        dir = daemon.dir.path().display(),
        pki = pki.display(),
        extra = extra.replace("PKI", &pki.display().to_string()),
    ));
    daemon.start_as_service(&conf);
    let port = daemon.logged_addr("serving TLS").port();
    (daemon, port)
}

/// virsh over TLS with the certificates in pki/WHO. `no_sanity` stops
/// virsh from refusing to send a certificate it knows is bad, so that the
/// server's own checks are what is tested.
fn tls_uri(daemon: &Daemon, port: u16, who: &str) -> String {
    format!(
        "qemu+tls://localhost:{port}/system?pkipath={}&no_sanity=1",
        daemon.path("pki").join(who).display()
    )
}

#[test]
fn ca_signed_clients_get_in_and_the_others_are_refused_at_the_handshake() {
    let (daemon, port) =
        tls_daemon("tls_allowed_dn_list = [\"C=GB,L=London,O=virtbackupd test,CN=cl*\"]");
    let good = tls_uri(&daemon, port, "client");
    // Read-write: a TLS client proved who it is.
    let image = daemon.image("tls.qcow2", "qcow2", "16M");
    let xml = daemon.path("tls.xml");
    std::fs::write(&xml, daemon.domain_xml("tls", &[("vda", &image, "qcow2")])).unwrap();
    daemon
        .virsh_at(&good, &["define", xml.to_str().unwrap()])
        .ok();
    assert_eq!(
        words(&daemon.virsh_at(&good, &["list", "--all"]).ok().stdout),
        "- tls shut off"
    );
    // The same domain through the unix socket: one daemon.
    assert_eq!(daemon.answer(&["domstate", "tls"]), "shut off");

    for (who, reason) in [
        ("other", "DN not on tls_allowed_dn_list"),
        ("expired", "certificate expired"),
        ("rogue", "BadSignature"),
    ] {
        let run = daemon.virsh_at(&tls_uri(&daemon, port, who), &["list"]);
        assert_ne!(run.code, 0, "{who} got in");
        assert!(
            run.stderr.contains("Unable to read TLS confirmation"),
            "{who}: {run:?}"
        );
        assert!(
            daemon.log().contains(reason),
            "{who}: no '{reason}' in the log"
        );
    }
    // A TLS client with no certificate at all.
    let ca = daemon.path("pki/cacert.pem");
    let bare_tls = common::Run::of(
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-CAfile", ca.to_str().unwrap()])
            .stdin(std::process::Stdio::null()),
    );
    assert!(!bare_tls.stdout.contains("\u{1}"), "{bare_tls:?}");
    common::wait_until(common::PATIENCE, || {
        daemon.log().matches("TLS handshake refused").count() == 4
    });
    assert!(
        daemon.log().contains("peer sent no certificates"),
        "{}",
        daemon.log()
    );
    // No RPC was read from any of them: the only connections served are
    // the good client's (and the unix socket's).
    let log = daemon.log();
    assert_eq!(log.matches("TLS handshake refused").count(), 4, "{log}");
    assert_eq!(log.matches("rpc::server: connected").count(), 3, "{log}");

    // A plain libvirt client on the TLS port gets nothing served.
    let plain = daemon.virsh_at(&format!("qemu+tcp://127.0.0.1:{port}/system"), &["list"]);
    assert_ne!(plain.code, 0);
    // Nor is there a plain TCP port unless one is asked for.
    let tcp = daemon.virsh_at("qemu+tcp://127.0.0.1:16509/system", &["list"]);
    assert_ne!(tcp.code, 0);
}

#[test]
fn a_revoked_client_is_refused() {
    let (daemon, port) = tls_daemon("tls_crl = \"PKI/cacrl.pem\"");
    daemon
        .virsh_at(&tls_uri(&daemon, port, "client"), &["list"])
        .ok();
    let run = daemon.virsh_at(&tls_uri(&daemon, port, "revoked"), &["list"]);
    assert_ne!(run.code, 0, "a revoked client got in");
    assert!(
        run.stderr.contains("Unable to read TLS confirmation"),
        "{run:?}"
    );
    assert!(daemon.log().contains("Revoked"), "{}", daemon.log());
}

#[test]
fn the_dn_is_the_one_virt_pki_query_dn_prints() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let cert = dir.path().join("client/clientcert.pem");
    let run = common::command("virt-pki-query-dn", &[cert.to_str().unwrap()]).ok();
    assert_eq!(run.stdout.trim(), CLIENT_DN);
    // ... and an allow-list holding exactly it lets the client in.
    let (daemon, port) = tls_daemon(&format!("tls_allowed_dn_list = [\"{CLIENT_DN}\"]"));
    daemon
        .virsh_at(&tls_uri(&daemon, port, "client"), &["list"])
        .ok();
}

#[test]
fn a_stalled_handshake_holds_up_nobody() {
    let (daemon, port) = tls_daemon("");
    // Two clients that connect and say nothing, and one that stops in the
    // middle of its ClientHello.
    let _silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut partial = TcpStream::connect(("127.0.0.1", port)).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let start = Instant::now();
    daemon
        .virsh_at(&tls_uri(&daemon, port, "client"), &["list"])
        .ok();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "a TLS client waited {:?} behind stalled ones",
        start.elapsed()
    );
}

#[test]
fn plain_tcp_only_with_auth_none_given() {
    let daemon = bare();
    let refused = run_daemon(&[
        "--listen",
        daemon.path("sock").to_str().unwrap(),
        "--listen-ro",
        daemon.path("sock-ro").to_str().unwrap(),
        "--listen-tcp",
        "127.0.0.1:0",
    ]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("needs auth_tcp = \"none\" given explicitly"),
        "{}",
        refused.stderr
    );
    assert!(!daemon.path("sock").exists());

    let daemon = Daemon::start_with(&["--listen-tcp", "127.0.0.1:0", "--auth-tcp", "none"]);
    let port = daemon
        .logged_addr("serving plain TCP without authentication")
        .port();
    let uri = format!("qemu+tcp://127.0.0.1:{port}/system");
    daemon.virsh_at(&uri, &["list"]).ok();
}

#[test]
fn configuration_mistakes_stop_the_daemon_with_the_line() {
    let daemon = bare();
    let cases = [
        (
            "# comment\nlisten = \"/tmp/x\"\nlisten_tsl = \"0.0.0.0\"\n",
            "3: listen_tsl: unknown key",
        ),
        (
            "keepalive_count = 0\n",
            "1: keepalive_count: '0' is not a number from 1 to 100",
        ),
        (
            "\nkeepalive_interval = \"5\"\n",
            "2: keepalive_interval: expected a number",
        ),
        (
            "listen_tls = \"nowhere:port:x\"\n",
            "1: listen_tls: 'nowhere:port:x' is not an address",
        ),
        (
            "tls_allowed_dn_list = \"CN=x\"\n",
            "1: tls_allowed_dn_list: expected a list of strings",
        ),
        (
            "auth_tcp = \"sasl\"\n",
            "1: auth_tcp: 'sasl' is not supported",
        ),
        ("listen = \"/tmp/x\n", "1: unterminated string"),
    ];
    for (text, reason) in cases {
        let conf = daemon.config_file(text);
        let run = run_daemon(&["--config", conf.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{text:?} was accepted: {run:?}");
        let want = format!("virtbackupd: {}:{reason}", conf.display());
        assert!(
            run.stderr.starts_with(&want),
            "want {want:?}, got {:?}",
            run.stderr
        );
    }
    let missing = run_daemon(&["--config", "/nonexistent/virtbackupd.conf"]);
    assert_eq!(missing.code, 2);
    assert!(missing
        .stderr
        .contains("cannot read /nonexistent/virtbackupd.conf"));
}

#[test]
fn bad_tls_files_and_a_served_socket_stop_the_daemon() {
    let first = Daemon::start();
    let sock = first.socket();
    // A second daemon on the same socket: refused, and the first keeps it.
    let second = run_daemon(&[
        "--listen",
        sock.to_str().unwrap(),
        "--listen-ro",
        first.path("other-ro").to_str().unwrap(),
        "--state-dir",
        first.path("state2").to_str().unwrap(),
        "--run-dir",
        first.path("run2").to_str().unwrap(),
    ]);
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains(&format!(
            "{} is served by another daemon (libvirtd?)",
            sock.display()
        )),
        "{}",
        second.stderr
    );
    first.virsh(&["list"]).ok();

    let bad_tls = run_daemon(&[
        "--listen",
        first.path("s3").to_str().unwrap(),
        "--listen-ro",
        first.path("s3-ro").to_str().unwrap(),
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(bad_tls.code, 1);
    assert!(
        bad_tls.stderr.contains("TLS: /nonexistent/ca.pem:"),
        "{}",
        bad_tls.stderr
    );
    assert!(!first.path("s3").exists(), "no socket is left behind");

    // A port that is taken: the unix sockets already bound go again.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = run_daemon(&[
        "--listen",
        first.path("s4").to_str().unwrap(),
        "--listen-ro",
        first.path("s4-ro").to_str().unwrap(),
        "--listen-tcp",
        &addr,
        "--auth-tcp",
        "none",
    ]);
    assert_eq!(busy.code, 1);
    assert!(
        busy.stderr
            .contains(&format!("cannot listen on {addr}: Address already in use")),
        "{}",
        busy.stderr
    );
    assert!(!first.path("s4").exists() && !first.path("s4-ro").exists());
}

#[test]
fn the_log_is_plain_text_off_a_terminal() {
    let (daemon, _) = tls_daemon("");
    daemon.virsh(&["list"]).ok();
    let log = daemon.log();
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log:\n{log}");
}
