//! Matching a backup's disks with the running domain's, and the QEMU
//! driver's checks that need no QEMU (backup_conf.c,
//! virDomainBackupAlignDisks; qemu_backup.c, qemuBackupPrepare and
//! qemuBackupDiskPrepareDataOne).
//!
//! Alignment keeps the named disks first, in the document's order, and
//! appends every other domain disk in the domain's order. Those are
//! backed up only when the document names no disk at all, and then only if
//! they are writable and have media; their target is a new file next to
//! the source, which libvirt can only name for a file-backed disk.

use std::collections::HashSet;

use super::{
    BackupDef, BackupDisk, BackupEnv, BackupMode, BackupStore, DiskBackupMode, StoreType, Transport,
};
use crate::conf::domain::{DiskBus, DiskDef, DiskFormat, DiskType, DomainDef};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};

pub(super) fn align_disks(
    mut def: BackupDef,
    domain: &DomainDef,
    suffix: &str,
) -> Result<BackupDef, ConfError> {
    let domain_disks = domain.disks();
    if domain_disks.is_empty() {
        return Err(ConfError::unsupported(
            "domain must have at least one disk to perform backup",
        ));
    }

    let mut named: HashSet<String> = HashSet::new();
    for disk in &mut def.disks {
        let Some(domain_disk) = domain.disk_by_target(&disk.name) else {
            return Err(ConfError::unsupported(format!(
                "no disk named '{}'",
                disk.name
            )));
        };
        if !named.insert(disk.name.clone()) {
            return Err(ConfError::unsupported(format!(
                "disk '{}' specified twice",
                disk.name
            )));
        }
        if disk.mode == Some(DiskBackupMode::Incremental)
            && disk.incremental.is_none()
            && def.incremental.is_none()
        {
            return Err(ConfError::unsupported(format!(
                "'incremental' backup mode of disk '{}' requires setting 'incremental' field for disk or backup",
                disk.name
            )));
        }
        if disk.store.is_some() && is_empty(domain_disk) {
            return Err(ConfError::unsupported(format!(
                "disk '{}' has no media",
                disk.name
            )));
        }
    }

    let backup_all = def.disks.is_empty();
    for domain_disk in domain_disks {
        if named.contains(domain_disk.target()) {
            continue;
        }
        let name = domain_disk.target().to_owned();
        let store = if backup_all && !is_empty(domain_disk) && !domain_disk.readonly() {
            Some(default_store(&name, domain_disk, suffix)?)
        } else {
            None
        };
        def.disks.push(BackupDisk {
            name,
            store,
            mode: None,
            incremental: None,
            export_name: None,
            export_bitmap: None,
            bitmap: None,
        });
    }

    for disk in &mut def.disks {
        let mode =
            *disk
                .mode
                .get_or_insert(if def.incremental.is_some() || disk.incremental.is_some() {
                    DiskBackupMode::Incremental
                } else {
                    DiskBackupMode::Full
                });
        if mode == DiskBackupMode::Incremental && disk.incremental.is_none() {
            disk.incremental.clone_from(&def.incremental);
        }
    }
    Ok(def)
}

/// A target file next to the disk's source; other storage has no name to
/// derive one from.
fn default_store(name: &str, disk: &DiskDef, suffix: &str) -> Result<BackupStore, ConfError> {
    match (disk.disk_type(), disk.source()) {
        (DiskType::File, Some(source)) => Ok(BackupStore {
            kind: StoreType::File,
            path: Some(format!("{source}.{suffix}")),
            format: None,
            index: 0,
            seclabels: Vec::new(),
        }),
        _ => Err(ConfError::unsupported(format!(
            "refusing to generate file name for disk '{name}'"
        ))),
    }
}

/// No media: a local disk without a path (a cdrom without a disc). Other
/// storage types count as having media (libvirt also calls a `dir` disk
/// without a path empty, but the domain model keeps no path for those and
/// they are never started here).
fn is_empty(disk: &DiskDef) -> bool {
    matches!(disk.disk_type(), DiskType::File | DiskType::Block) && disk.source().is_none()
}

pub(super) fn prepare_server(def: &mut BackupDef) -> Result<(), ConfError> {
    if def.mode != BackupMode::Pull {
        return Ok(());
    }
    // The schema makes <server> mandatory in pull mode, so libvirt's
    // default (TCP on localhost) is never used; it would fail below.
    match &def.server {
        Some(s) if s.transport == Transport::Unix || s.port != 0 => Ok(()),
        _ => Err(ConfError::new(
            ConfErrorKind::OperationUnsupported,
            ConfErrorDomain::Qemu,
            "<domainbackup> must specify TCP port for now",
        )),
    }
}

pub(super) fn prepare_disks(
    def: &mut BackupDef,
    domain: &DomainDef,
    env: &mut dyn BackupEnv,
) -> Result<(), ConfError> {
    let pull = def.mode == BackupMode::Pull;
    let mut selected = 0usize;
    for disk in &mut def.disks {
        let Some(store) = disk.store.as_mut() else {
            continue;
        };
        selected += 1;
        let Some(domain_disk) = domain.disk_by_target(&disk.name) else {
            return Err(ConfError::new(
                ConfErrorKind::InvalidArg,
                ConfErrorDomain::Qemu,
                format!("no disk named '{}'", disk.name),
            ));
        };
        block_jobs_supported(domain_disk)?;
        match &store.format {
            None => store.format = Some(DiskFormat::Qcow2),
            Some(DiskFormat::Qcow2) => {}
            Some(_) if pull => {
                return Err(ConfError::qemu_unsupported(format!(
                    "pull mode backup for disk '{}' requires qcow2 driver",
                    disk.name
                )));
            }
            Some(_) => {}
        }
        store.index = env.new_storage_id();

        if let Some(checkpoint) = &disk.incremental {
            if !env.checkpoint_exists(checkpoint) {
                return Err(ConfError::new(
                    ConfErrorKind::NoDomainCheckpoint,
                    ConfErrorDomain::Qemu,
                    format!(
                        "Checkpoint '{checkpoint}' for incremental backup of disk '{}' not found",
                        disk.name
                    ),
                ));
            }
            let bitmap = disk
                .export_bitmap
                .clone()
                .unwrap_or_else(|| format!("backup-{}", disk.name));
            if !env.bitmap_chain_valid(domain_disk, checkpoint) {
                return Err(ConfError::new(
                    ConfErrorKind::CheckpointInconsistent,
                    ConfErrorDomain::Qemu,
                    format!(
                        "missing or broken bitmap '{checkpoint}' for disk '{}'",
                        disk.name
                    ),
                ));
            }
            if pull && disk.export_bitmap.is_none() {
                disk.export_bitmap = Some(bitmap.clone());
            }
            disk.bitmap = Some(bitmap);
        }
        if store.path.is_none() {
            // What QEMU's blockdev properties builder says when a listed
            // disk has no <target>: libvirt 9.0 makes up no name for it.
            return Err(ConfError::new(
                ConfErrorKind::InternalError,
                ConfErrorDomain::None,
                "argument key 'filename' must not have null value",
            ));
        }
        if pull && disk.export_name.is_none() {
            // libvirt names the export when it adds it, after the job has
            // started; nothing can fail in between that this model sees.
            disk.export_name = Some(disk.name.clone());
        }
    }
    if selected == 0 {
        return Err(ConfError::qemu_unsupported("no disks selected for backup"));
    }
    Ok(())
}

/// qemuDomainDiskBlockJobIsSupported, for what the domain model knows (it
/// has no transient disks).
fn block_jobs_supported(disk: &DiskDef) -> Result<(), ConfError> {
    let detail = if disk.bus() == DiskBus::Sd {
        format!(
            "block jobs are not supported on disk '{}' using bus 'sd'",
            disk.target()
        )
    } else if disk.disk_type() == DiskType::VhostUser {
        format!(
            "block jobs are not supported on vhostuser disk '{}'",
            disk.target()
        )
    } else {
        return Ok(());
    };
    Err(ConfError::new(
        ConfErrorKind::OperationUnsupported,
        ConfErrorDomain::Qemu,
        detail,
    ))
}
