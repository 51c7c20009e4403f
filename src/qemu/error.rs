//! The one error type of the qemu layer.
//!
//! The driver branches on [`QemuError::kind`], never on message text. The
//! `Display` of each variant is the detail libvirt 9.0 would print for the
//! same failure (without libvirt's per-code prefix such as "internal error: ",
//! which the rpc layer adds), so the driver can pass it through unchanged.

use std::io;

/// What went wrong, in the few classes the driver needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QemuErrorKind {
    /// The QEMU process or its monitor is gone; libvirt says "domain is not
    /// running" (VIR_ERR_OPERATION_INVALID).
    NotRunning,
    /// QEMU answered a command with an error (VIR_ERR_INTERNAL_ERROR).
    CommandFailed,
    /// QEMU exited while being started; the message carries its own words.
    StartFailed,
    /// A run directory already belongs to a live QEMU.
    AlreadyRunning,
    /// Something libvirt reports as VIR_ERR_INTERNAL_ERROR with this exact
    /// text, e.g. bad JSON given to monitor passthrough.
    Internal,
    /// Something the caller passed cannot be turned into a command line or a
    /// QMP message.
    InvalidInput,
    /// Waiting for QEMU took too long.
    Timeout,
    /// QEMU said something that is not QMP as we know it.
    Protocol,
    /// A system call failed (files, sockets, processes).
    Io,
    /// A QEMU job ended in failure, e.g. formatting a backup target
    /// (VIR_ERR_OPERATION_FAILED).
    JobFailed,
    /// The job named is not active in QEMU (VIR_ERR_OPERATION_INVALID).
    NoActiveJob,
    /// A checkpoint's bitmap cannot be used (VIR_ERR_CHECKPOINT_INCONSISTENT).
    BrokenBitmap,
}

/// Errors of the qemu layer. See the module documentation for the rule on
/// messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// The monitor connection is closed (QEMU exited or was never reached).
    #[error("domain is not running")]
    NotRunning,

    /// A QMP `error` reply. Mirrors qemuMonitorJSONCheckErrorFull in
    /// libvirt's qemu_monitor_json.c: the message carries the command name
    /// and QEMU's `desc`, never the class.
    #[error("unable to execute QEMU command '{command}': {desc}")]
    CommandFailed {
        /// The `execute` name.
        command: String,
        /// QEMU's error class, e.g. "GenericError" (empty if QEMU gave none).
        class: String,
        /// QEMU's description; "unknown QEMU command error" when the error
        /// object lacks `class` or `desc`, as in libvirt.
        desc: String,
    },

    /// A reply with neither `return` nor `error` (libvirt's text for it).
    #[error("unable to execute QEMU command '{command}'")]
    NoReturn {
        /// The `execute` name.
        command: String,
    },

    /// QEMU exited (or closed the monitor) before it was up. `log` is the
    /// tail of what QEMU wrote to its log during this start, trimmed the way
    /// libvirt's qemuProcessReadLog trims it.
    #[error("{}", start_failed_message(log))]
    StartFailed {
        /// QEMU's own words, possibly empty.
        log: String,
    },

    /// The run directory's pidfile names a live QEMU.
    #[error("a QEMU process (pid {pid}) is already running for this domain")]
    AlreadyRunning {
        /// The live process.
        pid: i32,
    },

    /// A failure libvirt reports as an internal error with this text.
    #[error("{0}")]
    Internal(String),

    /// The caller's input cannot be used as given.
    #[error("{0}")]
    InvalidInput(String),

    /// Waiting for something took too long.
    #[error("{0}")]
    Timeout(String),

    /// QEMU sent something we cannot make sense of.
    #[error("{0}")]
    Protocol(String),

    /// A QEMU job ended in failure; libvirt's words for it.
    #[error("{0}")]
    JobFailed(String),

    /// QEMU refused a job command with DeviceNotActive.
    #[error("No active block job '{id}'")]
    NoActiveJob {
        /// The job id.
        id: String,
    },

    /// The bitmap an incremental backup needs is missing or unusable.
    #[error("missing or broken bitmap '{bitmap}' for disk '{disk}'")]
    BrokenBitmap {
        /// The checkpoint's bitmap name.
        bitmap: String,
        /// The disk's target name, e.g. "vda".
        disk: String,
    },

    /// A system call failed; `context` says which, `source` says why.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl QemuError {
    /// The class of the error, for control flow and for the wire mapping.
    pub fn kind(&self) -> QemuErrorKind {
        match self {
            QemuError::NotRunning => QemuErrorKind::NotRunning,
            QemuError::CommandFailed { .. } | QemuError::NoReturn { .. } => {
                QemuErrorKind::CommandFailed
            }
            QemuError::StartFailed { .. } => QemuErrorKind::StartFailed,
            QemuError::AlreadyRunning { .. } => QemuErrorKind::AlreadyRunning,
            QemuError::Internal(_) => QemuErrorKind::Internal,
            QemuError::InvalidInput(_) => QemuErrorKind::InvalidInput,
            QemuError::Timeout(_) => QemuErrorKind::Timeout,
            QemuError::Protocol(_) => QemuErrorKind::Protocol,
            QemuError::Io { .. } => QemuErrorKind::Io,
            QemuError::JobFailed(_) => QemuErrorKind::JobFailed,
            QemuError::NoActiveJob { .. } => QemuErrorKind::NoActiveJob,
            QemuError::BrokenBitmap { .. } => QemuErrorKind::BrokenBitmap,
        }
    }

    /// Shorthand for an [`QemuError::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        QemuError::Io {
            context: context.into(),
            source,
        }
    }
}

fn start_failed_message(log: &str) -> String {
    if log.is_empty() {
        "qemu unexpectedly closed the monitor".to_owned()
    } else {
        format!("qemu unexpectedly closed the monitor: {log}")
    }
}
