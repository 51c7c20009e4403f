//! A `type='network'` snapshot disk (`diskSourceNetwork`): exactly one
//! `<source>` (no `<driver>`: the snapshot grammar adds it only to file
//! and block disks), whose protocol decides which attributes it takes,
//! whether it needs a `name`, how many `<host>`s, and which other
//! children.
//!
//! `<host>` is checked as the schema says; the other children (`<auth>`,
//! `<snapshot>`, `<config>`, `<initiator>`, `<ssl>`, `<cookies>`,
//! `<readahead>`, `<timeout>`, `<identity>`) by name and count only.

use super::disk::{encryption_ok, slices_ok};
use crate::conf::xml::rng::{
    attrs, has_text, is_abs_path, is_dns_name, is_positive_integer, is_unsigned_int,
};
use crate::conf::xml::Element;

/// How many `<host>`s a protocol takes.
#[derive(Clone, Copy)]
enum Hosts {
    One,
    OneOrMore,
    Any,
}

/// What one protocol's `<source>` may hold.
struct Protocol {
    name: &'static str,
    name_required: bool,
    /// Attributes besides `protocol`, `name` and `index`.
    attrs: &'static [&'static str],
    hosts: Hosts,
    /// Optional children besides `<host>`, `<slices>` and `<encryption>`.
    children: &'static [&'static str],
    /// A child that must be there.
    required: Option<&'static str>,
    encryption: bool,
}

const fn protocol(name: &'static str, hosts: Hosts, children: &'static [&'static str]) -> Protocol {
    Protocol {
        name,
        name_required: true,
        attrs: &[],
        hosts,
        children,
        required: None,
        encryption: true,
    }
}

const PROTOCOLS: [Protocol; 12] = [
    Protocol {
        name_required: false,
        attrs: &["tls", "tlsHostname"],
        ..protocol("nbd", Hosts::One, &[])
    },
    protocol("gluster", Hosts::OneOrMore, &[]),
    Protocol {
        name_required: false,
        ..protocol("rbd", Hosts::Any, &["snapshot", "config", "auth"])
    },
    protocol("iscsi", Hosts::One, &["auth", "initiator"]),
    Protocol {
        attrs: &["query"],
        ..protocol(
            "http",
            Hosts::One,
            &["cookies", "readahead", "timeout", "auth"],
        )
    },
    Protocol {
        attrs: &["query"],
        ..protocol(
            "https",
            Hosts::One,
            &["ssl", "cookies", "readahead", "timeout", "auth"],
        )
    },
    protocol("ftps", Hosts::One, &["ssl", "readahead", "timeout", "auth"]),
    protocol("ftp", Hosts::One, &["readahead", "timeout", "auth"]),
    protocol("sheepdog", Hosts::One, &["readahead", "timeout"]),
    protocol("tftp", Hosts::One, &["readahead", "timeout"]),
    Protocol {
        attrs: &["tls"],
        encryption: false,
        ..protocol("vxhs", Hosts::One, &[])
    },
    Protocol {
        required: Some("identity"),
        encryption: false,
        ..protocol("nfs", Hosts::One, &[])
    },
];

/// The children of a network `<disk>`: one `<source>`.
pub(super) fn children_ok(d: &Element) -> bool {
    let mut children = d.elements();
    match (children.next(), children.next()) {
        (Some(source), None) => !has_text(d) && source.name == "source" && source_ok(source),
        _ => false,
    }
}

fn source_ok(s: &Element) -> bool {
    let Some(p) = s
        .attr("protocol")
        .and_then(|v| PROTOCOLS.iter().find(|p| p.name == v))
    else {
        return false;
    };
    for (k, v) in attrs(s) {
        let ok = match k {
            "protocol" | "name" => true,
            "index" => is_positive_integer(v),
            "tls" => p.attrs.contains(&k) && matches!(v, "yes" | "no"),
            other => p.attrs.contains(&other),
        };
        if !ok {
            return false;
        }
    }
    if p.name_required && s.attr("name").is_none() || has_text(s) {
        return false;
    }
    let count = |n: &str| s.children_named(n).count();
    let hosts = count("host");
    let hosts_ok = match p.hosts {
        Hosts::One => hosts == 1,
        Hosts::OneOrMore => hosts >= 1,
        Hosts::Any => true,
    };
    let children_ok = s.elements().all(|c| match c.name.as_str() {
        "host" => host_ok(c),
        "slices" => slices_ok(c),
        "encryption" => p.encryption && encryption_ok(c),
        other => p.children.contains(&other) || p.required == Some(other),
    });
    let once = ["slices", "encryption"]
        .iter()
        .chain(p.children)
        .chain(&p.required)
        .all(|n| count(n) <= 1);
    hosts_ok && children_ok && once && p.required.is_none_or(|r| count(r) == 1)
}

/// `<host>`: a name (and port) over TCP or RDMA, or a unix socket.
fn host_ok(h: &Element) -> bool {
    let (mut transport, mut name, mut port, mut socket) = (None, None, None, None);
    for (k, v) in attrs(h) {
        match k {
            "transport" => transport = Some(v),
            "name" => name = Some(v),
            "port" => port = Some(v),
            "socket" => socket = Some(v),
            _ => return false,
        }
    }
    let empty = !h.has_element_children() && !has_text(h);
    let shape = match transport {
        None | Some("tcp" | "rdma") => {
            socket.is_none()
                && name.is_some_and(|n| is_dns_name(n) || n.parse::<std::net::Ipv6Addr>().is_ok())
                && port.is_none_or(is_unsigned_int)
        }
        Some("unix") => name.is_none() && port.is_none() && socket.is_some_and(is_abs_path),
        Some(_) => false,
    };
    empty && shape
}
