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
//!   ([`save_memory`]), before the disks move to their overlays.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::blockdev::{self, AttachedImage, BackingImage, ImageSpec};
use super::command::DiskFormat;
use super::error::QemuError;
use super::monitor::Monitor;

/// The longest internal snapshot name QEMU keeps, in bytes: its
/// `QEMUSnapshotInfo` holds the name in 256 bytes with the NUL, and both
/// `snapshot-save` and `qemu-img snapshot -c` silently cut a longer one.
pub const INTERNAL_NAME_MAX: usize = 255;

/// Where an internal snapshot lives: the format nodes of the disks it
/// covers, the first of which also takes the VM state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalNodes {
    /// Format nodes, in the domain's disk order.
    pub devices: Vec<String>,
}

impl InternalNodes {
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
    let mut watch = super::jobs::JobWatch::new(mon, [id.clone()]);
    mon.execute_value(command, args).await?;
    let end = watch.next().await?;
    if let Err(e) = super::jobs::dismiss(mon, &id).await {
        tracing::warn!(%e, id, "cannot dismiss the snapshot job");
    }
    match end.map(|e| e.outcome) {
        Some(super::jobs::JobOutcome::Completed) => Ok(()),
        Some(super::jobs::JobOutcome::Failed(error)) => {
            Err(QemuError::JobFailed(format!("{what}: {error}")))
        }
        _ => Err(QemuError::JobFailed(format!(
            "{what}: job did not complete"
        ))),
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
        mon.execute_value("stop", json!({})).await?;
    }
    let saved = snapshot_job(
        mon,
        "snapshot-save",
        json!({ "tag": name, "vmstate": nodes.vmstate()?, "devices": nodes.devices }),
        "Failed to take snapshot",
    )
    .await;
    if was_running {
        mon.execute_value("cont", json!({})).await?;
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
        mon.execute_value(
            "migrate",
            json!({ "uri": format!("exec:umask 077 && cat > {quoted}") }),
        )
        .await?;
        loop {
            let reply = mon.execute_value("query-migrate", json!({})).await?;
            match reply.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let desc = reply
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("migration failed");
                    return Err(QemuError::JobFailed(format!("snapshot job: {desc}")));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
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
            .args(["-F", format_name(backing_format)])
            .arg(overlay),
    )
    .await
}

/// Commits a shut-off domain's overlay into its backing file.
pub async fn offline_commit(qemu_img: &Path, overlay: &Path) -> Result<(), QemuError> {
    run_tool(
        tokio::process::Command::new(qemu_img)
            .args(["commit", "-q"])
            .arg(overlay),
    )
    .await
}

fn format_name(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Raw => "raw",
    }
}

async fn run_tool(command: &mut tokio::process::Command) -> Result<(), QemuError> {
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
    /// The disk's current top node, which the overlay goes over.
    pub top_node: String,
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
                disk: overlay.disk.clone(),
            };
            if overlay.reuse {
                made.push(blockdev::attach_image(mon, &spec).await?);
                continue;
            }
            let image = graph.image(&overlay.top_node).ok_or_else(|| {
                QemuError::Internal(format!(
                    "failed to update capacity data for block node '{}'",
                    overlay.top_node
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
                    "data": {"node": overlay.top_node, "overlay": image.format_node},
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

/// Merges an external snapshot's overlay (node `libvirt-<top>`) into the
/// image below it (node `libvirt-<base>`, file `backing_file`) and drops
/// the overlay's nodes; the overlay file stays. `active` is the disk's
/// active layer:
///
/// - the overlay itself: an active commit, which mirrors until told to
///   `job-complete`, and leaves the base as the active layer;
/// - a layer above it: the commit finalizes on `job-finalize` (as libvirt
///   runs it), and the layer above names `backing_file` from then on.
pub async fn commit(
    mon: &Monitor,
    disk: &str,
    active: u32,
    top: u32,
    base: u32,
    backing_file: &str,
) -> Result<(), QemuError> {
    use super::events::JobStatus;
    let intermediate = active != top;
    let top_node = format!("libvirt-{top}-format");
    let id = format!("commit-{disk}-{top_node}");
    let mut args = json!({
        "device": format!("libvirt-{active}-format"),
        "job-id": id,
        "top-node": top_node,
        "base-node": format!("libvirt-{base}-format"),
        "auto-finalize": !intermediate,
        "auto-dismiss": false,
    });
    if intermediate {
        args["backing-file"] = json!(backing_file);
    }
    let mut watch = super::jobs::JobWatch::new(mon, [id.clone()]);
    mon.execute_value("block-commit", args).await?;
    let (status, verb) = if intermediate {
        (JobStatus::pending, "job-finalize")
    } else {
        (JobStatus::ready, "job-complete")
    };
    wait_for_status(mon, &id, status).await?;
    mon.execute_value(verb, json!({ "id": id })).await?;
    finish_commit(mon, &mut watch, &id, top).await
}

/// Polls `query-jobs` until job `id` reaches `status` (or concludes, or
/// is gone: the watch reports how it ended).
async fn wait_for_status(
    mon: &Monitor,
    id: &str,
    status: super::events::JobStatus,
) -> Result<(), QemuError> {
    use super::events::JobStatus;
    loop {
        let jobs = super::jobs::query_jobs(mon).await?;
        match jobs.iter().find(|j| j.id == id).and_then(|j| j.status) {
            Some(s) if s == status => return Ok(()),
            Some(JobStatus::concluded) | None => return Ok(()),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// The end of a commit job: dismissed, its outcome checked, the
/// committed overlay's nodes removed.
async fn finish_commit(
    mon: &Monitor,
    watch: &mut super::jobs::JobWatch,
    id: &str,
    top: u32,
) -> Result<(), QemuError> {
    let end = watch.next().await?;
    if let Err(e) = super::jobs::dismiss(mon, id).await {
        tracing::warn!(%e, id, "cannot dismiss the commit job");
    }
    match end.map(|e| e.outcome) {
        Some(super::jobs::JobOutcome::Completed) => {}
        Some(super::jobs::JobOutcome::Failed(error)) => {
            return Err(QemuError::JobFailed(format!(
                "block commit failed: {error}"
            )))
        }
        _ => return Err(QemuError::JobFailed("block commit did not complete".into())),
    }
    for node in [
        format!("libvirt-{top}-format"),
        format!("libvirt-{top}-storage"),
    ] {
        mon.execute_value("blockdev-del", json!({ "node-name": node }))
            .await?;
    }
    Ok(())
}
