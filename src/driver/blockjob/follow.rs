//! A block job from its start to its end: one task per job follows QEMU's
//! events (`ready`, `concluded`), and applies the end as libvirt 9.0's
//! qemu_blockjob.c does; abort and pivot (qemuDomainBlockJobAbort); the
//! jobs a restarted daemon finds in the run directory.
//!
//! The end of a job changes the definitions under the domain's job lock;
//! so an abort that waits for the end (no ASYNC flag) sends its command
//! under that lock and waits after releasing it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::qemu::bitmap as qbitmap;
use crate::qemu::blockjob::{self as qjob, Layer};
use crate::qemu::events::JobStatus;
use crate::qemu::jobs::{self, JobOutcome, JobWatch};
use crate::qemu::snapshot as qsnap;
use crate::qemu::writeback::{self, EarlyWriteback};
use crate::qemu::{node, QemuError, RunningVm};

use super::super::error::{DriverError, ErrorKind};
use super::super::events::{BlockJobStatus, DomainEvent};
use super::super::registry::DomainObj;
use super::super::store::OverlayBase;
use super::super::{DomainRef, Driver};
use super::{abort_flags, BlockJob, Kind, State};

/// How a job ended, for a caller waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Completed,
    Failed(Option<String>),
    Cancelled,
    /// QEMU went away first.
    Gone,
}

/// Set once, when a job's end has been applied.
#[derive(Debug)]
pub struct EndSignal(watch::Sender<Option<Ended>>);

impl Default for EndSignal {
    fn default() -> Self {
        EndSignal(watch::channel(None).0)
    }
}

impl EndSignal {
    fn send(&self, ended: Ended) {
        self.0.send_replace(Some(ended));
    }

    /// Gone, unless the end was told already.
    fn gone(&self) {
        self.0.send_if_modified(|v| {
            let unset = v.is_none();
            if unset {
                *v = Some(Ended::Gone);
            }
            unset
        });
    }

    async fn wait(&self) -> Ended {
        let mut rx = self.0.subscribe();
        let result = rx.wait_for(Option::is_some).await;
        match result {
            Ok(value) => value.clone().unwrap_or(Ended::Gone),
            Err(_) => Ended::Gone,
        }
    }
}

impl Driver {
    /// Records a job before QEMU is asked to start it: a daemon killed
    /// in between finds the record, and asks QEMU, when it comes back.
    pub(super) async fn record_job(&self, obj: &Arc<DomainObj>, job: BlockJob) {
        {
            let mut st = obj.lock();
            if let Some(live) = st.live.as_mut() {
                live.blockjobs.push(job);
            }
        }
        self.save_block_jobs(obj).await;
    }

    /// Whether the copy's image is one the job made (known once it is).
    pub(super) fn set_mirror_created(&self, obj: &DomainObj, id: &str, created: bool) {
        let mut st = obj.lock();
        let job = st
            .live
            .as_mut()
            .and_then(|l| l.blockjobs.iter_mut().find(|j| j.id == id));
        if let Some(mirror) = job.and_then(|j| j.mirror.as_mut()) {
            mirror.created = created;
        }
    }

    /// Drops the record of a job QEMU refused to start.
    pub(super) async fn forget_job(&self, obj: &Arc<DomainObj>, id: &str) {
        {
            let mut st = obj.lock();
            if let Some(live) = st.live.as_mut() {
                live.blockjobs.retain(|j| j.id != id);
            }
        }
        self.save_block_jobs(obj).await;
    }

    /// Follows a recorded job QEMU accepted.
    pub(super) fn job_started(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        id: String,
        watch: JobWatch,
    ) {
        let driver = self.clone();
        let (obj, vm) = (obj.clone(), vm.clone());
        tokio::spawn(async move { driver.follow(obj, vm, id, watch).await });
    }

    /// The jobs a previous run of the daemon recorded for this QEMU: each
    /// is followed again; what ended meanwhile is applied now.
    pub(in crate::driver) async fn resume_block_jobs(&self, obj: &Arc<DomainObj>) {
        let uuid = obj.uuid;
        let loaded = self
            .store_io(move |s| {
                let path = s.domain_run_dir(&uuid).join("blockjobs.json");
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(serde_json::from_slice::<Vec<BlockJob>>(&bytes).ok()),
                    Err(_) => Ok(None),
                }
            })
            .await;
        let Ok(Some(jobs)) = loaded else {
            return;
        };
        let Ok(vm) = self.running_vm_of(obj) else {
            return;
        };
        if jobs.iter().any(|j| j.kind == Kind::Copy) {
            // A copy's image creation a dead daemon left concluded.
            let patience = std::time::Duration::from_secs(30);
            if let Err(err) = qsnap::settle_jobs(vm.monitor(), "create-", patience).await {
                tracing::warn!(%err, "cannot end an image creation job");
            }
        }
        for job in jobs {
            let cancelling = (job.state == State::Aborting).then(|| job.id.clone());
            let watch = JobWatch::resume(vm.monitor(), [job.id.clone()], cancelling);
            let id = job.id.clone();
            {
                let mut st = obj.lock();
                if let Some(live) = st.live.as_mut() {
                    // A copy's image took a node number of its own.
                    let mirror = job.mirror.as_ref().and_then(|m| node::index(&m.layer.node));
                    if let Some(n) = mirror {
                        live.next_node = live.next_node.max(n + 1);
                    }
                    live.blockjobs.push(job);
                }
            }
            tracing::info!(job = %id, "following a block job started before the restart");
            let driver = self.clone();
            let (obj, vm) = (obj.clone(), vm.clone());
            tokio::spawn(async move { driver.follow(obj, vm, id, watch).await });
        }
    }

    async fn follow(&self, obj: Arc<DomainObj>, vm: Arc<RunningVm>, id: String, watch: JobWatch) {
        let (signal, flushed) = {
            let st = obj.lock();
            let job = st
                .live
                .as_ref()
                .and_then(|l| l.blockjobs.iter().find(|j| j.id == id));
            let flushed: Vec<((), PathBuf)> = job
                .map(|j| {
                    j.flushed_images()
                        .into_iter()
                        .map(|p| ((), p.into()))
                        .collect()
                })
                .unwrap_or_default();
            (job.map(|j| j.ended.clone()), flushed)
        };
        // As for a backup's target (qemu/writeback.rs): what QEMU flushes
        // at the job's end (the image the job fills, a commit's top that
        // it closes) goes to the disk while the job copies, so that the
        // flush at the pivot or the end is short.
        let writeback = writeback::start_all(flushed).await;
        self.follow_to_end(obj, vm, id, watch, writeback).await;
        // Whatever took the job away (QEMU's end, a destroy), a caller
        // waiting for it is told.
        if let Some(signal) = signal {
            signal.gone();
        }
    }

    async fn follow_to_end(
        &self,
        obj: Arc<DomainObj>,
        vm: Arc<RunningVm>,
        id: String,
        mut watch: JobWatch,
        mut writeback: Vec<((), EarlyWriteback)>,
    ) {
        let mon = vm.monitor();
        let mut ready_checked = false;
        let outcome = loop {
            let step = if ready_checked {
                watch.next().await.map(|end| end.map(|e| e.outcome))
            } else {
                watch
                    .wait_status(&id, JobStatus::ready)
                    .await
                    .map(|()| None)
            };
            match step {
                Ok(Some(outcome)) => break outcome,
                Ok(None) if !ready_checked => {
                    ready_checked = true;
                    // Ready (or over): the bulk of the copy is written; a
                    // job mirroring for hours needs no syncs meanwhile.
                    writeback.clear();
                    if watch.pending().contains(&id) {
                        self.job_ready(&obj, &id).await;
                    }
                }
                Ok(None) => break JobOutcome::Vanished,
                Err(QemuError::NotRunning) => {
                    self.job_gone(&obj, &id).await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, job = %id, "cannot read the block job's state; retrying");
                    if mon.is_closed() {
                        self.job_gone(&obj, &id).await;
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        };
        if outcome != JobOutcome::Vanished {
            if let Err(err) = jobs::dismiss(mon, &id).await {
                tracing::warn!(%err, job = %id, "cannot dismiss the block job");
            }
        }
        let _job = obj.job.lock().await;
        self.apply_end(&obj, &vm, &id, outcome).await;
    }

    /// QEMU says the job mirrors: it can be pivoted (events READY).
    async fn job_ready(&self, obj: &Arc<DomainObj>, id: &str) {
        let event = {
            let mut st = obj.lock();
            let Some(live) = st.live.as_mut() else {
                return;
            };
            let Some(job) = live.blockjobs.iter_mut().find(|j| j.id == id) else {
                return;
            };
            if job.state == State::Running {
                job.state = State::Ready;
            }
            if job.ready_sent {
                None
            } else {
                job.ready_sent = true;
                let (disk, kind) = (job.disk.clone(), job.kind);
                let path = live
                    .def
                    .disk_by_target(&disk)
                    .and_then(|d| d.source())
                    .unwrap_or_default()
                    .to_string();
                Some((disk, kind, path))
            }
        };
        self.save_block_jobs(obj).await;
        if let Some((disk, kind, path)) = event {
            self.emit_block_job(obj.reference(), path, disk, kind, BlockJobStatus::Ready);
        }
    }

    fn emit_block_job(
        &self,
        dom: DomainRef,
        path: String,
        dst: String,
        kind: Kind,
        status: BlockJobStatus,
    ) {
        self.emit(DomainEvent::BlockJob {
            dom,
            path,
            dst,
            job_type: kind.code(),
            status,
        });
    }

    /// QEMU went away under the job: nothing changed in the definitions
    /// (libvirt sends no event either).
    async fn job_gone(&self, obj: &Arc<DomainObj>, id: &str) {
        let job = {
            let mut st = obj.lock();
            st.live.as_mut().and_then(|live| {
                let at = live.blockjobs.iter().position(|j| j.id == id)?;
                Some(live.blockjobs.remove(at))
            })
        };
        if let Some(job) = job {
            job.ended.send(Ended::Gone);
        }
    }

    /// The end of a job, as qemuBlockJobEventProcessConcluded applies it.
    async fn apply_end(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        id: &str,
        outcome: JobOutcome,
    ) {
        let job = {
            let st = obj.lock();
            st.live
                .as_ref()
                .and_then(|l| l.blockjobs.iter().find(|j| j.id == id).cloned())
        };
        let Some(job) = job else {
            return;
        };
        let mon = vm.monitor();
        let outcome = match outcome {
            JobOutcome::Vanished => self.vanished_outcome(obj, vm, &job).await,
            other => other,
        };
        let aborting = job.state == State::Aborting;
        let (status, ended) = match outcome {
            JobOutcome::Completed if !aborting => (BlockJobStatus::Completed, Ended::Completed),
            JobOutcome::Failed(msg) if !aborting => {
                (BlockJobStatus::Failed, Ended::Failed(Some(msg)))
            }
            JobOutcome::Vanished => (BlockJobStatus::Failed, Ended::Failed(None)),
            _ => (BlockJobStatus::Cancelled, Ended::Cancelled),
        };
        let completed = status == BlockJobStatus::Completed;
        // A copy is pivoted only when asked to; otherwise its end leaves
        // the disk where it was. A daemon that died between asking and
        // recording it left a pivot only QEMU's device shows.
        let switched = completed
            && (job.kind != Kind::Copy
                || job.state == State::Pivoting
                || self.on_mirror(obj, vm, &job).await);
        if switched {
            // Before the old layers' nodes go: their bitmaps are read.
            self.merge_bitmaps(mon, &job).await;
            for problem in qjob::drop_layers(mon, &job.removed).await {
                tracing::warn!(%problem, job = %id, "cannot delete a block node the job left unused");
            }
            if job.delete {
                for layer in job.removed.iter().filter(|l| !l.block) {
                    if let Err(err) = tokio::fs::remove_file(&layer.path).await {
                        tracing::warn!(%err, path = %layer.path, "Unable to remove snapshot image file");
                    }
                }
            }
        } else if let Some(mirror) = &job.mirror {
            // The pivot's write bitmap goes with the copy's nodes.
            for problem in qjob::drop_layers(mon, std::slice::from_ref(&mirror.layer)).await {
                tracing::warn!(%problem, job = %id, "cannot delete the copy's block nodes");
            }
        } else if let (Kind::ActiveCommit, Some(base)) = (job.kind, &job.base) {
            // A pivot that did not happen (qemuBlockJobProcessEventFailedActiveCommit).
            if let Err(err) = qbitmap::remove_activewrite(mon, &base.node).await {
                tracing::warn!(%err, job = %id, "cannot remove the pivot's write bitmap");
            }
        }
        let new_top = if switched {
            match job.kind {
                Kind::ActiveCommit => job.base.clone(),
                Kind::Copy => job.mirror.as_ref().map(|m| m.layer.clone()),
                Kind::Pull | Kind::Commit => None,
            }
        } else {
            None
        };
        let path = {
            let mut st = obj.lock();
            let Some(live) = st.live.as_mut() else {
                return;
            };
            if switched {
                follow_chain(&mut live.overlays, &job);
            }
            if let (Some(top), Some(index)) = (
                &new_top,
                new_top.as_ref().and_then(|l| node::index(&l.node)),
            ) {
                if let Some(disk) = live.def.disk_by_target_mut(&job.disk) {
                    disk.set_image(&top.path, top.block, &top.format, index);
                }
            }
            live.blockjobs.retain(|j| j.id != id);
            live.def
                .disk_by_target(&job.disk)
                .and_then(|d| d.source())
                .unwrap_or_default()
                .to_string()
        };
        // The persistent definition follows when it named the same image,
        // for a transient copy job too (qemuBlockJobRewriteConfigDiskSource).
        // The three records are independent files: written side by side.
        let config = async {
            let Some(top) = &new_top else {
                return Ok(());
            };
            self.change_config(obj, |config| {
                if let Some(disk) = config.disk_by_target_mut(&job.disk) {
                    if disk.source() == Some(job.top.path.as_str()) {
                        let index = disk.node_index();
                        disk.set_image(&top.path, top.block, &top.format, index);
                    }
                }
            })
            .await
        };
        let (config, live) = tokio::join!(config, self.try_save_live(obj));
        // The job's record goes only once the records that apply its end
        // are written: otherwise a restarted daemon finds the job again,
        // learns its end from QEMU and applies it once more.
        match config.and(live) {
            Ok(()) => self.save_block_jobs(obj).await,
            Err(err) => {
                tracing::warn!(%err, job = %id, "cannot record a block job's end; it is applied again after a restart");
            }
        }
        self.emit_block_job(obj.reference(), path, job.disk.clone(), job.kind, status);
        job.ended.send(ended);
    }

    /// The checkpoint bitmaps of the layers a completed job took out of
    /// the disk's chain, merged into the image the disk runs on now, in
    /// one transaction with the removal of the pivot's write bitmap, as
    /// libvirt 9.0 does when the job concludes
    /// (qemuBlockBitmapsHandleBlockcopy, qemuBlockBitmapsHandleCommitFinish,
    /// qemuBlockJobProcessEventCompletedPullBitmaps): a copy's destination
    /// gets every layer's bitmaps (a shallow copy the top's), an active
    /// commit's base those of the layers above it, a pull's top those of
    /// the pulled layers. A commit below the active layer merges nothing:
    /// it was refused if it had to (start.rs). Failures are logged, as
    /// libvirt ignores them.
    async fn merge_bitmaps(&self, mon: &crate::qemu::Monitor, job: &BlockJob) {
        let chain: Vec<String> = job.chain.iter().map(|l| l.node.clone()).collect();
        let base_at = |base: &Option<Layer>| {
            base.as_ref()
                .and_then(|b| chain.iter().position(|n| *n == b.node))
                .unwrap_or(chain.len())
        };
        let (end, target, write) = match (job.kind, &job.mirror, &job.base) {
            (Kind::Copy, Some(mirror), _) => {
                let end = if mirror.shallow { 1 } else { chain.len() };
                (end, mirror.layer.node.clone(), true)
            }
            (Kind::ActiveCommit, _, Some(base)) => (base_at(&job.base), base.node.clone(), true),
            (Kind::Pull, _, _) => (base_at(&job.base), job.top.node.clone(), false),
            _ => return,
        };
        if chain.is_empty() {
            return;
        }
        let write = write.then_some(target.as_str());
        if let Err(err) = qbitmap::merge_chain(mon, &chain, end, &target, write).await {
            tracing::warn!(%err, job = %job.id, "cannot merge the checkpoint bitmaps");
        }
    }

    /// A job QEMU no longer lists (it ended while no daemon watched, and
    /// someone dismissed it): what QEMU has open tells how it ended.
    async fn vanished_outcome(
        &self,
        obj: &DomainObj,
        vm: &RunningVm,
        job: &BlockJob,
    ) -> JobOutcome {
        let mon = vm.monitor();
        let Some(now) = self.device_now(obj, vm, job).await else {
            return JobOutcome::Vanished;
        };
        let completed = match job.kind {
            Kind::ActiveCommit => job.base.as_ref().is_some_and(|b| b.node == now),
            Kind::Copy => job.mirror.as_ref().is_some_and(|m| m.layer.node == now),
            Kind::Pull | Kind::Commit => match qjob::chain(mon, &now).await {
                Ok(chain) => job
                    .removed
                    .iter()
                    .all(|r| !chain.iter().any(|l| l.node == r.node)),
                Err(_) => false,
            },
        };
        if completed {
            JobOutcome::Completed
        } else {
            JobOutcome::Vanished
        }
    }

    /// The node the job's disk device reads now.
    async fn device_now(&self, obj: &DomainObj, vm: &RunningVm, job: &BlockJob) -> Option<String> {
        let alias = {
            let st = obj.lock();
            st.live
                .as_ref()
                .and_then(|l| l.def.disk_by_target(&job.disk))
                .map(|d| d.alias())
        }?;
        qjob::device_node(vm.monitor(), &alias).await.ok().flatten()
    }

    /// Whether the disk's device reads the copy's image.
    async fn on_mirror(&self, obj: &DomainObj, vm: &RunningVm, job: &BlockJob) -> bool {
        let Some(mirror) = &job.mirror else {
            return false;
        };
        self.device_now(obj, vm, job).await.as_deref() == Some(mirror.layer.node.as_str())
    }

    /// virDomainBlockJobAbort.
    pub async fn block_job_abort(
        &self,
        dom: &DomainRef,
        path: &str,
        flags: u32,
    ) -> Result<(), DriverError> {
        use abort_flags::*;
        DriverError::check_flags(flags, ASYNC | PIVOT, "qemuDomainBlockJobAbort")?;
        let obj = self.domain(dom)?;
        let job_lock = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        let found = self.find_job(&obj, path)?;
        let Some(job) = found.job else {
            return Err(DriverError::invalid_arg(format!(
                "disk {} does not have an active block job",
                found.disk
            )));
        };
        if matches!(job.state, State::Aborting | State::Pivoting) {
            return Err(DriverError::operation_invalid(format!(
                "block job on disk '{}' is still being ended",
                found.disk
            )));
        }
        let pivot = flags & PIVOT != 0;
        let mon = found.vm.monitor();
        let next = if pivot {
            if job.state != State::Ready {
                return Err(DriverError::new(
                    ErrorKind::BlockCopyActive,
                    format!("block job '{}' not ready for pivot yet", job.id),
                ));
            }
            if matches!(job.kind, Kind::Pull | Kind::Commit) {
                return Err(DriverError::operation_invalid(format!(
                    "job type '{}' does not support pivot",
                    job.kind.name()
                )));
            }
            // qemuBlockPivot: the image the disk switches to counts the
            // writes from here on in a temporary bitmap, which the merge
            // at the job's end folds into the checkpoint bitmaps. Like
            // libvirt, a failure here does not stop the pivot.
            let switch_to = match job.kind {
                Kind::Copy => job.mirror.as_ref().map(|m| m.layer.node.as_str()),
                Kind::ActiveCommit => job.base.as_ref().map(|b| b.node.as_str()),
                Kind::Pull | Kind::Commit => None,
            };
            if let Some(node) = switch_to {
                if let Err(err) = qbitmap::add_activewrite(mon, node).await {
                    tracing::warn!(%err, job = %job.id, "cannot add the pivot's write bitmap");
                }
            }
            qjob::complete(mon, &job.id).await?;
            State::Pivoting
        } else {
            qjob::cancel(mon, &job.id).await?;
            State::Aborting
        };
        {
            let mut st = obj.lock();
            let live = st.live.as_mut();
            if let Some(j) = live.and_then(|l| l.blockjobs.iter_mut().find(|j| j.id == job.id)) {
                j.state = next;
            }
        }
        self.save_block_jobs(&obj).await;
        drop(job_lock);
        if flags & ASYNC != 0 {
            return Ok(());
        }
        match job.ended.wait().await {
            Ended::Failed(msg) if pivot => Err(DriverError::new(
                ErrorKind::OperationFailed,
                match msg {
                    Some(msg) => format!("block job '{}' failed while pivoting: {msg}", job.id),
                    None => format!("block job '{}' failed while pivoting", job.id),
                },
            )),
            Ended::Gone => Err(DriverError::not_running()),
            _ => Ok(()),
        }
    }
}

/// The overlays a snapshot recorded for the disk, after a job took
/// `job.removed` out of its chain (or, for a copy, moved the disk): the
/// ones that went are forgotten, the ones above them sit on the job's
/// base now, and a shallow copy's image sits on the old top's backing.
fn follow_chain(overlays: &mut Vec<OverlayBase>, job: &BlockJob) {
    let index = |l: &Layer| node::index(&l.node);
    let gone: Vec<u32> = job.removed.iter().filter_map(index).collect();
    let below = job.base.as_ref().and_then(index);
    let top = index(&job.top);
    let mine = |o: &OverlayBase| o.disk == job.disk;
    overlays.retain(|o| !mine(o) || !gone.contains(&o.overlay));
    match (job.kind, &job.mirror) {
        (Kind::Copy, Some(mirror)) => {
            overlays.retain(|o| !mine(o) || Some(o.overlay) != top);
            if let (true, Some(m), Some(b)) = (mirror.shallow, index(&mirror.layer), below) {
                overlays.push(OverlayBase {
                    disk: job.disk.clone(),
                    overlay: m,
                    base: b,
                    path: mirror.layer.path.clone(),
                });
            }
        }
        // A pull without a base leaves the top on its own.
        (Kind::Pull, _) if below.is_none() => {
            overlays.retain(|o| !mine(o) || Some(o.overlay) != top);
        }
        _ => {
            for o in overlays
                .iter_mut()
                .filter(|o| mine(o) && gone.contains(&o.base))
            {
                if let Some(b) = below {
                    o.base = b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u32) -> Layer {
        Layer {
            node: node::format(n),
            storage: Some(node::storage(n)),
            path: format!("/i/{n}"),
            format: "qcow2".into(),
            block: false,
        }
    }

    fn overlay(overlay: u32, base: u32) -> OverlayBase {
        OverlayBase {
            disk: "vda".into(),
            overlay,
            base,
            path: format!("/i/{overlay}"),
        }
    }

    fn job(kind: Kind, top: u32, removed: &[u32], base: Option<u32>) -> BlockJob {
        BlockJob {
            disk: "vda".into(),
            kind,
            id: "j".into(),
            state: State::Running,
            top: layer(top),
            removed: removed.iter().map(|&n| layer(n)).collect(),
            base: base.map(layer),
            chain: Vec::new(),
            mirror: None,
            delete: false,
            ready_sent: false,
            ended: Arc::default(),
        }
    }

    #[test]
    fn the_recorded_overlays_follow_commits_and_pulls() {
        // 4 on 3 on 2 on 1; 3 and 2 committed into 1.
        let mut o = vec![overlay(2, 1), overlay(3, 2), overlay(4, 3)];
        follow_chain(&mut o, &job(Kind::Commit, 4, &[3, 2], Some(1)));
        assert_eq!(o, [overlay(4, 1)]);
        // The active layer committed: nothing is left on top.
        follow_chain(&mut o, &job(Kind::ActiveCommit, 4, &[4], Some(1)));
        assert!(o.is_empty());
        // A pull of everything into the top.
        let mut o = vec![overlay(2, 1), overlay(3, 2)];
        follow_chain(&mut o, &job(Kind::Pull, 3, &[2, 1], None));
        assert!(o.is_empty());
    }
}
