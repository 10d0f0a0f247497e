//! Garbage collection: deleted and overwritten data leaves every node (once its retention, if
//! any, has passed: the pass drops expired kept versions first, see `namespace::history`).
//!
//! Chunk ids travel in clear in every entry, and every node keeps the whole namespace with a
//! count of the live entries referencing each chunk, so each node decides alone which of its
//! chunks are garbage: a stored chunk no live entry references, for a whole grace period by
//! this node's watch, and not written (or written again) within it. The grace period covers
//! entries still on their way: a writer stores chunks before it commits the entry that names
//! them (an open file is committed at least every third of the period, see
//! [`Mount::checkpoint`](crate::fs::Mount::checkpoint)), and a chunk written again by a new file is touched by the store.
//!
//! Deletions leave tombstones; a tombstone expires once every member has it. Its leader (the
//! first of the live members by rendezvous on the entry id) hands it to every member with
//! "store, then forget"; each keeps it in a small table outside the synced namespace, enough
//! to refuse (and answer with the tombstone) a stale version a returning node brings back.
//!
//! Nothing is deleted and nothing expires while some member is suspect, dead or leaving: the
//! unreachable side of a partition may still write versions that reference those chunks or
//! revive a deleted file with a concurrent modify. That wait is bounded, so no member can hold
//! deletion back forever: a leave lasts at most `leave_timeout` (then the member is dead,
//! whatever it keeps announcing), and a member down for `forget_after` no longer counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::block::ChunkId;
use crate::cluster::ChunkRouter;
use crate::cluster::membership::{Membership, PeerState};
use crate::fs::Mount;
use crate::namespace::Entry;
use crate::net::NetHandle;
use crate::rpc::sync;
use crate::util::hlc::Hlc;

pub struct GcConfig {
    /// How long a chunk stays unreferenced (and a tombstone waits) before it goes.
    pub grace: Duration,
    /// `storage.capacity_bytes` (0: the disk's size bounds it).
    pub capacity_bytes: u64,
    /// `storage.min_free_percent`: below this much free disk, kept versions give way.
    pub min_free_percent: u8,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Stored chunks no live entry references (collected or waiting for the grace period).
    pub unreferenced: usize,
    pub deleted_chunks: usize,
    pub expired_tombstones: usize,
    /// Whether every member was alive (collection and expiry run only then).
    pub healthy: bool,
    /// Versions kept for retention, in all volumes (see `namespace::history`).
    pub kept_versions: u64,
    /// Kept versions that passed their retention and were dropped by this pass.
    pub expired_versions: u64,
    /// Chunks stored here that only kept versions reference, and their bytes on disk: what
    /// retention costs this node.
    pub retained_chunks: u64,
    pub retained_bytes: u64,
}

pub struct Gc {
    router: Arc<ChunkRouter>,
    mount: Arc<Mount>,
    membership: Arc<RwLock<Membership>>,
    /// Reaches the members for tombstone expiry.
    net: NetHandle,
    config: GcConfig,
    capacity_bytes: u64,
    /// When each stored chunk was first seen unreferenced (reset when it is referenced again;
    /// lost on restart, which only delays collection).
    unreferenced_since: Mutex<HashMap<ChunkId, Instant>>,
    deleted_chunks: AtomicU64,
    last: Mutex<GcReport>,
    /// Passes completed since start (tests wait on it).
    passes: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A rendezvous key for an entry id, so placement picks the leader of its expiry.
fn leader_key(entry: &Entry) -> ChunkId {
    ChunkId(blake3::derive_key("p2pfs tombstone leader v1", &entry.id.0))
}

impl Gc {
    pub fn new(
        router: Arc<ChunkRouter>,
        mount: Arc<Mount>,
        membership: Arc<RwLock<Membership>>,
        net: NetHandle,
        config: GcConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            router,
            mount,
            membership,
            net,
            capacity_bytes: config.capacity_bytes,
            config,
            unreferenced_since: Mutex::new(HashMap::new()),
            deleted_chunks: AtomicU64::new(0),
            last: Mutex::new(GcReport::default()),
            passes: AtomicU64::new(0),
        })
    }

    pub fn grace(&self) -> Duration {
        self.config.grace
    }

    /// What the last pass found.
    pub fn last(&self) -> GcReport {
        *self.last.lock()
    }

    /// Chunks deleted since start.
    pub fn deleted_chunks(&self) -> u64 {
        self.deleted_chunks.load(Ordering::Relaxed)
    }

    /// Collection passes completed since start.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Runs until its task is cancelled: a checkpoint of open files every third of the grace
    /// period, and a collection pass every half.
    pub async fn run(self: Arc<Self>) {
        let third = (self.config.grace / 3).max(Duration::from_millis(500));
        let mut checkpoint = tokio::time::interval(third);
        let mut pass = tokio::time::interval((self.config.grace / 2).max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = checkpoint.tick() => {
                    let mount = self.mount.clone();
                    let _ = tokio::task::spawn_blocking(move || mount.checkpoint()).await;
                }
                _ = pass.tick() => {
                    let report = self.pass().await;
                    if report.deleted_chunks > 0
                        || report.expired_tombstones > 0
                        || report.expired_versions > 0
                    {
                        tracing::info!(
                            deleted_chunks = report.deleted_chunks,
                            expired_tombstones = report.expired_tombstones,
                            expired_versions = report.expired_versions,
                            "garbage collected"
                        );
                    }
                }
            }
        }
    }

    /// Whether no member holds collection back: every member in the view is alive, left
    /// gracefully, or has been down (suspect, dead, leaving) for `forget_after` already
    /// ([`Membership::holds_back_gc`]).
    fn healthy(&self) -> bool {
        let now = Instant::now();
        let view = self.membership.read();
        view.members().all(|m| !view.holds_back_gc(m, now))
    }

    pub async fn pass(&self) -> GcReport {
        let healthy = self.healthy();
        // Retention is this node's own clock against its own policy: it runs in any weather.
        // What it releases is collected below like any unreferenced chunk.
        let (mut expired_versions, kept_versions) = self.expire_history().await;
        expired_versions += self.give_back_space().await;
        let (unreferenced, deleted_chunks, (retained_chunks, retained_bytes)) =
            self.collect_chunks(healthy).await;
        let expired_tombstones = if healthy {
            self.expire_tombstones().await
        } else {
            0
        };
        let report = GcReport {
            unreferenced,
            deleted_chunks,
            expired_tombstones,
            healthy,
            kept_versions,
            expired_versions,
            retained_chunks,
            retained_bytes,
        };
        *self.last.lock() = report;
        self.passes.fetch_add(1, Ordering::Relaxed);
        report
    }

    /// When the disk holding the chunks runs short (under `storage.min_free_percent` free) or
    /// this node stores more than 95% of its configured capacity, drops the versions kept
    /// longest, whatever their retention, until the chunks only they held would give back the
    /// difference: kept versions never take the room live data needs, and a writer who fills
    /// the network with versions cannot make a full disk last for the whole retention. Their
    /// chunks then go by the usual rules (after the grace period). Returns how many went.
    async fn give_back_space(&self) -> u64 {
        let (store, mount) = (self.router.store().clone(), self.mount.clone());
        let capacity = self.capacity_bytes;
        let min_free_percent = self.config.min_free_percent;
        let done = tokio::task::spawn_blocking(move || {
            // What must be given back: the bytes over 95% of the configured capacity, or
            // (disk short) enough to bring free space back to `min_free_percent`; less
            // what unreferenced chunks (collected within the grace period) will free anyway.
            let listed = store.list().unwrap_or_default();
            let ids: Vec<ChunkId> = listed.iter().map(|(id, _)| *id).collect();
            let referenced = mount.namespace().referenced(&ids)?;
            let (live, garbage) = listed.iter().zip(&referenced).fold(
                (0u64, 0u64),
                |(live, garbage), ((_, size), r)| {
                    if *r {
                        (live + size, garbage)
                    } else {
                        (live, garbage + size)
                    }
                },
            );
            let over_capacity = if capacity > 0 {
                live.saturating_sub(capacity / 20 * 19)
            } else {
                0
            };
            let disk_short = store
                .space_short_by(min_free_percent)
                .saturating_sub(garbage);
            let owed = over_capacity.max(disk_short);
            if owed == 0 {
                return Ok(0);
            }
            let (dropped, _) = mount
                .namespace()
                .drop_oldest_history(owed, |id| store.size_of(id))?;
            if dropped > 0 {
                tracing::warn!(dropped, "space is short: the oldest kept versions were dropped before their retention ended");
            }
            Ok::<_, crate::namespace::NamespaceError>(dropped)
        })
        .await;
        match done {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "kept versions cannot be dropped");
                0
            }
            Err(_) => 0,
        }
    }

    /// Drops kept versions past their retention. Returns how many went, and how many stay.
    async fn expire_history(&self) -> (u64, u64) {
        let mount = self.mount.clone();
        let done = tokio::task::spawn_blocking(move || {
            let ns = mount.namespace();
            let before = ns.history_len()?;
            ns.expire_history(now_ms())?;
            let after = ns.history_len()?;
            Ok::<_, crate::namespace::NamespaceError>((before.saturating_sub(after), after))
        })
        .await;
        match done {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "kept versions cannot be expired");
                (0, 0)
            }
            Err(_) => (0, 0),
        }
    }

    /// Returns the unreferenced chunks found, those deleted, and the chunks (and bytes) held
    /// only for kept versions.
    async fn collect_chunks(&self, healthy: bool) -> (usize, usize, (u64, u64)) {
        let (store, mount) = (self.router.store().clone(), self.mount.clone());
        let found = tokio::task::spawn_blocking(move || {
            let (held, sizes): (Vec<ChunkId>, Vec<u64>) = store.list()?.into_iter().unzip();
            let ns = mount.namespace();
            let referenced = ns.referenced(&held).map_err(std::io::Error::other)?;
            let retained = ns
                .kept_only_for_history(&held)
                .map_err(std::io::Error::other)?;
            let retained = retained
                .iter()
                .zip(&sizes)
                .filter(|(r, _)| **r)
                .fold((0u64, 0u64), |(n, b), (_, size)| (n + 1, b + size));
            let pending = mount.pending_chunks();
            Ok::<_, std::io::Error>((
                held.into_iter()
                    .zip(referenced)
                    .filter(|(id, r)| !r && !pending.contains(id))
                    .map(|(id, _)| id)
                    .collect::<Vec<ChunkId>>(),
                retained,
            ))
        })
        .await;
        let (garbage, retained) = match found {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "garbage collection cannot list chunks");
                return (0, 0, (0, 0));
            }
            Err(_) => return (0, 0, (0, 0)),
        };
        let now = Instant::now();
        let due: Vec<ChunkId> = {
            let mut since = self.unreferenced_since.lock();
            let keep: std::collections::HashSet<ChunkId> = garbage.iter().copied().collect();
            since.retain(|id, _| keep.contains(id));
            garbage
                .iter()
                .filter(|id| {
                    let first = *since.entry(**id).or_insert(now);
                    now.duration_since(first) >= self.config.grace
                })
                .copied()
                .collect()
        };
        if !healthy || due.is_empty() {
            return (garbage.len(), 0, retained);
        }
        let (store, mount, grace) = (
            self.router.store().clone(),
            self.mount.clone(),
            self.config.grace,
        );
        let deleted = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for id in due {
                // Checked again right before deleting: a new entry may reference it by now,
                // or a writer may have stored it again.
                let written_recently = store
                    .modified(&id)
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_none_or(|age| age < grace);
                let referenced = mount
                    .namespace()
                    .referenced(&[id])
                    .map(|r| r[0])
                    .unwrap_or(true);
                if written_recently || referenced || mount.pending_chunks().contains(&id) {
                    continue;
                }
                match store.delete(&id) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        tracing::warn!(chunk = %id, error = %e, "cannot delete a garbage chunk")
                    }
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        self.deleted_chunks
            .fetch_add(deleted as u64, Ordering::Relaxed);
        (garbage.len(), deleted, retained)
    }

    /// Expires the tombstones older than the grace period that this node leads, once every
    /// alive member has taken them.
    async fn expire_tombstones(&self) -> usize {
        let now_ms = now_ms();
        let horizon = Hlc(now_ms.saturating_sub(self.config.grace.as_millis() as u64) << 16);
        let mount = self.mount.clone();
        let Ok(Ok(old)) =
            tokio::task::spawn_blocking(move || mount.namespace().tombstones(horizon)).await
        else {
            return 0;
        };
        let placement = self.router.placement();
        let local = self.router.local();
        let mine: Vec<Entry> = old
            .into_iter()
            .filter(|t| placement.owners(&leader_key(t), 1).first() == Some(&local))
            .collect();
        if mine.is_empty() {
            return 0;
        }
        let peers: Vec<_> = self
            .membership
            .read()
            .members()
            .filter(|m| m.state == PeerState::Alive)
            .map(|m| m.peer)
            .collect();
        for peer in peers {
            if let Err(e) = sync::expire(&self.net, peer, &mine).await {
                tracing::debug!(%peer, error = %e, "tombstone expiry postponed: a member did not take them");
                return 0;
            }
        }
        let mount = self.mount.clone();
        tokio::task::spawn_blocking(move || mount.expire(mine))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }
}
