//! Per program: a module of marker types implementing `Procedure` (only
//! for procedures whose layout the .x describes) and a table of every
//! procedure number with its public API name, for refusing the rest.

use std::fmt::Write as _;

use super::emit::ident;
use super::model::{Model, Program};
use super::unions::camel;

pub fn emit_programs(model: &Model, out: &mut String) {
    for p in &model.programs {
        emit_markers(p, out);
        emit_table(p, out);
    }
}

fn emit_markers(p: &Program, out: &mut String) {
    writeln!(
        out,
        "/// Marker types for the {} program's procedures with a known layout.",
        p.prefix
    )
    .ok();
    writeln!(out, "pub mod {}_proc {{", p.prefix).ok();
    writeln!(out, "    use super::*;\n").ok();
    for proc in p.procs.iter().filter(|p| p.marker) {
        let parts: Vec<&str> = proc.name.split('_').collect();
        let ty = camel(&parts);
        let kind = if proc.event { "event" } else { "call" };
        writeln!(
            out,
            "    /// `{}` = {} ({kind})",
            proc.const_name, proc.number
        )
        .ok();
        writeln!(
            out,
            "    #[derive(Debug, Clone, Copy, PartialEq, Eq)]\n    pub struct {ty};"
        )
        .ok();
        writeln!(out, "    impl Procedure for {ty} {{").ok();
        writeln!(
            out,
            "        const PROGRAM: u32 = {};",
            ident(&p.program_const)
        )
        .ok();
        writeln!(
            out,
            "        const PROC: i32 = {};",
            ident(&proc.const_name)
        )
        .ok();
        writeln!(
            out,
            "        type Args = {};",
            proc.args.as_deref().map_or("()".into(), ident)
        )
        .ok();
        writeln!(
            out,
            "        type Ret = {};",
            proc.ret.as_deref().map_or("()".into(), ident)
        )
        .ok();
        writeln!(out, "    }}\n").ok();
    }
    writeln!(out, "}}\n").ok();
}

fn emit_table(p: &Program, out: &mut String) {
    let upper = p.prefix.to_ascii_uppercase();
    writeln!(
        out,
        "/// Every procedure of the {} program, sorted by number.",
        p.prefix
    )
    .ok();
    writeln!(out, "pub static {upper}_PROCS: &[ProcInfo] = &[").ok();
    for proc in &p.procs {
        let api = proc
            .api
            .as_deref()
            .map_or("None".into(), |a| format!("Some({a:?})"));
        writeln!(
            out,
            "    ProcInfo {{ number: {}, name: {:?}, api: {api}, writes: {}, event: {} }},",
            proc.number, proc.name, proc.writes, proc.event
        )
        .ok();
    }
    writeln!(out, "];\n").ok();
    writeln!(
        out,
        "/// The {} program's entry for `proc`, if libvirt 9.0 defines it.",
        p.prefix
    )
    .ok();
    writeln!(
        out,
        "pub fn {}_proc_info(proc: i32) -> Option<&'static ProcInfo> {{",
        p.prefix
    )
    .ok();
    writeln!(out, "    find_proc({upper}_PROCS, proc)\n}}\n").ok();
}
