//! backup-begin: a push or pull backup set up in one QMP transaction, or
//! nothing of it left behind.
//!
//! The order is libvirt 9.0's: the disks are checked, then each target
//! (push) or scratch image (pull) is made and attached; a pull backup's
//! NBD server listens next; one transaction starts every disk's job
//! together with the new checkpoint's bitmaps, so the checkpoint exists
//! exactly when the backup started; a pull backup's exports come only
//! after it, so no client reads a disk that is not frozen yet.
//!
//! One transaction, in libvirt's `endjob:` shape: before QEMU is touched
//! the new checkpoint's intent, the backup's record (`started: false`,
//! naming every node, job, file and server the begin may make) and the
//! checkpoint's metadata are written; then everything in QEMU
//! (`begin_in_qemu`, which undoes its own part on error); then the
//! record is rewritten as started, the commit point. A failure before it
//! takes the one way back (`settle_begin`); a crash before it is
//! undone by the next daemon from the record, as an abort
//! (`follow::step`, `Event::Restarted`), the checkpoint dropped with it.
//!
//! A TCP server without a port gets one from the configured range (libvirt
//! 9.0 refuses it); a unix socket gets the configured mode (0600: only this
//! daemon's user can connect) and must not exist beforehand, since QEMU
//! would unlink whatever is there.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::conf::backup::{default_suffix, BackupDef, BackupEnv, BackupMode, Transport};
use crate::conf::checkpoint::{CheckpointDef, ParseFlags, ParsedCheckpoint};
use crate::conf::moment::Moment;
use crate::conf::{DiskDef, DiskFormat as ConfFormat, DomainDef};
use crate::driver::checkpoint::{self, metadata_xml, NewCheckpoint};
use crate::driver::error::{DriverError, ErrorKind};
use crate::driver::jobs::{now_ms, JobData};
use crate::driver::launch;
use crate::driver::moments::now_secs;
use crate::driver::moments::MomentTree;
use crate::driver::registry::DomainObj;
use crate::driver::store::{Intent, IntentAction};
use crate::driver::{DomainRef, Driver};
use crate::qemu::backup as qbackup;
use crate::qemu::cbw::CbwRequest;
use crate::qemu::command::DiskFormat;
use crate::qemu::jobs::JobWatch;
use crate::qemu::monitor::Monitor;
use crate::qemu::nbd::{self, NbdAddress, NbdExport};
use crate::qemu::node;
use crate::qemu::{bitmap, QemuError};

use super::follow::{BackupRecord, DiskState, PullServer, RunDisk};
use super::BackupRun;

/// virDomainBackupBeginFlags.
pub const BEGIN_REUSE_EXTERNAL: u32 = 1;

/// What the conf layer asks while it checks the disks.
struct Env<'a> {
    next_node: &'a mut u32,
    checkpoints: &'a MomentTree<CheckpointDef>,
    nodes: &'a [bitmap::NodeBitmaps],
}

impl BackupEnv for Env<'_> {
    fn new_storage_id(&mut self) -> u32 {
        let id = *self.next_node;
        *self.next_node += 1;
        id
    }

    fn checkpoint_exists(&self, name: &str) -> bool {
        self.checkpoints.contains(name)
    }

    fn bitmap_chain_valid(&self, disk: &DiskDef, checkpoint: &str) -> bool {
        let node = node::format(disk.node_index());
        bitmap::check_bitmap(self.nodes, &node, checkpoint).is_ok()
    }
}

fn inactive() -> DriverError {
    DriverError::new(
        ErrorKind::OperationUnsupported,
        "cannot perform disk backup for inactive domain",
    )
}

impl Driver {
    /// virDomainBackupBegin.
    pub async fn backup_begin(
        &self,
        dom: &DomainRef,
        backup_xml: &str,
        checkpoint_xml: Option<&str>,
        flags: u32,
    ) -> Result<(), DriverError> {
        crate::fault::arm("backup-begin");
        DriverError::check_flags(
            flags,
            BEGIN_REUSE_EXTERNAL | super::preserve::BEGIN_PRESERVE_SHUTDOWN_DOMAIN,
            "qemuBackupBegin",
        )?;
        let reuse = flags & BEGIN_REUSE_EXTERNAL != 0;
        let obj = self.domain(dom)?;
        let parsed = BackupDef::parse(backup_xml)?;
        let now = now_secs();
        let parsed_cp = checkpoint_xml
            .map(|xml| CheckpointDef::parse(xml, ParseFlags::default(), now))
            .transpose()?;
        let suffix = default_suffix(parsed_cp.as_ref().map(|cp| cp.name()), now);
        let _job = obj.job.lock().await;
        self.check_present(&obj, dom)?;
        if parsed_cp.is_some() {
            crate::driver::rules::checkpoint_allowed(&obj.lock())?;
        }

        let (vm, running) = {
            let st = obj.lock();
            let live = st.live.as_ref().ok_or_else(inactive)?;
            (live.vm.clone(), live.def.clone())
        };
        let mut def = parsed.align(&running, &suffix)?;
        if obj.lock().backup.is_some() {
            return Err(DriverError::operation_invalid(
                "another backup job is already running",
            ));
        }
        let preserve = self.arm_preserve(&obj, &vm, flags).await?;
        if def.needs_port() {
            let port = self.allocate_port(&def)?;
            def.assign_port(port);
        }
        def.prepare_server()?;
        let pull = match def.mode() {
            BackupMode::Pull => Some(pull_address(&def)?),
            BackupMode::Push => None,
        };
        let checkpoint = match parsed_cp {
            Some(parsed) => Some(self.new_checkpoint(&obj, parsed)?),
            None => None,
        };
        let graph = qbackup::query_graph(vm.monitor()).await?;
        {
            let mut st = obj.lock();
            let st = &mut *st;
            let live = st.live.as_mut().ok_or_else(inactive)?;
            let mut env = Env {
                next_node: &mut live.next_node,
                checkpoints: &st.checkpoints,
                nodes: &graph.bitmaps,
            };
            def.prepare_disks(&running, &mut env)?;
        }
        let mut requests = backup_requests(&def, &running, pull.is_some())?;
        if pull.is_none() {
            if let Some(timeout) = self.shared.config.backup_cbw_timeout {
                self.own_filters(&obj, &mut requests, &suffix, timeout)?;
            }
        }
        crate::driver::rules::backup_disks_free(&obj, requests.iter().map(|r| &*r.source.target))?;
        let planned = qbackup::plan(&graph, &requests, reuse)?;

        let uuid = obj.uuid;
        let cp_bitmaps: Vec<(String, String)> = checkpoint
            .iter()
            .flat_map(|(_, bitmaps)| bitmaps.iter())
            .map(|b| b.node_pair())
            .collect();
        let cp_intent = checkpoint.as_ref().map(|(cp, bitmaps)| Intent {
            checkpoint: cp.name().to_string(),
            action: IntentAction::Create,
            bitmaps: bitmaps.iter().map(|b| b.disk_pair()).collect(),
        });
        let tls = def.server().and_then(|s| s.tls()) == Some(true);
        let mut record = BackupRecord {
            xml: def.format(),
            job: JobData::backup(now_ms()),
            reuse,
            disks: run_disks(&running, &planned),
            targets: planned,
            cancel_requested: HashSet::new(),
            checkpoint: checkpoint.as_ref().map(|(cp, _)| cp.name().to_string()),
            pull: pull.clone().map(|addr| PullServer {
                addr,
                tls,
                stopped: false,
            }),
            preserve: preserve.is_some(),
            started: false,
        };
        // The intents, before QEMU is touched: the checkpoint's, then the
        // backup's own (its record, not started yet), which names every
        // node, job, file and server the begin may make.
        if let Some(intent) = cp_intent.clone() {
            self.store_io(move |s| s.save_intent(&uuid, &intent))
                .await?;
        }
        let intent = record.clone();
        if let Err(err) = self.store_io(move |s| s.save_backup(&uuid, &intent)).await {
            self.settle_begin(uuid, cp_intent.as_ref(), None).await;
            return Err(err);
        }
        // The checkpoint's metadata too, while nothing else is made: a
        // disk that cannot take it fails the begin here. Until the record
        // says the backup started, an undo drops it again.
        let cp_name = checkpoint.as_ref().map(|(cp, _)| cp.name().to_string());
        if let Some((cp, _)) = &checkpoint {
            let (name, xml) = (cp.name().to_string(), metadata_xml(cp));
            let saved = self.store_io(move |s| s.save_checkpoint(&uuid, &name, &xml));
            if let Err(err) = saved.await {
                tracing::error!(checkpoint = ?cp_name, %err, "cannot save checkpoint metadata");
                self.settle_begin(uuid, cp_intent.as_ref(), cp_name.as_deref())
                    .await;
                return Err(DriverError::internal(format!(
                    "unable to save metadata for checkpoint {}",
                    cp.name()
                )));
            }
        }
        let server = pull.as_ref().map(|addr| Server {
            addr,
            tls_dir: tls.then_some(self.shared.config.backup_tls_dir.as_path()),
            mode: self.shared.config.nbd_socket_mode,
            exports: Vec::new(),
        });
        let made = begin_in_qemu(
            vm.monitor(),
            &graph,
            &requests,
            Copying {
                reuse,
                speed: self.shared.config.backup_speed,
            },
            server,
            &def,
            &cp_bitmaps,
        );
        let (targets, watch) = match made.await {
            Ok(made) => made,
            Err(err) => {
                // The one way back: QEMU's side was undone on the way out
                // of begin_in_qemu; the intents go.
                self.settle_begin(uuid, cp_intent.as_ref(), cp_name.as_deref())
                    .await;
                return Err(err.into());
            }
        };
        // The commit point: from here on a restarted daemon follows the
        // backup rather than undoing it.
        record.targets = targets;
        record.started = true;
        self.save_backup(&obj, record.clone()).await;
        if let Some((cp, _)) = checkpoint {
            self.commit_checkpoint(&obj, cp).await;
        }
        // The targets' early write-back starts after the begin's own
        // fsyncs: started before, it queued them behind the copy's data
        // and delayed the reply.
        let run = BackupRun::start(record, vm.clone()).await;
        {
            let mut st = obj.lock();
            st.jobs.completed = None;
            st.backup = Some(run);
        }
        if let Some(armed) = preserve {
            armed.keep();
        }
        let driver = self.clone();
        let followed = obj.clone();
        tokio::spawn(async move { driver.follow_backup(followed, vm, watch).await });
        Ok(())
    }

    /// A begin that failed and undid what it made in QEMU: the new
    /// checkpoint's metadata (`cp_written`) and the intents go.
    async fn settle_begin(
        &self,
        uuid: crate::driver::Uuid,
        cp_intent: Option<&Intent>,
        cp_written: Option<&str>,
    ) {
        if let Some(name) = cp_written.map(str::to_string) {
            let removed = self.store_io(move |s| s.delete_checkpoint(&uuid, &name));
            if let Err(err) = removed.await {
                // The intents stay: the next start-up removes it.
                tracing::error!(%err, "cannot remove the metadata of a failed backup's checkpoint");
                return;
            }
        }
        if let Some(intent) = cp_intent {
            self.drop_intent(uuid, &intent.checkpoint).await;
        }
        self.delete_backup(uuid).await;
    }

    /// Gives each disk of a push backup a copy-before-write filter of its
    /// own (`qemu::cbw`), so that a guest write waits at most `timeout`
    /// seconds for the copy. Its scratch image goes where a pull backup's
    /// goes by default, next to the disk (`<source>.<suffix>.cbw`): on the
    /// storage provisioned for the disk, which can hold what the guest
    /// overwrites while the backup runs — the run directory is usually a
    /// tmpfs, in memory.
    fn own_filters(
        &self,
        obj: &DomainObj,
        requests: &mut [qbackup::BackupDisk],
        suffix: &str,
        timeout: u32,
    ) -> Result<(), DriverError> {
        let mut st = obj.lock();
        let live = st.live.as_mut().ok_or_else(inactive)?;
        for request in requests.iter_mut() {
            let mut scratch = request.source.source.clone().into_os_string();
            scratch.push(format!(".{suffix}.cbw"));
            request.cbw = Some(CbwRequest {
                scratch: scratch.into(),
                node_index: live.next_node,
                timeout,
                latency_ns: crate::fault::cbw_latency_ns(),
            });
            live.next_node += 1;
        }
        Ok(())
    }

    /// The new checkpoint given with a backup: checked as a plain create,
    /// its bitmaps added by the backup's transaction.
    fn new_checkpoint(
        &self,
        obj: &DomainObj,
        parsed: ParsedCheckpoint,
    ) -> Result<NewCheckpoint, DriverError> {
        let st = obj.lock();
        let live = st.live.as_ref().ok_or_else(inactive)?;
        checkpoint::prepare_new(&st.checkpoints, &live.def, parsed)
    }

    /// Lists a checkpoint whose bitmaps the backup's transaction made and
    /// whose metadata was written before it.
    async fn commit_checkpoint(&self, obj: &Arc<DomainObj>, def: CheckpointDef) {
        let name = def.name().to_string();
        {
            let mut st = obj.lock();
            let parent = def.parent().map(str::to_string);
            st.checkpoints.insert(&name, parent.as_deref(), def);
            st.checkpoints.set_current(Some(&name));
        }
        self.drop_intent(obj.uuid, &name).await;
    }

    /// A free port of the configured range for a pull backup's TCP
    /// server: one no other backup of this daemon holds and that binds on
    /// the address asked for now.
    fn allocate_port(&self, def: &BackupDef) -> Result<u16, DriverError> {
        let host = def.server().and_then(|s| s.name()).unwrap_or("localhost");
        let taken: HashSet<u16> = self
            .shared
            .domains
            .all()
            .iter()
            .filter_map(|obj| {
                let st = obj.lock();
                match st.backup.as_ref()?.record.pull.as_ref()?.addr {
                    NbdAddress::Tcp { port, .. } => Some(port),
                    NbdAddress::Unix(_) => None,
                }
            })
            .collect();
        let range = self.shared.config.nbd_ports.clone();
        let (min, max) = (*range.start(), *range.end());
        range
            .filter(|port| !taken.contains(port))
            .find(|port| std::net::TcpListener::bind((host, *port)).is_ok())
            .ok_or_else(|| {
                DriverError::internal(format!(
                    "Unable to find an unused port in range 'nbd' ({min}-{max})"
                ))
            })
    }
}

/// Where a pull backup's NBD server listens, once the definition has a
/// server with a port.
fn pull_address(def: &BackupDef) -> Result<NbdAddress, DriverError> {
    let server = def
        .server()
        .ok_or_else(|| DriverError::internal("pull backup without a server"))?;
    match server.transport() {
        Transport::Unix => {
            let path = server
                .socket()
                .ok_or_else(|| DriverError::internal("unix server without a socket"))?;
            // QEMU unlinks whatever is at the path before it binds: never
            // let it take a file somebody else owns.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(DriverError::operation_invalid(format!(
                    "NBD socket '{path}' already exists"
                )));
            }
            Ok(NbdAddress::Unix(path.into()))
        }
        Transport::Tcp => Ok(NbdAddress::Tcp {
            host: server.name().unwrap_or("localhost").to_string(),
            port: server
                .port()
                .ok_or_else(|| DriverError::internal("TCP server without a port"))?,
        }),
    }
}

/// Each backed-up disk as the record follows it.
fn run_disks(running: &DomainDef, targets: &[qbackup::DiskBackup]) -> Vec<RunDisk> {
    targets
        .iter()
        .map(|t| RunDisk {
            dst: t.disk.clone(),
            path: running
                .disk_by_target(&t.disk)
                .and_then(DiskDef::source)
                .unwrap_or_default()
                .to_string(),
            job_id: t.job_id.clone(),
            state: DiskState::Running,
        })
        .collect()
}

/// How the targets are made and filled: reused as they are
/// (REUSE_EXTERNAL) or created, and the speed push copies start at.
struct Copying {
    reuse: bool,
    speed: Option<u64>,
}

/// Everything backup-begin does in QEMU: the targets made and attached,
/// then [`start_jobs`]. On error nothing of it is left.
async fn begin_in_qemu(
    mon: &Monitor,
    graph: &qbackup::BlockGraph,
    requests: &[qbackup::BackupDisk],
    copying: Copying,
    server: Option<Server<'_>>,
    def: &BackupDef,
    cp_bitmaps: &[(String, String)],
) -> Result<(Vec<qbackup::DiskBackup>, JobWatch), QemuError> {
    let Copying { reuse, speed } = copying;
    let targets = qbackup::prepare_in(mon, graph, requests, reuse).await?;
    let server = server.map(|s| Server {
        exports: exports(def, &targets),
        ..s
    });
    let watch = start_jobs(mon, &targets, server, cp_bitmaps, speed).await?;
    Ok((targets, watch))
}

/// One export per backed-up disk, named as the definition says.
fn exports(def: &BackupDef, targets: &[qbackup::DiskBackup]) -> Vec<NbdExport> {
    targets
        .iter()
        .map(|t| {
            let disk = def.disk(&t.disk);
            NbdExport {
                node: t.target.format_node.clone(),
                name: disk
                    .and_then(|d| d.export_name())
                    .unwrap_or(&t.disk)
                    .to_string(),
                bitmap: t.bitmap.as_ref().map(|b| b.name.clone()),
            }
        })
        .collect()
}

/// What the qemu layer needs per backed-up disk.
fn backup_requests(
    def: &BackupDef,
    running: &DomainDef,
    pull: bool,
) -> Result<Vec<qbackup::BackupDisk>, DriverError> {
    let specs = launch::disk_specs(running)?;
    def.backed_up()
        .map(|(disk, store)| {
            let source = specs
                .iter()
                .find(|s| s.target == disk.name())
                .cloned()
                .ok_or_else(|| DriverError::internal(format!("no disk named '{}'", disk.name())))?;
            let path = store
                .path()
                .ok_or_else(|| DriverError::internal("backup target has no path"))?;
            let format = match store.format() {
                Some(ConfFormat::Raw) => DiskFormat::Raw,
                None | Some(ConfFormat::Qcow2) => DiskFormat::Qcow2,
                // libvirt formats other types too (vmdk, ...); silently
                // writing qcow2 instead would betray the request.
                Some(other) => {
                    return Err(DriverError::new(
                        ErrorKind::ConfigUnsupported,
                        format!(
                            "backup target format '{}' of disk '{}' is not supported",
                            other.as_str(),
                            disk.name()
                        ),
                    ))
                }
            };
            if store.is_block() {
                // A block device is never created, only formatted or
                // written over; libvirt's labelling stats it first.
                std::fs::metadata(path)
                    .map_err(|e| DriverError::system(format_args!("unable to stat: {path}"), e))?;
            }
            Ok(qbackup::BackupDisk {
                source,
                store: path.into(),
                store_format: format,
                store_block: store.is_block(),
                store_node_index: store.index().unwrap_or(0),
                incremental: disk.incremental().map(str::to_string),
                fleece: pull,
                bitmap: disk.bitmap().map(str::to_string),
                cbw: None,
            })
        })
        .collect()
}

/// A pull backup's NBD server as [`start_jobs`] sets it up.
struct Server<'a> {
    addr: &'a NbdAddress,
    /// Where QEMU reads x509 credentials, with `tls='yes'`.
    tls_dir: Option<&'a Path>,
    /// A unix socket's mode.
    mode: u32,
    exports: Vec<NbdExport>,
}

/// Starts every disk's job on its attached target in one transaction with
/// the new checkpoint's bitmaps (`cp_bitmaps`, (node, bitmap)); a pull
/// backup's server listens before it and exports after it. On error what
/// this and [`qbackup::prepare_in`] did is undone, bitmaps included.
async fn start_jobs(
    mon: &Monitor,
    targets: &[qbackup::DiskBackup],
    server: Option<Server<'_>>,
    cp_bitmaps: &[(String, String)],
    speed: Option<u64>,
) -> Result<JobWatch, QemuError> {
    let not_started = "cannot undo a backup that did not start";
    if let Some(server) = &server {
        if let Err(err) = nbd::serve(mon, server.addr, server.mode, server.tls_dir).await {
            warn_each(qbackup::discard(mon, targets).await, not_started);
            return Err(err);
        }
    }
    let tls = server.as_ref().is_some_and(|s| s.tls_dir.is_some());
    let cp_actions = bitmap::add_actions(cp_bitmaps, None);
    let mut watch = match qbackup::start(mon, targets, cp_actions, speed).await {
        Ok(watch) => watch,
        Err(err) => {
            if let Some(server) = &server {
                nbd::shutdown(mon, server.addr, tls).await;
            }
            warn_each(qbackup::discard(mon, targets).await, not_started);
            // Filters of the backup's own take the bitmaps first, in a
            // transaction of their own (qbackup::start).
            if targets.iter().any(|t| t.cbw.is_some()) && !cp_bitmaps.is_empty() {
                if let Err(problem) = bitmap::remove_bitmaps(mon, cp_bitmaps).await {
                    tracing::debug!(%problem, "new checkpoint bitmaps of a backup that did not start");
                }
            }
            return Err(err);
        }
    };
    let Some(server) = server else {
        return Ok(watch);
    };
    if let Err(err) = qbackup::export(mon, &server.exports).await {
        nbd::shutdown(mon, server.addr, tls).await;
        let mut problems = qbackup::abandon(mon, &mut watch, targets).await;
        problems.extend(qbackup::remove_created_files(targets).await);
        if !cp_bitmaps.is_empty() {
            problems.extend(bitmap::remove_bitmaps(mon, cp_bitmaps).await.err());
        }
        warn_each(problems, "cannot undo a pull backup whose export failed");
        return Err(err);
    }
    Ok(watch)
}

fn warn_each(problems: Vec<QemuError>, what: &str) {
    for problem in problems {
        tracing::warn!(%problem, "{what}");
    }
}
