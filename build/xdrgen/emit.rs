//! Rust for constants, typedefs, structs and unions. Every field is packed
//! and unpacked through the runtime in `crate::xdr` with the limit of that
//! field spelled out, so a bound declared once in a typedef is enforced at
//! each use.

use std::fmt::Write as _;

use super::model::{Bound, Item, Model, Prim, Ty, UnionDef};
use super::sizes::{defaultable, min_size};
use super::GenError;

pub const RUNTIME: &str = "crate::xdr";

const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let",
    "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return",
    "static", "struct", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use",
    "virtual", "where", "while", "yield",
];

/// A .x name as a Rust identifier.
pub fn ident(name: &str) -> String {
    match name {
        // These cannot be raw identifiers.
        "self" | "Self" | "super" | "crate" | "_" => format!("{name}_"),
        n if KEYWORDS.contains(&n) => format!("r#{n}"),
        n => n.to_string(),
    }
}

pub fn emit_items(model: &Model, out: &mut String) -> Result<(), GenError> {
    writeln!(
        out,
        "use {RUNTIME}::{{self as xdr, Pack, Reader, Unpack, XdrError}};\n"
    )
    .ok();
    for item in &model.items {
        let name = &item.name;
        match &item.item {
            Item::Const(v) => emit_const(out, name, *v)?,
            Item::Enum(values) => {
                writeln!(out, "/// XDR enum; fields of this type are plain `i32`s.").ok();
                writeln!(out, "pub type {} = i32;", ident(name)).ok();
                for (n, v) in values {
                    let v = i32::try_from(*v).map_err(|_| {
                        GenError::plain(format!("enum value {n} = {v} does not fit i32"))
                    })?;
                    writeln!(out, "pub const {}: i32 = {v};", ident(n)).ok();
                }
                out.push('\n');
            }
            Item::Typedef(ty) => {
                writeln!(out, "pub type {} = {};\n", ident(name), rust_type(ty)).ok();
            }
            Item::Struct(fields) => {
                let derive = if defaultable(model, &Ty::Named(name.clone())) {
                    ", Default"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "#[derive(Debug, Clone, PartialEq{derive})]\npub struct {} {{",
                    ident(name)
                )
                .ok();
                for f in fields {
                    writeln!(out, "    pub {}: {},", ident(&f.name), rust_type(&f.ty)).ok();
                }
                writeln!(out, "}}\n").ok();
                writeln!(out, "impl Pack for {} {{", ident(name)).ok();
                writeln!(
                    out,
                    "    fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {{"
                )
                .ok();
                for f in fields {
                    let expr = pack_expr(&f.ty, &format!("&self.{}", ident(&f.name)));
                    writeln!(out, "        {expr}?;").ok();
                }
                writeln!(out, "        Ok(())\n    }}\n}}\n").ok();
                writeln!(out, "impl Unpack for {} {{", ident(name)).ok();
                writeln!(
                    out,
                    "    fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {{"
                )
                .ok();
                writeln!(out, "        Ok(Self {{").ok();
                for f in fields {
                    writeln!(
                        out,
                        "            {}: {}?,",
                        ident(&f.name),
                        unpack_expr(model, &f.ty)
                    )
                    .ok();
                }
                writeln!(out, "        }})\n    }}\n}}\n").ok();
            }
            Item::Union(u) => emit_union(model, out, name, u),
        }
    }
    Ok(())
}

fn emit_const(out: &mut String, name: &str, v: i64) -> Result<(), GenError> {
    if let Ok(v) = u32::try_from(v) {
        writeln!(out, "pub const {}: u32 = {v};", ident(name)).ok();
    } else if let Ok(v) = i32::try_from(v) {
        writeln!(out, "pub const {}: i32 = {v};", ident(name)).ok();
    } else {
        return Err(GenError::plain(format!(
            "constant {name} = {v} fits neither u32 nor i32"
        )));
    }
    Ok(())
}

fn emit_union(model: &Model, out: &mut String, name: &str, u: &UnionDef) {
    let disc = if u.unsigned { "u32" } else { "i32" };
    let lit = |v: i64| format!("{v}{disc}");
    writeln!(out, "/// XDR union; the variant is the discriminant.").ok();
    writeln!(
        out,
        "#[derive(Debug, Clone, PartialEq)]\npub enum {} {{",
        ident(name)
    )
    .ok();
    for arm in &u.arms {
        match &arm.ty {
            Some(ty) => writeln!(out, "    {}({}),", arm.variant, rust_type(ty)),
            None => writeln!(out, "    {},", arm.variant),
        }
        .ok();
    }
    match &u.default {
        Some(Some(ty)) => writeln!(out, "    Default({disc}, {}),", rust_type(ty)).ok(),
        Some(None) => writeln!(out, "    Default({disc}),").ok(),
        None => None,
    };
    writeln!(out, "}}\n").ok();

    writeln!(out, "impl Pack for {} {{", ident(name)).ok();
    writeln!(
        out,
        "    fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {{"
    )
    .ok();
    writeln!(out, "        match self {{").ok();
    for arm in &u.arms {
        match &arm.ty {
            Some(ty) => writeln!(
                out,
                "            Self::{}(v) => {{\n                {}.pack(out)?;\n                {}\n            }}",
                arm.variant,
                lit(arm.value),
                pack_expr(ty, "v")
            ),
            None => writeln!(out, "            Self::{} => {}.pack(out),", arm.variant, lit(arm.value)),
        }
        .ok();
    }
    if let Some(default) = &u.default {
        let known: Vec<String> = u.arms.iter().map(|a| lit(a.value)).collect();
        let bind = if default.is_some() { "(d, v)" } else { "(d)" };
        writeln!(out, "            Self::Default{bind} => {{").ok();
        if !known.is_empty() {
            // Such a value would decode as the other variant.
            writeln!(
                out,
                "                if matches!(*d, {}) {{\n                    return Err(XdrError::BadDiscriminant {{ type_name: \"{name}\", value: i64::from(*d) }});\n                }}",
                known.join(" | ")
            )
            .ok();
        }
        writeln!(out, "                d.pack(out)?;").ok();
        match default {
            Some(ty) => writeln!(
                out,
                "                {}\n            }}",
                pack_expr(ty, "v")
            ),
            None => writeln!(out, "                Ok(())\n            }}"),
        }
        .ok();
    }
    writeln!(out, "        }}\n    }}\n}}\n").ok();

    writeln!(out, "impl Unpack for {} {{", ident(name)).ok();
    writeln!(
        out,
        "    fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {{"
    )
    .ok();
    writeln!(
        out,
        "        let d = {disc}::unpack(r)?;\n        Ok(match d {{"
    )
    .ok();
    for arm in &u.arms {
        match &arm.ty {
            Some(ty) => writeln!(
                out,
                "            {} => Self::{}({}?),",
                lit(arm.value),
                arm.variant,
                unpack_expr(model, ty)
            ),
            None => writeln!(
                out,
                "            {} => Self::{},",
                lit(arm.value),
                arm.variant
            ),
        }
        .ok();
    }
    match &u.default {
        Some(Some(ty)) => writeln!(out, "            _ => Self::Default(d, {}?),", unpack_expr(model, ty)),
        Some(None) => writeln!(out, "            _ => Self::Default(d),"),
        None => writeln!(
            out,
            "            _ => {{\n                return Err(XdrError::BadDiscriminant {{ type_name: \"{name}\", value: i64::from(d) }})\n            }}"
        ),
    }
    .ok();
    writeln!(out, "        }})\n    }}\n}}\n").ok();
}

fn prim_type(p: Prim) -> &'static str {
    match p {
        Prim::I32 => "i32",
        Prim::U32 => "u32",
        Prim::I64 => "i64",
        Prim::U64 => "u64",
        Prim::F32 => "f32",
        Prim::F64 => "f64",
        Prim::Bool => "bool",
        Prim::I8 => "i8",
        Prim::U8 => "u8",
        Prim::I16 => "i16",
        Prim::U16 => "u16",
    }
}

pub fn rust_type(ty: &Ty) -> String {
    match ty {
        Ty::Prim(p) => prim_type(*p).to_string(),
        Ty::Named(n) => ident(n),
        Ty::String(_) => "String".into(),
        Ty::OpaqueFixed(n) => format!("[u8; {n}]"),
        Ty::OpaqueVar(_) => "Vec<u8>".into(),
        Ty::ArrayFixed(t, n) => format!("[{}; {n}]", rust_type(t)),
        Ty::ArrayVar(t, _) => format!("Vec<{}>", rust_type(t)),
        Ty::Option(t) => format!("Option<{}>", rust_type(t)),
    }
}

fn bound(b: &Bound) -> String {
    match (&b.name, b.value) {
        (Some(n), _) => ident(n),
        (None, u32::MAX) => "u32::MAX".into(),
        (None, v) => v.to_string(),
    }
}

/// Types whose own `Pack`/`Unpack` impl is the whole story.
fn self_coded(ty: &Ty) -> bool {
    matches!(ty, Ty::Prim(_) | Ty::Named(_) | Ty::OpaqueFixed(_))
}

/// An expression of type `Result<(), XdrError>` writing `val` (a `&T`) to `out`.
pub fn pack_expr(ty: &Ty, val: &str) -> String {
    let item = |t: &Ty| format!("|out, v| {}", pack_expr(t, "v"));
    match ty {
        Ty::Prim(_) | Ty::Named(_) | Ty::OpaqueFixed(_) => format!("Pack::pack({val}, out)"),
        Ty::String(b) => format!("xdr::put_string(out, {val}, {})", bound(b)),
        Ty::OpaqueVar(b) => format!("xdr::put_opaque_var(out, {val}, {})", bound(b)),
        Ty::ArrayFixed(t, _) => format!("xdr::put_array_fixed(out, {val}, {})", item(t)),
        Ty::ArrayVar(t, b) => format!("xdr::put_array_var(out, {val}, {}, {})", bound(b), item(t)),
        Ty::Option(t) => format!("xdr::put_option(out, Option::as_ref({val}), {})", item(t)),
    }
}

/// An expression of type `Result<T, XdrError>` reading from `r`.
pub fn unpack_expr(model: &Model, ty: &Ty) -> String {
    let item = |t: &Ty| {
        if self_coded(t) {
            format!("<{} as Unpack>::unpack", rust_type(t))
        } else {
            format!("|r| {}", unpack_expr(model, t))
        }
    };
    match ty {
        Ty::Prim(_) | Ty::Named(_) | Ty::OpaqueFixed(_) => {
            format!("<{} as Unpack>::unpack(r)", rust_type(ty))
        }
        Ty::String(b) => format!("r.string({})", bound(b)),
        Ty::OpaqueVar(b) => format!("r.opaque_var({})", bound(b)),
        Ty::ArrayFixed(t, _) => format!("r.array_fixed({}, {})", min_size(model, t), item(t)),
        Ty::ArrayVar(t, b) => format!(
            "r.array_var({}, {}, {})",
            bound(b),
            min_size(model, t),
            item(t)
        ),
        Ty::Option(t) => format!("r.option({})", item(t)),
    }
}
