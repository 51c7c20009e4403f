//! The checkpoint definition (`<domaincheckpoint>` XML): parse, validate,
//! align with a domain, format — as libvirt 9.0 does it.
//!
//! The flow follows libvirt's order of checks, so a document with several
//! problems fails with the error libvirtd reports first:
//!
//! 1. [`CheckpointDef::parse`]: well-formed XML, the root element, libvirt's
//!    RNG schema (`schema.rs`), then the fields. A plain create takes the
//!    name (default: the creation time in seconds), the description and the
//!    disks, and sets the creation time to the `now_secs` the caller
//!    passes; `<parent>`, `<creationTime>`, `<domain>` and `size=` are
//!    ignored, as libvirt ignores them. A redefine also takes the creation
//!    time, the parent name and the embedded `<domain>`.
//! 2. The driver's checks that need the checkpoint list (a redefine's
//!    parent must exist, no cycles; see [`Moment::parent`]).
//! 3. [`ParsedCheckpoint::prepare_create`] or
//!    [`ParsedCheckpoint::prepare_redefine`]: the disks are aligned with the
//!    domain (`align.rs`: one entry per domain disk, in the domain's order,
//!    defaults for the rest, bitmap names filled in) and, for a create, the
//!    QEMU driver's checks (bitmap named after the checkpoint, qcow2 only).
//! 4. The driver: name already taken, then QEMU.
//!
//! The reference is `fixtures/reference/checkpoint/` (captures of
//! libvirtd 9.0; its README lists the findings this module follows).
//!
//! # Differences from libvirt
//!
//! - The embedded `<domain>` is not validated against libvirt's domain
//!   schema: on a plain create it is ignored unread (libvirt validates it
//!   and then ignores it), on a redefine it is parsed as a [`DomainDef`],
//!   whose checks differ from the schema's (it keeps unknown elements,
//!   which the schema refuses; and it runs the QEMU driver's checks, which
//!   libvirt skips for an embedded domain).
//! - The `<domain>` written out is the domain model's inactive format.
//!   libvirt embeds the running definition formatted as inactive, which
//!   also has `<backingStore/>` in every disk (and, for a domain libvirt
//!   started, the devices and addresses it adds itself). For checkpoints
//!   taken over from libvirtd (`--redefine` of its files) only the
//!   `<backingStore/>` lines differ; everything else round-trips byte for
//!   byte (`tests/reference.rs`).
//! - Elements or attributes in a namespace are treated as unknown
//!   (libxml2's messages for them differ).
//! - Malformed XML is reported with `xml::parse`'s words, which differ from
//!   libxml2's in a few cases (see `NOT_CONF` in `tests/reference.rs`).
//! - Names: libvirt accepts any length, but a name longer than 251 bytes
//!   makes libvirt's own metadata file name too long (the bitmap is then
//!   left in QEMU), and QEMU refuses bitmap names longer than 1023 bytes.
//!   Nothing here refuses a long name: the driver keys its files so that
//!   any name fits, and QEMU's own refusal gives libvirt's message. The
//!   schema already keeps `/`, a leading `.` and control characters out.

mod align;
mod format;
mod parse;
mod schema;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::conf::domain::DomainDef;
use crate::conf::error::{ConfError, ConfErrorDomain};
use crate::conf::moment::{Kind, Moment, MomentDef};

/// How the document reaches libvirt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseFlags {
    /// VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE: metadata for a checkpoint
    /// that exists already (its bitmaps are not created).
    pub redefine: bool,
}

/// How to format, from the GET_XML_DESC flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct FormatFlags<'a> {
    /// VIR_DOMAIN_CHECKPOINT_XML_SECURE. The domain model holds no secrets
    /// (no passwords or keys are modelled), so the output is the same.
    pub secure: bool,
    /// VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN: leave out `<domain>`.
    pub no_domain: bool,
    /// VIR_DOMAIN_CHECKPOINT_XML_SIZE: the bytes dirtied since the
    /// checkpoint, per disk name, as the driver measured them. A bitmap
    /// disk missing from the map gets no `size=` (libvirt leaves it out when
    /// the bitmap is missing or broken).
    pub sizes: Option<&'a BTreeMap<String, u64>>,
}

/// One disk of a checkpoint: `<disk name='vda' checkpoint='bitmap'
/// bitmap='cp1'/>` or `<disk name='vdc' checkpoint='no'/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDisk {
    name: String,
    bitmap: Option<String>,
}

impl CheckpointDisk {
    /// The disk's target name (`vda`). Only a redefine without `<domain>`
    /// keeps names as written, including ones the domain does not have.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bitmap that tracks this disk, or `None` for `checkpoint='no'`.
    pub fn bitmap(&self) -> Option<&str> {
        self.bitmap.as_deref()
    }
}

/// A disk as written, before alignment with a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiskRequest {
    name: String,
    /// `checkpoint='bitmap'` or no `checkpoint=`: libvirt's default.
    wants_bitmap: bool,
    bitmap: Option<String>,
}

/// A checkpoint document after parsing, before the domain's disks are
/// taken into account. Only [`ParsedCheckpoint::prepare_create`],
/// [`ParsedCheckpoint::prepare_redefine`] and [`ParsedCheckpoint::loaded`]
/// make a [`CheckpointDef`] of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCheckpoint {
    moment: MomentDef<DiskRequest>,
}

/// A checkpoint definition: what libvirt keeps per checkpoint is the
/// moment core alone, with checkpoint disks (the accessors are
/// [`Moment`]'s).
pub type CheckpointDef = MomentDef<CheckpointDisk>;

/// The words of checkpoint documents' errors.
const KIND: Kind = Kind {
    noun: "checkpoint",
    root: "domaincheckpoint",
    doc_name: "(domain_checkpoint)",
    domain: ConfErrorDomain::DomainCheckpoint,
};

impl CheckpointDef {
    /// Parse and schema-check a `<domaincheckpoint>` document. `now_secs`
    /// (seconds since the epoch) becomes the creation time of a plain
    /// create, and its name when the document has none.
    pub fn parse(
        xml: &str,
        flags: ParseFlags,
        now_secs: i64,
    ) -> Result<ParsedCheckpoint, ConfError> {
        parse::parse_checkpoint(xml, flags, now_secs)
    }

    /// Format as `virsh checkpoint-dumpxml` shows it. libvirtd's metadata
    /// files hold this text with `secure` set, after a comment header.
    ///
    /// A creation time of 0 (possible only through a redefine) is left
    /// out, so that text does not parse back with `redefine`, which needs
    /// one. (By its source, libvirtd skips such a file when it loads its
    /// checkpoint directory.)
    pub fn format(&self, flags: &FormatFlags<'_>) -> String {
        format::format_checkpoint(self, flags)
    }

    /// The disks that have a bitmap, as (disk name, bitmap name).
    pub fn bitmaps(&self) -> impl Iterator<Item = (&str, &str)> {
        self.disks()
            .iter()
            .filter_map(|d| Some((d.name.as_str(), d.bitmap.as_deref()?)))
    }
}

impl ParsedCheckpoint {
    /// The name (given, or the default from the creation time).
    pub fn name(&self) -> &str {
        self.moment.name()
    }

    /// The parent named in the document: set only for a redefine (see
    /// [`Moment::parent`] for the driver's checks).
    pub fn parent(&self) -> Option<&str> {
        self.moment.parent()
    }

    /// Whether the document embeds a `<domain>` (only kept on a redefine).
    pub fn has_domain(&self) -> bool {
        self.moment.domain.is_some()
    }

    /// Finish a plain create against the running domain's definition:
    /// align the disks, then check each bitmap disk as libvirt's QEMU
    /// driver does (bitmap named after the checkpoint, qcow2 image). The
    /// domain is kept as the checkpoint's `<domain>`. The parent is left
    /// unset: it is the current checkpoint, which the driver knows.
    pub fn prepare_create(self, running: &DomainDef) -> Result<CheckpointDef, ConfError> {
        align::prepare_create(self.moment, running)
    }

    /// Finish a redefine, after the driver's parent checks. With an
    /// embedded `<domain>`, its uuid must be the domain's and the disks are
    /// aligned with the *embedded* domain's disks; without one the disks
    /// are kept as written. Bitmap names default to the checkpoint name.
    /// No check that the bitmaps exist (that is REDEFINE_VALIDATE, which
    /// needs QEMU).
    pub fn prepare_redefine(self, domain: &DomainDef) -> Result<CheckpointDef, ConfError> {
        align::prepare_redefine(self.moment, domain)
    }

    /// Take metadata the daemon wrote itself (parsed with `redefine`) as
    /// it is, as libvirt does when it loads its checkpoint directory.
    pub fn loaded(self) -> CheckpointDef {
        align::loaded(self.moment)
    }
}
