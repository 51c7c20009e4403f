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
use std::process::Command;
use std::sync::Mutex;

use common::service::{bare, run_daemon};
use common::sshd::Sshd;
use common::{command, words, Daemon};

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

/// A network namespace of the test's own, deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("vbd-test-{}", std::process::id());
        let _ = command("ip", &["netns", "del", &name]);
        command("ip", &["netns", "add", &name]).ok();
        let ns = NetNs(name);
        command(
            "ip",
            &["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"],
        )
        .ok();
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = command("ip", &["netns", "del", &self.0]);
    }
}

/// The backup server's side: another host name (virtnbdbackup goes remote
/// only when libvirt's host name differs from its own), and libnbd's
/// client certificate where libnbd looks for it as root,
/// /etc/pki/libnbd, in a private overlay of /etc that vanishes with the
/// process.
const BACKUP_SERVER: &str = r#"set -e
hostname backup-server
mount -t tmpfs tmpfs "$OVERLAY"
mkdir "$OVERLAY/up" "$OVERLAY/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$OVERLAY/up,workdir=$OVERLAY/work" /etc
mkdir -p /etc/pki/libnbd
cp "$PKI/ca-cert.pem" "$PKI/client-cert.pem" "$PKI/client-key.pem" /etc/pki/libnbd/
exec "$@"
"#;

/// virtnbdbackup's remote mode as a backup server runs it: libvirt over
/// qemu+ssh, files over ssh (paramiko, port 22), the disks over NBD on
/// TCP, with and without TLS. The hypervisor (daemon, QEMU, sshd on port
/// 22) lives in a network namespace of its own with the host name
/// "localhost", which is what libvirt reports and virtnbdbackup then
/// connects to; the backup server is a process in the same network
/// namespace with another host name.
#[test]
fn virtnbdbackup_remote_mode_over_ssh_with_nbd_over_tcp_and_tls() {
    let _guard = STANDARD_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    assert_nobody_serves_the_standard_socket();
    let ns = NetNs::new();
    let mut daemon = bare();
    let pki = daemon.path("pki");
    common::service::make_pki(&pki);
    let conf = daemon.config_file(&format!(
        "libvirt_sockets = \"yes\"\nstate_dir = \"{dir}/state\"\nrun_dir = \"{dir}/run\"\n\
         backup_tls_dir = \"{pki}/qemu\"\n",
        dir = daemon.dir.path().display(),
        pki = pki.display(),
    ));
    let netns = ["ip", "netns", "exec", ns.0.as_str()];
    let mut hypervisor = netns.to_vec();
    hypervisor.extend([
        "unshare",
        "--uts",
        "sh",
        "-c",
        "hostname localhost && exec \"$0\" \"$@\"",
    ]);
    daemon.start_as_service_in(&hypervisor, &conf);
    let sshd = Sshd::start_in(&netns, &daemon.path("sshd"), 22);
    // paramiko takes the user's default key.
    let home = daemon.path("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(&sshd.key, home.join(".ssh/id_ed25519")).unwrap();
    std::fs::create_dir_all(daemon.path("overlay")).unwrap();

    let vda = daemon.image("rv-vda.qcow2", "qcow2", "64M");
    common::qemu_io::write(&vda, "qcow2", "write -P 0x11 0 1M");
    let xml = daemon.path("rv.xml");
    std::fs::write(&xml, daemon.domain_xml("rv", &[("vda", &vda, "qcow2")])).unwrap();
    system(&daemon, &["define", xml.to_str().unwrap()]).ok();
    system(&daemon, &["start", "rv"]).ok();

    let uri = format!(
        "qemu+ssh://root@localhost/system?keyfile={}&no_verify=1",
        sshd.key.display()
    );
    let backup_server = |tool: &str, args: &[&str]| {
        let run = common::Run::of(
            Command::new("ip")
                .args(["netns", "exec", &ns.0, "unshare", "--uts", "--mount"])
                .args(["sh", "-c", BACKUP_SERVER, "sh", tool, "-U", &uri])
                .args(["--ssh-user", "root"])
                .args(args)
                .env("HOME", &home)
                .env("OVERLAY", daemon.path("overlay"))
                .env("PKI", pki.join("qemu"))
                .env("LC_ALL", "C.UTF-8"),
        );
        assert!(
            run.code == 0 && run.stderr.contains("Connected to remote host: [localhost]"),
            "{tool} {args:?}:\n{}\n{}\n--- daemon log ---\n{}",
            run.stdout,
            run.stderr,
            daemon.log()
        );
        run
    };
    let out = |name: &str| daemon.path(name).to_str().unwrap().to_string();

    // NBD over plain TCP: a copy of the disk, no checkpoint.
    let run = backup_server(
        "virtnbdbackup",
        &["-d", "rv", "-l", "copy", "-o", &out("plain"), "-n"],
    );
    assert!(run.stderr.contains("Finished successfully"));
    assert!(
        std::fs::metadata(daemon.path("plain/vda.copy.data"))
            .unwrap()
            .len()
            >= 1 << 20
    );

    // NBD over TLS: full, guest writes, incremental.
    let tls = out("tls");
    backup_server(
        "virtnbdbackup",
        &["-d", "rv", "-l", "full", "-o", &tls, "--tls", "-n"],
    );
    let write =
        "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x22 2M 128k\"";
    let run = system(&daemon, &["qemu-monitor-command", "rv", "--hmp", write]).ok();
    assert_eq!(run.stdout.trim(), "", "qemu-io: {}", run.stdout);
    backup_server(
        "virtnbdbackup",
        &["-d", "rv", "-l", "inc", "-o", &tls, "--tls", "-n"],
    );
    assert!(
        std::fs::metadata(daemon.path("tls/vda.inc.virtnbdbackup.1.data"))
            .unwrap()
            .len()
            < (128 << 10) + 4096
    );
    let log = daemon.log();
    assert!(
        log.contains("\"tls-creds\""),
        "the exports used TLS:\n{log}"
    );

    // Restore through the hypervisor's qemu-nbd, over TLS, and compare.
    system(&daemon, &["destroy", "rv"]).ok();
    let restored = out("restored");
    let qemu_pki = pki.join("qemu");
    backup_server(
        "virtnbdrestore",
        &[
            "-i",
            &tls,
            "-o",
            &restored,
            "--tls",
            "--tls-cert",
            qemu_pki.to_str().unwrap(),
        ],
    );
    common::images::identical(&vda, &daemon.path("restored/rv-vda.qcow2"));
    daemon.terminate();
}

/// The tests start the daemon as the unit's ExecStart does; this keeps the
/// two the same, and the unit's promises to running VMs in place.
#[test]
fn the_unit_starts_the_daemon_as_the_tests_do() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/virtbackupd.service.in"),
    )
    .unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    for want in [
        "Type=notify",
        "KillMode=process",
        "ExecStart=@SBINDIR@/virtbackupd --config /etc/virtbackupd/virtbackupd.conf",
    ] {
        assert!(lines.contains(&want), "{want} missing from the unit");
    }
}
