//! `<disk>`: parsed in three phases like libvirt's (parse, post-parse
//! defaults, validation) so that the first error reported for a bad
//! document is the one libvirt would report; and formatted in libvirt's
//! child order.

use super::order::{rank_of, DISK_CHILD_RANKS};
use super::values::{disk_name_index, parse_disk_name};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::{lookup_name, lookup_value, Element};

/// `<disk type=...>`: where the data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// A file (`<source file=...>`).
    File,
    /// A block device (`<source dev=...>`).
    Block,
    /// A directory exposed as a FAT image. This and the following types
    /// are accepted like libvirt accepts them, but not runnable here.
    Dir,
    /// Network storage (`<source protocol=...>`).
    Network,
    /// A storage pool volume.
    Volume,
    /// An NVMe controller on the host.
    Nvme,
    /// A vhost-user-blk backend.
    VhostUser,
}

impl DiskType {
    const ALL: [(&'static str, Self); 7] = [
        ("file", Self::File),
        ("block", Self::Block),
        ("dir", Self::Dir),
        ("network", Self::Network),
        ("volume", Self::Volume),
        ("nvme", Self::Nvme),
        ("vhostuser", Self::VhostUser),
    ];

    /// The XML name.
    pub fn as_str(self) -> &'static str {
        lookup_name(&Self::ALL, self)
    }
}

/// `<disk device=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDevice {
    /// A hard disk: the only kind started here.
    Disk,
    /// A CD-ROM (always read-only).
    Cdrom,
    /// A floppy.
    Floppy,
    /// A SCSI LUN passed through.
    Lun,
}

impl DiskDevice {
    const ALL: [(&'static str, Self); 4] = [
        ("disk", Self::Disk),
        ("cdrom", Self::Cdrom),
        ("floppy", Self::Floppy),
        ("lun", Self::Lun),
    ];

    /// The XML name.
    pub fn as_str(self) -> &'static str {
        lookup_name(&Self::ALL, self)
    }
}

/// `<target bus=...>`; only virtio is started here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Ide,
    Fdc,
    Scsi,
    Virtio,
    Xen,
    Usb,
    Uml,
    Sata,
    Sd,
}

impl DiskBus {
    const ALL: [(&'static str, Self); 9] = [
        ("ide", Self::Ide),
        ("fdc", Self::Fdc),
        ("scsi", Self::Scsi),
        ("virtio", Self::Virtio),
        ("xen", Self::Xen),
        ("usb", Self::Usb),
        ("uml", Self::Uml),
        ("sata", Self::Sata),
        ("sd", Self::Sd),
    ];

    /// The XML name.
    pub fn as_str(self) -> &'static str {
        lookup_name(&Self::ALL, self)
    }
}

/// `<driver type=...>`: the image format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskFormat {
    /// Raw (also what libvirt assumes when no format is given).
    Raw,
    /// qcow2: the only format that holds persistent dirty bitmaps.
    Qcow2,
    /// Another format libvirt knows (vmdk, qed, ...): accepted, not runnable.
    Other(String),
}

impl DiskFormat {
    /// Formats of libvirt's virStorageFileFormat other than "none".
    const KNOWN: [&'static str; 16] = [
        "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop", "cow",
        "qcow", "qcow2", "qed", "vmdk",
    ];

    fn parse(s: &str) -> Option<Self> {
        match s {
            // Xen back-compat spelling libvirt still maps to raw.
            "raw" | "aio" => Some(Self::Raw),
            "qcow2" => Some(Self::Qcow2),
            s if Self::KNOWN.contains(&s) => Some(Self::Other(s.to_owned())),
            _ => None,
        }
    }

    /// The XML name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Other(s) => s,
        }
    }
}

/// One disk of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDef {
    pub(super) disk_type: DiskType,
    pub(super) device: DiskDevice,
    /// The bus as written, which decides where libvirt inserts the disk.
    pub(super) bus_written: Option<DiskBus>,
    /// The bus after defaults (from the target prefix).
    pub(super) bus: DiskBus,
    pub(super) target: Option<String>,
    pub(super) format: Option<DiskFormat>,
    pub(super) driver_name: Option<String>,
    pub(super) readonly: bool,
    /// A user alias (`ua-` prefix): the only alias libvirt reads back.
    pub(super) user_alias: Option<String>,
    /// Position in the domain's list, counted by libvirt from the end: the
    /// K of `libvirt-K-format` and of `<source index='K'/>`.
    pub(super) node_index: u32,
    /// Attributes of `<disk>` other than type and device, kept verbatim.
    pub(super) extra_attrs: Vec<(String, String)>,
    /// `<driver>` minus name and type: its other attributes and children.
    pub(super) driver_rest: Element,
    /// `<source>` as written minus the live-only `index`; holds the path.
    pub(super) source: Option<Element>,
    /// `<target>` attributes other than dev and bus.
    pub(super) target_extra_attrs: Vec<(String, String)>,
    /// Other children with their rank in libvirt's order.
    pub(super) others: Vec<(u16, Element)>,
    /// The image a running copy or active commit writes, shown in the
    /// live XML only; never parsed (libvirt reads it back only from its
    /// own status files).
    pub(super) mirror: Option<DiskMirror>,
}

/// `<mirror>` of a disk in a block copy or an active commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMirror {
    /// `true`: a block copy (`job='copy'`, which also carries the old
    /// `file=`/`format=` attributes for a file); `false`: an active commit.
    pub copy: bool,
    /// The image is a host block device (`type='block'`, `<source dev=>`).
    pub block: bool,
    pub path: String,
    /// libvirt's format name (`qcow2`, `raw`).
    pub format: String,
    /// The K of the image's `libvirt-K-*` nodes: `<source index=>`.
    pub index: u32,
    /// `ready=`: `yes` once it can be pivoted, `pivot` or `abort` while
    /// it is being ended that way; absent before.
    pub ready: Option<&'static str>,
}

impl DiskMirror {
    fn to_element(&self) -> Element {
        let kind = if self.block { "block" } else { "file" };
        let mut el = Element::new("mirror").with_attr("type", kind);
        if self.copy && !self.block {
            el = el
                .with_attr("file", &self.path)
                .with_attr("format", &self.format);
        }
        el = el.with_attr("job", if self.copy { "copy" } else { "active-commit" });
        if let Some(ready) = self.ready {
            el = el.with_attr("ready", ready);
        }
        let source = Element::new("source")
            .with_attr(if self.block { "dev" } else { "file" }, &self.path)
            .with_attr("index", self.index.to_string());
        el = el
            .with_child(Element::new("format").with_attr("type", &self.format))
            .with_child(source);
        // A copy's image is a chain of its own (its end, here); an active
        // commit's base sits in the disk's chain, already listed.
        if self.copy {
            el = el.with_child(Element::new("backingStore"));
        }
        el
    }
}

impl DiskDef {
    /// The storage type.
    pub fn disk_type(&self) -> DiskType {
        self.disk_type
    }

    /// The device kind.
    pub fn device(&self) -> DiskDevice {
        self.device
    }

    /// The bus (defaulted from the target name when not written).
    pub fn bus(&self) -> DiskBus {
        self.bus
    }

    /// The target device name, e.g. `vda`. Always present once the
    /// definition has been validated.
    pub fn target(&self) -> &str {
        self.target.as_deref().unwrap_or("")
    }

    /// The source path (`file=` or `dev=`), if any.
    pub fn source(&self) -> Option<&str> {
        let src = self.source.as_ref()?;
        let attr = match self.disk_type {
            DiskType::File => "file",
            DiskType::Block => "dev",
            _ => return None,
        };
        src.attr(attr)
    }

    /// The image format; libvirt's QEMU driver assumes raw when none is
    /// given (it does not probe).
    pub fn format(&self) -> &DiskFormat {
        self.format.as_ref().unwrap_or(&DiskFormat::Raw)
    }

    /// virStorageSourceIsEmpty for what the model knows: a local disk
    /// without a path (a cdrom without media). Other storage types count as
    /// not empty: libvirt decides that from details the model does not
    /// keep, and this daemon runs only file and block disks.
    pub fn is_empty(&self) -> bool {
        matches!(self.disk_type, DiskType::File | DiskType::Block) && self.source().is_none()
    }

    /// Whether the guest sees the disk read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The K libvirt uses in the node names `libvirt-K-storage` /
    /// `libvirt-K-format` and in the live `<source index='K'/>`: disks are
    /// numbered from the last (1) to the first (N).
    pub fn node_index(&self) -> u32 {
        self.node_index
    }

    /// The device alias: `virtio-disk<I>` where I is the index of the
    /// target name (vda = 0, vdc = 2), as qemu_alias.c builds it; or the
    /// user's `ua-` alias. For buses that libvirt addresses as drives
    /// (ide, sata, scsi) its alias differs (`ide0-1-0`); such disks are not
    /// started here.
    pub fn alias(&self) -> String {
        if let Some(a) = &self.user_alias {
            return a.clone();
        }
        let idx = disk_name_index(self.target()).unwrap_or(0);
        format!("{}-disk{idx}", self.bus.as_str())
    }

    /// Points the disk at a new top image (an external snapshot's qcow2
    /// overlay, a file or a block device) whose block nodes are
    /// `libvirt-<node_index>-*`.
    pub fn set_overlay(&mut self, path: &str, block: bool, node_index: u32) {
        let (disk_type, attr) = if block {
            (DiskType::Block, "dev")
        } else {
            (DiskType::File, "file")
        };
        self.disk_type = disk_type;
        self.source = Some(Element::new("source").with_attr(attr, path));
        self.format = Some(DiskFormat::Qcow2);
        self.node_index = node_index;
    }

    /// Points the disk at another image of its chain, or at a copy (a
    /// block job's end): `format` is QEMU's driver name, kept as libvirt's
    /// format name where it knows it.
    pub fn set_image(&mut self, path: &str, block: bool, format: &str, node_index: u32) {
        self.set_overlay(path, block, node_index);
        self.format = Some(DiskFormat::parse(format).unwrap_or(DiskFormat::Raw));
    }

    /// Shows (or, with `None`, stops showing) the image a block job
    /// mirrors into, in the live XML.
    pub fn set_mirror(&mut self, mirror: Option<DiskMirror>) {
        self.mirror = mirror;
    }

    /// Sets the K of the disk's node names (a live definition read back
    /// after an external snapshot moved it on).
    pub fn set_node_index(&mut self, node_index: u32) {
        self.node_index = node_index;
    }

    /// Whether the disk carries a per-device `<boot order=...>`.
    pub(super) fn has_boot_order(&self) -> bool {
        self.others.iter().any(|(_, e)| e.name == "boot")
    }

    /// Phase 1, `virDomainDiskDefParseXML`: read the element, failing on
    /// values libvirt refuses while parsing.
    pub(super) fn parse(el: &Element) -> Result<Self, ConfError> {
        let disk_type = match el.attr("type") {
            None => DiskType::File,
            Some(t) => lookup_value(&DiskType::ALL, t)
                .ok_or_else(|| ConfError::invalid_attr("type", "disk", t))?,
        };
        let device = match el.attr("device") {
            None => DiskDevice::Disk,
            Some(d) => lookup_value(&DiskDevice::ALL, d)
                .ok_or_else(|| ConfError::invalid_attr("device", "disk", d))?,
        };

        let mut disk = DiskDef {
            disk_type,
            device,
            bus_written: None,
            bus: DiskBus::Ide,
            target: None,
            format: None,
            driver_name: None,
            readonly: false,
            user_alias: None,
            node_index: 0,
            extra_attrs: el
                .attrs
                .iter()
                .filter(|(k, _)| k != "type" && k != "device")
                .cloned()
                .collect(),
            driver_rest: Element::new("driver"),
            source: None,
            target_extra_attrs: Vec::new(),
            others: Vec::new(),
            mirror: None,
        };

        let mut last_rank = 0;
        let (mut seen_source, mut seen_target, mut seen_driver) = (false, false, false);
        for child in el.elements() {
            let rank = rank_of(&child.name, DISK_CHILD_RANKS).unwrap_or(last_rank);
            last_rank = rank;
            match child.name.as_str() {
                // libvirt reads the first of each; later copies are dropped.
                "source" if !seen_source => {
                    seen_source = true;
                    let mut src = child.clone();
                    src.remove_attr("index");
                    disk.source = Some(src);
                }
                "target" if !seen_target => {
                    seen_target = true;
                    disk.parse_target(child)?;
                }
                "driver" if !seen_driver => {
                    seen_driver = true;
                    disk.parse_driver(child)?;
                }
                "readonly" => disk.readonly = true,
                "alias" => {
                    disk.user_alias = child
                        .attr("name")
                        .filter(|n| n.starts_with("ua-"))
                        .map(str::to_owned);
                }
                // Live-only state; we report our own.
                "backingStore" | "source" | "target" | "driver" => {}
                _ => disk.others.push((rank, child.clone())),
            }
        }
        Ok(disk)
    }

    fn parse_target(&mut self, t: &Element) -> Result<(), ConfError> {
        self.target = t.attr("dev").map(str::to_owned);
        if let Some(b) = t.attr("bus") {
            let bus = lookup_value(&DiskBus::ALL, b)
                .ok_or_else(|| ConfError::invalid_attr("bus", "target", b))?;
            self.bus_written = Some(bus);
        }
        self.target_extra_attrs = t
            .attrs
            .iter()
            .filter(|(k, _)| k != "dev" && k != "bus")
            .cloned()
            .collect();
        Ok(())
    }

    fn parse_driver(&mut self, d: &Element) -> Result<(), ConfError> {
        self.driver_name = d.attr("name").map(str::to_owned);
        if let Some(t) = d.attr("type") {
            self.format = Some(DiskFormat::parse(t).ok_or_else(|| {
                ConfError::unsupported(format!("unknown driver format value '{t}'"))
            })?);
        }
        let mut rest = d.clone();
        rest.remove_attr("name");
        rest.remove_attr("type");
        self.driver_rest = rest;
        Ok(())
    }

    /// Phase 2, post-parse: defaults (bus from the target prefix, driver
    /// name, raw format, cdroms read-only) and the target-name check of
    /// address assignment.
    pub(super) fn post_parse(&mut self) -> Result<(), ConfError> {
        if self.device == DiskDevice::Cdrom {
            self.readonly = true;
        }
        self.bus = self.bus_written.unwrap_or_else(|| {
            if self.device == DiskDevice::Floppy {
                return DiskBus::Fdc;
            }
            let t = self.target();
            if t.starts_with("sd") {
                DiskBus::Scsi
            } else if t.starts_with("vd") {
                DiskBus::Virtio
            } else if t.starts_with("xvd") {
                DiskBus::Xen
            } else if t.starts_with("ubd") {
                DiskBus::Uml
            } else {
                DiskBus::Ide
            }
        });
        if self.driver_name.is_none() {
            self.driver_name = Some("qemu".to_owned());
        }
        if self.format.is_none() && matches!(self.disk_type, DiskType::File | DiskType::Block) {
            self.format = Some(DiskFormat::Raw);
        }
        if let Some(t) = &self.target {
            // An explicit <address> spares libvirt the name check.
            let has_address = self.others.iter().any(|(_, e)| e.name == "address");
            if !has_address && disk_name_index(t).is_none() {
                return Err(ConfError::xml(format!(
                    "Unknown disk name '{t}' and no address specified"
                )));
            }
        }
        Ok(())
    }

    /// Phase 3, validation: libvirt's generic disk checks
    /// (`virDomainDiskDefValidate`), then the QEMU driver's
    /// (`qemuValidateDomainDeviceDefDisk`).
    pub(super) fn validate(&self) -> Result<(), ConfError> {
        let Some(target) = self.target.as_deref() else {
            return Err(match self.source() {
                Some(path) => {
                    ConfError::new(ConfErrorKind::NoTarget, ConfErrorDomain::Domain, path)
                }
                None => ConfError::bare(ConfErrorKind::NoTarget, ConfErrorDomain::Domain),
            });
        };
        if matches!(self.device, DiskDevice::Disk | DiskDevice::Lun)
            && !["hd", "sd", "vd", "xvd", "ubd"]
                .iter()
                .any(|p| target.starts_with(p))
        {
            return Err(ConfError::internal(format!(
                "Invalid harddisk device name: {target}"
            )));
        }
        if self.device == DiskDevice::Floppy && !target.starts_with("fd") {
            return Err(ConfError::internal(format!(
                "Invalid floppy device name: {target}"
            )));
        }
        if self.source_is_empty() && self.device == DiskDevice::Disk {
            return Err(ConfError::new(
                ConfErrorKind::NoSource,
                ConfErrorDomain::Domain,
                target,
            ));
        }

        // The QEMU driver's checks.
        if self.device == DiskDevice::Cdrom && matches!(self.bus, DiskBus::Virtio | DiskBus::Sd) {
            return Err(ConfError::qemu_unsupported(format!(
                "disk type of '{target}' does not support ejectable media"
            )));
        }
        if let Some(name) = self.driver_name.as_deref().filter(|n| *n != "qemu") {
            return Err(ConfError::qemu_unsupported(format!(
                "unsupported driver name '{name}' for disk '{target}'"
            )));
        }
        match parse_disk_name(target) {
            Some((_, Some(0))) => Ok(()),
            Some((_, Some(_))) => Err(ConfError::qemu_unsupported(format!(
                "invalid disk target '{target}', partitions can't appear in disk targets"
            ))),
            None | Some((_, None)) => Err(ConfError::qemu_unsupported(format!(
                "invalid disk target '{target}'"
            ))),
        }
    }

    /// `virStorageSourceIsEmpty`: no path for local storage, no protocol
    /// for network storage.
    fn source_is_empty(&self) -> bool {
        let Some(src) = &self.source else {
            return true;
        };
        let key = match self.disk_type {
            DiskType::File => "file",
            DiskType::Block => "dev",
            DiskType::Dir => "dir",
            DiskType::Network => "protocol",
            DiskType::Volume | DiskType::Nvme | DiskType::VhostUser => return false,
        };
        src.attr(key).is_none()
    }

    /// libvirt's duplicate-target check between two disks.
    pub(super) fn check_duplicate(&self, other: &DiskDef) -> Result<(), ConfError> {
        if self.target == other.target {
            let src = |d: &DiskDef| d.source().unwrap_or("<null>").to_owned();
            return Err(ConfError::xml(format!(
                "target '{}' duplicated for disk sources '{}' and '{}'",
                self.target(),
                src(self),
                src(other)
            )));
        }
        Ok(())
    }

    /// The `<disk>` element as libvirt formats it; `live` adds the source
    /// index, `<backingStore/>` and the alias.
    pub(super) fn to_element(&self, live: bool) -> Element {
        let mut disk = Element::new("disk")
            .with_attr("type", self.disk_type.as_str())
            .with_attr("device", self.device.as_str());
        disk.attrs.extend(self.extra_attrs.iter().cloned());

        let mut parts: Vec<(u16, Element)> = Vec::new();
        let rank = |name: &str| rank_of(name, DISK_CHILD_RANKS).unwrap_or(0);

        let mut driver = Element::new("driver");
        if let Some(n) = &self.driver_name {
            driver.attrs.push(("name".into(), n.clone()));
        }
        if let Some(f) = &self.format {
            driver.attrs.push(("type".into(), f.as_str().to_owned()));
        }
        driver.attrs.extend(self.driver_rest.attrs.iter().cloned());
        driver
            .children
            .extend(self.driver_rest.children.iter().cloned());
        parts.push((rank("driver"), driver));

        if let Some(src) = &self.source {
            let mut src = src.clone();
            if live {
                src.attrs
                    .push(("index".into(), self.node_index.to_string()));
            }
            parts.push((rank("source"), src));
        }
        if live {
            parts.push((rank("backingStore"), Element::new("backingStore")));
            if let Some(mirror) = &self.mirror {
                parts.push((rank("mirror"), mirror.to_element()));
            }
        }
        let mut target = Element::new("target");
        if let Some(t) = &self.target {
            target.attrs.push(("dev".into(), t.clone()));
        }
        target
            .attrs
            .push(("bus".into(), self.bus.as_str().to_owned()));
        target.attrs.extend(self.target_extra_attrs.iter().cloned());
        parts.push((rank("target"), target));
        if self.readonly {
            parts.push((rank("readonly"), Element::new("readonly")));
        }
        if live || self.user_alias.is_some() {
            parts.push((
                rank("alias"),
                Element::new("alias").with_attr("name", self.alias()),
            ));
        }
        parts.extend(self.others.iter().cloned());

        // Stable: modelled parts were pushed first, so they lead their rank.
        parts.sort_by_key(|(r, _)| *r);
        for (_, el) in parts {
            disk = disk.with_child(el);
        }
        disk
    }
}
