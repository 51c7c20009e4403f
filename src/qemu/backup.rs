//! Backups: QEMU copies disks into target images (push), or keeps a
//! frozen view of each in a scratch image and exports it over NBD (pull).
//!
//! The driver owns the job (its XML, domjobinfo, events); this module only
//! does what QEMU has to do, in the order and shape libvirt 9.0 does it,
//! and hands back plain data ([`DiskBackup`]) that the driver can store
//! and give back after a daemon restart.
//!
//! # What goes over QMP, and where libvirt 9.0 does the same
//!
//! 1. [`prepare`] (qemuBackupBegin up to the transaction):
//!    `query-named-block-nodes {flat: true}` once, for the source's size,
//!    cluster size and bitmaps (qemuBlockGetNamedNodeData). For an
//!    incremental disk the checkpoint's bitmap must pass
//!    [`bitmap::check_bitmap`] — all disks are checked before any target
//!    is touched (qemuBackupDiskPrepareData before
//!    qemuBackupDiskPrepareStorage). Then per disk, in order, the target is
//!    created or attached ([`blockdev::create_image`] /
//!    [`blockdev::attach_image`]) as node `libvirt-M-*`. The qcow2 target
//!    of an incremental backup gets the source image as backing file and
//!    the running disk as backing node; a full backup's has none
//!    (qemuBackupDiskPrepareDataOne). If one disk fails, the targets of
//!    the disks before it are detached and their files removed.
//! 2. [`start`] (qemuBackupDiskPrepareDataOnePush, qemuMonitorTransaction):
//!    one `transaction`, all or nothing: the caller's actions first (the
//!    new checkpoint's `block-dirty-bitmap-add`s, as qemuCheckpointCreateCommon
//!    adds them before the disks), then per disk: for an incremental one
//!    `block-dirty-bitmap-add {node, name: "backup-<disk>", persistent:
//!    false, disabled: true, granularity}` and `block-dirty-bitmap-merge`
//!    of the checkpoint's bitmap into it (qemuBlockGetBitmapMergeActions;
//!    every checkpoint bitmap records, so the named checkpoint's alone
//!    covers everything since it); then `blockdev-backup {device, job-id:
//!    "backup-<disk>-<source node>", target, sync: full | incremental,
//!    bitmap, auto-finalize: true, auto-dismiss: false}`; a push job adds
//!    `x-perf: {use-copy-range: true}`, where libvirt leaves QEMU's
//!    defaults ([`push_perf`] says why).
//! 3. [`progress`] is `query-jobs`; libvirt's domjobinfo adds up
//!    `current-progress` / `total-progress` of the running jobs
//!    (qemuBackupGetJobInfoStats). The [`JobWatch`] that [`start`] returns
//!    reports each job's end (see [`jobs`]).
//! 4. [`cancel`] sends `block-job-cancel {device, force: true}` to every
//!    job still running (qemuBackupJobCancelBlockjobs).
//! 5. [`cleanup_disk`], once a disk's job has concluded
//!    (qemuBlockJobEventProcessConcluded, then
//!    qemuBlockJobProcessEventConcludedBackup): `job-dismiss`,
//!    `blockdev-del` of the target's format node and then its storage node,
//!    `block-dirty-bitmap-remove` of `backup-<disk>`. Best effort: every
//!    step is tried, every failure reported.
//! 6. [`remove_created_files`]: what qemuBackupJobTerminate does for a push
//!    backup that did not complete (failed or cancelled) without
//!    REUSE_EXTERNAL; a completed backup keeps its files.
//!
//! Pull mode differs in three places: the store is a scratch image whose
//! backing node is the running disk (always, not only for incremental
//! backups); the job is `blockdev-backup` with `sync: none`, which in QEMU
//! 7.2 puts a copy-before-write filter over the disk, so the scratch
//! receives each cluster just before the guest overwrites it; and after
//! the transaction [`export`] exports each scratch node with the temporary
//! bitmap, which lives on the scratch node and goes with it (see [`nbd`];
//! the server itself starts before the transaction, as libvirt does it). The job never
//! ends by itself: the client's abort stops the server, then cancels the
//! jobs (qemuBackupJobCancelBlockjobs).
//!
//! A push backup whose guest must not wait long (`--backup-cbw-timeout`,
//! no libvirt counterpart) reads each disk through a filter of its own
//! ([`cbw`]): [`prepare`] adds it with a scratch image after the target,
//! [`start`] adds the new checkpoint's bitmaps in a transaction first,
//! moves the devices onto the filters, then starts the jobs from the
//! snapshot-access nodes (an incremental one's bitmap lives there), and
//! every cleanup above takes the filter away again.
//!
//! [`finish`] runs 3–6 as libvirt's event handling does: each job's
//! cleanup when it concludes, the rest cancelled once one has failed or
//! been cancelled (qemuBackupNotifyBlockjobEnd).

use std::path::PathBuf;

use qapi::qmp::{
    BackupCommon, BackupPerf, BlockdevBackup, BlockdevBackupWrapper, MirrorSyncMode,
    TransactionAction,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use super::bitmap;
use super::blockdev::{self, AttachedImage, BackingImage, ImageSpec, SourceImage};
use super::cbw::{self, CbwFilter, CbwRequest};
use super::command::{DiskFormat, DiskSpec};
use super::error::QemuError;
use super::jobs::{self, JobEnd, JobInfo, JobOutcome, JobWatch};
use super::monitor::Monitor;
use super::nbd::{self, NbdExport};

/// One disk to back up, as the driver asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDisk {
    /// The running disk.
    pub source: DiskSpec,
    /// The target image's path.
    pub store: PathBuf,
    /// The target image's format.
    pub store_format: DiskFormat,
    /// The target is a host block device, not a file.
    pub store_block: bool,
    /// M of the target's nodes `libvirt-M-storage` / `libvirt-M-format`: a
    /// fresh number from the domain's node-name counter.
    pub store_node_index: u32,
    /// The checkpoint an incremental backup starts from; `None` for full.
    pub incremental: Option<String>,
    /// Pull mode: the store is a scratch image that keeps the disk's
    /// frozen view (its backing node is the running disk, and the job
    /// copies only what the guest is about to overwrite: sync none).
    pub fleece: bool,
    /// The temporary bitmap's name when not `backup-<disk>` (a pull
    /// backup's `exportbitmap`).
    pub bitmap: Option<String>,
    /// Push mode: the job reads the disk through a filter of its own
    /// whose copies go to a local scratch image and may take only so long
    /// (see [`cbw`]).
    pub cbw: Option<CbwRequest>,
}

/// The temporary bitmap of an incremental backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TempBitmap {
    /// Its name, `backup-<disk>`, on the source's format node.
    pub name: String,
    /// The checkpoint bitmap merged into it.
    pub checkpoint: String,
    /// The checkpoint bitmap's granularity (0 if QEMU did not say).
    pub granularity: u32,
}

/// One disk of a backup once its target is attached: every name the
/// later steps need. Plain data, for the driver to keep across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskBackup {
    /// The guest disk, e.g. "vda".
    pub disk: String,
    /// The block job id, `backup-<disk>-<source node>`.
    pub job_id: String,
    /// The source's format node.
    pub source_node: String,
    /// Incremental only: the temporary bitmap the job copies by (push) or
    /// the export offers (pull).
    pub bitmap: Option<TempBitmap>,
    /// Pull only: the job keeps a frozen view in the target (scratch).
    #[serde(default)]
    pub fleece: bool,
    /// The target.
    pub target: AttachedImage,
    /// Push only: the filter the job reads the disk through, if the guest
    /// must not wait long (see [`cbw`]).
    #[serde(default)]
    pub cbw: Option<CbwFilter>,
}

impl DiskBackup {
    /// Where the temporary bitmap lives: on the source for a push backup;
    /// on the scratch node for a pull backup, whose export finds it there
    /// and with which it goes.
    pub fn bitmap_node(&self) -> &str {
        if self.fleece {
            &self.target.format_node
        } else if let Some(filter) = &self.cbw {
            // blockdev-backup looks its bitmap up on the node it reads.
            &filter.access_node
        } else {
            &self.source_node
        }
    }

    /// The node the job reads.
    fn job_source(&self) -> &str {
        self.cbw
            .as_ref()
            .map_or(&self.source_node, |filter| &filter.access_node)
    }
}

/// The job id libvirt gives a disk's backup job (qemuBlockJobDiskNewBackup).
pub fn job_id(disk: &str, source_node: &str) -> String {
    format!("backup-{disk}-{source_node}")
}

/// The temporary bitmap of a push-mode incremental backup.
pub fn temp_bitmap_name(disk: &str) -> String {
    format!("backup-{disk}")
}

/// Checks the incremental disks' bitmaps, then creates (or, with `reuse`,
/// attaches) every target, in order. On failure, targets made so far are
/// detached and their files removed, and the error is returned.
///
/// Errors: [`QemuError::BrokenBitmap`] for an unusable checkpoint bitmap;
/// [`QemuError::Internal`] "failed to update capacity data for block node
/// '%s'" if QEMU does not list the source; those of
/// [`blockdev::create_image`] / [`blockdev::attach_image`].
pub async fn prepare(
    mon: &Monitor,
    disks: &[BackupDisk],
    reuse: bool,
) -> Result<Vec<DiskBackup>, QemuError> {
    let graph = query_graph(mon).await?;
    prepare_in(mon, &graph, disks, reuse).await
}

/// `query-named-block-nodes` as a backup's preparation reads it: the
/// sources' sizes and every node's bitmaps. Asked once per backup-begin,
/// as libvirt does, and shared with the caller's own checks.
#[derive(Debug, Clone)]
pub struct BlockGraph {
    reply: Value,
    /// Every node's bitmaps.
    pub bitmaps: Vec<bitmap::NodeBitmaps>,
}

impl BlockGraph {
    /// What QEMU says of `node`'s image, if it lists it.
    pub fn image(&self, node: &str) -> Option<SourceImage> {
        source_image(&self.reply, node)
    }
}

/// Reads the block graph for [`prepare_in`].
pub async fn query_graph(mon: &Monitor) -> Result<BlockGraph, QemuError> {
    let mut args = Map::new();
    args.insert("flat".into(), Value::Bool(true));
    let reply = mon
        .execute_value("query-named-block-nodes", Value::Object(args))
        .await?;
    let bitmaps = bitmap::parse_named_nodes(&reply)?;
    Ok(BlockGraph { reply, bitmaps })
}

/// [`prepare`] on a block graph the caller has read already.
pub async fn prepare_in(
    mon: &Monitor,
    graph: &BlockGraph,
    disks: &[BackupDisk],
    reuse: bool,
) -> Result<Vec<DiskBackup>, QemuError> {
    let bitmaps = temp_bitmaps(&graph.bitmaps, disks)?;
    let mut done: Vec<DiskBackup> = Vec::with_capacity(disks.len());
    for (disk, bitmap) in disks.iter().zip(bitmaps) {
        let attached = match attach_target(mon, disk, &graph.reply, reuse).await {
            Ok(attached) => attached,
            Err(e) => {
                for problem in discard(mon, &done).await {
                    warn!("cleaning up after a failed backup start: {problem}");
                }
                return Err(e);
            }
        };
        let mut made = disk_backup(disk, bitmap, attached);
        if let Err(e) = insert_filter(mon, graph, disk, &made).await {
            made.cbw = None;
            done.push(made);
            for problem in discard(mon, &done).await {
                warn!("cleaning up after a failed backup start: {problem}");
            }
            return Err(e);
        }
        done.push(made);
    }
    Ok(done)
}

/// The disk's own copy-before-write filter, if it gets one; the device
/// moves onto it only in [`start`].
async fn insert_filter(
    mon: &Monitor,
    graph: &BlockGraph,
    disk: &BackupDisk,
    made: &DiskBackup,
) -> Result<(), QemuError> {
    let (Some(request), Some(filter)) = (&disk.cbw, &made.cbw) else {
        return Ok(());
    };
    let source = graph.image(&made.source_node).ok_or_else(|| {
        QemuError::Internal(format!(
            "failed to update capacity data for block node '{}'",
            made.source_node
        ))
    })?;
    cbw::insert(mon, &disk.source, &source, request, filter).await
}

/// What [`prepare_in`] will make, before anything is made: the driver
/// records it, so that a daemon that dies half-way through can undo the
/// begin. A target counts as created unless it is reused or a device; a
/// file target that exists already is refused here, as [`prepare_in`]
/// refuses it, so that an undo can never remove somebody else's file.
pub fn plan(
    graph: &BlockGraph,
    disks: &[BackupDisk],
    reuse: bool,
) -> Result<Vec<DiskBackup>, QemuError> {
    let bitmaps = temp_bitmaps(&graph.bitmaps, disks)?;
    let mut planned = Vec::with_capacity(disks.len());
    for (disk, bitmap) in disks.iter().zip(bitmaps) {
        let created = !reuse && !disk.store_block;
        if created && std::fs::symlink_metadata(&disk.store).is_ok() {
            return Err(exists(disk));
        }
        if let Some(scratch) = disk.cbw.as_ref().map(|c| &c.scratch) {
            // The undo removes it: it must be ours.
            if std::fs::symlink_metadata(scratch).is_ok() {
                return Err(QemuError::InvalidInput(format!(
                    "scratch file '{}' for backup of '{}' exists",
                    scratch.display(),
                    disk.source.target
                )));
            }
        }
        let target = AttachedImage {
            path: disk.store.clone(),
            storage_node: super::node::storage(disk.store_node_index),
            format_node: super::node::format(disk.store_node_index),
            created,
        };
        planned.push(disk_backup(disk, bitmap, target));
    }
    Ok(planned)
}

fn exists(disk: &BackupDisk) -> QemuError {
    QemuError::InvalidInput(format!(
        "store '{}' for backup of '{}' exists",
        disk.store.display(),
        disk.source.target
    ))
}

fn disk_backup(disk: &BackupDisk, bitmap: Option<TempBitmap>, target: AttachedImage) -> DiskBackup {
    let source_node = disk.source.format_node();
    DiskBackup {
        disk: disk.source.target.clone(),
        job_id: job_id(&disk.source.target, &source_node),
        source_node,
        bitmap,
        fleece: disk.fleece,
        target,
        cbw: disk
            .cbw
            .as_ref()
            .filter(|_| !disk.fleece)
            .map(|request| cbw::plan(&disk.source, request)),
    }
}

/// Each incremental disk's temporary bitmap, once its checkpoint's bitmap
/// passed [`bitmap::check_bitmap`]; all disks are checked before any
/// target is touched.
fn temp_bitmaps(
    nodes: &[bitmap::NodeBitmaps],
    disks: &[BackupDisk],
) -> Result<Vec<Option<TempBitmap>>, QemuError> {
    let mut bitmaps = Vec::with_capacity(disks.len());
    for disk in disks {
        let temp = match &disk.incremental {
            None => None,
            Some(checkpoint) => {
                let node = disk.source.format_node();
                let found = bitmap::check_bitmap(nodes, &node, checkpoint).map_err(|_| {
                    QemuError::BrokenBitmap {
                        bitmap: checkpoint.clone(),
                        disk: disk.source.target.clone(),
                    }
                })?;
                Some(TempBitmap {
                    name: disk
                        .bitmap
                        .clone()
                        .unwrap_or_else(|| temp_bitmap_name(&disk.source.target)),
                    checkpoint: checkpoint.clone(),
                    granularity: found.granularity,
                })
            }
        };
        bitmaps.push(temp);
    }
    Ok(bitmaps)
}

async fn attach_target(
    mon: &Monitor,
    disk: &BackupDisk,
    named_nodes: &Value,
    reuse: bool,
) -> Result<AttachedImage, QemuError> {
    let source_node = disk.source.format_node();
    // Only a format that can have one gets a backing image, and only for
    // an incremental backup (a full backup stands alone) or a scratch
    // image, which reads through to the disk where the guest has not
    // written since the start.
    let backing = (disk.fleece
        || (disk.incremental.is_some() && disk.store_format == DiskFormat::Qcow2))
        .then(|| BackingImage {
            path: disk.source.source.clone(),
            format: disk.source.format,
            node: Some(source_node.clone()),
        });
    let mut spec = ImageSpec {
        path: disk.store.clone(),
        format: disk.store_format,
        block: disk.store_block,
        node_index: disk.store_node_index,
        backing,
        size: 0,
        cluster_size: None,
        extended_l2: false,
        // A full push backup's target file (one with a backing file would
        // hide it; a device has no room beyond its size).
        metadata_preallocated: !disk.fleece
            && !disk.store_block
            && disk.store_format == DiskFormat::Qcow2,
        // A target is synced by the daemon once complete (writeback.rs);
        // a scratch image never needs to be.
        unsynced: true,
        disk: disk.source.target.clone(),
    };
    if reuse {
        return blockdev::attach_image(mon, &spec).await;
    }
    // A device is there by definition (libvirt checks only files).
    if !disk.store_block && tokio::fs::symlink_metadata(&disk.store).await.is_ok() {
        return Err(exists(disk));
    }
    let source = source_image(named_nodes, &source_node).ok_or_else(|| {
        QemuError::Internal(format!(
            "failed to update capacity data for block node '{source_node}'"
        ))
    })?;
    spec.sized_like(&source, disk.source.format);
    blockdev::create_image(mon, &spec).await
}

/// Size, cluster size and extended-L2 flag of `node`, as libvirt's
/// qemuMonitorJSONBlockGetNamedNodeDataWorker reads them.
fn source_image(reply: &Value, node: &str) -> Option<SourceImage> {
    let entry = reply
        .as_array()?
        .iter()
        .find(|entry| entry.get("node-name").and_then(Value::as_str) == Some(node))?;
    let image = entry.get("image")?;
    Some(SourceImage {
        size: image.get("virtual-size")?.as_u64()?,
        cluster_size: image.get("cluster-size").and_then(Value::as_u64),
        extended_l2: image
            .pointer("/format-specific/data/extended-l2")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The transaction actions that start `disks`' jobs, in libvirt's order.
pub fn actions(disks: &[DiskBackup]) -> Vec<TransactionAction> {
    actions_at(disks, None)
}

/// [`actions`], with the push jobs copying at most `speed` bytes/s (the
/// daemon's default backup bandwidth; `None` or 0: unlimited). A pull
/// job copies only what the guest is about to overwrite, which a limit
/// would only slow the guest down for, so it never gets one.
pub fn actions_at(disks: &[DiskBackup], speed: Option<u64>) -> Vec<TransactionAction> {
    let speed = speed.filter(|&s| s > 0);
    let mut actions = Vec::with_capacity(disks.len() * 3);
    for disk in disks {
        if let Some(temp) = &disk.bitmap {
            let granularity = (temp.granularity > 0).then_some(temp.granularity);
            let node = disk.bitmap_node();
            actions.push(bitmap::bitmap_add(
                node,
                &temp.name,
                false,
                true,
                granularity,
            ));
            actions.push(bitmap::bitmap_merge_from(
                node,
                &temp.name,
                &disk.source_node,
                &temp.checkpoint,
            ));
        }
        actions.push(TransactionAction::blockdev_backup(BlockdevBackupWrapper {
            data: BlockdevBackup {
                base: BackupCommon {
                    auto_dismiss: Some(false),
                    auto_finalize: Some(true),
                    bitmap: disk
                        .bitmap
                        .as_ref()
                        .filter(|_| !disk.fleece)
                        .map(|temp| temp.name.clone()),
                    bitmap_mode: None,
                    compress: None,
                    discard_source: None,
                    filter_node_name: None,
                    job_id: Some(disk.job_id.clone()),
                    on_source_error: None,
                    on_target_error: None,
                    speed: speed
                        .filter(|_| !disk.fleece)
                        .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                    x_perf: push_perf(disk),
                    device: disk.job_source().to_string(),
                    sync: match (&disk.bitmap, disk.fleece) {
                        (_, true) => MirrorSyncMode::none,
                        (Some(_), false) => MirrorSyncMode::incremental,
                        (None, false) => MirrorSyncMode::full,
                    },
                },
                target: disk.target.format_node.clone(),
            },
        }));
    }
    actions
}

/// At most this many requests of a job reading through a filter of its
/// own. QEMU's default (64) can fill its whole I/O thread pool (64
/// threads) with writes blocked on a slow target file (NFS, FUSE), and
/// the guest's copies to the local scratch then wait for a thread: the
/// wait the filter is there to avoid.
const CBW_JOB_WORKERS: i64 = 8;

/// The one place virtbackupd's job differs from libvirt's: a push job
/// copies with `copy_file_range` (`x-perf: {use-copy-range: true}`)
/// instead of reading each chunk into QEMU's memory and writing it out
/// again, which halves the CPU QEMU spends per byte (scripts/bench_backup.py)
/// and lets a filesystem that can share extents do so. What the target
/// reads is the same either way: QEMU falls back to reading and writing
/// where the kernel refuses (a block device, another filesystem), and the
/// guest's writes during the job go through the same copy-before-write
/// filter. A pull job (sync none) copies only what the guest is about to
/// overwrite, into a scratch image, and keeps libvirt's defaults.
fn push_perf(disk: &DiskBackup) -> Option<BackupPerf> {
    (!disk.fleece).then_some(BackupPerf {
        max_chunk: None,
        max_workers: disk.cbw.as_ref().map(|_| CBW_JOB_WORKERS),
        use_copy_range: Some(true),
    })
}

/// Starts every disk's job in one `transaction`, after `extra` (the new
/// checkpoint's bitmaps), all or nothing. The returned watch was
/// subscribed before the transaction was sent.
///
/// On error nothing started; the targets are still attached: the caller
/// undoes [`prepare`] with [`discard`]. With disks that have a filter of
/// their own, `extra` goes in a transaction before the devices move onto
/// the filters, and on error may have been applied: the caller removes
/// those bitmaps too.
pub async fn start(
    mon: &Monitor,
    disks: &[DiskBackup],
    extra: Vec<TransactionAction>,
    speed: Option<u64>,
) -> Result<JobWatch, QemuError> {
    let watch = JobWatch::new(mon, disks.iter().map(|d| d.job_id.clone()));
    let mut all = extra;
    let filters: Vec<&CbwFilter> = disks.iter().filter_map(|d| d.cbw.as_ref()).collect();
    if !filters.is_empty() {
        // A disk's view freezes when its device moves onto its filter, not
        // in the transaction: the new checkpoint's bitmaps must be there
        // before, or what the guest writes in between would be in neither
        // this backup nor the next incremental one. (They may catch a few
        // writes this backup has too: the next one copies them again.)
        if !all.is_empty() {
            mon.execute(qapi::qmp::transaction {
                actions: std::mem::take(&mut all),
                properties: None,
            })
            .await?;
        }
        for filter in filters {
            cbw::activate(mon, filter).await?;
        }
    }
    all.extend(actions_at(disks, speed));
    mon.execute(qapi::qmp::transaction {
        actions: all,
        properties: None,
    })
    .await?;
    Ok(watch)
}

/// Pull mode, once [`start`] has frozen every disk's view: one read-only
/// export per disk (the scratch image's format node, with its bitmap) on
/// the server [`nbd::start_server`] started before the transaction, as
/// libvirt orders it. Nothing is exported before the transaction has run,
/// so no client can read a disk that is not frozen.
///
/// On error the jobs still run: the caller stops the server and ends
/// them with [`abandon`].
pub async fn export(mon: &Monitor, exports: &[NbdExport]) -> Result<(), QemuError> {
    for export in exports {
        nbd::add_export(mon, export).await?;
    }
    Ok(())
}

/// Ends jobs that started but must not stay (a pull backup whose exports
/// failed): cancels them, waits for their end and cleans up each disk as
/// [`finish`] does. The target files stay for
/// [`remove_created_files`]. Returns what failed.
pub async fn abandon(mon: &Monitor, watch: &mut JobWatch, disks: &[DiskBackup]) -> Vec<QemuError> {
    let mut problems = cancel(mon, watch).await;
    match finish(mon, watch, disks).await {
        Ok(finished) => problems.extend(finished.problems),
        Err(e) => problems.push(e),
    }
    problems
}

/// Undoes [`prepare`] when the jobs never started: detaches every target
/// and removes the files [`prepare`] created. Best effort; returns what
/// failed.
pub async fn discard(mon: &Monitor, disks: &[DiskBackup]) -> Vec<QemuError> {
    let mut problems = Vec::new();
    for disk in disks {
        if let Some(filter) = &disk.cbw {
            problems.extend(cbw::teardown(mon, filter, &disk.source_node).await);
        }
        problems.extend(blockdev::detach_image(mon, &disk.target).await);
        if let Err(e) = blockdev::remove_created(&disk.target).await {
            problems.push(e);
        }
    }
    problems
}

/// Each disk's job as `query-jobs` lists it now (`None` if QEMU does not
/// list it), in the order of `disks`.
pub async fn progress(
    mon: &Monitor,
    disks: &[DiskBackup],
) -> Result<Vec<Option<JobInfo>>, QemuError> {
    let jobs = jobs::query_jobs(mon).await?;
    Ok(disks
        .iter()
        .map(|disk| jobs.iter().find(|job| job.id == disk.job_id).cloned())
        .collect())
}

/// Asks QEMU to cancel every job `watch` still waits for and marks each
/// as being cancelled. A job that concluded meanwhile refuses; that
/// failure is returned with the others, and its end is still reported
/// by the watch.
pub async fn cancel(mon: &Monitor, watch: &mut JobWatch) -> Vec<QemuError> {
    let mut problems = Vec::new();
    for id in watch.pending().to_vec() {
        if watch.is_cancelling(&id) {
            continue;
        }
        match jobs::cancel(mon, &id).await {
            Ok(()) => watch.mark_cancelling(&id),
            Err(e) => problems.push(e),
        }
    }
    problems
}

/// After `disk`'s job concluded: dismisses it, detaches the target (format
/// node, then storage node) and removes the temporary bitmap. Every step
/// is tried; returns what failed.
pub async fn cleanup_disk(mon: &Monitor, disk: &DiskBackup) -> Vec<QemuError> {
    cleanup(mon, disk, true).await
}

/// [`cleanup_disk`] for a disk whose job QEMU may not list, or whose
/// cleanup or preparation a killed daemon left half-done: also dismisses
/// the `blockdev-create` jobs that made its target. Whatever is not there
/// fails, and is returned like any other failure.
pub async fn undo_disk(mon: &Monitor, disk: &DiskBackup) -> Vec<QemuError> {
    let mut problems = Vec::new();
    let scratch = disk.cbw.iter().map(|f| &f.scratch);
    let images = std::iter::once(&disk.target).chain(scratch);
    let nodes = images.flat_map(|image| [&image.storage_node, &image.format_node]);
    for node in nodes {
        if let Err(e) = jobs::dismiss(mon, &format!("create-{node}")).await {
            problems.push(e);
        }
    }
    problems.extend(cleanup(mon, disk, true).await);
    problems
}

async fn cleanup(mon: &Monitor, disk: &DiskBackup, dismiss: bool) -> Vec<QemuError> {
    let mut problems = Vec::new();
    if dismiss {
        if let Err(e) = jobs::dismiss(mon, &disk.job_id).await {
            problems.push(e);
        }
    }
    problems.extend(blockdev::detach_image(mon, &disk.target).await);
    // The temporary bitmap of a job that read through a filter of its own
    // lives on the snapshot-access node and goes with it (a pull
    // backup's, with its scratch node).
    if let Some(filter) = &disk.cbw {
        problems.extend(cbw::teardown(mon, filter, &disk.source_node).await);
    } else if let Some(temp) = disk.bitmap.as_ref().filter(|_| !disk.fleece) {
        let removed = mon
            .execute(qapi::qmp::block_dirty_bitmap_remove(
                qapi::qmp::BlockDirtyBitmap {
                    node: disk.source_node.clone(),
                    name: temp.name.clone(),
                },
            ))
            .await;
        if let Err(e) = removed {
            problems.push(e);
        }
    }
    problems
}

/// Removes the target files [`prepare`] created (not reused ones), and
/// the scratch files of the disks' own filters.
pub async fn remove_created_files(disks: &[DiskBackup]) -> Vec<QemuError> {
    let mut problems = Vec::new();
    for disk in disks {
        if let Err(e) = blockdev::remove_created(&disk.target).await {
            problems.push(e);
        }
        if let Some(filter) = &disk.cbw {
            problems.extend(cbw::remove_scratch(filter).await.err());
        }
    }
    problems
}

/// How a whole backup ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// Each job's end, in the order they concluded.
    pub ends: Vec<JobEnd>,
    /// What went wrong in cancelling and cleaning up (nothing stops for it).
    pub problems: Vec<QemuError>,
}

impl Finished {
    /// The backup's result as libvirt sums it up: failed if any job
    /// failed (its error text is the first failure's), otherwise cancelled
    /// if any was cancelled, otherwise completed.
    pub fn outcome(&self) -> JobOutcome {
        let first_failure = self.ends.iter().find_map(|end| match &end.outcome {
            JobOutcome::Failed(error) => Some(error.clone()),
            _ => None,
        });
        if let Some(error) = first_failure {
            JobOutcome::Failed(error)
        } else if self
            .ends
            .iter()
            .any(|end| end.outcome == JobOutcome::Cancelled)
        {
            JobOutcome::Cancelled
        } else {
            JobOutcome::Completed
        }
    }

    /// Bytes copied and bytes in total, summed over the jobs as libvirt
    /// sums them for the completed job's statistics.
    pub fn totals(&self) -> (u64, u64) {
        self.ends.iter().fold((0, 0), |(current, total), end| {
            (current + end.current, total + end.total)
        })
    }
}

/// Waits for every job of `watch`, cleaning up each disk as its job
/// concludes ([`cleanup_disk`]) and cancelling the others once one has
/// failed or been cancelled. Files are not removed: see
/// [`remove_created_files`].
///
/// Fails only if the monitor goes away (or `query-jobs` fails) before
/// every job has been seen to end; what was learnt until then is lost to
/// the caller, who can [`JobWatch::resume`] after reconnecting.
pub async fn finish(
    mon: &Monitor,
    watch: &mut JobWatch,
    disks: &[DiskBackup],
) -> Result<Finished, QemuError> {
    let mut finished = Finished::default();
    while let Some(end) = watch.next().await? {
        if let Some(disk) = disks.iter().find(|d| d.job_id == end.id) {
            // A job QEMU no longer lists has nothing left to dismiss.
            let dismiss = end.outcome != JobOutcome::Vanished;
            finished.problems.extend(cleanup(mon, disk, dismiss).await);
        }
        let stops_the_rest = matches!(end.outcome, JobOutcome::Failed(_) | JobOutcome::Cancelled);
        finished.ends.push(end);
        if stops_the_rest {
            finished.problems.extend(cancel(mon, watch).await);
        }
    }
    Ok(finished)
}

#[cfg(test)]
#[path = "backup_test_harness.rs"]
mod test_harness;
#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
