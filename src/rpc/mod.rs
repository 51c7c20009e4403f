//! The wire edge: frames, XDR, dispatch of calls to the driver, events out.

pub mod wire;
