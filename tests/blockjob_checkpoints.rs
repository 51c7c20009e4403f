#![allow(clippy::tests_outside_test_module)]
//! Block jobs on a domain with checkpoints, as libvirt 9.0 runs them: a
//! copy carries the checkpoint bitmaps to its destination, an active
//! commit merges them into the base, a pull keeps them on the top; guest
//! writes before, during and after each job land in the bitmaps, so an
//! incremental backup since a checkpoint afterwards holds exactly the
//! writes made after it. The jobs that would lose a bitmap are refused
//! with libvirt's "cannot perform block operations while checkpoint
//! exists".

mod common;

use common::blockjob::{source_of, wait_no_job, wait_ready};

use common::images::{self, qemu_img};
use common::qemu_io;
use common::{wait_until, Daemon, PATIENCE};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn running(d: &Daemon, name: &str) -> PathBuf {
    let vda = d.image(&format!("{name}.qcow2"), "qcow2", "64M");
    d.define(name, &d.domain_xml(name, &[("vda", &vda, "qcow2")]));
    d.virsh(&["start", name]).ok();
    vda
}

/// The qcow2 format node QEMU runs vda on now.
fn top_node(d: &Daemon, dom: &str) -> String {
    let path = source_of(d, dom, false);
    d.nodes(dom)
        .into_iter()
        .find(|(name, n)| {
            name.ends_with("-format") && n["file"].as_str() == Some(&path) && n["drv"] == "qcow2"
        })
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("no format node for {path}"))
}

fn checkpoints(d: &Daemon, dom: &str) -> String {
    d.virsh(&["checkpoint-list", dom, "--name", "--topological"])
        .ok()
        .stdout
}

/// A guest write of 1 MiB of `pattern` at `at` MiB.
fn write(d: &Daemon, dom: &str, pattern: u8, at: u64) {
    d.guest_write(dom, 0, &format!("write -P 0x{pattern:02x} {at}M 1M"));
}

/// A push backup of vda since checkpoint `since` into `target`; returns
/// the MiB offsets it holds data at (its own clusters, not its backing
/// file's) after checking each holds `writes`' pattern there.
fn incremental(d: &Daemon, dom: &str, since: &str, target: &Path, writes: &[(u8, u64)]) {
    let xml = d.path(&format!("{dom}-{since}-backup.xml"));
    std::fs::write(
        &xml,
        format!(
            "<domainbackup><incremental>{since}</incremental><disks><disk name='vda' type='file'><target file='{}'/><driver type='qcow2'/></disk></disks></domainbackup>",
            target.display()
        ),
    )
    .unwrap();
    d.virsh(&["backup-begin", dom, xml.to_str().unwrap()]).ok();
    d.wait_idle(dom);
    let own: Vec<(u64, u64)> = images::map(target)
        .iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    let mut want: Vec<u64> = writes.iter().map(|w| w.1).collect();
    want.sort_unstable();
    let mut got = Vec::new();
    for (start, length) in own {
        assert_eq!(
            (start % MIB, length % MIB),
            (0, 0),
            "{target:?}: {start} {length}"
        );
        got.extend((start / MIB..(start + length) / MIB).collect::<Vec<_>>());
    }
    assert_eq!(got, want, "the backup since {since} holds other clusters");
    for (pattern, at) in writes {
        let run = qemu_io::read_only(target, &format!("read -P 0x{pattern:02x} {at}M 1M"));
        assert!(
            run.code == 0 && !run.stdout.contains("failed"),
            "{target:?} at {at}M: {}",
            run.stdout
        );
    }
}

/// The checkpoint bitmaps QEMU has on `node`: (name, dirty MiB).
fn bitmaps_mib(d: &Daemon, dom: &str, node: &str) -> Vec<(String, u64)> {
    d.bitmaps(dom, node)
        .into_iter()
        .map(|(name, count)| (name, count / MIB))
        .collect()
}

fn pair(name: &str, mib: u64) -> (String, u64) {
    (name.to_string(), mib)
}

/// A full copy with pivot: the destination gets the checkpoints' bitmaps
/// (one made while the copy mirrors too) with every write since each (before the copy, while it copied,
/// while it mirrored, after the pivot), in the running QEMU and in the
/// image once the domain stopped; incremental backups since each hold
/// exactly those writes.
#[test]
fn full_copy_carries_the_checkpoint_bitmaps() {
    let d = Daemon::start();
    let vda = running(&d, "fc");
    write(&d, "fc", 0x11, 0);
    d.virsh(&["checkpoint-create-as", "fc", "c1"]).ok();
    write(&d, "fc", 0x22, 4);
    d.virsh(&["checkpoint-create-as", "fc", "c2"]).ok();
    write(&d, "fc", 0x33, 8);

    let dest = d.path("fc-copy.qcow2");
    d.virsh(&[
        "blockcopy",
        "fc",
        "vda",
        dest.to_str().unwrap(),
        "--transient-job",
        "--bandwidth",
        "1",
    ])
    .ok();
    write(&d, "fc", 0x44, 12);
    d.virsh(&["blockjob", "fc", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "fc");
    // A checkpoint made while the copy mirrors comes along too.
    d.virsh(&["checkpoint-create-as", "fc", "c3"]).ok();
    let listed = checkpoints(&d, "fc");
    write(&d, "fc", 0x55, 16);
    d.virsh(&["blockjob", "fc", "vda", "--pivot"]).ok();
    wait_no_job(&d, "fc");
    write(&d, "fc", 0x66, 20);

    assert_eq!(source_of(&d, "fc", false), dest.display().to_string());
    assert_eq!(checkpoints(&d, "fc"), listed);
    let node = top_node(&d, "fc");
    assert_eq!(
        bitmaps_mib(&d, "fc", &node),
        [pair("c1", 5), pair("c2", 4), pair("c3", 2)],
        "{}",
        d.nodes_text("fc")
    );
    incremental(
        &d,
        "fc",
        "c1",
        &d.path("fc-inc1.qcow2"),
        &[(0x22, 4), (0x33, 8), (0x44, 12), (0x55, 16), (0x66, 20)],
    );
    incremental(
        &d,
        "fc",
        "c2",
        &d.path("fc-inc2.qcow2"),
        &[(0x33, 8), (0x44, 12), (0x55, 16), (0x66, 20)],
    );

    d.virsh(&["destroy", "fc"]).ok();
    assert_eq!(images::bitmap_names(&dest), ["c1", "c2", "c3"]);
    for (_, flags, _) in images::bitmaps(&dest) {
        assert_eq!(flags, ["auto"]);
    }
    qemu_io::reads(&dest, 0x11, "0", "1M");
    qemu_io::reads(&dest, 0x66, "20M", "1M");
    // The next start checks the checkpoints against the image it runs on.
    d.virsh(&["start", "fc"]).ok();
    d.virsh(&["checkpoint-create-as", "fc", "c4"]).ok();
    // The original image keeps what it had at the pivot.
    assert!(qemu_io::holds(&vda, 0x55, "16M", "1M"));
}

/// On a chain made in this QEMU run (a disk-only snapshot without
/// metadata, then checkpoints): a shallow copy carries the top's bitmaps
/// onto a destination that sits on the old base; an active commit of it
/// with pivot merges them into the base; and after
/// each, incremental backups since each checkpoint hold exactly the
/// writes made after it.
#[test]
fn shallow_copy_then_active_commit_keep_the_checkpoints() {
    let d = Daemon::start();
    let vda = running(&d, "ch");
    write(&d, "ch", 0x11, 0);
    d.virsh(&[
        "snapshot-create-as",
        "ch",
        "s1",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    d.virsh(&["checkpoint-create-as", "ch", "c1"]).ok();
    write(&d, "ch", 0x22, 4);
    let mut since_c1 = vec![(0x22, 4)];

    // Shallow copy: only the top is copied, the bitmaps come along.
    let dest = d.path("ch-shallow.qcow2");
    d.virsh(&[
        "blockcopy",
        "ch",
        "vda",
        dest.to_str().unwrap(),
        "--transient-job",
        "--shallow",
        "--bandwidth",
        "1",
    ])
    .ok();
    write(&d, "ch", 0x33, 8);
    d.virsh(&["blockjob", "ch", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "ch");
    write(&d, "ch", 0x44, 12);
    d.virsh(&["blockjob", "ch", "vda", "--pivot"]).ok();
    wait_no_job(&d, "ch");
    write(&d, "ch", 0x55, 16);
    since_c1.extend([(0x33, 8), (0x44, 12), (0x55, 16)]);
    assert_eq!(source_of(&d, "ch", false), dest.display().to_string());
    assert_eq!(checkpoints(&d, "ch").trim(), "c1");
    let copy_node = top_node(&d, "ch");
    assert_eq!(bitmaps_mib(&d, "ch", &copy_node), [pair("c1", 4)]);
    let base_node = "libvirt-1-format";
    assert_eq!(d.bitmap_names("ch", base_node), Vec::<String>::new());
    incremental(&d, "ch", "c1", &d.path("ch-inc1.qcow2"), &since_c1);

    // Active commit of the copy into the base, with pivot.
    d.virsh(&["checkpoint-create-as", "ch", "c2"]).ok();
    write(&d, "ch", 0x66, 20);
    d.virsh(&["blockcommit", "ch", "vda", "--active", "--bandwidth", "1"])
        .ok();
    write(&d, "ch", 0x77, 24);
    d.virsh(&["blockjob", "ch", "vda", "--bandwidth", "0"]).ok();
    wait_ready(&d, "ch");
    write(&d, "ch", 0x88, 28);
    d.virsh(&["blockjob", "ch", "vda", "--pivot"]).ok();
    wait_no_job(&d, "ch");
    write(&d, "ch", 0x99, 32);
    let since_c2 = vec![(0x66, 20), (0x77, 24), (0x88, 28), (0x99, 32)];
    since_c1.extend(since_c2.iter().copied());
    assert_eq!(source_of(&d, "ch", false), vda.display().to_string());
    assert_eq!(top_node(&d, "ch"), base_node);
    assert_eq!(checkpoints(&d, "ch"), "c1\nc2\n");
    assert_eq!(
        bitmaps_mib(&d, "ch", base_node),
        [pair("c1", 8), pair("c2", 4)],
        "{}",
        d.nodes_text("ch")
    );
    incremental(&d, "ch", "c1", &d.path("ch-inc2.qcow2"), &since_c1);
    incremental(&d, "ch", "c2", &d.path("ch-inc3.qcow2"), &since_c2);
    d.virsh(&["destroy", "ch"]).ok();
    assert_eq!(images::bitmap_names(&vda), ["c1", "c2"]);
    qemu_io::reads(&vda, 0x99, "32M", "1M");
    qemu_io::reads(&vda, 0x11, "0", "1M");
}

/// A pull into a top that holds the checkpoint: the bitmaps stay, and
/// the pulled data, which the guest did not write, is not in them.
#[test]
fn pull_keeps_the_checkpoint_bitmaps() {
    let d = Daemon::start();
    running(&d, "pl");
    write(&d, "pl", 0x11, 0);
    let top = {
        d.virsh(&[
            "snapshot-create-as",
            "pl",
            "s1",
            "--disk-only",
            "--no-metadata",
            "--atomic",
        ])
        .ok();
        d.path("pl.s1")
    };
    d.virsh(&["checkpoint-create-as", "pl", "c1"]).ok();
    write(&d, "pl", 0x22, 4);
    d.virsh(&["blockpull", "pl", "vda", "--wait"]).ok();
    write(&d, "pl", 0x33, 8);
    assert_eq!(source_of(&d, "pl", false), top.display().to_string());
    let node = top_node(&d, "pl");
    assert_eq!(bitmaps_mib(&d, "pl", &node), [pair("c1", 2)]);
    incremental(
        &d,
        "pl",
        "c1",
        &d.path("pl-inc.qcow2"),
        &[(0x22, 4), (0x33, 8)],
    );
    d.virsh(&["destroy", "pl"]).ok();
    assert_eq!(images::bitmap_names(&top), ["c1"]);
    let chain = qemu_img(&["info", "-U", "--output=json", top.to_str().unwrap()]).ok();
    assert!(
        !chain.stdout.contains("backing-filename"),
        "{}",
        chain.stdout
    );
    qemu_io::reads(&top, 0x11, "0", "1M");
}

/// The job that would lose a checkpoint's bitmap is refused, as libvirt
/// refuses block jobs it cannot keep checkpoints through: a commit below
/// the active layer of layers that hold the checkpoint's bitmaps (their
/// base is read-only). A pull of those layers runs: every layer of the
/// chain has a node of ours, so their bitmaps are merged into the top
/// before the nodes go. Without checkpoints the commit runs.
#[test]
fn jobs_that_would_lose_a_bitmap_are_refused() {
    let d = Daemon::start();
    let [_, mid, top] = three_layers(&d, "lb");
    // The middle layer carries the checkpoint's bitmap, as an image
    // libvirtd snapshotted after a checkpoint does.
    qemu_img(&["bitmap", "--add", mid.to_str().unwrap(), "c1"]).ok();
    d.define("lb", &d.domain_xml("lb", &[("vda", &top, "qcow2")]));
    d.virsh(&["start", "lb"]).ok();
    d.virsh(&["checkpoint-create-as", "lb", "c1"]).ok();
    let refused =
        "error: Operation not supported: cannot perform block operations while checkpoint exists";
    d.virsh(&[
        "blockcommit",
        "lb",
        "vda",
        "--top",
        mid.to_str().unwrap(),
        "--wait",
    ])
    .fails_with(refused);
    // Nothing changed.
    assert_eq!(source_of(&d, "lb", false), top.display().to_string());
    assert_eq!(images::bitmap_names(&mid), ["c1"]);
    d.virsh(&["checkpoint-delete", "lb", "c1"]).ok();
    d.virsh(&[
        "blockcommit",
        "lb",
        "vda",
        "--top",
        mid.to_str().unwrap(),
        "--wait",
    ])
    .ok();
    // A pull under a checkpoint carries the pulled layers' bitmaps.
    let [_, mid, top] = three_layers(&d, "lp");
    qemu_img(&["bitmap", "--add", mid.to_str().unwrap(), "c1"]).ok();
    d.define("lp", &d.domain_xml("lp", &[("vda", &top, "qcow2")]));
    d.virsh(&["start", "lp"]).ok();
    d.virsh(&["checkpoint-create-as", "lp", "c1"]).ok();
    d.virsh(&["blockpull", "lp", "vda", "--wait"]).ok();
    d.virsh(&["destroy", "lp"]).ok();
    assert_eq!(images::bitmap_names(&top), ["c1"]);
}

/// `DOM-base.qcow2` under `DOM-mid.qcow2` under `DOM-top.qcow2`, made with
/// `qemu-img create -b` (QEMU opens the lower two from the headers).
fn three_layers(d: &Daemon, dom: &str) -> [PathBuf; 3] {
    let base = d.image(&format!("{dom}-base.qcow2"), "qcow2", "64M");
    let mid = d.path(&format!("{dom}-mid.qcow2"));
    let top = d.path(&format!("{dom}-top.qcow2"));
    for (image, backing) in [(&mid, &base), (&top, &mid)] {
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            backing.to_str().unwrap(),
            image.to_str().unwrap(),
        ])
        .ok();
    }
    [base, mid, top]
}

/// A disk defined on an overlay made with `qemu-img create -b`, its
/// checkpoint on the top only: a commit of the lower layers and a pull
/// run (libvirt merges nothing either), the top keeps the bitmap, and
/// incremental backups since the checkpoint hold exactly the guest
/// writes after it.
#[test]
fn lower_commit_and_pull_under_a_checkpoint() {
    let d = Daemon::start();
    let [base, mid, top] = three_layers(&d, "lw");
    qemu_io::write(&base, "qcow2", "write -P 0x11 0 1M");
    qemu_io::write(&mid, "qcow2", "write -P 0x22 2M 1M");
    d.define("lw", &d.domain_xml("lw", &[("vda", &top, "qcow2")]));
    d.virsh(&["start", "lw"]).ok();
    d.virsh(&["checkpoint-create-as", "lw", "c1"]).ok();
    write(&d, "lw", 0x33, 4);
    d.virsh(&[
        "blockcommit",
        "lw",
        "vda",
        "--top",
        mid.to_str().unwrap(),
        "--wait",
    ])
    .ok();
    write(&d, "lw", 0x44, 8);
    let node = top_node(&d, "lw");
    assert_eq!(bitmaps_mib(&d, "lw", &node), [pair("c1", 2)]);
    incremental(
        &d,
        "lw",
        "c1",
        &d.path("lw-inc1.qcow2"),
        &[(0x33, 4), (0x44, 8)],
    );
    d.virsh(&["blockpull", "lw", "vda", "--wait"]).ok();
    write(&d, "lw", 0x55, 12);
    assert_eq!(bitmaps_mib(&d, "lw", &node), [pair("c1", 3)]);
    incremental(
        &d,
        "lw",
        "c1",
        &d.path("lw-inc2.qcow2"),
        &[(0x33, 4), (0x44, 8), (0x55, 12)],
    );
    assert_eq!(checkpoints(&d, "lw").trim(), "c1");
    d.virsh(&["destroy", "lw"]).ok();
    assert_eq!(images::bitmap_names(&top), ["c1"]);
    qemu_io::reads(&top, 0x11, "0", "1M");
    qemu_io::reads(&top, 0x22, "2M", "1M");
}

/// An active commit pivoted while no daemon listens (QEMU told directly,
/// as the daemon tells it: the write bitmap on the base, `job-complete`),
/// with a guest write after the pivot: the daemon started again applies
/// the job's end, merges the bitmaps, and the backup since the checkpoint
/// has every write. An active commit ended without pivot
/// (`--keep-overlay`) leaves the bitmaps on the top and none on the base.
#[test]
fn an_end_seen_after_a_restart_and_an_end_without_pivot() {
    let mut d = Daemon::start();
    let vda = running(&d, "rr");
    d.virsh(&[
        "snapshot-create-as",
        "rr",
        "s1",
        "--disk-only",
        "--no-metadata",
        "--atomic",
    ])
    .ok();
    d.virsh(&["checkpoint-create-as", "rr", "c1"]).ok();
    write(&d, "rr", 0x22, 4);
    d.virsh(&[
        "blockcommit",
        "rr",
        "vda",
        "--active",
        "--keep-overlay",
        "--wait",
    ])
    .ok();
    let top = top_node(&d, "rr");
    assert_eq!(top, "libvirt-2-format");
    assert_eq!(bitmaps_mib(&d, "rr", &top), [pair("c1", 1)]);
    assert!(d.bitmap_names("rr", "libvirt-1-format").is_empty());

    write(&d, "rr", 0x33, 8);
    d.virsh(&["blockcommit", "rr", "vda", "--active"]).ok();
    wait_ready(&d, "rr");
    let monitor = d.monitor_socket("rr");
    d.kill();
    {
        let mut qmp = common::monitor::Qmp::connect(&monitor);
        qmp.execute(
            r#"{"execute":"block-dirty-bitmap-add","arguments":{"node":"libvirt-1-format","name":"libvirt-tmp-activewrite","persistent":false,"disabled":false}}"#,
        );
        qmp.execute(
            r#"{"execute":"job-complete","arguments":{"id":"commit-vda-libvirt-2-format"}}"#,
        );
        wait_until(PATIENCE, || {
            let jobs = qmp.execute(r#"{"execute":"query-jobs"}"#);
            jobs[0]["status"] == "concluded"
        })
        .expect("the commit never concluded");
        qmp.execute(
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x44 12M 1M\""}}"#,
        );
    }
    d.restart();
    wait_no_job(&d, "rr");
    assert_eq!(source_of(&d, "rr", false), vda.display().to_string());
    assert_eq!(
        bitmaps_mib(&d, "rr", "libvirt-1-format"),
        [pair("c1", 3)],
        "{}",
        d.nodes_text("rr")
    );
    incremental(
        &d,
        "rr",
        "c1",
        &d.path("rr-inc.qcow2"),
        &[(0x22, 4), (0x33, 8), (0x44, 12)],
    );
}

/// A full copy of a chain whose lower layer (opened from a header)
/// carries the checkpoint's bitmap too: the destination's bitmap is the
/// union of every layer's, as libvirt merges them.
#[test]
fn full_copy_merges_every_layers_bitmap() {
    let d = Daemon::start();
    let [_, mid, top] = three_layers(&d, "fm");
    qemu_img(&["bitmap", "--add", mid.to_str().unwrap(), "c1"]).ok();
    // Written with the bitmap recording, as a guest wrote it then.
    qemu_io::write(&mid, "qcow2", "write -P 0x22 2M 1M");
    d.define("fm", &d.domain_xml("fm", &[("vda", &top, "qcow2")]));
    d.virsh(&["start", "fm"]).ok();
    d.virsh(&["checkpoint-create-as", "fm", "c1"]).ok();
    write(&d, "fm", 0x33, 4);
    let dest = d.path("fm-copy.qcow2");
    d.virsh(&[
        "blockcopy",
        "fm",
        "vda",
        dest.to_str().unwrap(),
        "--transient-job",
        "--pivot",
        "--wait",
    ])
    .ok();
    write(&d, "fm", 0x44, 8);
    assert_eq!(source_of(&d, "fm", false), dest.display().to_string());
    let node = top_node(&d, "fm");
    assert_eq!(bitmaps_mib(&d, "fm", &node), [pair("c1", 3)]);
    incremental(
        &d,
        "fm",
        "c1",
        &d.path("fm-inc.qcow2"),
        &[(0x22, 2), (0x33, 4), (0x44, 8)],
    );
    d.virsh(&["destroy", "fm"]).ok();
    assert_eq!(images::bitmap_names(&dest), ["c1"]);
}
