//! The driver without the wire: a [`Driver`] on a temporary state
//! directory with one running domain whose QEMU is a QMP transcript played
//! back (fixtures/qmp/README.md), so that the driver's operations, and
//! each of their ways back, are called directly and checked in isolation.
//!
//! A domain `vm` with two qcow2 disks, vda (`libvirt-2-format`) and vdb
//! (`libvirt-1-format`), as libvirt numbers them. Its QEMU is reached
//! through [`RunningVm::attach`]: the monitor is a transcript played by
//! [`play`] with a `sleep` standing in for the process, or, for
//! [`Harness::recorded`] with `VIRTBACKUPD_RECORD_QMP=1`, a real QEMU 7.2
//! through the recording proxy, which writes the transcript. Transcripts
//! with a failure in them are such recordings with one reply changed by
//! hand (their header says which); [`Harness::replayed`] only plays. A
//! recording gets a `BIND:` line where QEMU made its NBD server's socket.
//!
//! The domain is made live directly (no start, no reconcile, no event
//! watcher), so the transcript holds only the handshake and what the
//! operation under test sends. [`Harness::finish`] checks that the client
//! sent every line the transcript expects, and nothing else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use super::registry::{state, DomainObj, DomainState};
use super::{DomainRef, Driver, DriverConfig};
use crate::qemu::command::{build_argv, RunPaths};
use crate::qemu::monitor::Monitor;
use crate::qemu::transcript::{play, Recording};
use crate::qemu::RunningVm;

const UUID: &str = "6f1b9e6a-3c2d-4b7e-9a51-0d4c2e8f7a13";

/// What the transcripts this harness records say about themselves.
const HEADER: &str =
    "Recorded from qemu-system-x86_64 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3) through the proxy
of src/qemu/transcript.rs by src/driver/test_harness.rs: domain 'vm', two qcow2 disks of
16 MiB (vda = libvirt-2-format, vdb = libvirt-1-format), made live without start or
reconcile, so only the handshake and the driver's own commands are here; @DIR@ is the
test's directory.";

enum Qemu {
    Played(JoinHandle<Result<(), String>>),
    Recorded(Recording, String),
}

pub(super) struct Harness {
    pub(super) driver: Driver,
    pub(super) dom: DomainRef,
    pub(super) obj: Arc<DomainObj>,
    pub(super) vm: Arc<RunningVm>,
    qemu: Qemu,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Against the transcript fixtures/qmp/`name`, which a run with
    /// `VIRTBACKUPD_RECORD_QMP=1` records afresh from a real QEMU.
    pub(super) async fn recorded(name: &str) -> Harness {
        let record = std::env::var_os("VIRTBACKUPD_RECORD_QMP").is_some();
        Self::start(name, record).await
    }

    /// Against fixtures/qmp/`name`, always played back (a recording with a
    /// failure put in by hand).
    pub(super) async fn replayed(name: &str) -> Harness {
        Self::start(name, false).await
    }

    async fn start(name: &str, record: bool) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("drv")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path();
        let mut config = DriverConfig::new(
            path.join("state"),
            path.join("run"),
            "qemu-system-x86_64".into(),
        );
        config.nbd_ports = 10809..=10872;
        let driver = Driver::open(config).await.unwrap();
        for disk in ["vda", "vdb"] {
            let image = path.join(format!("{disk}.qcow2"));
            crate::qemu::test_support::run(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    image.to_str().unwrap(),
                    "16M",
                ],
            )
            .await;
        }
        let dom = driver.define_xml(&domain_xml(path), 0).await.unwrap();
        let obj = driver.domain(&dom).unwrap();
        let def = obj.lock().config.clone().unwrap();
        let run_dir = driver.shared.store.domain_run_dir(&obj.uuid);
        std::fs::create_dir_all(&run_dir).unwrap();
        let (vm, qemu) = if record {
            let spec = super::launch::spec(&def, &run_dir).unwrap();
            let child = tokio::process::Command::new(&spec.emulator)
                .args(build_argv(&spec).unwrap())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stream = connect(&RunPaths::new(&run_dir).monitor).await;
            let recording = Recording::default();
            let mon = Monitor::handshake(recording.proxy(stream, path))
                .await
                .unwrap();
            let vm = RunningVm::attach(child, mon, run_dir);
            (vm, Qemu::Recorded(recording, name.to_owned()))
        } else {
            let (client, server) = UnixStream::pair().unwrap();
            let played = tokio::spawn({
                let (name, dir) = (name.to_owned(), path.to_owned());
                async move { play(server, &name, &dir).await }
            });
            let mon = Monitor::handshake(client).await.unwrap();
            let stand_in = tokio::process::Command::new("sleep")
                .arg("600")
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            (
                RunningVm::attach(stand_in, mon, run_dir),
                Qemu::Played(played),
            )
        };
        let vm = Arc::new(vm);
        let id = driver.shared.domains.next_id();
        obj.lock()
            .set_live(id, def, vm.clone(), (state::RUNNING, state::RUNNING_BOOTED));
        let dom = obj.reference();
        Harness {
            driver,
            dom,
            obj,
            vm,
            qemu,
            dir,
        }
    }

    /// The test's directory (`@DIR@` of the transcript).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, DomainState> {
        self.obj.lock()
    }

    /// The names in the domain's checkpoint metadata directory.
    pub(super) fn checkpoint_files(&self) -> Vec<String> {
        let uuid = super::store::uuid_string(&self.obj.uuid);
        files(&self.path("state").join("checkpoints").join(uuid))
    }

    /// The names in the test's directory, the disks and the state and run
    /// directories left out.
    pub(super) fn test_files(&self) -> Vec<String> {
        files(self.dir.path())
            .into_iter()
            .filter(|f| !["vda.qcow2", "vdb.qcow2", "state", "run"].contains(&f.as_str()))
            .collect()
    }

    /// The names in the domain's run directory (QEMU's own files aside).
    pub(super) fn run_files(&self) -> Vec<String> {
        files(self.vm.run_dir())
            .into_iter()
            .filter(|f| !f.starts_with("qemu") && !f.starts_with("monitor"))
            .collect()
    }

    /// Played back: the client sent every line the transcript expects.
    /// Recorded: the transcript is written.
    pub(super) async fn finish(self) {
        match self.qemu {
            Qemu::Played(played) => {
                // The player is done once the last line was sent or
                // checked; a client still to send one keeps it waiting.
                let done = tokio::time::timeout(Duration::from_secs(10), played).await;
                let done = done.expect("the driver did not send what the transcript expects");
                done.unwrap().unwrap();
            }
            Qemu::Recorded(recording, name) => {
                let scenario = name.trim_end_matches(".txt").to_owned();
                recording.save_if_asked(&name, &format!("{HEADER}\nScenario: {scenario}."));
                if std::env::var_os("VIRTBACKUPD_RECORD_QMP").is_some() {
                    add_binds(&crate::qemu::transcript::fixture(&name));
                }
            }
        }
    }
}

fn domain_xml(dir: &Path) -> String {
    let disk = |target: &str| {
        format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source file='{}/{target}.qcow2'/>\n      <target dev='{target}' bus='virtio'/>\n    </disk>\n",
            dir.display()
        )
    };
    format!(
        "<domain type='qemu'>\n  <name>vm</name>\n  <uuid>{UUID}</uuid>\n  <memory unit='MiB'>64</memory>\n  \
         <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n{}{}  </devices>\n</domain>\n",
        disk("vda"),
        disk("vdb")
    )
}

/// A `BIND:` line after each `nbd-server-start` on a unix socket, so
/// that the replay makes the socket the real QEMU made.
fn add_binds(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let Some(command) = line.strip_prefix("C: ") else {
            continue;
        };
        let command: serde_json::Value = serde_json::from_str(command).unwrap();
        if command["execute"] == "nbd-server-start" {
            if let Some(socket) = command["arguments"]["addr"]["data"]["path"].as_str() {
                out.push_str(&format!("BIND: {socket}\n"));
            }
        }
    }
    std::fs::write(path, out).unwrap();
}

async fn connect(socket: &Path) -> UnixStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return stream,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("QEMU monitor: {e}"),
        }
    }
}

/// The sorted names in `dir` (none if it does not exist).
pub(super) fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
