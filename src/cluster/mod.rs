//! The cluster: what turns one node into a network. It keeps the membership view from gossiped
//! announcements, places chunks on their owners ([`ChunkRouter`], the [`crate::fs::RemoteChunks`] the
//! filesystem core writes and reads through), spreads committed entries by gossip and runs
//! anti-entropy with peers. It talks to libp2p only through [`crate::net::NetHandle`].
//!
//! - [`gossip`]: the event loop (announcements, membership view, namespace gossip, anti-entropy)
//! - [`router`]: chunk placement, proven copies, remote reads
//! - [`membership`]: liveness state machine, pure; [`placement`]: capacity-weighted rendezvous
//!   hashing, pure
//! - [`repair`]: repair passes, leave handoff, scrub; [`gc`]: unreferenced chunks, tombstone
//!   expiry; [`audit`]: the background proof-of-possession audit
//! - [`survey`]: where a file's chunks are and how healthy the files are, proven

pub mod audit;
pub mod gc;
pub mod gossip;
pub mod membership;
pub mod names;
pub mod placement;
pub mod repair;
pub mod router;
pub mod survey;

pub use gossip::{
    Cluster, ClusterConfig, NamespaceGossip, decode_announcement, decode_namespace_gossip,
};
pub use router::ChunkRouter;
