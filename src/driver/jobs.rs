//! Domain jobs as libvirt reports them: the running job's statistics, the
//! last finished job's, and their translation into virTypedParameters;
//! the calls that read them (domjobinfo, job stats, block-job info,
//! backup-dumpxml) and abort the job.
//!
//! Only backups are jobs here. The numbers follow libvirt 9.0's QEMU driver
//! (qemu_domainjob.c, qemu_backup.c): a running backup reports the
//! progress QEMU gives for its block jobs, added to what the disks whose
//! copy already ended transferred; a finished one keeps the final figures
//! until a client reads them with COMPLETED (and without KEEP_COMPLETED).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::qemu::backup as qbackup;

use super::backup::Event as BackupEvent;
use super::error::{DriverError, ErrorKind};
use super::events::BLOCK_JOB_TYPE_BACKUP;
use super::registry::DomainObj;
use super::{DomainRef, Driver};

/// virDomainJobType.
pub mod job_type {
    pub const NONE: i32 = 0;
    pub const UNBOUNDED: i32 = 2;
    pub const COMPLETED: i32 = 3;
    pub const FAILED: i32 = 4;
    pub const CANCELLED: i32 = 5;
}

/// virDomainJobOperation.
pub const OPERATION_BACKUP: i32 = 9;

/// virDomainGetJobStatsFlags.
pub mod stats_flags {
    pub const COMPLETED: u32 = 1;
    pub const KEEP_COMPLETED: u32 = 2;
}

/// virDomainAbortJobFlagsValues.
pub const ABORT_JOB_POSTCOPY: u32 = 1;

/// One virTypedParameter, as the driver hands it to the wire layer.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedParam {
    pub field: String,
    pub value: ParamValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Boolean(bool),
    String(String),
}

impl TypedParam {
    pub(super) fn new(field: &str, value: ParamValue) -> TypedParam {
        TypedParam {
            field: field.to_string(),
            value,
        }
    }
}

/// virDomainJobStatus, the part a backup passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Active,
    Completed,
    Failed,
    Cancelled,
}

/// Bytes a backup has moved: `total`/`transferred` for push (target
/// writes), `tmp_*` for pull (scratch use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    pub total: u64,
    pub transferred: u64,
    pub tmp_used: u64,
    pub tmp_total: u64,
}

/// What libvirt calls virDomainJobData, for a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobData {
    pub operation: i32,
    pub status: JobStatus,
    /// Wall-clock start in ms since the epoch, for a restarted daemon.
    pub started_ms: u64,
    pub elapsed_ms: u64,
    pub stats: BackupStats,
    pub errmsg: Option<String>,
}

/// The legacy virDomainJobInfo (GET_JOB_INFO), in its own field order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobInfo {
    pub job_type: i32,
    pub time_elapsed: u64,
    pub data_total: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    pub file_total: u64,
    pub file_processed: u64,
    pub file_remaining: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl JobData {
    pub fn backup(started_ms: u64) -> JobData {
        JobData {
            operation: OPERATION_BACKUP,
            status: JobStatus::Active,
            started_ms,
            elapsed_ms: 0,
            stats: BackupStats::default(),
            errmsg: None,
        }
    }

    /// Elapsed time now, as qemuDomainJobDataUpdateTime computes it.
    pub fn update_time(&mut self) {
        self.elapsed_ms = now_ms().saturating_sub(self.started_ms);
    }

    pub fn job_type(&self) -> i32 {
        match self.status {
            JobStatus::Active => job_type::UNBOUNDED,
            JobStatus::Completed => job_type::COMPLETED,
            JobStatus::Failed => job_type::FAILED,
            JobStatus::Cancelled => job_type::CANCELLED,
        }
    }

    /// The parameters of GET_JOB_STATS and of the job-completed event, in
    /// libvirt's order; zero counters are left out, as libvirt does.
    pub fn params(&self) -> Vec<TypedParam> {
        let s = &self.stats;
        let mut out = vec![
            TypedParam::new("operation", ParamValue::Int(self.operation)),
            TypedParam::new("time_elapsed", ParamValue::ULLong(self.elapsed_ms)),
        ];
        if s.transferred > 0 || s.total > 0 {
            out.push(TypedParam::new("disk_total", ParamValue::ULLong(s.total)));
            out.push(TypedParam::new(
                "disk_processed",
                ParamValue::ULLong(s.transferred),
            ));
            out.push(TypedParam::new(
                "disk_remaining",
                ParamValue::ULLong(s.total.saturating_sub(s.transferred)),
            ));
        }
        if s.tmp_used > 0 || s.tmp_total > 0 {
            out.push(TypedParam::new(
                "disk_temp_used",
                ParamValue::ULLong(s.tmp_used),
            ));
            out.push(TypedParam::new(
                "disk_temp_total",
                ParamValue::ULLong(s.tmp_total),
            ));
        }
        if self.status != JobStatus::Active {
            out.push(TypedParam::new(
                "success",
                ParamValue::Boolean(self.status == JobStatus::Completed),
            ));
        }
        if let Some(msg) = &self.errmsg {
            out.push(TypedParam::new("errmsg", ParamValue::String(msg.clone())));
        }
        out
    }

    pub fn info(&self) -> JobInfo {
        let s = &self.stats;
        let remaining = s.total.saturating_sub(s.transferred);
        JobInfo {
            job_type: self.job_type(),
            time_elapsed: self.elapsed_ms,
            data_total: s.total,
            data_processed: s.transferred,
            data_remaining: remaining,
            file_total: s.total,
            file_processed: s.transferred,
            file_remaining: remaining,
        }
    }
}

/// A domain's job bookkeeping.
#[derive(Debug, Default)]
pub struct Jobs {
    /// Statistics of the last job that ended, until read with COMPLETED.
    pub completed: Option<JobData>,
}

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
    /// MiB/s (bytes/s with VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES).
    pub bandwidth: u64,
}

impl Driver {
    /// virDomainBackupGetXMLDesc.
    pub fn backup_get_xml_desc(&self, dom: &DomainRef, flags: u32) -> Result<String, DriverError> {
        let obj = self.domain(dom)?;
        DriverError::check_flags(flags, 0, "qemuBackupGetXMLDesc")?;
        let st = obj.lock();
        st.backup
            .as_ref()
            .map(|run| run.record.xml.clone())
            .ok_or_else(|| {
                DriverError::new(ErrorKind::NoDomainBackup, "no domain backup job present")
            })
    }

    /// virDomainGetJobStats.
    pub async fn get_job_stats(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<(i32, Vec<TypedParam>), DriverError> {
        use stats_flags::*;
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
            None => (job_type::NONE, Vec::new()),
        })
    }

    /// virDomainGetJobInfo.
    pub async fn get_job_info(&self, dom: &DomainRef) -> Result<JobInfo, DriverError> {
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
                return Err(DriverError::inactive());
            }
            let Some(run) = &st.backup else {
                return Ok(None);
            };
            let record = &run.record;
            (run.vm.clone(), record.job.clone(), record.running_targets())
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
        if let Some((job_type, bandwidth, cur, end)) =
            self.client_block_job_info(&obj, path, flags).await?
        {
            return Ok(Some(BlockJobInfo {
                job_type,
                cur,
                end,
                bandwidth,
            }));
        }
        let (vm, target) = {
            let st = obj.lock();
            let live = st.live.as_ref().ok_or_else(DriverError::inactive)?;
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
                let mut running = run.record.running_targets().into_iter();
                running.find(|t| t.disk == disk.target())
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
        // The speed `blockjob --bandwidth` gave the copy (driver/blockjob).
        let speed = crate::qemu::blockjob::query(vm.monitor())
            .await?
            .get(&target.job_id)
            .map_or(0, |j| j.speed);
        let bandwidth = if flags & BLOCK_JOB_INFO_BANDWIDTH_BYTES == 0 {
            speed.div_ceil(1 << 20)
        } else {
            speed
        };
        Ok(Some(BlockJobInfo {
            job_type: BLOCK_JOB_TYPE_BACKUP,
            cur,
            end,
            bandwidth,
        }))
    }

    /// virDomainAbortJob / virDomainAbortJobFlags: cancels the backup's
    /// block jobs; the job ends (cancelled) when QEMU confirms.
    pub async fn abort_job(&self, dom: &DomainRef, flags: u32) -> Result<(), DriverError> {
        crate::fault::arm("backup-abort");
        DriverError::check_flags(flags, ABORT_JOB_POSTCOPY, "qemuDomainAbortJobFlags")?;
        let obj = self.domain(dom)?;
        let (vm, actions) = {
            let mut st = obj.lock();
            if st.live.is_none() {
                return Err(DriverError::inactive());
            }
            let Some(run) = st.backup.as_mut() else {
                return Err(DriverError::operation_invalid(
                    "no job is active on the domain",
                ));
            };
            if flags & ABORT_JOB_POSTCOPY != 0 {
                return Err(DriverError::operation_invalid(
                    "current job is not outgoing migration in post-copy mode",
                ));
            }
            (run.vm.clone(), run.apply(BackupEvent::Abort))
        };
        self.carry_out(&obj, Some(&vm), actions).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(params: &[TypedParam]) -> Vec<&str> {
        params.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_running_backup_reports_progress_without_success() {
        let mut job = JobData::backup(0);
        assert_eq!(names(&job.params()), ["operation", "time_elapsed"]);
        job.stats.total = 100;
        job.stats.transferred = 40;
        let params = job.params();
        assert_eq!(
            names(&params),
            [
                "operation",
                "time_elapsed",
                "disk_total",
                "disk_processed",
                "disk_remaining"
            ]
        );
        assert_eq!(params[4].value, ParamValue::ULLong(60));
        assert_eq!(job.job_type(), job_type::UNBOUNDED);
    }

    #[test]
    fn a_finished_backup_says_whether_it_succeeded_and_why_not() {
        let mut job = JobData::backup(0);
        job.status = JobStatus::Cancelled;
        job.errmsg = Some("Operation canceled".into());
        let params = job.params();
        assert_eq!(
            names(&params),
            ["operation", "time_elapsed", "success", "errmsg"]
        );
        assert_eq!(params[2].value, ParamValue::Boolean(false));
        assert_eq!(job.job_type(), job_type::CANCELLED);
        assert_eq!(job.info().job_type, job_type::CANCELLED);
    }
}
