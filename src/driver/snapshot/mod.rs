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
//! - this module: the flags, the read API, the metadata files and what
//!   the operations share;
//! - `create.rs`: create and redefine, internal and external;
//! - `revert.rs`: revert, and making a snapshot current;
//! - `delete.rs`: delete, external snapshots by block commit.
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

mod create;
mod delete;
mod revert;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::conf::moment::Moment;
use crate::conf::snapshot::{
    FormatFlags, ParseFlags, SnapshotDef, SnapshotLocation, SnapshotState,
};
use crate::qemu::snapshot as qsnap;

use super::error::{DriverError, ErrorKind};
use super::metadata::with_header;
use super::moments::{ListFilter, MomentTree};
use super::registry::DomainObj;
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

/// The metadata file: libvirt's header, then the internal format
/// (dumpxml --security-info plus `<active>`).
fn metadata_xml(def: &SnapshotDef, current: bool, uuid: super::Uuid) -> String {
    let body = def.format(&FormatFlags {
        secure: true,
        internal: Some(current),
        domain_uuid: Some(uuid::Uuid::from_bytes(uuid)),
    });
    with_header("snapshot-edit", &body)
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

impl Driver {
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
fn no_backup_running(obj: &DomainObj) -> Result<(), DriverError> {
    if obj.lock().backup.is_some() {
        return Err(DriverError::operation_invalid(
            "a backup job is running on the domain",
        ));
    }
    Ok(())
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
