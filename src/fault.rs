//! Fault injection for the crash tests (`tests/crash.rs`): a switch that
//! stops the daemon as abruptly as SIGKILL, kills the domain's QEMU, or
//! makes a durable write fail with ENOSPC, right before or after the Nth
//! QMP command or durable file write of one long operation.
//!
//! The switch is the environment variable `VIRTBACKUPD_FAULT`, read once:
//!
//! ```text
//! VIRTBACKUPD_FAULT=op=backup-begin,kind=count
//! VIRTBACKUPD_FAULT=op=backup-begin,kind=kill-daemon,at=qmp:5:after
//! VIRTBACKUPD_FAULT=op=checkpoint-create,kind=kill-qemu,at=write:1:before
//! VIRTBACKUPD_FAULT=op=snapshot-delete,kind=enospc,at=write:2:before
//! ```
//!
//! The counters start when the driver enters the named operation
//! ([`arm`], once per process) and run on from there, through whatever the
//! operation sets off (a backup's end follows its begin). Every step
//! counted is logged at info level as `fault-injection step qmp 5 ...`, so
//! a `count` run tells the test how many steps there are to enumerate.
//! A QMP step is a command that changes something (queries and polls are
//! not counted: a crash around one is a crash around the change before or
//! after it). A durable write is one atomic file write or one removal of a
//! metadata file; ENOSPC hits only writes (a removal needs no space).
//!
//! Release builds ignore the variable: without `debug_assertions` or the
//! `fault-injection` feature every hook is an empty inline function.

/// Which side of a step a hook runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    After,
}

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A QMP command, named.
    Qmp,
    /// An atomic file write.
    Write,
    /// A metadata file removed.
    Remove,
}

#[cfg(any(debug_assertions, feature = "fault-injection"))]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
    use std::sync::OnceLock;

    use super::{Phase, Step};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        Count,
        KillDaemon,
        KillQemu,
        Enospc,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Spec {
        pub(super) op: String,
        pub(super) kind: Kind,
        /// (counts writes, not QMP; N; phase)
        pub(super) at: Option<(bool, u32, Phase)>,
    }

    pub(super) fn parse(text: &str) -> Option<Spec> {
        let (mut op, mut kind, mut at) = (None, None, None);
        for part in text.split(',') {
            let (key, value) = part.split_once('=')?;
            match key.trim() {
                "op" => op = Some(value.trim().to_string()),
                "kind" => {
                    kind = Some(match value.trim() {
                        "count" => Kind::Count,
                        "kill-daemon" => Kind::KillDaemon,
                        "kill-qemu" => Kind::KillQemu,
                        "enospc" => Kind::Enospc,
                        _ => return None,
                    })
                }
                "at" => {
                    let mut fields = value.trim().split(':');
                    let write = match fields.next()? {
                        "qmp" => false,
                        "write" => true,
                        _ => return None,
                    };
                    let n = fields.next()?.parse().ok()?;
                    let phase = match fields.next()? {
                        "before" => Phase::Before,
                        "after" => Phase::After,
                        _ => return None,
                    };
                    at = Some((write, n, phase));
                }
                _ => return None,
            }
        }
        let kind = kind?;
        if kind != Kind::Count && at.is_none() {
            return None;
        }
        Some(Spec { op: op?, kind, at })
    }

    fn spec() -> Option<&'static Spec> {
        static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
        SPEC.get_or_init(|| {
            let text = std::env::var("VIRTBACKUPD_FAULT").ok()?;
            let spec = parse(&text);
            if spec.is_none() {
                tracing::error!(%text, "VIRTBACKUPD_FAULT not understood; no fault is injected");
            }
            spec
        })
        .as_ref()
    }

    static ARMED: AtomicBool = AtomicBool::new(false);
    static QMP: AtomicU32 = AtomicU32::new(0);
    static WRITES: AtomicU32 = AtomicU32::new(0);
    /// The QEMU that the last counted command went to.
    static QEMU_PID: AtomicI32 = AtomicI32::new(0);

    pub(super) fn arm(op: &str) {
        let Some(spec) = spec() else { return };
        if spec.op == op && !ARMED.swap(true, Ordering::SeqCst) {
            tracing::info!(op, "fault-injection armed");
        }
    }

    /// Counts a step on its `Before` side and returns its number; the
    /// `After` side passes the number back in.
    pub(super) fn number(step: Step) -> u32 {
        if !ARMED.load(Ordering::SeqCst) {
            return 0;
        }
        let counter = if step == Step::Qmp { &QMP } else { &WRITES };
        counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Runs the fault if it is this step's; returns whether ENOSPC is
    /// to be reported.
    pub(super) fn hit(step: Step, n: u32, phase: Phase, what: &str, qemu: Option<i32>) -> bool {
        if n == 0 {
            return false;
        }
        let Some(spec) = spec() else { return false };
        if let Some(pid) = qemu {
            QEMU_PID.store(pid, Ordering::SeqCst);
        }
        let writes = step != Step::Qmp;
        if phase == Phase::Before {
            let domain = if writes { "write" } else { "qmp" };
            tracing::info!("fault-injection step {domain} {n} {step:?} {what}");
        }
        if spec.at != Some((writes, n, phase)) {
            return false;
        }
        tracing::info!(?spec.kind, n, ?phase, what, "fault-injection fired");
        match spec.kind {
            Kind::Count => false,
            Kind::KillDaemon => kill_self(),
            Kind::KillQemu => {
                let pid = QEMU_PID.load(Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    // SIGKILL is asynchronous: wait until it is gone, so
                    // the step that follows meets a dead QEMU.
                    for _ in 0..500 {
                        if rustix::process::test_kill_process(pid).is_err() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                false
            }
            Kind::Enospc => step == Step::Write && phase == Phase::Before,
        }
    }

    fn kill_self() -> ! {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort()
    }
}

/// Starts counting steps, if `op` is the operation the switch names.
#[inline]
pub fn arm(op: &str) {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    imp::arm(op);
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    let _ = op;
}

/// A counted step: call [`Counted::before`] right before it and
/// [`Counted::after`] right after it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    n: u32,
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    step: Step,
}

impl Counted {
    /// The step is about to be taken. For a [`Step::Write`], an error
    /// means the switch says the disk is full: the caller fails as the
    /// write would have. `qemu`: the pid of the QEMU a command goes to.
    #[inline]
    pub fn before(step: Step, what: &str, qemu: Option<i32>) -> Result<Counted, std::io::Error> {
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        {
            let n = imp::number(step);
            if imp::hit(step, n, Phase::Before, what, qemu) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            Ok(Counted { n, step })
        }
        #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
        {
            let _ = (step, what, qemu);
            Ok(Counted {})
        }
    }

    /// The step was taken.
    #[inline]
    pub fn after(self, what: &str) {
        #[cfg(any(debug_assertions, feature = "fault-injection"))]
        imp::hit(self.step, self.n, Phase::After, what, None);
        #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
        let _ = what;
    }
}

/// A slow backup target, for the tests of `--backup-cbw-timeout`
/// (`tests/cbw_timeout.rs`): `VIRTBACKUPD_CBW_LATENCY_MS=N` makes every
/// copy-before-write copy of a push backup take N ms (its filter then
/// copies into a `null-co` node with that latency instead of the scratch
/// image). Release builds ignore it, as they ignore the switch.
pub fn cbw_latency_ns() -> Option<u64> {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    {
        let ms: u64 = std::env::var("VIRTBACKUPD_CBW_LATENCY_MS")
            .ok()?
            .parse()
            .ok()?;
        Some(ms.saturating_mul(1_000_000))
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    None
}

/// A backup target on a failing disk, for the test of a push target's
/// last sync (`tests/backup.rs`): with `VIRTBACKUPD_TARGET_SYNC_EIO` set,
/// that sync fails with EIO (qemu/writeback.rs). Release builds ignore it.
pub fn target_sync_fails() -> bool {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    {
        std::env::var_os("VIRTBACKUPD_TARGET_SYNC_EIO").is_some()
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    false
}

#[cfg(test)]
mod tests {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    #[test]
    fn the_switch_reads_as_documented() {
        use super::imp::{parse, Kind, Spec};
        use super::Phase;

        assert_eq!(
            parse("op=backup-begin,kind=kill-daemon,at=qmp:5:after"),
            Some(Spec {
                op: "backup-begin".into(),
                kind: Kind::KillDaemon,
                at: Some((false, 5, Phase::After)),
            })
        );
        assert_eq!(
            parse("op=x,kind=enospc,at=write:2:before").map(|s| s.at),
            Some(Some((true, 2, Phase::Before)))
        );
        assert_eq!(parse("op=x,kind=count").map(|s| s.kind), Some(Kind::Count));
        assert_eq!(parse("op=x,kind=kill-daemon"), None);
        assert_eq!(parse("op=x,kind=explode,at=qmp:1:before"), None);
        assert_eq!(parse("kind=count"), None);
    }
}
