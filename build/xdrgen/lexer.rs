//! Splits a .x file into tokens. Comments are kept as tokens because the
//! procedure enums carry their annotations in trailing comments; `%` lines
//! (rpcgen pass-through) are dropped.

use super::GenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Ident(String),
    /// Unsigned magnitude; a leading `-` is a separate `Punct`.
    Number(u64),
    Punct(char),
    Comment(String),
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

const PUNCT: &str = "{}()[]<>;,=:*-";

pub fn tokenize(file: &str, src: &str) -> Result<Vec<Token>, GenError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut line = 1;
    let mut at_line_start = true;
    let err = |line: usize, msg: String| GenError::at(file, line, msg);

    while let Some(&c) = chars.get(i) {
        if c == '\n' {
            line += 1;
            i += 1;
            at_line_start = true;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if at_line_start && (c == '%' || c == '#') {
            if c == '#' {
                // We never run cpp; a directive would silently mean nothing.
                return Err(err(
                    line,
                    "preprocessor directives are not supported".into(),
                ));
            }
            while chars.get(i).is_some_and(|&c| c != '\n') {
                i += 1;
            }
            continue;
        }
        at_line_start = false;

        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start_line = line;
            let mut j = i + 2;
            loop {
                match chars.get(j) {
                    None => return Err(err(start_line, "unterminated comment".into())),
                    Some('*') if chars.get(j + 1) == Some(&'/') => break,
                    Some('\n') => line += 1,
                    Some(_) => {}
                }
                j += 1;
            }
            let text: String = chars.get(i + 2..j).unwrap_or_default().iter().collect();
            out.push(Token {
                tok: Tok::Comment(text.trim().to_string()),
                line: start_line,
            });
            i = j + 2;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            let start = i + 2;
            while chars.get(i).is_some_and(|&c| c != '\n') {
                i += 1;
            }
            let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
            out.push(Token {
                tok: Tok::Comment(text.trim().to_string()),
                line,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '_')
            {
                i += 1;
            }
            let word: String = chars.get(start..i).unwrap_or_default().iter().collect();
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while chars.get(i).is_some_and(|&c| c.is_ascii_alphanumeric()) {
                i += 1;
            }
            let word: String = chars.get(start..i).unwrap_or_default().iter().collect();
            let value =
                parse_number(&word).ok_or_else(|| err(line, format!("bad number `{word}`")))?;
            out.push(Token {
                tok: Tok::Number(value),
                line,
            });
            continue;
        }
        if PUNCT.contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
            continue;
        }
        return Err(err(line, format!("unexpected character `{c}`")));
    }
    Ok(out)
}

fn parse_number(word: &str) -> Option<u64> {
    if let Some(hex) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if word.len() > 1 && word.starts_with('0') {
        u64::from_str_radix(word.get(1..)?, 8).ok()
    } else {
        word.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize("t.x", src)
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn numbers_in_three_bases() {
        assert_eq!(
            toks("10 0x1F 017"),
            vec![Tok::Number(10), Tok::Number(31), Tok::Number(15)]
        );
    }

    #[test]
    fn comments_are_tokens_and_percent_lines_vanish() {
        let got = toks("%#include <x>\nconst A = 1; /* note */\n// tail\n");
        assert_eq!(
            got,
            vec![
                Tok::Ident("const".into()),
                Tok::Ident("A".into()),
                Tok::Punct('='),
                Tok::Number(1),
                Tok::Punct(';'),
                Tok::Comment("note".into()),
                Tok::Comment("tail".into()),
            ]
        );
    }

    #[test]
    fn line_numbers_follow_multiline_comments() {
        let t = tokenize("t.x", "/* a\nb */\nx").unwrap();
        assert_eq!(t.last().map(|t| t.line), Some(3));
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = tokenize("t.x", "const\n@").unwrap_err();
        assert_eq!(e.to_string(), "t.x:2: unexpected character `@`");
        assert!(tokenize("t.x", "#include <x>").is_err());
        assert!(tokenize("t.x", "/* open").is_err());
        assert!(tokenize("t.x", "0x").is_err());
    }
}
