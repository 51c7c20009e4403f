//! A disk's sizes and I/O counters: virDomainGetBlockInfo,
//! virDomainBlockStats and virDomainBlockStatsFlags, with libvirt 9.0's
//! checks in its order (qemuDomainGetBlockInfo, qemuDomainBlockStats*).

use std::path::PathBuf;
use std::sync::Arc;

use crate::conf::{DiskDef, DiskFormat, DiskType};
use crate::qemu::blockstats::{self, DiskStats};
use crate::qemu::image::{self, ImageSizes};
use crate::qemu::{node, RunningVm};

use super::error::DriverError;
use super::jobs::{ParamValue, TypedParam};
use super::{DomainRef, Driver};

/// virTypedParameterFlags: the only flag virDomainBlockStatsFlags takes.
const TYPED_PARAM_STRING_OKAY: u32 = 4;

/// virDomainBlockStats' answer; `errs` is -1, QEMU does not count errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatsBasic {
    pub rd_req: i64,
    pub rd_bytes: i64,
    pub wr_req: i64,
    pub wr_bytes: i64,
    pub errs: i64,
}

/// What a disk's figures are read from.
struct DiskTarget {
    alias: String,
    format_node: String,
    source: PathBuf,
    qcow2_file: bool,
}

impl DiskTarget {
    fn of(disk: &DiskDef) -> DiskTarget {
        DiskTarget {
            alias: disk.alias(),
            format_node: node::format(disk.node_index()),
            source: PathBuf::from(disk.source().unwrap_or("")),
            qcow2_file: disk.disk_type() == DiskType::File && *disk.format() == DiskFormat::Qcow2,
        }
    }
}

impl Driver {
    /// virDomainGetBlockInfo: libvirt's qemuDomainGetBlockInfo. A shut-off
    /// domain's images are read from the host; a running domain's figures
    /// come from QEMU, completed from the host where QEMU's are zero.
    pub async fn get_block_info(
        &self,
        dom: &DomainRef,
        path: &str,
        flags: u32,
    ) -> Result<ImageSizes, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainGetBlockInfo")?;
        let obj = self.domain(dom)?;
        let (disk, vm) = {
            let st = obj.lock();
            let def = st
                .current_def()
                .ok_or_else(|| DriverError::internal("domain has no definition"))?;
            let disk = def
                .disk_index_by_name(path)
                .map(|i| &def.disks()[i])
                .ok_or_else(|| {
                    DriverError::invalid_arg(format!("invalid path {path} not assigned to domain"))
                })?;
            if disk.is_empty() {
                return Err(DriverError::invalid_arg(format!(
                    "disk '{path}' does not currently have a source assigned"
                )));
            }
            let format = disk.format().clone();
            let qcow2 = format == DiskFormat::Qcow2;
            (
                (DiskTarget::of(disk), qcow2),
                st.live.as_ref().map(|l| l.vm.clone()),
            )
        };
        let (target, qcow2) = disk;
        let Some(vm) = vm else {
            return Ok(image::offline_sizes(target.source, qcow2).await?);
        };
        let stats = blockstats::query(vm.monitor(), true).await?;
        let entry = stats.disk(&target.alias, &target.format_node)?;
        let mut allocation = match entry.wr_highest_offset {
            Some(_) if target.qcow2_file => entry.physical,
            Some(offset) => offset,
            None => entry.physical,
        };
        // libvirt's reading of QEMU's zeros: a sparse file or a device, or
        // nothing written yet; the size on the host stands in.
        let physical = if entry.physical == 0 || allocation == 0 || allocation == entry.physical {
            if allocation == 0 {
                allocation = entry.physical;
            }
            image::physical_size(target.source)
                .await
                .unwrap_or(entry.physical)
        } else {
            entry.physical
        };
        Ok(ImageSizes {
            capacity: entry.capacity,
            allocation,
            physical,
        })
    }

    /// virDomainBlockStats: libvirt's qemuDomainBlockStats.
    pub async fn block_stats(
        &self,
        dom: &DomainRef,
        path: &str,
    ) -> Result<BlockStatsBasic, DriverError> {
        let (_, stats) = self.gather_stats(dom, path).await?;
        let signed = |v: u64| {
            i64::try_from(v).map_err(|_| {
                DriverError::new(super::ErrorKind::Overflow, "statistic value too large")
            })
        };
        Ok(BlockStatsBasic {
            rd_req: signed(stats.rd_req)?,
            rd_bytes: signed(stats.rd_bytes)?,
            wr_req: signed(stats.wr_req)?,
            wr_bytes: signed(stats.wr_bytes)?,
            errs: -1,
        })
    }

    /// virDomainBlockStatsFlags: libvirt's qemuDomainBlockStatsFlags. With
    /// `nparams` 0 only the number of counters is answered.
    pub async fn block_stats_flags(
        &self,
        dom: &DomainRef,
        path: &str,
        nparams: usize,
        flags: u32,
    ) -> Result<(usize, Vec<TypedParam>), DriverError> {
        DriverError::check_flags(flags, TYPED_PARAM_STRING_OKAY, "qemuDomainBlockStatsFlags")?;
        let (count, stats) = self.gather_stats(dom, path).await?;
        if nparams == 0 {
            return Ok((count, Vec::new()));
        }
        let fields = [
            ("wr_bytes", stats.wr_bytes),
            ("wr_operations", stats.wr_req),
            ("rd_bytes", stats.rd_bytes),
            ("rd_operations", stats.rd_req),
            ("flush_operations", stats.flush_req.unwrap_or(0)),
            ("wr_total_times", stats.wr_total_times.unwrap_or(0)),
            ("rd_total_times", stats.rd_total_times.unwrap_or(0)),
            ("flush_total_times", stats.flush_total_times.unwrap_or(0)),
        ];
        let mut params = Vec::with_capacity(fields.len().min(nparams));
        for (name, value) in fields.into_iter().take(nparams) {
            let value = i64::try_from(value).map_err(|_| {
                DriverError::new(
                    super::ErrorKind::Overflow,
                    format!("value of '{name}' is too large"),
                )
            })?;
            params.push(TypedParam::new(name, ParamValue::LLong(value)));
        }
        Ok((params.len(), params))
    }

    /// qemuDomainBlocksStatsGather: one disk's counters, or the sum over
    /// every disk for an empty path; with the number of counters QEMU
    /// reports.
    async fn gather_stats(
        &self,
        dom: &DomainRef,
        path: &str,
    ) -> Result<(usize, DiskStats), DriverError> {
        let obj = self.domain(dom)?;
        let (targets, vm): (Vec<DiskTarget>, Arc<RunningVm>) = {
            let st = obj.lock();
            let live = st.live.as_ref().ok_or_else(DriverError::inactive)?;
            let disks = live.def.disks();
            let targets = if path.is_empty() {
                disks.iter().map(DiskTarget::of).collect()
            } else {
                let i = live
                    .def
                    .disk_index_by_name(path)
                    .ok_or_else(|| DriverError::invalid_arg(format!("invalid path: {path}")))?;
                vec![DiskTarget::of(&disks[i])]
            };
            (targets, live.vm.clone())
        };
        let stats = blockstats::query(vm.monitor(), false).await?;
        let mut total = DiskStats::default();
        for target in &targets {
            let one = stats.disk(&target.alias, &target.format_node)?;
            if !path.is_empty() {
                return Ok((stats.count(), one));
            }
            add(&mut total, &one);
        }
        Ok((stats.count(), total))
    }
}

/// qemuDomainBlockStatsGatherTotals.
fn add(total: &mut DiskStats, one: &DiskStats) {
    let opt = |a: Option<u64>, b: Option<u64>| Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0)));
    total.rd_req = total.rd_req.saturating_add(one.rd_req);
    total.rd_bytes = total.rd_bytes.saturating_add(one.rd_bytes);
    total.wr_req = total.wr_req.saturating_add(one.wr_req);
    total.wr_bytes = total.wr_bytes.saturating_add(one.wr_bytes);
    total.rd_total_times = opt(total.rd_total_times, one.rd_total_times);
    total.wr_total_times = opt(total.wr_total_times, one.wr_total_times);
    total.flush_req = opt(total.flush_req, one.flush_req);
    total.flush_total_times = opt(total.flush_total_times, one.flush_total_times);
}
