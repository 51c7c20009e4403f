//! One client connection's state: whether it is open and read-only, its
//! event registrations, and the channel its frames go out on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::driver::{DriverError, Uuid};

use super::server::ServerShared;

/// One domain event registration (virConnectDomainEventRegisterAny).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub event_id: i32,
    /// Only this domain's events, when set.
    pub dom: Option<Uuid>,
    /// Registered through the legacy procedures: messages carry no callback id.
    pub legacy: bool,
}

#[derive(Default)]
struct State {
    open: Option<OpenConnection>,
    close_callback: bool,
    callbacks: BTreeMap<i32, Registration>,
}

#[derive(Debug, Clone)]
pub struct OpenConnection {
    pub uri: String,
    pub readonly: bool,
}

pub struct Client {
    pub id: u64,
    pub server: Arc<ServerShared>,
    /// Connected through the read-only socket.
    readonly_socket: bool,
    state: Mutex<State>,
    out: mpsc::Sender<Bytes>,
    /// Turned on when the client asks for the keepalive feature; the
    /// connection loop waits on it.
    keepalive: watch::Sender<bool>,
}

impl Client {
    pub fn new(
        id: u64,
        server: Arc<ServerShared>,
        readonly_socket: bool,
        out: mpsc::Sender<Bytes>,
    ) -> Client {
        Client {
            id,
            server,
            readonly_socket,
            state: Mutex::default(),
            out,
            keepalive: watch::Sender::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn send(&self, frame: Bytes) -> Result<(), mpsc::error::SendError<Bytes>> {
        self.out.send(frame).await
    }

    pub fn open(&self, uri: String, readonly: bool) -> Result<(), DriverError> {
        let mut st = self.state();
        if st.open.is_some() {
            return Err(DriverError::internal("connection already open"));
        }
        st.open = Some(OpenConnection {
            uri,
            readonly: readonly || self.readonly_socket,
        });
        Ok(())
    }

    pub fn opened(&self) -> Option<OpenConnection> {
        self.state().open.clone()
    }

    pub fn is_readonly(&self) -> bool {
        self.readonly_socket || self.state().open.as_ref().is_some_and(|o| o.readonly)
    }

    pub fn enable_keepalive(&self) {
        self.keepalive.send_replace(true);
    }

    pub fn keepalive_watch(&self) -> watch::Receiver<bool> {
        self.keepalive.subscribe()
    }

    pub fn set_close_callback(&self, on: bool) {
        self.state().close_callback = on;
    }

    pub fn register(&self, registration: Registration) -> i32 {
        let id = self.server.next_callback_id();
        self.state().callbacks.insert(id, registration);
        id
    }

    pub fn deregister(&self, callback_id: i32) -> Option<Registration> {
        self.state().callbacks.remove(&callback_id)
    }

    /// Legacy deregistration names the event kind, not a callback id.
    pub fn deregister_legacy(&self, event_id: i32) -> bool {
        let mut st = self.state();
        let found = st
            .callbacks
            .iter()
            .find(|(_, r)| r.legacy && r.event_id == event_id)
            .map(|(id, _)| *id);
        found.is_some_and(|id| st.callbacks.remove(&id).is_some())
    }

    /// The registrations an event of `event_id` for `dom` goes to.
    pub fn matching(&self, event_id: i32, dom: &Uuid) -> Vec<(i32, Registration)> {
        self.state()
            .callbacks
            .iter()
            .filter(|(_, r)| r.event_id == event_id && r.dom.is_none_or(|d| &d == dom))
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    /// The connection is going away: nothing more is delivered to it.
    pub fn close(&self) {
        let mut st = self.state();
        st.callbacks.clear();
        st.open = None;
    }
}
