//! What the FUSE adapter counts: requests by type, their latencies, bytes read and written.
//! Process-wide atomics bumped on the request path (no lock); the node's metrics export reads
//! them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    Getxattr,
    Listxattr,
    Setxattr,
    Removexattr,
}

impl FuseOp {
    pub const ALL: [FuseOp; 29] = [
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
        FuseOp::Getxattr,
        FuseOp::Listxattr,
        FuseOp::Setxattr,
        FuseOp::Removexattr,
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
            FuseOp::Getxattr => "getxattr",
            FuseOp::Listxattr => "listxattr",
            FuseOp::Setxattr => "setxattr",
            FuseOp::Removexattr => "removexattr",
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
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
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
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
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
static FUSE_TIMING: AtomicBool = AtomicBool::new(false);

/// Starts timing FUSE requests (called once an endpoint serves them).
pub fn enable_timing() {
    FUSE_TIMING.store(true, Ordering::Relaxed);
}

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
}
