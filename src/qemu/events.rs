//! What QEMU tells us without being asked: QMP events, and the process's end.
//!
//! [`QmpEvent`] is an event as the monitor read it (name, data, timestamp),
//! kept as JSON so that no event is ever lost for failing to match a type.
//! [`VmEvent`] is what the driver consumes: the few events it acts on, typed,
//! everything else as [`VmEvent::Other`], and finally [`VmEvent::Exited`].

use serde::Deserialize;
use serde_json::Value;

pub use qapi::qmp::{
    BlockErrorAction, IoOperationType, JobStatus, JobType, RunState, ShutdownCause,
};

/// When QEMU emitted an event (QEMU's wall clock; `-1` if it had none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// One QMP event as received.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// The event name, e.g. "JOB_STATUS_CHANGE".
    pub name: String,
    /// The `data` member (`Null` if absent).
    pub data: Value,
    /// The `timestamp` member.
    pub timestamp: Timestamp,
}

impl QmpEvent {
    /// Builds an event from a decoded QMP message that has an `event` member.
    pub(crate) fn from_message(mut msg: serde_json::Map<String, Value>) -> Option<QmpEvent> {
        let name = match msg.remove("event") {
            Some(Value::String(name)) => name,
            _ => return None,
        };
        let timestamp = msg
            .remove("timestamp")
            .and_then(|t| Timestamp::deserialize(t).ok())
            .unwrap_or(Timestamp {
                seconds: -1,
                microseconds: -1,
            });
        let data = msg.remove("data").unwrap_or(Value::Null);
        Some(QmpEvent {
            name,
            data,
            timestamp,
        })
    }

    /// The data as the typed qapi event `E`, if this is that event and its
    /// data matches the schema the qapi crate was generated from.
    pub fn decode<E: qapi::Event>(&self) -> Option<E> {
        if self.name != E::NAME {
            return None;
        }
        E::deserialize(&self.data).ok()
    }
}

/// How the QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ended but was not our child (we reconnected to it), so its status
    /// is not ours to collect.
    Unknown,
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }
}

/// What happened to a running VM, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum VmEvent {
    /// SHUTDOWN: the guest (`guest: true`) or the host asked to power off.
    /// QEMU runs without `-no-shutdown`, so [`VmEvent::Exited`] follows.
    Shutdown {
        /// Whether the guest itself initiated it.
        guest: bool,
        /// QEMU's reason, e.g. `host_signal` after SIGTERM.
        reason: ShutdownCause,
    },
    /// STOP: the vCPUs were paused.
    Stop,
    /// RESUME: the vCPUs run again.
    Resume,
    /// JOB_STATUS_CHANGE of the job `id`.
    JobStatusChange {
        /// The job id we gave it.
        id: String,
        /// Its new status.
        status: JobStatus,
    },
    /// BLOCK_JOB_COMPLETED; `error` is set if the job failed.
    BlockJobCompleted {
        /// The job id (QMP calls it `device`).
        device: String,
        /// backup, mirror, commit, ...
        job_type: JobType,
        /// Total work.
        len: i64,
        /// Work done.
        offset: i64,
        /// QEMU's error message, if the job failed.
        error: Option<String>,
    },
    /// BLOCK_JOB_CANCELLED.
    BlockJobCancelled {
        /// The job id.
        device: String,
        /// The job type.
        job_type: JobType,
        /// Total work.
        len: i64,
        /// Work done.
        offset: i64,
    },
    /// BLOCK_JOB_ERROR: an I/O error with the given action taken.
    BlockJobError {
        /// The job id.
        device: String,
        /// Read or write.
        operation: IoOperationType,
        /// What QEMU did about it.
        action: BlockErrorAction,
    },
    /// BLOCK_JOB_READY (mirror-like jobs).
    BlockJobReady {
        /// The job id.
        device: String,
        /// The job type.
        job_type: JobType,
        /// Total work.
        len: i64,
        /// Work done.
        offset: i64,
    },
    /// Any other event, or a known one whose data did not decode.
    Other(QmpEvent),
    /// Events were dropped because a receiver fell this far behind; the
    /// driver should re-query state (query-jobs, query-status).
    Lost(u64),
    /// The QEMU process is gone. Always the last event.
    Exited(Exit),
}

impl VmEvent {
    /// The typed form of a QMP event.
    pub fn from_qmp(ev: QmpEvent) -> VmEvent {
        use qapi::qmp;
        let typed = match ev.name.as_str() {
            "SHUTDOWN" => ev.decode::<qmp::SHUTDOWN>().map(|d| VmEvent::Shutdown {
                guest: d.guest,
                reason: d.reason,
            }),
            "STOP" => Some(VmEvent::Stop),
            "RESUME" => Some(VmEvent::Resume),
            "JOB_STATUS_CHANGE" => {
                ev.decode::<qmp::JOB_STATUS_CHANGE>()
                    .map(|d| VmEvent::JobStatusChange {
                        id: d.id,
                        status: d.status,
                    })
            }
            "BLOCK_JOB_COMPLETED" => {
                ev.decode::<qmp::BLOCK_JOB_COMPLETED>()
                    .map(|d| VmEvent::BlockJobCompleted {
                        device: d.device,
                        job_type: d.type_,
                        len: d.len,
                        offset: d.offset,
                        error: d.error,
                    })
            }
            "BLOCK_JOB_CANCELLED" => {
                ev.decode::<qmp::BLOCK_JOB_CANCELLED>()
                    .map(|d| VmEvent::BlockJobCancelled {
                        device: d.device,
                        job_type: d.type_,
                        len: d.len,
                        offset: d.offset,
                    })
            }
            "BLOCK_JOB_ERROR" => {
                ev.decode::<qmp::BLOCK_JOB_ERROR>()
                    .map(|d| VmEvent::BlockJobError {
                        device: d.device,
                        operation: d.operation,
                        action: d.action,
                    })
            }
            "BLOCK_JOB_READY" => {
                ev.decode::<qmp::BLOCK_JOB_READY>()
                    .map(|d| VmEvent::BlockJobReady {
                        device: d.device,
                        job_type: d.type_,
                        len: d.len,
                        offset: d.offset,
                    })
            }
            _ => None,
        };
        typed.unwrap_or(VmEvent::Other(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> QmpEvent {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            panic!("not an object: {text}");
        };
        QmpEvent::from_message(map).expect("an event")
    }

    #[test]
    fn typed_events() {
        let ev = event(
            r#"{"timestamp": {"seconds": 1763786916, "microseconds": 762545}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-signal"}}"#,
        );
        assert_eq!(ev.timestamp.seconds, 1763786916);
        assert!(matches!(
            VmEvent::from_qmp(ev),
            VmEvent::Shutdown {
                guest: false,
                reason: ShutdownCause::host_signal
            }
        ));
        let ev = event(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "JOB_STATUS_CHANGE", "data": {"status": "concluded", "id": "backup-vda-libvirt-2-format"}}"#,
        );
        assert_eq!(
            VmEvent::from_qmp(ev),
            VmEvent::JobStatusChange {
                id: "backup-vda-libvirt-2-format".into(),
                status: JobStatus::concluded
            }
        );
        let ev = event(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BLOCK_JOB_COMPLETED", "data": {"device": "j", "len": 10, "offset": 10, "speed": 0, "type": "backup"}}"#,
        );
        assert!(matches!(
            VmEvent::from_qmp(ev),
            VmEvent::BlockJobCompleted {
                job_type: JobType::backup,
                len: 10,
                error: None,
                ..
            }
        ));
        let ev = event(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}"#);
        assert_eq!(VmEvent::from_qmp(ev), VmEvent::Resume);
    }

    #[test]
    fn unknown_or_malformed_events_are_kept() {
        let ev = event(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "NIC_RX_FILTER_CHANGED", "data": {"path": "/x"}}"#,
        );
        assert!(
            matches!(VmEvent::from_qmp(ev), VmEvent::Other(e) if e.name == "NIC_RX_FILTER_CHANGED")
        );
        // A known name with data that does not fit the schema is not lost.
        let ev = event(r#"{"event": "JOB_STATUS_CHANGE", "data": {"id": 5}}"#);
        assert_eq!(ev.timestamp.seconds, -1);
        assert!(matches!(VmEvent::from_qmp(ev), VmEvent::Other(_)));
    }
}
