//! virConnectGetAllDomainStats / virDomainListGetStats for the groups
//! virtbackupd serves, "state" and "block", with libvirt 9.0's field names
//! and rules (qemuConnectGetAllDomainStats, qemuDomainGetStatsState,
//! qemuDomainGetStatsBlock).

use std::collections::HashSet;
use std::path::PathBuf;

use crate::qemu::blockstats::{self, BlockStats};
use crate::qemu::image;
use crate::qemu::node;

use super::domain::list_flags;
use super::error::{DriverError, ErrorKind};
use super::jobs::{ParamValue, TypedParam};
use super::{DomainRef, Driver};

/// virDomainStatsTypes.
pub mod groups {
    pub const STATE: u32 = 1;
    pub const BLOCK: u32 = 1 << 5;
    /// The groups virtbackupd serves; asked for none, a client gets these.
    pub const SERVED: u32 = STATE | BLOCK;
}

/// virConnectGetAllDomainStatsFlags beyond the list filters.
const NOWAIT: u32 = 1 << 29;
const BACKING: u32 = 1 << 30;
const ENFORCE_STATS: u32 = 1 << 31;

/// The list filters qemuConnectGetAllDomainStats passes on.
const FILTERS: u32 = list_flags::ACTIVE
    | list_flags::INACTIVE
    | list_flags::PERSISTENT
    | list_flags::TRANSIENT
    | list_flags::RUNNING
    | list_flags::PAUSED
    | list_flags::SHUTOFF
    | list_flags::OTHER;

/// One disk as the block group describes it.
struct StatDisk {
    name: String,
    path: Option<String>,
    alias: String,
    format_node: String,
    node_index: u32,
    qcow2: bool,
}

impl Driver {
    /// The records of `doms` (every domain when empty; names no longer
    /// known are skipped, as libvirt does), filtered by the list flags in
    /// `flags`, with the groups of `stats`.
    pub async fn domain_stats(
        &self,
        doms: &[DomainRef],
        stats: u32,
        flags: u32,
    ) -> Result<Vec<(DomainRef, Vec<TypedParam>)>, DriverError> {
        DriverError::check_flags(
            flags,
            FILTERS | NOWAIT | BACKING | ENFORCE_STATS,
            "qemuConnectGetAllDomainStats",
        )?;
        let listed = self.list_all(flags & FILTERS)?;
        let chosen: Vec<DomainRef> = if doms.is_empty() {
            listed
        } else {
            let keep: HashSet<_> = listed.iter().map(|d| d.uuid).collect();
            doms.iter()
                .filter_map(|d| self.domain(d).ok())
                .filter(|obj| keep.contains(&obj.uuid))
                .map(|obj| obj.reference())
                .collect()
        };
        let wanted = match stats {
            0 => groups::SERVED,
            asked if flags & ENFORCE_STATS != 0 && asked & !groups::SERVED != 0 => {
                return Err(DriverError::new(
                    ErrorKind::ArgumentUnsupported,
                    format!(
                        "Stats types bits 0x{:x} are not supported by this daemon or QEMU",
                        asked & !groups::SERVED
                    ),
                ));
            }
            asked => asked & groups::SERVED,
        };
        let mut records = Vec::with_capacity(chosen.len());
        for dom in chosen {
            // A domain undefined meanwhile is left out.
            if let Ok(params) = self.one_domain_stats(&dom, wanted).await {
                records.push((dom, params));
            }
        }
        Ok(records)
    }

    async fn one_domain_stats(
        &self,
        dom: &DomainRef,
        wanted: u32,
    ) -> Result<Vec<TypedParam>, DriverError> {
        let obj = self.domain(dom)?;
        let (state, reason, disks, vm) = {
            let st = obj.lock();
            let disks: Vec<StatDisk> = st
                .current_def()
                .map(|def| {
                    def.disks()
                        .iter()
                        .map(|d| StatDisk {
                            name: d.target().to_string(),
                            path: d.source().map(str::to_string),
                            alias: d.alias(),
                            format_node: node::format(d.node_index()),
                            node_index: d.node_index(),
                            qcow2: *d.format() == crate::conf::DiskFormat::Qcow2,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let vm = st.live.as_ref().map(|l| l.vm.clone());
            (st.state, st.reason, disks, vm)
        };
        let mut params = Vec::new();
        if wanted & groups::STATE != 0 {
            params.push(TypedParam::new("state.state", ParamValue::Int(state)));
            params.push(TypedParam::new("state.reason", ParamValue::Int(reason)));
        }
        if wanted & groups::BLOCK != 0 {
            // libvirt carries on without QEMU's figures if it cannot have them.
            let stats = match &vm {
                Some(vm) => blockstats::query(vm.monitor(), true).await.ok(),
                None => None,
            };
            params.push(TypedParam::new(
                "block.count",
                ParamValue::UInt(u32::try_from(disks.len()).unwrap_or(u32::MAX)),
            ));
            for (i, disk) in disks.iter().enumerate() {
                block_params(&mut params, i, disk, vm.is_some(), stats.as_ref()).await;
            }
        }
        Ok(params)
    }
}

/// One disk's `block.<i>.*` fields.
async fn block_params(
    params: &mut Vec<TypedParam>,
    i: usize,
    disk: &StatDisk,
    running: bool,
    stats: Option<&BlockStats>,
) {
    let field = |name: &str| format!("block.{i}.{name}");
    let ullong = |params: &mut Vec<TypedParam>, name: &str, value: u64| {
        params.push(TypedParam::new(&field(name), ParamValue::ULLong(value)));
    };
    params.push(TypedParam::new(
        &field("name"),
        ParamValue::String(disk.name.clone()),
    ));
    if let Some(path) = &disk.path {
        params.push(TypedParam::new(
            &field("path"),
            ParamValue::String(path.clone()),
        ));
    }
    if !running {
        let Some(path) = &disk.path else { return };
        // An image that cannot be read has no sizes, and no error.
        let Ok(sizes) = image::offline_sizes(PathBuf::from(path), disk.qcow2).await else {
            return;
        };
        for (name, value) in [
            ("allocation", sizes.allocation),
            ("capacity", sizes.capacity),
            ("physical", sizes.physical),
        ] {
            if value != 0 {
                ullong(params, name, value);
            }
        }
        return;
    }
    params.push(TypedParam::new(
        &field("backingIndex"),
        ParamValue::UInt(disk.node_index),
    ));
    let Some(entry) = stats.and_then(|s| s.disk(&disk.alias, &disk.format_node).ok()) else {
        return;
    };
    for (name, value) in [
        ("rd.reqs", entry.rd_req),
        ("rd.bytes", entry.rd_bytes),
        ("rd.times", entry.rd_total_times.unwrap_or(0)),
        ("wr.reqs", entry.wr_req),
        ("wr.bytes", entry.wr_bytes),
        ("wr.times", entry.wr_total_times.unwrap_or(0)),
        ("fl.reqs", entry.flush_req.unwrap_or(0)),
        ("fl.times", entry.flush_total_times.unwrap_or(0)),
    ] {
        ullong(params, name, value);
    }
    // Unlike virDomainGetBlockInfo, the highest written offset is the
    // allocation here, and physical is QEMU's actual-size.
    ullong(params, "allocation", entry.wr_highest_offset.unwrap_or(0));
    if entry.capacity != 0 {
        ullong(params, "capacity", entry.capacity);
    }
    if entry.physical != 0 {
        ullong(params, "physical", entry.physical);
    } else if let Some(path) = &disk.path {
        if let Ok(physical) = image::physical_size(PathBuf::from(path)).await {
            ullong(params, "physical", physical);
        }
    }
}
