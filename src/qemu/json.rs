//! JSON text the way libvirt writes it.
//!
//! libvirt 9.0 keeps JSON as an ordered tree (virjson.c) and writes it with
//! yajl: no whitespace, keys in their original order, numbers exactly as they
//! were read, strings re-escaped by yajl's rules. Two places make that
//! visible to a user: the reply `virsh qemu-monitor-command` prints, and the
//! `-blockdev`/`-device` arguments on QEMU's command line. `serde_json::Value`
//! sorts keys and normalises numbers, so we re-encode the text instead of a
//! tree: [`compact`] for replies and [`JsonObject`] for building arguments.

use std::fmt::Write as _;

use super::error::QemuError;

/// Re-encodes a JSON text compactly, as libvirt's virJSONValueToString(v,
/// false) would after parsing it: whitespace between tokens goes, key order
/// and number spelling stay, strings are re-escaped by yajl's rules (so
/// QEMU's `\u00e9` becomes a raw `é`).
///
/// The input must already be known to be valid JSON (the caller parsed it);
/// an unterminated string is still reported rather than mis-copied.
pub fn compact(text: &str) -> Result<String, QemuError> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let end = string_end(bytes, i).ok_or_else(|| {
                    QemuError::Protocol("unterminated string in JSON text".to_owned())
                })?;
                let token = &text[i..=end];
                match serde_json::from_str::<String>(token) {
                    Ok(s) => escape_into(&mut out, &s),
                    // A lone surrogate escape cannot become a Rust string;
                    // keep QEMU's spelling rather than fail the whole reply.
                    Err(_) => out.push_str(token),
                }
                i = end + 1;
            }
            _ => {
                // Outside strings valid JSON is ASCII, but copy whole chars
                // so that a stray byte cannot split a UTF-8 sequence.
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

/// Index of the closing quote of the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// Appends `s` as a JSON string literal, escaped as yajl's
/// yajl_string_encode does with libvirt's settings: the short escapes for
/// `"`, `\`, `\b`, `\f`, `\n`, `\r`, `\t`; `\u00XX` (upper-case hex) for the
/// other control characters; everything else, `/` and non-ASCII included,
/// verbatim.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object written member by member, in the order given, compact, as
/// libvirt writes `-blockdev` and `-device` arguments.
#[derive(Debug, Default)]
pub struct JsonObject {
    text: String,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject::default()
    }

    fn key(&mut self, key: &str) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        escape_into(&mut self.text, key);
        self.text.push(':');
    }

    /// Adds a string member.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        escape_into(&mut self.text, value);
        self
    }

    /// Adds a boolean member.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds an unsigned number member.
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.text, "{value}");
        self
    }

    /// Adds a `null` member.
    pub fn null(mut self, key: &str) -> Self {
        self.key(key);
        self.text.push_str("null");
        self
    }

    /// The finished text.
    pub fn finish(mut self) -> String {
        if self.text.is_empty() {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_order_and_numbers() {
        let qemu = r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": "libvirt-421"}"#;
        assert_eq!(
            compact(qemu).unwrap(),
            r#"{"return":{"status":"running","singlestep":false,"running":true},"id":"libvirt-421"}"#
        );
        assert_eq!(
            compact("[1.50, -0, 1e3, 18446744073709551616]").unwrap(),
            "[1.50,-0,1e3,18446744073709551616]"
        );
    }

    #[test]
    fn compact_reescapes_strings_like_yajl() {
        let qemu = r#"{"return": "a\r\nb \u00e9 \/ \u0001 \" \\ \t"}"#;
        assert_eq!(
            compact(qemu).unwrap(),
            "{\"return\":\"a\\r\\nb \u{e9} / \\u0001 \\\" \\\\ \\t\"}"
        );
        // Whitespace inside strings is content, not layout.
        assert_eq!(compact(r#"{ "a b" : " c " }"#).unwrap(), r#"{"a b":" c "}"#);
        assert!(compact(r#"{"a": "unterminated}"#).is_err());
    }

    #[test]
    fn object_builder_writes_in_order() {
        let text = JsonObject::new()
            .str("node-name", "libvirt-2-format")
            .bool("read-only", false)
            .str("driver", "qcow2")
            .null("backing")
            .uint("bootindex", 1)
            .finish();
        assert_eq!(
            text,
            r#"{"node-name":"libvirt-2-format","read-only":false,"driver":"qcow2","backing":null,"bootindex":1}"#
        );
        assert_eq!(JsonObject::new().finish(), "{}");
        assert_eq!(
            JsonObject::new().str("filename", "/tmp/a\"b").finish(),
            r#"{"filename":"/tmp/a\"b"}"#
        );
    }
}
