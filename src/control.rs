//! The control socket: `p2pfs-ctl` talks to a running node over a Unix socket in the data dir
//! (mode 0600; connections from other users are refused). One JSON request per line, one JSON
//! reply per line. The `status` reply is a documented, stable contract (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::block::ChunkStore;
use crate::cluster::Cluster;
use crate::fs::Mount;
use crate::repair::Repair;

pub const SOCKET_FILE: &str = "control.sock";
/// A request line longer than this is refused (and the connection closed).
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Leave the network gracefully: hand off data, then unmount and exit.
    Leave,
    /// Where the chunks of a file are: owners by placement, holders by asking.
    Where {
        path: String,
    },
    /// Volumes this node's user is a member of.
    VolumeList,
    VolumeCreate {
        name: String,
    },
    /// Share a volume of this user's with another user (`USER_ID:RECIPIENT`).
    VolumeShare {
        name: String,
        with: String,
        read_only: bool,
    },
    /// Remove a user from a volume of this user's; a new key protects later writes.
    VolumeUnshare {
        name: String,
        with: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    Leaving,
    Where {
        path: String,
        chunks: Vec<ChunkLocation>,
    },
    Volumes {
        volumes: Vec<crate::fs::VolumeInfo>,
    },
    /// A volume command took effect.
    Done {
        message: String,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub peer_id: String,
    pub network_fingerprint: String,
    pub listen_addrs: Vec<String>,
    /// `connected` when at least one peer is connected, else `isolated`.
    pub network: String,
    pub peers: Vec<PeerStatus>,
    pub mount: String,
    pub replication: ReplicationStatus,
    pub cache: CacheStatus,
    pub gc: GcStatus,
    /// Files, directories and symlinks in every mounted volume (their roots excluded).
    pub files: u64,
    pub rejected_entries: u64,
}

/// One chunk of a file: its owners by placement and the peers that confirmed holding it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub id: String,
    pub owners: Vec<String>,
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub state: String,
    pub last_seen_ms: u64,
    /// Bytes the peer offers (its placement weight) and has free.
    pub capacity: u64,
    pub free_bytes: u64,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub factor: u32,
    pub chunks_stored: u64,
    pub bytes_stored: u64,
    pub under_replicated: u64,
    pub repair_queue: u64,
}

/// Garbage collection of deleted and overwritten data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcStatus {
    pub grace_secs: u64,
    /// Stored chunks no live entry references, at the last pass (collected after the grace
    /// period, while every member is alive).
    pub unreferenced_chunks: u64,
    /// Whether the last pass could collect (no member suspect, dead or leaving).
    pub collecting: bool,
    pub deleted_chunks: u64,
    /// Tombstones in the namespace, and expired ones kept to refuse stale versions.
    pub tombstones: u64,
    pub expired_tombstones: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheStatus {
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no p2pfs node is running for {0} (no control socket answers there)")]
    NotRunning(PathBuf),
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control protocol: {0}")]
    Protocol(String),
}

/// What the server reports from: the node's parts.
pub struct StatusSource {
    pub core: Arc<Mount>,
    pub chunks: Arc<ChunkStore>,
    pub cluster: Arc<Cluster>,
    pub repair: Arc<Repair>,
    pub gc: Arc<crate::gc::Gc>,
    /// Notified by a `leave` request; the node then leaves as on SIGTERM.
    pub leave: Arc<tokio::sync::Notify>,
    pub network_fingerprint: String,
    pub mount: PathBuf,
}

impl StatusSource {
    async fn locate(&self, path: &str) -> Reply {
        let core = self.core.clone();
        let p = path.to_string();
        let ids = match tokio::task::spawn_blocking(move || core.file_chunks(&p)).await {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                return Reply::Error {
                    message: format!("{path}: {e}"),
                };
            }
            Err(e) => {
                return Reply::Error {
                    message: e.to_string(),
                };
            }
        };
        let router = &self.cluster.router;
        let placement = router.placement();
        let local = self.cluster.net.local;
        let mut holders: Vec<Vec<String>> = vec![Vec::new(); ids.len()];
        for (i, id) in ids.iter().enumerate() {
            if self.chunks.contains(id) {
                holders[i].push(local.to_string());
            }
        }
        let peers: Vec<_> = self
            .cluster
            .membership
            .read()
            .placement_peers()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for peer in peers {
            let mut at = 0;
            for batch in ids.chunks(crate::rpc::chunk::MAX_HAVE_BATCH) {
                if let Ok(bits) = router.client().have(peer, batch.to_vec()).await {
                    for (j, has) in bits.into_iter().enumerate() {
                        if has {
                            holders[at + j].push(peer.to_string());
                        }
                    }
                }
                at += batch.len();
            }
        }
        let chunks = ids
            .iter()
            .zip(holders)
            .map(|(id, holders)| ChunkLocation {
                id: id.to_string(),
                owners: placement
                    .owners(id, router.replicas())
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                holders,
            })
            .collect();
        Reply::Where {
            path: path.to_string(),
            chunks,
        }
    }

    async fn status(&self) -> Status {
        let stats = self.core.stats();
        let chunks = self.chunks.clone();
        let stored = tokio::task::spawn_blocking(move || chunks.list().unwrap_or_default())
            .await
            .unwrap_or_default();
        let net = &self.cluster.net;
        let connected = net.connected().await;
        let now = std::time::Instant::now();
        let peers = self
            .cluster
            .membership
            .read()
            .members()
            .map(|m| PeerStatus {
                peer_id: m.peer.to_string(),
                addrs: m.addrs.iter().map(|a| a.to_string()).collect(),
                state: m.state.as_str().to_string(),
                last_seen_ms: now.saturating_duration_since(m.last_seen).as_millis() as u64,
                capacity: m.capacity,
                free_bytes: m.free,
                version: m.version.clone(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            peer_id: net.local.to_string(),
            network_fingerprint: self.network_fingerprint.clone(),
            listen_addrs: net
                .listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            network: if connected.is_empty() {
                "isolated"
            } else {
                "connected"
            }
            .into(),
            peers,
            mount: self.mount.display().to_string(),
            replication: ReplicationStatus {
                factor: self.cluster.router.replicas() as u32,
                chunks_stored: stored.len() as u64,
                bytes_stored: stored.iter().map(|(_, n)| n).sum(),
                under_replicated: self.repair.under_replicated(),
                repair_queue: self.repair.queue(),
            },
            cache: CacheStatus {
                bytes: stats.cache.bytes,
                capacity: stats.cache.capacity,
                hits: stats.cache.hits,
                misses: stats.cache.misses,
            },
            gc: {
                let last = self.gc.last();
                let core = self.core.clone();
                let (tombstones, forgotten) = tokio::task::spawn_blocking(move || {
                    let ns = core.namespace();
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
            files: stats.entries as u64,
            rejected_entries: stats.rejected_entries as u64,
        }
    }
}

/// Binds the socket (replacing a stale one from a crashed run), mode 0600.
pub fn bind(data_dir: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(SOCKET_FILE);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(ControlError::Protocol(format!(
                "{} is in use: is another node running on this data dir?",
                path.display()
            )));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until the task is dropped.
pub async fn serve(listener: UnixListener, source: Arc<StatusSource>) {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == me || c.uid() == 0)
            .unwrap_or(false);
        if !allowed {
            tracing::warn!("control connection from another user refused");
            continue;
        }
        let source = source.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &source).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn handle(stream: UnixStream, source: &StatusSource) -> Result<(), ControlError> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 + 1)).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => Reply::Status(Box::new(source.status().await)),
            Ok(Request::Leave) => {
                source.leave.notify_one();
                Reply::Leaving
            }
            Ok(Request::Where { path }) => source.locate(&path).await,
            Ok(
                request @ (Request::VolumeList
                | Request::VolumeCreate { .. }
                | Request::VolumeShare { .. }
                | Request::VolumeUnshare { .. }),
            ) => {
                let core = source.core.clone();
                tokio::task::spawn_blocking(move || volume_command(&core, request))
                    .await
                    .unwrap_or_else(|e| Reply::Error {
                        message: e.to_string(),
                    })
            }
            Err(e) => Reply::Error {
                message: format!("bad request: {e}"),
            },
        };
        let mut out =
            serde_json::to_vec(&reply).map_err(|e| ControlError::Protocol(e.to_string()))?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// Runs a volume command on the mount (blocking: it commits to the namespace store).
fn volume_command(mount: &Mount, request: Request) -> Reply {
    use crate::namespace::volume::UserKey;
    let user_key = |s: &str| s.parse::<UserKey>();
    let result = match request {
        Request::VolumeList => {
            return Reply::Volumes {
                volumes: mount.volumes(),
            };
        }
        Request::VolumeCreate { name } => mount.create_volume(&name).map(|v| {
            format!(
                "created volume {:?} ({}); it is at {} in the mount",
                v.name, v.id, v.dir
            )
        }),
        Request::VolumeShare {
            name,
            with,
            read_only,
        } => user_key(&with).and_then(|user| {
            mount.share(&name, &user, read_only).map(|()| {
                format!(
                    "shared {name:?} with {} ({})",
                    user.id,
                    if read_only { "read-only" } else { "read-write" }
                )
            })
        }),
        Request::VolumeUnshare { name, with } => {
            crate::namespace::volume::parse_user_id(&with).and_then(|id| {
                mount.unshare(&name, &id).map(|was| {
                    if was {
                        format!(
                            "removed {id} from {name:?}; a new key protects what is written from now on"
                        )
                    } else {
                        format!("{id} was not a member of {name:?}; nothing changed")
                    }
                })
            })
        }
        _ => unreachable!("only volume commands get here"),
    };
    match result {
        Ok(message) => Reply::Done { message },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

/// Client side: one request, one reply.
pub fn call(data_dir: &Path, request: &Request) -> Result<Reply, ControlError> {
    use std::io::{BufRead, Write};
    let path = data_dir.join(SOCKET_FILE);
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ControlError::NotRunning(data_dir.to_path_buf())
            }
            _ => ControlError::Io(e),
        })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| ControlError::Protocol(format!("bad reply: {e}")))
}
