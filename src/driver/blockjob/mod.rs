//! Block jobs a client starts on one disk of a running domain, as libvirt
//! 9.0's QEMU driver runs them (qemu_driver.c qemuDomainBlockCommit,
//! qemuDomainBlockPullCommon, qemuDomainBlockCopyCommon,
//! qemuDomainBlockJobAbort, qemuDomainGetBlockJobInfo,
//! qemuDomainBlockJobSetSpeed; qemu_blockjob.c for what a job's end makes
//! of the definitions).
//!
//! - `start.rs`: commit (active and not), pull, the rebase forms;
//!   `copy.rs`: block copy.
//! - `follow.rs`: one task per job follows QEMU's events to the job's end
//!   and applies it (the disk's new image in the live and persistent
//!   definitions, unused nodes deleted, events block-job and block-job-2);
//!   abort and pivot; the jobs a restarted daemon finds.
//! - here: the job record, the chain lookups, info and speed.
//!
//! At most one job per disk. The jobs are recorded in the domain's run
//! directory (`blockjobs.json`) at every change of state, so a daemon
//! killed in the middle takes them back and follows them to their end.
//!
//! Checkpoints, as libvirt 9.0 keeps them through a job: a pivot first
//! adds the temporary `libvirt-tmp-activewrite` bitmap on the image the
//! disk switches to (qemuBlockPivot); when a copy, an active commit or a
//! pull completes, the checkpoint bitmaps of the layers it took out are
//! merged into the image the disk runs on, together with that temporary
//! one, in one transaction (follow.rs, `merge_bitmaps`). What would lose
//! a bitmap is refused with libvirt's "cannot perform block operations
//! while checkpoint exists": a commit below the active layer of layers
//! holding checkpoint bitmaps, a pull of such layers when QEMU opened
//! them from a header, a copy into a raw image.

mod copy;
mod follow;
mod start;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::conf::DomainDef;
use crate::qemu::bitmap::{self as qbitmap, NodeBitmaps};
use crate::qemu::blockjob::{self as qjob, Layer};
use crate::qemu::RunningVm;

use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::events::{
    BLOCK_JOB_TYPE_ACTIVE_COMMIT, BLOCK_JOB_TYPE_COMMIT, BLOCK_JOB_TYPE_COPY, BLOCK_JOB_TYPE_PULL,
};
use super::registry::DomainObj;
use super::{DomainRef, Driver};

/// virDomainBlockCommitFlags.
pub mod commit_flags {
    pub const SHALLOW: u32 = 1 << 0;
    pub const DELETE: u32 = 1 << 1;
    pub const ACTIVE: u32 = 1 << 2;
    pub const RELATIVE: u32 = 1 << 3;
    pub const BANDWIDTH_BYTES: u32 = 1 << 4;
}

/// virDomainBlockRebaseFlags (and virDomainBlockPullFlags' one bit).
pub mod rebase_flags {
    pub const SHALLOW: u32 = 1 << 0;
    pub const REUSE_EXT: u32 = 1 << 1;
    pub const COPY_RAW: u32 = 1 << 2;
    pub const COPY: u32 = 1 << 3;
    pub const RELATIVE: u32 = 1 << 4;
    pub const COPY_DEV: u32 = 1 << 5;
    pub const BANDWIDTH_BYTES: u32 = 1 << 6;
}

/// virDomainBlockJobAbortFlags.
pub mod abort_flags {
    pub const ASYNC: u32 = 1 << 0;
    pub const PIVOT: u32 = 1 << 1;
}

/// VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES and
/// VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES.
pub const BANDWIDTH_BYTES: u32 = 1;

/// What the job does (qemuBlockJobType, the public ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Pull,
    Copy,
    Commit,
    ActiveCommit,
}

impl Kind {
    /// virDomainBlockJobType.
    pub fn code(self) -> i32 {
        match self {
            Kind::Pull => BLOCK_JOB_TYPE_PULL,
            Kind::Copy => BLOCK_JOB_TYPE_COPY,
            Kind::Commit => BLOCK_JOB_TYPE_COMMIT,
            Kind::ActiveCommit => BLOCK_JOB_TYPE_ACTIVE_COMMIT,
        }
    }

    /// qemuBlockjobTypeToString.
    fn name(self) -> &'static str {
        match self {
            Kind::Pull => "pull",
            Kind::Copy => "copy",
            Kind::Commit => "commit",
            Kind::ActiveCommit => "active-commit",
        }
    }
}

/// qemuBlockjobState, the part a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Running,
    /// A copy or active commit mirrors: it can be pivoted.
    Ready,
    /// `job-complete` sent.
    Pivoting,
    /// `block-job-cancel` sent.
    Aborting,
}

/// The image a copy writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub layer: Layer,
    /// The daemon made the file (so it removes it when the copy fails
    /// to start).
    pub created: bool,
    /// VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB (libvirt forgets such a job
    /// when QEMU stops; here every job goes with its QEMU).
    pub transient: bool,
    /// A shallow copy keeps the old chain's backing images under it.
    pub shallow: bool,
}

/// One running block job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockJob {
    /// The disk's target.
    pub disk: String,
    pub kind: Kind,
    /// QEMU's job id, libvirt's job name (`commit-vda-libvirt-3-format`).
    pub id: String,
    pub state: State,
    /// The disk's active layer when the job started.
    pub top: Layer,
    /// The layers the job takes out of the chain once it completes, top
    /// first.
    pub removed: Vec<Layer>,
    /// A commit's base (an active commit pivots the disk onto it).
    pub base: Option<Layer>,
    /// The disk's chain when the job started, top first: whose checkpoint
    /// bitmaps the job's end merges (and a copy's pivot carries).
    #[serde(default)]
    pub chain: Vec<Layer>,
    pub mirror: Option<Mirror>,
    /// VIR_DOMAIN_BLOCK_COMMIT_DELETE: remove the committed files.
    pub delete: bool,
    /// The ready event went out (it is not repeated after a restart).
    #[serde(default)]
    pub ready_sent: bool,
    /// Woken when the job has ended and its end was applied.
    #[serde(skip)]
    pub ended: Arc<follow::EndSignal>,
}

impl BlockJob {
    /// The image files QEMU flushes when the job ends: the one it writes
    /// into (a commit's base, a copy's destination, the layer a pull
    /// fills) and, for a commit, the top it closes then.
    pub fn flushed_images(&self) -> Vec<&str> {
        let layers = match self.kind {
            Kind::Commit | Kind::ActiveCommit => vec![self.base.as_ref(), Some(&self.top)],
            Kind::Copy => vec![self.mirror.as_ref().map(|m| &m.layer)],
            Kind::Pull => vec![Some(&self.top)],
        };
        layers
            .into_iter()
            .flatten()
            .filter(|l| !l.block)
            .map(|l| l.path.as_str())
            .collect()
    }

    /// The `<mirror>` the live XML shows for this job: a copy's
    /// destination or an active commit's base; other jobs show none.
    pub fn mirror_shown(&self) -> Option<crate::conf::domain::DiskMirror> {
        let (copy, layer) = match (self.kind, &self.mirror, &self.base) {
            (Kind::Copy, Some(mirror), _) => (true, &mirror.layer),
            (Kind::ActiveCommit, _, Some(base)) => (false, base),
            _ => return None,
        };
        Some(crate::conf::domain::DiskMirror {
            copy,
            block: layer.block,
            path: layer.path.clone(),
            // QEMU's driver names are libvirt's format names for the
            // formats a copy or commit writes (qcow2, raw).
            format: layer.format.clone(),
            index: crate::qemu::node::index(&layer.node).unwrap_or(0),
            ready: match self.state {
                State::Running => None,
                State::Ready => Some("yes"),
                State::Pivoting => Some("pivot"),
                State::Aborting => Some("abort"),
            },
        })
    }
}

/// libvirt's job name: `<kind>-<disk>-<top node>` (QEMU ids cannot hold
/// the `#` of an auto-named node).
fn job_name(prefix: &str, disk: &str, node: &str) -> String {
    format!("{prefix}-{disk}-{}", node.trim_start_matches('#'))
}

/// The bandwidth in bytes/s from the API's MiB/s (unless `bytes`), with
/// libvirt's overflow check.
fn speed_bytes(bandwidth: u64, bytes: bool) -> Result<u64, DriverError> {
    if bytes {
        return Ok(bandwidth);
    }
    let limit = (i64::MAX as u64) >> 20;
    if bandwidth > limit {
        return Err(DriverError::new(
            ErrorKind::Overflow,
            format!("bandwidth must be less than {limit}"),
        ));
    }
    Ok(bandwidth << 20)
}

/// qemuDomainDiskByName: a target or a top image's path.
fn disk_by_name<'a>(
    def: &'a DomainDef,
    name: &str,
) -> Result<&'a crate::conf::DiskDef, DriverError> {
    def.disks()
        .iter()
        .find(|d| d.target() == name || d.source() == Some(name))
        .ok_or_else(|| DriverError::invalid_arg(format!("disk '{name}' not found in domain")))
}

/// virStorageSourceChainLookup on the chain QEMU has open: `name` is an
/// image's path (or `vda[N]` with N an image's node number); `None`
/// means the last image. `below` starts the search under that index of
/// `chain`. Returns the index.
fn chain_lookup(
    chain: &[Layer],
    below: Option<usize>,
    name: Option<&str>,
    disk: &str,
) -> Result<usize, DriverError> {
    let start = below.map_or(0, |i| i + 1);
    let mut index_wanted = None;
    if let Some((target, rest)) = name.and_then(|n| n.split_once('[')) {
        if let Some(idx) = rest.strip_suffix(']').and_then(|n| n.parse::<u32>().ok()) {
            if idx != 0 && target != disk {
                return Err(DriverError::invalid_arg(format!(
                    "requested target '{target}' does not match target '{disk}'"
                ))
                .with_origin(ErrorOrigin::Storage));
            }
            index_wanted = Some(idx);
        }
    }
    let found =
        chain
            .iter()
            .enumerate()
            .skip(start)
            .find(|(i, layer)| match (name, index_wanted) {
                (_, Some(idx)) => crate::qemu::node::index(&layer.node) == Some(idx),
                (None, None) => *i + 1 == chain.len(),
                (Some(name), None) => layer.path == name || same_file(name, &layer.path),
            });
    if let Some((i, _)) = found {
        // The last image cannot be found by "none": it has no backing.
        if name.is_some() || index_wanted.is_some() || start < chain.len() {
            return Ok(i);
        }
    }
    Err(DriverError::invalid_arg(match (index_wanted, name, below) {
        (Some(idx), _, _) => {
            format!("could not find backing store index '{idx}' in chain for '{disk}'")
        }
        (None, Some(name), Some(b)) => format!(
            "could not find image '{name}' beneath '{}' in chain for '{disk}'",
            chain[b].path
        ),
        (None, Some(name), None) => {
            format!("could not find image '{name}' in chain for '{disk}'")
        }
        (None, None, _) => format!("could not find base image in chain for '{disk}'"),
    })
    // libvirt's storage code reports these.
    .with_origin(ErrorOrigin::Storage))
}

/// A relative or differently spelled name of the same file (libvirt's
/// virFileRelLinkPointsTo, for local files).
fn same_file(name: &str, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(name), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A disk's running job, by what a client names.
pub(super) struct Found {
    pub vm: Arc<RunningVm>,
    pub disk: String,
    pub job: Option<BlockJob>,
}

impl Driver {
    /// The live disk `path` names and its block job, if any; fails as
    /// libvirt does for a domain that is not running or a disk it lacks.
    fn find_job(&self, obj: &DomainObj, path: &str) -> Result<Found, DriverError> {
        let st = obj.lock();
        let live = st.live.as_ref().ok_or_else(DriverError::inactive)?;
        let disk = disk_by_name(&live.def, path)?.target().to_string();
        let job = live.blockjobs.iter().find(|j| j.disk == disk).cloned();
        Ok(Found {
            vm: live.vm.clone(),
            disk,
            job,
        })
    }

    /// Whether the disk has a client block job (for backups and
    /// snapshots, which share the disks with them).
    pub(super) fn disk_has_block_job(obj: &DomainObj, disk: &str) -> bool {
        let st = obj.lock();
        st.live
            .as_ref()
            .is_some_and(|l| l.blockjobs.iter().any(|j| j.disk == disk))
    }

    /// Whether any disk has one.
    pub(super) fn has_block_job(obj: &DomainObj) -> bool {
        let st = obj.lock();
        st.live.as_ref().is_some_and(|l| !l.blockjobs.is_empty())
    }

    /// virDomainGetBlockJobInfo for a commit, pull or copy (backups are
    /// answered by driver/jobs.rs): `None` when the disk has no such job.
    /// (type, bandwidth, cur, end) as qemuBlockJobInfoTranslate makes them.
    pub(super) async fn client_block_job_info(
        &self,
        obj: &DomainObj,
        path: &str,
        flags: u32,
    ) -> Result<Option<(i32, u64, u64, u64)>, DriverError> {
        let found = self.find_job(obj, path)?;
        let Some(job) = found.job else {
            return Ok(None);
        };
        let all = qjob::query(found.vm.monitor()).await?;
        let Some(raw) = all.get(&job.id) else {
            return Ok(Some((job.kind.code(), 0, 0, 1)));
        };
        let (mut cur, mut end) = (raw.cur, raw.end);
        if let Some(ready) = raw.ready {
            if cur == 0 && end == 0 {
                end = 1;
                if ready {
                    cur = 1;
                }
            }
            if !ready && cur == end && cur > 0 {
                cur -= 1;
            }
        }
        let bandwidth = if flags & BANDWIDTH_BYTES == 0 && raw.speed > 0 {
            raw.speed.div_ceil(1 << 20)
        } else {
            raw.speed
        };
        Ok(Some((job.kind.code(), bandwidth, cur, end)))
    }

    /// virDomainBlockJobSetSpeed.
    pub async fn block_job_set_speed(
        &self,
        dom: &DomainRef,
        path: &str,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        DriverError::check_flags(flags, BANDWIDTH_BYTES, "qemuDomainBlockJobSetSpeed")?;
        let speed = speed_bytes(bandwidth, flags & BANDWIDTH_BYTES != 0)?;
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        let found = self.find_job(&obj, path)?;
        // A push backup's job on the disk takes the speed too (libvirt
        // 9.0 refuses: see README, "Differences").
        let id = match found.job {
            Some(job) => job.id,
            None => self.backup_job_id(&obj, &found.disk).ok_or_else(|| {
                DriverError::invalid_arg(format!(
                    "disk {} does not have an active block job",
                    found.disk
                ))
            })?,
        };
        qjob::set_speed(found.vm.monitor(), &id, speed).await?;
        Ok(())
    }

    /// The QEMU job id of a running push backup's copy of `disk`.
    fn backup_job_id(&self, obj: &DomainObj, disk: &str) -> Option<String> {
        let st = obj.lock();
        let run = st.backup.as_ref()?;
        run.record
            .running_targets()
            .into_iter()
            .find(|t| t.disk == disk && !t.fleece)
            .map(|t| t.job_id)
    }

    /// Writes the domain's block jobs into its run directory.
    async fn save_block_jobs(&self, obj: &DomainObj) {
        // As the live record: never written once QEMU's files go.
        let _record = obj.live_record.lock().await;
        let jobs = {
            let st = obj.lock();
            match st.live.as_ref().filter(|l| !l.gone) {
                Some(live) => live.blockjobs.clone(),
                None => return,
            }
        };
        let uuid = obj.uuid;
        let saved = self
            .store_io(move |s| {
                let json = serde_json::to_vec(&jobs).map_err(|e| {
                    DriverError::internal(format!("cannot serialize block jobs: {e}"))
                })?;
                let path = s.domain_run_dir(&uuid).join("blockjobs.json");
                super::store::write_atomic(&path, &json)
            })
            .await;
        if let Err(err) = saved {
            tracing::warn!(%err, "cannot record the domain's block jobs");
        }
    }
}

/// The check every job start makes on the disk
/// (qemuDomainDiskBlockJobIsActive).
fn check_disk_free(obj: &DomainObj, disk: &str) -> Result<(), DriverError> {
    let st = obj.lock();
    let job = st
        .live
        .as_ref()
        .and_then(|l| l.blockjobs.iter().find(|j| j.disk == disk));
    let in_backup = st
        .backup
        .as_ref()
        .is_some_and(|run| run.record.running_targets().iter().any(|t| t.disk == disk));
    // A copy or an active commit gives the disk a mirror, which libvirt
    // reports with its own code.
    let kind = match job.map(|j| j.kind) {
        Some(Kind::Copy | Kind::ActiveCommit) => ErrorKind::BlockCopyActive,
        Some(_) => ErrorKind::OperationUnsupported,
        None if in_backup => ErrorKind::OperationUnsupported,
        None => return Ok(()),
    };
    Err(DriverError::new(
        kind,
        format!("disk '{disk}' already in active block job"),
    ))
}

/// Whether the domain has checkpoints (whose bitmaps a job must keep).
fn has_checkpoints(obj: &DomainObj) -> bool {
    !obj.lock().checkpoints.is_empty()
}

/// libvirt's answer when a job would lose a checkpoint's bitmap
/// (qemuDomainSupportsCheckpointsBlockjobs); see the README for when.
fn checkpoint_exists() -> DriverError {
    DriverError::new(
        ErrorKind::OperationUnsupported,
        "cannot perform block operations while checkpoint exists",
    )
}

/// The indexes in `chain[..end]` (top first) that hold a bitmap the merge
/// at the job's end would read: one of a bitmap of `chain[0]` that stands
/// for a checkpoint on the chain (qemuBlockGetBitmapMergeActions' choice).
fn layers_with_chain_bitmaps(nodes: &[NodeBitmaps], chain: &[Layer], end: usize) -> Vec<usize> {
    let names: Vec<String> = chain.iter().map(|l| l.node.clone()).collect();
    let Some(top) = names
        .first()
        .and_then(|t| nodes.iter().find(|n| &n.node == t))
    else {
        return Vec::new();
    };
    let mut found: Vec<usize> = Vec::new();
    for bitmap in &top.bitmaps {
        if !qbitmap::chain_is_valid(nodes, &names, &bitmap.name) {
            continue;
        }
        for (i, node) in names.iter().enumerate().take(end) {
            if qbitmap::find_bitmap(nodes, node, &bitmap.name).is_some() && !found.contains(&i) {
                found.push(i);
            }
        }
    }
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(node: &str, path: &str) -> Layer {
        Layer {
            node: node.into(),
            storage: None,
            path: path.into(),
            format: "qcow2".into(),
            block: false,
        }
    }

    fn chain() -> Vec<Layer> {
        vec![
            layer("libvirt-3-format", "/i/d.s2"),
            layer("libvirt-2-format", "/i/d.s1"),
            layer("libvirt-1-format", "/i/d.qcow2"),
        ]
    }

    #[test]
    fn looks_images_up_as_libvirt_does() {
        let c = chain();
        assert_eq!(chain_lookup(&c, None, Some("/i/d.s1"), "vda").unwrap(), 1);
        assert_eq!(chain_lookup(&c, Some(0), None, "vda").unwrap(), 2);
        assert_eq!(chain_lookup(&c, None, Some("vda[1]"), "vda").unwrap(), 2);
        let err = chain_lookup(&c, Some(1), Some("/i/d.s2"), "vda").unwrap_err();
        assert_eq!(
            err.detail(),
            Some("could not find image '/i/d.s2' beneath '/i/d.s1' in chain for 'vda'")
        );
        let err = chain_lookup(&c, None, Some("vdb[1]"), "vda").unwrap_err();
        assert_eq!(
            err.detail(),
            Some("requested target 'vdb' does not match target 'vda'")
        );
        let err = chain_lookup(&c[2..], Some(0), None, "vda").unwrap_err();
        assert_eq!(
            err.detail(),
            Some("could not find base image in chain for 'vda'")
        );
    }

    #[test]
    fn finds_the_layers_whose_checkpoint_bitmaps_a_merge_reads() {
        let bitmap = |name: &str, recording: bool| crate::qemu::BitmapInfo {
            name: name.into(),
            granularity: 65536,
            count: 0,
            persistent: true,
            recording,
            busy: false,
            inconsistent: false,
        };
        let node = |name: &str, bitmaps| NodeBitmaps {
            node: name.into(),
            bitmaps,
        };
        // c1 on the top and the middle; c2 on the top only; c3 only below
        // (no checkpoint's: a bitmap must start at the top); c4 disabled.
        let nodes = [
            node(
                "libvirt-3-format",
                vec![bitmap("c1", true), bitmap("c2", true), bitmap("c4", false)],
            ),
            node(
                "libvirt-2-format",
                vec![bitmap("c1", true), bitmap("c4", true)],
            ),
            node("libvirt-1-format", vec![bitmap("c3", true)]),
        ];
        let c = chain();
        assert_eq!(layers_with_chain_bitmaps(&nodes, &c, 3), [0, 1]);
        assert_eq!(layers_with_chain_bitmaps(&nodes, &c, 1), [0]);
        // From the middle: c1 and c4 stand on their own there.
        assert_eq!(layers_with_chain_bitmaps(&nodes, &c[1..], 1), [0]);
        // Without a bitmap on its top, nothing.
        let bare = [node("libvirt-3-format", vec![]), nodes[1].clone()];
        assert!(layers_with_chain_bitmaps(&bare, &c, 3).is_empty());
    }

    #[test]
    fn bandwidth_is_checked_for_overflow_in_mib() {
        assert_eq!(speed_bytes(2, false).unwrap(), 2 << 20);
        assert_eq!(speed_bytes(u64::MAX, true).unwrap(), u64::MAX);
        let err = speed_bytes(1 << 43, false).unwrap_err();
        assert_eq!(
            err.detail(),
            Some("bandwidth must be less than 8796093022207")
        );
    }
}
