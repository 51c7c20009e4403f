#![allow(clippy::tests_outside_test_module)]
//! Checkpoints whose bitmaps a QEMU killed mid-write left broken, through
//! the stock virsh, against what libvirtd 9.0 did with the same steps
//! (README "Checkpoints"): the checkpoints stay listed as before, dominfo
//! names them, backups from them are refused with libvirt's error before
//! anything is made, a full backup starts a fresh chain, and they delete
//! like any other.

mod common;

use std::path::Path;

use common::{images, qemu_io, words, Daemon};

const DOM: &str = "bb-vm";
const DEVICE: &str = "/machine/peripheral/virtio-disk0/virtio-backend";

/// Every named bitmap QEMU has on any node: (node, name, inconsistent).
fn live_bitmaps(daemon: &Daemon) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (node, json) in daemon.nodes(DOM) {
        for b in json["dirty-bitmaps"].as_array().into_iter().flatten() {
            if let Some(name) = b["name"].as_str() {
                let broken = b["inconsistent"].as_bool().unwrap_or(false);
                out.push((node.clone(), name.to_string(), broken));
            }
        }
    }
    out.sort();
    out
}

fn live_names(daemon: &Daemon) -> Vec<String> {
    live_bitmaps(daemon).into_iter().map(|b| b.1).collect()
}

fn checkpoint_names(daemon: &Daemon) -> String {
    words(
        &daemon
            .virsh(&["checkpoint-list", DOM, "--name", "--topological"])
            .ok()
            .stdout,
    )
}

fn write(daemon: &Daemon, name: &str, text: &str) -> String {
    let path = daemon.path(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn push_xml(daemon: &Daemon, incremental: Option<&str>, target: &Path) -> String {
    let incremental = incremental
        .map(|cp| format!("<incremental>{cp}</incremental>"))
        .unwrap_or_default();
    write(
        daemon,
        "push.xml",
        &format!(
            "<domainbackup>{incremental}<disks><disk name='vda' type='file'>\
             <target file='{}'/><driver type='qcow2'/></disk></disks></domainbackup>",
            target.display()
        ),
    )
}

/// The disk line of `checkpoint-dumpxml --size --no-domain`.
fn size_line(daemon: &Daemon, cp: &str) -> String {
    let xml = daemon
        .virsh(&["checkpoint-dumpxml", DOM, cp, "--size", "--no-domain"])
        .ok()
        .stdout;
    xml.lines()
        .find(|l| l.contains("<disk "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn checkpoints_broken_by_a_killed_qemu() {
    let daemon = Daemon::start();
    let vda = daemon.image("bb-vda.qcow2", "qcow2", "64M");
    daemon.define(DOM, &daemon.domain_xml(DOM, &[("vda", &vda, "qcow2")]));

    // c1 and c2 reach the image at a clean stop; c3 lives only in QEMU.
    daemon.virsh(&["start", DOM]).ok();
    daemon.virsh(&["checkpoint-create-as", DOM, "c1"]).ok();
    daemon.guest_write(DOM, 0, "write -P 0x11 0 1M");
    daemon.virsh(&["checkpoint-create-as", DOM, "c2"]).ok();
    daemon.virsh(&["destroy", DOM]).ok();
    daemon.virsh(&["start", DOM]).ok();
    daemon.virsh(&["checkpoint-create-as", DOM, "c3"]).ok();

    // SIGKILL while a guest write is in flight: writes are throttled to
    // 1 MiB/s, a first 8 MiB fills the bucket, so the next one waits in
    // QEMU for seconds, and QEMU dies holding it.
    daemon
        .virsh(&[
            "qemu-monitor-command",
            DOM,
            &format!(
                r#"{{"execute":"block_set_io_throttle","arguments":{{"id":"{DEVICE}",
                   "bps":0,"bps_rd":0,"bps_wr":1048576,"iops":0,"iops_rd":0,"iops_wr":0}}}}"#
            ),
        ])
        .ok();
    daemon.guest_write(DOM, 0, "write -P 0x22 8M 8M");
    daemon.guest_write(DOM, 0, "aio_write -P 0x33 0 1M");
    daemon.kill_qemu();
    daemon.wait_state(DOM, "shut off");
    assert!(!qemu_io::holds(&vda, 0x33, "0", "1M"));
    // QEMU marked the bitmaps in use when it opened the image and never
    // got to clear the mark; c3 was never written.
    assert_eq!(
        images::bitmaps(&vda)
            .into_iter()
            .map(|(name, flags, _)| (name, flags))
            .collect::<Vec<_>>(),
        [
            (
                "c1".to_string(),
                vec!["in-use".to_string(), "auto".to_string()]
            ),
            (
                "c2".to_string(),
                vec!["in-use".to_string(), "auto".to_string()]
            ),
        ]
    );

    // 1. The next QEMU loads them inconsistent. checkpoint-list is what
    // libvirt prints (it has no column for it); dominfo and the log say it.
    daemon.virsh(&["start", DOM]).ok();
    assert!(live_bitmaps(&daemon)
        .iter()
        .all(|(_, name, broken)| *broken == (name == "c1" || name == "c2")));
    assert_eq!(live_names(&daemon), ["c1", "c2"]);
    assert_eq!(checkpoint_names(&daemon), "c1 c2 c3");
    let info = daemon.virsh(&["dominfo", DOM]).ok().stdout;
    for line in [
        "checkpoint 'c1': bitmap 'c1' of disk 'vda' is inconsistent",
        "checkpoint 'c2': bitmap 'c2' of disk 'vda' is inconsistent",
        "checkpoint 'c3': bitmap 'c3' of disk 'vda' is missing",
    ] {
        assert!(info.contains(line), "{line} not in {info}");
        assert!(daemon.log().contains(line), "{line} not logged");
    }

    // 5. A broken bitmap is never measured: the size is left out, as
    // libvirt does.
    for cp in ["c1", "c3"] {
        assert_eq!(
            size_line(&daemon, cp),
            format!("<disk name='vda' checkpoint='bitmap' bitmap='{cp}'/>")
        );
    }

    // 2. Incremental backups from a broken checkpoint are refused with
    // libvirt's error before anything is made: no target, no scratch, no
    // socket, no new checkpoint, no bitmap.
    let target = daemon.path("inc.qcow2");
    for (cp, problem) in [("c1", "c1"), ("c3", "c3")] {
        let xml = push_xml(&daemon, Some(cp), &target);
        daemon
            .virsh(&["backup-begin", DOM, &xml])
            .fails_with(&format!(
            "error: checkpoint inconsistent: missing or broken bitmap '{problem}' for disk 'vda'"
        ));
        assert!(!target.exists());
    }
    let scratch = daemon.path("scratch.qcow2");
    let socket = daemon.path("nbd.sock");
    let pull = write(
        &daemon,
        "pull.xml",
        &format!(
            "<domainbackup mode='pull'><incremental>c2</incremental>\
             <server transport='unix' socket='{}'/><disks><disk name='vda' type='file'>\
             <scratch file='{}'/></disk></disks></domainbackup>",
            socket.display(),
            scratch.display()
        ),
    );
    let c4 = write(
        &daemon,
        "c4.xml",
        "<domaincheckpoint><name>c4</name></domaincheckpoint>",
    );
    daemon
        .virsh(&["backup-begin", DOM, &pull, &c4])
        .fails_with("error: checkpoint inconsistent: missing or broken bitmap 'c2' for disk 'vda'");
    assert!(!scratch.exists() && !socket.exists());
    assert_eq!(checkpoint_names(&daemon), "c1 c2 c3");
    assert_eq!(live_names(&daemon), ["c1", "c2"]);
    assert_eq!(
        words(&daemon.virsh(&["domjobinfo", DOM]).ok().stdout),
        "Job type: None"
    );

    // 3. A full backup with a new checkpoint starts a fresh chain (its
    // parent is the current checkpoint, as in libvirt), and incremental
    // backups from there work.
    let full = daemon.path("full.qcow2");
    let xml = push_xml(&daemon, None, &full);
    daemon.virsh(&["backup-begin", DOM, &xml, &c4]).ok();
    daemon.wait_idle(DOM);
    assert!(full.exists());
    assert_eq!(checkpoint_names(&daemon), "c1 c2 c3 c4");
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", DOM, "c4"])
            .ok()
            .stdout
            .trim(),
        "c3"
    );
    daemon.guest_write(DOM, 0, "write -P 0x44 3M 1M");
    assert_eq!(
        size_line(&daemon, "c4"),
        "<disk name='vda' checkpoint='bitmap' bitmap='c4' size='1048576'/>"
    );
    let xml = push_xml(&daemon, Some("c4"), &target);
    daemon.virsh(&["backup-begin", DOM, &xml]).ok();
    daemon.wait_idle(DOM);
    let completed = words(
        &daemon
            .virsh(&["domjobinfo", DOM, "--completed"])
            .ok()
            .stdout,
    );
    assert!(completed.contains("Job type: Completed"), "{completed}");
    assert!(target.exists());

    // Only the named checkpoint's bitmap counts (it has every write since
    // then): a broken one after it, here c5's bitmap removed behind the
    // daemon's back, does not stop a backup from c4, as in libvirt.
    daemon.virsh(&["checkpoint-create-as", DOM, "c5"]).ok();
    let (node, _, _) = live_bitmaps(&daemon)
        .into_iter()
        .find(|b| b.1 == "c5")
        .unwrap();
    daemon
        .virsh(&[
            "qemu-monitor-command",
            DOM,
            &format!(
                r#"{{"execute":"block-dirty-bitmap-remove","arguments":{{"node":"{node}","name":"c5"}}}}"#
            ),
        ])
        .ok();
    let again = daemon.path("inc-again.qcow2");
    let xml = push_xml(&daemon, Some("c4"), &again);
    daemon.virsh(&["backup-begin", DOM, &xml]).ok();
    daemon.wait_idle(DOM);
    assert!(again.exists());
    daemon
        .virsh(&["checkpoint-delete", DOM, "c5", "--metadata"])
        .ok();

    // 4. A broken checkpoint deletes without --metadata and takes its
    // bitmap with it; one whose bitmap is missing needs --metadata, with
    // libvirt's error otherwise.
    daemon.virsh(&["checkpoint-delete", DOM, "c1"]).ok();
    assert_eq!(live_names(&daemon), ["c2", "c4"]);
    daemon
        .virsh(&["checkpoint-delete", DOM, "c3"])
        .fails_with("error: internal error: bitmap 'c3' not found in backing chain of 'vda'");
    daemon
        .virsh(&["checkpoint-delete", DOM, "c3", "--metadata"])
        .ok();
    // The messages follow: only what still exists is named.
    let info = daemon.virsh(&["dominfo", DOM]).ok().stdout;
    assert!(info.contains("checkpoint 'c2'"), "{info}");
    assert!(!info.contains("'c1'") && !info.contains("'c3'"), "{info}");
    daemon.virsh(&["checkpoint-delete", DOM, "c2"]).ok();
    let info = daemon.virsh(&["dominfo", DOM]).ok().stdout;
    assert!(!info.contains("Messages:"), "{info}");
    assert_eq!(checkpoint_names(&daemon), "c4");
    assert_eq!(live_names(&daemon), ["c4"]);

    // A clean stop leaves only the fresh chain in the image, not in use.
    daemon.virsh(&["destroy", DOM]).ok();
    assert_eq!(
        images::bitmaps(&vda)
            .into_iter()
            .map(|(name, flags, _)| (name, flags))
            .collect::<Vec<_>>(),
        [("c4".to_string(), vec!["auto".to_string()])]
    );
    daemon.virsh(&["start", DOM]).ok();
    let info = daemon.virsh(&["dominfo", DOM]).ok().stdout;
    assert!(!info.contains("Messages:"), "{info}");
    daemon.virsh(&["destroy", DOM]).ok();
}
