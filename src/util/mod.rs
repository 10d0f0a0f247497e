//! Small helpers shared by every layer: clocks, durable file writes, paths.

pub mod fixed_bytes;
pub mod fsutil;
pub mod hlc;
pub mod paths;
