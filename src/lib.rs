//! p2pfs: a serverless, end-to-end encrypted, self-repairing peer-to-peer file store.
//!
//! The layers, top to bottom (each one module, arrows point down only):
//!
//! - [`fuse`]: thin adapter from kernel requests to [`fs::FsCore`] calls.
//! - [`fs`]: the filesystem core: inodes, open files, write buffers, close-to-open commits.
//! - [`namespace`]: signed, encrypted entries (one per file, directory or symlink), their
//!   last-writer-wins merge and the directory view built from them.
//! - [`block`]: the object store: chunk codec (encrypt, hash), local chunk files, LRU cache.
//! - [`identity`], [`config`], [`util`]: keys, settings, small shared helpers.
//!
//! [`node`] wires them together for the `p2pfs` binary; [`cli`] holds the command lines of both
//! binaries.

pub mod audit;
pub mod block;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod fs;
pub mod fuse;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod namespace;
pub mod net;
pub mod node;
pub mod placement;
pub mod repair;
pub mod rpc;
pub mod sim;
pub mod util;
