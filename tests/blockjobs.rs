#![allow(clippy::tests_outside_test_module)]
//! Block jobs with the stock virsh: the snapshot / copy / commit backup
//! recipe, commit of lower layers, pull, abort and pivot, the job's info,
//! speed and events, and the errors of each in libvirt 9.0's words.

mod common;

use common::blockjob::{source_of, wait_no_job, wait_ready};

use common::events::EventLog;
use common::images::{self, qemu_img};
use common::qemu_io;
use common::{wait_until, Daemon, PATIENCE};
use std::path::{Path, PathBuf};

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
        info.stdout
            .contains("Bandwidth limit: 1048576 bytes/s (1.000 MiB/s)"),
        "{info:?}"
    );
    d.virsh(&["blockjob", "rc", "vda", "--pivot"]).fails_with(
        "error: block copy still active: block job 'commit-vda-libvirt-2-format' not ready for pivot yet",
    );
    d.virsh(&["blockcommit", "rc", "vda", "--active"])
        .fails_with("error: block copy still active: disk 'vda' already in active block job");
    d.guest_write("rc", 0, "write -P 0x33 3M 1M");
    d.virsh(&["blockjob", "rc", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "rc");
    d.guest_write("rc", 0, "write -P 0x44 5M 1M");
    d.virsh(&["blockjob", "rc", "vda", "--pivot"]).ok();
    assert_eq!(source_of(&d, "rc", false), vda.display().to_string());
    assert_eq!(source_of(&d, "rc", true), vda.display().to_string());
    assert_eq!(chain_of(&vda), [vda.display().to_string()]);
    wait_no_job(&d, "rc");

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

/// virt-backup (PyPI 0.5.6, unchanged; scripts/install-deps.sh makes its
/// venv) backs a running domain up twice: each run snapshots, copies the
/// frozen image and commits with pivot; afterwards the domain runs on its
/// own image again, no overlay is left, and each backup is the disk as it
/// was at its snapshot.
#[test]
fn virt_backup_twice() {
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/virt-backup-venv/bin/virt-backup");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/install-deps.sh",
        venv.display()
    );
    let d = Daemon::start();
    let vda = running(&d, "vb");
    let backups = d.path("backups");
    std::fs::create_dir(&backups).unwrap();
    let config = d.path("virt-backup.yml");
    std::fs::write(
        &config,
        format!(
            "uri: \"{}\"\ngroups:\n  test:\n    target: {}\n    packager: directory\n    hosts:\n      - \"vb\"\n",
            d.uri(),
            backups.display()
        ),
    )
    .unwrap();
    let mut made: Vec<PathBuf> = Vec::new();
    for (round, pattern) in [(1, "0x5a"), (2, "0x6b")] {
        d.guest_write("vb", 0, &format!("write -P {pattern} {round}M 1M"));
        let run = common::Run::of(
            std::process::Command::new(&venv)
                .args(["-c", config.to_str().unwrap(), "backup"])
                .env("HOME", d.path("")),
        );
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("vb: Backup finished"), "{run:?}");
        // No write since the snapshot: the disk now is the disk then.
        let now = d.path(&format!("now{round}.qcow2"));
        qemu_img(&[
            "convert",
            "-U",
            "-O",
            "qcow2",
            vda.to_str().unwrap(),
            now.to_str().unwrap(),
        ])
        .ok();
        let mut disks: Vec<PathBuf> = std::fs::read_dir(backups.join("vb"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "qcow2") && !made.contains(p))
            .collect();
        assert_eq!(disks.len(), 1, "{disks:?}");
        let disk = disks.remove(0);
        qemu_img(&[
            "compare",
            "-U",
            now.to_str().unwrap(),
            disk.to_str().unwrap(),
        ])
        .ok();
        made.push(disk);
        assert_eq!(source_of(&d, "vb", false), vda.display().to_string());
        assert_eq!(source_of(&d, "vb", true), vda.display().to_string());
        assert_eq!(chain_of(&vda), [vda.display().to_string()]);
        let leftovers: Vec<String> = common::files(d.dir.path())
            .into_iter()
            .filter(|f| f.starts_with("vb.") && f != "vb.xml")
            .collect();
        assert_eq!(leftovers, ["vb.qcow2"], "an overlay is left");
        // virt-backup names backups by the second: the next run must
        // start in a later one.
        let secs = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let then = secs();
        wait_until(PATIENCE, || secs() > then).unwrap();
    }
    // The two differ by the second round's write.
    assert_ne!(
        qemu_img(&[
            "compare",
            "-U",
            made[0].to_str().unwrap(),
            made[1].to_str().unwrap()
        ])
        .code,
        0
    );
    qemu_io::reads(&made[0], 0x5a, "1M", "1M");
    qemu_io::reads(&made[0], 0x00, "2M", "1M");
    qemu_io::reads(&made[1], 0x6b, "2M", "1M");
}

fn snapshot(d: &Daemon, dom: &str, name: &str) -> PathBuf {
    d.virsh(&[
        "snapshot-create-as",
        dom,
        name,
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    d.path(&format!("{dom}.{name}"))
}

/// Active commit ended without pivot (keep-overlay, abort), a commit of
/// layers below the top, a pull; and the errors around them.
#[test]
fn keep_overlay_abort_lower_commit_pull_and_errors() {
    let d = Daemon::start();
    let vda = running(&d, "lc");
    let events = watcher(&d);
    let p = |p: &Path| p.display().to_string();

    // Nothing to commit into yet.
    d.virsh(&["blockcommit", "lc", "vda", "--active"])
        .fails_with("error: invalid argument: could not find base image in chain for 'vda'");
    let s1 = snapshot(&d, "lc", "s1");
    d.guest_write("lc", 0, "write -P 0x11 0 1M");
    d.virsh(&["blockcommit", "lc", "vdz", "--active"])
        .fails_with("error: invalid argument: disk 'vdz' not found in domain");
    d.virsh(&["blockcommit", "lc", "vda"])
        .fails_with("error: invalid argument: commit of 'vda' active layer requires active flag");
    d.virsh(&[
        "blockcommit",
        "lc",
        "vda",
        "--active",
        "--bandwidth",
        "8796093022208",
    ])
    .fails_with("error: numerical overflow: bandwidth must be less than 8796093022207");
    d.virsh(&["blockjob", "lc", "vda", "--abort"])
        .fails_with("error: invalid argument: disk vda does not have an active block job");
    d.virsh(&["blockjob", "lc", "vda", "--bandwidth", "1"])
        .fails_with("error: invalid argument: disk vda does not have an active block job");

    // Keep the overlay: the data is in the base too, the disk stays on top.
    d.virsh(&[
        "blockcommit",
        "lc",
        "vda",
        "--active",
        "--keep-overlay",
        "--wait",
    ])
    .ok();
    assert_eq!(source_of(&d, "lc", false), p(&s1));
    assert!(qemu_io::holds(&vda, 0x11, "0", "1M"));
    // Abort while it runs (slowed down): nothing changes.
    d.guest_write("lc", 0, "write -P 0x22 1M 2M");
    d.virsh(&["blockcommit", "lc", "vda", "--active", "--bandwidth", "1"])
        .ok();
    d.virsh(&["blockjob", "lc", "vda", "--abort"]).ok();
    assert_eq!(source_of(&d, "lc", false), p(&s1));
    wait_no_job(&d, "lc");

    // Two more layers, then the middle one committed into the base.
    let s2 = snapshot(&d, "lc", "s2");
    d.guest_write("lc", 0, "write -P 0x33 3M 1M");
    let s3 = snapshot(&d, "lc", "s3");
    d.guest_write("lc", 0, "write -P 0x44 4M 1M");
    d.virsh(&[
        "blockcommit",
        "lc",
        "vda",
        "--top",
        &p(&s2),
        "--base",
        &p(&s3),
    ])
    .fails_with(&format!(
        "error: invalid argument: could not find image '{}' beneath '{}' in chain for 'vda'",
        p(&s3),
        p(&s2)
    ));
    d.virsh(&["blockcommit", "lc", "vda", "--top", &p(&s2), "--active"])
        .fails_with(&format!(
            "error: invalid argument: active commit requested but '{}' is not active",
            p(&s2)
        ));
    d.virsh(&[
        "blockcommit",
        "lc",
        "vda",
        "--top",
        &p(&s2),
        "--base",
        &p(&vda),
        "--shallow",
    ])
    .fails_with(&format!(
        "error: invalid argument: base '{}' is not immediately below '{}' in chain for '{}'",
        p(&vda),
        p(&s2),
        p(&s3)
    ));
    d.virsh(&[
        "blockcommit",
        "lc",
        "vda",
        "--top",
        &p(&s2),
        "--base",
        &p(&vda),
        "--wait",
        "--delete",
    ])
    .ok();
    assert_eq!(chain_of(&s3), [p(&s3), p(&vda)]);
    assert!(
        !s1.exists() && !s2.exists(),
        "--delete left the committed images"
    );
    assert_eq!(source_of(&d, "lc", false), p(&s3));

    // Pull everything into the top: it stands alone.
    d.virsh(&["blockpull", "lc", "vda", "--bandwidth", "1"])
        .ok();
    d.virsh(&["blockjob", "lc", "vda", "--pivot"]).fails_with(
        "error: block copy still active: block job 'pull-vda-libvirt-4-format' not ready for pivot yet",
    );
    d.guest_write("lc", 0, "write -P 0x55 5M 1M");
    d.virsh(&["blockjob", "lc", "vda", "--bandwidth", "0"]).ok();
    wait_no_job(&d, "lc");
    assert_eq!(chain_of(&s3), [p(&s3)]);

    let lines = block_events(&events.finish(&d));
    let commit = |path: &Path, what: &str| {
        [
            format!("event 'block-job' for domain 'lc': {what}"),
            format!("event 'block-job-2' for domain 'lc': {what}"),
        ]
        .map(|l| l.replace("PATH", &p(path)))
    };
    let mut want = Vec::new();
    want.extend(commit(&s1, "Active Block Commit for PATH ready"));
    want.extend(commit(&s1, "Active Block Commit for PATH canceled"));
    want.extend(commit(&s1, "Active Block Commit for PATH canceled"));
    want.extend(commit(&s3, "Block Commit for PATH completed"));
    want.extend(commit(&s3, "Block Pull for PATH completed"));
    let want: Vec<String> = want
        .into_iter()
        .map(|l| {
            if l.starts_with("event 'block-job-2'") {
                l.replace(&p(&s1), "vda").replace(&p(&s3), "vda")
            } else {
                l
            }
        })
        .collect();
    assert_eq!(lines, want);

    d.virsh(&["destroy", "lc"]).ok();
    for (pattern, at) in [
        (0x11, "0"),
        (0x22, "1M"),
        (0x33, "3M"),
        (0x44, "4M"),
        (0x55, "5M"),
    ] {
        qemu_io::reads(&s3, pattern, at, "1M");
    }
    // Shut off: libvirt knows no chain below the image.
    d.virsh(&["blockcommit", "lc", "vda", "--active", "--shallow"])
        .fails_with("error: Requested operation is not valid: domain is not running");
    d.virsh(&["blockjob", "lc", "vda", "--info"])
        .fails_with("error: Requested operation is not valid: domain is not running");
}

/// The daemon killed while jobs run: a job that ended meanwhile is
/// applied when it comes back, one still running is followed to its end;
/// QEMU killed in the middle of a commit leaves the definition on the
/// image QEMU ran on.
#[test]
fn daemon_or_qemu_killed_mid_commit() {
    let mut d = Daemon::start();
    let vda = running(&d, "rs");
    let p = |p: &Path| p.display().to_string();
    d.guest_write("rs", 0, "write -P 0x11 0 1M");
    let s1 = snapshot(&d, "rs", "s1");
    d.guest_write("rs", 0, "write -P 0x22 1M 2M");
    let s2 = snapshot(&d, "rs", "s2");
    d.guest_write("rs", 0, "write -P 0x33 3M 1M");
    let monitor = d.monitor_socket("rs");

    // A lower commit that ends while no daemon listens.
    d.virsh(&[
        "blockcommit",
        "rs",
        "vda",
        "--top",
        &p(&s1),
        "--bandwidth",
        "1",
    ])
    .ok();
    d.kill();
    {
        let mut qmp = common::monitor::Qmp::connect(&monitor);
        qmp.execute(
            r#"{"execute":"block-job-set-speed","arguments":{"device":"commit-vda-libvirt-2-format","speed":0}}"#,
        );
        wait_until(PATIENCE, || {
            let jobs = qmp.execute(r#"{"execute":"query-jobs"}"#);
            jobs[0]["status"] == "concluded"
        })
        .expect("the commit never concluded");
    }
    d.restart();
    wait_no_job(&d, "rs");
    assert_eq!(chain_of(&s2), [p(&s2), p(&vda)]);

    // An active commit still running when the daemon comes back.
    d.virsh(&["blockcommit", "rs", "vda", "--active", "--bandwidth", "1"])
        .ok();
    d.restart();
    let info = d.virsh(&["blockjob", "rs", "vda", "--info"]).ok();
    assert!(info.stderr.contains("Active Block Commit: ["), "{info:?}");
    d.virsh(&["blockjob", "rs", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "rs");
    d.virsh(&["blockjob", "rs", "vda", "--pivot"]).ok();
    assert_eq!(source_of(&d, "rs", false), p(&vda));
    assert_eq!(source_of(&d, "rs", true), p(&vda));
    d.restart();
    assert_eq!(source_of(&d, "rs", false), p(&vda));

    // A copy still running when the daemon comes back, then a snapshot
    // (a new node number) and its commit.
    let copy = d.path("rs-copy.qcow2");
    d.virsh(&[
        "blockcopy",
        "rs",
        "vda",
        &p(&copy),
        "--transient-job",
        "--bandwidth",
        "1",
    ])
    .ok();
    d.restart();
    d.virsh(&["blockjob", "rs", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "rs");
    d.virsh(&["blockjob", "rs", "vda", "--pivot"]).ok();
    assert_eq!(source_of(&d, "rs", false), p(&copy));
    d.restart();
    snapshot(&d, "rs", "s3");
    d.virsh(&["blockcommit", "rs", "vda", "--active", "--pivot", "--wait"])
        .ok();
    assert_eq!(source_of(&d, "rs", false), p(&copy));
    assert_eq!(chain_of(&copy), [p(&copy)]);

    // QEMU dies under an active commit: the domain is off, its definition
    // names the overlay it ran on, and it starts from there.
    snapshot(&d, "rs", "s4");
    let s4 = d.path("rs-copy.s4");
    d.guest_write("rs", 0, "write -P 0x44 4M 1M");
    d.virsh(&["blockcommit", "rs", "vda", "--active", "--bandwidth", "1"])
        .ok();
    d.kill_qemu();
    d.wait_state("rs", "shut off");
    assert_eq!(source_of(&d, "rs", true), p(&s4));
    d.virsh(&["start", "rs"]).ok();
    assert_eq!(source_of(&d, "rs", false), p(&s4));
    d.virsh(&["destroy", "rs"]).ok();
    for (pattern, at) in [(0x11, "0"), (0x22, "1M"), (0x33, "3M"), (0x44, "4M")] {
        qemu_io::reads(&s4, pattern, at, "1M");
    }
}

/// Block copy: to a qcow2 file with pivot (guest writes during the copy
/// land in the copy), to a raw file with --finish (the disk stays), to a
/// block device; and libvirt's refusals.
#[test]
fn block_copy_pivot_finish_device_and_errors() {
    let d = Daemon::start();
    running(&d, "cp");
    let events = watcher(&d);
    let p = |p: &Path| p.display().to_string();
    d.guest_write("cp", 0, "write -P 0x11 0 2M");
    let dest1 = d.path("copy1.qcow2");
    d.virsh(&["blockcopy", "cp", "vda", "--dest", &p(&dest1), "--wait"])
        .fails_with("error: Requested operation is not valid: domain is not transient");
    d.virsh(&[
        "blockcopy",
        "cp",
        "vda",
        &p(&dest1),
        "--transient-job",
        "--bandwidth",
        "1",
    ])
    .ok();
    d.virsh(&["blockjob", "cp", "vda", "--abort"]).ok();
    wait_no_job(&d, "cp");
    std::fs::remove_file(&dest1).unwrap();

    d.virsh(&[
        "blockcopy",
        "cp",
        "vda",
        &p(&dest1),
        "--transient-job",
        "--bandwidth",
        "1",
    ])
    .ok();
    d.virsh(&[
        "blockcopy",
        "cp",
        "vda",
        &p(&d.path("other.qcow2")),
        "--transient-job",
    ])
    .fails_with("error: block copy still active: disk 'vda' already in active block job");
    d.guest_write("cp", 0, "write -P 0x22 2M 1M");
    d.virsh(&["blockjob", "cp", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "cp");
    d.guest_write("cp", 0, "write -P 0x33 3M 1M");
    d.virsh(&["blockjob", "cp", "vda", "--pivot"]).ok();
    assert_eq!(source_of(&d, "cp", false), p(&dest1));
    assert_eq!(source_of(&d, "cp", true), p(&dest1));
    assert_eq!(chain_of(&dest1), [p(&dest1)]);

    // A raw copy, finished without pivot: the disk stays where it is.
    let dest2 = d.path("copy2.img");
    let xml = d.path("dest2.xml");
    std::fs::write(
        &xml,
        format!(
            "<disk type='file'><source file='{}'/><driver type='raw'/></disk>",
            p(&dest2)
        ),
    )
    .unwrap();
    d.virsh(&[
        "blockcopy",
        "cp",
        "vda",
        "--xml",
        &p(&xml),
        "--transient-job",
        "--finish",
        "--wait",
    ])
    .ok();
    assert_eq!(source_of(&d, "cp", false), p(&dest1));
    assert_eq!(images::info(&dest2)["format"], "raw");
    d.virsh(&["blockcopy", "cp", "vda", "--xml", &p(&xml), "--transient-job"])
        .fails_with(&format!(
            "error: unsupported configuration: external destination file for disk vda already exists and is not a block device: {}",
            p(&dest2)
        ));

    // Onto a block device, raw, pivoted.
    let link = d.path("blk");
    let _dev = common::storage::LoopDevice::attach(&d.path("blk.img"), 64 << 20, &link);
    d.virsh(&[
        "blockcopy",
        "cp",
        "vda",
        "--dest",
        &p(&link),
        "--blockdev",
        "--format",
        "raw",
        "--transient-job",
        "--pivot",
        "--wait",
    ])
    .ok();
    assert_eq!(source_of(&d, "cp", false), p(&link));
    let dumped = d.virsh(&["dumpxml", "--inactive", "cp"]).ok().stdout;
    assert!(
        dumped.contains("<disk type='block' device='disk'>"),
        "{dumped}"
    );
    d.guest_write("cp", 0, "write -P 0x44 4M 1M");

    let lines = block_events(&events.finish(&d));
    let vda = d.path("cp.qcow2");
    let mut want = Vec::new();
    for (path, what) in [
        (&vda, "canceled"),
        (&vda, "ready"),
        (&dest1, "completed"),
        (&dest1, "ready"),
        (&dest1, "canceled"),
        (&dest1, "ready"),
        (&link, "completed"),
    ] {
        want.push(format!(
            "event 'block-job' for domain 'cp': Block Copy for {} {what}",
            p(path)
        ));
        want.push(format!(
            "event 'block-job-2' for domain 'cp': Block Copy for vda {what}"
        ));
    }
    assert_eq!(lines, want);

    d.virsh(&["destroy", "cp"]).ok();
    for (pattern, at) in [(0x11, "0"), (0x22, "2M"), (0x33, "3M"), (0x44, "4M")] {
        qemu_io::reads(&link, pattern, at, "1M");
    }
    for (pattern, at) in [(0x11, "0"), (0x22, "2M"), (0x33, "3M")] {
        qemu_io::reads(&dest2, pattern, at, "1M");
    }
}

const AREA: common::reference::Area = common::reference::Area {
    root: "fixtures/reference/blockjob",
    tmp: "/tmp/bj-ref",
    api_script: "",
};

/// libvirtd 9.0's whole block job session (fixtures/reference/blockjob,
/// `session.sh`), replayed command for command: every output, error and
/// exit status the same, and the same block job events in the same order.
#[test]
fn libvirtd_session_replayed() {
    use common::reference::Session;
    let s = Session::start(&AREA, Daemon::start());
    s.images(&[("vda.qcow2", "qcow2", "64M")]);
    std::fs::copy(s.path("xml/bjvm.xml"), s.path("bjvm.xml")).unwrap();
    let write = |what: &str| s.daemon.guest_write("bjvm", 0, what);
    let mut events = None;
    for name in AREA.text("SESSION.txt").lines() {
        let (command, stdout, _, code) = AREA.capture(name);
        match name {
            // What qemu-img says of the images' sizes is the file
            // system's; the chains are checked below.
            "chain-after-commit" | "chain-after-pull" => {}
            // Progress lines are timing; the rest is compared.
            "commit-pivot-wait" | "commit-keep-overlay" | "copy-pivot" => {
                let run = s.replay_only(name);
                assert_eq!(
                    (s.theirs(&run.stdout), run.code),
                    (stdout, code),
                    "{name} ({command})"
                );
            }
            // virsh sizes the table to the longest path, which is ours.
            n if n.starts_with("domblklist") => {
                let run = s.replay_only(name);
                assert_eq!(
                    common::words(&s.theirs(&run.stdout).replace('-', "")),
                    common::words(&stdout.replace('-', "")),
                    "{name}"
                );
            }
            // dumpxml lacks libvirtd's defaults (README); the disk is
            // compared.
            "dumpxml-inactive-copied" => {
                let run = s.replay_only(name);
                assert!(
                    s.theirs(&run.stdout)
                        .contains("<source file='/tmp/bj-ref/copy1.qcow2'/>"),
                    "{run:?}"
                );
            }
            _ => {
                s.replay(name);
            }
        }
        match name {
            "define" => events = Some(s.events("bjvm")),
            "snapshot-s1" => write("write -P 0x11 0 2M"),
            "snapshot-s2" => write("write -P 0x22 2M 1M"),
            "snapshot-s3" => write("write -P 0x33 3M 1M"),
            "snapshot-s4" => write("write -P 0x44 4M 1M"),
            "speed-0" => wait_ready(&s.daemon, "bjvm"),
            "abort" | "commit-shallow-not-below" | "pull-speed-0" => wait_no_job(&s.daemon, "bjvm"),
            "commit-lower" => assert_eq!(
                chain_of(&s.path("vda.s4")),
                [
                    s.ours("/tmp/bj-ref/vda.s4"),
                    s.ours("/tmp/bj-ref/vda.qcow2")
                ]
            ),
            _ => {}
        }
        if name == "pull-speed-0" {
            assert_eq!(chain_of(&s.path("vda.s4")), [s.ours("/tmp/bj-ref/vda.s4")]);
        }
        if name == "undefine" {
            break;
        }
    }
    let want: Vec<String> = AREA
        .text("events-session.txt")
        .lines()
        .filter(|l| l.contains("'block-job"))
        .map(str::to_string)
        .collect();
    let got: Vec<String> = block_events(&events.expect("watching").finish(&s.daemon))
        .iter()
        .map(|l| s.theirs(l))
        .collect();
    assert_eq!(got, want);
}

/// One job per disk between block jobs and backups, in both directions;
/// with checkpoints, no copy into a raw image.
#[test]
fn disks_shared_with_backups_and_checkpoints() {
    let d = Daemon::start();
    let vda = d.image("sh.qcow2", "qcow2", "128M");
    qemu_io::write(&vda, "qcow2", "write -P 0x11 0 120M");
    d.define("sh", &d.domain_xml("sh", &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", "sh"]).ok();
    snapshot(&d, "sh", "s1");
    let target = d.path("sh-backup.qcow2");
    let xml = d.path("backup.xml");
    std::fs::write(
        &xml,
        format!(
            "<domainbackup><disks><disk name='vda' type='file'><target file='{}'/><driver type='qcow2'/></disk></disks></domainbackup>",
            target.display()
        ),
    )
    .unwrap();
    // A pull backup holds its disk until it is aborted, however fast the
    // disk copies, so the refusals below never race the backup's end.
    let pull = d.path("pull.xml");
    std::fs::write(
        &pull,
        format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/><disks><disk name='vda' type='file'><scratch file='{}'/></disk></disks></domainbackup>",
            d.path("pull.sock").display(),
            d.path("pull-scratch.qcow2").display()
        ),
    )
    .unwrap();
    d.virsh(&["backup-begin", "sh", pull.to_str().unwrap()])
        .ok();
    d.virsh(&["blockcommit", "sh", "vda", "--active"])
        .fails_with("error: Operation not supported: disk 'vda' already in active block job");
    d.virsh(&["blockpull", "sh", "vda"])
        .fails_with("error: Operation not supported: disk 'vda' already in active block job");
    d.virsh(&["domjobabort", "sh"]).ok();
    d.wait_idle("sh");

    d.virsh(&["blockcommit", "sh", "vda", "--active", "--bandwidth", "1"])
        .ok();
    d.virsh(&["backup-begin", "sh", xml.to_str().unwrap()])
        .fails_with("error: internal error: disk 'vda' has a blockjob assigned");
    d.virsh(&[
        "snapshot-create-as",
        "sh",
        "s2",
        "--disk-only",
        "--no-metadata",
    ])
    .fails_with("error: Operation not supported: disk 'vda' already in active block job");
    d.virsh(&["blockjob", "sh", "vda", "--abort"]).ok();
    wait_no_job(&d, "sh");

    // Checkpoints keep their bitmaps (tests/blockjob_checkpoints.rs): a
    // copy into a raw image, which cannot hold them, is refused.
    running(&d, "ck");
    d.virsh(&["checkpoint-create-as", "ck", "c1"]).ok();
    let refused =
        "error: Operation not supported: cannot perform block operations while checkpoint exists";
    let raw = d.path("ck-copy.raw");
    d.virsh(&[
        "blockcopy",
        "ck",
        "vda",
        raw.to_str().unwrap(),
        "--transient-job",
        "--format",
        "raw",
    ])
    .fails_with(refused);
    let dest = d.path("ck-copy.qcow2");
    d.virsh(&[
        "blockcopy",
        "ck",
        "vda",
        dest.to_str().unwrap(),
        "--transient-job",
        "--pivot",
        "--wait",
    ])
    .ok();
    d.virsh(&["checkpoint-delete", "ck", "c1"]).ok();
    d.virsh(&[
        "blockcopy",
        "ck",
        "vda",
        raw.to_str().unwrap(),
        "--transient-job",
        "--format",
        "raw",
        "--pivot",
        "--wait",
    ])
    .ok();
}

/// The less common forms: a shallow copy (the copy sits on the old
/// backing image), a copy into an image the user made, a lower commit
/// keeping the backing name relative, an asynchronous pivot.
#[test]
fn shallow_and_reused_copies_relative_commit_async_pivot() {
    let d = Daemon::start();
    let vda = running(&d, "sc");
    let p = |p: &Path| p.display().to_string();
    d.guest_write("sc", 0, "write -P 0x11 0 1M");
    let s1 = snapshot(&d, "sc", "s1");
    d.guest_write("sc", 0, "write -P 0x22 1M 1M");

    let shallow = d.path("shallow.qcow2");
    d.virsh(&[
        "blockcopy",
        "sc",
        "vda",
        &p(&shallow),
        "--shallow",
        "--transient-job",
        "--pivot",
        "--wait",
    ])
    .ok();
    assert_eq!(source_of(&d, "sc", false), p(&shallow));
    assert_eq!(chain_of(&shallow), [p(&shallow), p(&vda)]);
    // The copy holds the overlay's data; the rest reads through vda.
    assert!(qemu_io::holds(&shallow, 0x22, "1M", "1M"));

    // Into an image made beforehand, with no backing: a full copy.
    let reused = d.path("reused.qcow2");
    images::create(&reused, "qcow2", "64M");
    d.virsh(&[
        "blockcopy",
        "sc",
        "vda",
        &p(&reused),
        "--reuse-external",
        "--transient-job",
        "--pivot",
        "--wait",
    ])
    .ok();
    assert_eq!(source_of(&d, "sc", false), p(&reused));

    // Two layers again; the middle one committed, its name kept relative.
    // Overlays are named after the image the disk runs on.
    snapshot(&d, "sc", "s2");
    let s2 = d.path("reused.s2");
    d.guest_write("sc", 0, "write -P 0x33 2M 1M");
    snapshot(&d, "sc", "s3");
    let s3 = d.path("reused.s3");
    d.virsh(&[
        "blockcommit",
        "sc",
        "vda",
        "--top",
        &p(&s2),
        "--keep-relative",
        "--wait",
    ])
    .ok();
    let info = images::info(&s3);
    assert_eq!(info["backing-filename"], "reused.qcow2", "{info}");

    // An asynchronous pivot returns at once; the job ends after.
    d.virsh(&["blockcommit", "sc", "vda", "--active", "--wait"])
        .ok();
    d.virsh(&["blockjob", "sc", "vda", "--pivot", "--async"])
        .ok();
    wait_no_job(&d, "sc");
    assert_eq!(source_of(&d, "sc", false), p(&reused));
    d.virsh(&["destroy", "sc"]).ok();
    for (pattern, at) in [(0x11, "0"), (0x22, "1M"), (0x33, "2M")] {
        qemu_io::reads(&reused, pattern, at, "1M");
    }
    let _ = s1;
}

/// libvirt-python's view of the errors (code, domain, message), running
/// and shut off: `probe.py` against virtbackupd prints what it printed
/// against libvirtd 9.0 (`libvirtd.txt`).
#[test]
fn api_errors_as_libvirtd() {
    let d = Daemon::start();
    let dir = d.path("bj-probe");
    std::fs::create_dir(&dir).unwrap();
    let run = common::Run::of(
        std::process::Command::new("/usr/bin/python3")
            .arg(AREA.path("probe.py"))
            .arg(d.uri())
            .arg(&dir),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let ours = run.stdout.replace(dir.to_str().unwrap(), "/tmp/bj-probe");
    assert_eq!(ours, AREA.text("libvirtd.txt"));
}

/// A copy that runs out of space fails: the failed events, the disk where
/// it was, the copy's nodes gone, and the disk free for the next job.
#[test]
fn a_copy_that_fails_leaves_the_disk_as_it_was() {
    let d = Daemon::start();
    let vda = running(&d, "fl");
    let events = watcher(&d);
    d.guest_write("fl", 0, "write -P 0x11 0 16M");
    let small = common::storage::Tmpfs::mount(d.path("small"), "4M");
    let dest = d.path("small/copy.qcow2");
    d.virsh(&[
        "blockcopy",
        "fl",
        "vda",
        dest.to_str().unwrap(),
        "--transient-job",
    ])
    .ok();
    wait_no_job(&d, "fl");
    let lines = block_events(&events.finish(&d));
    assert_eq!(
        lines,
        [
            format!(
                "event 'block-job' for domain 'fl': Block Copy for {} failed",
                vda.display()
            ),
            "event 'block-job-2' for domain 'fl': Block Copy for vda failed".to_string(),
        ]
    );
    assert_eq!(source_of(&d, "fl", false), vda.display().to_string());
    let nodes = d.node_names("fl");
    assert_eq!(
        nodes,
        ["libvirt-1-format", "libvirt-1-storage"],
        "{nodes:?}"
    );
    d.virsh(&["blockpull", "fl", "vda", "--wait"]).ok();
    drop(small);
}

/// The `<disk>` lines from `<driver` through `</mirror>` (or only the
/// `<mirror>` element), with libvirtd's paths turned into ours.
fn mirror_lines(xml: &str, whole: bool, paths: &[(&str, &Path)]) -> Vec<String> {
    let mut xml = xml.to_string();
    for (theirs, ours) in paths {
        xml = xml.replace(theirs, ours.to_str().unwrap());
    }
    let lines: Vec<String> = xml.lines().map(|l| l.trim().to_string()).collect();
    let from = if whole { "<driver" } else { "<mirror" };
    let start = lines.iter().position(|l| l.starts_with(from));
    let end = lines.iter().position(|l| l == "</mirror>");
    match (start, end) {
        (Some(start), Some(end)) => lines[start..=end].to_vec(),
        _ => Vec::new(),
    }
}

/// The live XML shows a running copy's destination and an active
/// commit's base as `<mirror>`, with `ready='yes'` once the job can be
/// pivoted, as libvirtd 9.0 printed them (fixtures/reference/blockjob/
/// mirror/); the inactive XML never does, and it goes with the job.
#[test]
fn mirror_in_the_live_xml_as_libvirtd() {
    let d = Daemon::start();
    let vda = d.image("mirvm.qcow2", "qcow2", "64M");
    qemu_io::write(&vda, "qcow2", "write -P 0x11 0 32M");
    d.define("mirvm", &d.domain_xml("mirvm", &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", "mirvm"]).ok();
    let copy = d.path("copy.qcow2");
    let s1 = d.path("mirvm.s1");
    let paths = [
        ("/tmp/mir/vda.qcow2", vda.as_path()),
        ("/tmp/mir/copy.qcow2", copy.as_path()),
        ("/tmp/mir/vda.s1", s1.as_path()),
    ];
    let reference = |name: &str, whole: bool| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/blockjob/mirror");
        mirror_lines(
            &std::fs::read_to_string(dir.join(name)).unwrap(),
            whole,
            &paths,
        )
    };
    let live = |whole: bool| mirror_lines(&d.answer(&["dumpxml", "mirvm"]), whole, &paths);
    assert_eq!(reference("copy-running.txt", true).len(), 8);
    assert_eq!(reference("commit-ready.txt", false).len(), 4);

    d.virsh(&[
        "blockcopy",
        "mirvm",
        "vda",
        copy.to_str().unwrap(),
        "--transient-job",
        "--bandwidth",
        "1",
    ])
    .ok();
    assert_eq!(live(true), reference("copy-running.txt", true));
    let inactive = d.answer(&["dumpxml", "mirvm", "--inactive"]);
    assert!(!inactive.contains("<mirror"), "{inactive}");
    d.virsh(&["blockjob", "mirvm", "vda", "--bandwidth", "0"])
        .ok();
    wait_ready(&d, "mirvm");
    assert_eq!(live(true), reference("copy-ready.txt", true));
    d.virsh(&["blockjob", "mirvm", "vda", "--abort"]).ok();
    wait_no_job(&d, "mirvm");
    assert!(live(false).is_empty());

    snapshot(&d, "mirvm", "s1");
    d.virsh(&["blockcommit", "mirvm", "vda", "--active"]).ok();
    wait_ready(&d, "mirvm");
    assert_eq!(live(false), reference("commit-ready.txt", false));
    d.virsh(&["blockjob", "mirvm", "vda", "--pivot"]).ok();
    wait_no_job(&d, "mirvm");
    assert!(live(false).is_empty());
}
