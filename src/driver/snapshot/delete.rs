//! Deleting snapshots (virDomainSnapshotDelete): internal ones from the
//! images (QEMU's job, or `qemu-img` shut off), an external one by
//! committing its overlays into the images below, then the metadata with
//! the children moved up.

use std::sync::Arc;

use crate::conf::moment::Moment;
use crate::conf::snapshot::{SnapshotDef, SnapshotLocation};
use crate::conf::{DomainDef, FormatMode, Secrets};
use crate::qemu::snapshot::{self as qsnap, OfflineOp};

use super::super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::super::registry::DomainObj;
use super::super::store::OverlayBase;
use super::super::Driver;
use super::{
    delete_flags, internal_images, metadata_xml, no_backup_running, no_snapshot, qemu_img,
    SnapshotRef,
};

impl Driver {
    /// virDomainSnapshotDelete.
    pub async fn snapshot_delete(&self, snap: &SnapshotRef, flags: u32) -> Result<(), DriverError> {
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
            if !st.snapshots.contains(&snap.name) {
                return Err(no_snapshot(&snap.name));
            }
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
            let target = obj
                .lock()
                .snapshots
                .get(&snap.name)
                .cloned()
                .ok_or_else(|| no_snapshot(&snap.name))?;
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
            if target.is_external() && flags & (CHILDREN | CHILDREN_ONLY) == 0 {
                self.commit_external(&obj, &target, vm.as_ref()).await?;
                return self.forget_snapshot(&obj, &snap.name).await;
            }
            if let Some(live) = &live_def {
                for def in &doomed {
                    same_images(def, live)?;
                }
            }
            for def in &doomed {
                match &vm {
                    Some(vm) => {
                        let nodes = self.internal_nodes(&obj, def)?;
                        qsnap::delete_internal(vm.monitor(), def.name(), &nodes).await?;
                    }
                    None => {
                        for image in internal_images(def) {
                            qsnap::offline(&qemu_img(), OfflineOp::Delete, def.name(), &image)
                                .await?;
                        }
                    }
                }
            }
        }
        for def in &doomed {
            self.forget_snapshot(&obj, def.name()).await?;
        }
        Ok(())
    }

    /// Deletes an external snapshot's overlays by committing each into the
    /// image below it, as libvirt 9.0 does; here only where the overlay is
    /// the disk's active layer (the newest snapshot of the disk). The
    /// definitions then name the images from before the snapshot again; the
    /// overlay files stay, as with libvirt.
    async fn commit_external(
        &self,
        obj: &Arc<DomainObj>,
        def: &SnapshotDef,
        vm: Option<&Arc<crate::qemu::RunningVm>>,
    ) -> Result<(), DriverError> {
        let before = def
            .domain()
            .ok_or_else(|| DriverError::internal("snapshot without its domain"))?;
        let disks: Vec<(&str, &str)> = def
            .disks()
            .iter()
            .filter(|d| d.snapshot() == Some(SnapshotLocation::External))
            .filter_map(|d| Some((d.name(), d.path()?)))
            .collect();
        let not_top = || {
            DriverError::new(
                ErrorKind::OperationUnsupported,
                format!(
                    "deleting external snapshot '{}' whose overlays are not the active layer is not supported",
                    def.name()
                ),
            )
        };
        match vm {
            Some(vm) => {
                // Per disk: the active layer's K and the snapshot's overlay
                // layer, found by walking down from the active layer; all
                // checked before anything is committed.
                let commits: Vec<(String, u32, OverlayBase)> = {
                    let st = obj.lock();
                    let live = st.live.as_ref().ok_or_else(DriverError::not_running)?;
                    disks
                        .iter()
                        .map(|(disk, path)| {
                            let current = live.def.disk_by_target(disk).ok_or_else(not_top)?;
                            let active = current.node_index();
                            let mut node = active;
                            // Each step goes one layer down; there are no
                            // more steps than layers.
                            for _ in 0..=live.overlays.len() {
                                let layer = live
                                    .overlays
                                    .iter()
                                    .find(|o| o.disk == *disk && o.overlay == node)
                                    .ok_or_else(not_top)?;
                                if layer.path == *path {
                                    return Ok((disk.to_string(), active, layer.clone()));
                                }
                                node = layer.base;
                            }
                            Err(not_top())
                        })
                        .collect::<Result<_, _>>()?
                };
                for (disk, active, layer) in &commits {
                    let old = before.disk_by_target(disk).cloned();
                    let backing = old.as_ref().and_then(|d| d.source()).unwrap_or_default();
                    qsnap::commit(
                        vm.monitor(),
                        disk,
                        *active,
                        layer.overlay,
                        layer.base,
                        backing,
                    )
                    .await?;
                    let mut st = obj.lock();
                    if let Some(live) = st.live.as_mut() {
                        if *active == layer.overlay {
                            if let Some(mut old) = old {
                                old.set_node_index(layer.base);
                                live.def.replace_disk(old);
                            }
                        }
                        // The layer above now sits on the base.
                        for o in &mut live.overlays {
                            if o.disk == layer.disk && o.base == layer.overlay {
                                o.base = layer.base;
                            }
                        }
                        live.overlays.retain(|o| o.overlay != layer.overlay);
                    }
                }
                self.save_live(obj);
            }
            None => {
                let config = obj.lock().config.clone();
                let config =
                    config.ok_or_else(|| DriverError::internal("domain has no definition"))?;
                for (disk, path) in &disks {
                    let current = config.disk_by_target(disk).and_then(|d| d.source());
                    if current != Some(*path) {
                        return Err(not_top());
                    }
                }
                for (_, path) in &disks {
                    qsnap::offline_commit(&qemu_img(), std::path::Path::new(path)).await?;
                }
            }
        }
        let config = {
            let mut st = obj.lock();
            st.config.as_mut().map(|config| {
                for (disk, _) in &disks {
                    if let Some(old) = before.disk_by_target(disk) {
                        let mut old = old.clone();
                        let index = config.disk_by_target(disk).map_or(0, |d| d.node_index());
                        old.set_node_index(index);
                        config.replace_disk(old);
                    }
                }
                config.format(FormatMode::Inactive, Secrets::Shown)
            })
        };
        if let Some(xml) = config {
            let uuid = obj.uuid;
            self.store_io(move |s| s.save_config(&uuid, &xml)).await?;
        }
        Ok(())
    }

    /// The metadata half of a delete: children move up to the parent
    /// (their files rewritten), the parent becomes current if the deleted
    /// one was.
    async fn forget_snapshot(&self, obj: &Arc<DomainObj>, name: &str) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        let (files, parent, was_current) = {
            let st = obj.lock();
            let parent = st.snapshots.parent(name).map(str::to_string);
            let was_current = st.snapshots.current() == Some(name);
            let mut files: Vec<(String, String)> = st
                .snapshots
                .children(name)
                .into_iter()
                .filter_map(|child| {
                    let mut def = st.snapshots.get(&child)?.clone();
                    def.set_parent(parent.clone());
                    let current = st.snapshots.current() == Some(child.as_str());
                    Some((child, metadata_xml(&def, current, uuid)))
                })
                .collect();
            if was_current {
                if let Some(p) = &parent {
                    if let Some(def) = st.snapshots.get(p) {
                        files.push((p.clone(), metadata_xml(def, true, uuid)));
                    }
                }
            }
            (files, parent, was_current)
        };
        let doomed = name.to_string();
        self.store_io(move |s| {
            for (child, xml) in &files {
                s.save_snapshot(&uuid, child, xml)?;
            }
            s.delete_snapshot(&uuid, &doomed)
        })
        .await?;
        let mut st = obj.lock();
        for child in st.snapshots.children(name) {
            if let Some(def) = st.snapshots.get_mut(&child) {
                def.set_parent(parent.clone());
            }
        }
        st.snapshots.remove(name);
        if was_current {
            st.snapshots.set_current(parent.as_deref());
        }
        Ok(())
    }
}

/// libvirt refuses to touch an internal snapshot whose images the VM no
/// longer runs on (an external snapshot covered them since).
fn same_images(def: &SnapshotDef, live: &DomainDef) -> Result<(), DriverError> {
    let Some(domain) = def.domain() else {
        return Ok(());
    };
    for disk in def
        .disks()
        .iter()
        .filter(|d| d.snapshot() == Some(SnapshotLocation::Internal))
    {
        let then = domain.disk_by_target(disk.name()).and_then(|d| d.source());
        let now = live.disk_by_target(disk.name()).and_then(|d| d.source());
        if then != now {
            return Err(DriverError::new(
                ErrorKind::OperationUnsupported,
                format!(
                    "disk image '{}' for internal snapshot '{}' is not the same as disk image currently used by VM",
                    disk.name(),
                    def.name()
                ),
            ));
        }
    }
    Ok(())
}
