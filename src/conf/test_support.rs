//! What the fixture tests of every conf module share: where the fixtures
//! are, reading them, and the message libvirt would print for an error.

use std::fs;
use std::path::{Path, PathBuf};

use crate::conf::domain::DomainDef;
use crate::conf::error::{ConfError, ConfErrorKind};

/// The clock the fixtures run at.
pub const NOW: i64 = 1_700_000_000;

/// The repository's `fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A domain definition from `fixtures/<area>/<file>`.
pub fn domain(area: &str, file: &str) -> DomainDef {
    let path = fixtures().join(area).join(file);
    DomainDef::parse(&read(&path)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The message libvirt would send: virerror.c's per-code format applied to
/// the detail. (The rpc layer owns the real table; this copy lets the
/// tests compare with what virsh printed.)
pub fn libvirt_message(e: &ConfError) -> String {
    let (bare, with) = match e.kind() {
        ConfErrorKind::InternalError => ("internal error", "internal error: %s"),
        ConfErrorKind::InvalidArg => ("invalid argument", "invalid argument: %s"),
        ConfErrorKind::XmlError => (
            "XML description is invalid or not well formed",
            "XML error: %s",
        ),
        ConfErrorKind::XmlDetail => ("parser error", "%s"),
        ConfErrorKind::ConfigUnsupported => {
            ("unsupported configuration", "unsupported configuration: %s")
        }
        ConfErrorKind::Overflow => ("numerical overflow", "numerical overflow: %s"),
        ConfErrorKind::OperationUnsupported => {
            ("Operation not supported", "Operation not supported: %s")
        }
        ConfErrorKind::XmlInvalidSchema => (
            "XML document failed to validate against schema",
            "XML document failed to validate against schema: %s",
        ),
        ConfErrorKind::NoDomainCheckpoint => (
            "Domain checkpoint not found",
            "Domain checkpoint not found: %s",
        ),
        ConfErrorKind::CheckpointInconsistent => {
            ("checkpoint inconsistent", "checkpoint inconsistent: %s")
        }
        other => panic!("unexpected kind {other:?}"),
    };
    match e.detail() {
        Some(d) => with.replacen("%s", d, 1),
        None => bare.to_owned(),
    }
}

/// An error as the fixtures' `.err` sidecars hold it.
pub fn describe(e: &ConfError) -> String {
    format!(
        "code: {}\ndomain: {}\nmessage: {}\n",
        e.kind().code(),
        e.domain().code(),
        libvirt_message(e)
    )
}

/// The creation time a capture of a create tells (libvirtd named the
/// moment after its clock: `ok: 1795325812`), else `otherwise`.
pub fn clock(stdout: &str, otherwise: i64) -> i64 {
    stdout
        .strip_prefix("ok: ")
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or(otherwise)
}

/// How our outcome of a captured create differs from libvirtd's, if it
/// does. libvirtd printed `ok: NAME` or its error triple ("code: 92
/// domain: 5 level: 2\nmessage: ..."); `got` is the name we gave the
/// moment, or our error.
pub fn verdict(stdout: &str, got: Result<&str, &ConfError>) -> Option<String> {
    match (stdout.strip_prefix("ok: "), got) {
        (Some(ok_name), Ok(name)) if name == ok_name.trim_end() => None,
        (Some(ok_name), Ok(name)) => Some(format!("named {name} not {ok_name}")),
        (Some(_), Err(e)) => Some(format!("libvirtd accepted it, we say {}", describe(e))),
        (None, Ok(_)) => Some("libvirtd refused it, we accept it".to_owned()),
        (None, Err(e)) => {
            let (head, message) = stdout.split_once("\nmessage: ").expect("triple");
            let fields: Vec<&str> = head.split(' ').collect();
            let want = format!(
                "code: {}\ndomain: {}\nmessage: {message}",
                fields[1], fields[3]
            );
            let got = describe(e);
            (got != want).then(|| format!("want\n{want}got\n{got}"))
        }
    }
}

/// libvirtd's metadata file without its header (a comment, an empty
/// line): the dumpxml text with SECURE.
pub fn strip_header(file: &str) -> &str {
    let (_, rest) = file.split_once("-->\n\n").expect("libvirtd's header");
    rest
}

/// The `<creationTime>` a dumpxml capture shows.
pub fn creation_time(xml: &str) -> i64 {
    xml.split("<creationTime>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .and_then(|t| t.parse().ok())
        .expect("creation time")
}

/// One reference capture: the command line and what it printed.
pub struct Capture {
    pub command: String,
    pub stdout: String,
}

/// Reads a capture file (`$ command`, `--- stdout ---`, ...).
/// The names of the captures in `fixtures/reference/<area>/` (without
/// `.txt`) that `wanted` picks, sorted.
pub fn capture_names(area: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let dir = fixtures().join("reference").join(area);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("capture dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".txt").map(str::to_owned))
        .filter(|n| wanted(n))
        .collect();
    names.sort();
    names
}

pub fn capture_file(path: &Path) -> Capture {
    let text = read(path);
    let (command, rest) = text.split_once('\n').expect("command line");
    let rest = rest
        .strip_prefix("--- stdout ---\n")
        .expect("stdout marker");
    let (stdout, _) = rest.split_once("--- stderr ---\n").expect("stderr marker");
    Capture {
        command: command.to_owned(),
        stdout: stdout.to_owned(),
    }
}

/// Capture `name` of `fixtures/reference/<area>/`.
pub fn capture(area: &str, name: &str) -> Capture {
    capture_file(&fixtures().join(format!("reference/{area}/{name}.txt")))
}

/// The document of a dumpxml capture (virsh adds a newline after it).
pub fn dumpxml(area: &str, name: &str) -> String {
    let out = capture(area, name).stdout;
    out.strip_suffix('\n').unwrap_or(&out).to_owned()
}
