//! Backup and job procedures: backup-begin, backup-dumpxml, job info and
//! statistics, abort.

use crate::rpc::client::Client;
use crate::rpc::events::typed_params;
use crate::rpc::wire::{self, remote_proc as rp};

use super::{dom_ref, routes, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::DomainBackupBegin => |a: wire::remote_domain_backup_begin_args| async move {
            driver
                .backup_begin(&dom_ref(a.dom), &a.backup_xml, a.checkpoint_xml.as_deref(), a.flags)
                .await
        },
        rp::DomainBackupGetXmlDesc => |a: wire::remote_domain_backup_get_xml_desc_args| async move {
            let xml = driver.backup_get_xml_desc(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_backup_get_xml_desc_ret { xml })
        },
        rp::DomainGetJobStats => |a: wire::remote_domain_get_job_stats_args| async move {
            let (r#type, params) = driver.get_job_stats(&dom_ref(a.dom), a.flags).await?;
            Ok(wire::remote_domain_get_job_stats_ret { r#type, params: typed_params(&params) })
        },
        rp::DomainGetJobInfo => |a: wire::remote_domain_get_job_info_args| async move {
            let info = driver.get_job_info(&dom_ref(a.dom)).await?;
            Ok(wire::remote_domain_get_job_info_ret {
                r#type: info.job_type,
                timeElapsed: info.time_elapsed,
                timeRemaining: 0,
                dataTotal: info.data_total,
                dataProcessed: info.data_processed,
                dataRemaining: info.data_remaining,
                memTotal: 0,
                memProcessed: 0,
                memRemaining: 0,
                fileTotal: info.file_total,
                fileProcessed: info.file_processed,
                fileRemaining: info.file_remaining,
            })
        },
        rp::DomainGetBlockJobInfo => |a: wire::remote_domain_get_block_job_info_args| async move {
            let info = driver.get_block_job_info(&dom_ref(a.dom), &a.path, a.flags).await?;
            Ok(match info {
                Some(info) => wire::remote_domain_get_block_job_info_ret {
                    found: 1,
                    r#type: info.job_type,
                    bandwidth: info.bandwidth,
                    cur: info.cur,
                    end: info.end,
                },
                None => wire::remote_domain_get_block_job_info_ret {
                    found: 0,
                    r#type: 0,
                    bandwidth: 0,
                    cur: 0,
                    end: 0,
                },
            })
        },
        rp::DomainAbortJob => |a: wire::remote_domain_abort_job_args| async move {
            driver.abort_job(&dom_ref(a.dom), 0).await
        },
        rp::DomainAbortJobFlags => |a: wire::remote_domain_abort_job_flags_args| async move {
            driver.abort_job(&dom_ref(a.dom), a.flags).await
        },
    })
}
