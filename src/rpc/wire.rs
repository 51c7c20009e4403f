//! Wire types generated from `protocol/*.x` by `build/xdrgen`, keeping the
//! .x names (`remote_nonnull_domain`, `remote_domain_get_info_ret`, …).
//!
//! - Constants and enum values: `REMOTE_STRING_MAX: u32`,
//!   `REMOTE_PROC_CONNECT_OPEN: i32`; enum-typed fields are plain `i32`.
//! - Structs and unions implement [`Pack`] and [`Unpack`], enforcing every
//!   limit of the .x.
//! - `remote_proc`, `qemu_proc`, `keepalive_proc`: one marker type per
//!   procedure whose layout we describe, implementing [`Procedure`].
//! - `remote_proc_info`, `qemu_proc_info`, `keepalive_proc_info`: every
//!   procedure number libvirt 9.0 defines, with its public API name.
//!
//! A handler decodes a call's body into `P::Args` and encodes `P::Ret`
//! for a marker `P`; both check every limit. [`from_bytes`] also refuses
//! trailing bytes (the dispatcher uses `from_payload`, which ignores them
//! as libvirtd does):
//!
//! [`from_bytes`]: crate::xdr::from_bytes
//!
//! ```
//! use virtbackupd::rpc::wire::{remote_domain_get_xml_desc_ret, remote_proc, Procedure};
//! use virtbackupd::xdr::{from_bytes, to_bytes, XdrError};
//!
//! type P = remote_proc::DomainGetXmlDesc; // REMOTE_PROC_DOMAIN_GET_XML_DESC = 14
//!
//! fn get_xml_desc(body: &[u8]) -> Result<Vec<u8>, XdrError> {
//!     let args: <P as Procedure>::Args = from_bytes(body)?; // remote_domain_get_xml_desc_args
//!     let xml = format!("<domain><name>{}</name></domain>", args.dom.name); // the driver's job
//!     let ret: <P as Procedure>::Ret = remote_domain_get_xml_desc_ret { xml };
//!     to_bytes(&ret)
//! }
//! # assert!(get_xml_desc(&[]).is_err());
//! ```
//!
//! An unimplemented but known number is answered from
//! [`remote_proc_info`]`(n).api`; an unknown one (or an event number sent
//! as a call) is libvirt's "unknown procedure".

#![allow(non_camel_case_types, non_snake_case)]

/// Ties a procedure number to the bodies it carries. For a call, `Args`
/// is what the client sends and `Ret` what a successful reply carries; for
/// an event (a one-way message), `Args` is the message body and `Ret` is
/// `()`. Procedures without a body in either direction use `()`.
/// `Debug + Send + 'static` let generic dispatch code trace the bodies and
/// move them across tasks.
pub trait Procedure {
    const PROGRAM: u32;
    const PROC: i32;
    type Args: Pack + Unpack + std::fmt::Debug + Send + 'static;
    type Ret: Pack + Unpack + std::fmt::Debug + Send + 'static;
}

/// What libvirt 9.0 knows about one procedure number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub number: i32,
    /// The enum item without its prefix, e.g. `DOMAIN_DEFINE_XML`.
    pub name: &'static str,
    /// The public C function the client library calls for it, e.g.
    /// `virDomainDefineXML`; libvirtd names it in "this function is not
    /// supported by the connection driver: …" and read-only refusals.
    /// `None` for events and authentication steps.
    pub api: Option<&'static str>,
    /// The API refuses read-only connections ("read only access prevents
    /// …"). Flag-dependent refusals (e.g. `VIR_DOMAIN_XML_SECURE` on
    /// virDomainGetXMLDesc) are left to the handler; see the .x notes.
    pub writes: bool,
    /// A one-way message from the server. libvirtd answers a CALL with
    /// such a number as an unknown procedure.
    pub event: bool,
}

fn find_proc(table: &'static [ProcInfo], proc: i32) -> Option<&'static ProcInfo> {
    let i = table.binary_search_by_key(&proc, |p| p.number).ok()?;
    table.get(i)
}

include!(concat!(env!("OUT_DIR"), "/wire.rs"));

/// A C string as the `char x<N>` arrays (security model, label, DOI)
/// carry it: its bytes and the terminating NUL, one `char` each.
pub fn c_chars(s: &str) -> Vec<i8> {
    s.bytes()
        .chain([0])
        .map(|b| i8::from_ne_bytes([b]))
        .collect()
}

/// The text of such a `char` array, up to its first NUL.
pub fn c_chars_to_string(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|c| c.to_ne_bytes()[0])
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// The generator's own unit tests run as part of the library's tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../build/xdrgen/mod.rs"]
mod xdrgen;

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
