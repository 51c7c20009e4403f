//! One QEMU process per running domain: command line, QMP, block graph.
//!
//! - [`command`]: the command line, built by a pure function.
//! - [`monitor`]: the QMP client (typed commands from the `qapi` crate over
//!   our own transport).
//! - [`events`]: QMP events and the typed [`VmEvent`]s derived from them.
//! - [`error`]: [`QemuError`] and its [`QemuErrorKind`].

pub mod command;
pub mod error;
pub mod events;
pub mod json;
pub mod monitor;

pub use command::{build_argv, Accel, DiskFormat, DiskSpec, LaunchSpec, RunPaths, SourceKind};
pub use error::{QemuError, QemuErrorKind};
pub use events::{Exit, QmpEvent, VmEvent};
pub use monitor::Monitor;
