//! Metrics: an optional Prometheus endpoint (`[metrics] listen`, `--metrics ADDR`; loopback
//! only unless `metrics.allow_remote`), serving `GET /metrics` in the OpenMetrics text format
//! that Prometheus scrapes.
//!
//! Two kinds of values:
//!
//! - Counted where they happen, in process-wide atomics kept by the layer that counts
//!   ([`crate::fuse::counters`], [`crate::rpc::counters`], [`crate::net::counters`], which
//!   depend on nothing above them: [`FUSE`], [`CHUNK_TRAFFIC`], [`SYNC_TRAFFIC`]): FUSE operations and
//!   their latencies (one `Instant::now` and two relaxed atomic adds per request, and only
//!   while an endpoint is serving: no lock on the request path), bytes in and out on the chunk
//!   and sync protocols (counted by [`crate::rpc::counters::Counted`], the stream wrapper the rpc layer reads and
//!   writes frames and bodies through).
//! - Read from the node's parts when scraped: peers by state, chunks stored, repair, cache,
//!   garbage collection, passes, namespace, hostile-peer and admission counters: the snapshot
//!   [`StatusReader`] gathers, the same one `p2pfs-ctl status` encodes.
//!
//! The endpoint is served by [`crate::node::web`] (as is the dashboard, which serves the same
//! scrape behind its login).

use crate::fuse::counters::{FUSE, FuseOp};
use crate::net::counters::{GOSSIP, GOSSIP_TOPICS};
use crate::rpc::counters::{CHUNK_TRAFFIC, SYNC_TRAFFIC};

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::node::status::{Recount, Snapshot, StatusReader};

/// The content type of a scrape: OpenMetrics text, which is what the encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Values read at scrape time

/// Renders every metric, in the OpenMetrics text format: the node's status (the store's count
/// recounted at most every few seconds) and the process-wide counters.
pub async fn render(status: &StatusReader) -> String {
    encode(status.snapshot(Recount::Throttled).await)
}

/// The text of a scrape: `snapshot` and the process-wide counters.
fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("p2pfs");
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut out = String::with_capacity(48 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    out
}

const PEER_STATES: [&str; 7] = [
    "alive", "suspect", "dead", "leaving", "left", "offline", "paused",
];

/// The status read at one scrape, encoded with the process-wide counters.
#[derive(Debug)]
struct Scrape(Snapshot);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A counter; the encoder appends `_total` to the name.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        let (snapshot, status) = (&self.0, &self.0.status);
        let peers = PEER_STATES.map(|state| {
            let n = status.peers.iter().filter(|p| p.state == state).count();
            (state, n as u64)
        });
        {
            let labels = [
                ("peer_id", status.peer_id.as_str()),
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
            for (state, n) in &peers {
                let labels = [("state", *state)];
                m.encode_family(&labels)?.encode_gauge(n)?;
            }
        }
        gauge(
            e,
            "peers_connected",
            "Peers with an open connection.",
            snapshot.connected,
        )?;
        {
            let mut m = e.encode_descriptor(
                "peers_connected_by_kind",
                "Members connected, by their best connection: direct, hole-punched or relayed.",
                None,
                MetricType::Gauge,
            )?;
            for kind in ["direct", "hole-punched", "relayed"] {
                let n = status
                    .peers
                    .iter()
                    .filter(|p| p.connection.split(',').next() == Some(kind))
                    .count() as u64;
                m.encode_family(&[("kind", kind)])?.encode_gauge(&n)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "reachability",
                "Whether members can dial this node (AutoNAT): 1 for the current state.",
                None,
                MetricType::Gauge,
            )?;
            for state in ["public", "private", "unknown"] {
                let v = u64::from(status.reachability.state == state);
                m.encode_family(&[("state", state)])?.encode_gauge(&v)?;
            }
        }
        gauge(
            e,
            "relaying",
            "1 while this node relays for other members.",
            u64::from(status.reachability.relaying),
        )?;
        gauge(
            e,
            "chunks_stored",
            "Chunks in this node's store (recounted at most every 5 s).",
            status.replication.chunks_stored,
        )?;
        gauge(
            e,
            "stored_bytes",
            "Bytes of chunk ciphertext in this node's store (recounted at most every 5 s).",
            status.replication.bytes_stored,
        )?;
        gauge(
            e,
            "replication_factor",
            "Copies kept of every chunk (R).",
            u64::from(status.replication.factor),
        )?;
        gauge(
            e,
            "repair_queue",
            "Copies the running repair pass still has to push.",
            status.replication.repair_queue,
        )?;
        gauge(
            e,
            "under_replicated_chunks",
            "Chunks the last repair pass could not bring to R copies.",
            snapshot.last_pass_under_replicated,
        )?;
        counter(
            e,
            "repair_pushed_bytes",
            "Bytes of chunks pushed to other nodes by repair and handoff (rate() is the repair rate).",
            snapshot.repair_pushed_bytes,
        )?;
        counter(
            e,
            "repair_pushed_chunks",
            "Chunk copies pushed to other nodes by repair and handoff.",
            snapshot.repair_pushed_copies,
        )?;
        counter(
            e,
            "writes_under_replicated",
            "Chunks written with fewer than R copies (repair then restores them).",
            snapshot.written_under_replicated,
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
        {
            let mut m = e.encode_descriptor(
                "admission_refused",
                "Admission handshakes refused: peers this node refused (in), times a peer refused this node (out).",
                None,
                MetricType::Counter,
            )?;
            let (by_us, by_peers) = (status.admission.refused_in, status.admission.refused_out);
            for (direction, n) in [("in", by_us), ("out", by_peers)] {
                m.encode_family(&[("direction", direction)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "connections_secured",
                "Connections secured since start, per transport cipher (ChaCha20-Poly1305: a peer without the AES-GCM Noise variant).",
                None,
                MetricType::Counter,
            )?;
            for (i, cipher) in crate::net::secure::CIPHERS.iter().enumerate() {
                let n = crate::net::secure::SECURED.with(i);
                m.encode_family(&[("cipher", *cipher)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        counter(
            e,
            "cache_hits",
            "Chunk reads served from the decrypted-chunk cache.",
            status.cache.hits,
        )?;
        counter(
            e,
            "cache_misses",
            "Chunk reads the decrypted-chunk cache could not serve.",
            status.cache.misses,
        )?;
        gauge(
            e,
            "cache_bytes",
            "Bytes of decrypted chunks in the cache.",
            status.cache.bytes,
        )?;
        gauge(
            e,
            "cache_capacity_bytes",
            "Bound of the decrypted-chunk cache in bytes.",
            status.cache.capacity,
        )?;
        gauge(
            e,
            "namespace_entries",
            "Files, directories and symlinks in every mounted volume.",
            status.files,
        )?;
        gauge(
            e,
            "open_files",
            "Files open through the mount.",
            snapshot.open_files,
        )?;
        counter(
            e,
            "rejected_entries",
            "Namespace entries refused (bad signature, author may not write the volume, malformed).",
            status.rejected_entries,
        )?;
        gauge(
            e,
            "gc_unreferenced_chunks",
            "Stored chunks no live entry references, at the last garbage collection pass.",
            status.gc.unreferenced_chunks,
        )?;
        counter(
            e,
            "gc_deleted_chunks",
            "Chunks deleted by garbage collection.",
            status.gc.deleted_chunks,
        )?;
        for (name, help, n) in [
            (
                "repair_passes",
                "Repair passes completed.",
                status.passes.repair,
            ),
            (
                "gc_passes",
                "Garbage collection passes completed.",
                status.passes.gc,
            ),
            (
                "audit_passes",
                "Audit rounds completed.",
                status.passes.audit,
            ),
            (
                "sync_passes",
                "Anti-entropy sessions this node started that completed.",
                status.passes.sync,
            ),
        ] {
            counter(e, name, help, n)?;
        }
        {
            let mut m = e.encode_descriptor(
                "peer_offences",
                "Protocol offences by peers, by kind.",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in &status.hostile.offences {
                let labels = [("kind", kind.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        counter(
            e,
            "peer_disconnects",
            "Peers disconnected for offences.",
            status.hostile.disconnects,
        )?;
        gauge(
            e,
            "peers_blocked",
            "Peers blocked now.",
            status.hostile.blocked.len() as u64,
        )?;
        gauge(
            e,
            "certified",
            "1 when this node is a certified member of a certified network, else 0.",
            u64::from(status.admission.mode == "certified"),
        )?;
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

/// Whether `addr` is on this machine only (IPv4-mapped loopback included).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::guard::HostileStatus;
    use crate::node::control::proto::{CacheStatus, PassesStatus, PeerStatus, Status};
    use std::time::Duration;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        FUSE.op(FuseOp::Read).observe(Duration::from_micros(30));
        let alive = PeerStatus {
            state: "alive".into(),
            ..PeerStatus::default()
        };
        let text = encode(Snapshot {
            status: Status {
                peer_id: "12D3KooWtest".into(),
                peers: vec![alive.clone(), alive],
                cache: CacheStatus {
                    hits: 5,
                    ..CacheStatus::default()
                },
                hostile: HostileStatus {
                    offences: [("flood".to_string(), 1)].into(),
                    ..HostileStatus::default()
                },
                admission: crate::node::control::proto::AdmissionStatus {
                    mode: "certified".into(),
                    refused_in: 7,
                    ..Default::default()
                },
                passes: PassesStatus {
                    repair: 3,
                    gc: 4,
                    audit: 5,
                    sync: 6,
                },
                ..Status::default()
            },
            connected: 2,
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
            "p2pfs_repair_passes_total 3\n",
            "p2pfs_gc_passes_total 4\n",
            "p2pfs_audit_passes_total 5\n",
            "p2pfs_sync_passes_total 6\n",
            "p2pfs_certified 1\n",
            "p2pfs_gossip_dropped_total ",
            "p2pfs_admission_refused_total{direction=\"in\"} 7\n",
            "p2pfs_admission_refused_total{direction=\"out\"} 0\n",
            "p2pfs_connections_secured_total{cipher=\"aes-256-gcm\"} ",
            "p2pfs_connections_secured_total{cipher=\"chacha20-poly1305\"} ",
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
