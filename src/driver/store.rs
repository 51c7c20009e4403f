//! Files under the state and run directories, written atomically.
//!
//! Layout (both directories are created on start):
//!
//! ```text
//! STATE/domains/<uuid>.xml      persistent definition (inactive XML)
//! RUN/<uuid>/domain.json        live state of a running domain
//! RUN/<uuid>/...                QEMU's own files (monitor socket, pid, log)
//! ```
//!
//! Files are named by UUID, never by domain name, so no client-chosen
//! string ever becomes part of a path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DriverError;
use super::Uuid;

/// A definition file and what reading it gave.
pub type StoredConfig = (PathBuf, Result<String, DriverError>);

#[derive(Debug, Clone)]
pub struct Store {
    state_dir: PathBuf,
    run_dir: PathBuf,
}

/// What survives a daemon restart about a running domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveRecord {
    pub id: i32,
    pub persistent: bool,
    pub state: i32,
    pub reason: i32,
    /// The live definition (what dumpxml shows while running).
    pub xml: String,
}

impl Store {
    pub fn open(state_dir: &Path, run_dir: &Path) -> Result<Store, DriverError> {
        let store = Store {
            state_dir: state_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
        };
        for dir in [store.domains_dir(), store.run_dir.clone()] {
            fs::create_dir_all(&dir).map_err(|e| {
                DriverError::system(
                    format_args!("cannot create directory '{}'", dir.display()),
                    e,
                )
            })?;
        }
        Ok(store)
    }

    fn domains_dir(&self) -> PathBuf {
        self.state_dir.join("domains")
    }

    fn config_path(&self, uuid: &Uuid) -> PathBuf {
        self.domains_dir()
            .join(format!("{}.xml", uuid_string(uuid)))
    }

    /// The directory QEMU's files for this domain live in.
    pub fn domain_run_dir(&self, uuid: &Uuid) -> PathBuf {
        self.run_dir.join(uuid_string(uuid))
    }

    fn live_path(&self, uuid: &Uuid) -> PathBuf {
        self.domain_run_dir(uuid).join("domain.json")
    }

    pub fn save_config(&self, uuid: &Uuid, xml: &str) -> Result<(), DriverError> {
        write_atomic(&self.config_path(uuid), xml.as_bytes())
    }

    pub fn delete_config(&self, uuid: &Uuid) -> Result<(), DriverError> {
        remove_file_if_exists(&self.config_path(uuid))
    }

    /// Every stored definition, as (file, xml). Unreadable files are
    /// reported to the caller, not skipped silently.
    pub fn load_configs(&self) -> Result<Vec<StoredConfig>, DriverError> {
        let dir = self.domains_dir();
        let entries = fs::read_dir(&dir).map_err(|e| {
            DriverError::system(format_args!("cannot read directory '{}'", dir.display()), e)
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let xml = fs::read_to_string(&path).map_err(|e| {
                DriverError::system(format_args!("cannot read '{}'", path.display()), e)
            });
            out.push((path, xml));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub fn save_live(&self, uuid: &Uuid, record: &LiveRecord) -> Result<(), DriverError> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| DriverError::internal(format!("cannot serialize live state: {e}")))?;
        write_atomic(&self.live_path(uuid), &json)
    }

    /// Every run directory that holds a live record, with the record.
    pub fn load_live(&self) -> Vec<(PathBuf, Result<LiveRecord, String>)> {
        let Ok(entries) = fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let path = dir.join("domain.json");
            if !path.is_file() {
                continue;
            }
            let record = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
            out.push((dir, record));
        }
        out
    }

    /// Forgets a domain's live state; QEMU's files go with it.
    pub fn delete_live(&self, uuid: &Uuid) {
        let dir = self.domain_run_dir(uuid);
        if let Err(err) = fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %err, "cannot remove run directory");
            }
        }
    }
}

/// Writes `path` so that a crash leaves either the old or the new content:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), DriverError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| {
        DriverError::system(
            format_args!("cannot create directory '{}'", dir.display()),
            e,
        )
    })?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DriverError::system(format_args!("cannot write '{}'", path.display()), e)
    })
}

fn remove_file_if_exists(path: &Path) -> Result<(), DriverError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::system(
            format_args!("cannot remove config {}", path.display()),
            e,
        )),
    }
}

/// The canonical 36-character form libvirt prints.
pub fn uuid_string(uuid: &Uuid) -> String {
    uuid::Uuid::from_bytes(*uuid).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_and_are_named_by_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
        let uuid = [7u8; 16];
        store.save_config(&uuid, "<domain/>").unwrap();
        let configs = store.load_configs().unwrap();
        assert_eq!(configs.len(), 1);
        assert!(configs[0]
            .0
            .ends_with("07070707-0707-0707-0707-070707070707.xml"));
        assert_eq!(configs[0].1.as_deref().unwrap(), "<domain/>");
        store.delete_config(&uuid).unwrap();
        store.delete_config(&uuid).unwrap();
        assert!(store.load_configs().unwrap().is_empty());
    }

    #[test]
    fn live_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
        let uuid = [1u8; 16];
        let record = LiveRecord {
            id: 3,
            persistent: true,
            state: 1,
            reason: 1,
            xml: "<domain/>".into(),
        };
        store.save_live(&uuid, &record).unwrap();
        let loaded = store.load_live();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].1.as_ref().unwrap().id, 3);
        store.delete_live(&uuid);
        assert!(store.load_live().is_empty());
    }
}
