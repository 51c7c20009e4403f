//! A backup once it runs: each disk's QEMU job ending, the job's end,
//! abort, and a restarted daemon taking the job back.
//!
//! [`step`] decides, without I/O: from the running backup's record and what
//! happened ([`Event`]) to the new record and the [`Action`]s to take, in
//! order. The record changes under the domain's state lock, so concurrent
//! events (a disk's end, an abort, QEMU's exit) see each other's effects;
//! [`Driver::carry_out`] then takes the actions, with no lock held.
//!
//! The end follows libvirt 9.0 (qemuBackupNotifyBlockjobEnd,
//! qemuBackupJobTerminate): each disk's block job is cleaned up as it
//! concludes; once one has failed or been cancelled the others are
//! cancelled; when none runs any more the job is over — failed if any
//! failed, cancelled if any was cancelled. The job-completed event comes
//! before the block-job events of the disk that ended last. Targets the job
//! created are removed unless it completed (never with REUSE_EXTERNAL), and
//! a checkpoint created with a push backup that did not complete goes too.
//! QEMU going away ends the job as cancelled, without block-job events.
//!
//! A pull backup runs until the client aborts it: that stops the NBD
//! server first (no client reads a view that is going away), then cancels
//! the jobs, and the job ends as libvirt 9.0 ends it, completed with
//! errmsg "Operation canceled". Its scratch images always go; its figures
//! are the scratch usage (disk_temp_used / disk_temp_total).
//!
//! The record is kept in the domain's run directory: a restarted daemon
//! follows the jobs still running (QEMU is asked first for what ended
//! while no daemon listened, see [`JobWatch::resume`]), or ends the job as
//! cancelled when QEMU is gone.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::driver::error::io_error_text;
use crate::driver::events::{BlockJobStatus, BLOCK_JOB_TYPE_BACKUP};
use crate::driver::jobs::{JobData, JobStatus};
use crate::driver::registry::DomainObj;
use crate::driver::{DomainEvent, Driver};
use crate::qemu::backup::{self as qbackup, DiskBackup};
use crate::qemu::jobs::{self as qjobs, JobEnd, JobOutcome, JobWatch};
use crate::qemu::nbd::{self, NbdAddress};
use crate::qemu::node;
use crate::qemu::writeback::{self, EarlyWriteback};
use crate::qemu::RunningVm;

use super::BackupRun;

/// Everything about a running backup that a restarted daemon needs to
/// follow it to its end; kept in the domain's run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// What backup-dumpxml shows.
    pub(in crate::driver) xml: String,
    /// The figures so far: what the disks that ended moved.
    pub(in crate::driver) job: JobData,
    pub(super) reuse: bool,
    pub(super) disks: Vec<RunDisk>,
    pub(super) targets: Vec<DiskBackup>,
    /// Jobs a client asked to cancel: their end counts as cancelled.
    pub(super) cancel_requested: HashSet<String>,
    /// The checkpoint created with the backup, if any.
    #[serde(default)]
    pub(super) checkpoint: Option<String>,
    /// Pull mode: the NBD server the disks are exported on.
    #[serde(default)]
    pub(super) pull: Option<PullServer>,
    /// Begun with VIR_DOMAIN_BACKUP_BEGIN_PRESERVE_SHUTDOWN_DOMAIN: a guest
    /// power-off keeps the domain paused until the end (`preserve.rs`).
    #[serde(default)]
    pub(super) preserve: bool,
    /// Whether backup-begin got through. The record is written before
    /// begin touches QEMU, as the begin's intent: a restarted daemon that
    /// finds one not started undoes what it names (the jobs cancelled, the
    /// targets detached and removed, the server stopped, the checkpoint
    /// dropped) and reports no job, as after a begin that failed.
    #[serde(default = "started_before_intents")]
    pub(super) started: bool,
}

/// A record written before begin intents existed was written only once
/// the backup had started.
fn started_before_intents() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PullServer {
    pub(super) addr: NbdAddress,
    /// Whether the server has TLS credentials to remove at the end.
    #[serde(default)]
    pub(super) tls: bool,
    /// Whether the server has been stopped (abort, or a disk's end).
    pub(super) stopped: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunDisk {
    pub(super) dst: String,
    /// The disk's source path, which the BLOCK_JOB event names.
    pub(super) path: String,
    pub(super) job_id: String,
    pub(super) state: DiskState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum DiskState {
    Running,
    /// A push disk whose job completed: its target is being closed and
    /// synced, and the disk is complete once it is on the disk.
    Closing,
    Complete,
    Failed,
    Cancelled,
}

/// What happens to a running backup.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::driver) enum Event {
    /// A disk's QEMU job concluded, or QEMU no longer knows it.
    DiskEnded(JobEnd),
    /// A closing disk's target was synced, or could not be (`error`).
    TargetSynced {
        job_id: String,
        error: Option<String>,
    },
    /// A client aborts the job.
    Abort,
    /// QEMU went away: it exited, or its monitor closed.
    QemuGone,
    /// A restarted daemon found the record; `qemu`: whether the domain's
    /// QEMU still runs.
    Restarted { qemu: bool },
}

/// What [`step`] asks for, to be taken in order.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::driver) enum Action {
    /// Write the record as it is by then.
    Save,
    /// Stop the pull backup's NBD server, and with it every export.
    StopServer,
    /// Dismiss a disk's concluded job, detach its target, remove its
    /// temporary bitmap.
    CleanUp(DiskBackup),
    /// The same for a job that QEMU may no longer list, or whose cleanup
    /// may have been done in part: what of it is there goes, and what is
    /// not is no failure.
    Detach(DiskBackup),
    /// Sync a closed push target to the disk; the result comes back as
    /// [`Event::TargetSynced`].
    SyncTarget(DiskBackup),
    /// Ask QEMU to cancel these jobs: for a client, or the rest of a
    /// backup one of whose disks failed or was cancelled.
    Cancel(Vec<String>),
    /// Remove the pull server's TLS credentials.
    DropTls,
    /// Remove the server's unix socket, which a killed QEMU leaves.
    RemoveSocket(NbdAddress),
    /// Remove the files the backup created.
    RemoveFiles(Vec<DiskBackup>),
    /// Delete the checkpoint created with a backup that did not complete.
    DropCheckpoint(String),
    /// The job is over with these figures: they are kept for domjobinfo
    /// --completed, the record goes, job-completed is raised.
    Close(JobData),
    /// Raise a disk's block-job events.
    Notify {
        path: String,
        dst: String,
        status: BlockJobStatus,
    },
    /// Follow these jobs again; those in `cancelling` were asked to cancel.
    Follow {
        pending: Vec<String>,
        cancelling: HashSet<String>,
    },
}

/// The transition of a running backup on `event`: its new record and what
/// to do, in order. No I/O.
pub(in crate::driver) fn step(
    mut record: BackupRecord,
    event: Event,
) -> (BackupRecord, Vec<Action>) {
    let actions = match event {
        Event::DiskEnded(end) => record.disk_ended(end),
        Event::TargetSynced { job_id, error } => record.target_synced(&job_id, error),
        Event::Abort => {
            let running = record.running();
            // Recorded before QEMU is asked, so that the end counts as
            // cancelled even when it comes before the answer.
            record.cancel_requested.extend(running.iter().cloned());
            // libvirt's order: no client reads any more, then the jobs stop.
            let mut actions = record.stop_server();
            actions.push(Action::Save);
            if !running.is_empty() {
                actions.push(Action::Cancel(running));
            }
            actions
        }
        Event::QemuGone => record.end(JobStatus::Cancelled, true),
        Event::Restarted { qemu: true } if !record.started => {
            // A begin cut short: undone as an abort, every job (those that
            // exist) cancelled and each disk cleaned up as it ends.
            let running = record.running();
            record.cancel_requested.extend(running.iter().cloned());
            let mut actions = record.stop_server();
            actions.push(Action::Cancel(running));
            actions.push(Action::Follow {
                pending: record.running(),
                cancelling: record.cancel_requested.clone(),
            });
            actions
        }
        Event::Restarted { qemu: true } => {
            // A disk recorded as ended may not have been cleaned up: the
            // record is saved before the cleanup, and the daemon may have
            // died in between. What of it is still there goes, and a
            // closing disk's target is synced again.
            let mut actions = Vec::new();
            for disk in record
                .disks
                .iter()
                .filter(|d| d.state != DiskState::Running)
            {
                let Some(target) = record.targets.iter().find(|t| t.job_id == disk.job_id) else {
                    continue;
                };
                actions.push(Action::Detach(target.clone()));
                if disk.state == DiskState::Closing {
                    actions.push(Action::SyncTarget(target.clone()));
                }
            }
            actions.push(Action::Follow {
                pending: record.running(),
                cancelling: record.cancel_requested.clone(),
            });
            actions
        }
        Event::Restarted { qemu: false } => record.end(JobStatus::Cancelled, false),
    };
    (record, actions)
}

impl BackupRecord {
    fn disk_ended(&mut self, end: JobEnd) -> Vec<Action> {
        let requested = self.cancel_requested.contains(&end.id);
        let (state, status, errmsg) = match end.outcome {
            JobOutcome::Completed => (DiskState::Complete, BlockJobStatus::Completed, None),
            JobOutcome::Cancelled => (
                DiskState::Cancelled,
                BlockJobStatus::Cancelled,
                Some("Operation canceled".to_string()),
            ),
            JobOutcome::Failed(ref msg) if requested => (
                DiskState::Cancelled,
                BlockJobStatus::Cancelled,
                Some(msg.clone()),
            ),
            JobOutcome::Failed(ref msg) => {
                (DiskState::Failed, BlockJobStatus::Failed, Some(msg.clone()))
            }
            JobOutcome::Vanished => (DiskState::Failed, BlockJobStatus::Failed, None),
        };
        let pull = self.pull.is_some();
        let stats = &mut self.job.stats;
        if pull {
            stats.tmp_used += end.current;
            stats.tmp_total += end.total;
        } else {
            stats.transferred += end.current;
            stats.total += end.total;
        }
        // A job QEMU no longer lists has nothing left to dismiss, but its
        // target may still be attached (a daemon killed between the
        // dismiss and the detach, or a begin cut short before the job).
        let target = self.targets.iter().find(|t| t.job_id == end.id).cloned();
        let cleanup = target.clone().map(|t| {
            if end.outcome == JobOutcome::Vanished {
                Action::Detach(t)
            } else {
                Action::CleanUp(t)
            }
        });
        // A push target is complete once it is on the disk. The record
        // counts the disk as ended already, so job statistics read during
        // its cleanup do not lose it.
        if let Some(target) = target.filter(|t| state == DiskState::Complete && !t.fleece) {
            self.set_state(&end.id, DiskState::Closing);
            let mut actions = vec![Action::Save];
            actions.extend(cleanup);
            actions.push(Action::SyncTarget(target));
            return actions;
        }
        if self.job.errmsg.is_none() {
            self.job.errmsg = errmsg;
        }
        self.settle(&end.id, state, status, cleanup)
    }

    fn target_synced(&mut self, job_id: &str, error: Option<String>) -> Vec<Action> {
        let closing = self
            .disks
            .iter()
            .any(|d| d.job_id == job_id && d.state == DiskState::Closing);
        if !closing {
            return Vec::new();
        }
        let (state, status) = match error {
            None => (DiskState::Complete, BlockJobStatus::Completed),
            Some(_) => (DiskState::Failed, BlockJobStatus::Failed),
        };
        if self.job.errmsg.is_none() {
            self.job.errmsg = error;
        }
        self.settle(job_id, state, status, None)
    }

    /// A disk's end is decided: its state, its `cleanup` if still to do,
    /// the rest cancelled if it failed or was, the job's end if it was the
    /// last, and its block-job event.
    fn settle(
        &mut self,
        job_id: &str,
        state: DiskState,
        status: BlockJobStatus,
        cleanup: Option<Action>,
    ) -> Vec<Action> {
        let notify = self.set_state(job_id, state).map(|disk| Action::Notify {
            path: disk.path,
            dst: disk.dst,
            status,
        });
        let running = self.running();
        let failed = self.disks.iter().any(|d| d.state == DiskState::Failed);
        let cancelled = self.disks.iter().any(|d| d.state == DiskState::Cancelled);
        let pull = self.pull.is_some();
        // A pull backup's disks are cancelled to end it: that is its
        // normal end, reported completed (with libvirt's errmsg).
        let unsettled = self.disks.iter().any(|d| d.state == DiskState::Closing);
        let over = (running.is_empty() && !unsettled).then_some(if failed {
            JobStatus::Failed
        } else if cancelled && !pull {
            JobStatus::Cancelled
        } else {
            JobStatus::Completed
        });
        // A scratch node can go only once nothing exports it.
        let mut actions = self.stop_server();
        if over.is_none() {
            actions.push(Action::Save);
        }
        actions.extend(cleanup);
        if !running.is_empty() && (failed || cancelled) {
            actions.push(Action::Cancel(running));
        }
        if let Some(status) = over {
            actions.extend(self.end(status, true));
        }
        actions.extend(notify);
        actions
    }

    /// Sets a disk's state; the disk, if the backup has it.
    fn set_state(&mut self, job_id: &str, state: DiskState) -> Option<RunDisk> {
        let disk = self.disks.iter_mut().find(|d| d.job_id == job_id)?;
        disk.state = state;
        Some(disk.clone())
    }

    /// The job is over: what goes before its figures are final, and then
    /// those. `qemu`: whether there is a QEMU to tell.
    fn end(&mut self, status: JobStatus, qemu: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(server) = self.pull.clone() {
            if qemu {
                actions.extend(self.stop_server());
                if server.tls {
                    actions.push(Action::DropTls);
                }
            }
            actions.push(Action::RemoveSocket(server.addr));
        }
        let pull = self.pull.is_some();
        // Scratch images are never kept; targets only when complete.
        let scratch = self.targets.iter().any(|t| t.cbw.is_some());
        if (pull || status != JobStatus::Completed) && (!self.reuse || scratch) {
            actions.push(Action::RemoveFiles(self.targets.clone()));
        }
        // A begin cut short leaves a checkpoint that no backup holds,
        // pull or push.
        if (status != JobStatus::Completed && !pull) || !self.started {
            actions.extend(self.checkpoint.clone().map(Action::DropCheckpoint));
        }
        let mut job = self.job.clone();
        job.status = status;
        actions.push(Action::Close(job));
        actions
    }

    /// Stops a pull backup's NBD server once: abort, the first disk's
    /// end, or the job's end, whichever comes first.
    fn stop_server(&mut self) -> Vec<Action> {
        match self.pull.as_mut() {
            Some(server) if !server.stopped => {
                server.stopped = true;
                vec![Action::StopServer]
            }
            _ => Vec::new(),
        }
    }

    /// The jobs still running.
    fn running(&self) -> Vec<String> {
        self.disks
            .iter()
            .filter(|d| d.state == DiskState::Running)
            .map(|d| d.job_id.clone())
            .collect()
    }

    /// The targets of the jobs still running.
    pub(in crate::driver) fn running_targets(&self) -> Vec<DiskBackup> {
        let running = self.running();
        self.targets
            .iter()
            .filter(|t| running.contains(&t.job_id))
            .cloned()
            .collect()
    }

    /// The highest index of the block nodes the backup added.
    fn highest_node(&self) -> u32 {
        let scratch = self.targets.iter().filter_map(|t| t.cbw.as_ref());
        let images = self.targets.iter().map(|t| &t.target);
        images
            .chain(scratch.map(|f| &f.scratch))
            .filter_map(|image| node::index(&image.format_node))
            .max()
            .unwrap_or(0)
    }
}

impl BackupRun {
    /// [`step`] on this backup's record.
    pub(in crate::driver) fn apply(&mut self, event: Event) -> Vec<Action> {
        let (record, actions) = step(self.record.clone(), event);
        self.record = record;
        actions
    }
}

/// [`BackupRun::apply`] under the state lock, if `vm` still runs the backup.
fn applied(obj: &DomainObj, vm: &Arc<RunningVm>, event: Event) -> Option<Vec<Action>> {
    let mut st = obj.lock();
    let run = st.backup.as_mut().filter(|r| Arc::ptr_eq(&r.vm, vm))?;
    Some(run.apply(event))
}

impl Driver {
    /// Follows the block jobs of a backup to its end.
    pub(super) async fn follow_backup(
        &self,
        obj: Arc<DomainObj>,
        vm: Arc<RunningVm>,
        mut watch: JobWatch,
    ) {
        loop {
            let event = match watch.next().await {
                Ok(Some(end)) => {
                    crate::fault::arm("backup-end");
                    Event::DiskEnded(end)
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::info!(%err, "backup ended with its QEMU");
                    Event::QemuGone
                }
            };
            let Some(actions) = applied(&obj, &vm, event) else {
                return;
            };
            if self.carry_out(&obj, Some(&vm), actions).await {
                return;
            }
        }
    }

    /// QEMU is gone: its backup ends, cancelled. Returns once the job has
    /// ended, whoever ended it.
    pub(in crate::driver) async fn end_backup_with_qemu(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
    ) {
        match applied(obj, vm, Event::QemuGone) {
            Some(actions) => {
                self.carry_out(obj, Some(vm), actions).await;
            }
            // Another caller is ending it: return once it has.
            None => drop(obj.backup_end.lock().await),
        }
    }

    /// Takes `actions` for the backup running in `vm`, or for the one a
    /// restarted daemon found without its QEMU (`None`). Every step is
    /// tried, failures are logged. Returns whether the job was closed.
    pub(in crate::driver) async fn carry_out(
        &self,
        obj: &Arc<DomainObj>,
        vm: Option<&Arc<RunningVm>>,
        actions: Vec<Action>,
    ) -> bool {
        let mut closed = false;
        // A target still to be synced keeps its write-back through its
        // close: QEMU writes its last metadata then.
        let synced: HashSet<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SyncTarget(disk) => Some(disk.job_id.clone()),
                _ => None,
            })
            .collect();
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            let mon = vm.map(|vm| vm.monitor());
            match (action, mon) {
                (Action::Save, _) => {
                    let record = {
                        let st = obj.lock();
                        let run = st.backup.as_ref();
                        let run = run.filter(|r| vm.is_some_and(|vm| Arc::ptr_eq(&r.vm, vm)));
                        run.map(|r| r.record.clone())
                    };
                    if let Some(record) = record {
                        self.save_backup(obj, record).await;
                    }
                }
                (Action::StopServer, Some(mon)) => nbd::stop_server(mon).await,
                (Action::CleanUp(disk), Some(mon)) => {
                    if !synced.contains(&disk.job_id) {
                        drop(Self::take_writeback(obj, &disk.job_id));
                    }
                    for problem in qbackup::cleanup_disk(mon, &disk).await {
                        tracing::warn!(%problem, "backup cleanup");
                    }
                }
                (Action::Detach(disk), Some(mon)) => {
                    if !synced.contains(&disk.job_id) {
                        drop(Self::take_writeback(obj, &disk.job_id));
                    }
                    for problem in qbackup::undo_disk(mon, &disk).await {
                        tracing::debug!(%problem, "backup cleanup of a job QEMU does not list");
                    }
                }
                (Action::SyncTarget(disk), Some(_)) => {
                    let writeback = Self::take_writeback(obj, &disk.job_id);
                    let target = disk.target;
                    let synced =
                        writeback::sync_closed(target.path.clone(), writeback, target.created);
                    let error = synced.await.err().map(|err| {
                        format!(
                            "unable to sync backup target '{}': {}",
                            target.path.display(),
                            io_error_text(&err)
                        )
                    });
                    let event = Event::TargetSynced {
                        job_id: disk.job_id,
                        error,
                    };
                    // What the sync decides comes next, before the rest.
                    let next = vm
                        .and_then(|vm| applied(obj, vm, event))
                        .unwrap_or_default();
                    for action in next.into_iter().rev() {
                        actions.push_front(action);
                    }
                }
                (Action::Cancel(jobs), Some(mon)) => {
                    for id in jobs {
                        if let Err(err) = qjobs::cancel(mon, &id).await {
                            tracing::warn!(%err, job = %id, "cannot cancel a backup job");
                        }
                    }
                }
                (Action::DropTls, Some(mon)) => nbd::del_tls_creds(mon).await,
                (Action::RemoveSocket(addr), _) => nbd::remove_socket(&addr).await,
                (Action::RemoveFiles(targets), _) => {
                    for problem in qbackup::remove_created_files(&targets).await {
                        tracing::warn!(%problem, "cannot remove a backup target");
                    }
                }
                (Action::DropCheckpoint(name), _) => {
                    self.drop_unbacked_checkpoint(obj, vm, &name).await;
                }
                (Action::Close(job), _) => {
                    closed = true;
                    let preserve = Self::preserving(obj, vm);
                    self.close_backup(obj, vm, job).await;
                    if let Some(vm) = vm.filter(|_| preserve) {
                        self.end_preserve(obj, vm).await;
                    }
                }
                (Action::Notify { path, dst, status }, _) => self.emit(DomainEvent::BlockJob {
                    dom: obj.reference(),
                    path,
                    dst,
                    job_type: BLOCK_JOB_TYPE_BACKUP,
                    status,
                }),
                // Only a start-up without QEMU has no monitor, and its
                // transition asks for none of these; resume_backup starts
                // the follower itself.
                (action, _) => tracing::debug!(?action, "backup action left out"),
            }
        }
        closed
    }

    /// A target's early write-back, taken out of the running backup (and
    /// stopped, unless the caller keeps it).
    fn take_writeback(obj: &DomainObj, job_id: &str) -> Option<EarlyWriteback> {
        obj.lock().backup.as_mut()?.take_writeback(job_id)
    }

    /// The job is over: its final figures, then its event. Without QEMU
    /// (at start-up) there is no running backup to take and no client to
    /// tell.
    async fn close_backup(
        &self,
        obj: &Arc<DomainObj>,
        vm: Option<&Arc<RunningVm>>,
        mut job: JobData,
    ) {
        // From taking the job to its event, nobody else returns from
        // end_backup_with_qemu (QEMU's exit reports the domain stopped only
        // after the event).
        let _ending = obj.backup_end.lock().await;
        let started = {
            let mut st = obj.lock();
            let mut started = true;
            if let Some(vm) = vm {
                if !st.backup.as_ref().is_some_and(|r| Arc::ptr_eq(&r.vm, vm)) {
                    return;
                }
                started = st.backup.take().is_some_and(|r| r.record.started);
            }
            // A begin that was undone leaves no job behind, as one that
            // failed.
            if started {
                job.update_time();
                st.jobs.completed = Some(job.clone());
            }
            started
        };
        self.delete_backup(obj.uuid).await;
        if vm.is_some() && started {
            self.emit(DomainEvent::JobCompleted {
                dom: obj.reference(),
                params: job.params(),
            });
        }
    }

    /// After a restart: follows the backup a previous run of the daemon
    /// started in this (reconnected) QEMU.
    pub(in crate::driver) async fn resume_backup(&self, obj: &Arc<DomainObj>) {
        let record = match self.load_backup(obj).await {
            None => return,
            Some(Ok(record)) => record,
            Some(Err(err)) => {
                tracing::error!(%err, "unreadable backup record; the job is forgotten");
                self.delete_backup(obj.uuid).await;
                return;
            }
        };
        let record_started = record.started;
        let (record, actions) = step(record, Event::Restarted { qemu: true });
        let Some(vm) = obj.lock().live.as_ref().map(|live| live.vm.clone()) else {
            return;
        };
        let run = BackupRun::start(record, vm.clone()).await;
        {
            let mut st = obj.lock();
            let Some(live) = st.live.as_mut().filter(|live| Arc::ptr_eq(&live.vm, &vm)) else {
                return;
            };
            live.next_node = live.next_node.max(run.record.highest_node() + 1);
            st.backup = Some(run);
        }
        let (follow, now): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Follow { .. }));
        let undo = !record_started;
        if undo {
            tracing::warn!(domain = %obj.reference().name, "undoing a backup-begin a previous run did not finish");
        } else {
            tracing::info!(domain = %obj.reference().name, "following the backup a previous run started");
        }
        self.carry_out(obj, Some(&vm), now).await;
        for action in follow {
            if let Action::Follow {
                pending,
                cancelling,
            } = action
            {
                let watch = JobWatch::resume(vm.monitor(), pending, cancelling);
                if undo {
                    // To its end before start-up goes on: the undo drops
                    // the begin's checkpoint before the metadata is loaded
                    // and reconciled, not while it is.
                    self.follow_backup(obj.clone(), vm.clone(), watch).await;
                } else {
                    let (driver, obj, vm) = (self.clone(), obj.clone(), vm.clone());
                    tokio::spawn(async move { driver.follow_backup(obj, vm, watch).await });
                }
            }
        }
    }

    /// After a restart that found the domain's QEMU gone: the backup it
    /// ran is over, cancelled, and its targets go as after any unfinished
    /// push backup.
    pub(in crate::driver) async fn forget_backup(&self, obj: &Arc<DomainObj>) {
        if let Some(Ok(record)) = self.load_backup(obj).await {
            let (_, actions) = step(record, Event::Restarted { qemu: false });
            self.carry_out(obj, None, actions).await;
        }
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
