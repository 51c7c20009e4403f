//! The QEMU program: monitor command passthrough.

use crate::rpc::client::Client;
use crate::rpc::wire::{self, qemu_proc as qp};

use super::{dom_ref, routes, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        qp::DomainMonitorCommand => |a: wire::qemu_domain_monitor_command_args| async move {
            let result = driver.monitor_command(&dom_ref(a.dom), &a.cmd, a.flags).await?;
            Ok(wire::qemu_domain_monitor_command_ret { result })
        },
    })
}
