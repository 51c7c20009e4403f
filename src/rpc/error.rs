//! The rpc layer's errors, and the one place where any error becomes
//! libvirt's error triple on the wire.

use thiserror::Error;

use crate::driver::{DriverError, ErrorKind, ErrorOrigin};
use crate::xdr::XdrError;

use super::wire::remote_error;

/// What can go wrong between the socket and the driver.
#[derive(Debug, Error)]
pub enum RpcError {
    #[error("message of {0} bytes is shorter than its header")]
    ShortHeader(usize),
    #[error("Unable to decode message payload")]
    Decode(#[source] XdrError),
    #[error("Unable to encode message payload")]
    Encode(#[source] XdrError),
    /// libvirtd prints both words with `%d`: 0xffffffff is "-1".
    #[error("Cannot find program {} version {}", *.prog as i32, *.vers as i32)]
    UnknownProgram { prog: u32, vers: u32 },
    #[error("unknown procedure: {0}")]
    UnknownProcedure(i32),
    #[error("Unexpected message status {0}")]
    UnexpectedStatus(u32),
}

/// virErrorDomain numbers.
fn origin_code(origin: ErrorOrigin) -> i32 {
    match origin {
        ErrorOrigin::None => 0,
        ErrorOrigin::Xml => 5,
        ErrorOrigin::Rpc => 7,
        ErrorOrigin::Qemu => 10,
        ErrorOrigin::Remote => 13,
        ErrorOrigin::Domain => 20,
        ErrorOrigin::Cpu => 31,
        ErrorOrigin::DomainSnapshot => 35,
        ErrorOrigin::DomainCheckpoint => 69,
        ErrorOrigin::Storage => 18,
        ErrorOrigin::Network => 19,
        ErrorOrigin::NodeDevice => 22,
        ErrorOrigin::Interface => 26,
        ErrorOrigin::Secret => 30,
        ErrorOrigin::NwFilter => 33,
        ErrorOrigin::Streams => 38,
    }
}

/// virErrorNumber, and libvirt's two texts for it (virerror.c): alone,
/// and as the format a detail is put into.
fn code_and_texts(kind: ErrorKind) -> (i32, &'static str, &'static str) {
    match kind {
        ErrorKind::InternalError => (1, "internal error", "internal error: %s"),
        ErrorKind::NoSupport => (
            3,
            "this function is not supported by the connection driver",
            "this function is not supported by the connection driver: %s",
        ),
        ErrorKind::NoConnect => (
            5,
            "no connection driver available",
            "no connection driver available for %s",
        ),
        ErrorKind::InvalidArg => (8, "invalid argument", "invalid argument: %s"),
        ErrorKind::OperationFailed => (9, "operation failed", "operation failed: %s"),
        ErrorKind::NoSource => (
            19,
            "missing source information for device",
            "missing source information for device %s",
        ),
        ErrorKind::NoTarget => (
            20,
            "missing target information for device",
            "missing target information for device %s",
        ),
        ErrorKind::NoName => (
            21,
            "missing name information",
            "missing name information in %s",
        ),
        ErrorKind::XmlError => (
            27,
            "XML description is invalid or not well formed",
            "XML error: %s",
        ),
        ErrorKind::OperationDenied => (
            29,
            "operation forbidden for read only access",
            "operation forbidden: %s",
        ),
        ErrorKind::XmlDetail => (35, "parser error", "%s"),
        ErrorKind::SystemError => (38, "system call error", "%s"),
        ErrorKind::Rpc => (39, "RPC error", "%s"),
        ErrorKind::NoDomain => (42, "Domain not found", "Domain not found: %s"),
        ErrorKind::OperationInvalid => (
            55,
            "Requested operation is not valid",
            "Requested operation is not valid: %s",
        ),
        ErrorKind::ConfigUnsupported => (
            67,
            "unsupported configuration",
            "unsupported configuration: %s",
        ),
        ErrorKind::OperationTimeout => (
            68,
            "Timed out during operation",
            "Timed out during operation: %s",
        ),
        ErrorKind::NoDomainSnapshot => (
            72,
            "Domain snapshot not found",
            "Domain snapshot not found: %s",
        ),
        ErrorKind::ArgumentUnsupported => (74, "argument unsupported", "argument unsupported: %s"),
        ErrorKind::OperationAborted => (78, "operation aborted", "operation aborted: %s"),
        ErrorKind::Overflow => (82, "numerical overflow", "numerical overflow: %s"),
        ErrorKind::BlockCopyActive => {
            (83, "block copy still active", "block copy still active: %s")
        }
        ErrorKind::OperationUnsupported => {
            (84, "Operation not supported", "Operation not supported: %s")
        }
        ErrorKind::ResourceBusy => (87, "resource busy", "resource busy: %s"),
        ErrorKind::XmlInvalidSchema => (
            92,
            "XML document failed to validate against schema",
            "XML document failed to validate against schema: %s",
        ),
        ErrorKind::InvalidDomainCheckpoint => (
            102,
            "Invalid domain checkpoint",
            "Invalid domain checkpoint: %s",
        ),
        ErrorKind::NoDomainCheckpoint => (
            103,
            "Domain checkpoint not found",
            "Domain checkpoint not found: %s",
        ),
        ErrorKind::NoDomainBackup => (
            104,
            "Domain backup job id not found",
            "Domain backup job id not found: %s",
        ),
        ErrorKind::NoHostname => (108, "no hostname found", "no hostname found: %s"),
        ErrorKind::CheckpointInconsistent => (
            109,
            "checkpoint inconsistent",
            "checkpoint inconsistent: %s",
        ),
        ErrorKind::MultipleDomains => (
            110,
            "multiple matching domains found",
            "multiple matching domains found: %s",
        ),
    }
}

/// VIR_ERR_ERROR.
const LEVEL_ERROR: i32 = 2;

/// Longest text one error field carries. An XML error quotes the failing
/// line of the client's document twice (text and pointer), so a one-line
/// document near the string limit would otherwise make an error reply that
/// cannot be encoded, and the client would never get an answer.
const ERROR_TEXT_MAX: usize = 1 << 20;

fn bounded(mut text: String) -> String {
    if text.len() > ERROR_TEXT_MAX {
        let mut cut = ERROR_TEXT_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Builds the error payload libvirt would send for `err`: `message` is the
/// full text virsh prints after "error: ", `str1` the format, `str2` the
/// detail.
pub fn to_remote_error(err: &DriverError) -> remote_error {
    let (code, alone, format) = code_and_texts(err.kind());
    let (message, str1) = match err.detail() {
        Some(detail) if err.is_verbatim() => (bounded(detail.to_string()), "%s"),
        Some(detail) => (bounded(format.replacen("%s", detail, 1)), format),
        None => (alone.to_string(), alone),
    };
    remote_error {
        code,
        domain: origin_code(err.origin()),
        message: Some(message),
        level: LEVEL_ERROR,
        dom: None,
        str1: Some(str1.to_string()),
        str2: err.detail().map(|d| bounded(d.to_string())),
        str3: None,
        int1: -1,
        int2: -1,
        net: None,
    }
}

impl RpcError {
    /// Protocol-level failures are VIR_ERR_RPC from VIR_FROM_RPC, as
    /// libvirt's virnetserverprogram.c reports them.
    pub fn to_driver_error(&self) -> DriverError {
        DriverError::new(ErrorKind::Rpc, self.to_string()).with_origin(ErrorOrigin::Rpc)
    }
}

/// The answer to a procedure that exists in libvirt but not here.
pub fn unsupported(api: &str) -> DriverError {
    DriverError::new(ErrorKind::NoSupport, api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_libvirts_prefix() {
        let err = DriverError::new(ErrorKind::NoDomain, "no domain with matching name 'x'");
        let wire = to_remote_error(&err);
        assert_eq!(wire.code, 42);
        assert_eq!(wire.domain, 10);
        assert_eq!(
            wire.message.as_deref(),
            Some("Domain not found: no domain with matching name 'x'")
        );
        assert_eq!(wire.str1.as_deref(), Some("Domain not found: %s"));
        assert_eq!(wire.level, 2);
        assert_eq!((wire.int1, wire.int2), (-1, -1));
    }

    #[test]
    fn an_error_without_detail_sends_the_codes_own_text() {
        let wire = to_remote_error(&DriverError::bare(ErrorKind::NoName));
        assert_eq!(
            (wire.code, wire.message.as_deref()),
            (21, Some("missing name information"))
        );
        assert_eq!(wire.str2, None);
    }

    #[test]
    fn huge_details_still_make_an_encodable_reply() {
        let err = DriverError::new(ErrorKind::XmlDetail, "é".repeat(3 << 20));
        let wire = to_remote_error(&err);
        assert!(wire.message.as_ref().unwrap().len() <= ERROR_TEXT_MAX);
        assert!(crate::xdr::to_bytes(&wire).is_ok());
    }

    #[test]
    fn program_and_version_read_as_c_ints() {
        let err = RpcError::UnknownProgram {
            prog: 0xffff_ffff,
            vers: 0xffff_fffe,
        };
        assert_eq!(err.to_string(), "Cannot find program -1 version -2");
        let err = RpcError::UnknownProgram {
            prog: 0x2000_8086,
            vers: 2,
        };
        assert_eq!(err.to_string(), "Cannot find program 536903814 version 2");
    }

    #[test]
    fn a_detail_with_a_percent_sign_is_not_a_format() {
        let err = DriverError::new(ErrorKind::InternalError, "100%s done");
        assert_eq!(
            to_remote_error(&err).message.as_deref(),
            Some("internal error: 100%s done")
        );
    }
}
