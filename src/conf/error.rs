//! The error type of `conf`: a small stable kind that maps 1:1 onto a
//! libvirt `virErrorNumber`, the libvirt error domain the message comes from,
//! and the detail text exactly as libvirt 9.0 reports it.
//!
//! The rpc layer builds the wire triple from these three parts: it looks up
//! the per-code format of `util/virerror.c` (the second column below) and
//! substitutes the detail, or uses the bare text (first column) when there is
//! no detail. The result is what `virsh` prints after `error: `.
//!
//! | kind                | code | with detail                               | without detail |
//! |---------------------|------|-------------------------------------------|----------------|
//! | `InternalError`     | 1    | `internal error: %s`                      | `internal error` |
//! | `InvalidArg`        | 8    | `invalid argument: %s`                    | `invalid argument` |
//! | `NoSource`          | 19   | `missing source information for device %s`| `missing source information for device` |
//! | `NoTarget`          | 20   | `missing target information for device %s`| `missing target information for device` |
//! | `NoName`            | 21   | `missing name information in %s`          | `missing name information` |
//! | `XmlError`          | 27   | `XML error: %s`                           | `XML description is invalid or not well formed` |
//! | `XmlDetail`         | 35   | `%s`                                      | `parser error` |
//! | `ConfigUnsupported` | 67   | `unsupported configuration: %s`           | `unsupported configuration` |
//! | `Overflow`          | 82   | `numerical overflow: %s`                  | `numerical overflow` |
//! | `OperationUnsupported` | 84 | `Operation not supported: %s`            | `Operation not supported` |
//! | `XmlInvalidSchema`  | 92   | `XML document failed to validate against schema: %s` | `XML document failed to validate against schema` |
//! | `NoDomainCheckpoint` | 103 | `Domain checkpoint not found: %s`         | `Domain checkpoint not found` |
//! | `CheckpointInconsistent` | 109 | `checkpoint inconsistent: %s`         | `checkpoint inconsistent` |

use std::fmt;

/// What went wrong, as libvirt classifies it. Callers branch on this, never
/// on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfErrorKind {
    /// VIR_ERR_INTERNAL_ERROR (1).
    InternalError,
    /// VIR_ERR_INVALID_ARG (8).
    InvalidArg,
    /// VIR_ERR_NO_SOURCE (19).
    NoSource,
    /// VIR_ERR_NO_TARGET (20).
    NoTarget,
    /// VIR_ERR_NO_NAME (21).
    NoName,
    /// VIR_ERR_XML_ERROR (27).
    XmlError,
    /// VIR_ERR_XML_DETAIL (35): the XML is not well-formed.
    XmlDetail,
    /// VIR_ERR_CONFIG_UNSUPPORTED (67).
    ConfigUnsupported,
    /// VIR_ERR_OVERFLOW (82).
    Overflow,
    /// VIR_ERR_OPERATION_UNSUPPORTED (84): the QEMU driver's refusals of
    /// backup setups it cannot run (a TCP export without a port, block
    /// jobs on an `sd` disk).
    OperationUnsupported,
    /// VIR_ERR_XML_INVALID_SCHEMA (92): the document does not match
    /// libvirt's RNG schema (checkpoint XML is validated against it).
    XmlInvalidSchema,
    /// VIR_ERR_NO_DOMAIN_CHECKPOINT (103): an incremental backup names a
    /// checkpoint the domain does not have.
    NoDomainCheckpoint,
    /// VIR_ERR_CHECKPOINT_INCONSISTENT (109): the checkpoint exists but a
    /// disk's bitmap for it is missing or broken.
    CheckpointInconsistent,
}

impl ConfErrorKind {
    /// The `virErrorNumber` libvirt sends for this kind.
    pub const fn code(self) -> i32 {
        match self {
            Self::InternalError => 1,
            Self::InvalidArg => 8,
            Self::NoSource => 19,
            Self::NoTarget => 20,
            Self::NoName => 21,
            Self::XmlError => 27,
            Self::XmlDetail => 35,
            Self::ConfigUnsupported => 67,
            Self::Overflow => 82,
            Self::OperationUnsupported => 84,
            Self::XmlInvalidSchema => 92,
            Self::NoDomainCheckpoint => 103,
            Self::CheckpointInconsistent => 109,
        }
    }
}

/// The libvirt error domain (`virErrorDomain`) that reported the error.
///
/// libvirt reports the same kind from different places: a bad attribute
/// value comes from the XML helpers (5), a failed capability check from the
/// QEMU driver (10), most structural problems from the domain config
/// code (20), snapshot problems from the snapshot code (35), checkpoint
/// problems from the checkpoint code (69). virsh
/// does not print it, but libvirt-python shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfErrorDomain {
    /// VIR_FROM_NONE (0): generic helpers such as the unit scaler.
    None,
    /// VIR_FROM_XML (5): XML helpers (attribute parsing, root element).
    Xml,
    /// VIR_FROM_QEMU (10): the QEMU driver's checks.
    Qemu,
    /// VIR_FROM_DOMAIN (20): the domain configuration code.
    Domain,
    /// VIR_FROM_CPU (31): the CPU definition code.
    Cpu,
    /// VIR_FROM_DOMAIN_SNAPSHOT (35): the snapshot configuration code.
    DomainSnapshot,
    /// VIR_FROM_DOMAIN_CHECKPOINT (69): the checkpoint configuration code.
    DomainCheckpoint,
}

impl ConfErrorDomain {
    /// The `virErrorDomain` number.
    pub const fn code(self) -> i32 {
        match self {
            Self::None => 0,
            Self::Xml => 5,
            Self::Qemu => 10,
            Self::Domain => 20,
            Self::Cpu => 31,
            Self::DomainSnapshot => 35,
            Self::DomainCheckpoint => 69,
        }
    }
}

/// A parse, validation or capability error, carrying libvirt's detail text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", DetailOrKind(.kind, .detail))]
pub struct ConfError {
    kind: ConfErrorKind,
    domain: ConfErrorDomain,
    detail: Option<String>,
}

/// Display helper: the detail, or the kind when libvirt gives no detail.
struct DetailOrKind<'a>(&'a ConfErrorKind, &'a Option<String>);

impl fmt::Display for DetailOrKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(d) => f.write_str(d),
            None => write!(f, "{:?} (no detail)", self.0),
        }
    }
}

impl ConfError {
    /// An error with a detail message.
    pub fn new(kind: ConfErrorKind, domain: ConfErrorDomain, detail: impl Into<String>) -> Self {
        Self {
            kind,
            domain,
            detail: Some(detail.into()),
        }
    }

    /// An error for which libvirt reports no detail (for example
    /// VIR_ERR_NO_NAME, printed as just "missing name information").
    pub fn bare(kind: ConfErrorKind, domain: ConfErrorDomain) -> Self {
        Self {
            kind,
            domain,
            detail: None,
        }
    }

    /// The kind, for control flow and for the wire code.
    pub fn kind(&self) -> ConfErrorKind {
        self.kind
    }

    /// The libvirt error domain to send.
    pub fn domain(&self) -> ConfErrorDomain {
        self.domain
    }

    /// libvirt's detail text, without the per-code prefix.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    // Shorthands for the combinations that occur most often.

    pub(crate) fn xml(detail: impl Into<String>) -> Self {
        Self::new(ConfErrorKind::XmlError, ConfErrorDomain::Domain, detail)
    }

    pub(crate) fn xml_helper(detail: impl Into<String>) -> Self {
        Self::new(ConfErrorKind::XmlError, ConfErrorDomain::Xml, detail)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            ConfErrorKind::InternalError,
            ConfErrorDomain::Domain,
            detail,
        )
    }

    pub(crate) fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(
            ConfErrorKind::ConfigUnsupported,
            ConfErrorDomain::Domain,
            detail,
        )
    }

    pub(crate) fn qemu_unsupported(detail: impl Into<String>) -> Self {
        Self::new(
            ConfErrorKind::ConfigUnsupported,
            ConfErrorDomain::Qemu,
            detail,
        )
    }

    /// libvirt's message for an enumerated attribute with a value it does
    /// not know (util/virxml.c).
    pub(crate) fn invalid_attr(attr: &str, element: &str, value: &str) -> Self {
        Self::xml_helper(format!(
            "Invalid value for attribute '{attr}' in element '{element}': '{value}'."
        ))
    }
}
