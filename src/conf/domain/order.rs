//! The order in which libvirt writes elements (virDomainDefFormatInternal
//! and friends in domain_conf.c).
//!
//! libvirt formats from its model, so its output order is fixed whatever
//! the input order was. We keep elements we do not model verbatim; to land
//! them where libvirt would, each gets the rank of its name in these
//! tables, and an element libvirt does not know inherits the rank of the
//! element before it in the input, so it stays next to its neighbour. A
//! stable sort by rank then gives libvirt's order.

/// Children of `<domain>`.
pub(crate) const DOMAIN_CHILD_RANKS: &[&str] = &[
    "name",
    "uuid",
    "genid",
    "title",
    "description",
    "metadata",
    "maxMemory",
    "memory",
    "currentMemory",
    "blkiotune",
    "memtune",
    "memoryBacking",
    "vcpu",
    "vcpus",
    "iothreads",
    "iothreadids",
    "defaultiothread",
    "cputune",
    "numatune",
    "resource",
    "sysinfo",
    "bootloader",
    "bootloader_args",
    "os",
    "idmap",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_lockfailure",
    "pm",
    "perf",
    "devices",
    "seclabel",
    "keywrap",
    "launchSecurity",
];

/// Children of `<os>`.
pub(crate) const OS_CHILD_RANKS: &[&str] = &[
    "type",
    "firmware",
    "init",
    "initarg",
    "initenv",
    "initdir",
    "inituser",
    "initgroup",
    "loader",
    "nvram",
    "kernel",
    "initrd",
    "cmdline",
    "dtb",
    "root",
    "acpi",
    "boot",
    "bootmenu",
    "bios",
    "smbios",
];

/// Children of `<devices>`.
pub(crate) const DEVICE_RANKS: &[&str] = &[
    "emulator",
    "disk",
    "controller",
    "lease",
    "filesystem",
    "interface",
    "smartcard",
    "serial",
    "parallel",
    "console",
    "channel",
    "input",
    "tpm",
    "graphics",
    "sound",
    "audio",
    "video",
    "hostdev",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "memballoon",
    "rng",
    "nvram",
    "panic",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
];

/// Children of `<disk>`.
pub(crate) const DISK_CHILD_RANKS: &[&str] = &[
    "driver",
    "auth",
    "source",
    "backingStore",
    "mirror",
    "backenddomain",
    "geometry",
    "blockio",
    "mirror",
    "target",
    "iotune",
    "readonly",
    "shareable",
    "transient",
    "serial",
    "wwn",
    "vendor",
    "product",
    "encryption",
    "boot",
    "alias",
    "master",
    "rom",
    "acpi",
    "address",
];

/// The rank of `name` in `table`, counting from 1 so that an unknown
/// element before every known one (rank 0) stays first. Elements in a
/// namespace (`qemu:commandline`) come after everything libvirt formats
/// itself, as libvirt writes them last.
pub(crate) fn rank_of(name: &str, table: &[&str]) -> Option<u16> {
    if name.contains(':') {
        return u16::try_from(table.len() + 1).ok();
    }
    let pos = table.iter().position(|n| *n == name)?;
    u16::try_from(pos + 1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_tables() {
        assert_eq!(rank_of("name", DOMAIN_CHILD_RANKS), Some(1));
        assert!(rank_of("os", DOMAIN_CHILD_RANKS) < rank_of("clock", DOMAIN_CHILD_RANKS));
        assert!(
            rank_of("devices", DOMAIN_CHILD_RANKS)
                < rank_of("qemu:commandline", DOMAIN_CHILD_RANKS)
        );
        assert_eq!(rank_of("frobnicate", DOMAIN_CHILD_RANKS), None);
    }
}
