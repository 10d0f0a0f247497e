//! One node's life in a process: [`Node::start`] starts every background worker of the node
//! among one [`Workers`] set and returns a [`RunningNode`]; the `p2pfs run` binary then mounts
//! its [`Mount`] (FUSE), tests drive it directly. [`RunningNode::leave`] hands the node's data
//! off; [`RunningNode::shutdown`] commits open files, cancels every worker with the one token
//! and returns once each has ended. Nothing of a node is process-global: its guard, workers and
//! network are its own, so several nodes can live in one process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::GateAdmission;
use super::{HANDOFF_LIMIT, Node, NodeError, control};
use crate::block::ChunkStore;
use crate::cluster::audit::{AUDIT_CHUNKS_PER_ROUND, Audit, AuditConfig};
use crate::cluster::gc::{Gc, GcConfig};
use crate::cluster::membership::{AnnouncedState, LivenessConfig};
use crate::cluster::repair::{Repair, RepairConfig};
use crate::cluster::{Cluster, ClusterConfig};
use crate::fs::{Mount, MountParts};
use crate::namespace::Volume;
use crate::net::guard::PeerGuard;
use crate::util::workers::Workers;

/// How long [`RunningNode::shutdown`] waits for the cancelled workers to end. Each ends at its
/// next await, so this is only reached by one stuck in blocking code.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// How long a version that lost to a concurrent one waits before it becomes a conflict copy: long
/// enough for a later version of its own line (sent right after it) to arrive and supersede it.
const CONFLICT_SETTLE: Duration = Duration::from_secs(10);

/// A started node: its filesystem core and the cluster parts behind it, with the workers that
/// run them.
///
/// Owns: the [`Workers`] (network event loop, chunk and sync servers and their streams, the
/// cluster loop and its anti-entropy sessions and gossip batches, repair, scrub, audit, gc,
/// conflict settling, the pin worker, the control and metrics servers and their connections,
/// the chunk flusher, the guard's delayed checks). Dropping it without [`RunningNode::shutdown`] leaves
/// them running until the runtime goes.
pub struct RunningNode {
    pub mount: Arc<Mount>,
    pub chunks: Arc<ChunkStore>,
    pub cluster: Arc<Cluster>,
    pub repair: Arc<Repair>,
    pub audit: Arc<Audit>,
    pub gc: Arc<Gc>,
    /// The paths this node keeps for offline use, and their worker.
    pub pins: Arc<crate::node::pins::Pins>,
    /// The node's guard: offences, per-peer limits and the block list.
    pub guard: Arc<PeerGuard>,
    /// Who may connect (the cluster has the same gate, `Cluster::gate`), and the refusals
    /// counted in the handshake.
    pub admission: Arc<GateAdmission>,
    leave: Arc<control::LeaveSignal>,
    workers: Workers,
    /// The audit's own token: a leaving node stops auditing first (the handoff needs the
    /// owners' proof budgets for itself).
    audit_workers: Workers,
    runtime: tokio::runtime::Handle,
    data_dir: PathBuf,
}

/// What [`RunningNode::shutdown`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Workers that had not ended when shutdown gave up waiting (0: every one ended).
    pub unfinished: usize,
    pub took: Duration,
}

impl Node {
    /// Joins the network and starts every worker on `runtime`. `mountpoint` is where the
    /// volume is (or will be) mounted: the control socket's paths are relative to it. Nothing
    /// is mounted here.
    pub fn start(
        self,
        runtime: &tokio::runtime::Handle,
        mountpoint: &Path,
    ) -> Result<RunningNode, NodeError> {
        let _enter = runtime.enter();
        // Connections take a descriptor each: the limits are sized to fit under the open-file
        // limit with a reserve for the node's own files (`net::limits`).
        let open_files = match crate::net::limits::raise_open_file_limit() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
                1024
            }
        };
        let admission = crate::net::limits::AdmissionLimits::for_open_files(open_files);
        tracing::info!(
            open_files,
            pending_incoming = admission.pending_incoming,
            pending_per_ip = admission.pending_per_ip,
            established = admission.established,
            established_per_ip = admission.established_per_ip,
            "open-file limit and connection limits"
        );
        let control_listener = control::bind(&self.data_dir)?;
        let metrics_listener =
            crate::node::web::bind_metrics(&self.config.metrics).map_err(NodeError::Metrics)?;
        let web_listener = crate::node::web::bind(&self.config.web, &self.data_dir)?;

        let workers = Workers::new();
        let guard = PeerGuard::with_workers(workers.clone());
        let limits = self
            .config
            .bandwidth
            .limits()
            .map_err(|message| NodeError::Io {
                path: self.data_dir.join(crate::node::config::CONFIG_FILE),
                source: std::io::Error::other(message),
            })?;
        guard.bandwidth().set(limits);
        let gate_admission = GateAdmission::new(self.gate.clone());
        let n = &self.config.network;
        let (net, net_events) = crate::net::start(
            crate::net::NetConfig {
                keypair: self.node_id.keypair.clone(),
                network_key: self.network_key.clone(),
                listen: self.config.listen_addrs(),
                bootstrap: self.config.bootstrap_addrs(),
                mdns: n.mdns,
                max_queued_gossip: crate::net::MAX_QUEUED_GOSSIP,
                limits: admission,
                guard: guard.clone(),
                admission: gate_admission.clone(),
                reach: self.config.reach(),
            },
            &workers,
        )?;
        let name = self.config.node_name(&self.node_id.peer_id().to_string());
        let cluster = Cluster::new(
            net.clone(),
            self.chunks.clone(),
            ClusterConfig {
                replicas: n.replicas as usize,
                liveness: LivenessConfig {
                    announce_every: Duration::from_millis(n.announce_interval_ms),
                    suspect_after: Duration::from_secs(n.suspect_after_secs),
                    dead_after: Duration::from_secs(n.dead_after_secs),
                    forget_after: Duration::from_secs(n.forget_after_secs),
                    leave_timeout: Duration::from_secs(n.leave_timeout_secs),
                },
                sync_every: Duration::from_secs(n.sync_interval_secs),
                capacity: self.capacity(),
                name,
                user: self.user.user_id(),
                recipient: self.user.recipient().to_string(),
            },
            self.gate.clone(),
            workers.clone(),
        );
        // Local commits go to the cluster through the pin worker's wake-up.
        let (publish_tx, mut committed_rx) = tokio::sync::mpsc::unbounded_channel();
        let (to_cluster, publish_rx) = tokio::sync::mpsc::unbounded_channel();
        let pins_wake = Arc::new(tokio::sync::Notify::new());
        {
            let pins_wake = pins_wake.clone();
            workers.spawn(async move {
                while let Some(batch) = committed_rx.recv().await {
                    pins_wake.notify_one();
                    if to_cluster.send(batch).is_err() {
                        break;
                    }
                }
            });
        }
        let origin = crate::namespace::entry::node_tag(&self.node_id.peer_id().to_bytes());
        let s = &self.config.storage;
        // The network volume's policy, and every volume's whose owner set none.
        self.namespace
            .set_retention(crate::namespace::RetentionTable {
                default: self.config.retention.policy(),
                volumes: Default::default(),
            });
        let mount = Arc::new(Mount::load(MountParts {
            network: {
                let mut network = Volume::for_network(&self.network_key);
                network.set_network_epochs(&cluster.gate.network_epoch_keys());
                network
            },
            user: self.user,
            origin,
            namespace: self.namespace,
            chunks: self.chunks.clone(),
            remote: Some(cluster.router.clone()),
            publish: Some(publish_tx),
            chunk_size: s.chunk_size,
            cache_bytes: s.cache_bytes,
            write_buffer_bytes: s.write_buffer_bytes,
            seal_threads: s.seal_threads,
            read_ahead_chunks: s.read_ahead_chunks,
            data_dir: self.data_dir.clone(),
        })?);
        mount.set_node_names(Arc::new(crate::node::names::MemberNames(Arc::downgrade(
            &cluster,
        ))));
        let mut streams = net.streams.clone();
        let mut accept = |protocol| {
            streams.accept(protocol).map_err(|e| NodeError::Io {
                path: self.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        };
        let chunk_streams = accept(crate::rpc::chunk::PROTOCOL)?;
        let sync_streams = accept(crate::rpc::sync::PROTOCOL)?;
        let chunk_server = crate::rpc::chunk::ChunkServer::new(
            self.chunks.clone(),
            cluster.router.clone(),
            guard.clone(),
            workers.clone(),
        );
        chunk_server.set_prove_rate(n.prove_rate_mb * 1_000_000);
        workers.spawn(crate::rpc::chunk::serve(chunk_streams, chunk_server));
        workers.spawn(crate::rpc::sync::serve(
            sync_streams,
            mount.clone(),
            guard.clone(),
            workers.clone(),
        ));
        workers.spawn(cluster.clone().run(mount.clone(), net_events, publish_rx));
        let repair = Repair::new(
            cluster.router.clone(),
            RepairConfig {
                interval: Duration::from_secs(n.repair_interval_secs),
                rate_bytes_per_sec: n.repair_rate_mb * 1_000_000,
                scrub_interval: Duration::from_secs(s.scrub_interval_secs),
                scrub_bytes_per_sec: s.scrub_rate_mb * 1_000_000,
            },
        );
        let pins = crate::node::pins::Pins::open(
            &self.data_dir,
            pins_wake,
            mount.clone(),
            self.chunks.clone(),
            cluster.router.clone(),
            repair.clone(),
        )?;
        // Before repair's first pass: a pinned chunk is never dropped, nor one only kept
        // versions reference.
        repair.set_kept(pins.chunks_now());
        repair.set_namespace(mount.namespace().clone());
        workers.spawn(pins.clone().run());
        workers.spawn(repair.clone().run());
        workers.spawn(repair.clone().run_scrub());
        let audit = Audit::new(
            cluster.router.clone(),
            AuditConfig {
                interval: Duration::from_secs(n.audit_interval_secs),
                chunks_per_round: AUDIT_CHUNKS_PER_ROUND,
            },
        );
        let audit_workers = workers.child();
        audit_workers.spawn(audit.clone().run());
        let gc = Gc::new(
            cluster.router.clone(),
            mount.clone(),
            cluster.membership.clone(),
            net.clone(),
            GcConfig {
                grace: Duration::from_secs(s.gc_grace_secs),
                capacity_bytes: s.capacity_bytes,
                min_free_percent: s.min_free_percent,
            },
        );
        workers.spawn(gc.clone().run());
        let status = crate::node::status::StatusReader::new(
            mount.clone(),
            self.chunks.clone(),
            cluster.clone(),
            repair.clone(),
            audit.clone(),
            gc.clone(),
            gate_admission.clone(),
            self.network_key.fingerprint(),
            std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf()),
        );
        if let Some(listener) = metrics_listener {
            workers.spawn(crate::node::web::serve_metrics(
                listener,
                status.clone(),
                self.config.metrics.allow_remote,
                workers.clone(),
            ));
        }
        workers.spawn(settle_conflicts(mount.clone()));
        let leave = control::LeaveSignal::new();
        let control_service = Arc::new(control::ControlService {
            mount: mount.clone(),
            chunks: self.chunks.clone(),
            cluster: cluster.clone(),
            repair: repair.clone(),
            gate: self.gate.clone(),
            network_key: self.network_key.clone(),
            leave: leave.clone(),
            mount_path: status.mount_point.clone(),
            status,
            pins: pins.clone(),
            web: web_listener.as_ref().map(|w| w.urls()),
            limits: Arc::new(control::limits::LimitControl::new(limits)),
        });
        workers.spawn(control::serve(
            control_listener,
            control_service.clone(),
            workers.clone(),
        ));
        if let Some(web) = web_listener {
            workers.spawn(crate::node::web::serve(
                web,
                control_service,
                workers.clone(),
            ));
        }
        Ok(RunningNode {
            mount,
            chunks: self.chunks,
            cluster,
            repair,
            audit,
            gc,
            pins,
            guard,
            admission: gate_admission,
            leave,
            workers,
            audit_workers,
            runtime: runtime.clone(),
            data_dir: self.data_dir,
        })
    }
}

impl RunningNode {
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.cluster.net.local
    }

    /// Workers not yet ended (after [`RunningNode::shutdown`]: none).
    pub fn workers_running(&self) -> usize {
        self.workers.running()
    }

    /// Resolves once `p2pfs-ctl leave` asked this node to leave.
    pub async fn leave_requested(&self) {
        self.leave.requested().await
    }

    /// Graceful leave: announce it, hand off what the others will need (bounded by
    /// `HANDOFF_LIMIT`, so a stop never hangs on unreachable peers: with the report's grace and
    /// `STOP_LIMIT`, a stop stays within the units' `TimeoutStopSec`),
    /// tell the `p2pfs-ctl leave` callers the result, announce that this node left.
    pub async fn leave(&self) -> control::LeaveReport {
        let cluster = &self.cluster;
        // The handoff needs the network.
        cluster.net.guard.set_paused(false);
        cluster.set_state(AnnouncedState::Leaving).await;
        // The handoff needs the owners' proof budgets for itself.
        self.audit_workers.cancel();
        let mut report = control::LeaveReport {
            replicas: cluster.router.replicas() as u32,
            holders_left: cluster.router.placement_without_self().holders() as u64,
            ..Default::default()
        };
        match tokio::time::timeout(HANDOFF_LIMIT, self.repair.handoff()).await {
            Ok(handed) => {
                if handed.under_replicated > 0 {
                    tracing::warn!(
                        short = handed.under_replicated,
                        "some chunks could not be handed off before leaving: they have fewer copies elsewhere, or none (run the node again to hand them off)"
                    );
                }
                tracing::info!(
                    chunks = handed.chunks,
                    copies_pushed = handed.pushed,
                    "handed off"
                );
                report.chunks = handed.chunks as u64;
                report.short = handed.under_replicated as u64;
                report.handed_off = report.chunks.saturating_sub(report.short);
                report.copies_pushed = handed.pushed as u64;
                report.finished = true;
            }
            Err(_) => {
                tracing::warn!(
                    "handoff did not finish within {HANDOFF_LIMIT:?}; leaving anyway (the others repair what is missing)"
                );
                let held = self.chunks.list().map(|l| l.len() as u64).unwrap_or(0);
                report.chunks = held;
                report.short = held;
            }
        }
        self.leave.finish(report.clone()).await;
        cluster.set_state(AnnouncedState::Left).await;
        // Give gossip a moment to carry the last announcement.
        tokio::time::sleep(Duration::from_millis(300)).await;
        report
    }

    /// A plain stop's announcement: this node goes offline, keeps its data and hands nothing
    /// off; peers show it `offline` at once and treat it as a silent peer (no repair before
    /// the dead-after time).
    pub async fn go_offline(&self) {
        self.cluster.set_state(AnnouncedState::Offline).await;
        // Give gossip a moment to carry the announcement before the connections close.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Stops the node: commits open files (their chunks still go to their owners, so the
    /// network is still up), then cancels every worker and returns once all have ended and
    /// nothing of the node holds its filesystem core (at most `STOP_LIMIT`). Blocks: call it
    /// outside async code, after dropping any clone of [`RunningNode::mount`].
    pub fn shutdown(self) -> Stopped {
        self.stop(0)
    }

    /// [`RunningNode::shutdown`] while a detached FUSE session still serves a busy mount (a
    /// shell in it) and holds the filesystem core until the process exits: waits for every
    /// other holder, not for that one. The cores stop taking changes before their final
    /// commit (`FsCore::stop_changes`): the busy program gets `EROFS` for any later write
    /// rather than an acknowledgement the exit would lose, and can still read.
    pub fn shutdown_detached(self) -> Stopped {
        self.stop(1)
    }

    fn stop(self, held_elsewhere: usize) -> Stopped {
        let t0 = Instant::now();
        self.mount.shutdown();
        let mut unfinished = self.runtime.block_on(self.workers.stop(STOP_LIMIT));
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "some workers did not end within {STOP_LIMIT:?}; stopping anyway"
            );
        }
        let RunningNode {
            mount,
            chunks,
            cluster,
            repair,
            audit,
            gc,
            pins,
            guard,
            data_dir,
            ..
        } = self;
        drop((chunks, cluster, repair, audit, gc, pins, guard));
        // A cancelled worker's blocking call (a namespace commit, a sync page applied, a gc
        // delete) runs to its end on the runtime's blocking pool and holds the core until
        // then: wait for it, so the namespace store is closed when this returns.
        let deadline = t0 + STOP_LIMIT;
        while Arc::strong_count(&mount) > 1 + held_elsewhere && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if Arc::strong_count(&mount) > 1 + held_elsewhere {
            tracing::warn!("blocking work still holds the filesystem core; stopping anyway");
            unfinished += 1;
        }
        drop(mount);
        let _ = std::fs::remove_file(data_dir.join(control::SOCKET_FILE));
        Stopped {
            unfinished,
            took: t0.elapsed(),
        }
    }
}

/// Makes conflict copies of settled displaced versions, every 2 s.
async fn settle_conflicts(mount: Arc<Mount>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let mount = mount.clone();
        let settled = tokio::task::spawn_blocking(move || mount.settle_conflicts(CONFLICT_SETTLE));
        if let Ok(Err(e)) = settled.await {
            tracing::warn!(error = %e, "cannot make conflict copies");
        }
    }
}
