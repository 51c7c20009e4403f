//! The snapshot definition (`<domainsnapshot>` XML): parse, validate,
//! align with a domain, format — as libvirt 9.0 does it
//! (snapshot_conf.c, moment_conf.c, and the pure part of the QEMU driver's
//! qemu_snapshot.c).
//!
//! The flow follows libvirt's order of checks, so that a document with
//! several problems fails with the error libvirtd reports first:
//!
//! 1. [`SnapshotDef::parse`]: well-formed XML, the root element, the RNG
//!    schema (`schema.rs`) **only with [`ParseFlags::validate`]**
//!    (VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE; without it libvirt ignores
//!    unknown elements and attributes), then the fields: name (default: the
//!    creation time in seconds), description, memory, disks; with
//!    [`ParseFlags::redefine`] also the creation time, state, parent and the
//!    embedded `<domain>` / `<inactiveDomain>`.
//! 2. [`ParsedSnapshot::check_create`]: the QEMU driver's checks right
//!    after parsing (the name unless NO_METADATA, `--live`, and for a
//!    redefine the state written in the document).
//! 3. The driver takes its job; for a redefine it checks the parent (see
//!    [`ParsedSnapshot::parent`]) and looks up a snapshot of the same name.
//! 4. [`ParsedSnapshot::prepare_create`] or
//!    [`ParsedSnapshot::prepare_redefine`]: state and memory defaults, the
//!    disks aligned with the domain (`align.rs`: one entry per domain disk,
//!    in the domain's order, default snapshot mode per disk, default
//!    external file names `<source without suffix>.<snapshot name>`), and
//!    for a create the QEMU driver's checks of the combination
//!    (qemuSnapshotPrepare).
//! 5. The driver: name already taken, files, QEMU.
//!
//! The reference is `fixtures/reference/snapshot/` (captures of libvirtd
//! 9.0; its README lists the findings).
//!
//! # What the QEMU driver checks around this module (for `driver/`)
//!
//! Before parsing (qemuSnapshotCreateXML), all VIR_FROM_QEMU (10) unless
//! noted:
//! - unknown flags: 8 `unsupported flags (0x400) in function
//!   qemuSnapshotCreateXML`;
//! - QUIESCE without DISK_ONLY: 8 `Flag
//!   'VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY' is required by flag
//!   'VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE'`;
//! - LIVE with REDEFINE: 8 `Flags 'VIR_DOMAIN_SNAPSHOT_CREATE_LIVE' and
//!   'VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE' are mutually exclusive`;
//! - HALT on a transient domain: 55 `cannot halt after transient domain
//!   snapshot`.
//!
//! After [`ParsedSnapshot::prepare_create`], per disk: a disk with a block
//! job (`disk 'vda' already in active block job`), and for an external
//! disk the target file: `missing existing file for disk %s: %s` (REUSE_EXT,
//! system error), a block target that does not exist (84 `block device
//! snapshot target '%s' doesn't exist`), a type mismatch (67 `mismatch
//! between configured type for snapshot disk '%s' and the type of existing
//! file '%s'`), and a non-empty existing file without REUSE_EXT (67
//! `external snapshot file for disk %s already exists and is not a block
//! device: %s`). Then `domain moment NAME already exists` (9, from
//! VIR_FROM_DOMAIN). Saving the metadata fails with 1 `unable to
//! save metadata for snapshot %s`.
//!
//! The metadata file libvirtd keeps per snapshot is the format with
//! `secure` and `internal` (so with `<active>`), after the same 6-line
//! comment as checkpoints (`libvirtd-files/` in the captures).
//!
//! # Differences from libvirt
//!
//! - The embedded `<domain>` and `<inactiveDomain>` are parsed as
//!   [`DomainDef`]s, whose checks differ from libvirt's
//!   SKIP_VALIDATE parse, and written back from that model (see the
//!   `checkpoint` module: the live-only parts libvirt writes, such as
//!   `<backingStore/>`, differ). `<domain>` with only a `<uuid>` (very old
//!   snapshots) is dropped, as libvirt drops it; redefining a snapshot
//!   with such a document (or none) keeps the replaced one's domain.
//! - A disk's `<source>` of type file or block is kept as its path plus
//!   its children verbatim (its other attributes are dropped, as libvirt
//!   drops them); the source of other storage types (network, nvme,
//!   vhostuser) is kept verbatim. libvirt reads them into its storage
//!   model and writes them back in its own order.
//! - `<cookie>`: its `<cpu>` is read by a model of libvirt's guest CPU
//!   that keeps `<cache>` and `<maxphysaddr>` unchecked (see `conf::cpu`).
//! - The RNG schema check is that of `schema.rs`, which models the parts
//!   that matter for snapshots (see there); the embedded `<domain>` is not
//!   checked against the domain schema.
//! - The ABI-stability check between a redefined snapshot's domain and the
//!   one it replaces is not made.
//! - The pflash refusal of internal snapshots is not made (the domain model
//!   has no firmware loader).

mod align;
mod cookie;
mod format;
mod parse;
mod schema;

#[cfg(test)]
mod tests;

use uuid::Uuid;

pub use cookie::SaveCookie;

use crate::conf::domain::DomainDef;
use crate::conf::error::{ConfError, ConfErrorDomain};
use crate::conf::moment::{Kind, Moment, MomentDef};
use crate::conf::xml::{lookup_name, lookup_value, Element};

/// How the document reaches libvirt (virDomainSnapshotParseFlags, from the
/// create flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseFlags {
    /// VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE: metadata for a snapshot that
    /// exists already.
    pub redefine: bool,
    /// VIR_DOMAIN_SNAPSHOT_PARSE_OFFLINE: set by the driver for DISK_ONLY
    /// or when the domain is not running. No memory state may be asked for,
    /// and `<cookie>` is not read. (A redefine decides from its `<state>`.)
    pub offline: bool,
    /// VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE: check the RNG schema first.
    pub validate: bool,
    /// VIR_DOMAIN_SNAPSHOT_PARSE_INTERNAL: the daemon's own metadata file,
    /// which says in `<active>` whether the snapshot is the current one.
    pub internal: bool,
}

/// The create flags the conf checks depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateFlags {
    /// VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE.
    pub redefine: bool,
    /// VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA: the name is not used as a
    /// file name, so any name goes.
    pub no_metadata: bool,
    /// VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY.
    pub disk_only: bool,
    /// VIR_DOMAIN_SNAPSHOT_CREATE_LIVE.
    pub live: bool,
}

/// How to format (VIR_DOMAIN_SNAPSHOT_XML_SECURE and libvirt's internal
/// format flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct FormatFlags {
    /// VIR_DOMAIN_SNAPSHOT_XML_SECURE. The domain model holds no secrets,
    /// so the output is the same.
    pub secure: bool,
    /// The metadata-file form: `<active>` at the end, saying whether the
    /// snapshot is the current one.
    pub internal: Option<bool>,
    /// The domain's uuid, written as `<domain><uuid>` when the snapshot
    /// has no domain definition (libvirt passes it in every time).
    pub domain_uuid: Option<Uuid>,
}

/// Where a disk's (or the memory's) snapshot goes
/// (virDomainSnapshotLocation, without "default").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotLocation {
    /// Not snapshotted.
    No,
    /// Inside the qcow2 image (savevm / qemu-img snapshot).
    Internal,
    /// In a new overlay (or memory) file.
    External,
    /// Left to the user (the guest is paused meanwhile).
    Manual,
}

impl SnapshotLocation {
    const ALL: [(&'static str, Self); 4] = [
        ("no", Self::No),
        ("internal", Self::Internal),
        ("external", Self::External),
        ("manual", Self::Manual),
    ];

    /// The XML name.
    pub fn as_str(self) -> &'static str {
        lookup_name(&Self::ALL, self)
    }

    fn from_xml(s: &str) -> Option<Self> {
        lookup_value(&Self::ALL, s)
    }
}

/// The domain state a snapshot recorded (virDomainSnapshotState: the
/// domain states plus `disk-snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// `running`.
    Running,
    /// `blocked` (never used by QEMU; refused on redefine).
    Blocked,
    /// `paused`.
    Paused,
    /// `shutdown`.
    Shutdown,
    /// `shutoff`.
    Shutoff,
    /// `crashed`.
    Crashed,
    /// `pmsuspended` (refused by the QEMU driver).
    PmSuspended,
    /// `disk-snapshot`: a disk-only snapshot of a running domain.
    DiskSnapshot,
}

impl SnapshotState {
    const ALL: [(&'static str, Self); 8] = [
        ("running", Self::Running),
        ("blocked", Self::Blocked),
        ("paused", Self::Paused),
        ("shutdown", Self::Shutdown),
        ("shutoff", Self::Shutoff),
        ("crashed", Self::Crashed),
        ("pmsuspended", Self::PmSuspended),
        ("disk-snapshot", Self::DiskSnapshot),
    ];

    /// The XML name.
    pub fn as_str(self) -> &'static str {
        lookup_name(&Self::ALL, self)
    }

    fn from_xml(s: &str) -> Option<Self> {
        lookup_value(&Self::ALL, s)
    }

    /// Running or paused: the snapshot has the guest's memory.
    pub fn is_online(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// A disk's storage type in a snapshot (`<disk type=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDiskType {
    /// `file`.
    File,
    /// `block`.
    Block,
    /// `network`.
    Network,
    /// `nvme`.
    Nvme,
    /// `vhostuser`.
    VhostUser,
}

impl SnapshotDiskType {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Block => "block",
            Self::Network => "network",
            Self::Nvme => "nvme",
            Self::VhostUser => "vhostuser",
        }
    }
}

/// One disk of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    name: String,
    /// `None` only before alignment ("default").
    snapshot: Option<SnapshotLocation>,
    disk_type: SnapshotDiskType,
    /// `file=` / `dev=` of `<source>`.
    path: Option<String>,
    /// `<source>` as written, for what is not the path.
    source: Option<Element>,
    /// `<driver type=...>`: an image format libvirt knows.
    format: Option<String>,
    /// `<driver><metadata_cache><max_size>`, in bytes (0 = none).
    metadata_cache_max: u64,
    /// `<snapshotDeleteInProgress/>` (redefine only).
    delete_in_progress: bool,
}

impl SnapshotDisk {
    /// The disk's target name (`vda`) after alignment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The snapshot mode; always set after alignment.
    pub fn snapshot(&self) -> Option<SnapshotLocation> {
        self.snapshot
    }

    /// The storage type of the new image.
    pub fn disk_type(&self) -> SnapshotDiskType {
        self.disk_type
    }

    /// The new image's path, for an external disk.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The new image's format (`qcow2` after a create's checks).
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    /// The qcow2 metadata cache size asked for, in bytes (0: default).
    pub fn metadata_cache_max(&self) -> u64 {
        self.metadata_cache_max
    }
}

/// A snapshot document after parsing, before the domain is taken into
/// account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSnapshot {
    def: SnapshotDef,
    /// `<active>` of an internal-format file.
    current: Option<bool>,
}

/// A snapshot definition: what libvirt keeps per snapshot, the [`Moment`]
/// core (its accessors are there) and the snapshot's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDef {
    moment: MomentDef<SnapshotDisk>,
    state: Option<SnapshotState>,
    /// `None`: "default" (a plain create before alignment).
    memory: Option<SnapshotLocation>,
    memory_file: Option<String>,
    inactive_domain: Option<DomainDef>,
    cookie: Option<SaveCookie>,
}

impl Moment for SnapshotDef {
    type Disk = SnapshotDisk;

    fn moment(&self) -> &MomentDef<SnapshotDisk> {
        &self.moment
    }

    fn moment_mut(&mut self) -> &mut MomentDef<SnapshotDisk> {
        &mut self.moment
    }
}

/// The words of snapshot documents' errors.
const KIND: Kind = Kind {
    noun: "snapshot",
    root: "domainsnapshot",
    doc_name: "(domain_snapshot)",
    domain: ConfErrorDomain::DomainSnapshot,
};

/// What [`ParsedSnapshot::prepare_create`] needs to know about the domain.
#[derive(Clone, Copy)]
pub struct CreateContext<'a> {
    /// The domain's definition (the running one when it runs).
    pub domain: &'a DomainDef,
    /// The persistent definition of a running domain (libvirt's newDef),
    /// kept as `<inactiveDomain>`.
    pub inactive_domain: Option<&'a DomainDef>,
    /// The domain's state now (running, paused, shutoff, ...).
    pub state: SnapshotState,
    /// Whether the domain runs.
    pub active: bool,
    /// VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY.
    pub disk_only: bool,
    /// Whether a disk's current source is a regular file: libvirt only
    /// makes up an external file name next to a regular file. (I/O, so the
    /// driver answers it.)
    pub is_regular_file: &'a dyn Fn(&str) -> bool,
}

/// The outcome of a create's preparation: the definition, and what the
/// driver must do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedCreate {
    /// The snapshot (parent unset: it is the current snapshot, which the
    /// driver knows).
    pub def: SnapshotDef,
    /// Some disk is `manual`: the guest stays paused for the user.
    pub has_manual: bool,
    /// An external snapshot of an inactive domain: libvirt turns on
    /// DISK_ONLY for the rest of the operation.
    pub disk_only: bool,
}

impl SnapshotDef {
    /// Parse a `<domainsnapshot>` document. `now_secs` becomes the creation
    /// time of a plain create, and its name when the document has none.
    pub fn parse(xml: &str, flags: ParseFlags, now_secs: i64) -> Result<ParsedSnapshot, ConfError> {
        parse::parse_snapshot(xml, flags, now_secs)
    }

    /// Format as `virsh snapshot-dumpxml` shows it (or, with
    /// `internal`, as libvirtd's metadata file holds it after its comment).
    pub fn format(&self, flags: &FormatFlags) -> String {
        format::format_snapshot(self, flags)
    }

    /// The domain state the snapshot recorded.
    pub fn state(&self) -> Option<SnapshotState> {
        self.state
    }

    /// QEMU's save cookie (`<cookie>`: the guest CPU QEMU runs), which
    /// libvirt records with a snapshot that keeps the guest's memory.
    pub fn cookie(&self) -> Option<&SaveCookie> {
        self.cookie.as_ref()
    }

    /// Record the save cookie of a new snapshot of a running domain.
    pub fn set_cookie(&mut self, cookie: Option<SaveCookie>) {
        self.cookie = cookie;
    }

    /// Where the memory went (`None` only for a definition that was never
    /// prepared).
    pub fn memory(&self) -> Option<SnapshotLocation> {
        self.memory
    }

    /// The memory file of an external full-system snapshot.
    pub fn memory_file(&self) -> Option<&str> {
        self.memory_file.as_deref()
    }

    /// The persistent definition kept with a snapshot of a running domain.
    pub fn inactive_domain(&self) -> Option<&DomainDef> {
        self.inactive_domain.as_ref()
    }

    /// Whether anything went to an external file (virDomainSnapshotDefIsExternal):
    /// libvirt 9.0 cannot revert to such a snapshot.
    pub fn is_external(&self) -> bool {
        self.memory == Some(SnapshotLocation::External)
            || self
                .moment
                .disks
                .iter()
                .any(|d| d.snapshot == Some(SnapshotLocation::External))
    }

    /// Whether this is a disk-only snapshot of a running domain (state
    /// `disk-snapshot`), what `snapshot-list --disk-only` selects.
    /// (`--internal` selects the snapshots that are not
    /// [`Self::is_external`].)
    pub fn is_disk_only(&self) -> bool {
        self.state == Some(SnapshotState::DiskSnapshot)
    }
}

impl ParsedSnapshot {
    /// The name (given, or the default from the creation time).
    pub fn name(&self) -> &str {
        self.def.name()
    }

    /// The parent named in the document: read only on a redefine (see
    /// [`Moment::parent`] for the driver's checks before
    /// [`Self::prepare_redefine`]).
    pub fn parent(&self) -> Option<&str> {
        self.def.parent()
    }

    /// `<active>` of a metadata file parsed with [`ParseFlags::internal`].
    pub fn current(&self) -> Option<bool> {
        self.current
    }

    /// The QEMU driver's checks right after parsing
    /// (qemuSnapshotCreateXMLValidateDef): the name must make a file name
    /// (unless NO_METADATA), LIVE needs a running domain and an external
    /// memory snapshot, and a redefined state must be one QEMU can have.
    /// For a create the domain's state is checked by the driver.
    ///
    /// `domain_state` is the domain's state now (libvirt checks it for a
    /// create, the document's `<state>` for a redefine).
    pub fn check_create(
        &self,
        flags: CreateFlags,
        active: bool,
        domain_state: SnapshotState,
    ) -> Result<(), ConfError> {
        align::check_create(&self.def, flags, active, domain_state)
    }

    /// Finish a create: state and memory defaults from the domain, the
    /// disks aligned, default file names, then the QEMU driver's checks of
    /// the combination.
    pub fn prepare_create(self, ctx: &CreateContext<'_>) -> Result<PreparedCreate, ConfError> {
        align::prepare_create(self.def, ctx)
    }

    /// Finish a redefine after the driver's parent checks. `domain_uuid`
    /// is the domain's, `existing` the snapshot of the same name if there
    /// is one (it is replaced), `disk_only` the create flag. Needs a domain
    /// definition: the document's, or else the existing snapshot's, which
    /// the result then keeps (nothing else of the existing one).
    pub fn prepare_redefine(
        self,
        domain_uuid: Uuid,
        existing: Option<&SnapshotDef>,
        disk_only: bool,
        is_regular_file: &dyn Fn(&str) -> bool,
    ) -> Result<SnapshotDef, ConfError> {
        align::prepare_redefine(self.def, domain_uuid, existing, disk_only, is_regular_file)
    }

    /// Take metadata the daemon wrote itself as it is.
    pub fn loaded(self) -> SnapshotDef {
        self.def
    }
}
