//! A domain has snapshots or checkpoints, never both.
//!
//! This is the rule of libvirt's original checkpoint design, which libvirt
//! 9.0 relaxed: a snapshot reverts the disks under the bitmaps that record
//! changes since a checkpoint (and internal snapshots with bitmaps have
//! crashed QEMU 7.2), so an incremental backup after it would silently miss
//! data. Every way to create either kind asks here first — plain creates,
//! `--redefine`, and a backup that brings a new checkpoint — while holding
//! the domain's job lock, which every such create also holds until its
//! metadata is in the tree: two clients racing on one domain are served one
//! after the other, and the second sees the first one's moment. Deleting
//! the last moment of one kind makes the other kind possible again.

use super::error::{DriverError, ErrorKind};
use super::registry::{DomainObj, DomainState};

/// Before a checkpoint is created or redefined (job lock held).
pub(super) fn checkpoint_allowed(st: &DomainState) -> Result<(), DriverError> {
    if st.snapshots.is_empty() {
        return Ok(());
    }
    Err(DriverError::new(
        ErrorKind::OperationUnsupported,
        "cannot create checkpoint while snapshot exists",
    ))
}

/// Before a snapshot is created or redefined (job lock held).
pub(super) fn snapshot_allowed(st: &DomainState) -> Result<(), DriverError> {
    if st.checkpoints.is_empty() {
        return Ok(());
    }
    Err(DriverError::new(
        ErrorKind::OperationUnsupported,
        "cannot create snapshot while checkpoint exists",
    ))
}

/// Block jobs and backups share the disks as libvirt 9.0 shares them: a
/// disk has one job at a time. A backup of a disk in a block job fails as
/// libvirt's job registration does (the reverse is in driver/blockjob).
pub(super) fn backup_disks_free<'a>(
    obj: &DomainObj,
    mut disks: impl Iterator<Item = &'a str>,
) -> Result<(), DriverError> {
    match disks.find(|d| super::Driver::disk_has_block_job(obj, d)) {
        Some(disk) => Err(DriverError::internal(format!(
            "disk '{disk}' has a blockjob assigned"
        ))),
        None => Ok(()),
    }
}

/// An external snapshot changes the disks' chains under a block job;
/// libvirt refuses a snapshot of a disk in a job
/// (qemuDomainDiskBlockJobIsActive), and a revert while any runs.
pub(super) fn snapshot_disks_free<'a>(
    obj: &DomainObj,
    mut disks: impl Iterator<Item = &'a str>,
) -> Result<(), DriverError> {
    match disks.find(|d| super::Driver::disk_has_block_job(obj, d)) {
        Some(disk) => Err(DriverError::new(
            ErrorKind::OperationUnsupported,
            format!("disk '{disk}' already in active block job"),
        )),
        None => Ok(()),
    }
}

/// A revert, or the delete (commit) of an external snapshot, while any
/// disk has a block job.
pub(super) fn no_block_jobs(obj: &DomainObj, what: BlockJobBlocks) -> Result<(), DriverError> {
    if !super::Driver::has_block_job(obj) {
        return Ok(());
    }
    Err(match what {
        BlockJobBlocks::Revert => DriverError::operation_invalid("domain has active block job"),
        BlockJobBlocks::ExternalDelete => DriverError::new(
            ErrorKind::OperationUnsupported,
            "cannot delete external snapshots when there is another active block job",
        ),
    })
}

/// What [`no_block_jobs`] guards.
#[derive(Debug, Clone, Copy)]
pub(super) enum BlockJobBlocks {
    Revert,
    ExternalDelete,
}
