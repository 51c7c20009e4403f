//! From [`CheckpointDef`] back to XML, shaped like libvirt's
//! `checkpoint-dumpxml` (checkpoint_conf.c,
//! virDomainCheckpointDefFormatInternal): name, description, parent,
//! creation time (unless 0), disks, then the domain one level in.

use super::{CheckpointDef, FormatFlags};
use crate::conf::xml::Element;

pub(super) fn format_checkpoint(moment: &CheckpointDef, flags: &FormatFlags<'_>) -> String {
    let mut root = moment.format_head("domaincheckpoint", None);
    if !moment.disks.is_empty() {
        let mut disks = Element::new("disks");
        for disk in &moment.disks {
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
    if let Some(domain) = (!flags.no_domain)
        .then(|| moment.domain_element(flags.secure))
        .flatten()
    {
        root = root.with_child(domain);
    }
    let mut out = String::new();
    root.write(&mut out, 0);
    out
}
