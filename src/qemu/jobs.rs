//! QEMU jobs (blockdev-create, backup, snapshot, commit): how they are
//! followed to their end, or to a status where they wait for a command.
//!
//! # What goes over QMP, and where libvirt 9.0 does the same
//!
//! - A `JOB_STATUS_CHANGE` event with status `concluded` says that a job
//!   ended, not how: [`JobWatch::next`] then sends `query-jobs` and reads
//!   the job's `error` and progress, as qemuBlockJobEventProcessConcluded
//!   does. No error means success; an error means failure, except for a
//!   job we asked to cancel, which counts as cancelled whatever QEMU says
//!   (libvirt's ABORTING state).
//! - After a reconnect the events of the gap are gone, so the first
//!   [`JobWatch::next`] of a [`JobWatch::resume`]d watch asks `query-jobs`
//!   first, as qemuBlockJobRefreshJobs does: concluded jobs are reported
//!   at once, jobs QEMU no longer knows are [`JobOutcome::Vanished`], the
//!   rest are waited for. A receiver that fell behind does the same.
//! - [`dismiss`] is `job-dismiss {id}` (qemuMonitorJobDismiss); jobs are
//!   started with `auto-dismiss: false`, so a concluded job stays listed
//!   until then, and a restarted daemon can still read its result.
//! - [`cancel`] is `block-job-cancel {device, force: true}`, what
//!   qemuMonitorBlockJobCancel sends for backup jobs (not `job-cancel`).
//!
//! `query-jobs` is read as libvirt's qemuMonitorJSONGetJobInfoOne reads
//! it: an unknown type or status, or a missing progress number, does not
//! fail the reply.

use std::collections::{HashSet, VecDeque};

use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::debug;

use super::error::QemuError;
use super::events::{JobStatus, QmpEvent};
use super::monitor::Monitor;

/// One entry of `query-jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// QEMU's job type ("backup", "create", ...), as sent.
    pub job_type: String,
    /// The status; `None` for one this build does not know.
    pub status: Option<JobStatus>,
    /// Work done, in the job's own unit (bytes for a backup).
    pub current: u64,
    /// Work in total, same unit; it may grow while the job runs.
    pub total: u64,
    /// QEMU's error message, once a job has failed (or was cancelled).
    pub error: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// It did its work.
    Completed,
    /// It was cancelled on our request.
    Cancelled,
    /// It failed; QEMU's error text.
    Failed(String),
    /// QEMU does not know it (any more): dismissed by someone else, or
    /// never started. libvirt drops such jobs ("untracked by qemu").
    Vanished,
}

/// A job's end, with the progress QEMU reported at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// The job id.
    pub id: String,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Work done (0 for a vanished job).
    pub current: u64,
    /// Work in total (0 for a vanished job).
    pub total: u64,
}

/// Every job as `query-jobs` lists it.
pub async fn query_jobs(mon: &Monitor) -> Result<Vec<JobInfo>, QemuError> {
    let reply = mon.execute_value("query-jobs", Value::Null).await?;
    parse_jobs(&reply)
}

/// Reads a `query-jobs` reply; only a reply that is not an array fails.
pub fn parse_jobs(reply: &Value) -> Result<Vec<JobInfo>, QemuError> {
    let Value::Array(jobs) = reply else {
        return Err(QemuError::Protocol(
            "query-jobs reply was not an array".into(),
        ));
    };
    Ok(jobs
        .iter()
        .map(|job| {
            let text = |key| job.get(key).and_then(Value::as_str);
            let number = |key| job.get(key).and_then(Value::as_u64).unwrap_or(0);
            JobInfo {
                id: text("id").unwrap_or_default().to_owned(),
                job_type: text("type").unwrap_or_default().to_owned(),
                status: job
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok()),
                current: number("current-progress"),
                total: number("total-progress"),
                error: text("error").map(str::to_owned),
            }
        })
        .collect())
}

/// `job-dismiss`: forgets a concluded job. libvirt reports QEMU's refusal
/// of an inactive job as "No active block job '%s'"; so does this.
pub async fn dismiss(mon: &Monitor, id: &str) -> Result<(), QemuError> {
    let result = mon
        .execute(qapi::qmp::job_dismiss { id: id.to_owned() })
        .await;
    block_job_result(result, id)
}

/// `block-job-cancel {device: id, force: true}`. A concluded job refuses
/// ("... cannot accept command verb 'cancel'"), as in libvirt.
pub async fn cancel(mon: &Monitor, id: &str) -> Result<(), QemuError> {
    let result = mon
        .execute(qapi::qmp::block_job_cancel {
            device: id.to_owned(),
            force: Some(true),
        })
        .await;
    block_job_result(result, id)
}

/// qemuMonitorJSONBlockJobError: QEMU's DeviceNotActive class gets
/// libvirt's own words.
fn block_job_result<T>(result: Result<T, QemuError>, id: &str) -> Result<(), QemuError> {
    match result {
        Ok(_) => Ok(()),
        Err(QemuError::CommandFailed { class, .. }) if class == "DeviceNotActive" => {
            Err(QemuError::NoActiveJob { id: id.to_owned() })
        }
        Err(e) => Err(e),
    }
}

/// Follows a set of jobs until each has concluded.
///
/// Create it *before* the command that starts the jobs ([`JobWatch::new`]):
/// it subscribes to events at once, so a job that concludes before the
/// command's reply is still seen.
#[derive(Debug)]
pub struct JobWatch {
    mon: Monitor,
    events: broadcast::Receiver<QmpEvent>,
    pending: Vec<String>,
    cancelling: HashSet<String>,
    /// Events may have been missed: ask `query-jobs` before waiting.
    stale: bool,
    ready: VecDeque<JobEnd>,
}

impl JobWatch {
    /// Watches `ids`, which are about to be started.
    pub fn new(mon: &Monitor, ids: impl IntoIterator<Item = String>) -> JobWatch {
        JobWatch {
            events: mon.events(),
            mon: mon.clone(),
            pending: ids.into_iter().collect(),
            cancelling: HashSet::new(),
            stale: false,
            ready: VecDeque::new(),
        }
    }

    /// Watches `ids`, started before (by an earlier run of the daemon);
    /// `cancelling` are those we had asked to cancel.
    pub fn resume(
        mon: &Monitor,
        ids: impl IntoIterator<Item = String>,
        cancelling: impl IntoIterator<Item = String>,
    ) -> JobWatch {
        let mut watch = JobWatch::new(mon, ids);
        watch.cancelling.extend(cancelling);
        watch.stale = true;
        watch
    }

    /// Makes the next wait ask `query-jobs` first: a job may have reached
    /// the status waited for before anyone watched its events.
    pub fn recheck(&mut self) {
        self.stale = true;
    }

    /// Jobs not reported by [`JobWatch::next`] yet, in the order given.
    pub fn pending(&self) -> &[String] {
        &self.pending
    }

    /// Whether `id` was marked as being cancelled.
    pub fn is_cancelling(&self, id: &str) -> bool {
        self.cancelling.contains(id)
    }

    /// Records that we asked QEMU to cancel `id`: its end counts as
    /// cancelled, whatever QEMU reports.
    pub fn mark_cancelling(&mut self, id: &str) {
        self.cancelling.insert(id.to_owned());
    }

    /// Waits for the next job to conclude and reports how it ended;
    /// `None` once every job has been reported. The job is not dismissed.
    ///
    /// Fails with [`QemuError::NotRunning`] when the monitor closes, or
    /// with the error of the `query-jobs` that reads the result (the job
    /// stays pending, so calling again retries).
    pub async fn next(&mut self) -> Result<Option<JobEnd>, QemuError> {
        loop {
            if let Some(end) = self.ready.pop_front() {
                return Ok(Some(end));
            }
            if self.pending.is_empty() {
                return Ok(None);
            }
            self.step(None).await?;
        }
    }

    /// Waits until job `id` reaches `status`: a job that waits for a
    /// command (`ready` for `job-complete`, `pending` for `job-finalize`).
    /// A job that ends before ends the wait too; [`JobWatch::next`] then
    /// reports how. Fails as [`JobWatch::next`] does.
    pub async fn wait_status(&mut self, id: &str, status: JobStatus) -> Result<(), QemuError> {
        while self.pending.iter().any(|p| p == id) {
            if self.step(Some((id, status))).await? {
                break;
            }
        }
        Ok(())
    }

    /// Takes in what happened next — what `query-jobs` says after events
    /// may have been missed, else the next event — and files the jobs that
    /// concluded. Says whether it saw the job `wanted` at its status.
    async fn step(&mut self, wanted: Option<(&str, JobStatus)>) -> Result<bool, QemuError> {
        if self.stale {
            let jobs = query_jobs(&self.mon).await?;
            self.stale = false;
            let pending = self.pending.clone();
            for id in pending {
                match jobs.iter().find(|job| job.id == id) {
                    Some(job) if job.status == Some(JobStatus::concluded) => {
                        self.conclude(job);
                    }
                    Some(_) => {}
                    None => self.vanish(&id),
                }
            }
            let seen = wanted.is_some_and(|(id, status)| {
                jobs.iter()
                    .any(|job| job.id == id && job.status == Some(status))
            });
            return Ok(seen);
        }
        // The watch's own monitor handle keeps the event channel open,
        // so a QEMU that dies shows only as the monitor closing. Events
        // already queued come first (`biased`).
        let received = tokio::select! {
            biased;
            received = self.events.recv() => received,
            () = self.mon.closed() => return Err(QemuError::NotRunning),
        };
        let event = match received {
            Ok(event) => event,
            Err(RecvError::Lagged(lost)) => {
                debug!(lost, "job events lost; asking query-jobs");
                self.stale = true;
                return Ok(false);
            }
            Err(RecvError::Closed) => return Err(QemuError::NotRunning),
        };
        let Some((id, status)) = status_change(&event) else {
            return Ok(false);
        };
        if wanted == Some((id.as_str(), status)) {
            return Ok(true);
        }
        if status != JobStatus::concluded || !self.pending.contains(&id) {
            return Ok(false);
        }
        let jobs = query_jobs(&self.mon).await.inspect_err(|_| {
            // The event is consumed; the next call must look again.
            self.stale = true;
        })?;
        match jobs.iter().find(|job| job.id == id) {
            Some(job) => self.conclude(job),
            None => self.vanish(&id),
        }
        Ok(false)
    }

    fn conclude(&mut self, job: &JobInfo) {
        let outcome = match &job.error {
            _ if self.cancelling.contains(&job.id) => JobOutcome::Cancelled,
            None => JobOutcome::Completed,
            Some(error) => JobOutcome::Failed(error.clone()),
        };
        self.pending.retain(|p| *p != job.id);
        self.ready.push_back(JobEnd {
            id: job.id.clone(),
            outcome,
            current: job.current,
            total: job.total,
        });
    }

    fn vanish(&mut self, id: &str) {
        self.pending.retain(|p| p != id);
        self.ready.push_back(JobEnd {
            id: id.to_owned(),
            outcome: JobOutcome::Vanished,
            current: 0,
            total: 0,
        });
    }
}

/// The id and status of a JOB_STATUS_CHANGE event.
fn status_change(event: &QmpEvent) -> Option<(String, JobStatus)> {
    let change = event.decode::<qapi::qmp::JOB_STATUS_CHANGE>()?;
    Some((change.id, change.status))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_query_jobs_as_libvirt_does() {
        let reply = json!([
            {"current-progress": 1, "status": "concluded", "total-progress": 1,
             "type": "create", "id": "create-libvirt-3-format"},
            {"current-progress": 67108864, "status": "concluded", "total-progress": 67108864,
             "type": "backup", "id": "backup-vda-libvirt-2-format", "error": "Operation canceled"},
            {"status": "brand-new", "type": "teleport", "id": "odd"},
        ]);
        let jobs = parse_jobs(&reply).unwrap();
        assert_eq!(
            jobs[1],
            JobInfo {
                id: "backup-vda-libvirt-2-format".into(),
                job_type: "backup".into(),
                status: Some(JobStatus::concluded),
                current: 64 << 20,
                total: 64 << 20,
                error: Some("Operation canceled".into()),
            }
        );
        assert_eq!(jobs[0].error, None);
        assert_eq!(
            (jobs[2].status, jobs[2].current, jobs[2].job_type.as_str()),
            (None, 0, "teleport")
        );
        assert!(parse_jobs(&json!({})).is_err());
    }
}
