//! The driver's operations called directly against a replayed QEMU
//! (test_harness.rs): each success and each way back checked for what it
//! leaves on disk and in the driver's state.

use std::time::Duration;

use super::registry::state;
use super::test_harness::Harness;
use super::{DomainEvent, ErrorKind, Lifecycle};

const CHECKPOINT: &str = "<domaincheckpoint><name>c1</name></domaincheckpoint>";

/// Waits (polling, bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn checkpoint_create_adds_bitmaps_then_metadata() {
    let h = Harness::recorded("driver-checkpoint-create.txt").await;
    let cp = h
        .driver
        .checkpoint_create_xml(&h.dom, CHECKPOINT, 0)
        .await
        .unwrap();
    assert_eq!(cp.name, "c1");
    assert_eq!(h.checkpoint_files(), ["c1.xml"]);
    assert!(h.state().checkpoints.contains("c1"));
    h.finish().await;
}

#[tokio::test]
async fn checkpoint_create_refused_by_qemu_leaves_no_metadata_nor_intent() {
    let h = Harness::replayed("driver-checkpoint-create-refused.txt").await;
    let err = h
        .driver
        .checkpoint_create_xml(&h.dom, CHECKPOINT, 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InternalError, "{err}");
    assert!(
        err.to_string().contains("Bitmap already exists: c1"),
        "{err}"
    );
    assert!(
        h.checkpoint_files().is_empty(),
        "{:?}",
        h.checkpoint_files()
    );
    assert!(!h.state().checkpoints.contains("c1"));
    h.finish().await;
}

fn push_xml(h: &Harness) -> String {
    format!(
        "<domainbackup><disks>\
         <disk name='vda' type='file'><target file='{}'/></disk>\
         <disk name='vdb' type='file'><target file='{}'/></disk>\
         </disks></domainbackup>",
        h.path("a.qcow2").display(),
        h.path("b.qcow2").display()
    )
}

fn pull_xml(h: &Harness) -> String {
    format!(
        "<domainbackup mode='pull'><server transport='unix' socket='{}'/><disks>\
         <disk name='vda' type='file'><scratch file='{}'/></disk>\
         <disk name='vdb' type='file'><scratch file='{}'/></disk>\
         </disks></domainbackup>",
        h.path("nbd.sock").display(),
        h.path("sa.qcow2").display(),
        h.path("sb.qcow2").display()
    )
}

/// Nothing of a backup that did not start: no file, no checkpoint (nor
/// its intent), no job, no record.
fn nothing_left(h: &Harness) {
    assert!(h.test_files().is_empty(), "{:?}", h.test_files());
    assert!(
        h.checkpoint_files().is_empty(),
        "{:?}",
        h.checkpoint_files()
    );
    assert!(h.run_files().is_empty(), "{:?}", h.run_files());
    let st = h.state();
    assert!(st.backup.is_none());
    assert!(!st.checkpoints.contains("c1"));
}

#[tokio::test]
async fn push_backup_with_checkpoint_runs_to_its_end() {
    let h = Harness::recorded("driver-backup-push.txt").await;
    let xml = push_xml(&h);
    let mut events = h.driver.subscribe();
    h.driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap();
    assert_eq!(h.checkpoint_files(), ["c1.xml"]);
    // job-completed is raised once the job is wholly over.
    let completed = async {
        loop {
            if let super::DomainEvent::JobCompleted { .. } = events.recv().await.unwrap() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), completed)
        .await
        .expect("job-completed");
    assert!(h.state().backup.is_none());
    let completed = h.state().jobs.completed.clone().expect("completed job");
    assert_eq!(completed.status, super::jobs::JobStatus::Completed);
    assert_eq!(h.test_files(), ["a.qcow2", "b.qcow2"]);
    assert_eq!(h.checkpoint_files(), ["c1.xml"]);
    assert!(h.run_files().is_empty(), "{:?}", h.run_files());
    h.finish().await;
}

#[tokio::test]
async fn push_backup_whose_second_target_fails_removes_the_first() {
    let h = Harness::replayed("driver-backup-push-target-fails.txt").await;
    let xml = push_xml(&h);
    let err = h
        .driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
    nothing_left(&h);
    h.finish().await;
}

#[tokio::test]
async fn pull_backup_with_checkpoint_exports_the_disks() {
    let h = Harness::recorded("driver-backup-pull.txt").await;
    let xml = pull_xml(&h);
    h.driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap();
    // The end (abort) is left out: its commands and the follower's
    // interleave differently from run to run.
    assert_eq!(h.test_files(), ["nbd.sock", "sa.qcow2", "sb.qcow2"]);
    assert_eq!(h.checkpoint_files(), ["c1.xml"]);
    assert_eq!(h.run_files(), ["backup.json"]);
    assert!(h.state().backup.is_some());
    h.finish().await;
}

#[tokio::test]
async fn pull_backup_whose_nbd_server_fails_leaves_nothing() {
    let h = Harness::replayed("driver-backup-pull-server-fails.txt").await;
    let xml = pull_xml(&h);
    let err = h
        .driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Address already in use"), "{err}");
    nothing_left(&h);
    h.finish().await;
}

#[tokio::test]
async fn push_backup_whose_transaction_is_refused_drops_targets_and_intent() {
    let h = Harness::replayed("driver-backup-push-transaction-refused.txt").await;
    let xml = push_xml(&h);
    let err = h
        .driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Bitmap already exists: c1"),
        "{err}"
    );
    // The intent was written before the transaction: it goes with it.
    nothing_left(&h);
    h.finish().await;
}

#[tokio::test]
async fn preserving_backup_that_fails_restores_the_shutdown_action() {
    let h = Harness::replayed("driver-backup-preserve-target-fails.txt").await;
    let xml = push_xml(&h);
    let flags = super::backup::BEGIN_PRESERVE_SHUTDOWN_DOMAIN;
    let err = h
        .driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), flags)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
    nothing_left(&h);
    // `set-action poweroff` comes from the begin's way back, after it
    // returned: finish waits for the transcript's last line.
    let obj = h.obj.clone();
    h.finish().await;
    let pauses =
        |obj: &super::registry::DomainObj| obj.lock().live.as_ref().map(|l| l.shutdown_pauses);
    until("the domain knows the action is poweroff again", || {
        pauses(&obj) == Some(false)
    })
    .await;
}

#[tokio::test]
async fn pull_backup_whose_export_qemu_refuses_undoes_everything() {
    // A real refusal, recorded: QEMU takes export names up to 4096 bytes.
    let h = Harness::recorded("driver-backup-pull-export-refused.txt").await;
    let long = "x".repeat(5000);
    let xml = pull_xml(&h).replace(
        "<disk name='vdb' type='file'>",
        &format!("<disk name='vdb' type='file' exportname='{long}'>"),
    );
    let err = h
        .driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InternalError, "{err}");
    // The server, both jobs, the scratch images, the checkpoint's bitmaps
    // (the transaction made them) and its intent: all gone.
    nothing_left(&h);
    h.finish().await;
}

#[tokio::test]
async fn guest_power_off_during_a_preserving_backup_pauses_then_stops() {
    let h = Harness::replayed("driver-backup-preserve-shutdown.txt").await;
    let xml = push_xml(&h);
    let mut events = h.driver.subscribe();
    let flags = super::backup::BEGIN_PRESERVE_SHUTDOWN_DOMAIN;
    h.driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), flags)
        .await
        .unwrap();
    // QEMU's SHUTDOWN (guest) as the domain's event watcher hands it on.
    assert!(h.driver.shutdown_event(&h.obj, &h.vm, true).await);
    {
        let st = h.state();
        assert_eq!(
            (st.state, st.reason),
            (state::PAUSED, state::PAUSED_SHUTTING_DOWN)
        );
    }
    let mut seen = Vec::new();
    let completed = async {
        loop {
            match events.recv().await.unwrap() {
                DomainEvent::Lifecycle { event, .. } => seen.push(event),
                DomainEvent::JobCompleted { .. } => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), completed)
        .await
        .expect("job-completed");
    assert_eq!(seen, [Lifecycle::SuspendedGuestShutdown]);
    // Then QEMU (here its stand-in) is stopped, as the power-off would
    // have stopped it.
    until("QEMU is stopped", || h.vm.exit_status().is_some()).await;
    {
        let st = h.state();
        assert_eq!(st.state, state::SHUTDOWN);
        assert!(st.live.as_ref().is_some_and(|l| l.shutdown_seen));
    }
    h.finish().await;
}

#[tokio::test]
async fn domain_resumed_during_a_preserving_backup_keeps_running() {
    let h = Harness::replayed("driver-backup-preserve-resumed.txt").await;
    let xml = push_xml(&h);
    let mut events = h.driver.subscribe();
    let flags = super::backup::BEGIN_PRESERVE_SHUTDOWN_DOMAIN;
    h.driver
        .backup_begin(&h.dom, &xml, Some(CHECKPOINT), flags)
        .await
        .unwrap();
    assert!(h.driver.shutdown_event(&h.obj, &h.vm, true).await);
    h.driver.resume(&h.dom).await.unwrap();
    let completed =
        async { while !matches!(events.recv().await, Ok(DomainEvent::JobCompleted { .. })) {} };
    tokio::time::timeout(Duration::from_secs(10), completed)
        .await
        .expect("job-completed");
    // finish: the last line is `set-action poweroff`, the guest's next
    // power-off ends QEMU again.
    let (obj, vm) = (h.obj.clone(), h.vm.clone());
    h.finish().await;
    let st = obj.lock();
    assert_eq!(
        (st.state, st.reason),
        (state::RUNNING, state::RUNNING_UNPAUSED)
    );
    assert!(vm.exit_status().is_none());
}
