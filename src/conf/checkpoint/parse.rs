//! From XML to [`ParsedCheckpoint`], in libvirt's order: the XML parser,
//! the root element, the schema, then the fields
//! (checkpoint_conf.c, virDomainCheckpointDefParse, and the moment
//! post-parse that names a new checkpoint after its creation time).

use super::schema;
use super::{DiskRequest, ParseFlags, ParsedCheckpoint, KIND};
use crate::conf::error::ConfError;
use crate::conf::moment::{embedded_domain, MomentDef};

pub(super) fn parse_checkpoint(
    input: &str,
    flags: ParseFlags,
    now_secs: i64,
) -> Result<ParsedCheckpoint, ConfError> {
    let root = KIND.parse_root(input)?;
    schema::validate(&root)?;

    // After the schema, every child is one of the known elements, at most
    // once each, with valid content.
    let mut moment = MomentDef::parse_head(&root, &KIND, flags.redefine, now_secs)?;
    if flags.redefine {
        // A new checkpoint's <domain> is ignored, as libvirt ignores it.
        moment.domain = root.child("domain").map(embedded_domain).transpose()?;
    }
    moment.disks = root
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
    Ok(ParsedCheckpoint { moment })
}
