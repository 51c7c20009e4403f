#![allow(clippy::tests_outside_test_module)]
//! The handshake and connection-level commands, through the stock virsh.

mod common;

use common::Daemon;

#[test]
fn virsh_reports_the_hypervisor_and_library_versions() {
    let daemon = Daemon::start();
    let run = daemon.virsh(&["version"]).ok();
    for line in ["Using API: QEMU 9.0.0", "Running hypervisor: QEMU 7.2."] {
        assert!(run.stdout.contains(line), "{}", run.stdout);
    }
}

#[test]
fn virsh_uri_and_hostname() {
    let daemon = Daemon::start();
    // virsh answers `uri` itself, from the URI it was given (as with libvirtd).
    assert_eq!(daemon.virsh(&["uri"]).ok().stdout.trim(), daemon.uri());
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(daemon.virsh(&["hostname"]).ok().stdout.trim(), host);
}

#[test]
fn an_unknown_uri_is_refused() {
    let daemon = Daemon::start();
    let uri = format!("test+unix:///default?socket={}", daemon.socket().display());
    let run = daemon.virsh_at(&uri, &["list"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("no connection driver available for test:///default"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_read_only_socket_refuses_changes_and_serves_queries() {
    let daemon = Daemon::start();
    daemon.define_two_disk("ro1");
    let xml = daemon.path("ro1.xml");
    daemon
        .virsh_at(&daemon.uri_ro(), &["define", xml.to_str().unwrap()])
        .fails_with("error: operation forbidden: read only access prevents virDomainDefineXML");
    daemon
        .virsh_at(&daemon.uri_ro(), &["start", "ro1"])
        .fails_with("error: operation forbidden: read only access prevents virDomainCreate");
    let run = daemon
        .virsh_at(&daemon.uri_ro(), &["list", "--all", "--name"])
        .ok();
    assert_eq!(run.stdout.trim(), "ro1");
    daemon.virsh_at(&daemon.uri_ro(), &["dumpxml", "ro1"]).ok();
}

#[test]
fn virsh_r_opens_read_only() {
    let daemon = Daemon::start();
    daemon.define_two_disk("ro2");
    daemon
        .virsh(&["-r", "undefine", "ro2"])
        .fails_with("error: operation forbidden: read only access prevents virDomainUndefineFlags");
}

#[test]
fn libvirt_python_connects_and_reads() {
    let daemon = Daemon::start();
    daemon.define_two_disk("py1");
    let run = daemon
        .python(
            "import libvirt, os\n\
             c = libvirt.open(os.environ['URI'])\n\
             print(c.getType(), c.getLibVersion(), c.getURI(), c.isAlive(), c.isSecure(), c.isEncrypted())\n\
             d = c.lookupByName('py1')\n\
             print(d.name(), d.isActive(), d.isPersistent(), d.OSType())\n\
             try:\n    c.lookupByName('nope')\nexcept libvirt.libvirtError as e:\n    print(e.get_error_code(), e)\n\
             c.close()\n",
        )
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("QEMU 9000000 {} 1 1 0", daemon.uri()));
    assert_eq!(lines[1], "py1 0 1 hvm");
    assert_eq!(
        lines[2],
        "42 Domain not found: no domain with matching name 'nope'"
    );
}

/// A call that has to wait (a definition, written to disk on the blocking
/// pool) goes on in a task of its own while the calls sent behind it on
/// the same connection are answered by the connection's task: every one
/// gets exactly one reply, whichever way it went.
#[test]
fn pipelined_calls_each_get_one_reply_waiting_or_not() {
    use common::raw::{bytes, Raw, CALL, OK, REMOTE};
    use virtbackupd::rpc::wire::remote_domain_define_xml_args;
    const DEFINE_XML: i32 = 11;
    const GET_VERSION: i32 = 4;

    let daemon = Daemon::start();
    let mut raw = Raw::opened(&daemon.socket(), 0);
    for round in 0..3 {
        let xml = format!(
            "<domain type='qemu'><name>pipelined-{round}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
        );
        let define = bytes(&remote_domain_define_xml_args { xml });
        raw.send_call(REMOTE, DEFINE_XML, CALL, &define);
        for _ in 0..20 {
            raw.send_call(REMOTE, GET_VERSION, CALL, &[]);
        }
    }
    let mut serials: Vec<u32> = (0..63)
        .map(|_| raw.reply())
        .map(|r| {
            assert_eq!(r.status, OK, "{r:?}");
            r.serial
        })
        .collect();
    serials.sort_unstable();
    // Serial 1 was the open.
    assert_eq!(serials, (2..65).collect::<Vec<u32>>());
    assert!(raw
        .next_within(std::time::Duration::from_millis(200))
        .is_none());
}
