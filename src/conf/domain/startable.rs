//! What this daemon can run. A definition that parses (libvirt accepts it)
//! may still ask for something we do not give QEMU; starting it must then
//! fail with libvirt's VIR_ERR_CONFIG_UNSUPPORTED rather than run a
//! different machine than the one described.
//!
//! We start QEMU with: memory, vcpus, the machine, and virtio-blk disks
//! (file or block, qcow2 or raw, optionally read-only). Nothing else.
//!
//! # Refused (the guest would miss something it was promised)
//!
//! - an architecture other than x86_64, a machine other than
//!   `pc-i440fx-*` / `pc-q35-*`;
//! - firmware and direct kernel boot: `<os firmware=...>`, `<loader>`,
//!   `<nvram>`, `<kernel>`, `<initrd>`, `<cmdline>`, `<dtb>`, `<init...>`;
//!   and `<bootloader>`;
//! - `<maxMemory>` (memory hotplug), `<launchSecurity>`, and any element in
//!   a namespace such as `<qemu:commandline>`;
//! - disks that are not `device='disk'`, not `bus='virtio'`, not
//!   `type='file'`/`'block'`, not qcow2/raw, that use `<transient/>`,
//!   `<encryption>` or `<auth>`, or whose device ids would collide (vda
//!   and sda on virtio are both `virtio-disk0`; libvirt lets QEMU fail);
//! - devices: `<interface>`, `<hostdev>`, `<graphics>`, `<filesystem>`,
//!   `<smartcard>`, `<parallel>`, `<tpm>`, `<sound>`, `<redirdev>`,
//!   `<redirfilter>`, `<hub>`, `<watchdog>`, `<nvram>`, `<shmem>`,
//!   `<memory>`, `<iommu>`, `<vsock>`, `<crypto>`, `<lease>`.
//!
//! # Ignored silently (kept in the XML, no effect on QEMU)
//!
//! - host-side tuning and placement: `<cputune>`, `<numatune>`,
//!   `<blkiotune>`, `<memtune>`, `<memoryBacking>`, `<iothreads>`,
//!   `<resource>`, `<vcpu placement|cpuset>`, `<vcpus>`, `<perf>`,
//!   `<seclabel>`, `<keywrap>`, `<idmap>`;
//! - guest details QEMU's defaults cover well enough for a machine that is
//!   backed up: `<cpu>` (QEMU's default model), `<clock>`, `<features>`,
//!   `<pm>`, `<on_*>`, `<sysinfo>`, `<genid>`, `<metadata>`, `<boot>`,
//!   `<bootmenu>`, `<bios>`, `<smbios>`, `<os><acpi>`;
//! - devices libvirt adds implicitly or that carry no data:
//!   `<controller>`, `<input>`, `<memballoon>`, `<audio>`, `<video>`,
//!   `<serial>`, `<console>`, `<channel>`, `<rng>`, `<panic>`;
//! - on disks: `<address>`, `<boot>`, `<serial>`, `<iotune>`, `<blockio>`,
//!   `<geometry>`, `<shareable/>`, driver tuning (`cache=`, `io=`, ...);
//! - elements libvirt does not know at all (libvirt drops them).

use std::collections::HashMap;

use super::disk::{DiskBus, DiskDevice, DiskFormat, DiskType};
use super::values::is_pc_machine;
use super::{DomainDef, VirtType};
use crate::conf::error::ConfError;

const REFUSED_TOP: &[&str] = &[
    "bootloader",
    "bootloader_args",
    "maxMemory",
    "launchSecurity",
];

const REFUSED_OS: &[&str] = &[
    "loader",
    "nvram",
    "kernel",
    "initrd",
    "cmdline",
    "dtb",
    "init",
    "initarg",
    "initenv",
    "initdir",
    "inituser",
    "initgroup",
];

const REFUSED_DEVICES: &[&str] = &[
    "interface",
    "hostdev",
    "graphics",
    "filesystem",
    "smartcard",
    "parallel",
    "tpm",
    "sound",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "nvram",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
    "lease",
];

const REFUSED_DISK_CHILDREN: &[&str] = &["transient", "encryption", "auth"];

impl DomainDef {
    /// Whether this daemon can start the domain as defined; the error is
    /// VIR_ERR_CONFIG_UNSUPPORTED ("unsupported configuration: ...") naming
    /// the first thing it cannot run. The list of what is refused and what
    /// is ignored is in this module's documentation.
    pub fn check_startable(&self) -> Result<(), ConfError> {
        let refuse = |what: String| Err(ConfError::qemu_unsupported(what));
        if self.arch != "x86_64" {
            return refuse(format!("architecture '{}' is not supported", self.arch));
        }
        if !is_pc_machine(&self.machine) {
            return refuse(format!("machine type '{}' is not supported", self.machine));
        }
        if let Some((_, fw)) = self.extra.os.iter().find(|(k, _)| k == "firmware") {
            return refuse(format!("os firmware '{fw}' is not supported"));
        }
        if let Some((_, e)) = self
            .os_others
            .iter()
            .find(|(_, e)| REFUSED_OS.contains(&e.name.as_str()))
        {
            return refuse(format!("<{}> in <os> is not supported", e.name));
        }
        if let Some((_, e)) = self
            .others
            .iter()
            .find(|(_, e)| REFUSED_TOP.contains(&e.name.as_str()) || e.name.contains(':'))
        {
            return refuse(format!("element <{}> is not supported", e.name));
        }
        self.check_disks_startable()?;
        if let Some((_, e)) = self
            .device_others
            .iter()
            .find(|(_, e)| REFUSED_DEVICES.contains(&e.name.as_str()) || e.name.contains(':'))
        {
            return refuse(format!("<{}> devices are not supported", e.name));
        }
        Ok(())
    }

    fn check_disks_startable(&self) -> Result<(), ConfError> {
        let mut aliases: HashMap<String, &str> = HashMap::new();
        for disk in &self.disks {
            let target = disk.target();
            let refuse = |what: String| Err(ConfError::qemu_unsupported(what));
            if disk.device() != DiskDevice::Disk {
                return refuse(format!(
                    "disk device '{}' is not supported for disk '{target}'",
                    disk.device().as_str()
                ));
            }
            if disk.bus() != DiskBus::Virtio {
                return refuse(format!(
                    "disk bus '{}' is not supported for disk '{target}'",
                    disk.bus().as_str()
                ));
            }
            if !matches!(disk.disk_type(), DiskType::File | DiskType::Block) {
                return refuse(format!(
                    "disk type '{}' is not supported for disk '{target}'",
                    disk.disk_type().as_str()
                ));
            }
            if let DiskFormat::Other(f) = disk.format() {
                return refuse(format!(
                    "disk format '{f}' is not supported for disk '{target}'"
                ));
            }
            let refused_child = disk
                .others
                .iter()
                .find(|(_, e)| REFUSED_DISK_CHILDREN.contains(&e.name.as_str()));
            if let Some((_, e)) = refused_child {
                return refuse(format!("<{}> is not supported for disk '{target}'", e.name));
            }
            let alias = disk.alias();
            if let Some(other) = aliases.insert(alias.clone(), target) {
                return refuse(format!(
                    "disks '{other}' and '{target}' would both be device '{alias}'"
                ));
            }
        }
        Ok(())
    }

    /// The accelerator check libvirt makes against the host: `type='kvm'`
    /// without a usable /dev/kvm fails at define and at start with
    /// "Emulator '...' does not support virt type 'kvm'". Pure: the caller
    /// says whether KVM is available.
    pub fn check_virt_type(&self, kvm_available: bool) -> Result<(), ConfError> {
        if self.virt_type == VirtType::Kvm && !kvm_available {
            return Err(ConfError::qemu_unsupported(format!(
                "Emulator '{}' does not support virt type 'kvm'",
                self.emulator
            )));
        }
        Ok(())
    }
}
