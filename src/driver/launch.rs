//! The one place where a domain definition becomes what the qemu layer
//! launches: the names and numbers libvirt gives each piece.

use std::path::{Path, PathBuf};

use crate::conf::{DiskFormat as ConfFormat, DiskType, DomainDef, VirtType};
use crate::qemu::{Accel, DiskFormat, DiskSpec, LaunchSpec, SourceKind};

use super::error::DriverError;

/// Whether the host can run `type='kvm'` domains.
pub fn kvm_available() -> bool {
    Path::new("/dev/kvm").exists()
}

/// Builds the launch description of `def`, with its QEMU files in `run_dir`.
///
/// Disk numbering follows libvirtd 9.0 (conf computes it): the K of the
/// block node names (`qemu::node`) counted down from the last disk, and
/// device ids `virtio-disk<I>` from the target name (vda 0, vdc 2). Tools
/// that address nodes or devices by these names work against both daemons.
/// Call only after `check_startable`, which refuses every disk kind that
/// has no arm here.
pub fn spec(def: &DomainDef, run_dir: &Path) -> Result<LaunchSpec, DriverError> {
    let accel = match def.virt_type() {
        VirtType::Qemu => Accel::Tcg,
        VirtType::Kvm => Accel::Kvm,
    };
    Ok(LaunchSpec {
        name: def.name().to_string(),
        uuid: def.uuid(),
        emulator: PathBuf::from(def.emulator()),
        machine: def.machine().to_string(),
        accel,
        memory_kib: def.memory_kib(),
        vcpus: def.vcpus(),
        acpi: def.acpi(),
        disks: disk_specs(def)?,
        run_dir: run_dir.to_path_buf(),
    })
}

/// The disks of `def` as the qemu layer names and opens them.
pub fn disk_specs(def: &DomainDef) -> Result<Vec<DiskSpec>, DriverError> {
    let mut disks = Vec::with_capacity(def.disks().len());
    for (position, disk) in def.disks().iter().enumerate() {
        let source = disk
            .source()
            .ok_or_else(|| DriverError::internal("disk has no source"))?;
        let source_kind = match disk.disk_type() {
            DiskType::Block => SourceKind::Block,
            _ => SourceKind::File,
        };
        let format = qemu_format(disk.format());
        let device_index = disk
            .alias()
            .strip_prefix("virtio-disk")
            .and_then(|n| n.parse().ok())
            .unwrap_or(position);
        disks.push(DiskSpec {
            target: disk.target().to_string(),
            device_index,
            node_index: disk.node_index(),
            source: PathBuf::from(source),
            source_kind,
            format,
            readonly: disk.readonly(),
            boot_index: (position == 0).then_some(1),
            // qemu::start reads the chain from the image headers and
            // numbers its layers.
            has_backing: false,
            backing: Vec::new(),
        });
    }
    Ok(disks)
}

/// The format QEMU opens a disk's image with (libvirt's QEMU driver
/// assumes raw for what it does not know).
pub fn qemu_format(format: &ConfFormat) -> DiskFormat {
    match format {
        ConfFormat::Qcow2 => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}
