//! The calls libvirt answers through the QEMU guest agent, and the vcpu
//! count that can come from it.
//!
//! The daemon gives QEMU no agent channel, so every agent call ends in
//! libvirt's answer for a domain without one, VIR_ERR_ARGUMENT_UNSUPPORTED
//! "QEMU guest agent is not configured", but only after the checks
//! libvirtd 9.0 makes first, in its order: flags, arguments, the domain,
//! whether it is active, whether it runs. Tools branch on which of these
//! they get (virtnbdbackup freezes or not; others ask the DHCP lease
//! instead of the agent), so each call reproduces libvirtd's sequence as
//! recorded in `fixtures/reference/access/libvirtd.txt`. A `<channel>` for
//! the agent in the definition changes nothing: QEMU does not get it.

use super::error::{DriverError, ErrorKind, ErrorOrigin};
use super::registry::{state, DomainObj};
use super::{DomainRef, Driver};

/// virDomainGetHostnameFlags.
pub mod hostname_flags {
    pub const LEASE: u32 = 1;
    pub const AGENT: u32 = 2;
}

/// virDomainInterfaceAddressesSource.
pub mod address_source {
    pub const LEASE: u32 = 0;
    pub const AGENT: u32 = 1;
    pub const ARP: u32 = 2;
}

/// virDomainVcpuFlags (with virDomainModificationImpact).
pub mod vcpu_flags {
    pub const LIVE: u32 = 1;
    pub const CONFIG: u32 = 2;
    pub const MAXIMUM: u32 = 4;
    pub const GUEST: u32 = 8;
}

/// Every VIR_DOMAIN_GUEST_INFO_* type libvirt 9.0 knows.
const GUEST_INFO_TYPES: u32 = 0x7f;

/// VIR_DOMAIN_TIME_SYNC.
const TIME_SYNC: u32 = 1;

/// VIR_DOMAIN_PASSWORD_ENCRYPTED.
const PASSWORD_ENCRYPTED: u32 = 1;

/// VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_APPEND and _REMOVE.
const SSH_KEYS_APPEND: u32 = 1;
const SSH_KEYS_REMOVE: u32 = 2;

/// VIR_DOMAIN_QEMU_AGENT_COMMAND_MIN: the lowest timeout (-2, "block").
const AGENT_TIMEOUT_MIN: i32 = -2;

/// An agent call, with what libvirtd looks at before it needs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCall {
    FsInfo,
    FsFreeze,
    FsThaw,
    FsTrim { mount_point: bool },
    GetTime,
    SetTime,
    Hostname,
    GuestInfo { types: u32 },
    SetUserPassword,
    GuestVcpus,
    SetGuestVcpus { state: i32 },
    SshKeysGet,
    SshKeysSet,
    Command,
}

/// How far libvirtd's function gets before it needs the agent.
enum Steps {
    /// virDomainObjCheckActive, then qemuDomainAgentAvailable.
    ActiveThenAgent,
    /// qemuDomainAgentAvailable alone.
    Agent,
}

impl AgentCall {
    /// The flags libvirtd's function accepts and the name its
    /// "unsupported flags" error gives.
    fn flags(self) -> (u32, &'static str) {
        match self {
            Self::FsInfo => (0, "qemuDomainGetFSInfo"),
            Self::FsFreeze => (0, "qemuDomainFSFreeze"),
            Self::FsThaw => (0, "qemuDomainFSThaw"),
            Self::FsTrim { .. } => (0, "qemuDomainFSTrim"),
            Self::GetTime => (0, "qemuDomainGetTime"),
            Self::SetTime => (TIME_SYNC, "qemuDomainSetTime"),
            Self::Hostname => (
                hostname_flags::LEASE | hostname_flags::AGENT,
                "qemuDomainGetHostname",
            ),
            Self::GuestInfo { .. } => (0, "qemuDomainGetGuestInfo"),
            Self::SetUserPassword => (PASSWORD_ENCRYPTED, "qemuDomainSetUserPassword"),
            Self::GuestVcpus => (0, "qemuDomainGetGuestVcpus"),
            Self::SetGuestVcpus { .. } => (0, "qemuDomainSetGuestVcpus"),
            Self::SshKeysGet => (0, "qemuDomainAuthorizedSSHKeysGet"),
            Self::SshKeysSet => (
                SSH_KEYS_APPEND | SSH_KEYS_REMOVE,
                "qemuDomainAuthorizedSSHKeysSet",
            ),
            Self::Command => (0, "qemuDomainQemuAgentCommand"),
        }
    }

    fn steps(self) -> Steps {
        match self {
            Self::FsTrim { .. }
            | Self::GuestInfo { .. }
            | Self::GuestVcpus
            | Self::SetGuestVcpus { .. }
            | Self::SshKeysGet
            | Self::SshKeysSet => Steps::Agent,
            _ => Steps::ActiveThenAgent,
        }
    }

    /// What libvirtd refuses from the arguments alone, before it looks
    /// the domain up.
    fn check_arguments(self, flags: u32) -> Result<(), DriverError> {
        match self {
            Self::FsTrim { mount_point: true } => Err(DriverError::new(
                ErrorKind::ArgumentUnsupported,
                "Specifying mount point is not supported for now",
            )),
            Self::Hostname => DriverError::check_exclusive(
                flags,
                (hostname_flags::LEASE, "VIR_DOMAIN_GET_HOSTNAME_LEASE"),
                (hostname_flags::AGENT, "VIR_DOMAIN_GET_HOSTNAME_AGENT"),
                ErrorOrigin::Qemu,
            ),
            Self::SshKeysSet => DriverError::check_exclusive(
                flags,
                (SSH_KEYS_APPEND, "VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_APPEND"),
                (SSH_KEYS_REMOVE, "VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_REMOVE"),
                ErrorOrigin::Qemu,
            ),
            Self::GuestInfo { types } if types & !GUEST_INFO_TYPES != 0 => {
                Err(DriverError::invalid_arg(format!(
                    "unsupported guest information types '{:#x}'",
                    types & !GUEST_INFO_TYPES
                )))
            }
            Self::SetGuestVcpus { state } if state != 0 && state != 1 => Err(
                DriverError::verbatim(ErrorKind::InvalidArg, "unsupported state value"),
            ),
            _ => Ok(()),
        }
    }
}

/// qemuDomainAgentAvailable for a domain that has no agent: it wants the
/// domain running (paused is not enough), then finds no channel.
fn agent_unavailable(obj: &DomainObj) -> DriverError {
    let st = obj.lock();
    if st.live.is_none() || st.state != state::RUNNING {
        return DriverError::not_running();
    }
    DriverError::new(
        ErrorKind::ArgumentUnsupported,
        "QEMU guest agent is not configured",
    )
}

impl Driver {
    /// Any agent call: libvirtd's checks, then its error for a domain
    /// without an agent. Never succeeds.
    pub fn agent_call(
        &self,
        dom: &DomainRef,
        call: AgentCall,
        flags: u32,
    ) -> Result<std::convert::Infallible, DriverError> {
        let (allowed, function) = call.flags();
        DriverError::check_flags(flags, allowed, function)?;
        call.check_arguments(flags)?;
        let obj = self.domain(dom)?;
        if call == AgentCall::SetTime && obj.lock().live.is_none() {
            // libvirtd asks the capabilities of the QEMU it runs, and a
            // shut-off domain has none, so it finds no RTC reset command.
            return Err(DriverError::new(
                ErrorKind::OperationUnsupported,
                "cannot set time: qemu doesn't support rtc-reset-reinjection command",
            ));
        }
        if call == AgentCall::Hostname && flags & hostname_flags::LEASE != 0 {
            return Err(self.hostname_from_lease(&obj, dom));
        }
        if matches!(call.steps(), Steps::ActiveThenAgent) && !obj.lock().is_active() {
            return Err(DriverError::inactive());
        }
        Err(agent_unavailable(&obj))
    }

    /// The lease source of virDomainGetHostname: the domain has no network
    /// interface (the daemon runs none), so no lease names it.
    fn hostname_from_lease(&self, obj: &DomainObj, dom: &DomainRef) -> DriverError {
        if !obj.lock().is_active() {
            return DriverError::inactive();
        }
        DriverError::new(
            ErrorKind::NoHostname,
            format!("no hostname found for domain {}", dom.name),
        )
    }

    /// virDomainInterfaceAddresses. Domains here have no network
    /// interfaces, so the lease and ARP tables name none.
    pub fn interface_addresses(
        &self,
        dom: &DomainRef,
        source: u32,
        flags: u32,
    ) -> Result<(), DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainInterfaceAddresses")?;
        let obj = self.domain(dom)?;
        if !obj.lock().is_active() {
            return Err(DriverError::inactive());
        }
        match source {
            address_source::LEASE | address_source::ARP => Ok(()),
            address_source::AGENT => Err(agent_unavailable(&obj)),
            other => Err(DriverError::new(
                ErrorKind::ArgumentUnsupported,
                format!("Unknown IP address data source {other}"),
            )),
        }
    }

    /// virDomainAgentSetResponseTimeout: accepted and kept nowhere, since
    /// there is no agent to wait for.
    pub fn agent_set_response_timeout(
        &self,
        dom: &DomainRef,
        timeout: i32,
        flags: u32,
    ) -> Result<(), DriverError> {
        DriverError::check_flags(flags, 0, "qemuDomainAgentSetResponseTimeout")?;
        if timeout < AGENT_TIMEOUT_MIN {
            return Err(DriverError::invalid_arg(format!(
                "guest agent timeout '{timeout}' is less than the minimum '{AGENT_TIMEOUT_MIN}'"
            )));
        }
        self.domain(dom)?;
        Ok(())
    }

    /// virDomainGetVcpusFlags: the definition's count (libvirt's
    /// virDomainObjGetOneDef picks which), or the guest's, which needs the
    /// agent.
    pub fn get_vcpus_flags(&self, dom: &DomainRef, flags: u32) -> Result<u32, DriverError> {
        use vcpu_flags::*;
        DriverError::check_flags(
            flags,
            LIVE | CONFIG | MAXIMUM | GUEST,
            "qemuDomainGetVcpusFlags",
        )?;
        let obj = self.domain(dom)?;
        let count = {
            let st = obj.lock();
            DriverError::check_exclusive(
                flags,
                (LIVE, "VIR_DOMAIN_AFFECT_LIVE"),
                (CONFIG, "VIR_DOMAIN_AFFECT_CONFIG"),
                ErrorOrigin::Domain,
            )?;
            let live = st.live.as_ref().map(|l| &l.def);
            let def = if flags & LIVE != 0 {
                live.ok_or_else(DriverError::inactive)?
            } else if flags & CONFIG != 0 {
                st.config.as_ref().ok_or_else(|| {
                    DriverError::operation_invalid(
                        "transient domains do not have any persistent config",
                    )
                    .with_origin(ErrorOrigin::Domain)
                })?
            } else {
                st.current_def()
                    .ok_or_else(|| DriverError::internal("domain has no definition"))?
            };
            if flags & MAXIMUM != 0 {
                def.vcpus_max()
            } else {
                def.vcpus()
            }
        };
        if flags & GUEST != 0 {
            if !obj.lock().is_active() {
                return Err(DriverError::invalid_arg(
                    "vCPU count provided by the guest agent can only be requested for live domains",
                ));
            }
            return Err(agent_unavailable(&obj));
        }
        Ok(count)
    }

    /// virDomainManagedSaveGetXMLDesc: the daemon never makes a managed
    /// save image.
    pub fn managed_save_get_xml_desc(
        &self,
        dom: &DomainRef,
        flags: u32,
    ) -> Result<String, DriverError> {
        /// VIR_DOMAIN_SAVE_IMAGE_XML_SECURE.
        const SECURE: u32 = 1;
        DriverError::check_flags(flags, SECURE, "qemuDomainManagedSaveGetXMLDesc")?;
        self.domain(dom)?;
        Err(DriverError::operation_invalid(
            "domain does not have managed save image",
        ))
    }
}
