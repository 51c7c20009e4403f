#![allow(clippy::tests_outside_test_module)]
//! The daemon as the system service runs it: started as the unit starts it
//! (`--config FILE`, readiness over $NOTIFY_SOCKET), on libvirt's standard
//! sockets, so that `virsh -c qemu:///system` and qemu+ssh:// (through
//! virt-ssh-helper or `nc -U` on the far side, with a real sshd) reach it;
//! stopped and restarted with VMs running.
//!
//! These tests take /run/libvirt/libvirt-sock, so they run one at a time
//! and fail loudly if something else (a real libvirtd) serves it.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use common::service::{bare, run_daemon};
use common::sshd::Sshd;
use common::{words, Daemon};

const SOCK: &str = "/run/libvirt/libvirt-sock";
const SOCK_RO: &str = "/run/libvirt/libvirt-sock-ro";

/// libvirt's standard sockets are one per machine.
static STANDARD_SOCKETS: Mutex<()> = Mutex::new(());

/// Panics if another daemon answers on libvirt's socket: these tests
/// would talk to it instead of to virtbackupd.
fn assert_nobody_serves_the_standard_socket() {
    assert!(
        UnixStream::connect(SOCK).is_err(),
        "{SOCK} is served by another daemon (a running libvirtd? stop it with \
         `scripts/reference-libvirtd.sh stop`); these tests need it"
    );
}

/// The package's configuration, with the test's state directories.
fn service_config(daemon: &Daemon) -> std::path::PathBuf {
    daemon.config_file(&format!(
        "# /etc/virtbackupd/virtbackupd.conf as shipped, plus the test's state\n\
         libvirt_sockets = \"yes\"\n\
         state_dir = \"{dir}/state\"\nrun_dir = \"{dir}/run\"\n",
        dir = daemon.dir.path().display()
    ))
}

fn system(daemon: &Daemon, args: &[&str]) -> common::Run {
    daemon.virsh_at("qemu:///system", args)
}

#[test]
fn qemu_system_and_ssh_reach_the_service_and_vms_survive_its_restarts() {
    let _guard = STANDARD_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    assert_nobody_serves_the_standard_socket();
    let mut daemon = bare();
    let conf = service_config(&daemon);
    daemon.start_as_service(&conf);
    assert!(Path::new(SOCK_RO).exists());

    // The default URI, with no ?socket=.
    let image = daemon.image("svc.qcow2", "qcow2", "16M");
    let xml = daemon.path("svc.xml");
    std::fs::write(&xml, daemon.domain_xml("svc", &[("vda", &image, "qcow2")])).unwrap();
    system(&daemon, &["define", xml.to_str().unwrap()]).ok();
    system(&daemon, &["start", "svc"]).ok();
    let id = system(&daemon, &["domid", "svc"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let pids = daemon.qemu_pids();
    assert_eq!(pids.len(), 1);

    // A second daemon for the same sockets is refused.
    let second = run_daemon(&["--config", conf.to_str().unwrap()]);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(
        second
            .stderr
            .contains(&format!("{SOCK} is served by another daemon (libvirtd?)")),
        "{}",
        second.stderr
    );

    // qemu+ssh through a real sshd: virt-ssh-helper (proxy=auto picks it
    // when installed), nc -U, and read-only over ssh.
    let sshd = Sshd::start(&daemon.path("sshd"), 0);
    for proxy in ["", "&proxy=netcat", "&proxy=native"] {
        let run = daemon.virsh_at(&sshd.uri(proxy), &["list"]);
        assert_eq!(run.code, 0, "proxy {proxy:?}: {run:?}\n{}", sshd.log());
        assert_eq!(words(&run.stdout), format!("{id} svc running"), "{proxy}");
    }
    let ro = daemon.virsh_readonly_at(&sshd.uri(""), &["suspend", "svc"]);
    assert_eq!(ro.code, 1, "{ro:?}");
    assert!(
        ro.stderr
            .contains("operation forbidden: read only access prevents virDomainSuspend"),
        "{}",
        ro.stderr
    );

    // `systemctl stop`: SIGTERM; QEMU is outside the kill set and lives on.
    daemon.terminate();
    assert!(!Path::new(SOCK).exists(), "the socket is removed on stop");
    assert_eq!(daemon.qemu_pids(), pids, "QEMU must survive the stop");
    daemon.start_as_service(&conf);
    assert_eq!(
        words(&system(&daemon, &["list"]).ok().stdout),
        format!("{id} svc running")
    );
    // `systemctl restart` (and an upgrade's): the same, back to back.
    daemon.terminate();
    daemon.start_as_service(&conf);
    assert_eq!(daemon.qemu_pids(), pids);
    let run = daemon.virsh_at(&sshd.uri(""), &["domstate", "svc"]);
    assert_eq!(run.stdout.trim(), "running", "{run:?}");

    system(&daemon, &["destroy", "svc"]).ok();
    daemon.terminate();
}

#[test]
fn a_stale_standard_socket_is_replaced() {
    let _guard = STANDARD_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    assert_nobody_serves_the_standard_socket();
    // What a daemon killed with SIGKILL leaves: a socket nobody answers.
    std::fs::create_dir_all("/run/libvirt").unwrap();
    let _ = std::fs::remove_file(SOCK);
    drop(std::os::unix::net::UnixListener::bind(SOCK).unwrap());
    assert!(Path::new(SOCK).exists());
    let mut daemon = bare();
    let conf = service_config(&daemon);
    daemon.start_as_service(&conf);
    system(&daemon, &["list"]).ok();
    daemon.terminate();
}
