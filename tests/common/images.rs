//! Images as qemu-img sees them, without QEMU: made, inspected (`-U`, so
//! also while a QEMU holds them), compared.

use std::path::Path;

use serde_json::Value;

use super::{command, Run};

/// qemu-img with `args`, in the C locale.
pub fn qemu_img(args: &[&str]) -> Run {
    command("qemu-img", args)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `qemu-img create -q -f FORMAT PATH SIZE`.
#[track_caller]
pub fn create(path: &Path, format: &str, size: &str) {
    qemu_img(&["create", "-q", "-f", format, text(path), size]).ok();
}

/// `qemu-img info -U --output=json`.
#[track_caller]
pub fn info(path: &Path) -> Value {
    let run = qemu_img(&["info", "-U", "--output=json", text(path)]).ok();
    serde_json::from_str(&run.stdout).expect("qemu-img info's JSON")
}

/// `qemu-img map -U --output=json` without the host offsets.
#[track_caller]
pub fn map(path: &Path) -> Vec<Value> {
    let run = qemu_img(&["map", "-U", "--output=json", text(path)]).ok();
    without_offsets(serde_json::from_str(&run.stdout).expect("qemu-img map's JSON"))
}

/// A `qemu-img map` listing without the host offsets.
pub fn without_offsets(map: Value) -> Vec<Value> {
    map.as_array()
        .expect("a list of extents")
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().expect("an extent").remove("offset");
            e
        })
        .collect()
}

/// Asserts that `qemu-img compare` finds two stopped images identical.
#[track_caller]
pub fn identical(a: &Path, b: &Path) {
    let run = qemu_img(&["compare", text(a), text(b)]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "Images are identical."),
        "{} vs {}: {}",
        a.display(),
        b.display(),
        run.stderr
    );
}

/// The bitmaps stored in an image: (name, flags, granularity), sorted.
#[track_caller]
pub fn bitmaps(path: &Path) -> Vec<(String, Vec<String>, u64)> {
    let info = info(path);
    let mut bitmaps: Vec<(String, Vec<String>, u64)> = info["format-specific"]["data"]["bitmaps"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| {
                    let flags = b["flags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect();
                    (
                        b["name"].as_str().unwrap().to_string(),
                        flags,
                        b["granularity"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    bitmaps.sort();
    bitmaps
}

/// The names of the bitmaps stored in an image, sorted.
#[track_caller]
pub fn bitmap_names(path: &Path) -> Vec<String> {
    bitmaps(path).into_iter().map(|b| b.0).collect()
}

/// The internal snapshots of an image as `qemu-img snapshot -l` lists
/// them.
#[track_caller]
pub fn snapshot_list(path: &Path) -> String {
    qemu_img(&["snapshot", "-l", "-U", text(path)]).stdout
}
