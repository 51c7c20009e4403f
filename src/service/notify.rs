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
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(name) => send_to(&name, state).map(|()| true),
        None => Ok(false),
    }
}

/// One datagram with `state` to the socket `name` ('@' for abstract).
fn send_to(name: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let addr = match name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(name))?,
    };
    let socket = UnixDatagram::unbound()?;
    // A datagram to a local socket: it is queued or refused at once, so
    // this never waits even on an async thread.
    socket.set_nonblocking(true)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_abstract_and_path_sockets() {
        let name = format!("virtbackupd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "STOPPING=1\n").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
        // Nobody listening: an error, which the caller logs.
        drop(listener);
        assert!(send_to(path.as_os_str(), "READY=1\n").is_err());
    }
}
