//! Test support: QMP transcripts (fixtures/qmp/README.md) played back to
//! a client, and recorded from a real QEMU through a proxy.
//!
//! Paths under a test's temporary directory are written as `@DIR@`, so a
//! transcript recorded in one directory replays in another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// Stands for the test directory in a transcript.
pub const DIR: &str = "@DIR@";

/// The path of fixtures/qmp/NAME.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/qmp")
        .join(name)
}

/// Plays QEMU's side of fixtures/qmp/NAME with `@DIR@` read as `dir`:
/// sends the `S:` lines, checks that the client sends the `C:` lines,
/// makes the unix sockets of `BIND:` lines.
pub async fn play(stream: UnixStream, name: &str, dir: &Path) -> Result<(), String> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = dir.to_str().ok_or("test directory is not UTF-8")?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let line = line.replace(DIR, dir);
        if let Some(sent) = line.strip_prefix("S: ") {
            write
                .write_all(format!("{sent}\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        } else if let Some(expected) = line.strip_prefix("C: ") {
            let expected: Value =
                serde_json::from_str(expected).map_err(|e| format!("{line}: {e}"))?;
            let got = lines.next_line().await.map_err(|e| e.to_string())?;
            let got = got.ok_or_else(|| format!("client hung up, expected {expected}"))?;
            let parsed: Value = serde_json::from_str(&got).map_err(|e| e.to_string())?;
            if parsed != expected {
                return Err(format!("expected {expected}, got {got}"));
            }
        } else if let Some(path) = line.strip_prefix("BIND: ") {
            // What QEMU leaves on the host: a unix socket it listens on
            // (the NBD server's), which the client then finds there.
            std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("{line}: {e}"))?;
        } else if line == "EOF" {
            return Ok(());
        } else {
            return Err(format!("bad line {line:?}"));
        }
    }
    Ok(())
}

/// A proxy between our client and a real QEMU monitor that keeps every
/// line in transcript form.
#[derive(Clone, Default)]
pub struct Recording {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    /// Connects `qemu` (QEMU's monitor socket) to a new stream for the
    /// client, recording both directions; `dir` becomes `@DIR@`.
    pub fn proxy(&self, qemu: UnixStream, dir: &Path) -> UnixStream {
        let (client, ours) = UnixStream::pair().expect("socketpair");
        let dir = dir.to_str().expect("UTF-8 test directory").to_owned();
        let (qemu_read, mut qemu_write) = qemu.into_split();
        let (client_read, mut client_write) = ours.into_split();
        let (to_client, to_qemu) = (self.clone(), self.clone());
        let dir2 = dir.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(qemu_read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                to_client.push(format!("S: {}", line.replace(&dir, DIR)));
                if client_write
                    .write_all(format!("{line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(client_read).lines();
            // Logged before QEMU gets it: whatever QEMU sent before this
            // line is above it, as replay needs.
            while let Ok(Some(line)) = lines.next_line().await {
                to_qemu.push(format!("C: {}", line.replace(&dir2, DIR)));
                if qemu_write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        client
    }

    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Writes the transcript to fixtures/qmp/NAME under `header` (lines
    /// become comments), if VIRTBACKUPD_RECORD_QMP is set; the recordings
    /// in the tree were made that way.
    pub fn save_if_asked(&self, name: &str, header: &str) {
        if std::env::var_os("VIRTBACKUPD_RECORD_QMP").is_none() {
            return;
        }
        let mut text = String::new();
        for line in header.lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
        for line in self.lines.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(fixture(name), text).expect("write transcript");
    }
}
