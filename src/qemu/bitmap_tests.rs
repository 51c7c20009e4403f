//! Bitmap operations: the reply parser and action shapes, recorded QEMU 7.2
//! conversations replayed, and the real qemu-system-x86_64 with two 16 MiB
//! qcow2 disks.

use std::future::pending;

use qapi::qmp;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::*;
use crate::qemu::error::QemuErrorKind;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(node, name)| ((*node).to_owned(), (*name).to_owned()))
        .collect()
}

const VDA: &str = "libvirt-2-format";
const VDB: &str = "libvirt-1-format";

enum Step {
    Send(String),
    Expect(Value),
}

/// Plays QEMU's side of fixtures/qmp/NAME (format: fixtures/qmp/README.md).
async fn play(stream: UnixStream, name: &str) -> Result<(), String> {
    let path = format!("{}/fixtures/qmp/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let steps = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(
            |line| match (line.strip_prefix("S: "), line.strip_prefix("C: ")) {
                (Some(sent), _) => Ok(Some(Step::Send(sent.to_owned()))),
                (_, Some(expected)) => serde_json::from_str(expected)
                    .map(|v| Some(Step::Expect(v)))
                    .map_err(|e| format!("{line}: {e}")),
                _ if line == "EOF" => Ok(None),
                _ => Err(format!("bad line {line:?}")),
            },
        );
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for step in steps {
        match step? {
            Some(Step::Send(text)) => write
                .write_all(format!("{text}\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?,
            Some(Step::Expect(expected)) => {
                let line = lines.next_line().await.map_err(|e| e.to_string())?;
                let line = line.ok_or_else(|| format!("client hung up, expected {expected}"))?;
                let got: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
                if got != expected {
                    return Err(format!("expected {expected}, got {line}"));
                }
            }
            None => return Ok(()),
        }
    }
    Ok(())
}

/// The whole checkpoint life on the wire, replayed from a recording of
/// QEMU 7.2 (fixtures/qmp/bitmap-checkpoint.txt).
#[tokio::test]
async fn checkpoint_sequence_replays() {
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn(play(server, "bitmap-checkpoint.txt"));
    let mon = Monitor::handshake(client).await.unwrap();
    let write = |cmd: &'static str| {
        let mon = mon.clone();
        async move {
            let line =
                format!(r#"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "{cmd}""#);
            assert_eq!(mon.hmp(&line).await.unwrap(), "");
        }
    };

    add_bitmaps(&mon, &pairs(&[(VDA, "c1"), (VDB, "c1")]), None)
        .await
        .unwrap();
    write("write -P 0x5a 0 1").await;
    add_bitmaps(&mon, &pairs(&[(VDA, "c2"), (VDB, "c2")]), None)
        .await
        .unwrap();
    write("write -P 0x5a 1M 1M").await;
    let err = add_bitmaps(&mon, &pairs(&[(VDA, "c3"), (VDB, "c1")]), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Bitmap already exists: c1"
    );

    let sizes = dirty_size(&mon, &pairs(&[(VDA, "c1"), (VDB, "c1")]))
        .await
        .unwrap();
    assert_eq!(sizes, [Some(65536 + (1 << 20)), Some(0)]);
    let verdicts = validate_bitmaps(&mon, &pairs(&[(VDA, "c2"), (VDB, "nope")]))
        .await
        .unwrap();
    assert_eq!(verdicts, [Ok(()), Err(BitmapProblem::Missing)]);

    remove_bitmaps(&mon, &pairs(&[(VDA, "c1"), (VDB, "c1")]))
        .await
        .unwrap();
    let nodes = query_bitmaps(&mon).await.unwrap();
    let vda = &nodes.iter().find(|n| n.node == VDA).unwrap().bitmaps;
    assert_eq!(vda.len(), 1);
    assert_eq!((vda[0].name.as_str(), vda[0].count), ("c2", 1 << 20));
    assert!(vda[0].recording && vda[0].persistent);

    mon.execute(qmp::quit {}).await.unwrap();
    mon.closed().await;
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn unusable_bitmaps_get_no_size_and_no_commands() {
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn(play(server, "bitmap-size-none.txt"));
    let mon = Monitor::handshake(client).await.unwrap();
    // Only the query: nothing to merge, so no transaction.
    let sizes = dirty_size(&mon, &pairs(&[(VDA, "gone"), (VDB, "gone")]))
        .await
        .unwrap();
    assert_eq!(sizes, [None, None]);
    let err = dirty_size(&mon, &pairs(&[(VDA, "a"), (VDA, "b")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::InvalidInput);
    drop(mon);
    server.await.unwrap().unwrap();
}

/// The stats query fails (here: QEMU answers it with an error, as when the
/// monitor goes away between two commands): the temporaries still go.
#[tokio::test]
async fn a_failed_size_query_still_removes_the_temporaries() {
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn(play(server, "bitmap-size-query-fails.txt"));
    let mon = Monitor::handshake(client).await.unwrap();
    add_bitmaps(&mon, &pairs(&[(VDA, "c1")]), None)
        .await
        .unwrap();
    let err = dirty_size(&mon, &pairs(&[(VDA, "c1")])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'query-named-block-nodes': injected failure"
    );
    drop(mon);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_abandoned_size_query_removes_the_temporaries_later() {
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn(play(server, "bitmap-size-abandoned.txt"));
    let mon = Monitor::handshake(client).await.unwrap();
    let sizes = pairs(&[(VDA, "c1")]);
    add_bitmaps(&mon, &sizes, None).await.unwrap();
    let stuck = dirty_size_with(&mon, &sizes, pending());
    let waited = tokio::time::timeout(std::time::Duration::from_secs(1), stuck).await;
    assert!(waited.is_err(), "the hook never finishes");
    // The spawned cleanup is the transcript's last command.
    let played = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    played
        .expect("the cleanup transaction in time")
        .unwrap()
        .unwrap();
}

// ---- The real QEMU ----

/// A started test domain. Its QEMU is SIGKILLed through a pidfd on drop,
/// so a failing test leaves no process behind.
struct Booted {
    vm: crate::qemu::RunningVm,
    pidfd: std::os::fd::OwnedFd,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }
}

impl Booted {
    fn mon(&self) -> &Monitor {
        self.vm.monitor()
    }

    /// Writes to disk `index` as a guest would.
    async fn write(&self, index: usize, cmd: &str) {
        let line =
            format!(r#"qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend "{cmd}""#);
        assert_eq!(self.mon().hmp(&line).await.unwrap(), "");
    }

    /// Stops QEMU as libvirt does at shutdown, so it stores the bitmaps.
    async fn quit(self) {
        self.mon().execute(qmp::quit {}).await.unwrap();
        self.vm.exited().await;
    }

    /// Kills QEMU without letting it close its images.
    async fn kill(self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        self.vm.exited().await;
    }
}

/// A domain with two 16 MiB qcow2 disks, vda (node 2) and vdb (node 1),
/// as libvirt numbers them.
async fn domain() -> (tempfile::TempDir, crate::qemu::LaunchSpec) {
    use crate::qemu::{DiskFormat, DiskSpec, SourceKind};
    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<DiskSpec> = (0..2)
        .map(|index| DiskSpec {
            target: ["vda", "vdb"][index].into(),
            device_index: index,
            node_index: 2 - index as u32,
            source: dir.path().join(format!("{}.qcow2", ["vda", "vdb"][index])),
            source_kind: SourceKind::File,
            format: DiskFormat::Qcow2,
            readonly: false,
            boot_index: None,
            has_backing: false,
            backing: Vec::new(),
        })
        .collect();
    for disk in &disks {
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                disk.source.to_str().unwrap(),
                "16M",
            ],
        )
        .await;
    }
    let spec = crate::qemu::test_support::spec("bitmap-vm", disks, dir.path().join("run"));
    (dir, spec)
}

async fn boot(spec: &crate::qemu::LaunchSpec) -> Booted {
    // `start` kills QEMU itself if it fails after spawning it.
    let vm = crate::qemu::start(spec).await.unwrap();
    let pid = rustix::process::Pid::from_raw(vm.pid()).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    Booted { vm, pidfd }
}

use crate::qemu::test_support::run;

/// The bitmaps stored in an image, from `qemu-img info` (`-U` while QEMU
/// has it open).
async fn stored_bitmaps(path: &std::path::Path, shared: bool) -> Value {
    let path = path.to_str().unwrap();
    let mut args = vec!["info", "--output=json", path];
    if shared {
        args.insert(1, "-U");
    }
    let info: Value = serde_json::from_str(&run("qemu-img", &args).await).unwrap();
    info["format-specific"]["data"]["bitmaps"].clone()
}

fn names<'a>(nodes: &'a [NodeBitmaps], node: &str) -> Vec<&'a str> {
    let node = nodes.iter().find(|n| n.node == node);
    node.map(|n| n.bitmaps.iter().map(|b| b.name.as_str()).collect())
        .unwrap_or_default()
}

async fn temporaries_left(mon: &Monitor) -> bool {
    let nodes = query_bitmaps(mon).await.unwrap();
    nodes
        .iter()
        .any(|n| n.bitmaps.iter().any(|b| b.name == TMP_SIZE_BITMAP))
}

#[tokio::test]
async fn added_on_both_disks_at_once_and_stored_on_close() {
    let (_dir, spec) = domain().await;
    let vm = boot(&spec).await;
    add_bitmaps(vm.mon(), &pairs(&[(VDA, "c1"), (VDB, "c1")]), None)
        .await
        .unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    for node in [VDA, VDB] {
        let c1 = find_bitmap(&nodes, node, "c1").unwrap();
        // QEMU 7.2's default for a qcow2 with 64 KiB clusters.
        assert_eq!(c1.granularity, 65536);
        assert_eq!(c1.count, 0);
        assert!(c1.persistent && c1.recording && !c1.busy && !c1.inconsistent);
    }
    assert!(names(&nodes, "libvirt-2-storage").is_empty());
    // Added at run time, they are only written when QEMU closes the image.
    assert_eq!(
        stored_bitmaps(&spec.disks[0].source, true).await,
        Value::Null
    );

    vm.quit().await;
    for disk in &spec.disks {
        assert_eq!(
            stored_bitmaps(&disk.source, false).await,
            json!([{"flags": ["auto"], "name": "c1", "granularity": 65536}])
        );
    }
    let vm = boot(&spec).await;
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert_eq!(
        check_bitmap(&nodes, VDB, "c1").map(|b| b.granularity),
        Ok(65536)
    );
    // Open read-write, QEMU marks them in use in the image.
    assert_eq!(
        stored_bitmaps(&spec.disks[0].source, true).await[0]["flags"],
        json!(["in-use", "auto"])
    );
    vm.quit().await;
}

#[tokio::test]
async fn a_failing_action_leaves_no_bitmap_anywhere() {
    let (_dir, spec) = domain().await;
    let vm = boot(&spec).await;
    add_bitmaps(vm.mon(), &pairs(&[(VDB, "c1")]), None)
        .await
        .unwrap();
    let err = add_bitmaps(vm.mon(), &pairs(&[(VDA, "c1"), (VDB, "c1")]), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::CommandFailed);
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Bitmap already exists: c1"
    );
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert!(names(&nodes, VDA).is_empty());
    assert_eq!(names(&nodes, VDB), ["c1"]);

    add_bitmaps(vm.mon(), &pairs(&[(VDA, "fine")]), Some(4096))
        .await
        .unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert_eq!(find_bitmap(&nodes, VDA, "fine").unwrap().granularity, 4096);
}

#[tokio::test]
async fn a_lone_checkpoint_bitmap_comes_and_goes_without_a_transaction_and_fails_as_one() {
    let (_dir, spec) = domain().await;
    let vm = boot(&spec).await;
    add_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c1")]))
        .await
        .unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    let c1 = find_bitmap(&nodes, VDA, "c1").unwrap();
    assert!(c1.persistent && c1.recording && !c1.inconsistent);
    let err = add_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c1")]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Bitmap already exists: c1"
    );
    add_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c2"), (VDB, "c2")]))
        .await
        .unwrap();
    remove_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c1")]))
        .await
        .unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert_eq!(names(&nodes, VDA), ["c2"]);
    // libvirt's words for a refusal: its removals are transactions.
    let err = remove_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c1")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::CommandFailed);
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Dirty bitmap 'c1' not found"
    );
    // Two disks: still all or nothing.
    let err = remove_checkpoint_bitmaps(vm.mon(), &pairs(&[(VDA, "c2"), (VDB, "c1")]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Dirty bitmap 'c1' not found"
    );
    assert_eq!(names(&query_bitmaps(vm.mon()).await.unwrap(), VDA), ["c2"]);
}

#[tokio::test]
async fn counts_and_sizes_follow_guest_writes() {
    let (_dir, spec) = domain().await;
    let vm = boot(&spec).await;
    let both = |name| pairs(&[(VDA, name), (VDB, name)]);
    add_bitmaps(vm.mon(), &both("c1"), None).await.unwrap();
    // One byte dirties one granularity chunk.
    vm.write(0, "write -P 0x5a 0 1").await;
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert_eq!(find_bitmap(&nodes, VDA, "c1").unwrap().count, 65536);
    assert_eq!(
        dirty_size(vm.mon(), &both("c1")).await.unwrap(),
        [Some(65536), Some(0)]
    );

    add_bitmaps(vm.mon(), &both("c2"), None).await.unwrap();
    vm.write(0, "write -P 0x5a 1M 1M").await;
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    let (c1, c2) = (
        find_bitmap(&nodes, VDA, "c1").unwrap(),
        find_bitmap(&nodes, VDA, "c2").unwrap(),
    );
    // The older checkpoint keeps recording (libvirt 9.0: all bitmaps active).
    assert!(c1.recording && c2.recording);
    assert_eq!((c1.count, c2.count), (65536 + (1 << 20), 1 << 20));
    assert_eq!(
        dirty_size(vm.mon(), &both("c1")).await.unwrap(),
        [Some(65536 + (1 << 20)), Some(0)]
    );
    assert_eq!(
        dirty_size(vm.mon(), &both("c2")).await.unwrap(),
        [Some(1 << 20), Some(0)]
    );
    assert!(!temporaries_left(vm.mon()).await);

    remove_bitmaps(vm.mon(), &both("c1")).await.unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert_eq!(
        (names(&nodes, VDA), names(&nodes, VDB)),
        (vec!["c2"], vec!["c2"])
    );
    assert_eq!(find_bitmap(&nodes, VDA, "c2").unwrap().count, 1 << 20);
    let err = remove_bitmaps(vm.mon(), &pairs(&[(VDA, "c2"), (VDB, "c1")]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Dirty bitmap 'c1' not found"
    );
    assert_eq!(names(&query_bitmaps(vm.mon()).await.unwrap(), VDA), ["c2"]);
}

#[tokio::test]
async fn size_removes_its_temporaries_on_every_path() {
    let (_dir, spec) = domain().await;
    let vm = boot(&spec).await;
    let both = pairs(&[(VDA, "c1"), (VDB, "c1")]);
    add_bitmaps(vm.mon(), &both, None).await.unwrap();
    vm.write(0, "write -P 0x5a 0 1M").await;
    let expected = [Some(1 << 20), Some(0)];

    // A leftover (a crash half-way) is removed first.
    let leftover = json!({"node": VDA, "name": TMP_SIZE_BITMAP});
    vm.mon()
        .execute_value("block-dirty-bitmap-add", leftover)
        .await
        .unwrap();
    assert_eq!(dirty_size(vm.mon(), &both).await.unwrap(), expected);
    assert!(!temporaries_left(vm.mon()).await);

    // Failure after the merge.
    let injected = async { Err(QemuError::Internal("injected".into())) };
    let err = dirty_size_with(vm.mon(), &both, injected)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "injected");
    assert!(!temporaries_left(vm.mon()).await);

    // The caller stops waiting after the merge.
    let stuck = dirty_size_with(vm.mon(), &both, pending());
    let waited = tokio::time::timeout(std::time::Duration::from_secs(1), stuck).await;
    assert!(waited.is_err());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while temporaries_left(vm.mon()).await {
        assert!(tokio::time::Instant::now() < deadline, "temporaries stayed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The merge itself fails on the second disk: a backup job that waits to
    // be finalized holds vdb's c1 busy. Nothing is left on vda.
    let target = json!({"driver": "null-co", "node-name": "tgt", "size": 16 << 20});
    vm.mon()
        .execute_value("blockdev-add", target)
        .await
        .unwrap();
    let job = json!({"job-id": "j", "device": VDB, "target": "tgt", "sync": "incremental",
                     "bitmap": "c1", "auto-finalize": false});
    vm.mon()
        .execute_value("blockdev-backup", job)
        .await
        .unwrap();
    let nodes = query_bitmaps(vm.mon()).await.unwrap();
    assert!(find_bitmap(&nodes, VDB, "c1").unwrap().busy);
    // Busy is still a valid checkpoint for libvirt.
    assert_eq!(
        validate_bitmaps(vm.mon(), &both).await.unwrap(),
        [Ok(()), Ok(())]
    );
    let err = dirty_size(vm.mon(), &both).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'transaction': Bitmap 'c1' is currently in use by another operation and cannot be used"
    );
    assert!(!temporaries_left(vm.mon()).await);
    assert_eq!(
        dirty_size(vm.mon(), &pairs(&[(VDA, "c1")])).await.unwrap(),
        [Some(1 << 20)]
    );
}

#[tokio::test]
async fn validation_names_the_problem() {
    let (_dir, spec) = domain().await;
    // A bitmap already in the image, as after a checkpoint made earlier.
    run(
        "qemu-img",
        &[
            "bitmap",
            "--add",
            spec.disks[0].source.to_str().unwrap(),
            "old",
        ],
    )
    .await;
    let vm = boot(&spec).await;
    let mon = vm.mon();
    add_bitmaps(mon, &pairs(&[(VDA, "c1")]), None)
        .await
        .unwrap();
    mon.execute_value("block-dirty-bitmap-add", json!({"node": VDA, "name": "np"}))
        .await
        .unwrap();
    let off = json!({"node": VDA, "name": "off", "persistent": true, "disabled": true});
    mon.execute_value("block-dirty-bitmap-add", off)
        .await
        .unwrap();
    let checks = pairs(&[
        (VDA, "c1"),
        (VDA, "old"),
        (VDA, "nope"),
        (VDA, "np"),
        (VDA, "off"),
    ]);
    assert_eq!(
        validate_bitmaps(mon, &checks).await.unwrap(),
        [
            Ok(()),
            Ok(()),
            Err(BitmapProblem::Missing),
            Err(BitmapProblem::NotPersistent),
            Err(BitmapProblem::NotRecording)
        ]
    );
    // Unusable bitmaps get no size; usable ones do.
    let sizes = dirty_size(mon, &pairs(&[(VDA, "np"), (VDB, "c1")]))
        .await
        .unwrap();
    assert_eq!(sizes, [None, None]);
    let sizes = dirty_size(mon, &pairs(&[(VDA, "off"), (VDB, "nope")]))
        .await
        .unwrap();
    assert_eq!(sizes, [None, None]);
    assert_eq!(
        dirty_size(mon, &pairs(&[(VDA, "old")])).await.unwrap(),
        [Some(0)]
    );

    // Killed, QEMU leaves the stored bitmap marked in use (inconsistent)
    // and never stores the ones added at run time.
    vm.kill().await;
    let vm = boot(&spec).await;
    let checks = pairs(&[(VDA, "old"), (VDA, "c1")]);
    let verdicts = validate_bitmaps(vm.mon(), &checks).await.unwrap();
    assert_eq!(
        verdicts,
        [
            Err(BitmapProblem::Inconsistent),
            Err(BitmapProblem::Missing)
        ]
    );
    assert_eq!(dirty_size(vm.mon(), &checks[..1]).await.unwrap(), [None]);
    // The way out libvirt offers too: delete it.
    remove_bitmaps(vm.mon(), &checks[..1]).await.unwrap();
    vm.quit().await;
    assert_eq!(
        stored_bitmaps(&spec.disks[0].source, false).await,
        Value::Null
    );
}
