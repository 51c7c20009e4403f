//! The backup definition (`<domainbackup>` XML): parse, validate, align
//! with the running domain, format — as libvirt 9.0's backup-begin and
//! backup-dumpxml do it.
//!
//! The flow follows qemuBackupBegin's order of checks, so a document with
//! several problems fails with the error libvirtd reports first:
//!
//! 1. [`BackupDef::parse`]: well-formed XML, the root element, libvirt's
//!    RNG schema (`schema.rs`), then the fields (backup_conf.c). The
//!    driver then parses the checkpoint document, if any, and checks that
//!    the domain is running.
//! 2. [`ParsedBackup::align`] (virDomainBackupAlignDisks): one entry per
//!    domain disk — the disks the document names first, in its order,
//!    then the others in the domain's order; default target paths
//!    (`<source path>.<suffix>`, see [`default_suffix`]), per-disk
//!    backup modes and checkpoints from the document-wide
//!    `<incremental>`.
//! 3. The driver: another backup job running.
//! 4. [`BackupDef::prepare_server`] (qemuBackupPrepare): a pull backup's
//!    TCP server needs a port.
//! 5. The driver: TLS, the new checkpoint (qemuCheckpointCreateCommon),
//!    QEMU's block graph.
//! 6. [`BackupDef::prepare_disks`] (qemuBackupDiskPrepareDataOne, per
//!    disk): block jobs possible on the disk, the store's format (qcow2 by
//!    default, required for pull), a storage id, the checkpoint and its
//!    bitmaps (asked of the driver through [`BackupEnv`]), the bitmap
//!    names, a path for the image (a listed disk without `<target>` fails
//!    here, as in libvirt 9.0); then "no disks selected for backup".
//! 7. The driver: existing target files, creating images, QEMU.
//!
//! [`BackupDef::format`] then gives what `virsh backup-dumpxml` shows for
//! the running job.
//!
//! # Differences from libvirt
//!
//! - `<encryption>` inside `<target>`/`<scratch>` passes the schema but
//!   is then refused at parse (VIR_ERR_CONFIG_UNSUPPORTED from the domain
//!   code): this daemon has no secrets. libvirtd takes it and fails later,
//!   when it looks the secret up (`api-begin-encryption`:
//!   VIR_ERR_NO_SECRET from the secret driver). `<seclabel>` is taken and
//!   shown by backup-dumpxml, as libvirtd does; with no security driver
//!   (libvirtd's reference setup has none either) it has no effect.
//!
//! The reference is libvirtd 9.0's captures (`fixtures/reference/backup/`,
//! replayed by `tests/reference.rs`) and, for the schema, `xmllint` on
//! libvirt's own schema (`fixtures/backup/schema/`).
//! - libvirt's status-XML form (per-disk `state=`, `<privateData>`) is not
//!   modelled: the driver keeps job state its own way.

mod align;
mod format;
mod parse;
mod schema;

#[cfg(test)]
mod tests;

use crate::conf::domain::{DiskDef, DiskFormat, DomainDef};
use crate::conf::error::ConfError;
use crate::conf::seclabel::DeviceSeclabel;

/// `<domainbackup mode=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    /// QEMU writes the backup into target images (the default).
    Push,
    /// QEMU exports the disks over NBD for a client to read.
    Pull,
}

impl BackupMode {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }
}

/// A disk's `backupmode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBackupMode {
    /// Everything.
    Full,
    /// What changed since a checkpoint.
    Incremental,
}

impl DiskBackupMode {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

/// A backup disk's `type=`: where the target (push) or scratch (pull)
/// image lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    /// A file (`<target file=...>`), created by the driver unless reused.
    File,
    /// A block device (`<target dev=...>`), never created.
    Block,
}

impl StoreType {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Block => "block",
        }
    }
}

/// `<server transport=...>` of a pull backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP on `name`:`port`.
    Tcp,
    /// A unix socket at `socket`.
    Unix,
}

impl Transport {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Unix => "unix",
        }
    }
}

/// Where the NBD server of a pull backup listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupServer {
    transport: Transport,
    tls: Option<bool>,
    name: Option<String>,
    /// 0: none given.
    port: u16,
    socket: Option<String>,
}

impl BackupServer {
    /// TCP or unix.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// `tls=` as written: `Some(true)` asks for TLS, for which the driver
    /// gives QEMU the x509 credentials of its backup TLS directory.
    pub fn tls(&self) -> Option<bool> {
        self.tls
    }

    /// The host name or address (TCP only).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The TCP port; `None` when not given (refused by
    /// [`BackupDef::prepare_server`]).
    pub fn port(&self) -> Option<u16> {
        (self.port != 0).then_some(self.port)
    }

    /// The absolute socket path (unix only).
    pub fn socket(&self) -> Option<&str> {
        self.socket.as_deref()
    }
}

/// The image a disk is backed up into: the push target, or the pull
/// scratch (fleecing) image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStore {
    kind: StoreType,
    path: Option<String>,
    format: Option<DiskFormat>,
    /// libvirt's storage source id, shown as `index=`; 0 until
    /// [`BackupDef::prepare_disks`].
    index: u32,
    /// Kept for backup-dumpxml only: there is no security driver to act
    /// on them.
    seclabels: Vec<DeviceSeclabel>,
}

impl BackupStore {
    /// File or block device.
    pub fn kind(&self) -> StoreType {
        self.kind
    }

    /// Whether the store is a block device (never created or deleted).
    pub fn is_block(&self) -> bool {
        self.kind == StoreType::Block
    }

    /// The path. `None` only for a disk the document names with a type
    /// but without `<target>`/`<scratch>` (libvirt makes up no name for
    /// it), which [`BackupDef::prepare_disks`] refuses.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The image format: as written until [`BackupDef::prepare_disks`],
    /// which makes a missing one qcow2.
    pub fn format(&self) -> Option<&DiskFormat> {
        self.format.as_ref()
    }

    /// The storage id [`BackupEnv::new_storage_id`] gave it (node names
    /// `libvirt-N-storage`/`libvirt-N-format`), once prepared.
    pub fn index(&self) -> Option<u32> {
        (self.index != 0).then_some(self.index)
    }
}

/// One disk of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDisk {
    name: String,
    /// `Some` exactly when the disk is backed up (`backup='yes'`).
    store: Option<BackupStore>,
    /// `None` only before alignment.
    mode: Option<DiskBackupMode>,
    incremental: Option<String>,
    export_name: Option<String>,
    export_bitmap: Option<String>,
    /// The temporary bitmap QEMU copies from (incremental only), set by
    /// [`BackupDef::prepare_disks`].
    bitmap: Option<String>,
}

impl BackupDisk {
    /// The domain disk's target name (`vda`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this disk is backed up.
    pub fn backup(&self) -> bool {
        self.store.is_some()
    }

    /// Full or incremental (decided by alignment: incremental when the
    /// disk or the document names a checkpoint, unless `full` was asked).
    pub fn backup_mode(&self) -> DiskBackupMode {
        self.mode.unwrap_or(DiskBackupMode::Full)
    }

    /// The checkpoint an incremental backup starts from: the disk's
    /// `incremental=`, else the document's `<incremental>`; `None` for a
    /// full backup.
    pub fn incremental(&self) -> Option<&str> {
        self.incremental.as_deref()
    }

    /// Target (push) or scratch (pull) image; `None` for `backup='no'`.
    pub fn store(&self) -> Option<&BackupStore> {
        self.store.as_ref()
    }

    /// The NBD export name (pull; defaults to the disk name once
    /// prepared).
    pub fn export_name(&self) -> Option<&str> {
        self.export_name.as_deref()
    }

    /// The dirty-bitmap export (pull, incremental; defaults to
    /// `backup-<disk>` once prepared).
    pub fn export_bitmap(&self) -> Option<&str> {
        self.export_bitmap.as_deref()
    }

    /// The name of the bitmap the driver builds for an incremental disk by
    /// merging the checkpoints' bitmaps since [`Self::incremental`]: the
    /// `exportbitmap=` or `backup-<disk>`. Set by
    /// [`BackupDef::prepare_disks`].
    pub fn bitmap(&self) -> Option<&str> {
        self.bitmap.as_deref()
    }
}

/// A backup document after parsing, before the domain's disks are taken
/// into account. Only [`ParsedBackup::align`] makes a [`BackupDef`] of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBackup {
    def: BackupDef,
}

/// A backup definition: what libvirt keeps for a backup job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDef {
    mode: BackupMode,
    incremental: Option<String>,
    server: Option<BackupServer>,
    disks: Vec<BackupDisk>,
}

/// What [`BackupDef::prepare_disks`] asks of the driver, in the order the
/// QEMU driver checks each disk.
pub trait BackupEnv {
    /// A fresh storage source id for the disk's store (libvirt numbers
    /// every storage source of a domain; the backup's come after the
    /// disks').
    fn new_storage_id(&mut self) -> u32;
    /// Whether the domain has checkpoint `name`.
    fn checkpoint_exists(&self, name: &str) -> bool;
    /// Whether `disk` has a usable bitmap for `checkpoint` and every later
    /// one (libvirt's qemuBlockBitmapChainIsValid, from QEMU's block
    /// graph). A disk that is not qcow2 has none.
    fn bitmap_chain_valid(&self, disk: &DiskDef, checkpoint: &str) -> bool;
}

/// The suffix of default target file names, as qemuBackupBegin picks it:
/// the name of the checkpoint created with the backup, else the time in
/// whole seconds since the epoch.
pub fn default_suffix(checkpoint_name: Option<&str>, now_secs: i64) -> String {
    checkpoint_name.map_or_else(|| now_secs.to_string(), str::to_owned)
}

impl BackupDef {
    /// Parse and schema-check a `<domainbackup>` document as backup-begin
    /// does.
    pub fn parse(xml: &str) -> Result<ParsedBackup, ConfError> {
        parse::parse_backup(xml).map(|def| ParsedBackup { def })
    }

    /// Format as `virsh backup-dumpxml` shows the job.
    pub fn format(&self) -> String {
        format::format_backup(self)
    }

    /// Push or pull.
    pub fn mode(&self) -> BackupMode {
        self.mode
    }

    /// The document-wide `<incremental>` checkpoint (an empty element
    /// counts as none).
    pub fn incremental(&self) -> Option<&str> {
        self.incremental.as_deref()
    }

    /// The NBD server (pull only).
    pub fn server(&self) -> Option<&BackupServer> {
        self.server.as_ref()
    }

    /// After alignment: one entry per domain disk, the named ones first.
    pub fn disks(&self) -> &[BackupDisk] {
        &self.disks
    }

    /// The entry for target `name`.
    pub fn disk(&self, name: &str) -> Option<&BackupDisk> {
        self.disks.iter().find(|d| d.name == name)
    }

    /// The disks that are backed up, in the definition's order.
    pub fn backed_up(&self) -> impl Iterator<Item = (&BackupDisk, &BackupStore)> {
        self.disks
            .iter()
            .filter_map(|d| Some((d, d.store.as_ref()?)))
    }

    /// Whether this is a pull backup over TCP whose port was not given.
    pub fn needs_port(&self) -> bool {
        self.mode == BackupMode::Pull
            && self
                .server
                .as_ref()
                .is_some_and(|s| s.transport == Transport::Tcp && s.port == 0)
    }

    /// Gives a TCP server without a port the one the driver allocated
    /// (libvirt 9.0 has no port range for backups and refuses instead,
    /// see [`Self::prepare_server`]); backup-dumpxml then shows it.
    pub fn assign_port(&mut self, port: u16) {
        if let Some(server) = self.server.as_mut() {
            if server.transport == Transport::Tcp && server.port == 0 {
                server.port = port;
            }
        }
    }

    /// qemuBackupPrepare: a pull backup's TCP server must have a port
    /// (VIR_ERR_OPERATION_UNSUPPORTED from the QEMU driver).
    pub fn prepare_server(&mut self) -> Result<(), ConfError> {
        align::prepare_server(self)
    }

    /// The QEMU driver's per-disk preparation that needs no QEMU, against
    /// the running domain: see the module docs, step 6. Also fills in the
    /// defaults the job shows: store format qcow2, `index=`, and for pull
    /// the export name and bitmap.
    pub fn prepare_disks(
        &mut self,
        running: &DomainDef,
        env: &mut dyn BackupEnv,
    ) -> Result<(), ConfError> {
        align::prepare_disks(self, running, env)
    }
}

impl ParsedBackup {
    /// Push or pull.
    pub fn mode(&self) -> BackupMode {
        self.def.mode
    }

    /// Align with the running domain's definition; `suffix` comes from
    /// [`default_suffix`].
    pub fn align(self, running: &DomainDef, suffix: &str) -> Result<BackupDef, ConfError> {
        align::align_disks(self.def, running, suffix)
    }
}
