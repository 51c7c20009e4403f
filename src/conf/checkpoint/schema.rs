//! What libvirt's `domaincheckpoint.rng` allows, checked the way libxml2's
//! RelaxNG validator reports it.
//!
//! libvirt validates every checkpoint document against its schema before
//! reading it, so the schema is where names with `/`, a leading `.`,
//! spaces or non-ASCII characters, bad `checkpoint=` values and unknown
//! elements are refused, all with VIR_ERR_XML_INVALID_SCHEMA and a
//! message naming libxml2's first complaint. The captures
//! (`fixtures/reference/checkpoint/api-create-schema-*`) show how libxml2
//! reports an `<interleave>` of optional elements:
//!
//! - the root's children are sorted into the interleave's groups (name,
//!   description, creationTime, disks, domain, parent) until the first
//!   child that fits no group (an unknown element, or text);
//! - the groups are checked in the schema's order; the first bad one is
//!   reported as "Extra element G in interleave" (also when it occurs
//!   twice);
//! - only then the child that fitted no group: "has extra content";
//! - attributes of the root come last.
//!
//! The embedded `<domain>` is not checked here (see the module docs of
//! `checkpoint`).

use crate::conf::error::ConfError;
use crate::conf::xml::rng::{
    has_text, in_namespace, interleave, is_abs_path, is_disk_target, is_ns_decl, plain, Schema,
};
use crate::conf::xml::Element;

const SCHEMA: Schema = Schema {
    file: "/usr/share/libvirt/schemas/domaincheckpoint.rng",
    root: "domaincheckpoint",
};

/// The interleave's groups, in the schema's order.
const GROUPS: [&str; 6] = [
    "name",
    "description",
    "creationTime",
    "disks",
    "domain",
    "parent",
];

/// Check `root` (already known to be `<domaincheckpoint>`) against the
/// schema.
pub(super) fn validate(root: &Element) -> Result<(), ConfError> {
    if in_namespace(root) {
        return Err(SCHEMA.namespaced());
    }

    let (groups, extra) = interleave(root, &GROUPS);

    for (group, members) in GROUPS.iter().zip(&groups) {
        let valid = match members.as_slice() {
            [] => true,
            [one] => match *group {
                "name" => checkpoint_name_ok(one),
                "description" => plain(one).is_some(),
                "creationTime" => plain(one).is_some_and(unsigned_long_ok),
                "disks" => disks_ok(one),
                "parent" => parent_ok(one),
                // Not modelled by this schema check; see the module docs.
                _ => true,
            },
            // Each group is optional: a second one is one too many.
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

/// `checkpointName`: `[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]*`, matched against
/// the whole value (no leading `.`, no `/`, no whitespace).
fn checkpoint_name_ok(e: &Element) -> bool {
    plain(e).is_some_and(|s| is_checkpoint_name(&s))
}

pub(super) fn is_checkpoint_name(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut chars = s.chars();
    chars.next().is_some_and(word) && chars.all(|c| word(c) || c == '.')
}

/// libvirt's `unsignedLong`: digits only (no sign, no spaces) and within
/// 64 bits.
fn unsigned_long_ok(s: String) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok()
}

/// `<parent>`: exactly one `<name>` with a checkpoint name.
fn parent_ok(e: &Element) -> bool {
    if e.attrs.iter().any(|(k, _)| !is_ns_decl(k)) || has_text(e) {
        return false;
    }
    let mut elements = e.elements();
    match (elements.next(), elements.next()) {
        (Some(name), None) => name.name == "name" && checkpoint_name_ok(name),
        _ => false,
    }
}

/// `<disks>`: one or more `<disk>`, each with a name and either
/// `checkpoint='no'` alone or an optional `checkpoint='bitmap'`, `bitmap=`
/// and `size=`.
fn disks_ok(e: &Element) -> bool {
    if e.attrs.iter().any(|(k, _)| !is_ns_decl(k)) || has_text(e) {
        return false;
    }
    let mut count = 0usize;
    for disk in e.elements() {
        if disk.name != "disk" || in_namespace(disk) || !disk_ok(disk) {
            return false;
        }
        count += 1;
    }
    count > 0
}

fn disk_ok(d: &Element) -> bool {
    if d.has_element_children() || has_text(d) {
        return false;
    }
    let mut name = None;
    let (mut checkpoint, mut bitmap, mut size) = (None, None, None);
    for (k, v) in &d.attrs {
        match k.as_str() {
            "name" => name = Some(v.as_str()),
            "checkpoint" => checkpoint = Some(v.as_str()),
            "bitmap" => bitmap = Some(v.as_str()),
            "size" => size = Some(v.as_str()),
            k if is_ns_decl(k) => {}
            _ => return false,
        }
    }
    if !name.is_some_and(|n| is_disk_target(n) || is_abs_path(n)) {
        return false;
    }
    match checkpoint {
        Some("no") => bitmap.is_none() && size.is_none(),
        None | Some("bitmap") => size.is_none_or(|s| unsigned_long_ok(s.to_owned())),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_schema_pattern() {
        for ok in ["cp1", "-dash", "_x", "a.b", "1795325812", "a..b"] {
            assert!(is_checkpoint_name(ok), "{ok}");
        }
        for bad in ["", ".x", "..", "a/b", "a b", "café", "a\tb", "x\n"] {
            assert!(!is_checkpoint_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn disk_names_are_targets_or_absolute_paths() {
        for ok in ["vda", "sdq", "ioemu:vda", "xvda1", "/tmp/a b", "C:\\x"] {
            assert!(is_disk_target(ok) || is_abs_path(ok), "{ok}");
        }
        for bad in ["vd", "vda.qcow2", "/", "", "ioemu:", "nvme0", "C:x"] {
            assert!(!is_disk_target(bad) && !is_abs_path(bad), "{bad}");
        }
    }

    #[test]
    fn unsigned_long_is_digits_within_64_bits() {
        assert!(unsigned_long_ok("0042".into()));
        assert!(unsigned_long_ok("18446744073709551615".into()));
        for bad in ["", "-1", "+7", " 1", "18446744073709551616", "soon"] {
            assert!(!unsigned_long_ok(bad.into()), "{bad}");
        }
    }
}
