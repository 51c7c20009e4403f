//! From XML to [`ParsedSnapshot`], in libvirt's order: the XML parser,
//! the root element, the schema (only when asked for), then the fields
//! (snapshot_conf.c, virDomainSnapshotDefParse and
//! virDomainSnapshotDiskDefParseXML; moment_conf.c for the defaults of a
//! new snapshot).
//!
//! Without the schema, libvirt reads the document with XPath and ignores
//! what it does not look for; so do we: the first `<name>`, `<state>`,
//! `<memory>` count, and every element child of every `<disks>` is a disk,
//! whatever it is called.

use super::schema;
use super::SaveCookie;
use super::{
    ParseFlags, ParsedSnapshot, SnapshotDef, SnapshotDisk, SnapshotDiskType, SnapshotLocation,
    SnapshotState, KIND,
};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::moment::{embedded_domain, strtoll, MomentDef};
use crate::conf::xml::rng::is_blank;
use crate::conf::xml::{Element, Node};

/// The image formats libvirt knows (virStorageFileFormat without "none").
const FORMATS: [&str; 16] = [
    "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop", "cow",
    "qcow", "qcow2", "qed", "vmdk",
];

pub(super) fn snap_error(kind: ConfErrorKind, detail: impl Into<String>) -> ConfError {
    KIND.error(kind, detail)
}

pub(super) fn parse_snapshot(
    input: &str,
    flags: ParseFlags,
    now_secs: i64,
) -> Result<ParsedSnapshot, ConfError> {
    let root = KIND.parse_root(input)?;
    if flags.validate {
        schema::validate(&root)?;
    }

    let mut offline = flags.offline;
    let mut def = SnapshotDef {
        moment: MomentDef::parse_head(&root, &KIND, flags.redefine, now_secs)?,
        state: None,
        memory: None,
        memory_file: None,
        inactive_domain: None,
        cookie: None,
    };

    if flags.redefine {
        let state = root
            .child("state")
            .and_then(Element::text_nonempty)
            .ok_or_else(|| {
                snap_error(
                    ConfErrorKind::XmlError,
                    "missing state from existing snapshot",
                )
            })?;
        let state = SnapshotState::from_xml(&state).ok_or_else(|| {
            snap_error(
                ConfErrorKind::ConfigUnsupported,
                format!("Invalid state '{state}' in domain snapshot XML"),
            )
        })?;
        def.state = Some(state);
        offline = matches!(state, SnapshotState::Shutoff | SnapshotState::DiskSnapshot);

        // Old snapshots have only <domain><uuid>: no definition then.
        if let Some(d) = root
            .child("domain")
            .filter(|d| d.attr("type").is_some_and(|t| !t.is_empty()))
        {
            def.moment.domain = Some(embedded_domain(d)?);
        }
        if let Some(d) = root.child("inactiveDomain") {
            def.inactive_domain = Some(embedded_domain(d)?);
        }
    }

    parse_memory(&root, &mut def, flags.redefine, offline)?;

    for disk in root.children_named("disks").flat_map(Element::elements) {
        def.moment.disks.push(parse_disk(disk, flags.redefine)?);
    }

    let current = if flags.internal {
        let active = root
            .child("active")
            .and_then(Element::text_nonempty)
            .and_then(|t| strtoll(&t))
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| {
                snap_error(
                    ConfErrorKind::InternalError,
                    "Could not find 'active' element",
                )
            })?;
        Some(active != 0)
    } else {
        None
    };

    if !offline {
        def.cookie = root.child("cookie").map(SaveCookie::parse).transpose()?;
    }

    Ok(ParsedSnapshot { def, current })
}

fn parse_memory(
    root: &Element,
    def: &mut SnapshotDef,
    redefine: bool,
    offline: bool,
) -> Result<(), ConfError> {
    if let Some(memory) = root.child("memory") {
        def.memory_file = memory.attr("file").map(str::to_owned);
        if let Some(v) = memory.attr("snapshot") {
            let location = SnapshotLocation::from_xml(v)
                .ok_or_else(|| ConfError::invalid_attr("snapshot", &memory.name, v))?;
            if location == SnapshotLocation::Manual {
                return Err(snap_error(
                    ConfErrorKind::XmlError,
                    "'manual' memory snapshot mode not supported",
                ));
            }
            def.memory = Some(location);
        }
    }

    if def.memory.is_none() {
        if def.memory_file.is_some() {
            def.memory = Some(SnapshotLocation::External);
        } else if redefine {
            def.memory = Some(if offline {
                SnapshotLocation::No
            } else {
                SnapshotLocation::Internal
            });
        }
    }

    let external = def.memory == Some(SnapshotLocation::External);
    match &def.memory_file {
        Some(file) if !external => {
            return Err(snap_error(
                ConfErrorKind::XmlError,
                format!("memory filename '{file}' requires external snapshot"),
            ));
        }
        None if external => {
            return Err(snap_error(
                ConfErrorKind::XmlError,
                "external memory snapshots require a filename",
            ));
        }
        _ => {}
    }
    if offline && !matches!(def.memory, None | Some(SnapshotLocation::No)) {
        return Err(snap_error(
            ConfErrorKind::XmlError,
            "memory state cannot be saved with offline or disk-only snapshot",
        ));
    }
    if let Some(file) = def.memory_file.as_deref().filter(|f| !f.starts_with('/')) {
        return Err(snap_error(
            ConfErrorKind::XmlError,
            format!("memory snapshot file path ({file}) must be absolute"),
        ));
    }
    Ok(())
}

fn parse_disk(el: &Element, redefine: bool) -> Result<SnapshotDisk, ConfError> {
    let name = el.attr("name").ok_or_else(|| {
        snap_error(
            ConfErrorKind::InternalError,
            "missing name from disk snapshot element",
        )
    })?;
    let snapshot = match el.attr("snapshot") {
        Some(v) => Some(
            SnapshotLocation::from_xml(v)
                .ok_or_else(|| ConfError::invalid_attr("snapshot", &el.name, v))?,
        ),
        None => None,
    };
    let disk_type = match el.attr("type") {
        None => SnapshotDiskType::File,
        Some(v) => match v {
            "file" => SnapshotDiskType::File,
            "block" => SnapshotDiskType::Block,
            "network" => SnapshotDiskType::Network,
            "nvme" => SnapshotDiskType::Nvme,
            "vhostuser" => SnapshotDiskType::VhostUser,
            "dir" | "volume" => {
                return Err(snap_error(
                    ConfErrorKind::XmlError,
                    format!("unsupported disk snapshot type '{v}'"),
                ));
            }
            _ => return Err(ConfError::invalid_attr("type", &el.name, v)),
        },
    };
    let delete_in_progress = redefine && el.child("snapshotDeleteInProgress").is_some();

    let (path, source) = match el.child("source") {
        Some(src) => split_source(src, disk_type),
        None => (None, None),
    };

    let driver = el.child("driver");
    let format = match driver
        .and_then(|d| d.attr("type"))
        .filter(|t| !t.is_empty())
    {
        Some(t) if FORMATS.contains(&t) => Some(t.to_owned()),
        Some(t) => {
            return Err(snap_error(
                ConfErrorKind::ConfigUnsupported,
                format!("unknown disk snapshot driver '{t}'"),
            ));
        }
        None => None,
    };
    let metadata_cache_max = match driver
        .and_then(|d| d.child("metadata_cache"))
        .and_then(|m| m.child("max_size"))
    {
        Some(max) => scaled_bytes(max, "./driver/metadata_cache/max_size")?,
        None => 0,
    };

    let local = matches!(disk_type, SnapshotDiskType::File | SnapshotDiskType::Block);
    if let Some(p) = path.as_deref().filter(|p| local && !p.starts_with('/')) {
        return Err(snap_error(
            ConfErrorKind::XmlError,
            format!("disk snapshot image path '{p}' must be absolute"),
        ));
    }

    let snapshot = match snapshot {
        None if path.is_some() || format.is_some() => Some(SnapshotLocation::External),
        other => other,
    };
    Ok(SnapshotDisk {
        name: name.to_owned(),
        snapshot,
        disk_type,
        path,
        source,
        format,
        metadata_cache_max,
        delete_in_progress,
    })
}

/// The path of a file or block `<source>` (`file=` / `dev=`) and the rest
/// of the element, kept for formatting.
fn split_source(src: &Element, disk_type: SnapshotDiskType) -> (Option<String>, Option<Element>) {
    let mut rest = src.clone();
    // Layout, not content: the writer indents on its own.
    rest.children
        .retain(|n| !matches!(n, Node::Text(t) if is_blank(t)));
    let attr = match disk_type {
        SnapshotDiskType::File => "file",
        SnapshotDiskType::Block => "dev",
        // The image's name on the server stands for the path (libvirt
        // keeps it there too); the element is written back as it is.
        SnapshotDiskType::Network => {
            let name = rest.attr("name").map(str::to_owned);
            return (name, Some(rest));
        }
        _ => return (None, Some(rest)),
    };
    let path = rest.remove_attr(attr);
    // libvirt writes no other attribute of a snapshot's <source> (not
    // even startupPolicy, which belongs to the domain's disk); children
    // such as <seclabel> it keeps.
    rest.attrs.clear();
    (path, Some(rest))
}

/// A size in bytes as libvirt's virParseScaledValue reads it with a scale
/// of 1 (no unit: bytes) and no upper bound but 64 bits.
fn scaled_bytes(el: &Element, xpath: &str) -> Result<u64, ConfError> {
    let text = el.text();
    let value = parse_u64(&text).ok_or_else(|| {
        ConfError::xml_helper(format!(
            "Invalid value '{text}' for element or attribute '{xpath}'"
        ))
    })?;
    let unit = el.attr("unit").unwrap_or("");
    let scale = unit_scale(unit)?;
    value.checked_mul(scale).ok_or_else(|| {
        ConfError::new(
            ConfErrorKind::Overflow,
            ConfErrorDomain::None,
            format!("value too large: {value}{unit}"),
        )
    })
}

/// `virStrToLong_ullp`: digits with optional leading white space and `+`.
fn parse_u64(s: &str) -> Option<u64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// virScaleInteger's suffixes with a default scale of 1.
fn unit_scale(suffix: &str) -> Result<u64, ConfError> {
    crate::conf::domain::scale_integer(suffix, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_scale_from_bytes() {
        let el = |t: &str, u: Option<&str>| {
            let mut e = Element::new("max_size").with_text(t);
            if let Some(u) = u {
                e.set_attr("unit", u);
            }
            e
        };
        assert_eq!(scaled_bytes(&el("7", None), "x"), Ok(7));
        assert_eq!(scaled_bytes(&el("2", Some("KiB")), "x"), Ok(2048));
        assert_eq!(scaled_bytes(&el("1", Some("MB")), "x"), Ok(1_000_000));
        assert!(scaled_bytes(&el("1", Some("XB")), "x").is_err());
        assert!(scaled_bytes(&el("z", None), "x").is_err());
        assert!(scaled_bytes(&el("18446744073709551615", Some("k")), "x").is_err());
    }
}
