//! What checkpoints and snapshots share in the driver: the tree of a
//! domain's moments (parents, children, the current one, libvirt's listing
//! rules), the references clients hold, and the read API over either kind
//! ([`MomentKind`]: lookup, parent, list, children).
//!
//! Listing follows libvirt's virdomainmomentobjlist.c: children are visited
//! newest first, descendants depth-first and parent before child, and the
//! LEAVES / NO_LEAVES filters apply to whatever the walk yields. With no
//! starting moment, ROOTS selects the top level and its absence means
//! "every moment".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::conf::moment::Moment;

use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::registry::DomainState;
use super::store::Store;
use super::{DomainRef, Driver, Uuid};

/// What to list: the bits checkpoint and snapshot list flags share
/// (ROOTS or DESCENDANTS 1, LEAVES 4, NO_LEAVES 8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// From the top: only the roots. From a moment: every descendant
    /// rather than only its children (the same bit in libvirt's API).
    pub roots_or_descendants: bool,
    pub leaves: bool,
    pub no_leaves: bool,
}

impl ListFilter {
    /// The filter of a list call's flags. (TOPOLOGICAL needs nothing: every
    /// walk yields parents before children.)
    pub fn from_flags(flags: u32) -> ListFilter {
        ListFilter {
            roots_or_descendants: flags & 1 != 0,
            leaves: flags & 4 != 0,
            no_leaves: flags & 8 != 0,
        }
    }
}

/// A checkpoint or snapshot as a client names it: libvirt's
/// virDomainCheckpointPtr and virDomainSnapshotPtr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MomentRef {
    pub name: String,
    pub dom: DomainRef,
}

/// One kind of moment, as the shared code needs to know it.
pub trait MomentKind: 'static {
    type Def: Moment + Clone;
    /// The kind as libvirt's function names spell it (`Checkpoint`).
    const API: &'static str;
    /// The kind as its messages name it (`checkpoint`).
    const NOUN: &'static str;
    /// The list flags libvirt's QEMU driver takes for the kind.
    const LIST_FLAGS: u32;
    /// libvirt's error code for a moment that is not there.
    const MISSING: ErrorKind;

    fn tree(st: &DomainState) -> &MomentTree<Self::Def>;

    /// The store's calls for the kind's metadata files (blocking).
    fn save(store: &Store, uuid: &Uuid, name: &str, xml: &str) -> Result<(), DriverError>;

    fn delete(store: &Store, uuid: &Uuid, name: &str) -> Result<(), DriverError>;

    /// Whether a list call with `flags` keeps `def`, beyond the tree's
    /// own filters.
    fn keeps(_def: &Self::Def, _flags: u32) -> bool {
        true
    }

    /// "no domain checkpoint with matching name 'x'".
    fn missing(name: &str) -> DriverError {
        DriverError::new(
            Self::MISSING,
            format!("no domain {} with matching name '{name}'", Self::NOUN),
        )
    }

    /// The domain's moment `name`, or libvirt's error.
    fn find<'a>(st: &'a DomainState, name: &str) -> Result<&'a Self::Def, DriverError> {
        Self::tree(st).get(name).ok_or_else(|| Self::missing(name))
    }
}

/// A domain's metadata files as the store reads them: each file's path,
/// and its text or why it could not be read.
pub type StoredFiles = Vec<(PathBuf, Result<String, DriverError>)>;

/// Seconds since the epoch: a new moment's creation time.
pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn refs(dom: &DomainRef, names: Vec<String>) -> Vec<MomentRef> {
    names
        .into_iter()
        .map(|name| MomentRef {
            name,
            dom: dom.clone(),
        })
        .collect()
}

impl Driver {
    /// virDomainListAllCheckpoints, virDomainListAllSnapshots (and the
    /// older snapshot count and name calls).
    pub fn list_moments<K: MomentKind>(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<Vec<MomentRef>, DriverError> {
        let function = format!("qemuDomainListAll{}s", K::API);
        DriverError::check_flags(flags, K::LIST_FLAGS, &function)?;
        let obj = self.domain(dom)?;
        let names = select::<K>(K::tree(&obj.lock()), None, flags);
        Ok(refs(dom, names))
    }

    /// virDomainCheckpointListAllChildren, virDomainSnapshotListAllChildren.
    pub fn list_moment_children<K: MomentKind>(
        &self,
        moment: &MomentRef,
        flags: u32,
    ) -> Result<Vec<MomentRef>, DriverError> {
        let function = format!("qemuDomain{}ListAllChildren", K::API);
        DriverError::check_flags(flags, K::LIST_FLAGS, &function)?;
        let names = self.with_moment::<K, _>(moment, |tree, _| {
            Ok(select::<K>(tree, Some(&moment.name), flags))
        })?;
        Ok(refs(&moment.dom, names))
    }

    /// virDomainCheckpointLookupByName, virDomainSnapshotLookupByName.
    pub fn lookup_moment<K: MomentKind>(
        &self,
        dom: &DomainRef,
        name: &str,
        flags: u32,
    ) -> Result<MomentRef, DriverError> {
        DriverError::check_flags(flags, 0, &format!("qemuDomain{}LookupByName", K::API))?;
        let moment = MomentRef {
            name: name.to_string(),
            dom: dom.clone(),
        };
        self.with_moment::<K, _>(&moment, |_, _| Ok(()))?;
        Ok(moment)
    }

    /// virDomainCheckpointGetParent, virDomainSnapshotGetParent.
    pub fn moment_parent<K: MomentKind>(
        &self,
        moment: &MomentRef,
        flags: u32,
    ) -> Result<MomentRef, DriverError> {
        DriverError::check_flags(flags, 0, &format!("qemuDomain{}GetParent", K::API))?;
        let parent = self.with_moment::<K, _>(moment, |tree, _| {
            let parent = tree.parent(&moment.name).ok_or_else(|| {
                DriverError::new(
                    K::MISSING,
                    format!("{} '{}' does not have a parent", K::NOUN, moment.name),
                )
            })?;
            Ok(parent.to_string())
        })?;
        Ok(MomentRef {
            name: parent,
            dom: moment.dom.clone(),
        })
    }

    /// Writes metadata files of a domain's moments ((name, contents) each),
    /// then removes that of `doomed`, in one go off the async threads.
    pub(super) async fn write_moments<K: MomentKind>(
        &self,
        uuid: Uuid,
        files: Vec<(String, String)>,
        doomed: Option<String>,
    ) -> Result<(), DriverError> {
        self.store_io(move |s| {
            for (name, xml) in &files {
                K::save(s, &uuid, name, xml)?;
            }
            doomed.map_or(Ok(()), |name| K::delete(s, &uuid, &name))
        })
        .await
    }

    /// Runs `f` on the tree of `moment`'s domain and its definition, once
    /// both are found (libvirt's "no domain ..." errors otherwise).
    pub(super) fn with_moment<K: MomentKind, T>(
        &self,
        moment: &MomentRef,
        f: impl FnOnce(&MomentTree<K::Def>, &K::Def) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let obj = self.domain(&moment.dom)?;
        let st = obj.lock();
        f(K::tree(&st), K::find(&st, &moment.name)?)
    }
}

/// The moments a list call selects, in libvirt's order.
fn select<K: MomentKind>(tree: &MomentTree<K::Def>, from: Option<&str>, flags: u32) -> Vec<String> {
    tree.list(from, ListFilter::from_flags(flags))
        .into_iter()
        .filter(|name| tree.get(name).is_some_and(|def| K::keeps(def, flags)))
        .collect()
}

impl<T: Moment + Clone> MomentTree<T> {
    /// Puts `def` under the parent it names (replacing a moment of its
    /// name, as a redefine does), and makes it current if `current`.
    pub fn add(&mut self, def: T, current: bool) {
        let name = def.name().to_string();
        let parent = def.parent().map(str::to_string);
        self.insert(&name, parent.as_deref(), def);
        if current {
            self.set_current(Some(&name));
        }
    }

    /// The children of `name` as they are once it is gone: their parent is
    /// its parent.
    pub fn orphans(&self, name: &str) -> Vec<T> {
        let parent = self.parent(name).map(str::to_string);
        self.children(name)
            .iter()
            .filter_map(|child| {
                let mut def = self.get(child)?.clone();
                def.set_parent(parent.clone());
                Some(def)
            })
            .collect()
    }

    /// Removes `name`, its children (and their definitions) moving up to
    /// its parent. When it was current, its parent becomes current if
    /// `current_to_parent`, else none is.
    pub fn forget(&mut self, name: &str, current_to_parent: bool) {
        let parent = self.parent(name).map(str::to_string);
        let was_current = self.current() == Some(name);
        for child in self.children(name) {
            if let Some(def) = self.get_mut(&child) {
                def.set_parent(parent.clone());
            }
        }
        self.remove(name);
        if was_current && current_to_parent {
            self.set_current(parent.as_deref());
        }
    }

    /// The tree of a domain's metadata files as the store reads them, each
    /// parsed by `parse` into its definition and whether the file marks it
    /// current (only snapshot files say). A file that cannot be read or
    /// parsed is logged and left where it is.
    pub fn load(
        noun: &str,
        files: Result<StoredFiles, DriverError>,
        parse: impl Fn(&str) -> Result<(T, bool), DriverError>,
    ) -> MomentTree<T> {
        let files = files.unwrap_or_else(|err| {
            tracing::error!(%err, "cannot read the {noun} metadata");
            Vec::new()
        });
        let mut defs = BTreeMap::new();
        let mut current = None;
        for (path, xml) in files {
            match xml.and_then(|xml| parse(&xml)) {
                Ok((def, marked)) => {
                    if marked {
                        current = Some(def.name().to_string());
                    }
                    defs.insert(def.name().to_string(), def);
                }
                Err(err) => {
                    tracing::error!(file = %path.display(), %err, "cannot load {noun} metadata; leaving the file");
                }
            }
        }
        let mut tree = MomentTree::build(defs);
        if let Some(current) = current.filter(|c| tree.contains(c)) {
            tree.set_current(Some(&current));
        }
        tree
    }

    /// The tree of moments read back from their files: parents before
    /// children, siblings oldest first; a moment whose parent is missing
    /// (or that sits in a cycle) becomes a root. The current moment is the
    /// one leaf, if there is exactly one, as libvirt decides when it loads.
    pub fn build(mut defs: BTreeMap<String, T>) -> MomentTree<T> {
        let mut tree = MomentTree::default();
        while !defs.is_empty() {
            let mut ready: Vec<T> = Vec::new();
            defs.retain(|_, def| {
                if def.parent().is_none_or(|p| tree.contains(p)) {
                    ready.push(def.clone());
                    false
                } else {
                    true
                }
            });
            if ready.is_empty() {
                // Nothing links up: the oldest remaining one becomes a
                // root, and its descendants can follow it in.
                let oldest = defs
                    .values()
                    .min_by_key(|def| def.creation_time())
                    .map(|def| def.name().to_string());
                let Some(mut def) = oldest.and_then(|name| defs.remove(&name)) else {
                    break;
                };
                tracing::error!(moment = %def.name(), parent = ?def.parent(), "parent is missing; made a root");
                def.set_parent(None);
                ready.push(def);
            }
            ready.sort_by_key(|def| def.creation_time());
            for def in ready {
                let name = def.name().to_string();
                let parent = def.parent().map(str::to_string);
                tree.insert(&name, parent.as_deref(), def);
            }
        }
        let leaf = tree.single_leaf();
        tree.set_current(leaf.as_deref());
        tree
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    def: T,
    parent: Option<String>,
    /// Oldest first; walks go newest first.
    children: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MomentTree<T> {
    entries: BTreeMap<String, Entry<T>>,
    /// Top-level moments, oldest first.
    roots: Vec<String>,
    current: Option<String>,
}

impl<T> Default for MomentTree<T> {
    fn default() -> Self {
        MomentTree {
            entries: BTreeMap::new(),
            roots: Vec::new(),
            current: None,
        }
    }
}

impl<T> MomentTree<T> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        self.entries.get(name).map(|e| &e.def)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        self.entries.get_mut(name).map(|e| &mut e.def)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn parent(&self, name: &str) -> Option<&str> {
        self.entries.get(name).and_then(|e| e.parent.as_deref())
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    pub fn set_current(&mut self, name: Option<&str>) {
        self.current = name
            .filter(|n| self.entries.contains_key(*n))
            .map(str::to_string);
    }

    fn siblings_mut(&mut self, parent: Option<&str>) -> Option<&mut Vec<String>> {
        match parent {
            Some(p) => self.entries.get_mut(p).map(|e| &mut e.children),
            None => Some(&mut self.roots),
        }
    }

    /// Adds `name` under `parent` (which must exist when given), or
    /// replaces an existing moment's definition and parent while keeping
    /// its children, as a redefine does.
    pub fn insert(&mut self, name: &str, parent: Option<&str>, def: T) {
        let parent = parent
            .filter(|p| self.entries.contains_key(*p))
            .map(str::to_string);
        let children = match self.entries.remove(name) {
            Some(old) => {
                if let Some(list) = self.siblings_mut(old.parent.as_deref()) {
                    list.retain(|n| n != name);
                }
                old.children
            }
            None => Vec::new(),
        };
        if let Some(list) = self.siblings_mut(parent.as_deref()) {
            list.push(name.to_string());
        }
        self.entries.insert(
            name.to_string(),
            Entry {
                def,
                parent,
                children,
            },
        );
    }

    /// Removes `name`; its children move up to its parent, keeping their
    /// own subtrees.
    pub fn remove(&mut self, name: &str) -> Option<T> {
        let entry = self.entries.remove(name)?;
        if let Some(list) = self.siblings_mut(entry.parent.as_deref()) {
            list.retain(|n| n != name);
        }
        for child in &entry.children {
            if let Some(c) = self.entries.get_mut(child) {
                c.parent = entry.parent.clone();
            }
        }
        if let Some(list) = self.siblings_mut(entry.parent.as_deref()) {
            list.extend(entry.children.iter().cloned());
        }
        if self.current.as_deref() == Some(name) {
            self.current = None;
        }
        Some(entry.def)
    }

    pub fn children(&self, name: &str) -> Vec<String> {
        self.entries
            .get(name)
            .map(|e| e.children.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Every descendant of `from` (or of the top), parent before child.
    pub fn descendants(&self, from: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack: Vec<&str> = match from {
            Some(name) => self.entries.get(name).map_or_else(Vec::new, |e| {
                e.children.iter().map(String::as_str).collect()
            }),
            None => self.roots.iter().map(String::as_str).collect(),
        };
        // The stack pops the newest sibling first, as libvirt walks them.
        while let Some(name) = stack.pop() {
            out.push(name.to_string());
            if let Some(e) = self.entries.get(name) {
                stack.extend(e.children.iter().map(String::as_str));
            }
        }
        out
    }

    fn is_leaf(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.children.is_empty())
    }

    /// Names as virDomainListAllCheckpoints / ListAllChildren return them.
    pub fn list(&self, from: Option<&str>, filter: ListFilter) -> Vec<String> {
        let names = match (from, filter.roots_or_descendants) {
            (None, true) => self.roots.iter().rev().cloned().collect(),
            (None, false) => self.descendants(None),
            (Some(name), true) => self.descendants(Some(name)),
            (Some(name), false) => self.children(name),
        };
        names
            .into_iter()
            .filter(|n| !filter.leaves || self.is_leaf(n))
            .filter(|n| !filter.no_leaves || !self.is_leaf(n))
            .collect()
    }

    /// The one leaf of the tree, if it has exactly one: what libvirt makes
    /// current when it loads moments from disk.
    pub fn single_leaf(&self) -> Option<String> {
        let mut leaves = self.entries.keys().filter(|n| self.is_leaf(n));
        match (leaves.next(), leaves.next()) {
            (Some(leaf), None) => Some(leaf.clone()),
            _ => None,
        }
    }

    /// The checks libvirt makes before a redefine links `name` under
    /// `parent`: the parent exists, and is neither `name` itself nor one of
    /// its descendants.
    pub fn check_cycles(&self, name: &str, parent: Option<&str>) -> Result<(), DriverError> {
        let Some(parent) = parent else {
            return Ok(());
        };
        let invalid = |detail: String| {
            Err(DriverError::new(ErrorKind::InvalidArg, detail).with_origin(ErrorOrigin::Domain))
        };
        if parent == name {
            return invalid(format!("cannot set moment {name} as its own parent"));
        }
        if !self.contains(parent) {
            return invalid(format!("parent {parent} for moment {name} not found"));
        }
        let mut other = parent;
        while let Some(up) = self.parent(other) {
            if up == name {
                return invalid(format!("parent {other} would create cycle to {name}"));
            }
            other = up;
        }
        Ok(())
    }

    /// Definitions in an order where parents come before children, for
    /// writing or reconciling everything.
    pub fn iter_topological(&self) -> impl Iterator<Item = (&str, &T)> {
        self.descendants(None)
            .into_iter()
            .filter_map(|n| self.entries.get_key_value(&n))
            .map(|(k, e)| (k.as_str(), &e.def))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
#[path = "moments_tests.rs"]
mod tests;
