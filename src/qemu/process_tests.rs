//! Start, reconnect and stop a real qemu-system-x86_64 (TCG, no guest).
//!
//! Every QEMU a test starts is registered with a [`Reaper`], which kills it
//! through a pidfd when the test ends, failed or not.

use std::ffi::OsStr;
use std::time::Duration;

use qapi::qmp;
use rustix::process::{Pid, Signal};
use tempfile::TempDir;

use super::*;
use crate::qemu::command::{Accel, DiskFormat, DiskSpec, SourceKind};
use crate::qemu::error::QemuErrorKind;
use crate::qemu::events::{RunState, ShutdownCause};

/// Kills registered processes on drop, through pidfds opened while they
/// were alive, so a recycled pid is never hit; and the QEMU of a registered
/// run directory, in case a test fails before it learns its pid.
#[derive(Default)]
struct Reaper {
    pidfds: Vec<OwnedFd>,
    run_dirs: Vec<PathBuf>,
}

impl Reaper {
    fn watch(&mut self, pid: i32) {
        if let Some(fd) =
            Pid::from_raw(pid).and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok())
        {
            self.pidfds.push(fd);
        }
    }

    fn watch_run_dir(&mut self, run_dir: &Path) {
        self.run_dirs.push(run_dir.to_owned());
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for run_dir in std::mem::take(&mut self.run_dirs) {
            let pidfile = RunPaths::new(&run_dir).pidfile;
            let pid = std::fs::read_to_string(pidfile).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse() {
                self.watch(pid);
            }
        }
        for fd in &self.pidfds {
            let _ = pidfd_send_signal(fd, Signal::KILL);
        }
    }
}

fn emulator() -> PathBuf {
    let usual = Path::new("/usr/bin/qemu-system-x86_64");
    if usual.exists() {
        usual.to_owned()
    } else {
        "qemu-system-x86_64".into()
    }
}

async fn run(program: &str, args: &[&OsStr]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A domain with a 16 MiB qcow2 vda and an 8 MiB raw vdb in `dir`.
fn spec_in(dir: &Path) -> LaunchSpec {
    let disk = |index: usize, node: u32, file: &str, format| DiskSpec {
        target: ["vda", "vdb"][index].into(),
        device_index: index,
        node_index: node,
        source: dir.join(file),
        source_kind: SourceKind::File,
        format,
        readonly: false,
        boot_index: (index == 0).then_some(1),
        has_backing: false,
        backing: Vec::new(),
    };
    LaunchSpec {
        name: "test-vm".into(),
        uuid: uuid::Uuid::new_v4(),
        emulator: emulator(),
        machine: "pc-i440fx-7.2".into(),
        accel: Accel::Tcg,
        memory_kib: 64 * 1024,
        vcpus: 1,
        acpi: false,
        disks: vec![
            disk(0, 2, "vda.qcow2", DiskFormat::Qcow2),
            disk(1, 1, "vdb.raw", DiskFormat::Raw),
        ],
        run_dir: dir.join("run"),
    }
}

/// A fresh domain, and a reaper that kills its QEMU when the test ends.
async fn domain() -> (TempDir, LaunchSpec, Reaper) {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path());
    for (disk, format, size) in [
        (&spec.disks[0], "qcow2", "16M"),
        (&spec.disks[1], "raw", "8M"),
    ] {
        let path = disk.source.as_os_str();
        run(
            "qemu-img",
            &[
                "create".as_ref(),
                "-f".as_ref(),
                format.as_ref(),
                path,
                size.as_ref(),
            ],
        )
        .await;
    }
    let mut reaper = Reaper::default();
    reaper.watch_run_dir(&spec.run_dir);
    (dir, spec, reaper)
}

/// The next event that is not `Other`, within a few seconds.
async fn next_event(events: &mut broadcast::Receiver<VmEvent>) -> VmEvent {
    loop {
        let event = timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event in time")
            .expect("event channel open");
        if !matches!(event, VmEvent::Other(_)) {
            return event;
        }
    }
}

fn is_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

async fn status(vm: &RunningVm) -> RunState {
    vm.monitor()
        .execute(qmp::query_status {})
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn start_cont_passthrough_qemu_io_destroy() {
    let (_dir, spec, mut reaper) = domain().await;
    let mut vm = start(&spec).await.unwrap();
    reaper.watch(vm.pid());
    let mut events = vm.take_events().unwrap();

    assert_eq!(status(&vm).await, RunState::prelaunch);
    vm.cont().await.unwrap();
    assert_eq!(next_event(&mut events).await, VmEvent::Resume);
    assert_eq!(status(&vm).await, RunState::running);

    let monitor = vm.monitor();
    let reply = monitor
        .execute_raw(r#"{"execute":"query-status"}"#)
        .await
        .unwrap();
    let id = reply
        .strip_prefix(
            r#"{"return":{"status":"running","singlestep":false,"running":true},"id":"libvirt-"#,
        )
        .and_then(|rest| rest.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("unexpected reply {reply}"));
    assert!(id.parse::<u64>().is_ok(), "{reply}");
    let reply = monitor
        .execute_raw(r#"{"execute":"no-such-command"}"#)
        .await
        .unwrap();
    assert!(reply.starts_with(r#"{"id":"libvirt-"#), "{reply}");
    assert!(reply.ends_with(r#""error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}"#));

    let vda = spec.disks[0].source.display().to_string();
    let vdb = spec.disks[1].source.display().to_string();
    let block = monitor.hmp("info block").await.unwrap();
    assert!(
        block.contains(&format!("libvirt-2-format: {vda} (qcow2)")),
        "{block}"
    );
    assert!(
        block.contains(&format!("libvirt-1-format: {vdb} (raw)")),
        "{block}"
    );
    assert!(block.contains("Attached to:      /machine/peripheral/virtio-disk0/virtio-backend"));
    let out = monitor
        .hmp(r#"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x5a 0 1M""#)
        .await
        .unwrap();
    assert_eq!(out, "");

    let err = monitor
        .execute(qmp::blockdev_del {
            node_name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'blockdev-del': Failed to find node with node-name='nope'"
    );

    let exit = vm.destroy().await.unwrap();
    assert_eq!(exit, Exit::Code(0), "QEMU exits cleanly on SIGTERM");
    assert_eq!(
        next_event(&mut events).await,
        VmEvent::Shutdown {
            guest: false,
            reason: ShutdownCause::host_signal
        }
    );
    assert_eq!(next_event(&mut events).await, VmEvent::Exited(exit));
    assert_eq!(vm.exit_status(), Some(exit));
    assert!(vm.monitor().is_closed());
    let err = vm
        .monitor()
        .execute(qmp::query_status {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
    assert!(!vm.paths().monitor.exists() && !vm.paths().pidfile.exists());
    let log = std::fs::read_to_string(&vm.paths().log).unwrap();
    assert!(
        log.contains("-name guest=test-vm,debug-threads=on \\\n"),
        "{log}"
    );
    assert!(
        log.contains("wrote 1048576/1048576 bytes at offset 0"),
        "{log}"
    );

    // The write went to vda and only there.
    let read = |format: &'static str, pattern: &'static str, path: String| async move {
        let args = ["-f", format, "-c", pattern, &path];
        run("qemu-io", &args.map(OsStr::new)).await
    };
    let out = read("qcow2", "read -P 0x5a 0 1M", vda).await;
    assert!(
        out.contains("read 1048576/1048576") && !out.contains("verification failed"),
        "{out}"
    );
    let out = read("raw", "read -P 0 0 1M", vdb).await;
    assert!(
        out.contains("read 1048576/1048576") && !out.contains("verification failed"),
        "{out}"
    );
}

#[tokio::test]
async fn quitting_by_itself_is_noticed() {
    let (_dir, spec, mut reaper) = domain().await;
    let mut vm = start(&spec).await.unwrap();
    reaper.watch(vm.pid());
    let mut events = vm.take_events().unwrap();
    vm.monitor().execute(qmp::quit {}).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        VmEvent::Shutdown {
            guest: false,
            reason: ShutdownCause::host_qmp_quit
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        VmEvent::Exited(Exit::Code(0))
    );
    assert_eq!(vm.exited().await, Exit::Code(0));
    // Nothing left to stop.
    assert_eq!(vm.destroy().await.unwrap(), Exit::Code(0));
}

#[tokio::test]
async fn survives_dropped_handles_and_reconnects() {
    let (_dir, spec, mut reaper) = domain().await;
    let vm = start(&spec).await.unwrap();
    let pid = vm.pid();
    reaper.watch(pid);
    drop(vm);
    sleep(Duration::from_millis(200)).await;
    assert!(is_alive(pid));

    let mut vm = reconnect(&spec.run_dir).await.unwrap();
    let mut events = vm.take_events().unwrap();
    assert_eq!(vm.pid(), pid);
    assert_eq!(status(&vm).await, RunState::prelaunch);
    vm.cont().await.unwrap();
    assert_eq!(next_event(&mut events).await, VmEvent::Resume);
    assert_eq!(status(&vm).await, RunState::running);

    // Not our child any more as far as this handle knows: the end is seen
    // through the pidfd.
    let exit = vm.destroy().await.unwrap();
    assert_eq!(exit, Exit::Unknown);
    assert!(matches!(
        next_event(&mut events).await,
        VmEvent::Shutdown { .. }
    ));
    assert_eq!(
        next_event(&mut events).await,
        VmEvent::Exited(Exit::Unknown)
    );
    assert!(!is_alive(pid));
    let err = reconnect(&spec.run_dir).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
}

#[tokio::test]
async fn refuses_a_second_qemu_for_the_same_run_dir() {
    let (_dir, spec, mut reaper) = domain().await;
    let vm = start(&spec).await.unwrap();
    reaper.watch(vm.pid());
    let err = start(&spec).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::AlreadyRunning);
    // The first one is untouched.
    assert_eq!(status(&vm).await, RunState::prelaunch);
    vm.destroy_with_grace(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_failed_start_reports_qemus_words_and_leaves_nothing() {
    let (dir, mut spec, _reaper) = domain().await;
    spec.disks[1].source = dir.path().join("missing.raw");
    let err = start(&spec).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::StartFailed);
    let text = err.to_string();
    assert!(
        text.starts_with("qemu unexpectedly closed the monitor: "),
        "{text}"
    );
    let missing = spec.disks[1].source.display();
    let words = format!("Could not open '{missing}': No such file or directory");
    assert!(text.ends_with(&words), "{text}");
    assert!(text.contains("qemu-system-x86_64: -blockdev {"), "{text}");
    assert!(
        !text.contains("starting up"),
        "the header is not QEMU's words: {text}"
    );
    let paths = RunPaths::new(&spec.run_dir);
    assert!(!paths.monitor.exists() && !paths.pidfile.exists());
    let err = reconnect(&spec.run_dir).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
}

#[tokio::test]
async fn reports_the_installed_version() {
    let version = hypervisor_version(&emulator()).await.unwrap();
    let text = run(emulator().to_str().unwrap(), &["--version".as_ref()]).await;
    assert_eq!(Some(version), parse_version(&text));
    assert!(version >= 7_000_000, "{version}");
}

#[test]
fn parses_version_strings() {
    let debian =
        "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022";
    assert_eq!(parse_version(debian), Some(7_002_022));
    assert_eq!(
        parse_version("QEMU emulator version 8.1.0\n"),
        Some(8_001_000)
    );
    assert_eq!(
        parse_version("QEMU emulator version 9.0\n"),
        Some(9_000_000)
    );
    assert_eq!(parse_version("something else"), None);
}
