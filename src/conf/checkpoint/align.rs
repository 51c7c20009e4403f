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

use super::{CheckpointDef, CheckpointDisk, DiskRequest, KIND};
use crate::conf::domain::{DiskDef, DiskFormat, DomainDef};
use crate::conf::error::{ConfError, ConfErrorKind};
use crate::conf::moment::{place_disks, MomentDef};

pub(super) fn prepare_create(
    parsed: MomentDef<DiskRequest>,
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
    let mut def = parsed.with_disks(disks);
    def.domain = Some(running.clone());
    Ok(def)
}

pub(super) fn prepare_redefine(
    parsed: MomentDef<DiskRequest>,
    domain: &DomainDef,
) -> Result<CheckpointDef, ConfError> {
    parsed.check_uuid(&KIND, domain.uuid())?;
    let disks = match &parsed.domain {
        Some(embedded) => align_disks(&parsed.name, &parsed.disks, embedded)?,
        None => with_bitmap_names(&parsed.name, &parsed.disks),
    };
    Ok(parsed.with_disks(disks))
}

pub(super) fn loaded(parsed: MomentDef<DiskRequest>) -> CheckpointDef {
    let disks = with_bitmap_names(&parsed.name, &parsed.disks);
    parsed.with_disks(disks)
}

/// The disks as written; a bitmap without a name is named after the
/// checkpoint.
fn with_bitmap_names(name: &str, requests: &[DiskRequest]) -> Vec<CheckpointDisk> {
    requests
        .iter()
        .map(|r| CheckpointDisk {
            name: r.name.clone(),
            bitmap: bitmap_of(name, r),
        })
        .collect()
}

fn bitmap_of(name: &str, request: &DiskRequest) -> Option<String> {
    request
        .wants_bitmap
        .then(|| request.bitmap.clone().unwrap_or_else(|| name.to_owned()))
}

fn align_disks(
    name: &str,
    requests: &[DiskRequest],
    domain: &DomainDef,
) -> Result<Vec<CheckpointDisk>, ConfError> {
    let domain_disks = domain.disks();
    // Each named disk, in document order, must have something to track if
    // a bitmap is asked for.
    let chosen = place_disks(
        &KIND,
        requests.iter(),
        |r| &r.name,
        domain,
        |index, r| {
            if r.wants_bitmap && !trackable(&domain_disks[index]) {
                return Err(KIND.error(
                    ConfErrorKind::ConfigUnsupported,
                    format!("disk '{}' is empty or readonly", r.name),
                ));
            }
            Ok(())
        },
    )?;
    if domain_disks.is_empty() {
        return Err(KIND.error(
            ConfErrorKind::ConfigUnsupported,
            "domain must have at least one disk to perform checkpoints",
        ));
    }

    // Without <disks>, every disk that can have a bitmap gets one.
    let default_bitmap = requests.is_empty();
    let aligned = domain_disks
        .iter()
        .zip(chosen)
        .map(|(disk, request)| CheckpointDisk {
            name: disk.target().to_owned(),
            bitmap: match request {
                Some(r) => bitmap_of(name, r),
                None => (default_bitmap && trackable(disk)).then(|| name.to_owned()),
            },
        })
        .collect();
    Ok(aligned)
}

/// Neither read-only nor empty.
fn trackable(disk: &DiskDef) -> bool {
    !disk.is_empty() && !disk.readonly()
}
