//! What the qemu tests that run a real QEMU share.

use std::path::PathBuf;

use super::command::{Accel, DiskSpec, LaunchSpec};

/// The small TCG machine those tests start.
pub(crate) fn spec(name: &str, disks: Vec<DiskSpec>, run_dir: PathBuf) -> LaunchSpec {
    LaunchSpec {
        name: name.into(),
        uuid: uuid::Uuid::new_v4(),
        emulator: "qemu-system-x86_64".into(),
        machine: "pc-i440fx-7.2".into(),
        accel: Accel::Tcg,
        memory_kib: 64 * 1024,
        vcpus: 1,
        acpi: false,
        disks,
        run_dir,
    }
}

/// Runs a tool (qemu-img, ...) that must succeed; its stdout.
pub(crate) async fn run(program: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}
