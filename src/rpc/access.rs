//! libvirt's read-only rules.
//!
//! libvirtd opens its connection for a client read-only when the client
//! came in on the read-only socket or asked for VIR_CONNECT_RO, and every
//! public libvirt function it calls on the client's behalf checks that
//! first, before the driver sees the call. Two kinds of refusal follow,
//! both VIR_ERR_OPERATION_DENIED:
//!
//! - a function that changes something refuses whatever its arguments:
//!   "read only access prevents virDomainDefineXML" ([`refuse_write`],
//!   applied by dispatch from the procedure table's `writes`);
//! - a few reading functions refuse only some arguments, which the handler
//!   checks on the decoded arguments before anything else: the secure flag
//!   of the XML getters ([`refuse_secure_flag`], "virDomainGetXMLDesc with
//!   secure flag") and the guest-agent variants of the vcpu count and the
//!   interface addresses ([`refuse_when`], worded as a write refusal).
//!
//! The error domain is that of the libvirt source file defining the
//! function (libvirt-domain.c reports VIR_FROM_DOMAIN, libvirt-qemu.c
//! VIR_FROM_NONE, ...), which [`api_origin`] derives from the name.

use crate::driver::{DriverError, ErrorKind, ErrorOrigin};

use super::client::Client;

/// The refusal of a function that changes something.
pub fn refuse_write(api: &str) -> DriverError {
    DriverError::new(
        ErrorKind::OperationDenied,
        format!("read only access prevents {api}"),
    )
    .with_origin(api_origin(api))
}

/// Refuses `api` as a write on a read-only connection when `restricted`
/// (what the arguments ask for) holds.
pub fn refuse_when(client: &Client, api: &str, restricted: bool) -> Result<(), DriverError> {
    if restricted && client.is_readonly() {
        return Err(refuse_write(api));
    }
    Ok(())
}

/// Refuses the secure flag of an XML getter on a read-only connection:
/// secrets (VNC and SPICE passwords, disk cookies) are for read-write
/// clients only.
pub fn refuse_secure_flag(client: &Client, api: &str, secure: bool) -> Result<(), DriverError> {
    if secure && client.is_readonly() {
        return Err(DriverError::new(
            ErrorKind::OperationDenied,
            format!("{api} with secure flag"),
        )
        .with_origin(api_origin(api)));
    }
    Ok(())
}

/// The error domain libvirt's public function `api` reports in.
pub fn api_origin(api: &str) -> ErrorOrigin {
    let has = |part: &str| api.contains(part);
    if has("Qemu") || has("Lxc") || api == "virConnectOpen" || api == "virConnectClose" {
        ErrorOrigin::None
    } else if has("Checkpoint") {
        ErrorOrigin::DomainCheckpoint
    } else if has("Snapshot") {
        ErrorOrigin::DomainSnapshot
    } else if has("StoragePool") || has("StorageVol") {
        ErrorOrigin::Storage
    } else if has("NWFilter") {
        ErrorOrigin::NwFilter
    } else if has("Network") {
        ErrorOrigin::Network
    } else if has("Interface") && !api.starts_with("virDomain") {
        ErrorOrigin::Interface
    } else if has("Secret") {
        ErrorOrigin::Secret
    } else if has("NodeDevice") || api == "virNodeNumOfDevices" || api == "virNodeListDevices" {
        ErrorOrigin::NodeDevice
    } else if api.starts_with("virStream") {
        ErrorOrigin::Streams
    } else {
        // libvirt-domain.c, and libvirt-host.c (virConnectGet*, virNode*),
        // which reports as VIR_FROM_DOMAIN too.
        ErrorOrigin::Domain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::error::to_remote_error;
    use crate::rpc::wire::{qemu_proc_info, remote_proc_info};

    /// Every function of libvirt 9.0's public API the remote program maps
    /// to, with the error domain (virErrorDomain) of the source file that
    /// defines it, as found in libvirt 9.0's src/libvirt-*.c.
    const API_DOMAINS: &str = include_str!("../../fixtures/reference/access/api-error-domains.txt");

    #[test]
    fn every_procedures_function_reports_in_its_files_domain() {
        let mut checked = 0;
        for line in API_DOMAINS.lines().filter(|l| !l.starts_with('#')) {
            let (api, domain) = line.split_once(' ').expect("API DOMAIN");
            let wire = to_remote_error(&refuse_write(api));
            assert_eq!(wire.domain.to_string(), domain, "{api}");
            checked += 1;
        }
        let served = (0..600)
            .filter_map(|n| remote_proc_info(n).or_else(|| qemu_proc_info(n)))
            .filter_map(|p| p.api)
            .count();
        assert!(
            checked + 10 >= served,
            "{checked} of {served} functions listed"
        );
    }

    #[test]
    fn write_refusal_reads_like_libvirt() {
        let wire = to_remote_error(&refuse_write("virDomainDefineXML"));
        assert_eq!((wire.code, wire.domain), (29, 20));
        assert_eq!(
            wire.message.as_deref(),
            Some("operation forbidden: read only access prevents virDomainDefineXML")
        );
        let wire = to_remote_error(&refuse_write("virDomainQemuMonitorCommand"));
        assert_eq!(wire.domain, 0);
    }
}
