//! The node's status, gathered in one place from its parts and encoded twice: as the `status`
//! reply of the control socket (JSON, [`Status`], a documented contract) and as the Prometheus
//! scrape (`node::metrics`). Values counted where they happen (FUSE operations and latencies,
//! rpc and gossip traffic) are not gathered: the exporter reads those counters itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Gate, Mode};
use crate::block::ChunkStore;
use crate::cluster::Cluster;
use crate::cluster::audit::Audit;
use crate::cluster::gc::Gc;
use crate::cluster::repair::Repair;
use crate::fs::Mount;
use crate::net::reach::ReachState;
use crate::node::admission::GateAdmission;
use crate::node::control::proto::{
    AdmissionStatus, AuditStatus, CacheStatus, GcStatus, PassesStatus, PeerStatus,
    ReachabilityStatus, RefusalStatus, ReplicationStatus, RetentionStatus, Status,
};

/// A throttled listing of the chunk store is redone at most this often, or, for a large store,
/// at most every [`RECOUNT_FACTOR`] times as long as the last listing took: a scrape never
/// keeps a disk busy.
const RECOUNT_MIN: Duration = Duration::from_secs(5);
const RECOUNT_FACTOR: u32 = 20;

/// How fresh the count of stored chunks must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recount {
    /// List the store now (`p2pfs-ctl status`: a person asked, and shows the exact count).
    Now,
    /// Reuse the last listing unless it is older than the throttle allows (a scrape, which
    /// Prometheus repeats every few seconds).
    Throttled,
}

#[derive(Default)]
struct StoredCount {
    at: Option<Instant>,
    took: Duration,
    chunks: u64,
    bytes: u64,
}

/// How `net`'s connections reach `peer` (`PeerStatus::connection`).
pub(crate) fn connection_kinds(net: &crate::net::NetHandle, peer: &libp2p::PeerId) -> String {
    let mut kinds = net.connection_kinds(peer);
    kinds.dedup();
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The node's parts a status is read from.
pub struct StatusReader {
    pub mount: Arc<Mount>,
    pub chunks: Arc<ChunkStore>,
    pub cluster: Arc<Cluster>,
    pub repair: Arc<Repair>,
    pub audit: Arc<Audit>,
    pub gc: Arc<Gc>,
    /// Who may connect, and the refusals counted in the handshake.
    pub admission: Arc<GateAdmission>,
    pub network_fingerprint: String,
    /// Where the volume is mounted, absolute.
    pub mount_point: PathBuf,
    /// The last throttled listing of the chunk store; its lock makes scrapes take turns listing
    /// the store (the rest of a snapshot is cheap and read without it).
    stored: tokio::sync::Mutex<StoredCount>,
}

/// One reading of the node's status: what `status` shows, and the few values only the metrics
/// export shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: Status,
    /// Peers with an open connection.
    pub connected: u64,
    /// Chunks the last repair pass could not bring to R copies (`status`'s `under_replicated`
    /// is every stored chunk while degraded).
    pub last_pass_under_replicated: u64,
    /// Chunk copies pushed by repair and handoff since start, and their bytes.
    pub repair_pushed_copies: u64,
    pub repair_pushed_bytes: u64,
    /// Chunks written with fewer than R copies since start.
    pub written_under_replicated: u64,
    /// Files open through the mount.
    pub open_files: u64,
}

impl StatusReader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mount: Arc<Mount>,
        chunks: Arc<ChunkStore>,
        cluster: Arc<Cluster>,
        repair: Arc<Repair>,
        audit: Arc<Audit>,
        gc: Arc<Gc>,
        admission: Arc<GateAdmission>,
        network_fingerprint: String,
        mount_point: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            mount,
            chunks,
            cluster,
            repair,
            audit,
            gc,
            admission,
            network_fingerprint,
            mount_point,
            stored: tokio::sync::Mutex::new(StoredCount::default()),
        })
    }

    /// The `status` reply.
    pub async fn status(&self) -> Status {
        self.snapshot(Recount::Now).await.status
    }

    /// The status with the store's count recounted at most every few seconds, for what asks
    /// often (the dashboard's event streams).
    pub async fn status_throttled(&self) -> Status {
        self.snapshot(Recount::Throttled).await.status
    }

    /// (chunks, bytes) stored here, listed as fresh as `recount` asks. A listing that fails
    /// counts nothing now, and leaves the throttled count as it was.
    async fn stored(&self, recount: Recount) -> (u64, u64) {
        let list = |chunks: Arc<ChunkStore>| async move {
            tokio::task::spawn_blocking(move || chunks.list())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|list| (list.len() as u64, list.iter().map(|(_, n)| n).sum()))
        };
        match recount {
            Recount::Now => list(self.chunks.clone()).await.unwrap_or_default(),
            Recount::Throttled => {
                let mut stored = self.stored.lock().await;
                let fresh = stored
                    .at
                    .is_some_and(|at| at.elapsed() < RECOUNT_MIN.max(stored.took * RECOUNT_FACTOR));
                if !fresh {
                    let start = Instant::now();
                    if let Some((chunks, bytes)) = list(self.chunks.clone()).await {
                        stored.chunks = chunks;
                        stored.bytes = bytes;
                        stored.at = Some(Instant::now());
                        stored.took = start.elapsed();
                    }
                }
                (stored.chunks, stored.bytes)
            }
        }
    }

    /// Reads every value once.
    pub async fn snapshot(&self, recount: Recount) -> Snapshot {
        let stats = self.mount.stats();
        let (chunks_stored, bytes_stored) = self.stored(recount).await;
        let net = &self.cluster.net;
        let connected = net.connected_count() as u64;
        let now = Instant::now();
        let (peers, refused_names) = {
            let view = self.cluster.membership.read();
            let peers = view
                .members()
                .map(|m| PeerStatus {
                    peer_id: m.peer.to_string(),
                    name: m.name.clone(),
                    addrs: m.addrs.iter().map(|a| a.to_string()).collect(),
                    state: m.state.as_str().to_string(),
                    last_seen_ms: now.saturating_duration_since(m.last_seen).as_millis() as u64,
                    capacity: m.capacity,
                    free_bytes: m.free,
                    version: m.version.clone(),
                    placement_rule: m.placement_rule,
                    connection: connection_kinds(net, &m.peer),
                })
                .collect();
            (peers, view.refused_names())
        };
        let last_pass_under_replicated = self.repair.under_replicated();
        let status = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            peer_id: net.local.to_string(),
            name: self.cluster.name().to_string(),
            refused_names,
            network_fingerprint: self.network_fingerprint.clone(),
            placement_rule: crate::cluster::placement::RULE,
            listen_addrs: net.listen_addrs().iter().map(|a| a.to_string()).collect(),
            reachability: {
                let (state, addrs) = net.reachability();
                ReachabilityStatus {
                    state: match state {
                        ReachState::Public => "public",
                        ReachState::Private => "private",
                        ReachState::Unknown => "unknown",
                    }
                    .into(),
                    addrs: addrs.iter().map(|a| a.to_string()).collect(),
                    relaying: net.relaying(),
                }
            },
            network: if connected == 0 {
                "isolated"
            } else {
                "connected"
            }
            .into(),
            peers,
            mount: self.mount_point.display().to_string(),
            replication: {
                let (factor, holding_nodes, copies) = self.cluster.router.copies_possible();
                // Fewer live holders than R: no chunk stored here can have its R copies.
                let degraded = if copies < factor { chunks_stored } else { 0 };
                ReplicationStatus {
                    factor,
                    copies,
                    holding_nodes,
                    chunks_stored,
                    bytes_stored,
                    under_replicated: last_pass_under_replicated.max(degraded),
                    repair_queue: self.repair.queue(),
                    failed_holders: self
                        .cluster
                        .router
                        .failed_holders()
                        .list()
                        .into_iter()
                        .map(|(p, _)| p.to_string())
                        .collect(),
                    audit: AuditStatus {
                        checked: self.audit.checked(),
                        failed: self.audit.failed(),
                    },
                }
            },
            cache: CacheStatus {
                bytes: stats.cache.bytes,
                capacity: stats.cache.capacity,
                hits: stats.cache.hits,
                misses: stats.cache.misses,
            },
            gc: {
                let last = self.gc.last();
                let mount = self.mount.clone();
                let (tombstones, forgotten) = tokio::task::spawn_blocking(move || {
                    let ns = mount.namespace();
                    (
                        ns.tombstones_len().unwrap_or(0),
                        ns.forgotten_len().unwrap_or(0),
                    )
                })
                .await
                .unwrap_or((0, 0));
                GcStatus {
                    grace_secs: self.gc.grace().as_secs(),
                    unreferenced_chunks: last.unreferenced as u64,
                    collecting: last.healthy,
                    deleted_chunks: self.gc.deleted_chunks(),
                    tombstones,
                    expired_tombstones: forgotten,
                }
            },
            retention: {
                let last = self.gc.last();
                let table = self.mount.namespace().retention();
                RetentionStatus {
                    keep_secs: table.default.keep_secs,
                    max_versions: table.default.max_versions,
                    volumes_with_own_policy: table.volumes.len() as u64,
                    kept_versions: self.mount.namespace().history_len().unwrap_or(0),
                    retained_chunks: last.retained_chunks,
                    retained_bytes: last.retained_bytes,
                }
            },
            files: stats.entries as u64,
            rejected_entries: stats.rejected_entries as u64,
            held_entries: self.mount.held_status(),
            hostile: net.guard.status(),
            admission: admission_status(
                &self.admission.gate,
                self.admission.refusals(),
                crate::admission::cert::now_unix(),
            ),
            passes: PassesStatus {
                repair: self.repair.passes(),
                gc: self.gc.passes(),
                audit: self.audit.passes(),
                sync: self.cluster.syncs(),
            },
            paused: net.guard.is_paused(),
            limits: net.guard.bandwidth().limits(),
        };
        Snapshot {
            status,
            connected,
            last_pass_under_replicated,
            repair_pushed_copies: self.repair.pushed_copies(),
            repair_pushed_bytes: self.repair.pushed_bytes(),
            written_under_replicated: self.cluster.router.written_under_replicated(),
            open_files: stats.open_files as u64,
        }
    }
}

/// The `admission` part of a status: the gate's mode and standing, `refusals` (refused by this
/// node, refused by others) and the last refusal, aged at `now` (unix seconds).
pub fn admission_status(gate: &Gate, refusals: (u64, u64), now: u64) -> AdmissionStatus {
    let ledger = gate.ledger();
    let own = gate.own_cert();
    AdmissionStatus {
        mode: match gate.mode() {
            Mode::KeyOnly => "key-only",
            Mode::Joining => "joining",
            Mode::Certified => "certified",
        }
        .to_string(),
        founder: ledger.root().map(|r| r.to_string()),
        admin: own.as_ref().is_some_and(|c| ledger.is_admin(&c.body.user)),
        role: own.as_ref().map(|c| c.body.role.as_str().to_string()),
        last_refusal: gate.last_refusal().map(|(peer, reason, at)| RefusalStatus {
            peer: peer.to_string(),
            reason,
            secs_ago: now.saturating_sub(at),
        }),
        refused_in: refusals.0,
        refused_out: refusals.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::NodeRole;
    use crate::identity::UserIdentity;
    use libp2p::PeerId;

    #[test]
    fn admission_status_tells_the_mode_the_founder_and_this_nodes_standing() {
        let dir = tempfile::tempdir().unwrap();
        let key_only =
            Gate::open(dir.path(), PeerId::random(), &UserIdentity::generate(), "k").unwrap();
        let s = admission_status(&key_only, (0, 0), 100);
        assert_eq!(s.mode, "key-only");
        assert_eq!((s.founder, s.admin, s.role), (None, false, None));

        let (fdir, peer, user) = (
            tempfile::tempdir().unwrap(),
            PeerId::random(),
            UserIdentity::generate(),
        );
        crate::admission::gate::found(fdir.path(), &peer, &user, "f").unwrap();
        let founder = Gate::open(fdir.path(), peer, &user, "f").unwrap();
        let s = admission_status(&founder, (3, 1), 100);
        assert_eq!(s.mode, "certified");
        assert_eq!(s.founder, Some(user.user_id().to_string()));
        assert!(s.admin);
        assert_eq!(s.role.as_deref(), Some("storage"));
        assert_eq!((s.refused_in, s.refused_out, s.last_refusal), (3, 1, None));

        // A joining node: the founder is known, no certificate, no role, not an admin; the
        // refusal it got is kept with its age.
        let (root, secret, _) = founder.make_invite(NodeRole::Reader, None).unwrap();
        let jdir = tempfile::tempdir().unwrap();
        crate::admission::gate::join(jdir.path(), root, secret).unwrap();
        let joiner = Gate::open(
            jdir.path(),
            PeerId::random(),
            &UserIdentity::generate(),
            "j",
        )
        .unwrap();
        joiner.refused(&peer, "no");
        let at = joiner.last_refusal().unwrap().2;
        let s = admission_status(&joiner, (0, 1), at + 7);
        assert_eq!(s.mode, "joining");
        assert_eq!(s.founder, Some(user.user_id().to_string()));
        assert_eq!((s.admin, s.role), (false, None));
        assert_eq!(
            s.last_refusal,
            Some(RefusalStatus {
                peer: peer.to_string(),
                reason: "no".into(),
                secs_ago: 7
            })
        );
    }
}
