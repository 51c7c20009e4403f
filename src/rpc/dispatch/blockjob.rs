//! Block job procedures: commit, pull, rebase, copy, abort, set-speed
//! (job info is answered with the backup's in jobs.rs).

use crate::driver::jobs::{ParamValue, TypedParam};
use crate::rpc::client::Client;
use crate::rpc::wire::{self, remote_proc as rp};

use super::{dom_ref, routes, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        // struct remote_domain_block_commit_args { dom; disk; remote_string base;
        //     remote_string top; unsigned hyper bandwidth; unsigned int flags; };
        rp::DomainBlockCommit => |a: wire::remote_domain_block_commit_args| async move {
            driver
                .block_commit(&dom_ref(a.dom), &a.disk, a.base.as_deref(), a.top.as_deref(),
                    a.bandwidth, a.flags)
                .await
        },
        rp::DomainBlockPull => |a: wire::remote_domain_block_pull_args| async move {
            driver.block_pull(&dom_ref(a.dom), &a.path, a.bandwidth, a.flags).await
        },
        rp::DomainBlockRebase => |a: wire::remote_domain_block_rebase_args| async move {
            driver
                .block_rebase(&dom_ref(a.dom), &a.path, a.base.as_deref(), a.bandwidth, a.flags)
                .await
        },
        rp::DomainBlockCopy => |a: wire::remote_domain_block_copy_args| async move {
            let params = driver_params(a.params);
            driver.block_copy(&dom_ref(a.dom), &a.path, &a.destxml, &params, a.flags).await
        },
        rp::DomainBlockJobAbort => |a: wire::remote_domain_block_job_abort_args| async move {
            driver.block_job_abort(&dom_ref(a.dom), &a.path, a.flags).await
        },
        rp::DomainBlockJobSetSpeed => |a: wire::remote_domain_block_job_set_speed_args| async move {
            driver.block_job_set_speed(&dom_ref(a.dom), &a.path, a.bandwidth, a.flags).await
        },
    })
}

/// Typed parameters in the driver's terms.
fn driver_params(params: Vec<wire::remote_typed_param>) -> Vec<TypedParam> {
    params
        .into_iter()
        .map(|p| TypedParam {
            field: p.field,
            value: match p.value {
                wire::remote_typed_param_value::Int(v) => ParamValue::Int(v),
                wire::remote_typed_param_value::Uint(v) => ParamValue::UInt(v),
                wire::remote_typed_param_value::Llong(v) => ParamValue::LLong(v),
                wire::remote_typed_param_value::Ullong(v) => ParamValue::ULLong(v),
                wire::remote_typed_param_value::Boolean(v) => ParamValue::Boolean(v != 0),
                wire::remote_typed_param_value::String(v) => ParamValue::String(v),
                // No block job parameter is a double; it is refused as the
                // wrong type (named "string" here).
                wire::remote_typed_param_value::Double(_) => ParamValue::String(String::new()),
            },
        })
        .collect()
}
