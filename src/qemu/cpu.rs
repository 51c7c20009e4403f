//! What the guest's CPU is, as QEMU reports it for the first vCPU: the
//! boolean QOM properties that are on, and `unavailable-features` (what
//! the accelerator could not give). libvirt 9.0 asks the same at start
//! (`query-cpus-fast`, `qom-list`, a `qom-get` per property:
//! `fixtures/reference/snapshot/start.qmp`) to record the CPU that runs.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::error::QemuError;
use super::monitor::Monitor;

/// The vCPU's feature properties, by QEMU's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuProperties {
    /// Boolean properties that are on.
    pub enabled: BTreeSet<String>,
    /// `unavailable-features`.
    pub unavailable: BTreeSet<String>,
}

fn malformed(what: &str) -> QemuError {
    QemuError::Protocol(format!("unexpected reply to {what}"))
}

/// Reads the first vCPU's properties. Only boolean properties for which
/// `wanted` says yes are asked for (the others cannot change the answer:
/// one `qom-get` each).
pub async fn properties(
    mon: &Monitor,
    wanted: impl Fn(&str) -> bool,
) -> Result<CpuProperties, QemuError> {
    let cpus = mon.execute_value("query-cpus-fast", json!({})).await?;
    let path = cpus
        .get(0)
        .and_then(|c| c.get("qom-path"))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("query-cpus-fast"))?
        .to_owned();
    let list = mon
        .execute_value("qom-list", json!({ "path": path }))
        .await?;
    let names: Vec<String> = list
        .as_array()
        .ok_or_else(|| malformed("qom-list"))?
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("bool"))
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .filter(|n| wanted(n))
        .map(str::to_owned)
        .collect();
    let mut props = CpuProperties::default();
    for name in names {
        let value = mon
            .execute_value("qom-get", json!({ "path": path, "property": name }))
            .await?;
        if value.as_bool() == Some(true) {
            props.enabled.insert(name);
        }
    }
    let unavailable = mon
        .execute_value(
            "qom-get",
            json!({ "path": path, "property": "unavailable-features" }),
        )
        .await?;
    props.unavailable = unavailable
        .as_array()
        .ok_or_else(|| malformed("qom-get unavailable-features"))?
        .iter()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    Ok(props)
}
