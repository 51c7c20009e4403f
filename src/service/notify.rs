//! systemd's readiness protocol (sd_notify): one datagram to the socket
//! named by `$NOTIFY_SOCKET`. A name starting with '@' is in the abstract
//! namespace. Without the variable (not started by systemd with
//! Type=notify) there is nobody to tell, and nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells systemd the daemon serves: the sockets are bound and the domains
/// taken back. Returns whether anyone was told.
pub fn ready() -> std::io::Result<bool> {
    send(&format!("READY=1\nMAINPID={}\n", std::process::id()))
}

/// Tells systemd the daemon is stopping (the VMs are not).
pub fn stopping() -> std::io::Result<bool> {
    send("STOPPING=1\n")
}

fn send(state: &str) -> std::io::Result<bool> {
    let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = match name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(&name))?,
    };
    let socket = UnixDatagram::unbound()?;
    // A datagram to a local socket: it is queued or refused at once, so
    // this never waits even on an async thread.
    socket.set_nonblocking(true)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}
