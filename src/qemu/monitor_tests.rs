//! The monitor against a fake QEMU that replays fixtures/qmp transcripts.

use super::*;
use crate::qemu::error::QemuErrorKind;
use crate::qemu::events::{JobStatus, RunState, ShutdownCause, VmEvent};
use futures_util::FutureExt as _;
use qapi::qmp;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::task::JoinHandle;

enum Step {
    Send(String),
    Expect(Value),
    Eof,
}

fn transcript(name: &str) -> Vec<Step> {
    let path = format!("{}/fixtures/qmp/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            if let Some(sent) = line.strip_prefix("S: ") {
                Step::Send(sent.to_owned())
            } else if let Some(expected) = line.strip_prefix("C: ") {
                Step::Expect(serde_json::from_str(expected).expect("C: lines are JSON"))
            } else if line == "EOF" {
                Step::Eof
            } else {
                panic!("{name}: bad line {line:?}")
            }
        })
        .collect()
}

/// Plays QEMU's side of a transcript. After the last step it waits for the
/// client to hang up and fails if the client sends anything more.
async fn play(stream: UnixStream, steps: Vec<Step>) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for step in steps {
        match step {
            Step::Send(text) => {
                let line = format!("{text}\r\n");
                write
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Step::Expect(expected) => {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("client hung up, expected {expected}"))?;
                let got: Value = serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))?;
                if got != expected {
                    return Err(format!("expected {expected}, got {line}"));
                }
            }
            Step::Eof => return Ok(()),
        }
    }
    match lines.next_line().await {
        Ok(None) => Ok(()),
        Ok(Some(line)) => Err(format!("unexpected line after the transcript: {line}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn replay(name: &str) -> (Monitor, JoinHandle<Result<(), String>>) {
    let (client, server) = UnixStream::pair().unwrap();
    let server = tokio::spawn(play(server, transcript(name)));
    let monitor = Monitor::handshake(client).await.expect("handshake");
    (monitor, server)
}

#[tokio::test]
async fn typed_commands_events_and_errors() {
    let (monitor, server) = replay("basic.txt").await;
    assert_eq!(monitor.version().major, 7);
    assert_eq!(monitor.version().micro, 22);
    let mut events = monitor.events();

    let status = monitor.execute(qmp::query_status {}).await.unwrap();
    assert_eq!(status.status, RunState::prelaunch);
    assert!(!status.running);

    monitor.execute(qmp::cont {}).await.unwrap();
    // QEMU sent RESUME before the reply to cont; the reply was routed, and
    // the event was kept.
    let event = events.try_recv().unwrap();
    assert_eq!(event.name, "RESUME");
    assert_eq!(event.timestamp.microseconds, 782826);
    assert!(monitor.execute(qmp::query_status {}).await.unwrap().running);

    let err = monitor
        .execute_value("no-such-command", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::CommandFailed);
    assert!(matches!(&err, QemuError::CommandFailed { class, .. } if class == "CommandNotFound"));
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'no-such-command': The command no-such-command has not been found"
    );

    let block = monitor.hmp("info block").await.unwrap();
    assert!(block.starts_with("libvirt-2-format: /tmp/qt/vda.qcow2 (qcow2)\r\n"));

    monitor.execute(qmp::stop {}).await.unwrap();
    assert_eq!(events.try_recv().unwrap().name, "STOP");

    let err = monitor
        .execute(qmp::blockdev_del {
            node_name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to execute QEMU command 'blockdev-del': Failed to find node with node-name='nope'"
    );

    monitor.execute(qmp::quit {}).await.unwrap();
    let shutdown = VmEvent::from_qmp(events.try_recv().unwrap());
    assert_eq!(
        shutdown,
        VmEvent::Shutdown {
            guest: false,
            reason: ShutdownCause::host_qmp_quit
        }
    );
    monitor.closed().await;
    assert!(monitor.is_closed());
    let err = monitor.execute(qmp::query_status {}).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
    assert_eq!(err.to_string(), "domain is not running");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn passthrough_replies_as_libvirt_prints_them() {
    let (monitor, server) = replay("passthrough.txt").await;
    assert_eq!(
        monitor
            .execute_raw(r#"{"execute":"query-status"}"#)
            .await
            .unwrap(),
        r#"{"return":{"status":"prelaunch","singlestep":false,"running":false},"id":"libvirt-2"}"#
    );
    // Without "execute" libvirt adds no id, and QEMU's answer has none.
    assert_eq!(
        monitor.execute_raw("{}").await.unwrap(),
        r#"{"error":{"class":"GenericError","desc":"QMP input lacks member 'execute'"}}"#
    );
    assert_eq!(
        monitor.execute_raw(" [ 1 ] ").await.unwrap(),
        r#"{"error":{"class":"GenericError","desc":"QMP input must be a JSON object"}}"#
    );
    assert_eq!(
        monitor.execute_raw(r#"{"id": "mine"}"#).await.unwrap(),
        r#"{"id":"mine","error":{"class":"GenericError","desc":"QMP input lacks member 'execute'"}}"#
    );
    // Refused before anything is sent, as libvirt does.
    let err = monitor
        .execute_raw(r#"{"execute":"query-name","id":"x"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Internal);
    assert_eq!(err.to_string(), "Unable to append command 'id' string");
    let err = monitor.execute_raw("not json").await.unwrap_err();
    assert!(
        err.to_string().starts_with("cannot parse json not json: "),
        "{err}"
    );
    let err = monitor
        .execute_raw(r#"{"id":"libvirt-9"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Internal);

    assert_eq!(
        monitor
            .execute_raw("{ \"execute\" : \"query-name\" }\n")
            .await
            .unwrap(),
        r#"{"return":{"name":"vm1"},"id":"libvirt-3"}"#
    );
    let out = monitor
        .hmp(r#"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x5a 0 1M""#)
        .await
        .unwrap();
    assert_eq!(out, "");
    let status = monitor.execute(qmp::query_status {}).await.unwrap();
    assert_eq!(status.status, RunState::prelaunch);
    drop(monitor);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn eof_fails_the_pending_command() {
    let (monitor, server) = replay("eof-pending.txt").await;
    let closed = monitor.closed();
    let err = monitor.execute(qmp::query_status {}).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
    closed.await;
    let err = monitor.execute_raw("{}").await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn odd_messages_do_not_stop_the_reader() {
    let (monitor, server) = replay("odd-peer.txt").await;
    let mut events = monitor.events();
    let status = monitor.execute(qmp::query_status {}).await.unwrap();
    assert!(status.running);
    let names: Vec<VmEvent> = std::iter::from_fn(|| events.try_recv().ok())
        .map(VmEvent::from_qmp)
        .collect();
    assert_eq!(names.len(), 3);
    assert!(matches!(&names[0], VmEvent::Other(e) if e.name == "SOME_FUTURE_EVENT"));
    assert!(matches!(&names[1], VmEvent::Other(e) if e.name == "JOB_STATUS_CHANGE"));
    assert_eq!(
        names[2],
        VmEvent::JobStatusChange {
            id: "backup-vda".into(),
            status: JobStatus::running
        }
    );
    drop(monitor);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_abandoned_command_does_not_take_the_next_reply() {
    let (monitor, _server) = replay("basic.txt").await;
    let mut events = monitor.events();
    // Polled once (queued for writing), then given up on.
    let abandoned = monitor.execute(qmp::query_status {}).now_or_never();
    assert!(abandoned.is_none());
    // libvirt-2 is still written and answered; the answer is dropped and
    // cont (libvirt-3) gets its own.
    monitor.execute(qmp::cont {}).await.unwrap();
    assert_eq!(events.try_recv().unwrap().name, "RESUME");
    assert!(monitor.execute(qmp::query_status {}).await.unwrap().running);
}

#[tokio::test]
async fn an_overlong_line_closes_the_connection() {
    let (client, server) = UnixStream::pair().unwrap();
    let mut steps = transcript("eof-pending.txt");
    steps.pop(); // EOF
    steps.push(Step::Send(format!(
        "{{\"return\": \"{}\"}}",
        "x".repeat(4096)
    )));
    let server = tokio::spawn(play(server, steps));
    let monitor = Monitor::handshake_limited(client, 1024).await.unwrap();
    let err = monitor.execute(qmp::query_status {}).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
    assert!(monitor.is_closed());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn greeting_must_be_qmp() {
    let (client, mut server) = UnixStream::pair().unwrap();
    server.write_all(b"{\"hello\": 1}\r\n").await.unwrap();
    let err = Monitor::handshake(client).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Protocol);

    let (client, server) = UnixStream::pair().unwrap();
    drop(server);
    let err = Monitor::handshake(client).await.unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::NotRunning);
}

#[tokio::test]
async fn connect_times_out_on_a_silent_peer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    let err = Monitor::connect_timeout(&path, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Timeout);
    let err = Monitor::connect_timeout(&dir.path().join("absent"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), QemuErrorKind::Io);
}
