//! Matching a snapshot's disks with a domain's, the defaults libvirt fills
//! in, and the QEMU driver's checks of the result (snapshot_conf.c,
//! virDomainSnapshotAlignDisks, virDomainSnapshotDefAssignExternalNames,
//! virDomainSnapshotRedefineValidate; qemu_snapshot.c,
//! qemuSnapshotCreateXMLValidateDef, qemuSnapshotCreateAlignDisks,
//! qemuSnapshotPrepare).
//!
//! After alignment there is one entry per domain disk, in the domain's
//! order, named by target. A disk the document names keeps its mode, or
//! gets the domain disk's own `snapshot=` default, or the snapshot's
//! default (internal for a full snapshot, external for a disk-only one or
//! one with an external memory file). With an internal default every disk
//! must be internal too, except a disk whose domain definition says
//! `snapshot='no'`. Disks not named get the domain disk's default, or the
//! snapshot's default; empty ones `no`.

use uuid::Uuid;

use super::parse::snap_error;
use super::{
    CreateContext, CreateFlags, PreparedCreate, SnapshotDef, SnapshotDisk, SnapshotDiskType,
    SnapshotLocation, SnapshotState, KIND,
};
use crate::conf::domain::{
    DiskDef, DiskDevice, DiskFormat, DiskType, DomainDef, FormatMode, Secrets,
};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::moment::{place_disks, Moment};

fn qemu(kind: ConfErrorKind, detail: impl Into<String>) -> ConfError {
    ConfError::new(kind, ConfErrorDomain::Qemu, detail)
}

fn unsupported(detail: impl Into<String>) -> ConfError {
    snap_error(ConfErrorKind::ConfigUnsupported, detail)
}

pub(super) fn check_create(
    def: &SnapshotDef,
    flags: CreateFlags,
    active: bool,
    domain_state: SnapshotState,
) -> Result<(), ConfError> {
    if !flags.no_metadata {
        // The name becomes a file name.
        let why = if def.moment.name.contains('/') {
            Some("name can't contain '/'")
        } else if def.moment.name.starts_with('.') {
            Some("name can't start with '.'")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(qemu(
                ConfErrorKind::XmlDetail,
                format!("invalid snapshot name '{}': {why}", def.moment.name),
            ));
        }
    }
    if flags.live && (!active || def.memory != Some(SnapshotLocation::External)) {
        return Err(qemu(
            ConfErrorKind::OperationUnsupported,
            "live snapshot creation is supported only during full system snapshots",
        ));
    }
    let state = if flags.redefine {
        def.state.unwrap_or(domain_state)
    } else {
        domain_state
    };
    match state {
        SnapshotState::Running
        | SnapshotState::Paused
        | SnapshotState::Shutdown
        | SnapshotState::Shutoff
        | SnapshotState::Crashed => Ok(()),
        SnapshotState::DiskSnapshot if flags.redefine => Ok(()),
        SnapshotState::PmSuspended => Err(qemu(
            ConfErrorKind::OperationUnsupported,
            "qemu doesn't support taking snapshots of PMSUSPENDED guests",
        )),
        SnapshotState::DiskSnapshot | SnapshotState::Blocked => Err(qemu(
            ConfErrorKind::InternalError,
            format!("Invalid domain state {}", state.as_str()),
        )),
    }
}

pub(super) fn prepare_create(
    mut def: SnapshotDef,
    ctx: &CreateContext<'_>,
) -> Result<PreparedCreate, ConfError> {
    def.moment.domain = Some(ctx.domain.clone());
    def.inactive_domain = ctx.inactive_domain.cloned();

    let default = if ctx.disk_only {
        def.state = Some(if ctx.active {
            SnapshotState::DiskSnapshot
        } else {
            SnapshotState::Shutoff
        });
        def.memory = Some(SnapshotLocation::No);
        SnapshotLocation::External
    } else if def.memory == Some(SnapshotLocation::External) {
        def.state = Some(ctx.state);
        SnapshotLocation::External
    } else {
        def.state = Some(ctx.state);
        if ctx.active && def.memory == Some(SnapshotLocation::No) {
            return Err(qemu(
                ConfErrorKind::OperationUnsupported,
                "internal snapshot of a running VM must include the memory state",
            ));
        }
        def.memory = Some(if ctx.state == SnapshotState::Shutoff {
            SnapshotLocation::No
        } else {
            SnapshotLocation::Internal
        });
        SnapshotLocation::Internal
    };
    align_disks(&mut def, ctx.domain, default, ctx.is_regular_file)?;
    let (has_manual, disk_only) = qemu_prepare(&mut def, ctx)?;
    Ok(PreparedCreate {
        def,
        has_manual,
        disk_only: ctx.disk_only || disk_only,
    })
}

pub(super) fn prepare_redefine(
    mut def: SnapshotDef,
    domain_uuid: Uuid,
    existing: Option<&SnapshotDef>,
    disk_only: bool,
    is_regular_file: &dyn Fn(&str) -> bool,
) -> Result<SnapshotDef, ConfError> {
    let invalid = |detail: String| snap_error(ConfErrorKind::InvalidArg, detail);
    let state = def.state;
    let name = &def.moment.name;
    if disk_only && state != Some(SnapshotState::DiskSnapshot) {
        return Err(invalid(format!(
            "disk-only flag for snapshot {name} requires disk-snapshot state"
        )));
    }
    def.moment.check_uuid(&KIND, domain_uuid)?;
    if let Some(other) = existing {
        let online = |s: Option<SnapshotState>| s.is_some_and(SnapshotState::is_online);
        if online(other.state) != online(state) {
            return Err(invalid(format!(
                "cannot change between online and offline snapshot state in snapshot {name}"
            )));
        }
        let disk = |s: Option<SnapshotState>| s == Some(SnapshotState::DiskSnapshot);
        if disk(other.state) != disk(state) {
            return Err(invalid(format!(
                "cannot change between disk only and full system in snapshot {name}"
            )));
        }
    }

    let default = if state == Some(SnapshotState::DiskSnapshot) || def.is_external() {
        SnapshotLocation::External
    } else {
        SnapshotLocation::Internal
    };
    let domain = match (&def.moment.domain, existing.and_then(|o| o.domain())) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(snap_error(
                ConfErrorKind::InternalError,
                "missing domain in snapshot",
            ))
        }
    };
    align_disks(&mut def, &domain, default, is_regular_file)?;
    // A document without a domain (or with only its uuid) replaces the
    // rest of the snapshot but not the domain it recorded: libvirt moves
    // the old definition over (virDomainSnapshotReplaceDef). Only that
    // one: <inactiveDomain> and <cookie> are the document's.
    def.moment.domain = Some(domain);
    Ok(def)
}

/// Each domain disk's own `snapshot=` attribute, in the domain's order.
/// The domain model keeps it verbatim, so it is read from the model's own
/// formatting of the disks.
fn domain_disk_defaults(domain: &DomainDef) -> Vec<Option<SnapshotLocation>> {
    let root = domain.to_element(FormatMode::Inactive, Secrets::Shown);
    let defaults: Vec<_> = root
        .children_named("devices")
        .flat_map(|d| d.children_named("disk"))
        .map(|d| d.attr("snapshot").and_then(SnapshotLocation::from_xml))
        .collect();
    if defaults.len() == domain.disks().len() {
        defaults
    } else {
        vec![None; domain.disks().len()]
    }
}

fn align_disks(
    def: &mut SnapshotDef,
    domain: &DomainDef,
    default: SnapshotLocation,
    is_regular_file: &dyn Fn(&str) -> bool,
) -> Result<(), ConfError> {
    let domain_disks = domain.disks();
    // The hypervisor cannot take part of the disks into an internal
    // snapshot.
    let require_match = default == SnapshotLocation::Internal;
    let disk_defaults = domain_disk_defaults(domain);

    let requests = std::mem::take(&mut def.moment.disks);
    let chosen = place_disks(
        &KIND,
        requests.into_iter(),
        |r| &r.name,
        domain,
        |index, request| {
            let dom_default = disk_defaults[index];
            match request.snapshot {
                None => {
                    request.snapshot = Some(match dom_default {
                        Some(d) if !require_match || d == SnapshotLocation::No => d,
                        _ => default,
                    });
                }
                Some(mode)
                    if require_match
                        && mode != default
                        && !(mode == SnapshotLocation::No
                            && dom_default == Some(SnapshotLocation::No)) =>
                {
                    return Err(unsupported(format!(
                        "disk '{}' must use snapshot mode '{}'",
                        request.name,
                        default.as_str()
                    )));
                }
                Some(_) => {}
            }
            if let Some(path) = &request.path {
                if request.snapshot != Some(SnapshotLocation::External) {
                    return Err(unsupported(format!(
                        "file '{path}' for disk '{}' requires use of external snapshot mode",
                        request.name
                    )));
                }
            }
            request.name = domain_disks[index].target().to_owned();
            Ok(())
        },
    )?;
    if domain_disks.is_empty() {
        return Ok(());
    }

    def.moment.disks = domain_disks
        .iter()
        .zip(chosen)
        .zip(&disk_defaults)
        .map(|((disk, request), dom_default)| {
            request.unwrap_or_else(|| SnapshotDisk {
                name: disk.target().to_owned(),
                snapshot: Some(if disk.is_empty() {
                    SnapshotLocation::No
                } else {
                    dom_default.unwrap_or(default)
                }),
                disk_type: SnapshotDiskType::File,
                path: None,
                source: None,
                format: None,
                metadata_cache_max: 0,
                delete_in_progress: false,
            })
        })
        .collect();
    assign_external_names(def, domain_disks, is_regular_file)
}

/// An external disk without a file gets `<source minus its suffix>.<name>`
/// next to its current image.
fn assign_external_names(
    def: &mut SnapshotDef,
    domain_disks: &[DiskDef],
    is_regular_file: &dyn Fn(&str) -> bool,
) -> Result<(), ConfError> {
    for i in 0..def.moment.disks.len() {
        let disk = &def.moment.disks[i];
        if disk.snapshot != Some(SnapshotLocation::External) || disk.path.is_some() {
            continue;
        }
        let cannot =
            |why: String| unsupported(format!("cannot generate external snapshot name {why}"));
        if disk.disk_type != SnapshotDiskType::File {
            return Err(cannot(format!(
                "for disk '{}' on a '{}' device",
                disk.name,
                disk.disk_type.as_str()
            )));
        }
        let Some(orig) = domain_disks.get(i).and_then(DiskDef::source) else {
            return Err(cannot(format!("for disk '{}' without source", disk.name)));
        };
        if !is_regular_file(orig) {
            return Err(unsupported(format!(
                "source for disk '{}' is not a regular file; refusing to generate external snapshot name",
                disk.name
            )));
        }
        let stem = match orig.rfind('.') {
            Some(dot) if !orig[dot..].contains('/') => &orig[..dot],
            _ => orig,
        };
        let path = format!("{stem}.{}", def.moment.name);
        if let Some(other) = def.moment.disks[..i]
            .iter()
            .find(|d| d.path.as_deref() == Some(path.as_str()))
        {
            return Err(cannot(format!(
                "for disk '{}': collision with disk '{}'",
                def.moment.disks[i].name, other.name
            )));
        }
        def.moment.disks[i].path = Some(path);
    }
    Ok(())
}

/// qemuSnapshotPrepare, without what needs the files or block jobs (see
/// the module docs of `snapshot`). Returns (has_manual, disk_only).
fn qemu_prepare(def: &mut SnapshotDef, ctx: &CreateContext<'_>) -> Result<(bool, bool), ConfError> {
    let active = ctx.active;
    let mut found_internal = false;
    let mut forbid_internal = false;
    let mut has_manual = false;
    let mut external = 0usize;
    let unsupported = |d: String| qemu(ConfErrorKind::ConfigUnsupported, d);
    let internal = |d: String| qemu(ConfErrorKind::InternalError, d);

    for (disk, dom) in def.moment.disks.iter_mut().zip(ctx.domain.disks()) {
        match disk.snapshot {
            Some(SnapshotLocation::Internal) => {
                found_internal = true;
                if def.state == Some(SnapshotState::DiskSnapshot) && active {
                    return Err(unsupported(format!(
                        "active qemu domains require external disk snapshots; disk {} requested internal",
                        disk.name
                    )));
                }
                if !active && !matches!(dom.disk_type(), DiskType::File | DiskType::Block) {
                    return Err(internal(format!(
                        "internal inactive snapshots are not supported on '{}' disks",
                        dom.disk_type().as_str()
                    )));
                }
                if *dom.format() != DiskFormat::Qcow2 {
                    return Err(unsupported(format!(
                        "internal snapshot for disk {} unsupported for storage type {}",
                        disk.name,
                        dom.format().as_str()
                    )));
                }
            }
            Some(SnapshotLocation::External) => {
                match disk.format.as_deref() {
                    None => disk.format = Some("qcow2".to_owned()),
                    Some("qcow2" | "qed") => {}
                    Some(other) => {
                        return Err(unsupported(format!(
                            "external snapshot format for disk {} is unsupported: {other}",
                            disk.name
                        )));
                    }
                }
                if disk.metadata_cache_max > 0 && disk.format.as_deref() != Some("qcow2") {
                    return Err(unsupported(
                        "metadata cache max size control is supported only with qcow2 images"
                            .to_owned(),
                    ));
                }
                let local = |t: SnapshotDiskType| {
                    matches!(t, SnapshotDiskType::File | SnapshotDiskType::Block)
                };
                if active {
                    if dom.device() == DiskDevice::Lun {
                        return Err(unsupported(
                            "external active snapshots are not supported on scsi passthrough devices"
                                .to_owned(),
                        ));
                    }
                    if !local(disk.disk_type) && disk.disk_type != SnapshotDiskType::Network {
                        return Err(internal(format!(
                            "external active snapshots are not supported on '{}' disks",
                            disk.disk_type.as_str()
                        )));
                    }
                } else {
                    if !matches!(dom.disk_type(), DiskType::File | DiskType::Block) {
                        return Err(internal(format!(
                            "external inactive snapshots are not supported on '{}' disks",
                            dom.disk_type().as_str()
                        )));
                    }
                    if !local(disk.disk_type) {
                        return Err(internal(format!(
                            "external inactive snapshots are not supported on '{}' disks",
                            disk.disk_type.as_str()
                        )));
                    }
                }
                external += 1;
            }
            Some(SnapshotLocation::Manual) => {
                has_manual = true;
                forbid_internal = true;
            }
            Some(SnapshotLocation::No) => {
                if !dom.is_empty() && !dom.readonly() {
                    forbid_internal = true;
                }
            }
            None => return Err(internal("unexpected code path".to_owned())),
        }
    }

    let memory = def.memory;
    if !found_internal && external == 0 && memory == Some(SnapshotLocation::No) {
        return Err(unsupported("nothing selected for snapshot".to_owned()));
    }
    if (memory == Some(SnapshotLocation::Internal) && !found_internal)
        || (found_internal && forbid_internal)
    {
        return Err(unsupported(
            "internal and full system snapshots require all disks to be selected for snapshot"
                .to_owned(),
        ));
    }
    if def.state == Some(SnapshotState::DiskSnapshot) && external == 0 {
        return Err(unsupported(
            "disk-only snapshots require at least one disk to be selected for snapshot".to_owned(),
        ));
    }
    if (external > 0 && (found_internal || memory == Some(SnapshotLocation::Internal)))
        || (memory == Some(SnapshotLocation::External) && found_internal)
    {
        return Err(unsupported(
            "mixing internal and external targets for a snapshot is not yet supported".to_owned(),
        ));
    }
    Ok((has_manual, external > 0 && !active))
}
