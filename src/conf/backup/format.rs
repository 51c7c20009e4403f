//! From [`BackupDef`] back to XML, shaped like libvirt's backup-dumpxml
//! (backup_conf.c, virDomainBackupDefFormat without the internal flag):
//! mode, `<incremental>`, `<server>`, then every disk. A disk that is
//! backed up shows its store type, mode, checkpoint, export names and
//! storage id as attributes, then `<driver>` and `<target>` (push) or
//! `<scratch>` (pull) with the store's security labels; one that is not
//! shows only its name.

use super::{BackupDef, BackupDisk, BackupMode};
use crate::conf::xml::Element;

pub(super) fn format_backup(def: &BackupDef) -> String {
    let mut root = Element::new("domainbackup").with_attr("mode", def.mode.as_str());
    if let Some(incremental) = &def.incremental {
        root = root.with_child(Element::new("incremental").with_text(incremental));
    }
    if let Some(server) = &def.server {
        let mut el = Element::new("server").with_attr("transport", server.transport.as_str());
        if let Some(tls) = server.tls {
            el = el.with_attr("tls", if tls { "yes" } else { "no" });
        }
        if let Some(name) = &server.name {
            el = el.with_attr("name", name);
        }
        if server.port != 0 {
            el = el.with_attr("port", server.port.to_string());
        }
        if let Some(socket) = &server.socket {
            el = el.with_attr("socket", socket);
        }
        root = root.with_child(el);
    }
    if !def.disks.is_empty() {
        let mut disks = Element::new("disks");
        for disk in &def.disks {
            disks = disks.with_child(format_disk(disk, def.mode));
        }
        root = root.with_child(disks);
    }
    let mut out = String::new();
    root.write(&mut out, 0);
    out
}

fn format_disk(disk: &BackupDisk, mode: BackupMode) -> Element {
    let mut el = Element::new("disk").with_attr("name", &disk.name);
    let Some(store) = &disk.store else {
        return el.with_attr("backup", "no");
    };
    el = el
        .with_attr("backup", "yes")
        .with_attr("type", store.kind.as_str());
    if let Some(m) = disk.mode {
        el = el.with_attr("backupmode", m.as_str());
    }
    for (attr, value) in [
        ("incremental", &disk.incremental),
        ("exportname", &disk.export_name),
        ("exportbitmap", &disk.export_bitmap),
    ] {
        if let Some(v) = value {
            el = el.with_attr(attr, v);
        }
    }
    if store.index != 0 {
        el = el.with_attr("index", store.index.to_string());
    }
    if let Some(format) = &store.format {
        el = el.with_child(Element::new("driver").with_attr("type", format.as_str()));
    }
    let (name, attr) = match (mode, store.is_block()) {
        (BackupMode::Push, false) => ("target", "file"),
        (BackupMode::Push, true) => ("target", "dev"),
        (BackupMode::Pull, false) => ("scratch", "file"),
        (BackupMode::Pull, true) => ("scratch", "dev"),
    };
    let mut target = Element::new(name);
    if let Some(path) = &store.path {
        target = target.with_attr(attr, path);
    }
    for label in store.seclabels.iter().filter_map(|l| l.to_element(false)) {
        target = target.with_child(label);
    }
    // Nothing in it, no element: libvirt leaves out an empty one.
    if !target.attrs.is_empty() || target.has_element_children() {
        el = el.with_child(target);
    }
    el
}
