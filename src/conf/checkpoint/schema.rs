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
    attrs, empty, is_abs_path, is_disk_target, is_unsigned_long, list_of, plain, sole_child, Schema,
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
    SCHEMA.check_interleave(root, &GROUPS, |group, one| match group {
        "name" => checkpoint_name_ok(one),
        "description" => plain(one).is_some(),
        "creationTime" => plain(one).is_some_and(|s| is_unsigned_long(&s)),
        // One or more disks.
        "disks" => list_of(one, "disk", disk_ok).is_some_and(|n| n > 0),
        // `<parent>`: exactly one `<name>` with a checkpoint name.
        "parent" => sole_child(one, "name").is_some_and(checkpoint_name_ok),
        // Not modelled by this schema check; see the module docs.
        _ => true,
    })
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

/// `<disk>`: a name and either `checkpoint='no'` alone or an optional
/// `checkpoint='bitmap'`, `bitmap=` and `size=`.
fn disk_ok(d: &Element) -> bool {
    if !empty(d) {
        return false;
    }
    let mut name = None;
    let (mut checkpoint, mut bitmap, mut size) = (None, None, None);
    for (k, v) in attrs(d) {
        match k {
            "name" => name = Some(v),
            "checkpoint" => checkpoint = Some(v),
            "bitmap" => bitmap = Some(v),
            "size" => size = Some(v),
            _ => return false,
        }
    }
    if !name.is_some_and(|n| is_disk_target(n) || is_abs_path(n)) {
        return false;
    }
    match checkpoint {
        Some("no") => bitmap.is_none() && size.is_none(),
        None | Some("bitmap") => size.is_none_or(is_unsigned_long),
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
        assert!(is_unsigned_long("0042"));
        assert!(is_unsigned_long("18446744073709551615"));
        for bad in ["", "-1", "+7", " 1", "18446744073709551616", "soon"] {
            assert!(!is_unsigned_long(bad), "{bad}");
        }
    }
}
