//! Replaying libvirtd 9.0's reference captures (`fixtures/reference/*/`)
//! against virtbackupd: each capture records a command (a virsh line or a
//! call of the folder's `bkapi.py`), what it printed and its exit status,
//! made in a directory such as `/tmp/bkref`; a [`Session`] runs the same
//! command in its own copy of that directory and compares, with the
//! directory's name mapped back.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::events::EventLog;
use super::{files, images, Daemon, Run};

/// The disks of the reference sessions' main domain (bkvm, cpvm, prvm):
/// (file, format, size).
pub const DISKS: [(&str, &str, &str); 3] = [
    ("vda.qcow2", "qcow2", "64M"),
    ("vdb.qcow2", "qcow2", "64M"),
    ("vdc.raw", "raw", "32M"),
];

/// One folder of captures.
pub struct Area {
    /// The folder, from the crate root: `fixtures/reference/backup`.
    pub root: &'static str,
    /// The directory the captures were made in: `/tmp/bkref`.
    pub tmp: &'static str,
    /// The folder's libvirt-python script (`bkapi.py`, `snapi.py`).
    pub api_script: &'static str,
}

impl Area {
    /// A file of the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(self.root)
            .join(name)
    }

    pub fn text(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// What libvirtd printed: (command line, stdout, stderr, exit status).
    pub fn capture(&self, name: &str) -> (String, String, String, i32) {
        let text = self.text(&format!("{name}.txt"));
        let (command, rest) = text.split_once("\n--- stdout ---\n").expect("stdout");
        let (stdout, rest) = rest.split_once("--- stderr ---\n").expect("stderr");
        let (stderr, status) = rest.split_once("--- exit status: ").expect("status");
        (
            command.trim_start_matches("$ ").to_string(),
            stdout.to_string(),
            stderr.to_string(),
            status.trim().parse().expect("status number"),
        )
    }
}

pub fn is_date(w: &str) -> bool {
    w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-'
}

fn is_time(w: &str) -> bool {
    w.len() == 8 && w.as_bytes()[2] == b':' && w.as_bytes()[5] == b':'
}

/// virsh's output with what differs from run to run made constant: dates,
/// times and the elapsed milliseconds of `domjobinfo`. Every other line is
/// kept byte for byte (virsh pads its values with trailing spaces).
pub fn steady(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("Time elapsed:") {
                "Time elapsed: N ms".to_string()
            } else if line.split_whitespace().any(|w| is_date(w) || is_time(w)) {
                line.split_whitespace()
                    .map(|w| if is_date(w) || is_time(w) { "T" } else { w })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys of a backup job's progress in its statistics and events.
pub const PROGRESS: [&str; 4] = [
    "time_elapsed",
    "disk_total",
    "disk_processed",
    "disk_remaining",
];

/// `text` without the lines that contain `needle` (`creationTime`, whose
/// value is the run's).
pub fn lines_without(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| !l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with the number after each `'key': ` (a Python dict repr) or
/// `key: ` (an event parameter) replaced by N.
pub fn masked(text: &str, keys: &[&str]) -> String {
    let mut out = text.to_string();
    for key in keys {
        for pattern in [format!("'{key}': "), format!("\t{key}: ")] {
            let mut result = String::new();
            let mut rest = out.as_str();
            while let Some(at) = rest.find(&pattern) {
                let end = at + pattern.len();
                result.push_str(&rest[..end]);
                rest = rest[end..].trim_start_matches(|c: char| c.is_ascii_digit());
                result.push('N');
            }
            result.push_str(rest);
            out = result;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A test's copy of the reference directory.

pub struct Session {
    pub daemon: Daemon,
    /// Our copy of the capture directory.
    pub dir: PathBuf,
    pub area: &'static Area,
    /// Names ours and libvirtd's runs chose differently (a checkpoint
    /// named after the time): (theirs, ours).
    renamed: RefCell<Vec<(String, String)>>,
}

impl Session {
    /// A daemon and a copy of the capture directory with `xml/` (the
    /// reference's documents, paths made ours) and `out/`.
    pub fn start(area: &'static Area, daemon: Daemon) -> Session {
        let base = Path::new(area.tmp).file_name().expect("a directory name");
        let dir = daemon.path(base.to_str().expect("utf-8"));
        fs::create_dir_all(dir.join("xml")).unwrap();
        fs::create_dir_all(dir.join("out")).unwrap();
        let session = Session {
            daemon,
            dir,
            area,
            renamed: RefCell::new(Vec::new()),
        };
        for entry in fs::read_dir(area.path("xml")).unwrap().flatten() {
            let text = fs::read_to_string(entry.path()).unwrap();
            let copy = session.dir.join("xml").join(entry.file_name());
            fs::write(copy, session.ours(&text)).unwrap();
        }
        session
    }

    pub fn dirname(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// From now on `ours` stands for libvirtd's `theirs`, in the commands
    /// replayed and in what they print.
    pub fn rename(&self, theirs: &str, ours: &str) {
        self.renamed
            .borrow_mut()
            .push((theirs.to_string(), ours.to_string()));
    }

    /// Reference text with the capture directory (and renamed names) made
    /// ours.
    pub fn ours(&self, text: &str) -> String {
        let text = text.replace(self.area.tmp, self.dirname());
        self.renamed
            .borrow()
            .iter()
            .fold(text, |text, (theirs, ours)| text.replace(theirs, ours))
    }

    /// Our text with our directory (and renamed names) made the capture
    /// directory.
    pub fn theirs(&self, text: &str) -> String {
        let text = text.replace(self.dirname(), self.area.tmp);
        self.renamed
            .borrow()
            .iter()
            .fold(text, |text, (theirs, ours)| text.replace(ours, theirs))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Creates images in our directory: (file, format, size).
    #[track_caller]
    pub fn images(&self, list: &[(&str, &str, &str)]) {
        for (name, format, size) in list {
            images::create(&self.path(name), format, size);
        }
    }

    /// The files in a directory of ours (`out/`, `.`), sorted.
    #[track_caller]
    pub fn files(&self, rel: &str) -> Vec<String> {
        files(&self.path(rel))
    }

    /// Watches the events of `dom`, which `define` defined.
    #[track_caller]
    pub fn events(&self, dom: &str) -> EventLog {
        EventLog::start(
            &self.daemon,
            &[dom, "--all"],
            dom,
            self.path(&format!("{dom}.xml")),
        )
    }

    /// The stock virsh, run in our reference directory (as the captures
    /// were made in theirs), loud like the captures.
    pub fn virsh(&self, args: &[&str]) -> Run {
        Run::of(
            Command::new("virsh")
                .args(["-c", &self.daemon.uri()])
                .args(args)
                .current_dir(&self.dir)
                .env("LC_ALL", "C")
                .env_remove("LIBVIRT_DEFAULT_URI"),
        )
    }

    /// Asserts that `run` printed what libvirtd printed in capture `name`.
    #[track_caller]
    pub fn same_as(&self, run: &Run, name: &str) {
        let (command, stdout, stderr, code) = self.area.capture(name);
        assert_eq!(
            steady(&self.theirs(&run.stdout)),
            steady(&stdout),
            "stdout differs from {name} ({command})"
        );
        assert_eq!(
            self.theirs(&run.stderr),
            stderr,
            "stderr differs from {name} ({command})"
        );
        assert_eq!(
            run.code, code,
            "exit status differs from {name} ({command})"
        );
    }

    /// Runs the virsh command of capture `name` (same arguments, on the
    /// same domain) and asserts that it printed what libvirtd printed.
    #[track_caller]
    pub fn replay(&self, name: &str) -> Run {
        let run = self.replay_only(name);
        self.same_as(&run, name);
        run
    }

    /// Runs the virsh command of capture `name` without comparing.
    pub fn replay_only(&self, name: &str) -> Run {
        let (command, ..) = self.area.capture(name);
        let args = command
            .strip_prefix("virsh -c qemu:///system ")
            .unwrap_or_else(|| panic!("{name} is not a plain virsh command: {command}"));
        let args: Vec<String> = shell_words(args).iter().map(|a| self.ours(a)).collect();
        self.virsh(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs the command of capture `name` that is no client of the daemon
    /// (qemu-img, qemu-io) in our directory, paths made ours.
    pub fn run_tool(&self, name: &str) -> Run {
        let (command, ..) = self.area.capture(name);
        let args: Vec<String> = shell_words(&command).iter().map(|a| self.ours(a)).collect();
        Run::of(
            Command::new(&args[0])
                .args(&args[1..])
                .current_dir(&self.dir)
                .env("LC_ALL", "C"),
        )
    }

    /// Runs the tool command of capture `name` and asserts that it
    /// printed the same.
    #[track_caller]
    pub fn replay_tool(&self, name: &str) {
        let (command, stdout, stderr, code) = self.area.capture(name);
        let run = self.run_tool(name);
        assert_eq!(
            (self.theirs(&run.stdout), self.theirs(&run.stderr), run.code),
            (stdout, stderr, code),
            "{name} ({command})"
        );
    }

    /// Replays the guest write of capture `name` (`hmp-write-*`: an HMP
    /// qemu-io command).
    #[track_caller]
    pub fn replay_write(&self, name: &str) {
        let (command, ..) = self.area.capture(name);
        let (dom, hmp) = command
            .strip_prefix("virsh -c qemu:///system qemu-monitor-command ")
            .and_then(|c| c.split_once(" --hmp "))
            .expect("an HMP command");
        self.daemon.hmp_qemu_io(dom, hmp.trim_matches('\''));
    }

    /// Asserts that the image-handling QMP commands the daemon sent since
    /// its log was `mark` bytes long are those libvirtd sent in capture
    /// `name` (`name.qmp`), in the same order, ids aside. Job queries and
    /// the order in which disks are cleaned up are timing, not protocol.
    #[track_caller]
    pub fn same_qmp(&self, name: &str, mark: usize) {
        const KINDS: [&str; 5] = [
            "blockdev-add",
            "blockdev-create",
            "nbd-server-start",
            "transaction",
            "block-export-add",
        ];
        let wanted = |line: &str| -> Option<Value> {
            let mut cmd: Value = serde_json::from_str(line).ok()?;
            let kind = cmd.get("execute")?.as_str()?;
            if !KINDS.contains(&kind) {
                return None;
            }
            cmd.as_object_mut()?.remove("id");
            Some(cmd)
        };
        let log = self.daemon.log();
        let ours: Vec<Value> = log[mark..]
            .lines()
            .filter(|l| l.contains("QMP send"))
            .filter_map(|l| l.find("{\"execute\"").map(|at| &l[at..]))
            .filter_map(|l| wanted(&self.theirs(l)))
            .map(without_push_tuning)
            .collect();
        let theirs: Vec<Value> = self
            .area
            .text(&format!("{name}.qmp"))
            .lines()
            .filter_map(|l| l.strip_prefix("-> "))
            .filter_map(wanted)
            .collect();
        assert!(!theirs.is_empty(), "{name}.qmp has no such command");
        assert_eq!(ours, theirs, "{name}.qmp");
    }

    /// libvirt-python through the reference's own bkapi.py (pointed at our
    /// daemon), run in our reference directory.
    pub fn api(&self, args: &[&str]) -> Run {
        let script = self.area.text(self.area.api_script).replace(
            "libvirt.open(\"qemu:///system\")",
            "libvirt.open(__import__('os').environ['URI'])",
        );
        self.python(&script, args)
    }

    /// A Python script run with Debian's python3 in our directory, `URI`
    /// set to our daemon's.
    pub fn python(&self, script: &str, args: &[&str]) -> Run {
        Run::of(
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(script)
                .args(args)
                .current_dir(&self.dir)
                .env("URI", self.daemon.uri()),
        )
    }

    /// Runs the bkapi.py call of capture `name` and asserts the same
    /// output, with the values of `masked_keys` not compared.
    #[track_caller]
    pub fn replay_api(&self, name: &str, masked_keys: &[&str]) -> Run {
        let (command, stdout, stderr, code) = self.area.capture(name);
        let prefix = format!("./{} ", self.area.api_script);
        let args = command
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{name} is not a {prefix}call: {command}"));
        let args: Vec<String> = shell_words(args).iter().map(|a| self.ours(a)).collect();
        let run = self.api(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            masked(&self.theirs(&run.stdout), masked_keys),
            masked(&stdout, masked_keys),
            "{name} ({command}); stderr: {}",
            run.stderr
        );
        assert_eq!(run.stderr, stderr, "{name}");
        assert_eq!(run.code, code, "{name}");
        run
    }

    /// Defines reference domain `name` with its images in our directory.
    pub fn define(&self, name: &str) {
        let xml = self.ours(&self.area.text(&format!("{name}.xml")));
        fs::write(self.path(&format!("{name}.xml")), xml).unwrap();
        self.virsh(&["define", &format!("{name}.xml")]).ok();
    }
}

// ---------------------------------------------------------------------------
// Domain events as `virsh event` prints them.

/// Event lines with their varying numbers masked and without timestamps.
pub fn event_shape(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .take_while(|l| *l != "event loop timed out")
        .map(|l| {
            let l = match l.split_once("+0000: ") {
                Some((stamp, rest)) if is_date(&stamp[..10.min(stamp.len())]) => rest,
                _ => l.as_str(),
            };
            masked(l, &PROGRESS)
        })
        .collect()
}

/// The events of capture `name`, shaped.
pub fn reference_events(bk: &Session, name: &str) -> Vec<String> {
    let (_, stdout, _, _) = bk.area.capture(name);
    let lines: Vec<String> = stdout.lines().map(|l| bk.ours(l)).collect();
    event_shape(&lines)
}

/// The parameters of the job-completed event in `lines`.
pub fn job_completed(lines: &[String]) -> BTreeMap<String, String> {
    let start = lines
        .iter()
        .position(|l| l.contains("event 'job-completed'"))
        .unwrap_or_else(|| panic!("no job-completed event: {lines:?}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| l.starts_with('\t'))
        .map(|l| {
            let (k, v) = l.trim().split_once(": ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `index='N'` attributes made `index='I'`: libvirt's counter and ours
/// start from the same place but the reference sessions made more nodes.
pub fn unindexed(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("index='") {
        out.push_str(&rest[..at + 7]);
        rest = rest[at + 7..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('I');
    }
    out.push_str(rest);
    out
}

/// A command line split as the shell splits it, for the captures' simple
/// quoting: single quotes group, and are removed.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Our push jobs copy with `x-perf: {use-copy-range: true}` where libvirtd
/// leaves QEMU's defaults (src/qemu/backup.rs, push_perf), and a backup's
/// images (targets, scratch) are opened with `cache.no-flush`, synced by
/// the daemon instead (src/qemu/writeback.rs): checked here, then taken
/// out so that the rest compares with libvirtd's command.
fn without_push_tuning(mut cmd: Value) -> Value {
    // (tests/target_sync.rs checks that the guest's own images have none.)
    if cmd["execute"] == "blockdev-add" {
        let args = cmd["arguments"].as_object_mut();
        if let Some(cache) = args.and_then(|args| args.remove("cache")) {
            assert_eq!(
                cache,
                serde_json::json!({"direct": false, "no-flush": true})
            );
        }
    }
    let actions = cmd
        .pointer_mut("/arguments/actions")
        .and_then(Value::as_array_mut);
    for action in actions.into_iter().flatten() {
        if action["type"] != "blockdev-backup" {
            continue;
        }
        let Some(data) = action.get_mut("data").and_then(Value::as_object_mut) else {
            continue;
        };
        let tuning = data.remove("x-perf");
        if data.get("sync").and_then(Value::as_str) != Some("none") {
            assert_eq!(
                tuning,
                Some(serde_json::json!({"use-copy-range": true})),
                "{data:?}"
            );
        }
    }
    cmd
}
