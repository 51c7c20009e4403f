//! Pausing and resuming a running domain's vCPUs (virDomainSuspend,
//! virDomainResume), and the state changes QEMU's STOP and RESUME events
//! bring, whoever caused them.

use std::sync::Arc;

use crate::qemu::RunningVm;

use super::error::DriverError;
use super::registry::{state, DomainObj};
use super::{DomainEvent, DomainRef, Driver, Lifecycle};

/// Which way the vCPUs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    Paused,
    Resumed,
}

impl Driver {
    /// virDomainSuspend: libvirt's qemuDomainSuspend. Suspending a paused
    /// domain succeeds without a word, as in libvirt.
    pub async fn suspend(&self, dom: &DomainRef) -> Result<(), DriverError> {
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        let vm = {
            let mut st = obj.lock();
            let paused = st.state == state::PAUSED;
            let live = st.live.as_mut().ok_or_else(DriverError::inactive)?;
            if paused {
                return Ok(());
            }
            live.pending_reason = Some(state::PAUSED_USER);
            live.vm.clone()
        };
        if let Err(err) = vm.stop().await {
            Self::forget_pending(&obj, &vm);
            return Err(DriverError::from(err));
        }
        self.transition_saved(&obj, &vm, Transition::Paused).await;
        Ok(())
    }

    /// virDomainResume: libvirt's qemuDomainResume.
    pub async fn resume(&self, dom: &DomainRef) -> Result<(), DriverError> {
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        let vm = {
            let mut st = obj.lock();
            let current = st.state;
            let live = st.live.as_mut().ok_or_else(DriverError::inactive)?;
            match current {
                state::RUNNING => {
                    return Err(DriverError::operation_invalid("domain is already running"))
                }
                state::PAUSED => {}
                // libvirt resumes only paused (or panicked) domains and
                // reports success for the rest.
                _ => return Ok(()),
            }
            live.pending_reason = Some(state::RUNNING_UNPAUSED);
            live.vm.clone()
        };
        if let Err(err) = vm.cont().await {
            Self::forget_pending(&obj, &vm);
            return Err(DriverError::from(err));
        }
        self.transition_saved(&obj, &vm, Transition::Resumed).await;
        Ok(())
    }

    fn forget_pending(obj: &DomainObj, vm: &Arc<RunningVm>) {
        let mut st = obj.lock();
        if let Some(live) = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm)) {
            live.pending_reason = None;
        }
    }

    /// [`Driver::transition`] for the API, which returns only once the live
    /// record says so, also when QEMU's event made the change and its
    /// write may still be under way.
    async fn transition_saved(&self, obj: &Arc<DomainObj>, vm: &Arc<RunningVm>, way: Transition) {
        if !self.transition(obj, vm, way).await {
            self.save_live(obj).await;
        }
    }

    /// Records that this QEMU's vCPUs stopped or started, with the reason
    /// the API left, or libvirt's for a change nobody asked for, and sends
    /// the lifecycle event. Both the API and QEMU's event call it; only
    /// the first changes anything, and learns so.
    pub(super) async fn transition(
        &self,
        obj: &Arc<DomainObj>,
        vm: &Arc<RunningVm>,
        way: Transition,
    ) -> bool {
        let changed = {
            let mut st = obj.lock();
            let from = st.state;
            let Some(live) = st.live.as_mut().filter(|l| Arc::ptr_eq(&l.vm, vm)) else {
                return false;
            };
            match way {
                Transition::Paused if from == state::RUNNING => {
                    let reason = live.pending_reason.take();
                    st.state = state::PAUSED;
                    st.reason = reason.unwrap_or(state::PAUSED_UNKNOWN);
                    Some(Lifecycle::SuspendedPaused)
                }
                Transition::Resumed if from == state::PAUSED => {
                    let reason = live.pending_reason.take();
                    st.state = state::RUNNING;
                    st.reason = reason.unwrap_or(state::RUNNING_UNPAUSED);
                    Some(Lifecycle::ResumedUnpaused)
                }
                _ => None,
            }
        };
        if let Some(event) = changed {
            // The event goes first, so that it keeps its place before the
            // events of whatever the state change leads to.
            self.emit(DomainEvent::Lifecycle {
                dom: obj.reference(),
                event,
            });
            self.save_live(obj).await;
        }
        changed.is_some()
    }
}
