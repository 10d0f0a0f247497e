//! The control socket: `p2pfs-ctl` talks to a running node over a Unix socket in the data dir
//! (mode 0600; connections from other users are refused). One JSON request per line, one JSON
//! reply per line. The `status` reply is a documented, stable contract (see ARCHITECTURE.md).

pub mod client;
pub mod limits;
pub mod membership;
mod pins;
pub mod proto;
mod retention;
pub mod server;
pub mod transfer;
// `versions` and `restore`.
mod history;
mod snapshots;

use std::path::PathBuf;

pub use client::{call, call_within, get, leave, put};
pub use proto::*;
pub use server::{ControlService, LeaveSignal, bind, serve};

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "control.sock";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no p2pfs node is running for {0} (no control socket answers there)")]
    NotRunning(PathBuf),
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control protocol: {0}")]
    Protocol(String),
}
