//! Starting, finding again and stopping one domain's QEMU.
//!
//! # Life of a QEMU
//!
//! 1. [`start`] builds the command line ([`build_argv`]), appends a header to
//!    `RUN_DIR/qemu.log`, and spawns QEMU paused (`-S`) in its own process
//!    group with stdin closed and stdout/stderr going to the log. It polls
//!    for the QMP socket while checking that QEMU is still alive, connects a
//!    [`Monitor`], and hands back a [`RunningVm`]. The driver then sends
//!    `cont` ([`RunningVm::cont`]). If anything fails after the spawn, QEMU
//!    is killed and the error carries QEMU's own last words from the log, as
//!    libvirt's "qemu unexpectedly closed the monitor: ..." does.
//! 2. QEMU does not depend on us: it runs in a session (and so a process
//!    group) of its own, as libvirt daemonizes it, so a signal to the
//!    daemon's group (Ctrl-C, a service manager's stop) does not reach it,
//!    and nothing kills it when the daemon dies or drops the handle. Its
//!    own session also gives it its own scheduling autogroup where the
//!    kernel has them: a QEMU copying a backup with dozens of threads then
//!    competes with the daemon as one group, not thread by thread, which
//!    keeps the daemon's answers quick while backups run (README, "Many
//!    backups at once").
//! 3. After a daemon restart, [`reconnect`] finds it through its pidfile,
//!    checks that the pid really is this domain's QEMU, and connects again.
//! 4. A per-VM watcher task (`watch.rs`) turns QMP events into
//!    [`VmEvent`]s and notices the end of the process: by reaping it when it
//!    is our child, by polling its pidfd when it is not. It then removes the
//!    socket and pidfile a killed QEMU leaves behind, sends
//!    [`VmEvent::Exited`] last, and sets [`RunningVm::exit_status`].
//! 5. [`RunningVm::destroy`] sends SIGTERM, then SIGKILL after a grace
//!    period, like libvirt's virProcessKillPainfully. Signals go through the
//!    pidfd, so a recycled pid can never be hit.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tracing::{debug, warn};

use super::command::{build_argv, environment, DiskFormat, LaunchSpec, RunPaths};
use super::error::QemuError;
use super::events::{Exit, VmEvent};
use super::monitor::{Monitor, CONNECT_TIMEOUT};
use super::watch::{remove_stale_files, watch_vm, ExitSource};
use super::{image, log};

/// How long [`RunningVm::destroy`] waits after SIGTERM before SIGKILL
/// (libvirt: 10 s).
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for the process to go after SIGKILL (libvirt: 30 s).
const KILL_WAIT: Duration = Duration::from_secs(30);

/// How often to look for the monitor socket while QEMU starts.
const SOCKET_POLL: Duration = Duration::from_millis(10);

/// Buffered [`VmEvent`]s per receiver.
const EVENT_CAPACITY: usize = 1024;

/// A running QEMU and our connection to it.
///
/// Dropping it closes the monitor connection and stops watching, but leaves
/// QEMU running; [`reconnect`] finds it again.
#[derive(Debug)]
pub struct RunningVm {
    pid: Pid,
    pidfd: Arc<OwnedFd>,
    paths: RunPaths,
    run_dir: PathBuf,
    monitor: Monitor,
    exit: watch::Receiver<Option<Exit>>,
    events: broadcast::Sender<VmEvent>,
    first_events: Option<broadcast::Receiver<VmEvent>>,
    watcher: AbortHandle,
    /// The highest N of the nodes `libvirt-N-*` this daemon gave QEMU at
    /// start (0 when it was found again after a restart).
    highest_node: u32,
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Starts QEMU for `spec`, paused, with its monitor connected.
pub async fn start(spec: &LaunchSpec) -> Result<RunningVm, QemuError> {
    let mut spec = spec.clone();
    let highest_node = read_backing_chains(&mut spec.disks).await;
    let spec = &spec;
    let argv = build_argv(spec)?;
    let run_dir = spec.run_dir.clone();
    let paths = RunPaths::new(&run_dir);
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run_dir)
        .await
        .map_err(|e| {
            QemuError::io(
                format!("cannot create directory '{}'", run_dir.display()),
                e,
            )
        })?;
    if let Some((pid, _)) = find_live_qemu(&paths).await? {
        return Err(QemuError::AlreadyRunning {
            pid: pid.as_raw_nonzero().get(),
        });
    }
    remove_stale_files(&paths).await;

    let env = environment(&run_dir, std::env::var_os("PATH"));
    let mut log_file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.log)
        .await
        .map_err(|e| QemuError::io(format!("cannot open log '{}'", paths.log.display()), e))?;
    let header = log::header(SystemTime::now(), &env, &spec.emulator, &argv);
    log_file
        .write_all(&header)
        .await
        .map_err(|e| QemuError::io(format!("cannot write log '{}'", paths.log.display()), e))?;
    // What QEMU writes from here on is what a failed start reports.
    let log_offset = log_file
        .metadata()
        .await
        .map_err(|e| QemuError::io("cannot stat the QEMU log", e))?
        .len();
    let stderr = log_file.into_std().await;
    let stdout = stderr
        .try_clone()
        .map_err(|e| QemuError::io("cannot duplicate the QEMU log descriptor", e))?;

    let mut command = tokio::process::Command::new(&spec.emulator);
    command
        .args(&argv)
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    own_session(&mut command);
    let child = command
        .spawn()
        .map_err(|e| QemuError::io(format!("cannot execute '{}'", spec.emulator.display()), e))?;
    let mut guard = StartGuard {
        child: Some(child),
        paths: paths.clone(),
    };
    let child = guard.child.as_mut().expect("set just above");
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
        .ok_or(QemuError::NotRunning)?;
    debug!(pid = pid.as_raw_nonzero().get(), name = %spec.name, "QEMU spawned");

    let connected = async {
        let pidfd = pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| QemuError::io("cannot open a pidfd for QEMU", e.into()))?;
        let monitor = wait_for_monitor(child, &paths.monitor, CONNECT_TIMEOUT).await?;
        Ok::<_, QemuError>((pidfd, monitor))
    }
    .await;
    let mut child = guard.disarm();
    match connected {
        Ok((pidfd, monitor)) => {
            let mut vm = RunningVm::new(
                pid,
                Arc::new(pidfd),
                monitor,
                ExitSource::Child(child),
                run_dir,
            );
            vm.highest_node = highest_node;
            Ok(vm)
        }
        Err(e) => Err(fail_start(&mut child, &paths, log_offset, e).await),
    }
}

/// Polls for the monitor socket until QEMU accepts, exits, or time runs out.
async fn wait_for_monitor(
    child: &mut Child,
    socket: &Path,
    limit: Duration,
) -> Result<Monitor, QemuError> {
    let deadline = Instant::now() + limit;
    loop {
        if child
            .try_wait()
            .map_err(|e| QemuError::io("cannot check on QEMU", e))?
            .is_some()
        {
            return Err(QemuError::NotRunning);
        }
        match UnixStream::connect(socket).await {
            Ok(stream) => {
                return timeout_at(deadline, Monitor::handshake(stream))
                    .await
                    .map_err(|_| socket_timeout())?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                return Err(QemuError::io(
                    format!("cannot connect to QEMU monitor at '{}'", socket.display()),
                    e,
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(socket_timeout());
        }
        sleep(SOCKET_POLL).await;
    }
}

fn socket_timeout() -> QemuError {
    QemuError::Timeout("monitor socket did not show up".to_owned())
}

/// Makes sure a half-started QEMU is gone and turns `error` into what the
/// driver reports: QEMU's own words if it exited by itself.
async fn fail_start(
    child: &mut Child,
    paths: &RunPaths,
    log_offset: u64,
    error: QemuError,
) -> QemuError {
    // A closed monitor means QEMU is on its way out; give it a moment to
    // finish writing its complaint and exit by itself.
    let exited_alone = match error {
        QemuError::NotRunning => timeout(Duration::from_secs(2), child.wait()).await.is_ok(),
        _ => matches!(child.try_wait(), Ok(Some(_))),
    };
    if !exited_alone {
        let _ = child.kill().await;
    }
    remove_stale_files(paths).await;
    if exited_alone {
        QemuError::StartFailed {
            log: log::excerpt(&paths.log, log_offset).await,
        }
    } else {
        error
    }
}

/// Kills the child if `start` is abandoned half-way (its future dropped or
/// a panic), where there is no chance to await a clean-up.
struct StartGuard {
    child: Option<Child>,
    paths: RunPaths,
}

impl StartGuard {
    fn disarm(&mut self) -> Child {
        self.child.take().expect("disarmed twice")
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        let paths = self.paths.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
                remove_stale_files(&paths).await;
            });
        }
    }
}

/// Connects again to the QEMU that was started with `run_dir`.
///
/// Fails with [`QemuError::NotRunning`] when there is no such process any
/// more (no pidfile, dead pid, or a pid that is not that QEMU).
pub async fn reconnect(run_dir: &Path) -> Result<RunningVm, QemuError> {
    let paths = RunPaths::new(run_dir);
    let Some((pid, pidfd)) = find_live_qemu(&paths).await? else {
        return Err(QemuError::NotRunning);
    };
    let monitor = Monitor::connect(&paths.monitor).await?;
    let pidfd = Arc::new(pidfd);
    Ok(RunningVm::new(
        pid,
        pidfd.clone(),
        monitor,
        ExitSource::Pidfd(pidfd),
        run_dir.to_owned(),
    ))
}

/// The live QEMU named by the run directory's pidfile, if there is one.
///
/// The pidfd is opened before the checks, so the process checked is the one
/// it refers to even if the pid is recycled meanwhile.
async fn find_live_qemu(paths: &RunPaths) -> Result<Option<(Pid, OwnedFd)>, QemuError> {
    let text = match tokio::fs::read_to_string(&paths.pidfile).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(QemuError::io(
                format!("cannot read pidfile '{}'", paths.pidfile.display()),
                e,
            ))
        }
    };
    let Some(pid) = text.trim().parse::<i32>().ok().and_then(Pid::from_raw) else {
        warn!(pidfile = %paths.pidfile.display(), "unreadable pidfile");
        return Ok(None);
    };
    let Ok(pidfd) = pidfd_open(pid, PidfdFlags::NONBLOCK) else {
        return Ok(None);
    };
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.as_raw_nonzero()));
    // A zombie has an empty cmdline, so it fails this check too.
    let cmdline = tokio::fs::read(proc_dir.join("cmdline"))
        .await
        .unwrap_or_default();
    let expected = paths.chardev_arg();
    let ours = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == expected.as_encoded_bytes());
    if !ours {
        warn!(
            pid = pid.as_raw_nonzero().get(),
            "pidfile names a process that is not this domain's QEMU"
        );
        return Ok(None);
    }
    Ok(Some((pid, pidfd)))
}

/// Reads each qcow2 disk's backing chain from the image headers and
/// numbers its layers as libvirt 9.0 does (qemuProcessPrepareHostStorage):
/// after every disk's top, the disks from the last to the first, each
/// chain top-down. Gives the highest node number in use.
pub async fn read_backing_chains(disks: &mut [super::DiskSpec]) -> u32 {
    let tops = disks.iter().map(|d| d.node_index).max().unwrap_or(0);
    let mut next = tops + 1;
    for disk in disks.iter_mut().rev() {
        disk.backing.clear();
        disk.has_backing = false;
        if disk.format != DiskFormat::Qcow2 {
            continue;
        }
        let Some(chain) = image::backing_chain(disk.source.clone()).await else {
            // QEMU opens it from the header.
            disk.has_backing = true;
            continue;
        };
        disk.has_backing = !chain.is_empty();
        for layer in chain {
            disk.backing.push(super::command::BackingSpec {
                node_index: next,
                source: layer.path,
                source_kind: if layer.block {
                    super::SourceKind::Block
                } else {
                    super::SourceKind::File
                },
                format: if layer.qcow2 {
                    DiskFormat::Qcow2
                } else {
                    DiskFormat::Raw
                },
            });
            next += 1;
        }
    }
    next - 1
}

impl RunningVm {
    fn new(
        pid: Pid,
        pidfd: Arc<OwnedFd>,
        monitor: Monitor,
        exit_source: ExitSource,
        run_dir: PathBuf,
    ) -> RunningVm {
        let paths = RunPaths::new(&run_dir);
        let (events, first_events) = broadcast::channel(EVENT_CAPACITY);
        let (exit_tx, exit) = watch::channel(None);
        let watcher = tokio::spawn(watch_vm(
            exit_source,
            monitor.events(),
            monitor.closed_watch(),
            monitor.closed(),
            events.clone(),
            exit_tx,
            paths.clone(),
        ))
        .abort_handle();
        RunningVm {
            pid,
            pidfd,
            paths,
            run_dir,
            monitor,
            exit,
            events,
            first_events: Some(first_events),
            watcher,
            highest_node: 0,
        }
    }
}

impl RunningVm {
    /// The highest N of the block nodes `libvirt-N-*` the command line
    /// named: every layer of each disk's chain has one.
    pub fn highest_node(&self) -> u32 {
        self.highest_node
    }

    /// QEMU's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// CPU time QEMU has used, in nanoseconds (what virDomainGetInfo
    /// reports); 0 once the process is gone.
    pub async fn cpu_time_ns(&self) -> u64 {
        // Read on this thread: procfs answers from the kernel's memory and
        // never waits on a device, so the read takes microseconds, while a
        // hop to the blocking pool and back costs two more trips through
        // the scheduler, which on a busy host (8 backups running) made
        // dominfo's p99 ten times worse.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()));
        let Ok(stat) = stat else {
            return 0;
        };
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return 0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        let per_second = rustix::param::clock_ticks_per_second().max(1);
        ticks.saturating_mul(1_000_000_000) / per_second
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The files in the run directory.
    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    /// The QMP connection.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The receiver that has every event since the monitor connected.
    /// Returns `None` after the first call; use [`RunningVm::subscribe`].
    pub fn take_events(&mut self) -> Option<broadcast::Receiver<VmEvent>> {
        self.first_events.take()
    }

    /// A receiver of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// A watch that turns `Some` when the process has ended (after its last
    /// events were delivered and its stale files removed).
    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// Waits until the process has ended.
    pub async fn exited(&self) -> Exit {
        let mut exit = self.exit.clone();
        // An error means the watcher is gone, which happens only with `self`.
        let exit = exit.wait_for(Option::is_some).await.map(|exit| *exit);
        exit.ok().flatten().unwrap_or(Exit::Unknown)
    }

    /// Pauses the vCPUs (QMP `stop`).
    pub async fn stop(&self) -> Result<(), QemuError> {
        self.monitor.execute(qapi::qmp::stop {}).await.map(drop)
    }

    /// Lets the paused vCPUs run (QMP `cont`).
    pub async fn cont(&self) -> Result<(), QemuError> {
        self.monitor.execute(qapi::qmp::cont {}).await.map(drop)
    }

    /// Whether the vCPUs run (QMP `query-status`), for taking back the
    /// state of a domain after a daemon restart.
    pub async fn is_running(&self) -> Result<bool, QemuError> {
        Ok(self
            .monitor
            .execute(qapi::qmp::query_status {})
            .await?
            .running)
    }

    /// Asks the guest to power off (QMP `system_powerdown`). With no guest
    /// OS, or without ACPI, nothing happens, as with libvirtd.
    pub async fn shutdown(&self) -> Result<(), QemuError> {
        self.monitor
            .execute(qapi::qmp::system_powerdown {})
            .await
            .map(drop)
    }

    /// What QEMU does when the guest powers off (QMP `set-action`, QEMU
    /// 6.0+): exit (`pause: false`, the default here, since QEMU runs
    /// without `-no-shutdown`) or stop the vCPUs and stay (`pause: true`).
    /// A host's SIGTERM or `quit` always ends QEMU.
    pub async fn set_shutdown_pauses(&self, pause: bool) -> Result<(), QemuError> {
        let action = if pause { "pause" } else { "poweroff" };
        self.monitor
            .execute_value("set-action", serde_json::json!({ "shutdown": action }))
            .await
            .map(drop)
    }

    /// Resets the machine (QMP `system_reset`); a QEMU stopped after the
    /// guest powered off can then `cont` and boot again.
    pub async fn reset(&self) -> Result<(), QemuError> {
        self.monitor
            .execute(qapi::qmp::system_reset {})
            .await
            .map(drop)
    }

    /// Stops QEMU: SIGTERM, then SIGKILL after [`TERM_GRACE`]. Returns once
    /// the process is gone and its events delivered.
    pub async fn destroy(&self) -> Result<Exit, QemuError> {
        self.destroy_with_grace(TERM_GRACE).await
    }

    /// [`RunningVm::destroy`] with another grace period before SIGKILL.
    pub async fn destroy_with_grace(&self, grace: Duration) -> Result<Exit, QemuError> {
        if let Some(exit) = self.exit_status() {
            return Ok(exit);
        }
        self.signal(Signal::TERM)?;
        if let Ok(exit) = timeout(grace, self.exited()).await {
            return Ok(exit);
        }
        debug!(pid = self.pid(), "QEMU ignored SIGTERM, sending SIGKILL");
        self.signal(Signal::KILL)?;
        timeout(KILL_WAIT, self.exited()).await.map_err(|_| {
            QemuError::Timeout(format!(
                "Failed to terminate process {} with SIGKILL: Device or resource busy",
                self.pid()
            ))
        })
    }

    fn signal(&self, signal: Signal) -> Result<(), QemuError> {
        match pidfd_send_signal(&*self.pidfd, signal) {
            // Already gone: the watcher will say so.
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(QemuError::io(
                format!("Failed to terminate process {} with {signal:?}", self.pid()),
                e.into(),
            )),
        }
    }
}

/// The version of the QEMU binary, encoded as libvirt encodes it
/// (major * 1,000,000 + minor * 1,000 + micro): 7.2.22 gives 7002022.
pub async fn hypervisor_version(emulator: &Path) -> Result<u64, QemuError> {
    let run = tokio::process::Command::new(emulator)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| {
            QemuError::Timeout(format!("'{} --version' did not finish", emulator.display()))
        })?
        .map_err(|e| QemuError::io(format!("cannot execute '{}'", emulator.display()), e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        QemuError::Protocol(format!(
            "cannot parse version of '{}' from: {}",
            emulator.display(),
            text.trim()
        ))
    })
}

fn parse_version(text: &str) -> Option<u64> {
    let rest = text.split("QEMU emulator version ").nth(1)?;
    let token = rest.split_whitespace().next()?;
    let mut parts = token.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().unwrap_or(Some(0))?;
    if minor >= 1000 || micro >= 1000 {
        return None;
    }
    Some(major * 1_000_000 + minor * 1_000 + micro)
}

/// Makes the spawned process the leader of a new session (setsid(2)).
#[allow(unsafe_code)]
fn own_session(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe work is sound. It makes one setsid(2) system
    // call through rustix's raw syscall wrapper, which neither allocates
    // nor takes a lock, and returns its result by value. setsid cannot
    // fail here: the child was just forked, so it leads no process group
    // (no `process_group` is set on this command).
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;

#[cfg(test)]
impl RunningVm {
    /// A QEMU for the driver's tests, whose monitor is already connected:
    /// to a real QEMU (`child`), or to a QMP transcript played back, with
    /// any process standing in for QEMU as `child`. Dropping it kills
    /// `child` if it was spawned with `kill_on_drop`.
    pub(crate) fn attach(child: Child, monitor: Monitor, run_dir: PathBuf) -> RunningVm {
        let raw = child.id().and_then(|id| i32::try_from(id).ok());
        let pid = raw.and_then(Pid::from_raw).expect("a running child");
        let pidfd = Arc::new(pidfd_open(pid, PidfdFlags::NONBLOCK).expect("pidfd"));
        RunningVm::new(pid, pidfd, monitor, ExitSource::Child(child), run_dir)
    }
}
