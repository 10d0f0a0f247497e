//! Metrics: an optional Prometheus endpoint (`[metrics] listen`, `--metrics ADDR`; loopback
//! only unless `metrics.allow_remote`), serving `GET /metrics` in the OpenMetrics text format
//! that Prometheus scrapes.
//!
//! Two kinds of values:
//!
//! - Counted where they happen, in process-wide atomics (`counters`, which depends on nothing
//!   else of the crate: [`FUSE`], [`CHUNK_TRAFFIC`], [`SYNC_TRAFFIC`]): FUSE operations and
//!   their latencies (one `Instant::now` and two relaxed atomic adds per request, and only
//!   while an endpoint is serving: no lock on the request path), bytes in and out on the chunk
//!   and sync protocols (counted by [`Counted`], the stream wrapper the rpc layer reads and
//!   writes frames and bodies through).
//! - Read from their source when scraped ([`Source`]): peers by state, chunks stored, repair,
//!   cache, garbage collection, namespace and hostile-peer counters: the same values
//!   `p2pfs-ctl status` shows, never kept twice.
//!
//! [`http`] is the small HTTP/1.1 responder it is served with.

pub mod http;

use crate::fuse::counters::{FUSE, FuseOp};
use crate::net::counters::{GOSSIP, GOSSIP_TOPICS};
use crate::rpc::counters::{CHUNK_TRAFFIC, SYNC_TRAFFIC};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::block::ChunkStore;
use crate::block::cache::CacheStats;
use crate::cluster::Cluster;
use crate::cluster::gc::Gc;
use crate::cluster::repair::Repair;
use crate::fs::Mount;
use crate::node::config::MetricsConfig;
use crate::util::workers::Workers;

/// The content type of a scrape: OpenMetrics text, which is what the encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once; more are closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 4;

// ---------------------------------------------------------------------------------------------
// Values read at scrape time

/// The chunk store is listed (a walk of its directories) at most this often, or, for a large
/// store, at most every [`RECOUNT_FACTOR`] times as long as the last listing took: a scrape
/// never keeps a disk busy.
const RECOUNT_MIN: Duration = Duration::from_secs(5);
const RECOUNT_FACTOR: u32 = 20;

#[derive(Default)]
struct StoredCount {
    at: Option<Instant>,
    took: Duration,
    chunks: u64,
    bytes: u64,
}

/// What a scrape reads: the node's parts, as `p2pfs-ctl status` does.
pub struct Source {
    core: Arc<Mount>,
    chunks: Arc<ChunkStore>,
    cluster: Arc<Cluster>,
    repair: Arc<Repair>,
    gc: Arc<Gc>,
    /// The last listing of the chunk store; its lock also makes scrapes take turns.
    stored: tokio::sync::Mutex<StoredCount>,
}

impl Source {
    pub fn new(
        core: Arc<Mount>,
        chunks: Arc<ChunkStore>,
        cluster: Arc<Cluster>,
        repair: Arc<Repair>,
        gc: Arc<Gc>,
    ) -> Arc<Self> {
        Arc::new(Self {
            core,
            chunks,
            cluster,
            repair,
            gc,
            stored: tokio::sync::Mutex::new(StoredCount::default()),
        })
    }

    /// Renders every metric, in the OpenMetrics text format.
    pub async fn render(&self) -> String {
        encode(self.snapshot().await)
    }

    async fn snapshot(&self) -> Snapshot {
        let mut stored = self.stored.lock().await;
        let fresh = stored
            .at
            .is_some_and(|at| at.elapsed() < RECOUNT_MIN.max(stored.took * RECOUNT_FACTOR));
        if !fresh {
            let start = Instant::now();
            let chunks = self.chunks.clone();
            if let Ok(Ok(list)) = tokio::task::spawn_blocking(move || chunks.list()).await {
                stored.chunks = list.len() as u64;
                stored.bytes = list.iter().map(|(_, n)| n).sum();
                stored.at = Some(Instant::now());
                stored.took = start.elapsed();
            }
        }
        let net = &self.cluster.net;
        let connected = Some(net.connected_count() as u64);
        let mut peers = PEER_STATES.map(|s| (s, 0u64));
        for m in self.cluster.membership.read().members() {
            if let Some(slot) = peers.iter_mut().find(|(s, _)| *s == m.state.as_str()) {
                slot.1 += 1;
            }
        }
        let stats = self.core.stats();
        let hostile = net.guard.status();
        let gc = self.gc.last();
        let router = &self.cluster.router;
        Snapshot {
            peer_id: net.local.to_string(),
            peers,
            connected,
            chunks_stored: stored.chunks,
            bytes_stored: stored.bytes,
            replicas: router.replicas() as u64,
            written_under_replicated: router.written_under_replicated(),
            repair_queue: self.repair.queue(),
            under_replicated: self.repair.under_replicated(),
            repair_pushed_bytes: self.repair.pushed_bytes(),
            repair_pushed_copies: self.repair.pushed_copies(),
            cache: stats.cache,
            entries: stats.entries as u64,
            open_files: stats.open_files as u64,
            rejected_entries: stats.rejected_entries as u64,
            gc_unreferenced: gc.unreferenced as u64,
            gc_deleted: self.gc.deleted_chunks(),
            offences: hostile.offences.into_iter().collect(),
            disconnects: hostile.disconnects,
            blocked: hostile.blocked.len() as u64,
        }
    }
}

/// The text of a scrape: `snapshot` and the process-wide counters.
fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("p2pfs");
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(48 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    out
}

const PEER_STATES: [&str; 5] = ["alive", "suspect", "dead", "leaving", "left"];

/// The values read at one scrape, encoded with the process-wide counters.
#[derive(Debug, Default)]
struct Snapshot {
    peer_id: String,
    peers: [(&'static str, u64); 5],
    connected: Option<u64>,
    chunks_stored: u64,
    bytes_stored: u64,
    replicas: u64,
    written_under_replicated: u64,
    repair_queue: u64,
    under_replicated: u64,
    repair_pushed_bytes: u64,
    repair_pushed_copies: u64,
    cache: CacheStats,
    entries: u64,
    open_files: u64,
    rejected_entries: u64,
    gc_unreferenced: u64,
    gc_deleted: u64,
    offences: Vec<(String, u64)>,
    disconnects: u64,
    blocked: u64,
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A counter; the encoder appends `_total` to the name.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        {
            let labels = [
                ("peer_id", self.peer_id.as_str()),
                ("version", env!("CARGO_PKG_VERSION")),
            ];
            e.encode_descriptor(
                "node_info",
                "This node: its peer id and version (always 1).",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&labels)?
            .encode_gauge(&1u64)?;
        }
        {
            let mut m = e.encode_descriptor(
                "peers",
                "Members of this node's view by liveness state (itself not included).",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &self.peers {
                let labels = [("state", *state)];
                m.encode_family(&labels)?.encode_gauge(n)?;
            }
        }
        if let Some(n) = self.connected {
            gauge(e, "peers_connected", "Peers with an open connection.", n)?;
        }
        gauge(
            e,
            "chunks_stored",
            "Chunks in this node's store (recounted at most every 5 s).",
            self.chunks_stored,
        )?;
        gauge(
            e,
            "stored_bytes",
            "Bytes of chunk ciphertext in this node's store (recounted at most every 5 s).",
            self.bytes_stored,
        )?;
        gauge(
            e,
            "replication_factor",
            "Copies kept of every chunk (R).",
            self.replicas,
        )?;
        gauge(
            e,
            "repair_queue",
            "Copies the running repair pass still has to push.",
            self.repair_queue,
        )?;
        gauge(
            e,
            "under_replicated_chunks",
            "Chunks the last repair pass could not bring to R copies.",
            self.under_replicated,
        )?;
        counter(
            e,
            "repair_pushed_bytes",
            "Bytes of chunks pushed to other nodes by repair and handoff (rate() is the repair rate).",
            self.repair_pushed_bytes,
        )?;
        counter(
            e,
            "repair_pushed_chunks",
            "Chunk copies pushed to other nodes by repair and handoff.",
            self.repair_pushed_copies,
        )?;
        counter(
            e,
            "writes_under_replicated",
            "Chunks written with fewer than R copies (repair then restores them).",
            self.written_under_replicated,
        )?;
        {
            let mut m = e.encode_descriptor(
                "rpc_bytes",
                "Bytes received (in) and sent (out) on the chunk and sync protocols: frames and bodies.",
                None,
                MetricType::Counter,
            )?;
            for (protocol, traffic) in [("chunk", &CHUNK_TRAFFIC), ("sync", &SYNC_TRAFFIC)] {
                for (direction, n) in [("in", traffic.received()), ("out", traffic.sent())] {
                    let labels = [("protocol", protocol), ("direction", direction)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        for (name, help, bytes) in [
            (
                "gossip_messages",
                "Gossip messages received (new to this node) and published, by topic.",
                false,
            ),
            (
                "gossip_bytes",
                "Payload bytes of the gossip messages received (new to this node) and published, by topic.",
                true,
            ),
        ] {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, topic) in GOSSIP_TOPICS.iter().enumerate() {
                for (direction, (n, b)) in [
                    ("in", GOSSIP.received_on(i)),
                    ("out", GOSSIP.published_on(i)),
                ] {
                    let v = if bytes { b } else { n };
                    let labels = [("topic", *topic), ("direction", direction)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                }
            }
        }
        counter(
            e,
            "gossip_dropped",
            "Gossip messages dropped unread: the queue to the node full, or the source over its rate.",
            GOSSIP.dropped_total(),
        )?;
        counter(
            e,
            "cache_hits",
            "Chunk reads served from the decrypted-chunk cache.",
            self.cache.hits,
        )?;
        counter(
            e,
            "cache_misses",
            "Chunk reads the decrypted-chunk cache could not serve.",
            self.cache.misses,
        )?;
        gauge(
            e,
            "cache_bytes",
            "Bytes of decrypted chunks in the cache.",
            self.cache.bytes,
        )?;
        gauge(
            e,
            "cache_capacity_bytes",
            "Bound of the decrypted-chunk cache in bytes.",
            self.cache.capacity,
        )?;
        gauge(
            e,
            "namespace_entries",
            "Files, directories and symlinks in every mounted volume.",
            self.entries,
        )?;
        gauge(
            e,
            "open_files",
            "Files open through the mount.",
            self.open_files,
        )?;
        counter(
            e,
            "rejected_entries",
            "Namespace entries refused (bad signature, author may not write the volume, malformed).",
            self.rejected_entries,
        )?;
        gauge(
            e,
            "gc_unreferenced_chunks",
            "Stored chunks no live entry references, at the last garbage collection pass.",
            self.gc_unreferenced,
        )?;
        counter(
            e,
            "gc_deleted_chunks",
            "Chunks deleted by garbage collection.",
            self.gc_deleted,
        )?;
        {
            let mut m = e.encode_descriptor(
                "peer_offences",
                "Protocol offences by peers, by kind.",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in &self.offences {
                let labels = [("kind", kind.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        counter(
            e,
            "peer_disconnects",
            "Peers disconnected for offences.",
            self.disconnects,
        )?;
        gauge(e, "peers_blocked", "Peers blocked now.", self.blocked)?;
        {
            let mut m = e.encode_descriptor(
                "fuse_operations",
                "FUSE requests served, by operation.",
                None,
                MetricType::Counter,
            )?;
            for op in FuseOp::ALL {
                let labels = [("op", op.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&FUSE.op(op).count(), None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "fuse_operation_duration_seconds",
                "Time to serve a FUSE request, reply included, by operation.",
                None,
                MetricType::Histogram,
            )?;
            for op in FuseOp::ALL {
                let (sum, count, buckets) = FUSE.op(op).snapshot();
                let labels = [("op", op.as_str())];
                m.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        counter(
            e,
            "fuse_read_bytes",
            "Bytes returned by FUSE reads.",
            FUSE.read_bytes.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "fuse_written_bytes",
            "Bytes taken by FUSE writes.",
            FUSE.written_bytes.load(Ordering::Relaxed),
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoint

/// Binds the endpoint's socket, if one is configured (refusing a non-loopback address without
/// `allow_remote`). Done before the mount appears, so a bad address stops the start.
pub fn bind(config: &MetricsConfig) -> Result<Option<std::net::TcpListener>, String> {
    let Some(addr) = config.listen_addr()? else {
        return Ok(None);
    };
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` on `listener` until the task is dropped, each connection among
/// `workers`. Call within the runtime.
pub async fn serve(listener: std::net::TcpListener, source: Arc<Source>, workers: Workers) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot serve");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    crate::fuse::counters::enable_timing();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let source = source.clone();
        workers.spawn(async move {
            let _permit = permit;
            http::serve_connection(stream, |path| async move {
                if path != "/metrics" {
                    return None;
                }
                let body = source.render().await.into_bytes();
                Some(http::Response::ok(CONTENT_TYPE, body))
            })
            .await;
        });
    }
}

/// Whether `addr` is on this machine only (IPv4-mapped loopback included).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        FUSE.op(FuseOp::Read).observe(Duration::from_micros(30));
        let text = encode(Snapshot {
            peer_id: "12D3KooWtest".into(),
            peers: PEER_STATES.map(|s| (s, u64::from(s == "alive") * 2)),
            connected: Some(2),
            cache: CacheStats {
                hits: 5,
                ..CacheStats::default()
            },
            offences: vec![("flood".into(), 1)],
            ..Snapshot::default()
        });
        assert!(text.ends_with("# EOF\n"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("p2pfs_"), "{line}");
                assert!(
                    i > 0 && lines[i - 1].starts_with(&format!("# HELP {name} ")),
                    "{name} has no help"
                );
                let next = lines[i + 1];
                if kind == "counter" {
                    assert!(next.starts_with(&format!("{name}_total")), "{next}");
                }
            }
        }
        for sample in [
            "p2pfs_node_info{peer_id=\"12D3KooWtest\",version=\"",
            "p2pfs_peers{state=\"alive\"} 2\n",
            "p2pfs_peers{state=\"left\"} 0\n",
            "p2pfs_peers_connected 2\n",
            "p2pfs_cache_hits_total 5\n",
            "p2pfs_peer_offences_total{kind=\"flood\"} 1\n",
            "p2pfs_rpc_bytes_total{protocol=\"sync\",direction=\"out\"} ",
            "p2pfs_gossip_messages_total{topic=\"membership\",direction=\"in\"} ",
            "p2pfs_gossip_bytes_total{topic=\"namespace\",direction=\"out\"} ",
            "p2pfs_gossip_dropped_total ",
            "p2pfs_fuse_operations_total{op=\"create\"} ",
            "p2pfs_fuse_operation_duration_seconds_bucket{le=\"0.00005\",op=\"read\"} ",
        ] {
            assert!(text.contains(sample), "no {sample:?} in:\n{text}");
        }
        // Cumulative buckets, ending at the count.
        let read: Vec<u64> = lines
            .iter()
            .filter(|l| l.starts_with("p2pfs_fuse_operation_duration_seconds_bucket{"))
            .filter(|l| l.contains("op=\"read\""))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(read.len(), 20);
        assert!(read.windows(2).all(|w| w[0] <= w[1]) && read[19] >= 1);
    }

    #[test]
    fn loopback_addresses() {
        let ok = [
            "127.0.0.1:9464",
            "127.1.2.3:1",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:1",
        ];
        for a in ok {
            assert!(is_loopback(&a.parse().unwrap()), "{a}");
        }
        for a in [
            "0.0.0.0:9464",
            "[::]:9464",
            "192.168.1.5:9464",
            "[fe80::1]:1",
        ] {
            assert!(!is_loopback(&a.parse().unwrap()), "{a}");
        }
    }
}
