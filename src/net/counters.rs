//! What the swarm loop counts of gossip (messages and bytes per topic, received, published and
//! dropped) and of admission refusals. Process-wide atomics; the node's metrics export reads
//! them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The gossip topics, as labels (index 0: membership announcements, 1: namespace entries).
pub const GOSSIP_TOPICS: [&str; 3] = ["membership", "namespace", "ledger"];

/// Gossip messages and their payload bytes per topic: received (new to this node, after
/// gossipsub's duplicate filter, before our checks), published by this node, and received ones
/// dropped unread (the receiver's queue full, or the source over its rate). gossipsub's own
/// framing, duplicates and control messages are below this count (see the TCP figures of
/// `bench/scale`).
pub struct GossipCounters {
    received: [AtomicU64; 3],
    received_bytes: [AtomicU64; 3],
    published: [AtomicU64; 3],
    published_bytes: [AtomicU64; 3],
    dropped: AtomicU64,
}

impl GossipCounters {
    const fn new() -> Self {
        Self {
            received: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            received_bytes: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            published: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            published_bytes: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            dropped: AtomicU64::new(0),
        }
    }

    /// A message on topic `topic` (an index into [`GOSSIP_TOPICS`]) reached this node.
    pub fn received(&self, topic: usize, bytes: usize) {
        self.received[topic].fetch_add(1, Ordering::Relaxed);
        self.received_bytes[topic].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// This node published a message on `topic`.
    pub fn published(&self, topic: usize, bytes: usize) {
        self.published[topic].fetch_add(1, Ordering::Relaxed);
        self.published_bytes[topic].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// (messages, bytes) received on `topic`.
    pub fn received_on(&self, topic: usize) -> (u64, u64) {
        (
            self.received[topic].load(Ordering::Relaxed),
            self.received_bytes[topic].load(Ordering::Relaxed),
        )
    }

    /// (messages, bytes) published on `topic`.
    pub fn published_on(&self, topic: usize) -> (u64, u64) {
        (
            self.published[topic].load(Ordering::Relaxed),
            self.published_bytes[topic].load(Ordering::Relaxed),
        )
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub static GOSSIP: GossipCounters = GossipCounters::new();

/// Admission handshakes that ended in a refusal ([`crate::net::admit`]), both ways: peers this
/// node refused, and peers that refused this node.
pub struct AdmissionCounters {
    refused_peers: AtomicU64,
    refused_by_peers: AtomicU64,
}

impl AdmissionCounters {
    const fn new() -> Self {
        Self {
            refused_peers: AtomicU64::new(0),
            refused_by_peers: AtomicU64::new(0),
        }
    }

    /// This node refused a peer (inbound refusal).
    pub fn refused_peer(&self) {
        self.refused_peers.fetch_add(1, Ordering::Relaxed);
    }

    /// A peer refused this node (outbound refusal).
    pub fn refused_by_peer(&self) {
        self.refused_by_peers.fetch_add(1, Ordering::Relaxed);
    }

    /// (peers refused by this node, times a peer refused this node).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_peers.load(Ordering::Relaxed),
            self.refused_by_peers.load(Ordering::Relaxed),
        )
    }
}

pub static ADMISSION: AdmissionCounters = AdmissionCounters::new();
