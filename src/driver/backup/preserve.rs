//! A backup that keeps the domain when the guest powers off
//! (VIR_DOMAIN_BACKUP_BEGIN_PRESERVE_SHUTDOWN_DOMAIN, libvirt 11.10;
//! `virsh backup-begin --preserve-domain-on-shutdown`).
//!
//! Without the flag a guest power-off ends QEMU and with it the backup, as
//! in libvirt 9.0. With it, libvirt resets the machine and keeps it paused
//! until the backup ends, then stops QEMU as a guest shutdown would; a
//! domain resumed meanwhile boots again in the same QEMU and keeps running.
//!
//! QEMU runs here without `-no-shutdown` (`qemu/command.rs`), so it exits
//! by itself on a guest power-off. backup-begin with the flag therefore
//! first switches QEMU's shutdown action to `pause` (QMP `set-action`): a
//! power-off then stops the vCPUs and QEMU stays. Its end (or a begin that
//! fails) switches it back to `poweroff`. The steps:
//!
//! 1. begin: [`Driver::arm_preserve`] records `shutdown_pauses` on the
//!    domain, then sets the action; the backup's record keeps `preserve`.
//! 2. SHUTDOWN event ([`Driver::shutdown_event`]): with a preserving backup
//!    running, the domain goes paused (reason `shutting down`, event
//!    suspended / guest-shutdown) and QEMU is reset, so that `resume` boots
//!    it again. A SHUTDOWN that finds the action `pause` but no preserving
//!    backup (the backup ended a moment before, or its begin failed) is a
//!    plain libvirt 9.0 shutdown: the daemon stops the stopped QEMU, as
//!    libvirtd, which always runs QEMU with `-no-shutdown`, does.
//! 3. the backup's end ([`Driver::end_preserve`], after job-completed): a
//!    domain still paused that way is stopped (SIGTERM; the domain ends
//!    shut off with reason shutdown and the stopped / shutdown event);
//!    otherwise the action goes back to `poweroff`.

use std::sync::Arc;

use crate::driver::error::DriverError;
use crate::driver::registry::{state, DomainObj};
use crate::driver::{DomainEvent, Driver, Lifecycle};
use crate::qemu::RunningVm;

/// virDomainBackupBeginFlags: keep the domain if the guest powers off
/// while the backup runs (libvirt 11.10).
pub const BEGIN_PRESERVE_SHUTDOWN_DOMAIN: u32 = 1 << 1;

/// QEMU's shutdown action set to `pause` for a backup being set up. Unless
/// [`Armed::keep`] is called (the backup runs), dropping it puts `poweroff`
/// back, so a begin that fails leaves QEMU as it found it.
pub(in crate::driver) struct Armed {
    driver: Driver,
    obj: Arc<DomainObj>,
    vm: Arc<RunningVm>,
    kept: bool,
}

impl Armed {
    /// The backup runs: its end disarms.
    pub(in crate::driver) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (driver, obj, vm) = (self.driver.clone(), self.obj.clone(), self.vm.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { driver.disarm(&obj, &vm).await });
        }
    }
}

/// What a SHUTDOWN event leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnShutdown {
    /// QEMU exits by itself: libvirt 9.0's handling in lifecycle.rs.
    Usual,
    /// A second SHUTDOWN (our own SIGTERM after the first): ignored, as
    /// libvirt ignores a repeated one.
    Repeated,
    /// Kept paused for the preserving backup.
    Preserve,
    /// QEMU stays stopped but nothing preserves it: shut down as usual,
    /// and the daemon ends QEMU.
    Stop,
}

impl Driver {
    /// backup-begin with [`BEGIN_PRESERVE_SHUTDOWN_DOMAIN`] in `flags`:
    /// makes a guest power-off stop `vm` instead of ending it. `None`
    /// without the flag (nothing is sent to QEMU, as libvirt 9.0).
    pub(in crate::driver) async fn arm_preserve(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        flags: u32,
    ) -> Result<Option<Armed>, DriverError> {
        if flags & BEGIN_PRESERVE_SHUTDOWN_DOMAIN == 0 {
            return Ok(None);
        }
        // Set before QEMU is asked: a power-off racing the reply must find
        // QEMU stopped rather than gone treated as such.
        Self::set_pauses(obj, vm, true);
        let armed = Armed {
            driver: self.clone(),
            obj: obj.clone(),
            vm: vm.clone(),
            kept: false,
        };
        match vm.set_shutdown_pauses(true).await {
            Ok(()) => Ok(Some(armed)),
            Err(err) => {
                armed.keep();
                Self::set_pauses(obj, vm, false);
                Err(err.into())
            }
        }
    }

    fn set_pauses(obj: &DomainObj, vm: &Arc<RunningVm>, pauses: bool) {
        let mut st = obj.lock();
        if let Some(live) = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm)) {
            live.shutdown_pauses = pauses;
        }
    }

    /// Puts QEMU's shutdown action back to `poweroff`.
    async fn disarm(&self, obj: &Arc<DomainObj>, vm: &Arc<RunningVm>) {
        if vm.monitor().is_closed() {
            return;
        }
        match vm.set_shutdown_pauses(false).await {
            Ok(()) => Self::set_pauses(obj, vm, false),
            Err(err) => tracing::warn!(%err, "cannot restore QEMU's shutdown action"),
        }
    }

    /// QEMU's SHUTDOWN event. Returns whether it was dealt with here;
    /// `false` leaves it to libvirt 9.0's handling in lifecycle.rs.
    pub(in crate::driver) async fn shutdown_event(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        guest: bool,
    ) -> bool {
        let plan = {
            let mut st = obj.lock();
            let preserving = st
                .backup
                .as_ref()
                .is_some_and(|run| run.record.preserve && Arc::ptr_eq(&run.vm, vm));
            let current = st.state;
            let Some(live) = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm)) else {
                return false;
            };
            let plan = if current == state::SHUTDOWN {
                OnShutdown::Repeated
            } else if !live.shutdown_pauses {
                OnShutdown::Usual
            } else if preserving && guest {
                OnShutdown::Preserve
            } else {
                OnShutdown::Stop
            };
            match plan {
                OnShutdown::Preserve => {
                    st.state = state::PAUSED;
                    st.reason = state::PAUSED_SHUTTING_DOWN;
                }
                OnShutdown::Stop => {
                    live.shutdown_seen = true;
                    st.state = state::SHUTDOWN;
                    st.reason = 1;
                }
                OnShutdown::Usual | OnShutdown::Repeated => {}
            }
            plan
        };
        let event = match plan {
            OnShutdown::Usual => return false,
            OnShutdown::Repeated => return true,
            OnShutdown::Preserve => Lifecycle::SuspendedGuestShutdown,
            OnShutdown::Stop if guest => Lifecycle::ShutdownGuest,
            OnShutdown::Stop => Lifecycle::ShutdownHost,
        };
        self.emit(DomainEvent::Lifecycle {
            dom: obj.reference(),
            event,
        });
        self.save_live(obj).await;
        match plan {
            OnShutdown::Preserve => {
                tracing::info!(domain = %obj.reference().name, "guest powered off during a backup that preserves the domain: reset and kept paused");
                if let Err(err) = vm.reset().await {
                    tracing::warn!(%err, "cannot reset the machine after the guest powered off");
                }
            }
            _ => {
                let vm = vm.clone();
                // The exit watcher reports the domain shut off.
                tokio::spawn(async move {
                    if let Err(err) = vm.destroy().await {
                        tracing::warn!(%err, "cannot stop QEMU after the guest powered off");
                    }
                });
            }
        }
        true
    }

    /// Whether the backup running in `vm` preserves the domain.
    pub(super) fn preserving(obj: &DomainObj, vm: Option<&Arc<RunningVm>>) -> bool {
        let st = obj.lock();
        let run = st.backup.as_ref();
        run.is_some_and(|r| r.record.preserve && vm.is_some_and(|vm| Arc::ptr_eq(&r.vm, vm)))
    }

    /// A preserving backup of `vm` is over (its job-completed sent): a
    /// domain still paused after the guest powered off is stopped as that
    /// power-off would have stopped it; a resumed one keeps running, and
    /// QEMU exits again on the next power-off.
    pub(super) async fn end_preserve(&self, obj: &Arc<DomainObj>, vm: &Arc<RunningVm>) {
        let stop = {
            let mut st = obj.lock();
            let kept = st.state == state::PAUSED && st.reason == state::PAUSED_SHUTTING_DOWN;
            let live = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm));
            let Some(live) = live.filter(|l| !l.gone) else {
                return;
            };
            if kept {
                live.shutdown_seen = true;
                st.state = state::SHUTDOWN;
                st.reason = 1;
            }
            kept
        };
        if !stop {
            self.disarm(obj, vm).await;
            return;
        }
        tracing::info!(domain = %obj.reference().name, "backup over: stopping the domain the guest powered off");
        // Its SHUTDOWN (host-signal) finds the state shutdown and is
        // ignored; the exit watcher reports the domain stopped / shutdown.
        if let Err(err) = vm.destroy().await {
            tracing::warn!(%err, "cannot stop QEMU after the backup");
        }
    }

    /// After a restart: QEMU's shutdown action is whatever the previous
    /// run left, `pause` while a preserving backup runs, and possibly
    /// still `pause` if that run ended before it switched it back. So a
    /// reconnected QEMU counts as pausing: a guest power-off is then
    /// libvirt 9.0's shutdown with the daemon ending QEMU (which exits by
    /// itself if the action was `poweroff`), never a QEMU left stopped.
    pub(in crate::driver) fn note_preserving(&self, obj: &Arc<DomainObj>) {
        let mut st = obj.lock();
        if let Some(live) = st.live.as_mut() {
            live.shutdown_pauses = true;
        }
    }
}
