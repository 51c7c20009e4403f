//! Domain events as the driver raises them, before any wire encoding.
//!
//! The numbers are libvirt's public API enums (virDomainEventType and its
//! detail enums), which clients interpret; they are not XDR.

use super::jobs::TypedParam;
use super::DomainRef;

/// virDomainEventType and its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    DefinedAdded,
    DefinedUpdated,
    UndefinedRemoved,
    StartedBooted,
    SuspendedPaused,
    /// Suspended after the guest powered off during a backup that
    /// preserves the domain (libvirt 11.10's detail 9).
    SuspendedGuestShutdown,
    ResumedUnpaused,
    StoppedShutdown,
    StoppedDestroyed,
    StoppedCrashed,
    StoppedFailed,
    ShutdownFinished,
    ShutdownGuest,
    ShutdownHost,
}

impl Lifecycle {
    /// (event, detail) as virDomainEventType / virDomainEvent*DetailType.
    pub fn codes(self) -> (i32, i32) {
        match self {
            Lifecycle::DefinedAdded => (0, 0),
            Lifecycle::DefinedUpdated => (0, 1),
            Lifecycle::UndefinedRemoved => (1, 0),
            Lifecycle::StartedBooted => (2, 0),
            Lifecycle::SuspendedPaused => (3, 0),
            Lifecycle::SuspendedGuestShutdown => (3, 9),
            Lifecycle::ResumedUnpaused => (4, 0),
            Lifecycle::StoppedShutdown => (5, 0),
            Lifecycle::StoppedDestroyed => (5, 1),
            Lifecycle::StoppedCrashed => (5, 2),
            Lifecycle::StoppedFailed => (5, 5),
            Lifecycle::ShutdownFinished => (6, 0),
            Lifecycle::ShutdownGuest => (6, 1),
            Lifecycle::ShutdownHost => (6, 2),
        }
    }
}

/// virConnectDomainEventBlockJobStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockJobStatus {
    Completed = 0,
    Failed = 1,
    Cancelled = 2,
    Ready = 3,
}

/// virDomainBlockJobType of a backup's block jobs.
pub const BLOCK_JOB_TYPE_BACKUP: i32 = 5;
/// virDomainBlockJobType of the other block jobs (see driver/blockjob).
pub const BLOCK_JOB_TYPE_PULL: i32 = 1;
pub const BLOCK_JOB_TYPE_COPY: i32 = 2;
pub const BLOCK_JOB_TYPE_COMMIT: i32 = 3;
pub const BLOCK_JOB_TYPE_ACTIVE_COMMIT: i32 = 4;

/// One event, for every connection that registered for its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Lifecycle {
        dom: DomainRef,
        event: Lifecycle,
    },
    /// A job ended (VIR_DOMAIN_EVENT_ID_JOB_COMPLETED), with its final
    /// statistics.
    JobCompleted {
        dom: DomainRef,
        params: Vec<TypedParam>,
    },
    /// One disk's block job ended: BLOCK_JOB names the disk by its source
    /// `path`, BLOCK_JOB_2 by its target `dst`.
    BlockJob {
        dom: DomainRef,
        path: String,
        dst: String,
        job_type: i32,
        status: BlockJobStatus,
    },
}

impl DomainEvent {
    pub fn domain(&self) -> &DomainRef {
        match self {
            DomainEvent::Lifecycle { dom, .. }
            | DomainEvent::JobCompleted { dom, .. }
            | DomainEvent::BlockJob { dom, .. } => dom,
        }
    }
}
