//! Checkpoint procedures (411–417).

use crate::driver::{CheckpointRef, Checkpoints, ErrorKind};
use crate::rpc::access::refuse_secure_flag;
use crate::rpc::client::Client;
use crate::rpc::wire::{self, remote_nonnull_domain_checkpoint, remote_proc as rp};

use super::{dom_ref, results, routes, wire_dom, ListLimit, Reply, Request};

/// libvirtd's dispatcher refuses a longer list as an internal error.
const LIMIT: ListLimit = ListLimit {
    what: "domain_checkpoints",
    max: wire::REMOTE_DOMAIN_CHECKPOINT_LIST_MAX,
    kind: ErrorKind::InternalError,
};

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
            let list = driver.list_moments::<Checkpoints>(&dom_ref(a.dom), a.flags)?;
            let (checkpoints, ret) = results(list, a.need_results, &LIMIT, wire_cp)?;
            Ok(wire::remote_domain_list_all_checkpoints_ret { checkpoints, ret })
        },
        rp::DomainCheckpointListAllChildren => |a: wire::remote_domain_checkpoint_list_all_children_args| async move {
            let list = driver.list_moment_children::<Checkpoints>(&cp_ref(a.checkpoint), a.flags)?;
            let (checkpoints, ret) = results(list, a.need_results, &LIMIT, wire_cp)?;
            Ok(wire::remote_domain_checkpoint_list_all_children_ret { checkpoints, ret })
        },
        rp::DomainCheckpointLookupByName => |a: wire::remote_domain_checkpoint_lookup_by_name_args| async move {
            let cp = driver.lookup_moment::<Checkpoints>(&dom_ref(a.dom), &a.name, a.flags)?;
            Ok(wire::remote_domain_checkpoint_lookup_by_name_ret { checkpoint: wire_cp(cp) })
        },
        rp::DomainCheckpointGetParent => |a: wire::remote_domain_checkpoint_get_parent_args| async move {
            let parent = driver.moment_parent::<Checkpoints>(&cp_ref(a.checkpoint), a.flags)?;
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
        let (list, count) = results(refs(3), 0, &LIMIT, wire_cp).unwrap();
        assert!(list.is_empty());
        assert_eq!(count, 3);
        let (list, count) = results(refs(3), 1, &LIMIT, wire_cp).unwrap();
        assert_eq!((list.len(), count), (3, 3));
    }

    #[test]
    fn more_than_the_protocol_allows_is_refused_like_libvirtd() {
        let max = wire::REMOTE_DOMAIN_CHECKPOINT_LIST_MAX as usize;
        assert!(results(refs(max), 1, &LIMIT, wire_cp).is_ok());
        let err = results(refs(max + 1), 1, &LIMIT, wire_cp).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InternalError);
        assert_eq!(
            err.detail(),
            Some("Too many domain_checkpoints '16385' for limit '16384'")
        );
    }
}
