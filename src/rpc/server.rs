//! Connections: one task per client, whatever the transport.
//!
//! The flow of one connection:
//!
//! 1. A reader loop takes frames off the socket (the codec refuses any
//!    length over libvirt's message limit before buffering it).
//! 2. Keepalive messages are answered in the loop itself, so a slow call
//!    never delays a PONG.
//! 3. A call is first run in the connection's own task, up to its first
//!    wait: most calls (lookups, XML, info) finish there and are answered
//!    at once, with no hand-over to another task or thread — that
//!    hand-over (a task woken on the other core, and woken again to write)
//!    was most of the daemon's CPU per call. A call that has to wait (QMP,
//!    a domain's job, the blocking pool) goes on in a task of its own, at
//!    most [`CALLS_IN_FLIGHT`] at once per connection; when that many are
//!    running the reader stops reading, which pushes back on the client
//!    instead of queueing without bound.
//! 4. Only the connection's task writes to the socket, so frames never
//!    interleave: its own replies, events and keepalive messages directly,
//!    and the replies of calls that went on in their own task through one
//!    bounded channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::driver::Driver;

use super::client::Client;
use super::frame::{self, kind, Header};
use super::listen::Listeners;
use super::{dispatch, events, keepalive};

/// Calls one connection may have running at once.
const CALLS_IN_FLIGHT: usize = 16;
/// Frames queued for one connection's writer.
const OUTBOX: usize = 64;
/// Connections served at once.
const MAX_CLIENTS: usize = 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A ping after this much silence from a client that asked for
    /// keepalive (libvirtd's keepalive_interval, 5 s)...
    pub keepalive_interval: Duration,
    /// ...and the connection closed after this many went unanswered
    /// (keepalive_count, 5).
    pub keepalive_count: u32,
}

/// What all connections share.
pub struct ServerShared {
    pub driver: Driver,
    keepalive: (Duration, u32),
    next_callback_id: AtomicI32,
    next_client_id: AtomicU64,
    clients: Arc<Semaphore>,
}

impl ServerShared {
    /// Event callback ids are unique across the server, as in libvirtd.
    pub fn next_callback_id(&self) -> i32 {
        self.next_callback_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl ServerShared {
    /// A place for one more connection, or `None` (and a warning) when
    /// [`MAX_CLIENTS`] are connected.
    pub(super) fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.clients.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!("refusing a connection: {MAX_CLIENTS} clients already");
        }
        permit
    }
}

/// Serves clients on `listeners` until `shutdown` resolves.
pub async fn serve(
    driver: Driver,
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = Arc::new(ServerShared {
        driver,
        keepalive: (config.keepalive_interval, config.keepalive_count),
        next_callback_id: AtomicI32::new(0),
        next_client_id: AtomicU64::new(1),
        clients: Arc::new(Semaphore::new(MAX_CLIENTS)),
    });
    listeners.accept_all(shared, shutdown).await;
}

/// One client on any byte stream: a unix socket, TCP, or TLS over TCP.
pub(super) async fn serve_connection<S>(shared: Arc<ServerShared>, stream: S, readonly: bool)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let (read_half, write_half) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(OUTBOX);
    let mut sink = FramedWrite::new(write_half, frame::write_codec());

    let client = Arc::new(Client::new(id, shared.clone(), readonly, out_tx));
    let mut frames = FramedRead::new(read_half, frame::FrameReader::new());
    let mut driver_events = shared.driver.subscribe();
    let calls = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    let mut keepalive = keepalive::State::new(shared.keepalive.0, shared.keepalive.1);
    let mut keepalive_on = client.keepalive_watch();
    tracing::debug!(client = id, readonly, "connected");

    loop {
        tokio::select! {
            frame = frames.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame.freeze(),
                    Some(Err(err)) => {
                        tracing::debug!(client = id, %err, "closing: bad frame");
                        break;
                    }
                    None => break,
                };
                keepalive.received();
                let Ok((header, _)) = Header::parse(&frame) else {
                    tracing::debug!(client = id, "closing: frame shorter than a header");
                    break;
                };
                if keepalive::is_keepalive(&header) {
                    if let Some(pong) = keepalive::answer(&header) {
                        if sink.send(pong).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
                if header.kind != kind::CALL && header.kind != kind::CALL_WITH_FDS {
                    // Streams and stray replies have no place here; libvirtd
                    // drops them too.
                    tracing::debug!(client = id, kind = header.kind, "ignoring non-call message");
                    continue;
                }
                let read_at = Instant::now();
                let procedure = header.proc_;
                let Ok(permit) = calls.clone().acquire_owned().await else { break };
                let body = frame.slice(frame::HEADER_SIZE..);
                let call_client = client.clone();
                let mut call = Box::pin(async move {
                    let reply = dispatch::dispatch(&call_client, header, body).await;
                    drop(permit);
                    reply
                });
                match poll_once(call.as_mut()).await {
                    Poll::Ready(reply) => {
                        if let Some(reply) = reply {
                            if sink.send(reply).await.is_err() {
                                break;
                            }
                        }
                        served(id, procedure, read_at, true);
                    }
                    // The call waits: it goes on in a task of its own (the
                    // box keeps it where it was polled, and that task's
                    // first poll hands it the new waker).
                    Poll::Pending => {
                        let client = client.clone();
                        tokio::spawn(async move {
                            if let Some(reply) = call.await {
                                let _ = client.send(reply).await;
                            }
                            served(id, procedure, read_at, false);
                        });
                    }
                }
            }
            Some(reply) = out_rx.recv() => {
                if sink.send(reply).await.is_err() {
                    break;
                }
            }
            event = driver_events.recv() => match event {
                Ok(event) => {
                    for message in events::encode_for(&client, &event) {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(client = id, missed = n, "client too slow for events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            action = keepalive.tick(&mut keepalive_on) => match action {
                keepalive::Action::Ping => {
                    if sink.send(keepalive::ping()).await.is_err() {
                        break;
                    }
                }
                keepalive::Action::Dead => {
                    tracing::info!(client = id, "closing: keepalive timed out");
                    break;
                }
            },
        }
    }
    // The replies of calls still running are written as they come, until
    // the last of them has dropped its handle on the channel.
    client.close();
    drop(client);
    while let Some(reply) = out_rx.recv().await {
        if sink.send(reply).await.is_err() {
            break;
        }
    }
    tracing::debug!(client = id, "disconnected");
}

/// How long the daemon itself took over a call, from its frame read off
/// the socket to its reply written (`inline`) or handed to the
/// connection's writer: with `RUST_LOG=virtbackupd::rpc::timing=trace`,
/// benchmarks tell the daemon's share of a latency from the time the
/// client and the request spent waiting for a core before that.
fn served(client: u64, procedure: i32, read_at: Instant, inline: bool) {
    tracing::trace!(
        target: "virtbackupd::rpc::timing",
        client,
        procedure,
        inline,
        us = read_at.elapsed().as_micros() as u64,
        "served"
    );
}

/// Polls `fut` once, in the calling task.
async fn poll_once<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}
