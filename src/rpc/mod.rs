//! The wire edge: frames, XDR, dispatch of calls to the driver, events out.
//!
//! Nothing below this module sees a wire type: handlers in [`dispatch`]
//! convert between the generated [`wire`] structs and plain driver calls.

pub mod access;
pub mod client;
pub mod dispatch;
pub mod dn;
pub mod error;
pub mod events;
pub mod frame;
pub mod keepalive;
pub mod listen;
pub mod server;
pub mod tls;
pub mod wire;

pub use listen::{ListenConfig, ListenError, Listeners};
pub use server::{serve, ServerConfig};
pub use tls::TlsFiles;
