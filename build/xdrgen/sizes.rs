//! Facts about types that the emitter needs: the fewest bytes a value can
//! occupy on the wire (so a decoder can refuse an element count that the
//! remaining input could never hold, before allocating), and whether the
//! Rust type can derive `Default`.

use std::collections::HashSet;

use super::ast::Definition;
use super::model::{Item, Model, Prim, Ty};
use super::GenError;

/// Checks every type once: no recursion (Rust would need boxes), no
/// array of an element that occupies no bytes, and fixed arrays only of
/// elements with a default (the decoder fills them in place).
pub fn check(model: &Model, defs: &[Definition]) -> Result<(), GenError> {
    for (item, def) in model.items.iter().zip(defs) {
        let err = |msg: String| GenError::at(&def.file, def.line, msg);
        let mut path = Vec::new();
        no_cycle(model, &item.name, &mut path).map_err(err)?;
        for ty in types_of(&item.item) {
            check_ty(model, ty)
                .map_err(|m| GenError::at(&def.file, def.line, format!("`{}`: {m}", item.name)))?;
        }
    }
    Ok(())
}

fn types_of(item: &Item) -> Vec<&Ty> {
    match item {
        Item::Const(_) | Item::Enum(_) => Vec::new(),
        Item::Typedef(t) => vec![t],
        Item::Struct(fields) => fields.iter().map(|f| &f.ty).collect(),
        Item::Union(u) => u
            .arms
            .iter()
            .filter_map(|a| a.ty.as_ref())
            .chain(u.default.iter().flatten())
            .collect(),
    }
}

fn check_ty(model: &Model, ty: &Ty) -> Result<(), String> {
    match ty {
        Ty::ArrayVar(elem, _) => {
            if min_size(model, elem) == 0 {
                return Err("array elements must occupy at least one byte".into());
            }
            check_ty(model, elem)
        }
        Ty::ArrayFixed(elem, _) => {
            if !defaultable(model, elem) {
                return Err("fixed arrays need elements that implement Default".into());
            }
            check_ty(model, elem)
        }
        Ty::Option(inner) => check_ty(model, inner),
        _ => Ok(()),
    }
}

fn no_cycle(model: &Model, name: &str, path: &mut Vec<String>) -> Result<(), String> {
    if path.iter().any(|p| p == name) {
        return Err(format!("recursive type: {} -> {name}", path.join(" -> ")));
    }
    let Some(item) = model.get(name) else {
        return Ok(());
    };
    path.push(name.to_string());
    let mut names = HashSet::new();
    for ty in types_of(item) {
        named_in(ty, &mut names);
    }
    for n in names {
        no_cycle(model, &n, path)?;
    }
    path.pop();
    Ok(())
}

fn named_in(ty: &Ty, out: &mut HashSet<String>) {
    match ty {
        Ty::Named(n) => {
            out.insert(n.clone());
        }
        Ty::ArrayFixed(t, _) | Ty::ArrayVar(t, _) | Ty::Option(t) => named_in(t, out),
        _ => {}
    }
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// Only called on types that passed `check`, so recursion terminates.
pub fn min_size(model: &Model, ty: &Ty) -> u64 {
    match ty {
        Ty::Prim(Prim::I64 | Prim::U64 | Prim::F64) => 8,
        Ty::Prim(_) | Ty::String(_) | Ty::OpaqueVar(_) | Ty::ArrayVar(..) | Ty::Option(_) => 4,
        Ty::OpaqueFixed(n) => pad4(u64::from(*n)),
        Ty::ArrayFixed(t, n) => u64::from(*n) * min_size(model, t),
        Ty::Named(n) => match model.get(n) {
            Some(Item::Struct(fields)) => fields.iter().map(|f| min_size(model, &f.ty)).sum(),
            Some(Item::Union(u)) => {
                let arm_min = u
                    .arms
                    .iter()
                    .map(|a| a.ty.as_ref())
                    .chain(u.default.iter().map(Option::as_ref))
                    .map(|t| t.map_or(0, |t| min_size(model, t)))
                    .min()
                    .unwrap_or(0);
                4 + arm_min
            }
            _ => 0,
        },
    }
}

pub fn defaultable(model: &Model, ty: &Ty) -> bool {
    match ty {
        Ty::Prim(_) | Ty::String(_) | Ty::OpaqueVar(_) | Ty::ArrayVar(..) | Ty::Option(_) => true,
        // std implements Default for arrays up to 32 elements only.
        Ty::OpaqueFixed(n) => *n <= 32,
        Ty::ArrayFixed(t, n) => *n <= 32 && defaultable(model, t),
        Ty::Named(n) => match model.get(n) {
            Some(Item::Struct(fields)) => fields.iter().all(|f| defaultable(model, &f.ty)),
            _ => false,
        },
    }
}
