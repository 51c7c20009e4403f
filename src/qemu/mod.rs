//! One QEMU process per running domain: command line, QMP, block graph.
//!
//! - [`monitor`]: the QMP client (typed commands from the `qapi` crate over
//!   our own transport).
//! - [`events`]: QMP events and the typed [`VmEvent`]s derived from them.
//! - [`error`]: [`QemuError`] and its [`QemuErrorKind`].

pub mod error;
pub mod events;
pub mod json;
pub mod monitor;

pub use error::{QemuError, QemuErrorKind};
pub use events::{Exit, QmpEvent, VmEvent};
pub use monitor::Monitor;
