//! Deleting an external snapshot: each disk's overlay is committed into
//! the image below it (`qemu::overlay_commit`), the definitions name those
//! images again, and the metadata goes. One intent record
//! ([`SnapshotAction::ExternalDelete`], then [`SnapshotAction::ExternalSwitch`])
//! decides which way an interrupted delete goes; the call itself runs
//! through the same settlement ([`Driver::settle_fold`]) as a restart does.
//!
//! 1. The intent is written, then every commit job is brought to where it
//!    waits for the switch. Nothing the guest sees has changed: a crash,
//!    a failed job or a full disk here undoes the delete (the jobs are
//!    cancelled, the snapshot stays).
//! 2. The guest is paused (only if a device moves), and the intent
//!    becomes `ExternalSwitch`: from here the delete is finished whatever
//!    happens.
//! 3. The jobs switch the disks; the live record, the definition and the
//!    metadata follow; the guest runs again; the intent goes.
//!
//! The pause is what makes step 3 finishable without QEMU: while the
//! guest cannot write, an overlay and the image it was committed into
//! hold the same data, so a QEMU killed anywhere in step 3 leaves a
//! definition that may still name the overlay, and `qemu-img commit`
//! finishes the fold with nothing lost. The guest runs again only once the
//! definition names the base, after which the overlay is never committed
//! again. libvirt 9.0 does not pause (and does not survive a crash there).

use std::path::Path;
use std::sync::Arc;

use crate::conf::moment::Moment;
use crate::conf::snapshot::{SnapshotDef, SnapshotLocation};
use crate::qemu::overlay_commit::{self as qfold, Fold};
use crate::qemu::RunningVm;

use super::super::error::{DriverError, ErrorKind};
use super::super::registry::DomainObj;
use super::super::store::{IntentOverlay, SnapshotAction, SnapshotIntent};
use super::super::Driver;
use super::qemu_img;

impl Driver {
    /// Deletes external snapshot `def` (no children), running or not.
    pub(super) async fn delete_external(
        &self,
        obj: &Arc<DomainObj>,
        def: &SnapshotDef,
    ) -> Result<(), DriverError> {
        let vm = obj.lock().live.as_ref().map(|l| l.vm.clone());
        let mut intent = self.fold_intent(obj, def, vm.is_some())?;
        if let Some(vm) = &vm {
            let folds = folds(&intent, def);
            for (o, fold) in intent.overlays.iter_mut().zip(&folds) {
                o.base_layer = qfold::base_layer(vm.monitor(), fold).await?;
            }
            intent.paused_by_us = vm.is_running().await?;
        } else {
            // Shut off, nothing is switched but by qemu-img: finish.
            intent.action = SnapshotAction::ExternalSwitch;
        }
        self.save_snapshot_intent(obj, intent.clone()).await?;
        if let Some(vm) = &vm {
            if let Err(err) = self.prepare_switch(obj, vm, &mut intent, def).await {
                // Not switched: undone now, or by whoever finds the intent.
                intent.action = SnapshotAction::ExternalDelete;
                self.settle_snapshot_intent(obj, &intent).await;
                return Err(err);
            }
        }
        let done = self.settle_fold(obj, &intent).await;
        match done {
            Ok(()) => {
                self.drop_snapshot_intent(obj, def.name()).await;
                Ok(())
            }
            Err(err) => {
                // Past the switch: finished later, when QEMU answers or
                // once it is gone.
                tracing::error!(snapshot = def.name(), %err, "external snapshot delete interrupted; it will be finished");
                Err(err)
            }
        }
    }

    /// Steps 1 and 2 of the module documentation.
    async fn prepare_switch(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        intent: &mut SnapshotIntent,
        def: &SnapshotDef,
    ) -> Result<(), DriverError> {
        let prepared = qfold::prepare(vm.monitor(), &folds(intent, def)).await?;
        if prepared.moves_a_device() && intent.paused_by_us {
            vm.stop().await?;
        }
        intent.action = SnapshotAction::ExternalSwitch;
        self.save_snapshot_intent(obj, intent.clone()).await
    }

    /// What the delete of `def` is to do, per disk; refused (before
    /// anything is done) where its overlay is not in the disk's chain as
    /// this QEMU run (or, shut off, the definition) has it.
    fn fold_intent(
        &self,
        obj: &DomainObj,
        def: &SnapshotDef,
        running: bool,
    ) -> Result<SnapshotIntent, DriverError> {
        let not_top = || {
            DriverError::new(
                ErrorKind::OperationUnsupported,
                format!(
                    "deleting external snapshot '{}' whose overlays are not the active layer is not supported",
                    def.name()
                ),
            )
        };
        let disks = def
            .disks()
            .iter()
            .filter(|d| d.snapshot() == Some(SnapshotLocation::External))
            .filter_map(|d| Some((d.name(), d.path()?)));
        let st = obj.lock();
        let mut overlays = Vec::new();
        for (disk, path) in disks {
            let overlay = |node_index, base, active, above| IntentOverlay {
                disk: disk.to_string(),
                path: path.into(),
                node_index,
                base,
                block: false,
                created: false,
                active,
                above,
                base_layer: None,
            };
            if !running {
                let config = st.config.as_ref().ok_or_else(not_top)?;
                let current = config.disk_by_target(disk).and_then(|d| d.source());
                if current != Some(path) {
                    return Err(not_top());
                }
                overlays.push(overlay(0, 0, 0, None));
                continue;
            }
            let live = st.live.as_ref().ok_or_else(DriverError::not_running)?;
            let active = live.def.disk_by_target(disk).ok_or_else(not_top)?;
            let active = active.node_index();
            // Walk down from the active layer, one layer a step.
            let mut node = active;
            let mut above = None;
            let found = (0..=live.overlays.len()).find_map(|_| {
                let layer = live
                    .overlays
                    .iter()
                    .find(|o| o.disk == disk && o.overlay == node)?;
                if layer.path == path {
                    return Some(layer.clone());
                }
                above = Some(layer.path.clone().into());
                node = layer.base;
                None
            });
            let layer = found.ok_or_else(not_top)?;
            overlays.push(overlay(layer.overlay, layer.base, active, above));
        }
        Ok(SnapshotIntent {
            snapshot: def.name().to_string(),
            action: SnapshotAction::ExternalDelete,
            nodes: Vec::new(),
            images: Vec::new(),
            paused_by_us: false,
            overlays,
            metadata: None,
        })
    }

    /// Settles an external delete's intent (module documentation): undone
    /// before the switch, finished after it, by QEMU or by `qemu-img`.
    pub(super) async fn settle_fold(
        &self,
        obj: &Arc<DomainObj>,
        intent: &SnapshotIntent,
    ) -> Result<(), DriverError> {
        let def = obj.lock().snapshots.get(&intent.snapshot).cloned();
        let vm = obj.lock().live.as_ref().map(|l| l.vm.clone());
        // The metadata goes last: without it the delete was done, all but
        // the guest's running again.
        let Some(def) = def else {
            return match &vm {
                Some(vm) => self.run_again(vm, intent).await,
                None => Ok(()),
            };
        };
        let folds = folds(intent, &def);
        match (intent.action, &vm) {
            (SnapshotAction::ExternalSwitch, Some(vm)) => {
                let mon = vm.monitor();
                let prepared = qfold::prepare(mon, &folds).await?;
                if prepared.moves_a_device() && vm.is_running().await? {
                    vm.stop().await?;
                }
                qfold::switch(mon, prepared).await?;
                self.folded_live(obj, intent, &def);
                self.try_save_live(obj).await?;
            }
            (SnapshotAction::ExternalSwitch, None) => {
                self.fold_offline(obj, intent, &def).await?;
            }
            (_, Some(vm)) => {
                qfold::abandon(vm.monitor(), &folds).await?;
                return self.run_again(vm, intent).await;
            }
            (_, None) => return Ok(()),
        }
        self.folded_config(obj, intent, &def).await?;
        self.forget_snapshot(obj, def.name()).await?;
        match &vm {
            Some(vm) => self.run_again(vm, intent).await,
            None => Ok(()),
        }
    }

    /// A guest that ran when the delete began runs again.
    async fn run_again(
        &self,
        vm: &Arc<RunningVm>,
        intent: &SnapshotIntent,
    ) -> Result<(), DriverError> {
        if intent.paused_by_us && !vm.is_running().await? {
            vm.cont().await?;
        }
        Ok(())
    }

    /// The switch in the live definition: a disk whose active layer went
    /// is on the base; a layer that had the overlay below it has the base.
    fn folded_live(&self, obj: &DomainObj, intent: &SnapshotIntent, def: &SnapshotDef) {
        let mut st = obj.lock();
        let Some(live) = st.live.as_mut() else {
            return;
        };
        for o in &intent.overlays {
            let on_top = live
                .def
                .disk_by_target(&o.disk)
                .is_some_and(|d| d.node_index() == o.node_index);
            if on_top {
                switch_disk(&mut live.def, o, def, o.base);
            }
            for layer in &mut live.overlays {
                if layer.disk == o.disk && layer.base == o.node_index {
                    layer.base = o.base;
                }
            }
            live.overlays
                .retain(|l| !(l.disk == o.disk && l.overlay == o.node_index));
        }
    }

    /// The switch in the persistent definition: a disk defined on the
    /// overlay is defined on the image from before the snapshot.
    async fn folded_config(
        &self,
        obj: &DomainObj,
        intent: &SnapshotIntent,
        def: &SnapshotDef,
    ) -> Result<(), DriverError> {
        self.change_config(obj, |config| {
            for o in &intent.overlays {
                let Some(current) = config.disk_by_target(&o.disk) else {
                    continue;
                };
                if current.source() != o.path.to_str() {
                    continue;
                }
                let index = current.node_index();
                switch_disk(config, o, def, index);
            }
        })
        .await
    }

    /// QEMU gone: `qemu-img` commits each overlay still in use (see the
    /// module documentation for why that loses nothing).
    async fn fold_offline(
        &self,
        obj: &DomainObj,
        intent: &SnapshotIntent,
        def: &SnapshotDef,
    ) -> Result<(), DriverError> {
        for o in &intent.overlays {
            let defined_on = obj
                .lock()
                .config
                .as_ref()
                .and_then(|c| c.disk_by_target(&o.disk))
                .and_then(|d| d.source().map(str::to_owned));
            let base = match (&o.base_layer, before_disk(def, &o.disk)) {
                (Some(layer), _) => Some((layer.path.clone(), layer.format.clone())),
                (None, Some(disk)) => Some((
                    disk.source().unwrap_or_default().to_owned(),
                    disk.format().as_str().to_owned(),
                )),
                (None, None) => None,
            };
            let above = match (&o.above, base) {
                (Some(above), Some((path, format))) => Some((above.as_path(), path, format)),
                _ => None,
            };
            let active = o.above.is_none();
            if active && defined_on.as_deref() != o.path.to_str() {
                // Already switched: the overlay is stale now.
                continue;
            }
            let above = above
                .as_ref()
                .map(|(path, backing, format)| (*path, backing.as_str(), format.as_str()));
            qfold::offline(&qemu_img(), Path::new(&o.path), above).await?;
        }
        Ok(())
    }
}

/// The commits an intent names; a layer above an overlay is to name the
/// image from before the snapshot as its backing file.
fn folds(intent: &SnapshotIntent, def: &SnapshotDef) -> Vec<Fold> {
    intent
        .overlays
        .iter()
        .map(|o| Fold {
            disk: o.disk.clone(),
            active: o.active,
            top: o.node_index,
            base: o.base,
            backing_file: match &o.base_layer {
                Some(layer) => layer.path.clone(),
                None => before_disk(def, &o.disk)
                    .and_then(|d| d.source().map(str::to_owned))
                    .unwrap_or_default(),
            },
        })
        .collect()
}

/// The disk as it was before the snapshot.
fn before_disk(def: &SnapshotDef, disk: &str) -> Option<crate::conf::domain::DiskDef> {
    def.domain()?.disk_by_target(disk).cloned()
}

/// Puts `overlay`'s disk in `domain` on the image below the overlay, as
/// node `index`: the image QEMU had open there, or (shut off) the disk
/// as the snapshot recorded it.
fn switch_disk(
    domain: &mut crate::conf::DomainDef,
    overlay: &IntentOverlay,
    def: &SnapshotDef,
    index: u32,
) {
    match &overlay.base_layer {
        Some(layer) => {
            if let Some(disk) = domain.disk_by_target_mut(&overlay.disk) {
                disk.set_image(&layer.path, layer.block, &layer.format, index);
            }
        }
        None => {
            if let Some(mut old) = before_disk(def, &overlay.disk) {
                old.set_node_index(index);
                domain.replace_disk(old);
            }
        }
    }
}
