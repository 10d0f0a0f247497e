//! Small helpers shared by every layer: clocks, durable file writes, paths, blocking work, the
//! task set a node stops as one.

pub mod blocking;
pub mod calendar;
pub mod fixed_bytes;
pub mod fsutil;
pub mod hlc;
pub mod paths;
pub mod workers;
