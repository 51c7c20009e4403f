//! XML models: parse, validate, format. Pure: no I/O.
//!
//! - [`xml`]: a generic element tree with a bounded, iterative parser and a
//!   writer that formats like libvirt.
//! - [`domain`]: the domain definition the driver acts on.
//! - [`checkpoint`], [`snapshot`], [`backup`]: the documents about a
//!   domain's disks; [`moment`] is what checkpoints and snapshots share
//!   (libvirt's moment_conf).
//! - [`cpu`]: libvirt's guest CPU model (a snapshot's save cookie).
//! - [`seclabel`]: a storage source's security labels (backup targets).
//! - [`error`]: [`ConfError`], whose kind, error domain and detail map
//!   onto libvirt's error triple.

pub mod backup;
pub mod checkpoint;
pub mod cpu;
pub mod domain;
pub mod error;
pub mod moment;
pub mod seclabel;
pub mod snapshot;
pub mod xml;

#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod test_support;

pub use domain::{
    DiskBus, DiskDef, DiskDevice, DiskFormat, DiskType, DomainDef, FormatMode, Secrets, VirtType,
};
pub use error::{ConfError, ConfErrorDomain, ConfErrorKind};
