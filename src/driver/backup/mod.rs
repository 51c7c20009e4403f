//! Backups as domain jobs, push and pull.
//!
//! - [`begin`]: backup-begin, from the XML to the jobs running in QEMU, or
//!   nothing left behind.
//! - [`follow`]: each disk's job ending, the job's end, abort, a restarted
//!   daemon taking the job back; decided by a pure transition
//!   ([`follow::step`]).
//!
//! The queries (backup-dumpxml, domjobinfo, job stats, block-job info)
//! and abort are in `driver/jobs.rs`.
//!
//! One backup per domain at a time. The domain's job lock is held only
//! while the backup is set up; the copy itself runs in QEMU, followed by a
//! task of its own, so every other call on the domain (list, dumpxml,
//! checkpoints, domjobinfo, abort) answers while it runs. A second
//! backup-begin is refused at once (libvirtd makes the caller wait 30 s
//! for its job lock first).

mod begin;
mod follow;
mod preserve;

#[cfg(test)]
pub(super) use preserve::BEGIN_PRESERVE_SHUTDOWN_DOMAIN;

use std::sync::Arc;

use crate::qemu::writeback::{self, EarlyWriteback};
use crate::qemu::RunningVm;

use super::error::DriverError;
use super::registry::DomainObj;
use super::{Driver, Uuid};

use follow::BackupRecord;
pub(super) use follow::Event;

/// A backup that is running in `vm`.
pub struct BackupRun {
    pub(super) record: BackupRecord,
    pub(super) vm: Arc<RunningVm>,
    /// A push target's early write-back, by block job id, until the
    /// target's last sync (or the job's cleanup, when it did not complete).
    pub(super) writeback: Vec<(String, EarlyWriteback)>,
}

impl BackupRun {
    /// The run of `record`, with an early write-back for each push target
    /// still copied into.
    async fn start(record: BackupRecord, vm: Arc<RunningVm>) -> BackupRun {
        let targets = record
            .running_targets()
            .into_iter()
            .filter(|t| !t.fleece)
            .map(|t| (t.job_id, t.target.path))
            .collect();
        BackupRun {
            writeback: writeback::start_all(targets).await,
            record,
            vm,
        }
    }

    /// The job `job_id` ended: its target's write-back, to be finished or
    /// dropped.
    fn take_writeback(&mut self, job_id: &str) -> Option<EarlyWriteback> {
        let at = self.writeback.iter().position(|(job, _)| job == job_id)?;
        Some(self.writeback.swap_remove(at).1)
    }
}

impl Driver {
    /// Records the running backup, so that a restarted daemon can follow
    /// it; failing that only costs the follow-up after a restart.
    async fn save_backup(&self, obj: &DomainObj, record: BackupRecord) {
        let uuid = obj.uuid;
        if let Err(err) = self.store_io(move |s| s.save_backup(&uuid, &record)).await {
            tracing::warn!(%err, "cannot record the running backup");
        }
    }

    async fn load_backup(&self, obj: &DomainObj) -> Option<Result<BackupRecord, DriverError>> {
        let uuid = obj.uuid;
        self.store_io(move |s| Ok(s.load_backup(&uuid)))
            .await
            .unwrap_or_else(|err| Some(Err(err)))
    }

    async fn delete_backup(&self, uuid: Uuid) {
        let deleted = self.store_io(move |s| {
            s.delete_backup(&uuid);
            Ok(())
        });
        if let Err(err) = deleted.await {
            tracing::warn!(%err, "cannot remove the backup record");
        }
    }
}
