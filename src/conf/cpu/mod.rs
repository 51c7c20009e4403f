//! A guest CPU definition (`<cpu>`), as libvirt 9.0 reads and writes it
//! for the QEMU driver's save cookie (cpu_conf.c: virCPUDefParseXML for a
//! guest CPU, virCPUDefFormatBufFull without NUMA).
//!
//! The domain model keeps a domain's own `<cpu>` verbatim; this model
//! exists for the CPU a snapshot records in its `<cookie>`: what QEMU
//! actually runs ([`x86::live_default`]), and what a redefined snapshot's
//! cookie says (read, checked and written back in libvirt's shape).
//!
//! Modelled: `mode`, `match`, `check`, `migratable`; `<model>` with
//! `fallback` and `vendor_id`; `<vendor>`; `<topology>`; `<feature>`s.
//! `<cache>` and `<maxphysaddr>` are kept as written, not checked.

pub mod x86;

use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};
use crate::conf::xml::{lookup_name, lookup_value, Element};

/// `mode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// A named model (the default).
    Custom,
    /// `host-model`.
    HostModel,
    /// `host-passthrough`.
    HostPassthrough,
    /// `maximum`.
    Maximum,
}

impl CpuMode {
    const ALL: [(&'static str, Self); 4] = [
        ("custom", Self::Custom),
        ("host-model", Self::HostModel),
        ("host-passthrough", Self::HostPassthrough),
        ("maximum", Self::Maximum),
    ];

    fn passes_host_through(self) -> bool {
        matches!(self, Self::HostPassthrough | Self::Maximum)
    }
}

/// `match=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMatch {
    /// `exact` (the default).
    Exact,
    /// `minimum`.
    Minimum,
    /// `strict`.
    Strict,
}

impl CpuMatch {
    const ALL: [(&'static str, Self); 3] = [
        ("exact", Self::Exact),
        ("minimum", Self::Minimum),
        ("strict", Self::Strict),
    ];
}

/// `check=`; `default` is written as no attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuCheck {
    /// No attribute.
    Default,
    /// `none`.
    None,
    /// `partial`.
    Partial,
    /// `full`: QEMU's CPU was compared with the definition.
    Full,
}

impl CpuCheck {
    const ALL: [(&'static str, Self); 4] = [
        ("default", Self::Default),
        ("none", Self::None),
        ("partial", Self::Partial),
        ("full", Self::Full),
    ];
}

/// `<feature policy=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturePolicy {
    /// `force`.
    Force,
    /// `require` (the default).
    Require,
    /// `optional`.
    Optional,
    /// `disable`.
    Disable,
    /// `forbid`.
    Forbid,
}

impl FeaturePolicy {
    const ALL: [(&'static str, Self); 5] = [
        ("force", Self::Force),
        ("require", Self::Require),
        ("optional", Self::Optional),
        ("disable", Self::Disable),
        ("forbid", Self::Forbid),
    ];
}

/// A guest CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCpu {
    mode: CpuMode,
    matching: CpuMatch,
    check: CpuCheck,
    migratable: Option<bool>,
    model: Option<String>,
    /// `fallback='forbid'`; libvirt's default is `allow`.
    forbid_fallback: bool,
    vendor_id: Option<String>,
    vendor: Option<String>,
    /// sockets, dies, cores, threads.
    topology: Option<[u32; 4]>,
    /// `<cache>` and `<maxphysaddr>`, as written.
    kept: Vec<Element>,
    features: Vec<(String, FeaturePolicy)>,
}

fn cpu_error(kind: ConfErrorKind, detail: impl Into<String>) -> ConfError {
    ConfError::new(kind, ConfErrorDomain::Cpu, detail)
}

/// `virStrToLong_uip`-like: digits (leading white space and `+` allowed)
/// within 32 bits.
fn parse_u32(s: &str) -> Option<u32> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An enumerated attribute as libvirt's virXMLPropEnum reads it.
fn enum_attr<T: Copy + PartialEq>(
    el: &Element,
    attr: &str,
    table: &[(&'static str, T)],
) -> Result<Option<T>, ConfError> {
    match el.attr(attr) {
        None => Ok(None),
        Some(v) => lookup_value(table, v)
            .map(Some)
            .ok_or_else(|| ConfError::invalid_attr(attr, &el.name, v)),
    }
}

/// A required, non-zero unsigned attribute of `<topology>`.
fn topology_attr(el: &Element, attr: &str, required: bool) -> Result<Option<u32>, ConfError> {
    let Some(v) = el.attr(attr) else {
        if required {
            return Err(ConfError::xml_helper(format!(
                "Missing required attribute '{attr}' in element '{}'",
                el.name
            )));
        }
        return Ok(None);
    };
    match parse_u32(v) {
        Some(0) => Err(ConfError::xml_helper(format!(
            "Invalid value for attribute '{attr}' in element '{}': Zero is not permitted",
            el.name
        ))),
        Some(n) => Ok(Some(n)),
        None => Err(ConfError::xml_helper(format!(
            "Invalid value for attribute '{attr}' in element '{}': '{v}'. Expected non-negative integer value",
            el.name
        ))),
    }
}

impl GuestCpu {
    /// libvirt's default guest CPU for x86 TCG: `qemu64`, exact, no
    /// fallback, not checked yet.
    pub fn qemu64() -> Self {
        Self {
            mode: CpuMode::Custom,
            matching: CpuMatch::Exact,
            check: CpuCheck::None,
            migratable: None,
            model: Some("qemu64".to_owned()),
            forbid_fallback: true,
            vendor_id: None,
            vendor: None,
            topology: None,
            kept: Vec::new(),
            features: Vec::new(),
        }
    }

    /// Read a `<cpu>` element in libvirt's order of checks.
    pub fn parse(el: &Element) -> Result<Self, ConfError> {
        let mode = match el.attr("mode") {
            None => CpuMode::Custom,
            Some(m) => lookup_value(&CpuMode::ALL, m).ok_or_else(|| {
                cpu_error(
                    ConfErrorKind::ConfigUnsupported,
                    format!("Invalid mode attribute '{m}'"),
                )
            })?,
        };
        let migratable = enum_attr(el, "migratable", &[("on", true), ("off", false)])?;
        if migratable.is_some() && !mode.passes_host_through() {
            return Err(cpu_error(
                ConfErrorKind::ConfigUnsupported,
                "Attribute migratable is only allowed for 'host-passthrough' / 'maximum' CPU mode",
            ));
        }
        let matching = enum_attr(el, "match", &CpuMatch::ALL)?.unwrap_or(CpuMatch::Exact);
        let check = enum_attr(el, "check", &CpuCheck::ALL)?.unwrap_or(CpuCheck::Default);

        let model_el = el.child("model");
        let model = model_el.and_then(Element::text_nonempty);
        let (mut forbid_fallback, mut vendor_id) = (false, None);
        if let (Some(m), false) = (model_el, mode.passes_host_through()) {
            if let Some(f) = m.attr("fallback").filter(|f| !f.is_empty()) {
                forbid_fallback = match f {
                    "allow" => false,
                    "forbid" => true,
                    _ => {
                        return Err(cpu_error(
                            ConfErrorKind::ConfigUnsupported,
                            "Invalid fallback attribute",
                        ))
                    }
                };
            }
            if let Some(v) = m.attr("vendor_id").filter(|v| !v.is_empty()) {
                if v.len() != 12 {
                    return Err(cpu_error(
                        ConfErrorKind::XmlError,
                        "vendor_id must be exactly 12 characters long",
                    ));
                }
                if v.contains(',') {
                    return Err(cpu_error(ConfErrorKind::XmlError, "vendor id is invalid"));
                }
                vendor_id = Some(v.to_owned());
            }
        }
        let vendor = el.child("vendor").and_then(Element::text_nonempty);
        if vendor.is_some() && model.is_none() {
            return Err(cpu_error(
                ConfErrorKind::XmlError,
                "CPU vendor specified without CPU model",
            ));
        }
        let topology = match el.child("topology") {
            None => None,
            Some(t) => {
                let sockets = topology_attr(t, "sockets", true)?;
                let dies = topology_attr(t, "dies", false)?.or(Some(1));
                let cores = topology_attr(t, "cores", true)?;
                let threads = topology_attr(t, "threads", true)?;
                match (sockets, dies, cores, threads) {
                    (Some(s), Some(d), Some(c), Some(th)) => Some([s, d, c, th]),
                    _ => None,
                }
            }
        };

        let mut features: Vec<(String, FeaturePolicy)> = Vec::new();
        let nodes: Vec<&Element> = el.children_named("feature").collect();
        if !nodes.is_empty() && model.is_none() && mode == CpuMode::Custom {
            return Err(cpu_error(
                ConfErrorKind::XmlError,
                "Non-empty feature list specified without CPU model",
            ));
        }
        for f in nodes {
            let policy = match f.attr("policy") {
                None => FeaturePolicy::Require,
                Some(p) => lookup_value(&FeaturePolicy::ALL, p).ok_or_else(|| {
                    cpu_error(
                        ConfErrorKind::ConfigUnsupported,
                        "Invalid CPU feature policy",
                    )
                })?,
            };
            let name = f
                .attr("name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| cpu_error(ConfErrorKind::XmlError, "Invalid CPU feature name"))?;
            if features.iter().any(|(n, _)| n == name) {
                return Err(cpu_error(
                    ConfErrorKind::XmlError,
                    format!("CPU feature '{name}' specified more than once"),
                ));
            }
            features.push((name.to_owned(), policy));
        }
        if el.children_named("cache").count() > 1 {
            return Err(cpu_error(
                ConfErrorKind::XmlError,
                "at most one CPU cache element may be specified",
            ));
        }
        let kept = ["cache", "maxphysaddr"]
            .iter()
            .filter_map(|n| el.child(n).cloned())
            .collect();

        Ok(Self {
            mode,
            matching,
            check,
            migratable,
            model,
            forbid_fallback,
            vendor_id,
            vendor,
            topology,
            kept,
            features,
        })
    }

    /// The element libvirt writes; `None` where it writes nothing (a
    /// custom CPU with neither model nor children).
    pub fn to_element(&self) -> Option<Element> {
        let mut el = Element::new("cpu");
        // Only topology or cache: no attributes.
        if self.mode != CpuMode::Custom || self.model.is_some() {
            el = el.with_attr("mode", lookup_name(&CpuMode::ALL, self.mode));
            if self.mode == CpuMode::Custom {
                el = el.with_attr("match", lookup_name(&CpuMatch::ALL, self.matching));
            }
            if self.check != CpuCheck::Default {
                el = el.with_attr("check", lookup_name(&CpuCheck::ALL, self.check));
            }
            if let (Some(m), true) = (self.migratable, self.mode.passes_host_through()) {
                el = el.with_attr("migratable", if m { "on" } else { "off" });
            }
        }
        let with_model = matches!(self.mode, CpuMode::Custom | CpuMode::HostModel);
        if with_model && (self.model.is_some() || self.vendor_id.is_some()) {
            let mut m = Element::new("model");
            if self.model.is_some() {
                m = m.with_attr(
                    "fallback",
                    if self.forbid_fallback {
                        "forbid"
                    } else {
                        "allow"
                    },
                );
            }
            if let Some(v) = &self.vendor_id {
                m = m.with_attr("vendor_id", v);
            }
            if let Some(name) = &self.model {
                m = m.with_text(name);
            }
            el = el.with_child(m);
        }
        if let (true, Some(v)) = (with_model, &self.vendor) {
            el = el.with_child(Element::new("vendor").with_text(v));
        }
        if let Some([s, d, c, t]) = self.topology {
            el = el.with_child(
                Element::new("topology")
                    .with_attr("sockets", s.to_string())
                    .with_attr("dies", d.to_string())
                    .with_attr("cores", c.to_string())
                    .with_attr("threads", t.to_string()),
            );
        }
        for k in &self.kept {
            el = el.with_child(k.clone());
        }
        for (name, policy) in &self.features {
            el = el.with_child(
                Element::new("feature")
                    .with_attr("policy", lookup_name(&FeaturePolicy::ALL, *policy))
                    .with_attr("name", name),
            );
        }
        (!el.attrs.is_empty() || el.has_element_children()).then_some(el)
    }

    /// Set a feature's policy, adding it at the end when it is not listed
    /// (virCPUDefUpdateFeature).
    fn update_feature(&mut self, name: &str, policy: FeaturePolicy) {
        match self.features.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = policy,
            None => self.features.push((name.to_owned(), policy)),
        }
    }
}

#[cfg(test)]
mod tests;
