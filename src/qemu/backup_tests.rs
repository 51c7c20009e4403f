//! Backups against the real qemu-system-x86_64 7.2, and the same scenarios
//! replayed from their recordings (fixtures/qmp/backup-*.txt).
//!
//! Each scenario is one function run twice: against QEMU (recorded through
//! a proxy; `VIRTBACKUPD_RECORD_QMP=1 cargo test qemu::backup` rewrites the
//! fixtures) with the images checked by qemu-img, and against the
//! recording, where only what crosses QMP is checked.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::test_harness::*;
use super::*;
use crate::qemu::bitmap::{add_actions, add_bitmaps, find_bitmap, query_bitmaps};
use crate::qemu::cbw::CbwRequest;
use crate::qemu::error::QemuErrorKind;
use crate::qemu::events::JobStatus;
async fn full(ctx: Ctx) {
    ctx.write(0, "write -P 0x5a 0 1M").await;
    ctx.write(1, "write -P 0x33 4M 2M").await;
    let disks = [
        ctx.backup(0, "vda.full.qcow2", DiskFormat::Qcow2, 3, None),
        ctx.backup(1, "vdb.full.raw", DiskFormat::Raw, 4, None),
    ];
    let prepared = prepare(&ctx.mon, &disks, false).await.unwrap();
    assert_eq!(
        prepared[0],
        DiskBackup {
            disk: "vda".into(),
            job_id: "backup-vda-libvirt-2-format".into(),
            source_node: VDA.into(),
            bitmap: None,
            fleece: false,
            target: AttachedImage {
                path: ctx.path("vda.full.qcow2"),
                storage_node: "libvirt-3-storage".into(),
                format_node: "libvirt-3-format".into(),
                created: true,
            },
            cbw: None,
        }
    );
    assert_eq!(prepared[1].job_id, "backup-vdb-libvirt-1-format");
    assert_eq!(prepared[1].target.format_node, "libvirt-4-format");

    let mut watch = start(&ctx.mon, &prepared, vec![], None).await.unwrap();
    let finished = finish(&ctx.mon, &mut watch, &prepared).await.unwrap();
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    assert_eq!(finished.outcome(), JobOutcome::Completed);
    assert_eq!(finished.ends.len(), 2);
    assert_eq!(finished.totals(), (32 << 20, 32 << 20));
    // Dismissed and detached.
    assert!(jobs::query_jobs(&ctx.mon).await.unwrap().is_empty());
    let nodes = ctx.node_names().await;
    assert!(!nodes.iter().any(|n| n.starts_with("libvirt-3-")));
    assert!(!nodes.iter().any(|n| n.starts_with("libvirt-4-")));
    // QEMU keeps the source's qcow2 metadata in memory until it closes it.
    ctx.quit().await;

    if ctx.real {
        let (vda, vdb) = (&ctx.disks[0].source, &ctx.disks[1].source);
        let (tgt_a, tgt_b) = (ctx.path("vda.full.qcow2"), ctx.path("vdb.full.raw"));
        run("qemu-img", &["compare", s(vda), s(&tgt_a)]).await;
        run(
            "qemu-img",
            &[
                "compare",
                "-U",
                "-f",
                "qcow2",
                "-F",
                "raw",
                s(vdb),
                s(&tgt_b),
            ],
        )
        .await;
        let info = image_info(&tgt_a).await;
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 16 << 20);
        assert_eq!(info["cluster-size"], 65536);
        assert_eq!(info.get("backing-filename"), None);
        assert_eq!(std::fs::metadata(&tgt_b).unwrap().len(), 16 << 20);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&tgt_a).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}

async fn image_info(path: &Path) -> Value {
    serde_json::from_str(&run("qemu-img", &["info", "-U", "--output=json", s(path)]).await).unwrap()
}

#[tokio::test]
async fn full_backup_copies_every_disk() {
    record("backup-full.txt", ["16M", "16M"], full).await;
}

#[tokio::test]
async fn full_backup_replays() {
    replay("backup-full.txt", full).await;
}

// ---- Incremental backup with a new checkpoint in the same transaction ----

async fn incremental(ctx: Ctx) {
    let both = |name: &str| {
        vec![
            (VDA.to_owned(), name.to_owned()),
            (VDB.to_owned(), name.to_owned()),
        ]
    };
    add_bitmaps(&ctx.mon, &both("c1"), None).await.unwrap();
    ctx.write(0, "write -P 0x5a 1M 64k").await;
    ctx.write(0, "write -P 0x5b 8M 1").await;
    let disks = [
        ctx.backup(0, "vda.inc.qcow2", DiskFormat::Qcow2, 3, Some("c1")),
        ctx.backup(1, "vdb.inc.qcow2", DiskFormat::Qcow2, 4, Some("c1")),
    ];
    let prepared = prepare(&ctx.mon, &disks, false).await.unwrap();
    assert_eq!(
        prepared[0].bitmap,
        Some(TempBitmap {
            name: "backup-vda".into(),
            checkpoint: "c1".into(),
            granularity: 65536,
        })
    );
    let mut watch = start(&ctx.mon, &prepared, add_actions(&both("c2"), None), None)
        .await
        .unwrap();
    // The new checkpoint began with the backup; the temporary bitmap holds
    // what c1 held, frozen.
    let nodes = query_bitmaps(&ctx.mon).await.unwrap();
    let c2 = find_bitmap(&nodes, VDA, "c2").unwrap();
    assert!(c2.persistent && c2.recording);
    let temp = find_bitmap(&nodes, VDA, "backup-vda").unwrap();
    assert!(!temp.persistent && !temp.recording);
    assert!(find_bitmap(&nodes, VDB, "backup-vdb").is_some());

    let finished = finish(&ctx.mon, &mut watch, &prepared).await.unwrap();
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    assert_eq!(finished.outcome(), JobOutcome::Completed);
    let nodes = query_bitmaps(&ctx.mon).await.unwrap();
    for node in [VDA, VDB] {
        let names: Vec<&str> = nodes
            .iter()
            .find(|n| n.node == node)
            .unwrap()
            .bitmaps
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(names, ["c2", "c1"], "{node}");
    }
    ctx.quit().await;

    if ctx.real {
        let target = ctx.path("vda.inc.qcow2");
        let info = image_info(&target).await;
        assert_eq!(info["backing-filename"], s(&ctx.disks[0].source));
        assert_eq!(info["backing-filename-format"], "qcow2");
        assert_eq!(info["virtual-size"], 16 << 20);
        assert_eq!(
            own_data(&target).await,
            [(1 << 20, 65536), (8 << 20, 65536)]
        );
        assert_eq!(own_data(&ctx.path("vdb.inc.qcow2")).await, []);
        // With its backing file, the target reads as the disk did.
        run(
            "qemu-img",
            &["compare", s(&ctx.disks[0].source), s(&target)],
        )
        .await;
    }
}

/// (offset, length) of the data a qcow2 image holds itself, not through
/// its backing file.
async fn own_data(path: &Path) -> Vec<(u64, u64)> {
    let map: Value =
        serde_json::from_str(&run("qemu-img", &["map", "-U", "--output=json", s(path)]).await)
            .unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn incremental_backup_copies_what_was_written() {
    record("backup-incremental.txt", ["16M", "16M"], incremental).await;
}

#[tokio::test]
async fn incremental_backup_replays() {
    replay("backup-incremental.txt", incremental).await;
}

// ---- Cancel while the job runs ----

async fn cancelled(ctx: Ctx) {
    // Enough data that the copy is still running when the cancel arrives
    // (~100 ms of work where the cancel takes well under one).
    ctx.write(0, "write -P 0x11 0 192M").await;
    let disks = [ctx.backup(0, "vda.cancel.qcow2", DiskFormat::Qcow2, 3, None)];
    let prepared = prepare(&ctx.mon, &disks, false).await.unwrap();
    let mut watch = start(&ctx.mon, &prepared, vec![], None).await.unwrap();
    let running = progress(&ctx.mon, &prepared).await.unwrap();
    let job = running[0].as_ref().expect("the job is listed");
    assert_eq!(job.job_type, "backup");
    assert_eq!(job.status, Some(JobStatus::running));
    assert_eq!(job.total, 256 << 20);
    assert!(job.current < job.total);

    assert!(cancel(&ctx.mon, &mut watch).await.is_empty());
    // A second cancel has nothing left to ask for.
    assert!(cancel(&ctx.mon, &mut watch).await.is_empty());
    let finished = finish(&ctx.mon, &mut watch, &prepared).await.unwrap();
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    assert_eq!(finished.outcome(), JobOutcome::Cancelled);
    assert!(jobs::query_jobs(&ctx.mon).await.unwrap().is_empty());
    assert!(!ctx
        .node_names()
        .await
        .iter()
        .any(|n| n.starts_with("libvirt-3-")));
    // Not completed: libvirt removes what it created.
    assert!(ctx.path("vda.cancel.qcow2").exists());
    assert!(remove_created_files(&prepared).await.is_empty());
    assert!(!ctx.path("vda.cancel.qcow2").exists());
    ctx.quit().await;
}

#[tokio::test]
async fn cancel_stops_a_running_backup() {
    record("backup-cancel.txt", ["256M", "16M"], cancelled).await;
}

#[tokio::test]
async fn cancel_replays() {
    replay("backup-cancel.txt", cancelled).await;
}

// ---- What fails before any job starts, and leaves nothing behind ----

async fn no_target_nodes(ctx: &Ctx) {
    let nodes = ctx.node_names().await;
    let ours = |n: &String| n.starts_with("libvirt-3-") || n.starts_with("libvirt-4-");
    assert!(!nodes.iter().any(ours), "{nodes:?}");
}

async fn failures(ctx: Ctx) {
    // An unknown checkpoint bitmap: refused before any file is made.
    let disks = [
        ctx.backup(0, "a.qcow2", DiskFormat::Qcow2, 3, None),
        ctx.backup(1, "b.qcow2", DiskFormat::Qcow2, 4, Some("nope")),
    ];
    let err = prepare(&ctx.mon, &disks, false).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::BrokenBitmap);
    assert_eq!(
        err.to_string(),
        "missing or broken bitmap 'nope' for disk 'vdb'"
    );
    assert!(!ctx.path("a.qcow2").exists());

    // The second target's directory is missing: the first one is undone.
    let disks = [
        ctx.backup(0, "a.qcow2", DiskFormat::Qcow2, 3, None),
        ctx.backup(1, "missing/b.qcow2", DiskFormat::Qcow2, 4, None),
    ];
    let err = prepare(&ctx.mon, &disks, false).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Io);
    let missing = ctx.path("missing/b.qcow2");
    assert_eq!(
        err.to_string(),
        format!("failed to create image file '{}'", missing.display())
    );
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(!ctx.path("a.qcow2").exists());
    no_target_nodes(&ctx).await;

    // A target that exists is not overwritten, nor removed.
    std::fs::write(ctx.path("there.qcow2"), b"precious").unwrap();
    let disks = [ctx.backup(0, "there.qcow2", DiskFormat::Qcow2, 3, None)];
    let err = prepare(&ctx.mon, &disks, false).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!(
            "store '{}' for backup of 'vda' exists",
            ctx.path("there.qcow2").display()
        )
    );
    assert_eq!(std::fs::read(ctx.path("there.qcow2")).unwrap(), b"precious");

    // Reuse of a file that is not there: QEMU is not asked.
    let disks = [ctx.backup(0, "missing/r.qcow2", DiskFormat::Qcow2, 3, None)];
    let err = prepare(&ctx.mon, &disks, true).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("unable to stat: {}", ctx.path("missing/r.qcow2").display())
    );
    // Reuse of a file QEMU cannot open as qcow2.
    let disks = [ctx.backup(0, "there.qcow2", DiskFormat::Qcow2, 3, None)];
    let err = prepare(&ctx.mon, &disks, true).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::CommandFailed);
    assert!(
        err.to_string()
            .starts_with("unable to execute QEMU command 'blockdev-add': "),
        "{err}"
    );
    no_target_nodes(&ctx).await;
    assert!(ctx.path("there.qcow2").exists());

    // A transaction that fails starts nothing; discard undoes prepare and
    // keeps a reused file.
    if ctx.real {
        let path = ctx.path("reused.qcow2");
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", s(&path), "16M"],
        )
        .await;
    } else {
        std::fs::write(ctx.path("reused.qcow2"), b"").unwrap();
    }
    let disks = [
        ctx.backup(0, "reused.qcow2", DiskFormat::Qcow2, 3, None),
        ctx.backup(1, "made.raw", DiskFormat::Raw, 4, None),
    ];
    let prepared = prepare(&ctx.mon, &disks, true).await.unwrap_err();
    assert!(
        prepared.to_string().contains("unable to stat"),
        "{prepared}"
    );
    std::fs::write(ctx.path("made.raw"), b"").unwrap();
    let prepared = prepare(&ctx.mon, &disks, true).await.unwrap();
    assert!(!prepared[0].target.created && !prepared[1].target.created);
    let twice = vec![(VDA.to_owned(), "c9".to_owned()); 2];
    let err = start(&ctx.mon, &prepared, add_actions(&twice, None), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Bitmap already exists: c9"
    );
    assert!(jobs::query_jobs(&ctx.mon).await.unwrap().is_empty());
    assert!(discard(&ctx.mon, &prepared).await.is_empty());
    no_target_nodes(&ctx).await;
    assert!(ctx.path("reused.qcow2").exists() && ctx.path("made.raw").exists());
    let nodes = query_bitmaps(&ctx.mon).await.unwrap();
    assert!(find_bitmap(&nodes, VDA, "c9").is_none());
    ctx.quit().await;
}

#[tokio::test]
async fn failures_leave_nothing_behind() {
    record("backup-failures.txt", ["16M", "16M"], failures).await;
}

#[tokio::test]
async fn failures_replay() {
    replay("backup-failures.txt", failures).await;
}

// ---- Jobs found again after events were missed ----

async fn resumed(ctx: Ctx) {
    let disks = [ctx.backup(0, "vda.resume.qcow2", DiskFormat::Qcow2, 3, None)];
    let prepared = prepare(&ctx.mon, &disks, false).await.unwrap();
    // The daemon goes away right after starting the job: its watch and
    // the job's events are lost.
    drop(start(&ctx.mon, &prepared, vec![], None).await.unwrap());
    loop {
        let jobs = jobs::query_jobs(&ctx.mon).await.unwrap();
        if jobs[0].status == Some(JobStatus::concluded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = [prepared[0].job_id.clone(), "backup-vdz-gone".to_owned()];
    let mut watch = JobWatch::resume(&ctx.mon, ids, []);
    let end = watch.next().await.unwrap().unwrap();
    assert_eq!(end.id, "backup-vda-libvirt-2-format");
    assert_eq!(end.outcome, JobOutcome::Completed);
    assert_eq!((end.current, end.total), (16 << 20, 16 << 20));
    let gone = watch.next().await.unwrap().unwrap();
    assert_eq!(gone.outcome, JobOutcome::Vanished);
    assert_eq!(watch.next().await.unwrap(), None);
    assert!(cleanup_disk(&ctx.mon, &prepared[0]).await.is_empty());
    // Cleaning up twice reports each step that found nothing.
    let again = cleanup_disk(&ctx.mon, &prepared[0]).await;
    assert_eq!(again.len(), 3, "{again:?}");
    ctx.quit().await;
}

#[tokio::test]
async fn a_restarted_daemon_finds_its_jobs() {
    record("backup-resume.txt", ["16M", "16M"], resumed).await;
}

#[tokio::test]
async fn resume_replays() {
    replay("backup-resume.txt", resumed).await;
}

/// The transaction libvirtd 9.0 sent for an incremental backup of two
/// disks from cp1 that also creates cp2 (the bkref capture
/// backup-begin-incremental-with-checkpoint.qmp), but for the push jobs'
/// `x-perf` (see push_perf).
#[test]
fn the_transaction_is_libvirts() {
    let disk = |name: &str, node: &str, target: u32| DiskBackup {
        disk: name.into(),
        job_id: job_id(name, node),
        source_node: node.into(),
        bitmap: Some(TempBitmap {
            name: temp_bitmap_name(name),
            checkpoint: "cp1".into(),
            granularity: 65536,
        }),
        fleece: false,
        target: AttachedImage {
            path: format!("/tmp/bkref/out/inc2-{name}.qcow2").into(),
            storage_node: format!("libvirt-{target}-storage"),
            format_node: format!("libvirt-{target}-format"),
            created: true,
        },
        cbw: None,
    };
    let disks = [
        disk("vda", "libvirt-3-format", 22),
        disk("vdb", "libvirt-2-format", 23),
    ];
    let checkpoint = vec![
        ("libvirt-3-format".to_owned(), "cp2".to_owned()),
        ("libvirt-2-format".to_owned(), "cp2".to_owned()),
    ];
    let mut all = add_actions(&checkpoint, None);
    all.extend(actions(&disks));
    let expected: Value = serde_json::from_str(r#"[
      {"type":"block-dirty-bitmap-add","data":{"node":"libvirt-3-format","name":"cp2","persistent":true,"disabled":false}},
      {"type":"block-dirty-bitmap-add","data":{"node":"libvirt-2-format","name":"cp2","persistent":true,"disabled":false}},
      {"type":"block-dirty-bitmap-add","data":{"node":"libvirt-3-format","name":"backup-vda","persistent":false,"disabled":true,"granularity":65536}},
      {"type":"block-dirty-bitmap-merge","data":{"node":"libvirt-3-format","target":"backup-vda","bitmaps":[{"node":"libvirt-3-format","name":"cp1"}]}},
      {"type":"blockdev-backup","data":{"device":"libvirt-3-format","job-id":"backup-vda-libvirt-3-format","target":"libvirt-22-format","sync":"incremental","bitmap":"backup-vda","auto-finalize":true,"auto-dismiss":false,"x-perf":{"use-copy-range":true}}},
      {"type":"block-dirty-bitmap-add","data":{"node":"libvirt-2-format","name":"backup-vdb","persistent":false,"disabled":true,"granularity":65536}},
      {"type":"block-dirty-bitmap-merge","data":{"node":"libvirt-2-format","target":"backup-vdb","bitmaps":[{"node":"libvirt-2-format","name":"cp1"}]}},
      {"type":"blockdev-backup","data":{"device":"libvirt-2-format","job-id":"backup-vdb-libvirt-2-format","target":"libvirt-23-format","sync":"incremental","bitmap":"backup-vdb","auto-finalize":true,"auto-dismiss":false,"x-perf":{"use-copy-range":true}}}]"#).unwrap();
    assert_eq!(serde_json::to_value(&all).unwrap(), expected);

    let full = DiskBackup {
        bitmap: None,
        ..disks[0].clone()
    };
    assert_eq!(
        serde_json::to_value(actions(&[full])).unwrap()[0],
        json!({"type":"blockdev-backup","data":{"device":"libvirt-3-format",
            "job-id":"backup-vda-libvirt-3-format","target":"libvirt-22-format",
            "sync":"full","auto-finalize":true,"auto-dismiss":false,
            "x-perf":{"use-copy-range":true}}})
    );

    // Pull: the exported bitmap is made the same way, but the job only
    // fleeces (sync none, no bitmap of its own).
    let pull = DiskBackup {
        fleece: true,
        ..disks[0].clone()
    };
    // (fixtures/reference/pull/backup-begin-incremental.qmp: the bitmap
    // lives on the scratch node, merged from the source's checkpoint.)
    let pulled = serde_json::to_value(actions(&[pull])).unwrap();
    assert_eq!(
        pulled[0],
        json!({"type":"block-dirty-bitmap-add","data":{"node":"libvirt-22-format",
            "name":"backup-vda","persistent":false,"disabled":true,"granularity":65536}})
    );
    assert_eq!(
        pulled[1],
        json!({"type":"block-dirty-bitmap-merge","data":{"node":"libvirt-22-format",
            "target":"backup-vda","bitmaps":[{"node":"libvirt-3-format","name":"cp1"}]}})
    );
    assert_eq!(
        pulled[2],
        json!({"type":"blockdev-backup","data":{"device":"libvirt-3-format",
            "job-id":"backup-vda-libvirt-3-format","target":"libvirt-22-format",
            "sync":"none","auto-finalize":true,"auto-dismiss":false}})
    );
}

/// With a filter of the backup's own (`--backup-cbw-timeout`), the job
/// reads the snapshot-access node, and an incremental one's bitmap lives
/// there (blockdev-backup looks it up on the node it reads), merged from
/// the disk's checkpoint bitmap.
#[test]
fn a_job_through_its_own_filter_reads_the_snapshot_access_node() {
    let source = crate::qemu::command::DiskSpec {
        target: "vda".into(),
        device_index: 0,
        node_index: 3,
        source: "/i/vda.qcow2".into(),
        source_kind: crate::qemu::command::SourceKind::File,
        format: DiskFormat::Qcow2,
        readonly: false,
        boot_index: None,
        has_backing: false,
        backing: Vec::new(),
    };
    let request = BackupDisk {
        source,
        store: "/b/vda.qcow2".into(),
        store_format: DiskFormat::Qcow2,
        store_block: false,
        store_node_index: 22,
        incremental: Some("cp1".into()),
        fleece: false,
        bitmap: None,
        cbw: Some(CbwRequest {
            scratch: "/i/vda.qcow2.cp2.cbw".into(),
            node_index: 23,
            timeout: 5,
            latency_ns: None,
        }),
    };
    let mut disk = disk_backup(
        &request,
        Some(TempBitmap {
            name: temp_bitmap_name("vda"),
            checkpoint: "cp1".into(),
            granularity: 65536,
        }),
        AttachedImage {
            path: "/b/vda.qcow2".into(),
            storage_node: "libvirt-22-storage".into(),
            format_node: "libvirt-22-format".into(),
            created: true,
        },
    );
    let filter = disk.cbw.clone().unwrap();
    assert_eq!(
        (filter.device.as_str(), filter.filter_node.as_str()),
        ("virtio-disk0", "libvirt-23-cbw")
    );
    assert_eq!(filter.access_node, "libvirt-23-access");
    assert_eq!(filter.scratch.format_node, "libvirt-23-format");
    assert_eq!(
        serde_json::to_value(actions(&[disk.clone()])).unwrap(),
        json!([
          {"type":"block-dirty-bitmap-add","data":{"node":"libvirt-23-access","name":"backup-vda",
            "persistent":false,"disabled":true,"granularity":65536}},
          {"type":"block-dirty-bitmap-merge","data":{"node":"libvirt-23-access",
            "target":"backup-vda","bitmaps":[{"node":"libvirt-3-format","name":"cp1"}]}},
          {"type":"blockdev-backup","data":{"device":"libvirt-23-access",
            "job-id":"backup-vda-libvirt-3-format","target":"libvirt-22-format",
            "sync":"incremental","bitmap":"backup-vda","auto-finalize":true,
            "auto-dismiss":false,"x-perf":{"use-copy-range":true,"max-workers":8}}}])
    );
    // A record written before the option existed reads as without it.
    disk.cbw = None;
    let mut old = serde_json::to_value(&disk).unwrap();
    old.as_object_mut().unwrap().remove("cbw");
    assert_eq!(serde_json::from_value::<DiskBackup>(old).unwrap(), disk);
}

// ---- Copy offloading (push_perf) keeps every byte ----

/// Push jobs copy with `copy_file_range` (push_perf). The targets must
/// still read exactly as the disks did when the jobs started: data that
/// lives only in a backing file, a top layer over it, clusters zeroed over
/// backing data, holes, targets reused with other data in them (so a
/// skipped hole would show), one qcow2 and one raw, and guest writes
/// while the jobs run, which the copy-before-write filter copies first.
/// Real QEMU only: there is nothing new on the wire to replay.
#[tokio::test]
async fn copy_offloading_copies_every_byte_as_it_was_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let img = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("qemu-img", &args).await;
    };
    let io = |format: &str, file: &Path, cmds: &[&str]| {
        let mut args = vec!["-f".to_owned(), format.to_owned()];
        for cmd in cmds {
            args.extend(["-c".to_owned(), (*cmd).to_owned()]);
        }
        args.push(s(file).to_owned());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("qemu-io", &args).await;
        }
    };
    let create = |format: &str, file: &Path, size: &str| {
        vec![
            "create".into(),
            "-q".into(),
            "-f".into(),
            format.into(),
            s(file).into(),
            size.into(),
        ]
    };

    // vda: base.qcow2 <- vda.qcow2; vdb: a qcow2 with holes.
    let base = path("base.qcow2");
    img(create("qcow2", &base, "32M")).await;
    io(
        "qcow2",
        &base,
        &["write -P 0x11 0 4M", "write -P 0x12 16M 1M"],
    )
    .await;
    let mut disks = disk_specs(dir.path());
    img(vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "qcow2".into(),
        "-b".into(),
        s(&base).into(),
        s(&disks[0].source).into(),
    ])
    .await;
    io(
        "qcow2",
        &disks[0].source,
        &[
            "write -P 0x22 2M 1M",
            "write -z 3M 1M",
            "write -P 0x23 24M 64k",
        ],
    )
    .await;
    disks[0].has_backing = true;
    img(create("qcow2", &disks[1].source, "32M")).await;
    io(
        "qcow2",
        &disks[1].source,
        &["write -P 0x33 1M 1M", "write -P 0x34 20M 64k"],
    )
    .await;
    // What the targets must read, written out plainly.
    let (want_a, want_b) = (path("want-a.raw"), path("want-b.raw"));
    img(create("raw", &want_a, "32M")).await;
    io(
        "raw",
        &want_a,
        &[
            "write -P 0x11 0 2M",
            "write -P 0x22 2M 1M",
            "write -P 0x12 16M 1M",
            "write -P 0x23 24M 64k",
        ],
    )
    .await;
    img(create("raw", &want_b, "32M")).await;
    io(
        "raw",
        &want_b,
        &["write -P 0x33 1M 1M", "write -P 0x34 20M 64k"],
    )
    .await;
    // Reused targets that do not read as zeros anywhere.
    let (tgt_a, tgt_b) = (path("tgt-a.qcow2"), path("tgt-b.raw"));
    img(create("qcow2", &tgt_a, "32M")).await;
    io("qcow2", &tgt_a, &["write -P 0xee 0 32M"]).await;
    img(create("raw", &tgt_b, "32M")).await;
    io("raw", &tgt_b, &["write -P 0xff 0 32M"]).await;

    let (ctx, _real) = real_on(dir.path(), disks).await;
    let mut a = ctx.backup(0, "tgt-a.qcow2", DiskFormat::Qcow2, 3, None);
    a.store = tgt_a.clone();
    let mut b = ctx.backup(1, "tgt-b.raw", DiskFormat::Raw, 4, None);
    b.store = tgt_b.clone();
    let prepared = prepare(&ctx.mon, &[a, b], true).await.unwrap();
    // Started as start() does, but held back to 1 MiB/s from the first
    // moment, so that the guest's writes come before the copy.
    let mut watch = JobWatch::new(&ctx.mon, prepared.iter().map(|d| d.job_id.clone()));
    let mut held = actions(&prepared);
    for action in &mut held {
        if let TransactionAction::blockdev_backup(backup) = action {
            assert!(backup.data.base.x_perf.is_some());
            backup.data.base.speed = Some(1 << 20);
        }
    }
    ctx.mon
        .execute(qapi::qmp::transaction {
            actions: held,
            properties: None,
        })
        .await
        .unwrap();
    let speed = |device: &str, speed: u64| {
        ctx.mon.execute_value(
            "block-job-set-speed",
            json!({"device": device, "speed": speed}),
        )
    };
    // The guest overwrites most of each disk while the jobs are held
    // back (and copies it first: what is left to the jobs is the tail).
    ctx.write(0, "write -P 0x77 0 20M").await;
    ctx.write(1, "write -P 0x78 512K 20M").await;
    for disk in &prepared {
        // A job may have concluded meanwhile; the result says.
        let _ = speed(&disk.job_id, 0).await;
    }
    let finished = finish(&ctx.mon, &mut watch, &prepared).await.unwrap();
    assert!(finished.problems.is_empty(), "{:?}", finished.problems);
    assert_eq!(finished.outcome(), JobOutcome::Completed);
    ctx.quit().await;

    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", s(&want_a), s(&tgt_a)],
    )
    .await;
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", s(&want_b), s(&tgt_b)],
    )
    .await;
}
