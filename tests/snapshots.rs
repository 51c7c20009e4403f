#![allow(clippy::tests_outside_test_module)]
//! Snapshots through the stock virsh and libvirt-python against real QEMU:
//! libvirtd 9.0's snapshot session replayed (fixtures/reference/snapshot/,
//! see its README), data round trips through internal and external
//! snapshots, and the rule that a domain has snapshots or checkpoints but
//! never both.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::blockjob::source_of;
use common::images::{self, qemu_img};
use common::qemu_io::{self, holds};
use common::reference::{shell_words, steady, Area, Session};
use common::storage::LoopDevice;
use common::{words, Daemon, Run};

const AREA: Area = Area {
    root: "fixtures/reference/snapshot",
    tmp: "/tmp/snref",
    api_script: "snapi.py",
};

/// The session's captures in order, without what is not replayed (see
/// `skipped` for why).
fn session() -> Vec<String> {
    let session = AREA.text("SESSION.txt");
    session
        .lines()
        .filter(|name| !skipped(name))
        .map(str::to_string)
        .collect()
}

fn skipped(name: &str) -> bool {
    // Set up by hand (`snvm`).
    ["define", "define-raw", "start"].contains(&name)
        // The embedded <domain> is formatted from our domain model, which
        // lacks libvirtd's implicit devices and backing chains (compared
        // without it in src/conf/snapshot's reference tests).
        || name.starts_with("dumpxml-")
        || name == "current"
        // qemu-img's listing carries VM sizes and clocks of that run.
        || name.starts_with("img-")
        || name.starts_with("ls-")
}

/// `text` with epoch-second snapshot names (a snapshot created without a
/// name is named after the time) made `EPOCH`.
fn unclocked(text: &str) -> String {
    text.split_inclusive(|c: char| !c.is_ascii_digit())
        .map(|part| {
            let digits = part.trim_end_matches(|c: char| !c.is_ascii_digit());
            if digits.len() == 10 && digits.starts_with("17") {
                part.replacen(digits, "EPOCH", 1)
            } else {
                part.to_string()
            }
        })
        .collect()
}

/// Table rules and padding, whose width follows the longest path: ours
/// are longer than `/tmp/snref`.
fn unpadded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = '\0';
    for c in text.chars() {
        if (c == ' ' || c == '-') && c == last {
            continue;
        }
        out.push(c);
        last = c;
    }
    out
}

/// A python list printed as `ok: [...]`, its items sorted: libvirtd lists
/// snapshots in the order of a hash table seeded at random, so only the
/// set is comparable.
fn sorted_list(text: &str) -> String {
    let Some(items) = text
        .trim()
        .strip_prefix("ok: [")
        .and_then(|t| t.strip_suffix(']'))
    else {
        return text.to_string();
    };
    let mut items: Vec<&str> = items.split(", ").filter(|i| !i.is_empty()).collect();
    items.sort_unstable();
    format!("ok: [{}]\n", items.join(", "))
}

fn same(s: &Session, run: &Run, name: &str) {
    let (command, mut stdout, stderr, code) = s.area.capture(name);
    let mut run_stdout = run.stdout.clone();
    if name.starts_with("api-list-") {
        stdout = sorted_list(&unclocked(&stdout));
        run_stdout = sorted_list(&unclocked(&run_stdout));
    }
    let run = &Run {
        stdout: run_stdout,
        stderr: run.stderr.clone(),
        code: run.code,
    };
    assert_eq!(
        unpadded(&unclocked(&steady(&s.theirs(&run.stdout)))),
        unpadded(&unclocked(&steady(&stdout))),
        "stdout differs from {name} ({command}); stderr: {}",
        run.stderr
    );
    assert_eq!(
        unclocked(&s.theirs(&run.stderr)),
        unclocked(&stderr),
        "stderr differs from {name} ({command})"
    );
    assert_eq!(
        run.code, code,
        "exit status differs from {name} ({command})"
    );
}

/// Runs capture `name` (a virsh line or a snapi.py call) and compares.
fn replay(s: &Session, name: &str) {
    let (command, ..) = AREA.capture(name);
    let run = match command.strip_prefix("./snapi.py ") {
        Some(rest) => {
            let args: Vec<String> = shell_words(rest).iter().map(|a| s.ours(a)).collect();
            s.api(&args.iter().map(String::as_str).collect::<Vec<_>>())
        }
        None => s.replay_only(name),
    };
    same(s, &run, name);
}

/// The session's domains: snvm (two qcow2 disks, running) and snraw (a
/// qcow2 and a raw disk, never started).
fn snvm(s: &Session) {
    s.images(&[
        ("vda.qcow2", "qcow2", "64M"),
        ("vdb.qcow2", "qcow2", "64M"),
        ("raw-vda.qcow2", "qcow2", "64M"),
        ("raw-vdb.raw", "raw", "32M"),
    ]);
    s.define("snvm");
    s.define("snraw");
    s.virsh(&["start", "snvm"]).ok();
}

/// libvirtd's snapshot session, command by command: creates (plain, with
/// a description, refused ones, --no-metadata, disk-only with --diskspec
/// and default names, --atomic, --live --memspec, on a shut-off domain),
/// info, current, parent, 55 documents through the API, revert, every
/// list option, deletes with and without children (internal, external
/// by commit, refused mixes), metadata-only deletes and redefines,
/// undefine.
#[test]
fn libvirtds_snapshot_session_replays_identically() {
    let s = Session::start(&AREA, Daemon::start());
    snvm(&s);
    for name in session() {
        replay(&s, &name);
    }
}

/// A running two-disk domain.
fn running(d: &Daemon, name: &str) -> (PathBuf, PathBuf) {
    let vda = d.image(&format!("{name}-vda.qcow2"), "qcow2", "64M");
    let vdb = d.image(&format!("{name}-vdb.qcow2"), "qcow2", "64M");
    let xml = d.domain_xml(name, &[("vda", &vda, "qcow2"), ("vdb", &vdb, "qcow2")]);
    d.define(name, &xml);
    d.virsh(&["start", name]).ok();
    (vda, vdb)
}

/// Internal snapshots keep what the guest wrote: revert brings it back,
/// running or from a shut-off domain; external ones move the disks onto
/// overlays over the old images, which the domain keeps across a restart.
#[test]
fn snapshots_round_trip_the_guests_data() {
    let d = Daemon::start();
    let (vda, vdb) = running(&d, "rt");
    d.guest_write("rt", 0, "write -P 0x11 0 1M");
    d.virsh(&["snapshot-create-as", "rt", "s1"]).ok();
    d.guest_write("rt", 0, "write -P 0x22 0 1M");
    d.guest_write("rt", 1, "write -P 0x23 0 64k");
    d.virsh(&["snapshot-create-as", "rt", "s2"]).ok();
    d.guest_write("rt", 0, "write -P 0x33 0 1M");

    // Back to s1 while running: the guest runs on s1's disks.
    let run = d.virsh(&["snapshot-revert", "rt", "s1"]).ok();
    assert_eq!(run.stdout.trim(), "");
    assert_eq!(words(&d.virsh(&["domstate", "rt"]).stdout), "running");
    assert_eq!(
        words(&d.virsh(&["snapshot-current", "rt", "--name"]).stdout),
        "s1"
    );
    d.virsh(&["destroy", "rt"]).ok();
    assert!(holds(&vda, 0x11, "0", "1M"));
    assert!(holds(&vdb, 0x00, "0", "64k"));

    // To s2 from a shut-off domain: it starts, on s2's data, paused when
    // asked.
    d.virsh(&["snapshot-revert", "rt", "s2", "--paused"]).ok();
    assert_eq!(words(&d.virsh(&["domstate", "rt"]).stdout), "paused");
    d.virsh(&["destroy", "rt"]).ok();
    assert!(holds(&vda, 0x22, "0", "1M"));
    assert!(holds(&vdb, 0x23, "0", "64k"));

    // A shut-off domain's internal snapshot is made with qemu-img.
    d.virsh(&["snapshot-create-as", "rt", "off1"]).ok();
    let list = d
        .virsh(&["snapshot-list", "rt", "--name", "--topological"])
        .ok();
    assert_eq!(list.stdout.trim(), "s1\ns2\noff1");
    let info = d.virsh(&["snapshot-info", "rt", "off1"]).ok();
    assert!(
        words(&info.stdout).contains("State: shutoff"),
        "{}",
        info.stdout
    );
    let listing = images::snapshot_list(&vda);
    for name in ["s1", "s2", "off1"] {
        assert!(listing.contains(name), "{listing}");
    }
    d.virsh(&["snapshot-delete", "rt", "off1"]).ok();
    d.virsh(&["snapshot-delete", "rt", "s1"]).ok();
    let listing = images::snapshot_list(&vda);
    assert!(
        !listing.contains("off1") && !listing.contains(" s1 "),
        "{listing}"
    );
    d.virsh(&["snapshot-delete", "rt", "s2"]).ok();

    // External, disk-only, running: the overlays are active, the old
    // images their backing files; the guest's writes land in the overlays.
    d.virsh(&["start", "rt"]).ok();
    d.virsh(&["snapshot-create-as", "rt", "e1", "--disk-only"])
        .ok();
    let overlay = d.path("rt-vda.e1");
    let blk = d.virsh(&["domblklist", "rt"]).ok();
    assert!(
        blk.stdout.contains(overlay.to_str().unwrap()),
        "{}",
        blk.stdout
    );
    let chain = qemu_img(&[
        "info",
        "-U",
        "--backing-chain",
        "--output=json",
        overlay.to_str().unwrap(),
    ]);
    let chain: serde_json::Value = serde_json::from_str(&chain.stdout).unwrap();
    assert_eq!(chain[0]["filename"], overlay.to_str().unwrap());
    assert_eq!(chain[0]["backing-filename"], vda.to_str().unwrap());
    assert_eq!(chain[1]["filename"], vda.to_str().unwrap());
    d.guest_write("rt", 0, "write -P 0x44 2M 64k");
    let info = d.virsh(&["snapshot-info", "rt", "e1"]).ok();
    assert!(words(&info.stdout).contains("State: disk-snapshot Location: external"));
    // Refused as libvirtd 9.0 refuses it.
    d.virsh(&["snapshot-revert", "rt", "e1"]).fails_with(
        "error: unsupported configuration: revert to external snapshot not supported yet",
    );
    // The persistent definition follows the overlays: a restart runs on
    // them, the chain opened from the overlay's header.
    d.virsh(&["destroy", "rt"]).ok();
    let inactive = d.virsh(&["dumpxml", "rt", "--inactive"]).ok();
    assert!(inactive.stdout.contains(overlay.to_str().unwrap()));
    d.virsh(&["start", "rt"]).ok();
    d.virsh(&["destroy", "rt"]).ok();
    assert!(holds(&overlay, 0x44, "2M", "64k"));
    assert!(holds(&overlay, 0x22, "0", "1M"));
    assert!(!holds(&vda, 0x44, "2M", "64k"));
    // Deleting it, shut off, commits the overlays back into the images
    // the domain then runs on again (the overlay files stay).
    d.virsh(&["snapshot-delete", "rt", "e1"]).ok();
    let list = d.virsh(&["snapshot-list", "rt", "--name"]).ok();
    assert_eq!(list.stdout.trim(), "");
    let inactive = d.virsh(&["dumpxml", "rt", "--inactive"]).ok();
    assert!(inactive.stdout.contains(vda.to_str().unwrap()));
    assert!(holds(&vda, 0x44, "2M", "64k"));
    assert!(overlay.exists());
}

/// External snapshots of a running domain deleted the older first (its
/// overlay committed below the active layer) and then the newer (an
/// active commit, the disk switched to the base with the guest paused for
/// the switch): every write the guest made stays, the live and persistent
/// definitions follow, and the guest runs on.
#[test]
fn external_deletes_of_a_running_domain_keep_every_write() {
    let d = Daemon::start();
    let (vda, _) = running(&d, "ed");
    d.guest_write("ed", 0, "write -P 0x11 0 1M");
    d.virsh(&["snapshot-create-as", "ed", "e1", "--disk-only"])
        .ok();
    d.guest_write("ed", 0, "write -P 0x22 1M 1M");
    d.virsh(&["snapshot-create-as", "ed", "e2", "--disk-only"])
        .ok();
    d.guest_write("ed", 0, "write -P 0x33 2M 1M");
    let e2 = d.path("ed-vda.e2").display().to_string();

    d.virsh(&["snapshot-delete", "ed", "e1"]).ok();
    assert_eq!(source_of(&d, "ed", false), e2);
    assert_eq!(source_of(&d, "ed", true), e2);
    d.guest_write("ed", 0, "write -P 0x44 3M 1M");

    d.virsh(&["snapshot-delete", "ed", "e2"]).ok();
    assert_eq!(words(&d.virsh(&["domstate", "ed"]).stdout), "running");
    let base = vda.display().to_string();
    assert_eq!(source_of(&d, "ed", false), base);
    assert_eq!(source_of(&d, "ed", true), base);
    assert_eq!(
        d.virsh(&["snapshot-list", "ed", "--name"])
            .ok()
            .stdout
            .trim(),
        ""
    );
    d.guest_write("ed", 0, "write -P 0x55 4M 1M");

    d.virsh(&["destroy", "ed"]).ok();
    for (pattern, offset) in [
        (0x11, "0"),
        (0x22, "1M"),
        (0x33, "2M"),
        (0x44, "3M"),
        (0x55, "4M"),
    ] {
        assert!(
            holds(&vda, pattern, offset, "1M"),
            "{pattern:#x} at {offset}"
        );
    }
    // The next start opens the base alone.
    d.virsh(&["start", "ed"]).ok();
    assert_eq!(source_of(&d, "ed", false), base);
}

/// Writes `text` to a file in the daemon's directory; returns its path.
fn file(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.path(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const NO_CHECKPOINT: &str =
    "error: Operation not supported: cannot create checkpoint while snapshot exists";
const NO_SNAPSHOT: &str =
    "error: Operation not supported: cannot create snapshot while checkpoint exists";

/// The rule, both ways, by every path that creates either kind, and the
/// way back once the last one of a kind is gone.
#[test]
fn a_domain_has_snapshots_or_checkpoints_never_both() {
    let d = Daemon::start();
    running(&d, "ex");

    // Snapshots first: no checkpoint by create, redefine or backup.
    d.virsh(&["snapshot-create-as", "ex", "s1"]).ok();
    let run = d
        .virsh(&["checkpoint-create-as", "ex", "c1"])
        .fails_with(NO_CHECKPOINT);
    assert_eq!(run.code, 1);
    let cp = file(
        &d,
        "cp.xml",
        "<domaincheckpoint><name>c1</name><creationTime>1700000000</creationTime>\
         <disks><disk name='vda' checkpoint='bitmap' bitmap='c1'/><disk name='vdb' checkpoint='no'/></disks>\
         </domaincheckpoint>",
    );
    d.virsh(&["checkpoint-create", "ex", &cp, "--redefine"])
        .fails_with(NO_CHECKPOINT);
    let plain = file(
        &d,
        "plain.xml",
        "<domaincheckpoint><name>c2</name></domaincheckpoint>",
    );
    let backup = file(
        &d,
        "backup.xml",
        &format!(
            "<domainbackup><disks><disk name='vda' type='file'><target file='{}'/></disk>\
             <disk name='vdb' backup='no'/></disks></domainbackup>",
            d.path("ex-vda.backup").display()
        ),
    );
    d.virsh(&["backup-begin", "ex", &backup, &plain])
        .fails_with(NO_CHECKPOINT);
    assert!(!d.path("ex-vda.backup").exists());
    // A backup without a checkpoint is fine.
    d.virsh(&["backup-begin", "ex", &backup]).ok();
    d.wait_idle("ex");
    let run = d.virsh(&["checkpoint-list", "ex", "--name"]).ok();
    assert_eq!(run.stdout.trim(), "");
    let nodes = d.nodes_text("ex");
    assert!(!nodes.contains("\"c1\"") && !nodes.contains("\"c2\""));

    // The last snapshot gone, checkpoints come; then no snapshot.
    d.virsh(&["snapshot-delete", "ex", "s1"]).ok();
    d.virsh(&["checkpoint-create-as", "ex", "c1"]).ok();
    d.virsh(&["snapshot-create-as", "ex", "s2"])
        .fails_with(NO_SNAPSHOT);
    d.virsh(&["snapshot-create-as", "ex", "s2", "--disk-only"])
        .fails_with(NO_SNAPSHOT);
    let dump = file(
        &d,
        "s.xml",
        "<domainsnapshot><name>s3</name><state>shutoff</state><creationTime>1700000000</creationTime>\
         <memory snapshot='no'/></domainsnapshot>",
    );
    d.virsh(&["snapshot-create", "ex", &dump, "--redefine"])
        .fails_with(NO_SNAPSHOT);
    assert_eq!(d.answer(&["snapshot-list", "ex", "--name"]), "");
    d.virsh(&["checkpoint-delete", "ex", "c1"]).ok();
    d.virsh(&["snapshot-create-as", "ex", "s2"]).ok();

    // No snapshot changes under a running backup (libvirtd makes the
    // caller wait for its job lock and then times out).
    let pull = file(
        &d,
        "pull.xml",
        &format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/></domainbackup>",
            d.path("ex-nbd.sock").display()
        ),
    );
    d.virsh(&["backup-begin", "ex", &pull]).ok();
    d.virsh(&["snapshot-create-as", "ex", "during"]).fails_with(
        "error: Requested operation is not valid: a backup job is running on the domain",
    );
    d.virsh(&["snapshot-delete", "ex", "s2"]).fails_with(
        "error: Requested operation is not valid: a backup job is running on the domain",
    );
    d.virsh(&["domjobabort", "ex"]).ok();
    d.wait_idle("ex");

    // Two clients racing, one for each kind, many times over: never both.
    d.virsh(&["snapshot-delete", "ex", "s2"]).ok();
    for round in 0..5 {
        let snap = format!("snapshot-create-as ex r{round}");
        let check = format!("checkpoint-create-as ex k{round}");
        let uri = d.uri();
        let children: Vec<_> = [snap, check]
            .into_iter()
            .map(|cmd| {
                Command::new("virsh")
                    .args(["-q", "-c", &uri, &cmd])
                    .output()
                    .expect("virsh")
            })
            .collect();
        let won: Vec<bool> = children.iter().map(|o| o.status.success()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {children:?}"
        );
        let snaps = d.virsh(&["snapshot-list", "ex", "--name"]).ok().stdout;
        let cps = d.virsh(&["checkpoint-list", "ex", "--name"]).ok().stdout;
        assert!(
            snaps.trim().is_empty() || cps.trim().is_empty(),
            "{snaps} / {cps}"
        );
        // Clean up for the next round.
        for name in snaps.split_whitespace() {
            d.virsh(&["snapshot-delete", "ex", name]).ok();
        }
        for name in cps.split_whitespace() {
            d.virsh(&["checkpoint-delete", "ex", name]).ok();
        }
    }
}

/// Metadata survives a daemon restart; an inactive domain with snapshots
/// is undefined only with --snapshots-metadata, which leaves the images.
#[test]
fn metadata_survives_restarts_and_undefine_asks_for_it() {
    let mut d = Daemon::start();
    let (vda, _) = running(&d, "md");
    d.virsh(&["snapshot-create-as", "md", "a", "first"]).ok();
    d.virsh(&["snapshot-create-as", "md", "b"]).ok();
    d.virsh(&["snapshot-current", "md", "a"]).ok();
    d.restart();
    let run = d.virsh(&["snapshot-list", "md", "--parent"]).ok();
    let text = words(&run.stdout);
    assert!(text.contains("a ") && text.contains("b "), "{text}");
    assert_eq!(
        words(&d.virsh(&["snapshot-current", "md", "--name"]).stdout),
        "a"
    );
    assert_eq!(words(&d.virsh(&["snapshot-parent", "md", "b"]).stdout), "a");
    let info = d.virsh(&["snapshot-info", "md", "a"]).ok();
    assert!(words(&info.stdout).contains("Current: yes"));
    // snapshot-edit itself, with sed as the editor.
    let editor = d.path("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's#</name>#</name><description>via-edit</description>#' \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d.virsh_editing(&editor, &["snapshot-edit", "md", "b"]).ok();
    let dump = d.virsh(&["snapshot-dumpxml", "md", "b"]).ok();
    assert!(dump.stdout.contains("<description>via-edit</description>"));
    // Its path by hand: dumpxml, then redefine.
    let dump = d
        .virsh(&["snapshot-dumpxml", "md", "a", "--security-info"])
        .ok();
    let edited = dump.stdout.replace(
        "<description>first</description>",
        "<description>edited</description>",
    );
    let path = file(&d, "a.xml", &edited);
    d.virsh(&["snapshot-create", "md", &path, "--redefine", "--current"])
        .ok();
    d.restart();
    let dump = d.virsh(&["snapshot-dumpxml", "md", "a"]).ok();
    assert!(dump.stdout.contains("<description>edited</description>"));

    d.virsh(&["destroy", "md"]).ok();
    d.virsh(&["undefine", "md"]).fails_with(
        "error: Requested operation is not valid: cannot delete inactive domain with 2 snapshots",
    );
    d.virsh(&["undefine", "md", "--snapshots-metadata"]).ok();
    assert!(vda.exists());
    assert!(images::snapshot_list(&vda).contains(" b "));
}

/// Only what does not vary from run to run: `read N/N bytes at offset O`
/// (or a pattern failure) per request, not the rate.
fn reads_only(run: &Run) -> (Vec<String>, i32) {
    let lines = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("read ") || l.starts_with("Pattern"))
        .map(str::to_string)
        .collect();
    (lines, run.code)
}

/// External snapshots onto host block devices (loop devices behind
/// symlinks, as in libvirtd's blk-session.sh) and onto overlays the user
/// made (`--reuse-external`), running and shut off, and libvirt's checks
/// of such paths: libvirtd's block-device session, replayed. A block
/// overlay is formatted through host_device and the disk becomes
/// type='block'; a reused one is attached as it is; deleting commits the
/// guest's writes down into the original images.
#[test]
fn block_device_and_reused_overlays_replay_libvirtds_session() {
    let s = Session::start(&AREA, Daemon::start());
    for (name, pattern) in [("blk-vda.qcow2", 0x5a), ("blk-vdb.qcow2", 0x6b)] {
        let image = s.daemon.image(&format!("snref/{name}"), "qcow2", "64M");
        qemu_io::write(&image, "qcow2", &format!("write -P 0x{pattern:x} 0 1M"));
    }
    let _devices: Vec<LoopDevice> = ["a", "b"]
        .iter()
        .map(|x| {
            LoopDevice::attach(
                &s.path(&format!("loop-{x}.img")),
                64 << 20,
                &s.path(&format!("dev-{x}")),
            )
        })
        .collect();
    let backing = s.path("blk-vdb.qcow2");
    for overlay in ["blk-reuse-vdb.qcow2", "blk-reuse2-vdb.qcow2"] {
        let overlay = s.path(overlay);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            backing.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ])
        .ok();
    }
    fs::write(s.path("blk-empty.qcow2"), "").unwrap();
    fs::write(s.path("blk-regular"), "not a block device\n").unwrap();
    fs::write(s.path("snblk.xml"), s.ours(&AREA.text("snblk.xml"))).unwrap();

    for name in AREA.text("SESSION-blk.txt").lines() {
        let (command, stdout, ..) = AREA.capture(name);
        let mark = s.daemon.log().len();
        if command.starts_with("qemu-io ") {
            let theirs = Run {
                stdout,
                stderr: String::new(),
                code: 0,
            };
            assert_eq!(reads_only(&s.run_tool(name)), reads_only(&theirs), "{name}");
        } else if command.starts_with("qemu-img ") {
            same(&s, &s.run_tool(name), name);
        } else if name.starts_with("blk-dumpxml-") {
            // The embedded <domain> is our model's (see `skipped`).
            let run = s.replay_only(name).ok();
            let head = |text: &str| unclocked(text.split("  <domain").next().unwrap_or_default());
            assert_eq!(head(&s.theirs(&run.stdout)), head(&stdout), "{name}");
        } else {
            same(&s, &s.replay_only(name), name);
        }
        // The overlays are made and switched in as libvirtd does it.
        if ["blk-create-block", "blk-create-reuse", "blk-create-empty"].contains(&name) {
            s.same_qmp(name, mark);
        }
    }
    // The refused creates left nothing; the devices are still devices.
    assert!(!s.path("nosuchdev").exists());
    assert!(!s.path("blk-nosuch.qcow2").exists());
    assert_eq!(
        fs::read(s.path("blk-regular")).unwrap(),
        b"not a block device\n"
    );
}

// ---------------------------------------------------------------------------
// conf-session.sh: schema validation, redefines without a domain, the
// save cookie (SESSION-conf.txt).

const CONF_UUID: &str = "c0f05a00-9c0d-4e1f-8a2b-3c4d5e6f7a8b";

/// conf-sn (one qcow2 disk), running.
fn conf_sn(s: &Session) {
    s.daemon.image("snref/conf-vda.qcow2", "qcow2", "64M");
    s.define("conf-sn");
    s.virsh(&["start", "conf-sn"]).ok();
}

/// A snapshot document without its embedded definitions, whose content
/// is the domain model's (see `skipped`).
fn without_domains(xml: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<String> = None;
    for line in xml.lines() {
        match &skipping {
            Some(end) if line == end => skipping = None,
            Some(_) => {}
            None if line.starts_with("  <domain type=") => skipping = Some("  </domain>".into()),
            None if line.starts_with("  <inactiveDomain ") => {
                skipping = Some("  </inactiveDomain>".into());
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The `<cookie>` element of a snapshot document, as lines.
fn cookie_of(xml: &str) -> String {
    let start = xml
        .find("  <cookie>")
        .unwrap_or_else(|| panic!("no cookie in {xml}"));
    let end = xml[start..].find("</cookie>").expect("cookie end") + start;
    xml[start..end].to_string()
}

fn our_metadata(s: &Session, name: &str) -> String {
    fs::read_to_string(
        s.daemon
            .path(&format!("state/snapshots/{CONF_UUID}/{name}.xml")),
    )
    .expect("metadata file")
}

/// `snapshot-create --validate` checks libvirt's snapshot schema: every
/// document libvirtd judged (libvirt's own disk-invalid.xml with
/// `startupPolicy` among them) gets the same verdict, and nothing is made.
#[test]
fn validate_checks_the_schema_like_libvirtd() {
    let s = Session::start(&AREA, Daemon::start());
    conf_sn(&s);
    let names: Vec<String> = AREA
        .text("SESSION-conf.txt")
        .lines()
        .filter(|n| n.contains("validate") || n.starts_with("conf-schema-"))
        .map(str::to_string)
        .collect();
    assert!(names.len() > 80, "{names:?}");
    for name in &names {
        replay(&s, name);
    }
    let run = s.virsh(&["snapshot-list", "conf-sn", "--name"]).ok();
    assert_eq!(run.stdout.trim(), "");
    assert!(!s.path("conf-foo").exists());
}

/// A snapshot of the running domain records QEMU's CPU in `<cookie>` as
/// libvirtd does; a redefine without `<domain>` keeps the domain it
/// replaces (not its cookie or inactive domain), a redefined cookie comes
/// back in libvirt's shape, a bad one is refused and changes nothing —
/// in snapshot-dumpxml and in the metadata file alike.
#[test]
fn cookie_and_redefines_without_a_domain_match_libvirtd() {
    let s = Session::start(&AREA, Daemon::start());
    conf_sn(&s);
    let dumpxml =
        |name: &str| s.theirs(&s.virsh(&["snapshot-dumpxml", "conf-sn", name]).ok().stdout);
    let capture = |name: &str| s.theirs(&s.ours(&AREA.capture(name).1));
    let file = |name: &str| AREA.text(&format!("libvirtd-files/{name}.xml"));

    replay(&s, "conf-create-s1");
    assert_eq!(
        cookie_of(&dumpxml("s1")),
        cookie_of(&capture("conf-dumpxml-s1"))
    );
    let ours = our_metadata(&s, "s1");
    let theirs = file("conf-s1");
    assert_eq!(cookie_of(&ours), cookie_of(&theirs));
    assert!(ours.ends_with("</cookie>\n  <active>1</active>\n</domainsnapshot>\n"));

    for (redefine, dump, metadata) in [
        (
            "conf-redefine-no-domain",
            "conf-dumpxml-after-no-domain",
            Some("conf-s1-after-no-domain"),
        ),
        (
            "conf-redefine-uuid-only",
            "conf-dumpxml-after-uuid-only",
            None,
        ),
        (
            "conf-redefine-cookie-bad",
            "conf-dumpxml-after-cookie-bad",
            None,
        ),
    ] {
        replay(&s, redefine);
        let ours = dumpxml("s1");
        assert_eq!(
            without_domains(&ours),
            without_domains(&capture(dump)),
            "{dump}"
        );
        assert!(
            ours.contains("  <domain type='qemu'>\n    <name>conf-sn</name>\n"),
            "{ours}"
        );
        if let Some(metadata) = metadata {
            let ours = our_metadata(&s, "s1");
            assert_eq!(
                without_domains(&ours),
                without_domains(&s.theirs(&s.ours(&file(metadata)))),
                "{metadata}"
            );
        }
    }

    // libvirtd's own dump of s1 brings its cookie back.
    replay(&s, "conf-redefine-back");
    assert_eq!(
        cookie_of(&dumpxml("s1")),
        cookie_of(&capture("conf-dumpxml-after-back"))
    );
    assert_eq!(
        cookie_of(&our_metadata(&s, "s1")),
        cookie_of(&file("conf-s1-after-back"))
    );

    // A disk-only snapshot keeps no memory and records no cookie (as
    // libvirtd's dumpxml-s3).
    s.virsh(&[
        "snapshot-create-as",
        "conf-sn",
        "d1",
        "--disk-only",
        "--diskspec",
        &format!("vda,file={}", s.path("conf-vda.d1").display()),
    ])
    .ok();
    assert!(!dumpxml("d1").contains("<cookie>"));
}
