//! Guest-agent procedures. The driver answers each as libvirtd answers a
//! domain without an agent; the read-only rule of the interface addresses
//! (only the agent source is refused) is checked here, before the driver.

use crate::driver::agent::{address_source, AgentCall};
use crate::driver::{DomainRef, Driver, DriverError};
use crate::rpc::access::refuse_when;
use crate::rpc::client::Client;
use crate::rpc::wire::{self, qemu_proc as qp, remote_proc as rp};

use super::{dom_ref, routes, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::DomainGetFsinfo => |a: wire::remote_domain_get_fsinfo_args| async move {
            fail(driver, a.dom, AgentCall::FsInfo, a.flags)
        },
        rp::DomainFsfreeze => |a: wire::remote_domain_fsfreeze_args| async move {
            fail(driver, a.dom, AgentCall::FsFreeze, a.flags)
        },
        rp::DomainFsthaw => |a: wire::remote_domain_fsthaw_args| async move {
            fail(driver, a.dom, AgentCall::FsThaw, a.flags)
        },
        rp::DomainFstrim => |a: wire::remote_domain_fstrim_args| async move {
            fail(driver, a.dom, AgentCall::FsTrim { mount_point: a.mountPoint.is_some() }, a.flags)
        },
        rp::DomainGetTime => |a: wire::remote_domain_get_time_args| async move {
            fail(driver, a.dom, AgentCall::GetTime, a.flags)
        },
        rp::DomainSetTime => |a: wire::remote_domain_set_time_args| async move {
            fail(driver, a.dom, AgentCall::SetTime, a.flags)
        },
        rp::DomainGetHostname => |a: wire::remote_domain_get_hostname_args| async move {
            fail(driver, a.dom, AgentCall::Hostname, a.flags)
        },
        rp::DomainGetGuestInfo => |a: wire::remote_domain_get_guest_info_args| async move {
            fail(driver, a.dom, AgentCall::GuestInfo { types: a.types }, a.flags)
        },
        rp::DomainSetUserPassword => |a: wire::remote_domain_set_user_password_args| async move {
            fail(driver, a.dom, AgentCall::SetUserPassword, a.flags)
        },
        rp::DomainGetGuestVcpus => |a: wire::remote_domain_get_guest_vcpus_args| async move {
            fail(driver, a.dom, AgentCall::GuestVcpus, a.flags)
        },
        rp::DomainSetGuestVcpus => |a: wire::remote_domain_set_guest_vcpus_args| async move {
            fail(driver, a.dom, AgentCall::SetGuestVcpus { state: a.state }, a.flags)
        },
        rp::DomainAuthorizedSshKeysGet => |a: wire::remote_domain_authorized_ssh_keys_get_args| async move {
            fail(driver, a.dom, AgentCall::SshKeysGet, a.flags)
        },
        rp::DomainAuthorizedSshKeysSet => |a: wire::remote_domain_authorized_ssh_keys_set_args| async move {
            fail(driver, a.dom, AgentCall::SshKeysSet, a.flags)
        },
        rp::DomainAgentSetResponseTimeout => |a: wire::remote_domain_agent_set_response_timeout_args| async move {
            driver.agent_set_response_timeout(&dom_ref(a.dom), a.timeout, a.flags)?;
            Ok(wire::remote_domain_agent_set_response_timeout_ret { result: 0 })
        },
        rp::DomainInterfaceAddresses => |a: wire::remote_domain_interface_addresses_args| async move {
            refuse_when(client, "virDomainInterfaceAddresses", a.source == address_source::AGENT)?;
            driver.interface_addresses(&dom_ref(a.dom), a.source, a.flags)?;
            Ok(wire::remote_domain_interface_addresses_ret { ifaces: Vec::new() })
        },
    })
}

/// The qemu program's agent passthrough.
pub async fn route_qemu(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        qp::DomainAgentCommand => |a: wire::qemu_domain_agent_command_args| async move {
            fail(driver, a.dom, AgentCall::Command, a.flags)
        },
    })
}

/// Runs an agent call, which cannot succeed here; its reply type is
/// whatever the procedure's is.
fn fail<T>(
    driver: &Driver,
    dom: wire::remote_nonnull_domain,
    call: AgentCall,
    flags: u32,
) -> Result<T, DriverError> {
    let dom: DomainRef = dom_ref(dom);
    match driver.agent_call(&dom, call, flags)? {}
}
