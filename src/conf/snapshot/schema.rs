//! What libvirt's `domainsnapshot.rng` allows, checked the way libxml2's
//! RelaxNG validator reports it. libvirt checks it only when the caller
//! asks (VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE, `virsh snapshot-create
//! --validate`).
//!
//! The root is an `<interleave>` of optional elements, reported as for
//! checkpoints (`api-validate-*` in the captures): the groups are checked
//! in the schema's order and the first bad one is named ("Extra element G
//! in interleave"), then the first child that fits no group ("has extra
//! content"), then the root's attributes.
//!
//! Modelled: names and descriptions are any text; `<state>` one of the
//! schema's values (not `pmsuspended`); `<memory>` and `<disk>` with their
//! attribute combinations, `<driver>`, a file or block `<source>` with its
//! path; `<active>` 0 or 1; `<parent>` with one `<name>`. Not modelled (any
//! content accepted): the embedded `<domain>` and `<inactiveDomain>`,
//! `<cookie>`, a network disk's `<source>`, and the security labels and
//! encryption a `<source>` may hold.

use crate::conf::error::ConfError;
use crate::conf::xml::rng::{
    has_text, in_namespace, is_abs_path, is_blank, is_disk_target, is_ns_decl, local_name, plain,
    Schema,
};
use crate::conf::xml::{Element, Node};

const SCHEMA: Schema = Schema {
    file: "/usr/share/libvirt/schemas/domainsnapshot.rng",
    root: "domainsnapshot",
};

/// The interleave's groups, in the schema's order.
const GROUPS: [&str; 11] = [
    "name",
    "description",
    "state",
    "creationTime",
    "memory",
    "disks",
    "active",
    "domain",
    "inactiveDomain",
    "parent",
    "cookie",
];

const STATES: [&str; 7] = [
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "disk-snapshot",
];

/// `storageFormatBacking`.
const BACKING_FORMATS: [&str; 16] = [
    "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop", "cow",
    "qcow", "qcow2", "qed", "vmdk",
];

/// Check `root` (already known to be `<domainsnapshot>`) against the
/// schema.
pub(super) fn validate(root: &Element) -> Result<(), ConfError> {
    if in_namespace(root) {
        return Err(SCHEMA.namespaced());
    }

    let mut groups: [Vec<&Element>; GROUPS.len()] = Default::default();
    let mut extra: Option<String> = None;
    for node in &root.children {
        match node {
            Node::Text(t) if is_blank(t) => {}
            Node::Text(_) => {
                extra = Some("text".to_owned());
                break;
            }
            Node::Element(e) => match GROUPS.iter().position(|g| *g == e.name) {
                Some(i) if !in_namespace(e) => groups[i].push(e),
                _ => {
                    extra = Some(local_name(&e.name).to_owned());
                    break;
                }
            },
        }
    }

    for (group, members) in GROUPS.iter().zip(&groups) {
        let valid = match members.as_slice() {
            [] => true,
            [one] => match *group {
                "name" | "description" | "creationTime" => plain(one).is_some(),
                "state" => plain(one).is_some_and(|s| STATES.contains(&token(&s).as_str())),
                "active" => plain(one).is_some_and(|s| matches!(token(&s).as_str(), "0" | "1")),
                "memory" => memory_ok(one),
                "disks" => disks_ok(one),
                "parent" => parent_ok(one),
                // Not modelled; see the module docs.
                _ => true,
            },
            _ => false,
        };
        if !valid {
            return Err(SCHEMA.extra_in_interleave(group));
        }
    }

    if let Some(what) = extra {
        return Err(SCHEMA.extra_content(&what));
    }
    if let Some((attr, _)) = root.attrs.iter().find(|(k, _)| !is_ns_decl(k)) {
        return Err(SCHEMA.invalid_attribute(attr));
    }
    Ok(())
}

/// A `<value>` compares as a token: white space collapsed and trimmed.
fn token(s: &str) -> String {
    s.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The attributes other than namespace declarations.
fn attrs(e: &Element) -> impl Iterator<Item = (&str, &str)> {
    e.attrs
        .iter()
        .filter(|(k, _)| !is_ns_decl(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// No child elements and no text.
fn empty(e: &Element) -> bool {
    !e.has_element_children() && !has_text(e)
}

/// `<memory snapshot='no|internal'/>` or `<memory [snapshot='external']
/// file='/abs'/>`.
fn memory_ok(e: &Element) -> bool {
    if !empty(e) {
        return false;
    }
    let (mut snapshot, mut file) = (None, None);
    for (k, v) in attrs(e) {
        match k {
            "snapshot" => snapshot = Some(token(v)),
            "file" => file = Some(v),
            _ => return false,
        }
    }
    match (snapshot.as_deref(), file) {
        (Some("no" | "internal"), None) => true,
        (None | Some("external"), Some(f)) => is_abs_path(f),
        _ => false,
    }
}

/// `<disks>`: any number of `<disk>`.
fn disks_ok(e: &Element) -> bool {
    if attrs(e).next().is_some() || has_text(e) {
        return false;
    }
    e.elements()
        .all(|d| d.name == "disk" && !in_namespace(d) && disk_ok(d))
}

fn disk_ok(d: &Element) -> bool {
    let (mut name, mut snapshot, mut kind) = (None, None, None);
    for (k, v) in attrs(d) {
        match k {
            "name" => name = Some(v),
            "snapshot" => snapshot = Some(token(v)),
            "type" => kind = Some(token(v)),
            _ => return false,
        }
    }
    if !name.is_some_and(|n| is_disk_target(n) || is_abs_path(n)) {
        return false;
    }
    match snapshot.as_deref() {
        Some("no" | "internal" | "manual") => kind.is_none() && empty(d),
        None | Some("external") => match kind.as_deref() {
            None | Some("file") => disk_children_ok(d, "file", false),
            Some("block") => disk_children_ok(d, "dev", true),
            // diskSourceNetwork: not modelled.
            Some("network") => true,
            Some(_) => false,
        },
        Some(_) => false,
    }
}

/// The interleave of an optional `<source>` and an optional `<driver>`.
fn disk_children_ok(d: &Element, path_attr: &str, path_required: bool) -> bool {
    if has_text(d) {
        return false;
    }
    let (mut sources, mut drivers) = (0, 0);
    for child in d.elements() {
        let ok = match child.name.as_str() {
            "source" => {
                sources += 1;
                source_ok(child, path_attr, path_required)
            }
            "driver" => {
                drivers += 1;
                driver_ok(child)
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    sources <= 1 && drivers <= 1
}

fn source_ok(s: &Element, path_attr: &str, path_required: bool) -> bool {
    let mut path = None;
    for (k, v) in attrs(s) {
        match k {
            k if k == path_attr => path = Some(v),
            "startupPolicy" if path_attr == "file" => {
                if !matches!(v, "mandatory" | "requisite" | "optional") {
                    return false;
                }
            }
            "index" => {}
            _ => return false,
        }
    }
    if path.is_some_and(|p| !is_abs_path(p)) || (path_required && path.is_none()) {
        return false;
    }
    !has_text(s)
        && s.elements()
            .all(|c| matches!(c.name.as_str(), "seclabel" | "encryption" | "slices"))
}

/// `<driver [type=FORMAT]>` with an optional `<metadata_cache>`.
fn driver_ok(d: &Element) -> bool {
    for (k, v) in attrs(d) {
        if k != "type" || !BACKING_FORMATS.contains(&token(v).as_str()) {
            return false;
        }
    }
    if has_text(d) {
        return false;
    }
    let mut children = d.elements();
    match (children.next(), children.next()) {
        (None, _) => true,
        (Some(cache), None) if cache.name == "metadata_cache" => metadata_cache_ok(cache),
        _ => false,
    }
}

fn metadata_cache_ok(c: &Element) -> bool {
    if attrs(c).next().is_some() || has_text(c) {
        return false;
    }
    let mut children = c.elements();
    match (children.next(), children.next()) {
        (None, _) => true,
        (Some(max), None) if max.name == "max_size" => {
            let unit_ok = attrs(max).all(|(k, _)| k == "unit");
            unit_ok
                && plain_ignoring_attrs(max).is_some_and(|t| {
                    let t = token(&t);
                    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
                })
        }
        _ => false,
    }
}

fn plain_ignoring_attrs(e: &Element) -> Option<String> {
    e.children
        .iter()
        .all(|n| matches!(n, Node::Text(_)))
        .then(|| e.text())
}

/// `<parent>`: exactly one `<name>`.
fn parent_ok(e: &Element) -> bool {
    if attrs(e).next().is_some() || has_text(e) {
        return false;
    }
    let mut elements = e.elements();
    match (elements.next(), elements.next()) {
        (Some(name), None) => name.name == "name" && plain(name).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::xml::{parse, Limits};

    fn check(xml: &str) -> Result<(), ConfError> {
        validate(&parse(xml, "(t)", &Limits::default()).expect("well-formed"))
    }

    #[test]
    fn accepts_what_libvirt_writes() {
        let ok = [
            "<domainsnapshot/>",
            "<domainsnapshot><name>a b</name><state> running </state><active>1</active></domainsnapshot>",
            "<domainsnapshot><memory snapshot='external' file='/m'/><disks/></domainsnapshot>",
            "<domainsnapshot><memory file='/m'/><disks><disk name='vda' snapshot='external' type='file'>\
             <driver type='qcow2'><metadata_cache><max_size unit='KiB'>8</max_size></metadata_cache></driver>\
             <source file='/x' startupPolicy='optional'/></disk><disk name='/tmp/b' snapshot='no'/>\
             <disk name='vdc' type='block'><source dev='/dev/x'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><parent><name>p</name></parent><cookie><cpu/></cookie></domainsnapshot>",
        ];
        for xml in ok {
            assert_eq!(check(xml), Ok(()), "{xml}");
        }
    }

    #[test]
    fn refuses_what_the_schema_does_not_allow() {
        let bad = [
            "<domainsnapshot><state>pmsuspended</state></domainsnapshot>",
            "<domainsnapshot><memory snapshot='internal' file='/m'/></domainsnapshot>",
            "<domainsnapshot><memory file='m'/></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda' snapshot='no' type='file'/></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda'><source file='rel'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda' type='block'><source/></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda'><driver type='x'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='nvme0'/></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda'><snapshotDeleteInProgress/></disk></disks></domainsnapshot>",
            "<domainsnapshot><active>2</active></domainsnapshot>",
            "<domainsnapshot><name>a</name><name>b</name></domainsnapshot>",
            "<domainsnapshot><parent/></domainsnapshot>",
        ];
        for xml in bad {
            assert!(check(xml).is_err(), "{xml}");
        }
    }
}
