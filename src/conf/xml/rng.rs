//! Small facts about elements that the RNG-schema checks of several
//! documents (checkpoint, backup, snapshot) share: what libxml2 counts as text, as
//! an attribute, as a namespace.

use super::{Element, Node};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};

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

/// libvirt's error for a document its RNG schema (`schema_file`) refuses,
/// with libxml2's lines.
pub(crate) fn invalid(schema_file: &str, lines: &str) -> ConfError {
    ConfError::new(
        ConfErrorKind::XmlInvalidSchema,
        ConfErrorDomain::Xml,
        format!("Unable to validate doc against {schema_file}\n{lines}"),
    )
}

/// One of libvirt's RNG schemas, for the messages libxml2 gives about the
/// root element; the wording is the same for every schema.
pub(crate) struct Schema {
    /// Where libvirt 9.0 on Debian finds it; part of every message.
    pub file: &'static str,
    /// The root element's name.
    pub root: &'static str,
}

impl Schema {
    /// The schema refuses the document, with libxml2's `lines`.
    pub fn invalid(&self, lines: &str) -> ConfError {
        invalid(self.file, lines)
    }

    /// The root is in a namespace.
    pub fn namespaced(&self) -> ConfError {
        self.invalid(&format!(
            "Expecting no namespace for element {}\n",
            self.root
        ))
    }

    /// A child of the root's interleave appears twice, or fits no pattern
    /// of its group.
    pub fn extra_in_interleave(&self, group: &str) -> ConfError {
        self.invalid(&format!(
            "Extra element {group} in interleave\nElement {} failed to validate content\n",
            self.root
        ))
    }

    /// A child of the root that belongs to no group.
    pub fn extra_content(&self, what: &str) -> ConfError {
        self.invalid(&format!(
            "Element {} has extra content: {what}\n",
            self.root
        ))
    }

    /// An attribute the root does not take.
    pub fn invalid_attribute(&self, attr: &str) -> ConfError {
        self.invalid(&format!(
            "Invalid attribute {attr} for element {}\n",
            self.root
        ))
    }

    /// Checks a root whose content is an `<interleave>` of optional
    /// elements, one group per name in `groups` (the schema's order), as
    /// libxml2 reports it: a namespaced root; then the groups in order,
    /// the first one twice or not `valid` being "Extra element G in
    /// interleave"; then the first child that fits no group ("has extra
    /// content"); then the root's attributes.
    pub fn check_interleave<const N: usize>(
        &self,
        root: &Element,
        groups: &[&str; N],
        valid: impl Fn(&str, &Element) -> bool,
    ) -> Result<(), ConfError> {
        if in_namespace(root) {
            return Err(self.namespaced());
        }
        let (members, extra) = interleave(root, groups);
        for (group, members) in groups.iter().zip(&members) {
            let ok = match members.as_slice() {
                [] => true,
                [one] => valid(group, one),
                // Each group is optional: a second one is one too many.
                _ => false,
            };
            if !ok {
                return Err(self.extra_in_interleave(group));
            }
        }
        if let Some(what) = extra {
            return Err(self.extra_content(&what));
        }
        if let Some((attr, _)) = attrs(root).next() {
            return Err(self.invalid_attribute(attr));
        }
        Ok(())
    }
}

/// The children of a root whose content is an `<interleave>` of the
/// elements `names`, one list per name, and the first child that fits
/// none of them ("text" for text, a namespaced or unknown element by its
/// local name). libxml2 reports a group's problem before that extra
/// child, so the caller checks the groups first.
pub(crate) fn interleave<'a, const N: usize>(
    root: &'a Element,
    names: &[&str; N],
) -> ([Vec<&'a Element>; N], Option<String>) {
    let mut groups: [Vec<&Element>; N] = std::array::from_fn(|_| Vec::new());
    for node in &root.children {
        match node {
            Node::Text(t) if is_blank(t) => {}
            Node::Text(_) => return (groups, Some("text".to_owned())),
            Node::Element(e) => match names.iter().position(|g| *g == e.name) {
                Some(i) if !in_namespace(e) => groups[i].push(e),
                _ => return (groups, Some(local_name(&e.name).to_owned())),
            },
        }
    }
    (groups, None)
}

/// The text of an element that may hold only text: no attributes, no
/// child elements.
pub(crate) fn plain(e: &Element) -> Option<String> {
    let bare = e.attrs.iter().all(|(k, _)| is_ns_decl(k))
        && e.children.iter().all(|n| matches!(n, Node::Text(_)));
    bare.then(|| e.text())
}

/// `diskTarget` of libvirt's schemas: a known prefix and a name.
pub(crate) fn is_disk_target(s: &str) -> bool {
    let s = s.strip_prefix("ioemu:").unwrap_or(s);
    ["fd", "hd", "sd", "vd", "xvd", "ubd"].iter().any(|p| {
        s.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// `absFilePath` of libvirt's schemas (a Windows drive path counts too).
pub(crate) fn is_abs_path(s: &str) -> bool {
    let rest = s.strip_prefix('/').or_else(|| {
        let mut c = s.chars();
        match (c.next(), c.next(), c.next()) {
            (Some(d), Some(':'), Some('\\')) if d.is_ascii_alphabetic() => Some(&s[3..]),
            _ => None,
        }
    });
    rest.is_some_and(|r| !r.is_empty() && !r.contains(['\n', '\r']))
}

/// `dnsName`: `[a-zA-Z0-9\.\-]+` (which also covers IPv4 addresses).
pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// XSD `unsignedInt` with libvirt's `[0-9]+` pattern.
pub(crate) fn is_unsigned_int(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok()
}

/// XSD `positiveInteger` with libvirt's `[0-9]+` pattern: any size, not 0.
pub(crate) fn is_positive_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.bytes().any(|b| b != b'0')
}

/// The attributes other than namespace declarations.
pub(crate) fn attrs(e: &Element) -> impl Iterator<Item = (&str, &str)> {
    e.attrs
        .iter()
        .filter(|(k, _)| !is_ns_decl(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// No attributes other than namespace declarations.
pub(crate) fn no_attrs(e: &Element) -> bool {
    attrs(e).next().is_none()
}

pub(crate) fn empty(e: &Element) -> bool {
    !e.has_element_children() && !has_text(e)
}

/// libvirt's `unsignedLong`: digits only (no sign, no spaces) and within
/// 64 bits.
pub(crate) fn is_unsigned_long(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok()
}

/// A list element such as `<disks>`: no attributes, no text, and every
/// child element a `child` outside any namespace that passes `ok`. How
/// many there are, if so.
pub(crate) fn list_of(e: &Element, child: &str, ok: impl Fn(&Element) -> bool) -> Option<usize> {
    if !no_attrs(e) || has_text(e) {
        return None;
    }
    let mut count = 0;
    for c in e.elements() {
        if c.name != child || in_namespace(c) || !ok(c) {
            return None;
        }
        count += 1;
    }
    Some(count)
}

/// The one child element of an element that has no attributes, no text
/// and only that child, named `child` (`<parent><name>`).
pub(crate) fn sole_child<'a>(e: &'a Element, child: &str) -> Option<&'a Element> {
    if !no_attrs(e) || has_text(e) {
        return None;
    }
    let mut elements = e.elements();
    match (elements.next(), elements.next()) {
        (Some(only), None) if only.name == child => Some(only),
        _ => None,
    }
}

/// `devSeclabel`: `relabel='no'`, or `labelskip='yes'`, or an optional
/// `relabel='yes'` with one or more `<label>`; `model` optional.
pub(crate) fn seclabel_ok(e: &Element) -> bool {
    let (mut relabel, mut labelskip) = (None, None);
    for (k, v) in attrs(e) {
        match k {
            "model" => {}
            "relabel" => relabel = Some(v),
            "labelskip" => labelskip = Some(v),
            _ => return false,
        }
    }
    let labels = e.elements().count();
    let only_labels = e
        .elements()
        .all(|l| l.name == "label" && no_attrs(l) && !l.has_element_children());
    if has_text(e) || !only_labels {
        return false;
    }
    match (relabel, labelskip) {
        (Some("no"), None) | (None, Some("yes")) => labels == 0,
        (None | Some("yes"), None) => labels > 0,
        _ => false,
    }
}
