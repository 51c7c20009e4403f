//! The per-domain QEMU log: a header like libvirt's before each start, and
//! the excerpt of QEMU's own words that a failed start reports.

use std::ffi::OsString;
use std::io::SeekFrom;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// libvirt reports at most this many bytes of log (qemuProcessReportLogError).
const EXCERPT_MAX: usize = 1024;

/// How much of the log's end we read to build the excerpt.
const READ_MAX: u64 = 64 * 1024;

/// The lines written to the log before QEMU starts: a time stamp and the
/// command line as a shell would take it, one option per line.
pub(crate) fn header(
    now: SystemTime,
    env: &[(OsString, OsString)],
    emulator: &Path,
    argv: &[OsString],
) -> Vec<u8> {
    let mut out = format!(
        "{}: starting up virtbackupd version: {}\n",
        utc_timestamp(now),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    for (name, value) in env {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&shell_quote(value.as_bytes()));
        out.extend_from_slice(b" \\\n");
    }
    out.extend_from_slice(&shell_quote(emulator.as_os_str().as_bytes()));
    for arg in argv {
        let bytes = arg.as_bytes();
        // An option starts a new line; its value stays on the same one.
        out.extend_from_slice(if bytes.starts_with(b"-") {
            b" \\\n"
        } else {
            b" "
        });
        out.extend_from_slice(&shell_quote(bytes));
    }
    out.push(b'\n');
    out
}

fn shell_quote(arg: &[u8]) -> Vec<u8> {
    let safe = |b: &u8| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(b);
    if !arg.is_empty() && arg.iter().all(safe) {
        return arg.to_vec();
    }
    let mut out = vec![b'\''];
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// "2026-11-22 04:44:51.780+0000", libvirt's log time stamp format.
pub(crate) fn utc_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// What QEMU wrote to the log since byte `from`, trimmed as libvirt's
/// qemuProcessReadLog trims it. Empty if the log cannot be read.
pub(crate) async fn excerpt(log: &Path, from: u64) -> String {
    let Ok(mut file) = tokio::fs::File::open(log).await else {
        return String::new();
    };
    let len = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return String::new(),
    };
    let start = from.max(len.saturating_sub(READ_MAX));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).await.is_err()
        || file.take(READ_MAX).read_to_end(&mut bytes).await.is_err()
    {
        return String::new();
    }
    trim(&bytes)
}

fn trim(bytes: &[u8]) -> String {
    let mut text: Vec<u8> = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        // libvirt drops these chardev notices from what it reports.
        if !contains(line, b"char device redirected to") {
            text.extend_from_slice(line);
        }
    }
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    if text.len() > EXCERPT_MAX {
        let mut skip = text.len() - EXCERPT_MAX;
        // Start at a line boundary if one follows and leaves something.
        if text[skip - 1] != b'\n' {
            if let Some(eol) = text[skip..].iter().position(|&b| b == b'\n') {
                if skip + eol + 1 < text.len() {
                    skip += eol + 1;
                }
            }
        }
        text.drain(..skip);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_322_691_780);
        assert_eq!(utc_timestamp(t), "2026-11-22 04:44:51.780+0000");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000+0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29 00:00:00.000+0000");
    }

    #[test]
    fn header_looks_like_libvirts() {
        let env = [("LC_ALL".into(), "C".into())];
        let argv: Vec<OsString> = [
            "-name",
            "guest=vm1",
            "-S",
            "-object",
            r#"{"a":1}"#,
            "-x",
            "it's",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let text = header(UNIX_EPOCH, &env, Path::new("/usr/bin/qemu"), &argv);
        let text = String::from_utf8(text).unwrap();
        let body = text.split_once('\n').unwrap().1;
        assert_eq!(
            body,
            "LC_ALL=C \\\n/usr/bin/qemu \\\n-name guest=vm1 \\\n-S \\\n-object '{\"a\":1}' \\\n-x 'it'\\''s'\n"
        );
    }

    #[test]
    fn excerpt_is_trimmed_like_libvirt() {
        assert_eq!(
            trim(b"a\nchar device redirected to /dev/pts/1\nb\n"),
            "a\nb"
        );
        let long: Vec<u8> = (0..200)
            .flat_map(|i| format!("line {i:04}\n").into_bytes())
            .collect();
        let out = trim(&long);
        assert!(out.len() <= EXCERPT_MAX);
        assert!(out.starts_with("line "), "{out:?}");
        assert!(out.ends_with("line 0199"));
    }
}
