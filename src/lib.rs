//! virtbackupd: a daemon that speaks libvirt's RPC protocol and carries the
//! calls out on QEMU over QMP.
//!
//! The layers, each calling only the one below it (see ARCHITECTURE.md):
//!
//! 1. [`rpc`] reads frames from a client socket, decodes the XDR body and
//!    calls a [`driver`] method with plain Rust values; it encodes the result
//!    or maps the error onto libvirt's error triple.
//! 2. [`driver`] is the API itself: domains, rules, metadata on disk.
//! 3. [`qemu`] runs one QEMU process per running domain and speaks QMP to it.
//!
//! [`conf`] holds the XML models; it is pure and used by the driver.
//! [`xdr`] is the runtime for the code that `build/` generates from
//! `protocol/*.x`.

pub mod conf;
pub mod driver;
pub mod fault;
pub mod qemu;
pub mod rpc;
pub mod service;
pub mod xdr;
