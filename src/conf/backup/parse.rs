//! From XML to an unaligned [`BackupDef`], in libvirt's order: the XML
//! parser, the root element, the schema, then the fields
//! (backup_conf.c, virDomainBackupDefParseString and what it calls).
//!
//! After the schema most of libvirt's own checks cannot fail (the mode,
//! the disk type, `<server>` in push mode, a unix server without a
//! socket); the ones that still can are a port above 65535, a socket path
//! that is "absolute" only in the Windows sense of the schema, a security
//! label model named twice on a store, and — ours — encryption on the
//! store.

use super::schema::{self, STORAGE_FORMATS};
use super::{
    BackupDef, BackupDisk, BackupMode, BackupServer, BackupStore, DiskBackupMode, StoreType,
    Transport,
};
use crate::conf::domain::DiskFormat;
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::seclabel::DeviceSeclabel;
use crate::conf::xml::rng::local_name;
use crate::conf::xml::{self, Element, Limits};

/// The label libvirt gives backup documents in parser errors.
const DOC_NAME: &str = "(domain_backup)";

pub(super) fn parse_backup(input: &str) -> Result<BackupDef, ConfError> {
    let root = xml::parse(input, DOC_NAME, &Limits::default()).map_err(|e| {
        // libxml2's complaints are reported from the caller's error
        // domain, which for backup_conf.c is the domain code.
        match (e.kind(), e.detail()) {
            (ConfErrorKind::XmlDetail, Some(d)) => {
                ConfError::new(ConfErrorKind::XmlDetail, ConfErrorDomain::Domain, d)
            }
            _ => e,
        }
    })?;
    let root_name = local_name(&root.name);
    if root_name != "domainbackup" {
        return Err(ConfError::xml_helper(format!(
            "expecting root element of 'domainbackup', not '{root_name}'"
        )));
    }
    schema::validate(&root)?;

    // After the schema: mode is push or pull, elements occur at most once,
    // and every value has the shape the schema gives it.
    let mode = match root.attr("mode") {
        Some("pull") => BackupMode::Pull,
        _ => BackupMode::Push,
    };
    let incremental = root.child("incremental").and_then(Element::text_nonempty);
    let server = root.child("server").map(parse_server).transpose()?;
    let disks = root
        .child("disks")
        .map(|d| {
            d.elements()
                .map(|disk| parse_disk(disk, mode))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(BackupDef {
        mode,
        incremental,
        server,
        disks,
    })
}

fn parse_server(e: &Element) -> Result<BackupServer, ConfError> {
    let transport = match e.attr("transport") {
        Some("unix") => Transport::Unix,
        _ => Transport::Tcp,
    };
    let socket = e.attr("socket").map(str::to_owned);
    if let (Transport::Unix, Some(path)) = (transport, &socket) {
        // The schema also takes `C:\...`, which is not absolute here.
        if !path.starts_with('/') {
            return Err(ConfError::xml(format!(
                "backup socket path '{path}' must be absolute"
            )));
        }
    }
    let mut port = 0;
    if let (Transport::Tcp, Some(text)) = (transport, e.attr("port")) {
        // Digits within 32 bits (schema); a port must fit 16.
        port = text
            .parse::<u32>()
            .ok()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                ConfError::new(
                    ConfErrorKind::InvalidArg,
                    ConfErrorDomain::None,
                    format!("port '{text}' out of range"),
                )
            })?;
    }
    Ok(BackupServer {
        transport,
        tls: e.attr("tls").map(|t| t == "yes"),
        name: match transport {
            Transport::Tcp => e.attr("name").map(str::to_owned),
            Transport::Unix => None,
        },
        port,
        socket,
    })
}

fn parse_disk(e: &Element, mode: BackupMode) -> Result<BackupDisk, ConfError> {
    let name = e.attr("name").unwrap_or_default().to_owned();
    let mut disk = BackupDisk {
        name,
        store: None,
        mode: None,
        incremental: None,
        export_name: None,
        export_bitmap: None,
        bitmap: None,
    };
    // libvirt reads nothing else of a disk that is not backed up.
    if e.attr("backup") == Some("no") {
        return Ok(disk);
    }
    if mode == BackupMode::Pull {
        disk.export_name = e.attr("exportname").map(str::to_owned);
        disk.export_bitmap = e.attr("exportbitmap").map(str::to_owned);
    }
    disk.mode = match e.attr("backupmode") {
        Some("full") => Some(DiskBackupMode::Full),
        Some("incremental") => Some(DiskBackupMode::Incremental),
        _ => None,
    };
    // An attribute is taken as written, even empty (unlike element text).
    disk.incremental = e.attr("incremental").map(str::to_owned);

    let kind = match e.attr("type") {
        Some("block") => StoreType::Block,
        _ => StoreType::File,
    };
    let format = e
        .child("driver")
        .and_then(|d| d.attr("type"))
        .filter(|t| STORAGE_FORMATS.contains(t))
        .map(disk_format);
    let store_el = e.child(match mode {
        BackupMode::Push => "target",
        BackupMode::Pull => "scratch",
    });
    let mut path = None;
    let mut seclabels = Vec::new();
    if let Some(s) = store_el {
        // libvirt reads the store as a live source (not INACTIVE), so
        // `labelskip` counts.
        seclabels = DeviceSeclabel::parse_all(s, false)?;
        if s.child("encryption").is_some() {
            return Err(ConfError::unsupported(format!(
                "encryption of the backup image of disk '{}' is not supported",
                disk.name
            )));
        }
        path = s
            .attr(match kind {
                StoreType::File => "file",
                StoreType::Block => "dev",
            })
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
    }
    disk.store = Some(BackupStore {
        kind,
        path,
        format,
        index: 0,
        seclabels,
    });
    Ok(disk)
}

fn disk_format(name: &str) -> DiskFormat {
    match name {
        "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        other => DiskFormat::Other(other.to_owned()),
    }
}
