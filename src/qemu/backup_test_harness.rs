//! The scaffolding of the backup tests (backup_tests.rs): a scenario's
//! context, run against QEMU while recording or replayed from the recording.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use qapi::qmp;
use serde_json::json;
use tokio::net::UnixStream;

use super::*;
use crate::qemu::command::{build_argv, DiskSpec, RunPaths, SourceKind};
pub(super) use crate::qemu::monitor::Monitor;
use crate::qemu::transcript::{play, Recording};

pub(super) const VDA: &str = "libvirt-2-format";
pub(super) const VDB: &str = "libvirt-1-format";

/// What a scenario works with.
pub(super) struct Ctx {
    pub(super) mon: Monitor,
    pub(super) dir: PathBuf,
    pub(super) disks: Vec<DiskSpec>,
    /// Against QEMU (check images) or a recording (QMP only).
    pub(super) real: bool,
}

impl Ctx {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes to disk `index` as a guest would.
    pub(super) async fn write(&self, index: usize, cmd: &str) {
        let line =
            format!(r#"qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend "{cmd}""#);
        assert_eq!(self.mon.hmp(&line).await.unwrap(), "");
    }

    pub(super) fn backup(
        &self,
        index: usize,
        store: &str,
        format: DiskFormat,
        node: u32,
        incremental: Option<&str>,
    ) -> BackupDisk {
        BackupDisk {
            source: self.disks[index].clone(),
            store: self.path(store),
            store_format: format,
            store_block: false,
            store_node_index: node,
            incremental: incremental.map(str::to_owned),
            fleece: false,
            bitmap: None,
            cbw: None,
        }
    }

    pub(super) async fn node_names(&self) -> Vec<String> {
        let reply = self
            .mon
            .execute_value("query-named-block-nodes", json!({"flat": true}))
            .await
            .unwrap();
        reply
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node-name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub(super) async fn quit(&self) {
        self.mon.execute(qmp::quit {}).await.unwrap();
        self.mon.closed().await;
    }
}

pub(super) fn disk_specs(dir: &Path) -> Vec<DiskSpec> {
    (0..2)
        .map(|index| {
            let target = ["vda", "vdb"][index];
            DiskSpec {
                target: target.into(),
                device_index: index,
                node_index: 2 - index as u32,
                source: dir.join(format!("{target}.qcow2")),
                source_kind: SourceKind::File,
                format: DiskFormat::Qcow2,
                readonly: false,
                boot_index: None,
                has_backing: false,
                backing: Vec::new(),
            }
        })
        .collect()
}

pub(super) use crate::qemu::test_support::run;

pub(super) fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A QEMU started with `disks` (qcow2 of the given sizes), its monitor
/// reached through a recording proxy. Killed on drop.
pub(super) struct Real {
    pub(super) _child: tokio::process::Child,
    pub(super) recording: Recording,
}

pub(super) async fn real(dir: &Path, sizes: [&str; 2]) -> (Ctx, Real) {
    let disks = disk_specs(dir);
    for (disk, size) in disks.iter().zip(sizes) {
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", s(&disk.source), size],
        )
        .await;
    }
    real_on(dir, disks).await
}

/// [`real`] on images the caller made.
pub(super) async fn real_on(dir: &Path, disks: Vec<DiskSpec>) -> (Ctx, Real) {
    let spec = crate::qemu::test_support::spec("backup-vm", disks.clone(), dir.join("run"));
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    let child = tokio::process::Command::new(&spec.emulator)
        .args(build_argv(&spec).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let socket = RunPaths::new(&spec.run_dir).monitor;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let qemu = loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => break stream,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("QEMU monitor: {e}"),
        }
    };
    let recording = Recording::default();
    let mon = Monitor::handshake(recording.proxy(qemu, dir))
        .await
        .unwrap();
    let ctx = Ctx {
        mon,
        dir: dir.to_owned(),
        disks,
        real: true,
    };
    (
        ctx,
        Real {
            _child: child,
            recording,
        },
    )
}

/// Runs `scenario` against the recording `name`.
pub(super) async fn replay<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn({
        let dir = dir.path().to_owned();
        let name = name.to_owned();
        async move { play(server, &name, &dir).await }
    });
    let mon = Monitor::handshake(client).await.unwrap();
    scenario(Ctx {
        mon,
        dir: dir.path().to_owned(),
        disks: disk_specs(dir.path()),
        real: false,
    })
    .await;
    server.await.unwrap().unwrap();
}

pub(super) const HEADER: &str =
    "Recorded from qemu-system-x86_64 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3), -S, two qcow2
disks with the -blockdev/-device arguments src/qemu/command.rs builds (vda = libvirt-2-format,
vdb = libvirt-1-format), through the proxy of src/qemu/transcript.rs; @DIR@ is the test's
directory. The client lines are what src/qemu/backup.rs sends in the scenario of
src/qemu/backup_tests.rs named";

pub(super) async fn record<F, Fut>(name: &str, sizes: [&str; 2], scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (ctx, real) = real(dir.path(), sizes).await;
    scenario(ctx).await;
    let scenario = name.trim_end_matches(".txt");
    real.recording
        .save_if_asked(name, &format!("{HEADER} after {scenario}."));
}

// ---- Full backup: qcow2 and raw targets ----
