//! The daemon as a system service: its options (command line and
//! configuration file) and its readiness report to systemd.
//!
//! Start-up only (the daemon's, and its threads'); nothing here is used
//! once the daemon serves.

pub mod conf_file;
pub mod notify;
pub mod options;
pub mod priority;

pub use options::{Args, Options, OptionsError};
