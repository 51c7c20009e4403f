//! Folding an external snapshot's overlays back into the images below
//! them: the QEMU half of deleting an external snapshot, in steps a
//! caller can record between, so that a crash at any point is finished
//! the same way (`driver/snapshot/fold.rs` records the steps).
//!
//! - [`prepare`] brings every disk's `block-commit` to the point where it
//!   waits for us: `ready` for the disk's active layer (the job then
//!   mirrors the guest's writes into the base), `pending` for a layer
//!   below it (the data is in the base; the chain is unchanged yet). Jobs
//!   a dead daemon left are adopted; folds already done are skipped.
//! - [`switch`] then ends every job the way that changes the disks:
//!   `job-complete` (the device moves to the base), `job-finalize` (the
//!   layer above takes the base as its backing file); and deletes the
//!   folded overlays' nodes.
//! - [`abandon`] ends the jobs without changing anything instead.
//! - [`offline`] does a fold with `qemu-img` once QEMU is gone.
//!
//! Ids are `commit-DISK-libvirt-K-format`, K the folded overlay's, so a
//! restarted daemon finds its jobs by name.

use std::path::Path;

use serde_json::json;

use super::blockjob::Layer;
use super::error::QemuError;
use super::events::JobStatus;
use super::jobs::{self, JobOutcome, JobWatch};
use super::monitor::Monitor;
use super::node;

/// One disk's overlay to fold into the image below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub disk: String,
    /// K of the disk's active layer when the delete began.
    pub active: u32,
    /// K of the overlay folded away.
    pub top: u32,
    /// K of the image it goes into.
    pub base: u32,
    /// The base's name as the layer above the overlay is to record it
    /// (a fold below the active layer only).
    pub backing_file: String,
}

impl Fold {
    pub fn job_id(&self) -> String {
        format!("commit-{}-{}", self.disk, node::format(self.top))
    }

    /// The overlay is the disk's active layer: the job mirrors, and ends
    /// by moving the guest's device to the base.
    pub fn is_active(&self) -> bool {
        self.active == self.top
    }

    fn waits_at(&self) -> JobStatus {
        if self.is_active() {
            JobStatus::ready
        } else {
            JobStatus::pending
        }
    }
}

/// Folds brought to their switch by [`prepare`]: their jobs wait for
/// [`switch`] or [`abandon`].
#[derive(Debug)]
pub struct Prepared {
    watch: JobWatch,
    waiting: Vec<Fold>,
}

impl Prepared {
    /// Whether a job moves a device at the switch (the guest must not
    /// write meanwhile, see `driver/snapshot/fold.rs`).
    pub fn moves_a_device(&self) -> bool {
        self.waiting.iter().any(Fold::is_active)
    }
}

/// Brings each fold not done yet to the state where it waits for the
/// switch: an existing job of ours is adopted, a fold whose overlay QEMU
/// still runs on is started. A job that fails on the way fails the whole;
/// the caller then [`abandon`]s.
pub async fn prepare(mon: &Monitor, folds: &[Fold]) -> Result<Prepared, QemuError> {
    let existing = jobs::query_jobs(mon).await?;
    let mut waiting = Vec::new();
    let mut adopted = Vec::new();
    let mut start = Vec::new();
    for fold in folds {
        let id = fold.job_id();
        match existing.iter().find(|j| j.id == id) {
            Some(job) if job.status == Some(JobStatus::concluded) => {
                // Ended while nobody watched: it either switched or not;
                // the chain tells.
                jobs::dismiss(mon, &id).await?;
                if folded(mon, fold).await? {
                    drop_top(mon, fold).await;
                } else {
                    start.push(fold.clone());
                }
            }
            Some(_) => adopted.push(fold.clone()),
            None if folded(mon, fold).await? => drop_top(mon, fold).await,
            None => start.push(fold.clone()),
        }
    }
    let mut watch = JobWatch::resume(
        mon,
        adopted.iter().chain(&start).map(Fold::job_id),
        std::iter::empty(),
    );
    for fold in &start {
        let mut args = json!({
            "device": node::format(fold.active),
            "job-id": fold.job_id(),
            "top-node": node::format(fold.top),
            "base-node": node::format(fold.base),
            "auto-finalize": fold.is_active(),
            "auto-dismiss": false,
        });
        if !fold.is_active() {
            args["backing-file"] = json!(fold.backing_file);
        }
        mon.execute_value("block-commit", args).await?;
    }
    waiting.extend(adopted);
    waiting.extend(start);
    for fold in &waiting {
        let id = fold.job_id();
        watch.recheck();
        watch.wait_status(&id, fold.waits_at()).await?;
        if !watch.pending().contains(&id) {
            // It ended before it got there: only a failure does that.
            let end = watch.next().await?;
            let _ = jobs::dismiss(mon, &id).await;
            let why = match end.map(|e| e.outcome) {
                Some(JobOutcome::Failed(error)) => error,
                _ => "the job ended early".into(),
            };
            return Err(QemuError::JobFailed(format!("block commit failed: {why}")));
        }
    }
    Ok(Prepared { watch, waiting })
}

/// Ends every prepared job so that the disks change: each overlay leaves
/// its chain, and its nodes are deleted.
pub async fn switch(mon: &Monitor, prepared: Prepared) -> Result<(), QemuError> {
    let Prepared { mut watch, waiting } = prepared;
    for fold in &waiting {
        let verb = if fold.is_active() {
            "job-complete"
        } else {
            "job-finalize"
        };
        mon.execute_value(verb, json!({ "id": fold.job_id() }))
            .await?;
    }
    let mut failed = None;
    while let Some(end) = watch.next().await? {
        if let Err(e) = jobs::dismiss(mon, &end.id).await {
            tracing::warn!(%e, id = end.id, "cannot dismiss the job");
        }
        match end.outcome {
            JobOutcome::Completed => {}
            JobOutcome::Failed(error) => failed = Some(error),
            _ => failed = Some(format!("{}: did not complete", end.id)),
        }
    }
    if let Some(error) = failed {
        return Err(QemuError::JobFailed(format!(
            "block commit failed: {error}"
        )));
    }
    for fold in &waiting {
        drop_top(mon, fold).await;
    }
    Ok(())
}

/// Ends the folds' jobs, wherever they are, without changing the disks:
/// a mirroring commit stops mirroring, a pending one is cancelled.
pub async fn abandon(mon: &Monitor, folds: &[Fold]) -> Result<(), QemuError> {
    let ids: Vec<String> = jobs::query_jobs(mon)
        .await?
        .into_iter()
        .map(|j| j.id)
        .filter(|id| folds.iter().any(|f| f.job_id() == *id))
        .collect();
    let mut watch = JobWatch::resume(mon, ids.clone(), ids.clone());
    for id in &ids {
        match jobs::cancel(mon, id).await {
            // A concluded job refuses; it is dismissed below.
            Ok(()) | Err(QemuError::CommandFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    while let Some(end) = watch.next().await? {
        jobs::dismiss(mon, &end.id).await?;
    }
    Ok(())
}

/// Whether the fold's overlay has left its disk's chain: the device (for
/// the active layer) or the layer above no longer runs on it.
async fn folded(mon: &Monitor, fold: &Fold) -> Result<bool, QemuError> {
    let top = node::format(fold.top);
    if fold.is_active() {
        return Ok(!super::snapshot::active_nodes(mon).await?.contains(&top));
    }
    let chain = super::blockjob::chain(mon, &node::format(fold.active)).await?;
    Ok(!chain.iter().any(|layer| layer.node == top))
}

/// The image below the fold's overlay, as QEMU has it open (path,
/// format, device or file).
pub async fn base_layer(mon: &Monitor, fold: &Fold) -> Result<Option<Layer>, QemuError> {
    let base = node::format(fold.base);
    let chain = super::blockjob::chain(mon, &node::format(fold.active)).await?;
    Ok(chain.into_iter().find(|layer| layer.node == base))
}

/// Deletes the folded overlay's nodes, those still there.
async fn drop_top(mon: &Monitor, fold: &Fold) {
    for node in [node::format(fold.top), node::storage(fold.top)] {
        match mon
            .execute_value("blockdev-del", json!({ "node-name": node }))
            .await
        {
            Ok(_) => {}
            // Already gone (an earlier run deleted it).
            Err(QemuError::CommandFailed { ref desc, .. }) if desc.contains("not found") => {}
            Err(e) => tracing::warn!(%e, node, "cannot delete a folded overlay's node"),
        }
    }
}

/// A fold with `qemu-img`, QEMU gone: the overlay's data goes into the
/// image below (the overlay keeps it too, `-d`), and for a layer below
/// the active one, `above` — the image that had the overlay as backing
/// file — takes the base instead. Done twice, it changes nothing more.
pub async fn offline(
    qemu_img: &Path,
    overlay: &Path,
    above: Option<(&Path, &str, &str)>,
) -> Result<(), QemuError> {
    super::snapshot::run_tool(
        tokio::process::Command::new(qemu_img)
            .args(["commit", "-q", "-d"])
            .arg(overlay),
    )
    .await?;
    if let Some((above, backing, format)) = above {
        super::snapshot::run_tool(
            tokio::process::Command::new(qemu_img)
                .args(["rebase", "-q", "-u", "-b", backing, "-F", format])
                .arg(above),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(active: u32, top: u32) -> Fold {
        Fold {
            disk: "vda".into(),
            active,
            top,
            base: 2,
            backing_file: "/i/vda.qcow2".into(),
        }
    }

    #[test]
    fn ids_name_the_disk_and_the_overlay() {
        assert_eq!(fold(4, 4).job_id(), "commit-vda-libvirt-4-format");
        assert!(fold(4, 4).is_active());
        assert!(!fold(4, 3).is_active());
        assert_eq!(fold(4, 3).waits_at(), JobStatus::pending);
    }
}
