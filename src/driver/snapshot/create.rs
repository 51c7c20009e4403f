//! Creating snapshots (virDomainSnapshotCreateXML): checks in libvirt's
//! order, then internal snapshots (QEMU's job, or `qemu-img` shut off),
//! external ones (overlays, and the memory first for a full-system one),
//! or, with REDEFINE, metadata only.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::conf::cpu::x86;
use crate::conf::moment::Moment;
use crate::conf::snapshot::{
    CreateContext, CreateFlags, ParseFlags, ParsedSnapshot, SaveCookie, SnapshotDef,
    SnapshotDiskType, SnapshotLocation, SnapshotState,
};
use crate::qemu::cpu as qcpu;
use crate::qemu::snapshot::{self as qsnap, InternalNodes, OfflineOp, Overlay};
use crate::qemu::{DiskFormat, RunningVm};

use super::super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::super::launch::qemu_format;
use super::super::moments::now_secs;
use super::super::registry::{state, DomainObj};
use super::super::store::{IntentOverlay, OverlayBase, SnapshotAction, SnapshotIntent};
use super::super::{DomainRef, Driver};
use super::{
    create_flags, internal_images, metadata_xml, no_backup_running, qemu_img, SnapshotRef,
    Snapshots,
};

fn is_regular_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Runs conf's preparation, which asks [`is_regular_file`], on the
/// blocking pool.
async fn off_thread<T: Send + 'static>(
    prepare: impl FnOnce() -> Result<T, crate::conf::ConfError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(prepare)
        .await
        .map_err(|e| DriverError::internal(format!("snapshot preparation failed: {e}")))?
        .map_err(DriverError::from)
}

/// One disk of an external snapshot, before anything is made.
struct Plan {
    disk: String,
    /// The overlay.
    path: PathBuf,
    /// The overlay is a block device.
    block: bool,
    /// Something was at `path` before (an empty file, a device).
    existed: bool,
    /// The disk's current image, its format and its node index K.
    backing: PathBuf,
    format: DiskFormat,
    top: u32,
}

/// What libvirt's qemuSnapshotPrepareDiskExternal demands of an overlay's
/// path, in its order: a reused one must exist, a block device must exist
/// and be one, a file must be a regular one, and a new file may only
/// replace an empty one. Says whether something is there.
fn check_overlay_path(
    disk: &str,
    path: &str,
    block: bool,
    reuse: bool,
) -> Result<bool, DriverError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if reuse {
                return Err(DriverError::system(
                    format_args!("missing existing file for disk {disk}: {path}"),
                    e,
                ));
            }
            if block {
                return Err(DriverError::new(
                    ErrorKind::OperationUnsupported,
                    format!("block device snapshot target '{path}' doesn't exist"),
                ));
            }
            return Ok(false);
        }
        Err(e) => {
            return Err(DriverError::system(
                format_args!("unable to stat for disk {disk}: {path}"),
                e,
            ))
        }
    };
    let kind = meta.file_type();
    if (block && !kind.is_block_device()) || (!block && !kind.is_file()) {
        return Err(DriverError::new(
            ErrorKind::ConfigUnsupported,
            format!(
                "mismatch between configured type for snapshot disk '{disk}' and the type of existing file '{path}'"
            ),
        ));
    }
    if !reuse && !block && meta.len() > 0 {
        return Err(DriverError::new(
            ErrorKind::ConfigUnsupported,
            format!(
                "external snapshot file for disk {disk} already exists and is not a block device: {path}"
            ),
        ));
    }
    Ok(true)
}

impl Driver {
    /// virDomainSnapshotCreateXML.
    pub async fn snapshot_create_xml(
        &self,
        dom: &DomainRef,
        xml: &str,
        flags: u32,
    ) -> Result<SnapshotRef, DriverError> {
        crate::fault::arm("snapshot-create");
        use create_flags::*;
        DriverError::check_flags(flags, 0x3ff, "qemuSnapshotCreateXML")?;
        DriverError::check_required(
            flags,
            (DISK_ONLY, "VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY"),
            (QUIESCE, "VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE"),
            ErrorOrigin::Qemu,
        )?;
        DriverError::check_exclusive(
            flags,
            (LIVE, "VIR_DOMAIN_SNAPSHOT_CREATE_LIVE"),
            (REDEFINE, "VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE"),
            ErrorOrigin::Qemu,
        )?;
        let obj = self.domain(dom)?;
        let redefine = flags & REDEFINE != 0;
        let disk_only = flags & DISK_ONLY != 0;
        let (active, domain_state, transient) = {
            let st = obj.lock();
            (
                st.is_active(),
                snapshot_state(st.state),
                st.config.is_none(),
            )
        };
        if flags & HALT != 0 && transient {
            return Err(DriverError::operation_invalid(
                "cannot halt after transient domain snapshot",
            ));
        }
        let parsed = SnapshotDef::parse(
            xml,
            ParseFlags {
                redefine,
                offline: disk_only || !active,
                validate: flags & VALIDATE != 0,
                internal: false,
            },
            now_secs(),
        )?;
        parsed.check_create(
            CreateFlags {
                redefine,
                no_metadata: flags & NO_METADATA != 0,
                disk_only,
                live: flags & LIVE != 0,
            },
            active,
            domain_state,
        )?;
        if flags & QUIESCE != 0 {
            return Err(DriverError::new(
                ErrorKind::ArgumentUnsupported,
                "QEMU guest agent is not configured",
            ));
        }
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        super::super::rules::snapshot_allowed(&obj.lock())?;
        no_backup_running(&obj)?;
        let name = if redefine {
            self.redefine_snapshot(&obj, parsed, flags).await?
        } else {
            self.create_snapshot(&obj, parsed, flags).await?
        };
        Ok(SnapshotRef {
            name,
            dom: obj.reference(),
        })
    }

    async fn redefine_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        parsed: ParsedSnapshot,
        flags: u32,
    ) -> Result<String, DriverError> {
        let uuid = uuid::Uuid::from_bytes(obj.uuid);
        let existing = {
            let st = obj.lock();
            st.snapshots.check_cycles(parsed.name(), parsed.parent())?;
            st.snapshots.get(parsed.name()).cloned()
        };
        // conf stats disk sources: off the async threads and the lock (the
        // job lock keeps the tree as it is meanwhile).
        let disk_only = flags & create_flags::DISK_ONLY != 0;
        let def = off_thread(move || {
            parsed.prepare_redefine(uuid, existing.as_ref(), disk_only, &is_regular_file)
        })
        .await?;
        let name = def.name().to_string();
        let make_current = flags & create_flags::CURRENT != 0;
        self.commit_snapshot(obj, def, make_current, false).await?;
        Ok(name)
    }

    async fn create_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        parsed: ParsedSnapshot,
        flags: u32,
    ) -> Result<String, DriverError> {
        use create_flags::*;
        let (domain, inactive, domain_state, active) = {
            let st = obj.lock();
            let domain = st
                .current_def()
                .ok_or_else(|| DriverError::internal("domain has no definition"))?
                .clone();
            let inactive = st.live.as_ref().and(st.config.clone());
            (domain, inactive, snapshot_state(st.state), st.is_active())
        };
        // conf stats disk sources: off the async threads and the lock (the
        // job lock keeps the domain as it is meanwhile).
        let prepared = off_thread(move || {
            parsed.prepare_create(&CreateContext {
                domain: &domain,
                inactive_domain: inactive.as_ref(),
                state: domain_state,
                active,
                disk_only: flags & DISK_ONLY != 0,
                is_regular_file: &is_regular_file,
            })
        })
        .await?;
        let (live_vm, running) = {
            let st = obj.lock();
            if flags & NO_METADATA == 0 && st.snapshots.contains(prepared.def.name()) {
                return Err(DriverError::new(
                    ErrorKind::OperationFailed,
                    format!("domain moment {} already exists", prepared.def.name()),
                )
                .with_origin(ErrorOrigin::Domain));
            }
            (
                st.live.as_ref().map(|l| l.vm.clone()),
                st.state == state::RUNNING,
            )
        };
        let mut def = prepared.def;
        if prepared.has_manual {
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                "manual disk snapshots are not supported",
            ));
        }
        crate::driver::rules::snapshot_disks_free(
            obj,
            def.disks()
                .iter()
                .filter(|d| d.snapshot() == Some(SnapshotLocation::External))
                .map(|d| d.name()),
        )?;
        let name = def.name().to_string();
        if !def.is_external() && name.len() > qsnap::INTERNAL_NAME_MAX {
            // QEMU would keep a cut name in the image, which the delete
            // (by the full name) could then never find.
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                format!(
                    "internal snapshot name is {} bytes long, QEMU keeps at most {}",
                    name.len(),
                    qsnap::INTERNAL_NAME_MAX
                ),
            ));
        }
        if let (Some(vm), Some(SnapshotLocation::Internal | SnapshotLocation::External)) =
            (&live_vm, def.memory())
        {
            // Asked before anything is made, so that a failure leaves
            // nothing behind.
            def.set_cookie(Some(save_cookie(vm).await?));
        }
        if def.memory() == Some(SnapshotLocation::External) {
            // A full-system external snapshot: memory first (the guest
            // stops at its end, or before it without --live), then the
            // disks, then the guest runs again.
            let vm = live_vm
                .as_ref()
                .ok_or_else(|| DriverError::internal("memory snapshot of an inactive domain"))?;
            let file = def
                .memory_file()
                .ok_or_else(|| DriverError::internal("external memory snapshot without a file"))?;
            if running && flags & LIVE == 0 {
                vm.stop().await?;
            }
            let saved = async {
                qsnap::save_memory(vm.monitor(), std::path::Path::new(file)).await?;
                self.external_snapshot(obj, &def, Some(vm), flags, None)
                    .await
            }
            .await;
            if running && flags & HALT == 0 {
                vm.cont().await?;
            }
            saved?;
        } else if def.is_external() {
            return self
                .disk_only_snapshot(obj, def, live_vm.as_ref(), flags)
                .await;
        } else {
            return self
                .internal_snapshot(obj, def, live_vm.as_ref(), running, flags)
                .await;
        }
        self.halt_and_record(obj, def, live_vm.as_ref(), flags)
            .await?;
        Ok(name)
    }

    /// The end every create shares: `--halt` stops a running domain, and
    /// the metadata is written unless `--no-metadata`.
    async fn halt_and_record(
        &self,
        obj: &Arc<DomainObj>,
        def: SnapshotDef,
        live_vm: Option<&Arc<RunningVm>>,
        flags: u32,
    ) -> Result<(), DriverError> {
        use create_flags::*;
        if flags & HALT != 0 && live_vm.is_some() {
            self.destroy_locked(obj).await?;
        }
        if flags & NO_METADATA == 0 {
            self.commit_snapshot(obj, def, true, true).await?;
        }
        Ok(())
    }

    /// An internal snapshot: its intent first, then QEMU's job (or
    /// `qemu-img` shut off), then the metadata, whose write commits it;
    /// any failure after the intent takes the one way back (intent.rs).
    async fn internal_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        def: SnapshotDef,
        live_vm: Option<&Arc<RunningVm>>,
        running: bool,
        flags: u32,
    ) -> Result<String, DriverError> {
        let name = def.name().to_string();
        let images: Vec<PathBuf> = internal_images(&def);
        let nodes = match live_vm {
            Some(_) => self.internal_node_indexes(obj, &def)?,
            None => Vec::new(),
        };
        let intent = SnapshotIntent {
            snapshot: name.clone(),
            action: SnapshotAction::Create,
            nodes: nodes.clone(),
            images: images.clone(),
            paused_by_us: live_vm.is_some() && running,
            overlays: Vec::new(),
            metadata: None,
        };
        self.save_snapshot_intent(obj, intent.clone()).await?;
        let made = async {
            match live_vm {
                Some(vm) => {
                    let nodes = InternalNodes::new(nodes);
                    qsnap::save_internal(vm.monitor(), &name, &nodes, running).await?;
                }
                None => {
                    for image in &images {
                        qsnap::offline(&qemu_img(), OfflineOp::Create, &name, image).await?;
                    }
                }
            }
            self.halt_and_record(obj, def, live_vm, flags).await
        }
        .await;
        match made {
            Ok(()) => self.drop_snapshot_intent(obj, &name).await,
            Err(err) => {
                self.settle_snapshot_intent(obj, &intent).await;
                return Err(err);
            }
        }
        Ok(name)
    }

    /// A disk-only external snapshot: its intent (written by
    /// [`Self::external_snapshot`] before QEMU is touched), the overlays,
    /// then the metadata, whose write commits it; a failure after the
    /// intent takes the one way back (intent.rs), which finishes the
    /// snapshot if the disks are already on their overlays.
    async fn disk_only_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        def: SnapshotDef,
        live_vm: Option<&Arc<RunningVm>>,
        flags: u32,
    ) -> Result<String, DriverError> {
        use create_flags::*;
        let name = def.name().to_string();
        let mut intent = None;
        let made = async {
            self.external_snapshot(obj, &def, live_vm, flags, Some(&mut intent))
                .await?;
            self.halt_and_record(obj, def, live_vm, flags).await
        }
        .await;
        let Some(intent) = intent else {
            return made.map(|()| name);
        };
        match made {
            Ok(()) => self.drop_snapshot_intent(obj, &name).await,
            Err(err) => {
                self.settle_snapshot_intent(obj, &intent).await;
                // Finished after all: the disks were on their overlays.
                if flags & NO_METADATA != 0 || !obj.lock().snapshots.contains(&name) {
                    return Err(err);
                }
            }
        }
        Ok(name)
    }

    /// Moves each external disk onto a new overlay, then records the
    /// overlays in the live and persistent definitions. With `intent`,
    /// writes an intent record first and hands it back.
    async fn external_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        def: &SnapshotDef,
        vm: Option<&Arc<RunningVm>>,
        flags: u32,
        intent: Option<&mut Option<SnapshotIntent>>,
    ) -> Result<(), DriverError> {
        let metadata =
            (flags & create_flags::NO_METADATA == 0).then(|| metadata_xml(def, true, obj.uuid));
        let mut intent = intent;
        let committing = intent.is_some();
        let mut record = |plans: &[Plan], nodes: &[u32]| {
            let made = SnapshotIntent {
                snapshot: def.name().to_string(),
                action: SnapshotAction::ExternalCreate,
                nodes: Vec::new(),
                images: Vec::new(),
                paused_by_us: false,
                overlays: plans
                    .iter()
                    .enumerate()
                    .map(|(i, p)| IntentOverlay {
                        disk: p.disk.clone(),
                        path: p.path.clone(),
                        node_index: nodes.get(i).copied().unwrap_or(0),
                        base: p.top,
                        block: p.block,
                        created: !p.existed && !p.block && flags & create_flags::REUSE_EXT == 0,
                        active: 0,
                        above: None,
                        base_layer: None,
                    })
                    .collect(),
                metadata: metadata.clone(),
            };
            intent.as_mut().map(|slot| {
                **slot = Some(made.clone());
                made
            })
        };
        let domain = def
            .domain()
            .cloned()
            .ok_or_else(|| DriverError::internal("snapshot without its domain"))?;
        let reuse = flags & create_flags::REUSE_EXT != 0;
        let mut plans: Vec<Plan> = Vec::new();
        for disk in def
            .disks()
            .iter()
            .filter(|d| d.snapshot() == Some(SnapshotLocation::External))
        {
            let current = domain
                .disk_by_target(disk.name())
                .ok_or_else(|| DriverError::internal(format!("no disk '{}'", disk.name())))?;
            let source = current
                .source()
                .ok_or_else(|| DriverError::internal("disk without a source"))?;
            let path = disk
                .path()
                .ok_or_else(|| DriverError::internal("external snapshot without a file"))?;
            let block = disk.disk_type() == SnapshotDiskType::Block;
            let existed = check_overlay_path(disk.name(), path, block, reuse)?;
            plans.push(Plan {
                disk: disk.name().to_string(),
                path: PathBuf::from(path),
                block,
                existed,
                backing: PathBuf::from(source),
                format: qemu_format(current.format()),
                top: current.node_index(),
            });
        }
        match vm {
            Some(vm) => {
                let overlays: Vec<Overlay> = {
                    let mut st = obj.lock();
                    let live = st.live.as_mut().ok_or_else(DriverError::not_running)?;
                    plans
                        .iter()
                        .map(|plan| {
                            let node_index = live.next_node;
                            live.next_node += 1;
                            Overlay {
                                disk: plan.disk.clone(),
                                path: plan.path.clone(),
                                node_index,
                                backing: plan.backing.clone(),
                                backing_format: plan.format,
                                top: plan.top,
                                block: plan.block,
                                reuse,
                            }
                        })
                        .collect()
                };
                let nodes: Vec<u32> = overlays.iter().map(|o| o.node_index).collect();
                if let Some(made) = record(&plans, &nodes) {
                    self.save_snapshot_intent(obj, made).await?;
                }
                qsnap::external(vm.monitor(), &overlays).await?;
                {
                    let mut st = obj.lock();
                    if let Some(live) = st.live.as_mut() {
                        for (o, plan) in overlays.iter().zip(&plans) {
                            if let Some(d) = live.def.disk_by_target_mut(&o.disk) {
                                d.set_overlay(&o.path.to_string_lossy(), o.block, o.node_index);
                            }
                            live.overlays.push(OverlayBase {
                                disk: o.disk.clone(),
                                overlay: o.node_index,
                                base: plan.top,
                                path: o.path.to_string_lossy().into_owned(),
                            });
                        }
                    }
                }
                if committing {
                    self.try_save_live(obj).await?;
                } else {
                    self.save_live(obj).await;
                }
            }
            // The user made them (libvirt trusts they are right).
            None if reuse => {}
            None => {
                if let Some(made) = record(&plans, &[]) {
                    self.save_snapshot_intent(obj, made).await?;
                }
                for (done, plan) in plans.iter().enumerate() {
                    let made =
                        qsnap::offline_overlay(&qemu_img(), &plan.path, &plan.backing, plan.format)
                            .await;
                    if let Err(e) = made {
                        // As libvirt: the files this call brought into
                        // being go again; devices and older files stay.
                        for plan in plans[..=done].iter().filter(|p| !p.existed && !p.block) {
                            if let Err(problem) = std::fs::remove_file(&plan.path) {
                                tracing::warn!(%problem, path = %plan.path.display(), "cannot remove a new overlay");
                            }
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        self.change_config(obj, |config| {
            for plan in &plans {
                if let Some(d) = config.disk_by_target_mut(&plan.disk) {
                    let index = d.node_index();
                    d.set_overlay(&plan.path.to_string_lossy(), plan.block, index);
                }
            }
        })
        .await
    }

    /// Puts `def` in the tree — under the current snapshot when
    /// `under_current` (a create), else where it says (a redefine) —
    /// writes its file, and makes it current if asked, rewriting the
    /// previous current one's file.
    pub(super) async fn commit_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        mut def: SnapshotDef,
        make_current: bool,
        under_current: bool,
    ) -> Result<(), DriverError> {
        let uuid = obj.uuid;
        let name = def.name().to_string();
        let files = {
            let st = obj.lock();
            if under_current {
                def.set_parent(st.snapshots.current().map(str::to_string));
            }
            let old_current = st
                .snapshots
                .current()
                .filter(|c| make_current && *c != name)
                .map(str::to_string);
            // A redefine of the current snapshot leaves it current, as
            // libvirtd does; the file must say so too.
            let current = make_current || st.snapshots.current() == Some(name.as_str());
            let mut files = vec![(name.clone(), metadata_xml(&def, current, uuid))];
            if let Some(old) = &old_current {
                if let Some(old_def) = st.snapshots.get(old) {
                    files.push((old.clone(), metadata_xml(old_def, false, uuid)));
                }
            }
            files
        };
        self.write_moments::<Snapshots>(uuid, files, None)
            .await
            .map_err(|_| {
                DriverError::internal(format!("unable to save metadata for snapshot {name}"))
            })?;
        obj.lock().snapshots.add(def, make_current);
        Ok(())
    }
}

/// The cookie libvirt records with a snapshot that keeps the guest's
/// memory: the CPU QEMU runs, said against the default model, since the
/// daemon always starts QEMU with `-cpu qemu64` (a domain's `<cpu>` is not
/// given to QEMU); and `<slirpHelper/>`, as for every domain without
/// user-mode networking (the only kind that starts here).
async fn save_cookie(vm: &RunningVm) -> Result<SaveCookie, DriverError> {
    let props = qcpu::properties(vm.monitor(), x86::is_mapped).await?;
    Ok(SaveCookie::new(
        x86::live_default(&props.enabled, &props.unavailable),
        true,
    ))
}

/// The domain's state as a snapshot records it.
fn snapshot_state(domain_state: i32) -> SnapshotState {
    match domain_state {
        state::RUNNING => SnapshotState::Running,
        state::PAUSED => SnapshotState::Paused,
        state::SHUTDOWN => SnapshotState::Shutdown,
        state::CRASHED => SnapshotState::Crashed,
        _ => SnapshotState::Shutoff,
    }
}
