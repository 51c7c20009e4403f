//! Every transition of [`step`]: what the record becomes and what is done.

use std::path::PathBuf;

use crate::driver::jobs::BackupStats;
use crate::qemu::blockdev::AttachedImage;
use crate::qemu::node;

use super::*;

/// A running push backup of vda and vdb with checkpoint "cp1".
fn push() -> BackupRecord {
    let disk = |dst: &str, n: u32| {
        let source_node = node::format(n);
        let target = DiskBackup {
            disk: dst.into(),
            job_id: qbackup::job_id(dst, &source_node),
            source_node,
            bitmap: None,
            fleece: false,
            target: AttachedImage {
                path: PathBuf::from(format!("/b/{dst}.qcow2")),
                storage_node: node::storage(n + 2),
                format_node: node::format(n + 2),
                created: true,
            },
            cbw: None,
        };
        let run = RunDisk {
            dst: dst.into(),
            path: format!("/i/{dst}.qcow2"),
            job_id: target.job_id.clone(),
            state: DiskState::Running,
        };
        (run, target)
    };
    let (disks, targets) = [disk("vda", 2), disk("vdb", 1)].into_iter().unzip();
    BackupRecord {
        xml: "<domainbackup/>".into(),
        job: JobData::backup(0),
        reuse: false,
        disks,
        targets,
        cancel_requested: HashSet::new(),
        preserve: false,
        checkpoint: Some("cp1".into()),
        pull: None,
        started: true,
    }
}

/// The same disks backed up in pull mode over TLS, scratch images made.
fn pull() -> BackupRecord {
    let mut record = push();
    record.checkpoint = None;
    record.pull = Some(PullServer {
        addr: NbdAddress::Unix("/run/nbd.sock".into()),
        tls: true,
        stopped: false,
    });
    for target in &mut record.targets {
        target.fleece = true;
    }
    record
}

/// The job id of vda (0) or vdb (1).
fn id(disk: usize) -> String {
    push().targets[disk].job_id.clone()
}

fn ended(disk: usize, outcome: JobOutcome, bytes: u64) -> Event {
    Event::DiskEnded(JobEnd {
        id: id(disk),
        outcome,
        current: bytes,
        total: bytes,
    })
}

fn cleanup(record: &BackupRecord, i: usize) -> Action {
    Action::CleanUp(record.targets[i].clone())
}

fn notify(record: &BackupRecord, i: usize, status: BlockJobStatus) -> Action {
    let disk = &record.disks[i];
    Action::Notify {
        path: disk.path.clone(),
        dst: disk.dst.clone(),
        status,
    }
}

fn closed(record: &BackupRecord, status: JobStatus) -> Action {
    let mut job = record.job.clone();
    job.status = status;
    Action::Close(job)
}

fn states(record: &BackupRecord) -> Vec<DiskState> {
    record.disks.iter().map(|d| d.state).collect()
}

fn sync(record: &BackupRecord, i: usize) -> Action {
    Action::SyncTarget(record.targets[i].clone())
}

fn synced(disk: usize, error: Option<&str>) -> Event {
    Event::TargetSynced {
        job_id: id(disk),
        error: error.map(str::to_string),
    }
}

#[test]
fn completed_disks_are_cleaned_up_and_synced_and_the_last_ends_the_job_keeping_its_files() {
    let start = push();
    let (first, actions) = step(start.clone(), ended(0, JobOutcome::Completed, 10));
    // Counted as ended (the figures), complete only once synced.
    assert_eq!(states(&first), [DiskState::Closing, DiskState::Running]);
    assert_eq!(first.job.stats.transferred, 10);
    assert_eq!(actions, [Action::Save, cleanup(&start, 0), sync(&start, 0)]);
    let (first, actions) = step(first, synced(0, None));
    assert_eq!(states(&first), [DiskState::Complete, DiskState::Running]);
    assert_eq!(
        actions,
        [Action::Save, notify(&start, 0, BlockJobStatus::Completed)]
    );

    let (closing, actions) = step(first, ended(1, JobOutcome::Completed, 5));
    assert_eq!(actions, [Action::Save, cleanup(&start, 1), sync(&start, 1)]);
    let (done, actions) = step(closing, synced(1, None));
    let stats = BackupStats {
        total: 15,
        transferred: 15,
        ..BackupStats::default()
    };
    assert_eq!((done.job.stats, done.job.errmsg.as_deref()), (stats, None));
    // Targets and the new checkpoint stay; the job's event comes before
    // the last disk's.
    assert_eq!(
        actions,
        [
            closed(&done, JobStatus::Completed),
            notify(&start, 1, BlockJobStatus::Completed)
        ]
    );
}

#[test]
fn a_target_that_cannot_be_synced_fails_its_disk_and_the_job_removing_what_it_made() {
    let start = push();
    let (first, _) = step(start.clone(), ended(0, JobOutcome::Completed, 10));
    // vdb goes on: a closing disk is not running any more, nor done.
    let (first, actions) = step(first, Event::Abort);
    assert_eq!(actions, [Action::Save, Action::Cancel(vec![id(1)])]);
    let (first, actions) = step(first, ended(1, JobOutcome::Cancelled, 0));
    assert_eq!(states(&first), [DiskState::Closing, DiskState::Cancelled]);
    assert_eq!(
        actions,
        [
            Action::Save,
            cleanup(&start, 1),
            notify(&start, 1, BlockJobStatus::Cancelled)
        ]
    );
    let (done, actions) = step(first, synced(0, Some("unable to sync")));
    assert_eq!(states(&done), [DiskState::Failed, DiskState::Cancelled]);
    assert_eq!(done.job.errmsg.as_deref(), Some("Operation canceled"));
    assert_eq!(
        actions,
        [
            Action::RemoveFiles(start.targets.clone()),
            Action::DropCheckpoint("cp1".into()),
            closed(&done, JobStatus::Failed),
            notify(&start, 0, BlockJobStatus::Failed)
        ]
    );

    // Alone, its error is the job's.
    let (first, _) = step(start.clone(), ended(1, JobOutcome::Completed, 5));
    let (first, _) = step(first, synced(1, None));
    let (first, _) = step(first, ended(0, JobOutcome::Completed, 10));
    let (done, actions) = step(first, synced(0, Some("unable to sync")));
    assert_eq!(done.job.errmsg.as_deref(), Some("unable to sync"));
    assert_eq!(
        actions[..2],
        [
            Action::RemoveFiles(start.targets.clone()),
            Action::DropCheckpoint("cp1".into()),
        ]
    );
    // A sync that comes back after the job ended otherwise changes nothing.
    let (after, actions) = step(done.clone(), synced(0, None));
    assert_eq!((after, actions), (done, vec![]));
}

#[test]
fn a_restarted_daemon_syncs_a_closing_target_again() {
    let (first, _) = step(push(), ended(0, JobOutcome::Completed, 10));
    let (same, actions) = step(first.clone(), Event::Restarted { qemu: true });
    assert_eq!(same, first);
    assert_eq!(
        actions,
        [
            Action::Detach(push().targets[0].clone()),
            sync(&push(), 0),
            Action::Follow {
                pending: vec![id(1)],
                cancelling: HashSet::new(),
            }
        ]
    );
}

#[test]
fn a_pull_disk_is_not_synced() {
    let (first, actions) = step(pull(), ended(0, JobOutcome::Completed, 0));
    assert_eq!(states(&first), [DiskState::Complete, DiskState::Running]);
    assert!(!actions.iter().any(|a| matches!(a, Action::SyncTarget(_))));
}

#[test]
fn a_failed_disk_cancels_the_rest_and_the_job_fails_with_the_first_error() {
    let start = push();
    let (first, actions) = step(start.clone(), ended(0, JobOutcome::Failed("EIO".into()), 3));
    assert_eq!(states(&first), [DiskState::Failed, DiskState::Running]);
    assert_eq!(
        actions,
        [
            Action::Save,
            cleanup(&start, 0),
            Action::Cancel(vec![id(1)]),
            notify(&start, 0, BlockJobStatus::Failed)
        ]
    );

    let canceled = JobOutcome::Failed("Operation canceled".into());
    let (done, actions) = step(first, ended(1, canceled, 1));
    assert_eq!(done.job.errmsg.as_deref(), Some("EIO"));
    assert_eq!(
        actions,
        [
            cleanup(&start, 1),
            Action::RemoveFiles(start.targets.clone()),
            Action::DropCheckpoint("cp1".into()),
            closed(&done, JobStatus::Failed),
            notify(&start, 1, BlockJobStatus::Failed)
        ]
    );
}

#[test]
fn an_aborted_push_backup_ends_cancelled_and_removes_what_it_made() {
    let mut start = push();
    start.reuse = true;
    let (aborted, actions) = step(start.clone(), Event::Abort);
    let all = vec![id(0), id(1)];
    assert_eq!(aborted.cancel_requested, all.iter().cloned().collect());
    assert_eq!(actions, [Action::Save, Action::Cancel(all)]);

    // QEMU reports a cancelled job as failed; asked for, it counts as
    // cancelled. The rest is asked again, as libvirt does.
    let canceled = || JobOutcome::Failed("Operation canceled".into());
    let (first, actions) = step(aborted, ended(0, canceled(), 1));
    assert_eq!(states(&first), [DiskState::Cancelled, DiskState::Running]);
    assert_eq!(actions[2], Action::Cancel(vec![id(1)]));
    let (done, actions) = step(first, ended(1, JobOutcome::Cancelled, 0));
    assert_eq!(done.job.errmsg.as_deref(), Some("Operation canceled"));
    // REUSE_EXTERNAL: the files are the user's.
    assert_eq!(
        actions,
        [
            cleanup(&start, 1),
            Action::DropCheckpoint("cp1".into()),
            closed(&done, JobStatus::Cancelled),
            notify(&start, 1, BlockJobStatus::Cancelled)
        ]
    );
}

#[test]
fn qemu_gone_cancels_the_job_without_block_job_events() {
    let (_, actions) = step(push(), Event::QemuGone);
    assert_eq!(
        actions,
        [
            Action::RemoveFiles(push().targets),
            Action::DropCheckpoint("cp1".into()),
            closed(&push(), JobStatus::Cancelled)
        ]
    );
    let (after, actions) = step(pull(), Event::QemuGone);
    assert_eq!(
        actions,
        [
            Action::StopServer,
            Action::DropTls,
            Action::RemoveSocket(NbdAddress::Unix("/run/nbd.sock".into())),
            Action::RemoveFiles(pull().targets),
            closed(&pull(), JobStatus::Cancelled)
        ]
    );
    assert!(after.pull.is_some_and(|s| s.stopped));
}

#[test]
fn a_restarted_daemon_follows_what_still_runs_or_ends_the_job_without_qemu() {
    let (first, _) = step(push(), Event::Abort);
    let (first, _) = step(first, ended(0, JobOutcome::Cancelled, 0));
    // What the record says survives the file it is kept in.
    let json = serde_json::to_vec(&first).unwrap();
    let reloaded: BackupRecord = serde_json::from_slice(&json).unwrap();
    assert_eq!(reloaded, first);
    assert_eq!(reloaded.highest_node(), 4);

    let (same, actions) = step(reloaded.clone(), Event::Restarted { qemu: true });
    assert_eq!(same, reloaded);
    // vda is recorded as ended, but its cleanup may not have run.
    assert_eq!(
        actions,
        [
            Action::Detach(push().targets[0].clone()),
            Action::Follow {
                pending: vec![id(1)],
                cancelling: [id(0), id(1)].into(),
            }
        ]
    );
    // A job dismissed while no daemon listened has failed; its target
    // may still be attached (the daemon died before the detach).
    let (done, actions) = step(same, ended(1, JobOutcome::Vanished, 0));
    assert_eq!(
        actions,
        [
            Action::Detach(push().targets[1].clone()),
            Action::RemoveFiles(push().targets),
            Action::DropCheckpoint("cp1".into()),
            closed(&done, JobStatus::Failed),
            notify(&push(), 1, BlockJobStatus::Failed)
        ]
    );

    // QEMU gone meanwhile: nothing to tell it, no socket of its to stop.
    let (_, actions) = step(pull(), Event::Restarted { qemu: false });
    assert_eq!(
        actions,
        [
            Action::RemoveSocket(NbdAddress::Unix("/run/nbd.sock".into())),
            Action::RemoveFiles(pull().targets),
            closed(&pull(), JobStatus::Cancelled)
        ]
    );
}

#[test]
fn a_pull_abort_stops_the_server_once_then_ends_the_job_completed() {
    let start = pull();
    let (aborted, actions) = step(start.clone(), Event::Abort);
    let all = vec![id(0), id(1)];
    assert_eq!(
        actions,
        [
            Action::StopServer,
            Action::Save,
            Action::Cancel(all.clone())
        ]
    );
    // A second abort before QEMU answers asks again, the server stays stopped.
    let (aborted, actions) = step(aborted, Event::Abort);
    assert_eq!(actions[0], Action::Save);

    let (first, actions) = step(aborted, ended(0, JobOutcome::Cancelled, 4));
    assert_eq!(actions[0], Action::Save);
    let (done, actions) = step(first, ended(1, JobOutcome::Cancelled, 6));
    let stats = BackupStats {
        tmp_used: 10,
        tmp_total: 10,
        ..BackupStats::default()
    };
    assert_eq!(done.job.stats, stats);
    assert_eq!(done.job.errmsg.as_deref(), Some("Operation canceled"));
    // Scratch files always go; a pull backup's checkpoint stays.
    assert_eq!(
        actions,
        [
            cleanup(&start, 1),
            Action::DropTls,
            Action::RemoveSocket(NbdAddress::Unix("/run/nbd.sock".into())),
            Action::RemoveFiles(start.targets.clone()),
            closed(&done, JobStatus::Completed),
            notify(&start, 1, BlockJobStatus::Cancelled)
        ]
    );
}

#[test]
fn a_pull_disk_ending_on_its_own_stops_the_server_before_its_scratch_goes() {
    let start = pull();
    let (first, actions) = step(
        start.clone(),
        ended(0, JobOutcome::Failed("ENOSPC".into()), 2),
    );
    assert_eq!(
        actions,
        [
            Action::StopServer,
            Action::Save,
            cleanup(&start, 0),
            Action::Cancel(vec![id(1)]),
            notify(&start, 0, BlockJobStatus::Failed)
        ]
    );
    assert!(first.pull.is_some_and(|s| s.stopped));
}

#[test]
fn a_begin_cut_short_is_undone_as_an_abort_and_leaves_no_job() {
    let mut record = pull();
    record.checkpoint = Some("cp1".into());
    record.started = false;
    let (record, actions) = step(record, Event::Restarted { qemu: true });
    assert_eq!(
        actions,
        [
            Action::StopServer,
            Action::Cancel(vec![id(0), id(1)]),
            Action::Follow {
                pending: vec![id(0), id(1)],
                cancelling: [id(0), id(1)].into_iter().collect(),
            }
        ]
    );
    // Neither job had started: both vanish; the second ends the job, and
    // the checkpoint goes with it, pull or not.
    let (record, actions) = step(record, ended(0, JobOutcome::Vanished, 0));
    assert_eq!(
        actions,
        [
            Action::Save,
            Action::Detach(pull().targets[0].clone()),
            Action::Cancel(vec![id(1)]),
            notify(&pull(), 0, BlockJobStatus::Failed)
        ]
    );
    let (_, actions) = step(record, ended(1, JobOutcome::Vanished, 0));
    assert!(actions.contains(&Action::DropCheckpoint("cp1".into())));
    assert!(actions.contains(&Action::RemoveFiles(pull().targets)));
}
