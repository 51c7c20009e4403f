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
use super::registry::DomainState;

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
