//! Files written where none is: a checkpoint's intent record, written
//! before QEMU is touched, once per create and per delete.
//!
//! [`super::write_atomic`] writes a temporary file, fsyncs it, renames it
//! and fsyncs the directory: two journal commits on ext4, since the
//! rename comes after the file's fsync. A file that replaces nothing needs
//! no rename: created under its own name, written and fsynced, its
//! directory entry goes to disk in the same commit as its data, and the
//! directory's fsync, still made (POSIX asks for it), finds nothing left
//! (on this machine's disk: ~100-250 µs less per intent).
//!
//! The price: a crash between the creation and the write leaves the file
//! empty. Never partly written: one write(2) of a few hundred bytes is not
//! split by a signal, and ext4, XFS and btrfs show a file's new size only
//! with its data. An empty intent is therefore one whose write never
//! finished, so QEMU was never asked anything for it: readers skip it
//! ([`is_unwritten`]) and start-up removes it ([`remove_unwritten`]; not
//! the readers, which may meet one a writer is still filling). A file that exists already is replaced with
//! `write_atomic`, since a crash must not leave it empty.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{create_private_dir, write_atomic, DriverError, PRIVATE_FILE};
use crate::fault::{Counted, Step};

/// Writes `data` to `path` durably: as a new file if there is none, else
/// atomically over the old one.
pub(super) fn write_fresh(path: &Path, data: &[u8]) -> Result<(), DriverError> {
    if path.symlink_metadata().is_ok() {
        return write_atomic(path, data);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let what = path.display().to_string();
    let mut created = false;
    let result = (|| {
        // The crash tests' ENOSPC or stop (crate::fault).
        let counted = Counted::before(Step::Write, &what, None)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(path)?;
        created = true;
        file.write_all(data)?;
        file.sync_all()?;
        fs::File::open(dir)?.sync_all()?;
        counted.after(&what);
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        if created {
            let _ = fs::remove_file(path);
        }
        DriverError::system(format_args!("cannot write '{}'", path.display()), e)
    })
}

/// Whether a file [`write_fresh`] made holds `bytes`, which mean that it
/// was cut short before anything was written (see the module docs).
pub(super) fn is_unwritten(bytes: &[u8]) -> bool {
    bytes.is_empty()
}

/// Removes the empty `*.EXT` files one level under `root` (one directory
/// per domain): at start-up, before any operation could be writing one.
/// Readers in between skip them.
pub(super) fn remove_unwritten(root: &Path, ext: &str) {
    let Ok(domains) = fs::read_dir(root) else {
        return;
    };
    for file in domains
        .flatten()
        .flat_map(|d| fs::read_dir(d.path()))
        .flatten()
        .flatten()
    {
        let path = file.path();
        let empty = file.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
        if !empty || path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        tracing::info!(file = %path.display(), "removing a record whose write was cut short");
        if let Err(problem) = fs::remove_file(&path) {
            tracing::warn!(%problem, file = %path.display(), "cannot remove an empty record");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{Intent, IntentAction, Store};
    use super::*;

    #[test]
    fn a_new_file_is_written_private_and_an_old_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.intent");
        write_fresh(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, PRIVATE_FILE);
        write_fresh(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.intent"]);
    }

    #[test]
    fn an_intent_cut_short_before_its_write_is_skipped_and_removed_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
        let uuid = [2u8; 16];
        let intent = Intent {
            checkpoint: "a".into(),
            action: IntentAction::Delete,
            bitmaps: vec![("vda".into(), "a".into())],
        };
        store.save_intent(&uuid, &intent).unwrap();
        // What a daemon killed between open(2) and write(2) leaves.
        let empty = store.checkpoint_path(&uuid, "b", "intent");
        fs::write(&empty, b"").unwrap();
        // And something that is not ours to judge: kept, reported.
        let garbled = store.checkpoint_path(&uuid, "c", "intent");
        fs::write(&garbled, b"{\"checkpoint\":").unwrap();
        let read = store.load_intents(&uuid);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].1.as_ref().unwrap(), &intent);
        assert!(read[1].1.is_err());
        // Left alone while the daemon runs: a writer may be filling it.
        assert!(empty.exists());
        drop(store);
        let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
        assert!(!empty.exists() && garbled.exists());
        assert_eq!(store.load_intents(&uuid).len(), 2);
    }
}
