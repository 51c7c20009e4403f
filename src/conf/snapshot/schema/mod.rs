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
//! schema's values (not `pmsuspended`); `<memory>` with its attribute
//! combinations; `<disks>` (`disk.rs`, `network.rs`); `<active>` 0 or 1;
//! `<parent>` with one `<name>`; `<cookie>` any elements but no text or
//! attributes; `<domain>` either the old form (just a `<uuid>`) or a
//! definition, of which, as of `<inactiveDomain>`, only the hypervisor
//! type and the presence of `<name>` are checked (the domain schema is
//! not modelled).

mod disk;
mod network;

use crate::conf::error::ConfError;
use crate::conf::xml::rng::{
    attrs, empty, has_text, is_abs_path, no_attrs, plain, sole_child, Schema,
};
use crate::conf::xml::Element;

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

/// Check `root` (already known to be `<domainsnapshot>`) against the
/// schema.
pub(super) fn validate(root: &Element) -> Result<(), ConfError> {
    SCHEMA.check_interleave(root, &GROUPS, |group, one| match group {
        "name" | "description" | "creationTime" => plain(one).is_some(),
        "state" => plain(one).is_some_and(|s| STATES.contains(&token(&s).as_str())),
        "active" => plain(one).is_some_and(|s| matches!(token(&s).as_str(), "0" | "1")),
        "memory" => memory_ok(one),
        "disks" => disk::disks_ok(one),
        // `<parent>`: exactly one `<name>`.
        "parent" => sole_child(one, "name").is_some_and(|n| plain(n).is_some()),
        "domain" => domain_ok(one),
        "inactiveDomain" => typed_domain_ok(one),
        "cookie" => cookie_ok(one),
        _ => true,
    })
}

/// A `<value>` compares as a token: white space collapsed and trimmed.
fn token(s: &str) -> String {
    s.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
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

/// libvirt's hypervisor types (`hvs`).
const HVS: [&str; 15] = [
    "qemu", "kqemu", "kvm", "xen", "lxc", "uml", "openvz", "test", "vmware", "hyperv", "vbox",
    "phyp", "vz", "bhyve", "hvf",
];

/// `<domain>`: the old form, only `<uuid>`, or a definition.
fn domain_ok(e: &Element) -> bool {
    if e.attr("type").is_some() {
        return typed_domain_ok(e);
    }
    let mut children = e.elements();
    match (children.next(), children.next()) {
        (Some(uuid), None) => {
            no_attrs(e)
                && !has_text(e)
                && uuid.name == "uuid"
                && plain(uuid).is_some_and(|u| is_uuid(&u))
        }
        _ => false,
    }
}

/// A domain definition, as far as modelled: a known hypervisor type and a
/// `<name>` (the rest of domain.rng is not).
fn typed_domain_ok(e: &Element) -> bool {
    e.attr("type").is_some_and(|t| HVS.contains(&t)) && e.child("name").is_some()
}

/// `UUID`: 32 hex digits, bare or in libvirt's 8-4-4-4-12 groups.
fn is_uuid(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = s.split('-').collect();
    match groups.as_slice() {
        [all] => hex(all, 32),
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        _ => false,
    }
}

/// `<cookie>`: any elements (`customElement`), nothing else.
fn cookie_ok(e: &Element) -> bool {
    no_attrs(e) && !has_text(e)
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
             <source file='/x' index='2'><seclabel relabel='no'/></source></disk><disk name='/tmp/b' snapshot='no'/>\
             <disk name='vdc' type='block'><source dev='/dev/x'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><parent><name>p</name></parent><cookie><cpu/></cookie></domainsnapshot>",
            "<domainsnapshot><domain><uuid>c0f05a009c0d4e1f8a2b3c4d5e6f7a8b</uuid></domain></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda' type='network'><source protocol='nbd'>\
             <host transport='unix' socket='/s'/></source></disk></disks></domainsnapshot>",
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
            // The snapshot grammar leaves startupPolicy out (libvirt's own
            // qemudomainsnapshotxml2xmlin/disk-invalid.xml).
            "<domainsnapshot><disks><disk name='vda'><source file='/x' startupPolicy='optional'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda'><driver type='raw'/></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda'><source file='/x'><encryption format='qcow'/><seclabel relabel='no'/></source></disk></disks></domainsnapshot>",
            "<domainsnapshot><disks><disk name='vda' type='network'><driver/><source protocol='nbd'><host name='h'/></source></disk></disks></domainsnapshot>",
            "<domainsnapshot><cookie>text</cookie></domainsnapshot>",
            "<domainsnapshot><domain><uuid>zzz</uuid></domain></domainsnapshot>",
            "<domainsnapshot><inactiveDomain/></domainsnapshot>",
        ];
        for xml in bad {
            assert!(check(xml).is_err(), "{xml}");
        }
    }
}
