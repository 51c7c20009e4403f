//! The domains the daemon knows, and the per-domain state behind them.
//!
//! Locking: the registry's mutex guards only the map; each domain has its
//! own std mutex for its state, held for short sections and never across an
//! `.await`, and a job lock (a tokio mutex) that serializes the long
//! operations on one domain (start, destroy, undefine, monitor work that
//! changes state). Lock order: job → registry → domain state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::conf::checkpoint::CheckpointDef;
use crate::conf::snapshot::SnapshotDef;
use crate::conf::DomainDef;
use crate::qemu::bitmap::BitmapProblem;
use crate::qemu::RunningVm;

use super::backup::BackupRun;
use super::error::{DriverError, ErrorKind};
use super::jobs::Jobs;
use super::moments::MomentTree;
use super::store::uuid_string;
use super::{DomainRef, Uuid};

/// virDomainState values.
pub mod state {
    pub const RUNNING: i32 = 1;
    pub const PAUSED: i32 = 3;
    pub const SHUTDOWN: i32 = 4;
    pub const SHUTOFF: i32 = 5;
    pub const CRASHED: i32 = 6;

    pub const RUNNING_BOOTED: i32 = 1;
    pub const RUNNING_UNPAUSED: i32 = 5;
    pub const PAUSED_UNKNOWN: i32 = 0;
    pub const PAUSED_USER: i32 = 1;
    /// VIR_DOMAIN_PAUSED_SHUTTING_DOWN: kept after the guest powered off
    /// while a backup that preserves the domain runs.
    pub const PAUSED_SHUTTING_DOWN: i32 = 8;
    pub const SHUTOFF_UNKNOWN: i32 = 0;
    pub const SHUTOFF_SHUTDOWN: i32 = 1;
    pub const SHUTOFF_DESTROYED: i32 = 2;
    pub const SHUTOFF_CRASHED: i32 = 3;
    pub const SHUTOFF_FAILED: i32 = 6;
    pub const SHUTOFF_DAEMON: i32 = 8;
}

pub struct DomainObj {
    pub uuid: Uuid,
    state: Mutex<DomainState>,
    /// Held for the whole of a long operation on this domain.
    pub job: tokio::sync::Mutex<()>,
    /// Held from taking an ended backup job to sending its event: QEMU's
    /// exit and the job's own follower may both end it, and whichever comes
    /// second must find the event sent. Never held across anything else.
    pub backup_end: tokio::sync::Mutex<()>,
    /// Held while the live record is written or removed: the exit watcher
    /// and the API both do so, and a record written from a state read
    /// before QEMU went must not land after the removal.
    pub live_record: tokio::sync::Mutex<()>,
    /// Held for the whole of the end of a QEMU, which both destroy and the
    /// exit watcher run: whichever comes second returns only once the
    /// first has removed the files and sent the event.
    pub exit: tokio::sync::Mutex<()>,
}

pub struct DomainState {
    /// The persistent definition; `None` for a transient domain.
    pub config: Option<DomainDef>,
    pub live: Option<Live>,
    pub state: i32,
    pub reason: i32,
    pub autostart: bool,
    /// Set once the domain has left the registry, so that a caller holding
    /// an old `Arc` does not act on it.
    pub removed: bool,
    /// Checkpoints outlive QEMU runs and follow the domain while it exists
    /// (a running domain made transient keeps them until it stops).
    pub checkpoints: MomentTree<CheckpointDef>,
    /// Snapshot metadata, kept like the checkpoints'. A domain never has
    /// both (see `rules.rs`).
    pub snapshots: MomentTree<SnapshotDef>,
    /// Checkpoint bitmaps found unusable when this QEMU came up, for
    /// virDomainGetMessages; a checkpoint's go with its metadata, so the
    /// messages never name a checkpoint that no longer exists.
    pub broken_bitmaps: Vec<BrokenBitmap>,
    pub jobs: Jobs,
    /// The backup running in this domain's QEMU, if any.
    pub backup: Option<BackupRun>,
}

pub struct Live {
    pub id: i32,
    pub def: DomainDef,
    pub vm: Arc<RunningVm>,
    /// Why the daemon itself is stopping QEMU, so that the exit is
    /// reported with the right reason.
    pub stopping: Option<StopCause>,
    /// QEMU announced a shutdown (guest or host initiated).
    pub shutdown_seen: bool,
    /// QEMU has exited and its files are being removed: nothing writes
    /// the live record any more.
    pub gone: bool,
    /// The next free N for block nodes `libvirt-N-*` the daemon adds
    /// (backup targets); the disks have 1..=their count.
    pub next_node: u32,
    /// The external-snapshot overlays this QEMU put on top of its disks,
    /// with the nodes below them, so that deleting the snapshot can commit
    /// an overlay back.
    pub overlays: Vec<super::store::OverlayBase>,
    /// The reason the next pause or resume has, when the API asked for it:
    /// QEMU's STOP or RESUME event may arrive before or after the reply to
    /// `stop`/`cont`, and whichever comes first records it.
    pub pending_reason: Option<i32>,
    /// QEMU's shutdown action is `pause` (a backup that preserves the
    /// domain armed it), so a guest power-off leaves QEMU stopped rather
    /// than exiting; see `backup/preserve.rs`.
    pub shutdown_pauses: bool,
    /// The block jobs (commit, pull, copy) running on this QEMU's disks,
    /// at most one per disk (driver/blockjob).
    pub blockjobs: Vec<super::blockjob::BlockJob>,
}

/// A checkpoint's bitmap on one disk that cannot stand for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBitmap {
    pub checkpoint: String,
    pub disk: String,
    pub bitmap: String,
    pub problem: BitmapProblem,
}

impl std::fmt::Display for BrokenBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checkpoint '{}': bitmap '{}' of disk '{}' is {}",
            self.checkpoint, self.bitmap, self.disk, self.problem
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    Destroy,
}

impl DomainState {
    /// A domain that is not running.
    pub fn shut_off(config: Option<DomainDef>) -> DomainState {
        DomainState {
            config,
            live: None,
            state: state::SHUTOFF,
            reason: state::SHUTOFF_UNKNOWN,
            autostart: false,
            removed: false,
            checkpoints: MomentTree::default(),
            snapshots: MomentTree::default(),
            broken_bitmaps: Vec::new(),
            jobs: Jobs::default(),
            backup: None,
        }
    }

    /// QEMU runs for this domain now.
    pub fn set_live(
        &mut self,
        id: i32,
        def: DomainDef,
        vm: Arc<RunningVm>,
        (run_state, reason): (i32, i32),
    ) {
        // Past every node the disks use (an external snapshot's overlays
        // take numbers beyond the disk count, the layers of a chain QEMU
        // was started on too).
        let highest = def
            .disks()
            .iter()
            .map(|d| d.node_index())
            .chain([vm.highest_node()])
            .max();
        self.live = Some(Live {
            id,
            def,
            vm,
            stopping: None,
            shutdown_seen: false,
            gone: false,
            next_node: highest.unwrap_or(0).saturating_add(1),
            overlays: Vec::new(),
            pending_reason: None,
            shutdown_pauses: false,
            blockjobs: Vec::new(),
        });
        self.state = run_state;
        self.reason = reason;
        self.broken_bitmaps.clear();
    }

    pub fn name(&self) -> &str {
        match (&self.live, &self.config) {
            (Some(live), _) => live.def.name(),
            (None, Some(config)) => config.name(),
            (None, None) => "",
        }
    }

    pub fn is_active(&self) -> bool {
        self.live.is_some()
    }

    pub fn id(&self) -> i32 {
        self.live.as_ref().map_or(-1, |l| l.id)
    }

    /// The definition dumpxml shows by default.
    pub fn current_def(&self) -> Option<&DomainDef> {
        self.live.as_ref().map(|l| &l.def).or(self.config.as_ref())
    }
}

impl DomainObj {
    pub fn new(uuid: Uuid, state: DomainState) -> Arc<DomainObj> {
        Arc::new(DomainObj {
            uuid,
            state: Mutex::new(state),
            job: tokio::sync::Mutex::new(()),
            backup_end: tokio::sync::Mutex::new(()),
            live_record: tokio::sync::Mutex::new(()),
            exit: tokio::sync::Mutex::new(()),
        })
    }

    /// A poisoned lock means a panic mid-update; the state is still the
    /// best we have, so keep serving rather than cascade the panic.
    pub fn lock(&self) -> MutexGuard<'_, DomainState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reference(&self) -> DomainRef {
        let st = self.lock();
        DomainRef {
            name: st.name().to_string(),
            uuid: self.uuid,
            id: st.id(),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    domains: Mutex<Domains>,
}

#[derive(Default)]
struct Domains {
    by_uuid: BTreeMap<Uuid, Arc<DomainObj>>,
    last_id: i32,
}

impl Registry {
    fn domains(&self) -> MutexGuard<'_, Domains> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn all(&self) -> Vec<Arc<DomainObj>> {
        self.domains().by_uuid.values().cloned().collect()
    }

    pub fn by_uuid(&self, uuid: &Uuid) -> Option<Arc<DomainObj>> {
        self.domains().by_uuid.get(uuid).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<DomainObj>> {
        self.all().into_iter().find(|d| d.lock().name() == name)
    }

    pub fn by_id(&self, id: i32) -> Option<Arc<DomainObj>> {
        if id < 0 {
            return None;
        }
        self.all().into_iter().find(|d| d.lock().id() == id)
    }

    /// Finds the domain a client names by handle: libvirt resolves handles
    /// by UUID and reports the name it was given.
    pub fn get(&self, dom: &DomainRef) -> Result<Arc<DomainObj>, DriverError> {
        self.by_uuid(&dom.uuid).ok_or_else(|| {
            DriverError::new(
                ErrorKind::NoDomain,
                format!(
                    "no domain with matching uuid '{}' ({})",
                    uuid_string(&dom.uuid),
                    dom.name
                ),
            )
        })
    }

    pub fn next_id(&self) -> i32 {
        let mut domains = self.domains();
        domains.last_id += 1;
        domains.last_id
    }

    /// Ids continue above any id a reconnected domain already holds.
    pub fn note_id(&self, id: i32) {
        let mut domains = self.domains();
        domains.last_id = domains.last_id.max(id);
    }

    pub fn remove(&self, uuid: &Uuid) {
        if let Some(obj) = self.domains().by_uuid.remove(uuid) {
            obj.lock().removed = true;
        }
    }

    /// Inserts `def` as a new domain, or returns the existing object with
    /// the same UUID after checking that name and UUID agree, with libvirt's
    /// errors where they clash.
    pub fn add_or_find(
        &self,
        def: &DomainDef,
        make: impl FnOnce() -> DomainState,
    ) -> Result<(Arc<DomainObj>, bool), DriverError> {
        let mut domains = self.domains();
        let uuid = super::uuid_of(def);
        if let Some(existing) = domains.by_uuid.get(&uuid) {
            let st = existing.lock();
            if st.name() != def.name() {
                return Err(DriverError::new(
                    ErrorKind::OperationFailed,
                    format!(
                        "domain '{}' is already defined with uuid {}",
                        st.name(),
                        uuid_string(&uuid)
                    ),
                ));
            }
            drop(st);
            return Ok((existing.clone(), false));
        }
        if let Some(other) = domains
            .by_uuid
            .values()
            .find(|d| d.lock().name() == def.name())
        {
            return Err(DriverError::new(
                ErrorKind::OperationFailed,
                format!(
                    "domain '{}' already exists with uuid {}",
                    def.name(),
                    uuid_string(&other.uuid)
                ),
            ));
        }
        let obj = DomainObj::new(uuid, make());
        domains.by_uuid.insert(uuid, obj.clone());
        Ok((obj, true))
    }
}
