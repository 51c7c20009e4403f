//! A real OpenSSH server for the test: its own host key, configuration
//! and authorized key in a temporary directory, on a free port of
//! 127.0.0.1, key authentication only. Stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{command, wait_until, Run};

pub struct Sshd {
    pub port: u16,
    /// The client's private key, for `?keyfile=`.
    pub key: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts sshd with its files in `dir`. `port` 0 picks a free one.
    pub fn start(dir: &Path, port: u16) -> Sshd {
        Self::start_in(&[], dir, port)
    }

    /// [`Sshd::start`] with sshd's command line preceded by `wrapper`
    /// (`ip netns exec NS`).
    pub fn start_in(wrapper: &[&str], dir: &Path, port: u16) -> Sshd {
        std::fs::create_dir_all(dir).expect("sshd dir");
        let keygen = |name: &str| {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            command(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    path.to_str().expect("path"),
                ],
            )
            .ok();
            path
        };
        let host_key = keygen("host_key");
        let key = keygen("id_ed25519");
        std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys")).expect("copy");
        let port = if port == 0 { free_port() } else { port };
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                host = host_key.display(),
                dir = dir.display(),
            ),
        )
        .expect("sshd_config");
        // sshd wants its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("/usr/sbin/sshd");
                cmd
            }
            None => Command::new("/usr/sbin/sshd"),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sshd (openssh-server)");
        let sshd = Sshd {
            port,
            key,
            dir: dir.to_path_buf(),
            child,
        };
        // In another network namespace the port cannot be probed from
        // here; sshd says when it listens.
        wait_until(Duration::from_secs(20), || {
            sshd.log().contains("Server listening on")
        })
        .unwrap_or_else(|| panic!("sshd did not start:\n{}", sshd.log()));
        // A host key from an earlier run under this name would make ssh
        // refuse the new one.
        let _ = command("ssh-keygen", &["-R", &format!("[localhost]:{port}")]);
        sshd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// libvirt's ssh URI for this server, with the test's key.
    pub fn uri(&self, extra: &str) -> String {
        format!(
            "qemu+ssh://root@localhost:{}/system?keyfile={}&no_verify=1{extra}",
            self.port,
            self.key.display()
        )
    }

    /// The ssh client options that reach this server with the test's key.
    pub fn ssh(&self, remote: &str) -> Run {
        super::Run::of(
            Command::new("ssh")
                .args(["-p", &self.port.to_string(), "-i"])
                .arg(&self.key)
                .args(["-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes"])
                .arg("root@localhost")
                .arg(remote),
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.log());
        }
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
