//! The syntax of libvirtd.conf, which our configuration file shares:
//! `key = value` a line, strings in double quotes, whole numbers bare,
//! lists of strings in `[ ]` (which may span lines), `#` comments.
//!
//! This module knows the syntax only; which keys exist and what their
//! values mean is [`super::options`]'s business.

/// A value as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<String>),
}

/// One `key = value`, with the line it starts on (from 1) for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub line: usize,
}

/// A syntax error: the line (from 1) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            reason: reason.into(),
        })
    }

    /// Spaces, tabs and comments on this line; with `newlines`, blank and
    /// comment lines too.
    fn skip_blank(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => {
                    self.bump();
                }
                b'\n' if newlines => {
                    self.bump();
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
    }

    fn key(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.bump();
        }
        if start == self.pos {
            return self.error("expected a key name");
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.bump(); // the opening quote
        let mut bytes = Vec::new();
        loop {
            // Checked before taking it, so the error names this line.
            let c = match self.peek() {
                Some(b'\n') | None => return self.error("unterminated string"),
                Some(c) => c,
            };
            self.bump();
            match c {
                b'"' => break,
                b'\\' => match self.bump() {
                    Some(c @ (b'"' | b'\\')) => bytes.push(c),
                    _ => return self.error("unknown escape in string"),
                },
                c => bytes.push(c),
            }
        }
        String::from_utf8(bytes).or_else(|_| self.error("string is not UTF-8"))
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'[') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip_blank(true);
                    match self.peek() {
                        Some(b']') => {
                            self.bump();
                            break;
                        }
                        Some(b'"') => items.push(self.string()?),
                        _ => return self.error("expected a string or ']' in list"),
                    }
                    self.skip_blank(true);
                    match self.peek() {
                        Some(b',') => {
                            self.bump();
                        }
                        Some(b']') => {}
                        _ => return self.error("expected ',' or ']' in list"),
                    }
                }
                Ok(Value::List(items))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.bump();
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
                let digits = String::from_utf8_lossy(&self.text[start..self.pos]);
                match digits.parse() {
                    Ok(n) => Ok(Value::Int(n)),
                    Err(_) => self.error(format!("bad number {digits}")),
                }
            }
            _ => self.error("expected a value: a \"string\", a number or a [list]"),
        }
    }
}

/// Every entry of the file, in order, or the first syntax error.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut cur = Cursor {
        text: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut entries = Vec::new();
    loop {
        cur.skip_blank(true);
        if cur.peek().is_none() {
            return Ok(entries);
        }
        let line = cur.line;
        let key = cur.key()?;
        cur.skip_blank(false);
        if cur.bump() != Some(b'=') {
            return cur.error(format!("expected '=' after '{key}'"));
        }
        cur.skip_blank(false);
        let value = cur.value()?;
        cur.skip_blank(false);
        match cur.peek() {
            None | Some(b'\n') => {}
            Some(_) => return cur.error("unexpected text after the value"),
        }
        entries.push(Entry { key, value, line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libvirtd_conf_syntax() {
        let text = "# comment\n\nlisten_tls = \"0.0.0.0\"  # trailing\nkeepalive_count=7\n\
                    tls_allowed_dn_list = [\"C=GB,CN=*\",\n  # between\n  \"CN=a\\\"b\" ]\nempty = []\n";
        let entries = parse(text).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    key: "listen_tls".into(),
                    value: Value::Str("0.0.0.0".into()),
                    line: 3
                },
                Entry {
                    key: "keepalive_count".into(),
                    value: Value::Int(7),
                    line: 4
                },
                Entry {
                    key: "tls_allowed_dn_list".into(),
                    value: Value::List(vec!["C=GB,CN=*".into(), "CN=a\"b".into()]),
                    line: 5
                },
                Entry {
                    key: "empty".into(),
                    value: Value::List(vec![]),
                    line: 8
                },
            ]
        );
    }

    #[test]
    fn names_the_line_of_a_mistake() {
        let err = |text: &str| parse(text).unwrap_err();
        assert_eq!(err("a = 1\nb 2\n").line, 2);
        assert_eq!(err("a = \"x\n").reason, "unterminated string");
        assert_eq!(err("a = \"x\n").line, 1);
        assert_eq!(err("\n\na = yes\n").line, 3);
        assert_eq!(err("a = 1 2\n").reason, "unexpected text after the value");
        assert_eq!(err("a = [\"x\"\n\"y\"]\n").line, 2);
        assert_eq!(err("= 1\n").reason, "expected a key name");
    }
}
