//! A push backup's own copy-before-write filter, for a guest that must
//! never wait long on a slow backup target (`--backup-cbw-timeout`).
//!
//! `blockdev-backup` from the disk puts QEMU's filter over it, and that
//! filter copies every old cluster into the *target* before the guest's
//! write may go on: a slow target (network, throttled) holds the guest's
//! writes for as long as it takes. Here the backup is set up the way
//! QEMU 7.2's fleecing is instead:
//!
//! 1. [`insert`]: a local qcow2 scratch image (`libvirt-K-storage` /
//!    `libvirt-K-format`, its backing node the running disk), and a
//!    `copy-before-write` node `libvirt-K-cbw` over the disk's format node
//!    whose target is the scratch, with `on-cbw-error: break-snapshot` and
//!    `cbw-timeout`: a copy that takes longer breaks the frozen view (and
//!    with it the backup), the guest's write goes on;
//! 2. [`activate`]: the guest device moved onto the filter (`qom-set` of
//!    its `drive`; from then on the view is frozen), then a
//!    `snapshot-access` node `libvirt-K-access` over the filter, which
//!    reads that frozen view. The backup job copies from it, and an
//!    incremental one finds its temporary bitmap there (blockdev-backup
//!    looks the bitmap up on its source node);
//! 3. [`teardown`], at the job's end whatever it was, or to undo a begin:
//!    the snapshot-access node goes first (while it is there the filter
//!    refuses to share writes to the disk, so the device could not move
//!    back), then the device goes back to the disk's format node — only
//!    if it is on the filter: in QEMU 7.2 a `qom-set` to the node a device
//!    already has aborts QEMU — then the filter and the scratch image's
//!    nodes, and the scratch file.
//!
//! Every name is decided before QEMU is touched ([`CbwFilter`]) and kept in
//! the backup's record, so that [`teardown`] also works for a daemon that
//! starts again after dying anywhere in between.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::blockdev::{self, AttachedImage, BackingImage, ImageSpec, SourceImage};
use super::blockjob;
use super::command::{DiskFormat, DiskSpec};
use super::error::QemuError;
use super::monitor::Monitor;
use super::node;

/// What the driver asks for: the filter for one disk of a push backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbwRequest {
    /// The scratch image's path; it must not exist.
    pub scratch: PathBuf,
    /// K of the scratch image's nodes, fresh from the domain's counter.
    pub node_index: u32,
    /// Seconds a copy may take before the snapshot breaks.
    pub timeout: u32,
    /// Test builds only (`crate::fault::cbw_latency_ns`): the filter
    /// copies into a `null-co` node that takes this long per write instead
    /// of the scratch, so that a test can make the copy slow.
    pub latency_ns: Option<u64>,
}

/// The filter of one disk, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CbwFilter {
    /// The guest device's id, e.g. `virtio-disk0`.
    pub device: String,
    /// The `copy-before-write` node.
    pub filter_node: String,
    /// The `snapshot-access` node the job copies from.
    pub access_node: String,
    /// The scratch image.
    pub scratch: AttachedImage,
    /// Seconds, as given to QEMU.
    pub timeout: u32,
    /// The slow `null-co` node a test asked for, if any.
    #[serde(default)]
    pub slow_node: Option<String>,
}

/// The names [`insert`] will use for `disk`, decided before QEMU is asked.
pub fn plan(disk: &DiskSpec, request: &CbwRequest) -> CbwFilter {
    let k = request.node_index;
    CbwFilter {
        device: disk.device_id(),
        filter_node: node::cbw(k),
        access_node: node::snapshot_access(k),
        scratch: AttachedImage {
            path: request.scratch.clone(),
            storage_node: node::storage(k),
            format_node: node::format(k),
            created: true,
        },
        timeout: request.timeout,
        slow_node: request.latency_ns.map(|_| node::slow(k)),
    }
}

/// Makes the scratch image and the filter over `disk`'s format node; the
/// device stays where it is. On error nothing of it is left.
pub async fn insert(
    mon: &Monitor,
    disk: &DiskSpec,
    source: &SourceImage,
    request: &CbwRequest,
    filter: &CbwFilter,
) -> Result<(), QemuError> {
    let mut spec = ImageSpec {
        path: filter.scratch.path.clone(),
        format: DiskFormat::Qcow2,
        block: false,
        node_index: request.node_index,
        backing: Some(BackingImage {
            path: disk.source.clone(),
            format: disk.format,
            node: Some(disk.format_node()),
        }),
        size: 0,
        cluster_size: None,
        extended_l2: false,
        metadata_preallocated: false,
        unsynced: true,
        disk: disk.target.clone(),
    };
    spec.sized_like(source, disk.format);
    blockdev::create_image(mon, &spec).await?;
    let added = add_filter(mon, disk, source, request, filter).await;
    if added.is_err() {
        for node in filter.slow_node.iter() {
            let _ = del(mon, node).await;
        }
        let _ = blockdev::detach_image(mon, &filter.scratch).await;
        let _ = blockdev::remove_created(&filter.scratch).await;
    }
    added
}

async fn add_filter(
    mon: &Monitor,
    disk: &DiskSpec,
    source: &SourceImage,
    request: &CbwRequest,
    filter: &CbwFilter,
) -> Result<(), QemuError> {
    let mut target = filter.scratch.format_node.clone();
    if let (Some(slow), Some(ns)) = (&filter.slow_node, request.latency_ns) {
        let args = json!({"driver": "null-co", "node-name": slow, "size": source.size,
                          "latency-ns": ns});
        mon.execute_value("blockdev-add", args).await?;
        target = slow.clone();
    }
    let args = json!({
        "driver": "copy-before-write",
        "node-name": filter.filter_node,
        "file": disk.format_node(),
        "target": target,
        "on-cbw-error": "break-snapshot",
        "cbw-timeout": filter.timeout,
    });
    mon.execute_value("blockdev-add", args).await.map(drop)
}

/// Moves the guest device onto the filter (the frozen view starts here)
/// and adds the snapshot-access node over it. On error the caller undoes
/// it all with [`teardown`].
pub async fn activate(mon: &Monitor, filter: &CbwFilter) -> Result<(), QemuError> {
    set_drive(mon, &filter.device, &filter.filter_node).await?;
    let args = json!({"driver": "snapshot-access", "node-name": filter.access_node,
                      "file": filter.filter_node});
    mon.execute_value("blockdev-add", args).await.map(drop)
}

/// Takes the arrangement of [`insert`] and [`activate`] away again, back
/// to the device on `source_node`: whatever of it is there (the job
/// reading the snapshot-access node must be gone), so that the undo of a
/// half-made one reports only what really failed. Every step is tried;
/// returns what failed.
pub async fn teardown(mon: &Monitor, filter: &CbwFilter, source_node: &str) -> Vec<QemuError> {
    let mut problems = Vec::new();
    // Without the list every node is tried, and the absent ones fail too.
    let present = present_nodes(mon).await;
    let there = |node: &str| present.as_ref().is_none_or(|p| p.iter().any(|n| n == node));
    if there(&filter.access_node) {
        problems.extend(del(mon, &filter.access_node).await.err());
    }
    match blockjob::device_node(mon, &filter.device).await {
        Ok(Some(node)) if node == filter.filter_node => {
            problems.extend(set_drive(mon, &filter.device, source_node).await.err());
        }
        Ok(_) => {}
        Err(e) => problems.push(e),
    }
    let scratch = [&filter.scratch.format_node, &filter.scratch.storage_node];
    let nodes = std::iter::once(&filter.filter_node)
        .chain(filter.slow_node.iter())
        .chain(scratch);
    for node in nodes {
        if there(node) {
            problems.extend(del(mon, node).await.err());
        }
    }
    problems.extend(blockdev::remove_created(&filter.scratch).await.err());
    problems
}

async fn present_nodes(mon: &Monitor) -> Option<Vec<String>> {
    let reply = mon
        .execute_value("query-named-block-nodes", json!({"flat": true}))
        .await
        .ok()?;
    Some(
        reply
            .as_array()?
            .iter()
            .filter_map(|n| n.get("node-name")?.as_str().map(str::to_owned))
            .collect(),
    )
}

/// The scratch file alone, once QEMU is gone.
pub async fn remove_scratch(filter: &CbwFilter) -> Result<(), QemuError> {
    blockdev::remove_created(&filter.scratch).await
}

async fn set_drive(mon: &Monitor, device: &str, node: &str) -> Result<(), QemuError> {
    let path = format!("/machine/peripheral/{device}/virtio-backend");
    let args = json!({"path": path, "property": "drive", "value": node});
    mon.execute_value("qom-set", args).await.map(drop)
}

async fn del(mon: &Monitor, node: &str) -> Result<(), QemuError> {
    mon.execute_value("blockdev-del", json!({ "node-name": node }))
        .await
        .map(drop::<Value>)
}
