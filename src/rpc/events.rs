//! Driver events out to the clients that registered for them.
//!
//! Events are MESSAGE frames with serial 1, as libvirtd sends them.

use bytes::Bytes;

use crate::driver::DomainEvent;
use crate::xdr;

use super::client::Client;
use super::dispatch::wire_dom;
use super::frame::{kind, status, Header};
use super::wire::{self, Procedure};

/// virDomainEventID values clients may register (VIR_DOMAIN_EVENT_ID_LAST).
pub const EVENT_ID_LAST: i32 = 27;
const EVENT_ID_LIFECYCLE: i32 = 0;
const EVENT_SERIAL: u32 = 1;

/// The frames `event` turns into for this client: one per matching
/// registration.
pub fn encode_for(client: &Client, event: &DomainEvent) -> Vec<Bytes> {
    let dom = event.domain();
    match event {
        DomainEvent::Lifecycle {
            event: lifecycle, ..
        } => {
            let (event_code, detail) = lifecycle.codes();
            let msg = wire::remote_domain_event_lifecycle_msg {
                dom: wire_dom(dom.clone()),
                event: event_code,
                detail,
            };
            client
                .matching(EVENT_ID_LIFECYCLE, &dom.uuid)
                .into_iter()
                .filter_map(|(callback_id, registration)| {
                    if registration.legacy {
                        frame::<wire::remote_proc::DomainEventLifecycle>(&msg)
                    } else {
                        let msg = wire::remote_domain_event_callback_lifecycle_msg {
                            callbackID: callback_id,
                            msg: msg.clone(),
                        };
                        frame::<wire::remote_proc::DomainEventCallbackLifecycle>(&msg)
                    }
                })
                .collect()
        }
    }
}

fn frame<P: Procedure>(msg: &P::Args) -> Option<Bytes> {
    let body = xdr::to_bytes(msg)
        .map_err(|err| tracing::error!(%err, "cannot encode event"))
        .ok()?;
    let header = Header {
        prog: P::PROGRAM,
        vers: 1,
        proc_: P::PROC,
        kind: kind::MESSAGE,
        serial: EVENT_SERIAL,
        status: status::OK,
    };
    Some(header.encode(&body))
}
