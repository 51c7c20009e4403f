#![allow(clippy::tests_outside_test_module)]
//! A guest that powers off while a backup runs: libvirt 9.0's end of the
//! domain (and of the backup) without flags, and libvirt 11.10's
//! VIR_DOMAIN_BACKUP_BEGIN_PRESERVE_SHUTDOWN_DOMAIN (`flags=2`, through
//! libvirt-python since Debian's virsh 9.0 has no
//! `--preserve-domain-on-shutdown`).
//!
//! There is no guest OS, so the power-off is the one a guest's ACPI code
//! makes: a write of SLP_EN with sleep type 0 (0x2000) to the PIIX4's PM1a
//! control register, which SeaBIOS puts at I/O port 0x604. The monitor's
//! HMP `o` writes it as the guest would, and QEMU reports SHUTDOWN with
//! `guest: true` (reason guest-shutdown). The test first waits until the
//! firmware has placed the PM block there.
//!
//! The backup is kept running by slowing its job in QEMU; it ends when the
//! speed limit is lifted (completed) or on `domjobabort` (cancelled).

mod common;

use std::path::Path;

use common::events::EventLog;
use common::{wait_until, words, Daemon, PATIENCE};

const DOM: &str = "pres";
/// 4 GiB at 1 MiB/s: the backup outlasts each test by far until the
/// limit is lifted (QEMU copies a burst before the limit bites).
const SLOW: u64 = 1024 * 1024;

fn domain_xml(name: &str, disk: &Path) -> String {
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n  \
         <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <features><acpi/></features>\n  <devices>\n    \
         <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
         <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n",
        disk.display()
    )
}

/// A daemon whose push backups start at 1 MiB/s: a full backup of a
/// 4 GiB disk, mostly zeroes, would otherwise be over before the test
/// could slow it (its target's metadata is preallocated).
fn slow_daemon() -> Daemon {
    Daemon::start_with(&["--backup-bandwidth", "1"])
}

/// A running domain whose firmware has set up ACPI, with a watcher of its
/// lifecycle events.
fn running(daemon: &Daemon) -> EventLog {
    let disk = daemon.image("pres.qcow2", "qcow2", "4G");
    common::qemu_io::write(&disk, "qcow2", "write -P 0x5a 0 1M");
    daemon.define(DOM, &domain_xml(DOM, &disk));
    let probe_xml = daemon.path("probe.xml");
    let probe_disk = daemon.image("probe.qcow2", "qcow2", "1M");
    // A fixed UUID: the probe is defined again and again.
    let probe = domain_xml("probe", &probe_disk).replacen(
        "<name>",
        "<uuid>5c1d1a54-1f5e-4d43-9a54-3a6b1f0e2d7c</uuid>\n  <name>",
        1,
    );
    std::fs::write(&probe_xml, probe).expect("probe xml");
    daemon
        .virsh(&["define", probe_xml.to_str().expect("path")])
        .ok();
    let events = EventLog::start(daemon, &["--event", "lifecycle"], "probe", probe_xml);
    daemon.virsh(&["start", DOM]).ok();
    wait_until(PATIENCE, || {
        daemon
            .virsh(&["qemu-monitor-command", DOM, "--hmp", "info mtree"])
            .stdout
            .contains("0000000000000600-000000000000063f (prio 0, i/o): piix4-pm")
    })
    .expect("the firmware never enabled the ACPI PM registers");
    events
}

/// Starts a slow full push backup of vda with `flags`.
fn begin(daemon: &Daemon, flags: u32) {
    let target = daemon.path("backup.qcow2");
    let script = format!(
        "d.backupBegin(\"<domainbackup><disks><disk name='vda' type='file'><target file='{}'/></disk></disks></domainbackup>\", None, {flags})\n\
         set_speed({SLOW})\n",
        target.display()
    );
    python(daemon, &script);
    assert!(
        daemon
            .virsh(&["domjobinfo", DOM])
            .stdout
            .contains("Unbounded"),
        "the backup ended before the test could look at it"
    );
}

/// Runs `script` with `d` the domain and `set_speed(bytes_per_second)`
/// applying to every block job of its QEMU (0: no limit).
fn python(daemon: &Daemon, script: &str) {
    let prelude = format!(
        "import json, libvirt, libvirt_qemu, os\n\
         c = libvirt.open(os.environ['URI'])\n\
         d = c.lookupByName('{DOM}')\n\
         def set_speed(speed):\n    \
             jobs = json.loads(libvirt_qemu.qemuMonitorCommand(d, '{{\"execute\":\"query-block-jobs\"}}', 0))['return']\n    \
             assert jobs, 'no block job'\n    \
             for job in jobs:\n        \
                 libvirt_qemu.qemuMonitorCommand(d, json.dumps({{'execute': 'block-job-set-speed', 'arguments': {{'device': job['device'], 'speed': speed}}}}), 0)\n"
    );
    daemon.python(&format!("{prelude}{script}")).ok();
}

/// What the guest's ACPI code writes to power off.
fn guest_powers_off(daemon: &Daemon) {
    daemon
        .virsh(&["qemu-monitor-command", DOM, "--hmp", "o /w 0x604 0x2000"])
        .ok();
}

/// Lifts the speed limit: the backup completes.
fn finish_backup(daemon: &Daemon) {
    python(daemon, "set_speed(0)\n");
}

fn completed(daemon: &Daemon) -> String {
    words(
        &daemon
            .virsh(&["domjobinfo", DOM, "--completed"])
            .stdout
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Waits until the backup has ended, with the domain running or not, and
/// returns how (`domjobinfo --completed` forgets the job once shown).
#[track_caller]
fn ended(daemon: &Daemon) -> String {
    let mut seen = String::new();
    wait_until(PATIENCE, || {
        seen = completed(daemon);
        seen.contains("Backup")
    })
    .expect("the backup never ended");
    seen
}

fn ours(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| l.contains(&format!("domain '{DOM}'")))
        .map(|l| l.split(": ").nth(1).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn without_the_flag_a_guest_power_off_ends_domain_and_backup() {
    let daemon = slow_daemon();
    let events = running(&daemon);
    begin(&daemon, 0);
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert_eq!(ended(&daemon), "Job type: Cancelled Operation: Backup");
    assert!(!daemon.path("backup.qcow2").exists());
    assert_eq!(
        ours(events.finish(&daemon)),
        [
            "Resumed Unpaused",
            "Started Booted",
            "Shutdown Finished after guest request",
            "Stopped Shutdown"
        ]
    );
}

#[test]
fn preserved_domain_is_stopped_when_the_backup_completes() {
    let daemon = slow_daemon();
    let events = running(&daemon);
    begin(&daemon, 2);
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "paused (shutting down)");
    // The backup goes on in the paused QEMU.
    assert!(daemon
        .virsh(&["domjobinfo", DOM])
        .stdout
        .contains("Unbounded"));
    finish_backup(&daemon);
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert_eq!(ended(&daemon), "Job type: Completed Operation: Backup");
    common::qemu_io::reads(&daemon.path("backup.qcow2"), 0x5a, "0", "1M");
    assert_eq!(
        ours(events.finish(&daemon)),
        [
            "Resumed Unpaused",
            "Started Booted",
            // virsh 9.0 has no name for libvirt 11.10's detail 9.
            "Suspended unknown",
            "Stopped Shutdown"
        ]
    );
}

#[test]
fn preserved_domain_is_stopped_when_the_backup_is_aborted() {
    let daemon = slow_daemon();
    let _events = running(&daemon);
    begin(&daemon, 2);
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "paused (shutting down)");
    daemon.virsh(&["domjobabort", DOM]).ok();
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert_eq!(ended(&daemon), "Job type: Cancelled Operation: Backup");
    assert!(!daemon.path("backup.qcow2").exists());
}

#[test]
fn resumed_domain_runs_on_after_the_backup() {
    let daemon = slow_daemon();
    let events = running(&daemon);
    begin(&daemon, 2);
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "paused (shutting down)");
    daemon.virsh(&["resume", DOM]).ok();
    daemon.wait_state(DOM, "running (unpaused)");
    finish_backup(&daemon);
    assert_eq!(ended(&daemon), "Job type: Completed Operation: Backup");
    assert_eq!(
        words(&daemon.virsh(&["domstate", DOM, "--reason"]).stdout),
        "running (unpaused)"
    );
    // No backup preserves it any more: the next power-off is libvirt 9.0's
    // once the firmware, which booted again, has set ACPI up.
    wait_until(PATIENCE, || {
        daemon
            .virsh(&["qemu-monitor-command", DOM, "--hmp", "info mtree"])
            .stdout
            .contains("0000000000000600-000000000000063f (prio 0, i/o): piix4-pm")
    })
    .expect("ACPI PM registers after the reboot");
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert_eq!(
        ours(events.finish(&daemon)),
        [
            "Resumed Unpaused",
            "Started Booted",
            "Suspended unknown",
            "Resumed Unpaused",
            "Shutdown Finished after guest request",
            "Stopped Shutdown"
        ]
    );
}

#[test]
fn other_flags_are_refused_as_libvirt_refuses_them() {
    let daemon = slow_daemon();
    daemon.define_two_disk("two");
    daemon.virsh(&["start", "two"]).ok();
    let out = daemon.python_quiet(
        "import libvirt, os\n\
         c = libvirt.open(os.environ['URI'])\n\
         d = c.lookupByName('two')\n\
         try:\n    d.backupBegin('<domainbackup/>', None, 4)\nexcept libvirt.libvirtError as e:\n    print(e)\n",
    );
    assert_eq!(
        out.stdout.trim(),
        "unsupported flags (0x4) in function qemuBackupBegin"
    );
}

#[test]
fn a_restarted_daemon_keeps_preserving() {
    let mut daemon = slow_daemon();
    let _events = running(&daemon);
    begin(&daemon, 2);
    daemon.restart();
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "paused (shutting down)");
    finish_backup(&daemon);
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert_eq!(ended(&daemon), "Job type: Completed Operation: Backup");
}

#[test]
fn preserved_pull_backup_ends_with_the_domain_on_abort() {
    // What a newer virtnbdbackup asks: a pull backup with the flag.
    let daemon = slow_daemon();
    let _events = running(&daemon);
    let socket = daemon.path("nbd.sock");
    let script = format!(
        "d.backupBegin(\"<domainbackup mode='pull'><server transport='unix' socket='{}'/><disks><disk name='vda' type='file'><scratch file='{}'/></disk></disks></domainbackup>\", None, 2)\n",
        socket.display(),
        daemon.path("scratch.qcow2").display()
    );
    python(&daemon, &script);
    guest_powers_off(&daemon);
    daemon.wait_state(DOM, "paused (shutting down)");
    // The export is still there for the client.
    assert!(socket.exists());
    daemon.virsh(&["domjobabort", DOM]).ok();
    daemon.wait_state(DOM, "shut off (shutdown)");
    assert!(!socket.exists());
    assert!(!daemon.path("scratch.qcow2").exists());
}
