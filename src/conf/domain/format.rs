//! From [`DomainDef`] back to XML, shaped like libvirtd's `dumpxml`: the
//! modelled elements are built from the model (never echoed from the
//! input), the kept ones are put back by rank (see `order.rs`), and the
//! result is written with the generic writer. See the module docs of
//! `domain` for what differs from libvirtd and why.

use super::order::{rank_of, DEVICE_RANKS, DOMAIN_CHILD_RANKS, OS_CHILD_RANKS};
use super::{DomainDef, FormatMode, Secrets};
use crate::conf::xml::{Element, Node};

pub(super) fn format_domain(def: &DomainDef, mode: FormatMode, secrets: Secrets) -> String {
    let mut out = String::new();
    domain_element(def, mode, secrets).write(&mut out, 0);
    out
}

/// The `<domain>` element, for writing alone or inside another document
/// (a checkpoint embeds it).
pub(super) fn domain_element(def: &DomainDef, mode: FormatMode, secrets: Secrets) -> Element {
    let mut root = unfiltered_domain_element(def, mode);
    if secrets == Secrets::Hidden {
        hide_secrets(&mut root);
    }
    root
}

/// Drops what libvirt writes only under VIR_DOMAIN_DEF_FORMAT_SECURE: the
/// `passwd` of a VNC or SPICE `<graphics>` (its `passwdValidTo` stays, as
/// libvirt keeps it) and the HTTP `<cookies>` of a network disk's
/// `<source>`. Both live in elements the model keeps verbatim, so they are
/// removed from the built tree rather than left out while building it.
fn hide_secrets(domain: &mut Element) {
    for devices in domain.children_named_mut("devices") {
        for graphics in devices.children_named_mut("graphics") {
            graphics.remove_attr("passwd");
        }
        for disk in devices.children_named_mut("disk") {
            for source in disk.children_named_mut("source") {
                source
                    .children
                    .retain(|n| !matches!(n, Node::Element(e) if e.name == "cookies"));
            }
        }
    }
}

fn unfiltered_domain_element(def: &DomainDef, mode: FormatMode) -> Element {
    let live = matches!(mode, FormatMode::Live { .. });
    let mut root = Element::new("domain").with_attr("type", def.virt_type.as_str());
    if let FormatMode::Live { id } = mode {
        root.attrs.push(("id".into(), id.to_string()));
    }
    root.attrs.extend(def.extra.domain.iter().cloned());

    let rank = |name: &str| rank_of(name, DOMAIN_CHILD_RANKS).unwrap_or(0);
    let mut parts: Vec<(u16, Element)> = Vec::new();
    parts.push((rank("name"), Element::new("name").with_text(&def.name)));
    parts.push((
        rank("uuid"),
        Element::new("uuid").with_text(def.uuid.hyphenated().to_string()),
    ));
    if let Some(t) = &def.title {
        parts.push((rank("title"), Element::new("title").with_text(t)));
    }
    if let Some(d) = &def.description {
        parts.push((
            rank("description"),
            Element::new("description").with_text(d),
        ));
    }

    let mut memory = Element::new("memory");
    memory.attrs.extend(def.extra.memory.iter().cloned());
    memory = memory
        .with_attr("unit", "KiB")
        .with_text(def.memory_kib.to_string());
    parts.push((rank("memory"), memory));
    parts.push((
        rank("currentMemory"),
        Element::new("currentMemory")
            .with_attr("unit", "KiB")
            .with_text(def.current_memory_kib.to_string()),
    ));

    let mut vcpu = Element::new("vcpu").with_attr("placement", &def.placement);
    vcpu.attrs.extend(def.extra.vcpu.iter().cloned());
    if let Some(c) = def.vcpus_current {
        vcpu.attrs.push(("current".into(), c.to_string()));
    }
    parts.push((rank("vcpu"), vcpu.with_text(def.vcpus_max.to_string())));

    parts.push((rank("os"), os_element(def)));

    // QEMU's own behaviour, which libvirt spells out when not given.
    let has = |name: &str| def.others.iter().any(|(_, e)| e.name == name);
    if !has("clock") {
        parts.push((
            rank("clock"),
            Element::new("clock").with_attr("offset", "utc"),
        ));
    }
    for (name, action) in [
        ("on_poweroff", "destroy"),
        ("on_reboot", "restart"),
        ("on_crash", "destroy"),
    ] {
        if !has(name) {
            parts.push((rank(name), Element::new(name).with_text(action)));
        }
    }

    parts.push((rank("devices"), devices_element(def, live)));
    parts.extend(def.others.iter().cloned());

    // Stable: modelled parts were pushed first, so they lead their rank.
    parts.sort_by_key(|(r, _)| *r);
    for (_, el) in parts {
        root = root.with_child(el);
    }
    root
}

fn os_element(def: &DomainDef) -> Element {
    let rank = |name: &str| rank_of(name, OS_CHILD_RANKS).unwrap_or(0);
    let mut os = Element::new("os");
    os.attrs.extend(def.extra.os.iter().cloned());

    let mut ty = Element::new("type")
        .with_attr("arch", &def.arch)
        .with_attr("machine", &def.machine);
    ty.attrs.extend(def.extra.os_type.iter().cloned());
    let mut parts = vec![(rank("type"), ty.with_text(&def.os_type))];

    // libvirt boots from the first disk unless the OS or a device says
    // otherwise, and writes that down.
    let os_boot = def.os_others.iter().any(|(_, e)| e.name == "boot");
    let device_boot = def.disks.iter().any(|d| d.has_boot_order())
        || def
            .device_others
            .iter()
            .any(|(_, e)| e.child("boot").is_some());
    if !os_boot && !device_boot {
        parts.push((rank("boot"), Element::new("boot").with_attr("dev", "hd")));
    }
    parts.extend(def.os_others.iter().cloned());
    parts.sort_by_key(|(r, _)| *r);
    for (_, el) in parts {
        os = os.with_child(el);
    }
    os
}

fn devices_element(def: &DomainDef, live: bool) -> Element {
    let rank = |name: &str| rank_of(name, DEVICE_RANKS).unwrap_or(0);
    let mut devices = Element::new("devices");
    devices.attrs.extend(def.extra.devices.iter().cloned());

    let mut parts = vec![(
        rank("emulator"),
        Element::new("emulator").with_text(&def.emulator),
    )];
    for disk in &def.disks {
        parts.push((rank("disk"), disk.to_element(live)));
    }
    parts.extend(def.device_others.iter().cloned());
    parts.sort_by_key(|(r, _)| *r);
    for (_, el) in parts {
        devices = devices.with_child(el);
    }
    devices
}
