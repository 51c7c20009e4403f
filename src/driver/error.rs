//! The driver's one error type.
//!
//! A [`DriverError`] carries a small, stable [`ErrorKind`] that callers
//! branch on and that `rpc::error` maps 1:1 onto libvirt's virErrorNumber,
//! plus the detail text exactly as libvirt words it. The per-code prefix
//! ("Domain not found: ", "Operation not supported: ", ...) is *not* part of
//! the detail: the rpc layer adds it, as libvirt's virerror.c does.

use thiserror::Error;

/// What went wrong, in libvirt's terms. Each variant is one virErrorNumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    InternalError,
    NoSupport,
    NoConnect,
    InvalidArg,
    OperationFailed,
    NoSource,
    NoTarget,
    NoName,
    XmlError,
    OperationDenied,
    XmlDetail,
    SystemError,
    Rpc,
    NoDomain,
    OperationInvalid,
    ConfigUnsupported,
    OperationTimeout,
    NoDomainSnapshot,
    ArgumentUnsupported,
    OperationAborted,
    OperationUnsupported,
    Overflow,
    /// VIR_ERR_BLOCK_COPY_ACTIVE: a block job is in the way.
    BlockCopyActive,
    XmlInvalidSchema,
    ResourceBusy,
    InvalidDomainCheckpoint,
    NoDomainCheckpoint,
    NoDomainBackup,
    CheckpointInconsistent,
    MultipleDomains,
    NoHostname,
}

/// Which part of libvirt would have raised the error (virErrorDomain).
/// virsh does not print it, but libvirt-python exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    None,
    Xml,
    Rpc,
    Qemu,
    Remote,
    Domain,
    Cpu,
    DomainSnapshot,
    DomainCheckpoint,
    Storage,
    Network,
    NodeDevice,
    Interface,
    Secret,
    NwFilter,
    Streams,
}

#[derive(Debug, Error)]
#[error("{}", .detail.as_deref().unwrap_or("(no detail)"))]
pub struct DriverError {
    kind: ErrorKind,
    origin: ErrorOrigin,
    /// `None` where libvirt reports only the code's own text.
    detail: Option<String>,
    /// The detail is the whole message, without the code's prefix: what
    /// libvirt's virReportInvalidArg (flag checks) raises.
    verbatim: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DriverError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        DriverError {
            kind,
            origin: ErrorOrigin::Qemu,
            detail: Some(detail.into()),
            verbatim: false,
            source: None,
        }
    }

    /// An error whose message is `detail` alone, with no per-code prefix.
    pub fn verbatim(kind: ErrorKind, detail: impl Into<String>) -> Self {
        DriverError {
            verbatim: true,
            ..Self::new(kind, detail)
        }
    }

    /// Whether the message is the detail alone.
    pub fn is_verbatim(&self) -> bool {
        self.verbatim
    }

    /// An error libvirt reports with no detail, only its code's text.
    pub fn bare(kind: ErrorKind) -> Self {
        DriverError {
            kind,
            origin: ErrorOrigin::Qemu,
            detail: None,
            verbatim: false,
            source: None,
        }
    }

    pub fn with_origin(mut self, origin: ErrorOrigin) -> Self {
        self.origin = origin;
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn origin(&self) -> ErrorOrigin {
        self.origin
    }

    /// The text after libvirt's per-code prefix.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalError, detail)
    }

    pub fn operation_invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::OperationInvalid, detail)
    }

    pub fn invalid_arg(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArg, detail)
    }

    pub fn not_running() -> Self {
        Self::operation_invalid("domain is not running")
    }

    /// virDomainObjCheckActive's "domain is not running", which libvirt
    /// reports from its domain code, not the QEMU driver.
    pub fn inactive() -> Self {
        Self::not_running().with_origin(ErrorOrigin::Domain)
    }

    /// libvirt's virReportSystemError: "<what>: <strerror>".
    pub fn system(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        let detail = format!("{what}: {}", io_error_text(&err));
        Self::new(ErrorKind::SystemError, detail).with_source(err)
    }

    /// Rejects flags outside `allowed`, as libvirt's virCheckFlags does;
    /// `function` is the libvirt driver function the message names.
    pub fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<(), DriverError> {
        match flags & !allowed {
            0 => Ok(()),
            unknown => Err(Self::verbatim(
                ErrorKind::InvalidArg,
                format!("unsupported flags (0x{unknown:x}) in function {function}"),
            )),
        }
    }

    /// libvirt's public-API check of two flags that exclude each other
    /// (VIR_EXCLUSIVE_FLAGS_RET), each given with its name; `origin` is
    /// where the calling API reports it from.
    pub fn check_exclusive(
        flags: u32,
        a: (u32, &str),
        b: (u32, &str),
        origin: ErrorOrigin,
    ) -> Result<(), DriverError> {
        let detail = || format!("Flags '{}' and '{}' are mutually exclusive", a.1, b.1);
        Self::refuse_flags_if(flags & a.0 != 0 && flags & b.0 != 0, detail, origin)
    }

    /// libvirt's public-API check of a flag that needs another one
    /// (VIR_REQUIRE_FLAG_RET): `by` set without `needed`.
    pub fn check_required(
        flags: u32,
        needed: (u32, &str),
        by: (u32, &str),
        origin: ErrorOrigin,
    ) -> Result<(), DriverError> {
        let detail = || format!("Flag '{}' is required by flag '{}'", needed.1, by.1);
        Self::refuse_flags_if(flags & by.0 != 0 && flags & needed.0 == 0, detail, origin)
    }

    fn refuse_flags_if(
        refused: bool,
        detail: impl FnOnce() -> String,
        origin: ErrorOrigin,
    ) -> Result<(), DriverError> {
        if !refused {
            return Ok(());
        }
        Err(Self::verbatim(ErrorKind::InvalidArg, detail()).with_origin(origin))
    }
}

/// strerror() text without Rust's " (os error N)" suffix, as libvirt prints it.
pub fn io_error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

impl From<crate::conf::ConfError> for DriverError {
    fn from(err: crate::conf::ConfError) -> Self {
        use crate::conf::{ConfErrorDomain as D, ConfErrorKind as C};
        let kind = match err.kind() {
            C::InternalError => ErrorKind::InternalError,
            C::InvalidArg => ErrorKind::InvalidArg,
            C::NoSource => ErrorKind::NoSource,
            C::NoTarget => ErrorKind::NoTarget,
            C::NoName => ErrorKind::NoName,
            C::XmlError => ErrorKind::XmlError,
            C::XmlDetail => ErrorKind::XmlDetail,
            C::ConfigUnsupported => ErrorKind::ConfigUnsupported,
            C::Overflow => ErrorKind::Overflow,
            C::XmlInvalidSchema => ErrorKind::XmlInvalidSchema,
            C::OperationUnsupported => ErrorKind::OperationUnsupported,
            C::NoDomainCheckpoint => ErrorKind::NoDomainCheckpoint,
            C::CheckpointInconsistent => ErrorKind::CheckpointInconsistent,
        };
        let origin = match err.domain() {
            D::None => ErrorOrigin::None,
            D::Xml => ErrorOrigin::Xml,
            D::Qemu => ErrorOrigin::Qemu,
            D::DomainCheckpoint => ErrorOrigin::DomainCheckpoint,
            D::DomainSnapshot => ErrorOrigin::DomainSnapshot,
            D::Cpu => ErrorOrigin::Cpu,
            _ => ErrorOrigin::Domain,
        };
        let detail = err.detail().map(str::to_string);
        DriverError {
            kind,
            origin,
            detail,
            verbatim: false,
            source: None,
        }
    }
}

impl From<crate::qemu::QemuError> for DriverError {
    fn from(err: crate::qemu::QemuError) -> Self {
        use crate::qemu::{QemuError, QemuErrorKind as Q};
        if let QemuError::Io { context, source } = err {
            // libvirt's virReportSystemError: "<context>: <strerror>".
            return DriverError::system(context, source);
        }
        let kind = match err.kind() {
            Q::NotRunning | Q::AlreadyRunning | Q::NoActiveJob => ErrorKind::OperationInvalid,
            Q::InvalidInput => ErrorKind::InvalidArg,
            Q::BrokenBitmap => ErrorKind::CheckpointInconsistent,
            Q::JobFailed => ErrorKind::OperationFailed,
            _ => ErrorKind::InternalError,
        };
        DriverError::new(kind, err.to_string()).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_outside_the_allowed_set_are_refused_like_vircheckflags() {
        assert!(DriverError::check_flags(3, 3, "f").is_ok());
        let err = DriverError::check_flags(5, 1, "qemuDomainCreateWithFlags").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArg);
        assert_eq!(
            err.detail(),
            Some("unsupported flags (0x4) in function qemuDomainCreateWithFlags")
        );
    }

    #[test]
    fn io_errors_print_like_strerror() {
        let err = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_error_text(&err), "No such file or directory");
    }
}
