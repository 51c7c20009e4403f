//! Reverting to a snapshot (virDomainRevertToSnapshot): an internal one
//! with the guest's memory is loaded into a running QEMU (started first if
//! need be); a disk-only one is applied to the images of the shut-off
//! domain, which then starts if asked.

use std::sync::Arc;

use crate::conf::snapshot::SnapshotState;
use crate::qemu::snapshot::{self as qsnap, InternalNodes, OfflineOp};

use super::super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::super::moments::MomentKind;
use super::super::registry::{state, DomainObj};
use super::super::store::{SnapshotAction, SnapshotIntent};
use super::super::Driver;
use super::{
    internal_images, metadata_xml, no_backup_running, qemu_img, revert_flags, SnapshotRef,
    Snapshots,
};

impl Driver {
    /// virDomainRevertToSnapshot.
    pub async fn revert_to_snapshot(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<(), DriverError> {
        crate::fault::arm("snapshot-revert");
        use revert_flags::*;
        DriverError::check_flags(
            flags,
            RUNNING | PAUSED | FORCE | RESET_NVRAM,
            "qemuDomainRevertToSnapshot",
        )?;
        DriverError::check_exclusive(
            flags,
            (RUNNING, "VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING"),
            (PAUSED, "VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED"),
            ErrorOrigin::Qemu,
        )?;
        let obj = self.domain(&snap.dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, &snap.dom)?;
        no_backup_running(&obj)?;
        crate::driver::rules::no_block_jobs(&obj, crate::driver::rules::BlockJobBlocks::Revert)?;
        let (def, vm) = {
            let st = obj.lock();
            let def = Snapshots::find(&st, &snap.name)?.clone();
            (def, st.live.as_ref().map(|l| l.vm.clone()))
        };
        if def.is_external() {
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                "revert to external snapshot not supported yet",
            ));
        }
        let online = def.state().is_some_and(SnapshotState::is_online);
        if online {
            let vm = match vm {
                Some(vm) => vm,
                None => {
                    self.start_config(&obj, true).await?;
                    obj.lock()
                        .live
                        .as_ref()
                        .map(|l| l.vm.clone())
                        .ok_or_else(DriverError::not_running)?
                }
            };
            let run = flags & RUNNING != 0
                || (flags & PAUSED == 0 && def.state() == Some(SnapshotState::Running));
            let intent = SnapshotIntent {
                snapshot: snap.name.clone(),
                action: SnapshotAction::Revert,
                nodes: self.internal_node_indexes(&obj, &def)?,
                images: Vec::new(),
                paused_by_us: run,
                overlays: Vec::new(),
                metadata: None,
            };
            self.save_snapshot_intent(&obj, intent.clone()).await?;
            let reverted = async {
                if obj.lock().state == state::RUNNING {
                    vm.stop().await?;
                }
                let nodes = InternalNodes::new(intent.nodes.iter().copied());
                qsnap::load_internal(vm.monitor(), &snap.name, &nodes).await?;
                if run {
                    vm.cont().await?;
                }
                self.set_current_snapshot(&obj, &snap.name).await
            }
            .await;
            match reverted {
                Ok(()) => self.drop_snapshot_intent(&obj, &snap.name).await,
                Err(err) => {
                    // The load failed or was cut short: the guest runs if
                    // it was to; a QEMU that is gone leaves the intent to
                    // the next start.
                    if !run || vm.cont().await.is_ok() {
                        self.drop_snapshot_intent(&obj, &snap.name).await;
                    }
                    return Err(err);
                }
            }
            return Ok(());
        } else {
            if vm.is_some() {
                self.destroy_locked(&obj).await?;
            }
            for image in internal_images(&def) {
                qsnap::offline(&qemu_img(), OfflineOp::Apply, &snap.name, &image).await?;
            }
            if flags & (RUNNING | PAUSED) != 0 {
                self.start_config(&obj, flags & PAUSED != 0).await?;
            }
        }
        self.set_current_snapshot(&obj, &snap.name).await
    }

    /// Makes `name` the current snapshot, on disk and in memory.
    pub(super) async fn set_current_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        name: &str,
    ) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        let files = {
            let st = obj.lock();
            let mut files = Vec::new();
            if let Some(old) = st.snapshots.current().filter(|c| *c != name) {
                if let Some(def) = st.snapshots.get(old) {
                    files.push((old.to_string(), metadata_xml(def, false, uuid)));
                }
            }
            if let Some(def) = st.snapshots.get(name) {
                files.push((name.to_string(), metadata_xml(def, true, uuid)));
            }
            files
        };
        self.write_moments::<Snapshots>(uuid, files, None).await?;
        obj.lock().snapshots.set_current(Some(name));
        Ok(())
    }

    /// Starts the persistent definition of a shut-off domain.
    async fn start_config(&self, obj: &Arc<DomainObj>, paused: bool) -> Result<(), DriverError> {
        let config = obj
            .lock()
            .config
            .clone()
            .ok_or_else(|| DriverError::internal("domain has no definition"))?;
        self.start_def(obj, config, paused).await
    }
}
