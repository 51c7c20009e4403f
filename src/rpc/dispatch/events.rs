//! Event (de)registration. Delivery is in `rpc::events`.

use crate::driver::{DriverError, ErrorKind};
use crate::rpc::client::{Client, Registration};
use crate::rpc::events::EVENT_ID_LAST;
use crate::rpc::wire::{self, remote_proc as rp};

use super::{dom_ref, routes, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    routes!(proc_, req, {
        rp::ConnectDomainEventCallbackRegisterAny => |a: wire::remote_connect_domain_event_callback_register_any_args| async move {
            check_event_id(a.eventID)?;
            let dom = match a.dom {
                Some(dom) => Some(client.server.driver.lookup_by_uuid(&dom_ref(dom).uuid)?.uuid),
                None => None,
            };
            let callback_id = client.register(Registration { event_id: a.eventID, dom, legacy: false });
            Ok(wire::remote_connect_domain_event_callback_register_any_ret { callbackID: callback_id })
        },
        rp::ConnectDomainEventCallbackDeregisterAny => |a: wire::remote_connect_domain_event_callback_deregister_any_args| async move {
            client.deregister(a.callbackID).map(|_| ()).ok_or_else(|| {
                DriverError::invalid_arg(format!("callback ID {} not registered", a.callbackID))
            })
        },
        rp::ConnectDomainEventRegisterAny => |a: wire::remote_connect_domain_event_register_any_args| async move {
            check_event_id(a.eventID)?;
            client.register(Registration { event_id: a.eventID, dom: None, legacy: true });
            Ok(())
        },
        rp::ConnectDomainEventDeregisterAny => |a: wire::remote_connect_domain_event_deregister_any_args| async move {
            if client.deregister_legacy(a.eventID) {
                Ok(())
            } else {
                Err(DriverError::internal(format!("domain event {} not registered", a.eventID)))
            }
        },
    })
}

fn check_event_id(event_id: i32) -> Result<(), DriverError> {
    if (0..EVENT_ID_LAST).contains(&event_id) {
        Ok(())
    } else {
        Err(DriverError::new(
            ErrorKind::InvalidArg,
            format!("unsupported event ID {event_id}"),
        ))
    }
}
