//! Block jobs a client starts on a running disk: commit, pull (stream) and
//! copy (mirror), and the commands that steer them.
//!
//! # What goes over QMP, and where libvirt 9.0 does the same
//!
//! - [`chain`] reads the disk's backing chain from QEMU itself
//!   (`x-debug-query-block-graph` for the edges, `query-named-block-nodes`
//!   for each node's file and driver), since the definitions name only the
//!   top image and QEMU may have opened the lower layers from the image
//!   headers (auto-named `#blockN` nodes).
//! - [`commit`] is `block-commit` with node names (`device` the disk's top
//!   format node, `top-node`, `base-node`, `backing-file` for a layer
//!   below the top), `auto-dismiss: false` so the result can be read after
//!   the job concluded (qemuMonitorJSONBlockCommit).
//! - [`stream`] is `block-stream` (qemuMonitorJSONBlockStream), [`mirror`]
//!   `blockdev-mirror` (qemuMonitorJSONBlockdevMirror).
//! - [`complete`] is `job-complete` (the pivot), [`cancel`] is
//!   `block-job-cancel` with `force: false`, which on a ready mirror or
//!   active commit ends the job without switching over, as
//!   qemuDomainBlockJobAbort sends it.
//! - [`set_speed`] is `block-job-set-speed`, [`query`] reads
//!   `query-block-jobs` as qemuMonitorGetAllBlockJobInfo does (`offset`,
//!   `len`, `speed`, `ready`).
//! - [`drop_layers`] deletes the nodes a finished job left unused, format
//!   node first; QEMU frees the auto-named ones itself.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::QemuError;
use super::monitor::Monitor;

/// One image of a disk's backing chain, as QEMU has it open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The format node (`libvirt-K-format`, or `#blockN` when QEMU opened
    /// it from a header).
    pub node: String,
    /// The storage node under it, if it has one.
    pub storage: Option<String>,
    /// The image's file name as QEMU opened it.
    pub path: String,
    /// The format driver (`qcow2`, `raw`, ...).
    pub format: String,
    /// The storage is a host block device.
    pub block: bool,
}

/// The chain from `top` (a format node) down to the last backing image.
pub async fn chain(mon: &Monitor, top: &str) -> Result<Vec<Layer>, QemuError> {
    let graph = mon
        .execute_value("x-debug-query-block-graph", Value::Null)
        .await?;
    let named = mon
        .execute_value("query-named-block-nodes", json!({"flat": true}))
        .await?;
    parse_chain(&graph, &named, top)
}

/// [`chain`] on the two replies.
pub fn parse_chain(graph: &Value, named: &Value, top: &str) -> Result<Vec<Layer>, QemuError> {
    let bad = |what: &str| QemuError::Protocol(format!("unexpected block graph: {what}"));
    let nodes = graph
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no nodes"))?;
    let edges = graph
        .get("edges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no edges"))?;
    let mut name_of: HashMap<u64, &str> = HashMap::new();
    let mut id_of: HashMap<&str, u64> = HashMap::new();
    for node in nodes {
        if node.get("type").and_then(Value::as_str) != Some("block-driver") {
            continue;
        }
        let (Some(id), Some(name)) = (
            node.get("id").and_then(Value::as_u64),
            node.get("name").and_then(Value::as_str),
        ) else {
            continue;
        };
        name_of.insert(id, name);
        id_of.insert(name, id);
    }
    let child = |parent: u64, role: &str| {
        edges.iter().find_map(|e| {
            let p = e.get("parent").and_then(Value::as_u64)?;
            let name = e.get("name").and_then(Value::as_str)?;
            let c = e.get("child").and_then(Value::as_u64)?;
            (p == parent && name == role)
                .then(|| name_of.get(&c).copied())
                .flatten()
        })
    };
    let info: HashMap<&str, &Value> = named
        .as_array()
        .ok_or_else(|| bad("query-named-block-nodes is not a list"))?
        .iter()
        .filter_map(|n| Some((n.get("node-name")?.as_str()?, n)))
        .collect();
    let mut out = Vec::new();
    let mut current = Some(top);
    while let Some(name) = current {
        // A chain longer than the node count means a cycle.
        if out.len() > id_of.len() {
            return Err(bad("cycle"));
        }
        let id = *id_of.get(name).ok_or_else(|| bad("node missing"))?;
        let node = info.get(name).ok_or_else(|| bad("node not listed"))?;
        let storage = child(id, "file");
        let storage_info = storage.and_then(|s| info.get(s));
        let storage_drv = storage_info
            .and_then(|s| s.get("drv"))
            .and_then(Value::as_str);
        // The storage node's file name: a format node whose header names
        // its backing file otherwise than the node below is opened (a
        // relative name) reports a `json:` name of its own.
        let path = storage_info
            .and_then(|s| s.get("file"))
            .or_else(|| node.get("file"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push(Layer {
            node: name.to_owned(),
            storage: storage.map(str::to_owned),
            path: path.to_owned(),
            format: node
                .get("drv")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            block: storage_drv == Some("host_device"),
        });
        current = child(id, "backing");
    }
    Ok(out)
}

fn with_speed(mut args: Value, speed: u64) -> Value {
    if speed > 0 {
        args["speed"] = json!(speed);
    }
    args
}

/// Starts `block-commit` of `top` (down to, not including, `base`) on the
/// disk whose top format node is `device`.
pub async fn commit(
    mon: &Monitor,
    device: &str,
    id: &str,
    top: &str,
    base: &str,
    backing_file: Option<&str>,
    speed: u64,
) -> Result<(), QemuError> {
    let mut args = json!({
        "device": device,
        "job-id": id,
        "top-node": top,
        "base-node": base,
        "auto-finalize": true,
        "auto-dismiss": false,
    });
    if let Some(file) = backing_file {
        args["backing-file"] = json!(file);
    }
    mon.execute_value("block-commit", with_speed(args, speed))
        .await
        .map(drop)
}

/// Starts `block-stream` into `device` of every layer above `base` (all
/// of them without one).
pub async fn stream(
    mon: &Monitor,
    device: &str,
    id: &str,
    base: Option<(&str, &str)>,
    speed: u64,
) -> Result<(), QemuError> {
    let mut args = json!({
        "device": device,
        "job-id": id,
        "auto-finalize": true,
        "auto-dismiss": false,
    });
    if let Some((node, file)) = base {
        args["base-node"] = json!(node);
        args["backing-file"] = json!(file);
    }
    mon.execute_value("block-stream", with_speed(args, speed))
        .await
        .map(drop)
}

/// Starts `blockdev-mirror` of `device` into the attached node `target`;
/// `shallow` copies only the top image; `sync_writes` makes guest writes
/// wait for the copy (`copy-mode: write-blocking`).
#[allow(clippy::too_many_arguments)]
pub async fn mirror(
    mon: &Monitor,
    device: &str,
    id: &str,
    target: &str,
    shallow: bool,
    speed: u64,
    granularity: Option<u32>,
    buf_size: Option<u64>,
    sync_writes: bool,
) -> Result<(), QemuError> {
    let mut args = json!({
        "job-id": id,
        "device": device,
        "target": target,
        "sync": if shallow { "top" } else { "full" },
        "auto-finalize": true,
        "auto-dismiss": false,
    });
    if let Some(g) = granularity {
        args["granularity"] = json!(g);
    }
    if let Some(b) = buf_size {
        args["buf-size"] = json!(b);
    }
    if sync_writes {
        args["copy-mode"] = json!("write-blocking");
    }
    mon.execute_value("blockdev-mirror", with_speed(args, speed))
        .await
        .map(drop)
}

/// `job-complete`: a ready mirror or active commit switches the disk over.
pub async fn complete(mon: &Monitor, id: &str) -> Result<(), QemuError> {
    mon.execute_value("job-complete", json!({ "id": id }))
        .await
        .map(drop)
}

/// `block-job-cancel` without force.
pub async fn cancel(mon: &Monitor, id: &str) -> Result<(), QemuError> {
    mon.execute_value("block-job-cancel", json!({"device": id, "force": false}))
        .await
        .map(drop)
}

/// `block-job-set-speed`, in bytes per second.
pub async fn set_speed(mon: &Monitor, id: &str, speed: u64) -> Result<(), QemuError> {
    mon.execute_value("block-job-set-speed", json!({"device": id, "speed": speed}))
        .await
        .map(drop)
}

/// One entry of `query-block-jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockJobInfo {
    pub cur: u64,
    pub end: u64,
    /// Bytes per second; 0 for unlimited.
    pub speed: u64,
    /// QEMU lists `ready` for every job (false for those without a ready
    /// phase); `None` only if it left it out.
    pub ready: Option<bool>,
}

/// `query-block-jobs`, keyed by job id.
pub async fn query(mon: &Monitor) -> Result<HashMap<String, BlockJobInfo>, QemuError> {
    let reply = mon.execute_value("query-block-jobs", Value::Null).await?;
    Ok(parse_query(&reply))
}

/// Reads a `query-block-jobs` reply.
pub fn parse_query(reply: &Value) -> HashMap<String, BlockJobInfo> {
    let jobs = reply.as_array().map(Vec::as_slice).unwrap_or_default();
    jobs.iter()
        .filter_map(|j| {
            let number = |key| j.get(key).and_then(Value::as_u64).unwrap_or(0);
            let id = j.get("device")?.as_str()?.to_owned();
            let ready = j.get("ready").and_then(Value::as_bool);
            Some((
                id,
                BlockJobInfo {
                    cur: number("offset"),
                    end: number("len"),
                    speed: number("speed"),
                    ready,
                },
            ))
        })
        .collect()
}

/// Deletes the nodes of layers no image uses any more. Auto-named nodes
/// went with their last user; errors are returned, not fatal.
pub async fn drop_layers(mon: &Monitor, layers: &[Layer]) -> Vec<QemuError> {
    let mut errors = Vec::new();
    for layer in layers {
        for node in std::iter::once(&layer.node).chain(layer.storage.as_ref()) {
            if node.starts_with('#') {
                continue;
            }
            if let Err(e) = mon
                .execute_value("blockdev-del", json!({ "node-name": node }))
                .await
            {
                errors.push(e);
            }
        }
    }
    errors
}

/// The node the disk's guest device reads now (`query-block`'s
/// `inserted.node-name` for the device `qdev`), to learn where a job
/// left it when its end was not seen.
pub async fn device_node(mon: &Monitor, qdev: &str) -> Result<Option<String>, QemuError> {
    let reply = mon.execute_value("query-block", Value::Null).await?;
    let devices = reply.as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(devices.iter().find_map(|d| {
        let matches = d.get("qdev").and_then(Value::as_str).is_some_and(|q| {
            q == qdev || q.ends_with(&format!("/{qdev}/virtio-backend")) || q.ends_with(qdev)
        });
        if !matches {
            return None;
        }
        d.get("inserted")?
            .get("node-name")?
            .as_str()
            .map(str::to_owned)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_chain_by_the_graph_edges() {
        let graph = json!({
            "nodes": [
                {"id": 1, "type": "block-backend", "name": "virtio-disk0"},
                {"id": 2, "type": "block-driver", "name": "libvirt-2-format"},
                {"id": 3, "type": "block-driver", "name": "libvirt-2-storage"},
                {"id": 4, "type": "block-driver", "name": "libvirt-1-format"},
                {"id": 5, "type": "block-driver", "name": "libvirt-1-storage"},
                {"id": 6, "type": "block-driver", "name": "#block123"},
                {"id": 7, "type": "block-driver", "name": "#block456"},
            ],
            "edges": [
                {"parent": 1, "child": 2, "name": "root"},
                {"parent": 2, "child": 3, "name": "file"},
                {"parent": 2, "child": 4, "name": "backing"},
                {"parent": 4, "child": 5, "name": "file"},
                {"parent": 4, "child": 6, "name": "backing"},
                {"parent": 6, "child": 7, "name": "file"},
            ]
        });
        let named = json!([
            // A header naming its backing file relatively.
            {"node-name": "libvirt-2-format", "drv": "qcow2", "file": "json:{\"driver\": \"qcow2\"}"},
            {"node-name": "libvirt-2-storage", "drv": "file", "file": "/i/d.snap"},
            {"node-name": "libvirt-1-format", "drv": "qcow2", "file": "/dev/x"},
            {"node-name": "libvirt-1-storage", "drv": "host_device", "file": "/dev/x"},
            {"node-name": "#block123", "drv": "raw", "file": "/i/base.raw"},
            {"node-name": "#block456", "drv": "file", "file": "/i/base.raw"},
        ]);
        let chain = parse_chain(&graph, &named, "libvirt-2-format").unwrap();
        let names: Vec<_> = chain.iter().map(|l| l.node.as_str()).collect();
        assert_eq!(names, ["libvirt-2-format", "libvirt-1-format", "#block123"]);
        assert_eq!(chain[0].path, "/i/d.snap");
        assert_eq!(chain[1].path, "/dev/x");
        assert!(chain[1].block);
        assert_eq!(chain[2].format, "raw");
        assert_eq!(chain[2].storage.as_deref(), Some("#block456"));
    }

    #[test]
    fn reads_progress_speed_and_readiness() {
        let reply = json!([
            {"device": "commit-vda", "type": "commit", "len": 10, "offset": 10, "speed": 0, "ready": true},
            {"device": "pull-vda", "type": "stream", "len": 10, "offset": 3, "speed": 1048576, "ready": false},
        ]);
        let jobs = parse_query(&reply);
        assert_eq!(jobs["commit-vda"].ready, Some(true));
        assert_eq!(jobs["pull-vda"].ready, Some(false));
        assert_eq!(jobs["pull-vda"].speed, 1 << 20);
    }
}
