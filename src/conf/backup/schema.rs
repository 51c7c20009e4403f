//! What libvirt's `domainbackup.rng` allows, checked the way libxml2's
//! RelaxNG validator reports it.
//!
//! libvirt validates a backup document against its schema before reading
//! it (backup-begin parses without the internal flag), so the schema is
//! where bad modes, disks without a `type=`, `<server>` in push mode,
//! export names in push mode and unknown elements are refused, with
//! VIR_ERR_XML_INVALID_SCHEMA and libxml2's first complaint.
//!
//! The root is an `<interleave>` of two groups: an optional
//! `<incremental>`, and a choice between push (optional `mode='push'`,
//! optional `<disks>`) and pull (`mode='pull'`, `<server>` and optional
//! `<disks>` in any order). libxml2 reports it like this (checked with
//! `xmllint --relaxng` on the same schema and libxml2 2.9.14, which gives
//! the texts libvirtd sends for checkpoints byte for byte):
//!
//! - children are sorted into the two groups until the first child that
//!   fits neither (an unknown element, or text);
//! - `<incremental>` twice, or with attributes or child elements:
//!   "Extra element incremental in interleave";
//! - the mode group: when pull does not accept the elements, the message
//!   names the first element the *push* branch could not take (a leading
//!   valid push `<disks>` is taken, whatever follows it is named), even
//!   when the document says `mode='pull'`;
//! - then the child that fitted no group ("has extra content");
//! - then the first root attribute nobody took, `mode` included: a
//!   `mode='pull'` document without `<server>` but with a valid push
//!   `<disks>` is refused as "Invalid attribute mode".
//!
//! Inside a group nothing more precise surfaces: a bad `<disk>` makes its
//! `<disks>` fail as a whole.

use std::net::Ipv6Addr;

use crate::conf::error::ConfError;
use crate::conf::xml::rng::{
    attrs, empty, has_text, in_namespace, is_abs_path, is_blank, is_disk_target, is_dns_name,
    is_unsigned_int, list_of, local_name, no_attrs, seclabel_ok, Schema,
};
use crate::conf::xml::{Element, Node};

const SCHEMA: Schema = Schema {
    file: "/usr/share/libvirt/schemas/domainbackup.rng",
    root: "domainbackup",
};

/// Check `root` (already known to be `<domainbackup>`) against the schema.
pub(super) fn validate(root: &Element) -> Result<(), ConfError> {
    if in_namespace(root) {
        return Err(SCHEMA.namespaced());
    }

    let mut incremental: Vec<&Element> = Vec::new();
    let mut mode_group: Vec<&Element> = Vec::new();
    let mut extra: Option<String> = None;
    for node in &root.children {
        match node {
            Node::Text(t) if is_blank(t) => {}
            Node::Text(_) => {
                extra = Some("text".to_owned());
                break;
            }
            Node::Element(e) if in_namespace(e) => {
                extra = Some(local_name(&e.name).to_owned());
                break;
            }
            Node::Element(e) => match e.name.as_str() {
                "incremental" => incremental.push(e),
                "disks" | "server" => mode_group.push(e),
                other => {
                    extra = Some(other.to_owned());
                    break;
                }
            },
        }
    }

    match incremental.as_slice() {
        [] => {}
        [one] if no_attrs(one) && !one.has_element_children() => {}
        _ => return Err(SCHEMA.extra_in_interleave("incremental")),
    }

    let mode = root.attr("mode");
    let pull_ok = mode == Some("pull") && pull_accepts(&mode_group);
    let mut mode_taken = pull_ok;
    if !pull_ok {
        let push_takes = usize::from(
            mode_group
                .first()
                .is_some_and(|e| e.name == "disks" && disks_ok(e, Mode::Push)),
        );
        if let Some(first_left) = mode_group.get(push_takes) {
            return Err(SCHEMA.extra_in_interleave(&first_left.name));
        }
        mode_taken = mode == Some("push");
    }

    if let Some(what) = extra {
        return Err(SCHEMA.extra_content(&what));
    }
    let left = attrs(root)
        .map(|(k, _)| k)
        .find(|k| !(*k == "mode" && mode_taken));
    if let Some(attr) = left {
        return Err(SCHEMA.invalid_attribute(attr));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Push,
    Pull,
}

/// The pull branch: exactly one valid `<server>`, at most one valid
/// `<disks>`, in any order.
fn pull_accepts(elements: &[&Element]) -> bool {
    let servers: Vec<_> = elements.iter().filter(|e| e.name == "server").collect();
    let disks: Vec<_> = elements.iter().filter(|e| e.name == "disks").collect();
    matches!(servers.as_slice(), [s] if server_ok(s))
        && match disks.as_slice() {
            [] => true,
            [d] => disks_ok(d, Mode::Pull),
            _ => false,
        }
}

/// `<server>`: a TCP host (`name`, optional `port`) or a unix socket, and
/// an optional `tls`.
fn server_ok(e: &Element) -> bool {
    if !empty(e) {
        return false;
    }
    let (mut transport, mut name, mut port, mut socket) = (None, None, None, None);
    for (k, v) in attrs(e) {
        match k {
            "tls" if matches!(v, "yes" | "no") => {}
            "transport" => transport = Some(v),
            "name" => name = Some(v),
            "port" => port = Some(v),
            "socket" => socket = Some(v),
            _ => return false,
        }
    }
    match transport {
        None | Some("tcp") => {
            socket.is_none()
                && name.is_some_and(|n| is_dns_name(n) || n.parse::<Ipv6Addr>().is_ok())
                && port.is_none_or(is_unsigned_int)
        }
        Some("unix") => name.is_none() && port.is_none() && socket.is_some_and(is_abs_path),
        Some(_) => false,
    }
}

/// `<disks>`: no attributes, one or more valid `<disk>`.
fn disks_ok(e: &Element, mode: Mode) -> bool {
    list_of(e, "disk", |d| disk_ok(d, mode)).is_some_and(|n| n > 0)
}

fn disk_ok(d: &Element, mode: Mode) -> bool {
    let (mut name, mut backup, mut kind) = (None, None, None);
    let (mut backupmode, mut incremental) = (None, None);
    for (k, v) in attrs(d) {
        match k {
            "name" => name = Some(v),
            "backup" => backup = Some(v),
            "type" => kind = Some(v),
            "backupmode" => backupmode = Some(v),
            "incremental" => incremental = Some(()),
            "exportname" | "exportbitmap" if mode == Mode::Pull => {}
            _ => return false,
        }
    }
    if !name.is_some_and(is_disk_target) || has_text(d) {
        return false;
    }
    let mode_ok = match backupmode {
        None | Some("incremental") => true,
        Some("full") => incremental.is_none(),
        Some(_) => false,
    };
    if !mode_ok {
        return false;
    }
    let children: Vec<&Element> = d.elements().collect();
    match (backup, kind, mode) {
        (Some("no"), None, _) => children.is_empty(),
        (Some("no"), Some(_), _) => false,
        (None | Some("yes"), Some("file"), Mode::Push) => {
            store_children_ok(&children, "target", "file", Mode::Push, false)
        }
        (None | Some("yes"), Some("block"), Mode::Push) => {
            store_children_ok(&children, "target", "dev", Mode::Push, false)
        }
        // In pull mode `backup='yes'` is only allowed together with a type.
        (None, None, Mode::Pull) | (None | Some("yes"), Some("file"), Mode::Pull) => {
            // The scratch is optional, but a driver needs one.
            children.is_empty() || store_children_ok(&children, "scratch", "file", Mode::Pull, true)
        }
        (None | Some("yes"), Some("block"), Mode::Pull) => {
            store_children_ok(&children, "scratch", "dev", Mode::Pull, true)
        }
        _ => false,
    }
}

/// The children of a disk that is backed up: at most one store element
/// (`target` or `scratch`, with the path attribute its type names) and at
/// most one `<driver type=...>`, in any order; `store_required` when the
/// schema wants the store element.
fn store_children_ok(
    children: &[&Element],
    store: &str,
    path_attr: &str,
    mode: Mode,
    store_required: bool,
) -> bool {
    let (mut stores, mut drivers) = (0usize, 0usize);
    for c in children {
        if in_namespace(c) {
            return false;
        }
        if c.name == store {
            stores += 1;
            if !store_ok(c, path_attr) {
                return false;
            }
        } else if c.name == "driver" {
            drivers += 1;
            if !driver_ok(c, mode) {
                return false;
            }
        } else {
            return false;
        }
    }
    stores <= 1 && drivers <= 1 && (stores == 1 || !store_required)
}

fn store_ok(e: &Element, path_attr: &str) -> bool {
    let mut path = None;
    for (k, v) in attrs(e) {
        match k {
            k if k == path_attr => path = Some(v),
            _ => return false,
        }
    }
    if !path.is_some_and(is_abs_path) || has_text(e) {
        return false;
    }
    let mut encryptions = 0usize;
    for c in e.elements() {
        match c.name.as_str() {
            "seclabel" if seclabel_ok(c) => {}
            "encryption" if encryption_ok(c) => encryptions += 1,
            _ => return false,
        }
    }
    encryptions <= 1
}

/// `backupEncryption`, loosely: `format='luks'`, optional `engine='qemu'`
/// and a `<secret>` among `<secret>`, `<cipher>`, `<ivgen>`. The parser
/// refuses encryption after the schema anyway (see the module docs of
/// `backup`), so only which of two errors comes first depends on this.
fn encryption_ok(e: &Element) -> bool {
    let attrs_ok = attrs(e).all(|(k, v)| match k {
        "format" => v == "luks",
        "engine" => v == "qemu",
        _ => false,
    });
    attrs_ok
        && e.attr("format").is_some()
        && e.children_named("secret").count() == 1
        && e.elements()
            .all(|c| matches!(c.name.as_str(), "secret" | "cipher" | "ivgen"))
}

/// `<driver type=...>`: any `storageFormat` in push mode, only qcow2 for a
/// pull scratch.
fn driver_ok(e: &Element, mode: Mode) -> bool {
    let only_type = attrs(e).all(|(k, _)| k == "type");
    let type_ok = e.attr("type").is_some_and(|t| match mode {
        Mode::Push => STORAGE_FORMATS.contains(&t),
        Mode::Pull => t == "qcow2",
    });
    only_type && type_ok && empty(e)
}

/// `storageFormat` of storagecommon.rng (no "none", but luks).
pub(super) const STORAGE_FORMATS: [&str; 17] = [
    "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop", "luks",
    "cow", "qcow", "qcow2", "qed", "vmdk",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_patterns() {
        for ok in ["vda", "ioemu:hdc", "sd_1", "xvdz9"] {
            assert!(is_disk_target(ok), "{ok}");
        }
        for bad in ["vd", "/tmp/vda.qcow2", "nvme0n1", "vda-1", ""] {
            assert!(!is_disk_target(bad), "{bad}");
        }
        assert!(is_unsigned_int("0010") && is_unsigned_int("4294967295"));
        assert!(!is_unsigned_int("4294967296") && !is_unsigned_int("+1"));
        assert!(is_dns_name("host-1.example") && !is_dns_name("a_b"));
        assert!(is_abs_path("/s") && is_abs_path("C:\\x") && !is_abs_path("rel"));
    }
}
