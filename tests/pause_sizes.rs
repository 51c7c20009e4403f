#![allow(clippy::tests_outside_test_module)]
//! Pause and sizes through the stock virsh: libvirtd 9.0's session of
//! suspend/resume, domblkinfo, domblkstat and domstats
//! (fixtures/reference/pause/, see its README) replayed against
//! virtbackupd, with the lifecycle events it produced.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::reference::{Area, Session};
use common::storage::LoopDevice;
use common::{images, qemu_io};
use common::{wait_until, Daemon, Run, PATIENCE};

const AREA: Area = Area {
    root: "fixtures/reference/pause",
    tmp: "/tmp/ps-ref",
    api_script: "",
};

/// The session's domain as libvirtd had it: vda qcow2 with 3 MiB written,
/// vdb raw with 1 MiB written at 1 MiB, vdc a 16 MiB loop device.
fn ps_vm1(s: &Session) -> LoopDevice {
    let vda = s.path("vda.qcow2");
    let vdb = s.path("vdb.raw");
    s.images(&[("vda.qcow2", "qcow2", "64M"), ("vdb.raw", "raw", "32M")]);
    qemu_io::write(&vda, "qcow2", "write -P 0x5a 0 3M");
    qemu_io::write(&vdb, "raw", "write -P 0x11 1M 1M");
    let blk = LoopDevice::attach(&s.path("blk.img"), 16 << 20, &s.path("blk"));
    // libvirtd named the device itself, /dev/loop0.
    s.rename("/dev/loop0", &format!("{}/blk", AREA.tmp));
    s.virsh(&["define", "xml/ps-vm1.xml"]).ok();
    std::fs::copy(s.path("xml/ps-vm1.xml"), s.path("ps-vm1.xml")).unwrap();
    blk
}

/// The value of a line that counts time, which is the run's own:
/// `vda rd_total_times 167674`, ` total duration of reads (ns):   167674`,
/// `block.0.rd.times=167674`.
fn untimed(text: &str) -> String {
    text.lines()
        .map(|line| {
            let timed = line.contains("total_times")
                || line.contains("total duration")
                || line.contains(".times=");
            match line.rfind([' ', '=']) {
                Some(at) if timed && !line.ends_with(" 0") && !line.ends_with("=0") => {
                    format!("{}N", &line[..=at])
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a file's allocation is (st_blocks): libvirtd's figures, made
/// with its images, stand for ours, which the file system lays out in its
/// own way (an extent block more or less). libvirtd's figures for a running
/// domain also count the 4 KiB block of extended attributes
/// (`trusted.libvirt.security.*`) its DAC security driver puts on each
/// image while the domain runs: (shut off, running) for vda and vdb.
const ALLOCATED: [(&str, [u64; 2]); 2] = [
    ("vda.qcow2", [3411968, 3416064]),
    ("vdb.raw", [1052672, 1056768]),
];

/// virsh's `--human` sizes (vshPrettyCapacity).
fn mib(bytes: u64) -> String {
    format!("{:.3} MiB", bytes as f64 / 1048576.0)
}

/// Capture text with libvirtd's allocations made our images'.
fn allocated_as_ours(s: &Session, name: &str, text: &str) -> String {
    let running = usize::from(name.contains("running") || name.contains("paused"));
    ALLOCATED
        .iter()
        .fold(text.to_string(), |text, (file, theirs)| {
            let ours = std::fs::metadata(s.path(file)).unwrap().blocks() * 512;
            let theirs = theirs[running];
            text.replace(&theirs.to_string(), &ours.to_string())
                .replace(&mib(theirs), &mib(ours))
        })
}

/// Waits until the firmware has read the boot sector of vda, as it had
/// when libvirtd's figures were taken (a second after the start).
fn booted(s: &Session, dom: &str) {
    wait_until(PATIENCE, || {
        let run = s.virsh(&["domblkstat", dom, "vda"]);
        run.stdout.contains("vda rd_req 1\n")
    })
    .unwrap_or_else(|| panic!("{dom}'s firmware read nothing from vda"));
}

/// Runs capture `name` and compares, times masked.
fn replay(s: &Session, name: &str) {
    let (command, mut stdout, stderr, code) = AREA.capture(name);
    if name.starts_with("domblkinfo-") || name.starts_with("domstats-") {
        stdout = allocated_as_ours(s, name, &stdout);
    }
    let run = s.replay_only(name);
    assert_eq!(
        untimed(&s.theirs(&run.stdout)),
        untimed(&stdout),
        "stdout differs from {name} ({command}); stderr: {}",
        run.stderr
    );
    assert_eq!(
        s.theirs(&run.stderr),
        stderr,
        "stderr differs from {name} ({command})"
    );
    assert_eq!(
        run.code, code,
        "exit status differs from {name} ({command})"
    );
}

#[test]
fn libvirtds_pause_and_sizes_session_replays() {
    let s = Session::start(&AREA, Daemon::start());
    let _blk = ps_vm1(&s);
    let events = s.events("ps-vm1");
    for name in AREA.text("SESSION.txt").lines() {
        replay(&s, name);
        if name == "start" {
            booted(&s, "ps-vm1");
        }
    }
    let lines = events.finish(&s.daemon);
    let got: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("event 'lifecycle'") && !l.ends_with("Defined Updated"))
        .collect();
    let want = AREA.text("events-session.txt");
    let want: Vec<&str> = want.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(got, want, "{lines:#?}");

    // The same calls through libvirt-python, and their errors, on the
    // domain defined afresh as libvirtd's was.
    s.virsh(&["undefine", "ps-vm1"]).ok();
    s.virsh(&["define", "xml/ps-vm1.xml"]).ok();
    let probe = AREA.path("probe.py");
    let run = Run::of(
        Command::new("/usr/bin/python3")
            .arg(probe)
            .arg(s.daemon.uri()),
    )
    .ok();
    assert_eq!(
        unaddressed(&run.stdout),
        unaddressed(&AREA.text("api-libvirtd.txt"))
    );

    // An image that is not there: an error for its sizes, none in the stats.
    s.virsh(&["define", "xml/ps-miss.xml"]).ok();
    replay(&s, "domblkinfo-shutoff-missing");
    replay(&s, "domstats-shutoff-missing");
}

/// Python's `<... object at 0x7f...>` without the address.
fn unaddressed(text: &str) -> String {
    text.split(" at 0x")
        .enumerate()
        .map(|(i, part)| match i {
            0 => part.to_string(),
            _ => format!(
                " at ADDR{}",
                part.trim_start_matches(|c: char| c.is_ascii_hexdigit())
            ),
        })
        .collect()
}

/// libvirt-python sees the states, reasons and errors libvirtd gives.
#[test]
fn libvirt_python_suspends_and_resumes() {
    let daemon = Daemon::start();
    daemon.define_two_disk("py");
    daemon.virsh(&["start", "py"]).ok();
    let script = r#"import libvirt, os
c = libvirt.open(os.environ['URI'])
d = c.lookupByName('py')
def attempt(what, call):
    try:
        call()
        print(what, 'ok', d.state())
    except libvirt.libvirtError as e:
        print(what, e.get_error_code(), e.get_error_domain(), e.get_error_message())
attempt('resume', d.resume)
attempt('suspend', d.suspend)
attempt('suspend', d.suspend)
attempt('resume', d.resume)
d.destroy()
attempt('suspend', d.suspend)
attempt('destroy', d.destroy)
attempt('shutdown', d.shutdown)
"#;
    let run = daemon.python(script).ok();
    assert_eq!(
        run.stdout,
        "resume 55 10 Requested operation is not valid: domain is already running\n\
         suspend ok [3, 1]\n\
         suspend ok [3, 1]\n\
         resume ok [1, 5]\n\
         suspend 55 20 Requested operation is not valid: domain is not running\n\
         destroy 55 20 Requested operation is not valid: domain is not running\n\
         shutdown 55 20 Requested operation is not valid: domain is not running\n"
    );
}

/// A daemon killed while a domain is paused finds it paused for the user's
/// reason, and resumes it.
#[test]
fn a_suspended_domain_stays_suspended_across_a_daemon_restart() {
    let mut daemon = Daemon::start();
    daemon.define_two_disk("rs");
    daemon.virsh(&["start", "rs"]).ok();
    daemon.virsh(&["suspend", "rs"]).ok();
    daemon.kill();
    daemon.restart();
    let run = daemon.virsh(&["domstate", "rs", "--reason"]).ok();
    assert_eq!(run.stdout.trim(), "paused (user)");
    daemon.virsh(&["resume", "rs"]).ok();
    let run = daemon.virsh(&["domstate", "rs", "--reason"]).ok();
    assert_eq!(run.stdout.trim(), "running (unpaused)");
    daemon.virsh(&["destroy", "rs"]).ok();
}

/// A qcow2 image on a block device: no allocation libvirt can tell from
/// the host, the device's size as physical.
#[test]
fn a_qcow2_on_a_block_device_has_libvirts_sizes() {
    let s = Session::start(&AREA, Daemon::start());
    let link = s.path("bq");
    let _dev = LoopDevice::attach(&s.path("bq.img"), 32 << 20, &link);
    images::create(&link, "qcow2", "16M");
    qemu_io::write(&link, "qcow2", "write -P 0x33 0 2M");
    s.rename("/dev/loop1", &format!("{}/bq", AREA.tmp));
    s.virsh(&["define", "xml/ps-bq.xml"]).ok();
    replay(&s, "bq-domblkinfo-shutoff");
    replay(&s, "bq-domstats-shutoff");
    s.virsh(&["start", "ps-bq"]).ok();
    booted(&s, "ps-bq");
    replay(&s, "bq-domblkinfo-running");
    replay(&s, "bq-domstats-running");
    s.virsh(&["destroy", "ps-bq"]).ok();
}
