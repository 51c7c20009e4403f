//! QEMU's built-in NBD server, as a pull backup uses it: one server per
//! QEMU, one read-only export per backed-up disk.
//!
//! What goes over QMP, as libvirt 9.0 sends it with QEMU 7.2:
//!
//! - with TLS, first `object-add` of x509 server credentials
//!   ([`add_tls_creds`]), which `nbd-server-start` names in `tls-creds`;
//! - `nbd-server-start {addr}` with the legacy socket address form
//!   (`{"type": "unix", "data": {"path"}}` or `{"type": "inet", "data":
//!   {"host", "port": "<port as a string>"}}`);
//! - per disk `block-export-add {type: "nbd", id: "libvirt-nbd-<node>",
//!   node-name, name, writable: false, bitmaps: [bitmap]}`: the export of
//!   the disk's frozen view (the scratch image's format node), with the
//!   incremental bitmap, which QEMU looks up down the node's backing chain
//!   and which must be disabled for a read-only export;
//! - `nbd-server-stop`, which also ends every export.
//!
//! QEMU creates a unix socket with its own umask; [`start_server`] sets
//! the mode the daemon is configured with before any client is told the
//! path. QEMU removes the socket when the server stops, but not when it is
//! killed: [`remove_socket`] covers that.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::QemuError;
use super::monitor::Monitor;

/// Where the NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NbdAddress {
    /// A unix socket at this absolute path.
    Unix(PathBuf),
    /// TCP on this host name or address and port.
    Tcp {
        /// As the user wrote it; QEMU resolves it.
        host: String,
        /// The port.
        port: u16,
    },
}

impl NbdAddress {
    /// QEMU's SocketAddressLegacy for it.
    fn to_qmp(&self) -> Value {
        match self {
            Self::Unix(path) => json!({
                "type": "unix",
                "data": {"path": path.to_string_lossy()},
            }),
            Self::Tcp { host, port } => json!({
                "type": "inet",
                "data": {"host": host, "port": port.to_string()},
            }),
        }
    }
}

/// One disk's export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NbdExport {
    /// The node exported: the scratch image's format node.
    pub node: String,
    /// The export name clients ask for.
    pub name: String,
    /// The dirty bitmap exported as `qemu:dirty-bitmap:<bitmap>`.
    pub bitmap: Option<String>,
}

impl NbdExport {
    /// The id libvirt gives the export (qemuBlockExportAddNBD).
    pub fn id(&self) -> String {
        format!("libvirt-nbd-{}", self.node)
    }
}

/// The id of the TLS credentials object of a pull backup's server.
pub const TLS_CREDS_ID: &str = "objlibvirt_backup_tls0";

/// Adds the x509 server credentials the NBD server uses for TLS, read by
/// QEMU from `dir` (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`);
/// clients must present a certificate the CA signed.
pub async fn add_tls_creds(mon: &Monitor, dir: &Path) -> Result<(), QemuError> {
    mon.execute_value(
        "object-add",
        json!({
            "qom-type": "tls-creds-x509",
            "id": TLS_CREDS_ID,
            "dir": dir.to_string_lossy(),
            "endpoint": "server",
            "verify-peer": true,
        }),
    )
    .await?;
    Ok(())
}

/// Removes the credentials of [`add_tls_creds`]; best effort.
pub async fn del_tls_creds(mon: &Monitor) {
    if let Err(e) = mon
        .execute_value("object-del", json!({ "id": TLS_CREDS_ID }))
        .await
    {
        tracing::debug!(%e, "object-del of the backup TLS credentials");
    }
}

/// Starts the server, with TLS when `tls` (after [`add_tls_creds`]). A
/// unix socket gets `socket_mode` before this returns; if that fails the
/// server is stopped again.
pub async fn start_server(
    mon: &Monitor,
    addr: &NbdAddress,
    socket_mode: u32,
    tls: bool,
) -> Result<(), QemuError> {
    let mut args = json!({ "addr": addr.to_qmp() });
    if tls {
        args["tls-creds"] = json!(TLS_CREDS_ID);
    }
    mon.execute_value("nbd-server-start", args).await?;
    if let NbdAddress::Unix(path) = addr {
        let perms = std::fs::Permissions::from_mode(socket_mode);
        if let Err(e) = tokio::fs::set_permissions(path, perms).await {
            stop_server(mon).await;
            remove_socket(addr).await;
            return Err(QemuError::Internal(format!(
                "cannot set the permissions of NBD socket '{}': {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Starts a pull backup's server: its TLS credentials from `tls_dir`
/// when given, then the server. On error nothing of it is left.
pub async fn serve(
    mon: &Monitor,
    addr: &NbdAddress,
    socket_mode: u32,
    tls_dir: Option<&Path>,
) -> Result<(), QemuError> {
    if let Some(dir) = tls_dir {
        add_tls_creds(mon, dir).await?;
    }
    let started = start_server(mon, addr, socket_mode, tls_dir.is_some()).await;
    if started.is_err() && tls_dir.is_some() {
        del_tls_creds(mon).await;
    }
    started
}

/// Undoes [`serve`]: the server with its exports, the credentials, the
/// socket. Best effort, for a QEMU that may be gone.
pub async fn shutdown(mon: &Monitor, addr: &NbdAddress, tls: bool) {
    stop_server(mon).await;
    if tls {
        del_tls_creds(mon).await;
    }
    remove_socket(addr).await;
}

/// Adds one read-only export.
pub async fn add_export(mon: &Monitor, export: &NbdExport) -> Result<(), QemuError> {
    let mut args = json!({
        "type": "nbd",
        "id": export.id(),
        "node-name": export.node,
        "name": export.name,
        "writable": false,
    });
    if let Some(bitmap) = &export.bitmap {
        args["bitmaps"] = json!([bitmap]);
    }
    mon.execute_value("block-export-add", args).await?;
    Ok(())
}

/// Stops the server and with it every export. Best effort: a server that
/// is not running (or a QEMU that is gone) has nothing left to stop.
pub async fn stop_server(mon: &Monitor) {
    if let Err(e) = mon.execute_value("nbd-server-stop", json!({})).await {
        tracing::debug!(%e, "nbd-server-stop");
    }
}

/// Removes a unix socket the server left behind; anything else at that
/// path (a file somebody put there since) stays.
pub async fn remove_socket(addr: &NbdAddress) {
    let NbdAddress::Unix(path) = addr else { return };
    if is_socket(path).await {
        if let Err(e) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), %e, "cannot remove the NBD socket");
        }
    }
}

async fn is_socket(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_qemus_legacy_form() {
        let unix = NbdAddress::Unix("/tmp/x.sock".into());
        assert_eq!(
            unix.to_qmp(),
            json!({"type": "unix", "data": {"path": "/tmp/x.sock"}})
        );
        let tcp = NbdAddress::Tcp {
            host: "localhost".into(),
            port: 10809,
        };
        assert_eq!(
            tcp.to_qmp(),
            json!({"type": "inet", "data": {"host": "localhost", "port": "10809"}})
        );
    }

    #[test]
    fn exports_are_named_after_their_node() {
        let export = NbdExport {
            node: "libvirt-5-format".into(),
            name: "vda".into(),
            bitmap: None,
        };
        assert_eq!(export.id(), "libvirt-nbd-libvirt-5-format");
    }
}
