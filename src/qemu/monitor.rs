//! The QMP client: one [`Monitor`] per running QEMU.
//!
//! # Why the qapi crate's types but our own transport
//!
//! Commands are the typed structs the `qapi` crate generates from QEMU's
//! schema (`qapi::qmp::query_status {}`, `blockdev_add(..)`, `transaction`,
//! ...): each implements [`qapi::Command`], which names the command and types
//! its reply. The crate's own stream is not used, because
//!
//! 1. it can only send typed commands (`Command::NAME` is `&'static str`),
//!    while `virsh qemu-monitor-command` passes arbitrary JSON through;
//! 2. it stops reading on an event it cannot deserialize, so one event from
//!    a newer or older QEMU than its schema would lose all later replies;
//! 3. without out-of-band execution it holds its write lock until the reply
//!    arrives, so one slow command holds up every other one.
//!
//! # How it works
//!
//! - Connect, read the greeting, send `qmp_capabilities`, all within a
//!   timeout.
//! - Every command carries an `"id"` of the form `libvirt-N`, counted per
//!   connection from 1 as libvirt does, so passthrough replies look the same.
//! - One reader task reads newline-delimited JSON (a line is bounded by
//!   [`MAX_LINE`], so a broken peer cannot make us allocate without limit).
//!   Replies go to the waiting caller by id; events go to a broadcast
//!   channel as [`QmpEvent`]s. A reply without one of our ids answers the
//!   oldest passthrough command that was sent without one (QEMU answers
//!   in-band commands in order).
//! - One writer task owns the socket's write half and writes whole lines.
//!   Callers hand it a line and wait for their reply without holding any
//!   lock, so a slow command does not hold up others, and a caller that
//!   gives up half-way (a dropped future) cannot leave half a line behind.
//! - When the connection ends (EOF, I/O error, protocol violation), every
//!   pending and later command fails with [`QemuError::NotRunning`] and
//!   [`Monitor::closed`] resolves. Dropping the last `Monitor` clone closes
//!   the connection, so QEMU can accept a new client.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tracing::{debug, warn};

use super::error::QemuError;
use super::events::QmpEvent;
use super::json;
use crate::fault::{Counted, Step};

/// The longest line we accept from QEMU. Real replies are far smaller; this
/// only bounds what a broken peer can make us buffer.
pub const MAX_LINE: usize = 64 << 20;

/// How long connecting, greeting and capability negotiation may take
/// (libvirt waits 30 s for the monitor too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Buffered events per receiver before the slowest one starts losing them.
const EVENT_CAPACITY: usize = 1024;

/// Lines waiting for the writer task.
const WRITE_QUEUE: usize = 64;

/// QEMU's version, from the QMP greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    /// Major version.
    pub major: i64,
    /// Minor version.
    pub minor: i64,
    /// Micro version.
    pub micro: i64,
    /// Distribution package string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3".
    pub package: String,
}

/// A reply as read: the original line (for passthrough) and its members.
#[derive(Debug)]
struct Reply {
    raw: String,
    members: Map<String, Value>,
}

/// Who waits for which reply. Guarded by a std mutex: it is only held for a
/// map operation, never across an await.
#[derive(Default)]
struct Routes {
    /// Our commands, by the N of `libvirt-N`.
    named: HashMap<u64, oneshot::Sender<Reply>>,
    /// Passthrough commands sent without our id, in the order written.
    unnamed: VecDeque<oneshot::Sender<Reply>>,
    closed: bool,
}

/// State shared by the handle and the two tasks.
struct Shared {
    routes: Mutex<Routes>,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic elsewhere while holding the lock leaves the map usable.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection closed; dropping the senders fails every waiter.
    fn close(&self) {
        let (named, unnamed) = {
            let mut routes = self.routes();
            routes.closed = true;
            (
                std::mem::take(&mut routes.named),
                std::mem::take(&mut routes.unnamed),
            )
        };
        drop((named, unnamed));
        self.closed.send_replace(true);
    }
}

/// Closes the connection state when the reader task ends, however it ends
/// (EOF, error, or abort when the last `Monitor` is dropped).
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Removes a named waiter whose caller gave up before the reply came.
struct NamedGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for NamedGuard<'_> {
    fn drop(&mut self) {
        self.shared.routes().named.remove(&self.id);
    }
}

struct WriteRequest {
    line: Vec<u8>,
    /// Set for a passthrough command without our id: registered as waiter
    /// by the writer, so that registration order is write order.
    unnamed: Option<oneshot::Sender<Reply>>,
    done: oneshot::Sender<io::Result<()>>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteRequest>,
    next_id: AtomicU64,
    version: QemuVersion,
    /// The receiver created before the reader started: handed out by the
    /// first [`Monitor::events`] call so that no early event is missed.
    first_events: Mutex<Option<broadcast::Receiver<QmpEvent>>>,
    /// QEMU's pid, as the socket's peer credentials give it.
    peer: Option<i32>,
    tasks: [AbortHandle; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A QMP connection. Cheap to clone; the connection closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("version", &self.inner.version)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Connects to a QMP socket and negotiates capabilities, within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(path: &Path) -> Result<Monitor, QemuError> {
        Monitor::connect_timeout(path, CONNECT_TIMEOUT).await
    }

    /// [`Monitor::connect`] with another time limit.
    pub async fn connect_timeout(path: &Path, limit: Duration) -> Result<Monitor, QemuError> {
        let attempt = async {
            let stream = UnixStream::connect(path).await.map_err(|e| {
                QemuError::io(
                    format!("cannot connect to QEMU monitor at '{}'", path.display()),
                    e,
                )
            })?;
            Monitor::handshake(stream).await
        };
        tokio::time::timeout(limit, attempt).await.map_err(|_| {
            QemuError::Timeout(format!(
                "timed out connecting to QEMU monitor at '{}'",
                path.display()
            ))
        })?
    }

    /// Reads the greeting from a connected stream, starts the reader and
    /// writer tasks and negotiates capabilities. No time limit of its own.
    pub async fn handshake(stream: UnixStream) -> Result<Monitor, QemuError> {
        Monitor::handshake_limited(stream, MAX_LINE).await
    }

    /// [`Monitor::handshake`] with another line length limit.
    pub(crate) async fn handshake_limited(
        stream: UnixStream,
        max_line: usize,
    ) -> Result<Monitor, QemuError> {
        // Only the fault-injection switch uses it (kill-qemu).
        let peer = stream.peer_cred().ok().and_then(|c| c.pid());
        let (read, write) = stream.into_split();
        let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(max_line));
        let greeting = match lines.next().await {
            Some(Ok(line)) => line,
            Some(Err(e)) => return Err(line_error(e)),
            None => return Err(QemuError::NotRunning),
        };
        let version = parse_greeting(&greeting)?;
        debug!(?version, "QMP greeting");

        let (events, first_events) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            events,
            closed: watch::Sender::new(false),
        });
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_loop(lines, CloseOnDrop(shared.clone())));
        let writer_task = tokio::spawn(write_loop(write, queue, shared.clone()));
        let monitor = Monitor {
            inner: Arc::new(Inner {
                shared,
                writer,
                next_id: AtomicU64::new(0),
                version,
                first_events: Mutex::new(Some(first_events)),
                peer,
                tasks: [reader.abort_handle(), writer_task.abort_handle()],
            }),
        };
        monitor
            .execute_value("qmp_capabilities", Value::Object(Map::new()))
            .await?;
        Ok(monitor)
    }

    /// QEMU's version as the greeting gave it.
    pub fn version(&self) -> &QemuVersion {
        &self.inner.version
    }

    /// Runs a typed command and decodes its `return`.
    pub async fn execute<C: qapi::Command>(&self, command: C) -> Result<C::Ok, QemuError> {
        let arguments = serde_json::to_value(&command).map_err(|e| {
            QemuError::InvalidInput(format!("cannot encode QEMU command '{}': {e}", C::NAME))
        })?;
        let ret = self.execute_value(C::NAME, arguments).await?;
        serde_json::from_value(ret).map_err(|e| {
            QemuError::Protocol(format!(
                "cannot decode the reply to QEMU command '{}': {e}",
                C::NAME
            ))
        })
    }

    /// Runs a command given by name and JSON arguments (an empty object or
    /// `null` sends none) and returns its `return` member.
    pub async fn execute_value(&self, name: &str, arguments: Value) -> Result<Value, QemuError> {
        let id = self.next_id();
        let mut line = String::from("{\"execute\":");
        json::escape_into(&mut line, name);
        let empty = match &arguments {
            Value::Null => true,
            Value::Object(map) => map.is_empty(),
            _ => false,
        };
        if !empty {
            line.push_str(",\"arguments\":");
            line.push_str(&arguments.to_string());
        }
        line.push_str(&format!(",\"id\":\"libvirt-{id}\"}}"));
        // The crash tests stop here: before the command, or once its
        // reply is in (see crate::fault). Only commands that change
        // something count: a crash around a query (or a poll) is one
        // around the change before or after it. `qmp_capabilities` is part
        // of connecting, not of an operation.
        let changes =
            !(name.starts_with("query-") || name == "qom-get" || name == "qmp_capabilities");
        let counted = changes
            .then(|| Counted::before(Step::Qmp, name, self.inner.peer))
            .transpose()
            .map_err(|e| QemuError::io("fault injection", e))?;
        let reply = self.round_trip_named(id, line).await?;
        if let Some(counted) = counted {
            counted.after(name);
        }
        check_reply(name, reply.members)
    }

    /// Sends a user's JSON text as `virsh qemu-monitor-command` does and
    /// returns QEMU's reply as libvirt prints it (compact, QEMU's member
    /// order), error replies included.
    ///
    /// As in libvirt's qemuMonitorJSONCommandWithFd, a command with an
    /// `execute` member gets our `libvirt-N` id appended (and one that
    /// brings its own id is refused with libvirt's text); anything else is
    /// sent as it is and QEMU's error reply returned.
    pub async fn execute_raw(&self, text: &str) -> Result<String, QemuError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| QemuError::Internal(format!("cannot parse json {text}: {e}")))?;
        let compact = json::compact(text)?;
        let reply = match &value {
            Value::Object(map) if map.contains_key("execute") => {
                if map.contains_key("id") {
                    return Err(QemuError::Internal(
                        "Unable to append command 'id' string".to_owned(),
                    ));
                }
                let id = self.next_id();
                // `compact` of an object ends with its closing brace.
                let body = compact.strip_suffix('}').unwrap_or(&compact);
                let line = format!("{body},\"id\":\"libvirt-{id}\"}}");
                self.round_trip_named(id, line).await?
            }
            other => {
                if let Some(Value::String(id)) = other.get("id") {
                    if parse_id(id).is_some() {
                        // Its reply would be taken for one of ours.
                        return Err(QemuError::Internal(format!(
                            "command id '{id}' is reserved"
                        )));
                    }
                }
                self.round_trip_unnamed(compact).await?
            }
        };
        json::compact(&reply.raw)
    }

    /// Runs an HMP command through `human-monitor-command` and returns its
    /// output.
    pub async fn hmp(&self, command_line: &str) -> Result<String, QemuError> {
        self.execute(qapi::qmp::human_monitor_command {
            command_line: command_line.to_owned(),
            cpu_index: None,
        })
        .await
    }

    /// A receiver of QMP events. The first call gets every event since the
    /// greeting; later calls get events from the call on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        let first = self
            .inner
            .first_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        first.unwrap_or_else(|| self.inner.shared.events.subscribe())
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// Resolves once the connection has ended. Does not keep the monitor
    /// open.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.inner.shared.closed.subscribe();
        async move {
            // An error means the sender is gone, which also means closed.
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// The closed state as a watch (`true` once the connection has ended),
    /// for tasks that check it in a loop or `select!` on it.
    pub fn closed_watch(&self) -> watch::Receiver<bool> {
        self.inner.shared.closed.subscribe()
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn round_trip_named(&self, id: u64, line: String) -> Result<Reply, QemuError> {
        let shared = &*self.inner.shared;
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = shared.routes();
            if routes.closed {
                return Err(QemuError::NotRunning);
            }
            routes.named.insert(id, tx);
        }
        let _guard = NamedGuard { shared, id };
        debug!(%line, "QMP send");
        self.write(line, None).await?;
        rx.await.map_err(|_| QemuError::NotRunning)
    }

    async fn round_trip_unnamed(&self, line: String) -> Result<Reply, QemuError> {
        let (tx, rx) = oneshot::channel();
        debug!(%line, "QMP send (no id)");
        self.write(line, Some(tx)).await?;
        rx.await.map_err(|_| QemuError::NotRunning)
    }

    async fn write(
        &self,
        mut line: String,
        unnamed: Option<oneshot::Sender<Reply>>,
    ) -> Result<(), QemuError> {
        line.push_str("\r\n");
        let (done, written) = oneshot::channel();
        let request = WriteRequest {
            line: line.into_bytes(),
            unnamed,
            done,
        };
        self.inner
            .writer
            .send(request)
            .await
            .map_err(|_| QemuError::NotRunning)?;
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if is_disconnect(&e) => Err(QemuError::NotRunning),
            Ok(Err(e)) => Err(QemuError::io("cannot write to the QEMU monitor", e)),
            Err(_) => Err(QemuError::NotRunning),
        }
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

fn line_error(e: LinesCodecError) -> QemuError {
    match e {
        LinesCodecError::MaxLineLengthExceeded => {
            QemuError::Protocol("QEMU sent an overlong line".to_owned())
        }
        LinesCodecError::Io(e) if is_disconnect(&e) => QemuError::NotRunning,
        LinesCodecError::Io(e) => QemuError::io("cannot read from the QEMU monitor", e),
    }
}

/// The N of an id `libvirt-N`, if it is one of ours.
fn parse_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("libvirt-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_greeting(line: &str) -> Result<QemuVersion, QemuError> {
    let bad = || QemuError::Protocol(format!("unexpected QMP greeting: {line}"));
    let value: Value = serde_json::from_str(line).map_err(|_| bad())?;
    let info = value
        .get("QMP")
        .and_then(|qmp| qmp.get("version"))
        .cloned()
        .ok_or_else(bad)?;
    let info: qapi::qmp::VersionInfo = serde_json::from_value(info).map_err(|_| bad())?;
    Ok(QemuVersion {
        major: info.qemu.major,
        minor: info.qemu.minor,
        micro: info.qemu.micro,
        package: info.package,
    })
}

/// The `return` member of a reply, or libvirt's error for it.
fn check_reply(name: &str, mut members: Map<String, Value>) -> Result<Value, QemuError> {
    if let Some(error) = members.remove("error") {
        let class = error.get("class").and_then(Value::as_str);
        let desc = error.get("desc").and_then(Value::as_str);
        // libvirt trusts `desc` only when `class` is present too.
        let desc = match (class, desc) {
            (Some(_), Some(desc)) => desc,
            _ => "unknown QEMU command error",
        };
        return Err(QemuError::CommandFailed {
            command: name.to_owned(),
            class: class.unwrap_or_default().to_owned(),
            desc: desc.to_owned(),
        });
    }
    members.remove("return").ok_or_else(|| QemuError::NoReturn {
        command: name.to_owned(),
    })
}

type Lines = FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>;

/// Reads until the connection ends, routing replies and publishing events.
async fn read_loop(mut lines: Lines, close: CloseOnDrop) {
    let shared = &*close.0;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => route(shared, line),
            Err(e) => {
                warn!("QEMU monitor: {}", line_error(e));
                break;
            }
        }
    }
    debug!("QEMU monitor closed");
    // `close` drops here and fails everyone still waiting.
}

fn route(shared: &Shared, line: String) {
    let members = match serde_json::from_str::<Value>(&line) {
        Ok(Value::Object(members)) => members,
        _ => {
            warn!(%line, "QEMU monitor sent something that is not a JSON object");
            return;
        }
    };
    if members.contains_key("event") {
        debug!(%line, "QMP event");
        if let Some(event) = QmpEvent::from_message(members) {
            // No receiver is not an error: nobody listens yet or any more.
            let _ = shared.events.send(event);
        }
        return;
    }
    if !members.contains_key("return") && !members.contains_key("error") {
        warn!(%line, "QEMU monitor sent neither a reply nor an event");
        return;
    }
    debug!(%line, "QMP reply");
    let ours = members.get("id").and_then(Value::as_str).and_then(parse_id);
    let waiter = {
        let mut routes = shared.routes();
        match ours {
            // A reply to one of ours whose caller gave up has no taker; it
            // must not be handed to a passthrough caller.
            Some(id) => routes.named.remove(&id),
            None => routes.unnamed.pop_front(),
        }
    };
    match waiter {
        Some(waiter) => {
            let _ = waiter.send(Reply { raw: line, members });
        }
        None => debug!("QMP reply nobody waits for"),
    }
}

/// Writes whole lines in order; reports each write's result to its caller.
/// Ends when the reader has seen the connection end, so that the socket is
/// closed completely and QEMU can accept a new client.
async fn write_loop(
    mut write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<WriteRequest>,
    shared: Arc<Shared>,
) {
    let mut closed = shared.closed.subscribe();
    loop {
        let request = tokio::select! {
            biased;
            // An error means the sender is gone: closed as well.
            _ = closed.wait_for(|closed| *closed) => break,
            request = queue.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        if let Some(waiter) = request.unnamed {
            let mut routes = shared.routes();
            if routes.closed {
                // Dropping the waiter tells the caller: not running.
                continue;
            }
            routes.unnamed.push_back(waiter);
        }
        let result = async {
            write.write_all(&request.line).await?;
            write.flush().await
        }
        .await;
        let _ = request.done.send(result);
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
