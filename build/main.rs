//! Build script: generates the wire types from `protocol/*.x` into
//! `$OUT_DIR/wire.rs`, which `src/rpc/wire.rs` includes.

mod xdrgen;

use std::path::{Path, PathBuf};
use std::{env, fs, process};

fn main() {
    if let Err(e) = run() {
        // Cargo shows a build script's stderr when it fails.
        eprintln!("error: {e}");
        process::exit(1);
    }
}

fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    );
    let protocol = root.join("protocol");
    let generator = root.join("build");

    // The directories too, so an added file triggers a rebuild.
    println!("cargo::rerun-if-changed={}", protocol.display());
    println!(
        "cargo::rerun-if-changed={}",
        generator.join("xdrgen").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        generator.join("main.rs").display()
    );
    for f in sorted_files(&generator.join("xdrgen"), "rs")? {
        println!("cargo::rerun-if-changed={}", f.display());
    }

    let mut sources = Vec::new();
    for path in sorted_files(&protocol, "x")? {
        println!("cargo::rerun-if-changed={}", path.display());
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let name = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        sources.push(xdrgen::Source { name, text });
    }
    if sources.is_empty() {
        return Err(format!("no .x files in {}", protocol.display()));
    }

    let code = xdrgen::generate(&sources).map_err(|e| e.to_string())?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let target = out_dir.join("wire.rs");
    fs::write(&target, code).map_err(|e| format!("writing {}: {e}", target.display()))
}
