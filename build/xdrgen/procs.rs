//! Procedure enums. An enum named `<p>_procedure` lists program `<P>`'s
//! procedures `<P>_PROC_<NAME>`; the program number is the constant
//! `<P>_PROGRAM`. Each item's trailing comment is its annotation:
//!
//! ```text
//! api:<function>|none read|write [void] [; free text]
//! event [void] [; free text]
//! ```
//!
//! `<p>_<name>_args`, `_ret` and `_msg` structs are paired with the
//! procedure by name, as libvirt's gendispatch.pl does.

use std::collections::{HashMap, HashSet};

use super::ast::{DefKind, Definition};
use super::model::{Item, Model, Proc, Program};
use super::GenError;

#[derive(Debug, PartialEq, Eq)]
struct Note {
    api: Option<String>,
    writes: bool,
    event: bool,
    void: bool,
}

fn parse_note(text: &str) -> Result<Note, String> {
    let head = text.split(';').next().unwrap_or_default();
    let mut words = head.split_whitespace();
    let first = words.next().ok_or("empty annotation")?;
    let mut note = Note {
        api: None,
        writes: false,
        event: false,
        void: false,
    };
    if first == "event" {
        note.event = true;
    } else if let Some(api) = first.strip_prefix("api:") {
        if api.is_empty() {
            return Err("`api:` needs a function name or `none`".into());
        }
        note.api = (api != "none").then(|| api.to_string());
        note.writes = match words.next() {
            Some("read") => false,
            Some("write") => true,
            other => {
                return Err(format!(
                    "expected `read` or `write` after `{first}`, found {other:?}"
                ))
            }
        };
    } else {
        return Err(format!(
            "annotation must start with `api:` or `event`, found `{first}`"
        ));
    }
    for w in words {
        match w {
            "void" if !note.void => note.void = true,
            other => return Err(format!("unexpected word `{other}` in annotation")),
        }
    }
    Ok(note)
}

pub fn collect(model: &Model, defs: &[Definition]) -> Result<Vec<Program>, GenError> {
    let structs: HashSet<&str> = model
        .items
        .iter()
        .filter(|i| matches!(i.item, Item::Struct(_)))
        .map(|i| i.name.as_str())
        .collect();
    let mut programs = Vec::new();
    let mut claimed = HashSet::new();
    for def in defs {
        let DefKind::Enum(items) = &def.kind else {
            continue;
        };
        let Some(prefix) = def.name.strip_suffix("_procedure") else {
            continue;
        };
        let upper = prefix.to_ascii_uppercase();
        let program_const = format!("{upper}_PROGRAM");
        if !matches!(model.get(&program_const), Some(Item::Const(_))) {
            return Err(GenError::at(
                &def.file,
                def.line,
                format!("`{}` needs a constant `{program_const}`", def.name),
            ));
        }
        let values: HashMap<&str, i64> = match model.get(&def.name) {
            Some(Item::Enum(v)) => v.iter().map(|(n, v)| (n.as_str(), *v)).collect(),
            _ => HashMap::new(),
        };
        let item_prefix = format!("{upper}_PROC_");
        let mut procs = Vec::new();
        for item in items {
            let err = |msg: String| GenError::at(&def.file, item.line, msg);
            let name = item
                .name
                .strip_prefix(&item_prefix)
                .ok_or_else(|| err(format!("`{}` should start with `{item_prefix}`", item.name)))?;
            let number = values
                .get(item.name.as_str())
                .and_then(|&v| i32::try_from(v).ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| err(format!("`{}` needs a positive 32-bit number", item.name)))?;
            let text = item
                .note
                .as_deref()
                .ok_or_else(|| err(format!("`{}` has no annotation", item.name)))?;
            let note = parse_note(text).map_err(|m| err(format!("`{}`: {m}", item.name)))?;
            let base = format!("{prefix}_{}", name.to_ascii_lowercase());
            let find = |suffix: &str| {
                let s = format!("{base}_{suffix}");
                structs.contains(s.as_str()).then_some(s)
            };
            let (args, ret, msg) = (find("args"), find("ret"), find("msg"));
            let described = args.is_some() || ret.is_some() || msg.is_some();
            if note.event && (args.is_some() || ret.is_some()) {
                return Err(err(format!("event `{}` must use a _msg struct", item.name)));
            }
            if !note.event && msg.is_some() {
                return Err(err(format!(
                    "`{}` has a _msg struct but is not marked `event`",
                    item.name
                )));
            }
            if note.void && described {
                return Err(err(format!(
                    "`{}` is marked void but has structs",
                    item.name
                )));
            }
            claimed.extend(
                [args.clone(), ret.clone(), msg.clone()]
                    .into_iter()
                    .flatten(),
            );
            procs.push(Proc {
                number,
                const_name: item.name.clone(),
                name: name.to_string(),
                api: note.api,
                writes: note.writes,
                event: note.event,
                args: args.or(msg),
                ret,
                marker: described || note.void,
            });
        }
        procs.sort_by_key(|p| p.number);
        if let Some(w) = procs.windows(2).find(|w| w[0].number == w[1].number) {
            return Err(GenError::at(
                &def.file,
                def.line,
                format!("procedure number {} used twice", w[0].number),
            ));
        }
        programs.push(Program {
            prefix: prefix.to_string(),
            program_const,
            procs,
        });
    }
    // A struct that looks like a procedure body but matches none is a typo.
    for def in defs {
        if !matches!(def.kind, DefKind::Struct(_)) || claimed.contains(&def.name) {
            continue;
        }
        let looks_like_body = ["_args", "_ret", "_msg"]
            .iter()
            .any(|s| def.name.ends_with(s));
        let in_program = programs
            .iter()
            .any(|p| def.name.starts_with(&format!("{}_", p.prefix)));
        if looks_like_body && in_program {
            return Err(GenError::at(
                &def.file,
                def.line,
                format!("`{}` matches no procedure", def.name),
            ));
        }
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations() {
        assert_eq!(
            parse_note("api:virDomainDefineXML write").unwrap(),
            Note {
                api: Some("virDomainDefineXML".into()),
                writes: true,
                event: false,
                void: false
            }
        );
        assert_eq!(
            parse_note("api:none read void; internal").unwrap(),
            Note {
                api: None,
                writes: false,
                event: false,
                void: true
            }
        );
        assert!(parse_note("event void").unwrap().event);
        assert!(parse_note("api:virX read; SECURE flag needs write").is_ok());
        for bad in [
            "",
            "api:",
            "api:virX",
            "api:virX maybe",
            "event read",
            "evnt",
            "api:virX read void void",
        ] {
            assert!(parse_note(bad).is_err(), "{bad:?} accepted");
        }
    }
}
