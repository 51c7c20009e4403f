//! What checkpoints and snapshots have in common, as libvirt's
//! moment_conf.c has it for both: the definition's core ([`MomentDef`]:
//! name, description, parent, creation time, per-disk entries, the
//! embedded domain), the [`Moment`] accessors over it, and the steps both
//! parsers, aligners and formatters take in the same order with only their
//! words differing ([`Kind`]).

use crate::conf::domain::{DomainDef, FormatMode, Secrets};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::rng::local_name;
use crate::conf::xml::{self, Element, Limits};

/// The part of a checkpoint or snapshot definition that libvirt keeps for
/// both (virDomainMomentDef), with the kind's own per-disk entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MomentDef<D> {
    pub(super) name: String,
    /// An empty one counts as none.
    pub(super) description: Option<String>,
    pub(super) parent: Option<String>,
    /// Seconds since the epoch; 0 is not written out (libvirt's rule).
    pub(super) creation_time: i64,
    pub(super) disks: Vec<D>,
    /// The domain as it was when the moment was taken.
    pub(super) domain: Option<DomainDef>,
}

/// A definition built around a [`MomentDef`]; the accessors are written
/// once, here.
pub trait Moment {
    type Disk;

    fn moment(&self) -> &MomentDef<Self::Disk>;

    /// Outside conf, only the parent can be changed through it.
    fn moment_mut(&mut self) -> &mut MomentDef<Self::Disk>;

    /// The name (given, or the default from the creation time).
    fn name(&self) -> &str {
        &self.moment().name
    }

    fn description(&self) -> Option<&str> {
        self.moment().description.as_deref()
    }

    /// The parent's name; `None` for a root. In a document just parsed it
    /// is set only for a redefine, where the driver checks it before
    /// preparing the definition: not the moment itself ("cannot set moment
    /// NAME as its own parent"), existing ("parent P for moment NAME not
    /// found") and making no cycle ("parent P would create cycle to
    /// NAME"), all VIR_ERR_INVALID_ARG from VIR_FROM_DOMAIN.
    fn parent(&self) -> Option<&str> {
        self.moment().parent.as_deref()
    }

    /// Set the parent: a new moment's is the domain's current one, and a
    /// deleted moment's children move to its parent. Both are the driver's
    /// business.
    fn set_parent(&mut self, parent: Option<String>) {
        self.moment_mut().parent = parent;
    }

    /// Seconds since the epoch.
    fn creation_time(&self) -> i64 {
        self.moment().creation_time
    }

    /// After preparation, one entry per domain disk in the domain's order
    /// (a checkpoint redefined without `<domain>` keeps them as written).
    fn disks(&self) -> &[Self::Disk] {
        &self.moment().disks
    }

    fn domain(&self) -> Option<&DomainDef> {
        self.moment().domain.as_ref()
    }
}

impl<D> Moment for MomentDef<D> {
    type Disk = D;

    fn moment(&self) -> &Self {
        self
    }

    fn moment_mut(&mut self) -> &mut Self {
        self
    }
}

/// The words that tell a checkpoint document from a snapshot one.
pub(super) struct Kind {
    /// `checkpoint` or `snapshot`, as errors name it.
    pub noun: &'static str,
    pub root: &'static str,
    /// The label libvirt gives the document in parser errors.
    pub doc_name: &'static str,
    pub domain: ConfErrorDomain,
}

impl Kind {
    pub fn error(&self, kind: ConfErrorKind, detail: impl Into<String>) -> ConfError {
        ConfError::new(kind, self.domain, detail)
    }

    /// Well-formed XML whose root is the kind's (libvirt compares the local
    /// name; a prefix is the schema's problem). libxml2's complaints are
    /// reported from the kind's own code.
    pub fn parse_root(&self, input: &str) -> Result<Element, ConfError> {
        let root = xml::parse(input, self.doc_name, &Limits::default()).map_err(|e| {
            match (e.kind(), e.detail()) {
                (ConfErrorKind::XmlDetail, Some(d)) => self.error(ConfErrorKind::XmlDetail, d),
                _ => e,
            }
        })?;
        let root_name = local_name(&root.name);
        if root_name != self.root {
            return Err(ConfError::xml_helper(format!(
                "expecting root element of '{}', not '{root_name}'",
                self.root
            )));
        }
        Ok(root)
    }
}

impl<D> MomentDef<D> {
    /// The fields both kinds read first, in libvirt's order: the name
    /// (required for a redefine), the description and, for a redefine
    /// only, the creation time and the parent; a new moment is created at
    /// `now_secs` and named after it when the document has no name. No
    /// disks and no domain yet.
    pub(super) fn parse_head(
        root: &Element,
        kind: &Kind,
        redefine: bool,
        now_secs: i64,
    ) -> Result<Self, ConfError> {
        let name = root.child("name").and_then(Element::text_nonempty);
        if name.is_none() && redefine {
            return Err(kind.error(
                ConfErrorKind::XmlError,
                format!("a redefined {} must have a name", kind.noun),
            ));
        }
        let description = root.child("description").and_then(Element::text_nonempty);
        let (creation_time, parent) = if redefine {
            let creation_time = root
                .child("creationTime")
                .and_then(Element::text_nonempty)
                .and_then(|t| strtoll(&t))
                .ok_or_else(|| {
                    kind.error(
                        ConfErrorKind::InternalError,
                        format!("missing creationTime from existing {}", kind.noun),
                    )
                })?;
            let parent = root
                .child("parent")
                .and_then(|p| p.child("name"))
                .and_then(Element::text_nonempty);
            (creation_time, parent)
        } else {
            // libvirt takes neither from a new moment's document.
            (now_secs, None)
        };
        Ok(MomentDef {
            name: name.unwrap_or_else(|| creation_time.to_string()),
            description,
            parent,
            creation_time,
            disks: Vec::new(),
            domain: None,
        })
    }

    /// The same moment with other per-disk entries (a document's requests
    /// become aligned disks).
    pub(super) fn with_disks<E>(self, disks: Vec<E>) -> MomentDef<E> {
        MomentDef {
            name: self.name,
            description: self.description,
            parent: self.parent,
            creation_time: self.creation_time,
            disks,
            domain: self.domain,
        }
    }

    /// A new root element with what comes first in both formats: `<name>`,
    /// `<description>`, the kind's element in between (a snapshot's
    /// `<state>`), `<parent>`, and `<creationTime>` unless 0.
    pub(super) fn format_head(&self, root: &str, between: Option<Element>) -> Element {
        let text = |name: &str, value: &str| Element::new(name).with_text(value);
        let mut root = Element::new(root).with_child(text("name", &self.name));
        if let Some(d) = &self.description {
            root = root.with_child(text("description", d));
        }
        if let Some(el) = between {
            root = root.with_child(el);
        }
        if let Some(p) = &self.parent {
            root = root.with_child(Element::new("parent").with_child(text("name", p)));
        }
        if self.creation_time != 0 {
            root = root.with_child(text("creationTime", &self.creation_time.to_string()));
        }
        root
    }

    /// The embedded domain as an element, so that the writer indents it
    /// one level deeper, as libvirt's buffer indentation does.
    pub(super) fn domain_element(&self, secure: bool) -> Option<Element> {
        let domain = self.domain.as_ref()?;
        Some(domain.to_element(FormatMode::Inactive, Secrets::shown_if(secure)))
    }

    /// A redefine's embedded domain must be the domain's own.
    pub(super) fn check_uuid(&self, kind: &Kind, uuid: uuid::Uuid) -> Result<(), ConfError> {
        match &self.domain {
            Some(d) if d.uuid() != uuid => Err(kind.error(
                ConfErrorKind::InvalidArg,
                format!(
                    "definition for {} {} must use uuid {}",
                    kind.noun,
                    self.name,
                    uuid.hyphenated()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// An embedded `<domain>` (or a snapshot's `<inactiveDomain>`) as a domain
/// definition. Written back out and parsed as a document of its own: the
/// domain model reads documents, and this one is well-formed. Escaping may
/// make it longer than the part of the input it came from, so only its
/// depth and node count stay bounded (the input's limits already bound
/// them).
pub(super) fn embedded_domain(el: &Element) -> Result<DomainDef, ConfError> {
    let mut el = el.clone();
    el.name = "domain".to_owned();
    let limits = Limits {
        max_bytes: usize::MAX,
        ..Limits::default()
    };
    DomainDef::parse_with_limits(&el.to_xml_string(), &limits)
}

/// The disks a document names, each put at its domain disk's position
/// (virDomainCheckpointAlignDisks and virDomainSnapshotAlignDisks share
/// these steps): no more requests than domain disks, each naming a disk
/// of the domain, none twice; `check` then looks at each request in the
/// document's order, with its position.
pub(super) fn place_disks<R>(
    kind: &Kind,
    requests: impl ExactSizeIterator<Item = R>,
    name: impl Fn(&R) -> &str,
    domain: &DomainDef,
    mut check: impl FnMut(usize, &mut R) -> Result<(), ConfError>,
) -> Result<Vec<Option<R>>, ConfError> {
    let unsupported = |detail: String| kind.error(ConfErrorKind::ConfigUnsupported, detail);
    let count = domain.disks().len();
    if requests.len() > count {
        return Err(unsupported(format!(
            "too many disk {} requests for domain",
            kind.noun
        )));
    }
    let mut placed: Vec<Option<R>> = std::iter::repeat_with(|| None).take(count).collect();
    for mut request in requests {
        let index = domain
            .disk_index_by_name(name(&request))
            .ok_or_else(|| unsupported(format!("no disk named '{}'", name(&request))))?;
        if placed[index].is_some() {
            return Err(unsupported(format!(
                "disk '{}' specified twice",
                name(&request)
            )));
        }
        check(index, &mut request)?;
        placed[index] = Some(request);
    }
    Ok(placed)
}

/// `strtoll` as libvirt's `virStrToLong_ll` uses it: leading white space
/// and a sign allowed, nothing after the digits, within 64 bits.
pub(super) fn strtoll(s: &str) -> Option<i64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i128 = digits.parse().ok()?;
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoll_is_libvirts() {
        assert_eq!(strtoll(" +12"), Some(12));
        assert_eq!(strtoll("-3"), Some(-3));
        assert_eq!(strtoll("9223372036854775807"), Some(i64::MAX));
        for bad in ["", "x", "1 ", "9223372036854775808", "+", "--1"] {
            assert_eq!(strtoll(bad), None, "{bad:?}");
        }
    }
}
