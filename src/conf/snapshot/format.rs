//! From [`SnapshotDef`] back to XML, shaped like libvirt's
//! `snapshot-dumpxml` (snapshot_conf.c, virDomainSnapshotDefFormatInternal
//! and virDomainSnapshotDiskDefFormat): name, description, state, parent,
//! creation time (unless 0), memory, disks, the domain (or just its uuid),
//! the inactive domain, the cookie, and `<active>` in the metadata form.

use super::{FormatFlags, SnapshotDef, SnapshotDisk, SnapshotDiskType};
use crate::conf::domain::{FormatMode, Secrets};
use crate::conf::xml::Element;

pub(super) fn format_snapshot(def: &SnapshotDef, flags: &FormatFlags) -> String {
    let text = |name: &str, value: &str| Element::new(name).with_text(value);
    let moment = &def.moment;
    let state = def.state.map(|s| text("state", s.as_str()));
    let mut root = moment.format_head("domainsnapshot", state);
    if let Some(memory) = def.memory {
        let mut el = Element::new("memory").with_attr("snapshot", memory.as_str());
        if let Some(file) = &def.memory_file {
            el = el.with_attr("file", file);
        }
        root = root.with_child(el);
    }
    if !moment.disks.is_empty() {
        let mut disks = Element::new("disks");
        for disk in moment.disks.iter().filter(|d| !d.name.is_empty()) {
            disks = disks.with_child(disk_element(disk));
        }
        root = root.with_child(disks);
    }
    if let Some(domain) = moment.domain_element(flags.secure) {
        root = root.with_child(domain);
    } else if let Some(uuid) = flags.domain_uuid {
        root = root.with_child(
            Element::new("domain").with_child(text("uuid", &uuid.hyphenated().to_string())),
        );
    }
    if let Some(domain) = &def.inactive_domain {
        // Indented one level deeper, as the domain is.
        let mut el = domain.to_element(FormatMode::Inactive, Secrets::shown_if(flags.secure));
        el.name = "inactiveDomain".to_owned();
        root = root.with_child(el);
    }
    if let Some(cookie) = &def.cookie {
        root = root.with_child(cookie.to_element());
    }
    if let Some(current) = flags.internal {
        root = root.with_child(text("active", if current { "1" } else { "0" }));
    }
    let mut out = String::new();
    root.write(&mut out, 0);
    out
}

fn disk_element(disk: &SnapshotDisk) -> Element {
    let mut el = Element::new("disk").with_attr("name", &disk.name);
    if let Some(mode) = disk.snapshot {
        el = el.with_attr("snapshot", mode.as_str());
    }
    if disk.delete_in_progress {
        el = el.with_child(Element::new("snapshotDeleteInProgress"));
    }
    if disk.path.is_none() && disk.format.is_none() {
        return el;
    }
    el = el.with_attr("type", disk.disk_type.as_str());

    let mut driver = Element::new("driver");
    if let Some(format) = &disk.format {
        driver = driver.with_attr("type", format);
    }
    if disk.metadata_cache_max > 0 {
        driver = driver.with_child(
            Element::new("metadata_cache").with_child(
                Element::new("max_size")
                    .with_attr("unit", "bytes")
                    .with_text(disk.metadata_cache_max.to_string()),
            ),
        );
    }
    if !driver.attrs.is_empty() || !driver.children.is_empty() {
        el = el.with_child(driver);
    }

    let mut source = Element::new("source");
    let path_attr = match disk.disk_type {
        SnapshotDiskType::File => Some("file"),
        SnapshotDiskType::Block => Some("dev"),
        // Kept whole in `disk.source`.
        _ => None,
    };
    if let (Some(attr), Some(path)) = (path_attr, &disk.path) {
        source = source.with_attr(attr, path);
    }
    if let Some(rest) = &disk.source {
        source.attrs.extend(rest.attrs.iter().cloned());
        source.children.extend(rest.children.iter().cloned());
    }
    if !source.attrs.is_empty() || source.has_element_children() {
        el = el.with_child(source);
    }
    el
}
