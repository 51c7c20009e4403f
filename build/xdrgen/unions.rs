//! Unions become Rust enums with one variant per case label. Variant names
//! come from the labels: `VIR_TYPED_PARAM_INT`, `VIR_TYPED_PARAM_UINT`, …
//! lose their common prefix and become `Int`, `Uint`, …; numeric labels
//! become `V<n>`.

use std::collections::HashSet;

use super::ast::{Definition, Union, Value};
use super::model::{Arm, Prim, Resolver, Ty, UnionDef};
use super::GenError;

pub fn resolve(r: &Resolver<'_>, u: &Union, d: &Definition) -> Result<UnionDef, GenError> {
    let unsigned = match r.resolve(&u.discriminant, d, 0)? {
        Ty::Prim(Prim::I32) => false,
        Ty::Prim(Prim::U32) => true,
        _ => {
            return Err(GenError::at(
                &d.file,
                u.discriminant.line,
                "union discriminant must be int, unsigned int or an enum",
            ))
        }
    };
    let labels: Vec<&Value> = u.arms.iter().flat_map(|a| a.labels.iter()).collect();
    let names = variant_names(&labels);
    let mut names = names.into_iter();
    let mut seen_values = HashSet::new();
    let mut seen_names = HashSet::new();
    if u.default.is_some() {
        seen_names.insert("Default".to_string());
    }
    let mut arms = Vec::new();
    for arm in &u.arms {
        let ty = match &arm.decl {
            Some(decl) => Some(r.resolve(decl, d, 0)?),
            None => None,
        };
        for label in &arm.labels {
            let value = r.eval(label, d, 0)?;
            let in_range = if unsigned {
                u32::try_from(value).is_ok()
            } else {
                i32::try_from(value).is_ok()
            };
            if !in_range {
                return Err(GenError::at(
                    &d.file,
                    d.line,
                    format!("case {value} does not fit the discriminant"),
                ));
            }
            if !seen_values.insert(value) {
                return Err(GenError::at(
                    &d.file,
                    d.line,
                    format!("case {value} appears twice"),
                ));
            }
            let variant = names.next().unwrap_or_default();
            if !seen_names.insert(variant.clone()) {
                return Err(GenError::at(
                    &d.file,
                    d.line,
                    format!("two cases map to variant `{variant}`"),
                ));
            }
            arms.push(Arm {
                value,
                variant,
                ty: ty.clone(),
            });
        }
    }
    let default = match &u.default {
        None => None,
        Some(None) => Some(None),
        Some(Some(decl)) => Some(Some(r.resolve(decl, d, 0)?)),
    };
    Ok(UnionDef {
        unsigned,
        arms,
        default,
    })
}

fn variant_names(labels: &[&Value]) -> Vec<String> {
    let segs: Vec<Vec<&str>> = labels
        .iter()
        .filter_map(|v| match v {
            Value::Name(n) => Some(n.split('_').filter(|s| !s.is_empty()).collect()),
            Value::Lit(_) => None,
        })
        .collect();
    let shortest = segs.iter().map(Vec::len).min().unwrap_or(0);
    // Keep at least one segment of every name.
    let mut common = shortest.saturating_sub(1);
    if segs.len() > 1 {
        let first = segs.first().cloned().unwrap_or_default();
        let shared = (0..shortest)
            .take_while(|&i| segs.iter().all(|s| s.get(i) == first.get(i)))
            .count();
        common = common.min(shared);
    }
    labels
        .iter()
        .map(|v| match v {
            Value::Name(n) => {
                let parts: Vec<&str> = n.split('_').filter(|s| !s.is_empty()).collect();
                camel(parts.get(common..).unwrap_or_default())
            }
            Value::Lit(n) if *n < 0 => format!("Vm{}", n.unsigned_abs()),
            Value::Lit(n) => format!("V{n}"),
        })
        .collect()
}

/// `["DOMAIN", "DEFINE", "XML"]` → `DomainDefineXml`.
pub fn camel(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        let lower = p.to_ascii_lowercase();
        let mut chars = lower.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(labels: &[Value]) -> Vec<String> {
        variant_names(&labels.iter().collect::<Vec<_>>())
    }

    #[test]
    fn common_prefix_is_dropped() {
        let got = names(&[
            Value::Name("VIR_TYPED_PARAM_INT".into()),
            Value::Name("VIR_TYPED_PARAM_ULLONG".into()),
            Value::Lit(9),
            Value::Lit(-1),
        ]);
        assert_eq!(got, ["Int", "Ullong", "V9", "Vm1"]);
    }

    #[test]
    fn lone_or_nested_names_keep_their_last_segment() {
        assert_eq!(names(&[Value::Name("FOO_BAR".into())]), ["Bar"]);
        assert_eq!(
            names(&[Value::Name("A_B".into()), Value::Name("A_B_C".into())]),
            ["B", "BC"]
        );
    }

    #[test]
    fn camel_case() {
        assert_eq!(
            camel(&["DOMAIN", "EVENT", "BLOCK", "JOB", "2"]),
            "DomainEventBlockJob2"
        );
        assert_eq!(camel(&["2", "X"]), "V2X");
    }
}
