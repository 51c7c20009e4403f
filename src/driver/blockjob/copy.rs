//! Block copy (virDomainBlockCopy and the rebase-copy form), as
//! qemuDomainBlockCopyCommon runs it: the destination made (or reused)
//! and attached as `libvirt-K-*`, then `blockdev-mirror`; pivot and
//! finish are the abort's (follow.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conf::xml::{self, Limits};
use crate::driver::jobs::{ParamValue, TypedParam};
use crate::qemu::backup as qbackup;
use crate::qemu::blockdev::{self, BackingImage, ImageSpec};
use crate::qemu::blockjob::{self as qjob, Layer};
use crate::qemu::jobs::JobWatch;
use crate::qemu::{node, DiskFormat};

use super::super::error::{DriverError, ErrorKind};
use super::super::{DomainRef, Driver};
use super::{check_disk_free, disk_by_name, job_name, rebase_flags, BlockJob, Kind, Mirror, State};

/// virDomainBlockCopyFlags.
pub mod copy_flags {
    pub const SHALLOW: u32 = 1 << 0;
    pub const REUSE_EXT: u32 = 1 << 1;
    pub const TRANSIENT_JOB: u32 = 1 << 2;
    pub const SYNCHRONOUS_WRITES: u32 = 1 << 3;
}

/// Where the copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dest {
    path: String,
    block: bool,
    /// The format asked for (`<driver type>`, or raw for COPY_RAW).
    format: Option<String>,
}

/// The extra knobs of virDomainBlockCopy.
#[derive(Debug, Clone, Copy, Default)]
struct Tuning {
    bandwidth: u64,
    granularity: Option<u32>,
    buf_size: Option<u64>,
}

impl Driver {
    /// virDomainBlockRebase with VIR_DOMAIN_BLOCK_REBASE_COPY.
    pub(super) async fn rebase_copy(
        &self,
        dom: &DomainRef,
        path: &str,
        dest: Option<&str>,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        use rebase_flags::*;
        let dest = Dest {
            path: dest.unwrap_or_default().to_string(),
            block: flags & COPY_DEV != 0,
            format: (flags & COPY_RAW != 0).then(|| "raw".to_string()),
        };
        let speed = super::speed_bytes(bandwidth, flags & BANDWIDTH_BYTES != 0)?;
        if flags & RELATIVE != 0 {
            return Err(DriverError::new(
                ErrorKind::ArgumentUnsupported,
                "Relative backing during copy not supported yet",
            ));
        }
        // SHALLOW and REUSE_EXT are the copy's own bits.
        let flags = flags & (SHALLOW | REUSE_EXT);
        let tuning = Tuning {
            bandwidth: speed,
            ..Tuning::default()
        };
        self.copy(dom, path, dest, tuning, flags).await
    }

    /// virDomainBlockCopy.
    pub async fn block_copy(
        &self,
        dom: &DomainRef,
        path: &str,
        destxml: &str,
        params: &[TypedParam],
        flags: u32,
    ) -> Result<(), DriverError> {
        use copy_flags::*;
        DriverError::check_flags(
            flags,
            SHALLOW | REUSE_EXT | TRANSIENT_JOB | SYNCHRONOUS_WRITES,
            "qemuDomainBlockCopy",
        )?;
        let mut tuning = Tuning::default();
        for p in params {
            let wrong = |expected: &str| {
                DriverError::invalid_arg(format!(
                    "invalid type '{}' for parameter '{}', expected '{expected}'",
                    type_name(&p.value),
                    p.field
                ))
            };
            match (p.field.as_str(), &p.value) {
                ("bandwidth", ParamValue::ULLong(v)) => tuning.bandwidth = *v,
                ("bandwidth", _) => return Err(wrong("ullong")),
                ("granularity", ParamValue::UInt(v)) => {
                    if !v.is_power_of_two() {
                        return Err(DriverError::invalid_arg("granularity must be power of 2"));
                    }
                    tuning.granularity = Some(*v);
                }
                ("granularity", _) => return Err(wrong("uint")),
                ("buf-size", ParamValue::ULLong(v)) => tuning.buf_size = Some(*v),
                ("buf-size", _) => return Err(wrong("ullong")),
                (field, _) => {
                    return Err(DriverError::new(
                        ErrorKind::ArgumentUnsupported,
                        format!("parameter '{field}' not supported"),
                    ))
                }
            }
        }
        let dest = parse_dest(destxml)?;
        self.copy(dom, path, dest, tuning, flags).await
    }

    /// qemuDomainBlockCopyCommon.
    async fn copy(
        &self,
        dom: &DomainRef,
        path: &str,
        dest: Dest,
        tuning: Tuning,
        flags: u32,
    ) -> Result<(), DriverError> {
        use copy_flags::*;
        if !dest.path.starts_with('/') {
            return Err(DriverError::invalid_arg(
                "absolute path must be used as block copy target",
            ));
        }
        if tuning.bandwidth > i64::MAX as u64 {
            return Err(DriverError::invalid_arg(format!(
                "bandwidth must be less than '{}' bytes/s ({} MiB/s)",
                i64::MAX,
                i64::MAX >> 20
            )));
        }
        crate::fault::arm("block-copy");
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        if obj.lock().live.is_none() {
            return Err(DriverError::inactive());
        }
        let (vm, disk, top_node, disk_format, persistent) = {
            let st = obj.lock();
            let live = st.live.as_ref().ok_or_else(DriverError::inactive)?;
            let disk = disk_by_name(&live.def, path)?;
            (
                live.vm.clone(),
                disk.target().to_string(),
                node::format(disk.node_index()),
                disk.format().as_str().to_string(),
                st.config.is_some(),
            )
        };
        check_disk_free(&obj, &disk)?;
        if flags & TRANSIENT_JOB == 0 && persistent {
            return Err(DriverError::operation_invalid("domain is not transient"));
        }
        let mon = vm.monitor();
        let chain = qjob::chain(mon, &top_node).await?;
        let shallow = flags & SHALLOW != 0 && chain.len() > 1;
        let mut reuse = flags & REUSE_EXT != 0;
        if shallow && !reuse && dest.format.as_deref() == Some("raw") {
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                format!("shallow copy of disk '{disk}' into a raw file is not possible"),
            ));
        }
        let existing = validate_dest(&dest, &disk, &mut reuse)?;
        let is_device = existing == Existing::Device;
        let format = match (&dest.format, flags & REUSE_EXT != 0) {
            (Some(f), _) => f.clone(),
            (None, false) => disk_format,
            (None, true) => probe_format(&dest.path).ok_or_else(|| {
                DriverError::new(
                    ErrorKind::ConfigUnsupported,
                    "reused mirror destination format must be specified",
                )
            })?,
        };
        let qformat = match format.as_str() {
            "qcow2" => DiskFormat::Qcow2,
            "raw" => DiskFormat::Raw,
            other => {
                return Err(DriverError::new(
                    ErrorKind::ConfigUnsupported,
                    format!("block copy to a '{other}' image is not supported"),
                ))
            }
        };
        // A raw image cannot hold the checkpoint bitmaps the pivot
        // carries over: refused, where libvirt would drop them.
        if qformat == DiskFormat::Raw && super::has_checkpoints(&obj) {
            return Err(super::checkpoint_exists());
        }
        let node_index = {
            let mut st = obj.lock();
            let live = st.live.as_mut().ok_or_else(DriverError::not_running)?;
            let n = live.next_node;
            live.next_node += 1;
            n
        };
        let backing = chain.get(1).filter(|_| shallow);
        let mut spec = ImageSpec {
            path: PathBuf::from(&dest.path),
            format: qformat,
            block: dest.block || is_device,
            node_index,
            backing: backing.map(|b| BackingImage {
                path: PathBuf::from(&b.path),
                format: if b.format == "raw" {
                    DiskFormat::Raw
                } else {
                    DiskFormat::Qcow2
                },
                node: Some(b.node.clone()),
            }),
            size: 0,
            cluster_size: None,
            extended_l2: false,
            metadata_preallocated: false,
            unsynced: false,
            disk: disk.clone(),
        };
        let mirror = Mirror {
            layer: Layer {
                node: spec.format_node(),
                storage: Some(spec.storage_node()),
                path: dest.path.clone(),
                format: format.clone(),
                block: spec.block,
            },
            // Known once the image is there.
            created: false,
            transient: flags & TRANSIENT_JOB != 0,
            shallow,
        };
        let job = BlockJob {
            disk: disk.clone(),
            kind: Kind::Copy,
            id: job_name("copy", &disk, &chain[0].node),
            state: State::Running,
            top: chain[0].clone(),
            removed: if shallow {
                chain[..1].to_vec()
            } else {
                chain.clone()
            },
            base: backing.cloned(),
            chain: chain.clone(),
            mirror: Some(mirror),
            delete: false,
            ready_sent: false,
            ended: Arc::default(),
        };
        let id = job.id.clone();
        // Recorded before QEMU holds anything of the copy: a daemon that
        // dies from here on leaves a record whose end removes the nodes.
        self.record_job(&obj, job).await;
        let attached = if flags & REUSE_EXT != 0 {
            blockdev::attach_image(mon, &spec).await
        } else {
            let graph = match qbackup::query_graph(mon).await {
                Ok(graph) => graph,
                Err(err) => {
                    self.forget_job(&obj, &id).await;
                    return Err(err.into());
                }
            };
            let Some(image) = graph.image(&top_node) else {
                self.forget_job(&obj, &id).await;
                return Err(DriverError::internal(format!(
                    "failed to update capacity data for block node '{top_node}'"
                )));
            };
            let top_format = if chain[0].format == "raw" {
                DiskFormat::Raw
            } else {
                DiskFormat::Qcow2
            };
            spec.sized_like(&image, top_format);
            blockdev::create_image(mon, &spec).await
        };
        let attached = match attached {
            Ok(attached) => attached,
            Err(err) => {
                self.forget_job(&obj, &id).await;
                return Err(err.into());
            }
        };
        self.set_mirror_created(&obj, &id, attached.created);
        let watch = JobWatch::new(mon, [id.clone()]);
        let started = qjob::mirror(
            mon,
            &chain[0].node,
            &id,
            &attached.format_node,
            shallow,
            tuning.bandwidth,
            tuning.granularity,
            tuning.buf_size,
            flags & SYNCHRONOUS_WRITES != 0,
        )
        .await;
        if let Err(err) = started {
            self.forget_job(&obj, &id).await;
            for problem in blockdev::detach_image(mon, &attached).await {
                tracing::warn!(%problem, "cannot detach an unused copy target");
            }
            if let Err(problem) = blockdev::remove_created(&attached).await {
                tracing::warn!(%problem, "unable to remove just-created copy target");
            }
            return Err(err.into());
        }
        self.job_started(&obj, &vm, id, watch);
        Ok(())
    }
}

fn type_name(value: &ParamValue) -> &'static str {
    match value {
        ParamValue::Int(_) => "int",
        ParamValue::UInt(_) => "uint",
        ParamValue::LLong(_) => "llong",
        ParamValue::ULLong(_) => "ullong",
        ParamValue::Boolean(_) => "boolean",
        ParamValue::String(_) => "string",
    }
}

/// virDomainDiskDefParseSource, for what a copy target needs: `<disk
/// type='file|block'>` with `<source file|dev>` and `<driver type>`.
fn parse_dest(destxml: &str) -> Result<Dest, DriverError> {
    let root = xml::parse(destxml, "(disk_definition)", &Limits::default())?;
    let block = match root.attr("type") {
        None | Some("file") => false,
        Some("block") => true,
        Some(other) => {
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                format!("block copy to a '{other}' disk is not supported"),
            ))
        }
    };
    let attr = if block { "dev" } else { "file" };
    let path = root
        .child("source")
        .and_then(|s| s.attr(attr))
        .ok_or_else(|| DriverError::new(ErrorKind::XmlError, "missing source path"))?
        .to_string();
    let format = root
        .child("driver")
        .and_then(|d| d.attr("type"))
        .map(str::to_string);
    Ok(Dest {
        path,
        block,
        format,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    No,
    File,
    Device,
}

/// qemuDomainBlockCopyValidateMirror.
fn validate_dest(dest: &Dest, disk: &str, reuse: &mut bool) -> Result<Existing, DriverError> {
    let path = Path::new(&dest.path);
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if *reuse || dest.block {
                return Err(DriverError::system(
                    format!("missing destination file for disk {disk}: {}", dest.path),
                    e,
                ));
            }
            Ok(Existing::No)
        }
        Err(e) => Err(DriverError::system(
            "unable to verify existence of block copy target",
            e,
        )),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_block_device() {
                *reuse = true;
                return Ok(Existing::Device);
            }
            if meta.len() > 0 && !*reuse {
                return Err(DriverError::new(
                    ErrorKind::ConfigUnsupported,
                    format!(
                        "external destination file for disk {disk} already exists and is not a block device: {}",
                        dest.path
                    ),
                ));
            }
            if dest.block {
                return Err(DriverError::invalid_arg(format!(
                    "blockdev flag requested for disk {disk}, but file '{}' is not a block device",
                    dest.path
                )));
            }
            Ok(Existing::File)
        }
    }
}

/// The format of a reused destination, from its first bytes (qcow2's
/// magic, else raw), as virStorageFileProbeFormat decides it for these two.
fn probe_format(path: &str) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    Some(if n == 4 && head == *b"QFI\xfb" {
        "qcow2".to_string()
    } else {
        "raw".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_destination_of_a_copy() {
        let dest =
            parse_dest("<disk type='block'><source dev='/dev/sdz'/><driver type='raw'/></disk>")
                .unwrap();
        assert_eq!(
            dest,
            Dest {
                path: "/dev/sdz".into(),
                block: true,
                format: Some("raw".into())
            }
        );
        let dest = parse_dest("<disk><source file='/x.qcow2'/></disk>").unwrap();
        assert!(!dest.block);
        assert_eq!(dest.format, None);
    }
}
