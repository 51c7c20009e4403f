//! A storage source's per-device security labels (`<seclabel>` inside a
//! backup target or scratch), read and written back as libvirt 9.0 does
//! (domain_conf.c: virSecurityDeviceLabelDefParseXML and
//! virSecurityDeviceLabelDefFormat).
//!
//! This daemon runs no security driver (libvirtd's reference setup has
//! `security_driver = "none"` too), so a label changes nothing: it is
//! only kept, so that the document comes back as the client wrote it.

use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::Element;

/// One `<seclabel>` of a storage source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSeclabel {
    model: Option<String>,
    relabel: bool,
    labelskip: bool,
    label: Option<String>,
}

impl DeviceSeclabel {
    /// The `<seclabel>` children of `parent`, in order. The schema has
    /// already vouched for each one's shape; what is left for libvirt's
    /// parser to refuse is a model named twice. `inactive`: the document
    /// is a persistent definition, where `labelskip` means nothing.
    pub fn parse_all(parent: &Element, inactive: bool) -> Result<Vec<Self>, ConfError> {
        let mut labels: Vec<Self> = Vec::new();
        for el in parent.children_named("seclabel") {
            let model = el.attr("model").map(str::to_owned);
            if let Some(m) = &model {
                if labels.iter().any(|l| l.model.as_ref() == Some(m)) {
                    return Err(ConfError::new(
                        ConfErrorKind::XmlDetail,
                        ConfErrorDomain::Domain,
                        format!("seclabel for model {m} is already provided"),
                    ));
                }
            }
            let label = el.child("label").map(Element::text);
            labels.push(Self {
                model,
                relabel: el.attr("relabel") != Some("no"),
                labelskip: !inactive && el.attr("labelskip") == Some("yes"),
                // An empty label is no label, as libvirt's XPath string
                // read makes it.
                label: label.filter(|l| !l.is_empty()),
            });
        }
        Ok(labels)
    }

    /// The element libvirt writes; `None` where an inactive definition
    /// leaves out a label that says nothing.
    pub fn to_element(&self, inactive: bool) -> Option<Element> {
        if inactive && self.label.is_none() && self.relabel {
            return None;
        }
        let mut el = Element::new("seclabel");
        if let Some(model) = &self.model {
            el = el.with_attr("model", model);
        }
        el = if self.labelskip {
            el.with_attr("labelskip", "yes")
        } else {
            el.with_attr("relabel", if self.relabel { "yes" } else { "no" })
        };
        if let Some(label) = &self.label {
            el = el.with_child(Element::new("label").with_text(label));
        }
        Some(el)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::xml::{parse, Limits};

    fn labels(xml: &str, inactive: bool) -> Result<Vec<DeviceSeclabel>, ConfError> {
        let el = parse(xml, "(t)", &Limits::default()).expect("well-formed");
        DeviceSeclabel::parse_all(&el, inactive)
    }

    fn formatted(xml: &str, inactive: bool) -> Vec<String> {
        labels(xml, inactive)
            .expect("parses")
            .iter()
            .filter_map(|l| l.to_element(inactive))
            .map(|e| {
                let mut out = String::new();
                e.write(&mut out, 0);
                out
            })
            .collect()
    }

    #[test]
    fn written_back_as_libvirt_writes_them() {
        let xml = "<target file='/t'><seclabel model='dac' relabel='no'/>\
                   <seclabel model='selinux' relabel='yes'><label>a&amp;b</label></seclabel>\
                   <seclabel labelskip='yes'/><seclabel><label>x</label></seclabel></target>";
        assert_eq!(
            formatted(xml, false),
            [
                "<seclabel model='dac' relabel='no'/>\n",
                "<seclabel model='selinux' relabel='yes'>\n  <label>a&amp;b</label>\n</seclabel>\n",
                "<seclabel labelskip='yes'/>\n",
                "<seclabel relabel='yes'>\n  <label>x</label>\n</seclabel>\n",
            ]
        );
        // Inactive: labelskip is not read, and a label that relabels
        // without saying how is not written.
        assert_eq!(
            formatted(xml, true),
            [
                "<seclabel model='dac' relabel='no'/>\n",
                "<seclabel model='selinux' relabel='yes'>\n  <label>a&amp;b</label>\n</seclabel>\n",
                "<seclabel relabel='yes'>\n  <label>x</label>\n</seclabel>\n",
            ]
        );
    }

    #[test]
    fn a_model_named_twice_is_refused() {
        let err = labels(
            "<t><seclabel model='dac' relabel='no'/><seclabel model='dac' labelskip='yes'/></t>",
            false,
        )
        .unwrap_err();
        assert_eq!(
            (err.kind(), err.domain(), err.detail()),
            (
                ConfErrorKind::XmlDetail,
                ConfErrorDomain::Domain,
                Some("seclabel for model dac is already provided")
            )
        );
        // Labels without a model never collide.
        assert_eq!(
            labels(
                "<t><seclabel relabel='no'/><seclabel relabel='no'/></t>",
                false
            )
            .map(|l| l.len()),
            Ok(2)
        );
    }
}
