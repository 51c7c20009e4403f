//! The QEMU driver's save cookie (`<cookie>`), which libvirt 9.0 records
//! with a snapshot of a running domain (qemu_domain.c,
//! qemuDomainSaveCookieParse / qemuDomainSaveCookieFormat): the guest CPU
//! QEMU runs, when it differs from the definition's, and whether a slirp
//! helper could be used (always, for a domain without user-mode
//! networking).
//!
//! A redefined snapshot's cookie is read into this model and written back
//! from it, as libvirt does: the first `<cpu>` in libvirt's shape,
//! `<slirpHelper/>` if any was there, nothing else.

use crate::conf::cpu::GuestCpu;
use crate::conf::error::ConfError;
use crate::conf::xml::{Element, Node};

/// What a `<cookie>` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveCookie {
    cpu: Option<GuestCpu>,
    slirp_helper: bool,
}

impl SaveCookie {
    /// A cookie for a snapshot made now: the CPU QEMU runs if libvirt
    /// would record one.
    pub fn new(cpu: Option<GuestCpu>, slirp_helper: bool) -> Self {
        Self { cpu, slirp_helper }
    }

    /// The recorded guest CPU.
    pub fn cpu(&self) -> Option<&GuestCpu> {
        self.cpu.as_ref()
    }

    pub(super) fn parse(el: &Element) -> Result<Self, ConfError> {
        Ok(Self {
            cpu: el.child("cpu").map(GuestCpu::parse).transpose()?,
            slirp_helper: el.child("slirpHelper").is_some(),
        })
    }

    /// The element as libvirt writes it one level below the root.
    pub(super) fn to_element(&self) -> Element {
        let mut el = Element::new("cookie");
        if let Some(cpu) = self.cpu.as_ref().and_then(GuestCpu::to_element) {
            el = el.with_child(cpu);
        }
        if self.slirp_helper {
            el = el.with_child(Element::new("slirpHelper"));
        }
        if !el.has_element_children() {
            // libvirt opens and closes the element on lines of their own
            // even when nothing is in it; this text is that layout at the
            // cookie's depth (it is always a child of the root).
            el.children.push(Node::Text("\n  ".to_owned()));
        }
        el
    }
}
