//! Matching a checkpoint's disks with a domain's, and the checks libvirt
//! makes on the way (checkpoint_conf.c, virDomainCheckpointAlignDisks and
//! virDomainCheckpointRedefinePrep; qemu_checkpoint.c,
//! qemuCheckpointPrepare).
//!
//! After alignment there is one entry per domain disk, in the domain's
//! order, named by target. Disks the document names keep what it asked
//! for; the others get a bitmap only when the document has no `<disks>` at
//! all and the disk is writable and has a source — whatever its format,
//! so a plain create on a domain with a writable raw disk fails on that
//! disk, as it does with libvirtd (`create-as-plain` in the captures).

use super::{CheckpointDef, CheckpointDisk, DiskRequest, ParsedCheckpoint};
use crate::conf::domain::{DiskDef, DiskFormat, DiskType, DomainDef};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};

fn unsupported(detail: String) -> ConfError {
    ConfError::new(
        ConfErrorKind::ConfigUnsupported,
        ConfErrorDomain::DomainCheckpoint,
        detail,
    )
}

pub(super) fn prepare_create(
    parsed: ParsedCheckpoint,
    running: &DomainDef,
) -> Result<CheckpointDef, ConfError> {
    let disks = align_disks(&parsed.name, &parsed.disks, running)?;
    // libvirt's QEMU driver, per aligned disk in the domain's order.
    for (disk, domain_disk) in disks.iter().zip(running.disks()) {
        let Some(bitmap) = &disk.bitmap else { continue };
        if *bitmap != parsed.name {
            return Err(ConfError::qemu_unsupported(format!(
                "bitmap for disk '{}' must match checkpoint name '{}'",
                disk.name, parsed.name
            )));
        }
        if *domain_disk.format() != DiskFormat::Qcow2 {
            return Err(ConfError::qemu_unsupported(format!(
                "checkpoint for disk {} unsupported for storage type {}",
                disk.name,
                domain_disk.format().as_str()
            )));
        }
    }
    Ok(CheckpointDef {
        name: parsed.name,
        description: parsed.description,
        parent: None,
        creation_time: parsed.creation_time,
        disks,
        domain: Some(running.clone()),
    })
}

pub(super) fn prepare_redefine(
    parsed: ParsedCheckpoint,
    domain: &DomainDef,
) -> Result<CheckpointDef, ConfError> {
    let disks = match &parsed.domain {
        Some(embedded) => {
            if embedded.uuid() != domain.uuid() {
                return Err(ConfError::new(
                    ConfErrorKind::InvalidArg,
                    ConfErrorDomain::DomainCheckpoint,
                    format!(
                        "definition for checkpoint {} must use uuid {}",
                        parsed.name,
                        domain.uuid().hyphenated()
                    ),
                ));
            }
            align_disks(&parsed.name, &parsed.disks, embedded)?
        }
        None => with_bitmap_names(&parsed.name, parsed.disks),
    };
    Ok(CheckpointDef {
        name: parsed.name,
        description: parsed.description,
        parent: parsed.parent,
        creation_time: parsed.creation_time,
        disks,
        domain: parsed.domain,
    })
}

pub(super) fn loaded(parsed: ParsedCheckpoint) -> CheckpointDef {
    CheckpointDef {
        disks: with_bitmap_names(&parsed.name, parsed.disks),
        name: parsed.name,
        description: parsed.description,
        parent: parsed.parent,
        creation_time: parsed.creation_time,
        domain: parsed.domain,
    }
}

/// The disks as written; a bitmap without a name is named after the
/// checkpoint.
fn with_bitmap_names(name: &str, requests: Vec<DiskRequest>) -> Vec<CheckpointDisk> {
    requests
        .into_iter()
        .map(|r| CheckpointDisk {
            bitmap: r
                .wants_bitmap
                .then(|| r.bitmap.unwrap_or_else(|| name.to_owned())),
            name: r.name,
        })
        .collect()
}

fn align_disks(
    name: &str,
    requests: &[DiskRequest],
    domain: &DomainDef,
) -> Result<Vec<CheckpointDisk>, ConfError> {
    let domain_disks = domain.disks();
    if requests.len() > domain_disks.len() {
        return Err(unsupported(
            "too many disk checkpoint requests for domain".to_owned(),
        ));
    }
    if domain_disks.is_empty() {
        return Err(unsupported(
            "domain must have at least one disk to perform checkpoints".to_owned(),
        ));
    }

    // Each named disk, in document order: it must exist, be named once,
    // and have something to track if a bitmap is asked for.
    let mut chosen: Vec<Option<&DiskRequest>> = vec![None; domain_disks.len()];
    for request in requests {
        let index = disk_index_by_name(domain_disks, &request.name)
            .ok_or_else(|| unsupported(format!("no disk named '{}'", request.name)))?;
        if chosen[index].is_some() {
            return Err(unsupported(format!(
                "disk '{}' specified twice",
                request.name
            )));
        }
        chosen[index] = Some(request);
        if request.wants_bitmap && !trackable(&domain_disks[index]) {
            return Err(unsupported(format!(
                "disk '{}' is empty or readonly",
                request.name
            )));
        }
    }

    // Without <disks>, every disk that can have a bitmap gets one.
    let default_bitmap = requests.is_empty();
    let aligned = domain_disks
        .iter()
        .zip(chosen)
        .map(|(disk, request)| {
            let bitmap = match request {
                Some(r) => r
                    .wants_bitmap
                    .then(|| r.bitmap.clone().unwrap_or_else(|| name.to_owned())),
                None => (default_bitmap && trackable(disk)).then(|| name.to_owned()),
            };
            CheckpointDisk {
                name: disk.target().to_owned(),
                bitmap,
            }
        })
        .collect();
    Ok(aligned)
}

/// libvirt's disk lookup by name: a name starting with `/` is a source
/// path and must name exactly one disk; anything else is a target.
fn disk_index_by_name(disks: &[DiskDef], name: &str) -> Option<usize> {
    if !name.starts_with('/') {
        return disks.iter().position(|d| d.target() == name);
    }
    let mut matches = disks
        .iter()
        .enumerate()
        .filter(|(_, d)| d.source() == Some(name));
    match (matches.next(), matches.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// Neither read-only nor empty (a local disk without a path, such as a
/// cdrom without media). Other storage types count as not empty: libvirt
/// decides that from details the domain model does not keep, and this
/// daemon runs only file and block disks.
fn trackable(disk: &DiskDef) -> bool {
    let empty =
        matches!(disk.disk_type(), DiskType::File | DiskType::Block) && disk.source().is_none();
    !empty && !disk.readonly()
}
