//! Deleting snapshots (virDomainSnapshotDelete): internal ones from the
//! images (QEMU's job, or `qemu-img` shut off), an external one by
//! committing its overlays into the images below, then the metadata with
//! the children moved up.

use std::sync::Arc;

use crate::conf::moment::Moment;
use crate::conf::snapshot::SnapshotDef;
use crate::conf::DomainDef;

use super::super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::super::moments::MomentKind;
use super::super::registry::DomainObj;
use super::super::store::{SnapshotAction, SnapshotIntent};
use super::super::Driver;
use super::{
    delete_flags, internal_disks, internal_images, metadata_xml, no_backup_running, SnapshotRef,
    Snapshots,
};

impl Driver {
    /// virDomainSnapshotDelete.
    pub async fn snapshot_delete(&self, snap: &SnapshotRef, flags: u32) -> Result<(), DriverError> {
        crate::fault::arm("snapshot-delete");
        use delete_flags::*;
        DriverError::check_exclusive(
            flags,
            (CHILDREN, "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN"),
            (CHILDREN_ONLY, "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY"),
            ErrorOrigin::Qemu,
        )?;
        DriverError::check_flags(
            flags,
            CHILDREN | METADATA_ONLY | CHILDREN_ONLY,
            "qemuDomainSnapshotDelete",
        )?;
        let obj = self.domain(&snap.dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, &snap.dom)?;
        no_backup_running(&obj)?;
        let (doomed, vm, live_def) = {
            let st = obj.lock();
            Snapshots::find(&st, &snap.name)?;
            let mut doomed = Vec::new();
            if flags & (CHILDREN | CHILDREN_ONLY) != 0 {
                // Leaves first: each goes while its parent still exists.
                let mut below = st.snapshots.descendants(Some(&snap.name));
                below.reverse();
                doomed.extend(below);
            }
            if flags & CHILDREN_ONLY == 0 {
                doomed.push(snap.name.clone());
            }
            let defs: Vec<SnapshotDef> = doomed
                .iter()
                .filter_map(|n| st.snapshots.get(n).cloned())
                .collect();
            (
                defs,
                st.live.as_ref().map(|l| l.vm.clone()),
                st.live.as_ref().map(|l| l.def.clone()),
            )
        };
        if flags & METADATA_ONLY == 0 {
            let target = Snapshots::find(&obj.lock(), &snap.name)?.clone();
            // libvirt's order of checks (qemuSnapshotDeleteValidate).
            if let (false, Some(live)) = (target.is_external(), &live_def) {
                same_images(&target, live)?;
            }
            if flags & (CHILDREN | CHILDREN_ONLY) != 0 {
                let below: Vec<&SnapshotDef> =
                    doomed.iter().filter(|d| d.name() != snap.name).collect();
                let external = below.iter().filter(|d| d.is_external()).count();
                let unsupported =
                    |what: &str| Err(DriverError::new(ErrorKind::ConfigUnsupported, what));
                if external > 0 && external < below.len() {
                    return unsupported(
                        "deletion of external and internal children disk snapshots not supported",
                    );
                }
                if external > 0 {
                    return unsupported(
                        "deletion of external children disk snapshots not supported",
                    );
                }
                if target.is_external() && flags & CHILDREN != 0 {
                    return unsupported(
                        "deletion of external disk snapshots with children not supported",
                    );
                }
            }
            if target.is_external() {
                crate::driver::rules::no_block_jobs(
                    &obj,
                    crate::driver::rules::BlockJobBlocks::ExternalDelete,
                )?;
            }
            if target.is_external() && flags & (CHILDREN | CHILDREN_ONLY) == 0 {
                return self.delete_external(&obj, &target).await;
            }
            if let Some(live) = &live_def {
                for def in &doomed {
                    same_images(def, live)?;
                }
            }
            // Each intent before its images are touched; from there on
            // the delete is finished, by this call or whoever finds the
            // intent (intent.rs).
            let mut intents = Vec::new();
            for def in &doomed {
                let intent = SnapshotIntent {
                    snapshot: def.name().to_string(),
                    action: SnapshotAction::Delete,
                    nodes: match &vm {
                        Some(_) => self.internal_node_indexes(&obj, def)?,
                        None => Vec::new(),
                    },
                    images: internal_images(def),
                    paused_by_us: false,
                    overlays: Vec::new(),
                    metadata: None,
                };
                self.save_snapshot_intent(&obj, intent.clone()).await?;
                intents.push(intent.clone());
                let deleted = self.delete_internal_images(&obj, &intent).await;
                if let Err(err) = deleted {
                    for intent in &intents {
                        self.settle_snapshot_intent(&obj, intent).await;
                    }
                    return Err(err);
                }
            }
            for intent in &intents {
                if let Err(err) = self.forget_snapshot(&obj, &intent.snapshot).await {
                    for intent in &intents {
                        self.settle_snapshot_intent(&obj, intent).await;
                    }
                    return Err(err);
                }
                self.drop_snapshot_intent(&obj, &intent.snapshot).await;
            }
            return Ok(());
        }
        for def in &doomed {
            self.forget_snapshot(&obj, def.name()).await?;
        }
        Ok(())
    }

    /// The metadata half of a delete: children move up to the parent
    /// (their files rewritten), the parent becomes current if the deleted
    /// one was.
    pub(super) async fn forget_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        name: &str,
    ) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        let files = {
            let st = obj.lock();
            let tree = &st.snapshots;
            let file = |def: &SnapshotDef, current: bool| {
                (def.name().to_string(), metadata_xml(def, current, uuid))
            };
            let orphans = tree.orphans(name);
            let mut files: Vec<(String, String)> = orphans
                .iter()
                .map(|def| file(def, tree.current() == Some(def.name())))
                .collect();
            // Its parent takes over as current.
            let parent = tree.parent(name).and_then(|p| tree.get(p));
            if let Some(parent) = parent.filter(|_| tree.current() == Some(name)) {
                files.push(file(parent, true));
            }
            files
        };
        self.write_moments::<Snapshots>(uuid, files, Some(name.to_string()))
            .await?;
        obj.lock().snapshots.forget(name, true);
        Ok(())
    }
}

/// libvirt refuses to touch an internal snapshot whose images the VM no
/// longer runs on (an external snapshot covered them since).
fn same_images(def: &SnapshotDef, live: &DomainDef) -> Result<(), DriverError> {
    let Some(domain) = def.domain() else {
        return Ok(());
    };
    for disk in internal_disks(def) {
        let then = domain.disk_by_target(disk).and_then(|d| d.source());
        let now = live.disk_by_target(disk).and_then(|d| d.source());
        if then != now {
            return Err(DriverError::new(
                ErrorKind::OperationUnsupported,
                format!(
                    "disk image '{disk}' for internal snapshot '{}' is not the same as disk image currently used by VM",
                    def.name()
                ),
            ));
        }
    }
    Ok(())
}
