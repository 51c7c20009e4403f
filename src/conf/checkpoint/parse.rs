//! From XML to [`ParsedCheckpoint`], in libvirt's order: the XML parser,
//! the root element, the schema, then the fields
//! (checkpoint_conf.c, virDomainCheckpointDefParse, and the moment
//! post-parse that names a new checkpoint after its creation time).

use super::schema;
use super::{DiskRequest, ParseFlags, ParsedCheckpoint};
use crate::conf::domain::DomainDef;
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::rng::local_name;
use crate::conf::xml::{self, Element, Limits};

/// The label libvirt gives checkpoint documents in parser errors.
const DOC_NAME: &str = "(domain_checkpoint)";

pub(super) fn parse_checkpoint(
    input: &str,
    flags: ParseFlags,
    now_secs: i64,
) -> Result<ParsedCheckpoint, ConfError> {
    let root = xml::parse(input, DOC_NAME, &Limits::default()).map_err(|e| {
        // libxml2's complaints are reported from the checkpoint code.
        match (e.kind(), e.detail()) {
            (ConfErrorKind::XmlDetail, Some(d)) => ConfError::new(
                ConfErrorKind::XmlDetail,
                ConfErrorDomain::DomainCheckpoint,
                d,
            ),
            _ => e,
        }
    })?;
    // libvirt compares the local name; a prefix is the schema's problem.
    let root_name = local_name(&root.name);
    if root_name != "domaincheckpoint" {
        return Err(ConfError::xml_helper(format!(
            "expecting root element of 'domaincheckpoint', not '{root_name}'"
        )));
    }
    schema::validate(&root)?;

    // After the schema, every child is one of the known elements, at most
    // once each, with valid content.
    let name = root.child("name").and_then(Element::text_nonempty);
    if name.is_none() && flags.redefine {
        return Err(ConfError::new(
            ConfErrorKind::XmlError,
            ConfErrorDomain::DomainCheckpoint,
            "a redefined checkpoint must have a name",
        ));
    }
    let description = root.child("description").and_then(Element::text_nonempty);

    let (creation_time, parent, domain) = if flags.redefine {
        // Digits only (schema), but it must fit a signed 64-bit number.
        let creation_time = root
            .child("creationTime")
            .and_then(Element::text_nonempty)
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                ConfError::new(
                    ConfErrorKind::InternalError,
                    ConfErrorDomain::DomainCheckpoint,
                    "missing creationTime from existing checkpoint",
                )
            })?;
        let parent = root
            .child("parent")
            .and_then(|p| p.child("name"))
            .and_then(Element::text_nonempty);
        let domain = match root.child("domain") {
            // Written back out and parsed as a document of its own: the
            // domain model reads documents, and this one is well-formed.
            // Escaping may make it longer than the part of the input it
            // came from, so only its depth and node count stay bounded
            // (the input's limits already bound them).
            Some(d) => {
                let limits = Limits {
                    max_bytes: usize::MAX,
                    ..Limits::default()
                };
                Some(DomainDef::parse_with_limits(&d.to_xml_string(), &limits)?)
            }
            None => None,
        };
        (creation_time, parent, domain)
    } else {
        // A new checkpoint: libvirt takes none of these from the document.
        (now_secs, None, None)
    };

    let disks = root
        .child("disks")
        .map(|d| {
            d.elements()
                .map(|disk| DiskRequest {
                    name: disk.attr("name").unwrap_or_default().to_owned(),
                    wants_bitmap: disk.attr("checkpoint") != Some("no"),
                    bitmap: disk.attr("bitmap").map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();

    Ok(ParsedCheckpoint {
        name: name.unwrap_or_else(|| creation_time.to_string()),
        description,
        parent,
        creation_time,
        disks,
        domain,
    })
}
