//! Starting a commit or a pull: libvirt's checks in libvirt's order, the
//! QMP command, the job recorded, its follower started.

use std::path::Path;
use std::sync::Arc;

use crate::qemu::bitmap as qbitmap;
use crate::qemu::blockjob::{self as qjob, Layer};
use crate::qemu::jobs::JobWatch;
use crate::qemu::node;

use super::super::error::{DriverError, ErrorKind};
use super::super::registry::DomainObj;
use super::super::{DomainRef, Driver};
use super::{
    chain_lookup, check_disk_free, checkpoint_exists, commit_flags, disk_by_name, has_checkpoints,
    job_name, layers_with_chain_bitmaps, rebase_flags, speed_bytes, BlockJob, Kind, State,
};

/// VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES.
const PULL_BANDWIDTH_BYTES: u32 = 1 << 6;

/// The disk a call names, with what the job needs of it.
struct Target {
    disk: String,
    /// The chain QEMU has open; for a domain that is not running, the
    /// top image alone (libvirt knows no more of an inactive chain).
    chain: Vec<Layer>,
    running: bool,
    empty: bool,
}

impl Driver {
    /// The disk `path` names in the definition libvirt would look in (the
    /// live one while running), and its chain.
    async fn target(&self, obj: &DomainObj, path: &str) -> Result<Target, DriverError> {
        let (vm, disk, top_node, source, empty) = {
            let st = obj.lock();
            let def = match (&st.live, &st.config) {
                (Some(live), _) => &live.def,
                (None, Some(config)) => config,
                (None, None) => return Err(DriverError::inactive()),
            };
            let disk = disk_by_name(def, path)?;
            (
                st.live.as_ref().map(|l| l.vm.clone()),
                disk.target().to_string(),
                node::format(disk.node_index()),
                disk.source().unwrap_or_default().to_string(),
                disk.is_empty(),
            )
        };
        let chain = match &vm {
            Some(vm) if !empty => qjob::chain(vm.monitor(), &top_node).await?,
            _ => vec![Layer {
                node: top_node,
                storage: None,
                path: source,
                format: String::new(),
                block: false,
            }],
        };
        Ok(Target {
            disk,
            chain,
            running: vm.is_some(),
            empty,
        })
    }

    /// virDomainBlockCommit.
    pub async fn block_commit(
        &self,
        dom: &DomainRef,
        path: &str,
        base: Option<&str>,
        top: Option<&str>,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        use commit_flags::*;
        DriverError::check_flags(
            flags,
            SHALLOW | ACTIVE | RELATIVE | DELETE | BANDWIDTH_BYTES,
            "qemuDomainBlockCommit",
        )?;
        crate::fault::arm("block-commit");
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        let speed = speed_bytes(bandwidth, flags & BANDWIDTH_BYTES != 0)?;
        let t = self.target(&obj, path).await?;
        let chain = &t.chain;
        let top_idx = match top {
            None => 0,
            Some(top) if top == t.disk => 0,
            Some(top) => chain_lookup(chain, None, Some(top), &t.disk)?,
        };
        let base_idx = if base.is_none() && flags & SHALLOW != 0 {
            Some(top_idx + 1).filter(|&i| i < chain.len())
        } else {
            Some(chain_lookup(chain, Some(top_idx), base, &t.disk)?)
        };
        // qemuBlockCommit.
        if !t.running {
            return Err(DriverError::inactive());
        }
        if t.empty {
            return Err(DriverError::new(
                ErrorKind::ConfigUnsupported,
                format!("disk {} has no source file to be committed", t.disk),
            ));
        }
        check_disk_free(&obj, &t.disk)?;
        let top_layer = &chain[top_idx];
        if top_idx == 0 && flags & ACTIVE == 0 {
            return Err(DriverError::invalid_arg(format!(
                "commit of '{}' active layer requires active flag",
                t.disk
            )));
        }
        if top_idx != 0 && flags & ACTIVE != 0 {
            return Err(DriverError::invalid_arg(format!(
                "active commit requested but '{}' is not active",
                top_layer.path
            )));
        }
        if top_idx + 1 >= chain.len() {
            return Err(DriverError::invalid_arg(format!(
                "top '{}' in chain for '{}' has no backing file",
                top_layer.path, chain[0].path
            )));
        }
        let base_idx = base_idx.unwrap_or(top_idx + 1);
        let base_layer = &chain[base_idx];
        if flags & SHALLOW != 0 && base_idx != top_idx + 1 {
            return Err(DriverError::invalid_arg(format!(
                "base '{}' is not immediately below '{}' in chain for '{}'",
                base_layer.path, top_layer.path, chain[0].path
            )));
        }
        let active = top_idx == 0;
        let backing_file = if active {
            None
        } else if flags & RELATIVE != 0 {
            Some(relative_backing(
                &chain[top_idx - 1].path,
                &base_layer.path,
            )?)
        } else {
            Some(base_layer.path.clone())
        };
        // The daemon names every layer of a chain it can read from the
        // image headers; one it could not (no backing format recorded, a
        // backing name that is not a local path) QEMU opened from the
        // header, and a pivot would leave the disk on a node without a
        // name of ours.
        if active && node::index(&base_layer.node).is_none() {
            return Err(DriverError::new(
                ErrorKind::OperationUnsupported,
                format!(
                    "cannot commit the active layer of disk '{}' into '{}', which QEMU opened from an image header; give its backing files their format (qemu-img rebase -F) and restart the domain",
                    t.disk, base_layer.path
                ),
            ));
        }
        // A commit below the active layer would have to merge the
        // committed layers' checkpoint bitmaps into a read-only base
        // (libvirt reopens it read-write for that): refused instead when
        // they hold any, so none is lost. The active commit merges them
        // at its pivot (follow.rs).
        if !active && has_checkpoints(&obj) {
            let nodes = qbitmap::query_bitmaps(self.running_vm_of(&obj)?.monitor()).await?;
            if !layers_with_chain_bitmaps(&nodes, &chain[top_idx..], base_idx - top_idx).is_empty()
            {
                return Err(checkpoint_exists());
            }
        }
        let job = BlockJob {
            disk: t.disk.clone(),
            kind: if active {
                Kind::ActiveCommit
            } else {
                Kind::Commit
            },
            id: job_name("commit", &t.disk, &top_layer.node),
            state: State::Running,
            top: chain[0].clone(),
            removed: chain[top_idx..base_idx].to_vec(),
            base: Some(base_layer.clone()),
            chain: chain.clone(),
            mirror: None,
            delete: flags & DELETE != 0,
            ready_sent: false,
            ended: Arc::default(),
        };
        let vm = self.running_vm_of(&obj)?;
        let mon = vm.monitor();
        let id = job.id.clone();
        let watch = JobWatch::new(mon, [id.clone()]);
        self.record_job(&obj, job).await;
        let started = qjob::commit(
            mon,
            &chain[0].node,
            &id,
            &top_layer.node,
            &base_layer.node,
            backing_file.as_deref(),
            speed,
        )
        .await;
        if let Err(err) = started {
            self.forget_job(&obj, &id).await;
            return Err(err.into());
        }
        self.job_started(&obj, &vm, id, watch);
        Ok(())
    }

    /// virDomainBlockPull.
    pub async fn block_pull(
        &self,
        dom: &DomainRef,
        path: &str,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        DriverError::check_flags(flags, PULL_BANDWIDTH_BYTES, "qemuDomainBlockPull")?;
        self.pull(dom, path, None, bandwidth, flags).await
    }

    /// virDomainBlockRebase: a pull down to `base`, or with
    /// VIR_DOMAIN_BLOCK_REBASE_COPY a copy to the file `base`.
    pub async fn block_rebase(
        &self,
        dom: &DomainRef,
        path: &str,
        base: Option<&str>,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        use rebase_flags::*;
        DriverError::check_flags(
            flags,
            SHALLOW | REUSE_EXT | COPY | COPY_RAW | RELATIVE | COPY_DEV | BANDWIDTH_BYTES,
            "qemuDomainBlockRebase",
        )?;
        if flags & COPY == 0 {
            return self.pull(dom, path, base, bandwidth, flags).await;
        }
        self.rebase_copy(dom, path, base, bandwidth, flags).await
    }

    /// qemuDomainBlockPullCommon.
    async fn pull(
        &self,
        dom: &DomainRef,
        path: &str,
        base: Option<&str>,
        bandwidth: u64,
        flags: u32,
    ) -> Result<(), DriverError> {
        if flags & rebase_flags::RELATIVE != 0 && base.is_none() {
            return Err(DriverError::invalid_arg(
                "flag VIR_DOMAIN_BLOCK_REBASE_RELATIVE is valid only with non-null base",
            ));
        }
        crate::fault::arm("block-pull");
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        if obj.lock().live.is_none() {
            return Err(DriverError::inactive());
        }
        let t = self.target(&obj, path).await?;
        check_disk_free(&obj, &t.disk)?;
        let chain = &t.chain;
        let base_idx = match base {
            Some(base) => Some(chain_lookup(chain, Some(0), Some(base), &t.disk)?),
            None => None,
        };
        let end = base_idx.unwrap_or(chain.len());
        // The pulled layers' checkpoint bitmaps are merged into the top
        // when the job ends (follow.rs), as libvirt does; a layer QEMU
        // opened from a header goes with the job, bitmaps and all, before
        // that: refused then.
        if has_checkpoints(&obj) {
            let nodes = qbitmap::query_bitmaps(self.running_vm_of(&obj)?.monitor()).await?;
            let lost = layers_with_chain_bitmaps(&nodes, chain, end)
                .into_iter()
                .any(|i| i > 0 && node::index(&chain[i].node).is_none());
            if lost {
                return Err(checkpoint_exists());
            }
        }
        let backing_file = match base_idx {
            Some(i) if flags & rebase_flags::RELATIVE != 0 => {
                Some(relative_backing(&chain[0].path, &chain[i].path)?)
            }
            Some(i) => Some(chain[i].path.clone()),
            None => None,
        };
        let speed = speed_bytes(bandwidth, flags & PULL_BANDWIDTH_BYTES != 0)?;
        let job = BlockJob {
            disk: t.disk.clone(),
            kind: Kind::Pull,
            id: job_name("pull", &t.disk, &chain[0].node),
            state: State::Running,
            top: chain[0].clone(),
            removed: chain.get(1..end).unwrap_or_default().to_vec(),
            base: base_idx.map(|i| chain[i].clone()),
            chain: chain.clone(),
            mirror: None,
            delete: false,
            ready_sent: false,
            ended: Arc::default(),
        };
        let vm = self.running_vm_of(&obj)?;
        let mon = vm.monitor();
        let id = job.id.clone();
        let watch = JobWatch::new(mon, [id.clone()]);
        self.record_job(&obj, job).await;
        let base_arg = base_idx
            .map(|i| chain[i].node.as_str())
            .zip(backing_file.as_deref());
        if let Err(err) = qjob::stream(mon, &chain[0].node, &id, base_arg, speed).await {
            self.forget_job(&obj, &id).await;
            return Err(err.into());
        }
        self.job_started(&obj, &vm, id, watch);
        Ok(())
    }

    /// The running QEMU of a domain whose job the caller holds.
    pub(super) fn running_vm_of(
        &self,
        obj: &DomainObj,
    ) -> Result<Arc<crate::qemu::RunningVm>, DriverError> {
        let st = obj.lock();
        st.live
            .as_ref()
            .map(|l| l.vm.clone())
            .ok_or_else(DriverError::not_running)
    }
}

/// `base` as a path relative to the directory of `image`, which will name
/// it as its backing file (libvirt's virStorageSourceGetRelativeBackingPath
/// for images in the same tree).
fn relative_backing(image: &str, base: &str) -> Result<String, DriverError> {
    let dir = Path::new(image).parent().unwrap_or(Path::new("/"));
    let base = Path::new(base);
    let ours: Vec<_> = dir.components().collect();
    let theirs: Vec<_> = base.components().collect();
    let common = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return Err(DriverError::operation_invalid(
            "can't keep relative backing relationship",
        ));
    }
    let mut rel = std::path::PathBuf::new();
    for _ in common..ours.len() {
        rel.push("..");
    }
    for c in &theirs[common..] {
        rel.push(c);
    }
    Ok(rel.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_backing_walks_from_the_image_directory() {
        assert_eq!(
            relative_backing("/a/b/top.qcow2", "/a/b/base.qcow2").unwrap(),
            "base.qcow2"
        );
        assert_eq!(
            relative_backing("/a/b/top.qcow2", "/a/c/base.qcow2").unwrap(),
            "../c/base.qcow2"
        );
    }
}
