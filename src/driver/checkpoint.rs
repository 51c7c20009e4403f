//! Checkpoints: the seven virDomainCheckpoint procedures.
//!
//! A checkpoint is metadata (one file per checkpoint, see store.rs) plus a
//! persistent dirty bitmap, named after it, on every disk it covers. The
//! two must never disagree, so each change that touches both is bracketed
//! by an intent record, written before QEMU is asked and removed once the
//! metadata agrees; `reconcile.rs` finishes or undoes what a crash cut
//! short. The order per operation:
//!
//! - create: intent → one QMP transaction adding every bitmap (a plain
//!   command for a lone one) → metadata → intent gone. If the metadata cannot be written the bitmaps are removed
//!   again (libvirt 9.0 leaves them in QEMU, where the next create of that
//!   name trips on them).
//! - delete: the metadata renamed to `NAME.deleting`, durably, as its
//!   intent → one QMP transaction removing the bitmaps (a plain command
//!   for a lone one) → children's metadata re-parented → the renamed file
//!   gone. A refused removal renames it back and changes nothing (libvirt
//!   9.0 has re-parented the children by then). Without QEMU the metadata
//!   goes in place.
//! - redefine: metadata only.
//!
//! Every operation that changes a domain's checkpoints holds its job lock,
//! so two creates on one domain, or a create racing a destroy, take turns.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::conf::checkpoint::{CheckpointDef, FormatFlags, ParseFlags, ParsedCheckpoint};
use crate::conf::moment::Moment;
use crate::conf::DomainDef;
use crate::qemu::{bitmap, node, QemuError, RunningVm};

use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::metadata::with_header;
use super::moments::{now_secs, MomentKind, MomentRef, MomentTree};
use super::registry::{DomainObj, DomainState};
use super::store::{Intent, IntentAction, Store};
use super::{DomainRef, Driver, Uuid};

/// virDomainCheckpointCreateFlags.
pub mod create_flags {
    pub const REDEFINE: u32 = 1;
    pub const QUIESCE: u32 = 2;
    pub const REDEFINE_VALIDATE: u32 = 4;
}

/// virDomainCheckpointXMLFlags.
pub mod xml_flags {
    pub const SECURE: u32 = 1;
    pub const NO_DOMAIN: u32 = 2;
    pub const SIZE: u32 = 4;
}

/// virDomainCheckpointListFlags.
pub mod list_flags {
    /// ROOTS for a domain, DESCENDANTS for a checkpoint: the same bit.
    pub const ROOTS: u32 = 1;
    pub const DESCENDANTS: u32 = 1;
    pub const TOPOLOGICAL: u32 = 2;
    pub const LEAVES: u32 = 4;
    pub const NO_LEAVES: u32 = 8;
}

/// virDomainCheckpointDeleteFlags.
pub mod delete_flags {
    pub const CHILDREN: u32 = 1;
    pub const METADATA_ONLY: u32 = 2;
    pub const CHILDREN_ONLY: u32 = 4;
}

/// A checkpoint as a client names it: libvirt's virDomainCheckpointPtr.
pub type CheckpointRef = MomentRef;

/// Checkpoints, as `moments.rs` knows the kind.
pub enum Checkpoints {}

impl MomentKind for Checkpoints {
    type Def = CheckpointDef;
    const API: &'static str = "Checkpoint";
    const NOUN: &'static str = "checkpoint";
    const LIST_FLAGS: u32 = {
        use list_flags::*;
        ROOTS | TOPOLOGICAL | LEAVES | NO_LEAVES
    };
    const MISSING: ErrorKind = ErrorKind::NoDomainCheckpoint;

    fn tree(st: &DomainState) -> &MomentTree<CheckpointDef> {
        &st.checkpoints
    }

    fn save(store: &Store, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError> {
        store.save_checkpoint(uuid, name, xml)
    }

    fn delete(store: &Store, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        store.delete_checkpoint(uuid, name)
    }
}

/// What a metadata file holds: libvirt's header, then checkpoint-dumpxml
/// --security-info.
pub(super) fn metadata_xml(def: &CheckpointDef) -> String {
    let body = def.format(&FormatFlags {
        secure: true,
        ..FormatFlags::default()
    });
    with_header("checkpoint-edit", &body)
}

/// QEMU's node name for a disk's qcow2 layer, where its bitmaps live.
pub(super) fn format_node(domain: &DomainDef, target: &str) -> Option<String> {
    domain
        .disk_by_target(target)
        .map(|disk| node::format(disk.node_index()))
}

/// One bitmap of a checkpoint in a running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DiskBitmap {
    /// The disk's target.
    pub disk: String,
    /// The disk's format node, where the bitmap lives.
    pub node: String,
    pub bitmap: String,
}

impl DiskBitmap {
    /// (node, bitmap), as QEMU addresses the bitmap.
    pub fn node_pair(&self) -> (String, String) {
        (self.node.clone(), self.bitmap.clone())
    }

    /// (disk, bitmap), as an intent records it.
    pub fn disk_pair(&self) -> (String, String) {
        (self.disk.clone(), self.bitmap.clone())
    }
}

/// Every bitmap of `def` on a disk the running domain still has: libvirt
/// skips disks unplugged since. `name` overrides the bitmaps' names.
fn bitmap_nodes(domain: &DomainDef, def: &CheckpointDef, name: Option<&str>) -> Vec<DiskBitmap> {
    def.bitmaps()
        .filter_map(|(disk, bitmap)| {
            Some(DiskBitmap {
                disk: disk.to_string(),
                node: format_node(domain, disk)?,
                bitmap: name.unwrap_or(bitmap).to_string(),
            })
        })
        .collect()
}

fn node_pairs(bitmaps: &[DiskBitmap]) -> Vec<(String, String)> {
    bitmaps.iter().map(DiskBitmap::node_pair).collect()
}

/// The delete intent of checkpoint `def`, with every bitmap its metadata
/// names (when no QEMU is there to say which disks run which nodes).
pub(super) fn delete_intent_of(def: &CheckpointDef) -> Intent {
    Intent {
        checkpoint: def.name().to_string(),
        action: IntentAction::Delete,
        bitmaps: def
            .bitmaps()
            .map(|(disk, bitmap)| (disk.to_string(), bitmap.to_string()))
            .collect(),
    }
}

/// The intent record of an operation on checkpoint `name`'s bitmaps.
fn intent(name: &str, action: IntentAction, bitmaps: &[DiskBitmap]) -> Intent {
    Intent {
        checkpoint: name.to_string(),
        action,
        bitmaps: bitmaps.iter().map(DiskBitmap::disk_pair).collect(),
    }
}

/// A checkpoint about to be made, with the bitmaps to add for it.
pub(super) type NewCheckpoint = (CheckpointDef, Vec<DiskBitmap>);

/// A new checkpoint of the running domain `running`: checked as libvirt
/// checks a plain create, its parent the current checkpoint. Returns it
/// with the bitmaps it needs.
pub(super) fn prepare_new(
    tree: &MomentTree<CheckpointDef>,
    running: &DomainDef,
    parsed: ParsedCheckpoint,
) -> Result<NewCheckpoint, DriverError> {
    let mut def = parsed.prepare_create(running)?;
    def.set_parent(tree.current().map(str::to_string));
    if tree.contains(def.name()) {
        return Err(DriverError::new(
            ErrorKind::OperationFailed,
            format!("domain moment {} already exists", def.name()),
        )
        .with_origin(ErrorOrigin::Domain));
    }
    let bitmaps = bitmap_nodes(running, &def, None);
    Ok((def, bitmaps))
}

/// Whether QEMU answered (and so applied nothing of a transaction), as
/// opposed to the monitor going away mid-command, after which nobody knows.
fn qemu_refused(err: &QemuError) -> bool {
    matches!(err, QemuError::CommandFailed { .. })
}

impl Driver {
    /// virDomainCheckpointCreateXML: a new checkpoint of a running domain
    /// (its bitmaps are made), or with REDEFINE the metadata of one that
    /// exists already.
    pub async fn checkpoint_create_xml(
        &self,
        dom: &DomainRef,
        xml: &str,
        flags: u32,
    ) -> Result<CheckpointRef, DriverError> {
        crate::fault::arm("checkpoint-create");
        use create_flags::*;
        // The public API's own flag checks (libvirt-domain-checkpoint.c)
        // come before any driver code runs.
        DriverError::check_exclusive(
            flags,
            (REDEFINE, "VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE"),
            (QUIESCE, "VIR_DOMAIN_CHECKPOINT_CREATE_QUIESCE"),
            ErrorOrigin::DomainCheckpoint,
        )?;
        DriverError::check_required(
            flags,
            (REDEFINE, "VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE"),
            (
                REDEFINE_VALIDATE,
                "VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE",
            ),
            ErrorOrigin::DomainCheckpoint,
        )?;
        // QUIESCE would need a guest agent; libvirt 9.0's QEMU driver does
        // not take the flag at all.
        DriverError::check_flags(
            flags,
            REDEFINE | REDEFINE_VALIDATE,
            "qemuCheckpointCreateXML",
        )?;
        let redefine = flags & REDEFINE != 0;
        let obj = self.domain(dom)?;
        if !redefine && !obj.lock().is_active() {
            return Err(inactive("cannot create checkpoint for inactive domain"));
        }
        let parsed = CheckpointDef::parse(xml, ParseFlags { redefine }, now_secs())?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        super::rules::checkpoint_allowed(&obj.lock())?;
        let name = if redefine {
            self.redefine_checkpoint(&obj, parsed, flags & REDEFINE_VALIDATE != 0)
                .await?
        } else {
            self.create_checkpoint(&obj, parsed).await?
        };
        Ok(CheckpointRef {
            name,
            dom: dom.clone(),
        })
    }

    async fn create_checkpoint(
        &self,
        obj: &Arc<DomainObj>,
        parsed: ParsedCheckpoint,
    ) -> Result<String, DriverError> {
        let (vm, def, bitmaps) = {
            let st = obj.lock();
            let live = st
                .live
                .as_ref()
                .ok_or_else(|| inactive("cannot create checkpoint for inactive domain"))?;
            let (def, bitmaps) = prepare_new(&st.checkpoints, &live.def, parsed)?;
            (live.vm.clone(), def, bitmaps)
        };
        let name = def.name().to_string();
        let uuid = obj.uuid;
        let intent = intent(&name, IntentAction::Create, &bitmaps);
        self.store_io(move |s| s.save_intent(&uuid, &intent))
            .await?;
        let nodes = node_pairs(&bitmaps);
        if !nodes.is_empty() {
            if let Err(err) = bitmap::add_checkpoint_bitmaps(vm.monitor(), &nodes).await {
                if qemu_refused(&err) {
                    self.drop_intent(uuid, &name).await;
                }
                return Err(err.into());
            }
        }
        let (owned, xml) = (name.clone(), metadata_xml(&def));
        // The intent goes in the same trip to the blocking pool.
        let saved = self.store_io(move |s| s.record_checkpoint(&uuid, &owned, &xml));
        if let Err(err) = saved.await {
            tracing::error!(checkpoint = %name, %err, "cannot save checkpoint metadata");
            // Take the bitmaps back, or the next create of this name fails
            // on them; if even that fails the intent stays for reconcile.
            match bitmap::remove_bitmaps(vm.monitor(), &nodes).await {
                Ok(()) => self.drop_intent(uuid, &name).await,
                Err(err) => tracing::error!(%err, "cannot remove the new bitmaps again"),
            }
            return Err(DriverError::internal(format!(
                "unable to save metadata for checkpoint {name}"
            )));
        }
        obj.lock().checkpoints.add(def, true);
        Ok(name)
    }

    async fn redefine_checkpoint(
        &self,
        obj: &Arc<DomainObj>,
        parsed: ParsedCheckpoint,
        validate: bool,
    ) -> Result<String, DriverError> {
        let (def, update_current, vm, bitmaps) = {
            let st = obj.lock();
            st.checkpoints
                .check_cycles(parsed.name(), parsed.parent())?;
            let domain = st
                .current_def()
                .ok_or_else(|| DriverError::internal("domain has no definition"))?;
            let def = parsed.prepare_redefine(domain)?;
            let current = st.checkpoints.current();
            let update_current =
                current.is_none() || (def.parent().is_some() && def.parent() == current);
            let (vm, bitmaps) = match (&st.live, validate) {
                (_, false) => (None, Vec::new()),
                (None, true) => return Err(DriverError::inactive()),
                (Some(live), true) => {
                    // libvirt checks the bitmap named after the checkpoint,
                    // whatever the disk's bitmap= says.
                    let bitmaps = bitmap_nodes(&live.def, &def, Some(def.name()));
                    (Some(live.vm.clone()), bitmaps)
                }
            };
            (def, update_current, vm, bitmaps)
        };
        if let Some(vm) = vm {
            let verdicts = bitmap::validate_bitmaps(vm.monitor(), &node_pairs(&bitmaps)).await?;
            if let Some((b, _)) = bitmaps.iter().zip(verdicts).find(|(_, v)| v.is_err()) {
                return Err(DriverError::new(
                    ErrorKind::CheckpointInconsistent,
                    format!(
                        "missing or broken bitmap '{}' for disk '{}'",
                        b.bitmap, b.disk
                    ),
                ));
            }
        }
        let name = def.name().to_string();
        let uuid = obj.uuid;
        let xml = metadata_xml(&def);
        {
            let owned = name.clone();
            self.store_io(move |s| {
                s.save_checkpoint(&uuid, &owned, &xml)?;
                // Whatever a crash left pending for this name is settled
                // by the metadata given now.
                s.delete_intent(&uuid, &owned)
            })
            .await
            .map_err(|err| {
                tracing::error!(checkpoint = %name, %err, "cannot save checkpoint metadata");
                DriverError::internal(format!("unable to save metadata for checkpoint {name}"))
            })?;
        }
        obj.lock().checkpoints.add(def, update_current);
        Ok(name)
    }

    /// virDomainCheckpointGetXMLDesc.
    pub async fn checkpoint_get_xml_desc(
        &self,
        cp: &CheckpointRef,
        flags: u32,
    ) -> Result<String, DriverError> {
        use xml_flags::*;
        let obj = self.domain(&cp.dom)?;
        DriverError::check_flags(flags, SECURE | NO_DOMAIN | SIZE, "qemuCheckpointGetXMLDesc")?;
        let format = |def: &CheckpointDef, sizes: Option<&BTreeMap<String, u64>>| {
            def.format(&FormatFlags {
                secure: flags & SECURE != 0,
                no_domain: flags & NO_DOMAIN != 0,
                sizes,
            })
        };
        if flags & SIZE == 0 {
            return Ok(format(Checkpoints::find(&obj.lock(), &cp.name)?, None));
        }
        Checkpoints::find(&obj.lock(), &cp.name)?;
        let _job = obj.job.lock().await;
        let (vm, bitmaps) = {
            let st = obj.lock();
            let def = Checkpoints::find(&st, &cp.name)?;
            let live = st.live.as_ref().ok_or_else(DriverError::inactive)?;
            (live.vm.clone(), bitmap_nodes(&live.def, def, None))
        };
        let measured = bitmap::dirty_size(vm.monitor(), &node_pairs(&bitmaps)).await?;
        let sizes: BTreeMap<String, u64> = bitmaps
            .into_iter()
            .zip(measured)
            .filter_map(|(b, size)| Some((b.disk, size?)))
            .collect();
        let st = obj.lock();
        Ok(format(Checkpoints::find(&st, &cp.name)?, Some(&sizes)))
    }

    /// virDomainCheckpointDelete: the checkpoint (or only its descendants,
    /// or both), with their bitmaps unless METADATA_ONLY.
    pub async fn checkpoint_delete(
        &self,
        cp: &CheckpointRef,
        flags: u32,
    ) -> Result<(), DriverError> {
        crate::fault::arm("checkpoint-delete");
        use delete_flags::*;
        DriverError::check_exclusive(
            flags,
            (CHILDREN, "VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN"),
            (CHILDREN_ONLY, "VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY"),
            ErrorOrigin::DomainCheckpoint,
        )?;
        let obj = self.domain(&cp.dom)?;
        DriverError::check_flags(
            flags,
            CHILDREN | METADATA_ONLY | CHILDREN_ONLY,
            "qemuCheckpointDelete",
        )?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, &cp.dom)?;
        let metadata_only = flags & METADATA_ONLY != 0;
        let vm = {
            let st = obj.lock();
            let vm = st.live.as_ref().map(|l| l.vm.clone());
            if !metadata_only && vm.is_none() {
                return Err(inactive("cannot delete checkpoint for inactive domain"));
            }
            if !st.checkpoints.contains(&cp.name) {
                return Err(Checkpoints::missing(&cp.name));
            }
            vm.filter(|_| !metadata_only)
        };
        if flags & (CHILDREN | CHILDREN_ONLY) == 0 {
            return self.discard(&obj, vm.as_ref(), &cp.name, true).await;
        }
        let (descendants, current_inside) = {
            let st = obj.lock();
            let descendants = st.checkpoints.descendants(Some(&cp.name));
            let current = st.checkpoints.current();
            let inside = current.is_some_and(|c| descendants.iter().any(|d| d == c));
            (descendants, inside)
        };
        for name in &descendants {
            self.discard(&obj, vm.as_ref(), name, false).await?;
        }
        if current_inside {
            // As in libvirt: the subtree's root takes over as current
            // (and hands it on to its parent if it goes too).
            obj.lock().checkpoints.set_current(Some(&cp.name));
        }
        if flags & CHILDREN_ONLY == 0 {
            self.discard(&obj, vm.as_ref(), &cp.name, true).await?;
        }
        Ok(())
    }

    /// Deletes one checkpoint: its bitmaps (when `vm` is given), then its
    /// metadata, its children moving up to its parent. When it was current,
    /// its parent becomes current if `update_parent`, else none is.
    async fn discard(
        &self,
        obj: &Arc<DomainObj>,
        vm: Option<&Arc<RunningVm>>,
        name: &str,
        update_parent: bool,
    ) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        if let Some(vm) = vm {
            let bitmaps = {
                let st = obj.lock();
                let def = Checkpoints::find(&st, name)?;
                let live = st.live.as_ref().ok_or_else(DriverError::not_running)?;
                bitmap_nodes(&live.def, def, None)
            };
            // The metadata, renamed, is the delete's intent (store_settle.rs).
            let owned = name.to_string();
            let retired = self.store_io(move |s| s.retire_checkpoint(&uuid, &owned));
            if let Err(err) = retired.await {
                // A rename whose directory sync failed is undone; one that
                // never happened has nothing to undo.
                self.restore_retired(uuid, name).await;
                return Err(err);
            }
            let nodes = node_pairs(&bitmaps);
            // libvirt queries every node's bitmaps first to name a missing
            // one; that reply grows with the number of checkpoints, so the
            // query is made only when QEMU has refused the removal.
            if !nodes.is_empty() {
                if let Err(err) = bitmap::remove_checkpoint_bitmaps(vm.monitor(), &nodes).await {
                    if !qemu_refused(&err) {
                        return Err(err.into());
                    }
                    self.restore_retired(uuid, name).await;
                    return Err(missing_bitmap(vm, &bitmaps)
                        .await
                        .unwrap_or_else(|| DriverError::from(err)));
                }
            }
            return self
                .discard_metadata(obj, name, update_parent, Discard::Retired)
                .await;
        }
        self.discard_metadata(obj, name, update_parent, Discard::InPlace)
            .await
    }

    /// Puts a retired checkpoint's metadata back: its delete was refused.
    /// If even that fails, start-up finishes the delete.
    async fn restore_retired(&self, uuid: super::Uuid, name: &str) {
        let owned = name.to_string();
        if let Err(err) = self
            .store_io(move |s| s.restore_checkpoint(&uuid, &owned))
            .await
        {
            tracing::debug!(%err, checkpoint = %name, "no retired checkpoint metadata to restore");
        }
    }

    /// The metadata half of a delete: children re-parented on disk and in
    /// memory, the checkpoint's file removed.
    pub(super) async fn forget_checkpoint(
        &self,
        obj: &Arc<DomainObj>,
        name: &str,
        update_parent: bool,
    ) -> Result<(), DriverError> {
        self.discard_metadata(obj, name, update_parent, Discard::KeepIntent)
            .await
    }

    /// [`Self::forget_checkpoint`], the metadata's file going as `how`
    /// says (see store_settle.rs for the order of each).
    async fn discard_metadata(
        &self,
        obj: &Arc<DomainObj>,
        name: &str,
        update_parent: bool,
        how: Discard,
    ) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        // Only the direct children name the checkpoint as their parent.
        let orphans = obj.lock().checkpoints.orphans(name);
        let children: Vec<(String, String)> = orphans
            .iter()
            .map(|def| (def.name().to_string(), metadata_xml(def)))
            .collect();
        let owned = name.to_string();
        self.store_io(move |s| match how {
            Discard::Retired => s.discard_retired(&uuid, &owned, &children),
            Discard::InPlace => s.discard_checkpoint(&uuid, &owned, &children, true),
            Discard::KeepIntent => s.discard_checkpoint(&uuid, &owned, &children, false),
        })
        .await?;
        let mut st = obj.lock();
        st.checkpoints.forget(name, update_parent);
        st.broken_bitmaps.retain(|b| b.checkpoint != name);
        Ok(())
    }

    /// A checkpoint created with a push backup that did not complete marks
    /// a point no backup holds: an incremental backup from it would miss
    /// what the failed copy never wrote. It goes, bitmaps and metadata
    /// (libvirt 9.0 keeps it). With QEMU gone, the metadata goes now and a
    /// delete intent has the bitmaps removed when the domain next runs.
    pub(super) async fn drop_unbacked_checkpoint(
        &self,
        obj: &Arc<DomainObj>,
        vm: Option<&Arc<RunningVm>>,
        name: &str,
    ) {
        let alive = vm.filter(|vm| {
            obj.lock()
                .live
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.vm, vm) && !l.gone)
        });
        if let Some(vm) = alive {
            let _job = obj.job.lock().await;
            // Not listed: gone already, or a restarted daemon that has not
            // loaded the metadata yet (a begin undone at reconnection),
            // which the store's copy below settles.
            if obj.lock().checkpoints.contains(name) {
                match self.discard(obj, Some(vm), name, true).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(checkpoint = %name, %err, "cannot remove the bitmaps of a failed backup's checkpoint now");
                    }
                }
            }
        }
        let uuid = obj.uuid;
        let listed = obj.lock().checkpoints.get(name).cloned();
        // Before start-up has loaded the metadata (a restart that found
        // QEMU gone), the checkpoint is only in the store.
        let def = match &listed {
            Some(def) => Some(def.clone()),
            None => {
                let owned = name.to_string();
                let stored = self.store_io(move |s| Ok(s.load_checkpoint(&uuid, &owned)));
                stored.await.ok().flatten().and_then(|xml| {
                    let parsed = CheckpointDef::parse(&xml, ParseFlags { redefine: true }, 0);
                    Some(parsed.ok()?.loaded())
                })
            }
        };
        let Some(def) = def else { return };
        let intent = delete_intent_of(&def);
        let forgotten = async {
            self.store_io(move |s| s.save_intent(&uuid, &intent))
                .await?;
            if listed.is_some() {
                self.forget_checkpoint(obj, name, true).await
            } else {
                let doomed = Some(name.to_string());
                self.write_moments::<Checkpoints>(uuid, Vec::new(), doomed)
                    .await
            }
        };
        if let Err(err) = forgotten.await {
            tracing::error!(checkpoint = %name, %err, "cannot discard a failed backup's checkpoint");
        }
    }

    /// Removes an intent whose operation has settled; a failure only means
    /// the next reconcile looks at it again, which is harmless.
    pub(super) async fn drop_intent(&self, uuid: super::Uuid, name: &str) {
        let name = name.to_string();
        if let Err(err) = self.store_io(move |s| s.delete_intent(&uuid, &name)).await {
            tracing::warn!(%err, "cannot remove a checkpoint intent record");
        }
    }
}

/// How a delete's metadata file goes.
#[derive(Debug, Clone, Copy)]
enum Discard {
    /// It was retired ([`Store::retire_checkpoint`]) and QEMU's bitmaps
    /// are gone: the retired file goes, unsynced.
    Retired,
    /// No QEMU was asked: the file goes, durably, with any intent record.
    InPlace,
    /// Start-up finishing a delete: the file goes, durably; the intent
    /// stays until QEMU's bitmaps are gone too.
    KeepIntent,
}

/// libvirt's error for the first bitmap of `bitmaps` that QEMU does not
/// have, if any.
async fn missing_bitmap(vm: &RunningVm, bitmaps: &[DiskBitmap]) -> Option<DriverError> {
    let present = bitmap::query_bitmaps(vm.monitor()).await.ok()?;
    let missing = bitmaps
        .iter()
        .find(|b| bitmap::find_bitmap(&present, &b.node, &b.bitmap).is_none())?;
    Some(DriverError::internal(format!(
        "bitmap '{}' not found in backing chain of '{}'",
        missing.bitmap, missing.disk
    )))
}

/// VIR_ERR_OPERATION_UNSUPPORTED from the QEMU driver.
fn inactive(detail: &str) -> DriverError {
    DriverError::new(ErrorKind::OperationUnsupported, detail)
}
