//! Recursive-descent parser for the XDR subset we use (RFC 4506 section 6
//! minus `quadruple`, inline type definitions and `program` blocks).

use super::ast::{Decl, DefKind, Definition, EnumItem, Shape, TypeSpec, Union, UnionArm, Value};
use super::lexer::{tokenize, Tok, Token};
use super::GenError;

pub fn parse(file: &str, src: &str) -> Result<Vec<Definition>, GenError> {
    let tokens = tokenize(file, src)?;
    let mut p = Parser {
        file,
        tokens,
        pos: 0,
        last_line: 1,
    };
    let mut defs = Vec::new();
    while p.peek().is_some() {
        defs.push(p.definition()?);
    }
    Ok(defs)
}

struct Parser<'a> {
    file: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    last_line: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> GenError {
        let line = self.peek().map_or(self.last_line, |t| t.line);
        GenError::at(self.file, line, msg.into())
    }

    fn skip_comments(&mut self) {
        while matches!(
            self.tokens.get(self.pos),
            Some(Token {
                tok: Tok::Comment(_),
                ..
            })
        ) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens
            .get(self.pos..)?
            .iter()
            .find(|t| !matches!(t.tok, Tok::Comment(_)))
    }

    fn next(&mut self) -> Option<Token> {
        self.skip_comments();
        let t = self.tokens.get(self.pos).cloned()?;
        self.pos += 1;
        self.last_line = t.line;
        Some(t)
    }

    fn describe(t: Option<&Token>) -> String {
        match t.map(|t| &t.tok) {
            None => "end of file".into(),
            Some(Tok::Ident(s)) => format!("`{s}`"),
            Some(Tok::Number(n)) => format!("`{n}`"),
            Some(Tok::Punct(c)) => format!("`{c}`"),
            Some(Tok::Comment(_)) => "a comment".into(),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Ident(s), .. }) if s == w)
    }

    fn punct(&mut self, c: char) -> Result<(), GenError> {
        if self.is_punct(c) {
            self.next();
            Ok(())
        } else {
            Err(self.err(format!(
                "expected `{c}`, found {}",
                Self::describe(self.peek())
            )))
        }
    }

    fn word(&mut self, w: &str) -> Result<(), GenError> {
        if self.is_word(w) {
            self.next();
            Ok(())
        } else {
            Err(self.err(format!(
                "expected `{w}`, found {}",
                Self::describe(self.peek())
            )))
        }
    }

    fn ident(&mut self) -> Result<String, GenError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Ident(s)) => {
                self.next();
                Ok(s)
            }
            _ => Err(self.err(format!(
                "expected a name, found {}",
                Self::describe(self.peek())
            ))),
        }
    }

    /// A comment that starts on the line of the last consumed token.
    fn trailing_comment(&mut self) -> Option<String> {
        match self.tokens.get(self.pos) {
            Some(Token {
                tok: Tok::Comment(text),
                line,
            }) if *line == self.last_line => {
                let text = text.clone();
                self.pos += 1;
                Some(text)
            }
            _ => None,
        }
    }

    fn value(&mut self) -> Result<Value, GenError> {
        let negative = self.is_punct('-');
        if negative {
            self.next();
        }
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Number(n)) => {
                self.next();
                let v =
                    i64::try_from(n).map_err(|_| self.err(format!("number {n} is too large")))?;
                Ok(Value::Lit(if negative { -v } else { v }))
            }
            Some(Tok::Ident(s)) if !negative => {
                self.next();
                Ok(Value::Name(s))
            }
            _ => Err(self.err(format!(
                "expected a value, found {}",
                Self::describe(self.peek())
            ))),
        }
    }

    fn definition(&mut self) -> Result<Definition, GenError> {
        let line = self.peek().map_or(self.last_line, |t| t.line);
        let keyword = self.ident()?;
        let (name, kind) = match keyword.as_str() {
            "const" => {
                let name = self.ident()?;
                self.punct('=')?;
                (name, DefKind::Const(self.value()?))
            }
            "typedef" => {
                let decl = self.decl()?.ok_or_else(|| self.err("typedef of void"))?;
                (decl.name.clone(), DefKind::Typedef(decl))
            }
            "enum" => {
                let name = self.ident()?;
                (name, DefKind::Enum(self.enum_body()?))
            }
            "struct" => {
                let name = self.ident()?;
                (name, DefKind::Struct(self.struct_body()?))
            }
            "union" => {
                let name = self.ident()?;
                (name, DefKind::Union(self.union_body()?))
            }
            other => {
                return Err(GenError::at(
                    self.file,
                    line,
                    format!("expected const, typedef, enum, struct or union, found `{other}`"),
                ))
            }
        };
        self.punct(';')?;
        Ok(Definition {
            name,
            kind,
            file: self.file.to_string(),
            line,
        })
    }

    fn enum_body(&mut self) -> Result<Vec<EnumItem>, GenError> {
        self.punct('{')?;
        let mut items = Vec::new();
        loop {
            let name = self.ident()?;
            let line = self.last_line;
            self.punct('=')?;
            let value = self.value()?;
            let more = self.is_punct(',');
            if more {
                self.next();
            }
            let note = self.trailing_comment();
            items.push(EnumItem {
                name,
                value,
                note,
                line,
            });
            if !more {
                break;
            }
        }
        self.punct('}')?;
        Ok(items)
    }

    fn struct_body(&mut self) -> Result<Vec<Decl>, GenError> {
        self.punct('{')?;
        let mut fields = Vec::new();
        while !self.is_punct('}') {
            let decl = self.decl()?.ok_or_else(|| self.err("void struct member"))?;
            self.punct(';')?;
            fields.push(decl);
        }
        self.punct('}')?;
        if fields.is_empty() {
            return Err(self.err("empty struct"));
        }
        Ok(fields)
    }

    fn union_body(&mut self) -> Result<Union, GenError> {
        self.word("switch")?;
        self.punct('(')?;
        let discriminant = self.decl()?.ok_or_else(|| self.err("void discriminant"))?;
        self.punct(')')?;
        self.punct('{')?;
        let mut arms = Vec::new();
        let mut default = None;
        while !self.is_punct('}') {
            if self.is_word("default") {
                self.next();
                self.punct(':')?;
                if default.is_some() {
                    return Err(self.err("second default arm"));
                }
                default = Some(self.decl()?);
                self.punct(';')?;
                continue;
            }
            let mut labels = Vec::new();
            while self.is_word("case") {
                self.next();
                labels.push(self.value()?);
                self.punct(':')?;
            }
            if labels.is_empty() {
                return Err(self.err(format!(
                    "expected `case` or `default`, found {}",
                    Self::describe(self.peek())
                )));
            }
            let decl = self.decl()?;
            self.punct(';')?;
            arms.push(UnionArm { labels, decl });
        }
        self.punct('}')?;
        Ok(Union {
            discriminant,
            arms,
            default,
        })
    }

    /// One declaration; `None` for `void`.
    fn decl(&mut self) -> Result<Option<Decl>, GenError> {
        let line = self.peek().map_or(self.last_line, |t| t.line);
        if self.is_word("void") {
            self.next();
            return Ok(None);
        }
        let ty = self.type_spec()?;
        let optional = self.is_punct('*');
        if optional {
            self.next();
        }
        let name = self.ident()?;
        let shape = if optional {
            Shape::Optional
        } else if self.is_punct('[') {
            self.next();
            let n = self.value()?;
            self.punct(']')?;
            Shape::Fixed(n)
        } else if self.is_punct('<') {
            self.next();
            let max = if self.is_punct('>') {
                None
            } else {
                Some(self.value()?)
            };
            self.punct('>')?;
            Shape::Var(max)
        } else {
            Shape::Plain
        };
        let ok = match (&ty, &shape) {
            (TypeSpec::Opaque, Shape::Fixed(_) | Shape::Var(_)) => true,
            (TypeSpec::Opaque, _) => false,
            (TypeSpec::String, shape) => matches!(shape, Shape::Var(_)),
            _ => true,
        };
        if !ok {
            return Err(GenError::at(
                self.file,
                line,
                format!("`{name}`: opaque needs [N] or <N>, string needs <N>"),
            ));
        }
        Ok(Some(Decl {
            name,
            ty,
            shape,
            line,
        }))
    }

    fn type_spec(&mut self) -> Result<TypeSpec, GenError> {
        let word = self.ident()?;
        let ty = match word.as_str() {
            "unsigned" => {
                let next = match self.peek().map(|t| &t.tok) {
                    Some(Tok::Ident(s)) => s.clone(),
                    _ => String::new(),
                };
                let ty = match next.as_str() {
                    "int" => TypeSpec::UInt,
                    "hyper" => TypeSpec::UHyper,
                    "char" => TypeSpec::UChar,
                    "short" => TypeSpec::UShort,
                    // A bare `unsigned` is an unsigned int.
                    _ => return Ok(TypeSpec::UInt),
                };
                self.next();
                ty
            }
            "int" => TypeSpec::Int,
            "hyper" => TypeSpec::Hyper,
            "float" => TypeSpec::Float,
            "double" => TypeSpec::Double,
            "bool" => TypeSpec::Bool,
            "char" => TypeSpec::Char,
            "short" => TypeSpec::Short,
            "opaque" => TypeSpec::Opaque,
            "string" => TypeSpec::String,
            "quadruple" => return Err(self.err("quadruple is not supported")),
            "struct" | "union" | "enum" => {
                if self.is_punct('{') {
                    return Err(
                        self.err("inline type definitions are not supported; name the type")
                    );
                }
                TypeSpec::Named(self.ident()?)
            }
            _ => TypeSpec::Named(word),
        };
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Definition {
        let mut defs = parse("t.x", src).unwrap();
        assert_eq!(defs.len(), 1);
        defs.remove(0)
    }

    #[test]
    fn const_forms() {
        assert_eq!(one("const A = 0x10;").kind, DefKind::Const(Value::Lit(16)));
        assert_eq!(one("const A = -3;").kind, DefKind::Const(Value::Lit(-3)));
        assert_eq!(
            one("const A = B;").kind,
            DefKind::Const(Value::Name("B".into()))
        );
    }

    #[test]
    fn struct_with_every_shape() {
        let d = one(
            "struct s { unsigned hyper a; opaque b[16]; opaque c<>; string d<MAX>;\n\
             foo *e; int f[3]; unsigned g; unsigned short h; struct other i; };",
        );
        let DefKind::Struct(fields) = d.kind else {
            panic!("not a struct")
        };
        let got: Vec<_> = fields
            .iter()
            .map(|f| (f.ty.clone(), f.shape.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (TypeSpec::UHyper, Shape::Plain),
                (TypeSpec::Opaque, Shape::Fixed(Value::Lit(16))),
                (TypeSpec::Opaque, Shape::Var(None)),
                (
                    TypeSpec::String,
                    Shape::Var(Some(Value::Name("MAX".into())))
                ),
                (TypeSpec::Named("foo".into()), Shape::Optional),
                (TypeSpec::Int, Shape::Fixed(Value::Lit(3))),
                (TypeSpec::UInt, Shape::Plain),
                (TypeSpec::UShort, Shape::Plain),
                (TypeSpec::Named("other".into()), Shape::Plain),
            ]
        );
    }

    #[test]
    fn enum_keeps_trailing_notes_only() {
        let d = one("enum e {\n /* before */\n A = 1, /* api:x read */\n B = 2 /* last */\n};");
        let DefKind::Enum(items) = d.kind else {
            panic!("not an enum")
        };
        assert_eq!(items[0].note.as_deref(), Some("api:x read"));
        assert_eq!(items[1].note.as_deref(), Some("last"));
        assert_eq!(items[1].line, 4);
    }

    #[test]
    fn union_arms_default_and_void() {
        let d = one(
            "union u switch (int t) { case 1: case C: int a; case 3: void; default: hyper z; };",
        );
        let DefKind::Union(u) = d.kind else {
            panic!("not a union")
        };
        assert_eq!(u.arms.len(), 2);
        assert_eq!(
            u.arms[0].labels,
            vec![Value::Lit(1), Value::Name("C".into())]
        );
        assert_eq!(u.arms[1].decl, None);
        assert!(matches!(
            u.default,
            Some(Some(Decl {
                ty: TypeSpec::Hyper,
                ..
            }))
        ));
    }

    #[test]
    fn bad_input_reports_line() {
        let e = parse("t.x", "struct s {\n int a\n};").unwrap_err();
        assert_eq!(e.to_string(), "t.x:3: expected `;`, found `}`");
        assert!(parse("t.x", "struct s { opaque x; };").is_err());
        assert!(parse("t.x", "struct s { string x[4]; };").is_err());
        assert!(parse("t.x", "struct s { };").is_err());
        assert!(parse("t.x", "struct s { struct { int a; } x; };").is_err());
        assert!(parse("t.x", "program P { };").is_err());
        assert!(parse("t.x", "union u switch (int t) { int a; };").is_err());
        assert!(parse("t.x", "const A = 99999999999999999999;").is_err());
    }
}
