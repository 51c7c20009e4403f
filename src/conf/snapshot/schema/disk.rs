//! `<disks>` of domainsnapshot.rng: each `<disk>` by target or path, with
//! a snapshot mode, and for an external one a storage type with its
//! `<source>` and (file and block only) `<driver>`.
//!
//! A file or block `<source>` takes only its path and `index`: the
//! snapshot grammar does not include the domain's overrides, so
//! `startupPolicy` is not allowed. Its children come in the schema's
//! order: `<seclabel>`s, `<slices>`, `<encryption>` (`<privateData>` is
//! never allowed).

use super::{network, token};
use crate::conf::xml::rng::{
    attrs, empty, has_text, is_abs_path, is_disk_target, is_positive_integer, is_unsigned_int,
    is_unsigned_long, list_of, no_attrs, seclabel_ok,
};
use crate::conf::xml::{Element, Node};

/// `storageFormatBacking`: the formats whose backing chains libvirt can
/// follow (the only ones an overlay may have).
const BACKING_FORMATS: [&str; 5] = ["cow", "qcow", "qcow2", "qed", "vmdk"];

/// `<disks>`: any number of `<disk>`.
pub(super) fn disks_ok(e: &Element) -> bool {
    list_of(e, "disk", disk_ok).is_some()
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
            None | Some("file") => local_children_ok(d, "file", false),
            Some("block") => local_children_ok(d, "dev", true),
            Some("network") => network::children_ok(d),
            Some(_) => false,
        },
        Some(_) => false,
    }
}

/// The interleave of an optional `<source>` and an optional `<driver>`.
fn local_children_ok(d: &Element, path_attr: &str, path_required: bool) -> bool {
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
            "index" if is_positive_integer(v) => {}
            _ => return false,
        }
    }
    if path.is_some_and(|p| !is_abs_path(p)) || (path_required && path.is_none()) {
        return false;
    }
    !has_text(s) && common_children_ok(s)
}

/// `<seclabel>`* then `<slices>`? then `<encryption>`?, in that order.
fn common_children_ok(s: &Element) -> bool {
    let mut last = 0;
    for c in s.elements() {
        let (rank, ok) = match c.name.as_str() {
            "seclabel" => (0, seclabel_ok(c)),
            "slices" => (1, slices_ok(c)),
            "encryption" => (2, encryption_ok(c)),
            _ => return false,
        };
        // Backwards, or a second slices or encryption.
        if !ok || rank < last || (rank == last && rank > 0) {
            return false;
        }
        last = rank;
    }
    true
}

/// `<slices>` with exactly one storage `<slice offset= size=/>`.
pub(super) fn slices_ok(e: &Element) -> bool {
    if !no_attrs(e) || has_text(e) {
        return false;
    }
    let mut children = e.elements();
    let (Some(slice), None) = (children.next(), children.next()) else {
        return false;
    };
    let (mut kind, mut offset, mut size) = (false, false, false);
    for (k, v) in attrs(slice) {
        match k {
            "type" if v == "storage" => kind = true,
            "offset" if is_unsigned_int(v) => offset = true,
            "size" if is_positive_integer(v) => size = true,
            _ => return false,
        }
    }
    slice.name == "slice" && kind && offset && size && empty(slice)
}

/// storagecommon.rng's `<encryption>`: a format, an optional engine, and
/// either nothing inside or one passphrase `<secret>` (with `<cipher>`
/// and `<ivgen>` both or neither).
pub(super) fn encryption_ok(e: &Element) -> bool {
    let mut format = false;
    for (k, v) in attrs(e) {
        match k {
            "format" if matches!(v, "default" | "qcow" | "luks" | "luks2") => format = true,
            "engine" if matches!(v, "qemu" | "librbd") => {}
            _ => return false,
        }
    }
    if !format || has_text(e) {
        return false;
    }
    let count = |n: &str| e.children_named(n).count();
    let known = e
        .elements()
        .all(|c| matches!(c.name.as_str(), "secret" | "cipher" | "ivgen"));
    let (secrets, ciphers, ivgens) = (count("secret"), count("cipher"), count("ivgen"));
    if !known || secrets > 1 || ciphers > 1 || ivgens > 1 || ciphers != ivgens {
        return false;
    }
    match e.child("secret") {
        None => ciphers == 0,
        Some(secret) => secret_ok(secret),
    }
}

/// `<secret type='passphrase'>` with a `uuid` or a `usage`.
fn secret_ok(s: &Element) -> bool {
    let (mut kind, mut keys) = (false, 0);
    for (k, v) in attrs(s) {
        match k {
            "type" if v == "passphrase" => kind = true,
            "uuid" | "usage" => keys += 1,
            _ => return false,
        }
    }
    kind && keys == 1 && empty(s)
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
    if !no_attrs(c) || has_text(c) {
        return false;
    }
    let mut children = c.elements();
    match (children.next(), children.next()) {
        (None, _) => true,
        (Some(max), None) if max.name == "max_size" => scaled_integer_ok(max),
        _ => false,
    }
}

/// `scaledInteger`: an optional `unit` of libvirt's pattern and an
/// `unsignedLong` (digits only, within 64 bits).
fn scaled_integer_ok(e: &Element) -> bool {
    let unit_ok = attrs(e).all(|(k, v)| k == "unit" && is_unit(v));
    let text_only = e.children.iter().all(|n| matches!(n, Node::Text(_)));
    unit_ok && text_only && is_unsigned_long(&e.text())
}

/// `unit`: `b`, `bytes` or a scale letter with an optional `i` and `b`
/// (any case).
fn is_unit(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    match lower.as_bytes() {
        [b'b'] => true,
        _ if lower == "byte" || lower == "bytes" => true,
        [p, rest @ ..] if b"kmgtpe".contains(p) => matches!(rest, [] | [b'b'] | [b'i', b'b']),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_libvirts_pattern() {
        for ok in ["b", "B", "bytes", "Byte", "k", "KiB", "mb", "E", "eIb"] {
            assert!(is_unit(ok), "{ok}");
        }
        for bad in ["", "XB", "kibb", "i", "by", "kB "] {
            assert!(!is_unit(bad), "{bad}");
        }
    }
}
