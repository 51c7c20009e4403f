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
    /// `query-blockstats` per node, for a format node that is not a
    /// device's root (a backup's filter sits above it).
    node_stats: Value,
    nodes: Value,
}

/// Reads the counters and the block graph, once for any number of disks.
pub async fn query(mon: &Monitor, sizes: bool) -> Result<BlockStats, QemuError> {
    let devices = mon
        .execute_value("query-blockstats", json!({"query-nodes": false}))
        .await?;
    let (node_stats, nodes) = if sizes {
        let node_stats = mon
            .execute_value("query-blockstats", json!({"query-nodes": true}))
            .await?;
        let nodes = mon
            .execute_value("query-named-block-nodes", json!({"flat": true}))
            .await?;
        (node_stats, nodes)
    } else {
        (Value::Null, Value::Null)
    };
    Ok(BlockStats {
        devices,
        node_stats,
        nodes,
    })
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
        let format_entry = if dev.get("node-name").and_then(Value::as_str) == Some(format_node) {
            Some(dev)
        } else {
            node_named(&self.node_stats, format_node)
        };
        out.wr_highest_offset = format_entry
            .and_then(|e| e.pointer("/parent/stats/wr_highest_offset"))
            .and_then(Value::as_u64);
        let image = node_named(&self.nodes, format_node).and_then(|n| n.get("image"));
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

/// The entry of a list QEMU gave whose `node-name` is `node`.
fn node_named<'a>(list: &'a Value, node: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|n| n.get("node-name").and_then(Value::as_str) == Some(node))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(devices: Value, node_stats: Value, nodes: Value) -> BlockStats {
        BlockStats {
            devices,
            node_stats,
            nodes,
        }
    }

    const QDEV: &str = "/machine/peripheral/virtio-disk0/virtio-backend";

    #[test]
    fn the_device_gives_counters_and_the_format_node_sizes() {
        let s = stats(
            json!([{"qdev": QDEV, "node-name": "libvirt-1-format",
                    "stats": {"rd_bytes": 512, "wr_bytes": 0, "rd_operations": 1, "wr_operations": 0,
                              "rd_total_time_ns": 7, "flush_operations": 0},
                    "parent": {"stats": {"wr_highest_offset": 4096}}}]),
            Value::Null,
            json!([{"node-name": "libvirt-1-format", "image": {"virtual-size": 65536}}]),
        );
        let d = s.disk("virtio-disk0", "libvirt-1-format").unwrap();
        assert_eq!((d.rd_req, d.rd_bytes, d.rd_total_times), (1, 512, Some(7)));
        assert_eq!((d.wr_total_times, d.flush_req), (None, Some(0)));
        assert_eq!(d.wr_highest_offset, Some(4096));
        // No actual-size: not thin, physical is the capacity.
        assert_eq!((d.capacity, d.physical), (65536, 65536));
        assert_eq!(s.count(), 6);
    }

    #[test]
    fn a_filter_above_the_format_node_leaves_the_offset_to_the_node_list() {
        let s = stats(
            json!([{"qdev": QDEV, "node-name": "backup-top", "stats": {}}]),
            json!([{"node-name": "libvirt-1-format", "stats": {},
                    "parent": {"stats": {"wr_highest_offset": 8192}}}]),
            json!([{"node-name": "libvirt-1-format",
                    "image": {"virtual-size": 65536, "actual-size": 0}}]),
        );
        let d = s.disk("virtio-disk0", "libvirt-1-format").unwrap();
        assert_eq!(d.wr_highest_offset, Some(8192));
        assert_eq!((d.capacity, d.physical), (65536, 0));
    }

    #[test]
    fn an_unknown_device_is_libvirts_internal_error() {
        let s = stats(json!([]), Value::Null, Value::Null);
        let err = s.disk("virtio-disk1", "libvirt-1-format").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot find statistics for device '/machine/peripheral/virtio-disk1/virtio-backend'"
        );
    }
}
