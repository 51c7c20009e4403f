//! Checkpoints across restarts and crashes: the metadata is read at
//! start-up, and metadata and QEMU's bitmaps are brought into agreement
//! whenever a QEMU comes up (start) or is taken back (reconnect).
//!
//! What can disagree, and what is done about it:
//!
//! - A create intent without metadata: the daemon died between adding the
//!   bitmaps and writing the metadata. The bitmaps are removed, so that a
//!   new checkpoint of that name does not trip on them.
//! - A create intent with metadata: only the intent's removal was lost.
//! - A delete intent: the daemon died while deleting. The metadata half is
//!   finished at start-up, the bitmap half when QEMU is there.
//! - A checkpoint whose bitmap is missing or broken (QEMU was killed before
//!   it wrote the bitmaps into the image, or somebody removed them): kept,
//!   logged, and reported in the domain's messages (`virsh dominfo`) until
//!   it is deleted, never dropped behind the user's back. Backups from it
//!   are refused and its size is not reported (libvirt's bitmap rule, in
//!   conf and `qemu::bitmap`). An inconsistent bitmap is still there and
//!   QEMU removes it, so such a checkpoint deletes normally; one whose
//!   bitmap is missing needs `--metadata`, as in libvirt.

use std::sync::Arc;

use crate::conf::checkpoint::{CheckpointDef, ParseFlags};
use crate::qemu::bitmap;

use super::checkpoint::{delete_intent_of, format_node};
use super::error::DriverError;
use super::moments::MomentTree;
use super::registry::{BrokenBitmap, DomainObj};
use super::store::{Intent, IntentAction};
use super::Driver;

/// virDomainMessageType: what GET_MESSAGES may filter on.
pub mod message_flags {
    pub const TAINTING: u32 = 1;
    pub const DEPRECATION: u32 = 2;
}

impl Driver {
    /// Reads the checkpoints of every known domain.
    pub(super) async fn load_checkpoints(&self) {
        for obj in self.shared.domains.all() {
            self.load_domain_checkpoints(&obj).await;
        }
    }

    async fn load_domain_checkpoints(&self, obj: &Arc<DomainObj>) {
        let uuid = obj.uuid;
        let files = self.store_io(move |s| Ok(s.load_checkpoints(&uuid))).await;
        let tree = MomentTree::load("checkpoint", files, |xml| {
            let parsed = CheckpointDef::parse(xml, ParseFlags { redefine: true }, 0)?;
            Ok((parsed.loaded(), false))
        });
        let loaded = tree.len();
        obj.lock().checkpoints = tree;
        if loaded > 0 {
            tracing::info!(domain = %obj.reference().name, checkpoints = loaded, "checkpoints loaded");
        }
        // A delete that got past QEMU: its metadata goes now; the bitmap
        // half waits for a QEMU if there is none.
        for intent in self.intents(obj).await {
            let listed = obj.lock().checkpoints.contains(&intent.checkpoint);
            match intent.action {
                IntentAction::Delete if listed => {
                    tracing::warn!(checkpoint = %intent.checkpoint, "finishing an interrupted checkpoint delete");
                    if let Err(err) = self.forget_checkpoint(obj, &intent.checkpoint, true).await {
                        tracing::error!(%err, "cannot finish the checkpoint delete");
                    }
                }
                IntentAction::Create if listed => {
                    self.drop_intent(uuid, &intent.checkpoint).await;
                }
                _ => {}
            }
        }
    }

    /// The unsettled checkpoint operations of a domain: the intent
    /// records, and the deletes that began by retiring the metadata (their
    /// bitmaps read from it).
    async fn intents(&self, obj: &DomainObj) -> Vec<Intent> {
        let uuid = obj.uuid;
        let stored = self
            .store_io(move |s| Ok((s.load_intents(&uuid), s.load_retired(&uuid))))
            .await;
        let (records, retired) = stored.unwrap_or_else(|err| {
            tracing::error!(%err, "cannot read the checkpoint intents");
            (Vec::new(), Vec::new())
        });
        let retired = retired.into_iter().map(|(path, xml)| {
            let def = xml.and_then(|xml| {
                CheckpointDef::parse(&xml, ParseFlags { redefine: true }, 0)
                    .map(|p| p.loaded())
                    .map_err(DriverError::from)
            });
            (path, def.map(|def| delete_intent_of(&def)))
        });
        records
            .into_iter()
            .chain(retired)
            .filter_map(|(path, intent)| match intent {
                Ok(intent) => Some(intent),
                Err(err) => {
                    tracing::error!(file = %path.display(), %err, "unreadable checkpoint intent; leaving it");
                    None
                }
            })
            .collect()
    }

    /// Brings QEMU's bitmaps and the metadata of a domain whose QEMU just
    /// came up into agreement; see the module documentation.
    pub(super) async fn reconcile_checkpoints(&self, obj: &Arc<DomainObj>) {
        let intents = self.intents(obj).await;
        let (vm, domain) = {
            let st = obj.lock();
            let Some(live) = &st.live else { return };
            if st.checkpoints.is_empty() && intents.is_empty() {
                return;
            }
            (live.vm.clone(), live.def.clone())
        };
        let present = match bitmap::query_bitmaps(vm.monitor()).await {
            Ok(present) => present,
            Err(err) => {
                tracing::warn!(%err, "cannot read the bitmaps; checkpoints not reconciled");
                return;
            }
        };
        // Bitmaps that some checkpoint claims are never stray.
        let claimed: Vec<(String, String)> = {
            let st = obj.lock();
            st.checkpoints
                .iter_topological()
                .flat_map(|(_, def)| {
                    def.bitmaps()
                        .filter_map(|(disk, bitmap)| {
                            Some((format_node(&domain, disk)?, bitmap.to_string()))
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut stray = Vec::new();
        let mut settled = Vec::new();
        for intent in intents {
            if intent.action == IntentAction::Create
                && obj.lock().checkpoints.contains(&intent.checkpoint)
            {
                settled.push(intent.checkpoint);
                continue;
            }
            for (disk, bitmap) in &intent.bitmaps {
                let Some(node) = format_node(&domain, disk) else {
                    continue;
                };
                let pair = (node, bitmap.clone());
                if bitmap::find_bitmap(&present, &pair.0, &pair.1).is_some()
                    && !claimed.contains(&pair)
                    && !stray.contains(&pair)
                {
                    stray.push(pair);
                }
            }
            tracing::warn!(checkpoint = %intent.checkpoint, action = ?intent.action, "undoing what an interrupted checkpoint operation left in QEMU");
            settled.push(intent.checkpoint);
        }
        let removed = if stray.is_empty() {
            Ok(())
        } else {
            bitmap::remove_bitmaps(vm.monitor(), &stray).await
        };
        match removed {
            Ok(()) => {
                for name in settled {
                    self.drop_intent(obj.uuid, &name).await;
                }
            }
            Err(err) => tracing::error!(%err, "cannot remove stray checkpoint bitmaps"),
        }
        let broken = broken_bitmaps(obj, &domain, &present);
        for problem in &broken {
            tracing::warn!(domain = %domain.name(), "{problem}");
        }
        obj.lock().broken_bitmaps = broken;
    }

    /// virDomainGetMessages.
    pub fn get_messages(
        &self,
        dom: &super::DomainRef,
        flags: u32,
    ) -> Result<Vec<String>, super::DriverError> {
        use message_flags::*;
        super::DriverError::check_flags(flags, TAINTING | DEPRECATION, "qemuDomainGetMessages")?;
        let obj = self.domain(dom)?;
        let st = obj.lock();
        // Ours are neither taint nor deprecation: only "all" shows them.
        Ok(if flags == 0 {
            st.broken_bitmaps.iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        })
    }
}

/// Every checkpoint bitmap QEMU does not have in a usable state.
fn broken_bitmaps(
    obj: &DomainObj,
    domain: &crate::conf::DomainDef,
    present: &[bitmap::NodeBitmaps],
) -> Vec<BrokenBitmap> {
    let st = obj.lock();
    let mut broken = Vec::new();
    for (name, def) in st.checkpoints.iter_topological() {
        for (disk, bitmap_name) in def.bitmaps() {
            let Some(node) = format_node(domain, disk) else {
                continue;
            };
            if let Err(problem) = bitmap::check_bitmap(present, &node, bitmap_name) {
                broken.push(BrokenBitmap {
                    checkpoint: name.to_string(),
                    disk: disk.to_string(),
                    bitmap: bitmap_name.to_string(),
                    problem,
                });
            }
        }
    }
    broken
}

/// Links loaded checkpoints parent first. One whose parent is missing, or
/// that sits in a cycle, becomes a root (libvirt reports "inconsistent
/// relations" and goes on the same way). The single leaf, if there is one,
/// is current, as libvirt decides when it loads.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::moment::Moment;

    fn def(name: &str, parent: Option<&str>, time: i64) -> CheckpointDef {
        let parent = parent
            .map(|p| format!("<parent><name>{p}</name></parent>"))
            .unwrap_or_default();
        let xml = format!(
            "<domaincheckpoint><name>{name}</name>{parent}\
             <creationTime>{time}</creationTime></domaincheckpoint>"
        );
        CheckpointDef::parse(&xml, ParseFlags { redefine: true }, 0)
            .unwrap()
            .loaded()
    }

    fn tree_of(defs: &[CheckpointDef]) -> MomentTree<CheckpointDef> {
        MomentTree::build(
            defs.iter()
                .map(|d| (d.name().to_string(), d.clone()))
                .collect(),
        )
    }

    #[test]
    fn loaded_checkpoints_link_up_whatever_the_file_order() {
        // Names sort opposite to the chain, as epoch names after "cp" do.
        let tree = tree_of(&[
            def("z", None, 1),
            def("b", Some("z"), 2),
            def("a", Some("b"), 3),
        ]);
        assert_eq!(tree.parent("a"), Some("b"));
        assert_eq!(tree.parent("b"), Some("z"));
        assert_eq!(tree.current(), Some("a"));
        let order: Vec<&str> = tree.iter_topological().map(|(n, _)| n).collect();
        assert_eq!(order, ["z", "b", "a"]);
    }

    #[test]
    fn a_missing_parent_makes_a_root_and_its_subtree_follows() {
        let tree = tree_of(&[
            def("orphan", Some("gone"), 5),
            def("child", Some("orphan"), 6),
            def("root", None, 1),
        ]);
        assert_eq!(tree.parent("orphan"), None);
        assert_eq!(tree.get("orphan").unwrap().parent(), None);
        assert_eq!(tree.parent("child"), Some("orphan"));
        // Two leaves (root, child): no current, as libvirt decides.
        assert_eq!(tree.current(), None);
    }

    #[test]
    fn a_cycle_is_broken_at_its_oldest_member() {
        let tree = tree_of(&[def("p", Some("q"), 1), def("q", Some("p"), 2)]);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.parent("p"), None);
        assert_eq!(tree.parent("q"), Some("p"));
    }
}
