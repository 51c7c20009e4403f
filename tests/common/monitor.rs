//! QEMU's own view of a running domain: its block nodes and their dirty
//! bitmaps through `virsh qemu-monitor-command`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Daemon;

const QUERY_NODES: &str = r#"{"execute":"query-named-block-nodes","arguments":{"flat":true}}"#;

impl Daemon {
    /// What `query-named-block-nodes` printed, as text.
    #[track_caller]
    pub fn nodes_text(&self, dom: &str) -> String {
        self.virsh(&["qemu-monitor-command", dom, QUERY_NODES])
            .ok()
            .stdout
    }

    /// QEMU's nodes: name → the node's JSON.
    #[track_caller]
    pub fn nodes(&self, dom: &str) -> BTreeMap<String, Value> {
        let reply: Value = serde_json::from_str(&self.nodes_text(dom)).expect("QMP's JSON");
        reply["return"]
            .as_array()
            .expect("a list of nodes")
            .iter()
            .map(|n| (n["node-name"].as_str().unwrap().to_string(), n.clone()))
            .collect()
    }

    /// The node names QEMU has for the domain, sorted.
    #[track_caller]
    pub fn node_names(&self, dom: &str) -> Vec<String> {
        self.nodes(dom).into_keys().collect()
    }

    /// The named dirty bitmaps of a node: (name, count), sorted.
    #[track_caller]
    pub fn bitmaps(&self, dom: &str, node: &str) -> Vec<(String, u64)> {
        named_bitmaps(&self.nodes(dom)[node])
    }

    /// The names of a node's named dirty bitmaps, sorted.
    #[track_caller]
    pub fn bitmap_names(&self, dom: &str, node: &str) -> Vec<String> {
        self.bitmaps(dom, node).into_iter().map(|b| b.0).collect()
    }
}

/// The named dirty bitmaps of a node's JSON: (name, count), sorted. (A
/// running backup's filter has bitmaps without a name.)
pub fn named_bitmaps(node: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = node["dirty-bitmaps"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|b| {
                    Some((
                        b["name"].as_str()?.to_string(),
                        b["count"].as_u64().unwrap(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
