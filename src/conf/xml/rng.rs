//! Small facts about elements that the RNG-schema checks of several
//! documents (checkpoint, backup) share: what libxml2 counts as text, as
//! an attribute, as a namespace.

use super::{Element, Node};

/// Whether `e` holds text other than white space.
pub(crate) fn has_text(e: &Element) -> bool {
    e.children
        .iter()
        .any(|n| matches!(n, Node::Text(t) if !is_blank(t)))
}

/// XML white space only (what the schema's whitespace handling ignores).
pub(crate) fn is_blank(t: &str) -> bool {
    t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// `xmlns` and `xmlns:p` declare namespaces; libxml2 does not count them
/// as attributes.
pub(crate) fn is_ns_decl(attr: &str) -> bool {
    attr == "xmlns" || attr.starts_with("xmlns:")
}

/// A prefixed name or a default namespace puts an element in a namespace,
/// where libvirt's schemas have no elements.
pub(crate) fn in_namespace(e: &Element) -> bool {
    e.name.contains(':') || e.attr("xmlns").is_some_and(|ns| !ns.is_empty())
}

/// The name without its namespace prefix.
pub(crate) fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}
