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
//! - this module: the flags, the read API that is the snapshots' own
//!   (XML, current snapshot, metadata; lookup, parent and lists are
//!   `moments.rs`'s), the metadata files and what the operations share;
//! - `create.rs`: create and redefine, internal and external;
//! - `revert.rs`: revert, and making a snapshot current;
//! - `delete.rs`: delete; `fold.rs`: the delete of an external snapshot
//!   (its overlays committed into the images below);
//! - `intent.rs`: the records that settle an operation cut short.
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
mod fold;
mod intent;
mod revert;

use std::path::PathBuf;

use crate::conf::moment::Moment;
use crate::conf::snapshot::{
    FormatFlags, ParseFlags, SnapshotDef, SnapshotLocation, SnapshotState,
};

use super::error::{DriverError, ErrorKind};
use super::metadata::with_header;
use super::moments::{MomentKind, MomentRef, MomentTree};
use super::registry::{DomainObj, DomainState};
use super::store::Store;
use super::{DomainRef, Driver, Uuid};

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
pub type SnapshotRef = MomentRef;

/// Snapshots, as `moments.rs` knows the kind.
pub enum Snapshots {}

impl MomentKind for Snapshots {
    type Def = SnapshotDef;
    const API: &'static str = "Snapshot";
    const NOUN: &'static str = "snapshot";
    const LIST_FLAGS: u32 = 0x7ff;
    const MISSING: ErrorKind = ErrorKind::NoDomainSnapshot;

    fn tree(st: &DomainState) -> &MomentTree<SnapshotDef> {
        &st.snapshots
    }

    fn save(store: &Store, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError> {
        store.save_snapshot(uuid, name, xml)
    }

    fn delete(store: &Store, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        store.delete_snapshot(uuid, name)
    }

    /// The state and location filters of a list call.
    fn keeps(def: &SnapshotDef, flags: u32) -> bool {
        use list_flags::*;
        // Every snapshot listed has metadata: NO_METADATA alone selects none.
        if flags & (METADATA | NO_METADATA) == NO_METADATA {
            return false;
        }
        let states = flags & (INACTIVE | ACTIVE | DISK_ONLY);
        let locations = flags & (INTERNAL | EXTERNAL);
        let state_ok = states == 0
            || (states & INACTIVE != 0 && def.state() == Some(SnapshotState::Shutoff))
            || (states & ACTIVE != 0 && def.state().is_some_and(SnapshotState::is_online))
            || (states & DISK_ONLY != 0 && def.is_disk_only());
        let location_ok = locations == 0
            || (locations & INTERNAL != 0 && !def.is_external())
            || (locations & EXTERNAL != 0 && def.is_external());
        state_ok && location_ok
    }
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
        self.with_moment::<Snapshots, _>(snap, |_, def| {
            Ok(def.format(&FormatFlags {
                secure: flags & XML_SECURE != 0,
                internal: None,
                domain_uuid: Some(uuid::Uuid::from_bytes(snap.dom.uuid)),
            }))
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

    /// virDomainSnapshotIsCurrent.
    pub fn snapshot_is_current(&self, snap: &SnapshotRef, flags: u32) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotIsCurrent")?;
        self.with_moment::<Snapshots, _>(snap, |tree, _| {
            Ok(tree.current() == Some(snap.name.as_str()))
        })
    }

    /// virDomainSnapshotHasMetadata: every snapshot this daemon lists has.
    pub fn snapshot_has_metadata(
        &self,
        snap: &SnapshotRef,
        flags: u32,
    ) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainSnapshotHasMetadata")?;
        self.with_moment::<Snapshots, _>(snap, |_, _| Ok(true))
    }

    /// Reads every domain's snapshot metadata at start-up.
    pub(super) async fn load_snapshots(&self) {
        for obj in self.shared.domains.all() {
            let uuid = obj.uuid;
            let files = self.store_io(move |s| Ok(s.load_snapshots(&uuid))).await;
            let tree = MomentTree::load("snapshot", files, |xml| {
                let flags = ParseFlags {
                    redefine: true,
                    internal: true,
                    ..ParseFlags::default()
                };
                let parsed = SnapshotDef::parse(xml, flags, 0)?;
                let current = parsed.current() == Some(true);
                Ok((parsed.loaded(), current))
            });
            obj.lock().snapshots = tree;
        }
    }

    /// The node indexes of the disks an internal snapshot covers, in the
    /// domain's disk order.
    fn internal_node_indexes(
        &self,
        obj: &DomainObj,
        def: &SnapshotDef,
    ) -> Result<Vec<u32>, DriverError> {
        let st = obj.lock();
        let live = st.live.as_ref().ok_or_else(DriverError::not_running)?;
        Ok(internal_disks(def)
            .filter_map(|d| live.def.disk_by_target(d))
            .map(|d| d.node_index())
            .collect())
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

/// The disks (targets) that hold `def`'s internal snapshot.
fn internal_disks(def: &SnapshotDef) -> impl Iterator<Item = &str> {
    def.disks()
        .iter()
        .filter(|d| d.snapshot() == Some(SnapshotLocation::Internal))
        .map(|d| d.name())
}

/// The images that hold `def`'s internal snapshot, from the domain it
/// recorded.
fn internal_images(def: &SnapshotDef) -> Vec<PathBuf> {
    let Some(domain) = def.domain() else {
        return Vec::new();
    };
    internal_disks(def)
        .filter_map(|d| domain.disk_by_target(d)?.source())
        .map(PathBuf::from)
        .collect()
}
