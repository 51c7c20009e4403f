//! Hostile documents: every fixture document, cut, spliced and salted with
//! XML's sharp edges, through each parser and the steps after it (align,
//! prepare, format, parse again). Any outcome but a panic is fine; what
//! the errors say is checked by the fixture tests. The seeds are fixed;
//! `MUTATION_SEED=N cargo test --lib mutated` tries other ones.

use std::fs;
use std::path::{Path, PathBuf};

use super::backup::BackupDef;
use super::checkpoint::{CheckpointDef, FormatFlags as CheckpointFormat, ParseFlags as CpParse};
use super::domain::{DomainDef, FormatMode, Secrets};
use super::snapshot::{
    CreateContext, FormatFlags as SnapshotFormat, ParseFlags as SnapParse, SnapshotDef,
    SnapshotState,
};
use super::test_support::{domain, fixtures, NOW};

/// xorshift64*, so that a failing case is the same one every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A char boundary of `text` near a random byte.
    fn boundary(&mut self, text: &str) -> usize {
        let mut at = self.below(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    }

    /// One to three edits, mostly of the document's structure (a value, a
    /// text, an attribute or an element replaced, dropped or repeated) so
    /// that many results still parse and reach the later steps, sometimes
    /// of its bytes (a span cut or repeated, a sharp edge inserted).
    fn mutate(&mut self, text: &str) -> String {
        let mut out = text.to_string();
        for _ in 0..=self.below(3) {
            match self.below(8) {
                0 | 1 => self.new_value(&mut out),
                2 => self.new_text(&mut out),
                3 => self.drop_attribute(&mut out),
                4 | 5 => self.element(&mut out),
                _ => self.bytes(&mut out),
            }
        }
        out
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// The start of one of `needle`'s occurrences, if any.
    fn find(&mut self, text: &str, needle: &str) -> Option<usize> {
        let all: Vec<usize> = text.match_indices(needle).map(|(at, _)| at).collect();
        (!all.is_empty()).then(|| all[self.below(all.len())])
    }

    fn new_value(&mut self, out: &mut String) {
        let Some(at) = self.find(out, "='") else {
            return;
        };
        let start = at + 2;
        let Some(len) = out[start..].find('\'') else {
            return;
        };
        let value = self.pick(VALUES);
        out.replace_range(start..start + len, value);
    }

    fn new_text(&mut self, out: &mut String) {
        let Some(at) = self.find(out, ">") else {
            return;
        };
        let start = at + 1;
        let Some(len) = out[start..].find('<') else {
            return;
        };
        let value = self.pick(VALUES);
        out.replace_range(start..start + len, value);
    }

    fn drop_attribute(&mut self, out: &mut String) {
        let Some(at) = self.find(out, "='") else {
            return;
        };
        let Some(name_start) = out[..at].rfind(' ') else {
            return;
        };
        let Some(len) = out[at + 2..].find('\'') else {
            return;
        };
        out.replace_range(name_start..at + 2 + len + 1, "");
    }

    /// An element dropped, repeated, or replaced by a sharp edge.
    fn element(&mut self, out: &mut String) {
        let Some(start) = self.find(out, "<") else {
            return;
        };
        let tag: String = out[start + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if tag.is_empty() {
            return;
        }
        let Some(open_len) = out[start..].find('>') else {
            return;
        };
        let end = if out[..start + open_len].ends_with('/') {
            start + open_len + 1
        } else {
            let close = format!("</{tag}>");
            match out[start..].find(&close) {
                Some(at) => start + at + close.len(),
                None => return,
            }
        };
        match self.below(3) {
            0 => out.replace_range(start..end, ""),
            1 => {
                let copy = out[start..end].to_string();
                out.insert_str(end, &copy);
            }
            _ => {
                let edge = self.pick(EDGES);
                out.replace_range(start..end, edge);
            }
        }
    }

    fn bytes(&mut self, out: &mut String) {
        let a = self.boundary(out);
        let b = self.boundary(out);
        let (lo, hi) = (a.min(b), a.max(b));
        match self.below(3) {
            0 => out.replace_range(lo..hi, ""),
            1 => {
                let span = out[lo..hi].to_string();
                out.insert_str(hi, &span);
            }
            _ => {
                let edge = self.pick(EDGES);
                out.insert_str(lo, edge);
            }
        }
    }
}

/// Attribute values and texts that validation has to turn away, or that
/// are valid but unusual.
const VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "4294967296",
    "99999999999999999999999",
    "1e3",
    " 1",
    "../x",
    "/",
    ".hidden",
    "x y",
    "é",
    "\u{10ffff}",
    "&amp;",
    "&#x110000;",
    "yes",
    "no",
    "on",
    "file",
    "block",
    "network",
    "qcow2",
    "raw",
    "vmdk",
    "push",
    "pull",
    "full",
    "incremental",
    "internal",
    "external",
    "unix",
    "tcp",
    "vda",
    "vdz",
    "hda",
    "/dev/null",
    "/tmp/x",
    "relative/path",
    "KiB",
    "TiB",
];

/// Markup that parsers trip over.
const EDGES: &[&str] = &[
    "<",
    ">",
    "'",
    "\"",
    "&",
    "&#0;",
    "]]>",
    "<!--",
    "<![CDATA[x]]>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x [<!ENTITY a 'aaaa'>]>",
    "&a;",
    "\u{0}",
    "<disk/>",
    "</disks>",
    "<disks>",
    "<domain type='qemu'/>",
    "<x:y xmlns:x='urn:x'/>",
];

fn documents(area: &str) -> Vec<(PathBuf, String)> {
    let mut docs = Vec::new();
    for sub in ["in", "err"] {
        let dir = fixtures().join(area).join(sub);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "xml") {
                if let Ok(text) = fs::read_to_string(&path) {
                    docs.push((path, text));
                }
            }
        }
    }
    docs.sort();
    assert!(!docs.is_empty(), "no documents in fixtures/{area}");
    docs
}

/// Runs `check` on `ROUNDS` mutations of every document of `area`, naming
/// the document and round in the panic message of a failure. `check` says
/// whether the document got past the parser; enough must, or the steps
/// after it go untested.
fn each_mutation(area: &str, seed: u64, check: impl Fn(&str) -> bool) {
    const ROUNDS: usize = 60;
    let offset = std::env::var("MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut noise = Noise(seed ^ offset.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (mut tried, mut parsed) = (0, 0);
    for (path, text) in documents(area) {
        for round in 0..ROUNDS {
            let doc = noise.mutate(&text);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&doc)));
            match caught {
                Ok(ok) => parsed += usize::from(ok),
                Err(_) => panic!(
                    "{} round {round} panicked on:\n{doc}",
                    Path::new(&path).display()
                ),
            }
            tried += 1;
        }
    }
    assert!(
        parsed * 20 > tried,
        "{area}: only {parsed} of {tried} parsed"
    );
}

#[test]
fn mutated_domains_never_panic() {
    each_mutation("domain", 1, |doc| {
        let Ok(def) = DomainDef::parse(doc) else {
            return false;
        };
        for mode in [FormatMode::Inactive, FormatMode::Live { id: 7 }] {
            let _ = DomainDef::parse(&def.format(mode, Secrets::Shown));
        }
        true
    });
}

#[test]
fn mutated_backups_never_panic() {
    let running = domain("backup", "domain.xml");
    each_mutation("backup", 2, |doc| {
        let Ok(parsed) = BackupDef::parse(doc) else {
            return false;
        };
        if let Ok(def) = parsed.align(&running, "1700000000") {
            let _ = BackupDef::parse(&def.format());
        }
        true
    });
}

#[test]
fn mutated_checkpoints_never_panic() {
    let running = domain("checkpoint", "domain.xml");
    each_mutation("checkpoint", 3, |doc| {
        let mut any = false;
        for redefine in [false, true] {
            let Ok(parsed) = CheckpointDef::parse(doc, CpParse { redefine }, NOW) else {
                continue;
            };
            any = true;
            let def = if redefine {
                parsed.prepare_redefine(&running)
            } else {
                parsed.prepare_create(&running)
            };
            if let Ok(def) = def {
                let text = def.format(&CheckpointFormat::default());
                let _ = CheckpointDef::parse(&text, CpParse { redefine: true }, NOW);
            }
        }
        any
    });
}

#[test]
fn mutated_snapshots_never_panic() {
    let running = domain("snapshot", "domain.xml");
    let regular = |_: &str| true;
    each_mutation("snapshot", 4, |doc| {
        let mut any = false;
        for (redefine, offline) in [(false, false), (false, true), (true, false)] {
            let flags = SnapParse {
                redefine,
                offline,
                ..SnapParse::default()
            };
            let Ok(parsed) = SnapshotDef::parse(doc, flags, NOW) else {
                continue;
            };
            any = true;
            let def = if redefine {
                parsed
                    .prepare_redefine(running.uuid(), None, false, &regular)
                    .ok()
            } else {
                let ctx = CreateContext {
                    domain: &running,
                    inactive_domain: None,
                    state: SnapshotState::Running,
                    active: !offline,
                    disk_only: offline,
                    is_regular_file: &regular,
                };
                parsed.prepare_create(&ctx).ok().map(|p| p.def)
            };
            if let Some(def) = def {
                let text = def.format(&SnapshotFormat::default());
                let again = SnapParse {
                    redefine: true,
                    ..SnapParse::default()
                };
                let _ = SnapshotDef::parse(&text, again, NOW);
            }
        }
        any
    });
}
