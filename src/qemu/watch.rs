//! The per-VM watcher task: QMP events in, [`VmEvent`]s out, and the end of
//! the process noticed and reported last.
//!
//! How the end is noticed depends on whether QEMU is our child. A child is
//! reaped (`Child::wait`), which gives its exit status and leaves no zombie.
//! A QEMU we reconnected to after a daemon restart is not our child: tokio
//! can watch a pidfd only through an API that needs `unsafe`, so we poll the
//! pidfd's state, often once QEMU has closed the monitor (which it does when
//! it exits) and now and then before.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::{broadcast, watch};
use tokio::time::{sleep, timeout};
use tracing::{debug, warn};

use super::command::RunPaths;
use super::events::{Exit, QmpEvent, VmEvent};

/// How the watcher learns that the process ended.
pub(super) enum ExitSource {
    /// Our child: reaping it gives the status and leaves no zombie.
    Child(Child),
    /// Not our child (reconnected): its pidfd, whose state we poll.
    Pidfd(Arc<OwnedFd>),
}

/// Removes the socket and pidfile a killed QEMU cannot remove itself.
pub(super) async fn remove_stale_files(paths: &RunPaths) {
    for path in [&paths.monitor, &paths.pidfile] {
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), "cannot remove: {e}"),
        }
    }
}

/// Forwards typed events until the process ends, then reports the end.
pub(super) async fn watch_vm(
    exit_source: ExitSource,
    mut qmp: broadcast::Receiver<QmpEvent>,
    closed_flag: watch::Receiver<bool>,
    monitor_closed: impl std::future::Future<Output = ()>,
    events: broadcast::Sender<VmEvent>,
    exit_tx: watch::Sender<Option<Exit>>,
    paths: RunPaths,
) {
    use broadcast::error::{RecvError, TryRecvError};
    // No receiver is fine for every send below: nobody listens right now.
    let forward = |received: Result<_, RecvError>| match received {
        Ok(event) => {
            let _ = events.send(VmEvent::from_qmp(event));
            true
        }
        Err(RecvError::Lagged(lost)) => {
            let _ = events.send(VmEvent::Lost(lost));
            true
        }
        Err(RecvError::Closed) => false,
    };
    let ended = wait_exit(exit_source, closed_flag);
    tokio::pin!(ended);
    let mut qmp_open = true;
    let exit = loop {
        tokio::select! {
            received = qmp.recv(), if qmp_open => qmp_open = forward(received),
            exit = &mut ended => break exit,
        }
    };
    // QEMU's last events (SHUTDOWN) may still be in the socket: read up to
    // the monitor's EOF before declaring the end.
    if timeout(Duration::from_secs(2), monitor_closed)
        .await
        .is_err()
    {
        warn!("QEMU exited but its monitor did not close");
    }
    loop {
        let received = match qmp.try_recv() {
            Ok(event) => Ok(event),
            Err(TryRecvError::Lagged(lost)) => Err(RecvError::Lagged(lost)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        };
        forward(received);
    }
    remove_stale_files(&paths).await;
    debug!(?exit, "QEMU exited");
    let _ = events.send(VmEvent::Exited(exit));
    exit_tx.send_replace(Some(exit));
}

async fn wait_exit(source: ExitSource, mut monitor_closed: watch::Receiver<bool>) -> Exit {
    match source {
        ExitSource::Child(mut child) => match child.wait().await {
            Ok(status) => Exit::from(status),
            Err(e) => {
                warn!("cannot reap QEMU: {e}");
                Exit::Unknown
            }
        },
        ExitSource::Pidfd(pidfd) => {
            // Look often once the monitor has closed, and now and then
            // before, in case our connection broke on its own.
            loop {
                if pidfd_exited(&pidfd).await {
                    return Exit::Unknown;
                }
                let closed = *monitor_closed.borrow() || monitor_closed.has_changed().is_err();
                if closed {
                    sleep(Duration::from_millis(50)).await;
                } else {
                    let _ = timeout(Duration::from_secs(1), monitor_closed.changed()).await;
                }
            }
        }
    }
}

/// Whether the process behind a pidfd has exited. The kernel shows its pid
/// as -1 once it has been reaped; a zombie (an orphan whose new parent does
/// not reap) still shows its pid, with state Z.
async fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let fdinfo = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let Ok(info) = tokio::fs::read_to_string(&fdinfo).await else {
        return false;
    };
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse::<i64>().ok());
    match pid {
        Some(pid) if pid <= 0 => true,
        Some(pid) => {
            // The pid cannot have been reused unless the process was reaped,
            // which means it exited anyway.
            let stat = tokio::fs::read_to_string(format!("/proc/{pid}/stat"))
                .await
                .unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            matches!(state, None | Some("Z" | "X"))
        }
        None => false,
    }
}
