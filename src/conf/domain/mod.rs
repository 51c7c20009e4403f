//! The domain definition (`<domain>` XML): parse, validate, format.
//!
//! What is modelled is what the daemon acts on: domain type, name, uuid,
//! title, description, memory and current memory, vcpus, the OS type with
//! arch and machine, the emulator, and the disks. Everything else
//! (elements and attributes) is kept verbatim and written back in the place
//! libvirt would write it (see `order.rs`).
//!
//! Parsing runs libvirt 9.0's checks in libvirt's order, so a document with
//! several problems is refused with the same first error, code and message
//! as `virsh define` shows against libvirtd. The captures in
//! `fixtures/reference/` are the yardstick. All of libvirt's checks that
//! libvirt runs at define time run in [`DomainDef::parse`]; what only fails
//! at start in libvirt (missing image files, networks, host devices) is the
//! driver's business; what this daemon cannot run at all is reported by
//! [`DomainDef::check_startable`].
//!
//! # How the output differs from libvirtd's `dumpxml`
//!
//! libvirt fills in defaults for hardware it adds itself; we do not invent
//! devices QEMU will not get. Missing compared with libvirtd:
//! - `<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>`
//!   (and its live variant with `check='full'` and features);
//! - the implicit devices: USB and PCI root controllers, PS/2 mouse and
//!   keyboard, `<audio id='1' type='none'/>`, `<memballoon model='virtio'>`;
//! - `<address>` elements on disks (libvirt assigns PCI slots);
//! - live only: `<resource><partition>/machine</partition></resource>` and
//!   the `<seclabel type='dynamic' model='dac'>` block.
//!
//! Filled in like libvirt, because they describe what we do run:
//! `<uuid>` (random v4 when absent), `<currentMemory>` (clamped to
//! `<memory>`), `<vcpu placement='static'>`, `arch='x86_64'`, the
//! canonical machine (`pc` → `pc-i440fx-7.2`, `q35` → `pc-q35-7.2`),
//! `<boot dev='hd'/>` when nothing says how to boot, the emulator path,
//! `<driver name='qemu' type='raw'/>` defaults on disks, the disk bus from
//! the target name, `<readonly/>` on cdroms, `<clock offset='utc'/>` and
//! the three `<on_*>` lifecycle defaults (QEMU's own behaviour);
//! live: `id=`, `<source index=>`, `<backingStore/>`, `<alias>`.
//!
//! Kept where libvirt would drop them: elements and attributes libvirt does
//! not know (libvirt silently discards them), comments excepted. Kept
//! elements are re-indented and written with single quotes (libvirt writes
//! `<metadata>` contents as libxml2 does, with double quotes), and kept
//! verbatim where libvirt would expand them (`<serial>`, `<graphics>`, ...
//! get no defaults from us). Refused where libvirt would accept them: a
//! DOCTYPE (libvirt expands internal entities).
//!
//! Not reproduced: libvirt's many checks on elements we keep verbatim
//! (e.g. `rotation_rate` on a virtio disk, controller models per machine);
//! such definitions parse here and are refused by `check_startable` only
//! when they ask for a device we cannot run. Errors that need the host or
//! the domain list are the driver's: a missing emulator binary ("Cannot
//! check QEMU binary ..."), a name or uuid already in use, file names too
//! long for the state directory.

mod disk;
mod format;
mod order;
mod parse;
mod startable;
mod values;

pub(crate) use values::scale_integer;

#[cfg(test)]
mod tests;

use uuid::Uuid;

pub use disk::{DiskBus, DiskDef, DiskDevice, DiskFormat, DiskMirror, DiskType};

use crate::conf::error::ConfError;
use crate::conf::xml::{Element, Limits};

/// `<domain type=...>`: the accelerator. libvirt's other types (xen, lxc,
/// ...) are refused at parse, as libvirtd's QEMU driver refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtType {
    /// TCG.
    Qemu,
    /// KVM.
    Kvm,
}

impl VirtType {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Kvm => "kvm",
        }
    }
}

/// How to format a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatMode {
    /// The persistent definition (`dumpxml` of a shut-off domain, or
    /// `dumpxml --inactive`).
    Inactive,
    /// A running domain: `id=` on the root, and per disk the source index,
    /// `<backingStore/>` and the device alias.
    Live {
        /// The domain id.
        id: u32,
    },
}

/// Whether the secrets a definition may hold are written out: libvirt's
/// VIR_DOMAIN_DEF_FORMAT_SECURE. A client sees them only with the secure
/// flag, which a read-only connection cannot set; files of the daemon's own
/// (definitions, metadata, live records) keep them so nothing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Shown,
    Hidden,
}

impl Secrets {
    /// `Shown` when a client's secure flag is set.
    pub fn shown_if(secure: bool) -> Self {
        if secure {
            Self::Shown
        } else {
            Self::Hidden
        }
    }
}

/// A parsed and validated domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDef {
    virt_type: VirtType,
    name: String,
    uuid: Uuid,
    title: Option<String>,
    description: Option<String>,
    memory_kib: u64,
    current_memory_kib: u64,
    vcpus_max: u32,
    /// `Some` only when fewer vcpus than the maximum are online.
    vcpus_current: Option<u32>,
    placement: String,
    os_type: String,
    arch: String,
    machine: String,
    emulator: String,
    disks: Vec<DiskDef>,
    /// Kept verbatim: attributes of `<domain>`, `<memory>`, `<vcpu>`,
    /// `<os>`, `<os><type>`, `<devices>` that we do not interpret.
    extra: ExtraAttrs,
    /// Kept verbatim with their rank: other children of `<domain>`,
    /// `<os>` and `<devices>`.
    others: Vec<(u16, Element)>,
    os_others: Vec<(u16, Element)>,
    device_others: Vec<(u16, Element)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ExtraAttrs {
    domain: Vec<(String, String)>,
    memory: Vec<(String, String)>,
    vcpu: Vec<(String, String)>,
    os: Vec<(String, String)>,
    os_type: Vec<(String, String)>,
    devices: Vec<(String, String)>,
}

impl DomainDef {
    /// Parse and validate a domain XML document, with the default
    /// [`Limits`].
    pub fn parse(xml: &str) -> Result<Self, ConfError> {
        Self::parse_with_limits(xml, &Limits::default())
    }

    /// Parse and validate with explicit limits on the document.
    pub fn parse_with_limits(xml: &str, limits: &Limits) -> Result<Self, ConfError> {
        parse::parse_domain(xml, limits)
    }

    /// Puts `disk` in place of the disk with the same target (a deleted
    /// external snapshot gives the disk back its image from before).
    pub fn replace_disk(&mut self, disk: DiskDef) {
        if let Some(slot) = self.disks.iter_mut().find(|d| d.target() == disk.target()) {
            *slot = disk;
        }
    }

    /// The disk with target `target`, to change it.
    pub fn disk_by_target_mut(&mut self, target: &str) -> Option<&mut DiskDef> {
        self.disks.iter_mut().find(|d| d.target() == target)
    }

    /// Parse a document given as bytes (the wire carries bytes): invalid
    /// UTF-8 is refused the way libxml2 refuses it.
    pub fn parse_bytes(xml: &[u8]) -> Result<Self, ConfError> {
        let text = parse::utf8_or_libxml2_error(xml)?;
        Self::parse(text)
    }

    /// Format as `virsh dumpxml` shows it.
    pub fn format(&self, mode: FormatMode, secrets: Secrets) -> String {
        format::format_domain(self, mode, secrets)
    }

    /// The element [`Self::format`] writes, to nest in another document.
    pub(crate) fn to_element(
        &self,
        mode: FormatMode,
        secrets: Secrets,
    ) -> crate::conf::xml::Element {
        format::domain_element(self, mode, secrets)
    }

    /// The accelerator requested.
    pub fn virt_type(&self) -> VirtType {
        self.virt_type
    }

    /// The domain name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UUID (generated when the document had none).
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// `<title>`, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// `<description>`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Maximum memory in KiB (`<memory>`).
    pub fn memory_kib(&self) -> u64 {
        self.memory_kib
    }

    /// Current memory in KiB (`<currentMemory>`, never above the maximum).
    pub fn current_memory_kib(&self) -> u64 {
        self.current_memory_kib
    }

    /// Maximum number of vcpus.
    pub fn vcpus_max(&self) -> u32 {
        self.vcpus_max
    }

    /// Number of vcpus online at start.
    pub fn vcpus(&self) -> u32 {
        self.vcpus_current.unwrap_or(self.vcpus_max)
    }

    /// The OS type (always `hvm` once validated).
    pub fn os_type(&self) -> &str {
        &self.os_type
    }

    /// The guest architecture, e.g. `x86_64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The canonical machine type, e.g. `pc-i440fx-7.2`.
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The emulator binary.
    pub fn emulator(&self) -> &str {
        &self.emulator
    }

    /// The disks, in libvirt's order (the order of their node indexes and
    /// of `domblklist`).
    pub fn disks(&self) -> &[DiskDef] {
        &self.disks
    }

    /// The disk with target `target`, if any.
    pub fn disk_by_target(&self, target: &str) -> Option<&DiskDef> {
        self.disks.iter().find(|d| d.target() == target)
    }

    /// The position of the disk a checkpoint or snapshot document names,
    /// as libvirt looks it up: a name starting with `/` is a source path
    /// and must name exactly one disk; anything else is a target.
    pub fn disk_index_by_name(&self, name: &str) -> Option<usize> {
        if !name.starts_with('/') {
            return self.disks.iter().position(|d| d.target() == name);
        }
        let mut matches = self
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.source() == Some(name));
        match (matches.next(), matches.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    /// Whether `<features><acpi/></features>` is set: without it libvirt
    /// starts QEMU with ACPI off, and a shutdown request has no effect.
    pub fn acpi(&self) -> bool {
        self.others
            .iter()
            .any(|(_, e)| e.name == "features" && e.child("acpi").is_some())
    }
}
