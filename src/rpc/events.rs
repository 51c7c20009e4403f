//! Driver events out to the clients that registered for them.
//!
//! Events are MESSAGE frames with serial 1, as libvirtd sends them.

use bytes::Bytes;

use crate::driver::jobs::{ParamValue, TypedParam};
use crate::driver::DomainEvent;
use crate::xdr;

use super::client::Client;
use super::dispatch::wire_dom;
use super::frame::{kind, status, Header};
use super::wire::{self, Procedure};

/// virDomainEventID values clients may register (VIR_DOMAIN_EVENT_ID_LAST).
pub const EVENT_ID_LAST: i32 = 27;
const EVENT_ID_LIFECYCLE: i32 = 0;
const EVENT_ID_BLOCK_JOB: i32 = 8;
const EVENT_ID_BLOCK_JOB_2: i32 = 16;
const EVENT_ID_JOB_COMPLETED: i32 = 21;
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
        // libvirtd has only the callback form of this message and sends it
        // to legacy registrations too.
        DomainEvent::JobCompleted { params, .. } => client
            .matching(EVENT_ID_JOB_COMPLETED, &dom.uuid)
            .into_iter()
            .filter_map(|(callback_id, _)| {
                let msg = wire::remote_domain_event_callback_job_completed_msg {
                    callbackID: callback_id,
                    dom: wire_dom(dom.clone()),
                    params: typed_params(params),
                };
                frame::<wire::remote_proc::DomainEventCallbackJobCompleted>(&msg)
            })
            .collect(),
        DomainEvent::BlockJob {
            path,
            dst,
            job_type,
            status,
            ..
        } => {
            let status = *status as i32;
            let msg = wire::remote_domain_event_block_job_msg {
                dom: wire_dom(dom.clone()),
                path: path.clone(),
                r#type: *job_type,
                status,
            };
            let mut frames: Vec<Bytes> = client
                .matching(EVENT_ID_BLOCK_JOB, &dom.uuid)
                .into_iter()
                .filter_map(|(callback_id, registration)| {
                    if registration.legacy {
                        frame::<wire::remote_proc::DomainEventBlockJob>(&msg)
                    } else {
                        let msg = wire::remote_domain_event_callback_block_job_msg {
                            callbackID: callback_id,
                            msg: msg.clone(),
                        };
                        frame::<wire::remote_proc::DomainEventCallbackBlockJob>(&msg)
                    }
                })
                .collect();
            frames.extend(
                client
                    .matching(EVENT_ID_BLOCK_JOB_2, &dom.uuid)
                    .into_iter()
                    .filter_map(|(callback_id, _)| {
                        let msg = wire::remote_domain_event_block_job_2_msg {
                            callbackID: callback_id,
                            dom: wire_dom(dom.clone()),
                            dst: dst.clone(),
                            r#type: *job_type,
                            status,
                        };
                        frame::<wire::remote_proc::DomainEventBlockJob2>(&msg)
                    }),
            );
            frames
        }
    }
}

/// Driver parameters in wire form.
pub fn typed_params(params: &[TypedParam]) -> Vec<wire::remote_typed_param> {
    params
        .iter()
        .map(|p| wire::remote_typed_param {
            field: p.field.clone(),
            value: match &p.value {
                ParamValue::Int(v) => wire::remote_typed_param_value::Int(*v),
                ParamValue::UInt(v) => wire::remote_typed_param_value::Uint(*v),
                ParamValue::LLong(v) => wire::remote_typed_param_value::Llong(*v),
                ParamValue::ULLong(v) => wire::remote_typed_param_value::Ullong(*v),
                ParamValue::Boolean(v) => wire::remote_typed_param_value::Boolean(i32::from(*v)),
                ParamValue::String(v) => wire::remote_typed_param_value::String(v.clone()),
            },
        })
        .collect()
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
