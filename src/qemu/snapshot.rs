//! Snapshots as QEMU 7.2 and its tools make them, the way libvirt 9.0
//! drives them (fixtures/reference/snapshot/README.md):
//!
//! - internal, running: `stop`, QEMU's `snapshot-save` job over the
//!   covered disks' format nodes (the VM state in the first), `cont`;
//!   revert is `snapshot-load`, delete `snapshot-delete`. libvirt 9.0 uses
//!   the HMP commands `savevm` / `delvm` (and a new QEMU with `-loadvm`),
//!   which hold QEMU's main loop for the whole save; the jobs leave the
//!   monitor answering, and the images end up the same;
//! - internal, shut off: `qemu-img snapshot -c / -a / -d` per image;
//! - external disk-only, running: per disk a qcow2 overlay created by
//!   `blockdev-create` whose header names the current image as backing
//!   file, attached without a backing node, then one `transaction` of
//!   `blockdev-snapshot`s, so that every disk moves to its overlay at the
//!   same instant or none does;
//! - external disk-only, shut off: `qemu-img create -b` per disk;
//! - external memory: the migration stream written to a file
//!   ([`save_memory`]), before the disks move to their overlays;
//! - deleting an external snapshot: `overlay_commit.rs`.
//!
//! Jobs and the migration are followed by QEMU's events
//! (JOB_STATUS_CHANGE through [`JobWatch`], MIGRATION), not by polling.

use std::path::{Path, PathBuf};

use qapi::qmp::{MigrationCapability, MigrationCapabilityStatus, MigrationStatus};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::blockdev::{self, AttachedImage, BackingImage, ImageSpec};
use super::command::DiskFormat;
use super::error::QemuError;
use super::events::{JobStatus, QmpEvent};
use super::jobs::{self, JobOutcome, JobWatch};
use super::monitor::Monitor;
use super::node;

/// The longest internal snapshot name QEMU keeps, in bytes: its
/// `QEMUSnapshotInfo` holds the name in 256 bytes with the NUL, and both
/// `snapshot-save` and `qemu-img snapshot -c` silently cut a longer one.
pub const INTERNAL_NAME_MAX: usize = 255;

/// Where an internal snapshot lives: the format nodes of the disks it
/// covers, the first of which also takes the VM state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalNodes {
    /// Format nodes, in the domain's disk order.
    devices: Vec<String>,
}

impl InternalNodes {
    /// The disks whose images (N of their nodes) hold the snapshot, in the
    /// domain's disk order.
    pub fn new(images: impl IntoIterator<Item = u32>) -> InternalNodes {
        InternalNodes {
            devices: images.into_iter().map(node::format).collect(),
        }
    }

    fn vmstate(&self) -> Result<&str, QemuError> {
        self.devices
            .first()
            .map(String::as_str)
            .ok_or_else(|| QemuError::InvalidInput("no disk for the snapshot".into()))
    }
}

/// Runs one of QEMU's snapshot jobs (`snapshot-save`, `-load`, `-delete`)
/// to its end and dismisses it; `what` prefixes its error.
async fn snapshot_job(
    mon: &Monitor,
    command: &str,
    mut args: Value,
    what: &str,
) -> Result<(), QemuError> {
    let id = command.to_string();
    args["job-id"] = json!(id);
    let mut watch = JobWatch::new(mon, [id.clone()]);
    mon.execute_value(command, args).await?;
    let unfinished = format!("{what}: job did not complete");
    finish_job(mon, &mut watch, &id, what, &unfinished).await
}

/// The end of a job started with `auto-dismiss: false`: it is dismissed;
/// a failure is an error that `failed` prefixes, any other end but
/// success the error `unfinished`.
async fn finish_job(
    mon: &Monitor,
    watch: &mut JobWatch,
    id: &str,
    failed: &str,
    unfinished: &str,
) -> Result<(), QemuError> {
    let end = watch.next().await?;
    if let Err(e) = jobs::dismiss(mon, id).await {
        tracing::warn!(%e, id, "cannot dismiss the job");
    }
    match end.map(|e| e.outcome) {
        Some(JobOutcome::Completed) => Ok(()),
        Some(JobOutcome::Failed(error)) => Err(QemuError::JobFailed(format!("{failed}: {error}"))),
        _ => Err(QemuError::JobFailed(unfinished.to_owned())),
    }
}

/// A snapshot of the whole VM inside its qcow2 images (QEMU's
/// `snapshot-save` job), taken with the guest stopped; the guest runs
/// again afterwards if it ran before.
pub async fn save_internal(
    mon: &Monitor,
    name: &str,
    nodes: &InternalNodes,
    was_running: bool,
) -> Result<(), QemuError> {
    if was_running {
        mon.execute(qapi::qmp::stop {}).await?;
    }
    let saved = snapshot_job(
        mon,
        "snapshot-save",
        json!({ "tag": name, "vmstate": nodes.vmstate()?, "devices": nodes.devices }),
        "Failed to take snapshot",
    )
    .await;
    if was_running {
        mon.execute(qapi::qmp::cont {}).await?;
    }
    saved
}

/// Loads an internal snapshot into the running, stopped VM
/// (`snapshot-load`).
pub async fn load_internal(
    mon: &Monitor,
    name: &str,
    nodes: &InternalNodes,
) -> Result<(), QemuError> {
    snapshot_job(
        mon,
        "snapshot-load",
        json!({ "tag": name, "vmstate": nodes.vmstate()?, "devices": nodes.devices }),
        "Failed to restore snapshot",
    )
    .await
}

/// Deletes an internal snapshot from the running VM's images
/// (`snapshot-delete`).
pub async fn delete_internal(
    mon: &Monitor,
    name: &str,
    nodes: &InternalNodes,
) -> Result<(), QemuError> {
    snapshot_job(
        mon,
        "snapshot-delete",
        json!({ "tag": name, "devices": nodes.devices }),
        "Failed to delete snapshot",
    )
    .await
}

/// Writes the VM's memory and device state to `path` by migrating to a
/// process that writes the stream to the file (QEMU 7.2 has no file
/// migration; libvirt passes a descriptor instead). The guest ends up
/// stopped, as after any completed outgoing migration; a guest that was
/// running keeps running while its memory is copied (`--live`).
///
/// On failure the file is removed.
pub async fn save_memory(mon: &Monitor, path: &Path) -> Result<(), QemuError> {
    let target = path.to_str().ok_or_else(|| {
        QemuError::InvalidInput(format!("path '{}' is not valid UTF-8", path.display()))
    })?;
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        return Err(QemuError::InvalidInput(format!(
            "memory snapshot file '{target}' already exists"
        )));
    }
    let quoted = format!("'{}'", target.replace('\'', "'\\''"));
    let result = async {
        // QEMU reports the migration's progress in events only when asked
        // (libvirt asks once per QEMU, when it connects).
        mon.execute(qapi::qmp::migrate_set_capabilities {
            capabilities: vec![MigrationCapabilityStatus {
                capability: MigrationCapability::events,
                state: true,
            }],
        })
        .await?;
        let mut events = mon.events();
        mon.execute_value(
            "migrate",
            json!({ "uri": format!("exec:umask 077 && cat > {quoted}") }),
        )
        .await?;
        if migration_end(mon, &mut events).await? == MigrationStatus::completed {
            return Ok(());
        }
        let reply = mon.execute_value("query-migrate", json!({})).await?;
        let desc = reply
            .get("error-desc")
            .and_then(Value::as_str)
            .unwrap_or("migration failed");
        Err(QemuError::JobFailed(format!("snapshot job: {desc}")))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

/// Waits for the MIGRATION event that ends the migration: completed,
/// failed or cancelled. Events lost to a slow receiver are made up for by
/// asking `query-migrate` where it is.
async fn migration_end(
    mon: &Monitor,
    events: &mut tokio::sync::broadcast::Receiver<QmpEvent>,
) -> Result<MigrationStatus, QemuError> {
    use MigrationStatus as S;
    loop {
        let received = tokio::select! {
            biased;
            received = events.recv() => received,
            () = mon.closed() => return Err(QemuError::NotRunning),
        };
        let status = match received {
            Ok(event) => event.decode::<qapi::qmp::MIGRATION>().map(|m| m.status),
            Err(RecvError::Lagged(_)) => {
                let reply = mon.execute_value("query-migrate", json!({})).await?;
                reply
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
            }
            Err(RecvError::Closed) => return Err(QemuError::NotRunning),
        };
        if let Some(status @ (S::completed | S::failed | S::cancelled)) = status {
            return Ok(status);
        }
    }
}

/// `qemu-img snapshot OP NAME IMAGE` on a shut-off domain's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineOp {
    /// `-c`: create.
    Create,
    /// `-a`: apply (revert).
    Apply,
    /// `-d`: delete.
    Delete,
}

/// Runs `qemu-img snapshot` on `image`.
pub async fn offline(
    qemu_img: &Path,
    op: OfflineOp,
    name: &str,
    image: &Path,
) -> Result<(), QemuError> {
    let flag = match op {
        OfflineOp::Create => "-c",
        OfflineOp::Apply => "-a",
        OfflineOp::Delete => "-d",
    };
    run_tool(
        tokio::process::Command::new(qemu_img)
            .args(["snapshot", "-q", flag, name])
            .arg(image),
    )
    .await
}

/// Whether a shut-off domain's image holds the internal snapshot `name`
/// (`qemu-img snapshot -l`, sharing the image with anyone holding it).
pub async fn offline_has(qemu_img: &Path, name: &str, image: &Path) -> Result<bool, QemuError> {
    let out = tokio::process::Command::new(qemu_img)
        .args(["snapshot", "-l", "-U"])
        .arg(image)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| QemuError::io("cannot run qemu-img", e))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(QemuError::JobFailed(text.trim().to_string()));
    }
    // "Snapshot list:", the column heads, then "ID TAG ...".
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .any(|l| l.split_whitespace().nth(1) == Some(name)))
}

/// Ends what a daemon that died left of QEMU's jobs whose ids start with
/// `prefix` (`snapshot-`, or `create-` for overlays): each one is
/// waited for (up to `patience`) until it concludes, then dismissed.
/// Fails if one is still running after that; says whether every one it
/// dismissed had succeeded.
pub async fn settle_jobs(
    mon: &Monitor,
    prefix: &str,
    patience: std::time::Duration,
) -> Result<bool, QemuError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut succeeded = true;
    loop {
        let jobs: Vec<_> = jobs::query_jobs(mon)
            .await?
            .into_iter()
            .filter(|j| j.id.starts_with(prefix))
            .collect();
        if jobs.is_empty() {
            return Ok(succeeded);
        }
        let mut running = false;
        for job in jobs {
            if job.status == Some(JobStatus::concluded) {
                succeeded &= job.error.is_none();
                jobs::dismiss(mon, &job.id).await?;
            } else {
                running = true;
            }
        }
        if running && tokio::time::Instant::now() >= deadline {
            return Err(QemuError::JobFailed(
                "a snapshot job did not conclude".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The format nodes the VM's disks run on (`query-block`).
pub async fn active_nodes(mon: &Monitor) -> Result<Vec<String>, QemuError> {
    let reply = mon.execute_value("query-block", Value::Null).await?;
    Ok(reply
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|dev| Some(dev["inserted"]["node-name"].as_str()?.to_owned()))
        .collect())
}

/// Takes an overlay that no disk was switched to away again: its nodes
/// (those there are) and, if `created`, its file.
pub async fn drop_overlay(mon: &Monitor, node_index: u32, path: &Path, created: bool) {
    let image = AttachedImage {
        path: path.to_path_buf(),
        storage_node: node::storage(node_index),
        format_node: node::format(node_index),
        created,
    };
    let present = match mon
        .execute_value("query-named-block-nodes", Value::Null)
        .await
    {
        Ok(nodes) => nodes.to_string(),
        Err(_) => String::new(),
    };
    for node in [&image.format_node, &image.storage_node] {
        if present.contains(&format!("\"{node}\"")) {
            if let Err(problem) = mon
                .execute_value("blockdev-del", json!({ "node-name": node }))
                .await
            {
                tracing::warn!(%problem, node, "cannot detach an unused snapshot overlay");
            }
        }
    }
    if let Err(problem) = blockdev::remove_created(&image).await {
        tracing::warn!(%problem, "cannot remove an unused snapshot overlay");
    }
}

/// Creates a qcow2 overlay of a shut-off domain's image.
pub async fn offline_overlay(
    qemu_img: &Path,
    overlay: &Path,
    backing: &Path,
    backing_format: DiskFormat,
) -> Result<(), QemuError> {
    run_tool(
        tokio::process::Command::new(qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-b"])
            .arg(backing)
            .args(["-F", backing_format.as_str()])
            .arg(overlay),
    )
    .await
}

pub(super) async fn run_tool(command: &mut tokio::process::Command) -> Result<(), QemuError> {
    let out = command
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| QemuError::io("cannot run qemu-img", e))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(QemuError::JobFailed(text.trim().to_string()))
}

/// One disk of an external snapshot of a running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The guest disk (for messages).
    pub disk: String,
    /// The new image.
    pub path: PathBuf,
    /// N of its nodes `libvirt-N-storage` / `libvirt-N-format`.
    pub node_index: u32,
    /// The disk's current image and format, named in the overlay's header.
    pub backing: PathBuf,
    pub backing_format: DiskFormat,
    /// N of the disk's current top image, which the overlay goes over.
    pub top: u32,
    /// The overlay is a host block device (formatted, never removed).
    pub block: bool,
    /// The user made the overlay (REUSE_EXT): attached as it is, with no
    /// backing node until `blockdev-snapshot` links the disk under it.
    pub reuse: bool,
}

/// Creates every overlay and moves every disk onto its overlay in one
/// transaction. On failure nothing moved and the overlays made so far are
/// detached and removed.
pub async fn external(
    mon: &Monitor,
    overlays: &[Overlay],
) -> Result<Vec<AttachedImage>, QemuError> {
    let graph = super::backup::query_graph(mon).await?;
    let mut made: Vec<AttachedImage> = Vec::with_capacity(overlays.len());
    let result = async {
        for overlay in overlays {
            let mut spec = ImageSpec {
                path: overlay.path.clone(),
                format: DiskFormat::Qcow2,
                block: overlay.block,
                node_index: overlay.node_index,
                backing: Some(BackingImage {
                    path: overlay.backing.clone(),
                    format: overlay.backing_format,
                    node: None,
                }),
                size: 0,
                cluster_size: None,
                extended_l2: false,
                metadata_preallocated: false,
                unsynced: false,
                disk: overlay.disk.clone(),
            };
            if overlay.reuse {
                made.push(blockdev::attach_image(mon, &spec).await?);
                continue;
            }
            let top = node::format(overlay.top);
            let image = graph.image(&top).ok_or_else(|| {
                QemuError::Internal(format!(
                    "failed to update capacity data for block node '{top}'"
                ))
            })?;
            spec.sized_like(&image, overlay.backing_format);
            made.push(blockdev::create_image(mon, &spec).await?);
        }
        let actions: Vec<Value> = overlays
            .iter()
            .zip(&made)
            .map(|(overlay, image)| {
                json!({
                    "type": "blockdev-snapshot",
                    "data": {"node": node::format(overlay.top), "overlay": image.format_node},
                })
            })
            .collect();
        mon.execute_value("transaction", json!({ "actions": actions }))
            .await
            .map(drop)
    }
    .await;
    match result {
        Ok(()) => Ok(made),
        Err(e) => {
            for image in &made {
                for problem in blockdev::detach_image(mon, image).await {
                    tracing::warn!(%problem, "cannot detach an unused snapshot overlay");
                }
                if let Err(problem) = blockdev::remove_created(image).await {
                    tracing::warn!(%problem, "cannot remove an unused snapshot overlay");
                }
            }
            Err(e)
        }
    }
}
