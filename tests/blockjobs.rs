//! Block jobs with the stock virsh: the snapshot / copy / commit backup
//! recipe, commit of lower layers, pull, abort and pivot, the job's info,
//! speed and events, and the errors of each in libvirt 9.0's words.

mod common;

use std::path::{Path, PathBuf};
use common::events::EventLog;
use common::images::qemu_img;
use common::qemu_io;
use common::{wait_until, Daemon, PATIENCE};

/// A running one-disk domain on a 64 MiB qcow2 image, and a probe domain
/// for event watchers.
fn running(d: &Daemon, name: &str) -> PathBuf {
    let vda = d.image(&format!("{name}.qcow2"), "qcow2", "64M");
    let xml = d.domain_xml(name, &[("vda", &vda, "qcow2")]);
    d.define(name, &xml);
    d.virsh(&["start", name]).ok();
    vda
}

fn watcher(d: &Daemon) -> EventLog {
    let probe = d.image("probe.qcow2", "qcow2", "1M");
    let xml = d.domain_xml("probe", &[("vda", &probe, "qcow2")]);
    d.define("probe", &xml);
    let again = d.path("probe-again.xml");
    let xml = d.virsh(&["dumpxml", "--inactive", "probe"]).ok().stdout;
    std::fs::write(&again, xml).unwrap();
    EventLog::start(d, &["--all"], "probe", again)
}

fn block_events(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("'block-job"))
        .cloned()
        .collect()
}

/// The images `qemu-img info --backing-chain` lists, top first.
fn chain_of(image: &Path) -> Vec<String> {
    let out = qemu_img(&[
        "info",
        "-U",
        "--backing-chain",
        "--output=json",
        image.to_str().unwrap(),
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["filename"].as_str().unwrap().to_string())
        .collect()
}

fn source_of(d: &Daemon, dom: &str, inactive: bool) -> String {
    let mut args = vec!["domblklist", dom];
    if inactive {
        args.push("--inactive");
    }
    let out = d.virsh(&args).ok().stdout;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("vda"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Waits until `blockjob --info` shows the job at 100 % (ready).
fn wait_ready(d: &Daemon, dom: &str) {
    wait_until(PATIENCE, || {
        d.virsh(&["blockjob", dom, "vda", "--info"])
            .stderr
            .contains("[100 %]")
    })
    .expect("the job never got ready");
}

fn wait_no_job(d: &Daemon, dom: &str) {
    wait_until(PATIENCE, || {
        d.virsh(&["blockjob", dom, "vda", "--info"])
            .stdout
            .contains("No current block job")
    })
    .expect("the job never ended");
}

/// The recipe tools like virt-backup follow: a disk-only snapshot without
/// metadata, a copy of the frozen image, an active commit with pivot; the
/// guest writes during each step land in the image the domain runs on
/// afterwards, and the copy is the disk as it was at the snapshot.
#[test]
fn snapshot_copy_active_commit_recipe() {
    let d = Daemon::start();
    let vda = running(&d, "rc");
    let events = watcher(&d);
    d.guest_write("rc", 0, "write -P 0x11 0 4M");
    d.virsh(&[
        "snapshot-create-as",
        "rc",
        "bk1",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    let overlay = d.path("rc.bk1");
    assert_eq!(source_of(&d, "rc", false), overlay.display().to_string());
    let copy = d.path("copy1.qcow2");
    qemu_img(&[
        "convert",
        "-U",
        "-O",
        "qcow2",
        vda.to_str().unwrap(),
        copy.to_str().unwrap(),
    ])
    .ok();
    d.guest_write("rc", 0, "write -P 0x22 1M 2M");

    // Slowed down, the commit is seen running: its info, a pivot too
    // early refused, a guest write while it runs, then full speed.
    d.virsh(&["blockcommit", "rc", "vda", "--active", "--bandwidth", "1"])
        .ok();
    let info = d.virsh(&["blockjob", "rc", "vda", "--info"]).ok();
    assert!(info.stderr.contains("Active Block Commit: ["), "{info:?}");
    assert!(
        info.stdout.contains("Bandwidth limit: 1048576 bytes/s (1.000 MiB/s)"),
        "{info:?}"
    );
    d.virsh(&["blockjob", "rc", "vda", "--pivot"]).fails_with(
        "error: block copy still active: block job 'commit-vda-libvirt-2-format' not ready for pivot yet",
    );
    d.virsh(&["blockcommit", "rc", "vda", "--active"])
        .fails_with("error: Operation not supported: disk 'vda' already in active block job");
    d.guest_write("rc", 0, "write -P 0x33 3M 1M");
    d.virsh(&["blockjob", "rc", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "rc");
    d.guest_write("rc", 0, "write -P 0x44 5M 1M");
    d.virsh(&["blockjob", "rc", "vda", "--pivot"]).ok();
    assert_eq!(source_of(&d, "rc", false), vda.display().to_string());
    assert_eq!(source_of(&d, "rc", true), vda.display().to_string());
    assert_eq!(chain_of(&vda), [vda.display().to_string()]);
    d.virsh(&["blockjob", "rc", "vda", "--info"])
        .ok()
        .stdout
        .contains("No current block job for vda");

    // The plain recipe, as a shell script runs it.
    d.virsh(&[
        "snapshot-create-as",
        "rc",
        "bk2",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    d.guest_write("rc", 0, "write -P 0x55 6M 1M");
    let out = d
        .virsh_loud(&[
            "blockcommit",
            "rc",
            "vda",
            "--active",
            "--pivot",
            "--wait",
            "--verbose",
        ])
        .ok();
    assert!(out.stdout.contains("Successfully pivoted"), "{out:?}");
    assert!(out.stderr.contains("Block commit: [100 %]"), "{out:?}");
    assert_eq!(source_of(&d, "rc", false), vda.display().to_string());

    let lines = block_events(&events.finish(&d));
    let (o1, o2, base) = (
        overlay.display().to_string(),
        d.path("rc.bk2").display().to_string(),
        vda.display().to_string(),
    );
    assert_eq!(
        lines,
        [
            format!("event 'block-job' for domain 'rc': Active Block Commit for {o1} ready"),
            "event 'block-job-2' for domain 'rc': Active Block Commit for vda ready".to_string(),
            format!("event 'block-job' for domain 'rc': Active Block Commit for {base} completed"),
            "event 'block-job-2' for domain 'rc': Active Block Commit for vda completed"
                .to_string(),
            format!("event 'block-job' for domain 'rc': Active Block Commit for {o2} ready"),
            "event 'block-job-2' for domain 'rc': Active Block Commit for vda ready".to_string(),
            format!("event 'block-job' for domain 'rc': Active Block Commit for {base} completed"),
            "event 'block-job-2' for domain 'rc': Active Block Commit for vda completed"
                .to_string(),
        ]
    );

    d.virsh(&["destroy", "rc"]).ok();
    qemu_io::reads(&vda, 0x11, "0", "1M");
    qemu_io::reads(&vda, 0x22, "1M", "2M");
    qemu_io::reads(&vda, 0x33, "3M", "1M");
    qemu_io::reads(&vda, 0x44, "5M", "1M");
    qemu_io::reads(&vda, 0x55, "6M", "1M");
    qemu_io::reads(&copy, 0x11, "0", "4M");
    qemu_io::reads(&copy, 0x00, "4M", "4M");
    // The next start runs on the original image.
    d.virsh(&["start", "rc"]).ok();
    assert_eq!(source_of(&d, "rc", false), vda.display().to_string());
}
