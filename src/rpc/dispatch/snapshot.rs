//! Snapshot procedures (185–193, 244–247, 271–275).

use crate::driver::{DriverError, ErrorKind, SnapshotRef, Snapshots};
use crate::rpc::access::refuse_secure_flag;
use crate::rpc::client::Client;
use crate::rpc::wire::{self, remote_nonnull_domain_snapshot, remote_proc as rp};

use super::{dom_ref, results, routes, wire_dom, ListLimit, Reply, Request};

/// libvirtd's dispatcher refuses a longer list (or `maxnames`) as an RPC
/// error.
const LIMIT: ListLimit = ListLimit {
    what: "domain_snapshots",
    max: wire::REMOTE_DOMAIN_SNAPSHOT_LIST_MAX,
    kind: ErrorKind::Rpc,
};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::DomainSnapshotCreateXml => |a: wire::remote_domain_snapshot_create_xml_args| async move {
            let snap = driver.snapshot_create_xml(&dom_ref(a.dom), &a.xml_desc, a.flags).await?;
            Ok(wire::remote_domain_snapshot_create_xml_ret { snap: wire_snap(snap) })
        },
        rp::DomainSnapshotGetXmlDesc => |a: wire::remote_domain_snapshot_get_xml_desc_args| async move {
            const SECURE: u32 = 1;
            refuse_secure_flag(client, "virDomainSnapshotGetXMLDesc", a.flags & SECURE != 0)?;
            let xml = driver.snapshot_get_xml_desc(&snap_ref(a.snap), a.flags)?;
            Ok(wire::remote_domain_snapshot_get_xml_desc_ret { xml })
        },
        rp::DomainSnapshotNum => |a: wire::remote_domain_snapshot_num_args| async move {
            let list = driver.list_moments::<Snapshots>(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_snapshot_num_ret { num: count(&list) })
        },
        rp::DomainSnapshotListNames => |a: wire::remote_domain_snapshot_list_names_args| async move {
            let list = driver.list_moments::<Snapshots>(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_snapshot_list_names_ret { names: names(list, a.maxnames)? })
        },
        rp::DomainListAllSnapshots => |a: wire::remote_domain_list_all_snapshots_args| async move {
            let list = driver.list_moments::<Snapshots>(&dom_ref(a.dom), a.flags)?;
            let (snapshots, ret) = results(list, a.need_results, &LIMIT, wire_snap)?;
            Ok(wire::remote_domain_list_all_snapshots_ret { snapshots, ret })
        },
        rp::DomainSnapshotListAllChildren => |a: wire::remote_domain_snapshot_list_all_children_args| async move {
            let list = driver.list_moment_children::<Snapshots>(&snap_ref(a.snapshot), a.flags)?;
            let (snapshots, ret) = results(list, a.need_results, &LIMIT, wire_snap)?;
            Ok(wire::remote_domain_snapshot_list_all_children_ret { snapshots, ret })
        },
        rp::DomainSnapshotNumChildren => |a: wire::remote_domain_snapshot_num_children_args| async move {
            let list = driver.list_moment_children::<Snapshots>(&snap_ref(a.snap), a.flags)?;
            Ok(wire::remote_domain_snapshot_num_children_ret { num: count(&list) })
        },
        rp::DomainSnapshotListChildrenNames => |a: wire::remote_domain_snapshot_list_children_names_args| async move {
            let list = driver.list_moment_children::<Snapshots>(&snap_ref(a.snap), a.flags)?;
            Ok(wire::remote_domain_snapshot_list_children_names_ret { names: names(list, a.maxnames)? })
        },
        rp::DomainSnapshotLookupByName => |a: wire::remote_domain_snapshot_lookup_by_name_args| async move {
            let snap = driver.lookup_moment::<Snapshots>(&dom_ref(a.dom), &a.name, a.flags)?;
            Ok(wire::remote_domain_snapshot_lookup_by_name_ret { snap: wire_snap(snap) })
        },
        rp::DomainHasCurrentSnapshot => |a: wire::remote_domain_has_current_snapshot_args| async move {
            let result = i32::from(driver.has_current_snapshot(&dom_ref(a.dom), a.flags)?);
            Ok(wire::remote_domain_has_current_snapshot_ret { result })
        },
        rp::DomainSnapshotCurrent => |a: wire::remote_domain_snapshot_current_args| async move {
            let snap = driver.snapshot_current(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_snapshot_current_ret { snap: wire_snap(snap) })
        },
        rp::DomainSnapshotGetParent => |a: wire::remote_domain_snapshot_get_parent_args| async move {
            let snap = driver.moment_parent::<Snapshots>(&snap_ref(a.snap), a.flags)?;
            Ok(wire::remote_domain_snapshot_get_parent_ret { snap: wire_snap(snap) })
        },
        rp::DomainSnapshotIsCurrent => |a: wire::remote_domain_snapshot_is_current_args| async move {
            let current = i32::from(driver.snapshot_is_current(&snap_ref(a.snap), a.flags)?);
            Ok(wire::remote_domain_snapshot_is_current_ret { current })
        },
        rp::DomainSnapshotHasMetadata => |a: wire::remote_domain_snapshot_has_metadata_args| async move {
            let metadata = i32::from(driver.snapshot_has_metadata(&snap_ref(a.snap), a.flags)?);
            Ok(wire::remote_domain_snapshot_has_metadata_ret { metadata })
        },
        rp::DomainRevertToSnapshot => |a: wire::remote_domain_revert_to_snapshot_args| async move {
            driver.revert_to_snapshot(&snap_ref(a.snap), a.flags).await
        },
        rp::DomainSnapshotDelete => |a: wire::remote_domain_snapshot_delete_args| async move {
            driver.snapshot_delete(&snap_ref(a.snap), a.flags).await
        },
    })
}

fn snap_ref(snap: remote_nonnull_domain_snapshot) -> SnapshotRef {
    SnapshotRef {
        name: snap.name,
        dom: dom_ref(snap.dom),
    }
}

fn wire_snap(snap: SnapshotRef) -> remote_nonnull_domain_snapshot {
    remote_nonnull_domain_snapshot {
        name: snap.name,
        dom: wire_dom(snap.dom),
    }
}

fn count(list: &[SnapshotRef]) -> i32 {
    i32::try_from(list.len()).unwrap_or(i32::MAX)
}

/// The first `maxnames` names (the older list calls), within the
/// protocol's limit.
fn names(list: Vec<SnapshotRef>, maxnames: i32) -> Result<Vec<String>, DriverError> {
    let max = usize::try_from(maxnames)
        .map_err(|_| DriverError::new(ErrorKind::Rpc, "maxnames must be non-negative"))?;
    LIMIT.check(max)?;
    Ok(list.into_iter().take(max).map(|s| s.name).collect())
}
