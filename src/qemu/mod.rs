//! One QEMU process per running domain: command line, QMP, block graph.
//!
//! The driver hands this layer plain Rust values ([`LaunchSpec`]) and gets
//! back a [`RunningVm`]: its [`Monitor`] for commands, a stream of
//! [`VmEvent`]s, and its end. No XDR and no libvirt XML are known here.
//!
//! - [`command`]: the command line, built by a pure function.
//! - [`backup`]: push-mode backups (targets, the starting transaction,
//!   progress, cancel, cleanup), in libvirt 9.0's order.
//! - [`cpu`]: the guest CPU QEMU runs (its vCPU's feature properties).
//! - [`blockdev`]: images added at run time (backup targets): created
//!   through `blockdev-create`, attached, detached.
//! - [`blockjob`]: block commit, pull and copy jobs a client starts, and
//!   the disk's backing chain as QEMU has it open.
//! - [`jobs`]: QEMU jobs followed to their end through events and
//!   `query-jobs`, also across a reconnect.
//! - [`bitmap`]: persistent dirty bitmaps for checkpoints (add, remove,
//!   query, validate, dirty size), in libvirt 9.0's layout.
//! - [`node`]: libvirt's block node names (`libvirt-N-format`), formatted
//!   and parsed in one place.
//! - [`snapshot`]: internal and external snapshots, memory state, block
//!   commit, and `qemu-img` for shut-off domains.
//! - [`process`]: start, reconnect, stop; a watcher task per VM forwards
//!   events and notices the process's end.
//! - [`monitor`]: the QMP client (typed commands from the `qapi` crate over
//!   our own transport).
//! - [`events`]: QMP events and the typed [`VmEvent`]s derived from them.
//! - [`writeback`]: a job's target file written to disk while the job
//!   still copies into it, so that its final flush is short.
//! - [`error`]: [`QemuError`] and its [`QemuErrorKind`].

pub mod backup;
pub mod bitmap;
pub mod blockdev;
pub mod blockjob;
pub mod blockstats;
pub mod cbw;
pub mod command;
pub mod cpu;
pub mod error;
pub mod events;
pub mod image;
pub mod jobs;
pub mod json;
mod log;
pub mod monitor;
pub mod nbd;
pub mod node;
pub mod overlay_commit;
pub mod process;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
pub(crate) mod transcript;
mod watch;
pub mod writeback;

pub use bitmap::{BitmapInfo, BitmapProblem, NodeBitmaps};
pub use command::{
    build_argv, Accel, BackingSpec, DiskFormat, DiskSpec, LaunchSpec, RunPaths, SourceKind,
};
pub use error::{QemuError, QemuErrorKind};
pub use events::{Exit, QmpEvent, VmEvent};
pub use monitor::Monitor;
pub use process::{hypervisor_version, read_backing_chains, reconnect, start, RunningVm};
