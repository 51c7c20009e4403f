//! From [`CheckpointDef`] back to XML, shaped like libvirt's
//! `checkpoint-dumpxml` (checkpoint_conf.c,
//! virDomainCheckpointDefFormatInternal): name, description, parent,
//! creation time (unless 0), disks, then the domain one level in.

use super::{CheckpointDef, FormatFlags};
use crate::conf::domain::{FormatMode, Secrets};
use crate::conf::xml::Element;

pub(super) fn format_checkpoint(def: &CheckpointDef, flags: &FormatFlags<'_>) -> String {
    let mut root =
        Element::new("domaincheckpoint").with_child(Element::new("name").with_text(&def.name));
    if let Some(d) = &def.description {
        root = root.with_child(Element::new("description").with_text(d));
    }
    if let Some(p) = &def.parent {
        root =
            root.with_child(Element::new("parent").with_child(Element::new("name").with_text(p)));
    }
    if def.creation_time != 0 {
        root =
            root.with_child(Element::new("creationTime").with_text(def.creation_time.to_string()));
    }
    if !def.disks.is_empty() {
        let mut disks = Element::new("disks");
        for disk in &def.disks {
            let mut el = Element::new("disk").with_attr("name", &disk.name);
            match &disk.bitmap {
                None => el = el.with_attr("checkpoint", "no"),
                Some(bitmap) => {
                    el = el
                        .with_attr("checkpoint", "bitmap")
                        .with_attr("bitmap", bitmap);
                    if let Some(size) = flags.sizes.and_then(|s| s.get(&disk.name)) {
                        el = el.with_attr("size", size.to_string());
                    }
                }
            }
            disks = disks.with_child(el);
        }
        root = root.with_child(disks);
    }

    if let Some(domain) = def.domain.as_ref().filter(|_| !flags.no_domain) {
        // As an element, so that the writer indents it one level deeper,
        // as libvirt's buffer indentation does.
        root = root
            .with_child(domain.to_element(FormatMode::Inactive, Secrets::shown_if(flags.secure)));
    }
    let mut out = String::new();
    root.write(&mut out, 0);
    out
}
