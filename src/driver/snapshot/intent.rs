//! The one way back of an internal snapshot create (the only snapshot
//! operation with an intent record so far; README, "Guarantees").
//!
//! The create writes a [`SnapshotIntent`] before QEMU or `qemu-img` touch
//! the images, and removes it once the snapshot's metadata is written: the
//! metadata write is the step that commits the operation. An intent found
//! later — by the call's own error path, at start-up, or when the domain
//! starts — is settled:
//!
//! - the metadata is there: only the intent's removal was lost;
//! - it is not: the operation is undone. A snapshot job QEMU still runs
//!   (or holds concluded) is waited for and dismissed, the snapshot is
//!   deleted from every image that has it (QEMU's `snapshot-delete` skips
//!   those that do not; `qemu-img` is asked first), and a guest the
//!   operation stopped runs again.
//!
//! An intent that cannot be settled (QEMU does not answer, an image is
//! unreadable) stays for the next chance.

use std::sync::Arc;
use std::time::Duration;

use crate::qemu::snapshot::{self as qsnap, InternalNodes, OfflineOp};

use super::super::registry::DomainObj;
use super::super::store::SnapshotIntent;
use super::super::Driver;
use super::qemu_img;

/// How long a snapshot job a dead daemon started may still run.
const JOB_PATIENCE: Duration = Duration::from_secs(30);

impl Driver {
    pub(super) async fn save_snapshot_intent(
        &self,
        obj: &DomainObj,
        intent: SnapshotIntent,
    ) -> Result<(), super::super::DriverError> {
        let uuid = obj.uuid;
        self.store_io(move |s| s.save_snapshot_intent(&uuid, &intent))
            .await
    }

    pub(super) async fn drop_snapshot_intent(&self, obj: &DomainObj, name: &str) {
        let (uuid, name) = (obj.uuid, name.to_string());
        if let Err(err) = self
            .store_io(move |s| s.delete_snapshot_intent(&uuid, &name))
            .await
        {
            tracing::warn!(%err, "cannot remove a snapshot intent record");
        }
    }

    /// Settles every snapshot intent of a domain; see the module
    /// documentation. Call with the domain's job lock held or before any
    /// client can reach the domain.
    pub(in crate::driver) async fn settle_snapshot_intents(&self, obj: &Arc<DomainObj>) {
        let uuid = obj.uuid;
        let stored = self
            .store_io(move |s| Ok(s.load_snapshot_intents(&uuid)))
            .await
            .unwrap_or_default();
        for (path, intent) in stored {
            match intent {
                Ok(intent) => self.settle_snapshot_intent(obj, &intent).await,
                Err(err) => {
                    tracing::error!(file = %path.display(), %err, "unreadable snapshot intent; leaving it");
                }
            }
        }
    }

    /// Finishes or undoes one intent; the record goes only once that is
    /// done.
    pub(super) async fn settle_snapshot_intent(&self, obj: &Arc<DomainObj>, intent: &SnapshotIntent) {
        let name = &intent.snapshot;
        let (listed, vm) = {
            let st = obj.lock();
            (
                st.snapshots.contains(name),
                st.live.as_ref().map(|l| l.vm.clone()),
            )
        };
        if listed {
            self.drop_snapshot_intent(obj, name).await;
            return;
        }
        tracing::warn!(snapshot = %name, "undoing an interrupted snapshot create");
        let undone = match &vm {
            Some(vm) => {
                let mon = vm.monitor();
                let nodes = InternalNodes::new(intent.nodes.iter().copied());
                let result = async {
                    qsnap::settle_jobs(mon, JOB_PATIENCE).await?;
                    if !intent.nodes.is_empty() {
                        qsnap::delete_internal(mon, name, &nodes).await?;
                    }
                    if intent.paused_by_us {
                        vm.cont().await?;
                    }
                    Ok::<(), crate::qemu::QemuError>(())
                }
                .await;
                result.map_err(|e| e.to_string())
            }
            None => {
                let mut result = Ok(());
                for image in &intent.images {
                    let has = qsnap::offline_has(&qemu_img(), name, image).await;
                    let deleted = match has {
                        Ok(true) => {
                            qsnap::offline(&qemu_img(), OfflineOp::Delete, name, image).await
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = deleted {
                        result = Err(format!("{}: {e}", image.display()));
                        break;
                    }
                }
                result
            }
        };
        match undone {
            Ok(()) => self.drop_snapshot_intent(obj, name).await,
            Err(err) => {
                tracing::error!(snapshot = %name, %err, "cannot undo the interrupted snapshot create; will try again");
            }
        }
    }
}
