//! Test harness: a real virtbackupd in a temporary directory, driven by the
//! stock virsh and libvirt-python, with real QEMU processes that are all
//! killed when the test ends (pass or fail).

#![allow(dead_code)]

pub mod backup_files;
pub mod blockjob;
pub mod events;
pub mod images;
pub mod monitor;
pub mod qemu_io;
pub mod raw;
pub mod reference;
pub mod service;
pub mod sshd;
pub mod storage;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for what should happen before it gives up: a
/// hang guard, not a timing assert.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment of the next start ([`Daemon::set_env`]).
    env: Vec<(String, String)>,
}

/// What a client command printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    /// What a finished command printed, and its exit status.
    pub fn from(output: Output) -> Run {
        Run {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code().unwrap_or(-1),
        }
    }

    /// Runs `cmd` to its end.
    pub fn of(cmd: &mut Command) -> Run {
        let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Run::from(output)
    }

    /// Panics with everything the command printed unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed with exactly this `error: ...` line.
    #[track_caller]
    pub fn fails_with(self, line: &str) -> Run {
        assert_ne!(self.code, 0, "command succeeded: {}", self.stdout);
        assert!(
            self.stderr.lines().any(|l| l == line),
            "expected line {line:?} in stderr:\n{}",
            self.stderr
        );
        self
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// A daemon with extra command-line options.
    pub fn start_with(args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("vbd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // VIRTBACKUPD_TEST_ARGS adds options to every daemon of a run, to
        // run tests written without them with them (`--backup-cbw-timeout 5`
        // through the crash enumeration).
        let from_env = std::env::var("VIRTBACKUPD_TEST_ARGS").unwrap_or_default();
        let extra_args = args
            .iter()
            .map(|a| a.to_string())
            .chain(from_env.split_whitespace().map(str::to_string))
            .collect();
        let mut daemon = Daemon {
            dir,
            child: None,
            extra_args,
            env: Vec::new(),
        };
        daemon.spawn();
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn socket_ro(&self) -> PathBuf {
        self.dir.path().join("sock-ro")
    }

    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket().display())
    }

    pub fn uri_ro(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket_ro().display())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_virtbackupd"))
            .arg("--listen")
            .arg(self.socket())
            .arg("--listen-ro")
            .arg(self.socket_ro())
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .args(&self.extra_args)
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start virtbackupd");
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || self.socket().exists())
            .unwrap_or_else(|| panic!("daemon did not start:\n{}", self.log()));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would; QEMU processes stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The environment variables the next start (or restart) adds, in
    /// place of the ones set before.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// How many of the daemon's threads are named `name` (their `comm`).
    pub fn threads_named(&self, name: &str) -> usize {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return 0;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    /// Whether the daemon process has ended (by itself: a crash).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs the stock virsh against this daemon.
    pub fn virsh(&self, args: &[&str]) -> Run {
        self.virsh_at(&self.uri(), args)
    }

    pub fn virsh_at(&self, uri: &str, args: &[&str]) -> Run {
        self.run_virsh(&["-q", "-c", uri], args)
    }

    /// virsh without `-q`: with its headers and "Domain ... started" lines.
    pub fn virsh_loud(&self, args: &[&str]) -> Run {
        self.run_virsh(&["-c", &self.uri()], args)
    }

    /// What a virsh command that must succeed printed, trimmed.
    #[track_caller]
    pub fn answer(&self, args: &[&str]) -> String {
        self.virsh(args).ok().stdout.trim().to_string()
    }

    /// Loud virsh with `editor` as its EDITOR (and VISUAL), for the
    /// `*-edit` commands.
    pub fn virsh_editing(&self, editor: &Path, args: &[&str]) -> Run {
        Run::of(
            Command::new("virsh")
                .args(["-c", &self.uri()])
                .args(args)
                .env("EDITOR", editor)
                .env("VISUAL", editor)
                .env("LC_ALL", "C")
                .env_remove("LIBVIRT_DEFAULT_URI"),
        )
    }

    fn run_virsh(&self, options: &[&str], args: &[&str]) -> Run {
        Run::of(
            Command::new("virsh")
                .args(options)
                .args(args)
                .env("LC_ALL", "C")
                .env_remove("LIBVIRT_DEFAULT_URI"),
        )
    }

    /// Waits until the domain has no job any more.
    #[track_caller]
    pub fn wait_idle(&self, dom: &str) {
        wait_until(PATIENCE, || {
            words(&self.virsh(&["domjobinfo", dom]).stdout) == "Job type: None"
        })
        .unwrap_or_else(|| panic!("the job of {dom} did not end"));
    }

    /// Waits until `domstate --reason` prints `want` ("shut off
    /// (crashed)"), or, when `want` names no reason ("shut off"), that
    /// state with any reason.
    #[track_caller]
    pub fn wait_state(&self, dom: &str, want: &str) {
        let state = || {
            let state = self.virsh(&["domstate", dom, "--reason"]).stdout;
            let state = state.trim();
            if want.contains('(') {
                state.to_string()
            } else {
                state.split(" (").next().unwrap_or_default().to_string()
            }
        };
        wait_until(PATIENCE, || state() == want)
            .unwrap_or_else(|| panic!("{dom} is {:?}, not {want:?}", state()));
    }

    /// Runs a Python snippet with Debian's python3 (which has the libvirt
    /// module); `URI` is set in its environment.
    pub fn python(&self, script: &str) -> Run {
        Run::of(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(script)
                .env("URI", self.uri()),
        )
    }

    /// Like [`Daemon::python`], for scripts whose stderr is noise: libvirt
    /// prints every error it raises there, however long.
    pub fn python_quiet(&self, script: &str) -> Run {
        let mut run = self.python(script);
        run.stderr.truncate(2000);
        run
    }

    /// Creates a qcow2 (or raw) image in the test directory.
    pub fn image(&self, name: &str, format: &str, size: &str) -> PathBuf {
        let path = self.path(name);
        images::create(&path, format, size);
        path
    }

    /// A domain definition with one virtio disk per (target, image, format).
    pub fn domain_xml(&self, name: &str, disks: &[(&str, &Path, &str)]) -> String {
        let mut xml = format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n  \
             <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n"
        );
        for (target, image, format) in disks {
            xml.push_str(&format!(
                "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{format}'/>\n      \
                 <source file='{}'/>\n      <target dev='{target}' bus='virtio'/>\n    </disk>\n",
                image.display()
            ));
        }
        xml.push_str("  </devices>\n</domain>\n");
        xml
    }

    /// Writes `xml` to a file and defines it with virsh.
    pub fn define(&self, name: &str, xml: &str) {
        let file = self.path(&format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write xml");
        self.virsh(&["define", file.to_str().expect("path")]).ok();
    }

    /// A defined two-disk domain (vda qcow2, vdb raw).
    pub fn define_two_disk(&self, name: &str) {
        let vda = self.image(&format!("{name}-vda.qcow2"), "qcow2", "16M");
        let vdb = self.image(&format!("{name}-vdb.img"), "raw", "8M");
        let xml = self.domain_xml(name, &[("vda", &vda, "qcow2"), ("vdb", &vdb, "raw")]);
        self.define(name, &xml);
    }

    /// SIGKILL to every QEMU of this test, as a crash would.
    #[track_caller]
    pub fn kill_qemu(&self) {
        for pid in self.qemu_pids() {
            signal(pid.unsigned_abs(), "KILL");
        }
    }

    /// Pids of QEMU processes started from this test's directory.
    pub fn qemu_pids(&self) -> Vec<i32> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("qemu-system") && cmdline.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        for pid in self.qemu_pids() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// `text` with every run of white space made one space: virsh pads its
/// table columns to the longest entry.
pub fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond().then_some(())
}

/// Sends signal `sig` ("KILL", "INT") to process `pid`.
#[track_caller]
pub fn signal(pid: u32, sig: &str) {
    command("kill", &[&format!("-{sig}"), &pid.to_string()]).ok();
}

/// Runs `program` with `args` in the C locale.
pub fn command(program: &str, args: &[&str]) -> Run {
    Run::of(Command::new(program).args(args).env("LC_ALL", "C"))
}

/// The names in a directory, sorted.
#[track_caller]
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
