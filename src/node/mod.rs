//! A node's life: `init` lays out a data dir with keys and defaults; `run` loads it, mounts
//! the volume and serves until told to stop.

pub mod config;
pub mod control;
pub mod metrics;
pub mod status;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::block::ChunkStore;
use crate::cluster::membership::{AnnouncedState, LivenessConfig};
use crate::cluster::repair::{Repair, RepairConfig};
use crate::cluster::{Cluster, ClusterConfig};
use crate::fs::{FsError, Mount, MountParts};
use crate::fuse::FuseAdapter;
use crate::identity::{
    IdentityError, Invite, NODE_KEY_FILE, NetworkKey, NodeIdentity, USER_KEY_FILE, UserIdentity,
};
use crate::namespace::volume::VolumeError;
use crate::namespace::{NamespaceError, NamespaceStore, Volume};
use crate::net::NetError;
use crate::node::config::{CONFIG_FILE, Config, ConfigError};
use crate::util::fsutil::{create_private_dir, write_new};
use control::ControlError;

pub const NAMESPACE_FILE: &str = "namespace.redb";
/// Longest a graceful leave spends handing data off before it exits anyway (well within the
/// default `network.leave_timeout_secs`, after which the others count a leaving node dead).
const HANDOFF_LIMIT: Duration = Duration::from_secs(45);
pub const CHUNKS_DIR: &str = "chunks";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "{0} already holds a p2pfs node; refusing to overwrite it (use another --data-dir, or remove that directory to start over)"
    )]
    AlreadyInitialized(PathBuf),
    #[error("{0} is not a p2pfs node; run `p2pfs init --data-dir {0}` first")]
    NotInitialized(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("filesystem: {0}")]
    Fs(#[from] FsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("cannot mount at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `init` made, for the user.
pub struct InitReport {
    pub peer_id: String,
    pub user_id: String,
    pub network_key_file: PathBuf,
    pub network_key_created: bool,
    pub network_fingerprint: String,
}

pub fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join(CONFIG_FILE).exists()
        || data_dir.join(NODE_KEY_FILE).exists()
        || data_dir.join(USER_KEY_FILE).exists()
}

/// Creates a node in `data_dir`. Refuses, changing nothing, when one is there already.
///
/// `user_key`: a user identity exported from another node (`p2pfs user export`), so one person
/// has the same identity, and personal volume, on several machines; without it a new user is
/// made.
///
/// `join`: an invite (`p2pfs-ctl invite` on a member): its network key is stored in the data dir
/// and its addresses become the config's bootstrap addresses.
pub fn init(
    data_dir: &Path,
    network_key: Option<&Path>,
    user_key: Option<&Path>,
    join: Option<&Invite>,
) -> Result<InitReport, NodeError> {
    if is_initialized(data_dir) {
        return Err(NodeError::AlreadyInitialized(data_dir.to_path_buf()));
    }
    // Read before anything is created, so a bad file changes nothing.
    let user = match user_key {
        Some(p) => UserIdentity::load(p)?,
        None => UserIdentity::generate(),
    };
    create_private_dir(data_dir).map_err(io_at(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_at(data_dir))?;

    let mut config = Config::default();
    let key_path = match network_key {
        Some(p) => {
            let abs = std::path::absolute(p).map_err(io_at(p))?;
            config.network.network_key_file = abs.clone();
            abs
        }
        None => config.network_key_path(data_dir),
    };
    let (key, created) = match join {
        Some(invite) => {
            let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(invite.network_key.0)));
            write_new(&key_path, text.as_bytes(), 0o600).map_err(io_at(&key_path))?;
            config.network.bootstrap = invite.bootstrap.clone();
            (invite.network_key.clone(), false)
        }
        None => NetworkKey::load_or_create(&key_path)?,
    };

    let node = NodeIdentity::generate();
    node.save_new(&data_dir.join(NODE_KEY_FILE))?;
    user.save_new(&data_dir.join(USER_KEY_FILE))?;
    // The config goes last: its presence marks a complete node.
    let text = config.to_documented_toml();
    let config_path = data_dir.join(CONFIG_FILE);
    write_new(&config_path, text.as_bytes(), 0o600).map_err(io_at(&config_path))?;
    Ok(InitReport {
        peer_id: node.peer_id().to_string(),
        user_id: user.user_id().to_string(),
        network_key_file: key_path,
        network_key_created: created,
        network_fingerprint: key.fingerprint(),
    })
}

/// A node loaded from its data dir, ready to run.
pub struct Node {
    pub config: Config,
    pub data_dir: PathBuf,
    pub chunks: Arc<ChunkStore>,
    pub node_id: NodeIdentity,
    pub user: UserIdentity,
    pub network_key: NetworkKey,
    namespace: NamespaceStore,
}

impl Node {
    pub fn load(data_dir: &Path) -> Result<Self, NodeError> {
        if !data_dir.join(CONFIG_FILE).exists() {
            return Err(NodeError::NotInitialized(data_dir.to_path_buf()));
        }
        let config = Config::load(data_dir)?;
        let network_key = NetworkKey::load(&config.network_key_path(data_dir))?;
        let node_id = NodeIdentity::load(&data_dir.join(NODE_KEY_FILE))?;
        let user = UserIdentity::load(&data_dir.join(USER_KEY_FILE))?;
        let chunks_dir = data_dir.join(CHUNKS_DIR);
        let chunks = Arc::new(
            ChunkStore::open(&chunks_dir)
                .map_err(io_at(&chunks_dir))?
                .with_sync_each(config.storage.sync_chunks),
        );
        let namespace = NamespaceStore::open(&data_dir.join(NAMESPACE_FILE))?;
        Ok(Self {
            config,
            data_dir: data_dir.to_path_buf(),
            chunks,
            node_id,
            user,
            network_key,
            namespace,
        })
    }

    /// Bytes offered for chunks: configured, else the size of the data dir's filesystem
    /// rounded down to a GiB (a stable weight: free space would shift placement constantly).
    fn capacity(&self) -> u64 {
        if !self.config.storage.hold_chunks {
            // Weight 0: placement never names this node an owner (see `Placement::owners`).
            return 0;
        }
        if self.config.storage.capacity_bytes > 0 {
            return self.config.storage.capacity_bytes;
        }
        let path = std::ffi::CString::new(self.data_dir.as_os_str().as_encoded_bytes())
            .unwrap_or_default();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        let total = if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
            st.f_blocks as u64 * st.f_frsize as u64
        } else {
            0
        };
        (total >> 30).max(1) << 30
    }

    /// Joins the network, mounts at `mountpoint` and serves until SIGTERM or SIGINT (then
    /// unmounts) or until the mount is taken away (`umount`).
    pub fn run(self, mountpoint: &Path) -> Result<(), NodeError> {
        prepare_mountpoint(mountpoint)?;
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("p2pfs-net")
            .enable_all()
            .build()
            .map_err(io_at(mountpoint))?;
        let _enter = runtime.enter();
        // Signal handlers go in before the mount appears, so a stop request that arrives the
        // moment it does still unmounts cleanly instead of killing the process.
        let (mut term, mut int) = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::terminate()).map_err(io_at(mountpoint))?,
                signal(SignalKind::interrupt()).map_err(io_at(mountpoint))?,
            )
        };
        let control_listener = control::bind(&self.data_dir)?;
        let metrics_listener =
            crate::node::metrics::bind(&self.config.metrics).map_err(NodeError::Metrics)?;

        let n = &self.config.network;
        let (net, net_events) = crate::net::start(crate::net::NetConfig {
            keypair: self.node_id.keypair.clone(),
            network_key: self.network_key.clone(),
            listen: self.config.listen_addrs(),
            bootstrap: self.config.bootstrap_addrs(),
            mdns: n.mdns,
            max_queued_gossip: crate::net::MAX_QUEUED_GOSSIP,
            limits: admission,
        })?;
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
            },
        );
        let (publish_tx, publish_rx) = tokio::sync::mpsc::unbounded_channel();
        let peer = self.node_id.peer_id().to_bytes();
        let origin = u64::from_le_bytes(
            blake3::hash(&peer).as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        let s = &self.config.storage;
        let core = Arc::new(Mount::load(MountParts {
            network: Volume::for_network(&self.network_key),
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
            data_dir: self.data_dir.clone(),
        })?);
        let mut control_streams = net.control.clone();
        let chunk_streams = control_streams
            .accept(crate::rpc::chunk::PROTOCOL)
            .map_err(|e| NodeError::Io {
                path: self.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let sync_streams = control_streams
            .accept(crate::rpc::sync::PROTOCOL)
            .map_err(|e| NodeError::Io {
                path: self.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        runtime.spawn(crate::rpc::chunk::serve(
            chunk_streams,
            crate::rpc::chunk::ChunkServer::new(self.chunks.clone(), cluster.router.clone()),
        ));
        runtime.spawn(crate::rpc::sync::serve(sync_streams, core.clone()));
        runtime.spawn(cluster.clone().run(core.clone(), net_events, publish_rx));
        let repair = Repair::new(
            cluster.router.clone(),
            RepairConfig {
                interval: Duration::from_secs(n.repair_interval_secs),
                rate_bytes_per_sec: n.repair_rate_mb * 1_000_000,
                scrub_interval: Duration::from_secs(self.config.storage.scrub_interval_secs),
                scrub_bytes_per_sec: self.config.storage.scrub_rate_mb * 1_000_000,
            },
        );
        runtime.spawn(repair.clone().run());
        runtime.spawn(repair.clone().run_scrub());
        crate::rpc::chunk::set_prove_rate(n.prove_rate_mb * 1_000_000);
        let audit = crate::cluster::audit::Audit::new(
            cluster.router.clone(),
            crate::cluster::audit::AuditConfig {
                interval: Duration::from_secs(n.audit_interval_secs),
                chunks_per_round: crate::cluster::audit::AUDIT_CHUNKS_PER_ROUND,
            },
        );
        let audit_worker = runtime.spawn(audit.clone().run());
        let gc = crate::cluster::gc::Gc::new(
            cluster.router.clone(),
            core.clone(),
            cluster.membership.clone(),
            net.control.clone(),
            crate::cluster::gc::GcConfig {
                grace: Duration::from_secs(self.config.storage.gc_grace_secs),
            },
        );
        runtime.spawn(gc.clone().run());
        let status = crate::node::status::StatusReader::new(
            core.clone(),
            self.chunks.clone(),
            cluster.clone(),
            repair.clone(),
            audit.clone(),
            gc.clone(),
            self.network_key.fingerprint(),
            std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf()),
        );
        if let Some(listener) = metrics_listener {
            runtime.spawn(crate::node::metrics::serve(listener, status.clone()));
        }
        runtime.spawn(settle_conflicts(core.clone()));
        let leave_requested = control::LeaveSignal::new();
        runtime.spawn(control::serve(
            control_listener,
            Arc::new(control::StatusSource {
                mount: core.clone(),
                chunks: self.chunks.clone(),
                cluster: cluster.clone(),
                repair: repair.clone(),
                leave: leave_requested.clone(),
                mount_path: status.mount_point.clone(),
                status,
            }),
        ));

        let mut fuse_config = fuser::Config::default();
        fuse_config.mount_options = vec![
            fuser::MountOption::FSName("p2pfs".into()),
            fuser::MountOption::Subtype("p2pfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::RW,
        ];
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        fuse_config.acl = if self.config.fuse.allow_other && root {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        fuse_config.n_threads = Some(self.config.fuse.threads);
        fuse_config.clone_fd = true;
        let adapter = FuseAdapter::new(
            core.clone(),
            Duration::from_millis(self.config.fuse.attr_ttl_ms),
        );
        let mut session =
            fuser::Session::new(adapter, mountpoint, &fuse_config).map_err(|source| {
                NodeError::Mount {
                    path: mountpoint.to_path_buf(),
                    source,
                }
            })?;
        let mut unmounter = session.unmount_callable();
        raise_read_ahead(mountpoint);
        tracing::info!(
            mount = %mountpoint.display(),
            peer_id = %self.node_id.peer_id(),
            network = %self.network_key.fingerprint(),
            "mounted"
        );
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let serve = std::thread::Builder::new()
            .name("p2pfs-fuse".into())
            .spawn(move || {
                let _ = gone_tx.send(session.run());
            })
            .map_err(io_at(mountpoint))?;

        let stopped_by_signal = runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: leaving the network"); true }
                _ = int.recv() => { tracing::info!("SIGINT: leaving the network"); true }
                _ = leave_requested.requested() => { tracing::info!("leave requested: leaving the network"); true }
                result = gone_rx => {
                    if let Ok(Err(e)) = result {
                        tracing::error!(error = %e, "FUSE session ended with an error");
                    } else {
                        tracing::info!("mount was removed; stopping");
                    }
                    false
                }
            }
        });
        // Graceful leave: say so, hand off what the others will need, say we left.
        runtime.block_on(async {
            cluster.set_state(AnnouncedState::Leaving).await;
            // The handoff needs the owners' proof budgets for itself.
            audit_worker.abort();
            // Bounded, so a stop never hangs on unreachable peers (systemd allows 60 s).
            let mut report = control::LeaveReport {
                replicas: cluster.router.replicas() as u32,
                holders_left: cluster.router.placement_without_self().holders() as u64,
                ..Default::default()
            };
            match tokio::time::timeout(HANDOFF_LIMIT, repair.handoff()).await {
                Ok(handed) => {
                    if handed.under_replicated > 0 {
                        tracing::warn!(
                            short = handed.under_replicated,
                            "some chunks could not be handed off before leaving: they have fewer copies elsewhere, or none (run the node again to hand them off)"
                        );
                    }
                    tracing::info!(chunks = handed.chunks, copies_pushed = handed.pushed, "handed off");
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
            leave_requested.finish(report).await;
            cluster.set_state(AnnouncedState::Left).await;
            // Give gossip a moment to carry the last announcement.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        if stopped_by_signal && let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "unmount failed; detaching the mount");
            lazy_unmount(mountpoint);
        }
        let _ = serve.join();
        // Commit open files (their chunks still go to their owners) before the network stops;
        // outside the runtime context, since replication blocks on the runtime.
        drop(_enter);
        core.shutdown();
        let _ = std::fs::remove_file(self.data_dir.join(control::SOCKET_FILE));
        runtime.shutdown_timeout(Duration::from_secs(2));
        tracing::info!("stopped");
        Ok(())
    }
}

/// Creates the mountpoint if needed; clears a dead mount a crashed node left behind.
fn prepare_mountpoint(mountpoint: &Path) -> Result<(), NodeError> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(NodeError::Mount {
            path: mountpoint.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mount = %mountpoint.display(), "a dead FUSE mount is in the way (a crashed node?); detaching it");
            lazy_unmount(mountpoint);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(mountpoint).map_err(io_at(mountpoint))
        }
        Err(source) => Err(NodeError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        }),
    }
}

/// Kernel read-ahead for the mount, in KiB: a sequential reader then asks for up to 1 MiB per
/// request (one chunk) instead of 128 KiB, and chunks are fetched in parallel sooner.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's kernel read-ahead (best effort: needs root, as mounting without
/// fusermount does). The device comes from mountinfo, not a stat of the mountpoint, which
/// would be a request to this very filesystem before it serves.
fn raise_read_ahead(mountpoint: &Path) {
    let Ok(abs) = std::path::absolute(mountpoint) else {
        return;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let wanted = abs.to_string_lossy().replace(' ', "\\040");
    let dev = info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&wanted.as_str())).then(|| fields.get(2).map(|d| d.to_string()))?
    });
    if let Some(dev) = dev {
        let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = std::fs::write(&path, READ_AHEAD_KB.to_string()) {
            tracing::debug!(%path, error = %e, "could not raise read-ahead");
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// How long a version that lost to a concurrent one waits before it becomes a conflict copy: long
/// enough for a later version of its own line (sent right after it) to arrive and supersede it.
const CONFLICT_SETTLE: Duration = Duration::from_secs(10);

/// Makes conflict copies of settled displaced versions, every 2 s.
async fn settle_conflicts(core: Arc<Mount>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let core = core.clone();
        let settled = tokio::task::spawn_blocking(move || core.settle_conflicts(CONFLICT_SETTLE));
        if let Ok(Err(e)) = settled.await {
            tracing::warn!(error = %e, "cannot make conflict copies");
        }
    }
}
