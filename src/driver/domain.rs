//! Domain definitions, lookups and read-only queries.

use std::sync::Arc;

use crate::conf::{DomainDef, FormatMode, Secrets};

use super::error::{DriverError, ErrorKind};
use super::registry::{state, DomainObj, DomainState};
use super::{DomainEvent, DomainRef, Driver, Lifecycle};

/// virConnectListAllDomainsFlags.
pub mod list_flags {
    pub const ACTIVE: u32 = 1;
    pub const INACTIVE: u32 = 2;
    pub const PERSISTENT: u32 = 4;
    pub const TRANSIENT: u32 = 8;
    pub const RUNNING: u32 = 16;
    pub const PAUSED: u32 = 32;
    pub const SHUTOFF: u32 = 64;
    pub const OTHER: u32 = 128;
    pub const MANAGEDSAVE: u32 = 256;
    pub const NO_MANAGEDSAVE: u32 = 512;
    pub const AUTOSTART: u32 = 1024;
    pub const NO_AUTOSTART: u32 = 2048;
    pub const HAS_SNAPSHOT: u32 = 4096;
    pub const NO_SNAPSHOT: u32 = 8192;
    pub const HAS_CHECKPOINT: u32 = 16384;
    pub const NO_CHECKPOINT: u32 = 32768;
    pub const ALL: u32 = 65535;
}

/// virDomainXMLFlags.
pub mod xml_flags {
    pub const SECURE: u32 = 1;
    pub const INACTIVE: u32 = 2;
    pub const UPDATE_CPU: u32 = 4;
    pub const MIGRATABLE: u32 = 8;
}

/// virDomainDefineFlags.
pub const DEFINE_VALIDATE: u32 = 1;

/// virDomainUndefineFlagsValues.
pub mod undefine_flags {
    pub const MANAGED_SAVE: u32 = 1;
    pub const SNAPSHOTS_METADATA: u32 = 2;
    pub const NVRAM: u32 = 4;
    pub const KEEP_NVRAM: u32 = 8;
    pub const CHECKPOINTS_METADATA: u32 = 16;
    pub const TPM: u32 = 32;
    pub const KEEP_TPM: u32 = 64;
}

/// What virDomainGetInfo returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub state: i32,
    pub max_mem_kib: u64,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub cpu_time_ns: u64,
}

fn live_mode(id: i32) -> FormatMode {
    FormatMode::Live {
        id: u32::try_from(id).unwrap_or(0),
    }
}

impl Driver {
    pub fn lookup_by_name(&self, name: &str) -> Result<DomainRef, DriverError> {
        self.shared
            .domains
            .by_name(name)
            .map(|d| d.reference())
            .ok_or_else(|| {
                DriverError::new(
                    ErrorKind::NoDomain,
                    format!("no domain with matching name '{name}'"),
                )
            })
    }

    pub fn lookup_by_uuid(&self, uuid: &super::Uuid) -> Result<DomainRef, DriverError> {
        self.shared
            .domains
            .by_uuid(uuid)
            .map(|d| d.reference())
            .ok_or_else(|| {
                DriverError::new(
                    ErrorKind::NoDomain,
                    format!(
                        "no domain with matching uuid '{}'",
                        super::store::uuid_string(uuid)
                    ),
                )
            })
    }

    pub fn lookup_by_id(&self, id: i32) -> Result<DomainRef, DriverError> {
        self.shared
            .domains
            .by_id(id)
            .map(|d| d.reference())
            .ok_or_else(|| {
                DriverError::new(
                    ErrorKind::NoDomain,
                    format!("no domain with matching id {id}"),
                )
            })
    }

    pub(super) fn domain(&self, dom: &DomainRef) -> Result<Arc<DomainObj>, DriverError> {
        self.shared.domains.get(dom)
    }

    /// The domain may have been undefined (or a transient one stopped)
    /// while the caller waited for its job.
    pub(super) fn check_present(
        &self,
        obj: &DomainObj,
        dom: &DomainRef,
    ) -> Result<(), DriverError> {
        if obj.lock().removed {
            return Err(self
                .domain(dom)
                .err()
                .unwrap_or_else(DriverError::not_running));
        }
        Ok(())
    }

    /// virConnectListAllDomains: every domain matching all the filter groups
    /// in `flags` (within a group, either bit matches).
    pub fn list_all(&self, flags: u32) -> Result<Vec<DomainRef>, DriverError> {
        use list_flags::*;
        DriverError::check_flags(flags, ALL, "qemuConnectListAllDomains")?;
        let group = |a: u32, b: u32, is_a: bool| -> bool {
            let want = flags & (a | b);
            want == 0 || want == (a | b) || (want == a && is_a) || (want == b && !is_a)
        };
        let mut out = Vec::new();
        for obj in self.shared.domains.all() {
            let st = obj.lock();
            let running = st.is_active() && st.state == state::RUNNING;
            let paused = st.is_active() && st.state == state::PAUSED;
            let shutoff = !st.is_active();
            let state_want = flags & (RUNNING | PAUSED | SHUTOFF | OTHER);
            let state_ok = state_want == 0
                || (state_want & RUNNING != 0 && running)
                || (state_want & PAUSED != 0 && paused)
                || (state_want & SHUTOFF != 0 && shutoff)
                || (state_want & OTHER != 0 && !running && !paused && !shutoff);
            let keep = group(ACTIVE, INACTIVE, st.is_active())
                && group(PERSISTENT, TRANSIENT, st.config.is_some())
                && state_ok
                && group(MANAGEDSAVE, NO_MANAGEDSAVE, false)
                && group(AUTOSTART, NO_AUTOSTART, st.autostart)
                && group(HAS_SNAPSHOT, NO_SNAPSHOT, false)
                && group(HAS_CHECKPOINT, NO_CHECKPOINT, !st.checkpoints.is_empty());
            if keep {
                out.push(DomainRef {
                    name: st.name().to_string(),
                    uuid: obj.uuid,
                    id: st.id(),
                });
            }
        }
        Ok(out)
    }

    /// virDomainDefineXMLFlags: a new persistent domain, or a new
    /// definition for an existing one (taking effect at its next start when
    /// it is running).
    pub async fn define_xml(&self, xml: &str, flags: u32) -> Result<DomainRef, DriverError> {
        DriverError::check_flags(flags, DEFINE_VALIDATE, "qemuDomainDefineXMLFlags")?;
        let def = DomainDef::parse(xml)?;
        def.check_virt_type(super::launch::kvm_available())?;
        let inactive_xml = def.format(FormatMode::Inactive, Secrets::Shown);
        // A new domain enters the registry with its definition, so that a
        // concurrent define of the same name sees the clash.
        let (obj, added) = self
            .shared
            .domains
            .add_or_find(&def, || DomainState::shut_off(Some(def.clone())))?;
        let _job = obj.job.lock().await;
        let uuid = obj.uuid;
        let saved = self
            .store_io(move |s| s.save_config(&uuid, &inactive_xml))
            .await;
        if let Err(err) = saved {
            if added {
                self.shared.domains.remove(&uuid);
            }
            return Err(err);
        }
        let was_persistent = !added && obj.lock().config.replace(def).is_some();
        let dom = obj.reference();
        let event = if added || !was_persistent {
            Lifecycle::DefinedAdded
        } else {
            Lifecycle::DefinedUpdated
        };
        self.emit(DomainEvent::Lifecycle {
            dom: dom.clone(),
            event,
        });
        Ok(dom)
    }

    /// virDomainUndefineFlags: forgets the persistent definition; a running
    /// domain becomes transient and goes away when it stops.
    pub async fn undefine(&self, dom: &DomainRef, flags: u32) -> Result<(), DriverError> {
        use undefine_flags::*;
        DriverError::check_flags(
            flags,
            MANAGED_SAVE
                | SNAPSHOTS_METADATA
                | NVRAM
                | KEEP_NVRAM
                | CHECKPOINTS_METADATA
                | TPM
                | KEEP_TPM,
            "qemuDomainUndefineFlags",
        )?;
        if flags & NVRAM != 0 && flags & KEEP_NVRAM != 0 {
            return Err(DriverError::operation_invalid(
                "cannot both keep and delete nvram",
            ));
        }
        if flags & TPM != 0 && flags & KEEP_TPM != 0 {
            return Err(DriverError::operation_invalid(
                "cannot both keep and delete TPM",
            ));
        }
        let obj = self.domain(dom)?;
        let _job = obj.job.lock().await;
        let active = {
            let st = obj.lock();
            if st.removed {
                return Err(self
                    .shared
                    .domains
                    .get(dom)
                    .err()
                    .unwrap_or_else(DriverError::not_running));
            }
            if st.config.is_none() {
                return Err(DriverError::operation_invalid(
                    "cannot undefine transient domain",
                ));
            }
            let snapshots = st.snapshots.len();
            if !st.is_active() && snapshots > 0 && flags & SNAPSHOTS_METADATA == 0 {
                return Err(DriverError::operation_invalid(format!(
                    "cannot delete inactive domain with {snapshots} snapshots"
                )));
            }
            let checkpoints = st.checkpoints.len();
            if !st.is_active() && checkpoints > 0 && flags & CHECKPOINTS_METADATA == 0 {
                return Err(DriverError::operation_invalid(format!(
                    "cannot delete inactive domain with {checkpoints} checkpoints"
                )));
            }
            st.is_active()
        };
        let uuid = obj.uuid;
        self.store_io(move |store| {
            // A running domain keeps its checkpoints and snapshots
            // until it stops.
            if !active {
                store.delete_all_checkpoints(&uuid)?;
                store.delete_all_snapshots(&uuid)?;
            }
            store.delete_config(&uuid)
        })
        .await?;
        let reference = obj.reference();
        obj.lock().config = None;
        if !active {
            self.shared.domains.remove(&uuid);
        }
        self.emit(DomainEvent::Lifecycle {
            dom: reference,
            event: Lifecycle::UndefinedRemoved,
        });
        Ok(())
    }

    /// virDomainGetXMLDesc.
    pub fn get_xml_desc(&self, dom: &DomainRef, flags: u32) -> Result<String, DriverError> {
        use xml_flags::*;
        DriverError::check_flags(
            flags,
            SECURE | INACTIVE | UPDATE_CPU | MIGRATABLE,
            "qemuDomainGetXMLDesc",
        )?;
        let obj = self.domain(dom)?;
        let st = obj.lock();
        let inactive = flags & (INACTIVE | MIGRATABLE) != 0;
        let secrets = Secrets::shown_if(flags & SECURE != 0);
        match (&st.live, &st.config) {
            (Some(live), _) if !inactive => {
                if live
                    .blockjobs
                    .iter()
                    .all(|job| job.mirror_shown().is_none())
                {
                    return Ok(live.def.format(live_mode(live.id), secrets));
                }
                let mut def = live.def.clone();
                for job in &live.blockjobs {
                    if let (Some(mirror), Some(disk)) =
                        (job.mirror_shown(), def.disk_by_target_mut(&job.disk))
                    {
                        disk.set_mirror(Some(mirror));
                    }
                }
                Ok(def.format(live_mode(live.id), secrets))
            }
            (Some(live), None) => Ok(live.def.format(FormatMode::Inactive, secrets)),
            (_, Some(config)) => Ok(config.format(FormatMode::Inactive, secrets)),
            (None, None) => Err(DriverError::internal("domain has no definition")),
        }
    }

    /// virDomainGetInfo.
    pub async fn get_info(&self, dom: &DomainRef) -> Result<DomainInfo, DriverError> {
        let obj = self.domain(dom)?;
        let (mut info, vm) = {
            let st = obj.lock();
            let def = st
                .current_def()
                .ok_or_else(|| DriverError::internal("domain has no definition"))?;
            let info = DomainInfo {
                state: st.state,
                max_mem_kib: def.memory_kib(),
                memory_kib: def.current_memory_kib(),
                vcpus: def.vcpus(),
                cpu_time_ns: 0,
            };
            (info, st.live.as_ref().map(|l| l.vm.clone()))
        };
        // /proc is read with the domain's state unlocked.
        if let Some(vm) = vm {
            info.cpu_time_ns = vm.cpu_time_ns().await;
        }
        Ok(info)
    }

    /// virDomainGetState: (state, reason).
    pub fn get_state(&self, dom: &DomainRef, flags: u32) -> Result<(i32, i32), DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainGetState")?;
        let obj = self.domain(dom)?;
        let st = obj.lock();
        Ok((st.state, st.reason))
    }

    pub fn is_active(&self, dom: &DomainRef) -> Result<bool, DriverError> {
        Ok(self.domain(dom)?.lock().is_active())
    }

    pub fn is_persistent(&self, dom: &DomainRef) -> Result<bool, DriverError> {
        Ok(self.domain(dom)?.lock().config.is_some())
    }

    pub fn get_autostart(&self, dom: &DomainRef) -> Result<bool, DriverError> {
        Ok(self.domain(dom)?.lock().autostart)
    }

    pub fn get_os_type(&self, dom: &DomainRef) -> Result<String, DriverError> {
        let obj = self.domain(dom)?;
        let st = obj.lock();
        Ok(st
            .current_def()
            .map_or_else(|| "hvm".to_string(), |d| d.os_type().to_string()))
    }

    pub fn get_max_memory(&self, dom: &DomainRef) -> Result<u64, DriverError> {
        let obj = self.domain(dom)?;
        let st = obj.lock();
        Ok(st.current_def().map_or(0, |d| d.memory_kib()))
    }

    /// virDomainHasManagedSaveImage: the daemon never makes one.
    pub fn has_managed_save_image(&self, dom: &DomainRef, flags: u32) -> Result<bool, DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainHasManagedSaveImage")?;
        self.domain(dom)?;
        Ok(false)
    }
}
