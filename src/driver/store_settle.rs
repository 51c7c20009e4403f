//! The metadata end of a checkpoint create or delete, each in one call on
//! the blocking pool (one thread hand-off, not one per file): the call is
//! acknowledged once it returns, so what it did must be on disk, not only
//! in the page cache, and the intent record goes last.
//!
//! A create's metadata file is written atomically (fsynced, renamed, its
//! directory fsynced); the intent's removal after it need not be durable:
//! a create intent beside its metadata is settled at start-up.
//!
//! A delete of a running domain's checkpoint begins by renaming its
//! metadata file to `NAME.deleting` and fsyncing the directory
//! ([`Store::retire_checkpoint`]): from then on the delete is decided, and
//! start-up finishes one it finds (children re-parented, bitmaps removed
//! once QEMU runs), as for a delete intent. Once QEMU has removed the
//! bitmaps, the children are re-written and the retired file is unlinked
//! without an fsync: if a power cut brings it back, start-up finishes a
//! delete that was finished, and nobody sees the checkpoint in between.
//! A later create of the same name fsyncs the directory (its intent)
//! before QEMU is asked anything, which makes the unlink durable first.
//! One journal commit per delete, where an intent record of its own took
//! three fsyncs: its file, its directory, and the directory again after
//! the metadata's removal.
//!
//! Without QEMU (a shut-off domain, or start-up finishing a delete), the
//! metadata is removed in place. Unlinking a file changes only its
//! directory, so such a delete is durable once the directory is fsynced. One fsync covers the checkpoint's file
//! (and, with it, any earlier unsynced removal in the directory); the
//! intent record goes after that fsync, unsynced: if a power cut brings it
//! back, it is a delete intent for a checkpoint that is gone, which
//! reconcile finishes by removing bitmaps that are not there. The other
//! order could bring back the checkpoint without its intent, and with its
//! bitmap gone.

use std::fs;
use std::path::Path;

use super::{remove_file_if_exists, write_atomic, DriverError, Store, Uuid};

impl Store {
    /// Writes a new checkpoint's metadata, then removes its intent record;
    /// a failure there is only logged, as start-up drops it.
    pub fn record_checkpoint(&self, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError> {
        self.save_checkpoint(uuid, name, xml)?;
        self.drop_settled_intent(uuid, name);
        Ok(())
    }

    /// Removes checkpoint `name`'s metadata durably after writing its
    /// children's new files (`children`: (name, xml) each, written
    /// atomically first, so that no child ever names a parent that is
    /// gone). Then, if `settled`, removes its intent record; a failure
    /// there is only logged, as the next reconcile drops it.
    pub fn discard_checkpoint(
        &self,
        uuid: &Uuid,
        name: &str,
        children: &[(String, String)],
        settled: bool,
    ) -> Result<(), DriverError> {
        for (child, xml) in children {
            write_atomic(&self.checkpoint_path(uuid, child, "xml"), xml.as_bytes())?;
        }
        let file = self.checkpoint_path(uuid, name, "xml");
        remove_file_if_exists(&file)?;
        sync_parent(&file)?;
        if settled {
            self.drop_settled_intent(uuid, name);
        }
        Ok(())
    }

    /// Finishes the delete of a retired checkpoint (QEMU's bitmaps are
    /// gone): its children's new files, written atomically first, then
    /// its retired metadata removed, unsynced (see the module docs).
    pub fn discard_retired(
        &self,
        uuid: &Uuid,
        name: &str,
        children: &[(String, String)],
    ) -> Result<(), DriverError> {
        for (child, xml) in children {
            write_atomic(&self.checkpoint_path(uuid, child, "xml"), xml.as_bytes())?;
        }
        self.drop_settled_intent(uuid, name);
        Ok(())
    }

    fn drop_settled_intent(&self, uuid: &Uuid, name: &str) {
        if let Err(err) = self.delete_intent(uuid, name) {
            tracing::warn!(%err, "cannot remove a checkpoint intent record");
        }
    }
}

/// Makes what happened to `path`'s directory entry durable. A directory
/// that is not there has nothing to sync: the removal of the checkpoints
/// of an undefined domain took it.
fn sync_parent(path: &Path) -> Result<(), DriverError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let synced = match fs::File::open(dir) {
        Ok(handle) => handle.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    synced.map_err(|e| DriverError::system(format_args!("cannot sync '{}'", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::super::{Intent, IntentAction};
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
        (dir, store)
    }

    fn delete_intent(name: &str) -> Intent {
        Intent {
            checkpoint: name.into(),
            action: IntentAction::Delete,
            bitmaps: vec![("vda".into(), name.into())],
        }
    }

    fn names(store: &Store, uuid: &Uuid) -> Vec<String> {
        store
            .load_checkpoints(uuid)
            .into_iter()
            .map(|(_, xml)| xml.unwrap())
            .collect()
    }

    #[test]
    fn a_record_writes_the_metadata_then_drops_the_intent() {
        let (_dir, store) = store();
        let uuid = [4u8; 16];
        let mut intent = delete_intent("a");
        intent.action = IntentAction::Create;
        store.save_intent(&uuid, &intent).unwrap();
        store.record_checkpoint(&uuid, "a", "a").unwrap();
        assert_eq!(names(&store, &uuid), ["a"]);
        assert!(store.load_intents(&uuid).is_empty());
        // Metadata that cannot be written keeps the intent, which has the
        // bitmaps taken back.
        fs::create_dir_all(store.checkpoint_path(&uuid, "b", "xml").join("x")).unwrap();
        intent.checkpoint = "b".into();
        store.save_intent(&uuid, &intent).unwrap();
        assert!(store.record_checkpoint(&uuid, "b", "b").is_err());
        assert_eq!(store.load_intents(&uuid)[0].1.as_ref().unwrap(), &intent);
    }

    #[test]
    fn a_discard_rewrites_the_children_and_removes_file_then_intent() {
        let (_dir, store) = store();
        let uuid = [5u8; 16];
        for name in ["a", "b", "c"] {
            store.save_checkpoint(&uuid, name, name).unwrap();
        }
        store.save_intent(&uuid, &delete_intent("b")).unwrap();
        let children = [("c".to_string(), "c under a".to_string())];
        store
            .discard_checkpoint(&uuid, "b", &children, true)
            .unwrap();
        assert_eq!(names(&store, &uuid), ["a", "c under a"]);
        assert!(store.load_intents(&uuid).is_empty());
        // Gone already (a reconcile finishing it twice): nothing to do.
        store.discard_checkpoint(&uuid, "b", &[], true).unwrap();
    }

    #[test]
    fn an_unsettled_discard_keeps_the_intent() {
        let (_dir, store) = store();
        let uuid = [6u8; 16];
        store.save_checkpoint(&uuid, "a", "a").unwrap();
        store.save_intent(&uuid, &delete_intent("a")).unwrap();
        store.discard_checkpoint(&uuid, "a", &[], false).unwrap();
        assert!(names(&store, &uuid).is_empty());
        assert_eq!(store.load_intents(&uuid).len(), 1);
    }

    #[test]
    fn a_file_that_cannot_be_removed_keeps_the_intent() {
        // The intent is what finishes the delete after a crash: it must
        // outlive the metadata, never the other way round.
        let (_dir, store) = store();
        let uuid = [8u8; 16];
        store.save_intent(&uuid, &delete_intent("a")).unwrap();
        let file = store.checkpoint_path(&uuid, "a", "xml");
        fs::create_dir_all(file.join("in-the-way")).unwrap();
        assert!(store.discard_checkpoint(&uuid, "a", &[], true).is_err());
        assert_eq!(store.load_intents(&uuid).len(), 1);
    }

    #[test]
    fn a_child_that_cannot_be_written_keeps_the_parent() {
        let (_dir, store) = store();
        let uuid = [9u8; 16];
        store.save_checkpoint(&uuid, "a", "a").unwrap();
        store.save_intent(&uuid, &delete_intent("a")).unwrap();
        let child = store.checkpoint_path(&uuid, "b", "xml");
        fs::create_dir_all(child.join("in-the-way")).unwrap();
        let children = [("b".to_string(), "b".to_string())];
        assert!(store
            .discard_checkpoint(&uuid, "a", &children, true)
            .is_err());
        assert_eq!(store.load_checkpoint(&uuid, "a").as_deref(), Some("a"));
        assert_eq!(store.load_intents(&uuid).len(), 1);
    }

    #[test]
    fn a_retired_checkpoint_is_loaded_until_its_delete_is_finished() {
        let (_dir, store) = store();
        let uuid = [10u8; 16];
        for name in ["a", "b", "c"] {
            store.save_checkpoint(&uuid, name, name).unwrap();
        }
        store.retire_checkpoint(&uuid, "b").unwrap();
        // Still metadata (start-up re-parents its children from it), and a
        // delete to finish.
        assert_eq!(names(&store, &uuid), ["a", "c", "b"]);
        assert_eq!(store.load_retired(&uuid).len(), 1);
        assert!(store.load_checkpoint(&uuid, "b").is_none());
        let children = [("c".to_string(), "c under a".to_string())];
        store.discard_retired(&uuid, "b", &children).unwrap();
        assert_eq!(names(&store, &uuid), ["a", "c under a"]);
        assert!(store.load_retired(&uuid).is_empty());
        assert!(store.load_intents(&uuid).is_empty());
    }

    #[test]
    fn a_refused_delete_restores_the_metadata() {
        let (_dir, store) = store();
        let uuid = [11u8; 16];
        store.save_checkpoint(&uuid, "a", "a").unwrap();
        store.retire_checkpoint(&uuid, "a").unwrap();
        store.restore_checkpoint(&uuid, "a").unwrap();
        assert_eq!(store.load_checkpoint(&uuid, "a").as_deref(), Some("a"));
        assert!(store.load_retired(&uuid).is_empty());
        // Nothing to retire: refused, nothing changed.
        assert!(store.retire_checkpoint(&uuid, "z").is_err());
        assert_eq!(names(&store, &uuid), ["a"]);
    }

    #[test]
    fn a_child_that_cannot_be_written_keeps_the_retired_parent() {
        let (_dir, store) = store();
        let uuid = [12u8; 16];
        store.save_checkpoint(&uuid, "a", "a").unwrap();
        store.retire_checkpoint(&uuid, "a").unwrap();
        let child = store.checkpoint_path(&uuid, "b", "xml");
        fs::create_dir_all(child.join("in-the-way")).unwrap();
        let children = [("b".to_string(), "b".to_string())];
        assert!(store.discard_retired(&uuid, "a", &children).is_err());
        assert_eq!(store.load_retired(&uuid).len(), 1);
    }
}
