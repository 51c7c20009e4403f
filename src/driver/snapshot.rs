//! Snapshots: the virDomainSnapshot procedures, their metadata (one file
//! per snapshot in libvirt's format, written atomically) and the QEMU work
//! (`qemu::snapshot`).
//!
//! What is made, as libvirt 9.0 makes it with QEMU 7.2:
//!
//! - internal snapshots (the default): QEMU's `snapshot-save` job in a
//!   running domain (libvirt 9.0: HMP `savevm`), `qemu-img snapshot -c` in
//!   a shut-off one; revert with `snapshot-load` (or `qemu-img snapshot
//!   -a`), delete with `snapshot-delete` (or `qemu-img snapshot -d`);
//! - external disk-only snapshots: a qcow2 overlay per disk, the disks
//!   switched to them in one `blockdev-snapshot` transaction (or, shut
//!   off, `qemu-img create -b`); the live and persistent definitions then
//!   name the overlays.
//!
//! A domain never has both snapshots and checkpoints (`rules.rs`).
//!
//! # Differences from libvirt 9.0
//!
//! - Internal snapshots go through QEMU's snapshot jobs rather than HMP
//!   `savevm` / `delvm`, and reverting a running snapshot loads it into
//!   the running QEMU (`stop`, `snapshot-load`, `cont`) where libvirt
//!   starts a new QEMU with `-loadvm`. The images and the guest end up the
//!   same.
//! - An external snapshot is deleted (its overlays committed into the
//!   images below) only while its overlays are the disks' active layers,
//!   made in this QEMU run (or, shut off, the disks' images); libvirt 9.0
//!   also commits overlays deeper in a chain.
//! - External memory (`--memspec`) holds QEMU's migration stream alone;
//!   libvirt puts its own header (with the domain XML) before it. Neither
//!   daemon can revert to it. `snapshot='manual'` disks are refused;
//!   `--quiesce` fails as without a guest agent.
//! - `<cookie>` records the CPU QEMU runs, which is always `qemu64` here:
//!   for a domain whose `<cpu>` asks for something else, libvirtd would
//!   have run and recorded that.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::conf::cpu::x86;
use crate::conf::snapshot::{
    CreateContext, CreateFlags, FormatFlags, ParseFlags, SaveCookie, SnapshotDef, SnapshotDiskType,
    SnapshotLocation, SnapshotState,
};
use crate::conf::{DiskFormat as ConfFormat, DomainDef, FormatMode, Secrets};
use crate::qemu::cpu as qcpu;
use crate::qemu::snapshot::{self as qsnap, OfflineOp, Overlay};
use crate::qemu::DiskFormat;

use super::checkpoint::now_secs;
use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::moments::{ListFilter, MomentTree};
use super::registry::{state, DomainObj};
use super::store::OverlayBase;
use super::{DomainRef, Driver};

/// virDomainSnapshotCreateFlags.
pub mod create_flags {
    pub const REDEFINE: u32 = 1;
    pub const CURRENT: u32 = 2;
    pub const NO_METADATA: u32 = 4;
    pub const HALT: u32 = 8;
    pub const DISK_ONLY: u32 = 16;
    pub const REUSE_EXT: u32 = 32;
    pub const QUIESCE: u32 = 64;
    pub const ATOMIC: u32 = 128;
    pub const LIVE: u32 = 256;
    pub const VALIDATE: u32 = 512;
}

/// virDomainSnapshotListFlags.
pub mod list_flags {
    pub const ROOTS: u32 = 1;
    pub const DESCENDANTS: u32 = 1;
    pub const METADATA: u32 = 2;
    pub const LEAVES: u32 = 4;
    pub const NO_LEAVES: u32 = 8;
    pub const NO_METADATA: u32 = 16;
    pub const INACTIVE: u32 = 32;
    pub const ACTIVE: u32 = 64;
    pub const DISK_ONLY: u32 = 128;
    pub const INTERNAL: u32 = 256;
    pub const EXTERNAL: u32 = 512;
    pub const TOPOLOGICAL: u32 = 1024;
}

/// virDomainSnapshotRevertFlags.
pub mod revert_flags {
    pub const RUNNING: u32 = 1;
    pub const PAUSED: u32 = 2;
    pub const FORCE: u32 = 4;
    pub const RESET_NVRAM: u32 = 8;
}

/// virDomainSnapshotDeleteFlags.
pub mod delete_flags {
    pub const CHILDREN: u32 = 1;
    pub const METADATA_ONLY: u32 = 2;
    pub const CHILDREN_ONLY: u32 = 4;
}

/// VIR_DOMAIN_SNAPSHOT_XML_SECURE.
const XML_SECURE: u32 = 1;

/// A snapshot as a client names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub name: String,
    pub dom: DomainRef,
}

/// The metadata file: the header libvirt writes, then the internal format
/// (dumpxml --security-info plus `<active>`).
const METADATA_HEADER: &str = "<!--\n\
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n\
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n  \
virsh snapshot-edit\n\
or other application using the libvirt API.\n\
-->\n\n";

fn metadata_xml(def: &SnapshotDef, current: bool, uuid: super::Uuid) -> String {
    let body = def.format(&FormatFlags {
        secure: true,
        internal: Some(current),
        domain_uuid: Some(uuid::Uuid::from_bytes(uuid)),
    });
    format!("{METADATA_HEADER}{body}")
}

fn no_snapshot(name: &str) -> DriverError {
    DriverError::new(
        ErrorKind::NoDomainSnapshot,
        format!("no domain snapshot with matching name '{name}'"),
    )
}

fn qemu_img() -> PathBuf {
    PathBuf::from("qemu-img")
}

fn is_regular_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
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

fn qemu_format(format: &ConfFormat) -> DiskFormat {
    match format {
        ConfFormat::Qcow2 => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}

/// libvirt's public-API check of two flags that exclude each other.
fn exclusive(flags: u32, a: (u32, &str), b: (u32, &str)) -> Result<(), DriverError> {
    if flags & a.0 != 0 && flags & b.0 != 0 {
        return Err(DriverError::verbatim(
            ErrorKind::InvalidArg,
            format!("Flags '{}' and '{}' are mutually exclusive", a.1, b.1),
        )
        .with_origin(ErrorOrigin::Qemu));
    }
    Ok(())
}

impl Driver {
    /// virDomainSnapshotCreateXML.
    pub async fn snapshot_create_xml(
        &self,
        dom: &DomainRef,
        xml: &str,
        flags: u32,
    ) -> Result<SnapshotRef, DriverError> {
        use create_flags::*;
        DriverError::check_flags(flags, 0x3ff, "qemuSnapshotCreateXML")?;
        if flags & QUIESCE != 0 && flags & DISK_ONLY == 0 {
            return Err(DriverError::verbatim(
                ErrorKind::InvalidArg,
                "Flag 'VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY' is required by flag \
                 'VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE'",
            )
            .with_origin(ErrorOrigin::Qemu));
        }
        exclusive(
            flags,
            (LIVE, "VIR_DOMAIN_SNAPSHOT_CREATE_LIVE"),
            (REDEFINE, "VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE"),
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
        super::rules::snapshot_allowed(&obj.lock())?;
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
        parsed: crate::conf::snapshot::ParsedSnapshot,
        flags: u32,
    ) -> Result<String, DriverError> {
        let uuid = obj.uuid;
        let def = {
            let st = obj.lock();
            st.snapshots.check_cycles(parsed.name(), parsed.parent())?;
            let existing = st.snapshots.get(parsed.name());
            parsed.prepare_redefine(
                uuid::Uuid::from_bytes(uuid),
                existing,
                flags & create_flags::DISK_ONLY != 0,
                &is_regular_file,
            )?
        };
        let name = def.name().to_string();
        let make_current = flags & create_flags::CURRENT != 0;
        self.commit_snapshot(obj, def, make_current, false).await?;
        Ok(name)
    }

    async fn create_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        parsed: crate::conf::snapshot::ParsedSnapshot,
        flags: u32,
    ) -> Result<String, DriverError> {
        use create_flags::*;
        let (prepared, live_vm, running) = {
            let st = obj.lock();
            let domain = st
                .current_def()
                .ok_or_else(|| DriverError::internal("domain has no definition"))?;
            let inactive = st.live.as_ref().and(st.config.as_ref());
            let ctx = CreateContext {
                domain,
                inactive_domain: inactive,
                state: snapshot_state(st.state),
                active: st.is_active(),
                disk_only: flags & DISK_ONLY != 0,
                is_regular_file: &is_regular_file,
            };
            let prepared = parsed.prepare_create(&ctx)?;
            if flags & NO_METADATA == 0 && st.snapshots.contains(prepared.def.name()) {
                return Err(DriverError::new(
                    ErrorKind::OperationFailed,
                    format!("domain moment {} already exists", prepared.def.name()),
                )
                .with_origin(ErrorOrigin::Domain));
            }
            (
                prepared,
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
                self.external_snapshot(obj, &def, Some(vm), flags).await
            }
            .await;
            if running && flags & HALT == 0 {
                vm.cont().await?;
            }
            saved?;
        } else if def.is_external() {
            self.external_snapshot(obj, &def, live_vm.as_ref(), flags)
                .await?;
        } else {
            let internal: Vec<PathBuf> = internal_images(&def);
            match &live_vm {
                Some(vm) => {
                    let nodes = self.internal_nodes(obj, &def)?;
                    qsnap::save_internal(vm.monitor(), &name, &nodes, running).await?;
                }
                None => {
                    for image in &internal {
                        qsnap::offline(&qemu_img(), OfflineOp::Create, &name, image).await?;
                    }
                }
            }
        }
        if flags & HALT != 0 && live_vm.is_some() {
            self.destroy_locked(obj).await?;
        }
        if flags & NO_METADATA == 0 {
            self.commit_snapshot(obj, def, true, true).await?;
        }
        Ok(name)
    }

    /// Moves each external disk onto a new overlay, then records the
    /// overlays in the live and persistent definitions.
    async fn external_snapshot(
        &self,
        obj: &Arc<DomainObj>,
        def: &SnapshotDef,
        vm: Option<&Arc<crate::qemu::RunningVm>>,
        flags: u32,
    ) -> Result<(), DriverError> {
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
                self.save_live(obj);
            }
            // The user made them (libvirt trusts they are right).
            None if reuse => {}
            None => {
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
        // The persistent definition follows, so that the next start runs
        // on the overlays too.
        let config = {
            let mut st = obj.lock();
            st.config.as_mut().map(|config| {
                for plan in &plans {
                    if let Some(d) = config.disk_by_target_mut(&plan.disk) {
                        let index = d.node_index();
                        d.set_overlay(&plan.path.to_string_lossy(), plan.block, index);
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

    /// Puts `def` in the tree — under the current snapshot when
    /// `under_current` (a create), else where it says (a redefine) —
    /// writes its file, and makes it current if asked, rewriting the
    /// previous current one's file.
    async fn commit_snapshot(
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
        self.store_io(move |s| {
            for (name, xml) in &files {
                s.save_snapshot(&uuid, name, xml)?;
            }
            Ok(())
        })
        .await
        .map_err(|_| {
            DriverError::internal(format!("unable to save metadata for snapshot {name}"))
        })?;
        let mut st = obj.lock();
        let parent = def.parent().map(str::to_string);
        st.snapshots.insert(&name, parent.as_deref(), def);
        if make_current {
            st.snapshots.set_current(Some(&name));
        }
        Ok(())
    }

    /// virDomainSnapshotGetXMLDesc.
    pub fn snapshot_get_xml_desc(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<String, DriverError> {
        DriverError::check_flags(flags, XML_SECURE, "qemuDomainSnapshotGetXMLDesc")?;
        let obj = self.domain(&snap.dom)?;
        let st = obj.lock();
        let def = st
            .snapshots
            .get(&snap.name)
            .ok_or_else(|| no_snapshot(&snap.name))?;
        Ok(def.format(&FormatFlags {
            secure: flags & XML_SECURE != 0,
            internal: None,
            domain_uuid: Some(uuid::Uuid::from_bytes(obj.uuid)),
        }))
    }

    /// virDomainListAllSnapshots (and the older count and name calls).
    pub fn list_all_snapshots(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<Vec<SnapshotRef>, DriverError> {
        DriverError::check_flags(flags, 0x7ff, "qemuDomainListAllSnapshots")?;
        let obj = self.domain(dom)?;
        let st = obj.lock();
        Ok(refs(dom, filter_list(&st.snapshots, None, flags)))
    }

    /// virDomainSnapshotListAllChildren.
    pub fn snapshot_list_all_children(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<Vec<SnapshotRef>, DriverError> {
        DriverError::check_flags(flags, 0x7ff, "qemuDomainSnapshotListAllChildren")?;
        let obj = self.domain(&snap.dom)?;
        let st = obj.lock();
        if !st.snapshots.contains(&snap.name) {
            return Err(no_snapshot(&snap.name));
        }
        Ok(refs(
            &snap.dom,
            filter_list(&st.snapshots, Some(&snap.name), flags),
        ))
    }

    /// virDomainSnapshotLookupByName.
    pub fn snapshot_lookup_by_name(
        &self,
        dom: &DomainRef,
        name: &str,
        flags: u32,
    ) -> Result<SnapshotRef, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotLookupByName")?;
        let obj = self.domain(dom)?;
        if !obj.lock().snapshots.contains(name) {
            return Err(no_snapshot(name));
        }
        Ok(SnapshotRef {
            name: name.to_string(),
            dom: dom.clone(),
        })
    }

    /// virDomainHasCurrentSnapshot.
    pub fn has_current_snapshot(&self, dom: &DomainRef, flags: u32) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainHasCurrentSnapshot")?;
        let obj = self.domain(dom)?;
        let has = obj.lock().snapshots.current().is_some();
        Ok(has)
    }

    /// virDomainSnapshotCurrent.
    pub fn snapshot_current(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<SnapshotRef, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotCurrent")?;
        let obj = self.domain(dom)?;
        let current = obj.lock().snapshots.current().map(str::to_string);
        let name = current.ok_or_else(|| {
            DriverError::new(
                ErrorKind::NoDomainSnapshot,
                "the domain does not have a current snapshot",
            )
        })?;
        Ok(SnapshotRef {
            name,
            dom: dom.clone(),
        })
    }

    /// virDomainSnapshotGetParent.
    pub fn snapshot_get_parent(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<SnapshotRef, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotGetParent")?;
        let obj = self.domain(&snap.dom)?;
        let st = obj.lock();
        if !st.snapshots.contains(&snap.name) {
            return Err(no_snapshot(&snap.name));
        }
        let parent = st.snapshots.parent(&snap.name).ok_or_else(|| {
            DriverError::new(
                ErrorKind::NoDomainSnapshot,
                format!("snapshot '{}' does not have a parent", snap.name),
            )
        })?;
        Ok(SnapshotRef {
            name: parent.to_string(),
            dom: snap.dom.clone(),
        })
    }

    /// virDomainSnapshotIsCurrent.
    pub fn snapshot_is_current(&self, snap: &SnapshotRef, flags: u32) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotIsCurrent")?;
        let obj = self.domain(&snap.dom)?;
        let st = obj.lock();
        if !st.snapshots.contains(&snap.name) {
            return Err(no_snapshot(&snap.name));
        }
        Ok(st.snapshots.current() == Some(snap.name.as_str()))
    }

    /// virDomainSnapshotHasMetadata: every snapshot this daemon lists has.
    pub fn snapshot_has_metadata(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotHasMetadata")?;
        let obj = self.domain(&snap.dom)?;
        if !obj.lock().snapshots.contains(&snap.name) {
            return Err(no_snapshot(&snap.name));
        }
        Ok(true)
    }

    /// virDomainRevertToSnapshot.
    pub async fn revert_to_snapshot(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<(), DriverError> {
        use revert_flags::*;
        DriverError::check_flags(
            flags,
            RUNNING | PAUSED | FORCE | RESET_NVRAM,
            "qemuDomainRevertToSnapshot",
        )?;
        exclusive(
            flags,
            (RUNNING, "VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING"),
            (PAUSED, "VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED"),
        )?;
        let obj = self.domain(&snap.dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, &snap.dom)?;
        no_backup_running(&obj)?;
        let (def, vm) = {
            let st = obj.lock();
            let def = st
                .snapshots
                .get(&snap.name)
                .cloned()
                .ok_or_else(|| no_snapshot(&snap.name))?;
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
                    let config = obj
                        .lock()
                        .config
                        .clone()
                        .ok_or_else(|| DriverError::internal("domain has no definition"))?;
                    self.start_def(&obj, config, true).await?;
                    obj.lock()
                        .live
                        .as_ref()
                        .map(|l| l.vm.clone())
                        .ok_or_else(DriverError::not_running)?
                }
            };
            if obj.lock().state == state::RUNNING {
                vm.stop().await?;
            }
            let nodes = self.internal_nodes(&obj, &def)?;
            qsnap::load_internal(vm.monitor(), &snap.name, &nodes).await?;
            let run = flags & RUNNING != 0
                || (flags & PAUSED == 0 && def.state() == Some(SnapshotState::Running));
            if run {
                vm.cont().await?;
            }
        } else {
            if vm.is_some() {
                self.destroy_locked(&obj).await?;
            }
            for image in internal_images(&def) {
                qsnap::offline(&qemu_img(), OfflineOp::Apply, &snap.name, &image).await?;
            }
            if flags & (RUNNING | PAUSED) != 0 {
                let config = obj
                    .lock()
                    .config
                    .clone()
                    .ok_or_else(|| DriverError::internal("domain has no definition"))?;
                self.start_def(&obj, config, flags & PAUSED != 0).await?;
            }
        }
        self.set_current_snapshot(&obj, &snap.name).await
    }

    /// The running disks that hold `def`'s internal snapshot.
    fn internal_nodes(
        &self,
        obj: &DomainObj,
        def: &SnapshotDef,
    ) -> Result<qsnap::InternalNodes, DriverError> {
        let st = obj.lock();
        let live = st.live.as_ref().ok_or_else(DriverError::not_running)?;
        Ok(qsnap::InternalNodes::new(
            def.disks()
                .iter()
                .filter(|d| d.snapshot() == Some(SnapshotLocation::Internal))
                .filter_map(|d| live.def.disk_by_target(d.name()))
                .map(|d| d.node_index()),
        ))
    }

    /// Makes `name` the current snapshot, on disk and in memory.
    async fn set_current_snapshot(
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
        self.store_io(move |s| {
            for (name, xml) in &files {
                s.save_snapshot(&uuid, name, xml)?;
            }
            Ok(())
        })
        .await?;
        obj.lock().snapshots.set_current(Some(name));
        Ok(())
    }

    /// virDomainSnapshotDelete.
    pub async fn snapshot_delete(&self, snap: &SnapshotRef, flags: u32) -> Result<(), DriverError> {
        use delete_flags::*;
        exclusive(
            flags,
            (CHILDREN, "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN"),
            (CHILDREN_ONLY, "VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY"),
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

    /// Reads every domain's snapshot metadata at start-up.
    pub(super) fn load_snapshots(&self) {
        for obj in self.shared.domains.all() {
            let mut defs = BTreeMap::new();
            let mut current = None;
            for (path, xml) in self.shared.store.load_snapshots(&obj.uuid) {
                let parsed = xml.and_then(|xml| {
                    SnapshotDef::parse(
                        &xml,
                        ParseFlags {
                            redefine: true,
                            internal: true,
                            ..ParseFlags::default()
                        },
                        0,
                    )
                    .map_err(DriverError::from)
                });
                match parsed {
                    Ok(parsed) => {
                        if parsed.current() == Some(true) {
                            current = Some(parsed.name().to_string());
                        }
                        let def = parsed.loaded();
                        defs.insert(def.name().to_string(), def);
                    }
                    Err(err) => {
                        tracing::error!(file = %path.display(), %err, "cannot load snapshot metadata; leaving the file");
                    }
                }
            }
            let mut tree = MomentTree::build(defs);
            if let Some(current) = current.filter(|c| tree.contains(c)) {
                tree.set_current(Some(&current));
            }
            obj.lock().snapshots = tree;
        }
    }
}

/// A snapshot changes the disks (or their state) under a backup's block
/// jobs; libvirt keeps the two apart with its job lock (making the caller
/// wait until it times out), here the refusal comes at once.
/// The cookie libvirt records with a snapshot that keeps the guest's
/// memory: the CPU QEMU runs, said against the default model, since the
/// daemon always starts QEMU with `-cpu qemu64` (a domain's `<cpu>` is not
/// given to QEMU); and `<slirpHelper/>`, as for every domain without
/// user-mode networking (the only kind that starts here).
async fn save_cookie(vm: &crate::qemu::RunningVm) -> Result<SaveCookie, DriverError> {
    let props = qcpu::properties(vm.monitor(), x86::is_mapped).await?;
    Ok(SaveCookie::new(
        x86::live_default(&props.enabled, &props.unavailable),
        true,
    ))
}

fn no_backup_running(obj: &DomainObj) -> Result<(), DriverError> {
    if obj.lock().backup.is_some() {
        return Err(DriverError::operation_invalid(
            "a backup job is running on the domain",
        ));
    }
    Ok(())
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

/// The images that hold `def`'s internal snapshot, from the domain it
/// recorded.
fn internal_images(def: &SnapshotDef) -> Vec<PathBuf> {
    let Some(domain) = def.domain() else {
        return Vec::new();
    };
    def.disks()
        .iter()
        .filter(|d| d.snapshot() == Some(SnapshotLocation::Internal))
        .filter_map(|d| domain.disk_by_target(d.name())?.source())
        .map(PathBuf::from)
        .collect()
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

/// The snapshots a list call selects, in libvirt's order.
fn filter_list(tree: &MomentTree<SnapshotDef>, from: Option<&str>, flags: u32) -> Vec<String> {
    use list_flags::*;
    let filter = ListFilter {
        roots_or_descendants: flags & ROOTS != 0,
        topological: flags & TOPOLOGICAL != 0,
        leaves: flags & LEAVES != 0,
        no_leaves: flags & NO_LEAVES != 0,
    };
    // Every snapshot listed has metadata: NO_METADATA alone selects none.
    if flags & (METADATA | NO_METADATA) == NO_METADATA {
        return Vec::new();
    }
    let states = flags & (INACTIVE | ACTIVE | DISK_ONLY);
    let locations = flags & (INTERNAL | EXTERNAL);
    tree.list(from, filter)
        .into_iter()
        .filter(|name| {
            let Some(def) = tree.get(name) else {
                return false;
            };
            let state_ok = states == 0
                || (states & INACTIVE != 0 && def.state() == Some(SnapshotState::Shutoff))
                || (states & ACTIVE != 0 && def.state().is_some_and(SnapshotState::is_online))
                || (states & DISK_ONLY != 0 && def.is_disk_only());
            let location_ok = locations == 0
                || (locations & INTERNAL != 0 && !def.is_external())
                || (locations & EXTERNAL != 0 && def.is_external());
            state_ok && location_ok
        })
        .collect()
}

fn refs(dom: &DomainRef, names: Vec<String>) -> Vec<SnapshotRef> {
    names
        .into_iter()
        .map(|name| SnapshotRef {
            name,
            dom: dom.clone(),
        })
        .collect()
}
