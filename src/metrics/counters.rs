//! The counters bumped where things happen: FUSE requests (by [`crate::fuse`]) and rpc traffic
//! (by [`crate::rpc`]). Process-wide atomics, no locks; this module depends on nothing else of
//! the crate, so the layers below the node can count without reaching up.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncRead, AsyncWrite};

// ---------------------------------------------------------------------------------------------
// FUSE operations

/// A kernel request type, the `op` label of the FUSE metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuseOp {
    Lookup,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Access,
    Create,
}

impl FuseOp {
    pub const ALL: [FuseOp; 25] = [
        FuseOp::Lookup,
        FuseOp::Getattr,
        FuseOp::Setattr,
        FuseOp::Readlink,
        FuseOp::Mknod,
        FuseOp::Mkdir,
        FuseOp::Unlink,
        FuseOp::Rmdir,
        FuseOp::Symlink,
        FuseOp::Rename,
        FuseOp::Link,
        FuseOp::Open,
        FuseOp::Read,
        FuseOp::Write,
        FuseOp::Flush,
        FuseOp::Release,
        FuseOp::Fsync,
        FuseOp::Opendir,
        FuseOp::Readdir,
        FuseOp::Readdirplus,
        FuseOp::Releasedir,
        FuseOp::Fsyncdir,
        FuseOp::Statfs,
        FuseOp::Access,
        FuseOp::Create,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FuseOp::Lookup => "lookup",
            FuseOp::Getattr => "getattr",
            FuseOp::Setattr => "setattr",
            FuseOp::Readlink => "readlink",
            FuseOp::Mknod => "mknod",
            FuseOp::Mkdir => "mkdir",
            FuseOp::Unlink => "unlink",
            FuseOp::Rmdir => "rmdir",
            FuseOp::Symlink => "symlink",
            FuseOp::Rename => "rename",
            FuseOp::Link => "link",
            FuseOp::Open => "open",
            FuseOp::Read => "read",
            FuseOp::Write => "write",
            FuseOp::Flush => "flush",
            FuseOp::Release => "release",
            FuseOp::Fsync => "fsync",
            FuseOp::Opendir => "opendir",
            FuseOp::Readdir => "readdir",
            FuseOp::Readdirplus => "readdirplus",
            FuseOp::Releasedir => "releasedir",
            FuseOp::Fsyncdir => "fsyncdir",
            FuseOp::Statfs => "statfs",
            FuseOp::Access => "access",
            FuseOp::Create => "create",
        }
    }
}

/// Upper bounds of the latency buckets, in nanoseconds (10 µs to 10 s); one more bucket,
/// `+Inf`, follows.
const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram of atomics (prometheus-client's own takes a mutex per observation):
/// one relaxed add to a bucket and one to the sum. Its count is the sum of its buckets, so a
/// scrape always sees the two agree.
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BOUNDS_NS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= the value (`le`), else +Inf.
        let i = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds in seconds).
    pub(super) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = LATENCY_BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                (bound, b.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// FUSE counters: a latency histogram per operation, bytes read and written.
pub struct FuseMetrics {
    ops: [LatencyHistogram; FuseOp::ALL.len()],
    pub(super) read_bytes: AtomicU64,
    pub(super) written_bytes: AtomicU64,
}

impl FuseMetrics {
    const fn new() -> Self {
        Self {
            ops: [const { LatencyHistogram::new() }; FuseOp::ALL.len()],
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
        }
    }

    pub fn op(&self, op: FuseOp) -> &LatencyHistogram {
        &self.ops[op as usize]
    }
}

/// The process's FUSE counters.
pub static FUSE: FuseMetrics = FuseMetrics::new();

/// Whether FUSE requests are timed: only while an endpoint is serving, so a node without one
/// pays one relaxed load per request.
pub(super) static FUSE_TIMING: AtomicBool = AtomicBool::new(false);

/// Times one FUSE request from its creation to its drop (the reply has been sent by then).
#[must_use = "the request is timed until this is dropped"]
pub struct OpTimer {
    op: FuseOp,
    start: Option<Instant>,
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            FUSE.op(self.op).observe(start.elapsed());
        }
    }
}

/// Starts timing a FUSE request of type `op`.
#[inline]
pub fn fuse_op(op: FuseOp) -> OpTimer {
    OpTimer {
        op,
        start: FUSE_TIMING.load(Ordering::Relaxed).then(Instant::now),
    }
}

/// Counts bytes a FUSE read returned.
#[inline]
pub fn fuse_read(bytes: usize) {
    FUSE.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Counts bytes a FUSE write took.
#[inline]
pub fn fuse_written(bytes: usize) {
    FUSE.written_bytes
        .fetch_add(bytes as u64, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Traffic on the rpc protocols

/// Bytes one protocol received and sent (frames and bodies, as read from and written to its
/// streams; below that, Noise and yamux add their own framing).
pub struct Traffic {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Traffic {
    const fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// `/p2pfs/chunk/2`, both as client and as server.
pub static CHUNK_TRAFFIC: Traffic = Traffic::new();
/// `/p2pfs/sync/2`, both as initiator and as responder.
pub static SYNC_TRAFFIC: Traffic = Traffic::new();

// ---------------------------------------------------------------------------------------------
// Gossip

/// The gossip topics, as labels (index 0: membership announcements, 1: namespace entries).
pub const GOSSIP_TOPICS: [&str; 2] = ["membership", "namespace"];

/// Gossip messages and their payload bytes per topic: received (new to this node, after
/// gossipsub's duplicate filter, before our checks), published by this node, and received ones
/// dropped unread (the receiver's queue full, or the source over its rate). gossipsub's own
/// framing, duplicates and control messages are below this count (see the TCP figures of
/// `bench/scale`).
pub struct GossipCounters {
    received: [AtomicU64; 2],
    received_bytes: [AtomicU64; 2],
    published: [AtomicU64; 2],
    published_bytes: [AtomicU64; 2],
    dropped: AtomicU64,
}

impl GossipCounters {
    const fn new() -> Self {
        Self {
            received: [AtomicU64::new(0), AtomicU64::new(0)],
            received_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            published: [AtomicU64::new(0), AtomicU64::new(0)],
            published_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
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

/// A stream that counts the bytes read from and written to it into a [`Traffic`].
pub struct Counted<S> {
    inner: S,
    traffic: &'static Traffic,
}

impl<S> Counted<S> {
    pub fn new(inner: S, traffic: &'static Traffic) -> Self {
        Self { inner, traffic }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.traffic.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_inclusive_upper_bounds() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_nanos(10_000)); // le 1e-5
        h.observe(Duration::from_nanos(10_001)); // le 2.5e-5
        h.observe(Duration::from_secs(60)); // +Inf
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets.len(), LATENCY_BOUNDS_NS.len() + 1);
        assert_eq!(buckets[0], (0.00001, 1));
        assert_eq!(buckets[1], (0.000025, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((sum - 60.000020001).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn counted_streams_count_both_ways() {
        use libp2p::futures::executor::block_on;
        use libp2p::futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};
        static T: Traffic = Traffic::new();
        block_on(async {
            let mut s = Counted::new(Cursor::new(vec![0u8; 100]), &T);
            let mut buf = [0u8; 40];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[1u8; 25]).await.unwrap();
        });
        assert_eq!((T.received(), T.sent()), (40, 25));
    }
}
