//! Checkpoint procedures (411–417).

use crate::driver::{CheckpointRef, DriverError};
use crate::rpc::access::refuse_secure_flag;
use crate::rpc::client::Client;
use crate::rpc::wire::{self, remote_nonnull_domain_checkpoint, remote_proc as rp};

use super::{dom_ref, routes, wire_dom, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::DomainCheckpointCreateXml => |a: wire::remote_domain_checkpoint_create_xml_args| async move {
            let cp = driver.checkpoint_create_xml(&dom_ref(a.dom), &a.xml_desc, a.flags).await?;
            Ok(wire::remote_domain_checkpoint_create_xml_ret { checkpoint: wire_cp(cp) })
        },
        rp::DomainCheckpointGetXmlDesc => |a: wire::remote_domain_checkpoint_get_xml_desc_args| async move {
            const SECURE: u32 = 1;
            refuse_secure_flag(client, "virDomainCheckpointGetXMLDesc", a.flags & SECURE != 0)?;
            let xml = driver.checkpoint_get_xml_desc(&cp_ref(a.checkpoint), a.flags).await?;
            Ok(wire::remote_domain_checkpoint_get_xml_desc_ret { xml })
        },
        rp::DomainListAllCheckpoints => |a: wire::remote_domain_list_all_checkpoints_args| async move {
            let list = driver.list_all_checkpoints(&dom_ref(a.dom), a.flags)?;
            let (checkpoints, ret) = results(list, a.need_results)?;
            Ok(wire::remote_domain_list_all_checkpoints_ret { checkpoints, ret })
        },
        rp::DomainCheckpointListAllChildren => |a: wire::remote_domain_checkpoint_list_all_children_args| async move {
            let list = driver.checkpoint_list_all_children(&cp_ref(a.checkpoint), a.flags)?;
            let (checkpoints, ret) = results(list, a.need_results)?;
            Ok(wire::remote_domain_checkpoint_list_all_children_ret { checkpoints, ret })
        },
        rp::DomainCheckpointLookupByName => |a: wire::remote_domain_checkpoint_lookup_by_name_args| async move {
            let cp = driver.checkpoint_lookup_by_name(&dom_ref(a.dom), &a.name, a.flags)?;
            Ok(wire::remote_domain_checkpoint_lookup_by_name_ret { checkpoint: wire_cp(cp) })
        },
        rp::DomainCheckpointGetParent => |a: wire::remote_domain_checkpoint_get_parent_args| async move {
            let parent = driver.checkpoint_get_parent(&cp_ref(a.checkpoint), a.flags)?;
            Ok(wire::remote_domain_checkpoint_get_parent_ret { parent: wire_cp(parent) })
        },
        rp::DomainCheckpointDelete => |a: wire::remote_domain_checkpoint_delete_args| async move {
            driver.checkpoint_delete(&cp_ref(a.checkpoint), a.flags).await
        },
    })
}

fn cp_ref(cp: remote_nonnull_domain_checkpoint) -> CheckpointRef {
    CheckpointRef {
        name: cp.name,
        dom: dom_ref(cp.dom),
    }
}

fn wire_cp(cp: CheckpointRef) -> remote_nonnull_domain_checkpoint {
    remote_nonnull_domain_checkpoint {
        name: cp.name,
        dom: wire_dom(cp.dom),
    }
}

/// The list and count of a LIST_ALL reply: with `need_results` 0 the list
/// stays empty and only the count is sent. More than the protocol allows is
/// refused as libvirtd's generated dispatcher refuses it.
fn results(
    list: Vec<CheckpointRef>,
    need_results: i32,
) -> Result<(Vec<remote_nonnull_domain_checkpoint>, i32), DriverError> {
    let max = wire::REMOTE_DOMAIN_CHECKPOINT_LIST_MAX as usize;
    if list.len() > max {
        return Err(DriverError::internal(format!(
            "Too many domain_checkpoints '{}' for limit '{max}'",
            list.len()
        )));
    }
    let count = i32::try_from(list.len()).unwrap_or(i32::MAX);
    let list = if need_results != 0 {
        list.into_iter().map(wire_cp).collect()
    } else {
        Vec::new()
    };
    Ok((list, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DomainRef;

    fn refs(n: usize) -> Vec<CheckpointRef> {
        let dom = DomainRef {
            name: "vm".into(),
            uuid: [0; 16],
            id: -1,
        };
        (0..n)
            .map(|i| CheckpointRef {
                name: format!("cp{i}"),
                dom: dom.clone(),
            })
            .collect()
    }

    #[test]
    fn need_results_zero_sends_only_the_count() {
        let (list, count) = results(refs(3), 0).unwrap();
        assert!(list.is_empty());
        assert_eq!(count, 3);
        let (list, count) = results(refs(3), 1).unwrap();
        assert_eq!((list.len(), count), (3, 3));
    }

    #[test]
    fn more_than_the_protocol_allows_is_refused_like_libvirtd() {
        let max = wire::REMOTE_DOMAIN_CHECKPOINT_LIST_MAX as usize;
        assert!(results(refs(max), 1).is_ok());
        let err = results(refs(max + 1), 1).unwrap_err();
        assert_eq!(
            err.detail(),
            Some("Too many domain_checkpoints '16385' for limit '16384'")
        );
    }
}
