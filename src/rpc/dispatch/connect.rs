//! The connection procedures: handshake, identity of the hypervisor, and
//! listing domains.

use crate::driver::{DriverError, ErrorKind, LIB_VERSION};
use crate::rpc::client::Client;
use crate::rpc::wire::{self, remote_proc as rp};

use crate::rpc::events::typed_params;

use super::{dom_ref, int_bool, not_open, routes, wire_dom, Reply, Request};

/// The URIs this daemon answers to; the client strips transport and
/// `socket=` before sending it.
const URIS: [&str; 2] = ["qemu:///system", "qemu:///session"];

/// virDrvFeature values we report.
mod feature {
    pub const FD_PASSING: i32 = 8;
    pub const TYPED_PARAM_STRING: i32 = 9;
    pub const PROGRAM_KEEPALIVE: i32 = 10;
    pub const REMOTE_EVENT_CALLBACK: i32 = 14;
    pub const REMOTE_CLOSE_CALLBACK: i32 = 15;
}

/// libvirt's REMOTE_AUTH_NONE: the unix socket's permissions are the
/// access control.
const AUTH_NONE: i32 = 0;

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::AuthList => |()| async { Ok(wire::remote_auth_list_ret { types: vec![AUTH_NONE] }) },
        rp::ConnectOpen => |a: wire::remote_connect_open_args| async move { open(client, a) },
        rp::ConnectClose => |()| async { client.close(); Ok(()) },
        rp::ConnectSupportsFeature => |a: wire::remote_connect_supports_feature_args| async move {
            supports_feature(client, a.feature).map(|supported| wire::remote_connect_supports_feature_ret { supported })
        },
        rp::ConnectRegisterCloseCallback => |()| async { client.set_close_callback(true); Ok(()) },
        rp::ConnectUnregisterCloseCallback => |()| async { client.set_close_callback(false); Ok(()) },
        rp::ConnectGetType => |()| async { Ok(wire::remote_connect_get_type_ret { r#type: "QEMU".into() }) },
        rp::ConnectGetVersion => |()| async {
            Ok(wire::remote_connect_get_version_ret { hv_ver: driver.hypervisor_version() })
        },
        rp::ConnectGetLibVersion => |()| async { Ok(wire::remote_connect_get_lib_version_ret { lib_ver: LIB_VERSION }) },
        rp::ConnectGetHostname => |()| async { Ok(wire::remote_connect_get_hostname_ret { hostname: driver.hostname() }) },
        rp::ConnectGetUri => |()| async {
            let uri = client.opened().map(|o| o.uri).unwrap_or_else(|| URIS[0].to_string());
            Ok(wire::remote_connect_get_uri_ret { uri })
        },
        // virConnectIsEncrypted asks the same question; the client decides
        // from its transport.
        rp::ConnectIsSecure => |()| async { Ok(wire::remote_connect_is_secure_ret { secure: 1 }) },
        rp::NodeGetSecurityModel => |()| async {
            Ok(wire::remote_node_get_security_model_ret { model: wire::c_chars("none"), doi: wire::c_chars("0") })
        },
        rp::ConnectListAllDomains => |a: wire::remote_connect_list_all_domains_args| async move {
            let domains = driver.list_all(a.flags)?;
            let count = u32::try_from(domains.len()).unwrap_or(u32::MAX);
            let domains = if a.need_results != 0 { domains.into_iter().map(wire_dom).collect() } else { Vec::new() };
            Ok(wire::remote_connect_list_all_domains_ret { domains, ret: count })
        },
        rp::ConnectGetAllDomainStats => |a: wire::remote_connect_get_all_domain_stats_args| async move {
            let doms: Vec<_> = a.doms.into_iter().map(dom_ref).collect();
            let records = driver.domain_stats(&doms, a.stats, a.flags).await?;
            let records = records
                .into_iter()
                .map(|(dom, params)| wire::remote_domain_stats_record { dom: wire_dom(dom), params: typed_params(&params) })
                .collect();
            Ok(wire::remote_connect_get_all_domain_stats_ret { retStats: records })
        },
        rp::ConnectNumOfDomains => |()| async {
            Ok(wire::remote_connect_num_of_domains_ret { num: count(driver.list_all(1)?.len()) })
        },
        rp::ConnectListDomains => |a: wire::remote_connect_list_domains_args| async move {
            let ids = driver.list_all(1)?.into_iter().map(|d| d.id).take(limit(a.maxids)?).collect();
            Ok(wire::remote_connect_list_domains_ret { ids })
        },
        rp::ConnectNumOfDefinedDomains => |()| async {
            Ok(wire::remote_connect_num_of_defined_domains_ret { num: count(driver.list_all(2)?.len()) })
        },
        rp::ConnectListDefinedDomains => |a: wire::remote_connect_list_defined_domains_args| async move {
            let names = driver.list_all(2)?.into_iter().map(|d| d.name).take(limit(a.maxnames)?).collect();
            Ok(wire::remote_connect_list_defined_domains_ret { names })
        },
    })
}

fn open(client: &Client, args: wire::remote_connect_open_args) -> Result<(), DriverError> {
    const VIR_CONNECT_RO: u32 = 1;
    // An absent or empty name asks the daemon for its default, which is us.
    let uri = args
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| URIS[0].to_string());
    if !URIS.contains(&uri.as_str()) {
        return Err(DriverError::new(ErrorKind::NoConnect, uri));
    }
    client.open(uri, args.flags & VIR_CONNECT_RO != 0)
}

fn supports_feature(client: &Client, feature: i32) -> Result<i32, DriverError> {
    if feature == feature::PROGRAM_KEEPALIVE {
        client.enable_keepalive();
        return Ok(1);
    }
    if client.opened().is_none() {
        return Err(not_open());
    }
    let supported = matches!(
        feature,
        feature::REMOTE_EVENT_CALLBACK
            | feature::REMOTE_CLOSE_CALLBACK
            | feature::TYPED_PARAM_STRING
    );
    // No migration and no descriptor passing here: clients fall back.
    let _ = feature::FD_PASSING;
    Ok(int_bool(supported))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn limit(max: i32) -> Result<usize, DriverError> {
    usize::try_from(max)
        .map_err(|_| DriverError::new(ErrorKind::Rpc, "maxids must be non-negative"))
}
