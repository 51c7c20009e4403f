//! Images added to a running QEMU: backup targets, made and attached the
//! way libvirt 9.0 makes them.
//!
//! # What goes over QMP, and where libvirt 9.0 does the same
//!
//! An image is two nodes, `libvirt-M-storage` (the file) under
//! `libvirt-M-format` (qcow2 or raw), with an M the caller takes from the
//! domain's node-name counter (qemuDomainPrepareStorageSourceBlockdev), so
//! never one of the disks' own.
//!
//! [`create_image`] (qemuBackupDiskPrepareOneStorage without
//! REUSE_EXTERNAL, then qemuBlockStorageSourceCreate):
//!
//! 1. (the backup caller) refuse a path that exists ("store '%s' for
//!    backup of '%s' exists");
//! 2. create the empty file ourselves, mode 0600 (libvirt's
//!    virStorageSourceCreate: local files are made by the daemon, not by
//!    QEMU, so that they get the right owner and label);
//! 3. raw only: `blockdev-create` job `create-libvirt-M-storage` with
//!    `{driver: file, filename, size}`, because a raw image's size is its
//!    file's size;
//! 4. `blockdev-add` of the storage node;
//! 5. qcow2 only: `blockdev-create` job `create-libvirt-M-format` with
//!    `{driver: qcow2, file, size, cluster-size, backing-file, backing-fmt}`;
//! 6. `blockdev-add` of the format node.
//!
//! Each job is followed to `concluded` ([`JobWatch`]), read with
//! `query-jobs` and dismissed with `job-dismiss`. On any failure the nodes
//! added so far are deleted (`blockdev-del`, format before storage) and the
//! file removed, as qemuBlockStorageSourceAttachRollback and
//! qemuBackupDiskDataCleanupOne do.
//!
//! A block device (`type='block'`) goes through the same steps but 1-3,
//! with a `host_device` storage node: libvirt creates and checks only
//! files, so a device that exists is formatted (qcow2) or written over
//! (raw), and stays when the image goes.
//!
//! [`attach_image`] (REUSE_EXTERNAL, qemuBlockStorageSourceAttachApply):
//! steps 4 and 6 only, on a file the caller made; one that is missing is
//! reported before QEMU is asked, as libvirt's labelling step does.
//!
//! The format node of an image with a backing image names the *running*
//! disk's format node as `backing`: QEMU then reads through to the live
//! disk instead of opening the backing file a second time. Without one it
//! says `backing: null`, so QEMU opens nothing the header might name.
//!
//! [`detach_image`] is `blockdev-del` of the format node, then of the
//! storage node.

use std::io;
use std::path::{Path, PathBuf};

use qapi::qmp::{
    BlockdevCreateOptions, BlockdevCreateOptionsFile, BlockdevCreateOptionsQcow2, BlockdevDriver,
    BlockdevRef, PreallocMode,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::warn;

use super::command::DiskFormat;
use super::error::QemuError;
use super::jobs::{self, JobOutcome, JobWatch};
use super::monitor::Monitor;

/// The image a new one is layered on (incremental push backups to qcow2,
/// scratch images, snapshot overlays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImage {
    /// Written into the new image's header as its backing file.
    pub path: PathBuf,
    /// Written into the header as the backing format.
    pub format: DiskFormat,
    /// The running node that stands for it in QEMU, e.g. "libvirt-2-format",
    /// linked in when the new image is attached; `None` attaches it without
    /// one (an overlay, which `blockdev-snapshot` links).
    pub node: Option<String>,
}

/// What `query-named-block-nodes` says about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceImage {
    /// Virtual size in bytes.
    pub size: u64,
    /// qcow2 only.
    pub cluster_size: Option<u64>,
    /// qcow2 only.
    pub extended_l2: bool,
}

/// An image to create or attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where it lives; must be valid UTF-8 (QEMU takes it in JSON).
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// A host block device rather than a file: QEMU's `host_device`
    /// driver. It is formatted but never created nor removed, and may
    /// exist (libvirt makes and checks only files).
    pub block: bool,
    /// M in `libvirt-M-storage` / `libvirt-M-format`.
    pub node_index: u32,
    /// Backing image (qcow2 only; ignored for raw, as libvirt ignores it).
    pub backing: Option<BackingImage>,
    /// Virtual size in bytes (for creation).
    pub size: u64,
    /// qcow2 cluster size to create with; `None` leaves it to QEMU.
    pub cluster_size: Option<u64>,
    /// Create the qcow2 image with extended L2 entries.
    pub extended_l2: bool,
    /// Create the qcow2 image with its metadata for every cluster
    /// (`preallocation: metadata`; the file stays sparse). A copy into it
    /// then allocates nothing cluster by cluster, which on a real
    /// filesystem is most of a full backup's time. Only for an image
    /// without a backing file: its clusters all read as its own.
    pub metadata_preallocated: bool,
    /// QEMU never syncs the image (`cache.no-flush` on its storage node):
    /// a push backup's target, which the daemon syncs once QEMU has closed
    /// it (writeback.rs), or a scratch image, which never outlives its
    /// backup. Not for anything the guest's data lives in.
    pub unsynced: bool,
    /// The guest disk it is for, e.g. "vda" (messages only).
    pub disk: String,
}

impl ImageSpec {
    /// Size and qcow2 properties from the image the new one stands for
    /// (qemuBlockStorageSourceCreateDetectSize): the virtual size always,
    /// cluster size and extended L2 only from a qcow2 image to a qcow2 one.
    pub fn sized_like(&mut self, image: &SourceImage, image_format: DiskFormat) {
        self.size = image.size;
        if image_format == DiskFormat::Qcow2 && self.format == DiskFormat::Qcow2 {
            self.cluster_size = image.cluster_size;
            self.extended_l2 = image.extended_l2;
        }
    }

    /// The storage (file) node name.
    pub fn storage_node(&self) -> String {
        super::node::storage(self.node_index)
    }

    /// The format node name.
    pub fn format_node(&self) -> String {
        super::node::format(self.node_index)
    }

    fn path_str(&self) -> Result<&str, QemuError> {
        self.path.to_str().ok_or_else(|| {
            QemuError::InvalidInput(format!("path '{}' is not valid UTF-8", self.path.display()))
        })
    }

    /// The backing image, if the format can have one.
    fn backing(&self) -> Option<&BackingImage> {
        match self.format {
            DiskFormat::Qcow2 => self.backing.as_ref(),
            DiskFormat::Raw => None,
        }
    }
}

/// An image attached to QEMU: what it takes to detach and remove it again,
/// also after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedImage {
    /// The file.
    pub path: PathBuf,
    /// The storage node.
    pub storage_node: String,
    /// The format node, the one jobs write to.
    pub format_node: String,
    /// Whether [`create_image`] made the file (so it is ours to remove).
    pub created: bool,
}

/// Creates the image file (an empty one may be there already: it is
/// truncated, and removed on failure, as libvirt's virStorageSourceCreate
/// does; callers refuse anything else), formats it through QEMU and
/// attaches it. Nothing is left behind on failure.
///
/// Errors: [`QemuError::Io`] "failed to create image file '%s'" (its source is the
/// errno libvirt appends); [`QemuError::JobFailed`] "failed to format
/// image: '%s'" when a `blockdev-create` job fails; a command's error.
pub async fn create_image(mon: &Monitor, spec: &ImageSpec) -> Result<AttachedImage, QemuError> {
    let path = spec.path_str()?;
    // A device is there already and stays, whatever happens.
    let makes_file = !spec.block;
    if makes_file {
        create_file(&spec.path).await?;
    }
    let mut added = Added::default();
    match create_steps(mon, spec, path, &mut added).await {
        Ok(()) => Ok(spec.attached(makes_file)),
        Err(e) => {
            added.roll_back(mon, spec).await;
            if makes_file {
                if let Err(unlink) = tokio::fs::remove_file(&spec.path).await {
                    warn!(path, "unable to remove just-created image: {unlink}");
                }
            }
            Err(e)
        }
    }
}

async fn create_steps(
    mon: &Monitor,
    spec: &ImageSpec,
    path: &str,
    added: &mut Added,
) -> Result<(), QemuError> {
    // A raw file's size is the file's; a device's size is its own.
    if spec.format == DiskFormat::Raw && !spec.block {
        let options = BlockdevCreateOptions::file(BlockdevCreateOptionsFile {
            extent_size_hint: None,
            nocow: None,
            preallocation: None,
            filename: path.to_owned(),
            size: spec.size,
        });
        run_create_job(mon, &format!("create-{}", spec.storage_node()), options).await?;
    }
    add_storage(mon, spec, path, added).await?;
    if spec.format == DiskFormat::Qcow2 {
        let backing = spec.backing();
        let backing_file = backing
            .map(|b| {
                b.path.to_str().map(str::to_owned).ok_or_else(|| {
                    QemuError::InvalidInput(format!(
                        "path '{}' is not valid UTF-8",
                        b.path.display()
                    ))
                })
            })
            .transpose()?;
        let options = BlockdevCreateOptions::qcow2(BlockdevCreateOptionsQcow2 {
            backing_file,
            backing_fmt: backing.map(|b| driver(b.format)),
            cluster_size: spec.cluster_size.filter(|&size| size > 0),
            compression_type: None,
            data_file: None,
            data_file_raw: None,
            encrypt: None,
            extended_l2: spec.extended_l2.then_some(true),
            lazy_refcounts: None,
            preallocation: (spec.metadata_preallocated && backing.is_none())
                .then_some(PreallocMode::metadata),
            refcount_bits: None,
            version: None,
            file: BlockdevRef::reference(spec.storage_node()),
            size: spec.size,
        });
        run_create_job(mon, &format!("create-{}", spec.format_node()), options).await?;
    }
    add_format(mon, spec, added).await
}

/// Attaches an existing image (the caller made it). Nothing is left
/// attached on failure.
///
/// Errors: [`QemuError::Io`] "unable to stat: %s" for a file that is not
/// there (libvirt's labelling looks first, so QEMU is not asked); a
/// command's error.
pub async fn attach_image(mon: &Monitor, spec: &ImageSpec) -> Result<AttachedImage, QemuError> {
    let path = spec.path_str()?;
    if let Err(e) = tokio::fs::metadata(&spec.path).await {
        return Err(QemuError::io(format!("unable to stat: {path}"), e));
    }
    let mut added = Added::default();
    let result = async {
        add_storage(mon, spec, path, &mut added).await?;
        add_format(mon, spec, &mut added).await
    }
    .await;
    match result {
        Ok(()) => Ok(spec.attached(false)),
        Err(e) => {
            added.roll_back(mon, spec).await;
            Err(e)
        }
    }
}

/// `blockdev-del` of the format node, then of the storage node; both are
/// tried, and every failure is returned.
pub async fn detach_image(mon: &Monitor, image: &AttachedImage) -> Vec<QemuError> {
    let mut errors = Vec::new();
    for node in [&image.format_node, &image.storage_node] {
        if let Err(e) = blockdev_del(mon, node).await {
            errors.push(e);
        }
    }
    errors
}

/// Removes the image file if [`create_image`] made it; a file already gone
/// is not an error.
pub async fn remove_created(image: &AttachedImage) -> Result<(), QemuError> {
    if !image.created {
        return Ok(());
    }
    match tokio::fs::remove_file(&image.path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QemuError::io(
            format!("failed to remove scratch file '{}'", image.path.display()),
            e,
        )),
    }
}

impl ImageSpec {
    fn attached(&self, created: bool) -> AttachedImage {
        AttachedImage {
            path: self.path.clone(),
            storage_node: self.storage_node(),
            format_node: self.format_node(),
            created,
        }
    }
}

/// Which nodes of a half-made image exist.
#[derive(Default)]
struct Added {
    storage: bool,
    format: bool,
}

impl Added {
    /// Best effort, like qemuBlockStorageSourceAttachRollback: failures are
    /// logged, the caller's error stands.
    async fn roll_back(&self, mon: &Monitor, spec: &ImageSpec) {
        let nodes = [
            (self.format, spec.format_node()),
            (self.storage, spec.storage_node()),
        ];
        for (added, node) in nodes {
            if added {
                if let Err(e) = blockdev_del(mon, &node).await {
                    warn!(node, "cannot remove node after a failed attach: {e}");
                }
            }
        }
    }
}

/// libvirt's storage node for a local image: auto-read-only, discard
/// passed down, the same as the disks' own (command.rs).
async fn add_storage(
    mon: &Monitor,
    spec: &ImageSpec,
    path: &str,
    added: &mut Added,
) -> Result<(), QemuError> {
    let mut props = json!({
        // QEMU's file driver refuses anything but a regular file.
        "driver": if spec.block { "host_device" } else { "file" },
        "filename": path,
        "node-name": spec.storage_node(),
        "auto-read-only": true,
        "discard": "unmap",
    });
    if spec.unsynced {
        props["cache"] = json!({"direct": false, "no-flush": true});
    }
    mon.execute_value("blockdev-add", props).await?;
    added.storage = true;
    Ok(())
}

async fn add_format(mon: &Monitor, spec: &ImageSpec, added: &mut Added) -> Result<(), QemuError> {
    let mut props = json!({
        "node-name": spec.format_node(),
        "read-only": false,
        "driver": spec.format.as_str(),
        "file": spec.storage_node(),
    });
    if spec.format == DiskFormat::Qcow2 {
        let backing = spec
            .backing()
            .and_then(|b| b.node.clone())
            .map(Value::String);
        props["backing"] = backing.unwrap_or(Value::Null);
    }
    mon.execute_value("blockdev-add", props).await?;
    added.format = true;
    Ok(())
}

async fn blockdev_del(mon: &Monitor, node: &str) -> Result<(), QemuError> {
    mon.execute(qapi::qmp::blockdev_del {
        node_name: node.to_owned(),
    })
    .await
    .map(drop)
}

/// Runs one `blockdev-create` job to its end and dismisses it, as
/// qemuBlockStorageSourceCreateGeneric does.
async fn run_create_job(
    mon: &Monitor,
    id: &str,
    options: BlockdevCreateOptions,
) -> Result<(), QemuError> {
    let mut watch = JobWatch::new(mon, [id.to_owned()]);
    mon.execute(qapi::qmp::blockdev_create {
        job_id: id.to_owned(),
        options,
    })
    .await?;
    let end = watch.next().await?;
    if let Err(e) = jobs::dismiss(mon, id).await {
        warn!(id, "cannot dismiss job: {e}");
    }
    match end.map(|end| end.outcome) {
        Some(JobOutcome::Completed) => Ok(()),
        Some(JobOutcome::Failed(error)) => Err(QemuError::JobFailed(format!(
            "failed to format image: '{error}'"
        ))),
        Some(JobOutcome::Cancelled | JobOutcome::Vanished) | None => Err(QemuError::JobFailed(
            "blockdev-create job was cancelled".into(),
        )),
    }
}

/// The empty file libvirt creates before QEMU formats it
/// (virStorageFileBackendFileCreate: write-only, create, truncate, 0600).
async fn create_file(path: &Path) -> Result<(), QemuError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map(drop)
        .map_err(|e| {
            QemuError::io(
                format!("failed to create image file '{}'", path.display()),
                e,
            )
        })
}

fn driver(format: DiskFormat) -> BlockdevDriver {
    match format {
        DiskFormat::Qcow2 => BlockdevDriver::qcow2,
        DiskFormat::Raw => BlockdevDriver::raw,
    }
}
