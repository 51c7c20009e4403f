//! Domain procedures: lookups, definitions, lifecycle, queries.

use crate::driver::agent::vcpu_flags;
use crate::driver::{DomainRef, DriverError};
use crate::rpc::access::{refuse_secure_flag, refuse_when};
use crate::rpc::client::Client;
use crate::rpc::events::typed_params;
use crate::rpc::wire::{self, remote_proc as rp};

use super::{dom_ref, int_bool, routes, wire_dom, Reply, Request};

pub async fn route(client: &Client, proc_: i32, req: &Request<'_>) -> Option<Reply> {
    let driver = &client.server.driver;
    routes!(proc_, req, {
        rp::DomainLookupByName => |a: wire::remote_domain_lookup_by_name_args| async move {
            Ok(wire::remote_domain_lookup_by_name_ret { dom: wire_dom(driver.lookup_by_name(&a.name)?) })
        },
        rp::DomainLookupByUuid => |a: wire::remote_domain_lookup_by_uuid_args| async move {
            Ok(wire::remote_domain_lookup_by_uuid_ret { dom: wire_dom(driver.lookup_by_uuid(&a.uuid)?) })
        },
        rp::DomainLookupById => |a: wire::remote_domain_lookup_by_id_args| async move {
            Ok(wire::remote_domain_lookup_by_id_ret { dom: wire_dom(driver.lookup_by_id(a.id)?) })
        },
        rp::DomainDefineXml => |a: wire::remote_domain_define_xml_args| async move {
            Ok(wire::remote_domain_define_xml_ret { dom: wire_dom(driver.define_xml(&a.xml, 0).await?) })
        },
        rp::DomainDefineXmlFlags => |a: wire::remote_domain_define_xml_flags_args| async move {
            Ok(wire::remote_domain_define_xml_flags_ret { dom: wire_dom(driver.define_xml(&a.xml, a.flags).await?) })
        },
        rp::DomainUndefine => |a: wire::remote_domain_undefine_args| async move {
            driver.undefine(&dom_ref(a.dom), 0).await
        },
        rp::DomainUndefineFlags => |a: wire::remote_domain_undefine_flags_args| async move {
            driver.undefine(&dom_ref(a.dom), a.flags).await
        },
        rp::DomainCreate => |a: wire::remote_domain_create_args| async move {
            driver.create(&dom_ref(a.dom), 0).await.map(|_| ())
        },
        rp::DomainCreateWithFlags => |a: wire::remote_domain_create_with_flags_args| async move {
            let dom = driver.create(&dom_ref(a.dom), a.flags).await?;
            Ok(wire::remote_domain_create_with_flags_ret { dom: wire_dom(dom) })
        },
        rp::DomainDestroy => |a: wire::remote_domain_destroy_args| async move {
            driver.destroy(&dom_ref(a.dom), 0).await
        },
        rp::DomainDestroyFlags => |a: wire::remote_domain_destroy_flags_args| async move {
            driver.destroy(&dom_ref(a.dom), a.flags).await
        },
        rp::DomainSuspend => |a: wire::remote_domain_suspend_args| async move {
            driver.suspend(&dom_ref(a.dom)).await
        },
        rp::DomainResume => |a: wire::remote_domain_resume_args| async move {
            driver.resume(&dom_ref(a.dom)).await
        },
        rp::DomainGetBlockInfo => |a: wire::remote_domain_get_block_info_args| async move {
            let info = driver.get_block_info(&dom_ref(a.dom), &a.path, a.flags).await?;
            Ok(wire::remote_domain_get_block_info_ret {
                allocation: info.allocation,
                capacity: info.capacity,
                physical: info.physical,
            })
        },
        rp::DomainBlockStats => |a: wire::remote_domain_block_stats_args| async move {
            let s = driver.block_stats(&dom_ref(a.dom), &a.path).await?;
            Ok(wire::remote_domain_block_stats_ret {
                rd_req: s.rd_req,
                rd_bytes: s.rd_bytes,
                wr_req: s.wr_req,
                wr_bytes: s.wr_bytes,
                errs: s.errs,
            })
        },
        rp::DomainBlockStatsFlags => |a: wire::remote_domain_block_stats_flags_args| async move {
            // libvirtd's own checks of the count, before the driver's.
            if a.nparams < 0 {
                return Err(DriverError::internal("nparams must be non-negative"));
            }
            let wanted = usize::try_from(a.nparams).unwrap_or(usize::MAX);
            if wanted > wire::REMOTE_DOMAIN_BLOCK_STATS_PARAMETERS_MAX as usize {
                return Err(DriverError::internal("nparams too large"));
            }
            let (count, params) = driver
                .block_stats_flags(&dom_ref(a.dom), &a.path, wanted, a.flags)
                .await?;
            // libvirtd answers the count only when asked for it.
            let nparams = if wanted == 0 { i32::try_from(count).unwrap_or(i32::MAX) } else { 0 };
            Ok(wire::remote_domain_block_stats_flags_ret { params: typed_params(&params), nparams })
        },
        rp::DomainShutdown => |a: wire::remote_domain_shutdown_args| async move {
            driver.shutdown(&dom_ref(a.dom), 0).await
        },
        rp::DomainShutdownFlags => |a: wire::remote_domain_shutdown_flags_args| async move {
            driver.shutdown(&dom_ref(a.dom), a.flags).await
        },
        rp::DomainGetXmlDesc => |a: wire::remote_domain_get_xml_desc_args| async move {
            // Migratable XML is meant for another host, so libvirt counts it
            // as secure too.
            const SECURE_OR_MIGRATABLE: u32 = 1 | 8;
            refuse_secure_flag(client, "virDomainGetXMLDesc", a.flags & SECURE_OR_MIGRATABLE != 0)?;
            Ok(wire::remote_domain_get_xml_desc_ret { xml: driver.get_xml_desc(&dom_ref(a.dom), a.flags)? })
        },
        rp::DomainGetInfo => |a: wire::remote_domain_get_info_args| async move {
            let info = driver.get_info(&dom_ref(a.dom)).await?;
            Ok(wire::remote_domain_get_info_ret {
                state: u8::try_from(info.state).unwrap_or(0),
                maxMem: info.max_mem_kib,
                memory: info.memory_kib,
                nrVirtCpu: u16::try_from(info.vcpus).unwrap_or(u16::MAX),
                cpuTime: info.cpu_time_ns,
            })
        },
        rp::DomainGetState => |a: wire::remote_domain_get_state_args| async move {
            let (state, reason) = driver.get_state(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_get_state_ret { state, reason })
        },
        rp::DomainGetOsType => |a: wire::remote_domain_get_os_type_args| async move {
            Ok(wire::remote_domain_get_os_type_ret { r#type: driver.get_os_type(&dom_ref(a.dom))? })
        },
        rp::DomainGetMaxMemory => |a: wire::remote_domain_get_max_memory_args| async move {
            Ok(wire::remote_domain_get_max_memory_ret { memory: driver.get_max_memory(&dom_ref(a.dom))? })
        },
        rp::DomainIsActive => |a: wire::remote_domain_is_active_args| async move {
            Ok(wire::remote_domain_is_active_ret { active: int_bool(driver.is_active(&dom_ref(a.dom))?) })
        },
        rp::DomainIsPersistent => |a: wire::remote_domain_is_persistent_args| async move {
            Ok(wire::remote_domain_is_persistent_ret { persistent: int_bool(driver.is_persistent(&dom_ref(a.dom))?) })
        },
        rp::DomainIsUpdated => |a: wire::remote_domain_is_updated_args| async move {
            existing(driver, &dom_ref(a.dom))?;
            Ok(wire::remote_domain_is_updated_ret { updated: 0 })
        },
        rp::DomainGetAutostart => |a: wire::remote_domain_get_autostart_args| async move {
            Ok(wire::remote_domain_get_autostart_ret { autostart: int_bool(driver.get_autostart(&dom_ref(a.dom))?) })
        },
        rp::DomainHasManagedSaveImage => |a: wire::remote_domain_has_managed_save_image_args| async move {
            let result = int_bool(driver.has_managed_save_image(&dom_ref(a.dom), a.flags)?);
            Ok(wire::remote_domain_has_managed_save_image_ret { result })
        },
        rp::DomainGetSecurityLabel => |a: wire::remote_domain_get_security_label_args| async move {
            // With no security driver libvirt reports an empty label.
            existing(driver, &dom_ref(a.dom))?;
            Ok(wire::remote_domain_get_security_label_ret { label: Vec::new(), enforcing: 0 })
        },
        rp::DomainGetVcpusFlags => |a: wire::remote_domain_get_vcpus_flags_args| async move {
            refuse_when(client, "virDomainGetVcpusFlags", a.flags & vcpu_flags::GUEST != 0)?;
            let num = driver.get_vcpus_flags(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_get_vcpus_flags_ret { num: i32::try_from(num).unwrap_or(i32::MAX) })
        },
        rp::DomainManagedSaveGetXmlDesc => |a: wire::remote_domain_managed_save_get_xml_desc_args| async move {
            const SECURE: u32 = 1;
            refuse_secure_flag(client, "virDomainManagedSaveGetXMLDesc", a.flags & SECURE != 0)?;
            let xml = driver.managed_save_get_xml_desc(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_managed_save_get_xml_desc_ret { xml })
        },
        rp::DomainGetMessages => |a: wire::remote_domain_get_messages_args| async move {
            let msgs = driver.get_messages(&dom_ref(a.dom), a.flags)?;
            Ok(wire::remote_domain_get_messages_ret { msgs })
        },
    })
}

/// Resolves the handle only to report a vanished domain as libvirt does.
fn existing(driver: &crate::driver::Driver, dom: &DomainRef) -> Result<(), DriverError> {
    driver.is_active(dom).map(|_| ())
}
