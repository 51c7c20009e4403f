//! A running disk's I/O counters and sizes, gathered as libvirt's
//! qemuDomainBlocksStatsGather gathers them: the counters of the guest
//! device from `query-blockstats`, the sizes of the disk's format node from
//! `query-named-block-nodes`.

use serde_json::{json, Value};

use super::{Monitor, QemuError};

/// One disk's figures; counters QEMU did not report are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub rd_req: u64,
    pub rd_bytes: u64,
    pub wr_req: u64,
    pub wr_bytes: u64,
    pub rd_total_times: Option<u64>,
    pub wr_total_times: Option<u64>,
    pub flush_req: Option<u64>,
    pub flush_total_times: Option<u64>,
    /// The format node's virtual size.
    pub capacity: u64,
    /// The format node's `actual-size` (blocks in use on the host; the
    /// capacity when QEMU gives none).
    pub physical: u64,
    /// The highest offset written to the storage below the format node,
    /// when QEMU counts it.
    pub wr_highest_offset: Option<u64>,
}

/// Everything one gathering read.
#[derive(Debug, Clone)]
pub struct BlockStats {
    devices: Value,
    nodes: Value,
}

/// Reads the counters and the block graph, once for any number of disks.
pub async fn query(mon: &Monitor, sizes: bool) -> Result<BlockStats, QemuError> {
    let devices = mon
        .execute_value("query-blockstats", json!({"query-nodes": false}))
        .await?;
    let nodes = if sizes {
        mon.execute_value("query-named-block-nodes", json!({"flat": true}))
            .await?
    } else {
        Value::Null
    };
    Ok(BlockStats { devices, nodes })
}

impl BlockStats {
    /// The number of counters QEMU reports per device, which
    /// virDomainBlockStatsFlags answers when asked how many there are.
    pub fn count(&self) -> usize {
        self.devices
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|dev| dev.get("stats"))
            .map(|stats| COUNTERS.iter().filter(|c| stats.get(**c).is_some()).count())
            .max()
            .unwrap_or(0)
    }

    /// The figures of the disk whose guest device is `/machine/peripheral/
    /// <alias>/virtio-backend` and whose format node is `format_node`;
    /// libvirt's "cannot find statistics for device" when QEMU lists no
    /// such device.
    pub fn disk(&self, alias: &str, format_node: &str) -> Result<DiskStats, QemuError> {
        let qdev = format!("/machine/peripheral/{alias}/virtio-backend");
        let dev = self
            .devices
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d.get("qdev").and_then(Value::as_str) == Some(&qdev))
            .ok_or_else(|| {
                QemuError::Internal(format!("cannot find statistics for device '{qdev}'"))
            })?;
        let stats = dev.get("stats").unwrap_or(&Value::Null);
        let num = |name: &str| stats.get(name).and_then(Value::as_u64);
        let mut out = DiskStats {
            rd_req: num("rd_operations").unwrap_or(0),
            rd_bytes: num("rd_bytes").unwrap_or(0),
            wr_req: num("wr_operations").unwrap_or(0),
            wr_bytes: num("wr_bytes").unwrap_or(0),
            rd_total_times: num("rd_total_time_ns"),
            wr_total_times: num("wr_total_time_ns"),
            flush_req: num("flush_operations"),
            flush_total_times: num("flush_total_time_ns"),
            ..DiskStats::default()
        };
        // The device's root is the format node; the highest offset is
        // counted on the storage below it, which QEMU shows as "parent".
        if dev.get("node-name").and_then(Value::as_str) == Some(format_node) {
            out.wr_highest_offset = dev
                .pointer("/parent/stats/wr_highest_offset")
                .and_then(Value::as_u64);
        }
        let image = self
            .nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n.get("node-name").and_then(Value::as_str) == Some(format_node))
            .and_then(|n| n.get("image"));
        if let Some(size) = image
            .and_then(|i| i.get("virtual-size"))
            .and_then(Value::as_u64)
        {
            out.capacity = size;
            out.physical = image
                .and_then(|i| i.get("actual-size"))
                .and_then(Value::as_u64)
                .unwrap_or(size);
        }
        Ok(out)
    }
}

/// The counters libvirt reads from each `stats` object.
const COUNTERS: [&str; 8] = [
    "rd_bytes",
    "wr_bytes",
    "rd_operations",
    "wr_operations",
    "rd_total_time_ns",
    "wr_total_time_ns",
    "flush_operations",
    "flush_total_time_ns",
];
