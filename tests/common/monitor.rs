//! QEMU's own view of a running domain: its block nodes and their dirty
//! bitmaps through `virsh qemu-monitor-command`, and QMP straight on the
//! monitor socket while no daemon holds it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Daemon, PATIENCE};

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

    /// The monitor socket of a running domain's QEMU.
    #[track_caller]
    pub fn monitor_socket(&self, dom: &str) -> PathBuf {
        let uuid = self.answer(&["domuuid", dom]);
        self.path("run").join(uuid).join("monitor.sock")
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

/// A QMP session of our own on a QEMU's monitor socket, which QEMU serves
/// to one client at a time: only while the daemon is down.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The id of the last command sent.
    id: u64,
}

impl Qmp {
    #[track_caller]
    pub fn connect(socket: &Path) -> Qmp {
        let stream =
            UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            id: 0,
        };
        let greeting = qmp.next();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#);
        qmp
    }

    fn next(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a QMP message");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Sends a command and returns its `return`. Events are passed over,
    /// and so are replies to others: QEMU may still answer what the
    /// daemon sent before it died, on whichever connection is open.
    #[track_caller]
    pub fn execute(&mut self, command: &str) -> Value {
        self.id += 1;
        let id = format!("test-{}", self.id);
        let mut message: Value = serde_json::from_str(command).expect("a QMP command");
        message["id"] = Value::from(id.as_str());
        self.writer
            .write_all(format!("{message}\n").as_bytes())
            .expect("write to QMP");
        loop {
            let mut reply = self.next();
            if reply["id"] != id.as_str() {
                continue;
            }
            assert!(reply.get("error").is_none(), "{command}: {reply}");
            return reply["return"].take();
        }
    }
}
