//! libvirt's keepalive program: PING and PONG, with no payload.
//!
//! We answer every PING. We send our own only to clients that asked for
//! the keepalive feature (as libvirtd starts it from that request): a
//! client without an event loop, such as plain libvirt-python, could never
//! answer and would be dropped.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::frame::{kind, status, Header};

pub const PROGRAM: u32 = 0x6b65_6570;
const VERSION: u32 = 1;
const PING: i32 = 1;
const PONG: i32 = 2;

fn message(proc_: i32) -> Bytes {
    Header {
        prog: PROGRAM,
        vers: VERSION,
        proc_,
        kind: kind::MESSAGE,
        serial: 0,
        status: status::OK,
    }
    .encode(&[])
}

/// Whether libvirtd would take this as a keepalive message: anything else
/// from the keepalive program (another version, a call) is routed like
/// any call to a program we do not serve.
pub fn is_keepalive(header: &Header) -> bool {
    header.prog == PROGRAM && header.vers == VERSION && header.kind == kind::MESSAGE
}

/// The PONG for a PING; nothing for anything else (a PONG only proves the
/// peer is alive, which receiving it already recorded).
pub fn answer(header: &Header) -> Option<Bytes> {
    (header.proc_ == PING).then(|| message(PONG))
}

pub fn ping() -> Bytes {
    message(PING)
}

pub enum Action {
    Ping,
    Dead,
}

pub struct State {
    interval: Duration,
    count: u32,
    last: Instant,
    unanswered: u32,
}

impl State {
    pub fn new(interval: Duration, count: u32) -> State {
        State {
            interval,
            count,
            last: Instant::now(),
            unanswered: 0,
        }
    }

    /// Any message from the peer proves it alive.
    pub fn received(&mut self) {
        self.last = Instant::now();
        self.unanswered = 0;
    }

    /// Resolves when the next ping is due, or when the peer has missed too
    /// many; never while keepalive is off (`enabled` turns it on).
    pub async fn tick(&mut self, enabled: &mut watch::Receiver<bool>) -> Action {
        if enabled.wait_for(|on| *on).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep_until(self.last + self.interval).await;
        if self.unanswered >= self.count {
            return Action::Dead;
        }
        self.unanswered += 1;
        self.last = Instant::now();
        Action::Ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_is_answered_with_pong() {
        let ping = ping();
        let (header, body) = Header::parse(&ping).unwrap();
        assert_eq!(
            (header.prog, header.kind, header.serial),
            (PROGRAM, kind::MESSAGE, 0)
        );
        assert!(body.is_empty());
        let pong = answer(&header).unwrap();
        assert_eq!(Header::parse(&pong).unwrap().0.proc_, PONG);
        assert!(answer(&Header::parse(&pong).unwrap().0).is_none());
    }

    #[test]
    fn only_a_version_1_message_is_keepalive() {
        let (ping, _) = Header::parse(&ping()).unwrap();
        assert!(is_keepalive(&ping));
        assert!(!is_keepalive(&Header { vers: 2, ..ping }));
        assert!(!is_keepalive(&Header {
            kind: kind::CALL,
            ..ping
        }));
        assert!(!is_keepalive(&Header {
            prog: 0x2000_8086,
            ..ping
        }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_declared_dead_after_count_pings() {
        let (_on, mut enabled) = watch::channel(true);
        let mut state = State::new(Duration::from_secs(5), 2);
        assert!(matches!(state.tick(&mut enabled).await, Action::Ping));
        assert!(matches!(state.tick(&mut enabled).await, Action::Ping));
        assert!(matches!(state.tick(&mut enabled).await, Action::Dead));
        state.received();
        assert!(matches!(state.tick(&mut enabled).await, Action::Ping));
    }

    #[tokio::test(start_paused = true)]
    async fn pings_start_when_keepalive_is_turned_on_mid_wait() {
        let (on, mut enabled) = watch::channel(false);
        let mut state = State::new(Duration::from_secs(5), 2);
        let tick = state.tick(&mut enabled);
        tokio::pin!(tick);
        assert!(tokio::time::timeout(Duration::from_secs(60), &mut tick)
            .await
            .is_err());
        on.send(true).unwrap();
        assert!(matches!(tick.await, Action::Ping));
    }
}
