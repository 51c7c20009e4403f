//! Events as `virsh event ... --loop` prints them, written to a file.
//! Readiness and completeness are made certain with a probe: a domain the
//! watcher sees is defined again (`Defined Updated`) until the probe's
//! event shows.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{signal, wait_until, Daemon, PATIENCE};

static WATCHERS: AtomicUsize = AtomicUsize::new(0);

pub struct EventLog {
    child: Child,
    file: PathBuf,
    /// The probe's event line ends so.
    probe_line: String,
    /// The probe domain's definition.
    probe_xml: PathBuf,
}

impl EventLog {
    /// `virsh event WATCH... --loop`, listening once it returns; `probe`
    /// is a defined domain among what it watches, `probe_xml` its
    /// definition.
    #[track_caller]
    pub fn start(daemon: &Daemon, watch: &[&str], probe: &str, probe_xml: PathBuf) -> EventLog {
        let n = WATCHERS.fetch_add(1, Ordering::SeqCst);
        let file = daemon.path(&format!("events-{n}.txt"));
        let child = Command::new("virsh")
            .args(["-c", &daemon.uri(), "event"])
            .args(watch)
            .args(["--loop", "--timeout", "600"])
            .env("LC_ALL", "C")
            .stdout(fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("virsh event");
        let log = EventLog {
            child,
            file,
            probe_line: format!("for domain '{probe}': Defined Updated"),
            probe_xml,
        };
        log.probe(daemon);
        log
    }

    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn probes(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.ends_with(&self.probe_line))
            .count()
    }

    /// Every event emitted before this returns is in the file.
    #[track_caller]
    pub fn probe(&self, daemon: &Daemon) {
        let before = self.probes();
        let xml = self.probe_xml.to_str().expect("a UTF-8 path");
        wait_until(PATIENCE, || {
            daemon.virsh(&["define", xml]).ok();
            wait_until(Duration::from_millis(500), || self.probes() > before).is_some()
        })
        .unwrap_or_else(|| panic!("virsh event never saw the probe: {:?}", self.lines()));
    }

    /// Waits for an event line containing `needle`.
    #[track_caller]
    pub fn wait_for(&self, needle: &str) {
        wait_until(PATIENCE, || self.lines().iter().any(|l| l.contains(needle)))
            .unwrap_or_else(|| panic!("no event {needle:?}: {:?}", self.lines()));
    }

    /// All events since the start, without the probes. virsh is
    /// interrupted as by ^C: it deregisters and ends.
    #[track_caller]
    pub fn finish(mut self, daemon: &Daemon) -> Vec<String> {
        self.probe(daemon);
        let lines = self
            .lines()
            .into_iter()
            .filter(|l| !l.ends_with(&self.probe_line))
            .collect();
        signal(self.child.id(), "INT");
        // Drop kills what does not end by itself.
        let _ = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        lines
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
