//! Starting and stopping QEMU for a domain, noticing when it goes away on
//! its own, and taking running domains back after a daemon restart.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::conf::{DomainDef, FormatMode, Secrets};
use crate::qemu::{self, RunningVm, VmEvent};

use super::error::DriverError;
use super::pause::Transition;
use super::registry::{state, DomainObj, DomainState, StopCause};
use super::store::LiveRecord;
use super::{launch, DomainEvent, DomainRef, Driver, Lifecycle};

/// virDomainCreateFlags.
pub mod create_flags {
    pub const START_PAUSED: u32 = 1;
    pub const START_AUTODESTROY: u32 = 2;
    pub const START_BYPASS_CACHE: u32 = 4;
    pub const START_FORCE_BOOT: u32 = 8;
    pub const START_VALIDATE: u32 = 16;
}

/// virDomainDestroyFlagsValues.
pub const DESTROY_GRACEFUL: u32 = 1;

/// virDomainShutdownFlagValues: the methods QEMU can do without a guest agent.
const SHUTDOWN_DEFAULT: u32 = 0;
const SHUTDOWN_ACPI_POWER_BTN: u32 = 1;

/// virDomainQemuMonitorCommandFlags.
pub const MONITOR_COMMAND_HMP: u32 = 1;

impl Driver {
    /// virDomainCreateWithFlags: starts QEMU for a defined domain.
    pub async fn create(&self, dom: &DomainRef, flags: u32) -> Result<DomainRef, DriverError> {
        use create_flags::*;
        DriverError::check_flags(
            flags,
            START_PAUSED
                | START_AUTODESTROY
                | START_BYPASS_CACHE
                | START_FORCE_BOOT
                | START_VALIDATE,
            "qemuDomainCreateWithFlags",
        )?;
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        // An interrupted snapshot operation may change the definition
        // (start_def settles them too, for the other ways in).
        if !obj.lock().is_active() {
            self.settle_snapshot_intents(&obj).await;
        }
        let def = {
            let st = obj.lock();
            if st.is_active() {
                return Err(DriverError::operation_invalid("domain is already running"));
            }
            match &st.config {
                Some(def) if !st.removed => def.clone(),
                _ => {
                    return Err(self
                        .domain(dom)
                        .err()
                        .unwrap_or_else(DriverError::not_running))
                }
            }
        };
        self.start_def(&obj, def, flags & START_PAUSED != 0).await?;
        Ok(obj.reference())
    }

    pub(super) async fn start_def(
        &self,
        obj: &Arc<DomainObj>,
        def: DomainDef,
        paused: bool,
    ) -> Result<(), DriverError> {
        def.check_virt_type(launch::kvm_available())?;
        def.check_startable()?;
        let id = self.shared.domains.next_id();
        let run_dir = self.shared.store.domain_run_dir(&obj.uuid);
        let spec = launch::spec(&def, &run_dir)?;
        // The layers of the disks' backing chains take node numbers past
        // the disks' (qemu::start reads the same headers): recorded before
        // QEMU starts, so a restarted daemon never hands them out again.
        let highest_node = qemu::read_backing_chains(&mut spec.disks.clone()).await;
        let (run_state, reason) = if paused {
            (state::PAUSED, state::PAUSED_USER)
        } else {
            (state::RUNNING, state::RUNNING_BOOTED)
        };
        // The record goes first: a daemon killed right after QEMU started
        // must find it, or that QEMU would be left paused and unknown.
        let record = LiveRecord {
            id,
            persistent: obj.lock().config.is_some(),
            state: run_state,
            reason,
            xml: def.format(FormatMode::Inactive, Secrets::Shown),
            nodes: Vec::new(),
            overlays: Vec::new(),
            next_node: highest_node + 1,
        };
        let uuid = obj.uuid;
        // A backup whose QEMU went away while a crashed daemon was still
        // setting it up ends now, before a new QEMU could be taken for its.
        self.forget_backup(obj).await;
        // Undone with qemu-img, before a QEMU holds the images.
        self.settle_snapshot_intents(obj).await;
        self.store_io(move |s| s.save_live(&uuid, &record)).await?;
        let started = match qemu::start(&spec).await {
            Ok(mut vm) => {
                let events = vm.take_events();
                let vm = Arc::new(vm);
                let resumed = if paused { Ok(()) } else { vm.cont().await };
                match resumed {
                    Ok(()) => Ok((vm, events)),
                    Err(err) => {
                        let _ = vm.destroy().await;
                        Err(DriverError::from(err))
                    }
                }
            }
            Err(err) => Err(DriverError::from(err)),
        };
        let (vm, events) = match started {
            Ok(started) => started,
            Err(err) => {
                self.delete_live(obj).await;
                return Err(err);
            }
        };
        obj.lock()
            .set_live(id, def, vm.clone(), (run_state, reason));
        self.reconcile_checkpoints(obj).await;
        let dom = obj.reference();
        // libvirt reports QEMU's RESUME from the first `cont` before the
        // start itself.
        if !paused {
            self.emit(DomainEvent::Lifecycle {
                dom: dom.clone(),
                event: Lifecycle::ResumedUnpaused,
            });
        }
        self.emit(DomainEvent::Lifecycle {
            dom: dom.clone(),
            event: Lifecycle::StartedBooted,
        });
        if paused {
            self.emit(DomainEvent::Lifecycle {
                dom,
                event: Lifecycle::SuspendedPaused,
            });
        }
        self.watch(obj.clone(), vm, events);
        Ok(())
    }

    /// Rewrites the live record after a state change, so that a restarted
    /// daemon reports what QEMU is doing.
    pub(super) async fn save_live(&self, obj: &DomainObj) {
        if let Err(err) = self.try_save_live(obj).await {
            tracing::warn!(%err, "cannot record the domain's live state");
        }
    }

    /// [`Self::save_live`] for a caller whose operation it commits.
    pub(super) async fn try_save_live(&self, obj: &DomainObj) -> Result<(), DriverError> {
        let _record = obj.live_record.lock().await;
        let record = {
            let st = obj.lock();
            let Some(live) = st.live.as_ref().filter(|l| !l.gone) else {
                return Ok(());
            };
            LiveRecord {
                id: live.id,
                persistent: st.config.is_some(),
                state: st.state,
                reason: st.reason,
                xml: live.def.format(FormatMode::Inactive, Secrets::Shown),
                nodes: LiveRecord::nodes_of(&live.def),
                overlays: live.overlays.clone(),
                next_node: live.next_node,
            }
        };
        let uuid = obj.uuid;
        self.store_io(move |s| s.save_live(&uuid, &record)).await
    }

    /// Removes the domain's run directory (its QEMU is gone).
    async fn delete_live(&self, obj: &DomainObj) {
        let _record = obj.live_record.lock().await;
        let uuid = obj.uuid;
        let _ = self
            .store_io(move |s| {
                s.delete_live(&uuid);
                Ok(())
            })
            .await;
    }

    /// virDomainDestroyFlags: stops QEMU at once.
    pub async fn destroy(&self, dom: &DomainRef, flags: u32) -> Result<(), DriverError> {
        DriverError::check_flags(flags, DESTROY_GRACEFUL, "qemuDomainDestroyFlags")?;
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        self.destroy_locked(&obj).await
    }

    /// Stops QEMU at once; the caller holds the domain's job.
    pub(super) async fn destroy_locked(&self, obj: &Arc<DomainObj>) -> Result<(), DriverError> {
        let vm = {
            let mut st = obj.lock();
            let live = st.live.as_mut().ok_or_else(DriverError::inactive)?;
            live.stopping = Some(StopCause::Destroy);
            live.vm.clone()
        };
        vm.destroy().await.map_err(DriverError::from)?;
        self.on_exit(obj, &vm).await;
        Ok(())
    }

    /// virDomainShutdownFlags: asks the guest to power off (ACPI).
    pub async fn shutdown(&self, dom: &DomainRef, flags: u32) -> Result<(), DriverError> {
        DriverError::check_flags(flags, 0x1f, "qemuDomainShutdownFlags")?;
        if flags != SHUTDOWN_DEFAULT && flags & SHUTDOWN_ACPI_POWER_BTN == 0 {
            return Err(DriverError::new(
                super::ErrorKind::ArgumentUnsupported,
                "QEMU guest agent is not configured",
            ));
        }
        let vm = self.running_vm(dom)?;
        vm.shutdown().await.map_err(DriverError::from)
    }

    /// virDomainQemuMonitorCommand: raw QMP (or HMP) passthrough.
    pub async fn monitor_command(
        &self,
        dom: &DomainRef,
        cmd: &str,
        flags: u32,
    ) -> Result<String, DriverError> {
        DriverError::check_flags(flags, MONITOR_COMMAND_HMP, "qemuDomainQemuMonitorCommand")?;
        let vm = self.running_vm(dom)?;
        let result = if flags & MONITOR_COMMAND_HMP != 0 {
            vm.monitor().hmp(cmd).await
        } else {
            vm.monitor().execute_raw(cmd).await
        };
        result.map_err(DriverError::from)
    }

    fn running_vm(&self, dom: &DomainRef) -> Result<Arc<RunningVm>, DriverError> {
        let obj = self.domain(dom)?;
        let st = obj.lock();
        st.live
            .as_ref()
            .map(|l| l.vm.clone())
            .ok_or_else(DriverError::inactive)
    }

    /// Follows one QEMU process: its state changes and its exit.
    fn watch(
        &self,
        obj: Arc<DomainObj>,
        vm: Arc<RunningVm>,
        events: Option<broadcast::Receiver<VmEvent>>,
    ) {
        let driver = self.clone();
        let mut events = events.unwrap_or_else(|| vm.subscribe());
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(VmEvent::Exited(_)) | Err(broadcast::error::RecvError::Closed) => break,
                    Ok(event) => driver.on_vm_event(&obj, &vm, event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
            vm.exited().await;
            driver.on_exit(&obj, &vm).await;
        });
    }

    async fn on_vm_event(&self, obj: &Arc<DomainObj>, vm: &Arc<RunningVm>, event: VmEvent) {
        match event {
            VmEvent::Stop => {
                self.transition(obj, vm, Transition::Paused).await;
                return;
            }
            VmEvent::Resume => {
                self.transition(obj, vm, Transition::Resumed).await;
                return;
            }
            // A backup may keep the domain (backup/preserve.rs).
            VmEvent::Shutdown { guest, .. } if self.shutdown_event(obj, vm, guest).await => return,
            _ => {}
        }
        let lifecycle = {
            let mut st = obj.lock();
            let Some(live) = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm)) else {
                return;
            };
            match event {
                VmEvent::Shutdown { guest, .. } => {
                    live.shutdown_seen = true;
                    st.state = state::SHUTDOWN;
                    st.reason = 1;
                    Some(if guest {
                        Lifecycle::ShutdownGuest
                    } else {
                        Lifecycle::ShutdownHost
                    })
                }
                _ => None,
            }
        };
        if let Some(event) = lifecycle {
            // The event goes first, so that it keeps its place before the
            // events of whatever the state change leads to.
            self.emit(DomainEvent::Lifecycle {
                dom: obj.reference(),
                event,
            });
            self.save_live(obj).await;
        }
    }

    /// QEMU is gone: the domain is shut off, or forgotten if transient.
    async fn on_exit(&self, obj: &Arc<DomainObj>, vm: &Arc<RunningVm>) {
        let _exit = obj.exit.lock().await;
        let ours = {
            let mut st = obj.lock();
            let live = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm));
            live.map(|l| l.gone = true).is_some()
        };
        if ours {
            // A backup ends with its QEMU, before the domain is reported
            // stopped, as libvirt orders it; the run directory goes before
            // anyone can see the domain shut off.
            self.end_backup_with_qemu(obj, vm).await;
            self.delete_live(obj).await;
        }
        let ended = {
            let mut st = obj.lock();
            st.live.take_if(|l| Arc::ptr_eq(&l.vm, vm)).map(|live| {
                let (reason, event) = match live.stopping {
                    Some(StopCause::Destroy) => {
                        (state::SHUTOFF_DESTROYED, Lifecycle::StoppedDestroyed)
                    }
                    None if live.shutdown_seen => {
                        (state::SHUTOFF_SHUTDOWN, Lifecycle::StoppedShutdown)
                    }
                    None => (state::SHUTOFF_CRASHED, Lifecycle::StoppedFailed),
                };
                st.state = state::SHUTOFF;
                st.reason = reason;
                let dom = DomainRef {
                    name: live.def.name().to_string(),
                    uuid: obj.uuid,
                    id: -1,
                };
                (dom, event, st.config.is_none())
            })
        };
        let Some((dom, event, transient)) = ended else {
            // The other of destroy and the exit watcher ended the domain
            // while this one waited for `exit`.
            return;
        };
        if transient {
            // A transient domain's checkpoints and snapshots end with it,
            // as in libvirt.
            let uuid = obj.uuid;
            let deleted = self.store_io(move |s| {
                s.delete_all_checkpoints(&uuid)?;
                s.delete_all_snapshots(&uuid)
            });
            if let Err(err) = deleted.await {
                tracing::warn!(%err, "cannot remove the metadata of a transient domain");
            }
            self.shared.domains.remove(&obj.uuid);
        }
        self.emit(DomainEvent::Lifecycle { dom, event });
    }

    /// Reads every stored definition. A file that no longer parses is
    /// reported and left on disk for the administrator.
    pub(super) async fn load_configs(&self) -> Result<(), DriverError> {
        for (path, xml) in self.store_io(|s| s.load_configs()).await? {
            let def = xml.and_then(|xml| DomainDef::parse(&xml).map_err(DriverError::from));
            let def = match def {
                Ok(def) => def,
                Err(err) => {
                    tracing::error!(file = %path.display(), %err, "cannot load domain definition");
                    continue;
                }
            };
            let added = self
                .shared
                .domains
                .add_or_find(&def, || DomainState::shut_off(Some(def.clone())));
            if let Err(err) = added {
                tracing::error!(file = %path.display(), %err, "duplicate domain definition");
            }
        }
        Ok(())
    }

    /// Takes back every QEMU a previous run of the daemon started.
    pub(super) async fn reconnect_all(&self) {
        let records = self.store_io(|s| Ok(s.load_live())).await;
        for (dir, record) in records.unwrap_or_default() {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    tracing::error!(dir = %dir.display(), %err, "unreadable live state; leaving it");
                    continue;
                }
            };
            if let Err(err) = self.reconnect_one(&dir, record).await {
                tracing::warn!(dir = %dir.display(), %err, "domain did not survive the restart");
            }
        }
        let orphans = self.store_io(|s| Ok(s.orphan_backups())).await;
        for uuid in orphans.unwrap_or_default() {
            match self.shared.domains.by_uuid(&uuid) {
                Some(obj) if !obj.lock().is_active() => {
                    tracing::warn!(domain = %obj.reference().name, "ending a backup whose QEMU is gone");
                    self.forget_backup(&obj).await;
                    self.delete_live(&obj).await;
                }
                _ => tracing::warn!(
                    uuid = %super::store::uuid_string(&uuid),
                    "a backup record without its domain; left as it is"
                ),
            }
        }
    }

    async fn reconnect_one(
        &self,
        dir: &std::path::Path,
        record: LiveRecord,
    ) -> Result<(), DriverError> {
        let mut def = DomainDef::parse(&record.xml)?;
        record.apply_nodes(&mut def);
        let (obj, _) = self
            .shared
            .domains
            .add_or_find(&def, || DomainState::shut_off(None))?;
        let (vm, events) = match qemu::reconnect(dir).await {
            Ok(mut vm) => {
                let events = vm.take_events();
                (Arc::new(vm), events)
            }
            Err(err) => {
                self.forget_backup(&obj).await;
                self.delete_live(&obj).await;
                let transient = {
                    let mut st = obj.lock();
                    st.state = state::SHUTOFF;
                    st.reason = state::SHUTOFF_CRASHED;
                    st.config.is_none()
                };
                if transient {
                    self.shared.domains.remove(&obj.uuid);
                }
                return Err(DriverError::from(err));
            }
        };
        self.shared.domains.note_id(record.id);
        // QEMU may have been paused or resumed while no daemon listened.
        let (run_state, reason) = match vm.is_running().await {
            Ok(true) if record.state == state::RUNNING => (record.state, record.reason),
            Ok(true) => (state::RUNNING, state::RUNNING_UNPAUSED),
            Ok(false) if record.state == state::PAUSED => (record.state, record.reason),
            Ok(false) => (state::PAUSED, state::PAUSED_UNKNOWN),
            Err(_) => (record.state, record.reason),
        };
        {
            let mut st = obj.lock();
            st.set_live(record.id, def, vm.clone(), (run_state, reason));
            if let Some(live) = st.live.as_mut() {
                live.overlays = record.overlays.clone();
                let highest = record.overlays.iter().map(|o| o.overlay).max();
                live.next_node = live
                    .next_node
                    .max(highest.unwrap_or(0) + 1)
                    .max(record.next_node);
            }
        }
        tracing::info!(domain = %obj.reference().name, id = record.id, "reconnected to running domain");
        self.resume_backup(&obj).await;
        self.note_preserving(&obj);
        self.resume_block_jobs(&obj).await;
        self.watch(obj, vm, events);
        Ok(())
    }
}
