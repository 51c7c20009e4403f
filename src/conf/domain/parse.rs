//! From XML to [`DomainDef`], checking in libvirt 9.0's order:
//!
//! 1. parse (`virDomainDefParseXML`): root, name, uuid, domain type, OS
//!    type, arch, title, memory, vcpus, then each disk;
//! 2. post-parse (`virDomainDefPostParse` and the QEMU driver's
//!    callbacks): emulator default, disk defaults and target names, the
//!    memory size, the machine, the name;
//! 3. validation (`qemuValidateDomainDef`, then every device, then
//!    duplicates);
//! 4. the QEMU driver's define-time check of the name.
//!
//! A document with several problems therefore fails with the error
//! libvirtd would report first.

use std::collections::HashMap;

use uuid::Uuid;

use super::disk::DiskDef;
use super::order::{rank_of, DEVICE_RANKS, DOMAIN_CHILD_RANKS, OS_CHILD_RANKS};
use super::values::{
    canonical_machine, default_emulator, disk_name_index, is_known_arch, parse_memory_kib,
    parse_u32_strict, parse_uuid,
};
use super::{DomainDef, ExtraAttrs, VirtType};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::{self, detail_error, Element, Limits};

/// The label libvirt gives domain documents in parser errors.
pub(super) const DOC_NAME: &str = "(domain_definition)";

/// More disks than this are refused before they are sorted, so that a
/// document cannot make the (quadratic) libvirt insertion order expensive.
/// QEMU could not start that many virtio disks anyway.
const MAX_DISKS: usize = 4096;

/// Every domain type libvirt 9.0 knows; the QEMU driver refuses all but
/// qemu and kvm later, with a different message.
const LIBVIRT_VIRT_TYPES: &[&str] = &[
    "none",
    "qemu",
    "kqemu",
    "kvm",
    "xen",
    "lxc",
    "uml",
    "openvz",
    "test",
    "vmware",
    "hyperv",
    "vbox",
    "phyp",
    "parallels",
    "bhyve",
    "vz",
    "hvf",
];

const LIBVIRT_OS_TYPES: &[&str] = &["hvm", "xen", "linux", "exe", "uml", "xenpvh"];

/// Refuse bytes that are not UTF-8 with libxml2's message.
pub(super) fn utf8_or_libxml2_error(xml: &[u8]) -> Result<&str, ConfError> {
    std::str::from_utf8(xml).map_err(|e| {
        let pos = e.valid_up_to();
        let shown: Vec<String> = xml[pos..]
            .iter()
            .take(4)
            .map(|b| format!("{b:#04X}").replacen("0X", "0x", 1))
            .collect();
        let msg = format!(
            "Input is not proper UTF-8, indicate encoding !\nBytes: {}",
            shown.join(" ")
        );
        detail_error(xml, DOC_NAME, pos, &msg)
    })
}

pub(super) fn parse_domain(input: &str, limits: &Limits) -> Result<DomainDef, ConfError> {
    let root = xml::parse(input, DOC_NAME, limits)?;
    if root.name != "domain" {
        return Err(ConfError::xml_helper(format!(
            "expecting root element of 'domain', not '{}'",
            root.name
        )));
    }

    // --- 1. parse ---------------------------------------------------------
    let name = root
        .child("name")
        .and_then(Element::text_nonempty)
        .ok_or_else(|| ConfError::bare(ConfErrorKind::NoName, ConfErrorDomain::Domain))?;
    let uuid = match root.child("uuid").and_then(Element::text_nonempty) {
        None => Uuid::new_v4(),
        Some(s) => parse_uuid(&s).ok_or_else(|| ConfError::internal("malformed uuid element"))?,
    };

    let virt = root
        .attr("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConfError::internal("missing domain type attribute"))?;
    if !LIBVIRT_VIRT_TYPES.contains(&virt) {
        return Err(ConfError::unsupported(format!(
            "invalid domain type {virt}"
        )));
    }
    let os = root.child("os");
    let os_type_el = os.and_then(|o| o.child("type"));
    let mut os_type = match os_type_el.and_then(Element::text_nonempty) {
        Some(t) => t,
        None if root
            .child("bootloader")
            .and_then(Element::text_nonempty)
            .is_some() =>
        {
            "xen".to_owned()
        }
        None => return Err(ConfError::xml("an os <type> must be specified")),
    };
    if !LIBVIRT_OS_TYPES.contains(&os_type.as_str()) {
        return Err(ConfError::unsupported(format!(
            "unknown OS type '{os_type}'"
        )));
    }
    if os_type == "linux" && virt == "xen" {
        os_type = "xen".to_owned();
    }
    let nonempty_attr = |el: Option<&Element>, a: &str| {
        el.and_then(|e| e.attr(a))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let arch = nonempty_attr(os_type_el, "arch");
    if let Some(a) = &arch {
        if !is_known_arch(a) {
            return Err(ConfError::unsupported(format!("Unknown architecture {a}")));
        }
    }
    let arch = arch.unwrap_or_else(|| "x86_64".to_owned());
    let machine = nonempty_attr(os_type_el, "machine");
    let emulator = root
        .child("devices")
        .and_then(|d| d.child("emulator"))
        .and_then(Element::text_nonempty);

    let title = root.child("title").and_then(Element::text_nonempty);
    if title.as_deref().is_some_and(|t| t.contains('\n')) {
        return Err(ConfError::xml("Domain title can't contain newlines"));
    }
    let description = root.child("description").and_then(Element::text_nonempty);

    let memory_el = root.child("memory");
    let memory_kib = read_memory(memory_el, "./memory[1]")?;
    let current_kib = read_memory(root.child("currentMemory"), "./currentMemory[1]")?;

    let vcpu_el = root.child("vcpu");
    let (vcpus_max, vcpus_current, placement) = read_vcpu(vcpu_el)?;
    if vcpus_max == 0 {
        // With no vcpu, libvirt's NUMA check is the first to notice.
        return Err(ConfError::internal(
            "CPU IDs in <numa> exceed the <vcpu> count",
        ));
    }

    let disk_count = root
        .children_named("devices")
        .map(|d| d.children_named("disk").count())
        .sum::<usize>();
    if disk_count > MAX_DISKS {
        return Err(ConfError::unsupported(format!(
            "too many disks: {disk_count} (at most {MAX_DISKS})"
        )));
    }
    let mut disks: Vec<DiskDef> = Vec::with_capacity(disk_count);
    for devices in root.children_named("devices") {
        for el in devices.children_named("disk") {
            let disk = DiskDef::parse(el)?;
            insert_disk(&mut disks, disk);
        }
    }

    // --- 2. post-parse ----------------------------------------------------
    let emulator = match emulator {
        Some(e) => e,
        None => default_emulator(&arch).map(str::to_owned).ok_or_else(|| {
            ConfError::qemu_unsupported(format!("No emulator found for arch '{arch}'"))
        })?,
    };
    for disk in &mut disks {
        disk.post_parse()?;
    }
    if memory_kib == 0 {
        return Err(ConfError::xml(
            "Memory size must be specified via <memory> or in the <numa> configuration",
        ));
    }
    let current_memory_kib = if current_kib == 0 || current_kib > memory_kib {
        memory_kib
    } else {
        current_kib
    };
    // An unknown machine leaves libvirt without a PCI bus for its implicit
    // devices; that is the error it reports.
    let machine = canonical_machine(machine.as_deref())
        .ok_or_else(|| ConfError::xml("No PCI buses available"))?;
    if name.contains('/') {
        return Err(ConfError::xml(format!("name {name} cannot contain '/'")));
    }

    // --- 3. validation ----------------------------------------------------
    if os_type != "hvm" {
        return Err(ConfError::qemu_unsupported(format!(
            "Emulator '{emulator}' does not support os type '{os_type}'"
        )));
    }
    if arch != "x86_64" && arch != "i686" {
        return Err(ConfError::qemu_unsupported(format!(
            "Emulator '{emulator}' does not support arch '{arch}'"
        )));
    }
    let virt_type = match virt {
        "qemu" => VirtType::Qemu,
        "kvm" => VirtType::Kvm,
        other => {
            return Err(ConfError::qemu_unsupported(format!(
                "Emulator '{emulator}' does not support virt type '{other}'"
            )))
        }
    };
    check_uefi_acpi(&root, os)?;
    check_vcpu_limit(&machine, vcpus_max)?;
    let numa = root.child("cpu").and_then(|c| c.child("numa")).is_some();
    if root.child("maxMemory").is_some() && !numa {
        return Err(ConfError::qemu_unsupported(
            "At least one numa node has to be configured when enabling memory hotplug",
        ));
    }
    let count = u32::try_from(disks.len()).unwrap_or(u32::MAX);
    for (i, disk) in disks.iter_mut().enumerate() {
        disk.validate()?;
        disk.node_index = count - u32::try_from(i).unwrap_or(count);
    }
    check_duplicate_targets(&disks)?;

    // --- 4. the QEMU driver's define-time check ----------------------------
    if let Some(c) = name.chars().find(|c| *c == '\n') {
        return Err(ConfError::new(
            ConfErrorKind::XmlDetail,
            ConfErrorDomain::Xml,
            format!("invalid char in name: {c}"),
        ));
    }

    let (os_attrs, os_type_attrs, os_others) = split_os(os);
    let (device_attrs, device_others) = split_devices(&root);
    Ok(DomainDef {
        virt_type,
        name,
        uuid,
        title,
        description,
        memory_kib,
        current_memory_kib,
        vcpus_max,
        vcpus_current: vcpus_current.filter(|c| *c != vcpus_max),
        placement,
        os_type,
        arch,
        machine,
        emulator,
        disks,
        extra: ExtraAttrs {
            domain: attrs_except(&root, &["type", "id"]),
            memory: memory_el.map_or_else(Vec::new, |m| attrs_except(m, &["unit"])),
            vcpu: vcpu_el.map_or_else(Vec::new, |v| attrs_except(v, &["current", "placement"])),
            os: os_attrs,
            os_type: os_type_attrs,
            devices: device_attrs,
        },
        others: domain_others(&root),
        os_others,
        device_others,
    })
}

fn read_memory(el: Option<&Element>, xpath: &str) -> Result<u64, ConfError> {
    let Some(el) = el else { return Ok(0) };
    let Some(text) = el.text_nonempty() else {
        return Ok(0);
    };
    parse_memory_kib(&text, el.attr("unit").filter(|u| !u.is_empty()), xpath)
}

/// `virDomainVcpuParse`: (max, current if given, placement).
fn read_vcpu(el: Option<&Element>) -> Result<(u32, Option<u32>, String), ConfError> {
    let Some(el) = el else {
        return Ok((1, None, "static".to_owned()));
    };
    let max = parse_u32_strict(&el.text())
        .ok_or_else(|| ConfError::xml("maximum vcpus count must be an integer"))?;
    let current = match el.attr("current") {
        None => None,
        Some(c) => Some(parse_u32_strict(c).ok_or_else(|| {
            ConfError::xml_helper(format!(
                "Invalid value for attribute 'current' in element 'vcpu': '{c}'. Expected non-negative integer value"
            ))
        })?),
    };
    let placement = match el.attr("placement") {
        None => "static",
        Some(p @ ("static" | "auto")) => p,
        Some(p) => return Err(ConfError::invalid_attr("placement", "vcpu", p)),
    };
    if current.is_some_and(|c| c > max) {
        return Err(ConfError::unsupported(
            "maximum vCPU count must not be less than current vCPU count",
        ));
    }
    Ok((max, current, placement.to_owned()))
}

/// On x86, the QEMU driver refuses UEFI (`firmware='efi'`, or a pflash
/// loader) without `<features><acpi/>`.
fn check_uefi_acpi(root: &Element, os: Option<&Element>) -> Result<(), ConfError> {
    let uefi = os.is_some_and(|os| {
        os.attr("firmware") == Some("efi")
            || os
                .child("loader")
                .is_some_and(|l| l.attr("type") == Some("pflash"))
    });
    let acpi = root
        .child("features")
        .and_then(|f| f.child("acpi"))
        .is_some_and(|a| a.attr("state") != Some("off"));
    if uefi && !acpi {
        return Err(ConfError::qemu_unsupported(
            "UEFI requires ACPI on this architecture",
        ));
    }
    Ok(())
}

/// The QEMU driver's limit on vcpus per machine type (QEMU 7.2: 255 for
/// i440FX, 288 for Q35 where more than 255 also needs an IOMMU).
fn check_vcpu_limit(machine: &str, vcpus: u32) -> Result<(), ConfError> {
    let limit = if machine.starts_with("pc-q35-") {
        288
    } else if machine.starts_with("pc-i440fx-") {
        255
    } else {
        return Ok(());
    };
    if vcpus > limit {
        return Err(ConfError::qemu_unsupported(format!(
            "Maximum CPUs greater than specified machine type limit {limit}"
        )));
    }
    if vcpus > 255 {
        return Err(ConfError::qemu_unsupported(
            "more than 255 vCPUs require extended interrupt mode enabled on the iommu device",
        ));
    }
    Ok(())
}

/// `virDomainDiskInsert`: a disk goes before the first disk with the same
/// bus as written and a higher target index, else after the last disk with
/// the same bus as written, else at the end.
fn insert_disk(disks: &mut Vec<DiskDef>, disk: DiskDef) {
    let key = |d: &DiskDef| {
        d.target
            .as_deref()
            .map(|t| disk_name_index(t).map_or(-1, i64::from))
    };
    let new_key = key(&disk);
    let mut at = None;
    for (i, d) in disks.iter().enumerate().rev() {
        if d.bus_written != disk.bus_written {
            continue;
        }
        match (key(d), new_key) {
            (Some(k), Some(n)) if k > n => at = Some(i),
            _ if at.is_none() => at = Some(i + 1),
            _ => {}
        }
    }
    let at = at.unwrap_or(disks.len());
    disks.insert(at, disk);
}

/// libvirt compares every pair (i < j) and reports the first in that
/// order; the first occurrence of each target gives the same pair in one
/// pass.
fn check_duplicate_targets(disks: &[DiskDef]) -> Result<(), ConfError> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut worst: Option<(usize, usize)> = None;
    for (j, d) in disks.iter().enumerate() {
        match first.get(d.target()) {
            Some(&i) => {
                if worst.is_none_or(|(wi, _)| i < wi) {
                    worst = Some((i, j));
                }
            }
            None => {
                first.insert(d.target(), j);
            }
        }
    }
    match worst {
        Some((i, j)) => disks[i].check_duplicate(&disks[j]),
        None => Ok(()),
    }
}

fn attrs_except(el: &Element, skip: &[&str]) -> Vec<(String, String)> {
    el.attrs
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Rank the children of `parent` that are not in `modelled`. A modelled
/// element keeps its first occurrence only, as libvirt reads `name[1]`;
/// later copies are dropped like libvirt drops them.
fn ranked_others(parent: &Element, table: &[&str], modelled: &[&str]) -> Vec<(u16, Element)> {
    let mut last = 0;
    let mut out = Vec::new();
    for child in parent.elements() {
        let rank = rank_of(&child.name, table).unwrap_or(last);
        last = rank;
        if !modelled.contains(&child.name.as_str()) {
            out.push((rank, child.clone()));
        }
    }
    out
}

fn domain_others(root: &Element) -> Vec<(u16, Element)> {
    const MODELLED: &[&str] = &[
        "name",
        "uuid",
        "title",
        "description",
        "memory",
        "currentMemory",
        "vcpu",
        "os",
        "devices",
    ];
    ranked_others(root, DOMAIN_CHILD_RANKS, MODELLED)
}

type Attrs = Vec<(String, String)>;

fn split_os(os: Option<&Element>) -> (Attrs, Attrs, Vec<(u16, Element)>) {
    let Some(os) = os else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let type_attrs = os
        .child("type")
        .map_or_else(Vec::new, |t| attrs_except(t, &["arch", "machine"]));
    // The first <type> is modelled; libvirt drops any further one.
    let others = ranked_others(os, OS_CHILD_RANKS, &["type"]);
    (os.attrs.clone(), type_attrs, others)
}

fn split_devices(root: &Element) -> (Attrs, Vec<(u16, Element)>) {
    let mut attrs = Vec::new();
    let mut others = Vec::new();
    for devices in root.children_named("devices") {
        if attrs.is_empty() {
            attrs = devices.attrs.clone();
        }
        for (rank, el) in ranked_others(devices, DEVICE_RANKS, &["disk"]) {
            if el.name == "emulator" {
                // The first is modelled; libvirt drops the rest.
                continue;
            }
            others.push((rank, el));
        }
    }
    (attrs, others)
}
