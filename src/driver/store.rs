//! Files under the state and run directories, written atomically.
//!
//! Layout (both directories are created on start):
//!
//! ```text
//! STATE/domains/<uuid>.xml      persistent definition (inactive XML)
//! STATE/checkpoints/<uuid>/<name>.xml      one checkpoint's metadata
//! STATE/checkpoints/<uuid>/<name>.intent   a create or delete in progress
//! STATE/snapshots/<uuid>/<name>.xml        one snapshot's metadata
//! STATE/snapshots/<uuid>/<name>.intent     an internal snapshot create, delete or revert in progress
//! RUN/<uuid>/domain.json        live state of a running domain
//! RUN/<uuid>/backup.json        a backup: its begin's intent, then the running job
//! RUN/<uuid>/...                QEMU's own files (monitor socket, pid, log)
//! ```
//!
//! The driver holds a [`Metadata`], never a [`Store`]: a `Store` exists only
//! inside [`Metadata::run`], which runs on the blocking pool, so a durable
//! write (every write here fsyncs) cannot be made from an async thread.
//!
//! Files are named by UUID, never by domain name. A checkpoint name does
//! become a file name, but only through [`encode_name`], which keeps it to
//! one path component that cannot be `.`, `..` or hidden (and through a
//! hash where that would be too long for a file name).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::DriverError;
use super::Uuid;
use crate::fault::{Counted, Step};

/// A definition file and what reading it gave.
pub type StoredConfig = (PathBuf, Result<String, DriverError>);

/// The files themselves; reachable only through [`Metadata::run`].
#[derive(Debug)]
pub struct Store {
    state_dir: PathBuf,
    run_dir: PathBuf,
}

/// The driver's handle on its files.
#[derive(Debug, Clone)]
pub struct Metadata {
    store: Arc<Store>,
}

impl Metadata {
    /// Creates the directories (see the module docs) and tightens their
    /// modes.
    pub async fn open(state_dir: &Path, run_dir: &Path) -> Result<Metadata, DriverError> {
        let (state_dir, run_dir) = (state_dir.to_path_buf(), run_dir.to_path_buf());
        let store = blocking(move || Store::open(&state_dir, &run_dir)).await?;
        Ok(Metadata {
            store: Arc::new(store),
        })
    }

    /// Runs `op` on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, DriverError> + Send + 'static,
    ) -> Result<T, DriverError> {
        let store = self.store.clone();
        blocking(move || op(&store)).await
    }

    /// The directory QEMU's files for this domain live in (a path only).
    pub fn domain_run_dir(&self, uuid: &Uuid) -> PathBuf {
        self.store.domain_run_dir(uuid)
    }
}

async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| DriverError::internal(format!("metadata task failed: {e}")))?
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
    /// (disk target, K of its nodes `libvirt-K-*`) where an external
    /// snapshot moved the disk to a new top node.
    #[serde(default)]
    pub nodes: Vec<(String, u32)>,
    /// The overlays external snapshots put on the disks in this run.
    #[serde(default)]
    pub overlays: Vec<OverlayBase>,
    /// The next free N of the nodes `libvirt-N-*` (past the layers of the
    /// chains QEMU was started on); 0 in records of older daemons.
    #[serde(default)]
    pub next_node: u32,
}

/// An overlay an external snapshot put on a running disk, and the node it
/// went over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayBase {
    pub disk: String,
    /// K of the overlay's nodes `libvirt-K-*`.
    pub overlay: u32,
    /// K of the nodes below it.
    pub base: u32,
    /// The overlay's file.
    #[serde(default)]
    pub path: String,
}

impl LiveRecord {
    /// The node numbers the live definition had.
    pub fn apply_nodes(&self, def: &mut crate::conf::DomainDef) {
        for (target, index) in &self.nodes {
            if let Some(disk) = def.disk_by_target_mut(target) {
                disk.set_node_index(*index);
            }
        }
    }

    /// What [`Self::apply_nodes`] gives back: every disk whose number is
    /// not the one its position gives it.
    pub fn nodes_of(def: &crate::conf::DomainDef) -> Vec<(String, u32)> {
        let count = def.disks().len();
        def.disks()
            .iter()
            .enumerate()
            .filter(|(i, d)| usize::try_from(d.node_index()).ok() != Some(count - i))
            .map(|(_, d)| (d.target().to_string(), d.node_index()))
            .collect()
    }
}

impl Store {
    fn open(state_dir: &Path, run_dir: &Path) -> Result<Store, DriverError> {
        let store = Store {
            state_dir: state_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
        };
        create_private_dir(&store.domains_dir())?;
        fs::create_dir_all(&store.run_dir).map_err(|e| {
            DriverError::system(
                format_args!("cannot create directory '{}'", store.run_dir.display()),
                e,
            )
        })?;
        // A state directory made by an older version may be open to all.
        for dir in [&store.state_dir, &store.domains_dir()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR)).map_err(|e| {
                DriverError::system(format_args!("cannot protect '{}'", dir.display()), e)
            })?;
        }
        // What a daemon killed inside write_atomic left: the file it
        // replaced is whole, the temporary one is not needed.
        for dir in [&store.state_dir, &store.run_dir] {
            remove_stale_temp_files(dir, 3);
        }
        fresh::remove_unwritten(&store.state_dir.join("checkpoints"), "intent");
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

    /// Domains whose run directory holds a backup record but no live
    /// record: a backup whose QEMU went away while the daemon was writing
    /// the record (QEMU's exit removes the directory, the record's write
    /// makes it again), and the daemon died before it cleaned up.
    pub fn orphan_backups(&self) -> Vec<Uuid> {
        let Ok(entries) = fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|dir| dir.join("backup.json").is_file() && !dir.join("domain.json").exists())
            .filter_map(|dir| {
                let name = dir.file_name()?.to_str()?.to_string();
                Some(*uuid::Uuid::parse_str(&name).ok()?.as_bytes())
            })
            .collect()
    }

    /// Where the record of a running backup is kept.
    fn backup_path(&self, uuid: &Uuid) -> PathBuf {
        self.domain_run_dir(uuid).join("backup.json")
    }

    /// The record of a running backup (see driver/backup/follow.rs).
    pub fn save_backup(&self, uuid: &Uuid, record: &impl Serialize) -> Result<(), DriverError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| DriverError::internal(format!("cannot serialize backup: {e}")))?;
        write_atomic(&self.backup_path(uuid), &json)
    }

    pub fn load_backup<T: serde::de::DeserializeOwned>(
        &self,
        uuid: &Uuid,
    ) -> Option<Result<T, DriverError>> {
        let path = self.backup_path(uuid);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(Err(DriverError::system(
                    format_args!("cannot read '{}'", path.display()),
                    e,
                )))
            }
        };
        Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| DriverError::internal(format!("bad backup record: {e}"))),
        )
    }

    pub fn delete_backup(&self, uuid: &Uuid) {
        let _ = remove_file_if_exists(&self.backup_path(uuid));
    }

    /// Forgets a domain's live state; QEMU's files go with it. A backup
    /// record stays: a backup-begin still running when QEMU went away
    /// owns it, and settles it (or, after a crash, start-up or the next
    /// start of the domain ends the backup it names).
    pub fn delete_live(&self, uuid: &Uuid) {
        let dir = self.domain_run_dir(uuid);
        if self.backup_path(uuid).exists() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path != self.backup_path(uuid) {
                    let removed = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    if let Err(err) = removed {
                        tracing::warn!(file = %path.display(), %err, "cannot remove a run file");
                    }
                }
            }
            return;
        }
        if let Err(err) = fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %err, "cannot remove run directory");
            }
        }
    }
}

/// A checkpoint operation that touches both QEMU and the metadata, written
/// before it starts and removed when both sides agree, so that start-up or
/// reconnection can finish or undo it after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub checkpoint: String,
    pub action: IntentAction,
    /// (disk target, bitmap name) pairs the operation adds or removes.
    pub bitmaps: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentAction {
    /// Bitmaps are being added; without metadata they must go again.
    Create,
    /// Bitmaps and then metadata are being removed; finish the job.
    Delete,
}

/// An internal snapshot create, delete or revert that touches the images, written before
/// QEMU (or `qemu-img`) is touched and removed once the metadata is
/// written, so that start-up, a start, or the call's own error path can
/// undo what a crash cut short (driver/snapshot/intent.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIntent {
    pub snapshot: String,
    pub action: SnapshotAction,
    /// The covered disks' node indexes (K of their format nodes), for a
    /// running QEMU.
    pub nodes: Vec<u32>,
    /// The covered disks' images, for `qemu-img` once QEMU is gone.
    pub images: Vec<PathBuf>,
    /// The operation stops the guest, which must run afterwards.
    pub paused_by_us: bool,
    /// An external create's overlays.
    #[serde(default)]
    pub overlays: Vec<IntentOverlay>,
    /// An external create's metadata, written when it is rolled forward.
    #[serde(default)]
    pub metadata: Option<String>,
}

/// One overlay an external snapshot create makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentOverlay {
    pub disk: String,
    pub path: PathBuf,
    /// K of the overlay's nodes, for a running QEMU.
    pub node_index: u32,
    /// K of the disk's nodes below it.
    pub base: u32,
    pub block: bool,
    /// The create brings the file into being: it goes on a roll back.
    pub created: bool,
    /// A delete's: K of the disk's active layer when it began (the
    /// overlay's own K when the overlay is the active layer).
    #[serde(default)]
    pub active: u32,
    /// A delete's, for an overlay below the active layer: the image that
    /// has it as backing file, to take the base instead.
    #[serde(default)]
    pub above: Option<PathBuf>,
    /// A delete's: the image below the overlay as QEMU has it open (the
    /// snapshot's own record of it is stale once an older one went).
    #[serde(default)]
    pub base_layer: Option<crate::qemu::blockjob::Layer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotAction {
    /// An internal snapshot is being made; without metadata it goes again.
    Create,
    /// An internal snapshot is being deleted from the images, then from
    /// the metadata; finish the job.
    Delete,
    /// An internal snapshot is being loaded into a running QEMU; finish
    /// it: the job ends, the guest runs if it is to, the snapshot becomes
    /// current.
    Revert,
    /// External overlays are being made and switched to: once QEMU (or the
    /// definition) is on them, finish; else they go again.
    ExternalCreate,
    /// An external snapshot's overlays are being committed into the images
    /// below, no disk switched yet: undo (the commit jobs are cancelled).
    ExternalDelete,
    /// The disks are being switched to the images below: finish, with
    /// QEMU, or with `qemu-img` once QEMU is gone.
    ExternalSwitch,
}

impl Store {
    pub fn save_snapshot_intent(
        &self,
        uuid: &Uuid,
        intent: &SnapshotIntent,
    ) -> Result<(), DriverError> {
        let json = serde_json::to_vec(intent)
            .map_err(|e| DriverError::internal(format!("cannot serialize intent: {e}")))?;
        write_atomic(
            &self.moment_path(Moment::Snapshot, uuid, &intent.snapshot, "intent"),
            &json,
        )
    }

    pub fn delete_snapshot_intent(&self, uuid: &Uuid, snapshot: &str) -> Result<(), DriverError> {
        remove_file_if_exists(&self.moment_path(Moment::Snapshot, uuid, snapshot, "intent"))
    }

    pub fn load_snapshot_intents(
        &self,
        uuid: &Uuid,
    ) -> Vec<(PathBuf, Result<SnapshotIntent, DriverError>)> {
        read_dir_with(&self.moment_dir(Moment::Snapshot, uuid), "intent", |path| {
            let bytes = fs::read(path).map_err(|e| {
                DriverError::system(format_args!("cannot read '{}'", path.display()), e)
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|e| DriverError::internal(format!("bad intent {}: {e}", path.display())))
        })
    }

    fn checkpoint_dir(&self, uuid: &Uuid) -> PathBuf {
        self.moment_dir(Moment::Checkpoint, uuid)
    }

    fn moment_dir(&self, kind: Moment, uuid: &Uuid) -> PathBuf {
        let dir = match kind {
            Moment::Checkpoint => "checkpoints",
            Moment::Snapshot => "snapshots",
        };
        self.state_dir.join(dir).join(uuid_string(uuid))
    }

    fn checkpoint_path(&self, uuid: &Uuid, name: &str, ext: &str) -> PathBuf {
        self.moment_path(Moment::Checkpoint, uuid, name, ext)
    }

    fn moment_path(&self, kind: Moment, uuid: &Uuid, name: &str, ext: &str) -> PathBuf {
        self.moment_dir(kind, uuid)
            .join(format!("{}.{ext}", file_stem(name)))
    }

    pub fn save_snapshot(&self, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError> {
        write_atomic(
            &self.moment_path(Moment::Snapshot, uuid, name, "xml"),
            xml.as_bytes(),
        )
    }

    pub fn delete_snapshot(&self, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        remove_file_if_exists(&self.moment_path(Moment::Snapshot, uuid, name, "xml"))
    }

    /// Every stored snapshot of a domain, as XML, in no particular order.
    pub fn load_snapshots(&self, uuid: &Uuid) -> Vec<(PathBuf, Result<String, DriverError>)> {
        read_dir_with(&self.moment_dir(Moment::Snapshot, uuid), "xml", read_text)
    }

    /// Forgets every snapshot of a domain (undefine with
    /// SNAPSHOTS_METADATA, or a transient domain that stopped).
    pub fn delete_all_snapshots(&self, uuid: &Uuid) -> Result<(), DriverError> {
        remove_dir_if_exists(&self.moment_dir(Moment::Snapshot, uuid))
    }

    pub fn save_checkpoint(&self, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError> {
        write_atomic(&self.checkpoint_path(uuid, name, "xml"), xml.as_bytes())
    }

    pub fn delete_checkpoint(&self, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        remove_file_if_exists(&self.checkpoint_path(uuid, name, "xml"))
    }

    /// One stored checkpoint's XML, if there is one.
    pub fn load_checkpoint(&self, uuid: &Uuid, name: &str) -> Option<String> {
        fs::read_to_string(self.checkpoint_path(uuid, name, "xml")).ok()
    }

    /// Every stored checkpoint of a domain, as XML, in no particular order;
    /// those whose delete began ([`Store::retire_checkpoint`]) among them,
    /// so that finishing the delete finds its children.
    pub fn load_checkpoints(&self, uuid: &Uuid) -> Vec<(PathBuf, Result<String, DriverError>)> {
        let mut files = read_dir_with(&self.checkpoint_dir(uuid), "xml", read_text);
        files.extend(self.load_retired(uuid));
        files
    }

    /// The checkpoints whose delete began and was not finished, as XML.
    pub fn load_retired(&self, uuid: &Uuid) -> Vec<(PathBuf, Result<String, DriverError>)> {
        read_dir_with(&self.checkpoint_dir(uuid), RETIRED, read_text)
    }

    /// Begins deleting checkpoint `name` of a running domain: its metadata
    /// file is renamed to `NAME.deleting`, durably (the directory
    /// fsynced). That file is the delete's intent and the checkpoint's
    /// metadata in one: one journal commit where a separate intent record
    /// took three fsyncs (see store_settle.rs). Refused with NotFound
    /// (nothing changed) when there is no metadata file to rename.
    pub fn retire_checkpoint(&self, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        rename_durably(
            &self.checkpoint_path(uuid, name, "xml"),
            &self.checkpoint_path(uuid, name, RETIRED),
        )
    }

    /// Undoes [`Store::retire_checkpoint`]: QEMU refused the delete.
    pub fn restore_checkpoint(&self, uuid: &Uuid, name: &str) -> Result<(), DriverError> {
        rename_durably(
            &self.checkpoint_path(uuid, name, RETIRED),
            &self.checkpoint_path(uuid, name, "xml"),
        )
    }

    pub fn save_intent(&self, uuid: &Uuid, intent: &Intent) -> Result<(), DriverError> {
        let json = serde_json::to_vec(intent)
            .map_err(|e| DriverError::internal(format!("cannot serialize intent: {e}")))?;
        fresh::write_fresh(
            &self.checkpoint_path(uuid, &intent.checkpoint, "intent"),
            &json,
        )
    }

    /// Removes the intent record of an operation on `checkpoint` that has
    /// settled, in either form (a record, or the metadata of a retired
    /// checkpoint).
    pub fn delete_intent(&self, uuid: &Uuid, checkpoint: &str) -> Result<(), DriverError> {
        remove_file_if_exists(&self.checkpoint_path(uuid, checkpoint, RETIRED))?;
        remove_file_if_exists(&self.checkpoint_path(uuid, checkpoint, "intent"))
    }

    pub fn load_intents(&self, uuid: &Uuid) -> Vec<(PathBuf, Result<Intent, DriverError>)> {
        let read = read_dir_with(&self.checkpoint_dir(uuid), "intent", |path| {
            let bytes = fs::read(path).map_err(|e| {
                DriverError::system(format_args!("cannot read '{}'", path.display()), e)
            })?;
            if fresh::is_unwritten(&bytes) {
                return Ok(None);
            }
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DriverError::internal(format!("bad intent {}: {e}", path.display())))
        });
        read.into_iter()
            .filter_map(|(path, intent)| match intent {
                Ok(None) => None,
                Ok(Some(intent)) => Some((path, Ok(intent))),
                Err(err) => Some((path, Err(err))),
            })
            .collect()
    }

    /// Forgets every checkpoint of a domain (undefine with
    /// CHECKPOINTS_METADATA, or a transient domain that stopped).
    pub fn delete_all_checkpoints(&self, uuid: &Uuid) -> Result<(), DriverError> {
        remove_dir_if_exists(&self.checkpoint_dir(uuid))
    }
}

/// Which kind of moment a metadata directory holds.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Checkpoint,
    Snapshot,
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), DriverError> {
    let what = dir.display().to_string();
    let counted = Counted::before(Step::Remove, &what, None)
        .map_err(|e| DriverError::system(format_args!("cannot remove {what}"), e))?;
    let removed = fs::remove_dir_all(dir);
    if removed.is_ok() {
        counted.after(&what);
    }
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError::system(
            format_args!("cannot remove '{}'", dir.display()),
            e,
        )),
        _ => Ok(()),
    }
}

fn read_text(path: &Path) -> Result<String, DriverError> {
    fs::read_to_string(path)
        .map_err(|e| DriverError::system(format_args!("cannot read '{}'", path.display()), e))
}

/// The files of `dir` ending in `.ext`, read, sorted by path.
fn read_dir_with<T>(
    dir: &Path,
    ext: &str,
    read: impl Fn(&Path) -> Result<T, DriverError>,
) -> Vec<(PathBuf, Result<T, DriverError>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .map(|p| {
            let value = read(&p);
            (p, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Longest encoded name used as it is. With the extension this stays well
/// below the 255 bytes a file name may have on the usual file systems.
const STEM_MAX: usize = 200;

/// The file name (without extension) for a checkpoint: [`encode_name`] of
/// it, or, when that is too long for a file name, a prefix of it and a
/// SHA-256 of the whole name. `~` never occurs in an encoded name, so the
/// two forms cannot collide, and any name QEMU accepts for a bitmap (up to
/// 1023 bytes) can be stored: unlike libvirt, whose metadata write fails
/// above 251 bytes after the bitmap was made.
fn file_stem(name: &str) -> String {
    use sha2::Digest;
    let encoded = encode_name(name);
    if encoded.len() <= STEM_MAX {
        return encoded;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // The encoding is ASCII, so any byte index is a character boundary.
    format!("{}~{hex}", &encoded[..STEM_MAX - 65])
}

/// A client-chosen name as one safe path component: letters, digits and
/// `-_+,` pass; everything else (including every `.` and `/`) becomes
/// `%XX`, so the result is never `.`, `..`, hidden, or more than one
/// component, and distinct names stay distinct.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_+,".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Every file the daemon writes may hold a domain definition, and so
/// secrets (graphics passwords, disk cookies): only its owner reads them,
/// in directories only its owner enters, as libvirtd keeps its own.
const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and any missing parents with [`PRIVATE_DIR`].
/// Removes [`write_atomic`]'s temporary files (`.NAME.tmp`) under `dir`,
/// `depth` levels down at most.
fn remove_stale_temp_files(dir: &Path, depth: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && depth > 1 => remove_stale_temp_files(&path, depth - 1),
            Ok(kind) if kind.is_file() && name.starts_with('.') && name.ends_with(".tmp") => {
                if let Err(problem) = fs::remove_file(&path) {
                    tracing::warn!(%problem, path = %path.display(), "cannot remove a stale temporary file");
                }
            }
            _ => {}
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DriverError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|e| {
            DriverError::system(
                format_args!("cannot create directory '{}'", dir.display()),
                e,
            )
        })
}

/// Writes `path` so that a crash leaves either the old or the new content:
/// temp file, fsync, rename, fsync of the directory. The file is private
/// ([`PRIVATE_FILE`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), DriverError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let what = path.display().to_string();
    let result = (|| {
        // The crash tests' ENOSPC or stop (crate::fault).
        let counted = Counted::before(Step::Write, &what, None)?;
        // A stale temp file would keep its old mode.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()?;
        counted.after(&what);
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DriverError::system(format_args!("cannot write '{}'", path.display()), e)
    })
}

/// The extension of a checkpoint's metadata once its delete began.
const RETIRED: &str = "deleting";

/// Renames `from` to `to` and fsyncs their directory; counted as a
/// durable write by the crash tests.
fn rename_durably(from: &Path, to: &Path) -> Result<(), DriverError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let what = to.display().to_string();
    let result = (|| {
        let counted = Counted::before(Step::Write, &what, None)?;
        fs::rename(from, to)?;
        fs::File::open(dir)?.sync_all()?;
        counted.after(&what);
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        DriverError::system(format_args!("cannot rename '{}'", from.display()), e)
    })
}

fn remove_file_if_exists(path: &Path) -> Result<(), DriverError> {
    let what = path.display().to_string();
    let counted = Counted::before(Step::Remove, &what, None)
        .map_err(|e| DriverError::system(format_args!("cannot remove {what}"), e))?;
    match fs::remove_file(path) {
        Ok(()) => {
            counted.after(&what);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            counted.after(&what);
            Ok(())
        }
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

#[path = "store_fresh.rs"]
mod fresh;
#[path = "store_settle.rs"]
mod settle;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
