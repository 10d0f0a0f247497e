//! The node's side of the control socket: binds it (0600, other users refused), reads requests
//! and answers them from the node's parts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::membership::{
    Target, admins_named, expelled_message, invite_rows, label_of, member_rows, resolve,
};
use super::proto::*;
use super::{ControlError, SOCKET_FILE};
use crate::admission::gate::short_user;
use crate::admission::{Gate, GateError, LedgerRecord, Mode, NodeRole};
use crate::block::ChunkStore;
use crate::cluster::Cluster;
use crate::cluster::names::short_id;
use crate::cluster::repair::Repair;
use crate::fs::Mount;
use crate::util::workers::Workers;

/// A request line longer than this is refused (and the connection closed).
const MAX_REQUEST: usize = 64 * 1024;

/// Between a node's leave and the `p2pfs-ctl leave` connections waiting for its result.
#[derive(Default)]
pub struct LeaveSignal {
    requested: tokio::sync::Notify,
    report: tokio::sync::watch::Sender<Option<LeaveReport>>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// How long a leaving node waits for its result to reach the `leave` connections.
const LEAVE_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl LeaveSignal {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Resolves once a `leave` request came.
    pub async fn requested(&self) {
        self.requested.notified().await;
    }

    /// Publishes the result and waits (briefly) until every waiting connection has sent it.
    pub async fn finish(&self, report: LeaveReport) {
        use std::sync::atomic::Ordering;
        self.report.send_replace(Some(report));
        let deadline = tokio::time::Instant::now() + LEAVE_REPORT_GRACE;
        while self.waiting.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Counts a connection waiting for the leave result while it lives.
struct LeaveWaiter<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> LeaveWaiter<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for LeaveWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What the control server answers requests from: the node's parts, its status reader and
/// the leave signal.
pub struct ControlService {
    pub mount: Arc<Mount>,
    pub chunks: Arc<ChunkStore>,
    pub cluster: Arc<Cluster>,
    pub repair: Arc<Repair>,
    /// Admission: invites, members, expel and admin requests act on it.
    pub gate: Arc<Gate>,
    /// The network key: certified invites carry it (the Noise handshake needs it first).
    pub network_key: crate::identity::NetworkKey,
    /// Signalled by a `leave` request (the node then leaves as on SIGTERM); carries the
    /// handoff's result back.
    pub leave: Arc<LeaveSignal>,
    pub mount_path: PathBuf,
    /// The `status` reply, read by the same code as the metrics scrape.
    pub status: Arc<crate::node::status::StatusReader>,
    /// `pin`, `unpin` and `pins` act on it.
    pub pins: Arc<crate::node::pins::Pins>,
    /// Where the web dashboard is, for `p2pfs-ctl web`; `None`: it is off.
    pub web: Option<crate::node::web::WebUrls>,
    /// `limit`: config.toml's limits, and whether they were replaced.
    pub limits: Arc<super::limits::LimitControl>,
}

/// Bytes moved per piece by put and get.
const PIECE: usize = 1 << 20;

fn io_error(e: impl std::fmt::Display) -> Reply {
    Reply::Error {
        message: e.to_string(),
    }
}

impl ControlService {
    /// A path as given by a user: relative to the mount's root, or absolute under the mount
    /// point.
    pub(crate) fn relative(&self, path: &str) -> String {
        let p = std::path::Path::new(path);
        match p.strip_prefix(&self.mount_path) {
            Ok(rest) if p.is_absolute() => rest.to_string_lossy().into_owned(),
            _ => path.to_string(),
        }
    }

    /// [`relative`](Self::relative) of a path that need not be UTF-8.
    fn relative_bytes(&self, path: &[u8]) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        match p.strip_prefix(&self.mount_path) {
            Ok(rest) if p.is_absolute() => rest.as_os_str().as_bytes().to_vec(),
            _ => path.to_vec(),
        }
    }

    /// Starts the node's leave and reports on `write` until it is done: `Leaving`, progress
    /// lines, then `Left` with the result (sent before the node exits).
    async fn leave_and_report<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        write: &mut W,
    ) -> Result<(), ControlError> {
        let mut report = self.leave.report.subscribe();
        let _waiting = LeaveWaiter::new(&self.leave.waiting);
        self.leave.requested.notify_one();
        send(write, &Reply::Leaving).await?;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            let done = report.borrow_and_update().clone();
            if let Some(result) = done {
                send(write, &Reply::Left(result)).await?;
                write.flush().await?;
                return Ok(());
            }
            tokio::select! {
                changed = report.changed() => if changed.is_err() {
                    return Err(ControlError::Protocol("the node stopped without a leave result".into()));
                },
                _ = tick.tick() => send(write, &Reply::LeaveProgress {
                    copies_to_push: self.repair.queue(),
                }).await?,
            }
        }
    }

    async fn health(&self) -> Reply {
        let mount = self.mount.clone();
        let Ok(by_file) = tokio::task::spawn_blocking(move || mount.all_file_chunks()).await else {
            return io_error("health: task failed");
        };
        let Some(health) = crate::cluster::survey::health(&self.cluster.router, by_file).await
        else {
            return io_error("health: task failed");
        };
        let nodes = self.cluster.membership.read().placement_peers().len() as u64 + 1;
        let (replicas, holding, copies) = self.cluster.router.copies_possible();
        Reply::Health(HealthStatus {
            replicas,
            nodes,
            copies,
            holding_nodes: holding,
            chunks: health.chunks as u64,
            short_chunks: health.short as u64,
            missing_chunks: health.missing as u64,
            unverified_chunks: health.unverified as u64,
            files: health.files,
        })
    }

    async fn df(&self) -> Reply {
        let chunks = self.chunks.clone();
        let stored: u64 = tokio::task::spawn_blocking(move || chunks.list().unwrap_or_default())
            .await
            .unwrap_or_default()
            .iter()
            .map(|(_, n)| n)
            .sum();
        // A reader node (capacity 0) stores nothing: its disk is not the network's space.
        let own = self.cluster.router.capacity();
        let (mut capacity, mut free, mut nodes) = (
            own,
            if own > 0 { self.chunks.free_bytes() } else { 0 },
            1u64,
        );
        for m in self.cluster.membership.read().members() {
            if m.state.is_live() {
                capacity += m.capacity;
                if m.capacity > 0 {
                    free += m.free;
                }
                nodes += 1;
            }
        }
        let (replicas, holding, copies) = self.cluster.router.copies_possible();
        Reply::Df(DfStatus {
            nodes,
            replicas,
            copies,
            holding_nodes: holding,
            capacity_bytes: capacity,
            free_bytes: free,
            stored_here_bytes: stored,
            usable_bytes: free / u64::from(copies.max(1)),
            retained_here_bytes: self.status.gc.last().retained_bytes,
            kept_versions: self.mount.namespace().history_len().unwrap_or(0),
        })
    }

    async fn ls(&self, path: String) -> Reply {
        let mount = self.mount.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let entries = mount.list(&path).map_err(|e| format!("{path}: {e}"))?;
            // A symlink's target, for `get -r` to make the same link.
            let targets: Vec<Option<String>> = entries
                .iter()
                .map(|d| {
                    (d.attr.kind == crate::namespace::EntryKind::Symlink)
                        .then(|| mount.readlink(d.attr.ino).ok())
                        .flatten()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                })
                .collect();
            Ok::<_, String>((entries, targets))
        });
        match listed.await {
            Ok(Ok((entries, targets))) => Reply::Listing {
                entries: entries
                    .into_iter()
                    .zip(targets)
                    .map(|(d, target)| ListEntry {
                        name: String::from_utf8_lossy(&d.name).into_owned(),
                        name_bytes: std::str::from_utf8(&d.name)
                            .is_err()
                            .then(|| hex::encode(&d.name)),
                        kind: match d.attr.kind {
                            crate::namespace::EntryKind::File => "file",
                            crate::namespace::EntryKind::Dir => "dir",
                            crate::namespace::EntryKind::Symlink => "symlink",
                            crate::namespace::EntryKind::Fifo => "fifo",
                            crate::namespace::EntryKind::Socket => "socket",
                            crate::namespace::EntryKind::CharDev => "char",
                            crate::namespace::EntryKind::BlockDev => "block",
                            // Never listed: a link is shown as the entry it names.
                            crate::namespace::EntryKind::Link => "file",
                        }
                        .into(),
                        size: d.attr.size,
                        mode: u32::from(d.attr.perm),
                        mtime: d.attr.mtime.secs,
                        target,
                    })
                    .collect(),
            },
            Ok(Err(e)) => io_error(e),
            Err(e) => io_error(e),
        }
    }

    async fn rm(&self, path: String, recursive: bool) -> Reply {
        let mount = self.mount.clone();
        let shown = path.clone();
        match tokio::task::spawn_blocking(move || mount.remove(&path, recursive)).await {
            Ok(Ok(n)) => Reply::Done {
                message: format!(
                    "removed {shown} ({n} entr{})",
                    if n == 1 { "y" } else { "ies" }
                ),
            },
            Ok(Err(crate::fs::FsError::NotEmpty)) => {
                io_error(format!("{shown}: directory not empty (use -r)"))
            }
            Ok(Err(e)) => io_error(format!("{shown}: {e}")),
            Err(e) => io_error(e),
        }
    }

    /// Receives `size` bytes from `reader` into a temporary file beside the destination, then
    /// renames it over the destination: `path`, or `path/name` when `path` names a directory.
    /// On any failure the temporary file is removed and the destination is untouched. With
    /// `ready`, the destination is checked and the temporary file made before the client sends
    /// a byte: a `Ready` line says go, an `Error` line ends the request with nothing sent.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put<R: tokio::io::AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: String,
        name: Option<String>,
        size: u64,
        mode: u32,
        ready: bool,
        caller: crate::fs::Caller,
        reader: &mut R,
        write: &mut W,
    ) -> Result<Reply, ControlError> {
        let mount = self.mount.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (checked_tx, checked_rx) =
            tokio::sync::oneshot::channel::<Result<String, crate::fs::FsError>>();
        let shown = path.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(), crate::fs::FsError> {
            let opened =
                put_target(&mount, &path, name.as_deref()).and_then(|(parent, name, shown)| {
                    let mut temp = format!(
                        ".{}.p2pfs-put-{:08x}",
                        String::from_utf8_lossy(&name),
                        rand::random::<u32>()
                    )
                    .into_bytes();
                    temp.truncate(crate::namespace::entry::MAX_NAME_LEN);
                    let (_, fh) = mount.create(parent, &temp, mode & 0o7777, caller, true)?;
                    Ok((parent, name, temp, fh, shown))
                });
            let (parent, name, temp, fh) = match opened {
                Ok((parent, name, temp, fh, shown)) => {
                    let _ = checked_tx.send(Ok(shown));
                    (parent, name, temp, fh)
                }
                Err(e) => {
                    let _ = checked_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let mut offset = 0u64;
            let mut result = Ok(());
            for piece in rx {
                if result.is_ok() {
                    result = mount.write(fh, offset, &piece).map(|_| ());
                }
                offset += piece.len() as u64;
            }
            let complete = offset == size;
            let released = mount.release(fh);
            let done = result.and(released).and_then(|()| {
                if complete {
                    mount.rename(parent, &temp, parent, &name, crate::fs::RenameMode::Plain)
                } else {
                    Err(crate::fs::FsError::Io("the upload was cut short".into()))
                }
            });
            if done.is_err() {
                let _ = mount.unlink(parent, &temp);
            }
            done
        });
        let shown = match checked_rx.await {
            Ok(Ok(target)) => target,
            Ok(Err(e)) if ready => {
                drop(tx);
                let _ = writer.await;
                return Ok(io_error(format!("{shown}: {e}")));
            }
            // Without `ready` the bytes come anyway: read them below, then answer the error.
            Ok(Err(_)) | Err(_) => shown,
        };
        if ready {
            send(
                write,
                &Reply::Ready {
                    path: shown.clone(),
                },
            )
            .await?;
        }
        let mut left = size;
        let mut read_error = None;
        while left > 0 {
            let mut piece = vec![0u8; left.min(PIECE as u64) as usize];
            if let Err(e) = reader.read_exact(&mut piece).await {
                read_error = Some(e);
                break;
            }
            left -= piece.len() as u64;
            if tx.send(piece).is_err() {
                break; // the writer failed; its error is the reply
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ControlError::Protocol(e.to_string()))?;
        if let Some(e) = read_error {
            return Err(ControlError::Io(e));
        }
        // The writer may have stopped early; skip what the client still sends.
        if left > 0 {
            let mut sink = tokio::io::sink();
            tokio::io::copy(&mut reader.take(left), &mut sink).await?;
        }
        Ok(match written {
            Ok(()) => Reply::Done {
                message: format!("stored {shown} ({size} bytes)"),
            },
            Err(e) => io_error(format!("{shown}: {e}")),
        })
    }

    /// `mkdir` for `put -r`: an existing directory at `path` is fine.
    async fn mkdir(&self, path: String, mode: u32, caller: crate::fs::Caller) -> Reply {
        let mount = self.mount.clone();
        let shown = path.clone();
        let made = tokio::task::spawn_blocking(move || {
            if let Ok(attr) = mount.resolve(&path) {
                return if attr.kind == crate::namespace::EntryKind::Dir {
                    Ok(())
                } else {
                    Err(crate::fs::FsError::Exists)
                };
            }
            let (parent, name) = mount.resolve_parent(&path)?;
            mount
                .mkdir(parent, &name, mode & 0o7777, caller)
                .map(|_| ())
        });
        made_reply(made.await, &shown)
    }

    /// `symlink` for `put -r`.
    async fn symlink(&self, path: String, target: String, caller: crate::fs::Caller) -> Reply {
        let mount = self.mount.clone();
        let shown = path.clone();
        let made = tokio::task::spawn_blocking(move || {
            let (parent, name) = mount.resolve_parent(&path)?;
            // The same link there already (a `put -r` run again) is not an error.
            if let Ok(attr) = mount.lookup(parent, &name) {
                let same = attr.kind == crate::namespace::EntryKind::Symlink
                    && mount.readlink(attr.ino)? == target.as_bytes();
                return if same {
                    Ok(())
                } else {
                    Err(crate::fs::FsError::Exists)
                };
            }
            mount
                .symlink(parent, &name, target.as_bytes(), caller)
                .map(|_| ())
        });
        made_reply(made.await, &shown)
    }

    /// Sends the file at `path`: a `Data` reply line, then its bytes; an `Error` line instead
    /// when it cannot be opened. A read that fails midway closes the connection (the client
    /// sees a short transfer).
    pub(crate) async fn get<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: Vec<u8>,
        write: &mut W,
    ) -> Result<(), ControlError> {
        let mount = self.mount.clone();
        let shown = String::from_utf8_lossy(&path).into_owned();
        let opened =
            tokio::task::spawn_blocking(move || -> Result<(u64, u64), crate::fs::FsError> {
                let attr = resolve_bytes(&mount, &path)?;
                if attr.kind != crate::namespace::EntryKind::File {
                    return Err(crate::fs::FsError::IsDir);
                }
                Ok((mount.open(attr.ino, false)?, attr.size))
            })
            .await
            .map_err(|e| ControlError::Protocol(e.to_string()))?;
        let (fh, size) = match opened {
            Ok(x) => x,
            Err(e) => return send(write, &io_error(format!("{shown}: {e}"))).await,
        };
        send(write, &Reply::Data { size }).await?;
        let mut offset = 0u64;
        let mut result = Ok(());
        while offset < size {
            let mount = self.mount.clone();
            let want = (size - offset).min(PIECE as u64) as u32;
            let piece = tokio::task::spawn_blocking(move || {
                mount.read(fh, offset, want).map(|b| b.to_vec())
            })
            .await
            .map_err(|e| ControlError::Protocol(e.to_string()))?;
            match piece {
                Ok(bytes) if !bytes.is_empty() => {
                    if let Err(e) = write.write_all(&bytes).await {
                        result = Err(ControlError::Io(e));
                        break;
                    }
                    offset += bytes.len() as u64;
                }
                Ok(_) => {
                    result = Err(ControlError::Protocol(format!(
                        "{shown}: shorter than {size} bytes"
                    )));
                    break;
                }
                Err(e) => {
                    result = Err(ControlError::Protocol(format!("{shown}: {e}")));
                    break;
                }
            }
        }
        let mount = self.mount.clone();
        let _ = tokio::task::spawn_blocking(move || mount.release(fh)).await;
        result?;
        write.flush().await?;
        Ok(())
    }

    async fn locate(&self, path: &str) -> Reply {
        let mount = self.mount.clone();
        let p = path.to_string();
        let ids = match tokio::task::spawn_blocking(move || mount.file_chunks(&p)).await {
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
        let Some(places) = crate::cluster::survey::locate(router, ids).await else {
            return io_error(format!("{path}: task failed"));
        };
        let ids = |peers: Vec<libp2p::PeerId>| -> Vec<String> {
            peers.iter().map(|p| p.to_string()).collect()
        };
        let labels = self.cluster.labels();
        let label = |ids: &[String]| -> Vec<String> {
            ids.iter()
                .map(|id| labels.get(id).cloned().unwrap_or_else(|| short_id(id)))
                .collect()
        };
        let chunks = places
            .into_iter()
            .map(|place| {
                let connections = place
                    .owners
                    .iter()
                    .chain(&place.holders.proven)
                    .chain(&place.holders.unverified)
                    .filter_map(|p| {
                        let kinds = crate::node::status::connection_kinds(&self.cluster.net, p);
                        (!kinds.is_empty()).then(|| (p.to_string(), kinds))
                    })
                    .collect();
                let owners = ids(place.owners);
                let holders = ids(place.holders.proven);
                ChunkLocation {
                    connections,
                    id: place.id.to_string(),
                    owner_names: label(&owners),
                    holder_names: label(&holders),
                    owners,
                    copies: holders.len() as u64,
                    holders,
                    unverified: ids(place.holders.unverified),
                }
            })
            .collect();
        Reply::Where {
            path: path.to_string(),
            replicas: router.replicas() as u32,
            chunks,
        }
    }
}

impl ControlService {
    /// Publishes ledger records on the ledger gossip topic (CBOR `Vec<LedgerRecord>`); every
    /// hello carries them too, so a node that misses the message learns them at its next
    /// connection.
    fn publish_records(&self, records: Vec<LedgerRecord>) {
        let mut bytes = Vec::new();
        ciborium::into_writer(&records, &mut bytes).expect("ledger records serialize");
        self.cluster.net.publish(crate::net::Topic::Ledger, bytes);
    }

    fn invite(&self, role: &str, expires_in: Option<u64>) -> Reply {
        let role: NodeRole = match role.parse() {
            Ok(r) => r,
            Err(e) => return io_error(e),
        };
        let local = self.cluster.net.local;
        let addrs = self.cluster.net.advertised_addrs();
        if addrs.is_empty() {
            return io_error("the node listens on no address yet; try again in a moment");
        }
        let expires = expires_in.map(|s| crate::admission::cert::now_unix().saturating_add(s));
        let (founder, secret, made) = match self.gate.make_invite(role, expires) {
            Ok(x) => x,
            Err(e) => return self.refused(e),
        };
        let invite = crate::identity::Invite {
            network_key: self.network_key.clone(),
            bootstrap: addrs.iter().map(|a| format!("{a}/p2p/{local}")).collect(),
            inviter: local.to_string(),
            expires,
            certified: Some(crate::identity::CertifiedInvite {
                founder,
                secret,
                role: role.as_str().to_string(),
            }),
        };
        Reply::Invite {
            token: invite.encode(),
            id: made.id_hex(),
        }
    }

    fn invites(&self) -> Reply {
        if self.gate.mode() == Mode::KeyOnly {
            return io_error(GateError::KeyOnly);
        }
        Reply::Invites {
            invites: invite_rows(&self.gate.invites(), crate::admission::cert::now_unix()),
        }
    }

    fn revoke_invite(&self, id: &str) -> Reply {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return io_error(format!(
                "{id:?} is not an invite id (at least 4 hex digits, as `p2pfs-ctl invites` shows)"
            ));
        }
        match self.gate.revoke_invite(&id) {
            Ok(0) => io_error(format!("no unused invite has an id starting with {id}")),
            Ok(n) => Reply::Done {
                message: format!(
                    "revoked {n} invite{}: it admits no one now",
                    if n == 1 { "" } else { "s" }
                ),
            },
            Err(e) => io_error(e),
        }
    }

    fn members(&self) -> Reply {
        if self.gate.mode() == Mode::KeyOnly {
            return io_error(GateError::KeyOnly);
        }
        let states: std::collections::HashMap<String, String> = self
            .cluster
            .membership
            .read()
            .members()
            .map(|m| (m.peer.to_string(), m.state.as_str().to_string()))
            .collect();
        Reply::Members {
            members: member_rows(&self.gate.ledger(), &states, &self.cluster.net.local),
        }
    }

    /// Resolves a node named in a request; `Err` is the reply to send.
    fn target(&self, given: &str, users: bool) -> Result<Target, Reply> {
        if self.gate.mode() == Mode::KeyOnly {
            return Err(io_error(GateError::KeyOnly));
        }
        resolve(&self.gate.ledger(), given, users).map_err(|message| Reply::NoSuchNode { message })
    }

    fn expel(&self, given: &str) -> Reply {
        let peer = match self.target(given, false) {
            Ok(Target::Node(p)) => p,
            Ok(Target::User(_)) => unreachable!("users are not resolved here"),
            Err(reply) => return reply,
        };
        let ledger = self.gate.ledger();
        let label = label_of(&ledger, &peer);
        if ledger.is_revoked(&peer) {
            return io_error(format!("{label} ({peer}) was expelled already"));
        }
        let revocation = match self.gate.expel(&peer) {
            Ok(r) => r,
            Err(e) => return self.refused(e),
        };
        let rotated = self.gate.rotate_network_key();
        let mut records = vec![LedgerRecord::Revocation(revocation)];
        // With its certificate, so that every node knows whose user lost access (the volume
        // owners' nodes re-key on it) even if the certificate had not reached it yet.
        if let Some(cert) = ledger.cert(&peer) {
            records.insert(0, LedgerRecord::Cert(cert.clone()));
        }
        if let Ok(epoch) = &rotated {
            records.push(LedgerRecord::Epoch(epoch.clone()));
        }
        self.publish_records(records);
        tracing::info!(%peer, name = %label, "node expelled");
        let said = expelled_message(
            &label,
            &peer,
            rotated
                .map(|_| self.gate.ledger().epochs().len())
                .map_err(|e| e.to_string()),
        );
        match said {
            Ok(message) => Reply::Done { message },
            Err(message) => Reply::Error { message },
        }
    }

    /// A gate's refusal as one line; a refusal for not being an admin names the admins by
    /// their nodes.
    fn refused(&self, e: GateError) -> Reply {
        match e {
            GateError::NotAdmin(_) => {
                io_error(GateError::NotAdmin(admins_named(&self.gate.ledger())))
            }
            e => io_error(e),
        }
    }

    fn admin(&self, given: &str, admin: bool) -> Reply {
        let ledger = self.gate.ledger();
        let target = self.target(given, true);
        if target.is_ok() {
            match self.gate.own_cert() {
                None => return io_error(GateError::NotCertified),
                Some(c) if Some(c.body.user) != ledger.root() => {
                    return io_error(GateError::NotFounder);
                }
                Some(_) => {}
            }
        }
        let (user, shown) = match target {
            Ok(Target::User(u)) => (u, format!("user {}", short_user(&u))),
            Ok(Target::Node(p)) => {
                let Some(cert) = ledger.cert(&p) else {
                    return io_error(format!("{p} has no certificate"));
                };
                (
                    cert.body.user,
                    format!("{} (user {})", cert.body.name, short_user(&cert.body.user)),
                )
            }
            Err(reply) => return reply,
        };
        if ledger.is_admin(&user) == admin {
            return Reply::Done {
                message: format!(
                    "{shown} is {} an admin; nothing changed",
                    if admin { "already" } else { "not" }
                ),
            };
        }
        match self.gate.set_admin(user, admin) {
            Ok(grant) => {
                self.publish_records(vec![LedgerRecord::Grant(grant)]);
                Reply::Done {
                    message: if admin {
                        format!("{shown} is an admin now: its nodes may invite and expel")
                    } else {
                        format!("{shown} is no longer an admin; the nodes it admitted stay members")
                    },
                }
            }
            Err(e) => io_error(e),
        }
    }
}

/// The reply to `mkdir` or `symlink` of `shown`.
fn made_reply(made: Result<crate::fs::FsResult<()>, tokio::task::JoinError>, shown: &str) -> Reply {
    match made {
        Ok(Ok(())) => Reply::Done {
            message: format!("made {shown}"),
        },
        Ok(Err(e)) => io_error(format!("{shown}: {e}")),
        Err(e) => io_error(e),
    }
}

/// The attributes of `path` (relative to the mount's root, `/`-separated, any bytes but NUL in
/// a name), as `Mount::resolve` for a path that need not be UTF-8.
fn resolve_bytes(mount: &Mount, path: &[u8]) -> crate::fs::FsResult<crate::fs::Attr> {
    let mut attr = mount.getattr(crate::fs::ROOT_INO)?;
    for part in path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
    {
        if part == b".." {
            return Err(crate::fs::FsError::Invalid);
        }
        attr = mount.lookup(attr.ino, part)?;
    }
    Ok(attr)
}

/// Where a `put` to `path` goes: the directory, the name in it, and the path shown. `path`
/// names a directory when it ends in `/`, is the root, or is an existing directory: the file
/// goes in it as `name`. Otherwise `path`'s parent must be an existing directory.
fn put_target(
    mount: &Mount,
    path: &str,
    name: Option<&str>,
) -> crate::fs::FsResult<(u64, Vec<u8>, String)> {
    use crate::fs::FsError;
    let names_dir = path.trim_start_matches('/').is_empty() || path.ends_with('/');
    match mount.resolve(path) {
        Ok(attr) if attr.kind == crate::namespace::EntryKind::Dir => match name {
            Some(name)
                if !name.is_empty() && !name.contains('/') && name != "." && name != ".." =>
            {
                let dir = path.trim_end_matches('/');
                let shown = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                Ok((attr.ino, name.as_bytes().to_vec(), shown))
            }
            _ => Err(FsError::IsDir),
        },
        Ok(_) if names_dir => Err(FsError::NotDir),
        Err(e) if names_dir => Err(e),
        _ => {
            let (parent, name) = mount.resolve_parent(path)?;
            Ok((parent, name, path.to_string()))
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

/// Serves control connections until the task is dropped, each connection among `workers`.
pub async fn serve(listener: UnixListener, source: Arc<ControlService>, workers: Workers) {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let caller = match stream.peer_cred() {
            Ok(c) if c.uid() == me || c.uid() == 0 => crate::fs::Caller {
                uid: c.uid(),
                gid: c.gid(),
            },
            _ => {
                tracing::warn!("control connection from another user refused");
                continue;
            }
        };
        let source = source.clone();
        workers.spawn(async move {
            if let Err(e) = handle(stream, &source, caller).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    reply: &Reply,
) -> Result<(), ControlError> {
    let mut out = serde_json::to_vec(reply).map_err(|e| ControlError::Protocol(e.to_string()))?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// One request line, at most [`MAX_REQUEST`] bytes; `None` at the end of the stream.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<String>, ControlError> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_REQUEST {
            return Err(ControlError::Protocol("request line too long".into()));
        }
        return Ok(None); // cut off mid-line: the client went away
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ControlError::Protocol("request is not UTF-8".into()))
}

impl ControlService {
    /// The reply to a request that is answered in one line (every request but `leave`, `put`
    /// and `get`, which stream): the control socket and the web dashboard's API answer with it.
    pub async fn answer(&self, request: Request, caller: crate::fs::Caller) -> Reply {
        match request {
            Request::Mkdir { path, mode } => self.mkdir(self.relative(&path), mode, caller).await,
            Request::Symlink { path, target } => {
                self.symlink(self.relative(&path), target, caller).await
            }
            Request::Status => Reply::Status(Box::new(self.status.status().await)),
            Request::Where { path } => self.locate(&self.relative(&path)).await,
            Request::Ls { path } => self.ls(self.relative(&path)).await,
            Request::Rm { path, recursive } => self.rm(self.relative(&path), recursive).await,
            Request::Df => self.df().await,
            Request::Certify { peers } => certify(&self.cluster, peers),
            Request::Purge { path } => {
                super::retention::purge(self.mount.clone(), self.relative(&path)).await
            }
            Request::Retention { set } => {
                super::retention::retention(self.mount.clone(), set).await
            }
            Request::Health => self.health().await,
            Request::Invite { role, expires_in } => self.invite(&role, expires_in),
            Request::Invites => self.invites(),
            Request::InviteRevoke { id } => self.revoke_invite(&id),
            Request::Members => self.members(),
            Request::Expel { node } => self.expel(&node),
            Request::Admin { node, admin } => self.admin(&node, admin),
            Request::Pin { path } => self.pin(&path).await,
            Request::Unpin { path } => self.unpin(&path),
            Request::Pins => self.pins(),
            Request::Conflicts { path } => self.conflicts(&path).await,
            request @ (Request::VolumeList
            | Request::VolumeCreate { .. }
            | Request::VolumeShare { .. }
            | Request::VolumeUnshare { .. }) => {
                let mount = self.mount.clone();
                tokio::task::spawn_blocking(move || volume_command(&mount, request))
                    .await
                    .unwrap_or_else(|e| Reply::Error {
                        message: e.to_string(),
                    })
            }
            Request::Versions { path } => self.versions(self.relative(&path)).await,
            Request::Restore {
                path,
                version,
                at,
                to,
            } => {
                let to = to.map(|t| self.relative(&t));
                self.restore(self.relative(&path), version, at, to).await
            }
            Request::Snapshot { volume, name, at } => {
                super::snapshots::snapshot(self, volume, name, at).await
            }
            Request::Snapshots => super::snapshots::named(self),
            Request::Limit { set, use_config } => self.limits.limit(&self.cluster, set, use_config),
            Request::Pause => {
                let grace = super::limits::ANNOUNCE_GRACE;
                self.limits.pause.pause(&*self.cluster, grace).await
            }
            Request::Resume => self.limits.pause.resume(&*self.cluster).await,
            Request::Web => match &self.web {
                Some(w) => Reply::Web {
                    url: w.url.clone(),
                    login_url: w.login_url.clone(),
                    note: w.note.clone(),
                },
                None => io_error(
                    "this node serves no web dashboard (it was started with --no-web, or `listen` under [web] in config.toml is empty)",
                ),
            },
            Request::Leave | Request::Put { .. } | Request::Get { .. } => Reply::Error {
                message:
                    "bad request: leave, put and get stream; they are not answered in one reply"
                        .into(),
            },
        }
    }
}

async fn handle(
    stream: UnixStream,
    source: &ControlService,
    caller: crate::fs::Caller,
) -> Result<(), ControlError> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(line) = read_request(&mut reader).await? {
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Leave) => {
                source.leave_and_report(&mut write).await?;
                continue;
            }
            Ok(Request::Put {
                path,
                name,
                size,
                mode,
                ready,
            }) => {
                let path = source.relative(&path);
                source
                    .put(
                        path,
                        name,
                        size,
                        mode,
                        ready,
                        caller,
                        &mut reader,
                        &mut write,
                    )
                    .await?
            }
            Ok(Request::Get { path, path_bytes }) => {
                let path = match path_bytes.map(hex::decode) {
                    None => source.relative(&path).into_bytes(),
                    Some(Ok(bytes)) => source.relative_bytes(&bytes),
                    Some(Err(_)) => {
                        send(&mut write, &io_error("bad request: path_bytes is not hex")).await?;
                        continue;
                    }
                };
                source.get(path, &mut write).await?;
                continue;
            }
            Ok(request) => source.answer(request, caller).await,
            Err(e) => Reply::Error {
                message: format!("bad request: {e}"),
            },
        };
        send(&mut write, &reply).await?;
    }
    Ok(())
}

/// `certify`: the plan, or the upgrade of the chosen members (see [`Cluster::certify`]).
fn certify(cluster: &Cluster, peers: Option<Vec<String>>) -> Reply {
    use crate::admission::NodeRole;
    let member =
        |peer: &libp2p::PeerId, name: &str, user: Option<crate::identity::UserId>, role| {
            CertifyMember {
                peer_id: peer.to_string(),
                name: name.to_string(),
                user: user.map(|u| u.to_string()).unwrap_or_default(),
                role: NodeRole::as_str(role).to_string(),
            }
        };
    let (candidates, uncertifiable) = match cluster.certify_candidates() {
        Ok(c) => c,
        Err(e) => return io_error(e),
    };
    let uncertifiable = uncertifiable
        .iter()
        .map(|(peer, name)| member(peer, name, None, NodeRole::Storage))
        .collect();
    let Some(peers) = peers else {
        return Reply::Certify(CertifyReply {
            done: false,
            founder: cluster.config_user().to_string(),
            members: candidates
                .iter()
                .map(|(p, name, user, _, role)| member(p, name, Some(*user), *role))
                .collect(),
            uncertifiable,
        });
    };
    let chosen: Vec<_> = candidates
        .into_iter()
        .filter(|(p, ..)| peers.contains(&p.to_string()))
        .collect();
    match cluster.certify(&chosen) {
        Ok(certs) => Reply::Certify(CertifyReply {
            done: true,
            founder: cluster.config_user().to_string(),
            members: certs
                .iter()
                .filter_map(|c| {
                    Some(member(
                        &c.peer_id()?,
                        &c.body.name,
                        Some(c.body.user),
                        c.body.role,
                    ))
                })
                .collect(),
            uncertifiable,
        }),
        Err(e) => io_error(e),
    }
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
                mount.unshare(&name, &id).map(|removed| match removed {
                    Some(0) => format!(
                        "removed {id} from {name:?}; a new key protects what is written from now on"
                    ),
                    Some(left_out) => format!(
                        "removed {id} from {name:?}; a new key protects what is written from now on; {left_out} of their versions did not fit the volume record and are refused from now on (files they deleted may come back)"
                    ),
                    None => format!("{id} was not a member of {name:?}; nothing changed"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaving node waits for its result to reach every `leave` connection, not longer, and
    /// not forever when one never reads it.
    #[tokio::test]
    async fn leave_result_is_waited_for_by_the_node_until_sent() {
        let signal = LeaveSignal::new();
        let t0 = tokio::time::Instant::now();
        signal.finish(LeaveReport::default()).await;
        assert!(
            t0.elapsed() < std::time::Duration::from_millis(100),
            "no one waits"
        );

        let signal = LeaveSignal::new();
        let waiter = LeaveWaiter::new(&signal.waiting);
        let mut report = signal.report.subscribe();
        let sent = {
            let signal = signal.clone();
            tokio::spawn(async move {
                let t0 = tokio::time::Instant::now();
                signal
                    .finish(LeaveReport {
                        short: 2,
                        ..Default::default()
                    })
                    .await;
                t0.elapsed()
            })
        };
        report.changed().await.unwrap();
        assert_eq!(report.borrow().as_ref().map(|r| r.short), Some(2));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        drop(waiter);
        let waited = sent.await.unwrap();
        assert!(
            (std::time::Duration::from_millis(500)..LEAVE_REPORT_GRACE).contains(&waited),
            "{waited:?}"
        );

        // A waiter that never finishes holds the node back only for the grace period.
        let signal = LeaveSignal::new();
        let _stuck = LeaveWaiter::new(&signal.waiting);
        let t0 = tokio::time::Instant::now();
        signal.finish(LeaveReport::default()).await;
        assert!(t0.elapsed() >= LEAVE_REPORT_GRACE);
    }
}
