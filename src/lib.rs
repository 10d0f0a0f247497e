//! p2pfs: a serverless, end-to-end encrypted, self-repairing peer-to-peer file store.
//!
//! The crate is a stack of folders, each owning one thing. A module may use the ones below it,
//! never one above it or beside it at its own level (`tests/layers.rs` fails the build
//! otherwise). Top to bottom:
//!
//! - [`cli`]: the command lines of both binaries, as clap definitions.
//! - [`node`]: process life (load a data dir, start, serve, stop), settings, the status
//!   snapshot, the control socket (protocol, server, client) and the metrics export, which
//!   both encode that snapshot.
//! - [`fuse`]: thin adapter from kernel requests to [`fs::Mount`] calls, and what it counts.
//! - [`cluster`]: what turns one node into a network: membership, placement, the chunk router,
//!   gossip and anti-entropy scheduling, repair, garbage collection, the audit.
//! - [`rpc`]: the request/response protocols between peers (chunk, sync) and their framing.
//! - [`fs`]: the filesystem core: volumes, inodes, open files, write buffers, commits.
//! - [`namespace`]: signed, encrypted entries, their merge, volumes and the entry store.
//! - [`block`]: chunks: codec, proof of possession, local store, cache.
//! - [`net`]: the libp2p swarm's event loop and its handle, peer guard, connection limits,
//!   the admission handshake.
//! - [`admission`]: certified membership: node certificates, admins, revocations, key epochs,
//!   invites, and the gate that decides on a connecting peer.
//! - [`identity`]: network, node and user keys.
//! - [`util`]: small helpers with no knowledge of the rest.
//!
//! Outside the stack: the fuzzers' harnesses (`fuzzing`, only with the `fuzzing` feature).
//! The placement simulation is the `p2pfs-sim` crate (`sim/`); the rogue peer, a hostile test
//! tool, is the `p2pfs-rogue` binary (`src/bin/p2pfs-rogue/`, only with the `rogue` feature).

pub mod admission;
pub mod block;
pub mod cli;
pub mod cluster;
pub mod fs;
pub mod fuse;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod namespace;
pub mod net;
pub mod node;
pub mod rpc;
pub mod util;
