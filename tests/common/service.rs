//! The daemon started the way its systemd unit starts it (`--config FILE`
//! and nothing else, `$NOTIFY_SOCKET` set), a test PKI, and what the
//! daemon logged about the ports it bound.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{wait_until, Daemon, Run, PATIENCE};

/// The daemon binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_virtbackupd")
}

/// Runs the daemon with `args` to its end (for starts that must fail).
pub fn run_daemon(args: &[&str]) -> Run {
    let mut cmd = Command::new(binary());
    cmd.args(args).stdin(Stdio::null());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // A daemon that wrongly starts would run for ever: give it a deadline.
    if wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    })
    .is_none()
    {
        let _ = child.kill();
    }
    Run::from(child.wait_with_output().expect("wait"))
}

/// A test directory with no daemon yet.
pub fn bare() -> Daemon {
    let dir = tempfile::Builder::new()
        .prefix("vbd")
        .tempdir_in("/tmp")
        .expect("tempdir");
    Daemon {
        dir,
        child: None,
        extra_args: Vec::new(),
        env: Vec::new(),
    }
}

/// Makes the test PKI of scripts/make-pki.sh in `dir`.
pub fn make_pki(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-pki.sh");
    Run::of(Command::new(script).arg(dir)).ok();
}

impl Daemon {
    /// Starts the daemon as the unit does: `--config FILE` only, with
    /// `$NOTIFY_SOCKET` naming a datagram socket bound here; returns when
    /// it reported READY=1 (and panics if it never does).
    pub fn start_as_service(&mut self, config: &Path) {
        self.start_as_service_in(&[], config);
    }

    /// [`Daemon::start_as_service`] with the daemon's command line
    /// preceded by `wrapper` (to run it in other namespaces, say).
    pub fn start_as_service_in(&mut self, wrapper: &[&str], config: &Path) {
        let notify_path = self.path("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut args: Vec<&str> = wrapper.to_vec();
        args.extend([binary(), "--config", config.to_str().expect("path")]);
        self.spawn_command(&args, &notify_path);
        let mut buf = [0u8; 512];
        let ready = wait_until(PATIENCE, || match notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1"),
            Err(_) => self.child_exited(),
        });
        assert!(
            ready.is_some() && !self.child_exited(),
            "the daemon did not report READY=1:\n{}",
            self.log()
        );
    }

    /// Spawns `command` (the daemon's binary and exactly its arguments,
    /// none of the test defaults; or a wrapper that ends by exec'ing it).
    pub fn spawn_command(&mut self, command: &[&str], notify_socket: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("log");
        let child = Command::new(command[0])
            .args(&command[1..])
            .env("RUST_LOG", "debug")
            .env("NOTIFY_SOCKET", notify_socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start virtbackupd");
        self.child = Some(child);
    }

    /// Whether the daemon process has ended.
    pub fn child_exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// SIGTERM, as `systemctl stop` sends it, and waits for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// The address the daemon logged after `what` ("serving TLS").
    pub fn logged_addr(&self, what: &str) -> SocketAddr {
        let needle = format!("{what} addr=");
        let mut found = None;
        wait_until(PATIENCE, || {
            found = self.log().lines().find_map(|line| {
                let rest = &line[line.find(&needle)? + needle.len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no '{needle}' in the log:\n{}", self.log()))
    }

    /// `virsh -r` (a read-only connection) at `uri`.
    pub fn virsh_readonly_at(&self, uri: &str, args: &[&str]) -> Run {
        self.run_virsh(&["-q", "-r", "-c", uri], args)
    }

    /// Writes a configuration file into the test directory.
    pub fn config_file(&self, text: &str) -> PathBuf {
        let path = self.path("virtbackupd.conf");
        std::fs::write(&path, text).expect("write config");
        path
    }
}
