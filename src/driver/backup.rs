//! Backups as domain jobs, push and pull: backup-begin, backup-dumpxml,
//! the job statistics, abort, and the end of the job with its events.
//!
//! One backup per domain at a time. The domain's job lock is held only
//! while the backup is set up; the copy itself runs in QEMU, followed by a
//! task of its own, so every other call on the domain (list, dumpxml,
//! checkpoints, domjobinfo, abort) answers while it runs. A second
//! backup-begin is refused at once (libvirtd makes the caller wait 30 s
//! for its job lock first).
//!
//! The end follows libvirt 9.0 (qemuBackupNotifyBlockjobEnd,
//! qemuBackupJobTerminate): each disk's block job is cleaned up as it
//! concludes; once one has failed or been cancelled the others are
//! cancelled; when none runs any more the job is over — failed if any
//! failed, cancelled if any was cancelled. The job-completed event comes
//! before the block-job events of the disk that ended last. Targets the job
//! created are removed unless it completed (never with REUSE_EXTERNAL).
//!
//! A pull backup runs until the client aborts it: that stops the NBD
//! server first (no client reads a view that is going away), then cancels
//! the jobs, and the job ends as libvirt 9.0 ends it, completed with
//! errmsg "Operation canceled". Its scratch images always go; its figures
//! are the scratch usage (disk_temp_used / disk_temp_total). A TCP server
//! without a port gets one from the configured range (libvirt 9.0 refuses
//! it); a unix socket gets the configured mode (0600: only this daemon's
//! user can connect) and must not exist beforehand, since QEMU would
//! unlink whatever is there.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::conf::backup::{default_suffix, BackupDef, BackupEnv, BackupMode, Transport};
use crate::conf::checkpoint::{CheckpointDef, ParseFlags};
use crate::conf::moment::Moment;
use crate::conf::{DiskDef, DiskFormat as ConfFormat, DomainDef};
use crate::qemu::backup as qbackup;
use crate::qemu::command::DiskFormat;
use crate::qemu::jobs::{self as qjobs, JobOutcome, JobWatch};
use crate::qemu::nbd::{self, NbdAddress, NbdExport};
use crate::qemu::{bitmap, RunningVm};

use super::checkpoint::metadata_xml;
use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::events::{BlockJobStatus, BLOCK_JOB_TYPE_BACKUP};
use super::jobs::{now_ms, JobData, JobStatus};
use super::launch;
use super::moments::now_secs;
use super::registry::DomainObj;
use super::store::{Intent, IntentAction};
use super::{DomainEvent, DomainRef, Driver};

/// virDomainBackupBeginFlags.
pub const BEGIN_REUSE_EXTERNAL: u32 = 1;

/// virDomainBlockJobInfoFlags: bandwidth in bytes (the only one).
const BLOCK_JOB_INFO_BANDWIDTH_BYTES: u32 = 1;

/// A disk's block job as virDomainGetBlockJobInfo reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockJobInfo {
    /// virDomainBlockJobType.
    pub job_type: i32,
    /// Bytes done.
    pub cur: u64,
    /// Bytes in all.
    pub end: u64,
}

/// A backup that is running in `vm`.
pub struct BackupRun {
    record: BackupRecord,
    vm: Arc<RunningVm>,
}

/// Everything about a running backup that a restarted daemon needs to
/// follow it to its end; kept in the domain's run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// What backup-dumpxml shows.
    xml: String,
    job: JobData,
    reuse: bool,
    disks: Vec<RunDisk>,
    targets: Vec<qbackup::DiskBackup>,
    /// Jobs a client asked to cancel: their end counts as cancelled.
    cancel_requested: HashSet<String>,
    /// The checkpoint created with the backup, if any.
    #[serde(default)]
    checkpoint: Option<String>,
    /// Pull mode: the NBD server the disks are exported on.
    #[serde(default)]
    pull: Option<PullServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PullServer {
    addr: NbdAddress,
    /// Whether the server has TLS credentials to remove at the end.
    #[serde(default)]
    tls: bool,
    /// Whether the server has been stopped (abort, or a disk's end).
    stopped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunDisk {
    dst: String,
    /// The disk's source path, which the BLOCK_JOB event names.
    path: String,
    job_id: String,
    state: DiskState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum DiskState {
    Running,
    Complete,
    Failed,
    Cancelled,
}

/// What the conf layer asks while it checks the disks.
struct Env<'a> {
    next_node: &'a mut u32,
    checkpoints: &'a super::moments::MomentTree<CheckpointDef>,
    nodes: &'a [bitmap::NodeBitmaps],
}

impl BackupEnv for Env<'_> {
    fn new_storage_id(&mut self) -> u32 {
        let id = *self.next_node;
        *self.next_node += 1;
        id
    }

    fn checkpoint_exists(&self, name: &str) -> bool {
        self.checkpoints.contains(name)
    }

    fn bitmap_chain_valid(&self, disk: &DiskDef, checkpoint: &str) -> bool {
        let node = format!("libvirt-{}-format", disk.node_index());
        bitmap::check_bitmap(self.nodes, &node, checkpoint).is_ok()
    }
}

fn inactive() -> DriverError {
    DriverError::new(
        ErrorKind::OperationUnsupported,
        "cannot perform disk backup for inactive domain",
    )
}

fn no_backup() -> DriverError {
    DriverError::new(ErrorKind::NoDomainBackup, "no domain backup job present")
}

impl Driver {
    /// virDomainBackupBegin (push mode).
    pub async fn backup_begin(
        &self,
        dom: &DomainRef,
        backup_xml: &str,
        checkpoint_xml: Option<&str>,
        flags: u32,
    ) -> Result<(), DriverError> {
        DriverError::check_flags(flags, BEGIN_REUSE_EXTERNAL, "qemuBackupBegin")?;
        let reuse = flags & BEGIN_REUSE_EXTERNAL != 0;
        let obj = self.domain(dom)?;
        let parsed = BackupDef::parse(backup_xml)?;
        let now = now_secs();
        let parsed_cp = checkpoint_xml
            .map(|xml| CheckpointDef::parse(xml, ParseFlags::default(), now))
            .transpose()?;
        let suffix = default_suffix(parsed_cp.as_ref().map(|cp| cp.name()), now);
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        if parsed_cp.is_some() {
            super::rules::checkpoint_allowed(&obj.lock())?;
        }

        let (vm, running) = {
            let st = obj.lock();
            let live = st.live.as_ref().ok_or_else(inactive)?;
            (live.vm.clone(), live.def.clone())
        };
        let mut def = parsed.align(&running, &suffix)?;
        if obj.lock().backup.is_some() {
            return Err(DriverError::operation_invalid(
                "another backup job is already running",
            ));
        }
        if def.needs_port() {
            let port = self.allocate_port(&def)?;
            def.assign_port(port);
        }
        def.prepare_server()?;
        let pull = match def.mode() {
            BackupMode::Pull => Some(pull_address(&def)?),
            BackupMode::Push => None,
        };
        let checkpoint = match parsed_cp {
            Some(parsed) => Some(self.new_checkpoint(&obj, parsed)?),
            None => None,
        };
        let graph = qbackup::query_graph(vm.monitor()).await?;
        {
            let mut st = obj.lock();
            let st = &mut *st;
            let live = st.live.as_mut().ok_or_else(inactive)?;
            let mut env = Env {
                next_node: &mut live.next_node,
                checkpoints: &st.checkpoints,
                nodes: &graph.bitmaps,
            };
            def.prepare_disks(&running, &mut env)?;
        }
        let requests = backup_requests(&def, &running, pull.is_some())?;
        let targets = qbackup::prepare_in(vm.monitor(), &graph, &requests, reuse)
            .await
            .map_err(DriverError::from)?;

        let uuid = obj.uuid;
        let cp_pairs: Vec<(String, String)> = checkpoint
            .iter()
            .flat_map(|(_, bitmaps)| bitmaps.iter())
            .map(|b| b.node_pair())
            .collect();
        let (cp_actions, cp_intent) = match &checkpoint {
            Some((cp, bitmaps)) => {
                let pairs = &cp_pairs;
                let intent = Intent {
                    checkpoint: cp.name().to_string(),
                    action: IntentAction::Create,
                    bitmaps: bitmaps.iter().map(|b| b.disk_pair()).collect(),
                };
                (bitmap::add_actions(pairs, None), Some(intent))
            }
            None => (Vec::new(), None),
        };
        if let Some(intent) = cp_intent.clone() {
            if let Err(err) = self.store_io(move |s| s.save_intent(&uuid, &intent)).await {
                qbackup::discard(vm.monitor(), &targets).await;
                return Err(err);
            }
        }
        // libvirt's order: the server listens before the disks freeze, the
        // exports come only after.
        let tls = def.server().and_then(|s| s.tls()) == Some(true);
        if let Some(addr) = &pull {
            let tls_dir = tls.then_some(self.shared.config.backup_tls_dir.as_path());
            let mode = self.shared.config.nbd_socket_mode;
            if let Err(err) = nbd::serve(vm.monitor(), addr, mode, tls_dir).await {
                for problem in qbackup::discard(vm.monitor(), &targets).await {
                    tracing::warn!(%problem, "cannot undo a backup that did not start");
                }
                if let Some(intent) = &cp_intent {
                    self.drop_intent(uuid, &intent.checkpoint).await;
                }
                return Err(err.into());
            }
        }
        let mut watch = match qbackup::start(vm.monitor(), &targets, cp_actions).await {
            Ok(watch) => watch,
            Err(err) => {
                if let Some(addr) = &pull {
                    nbd::shutdown(vm.monitor(), addr, tls).await;
                }
                for problem in qbackup::discard(vm.monitor(), &targets).await {
                    tracing::warn!(%problem, "cannot undo a backup that did not start");
                }
                if let Some(intent) = &cp_intent {
                    self.drop_intent(uuid, &intent.checkpoint).await;
                }
                return Err(err.into());
            }
        };
        if let Some(addr) = &pull {
            let exports = exports(&def, &targets);
            let mon = vm.monitor();
            if let Err(err) = qbackup::export(mon, &exports).await {
                nbd::shutdown(mon, addr, tls).await;
                let mut problems = qbackup::abandon(mon, &mut watch, &targets).await;
                problems.extend(qbackup::remove_created_files(&targets).await);
                if !cp_pairs.is_empty() {
                    if let Err(e) = bitmap::remove_bitmaps(mon, &cp_pairs).await {
                        problems.push(e);
                    }
                }
                for problem in problems {
                    tracing::warn!(%problem, "cannot undo a pull backup whose export failed");
                }
                if let Some(intent) = &cp_intent {
                    self.drop_intent(uuid, &intent.checkpoint).await;
                }
                return Err(err.into());
            }
        }
        let checkpoint_name = checkpoint.as_ref().map(|(cp, _)| cp.name().to_string());
        if let Some((cp, _)) = checkpoint {
            self.commit_checkpoint(&obj, cp).await;
        }

        let disks = targets
            .iter()
            .map(|t| RunDisk {
                dst: t.disk.clone(),
                path: running
                    .disk_by_target(&t.disk)
                    .and_then(DiskDef::source)
                    .unwrap_or_default()
                    .to_string(),
                job_id: t.job_id.clone(),
                state: DiskState::Running,
            })
            .collect();
        let record = BackupRecord {
            xml: def.format(),
            job: JobData::backup(now_ms()),
            reuse,
            disks,
            targets: targets.clone(),
            cancel_requested: HashSet::new(),
            checkpoint: checkpoint_name,
            pull: pull.map(|addr| PullServer {
                addr,
                tls,
                stopped: false,
            }),
        };
        self.save_backup(&obj, &record);
        {
            let mut st = obj.lock();
            st.jobs.completed = None;
            st.backup = Some(BackupRun {
                record,
                vm: vm.clone(),
            });
        }
        let driver = self.clone();
        let followed = obj.clone();
        tokio::spawn(async move { driver.follow_backup(followed, vm, watch, targets).await });
        Ok(())
    }

    /// The new checkpoint given with a backup: checked as a plain create,
    /// its bitmaps added by the backup's transaction.
    fn new_checkpoint(
        &self,
        obj: &DomainObj,
        parsed: crate::conf::checkpoint::ParsedCheckpoint,
    ) -> Result<super::checkpoint::NewCheckpoint, DriverError> {
        let st = obj.lock();
        let live = st.live.as_ref().ok_or_else(inactive)?;
        super::checkpoint::prepare_new(&st.checkpoints, &live.def, parsed)
    }

    /// Writes a checkpoint whose bitmaps the backup's transaction made.
    /// The backup runs already, so a failure here is only logged (libvirt
    /// reports it but keeps the job).
    async fn commit_checkpoint(&self, obj: &Arc<DomainObj>, def: CheckpointDef) {
        let uuid = obj.uuid;
        let name = def.name().to_string();
        let xml = metadata_xml(&def);
        let owned = name.clone();
        match self
            .store_io(move |s| s.save_checkpoint(&uuid, &owned, &xml))
            .await
        {
            Ok(()) => {
                {
                    let mut st = obj.lock();
                    let parent = def.parent().map(str::to_string);
                    st.checkpoints.insert(&name, parent.as_deref(), def);
                    st.checkpoints.set_current(Some(&name));
                }
                self.drop_intent(uuid, &name).await;
            }
            Err(err) => {
                tracing::error!(checkpoint = %name, %err, "cannot save the metadata of the backup's checkpoint; its bitmaps are removed at the next reconcile");
            }
        }
    }

    /// Follows the block jobs of a backup to its end.
    async fn follow_backup(
        &self,
        obj: Arc<DomainObj>,
        vm: Arc<RunningVm>,
        mut watch: JobWatch,
        targets: Vec<qbackup::DiskBackup>,
    ) {
        let mon = vm.monitor();
        loop {
            let end = match watch.next().await {
                Ok(Some(end)) => end,
                Ok(None) => break,
                Err(err) => {
                    // QEMU went away: libvirt ends the job as cancelled,
                    // without block-job events for the unfinished disks.
                    tracing::info!(%err, "backup ended with its QEMU");
                    self.terminate_backup(&obj, &vm, JobStatus::Cancelled).await;
                    return;
                }
            };
            let mut record = None;
            let (event, to_cancel, over) = {
                let mut st = obj.lock();
                let Some(run) = st.backup.as_mut().filter(|r| Arc::ptr_eq(&r.vm, &vm)) else {
                    return;
                };
                let run = &mut run.record;
                let requested = run.cancel_requested.contains(&end.id);
                let (state, status, errmsg) = match &end.outcome {
                    JobOutcome::Completed => (DiskState::Complete, BlockJobStatus::Completed, None),
                    JobOutcome::Cancelled => (
                        DiskState::Cancelled,
                        BlockJobStatus::Cancelled,
                        Some("Operation canceled".to_string()),
                    ),
                    JobOutcome::Failed(msg) if requested => (
                        DiskState::Cancelled,
                        BlockJobStatus::Cancelled,
                        Some(msg.clone()),
                    ),
                    JobOutcome::Failed(msg) => {
                        (DiskState::Failed, BlockJobStatus::Failed, Some(msg.clone()))
                    }
                    JobOutcome::Vanished => (DiskState::Failed, BlockJobStatus::Failed, None),
                };
                let pull = run.pull.is_some();
                if pull {
                    run.job.stats.tmp_used += end.current;
                    run.job.stats.tmp_total += end.total;
                } else {
                    run.job.stats.transferred += end.current;
                    run.job.stats.total += end.total;
                }
                if run.job.errmsg.is_none() {
                    run.job.errmsg = errmsg;
                }
                let mut event = None;
                if let Some(disk) = run.disks.iter_mut().find(|d| d.job_id == end.id) {
                    disk.state = state;
                    event = Some(DomainEvent::BlockJob {
                        dom: DomainRef {
                            name: String::new(),
                            uuid: obj.uuid,
                            id: -1,
                        },
                        path: disk.path.clone(),
                        dst: disk.dst.clone(),
                        job_type: BLOCK_JOB_TYPE_BACKUP,
                        status,
                    });
                }
                let running: Vec<String> = run
                    .disks
                    .iter()
                    .filter(|d| d.state == DiskState::Running)
                    .map(|d| d.job_id.clone())
                    .collect();
                let failed = run.disks.iter().any(|d| d.state == DiskState::Failed);
                let cancelled = run.disks.iter().any(|d| d.state == DiskState::Cancelled);
                // A pull backup's disks are cancelled to end it: that is its
                // normal end, reported completed (with libvirt's errmsg).
                let over = running.is_empty().then_some(if failed {
                    JobStatus::Failed
                } else if cancelled && !pull {
                    JobStatus::Cancelled
                } else {
                    JobStatus::Completed
                });
                let to_cancel = if !running.is_empty() && (failed || cancelled) {
                    running
                } else {
                    Vec::new()
                };
                if over.is_none() {
                    record = Some(run.clone());
                }
                (event, to_cancel, over)
            };
            if let Some(record) = record.take() {
                self.save_backup(&obj, &record);
            }
            // The end is recorded first: job statistics read meanwhile
            // count this disk as done rather than lose it. A scratch node
            // can go only once nothing exports it.
            self.stop_pull_server(&obj, &vm).await;
            if let Some(disk) = targets.iter().find(|d| d.job_id == end.id) {
                if end.outcome != JobOutcome::Vanished {
                    for problem in qbackup::cleanup_disk(mon, disk).await {
                        tracing::warn!(%problem, "backup cleanup");
                    }
                }
            }
            for id in to_cancel {
                if let Err(err) = qjobs::cancel(mon, &id).await {
                    tracing::warn!(%err, job = %id, "cannot cancel the rest of a failed backup");
                }
            }
            if let Some(status) = over {
                self.terminate_backup(&obj, &vm, status).await;
            }
            if let Some(mut event) = event {
                if let DomainEvent::BlockJob { dom, .. } = &mut event {
                    *dom = obj.reference();
                }
                self.emit(event);
            }
            if over.is_some() {
                return;
            }
        }
    }

    /// The job is over: files, final statistics, event — in that order, so
    /// that nobody sees the job ended while its unwanted targets remain.
    pub(super) async fn terminate_backup(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        status: JobStatus,
    ) {
        let found = {
            let st = obj.lock();
            st.backup
                .as_ref()
                .filter(|r| Arc::ptr_eq(&r.vm, vm))
                .map(|run| {
                    (
                        run.record.targets.clone(),
                        run.record.reuse,
                        run.record.checkpoint.clone(),
                        run.record.pull.clone(),
                    )
                })
        };
        let Some((targets, reuse, checkpoint, pull)) = found else {
            // Another caller may be ending it: return once it has.
            drop(obj.backup_end.lock().await);
            return;
        };
        if let Some(server) = &pull {
            self.stop_pull_server(obj, vm).await;
            if server.tls {
                nbd::del_tls_creds(vm.monitor()).await;
            }
            nbd::remove_socket(&server.addr).await;
        }
        // Scratch images are never kept; targets only when complete.
        if (pull.is_some() || status != JobStatus::Completed) && !reuse {
            for problem in qbackup::remove_created_files(&targets).await {
                tracing::warn!(%problem, "cannot remove a backup target");
            }
        }
        if status != JobStatus::Completed && pull.is_none() {
            if let Some(name) = checkpoint {
                self.drop_unbacked_checkpoint(obj, Some(vm), &name).await;
            }
        }
        // From taking the job to its event, nobody else returns from here
        // (QEMU's exit reports the domain stopped only after the event).
        let _ending = obj.backup_end.lock().await;
        let job = {
            let mut st = obj.lock();
            if !st.backup.as_ref().is_some_and(|r| Arc::ptr_eq(&r.vm, vm)) {
                return;
            }
            let Some(run) = st.backup.take() else {
                return;
            };
            let mut job = run.record.job;
            job.update_time();
            job.status = status;
            st.jobs.completed = Some(job.clone());
            job
        };
        self.shared.store.delete_backup(&obj.uuid);
        self.emit(DomainEvent::JobCompleted {
            dom: obj.reference(),
            params: job.params(),
        });
    }

    /// virDomainBackupGetXMLDesc.
    pub fn backup_get_xml_desc(&self, dom: &DomainRef, flags: u32) -> Result<String, DriverError> {
        let obj = self.domain(dom)?;
        DriverError::check_flags(flags, 0, "qemuBackupGetXMLDesc")?;
        let st = obj.lock();
        st.backup
            .as_ref()
            .map(|run| run.record.xml.clone())
            .ok_or_else(no_backup)
    }

    /// virDomainGetJobStats.
    pub async fn get_job_stats(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<(i32, Vec<super::jobs::TypedParam>), DriverError> {
        use super::jobs::stats_flags::*;
        DriverError::check_flags(flags, COMPLETED | KEEP_COMPLETED, "qemuDomainGetJobStats")?;
        let obj = self.domain(dom)?;
        let job = if flags & COMPLETED != 0 {
            let mut st = obj.lock();
            let job = st.jobs.completed.clone().filter(|_| st.backup.is_none());
            if job.is_some() && flags & KEEP_COMPLETED == 0 {
                st.jobs.completed = None;
            }
            job
        } else {
            self.current_job(&obj).await?
        };
        Ok(match job {
            Some(job) => (job.job_type(), job.params()),
            None => (super::jobs::job_type::NONE, Vec::new()),
        })
    }

    /// virDomainGetJobInfo.
    pub async fn get_job_info(&self, dom: &DomainRef) -> Result<super::jobs::JobInfo, DriverError> {
        let obj = self.domain(dom)?;
        Ok(self
            .current_job(&obj)
            .await?
            .map(|job| job.info())
            .unwrap_or_default())
    }

    /// The running job with fresh figures: what the disks that ended
    /// moved, plus QEMU's progress for the ones still copying.
    async fn current_job(&self, obj: &DomainObj) -> Result<Option<JobData>, DriverError> {
        let (vm, mut job, running) = {
            let st = obj.lock();
            if st.live.is_none() {
                return Err(DriverError::not_running().with_origin(ErrorOrigin::Domain));
            }
            let Some(run) = &st.backup else {
                return Ok(None);
            };
            let record = &run.record;
            let running: Vec<qbackup::DiskBackup> = record
                .targets
                .iter()
                .filter(|t| {
                    record
                        .disks
                        .iter()
                        .any(|d| d.job_id == t.job_id && d.state == DiskState::Running)
                })
                .cloned()
                .collect();
            (run.vm.clone(), record.job.clone(), running)
        };
        job.update_time();
        job.status = JobStatus::Active;
        let progress = qbackup::progress(vm.monitor(), &running).await?;
        let pull = running.iter().any(|d| d.fleece);
        for info in progress.into_iter().flatten() {
            if pull {
                job.stats.tmp_total += info.total;
                job.stats.tmp_used += info.current;
            } else {
                job.stats.total += info.total;
                job.stats.transferred += info.current;
            }
        }
        Ok(Some(job))
    }

    /// virDomainGetBlockJobInfo: a disk (by target or source path) has a
    /// job while a backup copies (push) or fleeces (pull) it; its type is
    /// BACKUP and its figures are QEMU's.
    pub async fn get_block_job_info(
        &self,
        dom: &DomainRef,
        path: &str,
        flags: u32,
    ) -> Result<Option<BlockJobInfo>, DriverError> {
        DriverError::check_flags(
            flags,
            BLOCK_JOB_INFO_BANDWIDTH_BYTES,
            "qemuDomainGetBlockJobInfo",
        )?;
        let obj = self.domain(dom)?;
        let (vm, target) = {
            let st = obj.lock();
            let live = st
                .live
                .as_ref()
                .ok_or_else(|| DriverError::not_running().with_origin(ErrorOrigin::Domain))?;
            let disk = live
                .def
                .disks()
                .iter()
                .find(|d| d.target() == path || d.source() == Some(path))
                .ok_or_else(|| {
                    DriverError::new(
                        ErrorKind::InvalidArg,
                        format!("disk '{path}' not found in domain"),
                    )
                })?;
            let target = st.backup.as_ref().and_then(|run| {
                let record = &run.record;
                let running = record
                    .disks
                    .iter()
                    .any(|d| d.dst == disk.target() && d.state == DiskState::Running);
                let job = record.targets.iter().find(|t| t.disk == disk.target())?;
                running.then(|| job.clone())
            });
            (live.vm.clone(), target)
        };
        let Some(target) = target else {
            return Ok(None);
        };
        let progress = qbackup::progress(vm.monitor(), std::slice::from_ref(&target)).await?;
        // A job QEMU no longer lists but whose end is not processed yet
        // shows as incomplete, as libvirt fakes it.
        let (cur, end) = progress
            .into_iter()
            .flatten()
            .next()
            .map_or((0, 1), |job| (job.current, job.total));
        Ok(Some(BlockJobInfo {
            job_type: BLOCK_JOB_TYPE_BACKUP,
            cur,
            end,
        }))
    }

    /// virDomainAbortJob / virDomainAbortJobFlags: cancels the backup's
    /// block jobs; the job ends (cancelled) when QEMU confirms.
    pub async fn abort_job(&self, dom: &DomainRef, flags: u32) -> Result<(), DriverError> {
        DriverError::check_flags(
            flags,
            super::jobs::ABORT_JOB_POSTCOPY,
            "qemuDomainAbortJobFlags",
        )?;
        let obj = self.domain(dom)?;
        let (vm, running, record) = {
            let mut st = obj.lock();
            if st.live.is_none() {
                return Err(DriverError::not_running().with_origin(ErrorOrigin::Domain));
            }
            let Some(run) = st.backup.as_mut() else {
                return Err(DriverError::operation_invalid(
                    "no job is active on the domain",
                ));
            };
            if flags & super::jobs::ABORT_JOB_POSTCOPY != 0 {
                return Err(DriverError::operation_invalid(
                    "current job is not outgoing migration in post-copy mode",
                ));
            }
            let running: Vec<String> = run
                .record
                .disks
                .iter()
                .filter(|d| d.state == DiskState::Running)
                .map(|d| d.job_id.clone())
                .collect();
            // Recorded before QEMU is asked, so that the end counts as
            // cancelled even when it comes before the answer.
            run.record.cancel_requested.extend(running.iter().cloned());
            (run.vm.clone(), running, run.record.clone())
        };
        self.save_backup(&obj, &record);
        // libvirt's order: no client reads any more, then the jobs stop.
        self.stop_pull_server(&obj, &vm).await;
        for id in running {
            if let Err(err) = qjobs::cancel(vm.monitor(), &id).await {
                tracing::warn!(%err, job = %id, "cannot cancel a backup job");
            }
        }
        Ok(())
    }

    /// Stops a pull backup's NBD server, once: abort, the first disk's
    /// end, or the job's end, whichever comes first.
    async fn stop_pull_server(&self, obj: &DomainObj, vm: &Arc<RunningVm>) {
        let record = {
            let mut st = obj.lock();
            let Some(run) = st.backup.as_mut().filter(|r| Arc::ptr_eq(&r.vm, vm)) else {
                return;
            };
            match run.record.pull.as_mut() {
                Some(server) if !server.stopped => server.stopped = true,
                _ => return,
            }
            run.record.clone()
        };
        nbd::stop_server(vm.monitor()).await;
        self.save_backup(obj, &record);
    }

    /// A free port of the configured range for a pull backup's TCP
    /// server: one no other backup of this daemon holds and that binds on
    /// the address asked for now.
    fn allocate_port(&self, def: &BackupDef) -> Result<u16, DriverError> {
        let host = def.server().and_then(|s| s.name()).unwrap_or("localhost");
        let taken: HashSet<u16> = self
            .shared
            .domains
            .all()
            .iter()
            .filter_map(|obj| {
                let st = obj.lock();
                match st.backup.as_ref()?.record.pull.as_ref()?.addr {
                    NbdAddress::Tcp { port, .. } => Some(port),
                    NbdAddress::Unix(_) => None,
                }
            })
            .collect();
        let range = self.shared.config.nbd_ports.clone();
        let (min, max) = (*range.start(), *range.end());
        range
            .filter(|port| !taken.contains(port))
            .find(|port| std::net::TcpListener::bind((host, *port)).is_ok())
            .ok_or_else(|| {
                DriverError::internal(format!(
                    "Unable to find an unused port in range 'nbd' ({min}-{max})"
                ))
            })
    }

    /// Records the running backup, so that a restarted daemon can follow
    /// it; failing that only costs the follow-up after a restart.
    fn save_backup(&self, obj: &DomainObj, record: &BackupRecord) {
        if let Err(err) = self.shared.store.save_backup(&obj.uuid, record) {
            tracing::warn!(%err, "cannot record the running backup");
        }
    }

    /// After a restart: follows the backup a previous run of the daemon
    /// started in this (reconnected) QEMU. Events missed while no daemon
    /// listened are made up for by asking QEMU for its jobs first.
    pub(super) fn resume_backup(&self, obj: &Arc<DomainObj>) {
        let Some(record) = self.shared.store.load_backup::<BackupRecord>(&obj.uuid) else {
            return;
        };
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                tracing::error!(%err, "unreadable backup record; the job is forgotten");
                self.shared.store.delete_backup(&obj.uuid);
                return;
            }
        };
        let vm = {
            let mut st = obj.lock();
            let Some(live) = st.live.as_mut() else { return };
            let highest = record
                .targets
                .iter()
                .filter_map(|t| t.target.format_node.strip_prefix("libvirt-"))
                .filter_map(|n| n.split('-').next()?.parse::<u32>().ok())
                .max()
                .unwrap_or(0);
            live.next_node = live.next_node.max(highest + 1);
            let vm = live.vm.clone();
            st.backup = Some(BackupRun {
                record: record.clone(),
                vm: vm.clone(),
            });
            vm
        };
        let pending = record
            .disks
            .iter()
            .filter(|d| d.state == DiskState::Running)
            .map(|d| d.job_id.clone());
        let watch = JobWatch::resume(vm.monitor(), pending, record.cancel_requested.clone());
        tracing::info!(domain = %obj.reference().name, "following the backup a previous run started");
        let driver = self.clone();
        let obj = obj.clone();
        tokio::spawn(async move { driver.follow_backup(obj, vm, watch, record.targets).await });
    }

    /// After a restart that found the domain's QEMU gone: the backup it
    /// ran is over, cancelled, and its targets go as after any
    /// unfinished push backup.
    pub(super) async fn forget_backup(&self, obj: &Arc<DomainObj>) {
        let Some(Ok(mut record)) = self.shared.store.load_backup::<BackupRecord>(&obj.uuid) else {
            return;
        };
        if !record.reuse {
            for problem in qbackup::remove_created_files(&record.targets).await {
                tracing::warn!(%problem, "cannot remove a backup target");
            }
        }
        if let Some(server) = &record.pull {
            nbd::remove_socket(&server.addr).await;
        } else if let Some(name) = &record.checkpoint {
            self.drop_unbacked_checkpoint(obj, None, name).await;
        }
        record.job.update_time();
        record.job.status = JobStatus::Cancelled;
        obj.lock().jobs.completed = Some(record.job);
        self.shared.store.delete_backup(&obj.uuid);
    }
}

/// Where a pull backup's NBD server listens, once the definition has a
/// server with a port.
fn pull_address(def: &BackupDef) -> Result<NbdAddress, DriverError> {
    let server = def
        .server()
        .ok_or_else(|| DriverError::internal("pull backup without a server"))?;
    match server.transport() {
        Transport::Unix => {
            let path = server
                .socket()
                .ok_or_else(|| DriverError::internal("unix server without a socket"))?;
            // QEMU unlinks whatever is at the path before it binds: never
            // let it take a file somebody else owns.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(DriverError::operation_invalid(format!(
                    "NBD socket '{path}' already exists"
                )));
            }
            Ok(NbdAddress::Unix(path.into()))
        }
        Transport::Tcp => Ok(NbdAddress::Tcp {
            host: server.name().unwrap_or("localhost").to_string(),
            port: server
                .port()
                .ok_or_else(|| DriverError::internal("TCP server without a port"))?,
        }),
    }
}

/// One export per backed-up disk, named as the definition says.
fn exports(def: &BackupDef, targets: &[qbackup::DiskBackup]) -> Vec<NbdExport> {
    targets
        .iter()
        .map(|t| {
            let disk = def.disk(&t.disk);
            NbdExport {
                node: t.target.format_node.clone(),
                name: disk
                    .and_then(|d| d.export_name())
                    .unwrap_or(&t.disk)
                    .to_string(),
                bitmap: t.bitmap.as_ref().map(|b| b.name.clone()),
            }
        })
        .collect()
}

/// What the qemu layer needs per backed-up disk.
fn backup_requests(
    def: &BackupDef,
    running: &DomainDef,
    pull: bool,
) -> Result<Vec<qbackup::BackupDisk>, DriverError> {
    let specs = launch::disk_specs(running)?;
    def.backed_up()
        .map(|(disk, store)| {
            let source = specs
                .iter()
                .find(|s| s.target == disk.name())
                .cloned()
                .ok_or_else(|| DriverError::internal(format!("no disk named '{}'", disk.name())))?;
            let path = store
                .path()
                .ok_or_else(|| DriverError::internal("backup target has no path"))?;
            let format = match store.format() {
                Some(ConfFormat::Raw) => DiskFormat::Raw,
                None | Some(ConfFormat::Qcow2) => DiskFormat::Qcow2,
                // libvirt formats other types too (vmdk, ...); silently
                // writing qcow2 instead would betray the request.
                Some(other) => {
                    return Err(DriverError::new(
                        ErrorKind::ConfigUnsupported,
                        format!(
                            "backup target format '{}' of disk '{}' is not supported",
                            other.as_str(),
                            disk.name()
                        ),
                    ))
                }
            };
            if store.is_block() {
                // A block device is never created, only formatted or
                // written over; libvirt's labelling stats it first.
                std::fs::metadata(path)
                    .map_err(|e| DriverError::system(format_args!("unable to stat: {path}"), e))?;
            }
            Ok(qbackup::BackupDisk {
                source,
                store: path.into(),
                store_format: format,
                store_block: store.is_block(),
                store_node_index: store.index().unwrap_or(0),
                incremental: disk.incremental().map(str::to_string),
                fleece: pull,
                bitmap: disk.bitmap().map(str::to_string),
            })
        })
        .collect()
}
