//! The one way back of every snapshot operation: an internal snapshot's
//! create, delete and revert, an external disk-only create, and an
//! external delete (whose settlement is `fold.rs`'s).
//!
//! Each writes a [`SnapshotIntent`] before QEMU or `qemu-img` touch the
//! images, and removes it once the metadata agrees with the images. An
//! intent found later — by the call's own error path, at start-up, or when
//! the domain starts, before its QEMU does — is settled:
//!
//! - a create whose metadata is there: only the intent's removal was lost;
//! - a create whose metadata is not: it is undone. A snapshot job QEMU
//!   still runs (or holds concluded) is waited for and dismissed, the
//!   snapshot is deleted from every image that has it (QEMU's
//!   `snapshot-delete` skips those that do not; `qemu-img` is asked
//!   first), and a guest the create stopped runs again;
//! - a delete is finished: the snapshot goes from every image that still
//!   has it, then from the metadata (its children move up);
//! - a revert of a running domain is finished: QEMU's load job is waited
//!   for and dismissed, the guest runs again if it is to, and the snapshot
//!   becomes current if the load succeeded (a load cut short cannot be
//!   undone: the guest's state is whatever QEMU made of it);
//! - an external create without metadata is finished if QEMU runs the
//!   disks on the overlays (or, QEMU gone, the definition names them): the
//!   live record, the definition and the metadata are written. Otherwise
//!   the overlays' nodes are deleted from QEMU and the files the create
//!   made are removed.
//!
//! An intent that cannot be settled (QEMU does not answer, an image is
//! unreadable) stays for the next chance.

use std::sync::Arc;
use std::time::Duration;

use crate::conf::snapshot::{ParseFlags, SnapshotDef};
use crate::qemu::snapshot::{self as qsnap, InternalNodes, OfflineOp};

use super::super::error::DriverError;
use super::super::registry::DomainObj;
use super::super::store::{OverlayBase, SnapshotAction, SnapshotIntent};
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
    pub(super) async fn settle_snapshot_intent(
        &self,
        obj: &Arc<DomainObj>,
        intent: &SnapshotIntent,
    ) {
        let name = &intent.snapshot;
        let listed = obj.lock().snapshots.contains(name);
        let settled = match intent.action {
            SnapshotAction::Create if listed => Ok(()),
            SnapshotAction::Create => {
                tracing::warn!(snapshot = %name, "undoing an interrupted snapshot create");
                let vm = obj.lock().live.as_ref().map(|l| l.vm.clone());
                match self.delete_internal_images(obj, intent).await {
                    Ok(()) => match vm.filter(|_| intent.paused_by_us) {
                        Some(vm) => vm.cont().await.map_err(DriverError::from),
                        None => Ok(()),
                    },
                    Err(err) => Err(err),
                }
            }
            SnapshotAction::ExternalCreate if listed => Ok(()),
            SnapshotAction::ExternalCreate => self.settle_external_create(obj, intent).await,
            SnapshotAction::ExternalDelete | SnapshotAction::ExternalSwitch => {
                tracing::warn!(snapshot = %name, "settling an interrupted external snapshot delete");
                self.settle_fold(obj, intent).await
            }
            SnapshotAction::Revert => {
                tracing::warn!(snapshot = %name, "finishing an interrupted snapshot revert");
                self.finish_revert(obj, intent, listed).await
            }
            SnapshotAction::Delete => {
                tracing::warn!(snapshot = %name, "finishing an interrupted snapshot delete");
                match self.delete_internal_images(obj, intent).await {
                    Ok(()) if listed => self.forget_snapshot(obj, name).await,
                    other => other,
                }
            }
        };
        match settled {
            Ok(()) => self.drop_snapshot_intent(obj, name).await,
            Err(err) => {
                tracing::error!(snapshot = %name, %err, "cannot settle the interrupted snapshot operation; will try again");
            }
        }
    }

    /// An external create cut short: finished if the disks are on the
    /// overlays (QEMU's, or the definition's once QEMU is gone), the
    /// overlays taken away again otherwise.
    async fn settle_external_create(
        &self,
        obj: &Arc<DomainObj>,
        intent: &SnapshotIntent,
    ) -> Result<(), DriverError> {
        let vm = obj.lock().live.as_ref().map(|l| l.vm.clone());
        let switched = match &vm {
            Some(vm) => {
                let mon = vm.monitor();
                qsnap::settle_jobs(mon, "create-", JOB_PATIENCE).await?;
                let active = qsnap::active_nodes(mon).await?;
                let nodes = intent
                    .overlays
                    .iter()
                    .all(|o| active.contains(&crate::qemu::node::format(o.node_index)));
                if !nodes {
                    for o in &intent.overlays {
                        qsnap::drop_overlay(mon, o.node_index, &o.path, o.created).await;
                    }
                    return Ok(());
                }
                true
            }
            None => {
                let st = obj.lock();
                st.config.as_ref().is_some_and(|config| {
                    intent.overlays.iter().all(|o| {
                        config.disk_by_target(&o.disk).and_then(|d| d.source()) == o.path.to_str()
                    })
                })
            }
        };
        if !switched {
            for o in intent.overlays.iter().filter(|o| o.created) {
                match std::fs::remove_file(&o.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(DriverError::system(
                            format_args!("cannot remove '{}'", o.path.display()),
                            e,
                        ))
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if vm.is_some() {
            {
                let mut st = obj.lock();
                if let Some(live) = st.live.as_mut() {
                    for o in &intent.overlays {
                        let Some(d) = live.def.disk_by_target_mut(&o.disk) else {
                            continue;
                        };
                        if d.node_index() == o.node_index {
                            continue;
                        }
                        d.set_overlay(&o.path.to_string_lossy(), o.block, o.node_index);
                        live.overlays.push(OverlayBase {
                            disk: o.disk.clone(),
                            overlay: o.node_index,
                            base: o.base,
                            path: o.path.to_string_lossy().into_owned(),
                        });
                    }
                }
            }
            self.try_save_live(obj).await?;
        }
        self.change_config(obj, |config| {
            for o in &intent.overlays {
                if let Some(d) = config.disk_by_target_mut(&o.disk) {
                    let index = d.node_index();
                    d.set_overlay(&o.path.to_string_lossy(), o.block, index);
                }
            }
        })
        .await?;
        if let Some(xml) = &intent.metadata {
            let flags = ParseFlags {
                redefine: true,
                internal: true,
                ..ParseFlags::default()
            };
            let def = SnapshotDef::parse(xml, flags, 0)?.loaded();
            self.commit_snapshot(obj, def, true, true).await?;
        }
        Ok(())
    }

    /// A revert's end: QEMU's load job ends; if it loaded the snapshot,
    /// the guest runs if it is to and the snapshot becomes current. A QEMU
    /// that is gone has nothing left to finish.
    async fn finish_revert(
        &self,
        obj: &Arc<DomainObj>,
        intent: &SnapshotIntent,
        listed: bool,
    ) -> Result<(), DriverError> {
        let Some(vm) = obj.lock().live.as_ref().map(|l| l.vm.clone()) else {
            return Ok(());
        };
        let loaded = qsnap::settle_jobs(vm.monitor(), "snapshot-", JOB_PATIENCE).await?;
        if intent.paused_by_us {
            vm.cont().await?;
        }
        if loaded && listed {
            self.set_current_snapshot(obj, &intent.snapshot).await?;
        }
        Ok(())
    }

    /// Deletes the intent's internal snapshot from every image that has
    /// it: through QEMU if the domain runs (after its snapshot jobs
    /// end), else with `qemu-img`.
    pub(super) async fn delete_internal_images(
        &self,
        obj: &Arc<DomainObj>,
        intent: &SnapshotIntent,
    ) -> Result<(), DriverError> {
        let name = &intent.snapshot;
        let vm = obj.lock().live.as_ref().map(|l| l.vm.clone());
        match vm {
            // Nodes of a QEMU that ran then; any other waits for shut off.
            Some(_) if intent.nodes.is_empty() && !intent.images.is_empty() => Err(
                DriverError::internal("the snapshot's images are now held by a new QEMU"),
            ),
            Some(vm) => {
                let mon = vm.monitor();
                let _ = qsnap::settle_jobs(mon, "snapshot-", JOB_PATIENCE).await?;
                let nodes = InternalNodes::new(intent.nodes.iter().copied());
                if !intent.nodes.is_empty() {
                    qsnap::delete_internal(mon, name, &nodes).await?;
                }
                Ok(())
            }
            None => {
                for image in &intent.images {
                    if qsnap::offline_has(&qemu_img(), name, image).await? {
                        qsnap::offline(&qemu_img(), OfflineOp::Delete, name, image).await?;
                    }
                }
                Ok(())
            }
        }
    }
}
