//! Where chunks go and come from: [`ChunkRouter`] places each chunk on its R owners by the
//! placement rule over the live membership, proves each copy, fetches chunks from peers, and is
//! the [`RemoteChunks`] the filesystem core writes and reads through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::futures::future::join_all;
use parking_lot::RwLock;

use crate::block::{ChunkId, ChunkStore, StoreError};
use crate::cluster::membership::Membership;
use crate::fs::RemoteChunks;
// Hostile peers: gossip verdicts (see `on_gossip`).
use crate::cluster::placement::{Candidate, Placement};
use crate::rpc::chunk::{ChunkClient, ChunkRpcError, NO_SPACE};
use crate::util::blocking::debug_assert_may_block;

/// Pauses before asking the peers for a chunk again when some could not be reached.
const FETCH_RETRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// A node takes a chunk put to it when fewer than this many times R alive peers rank above it
/// (see [`ChunkRouter::takes_put`]).
pub const PUT_RANKS_PER_REPLICA: usize = 2;

/// The rule of [`ChunkRouter::takes_put`]: fewer than `limit` peers that are `alive` and not
/// `from` rank above `local` in `ranked`.
fn takes_by_rank(
    ranked: &[PeerId],
    local: &PeerId,
    from: &PeerId,
    limit: usize,
    alive: impl Fn(&PeerId) -> bool,
) -> bool {
    ranked
        .iter()
        .take_while(|p| *p != local)
        .filter(|p| *p != from && alive(p))
        .take(limit)
        .count()
        < limit
}

/// A Placement and the candidates (peer, capacity) it was built from.
type PlacementFrom = (Vec<(PeerId, u64)>, Arc<Placement>);

/// Places chunks on their owners and fetches them from peers.
pub struct ChunkRouter {
    pub(super) local: PeerId,
    pub(super) store: Arc<ChunkStore>,
    pub(super) client: ChunkClient,
    pub(super) membership: Arc<RwLock<Membership>>,
    pub(super) replicas: usize,
    /// Bytes offered for chunks: the configured capacity, or 0 for a reader (its certificate
    /// may arrive after start, see `Cluster::apply_own_role`).
    pub(super) capacity: AtomicU64,
    pub(super) rt: tokio::runtime::Handle,
    /// Chunks written with fewer than R copies (too few live nodes, or owners that failed).
    pub(super) under_replicated: AtomicU64,
    /// Wakes the repair loop (a write fell short of R copies, or membership changed).
    pub(super) repair_wanted: Arc<tokio::sync::Notify>,
    /// The last Placement built, with the candidates it was built from (see `placement`).
    pub(super) placement_cache: parking_lot::Mutex<Option<PlacementFrom>>,
    /// Holders that failed to prove a chunk: their claims do not count here for a while.
    pub(super) failed_holders: crate::cluster::audit::FailedHolders,
}

impl ChunkRouter {
    /// (R, live nodes holding chunks, copies a chunk can have now: the lesser of the two).
    pub fn copies_possible(&self) -> (u32, u64, u32) {
        let replicas = self.replicas() as u32;
        let holding = self.placement().holders() as u64;
        (
            replicas,
            holding,
            replicas.min(u32::try_from(holding).unwrap_or(u32::MAX)),
        )
    }

    /// Live peers that place chunks by another rule than this node's (older or newer
    /// versions): while there are any, repair keeps surplus copies (`repair.rs`).
    pub fn peers_on_another_rule(&self) -> usize {
        self.membership.read().peers_on_another_rule()
    }

    /// Placement as it will be once this node is gone (for handing its data off).
    pub fn placement_without_self(&self) -> Placement {
        let mut candidates = self.membership.read().placement_peers();
        crate::cluster::placement::clip_capacities(&mut candidates);
        Placement::new(
            candidates
                .into_iter()
                .map(|(peer, capacity)| Candidate { peer, capacity }),
        )
    }

    /// Owners are computed from this node's view: live members (alive or suspect) and itself,
    /// weighted by their capacities clipped to a multiple of the view's median
    /// ([`crate::cluster::placement::clip_capacities`]). The Placement is rebuilt only when that set
    /// (or a capacity) changed: building one encodes and hashes every member's id (its
    /// placement seed), while every chunk written or read asks for it.
    pub fn placement(&self) -> Arc<Placement> {
        let mut peers = self.membership.read().placement_peers();
        peers.push((self.local, self.capacity()));
        let mut cache = self.placement_cache.lock();
        if let Some((key, placement)) = cache.as_ref()
            && *key == peers
        {
            return placement.clone();
        }
        let mut weights = peers.clone();
        crate::cluster::placement::clip_capacities(&mut weights);
        let placement = Arc::new(Placement::new(
            weights
                .into_iter()
                .map(|(peer, capacity)| Candidate { peer, capacity }),
        ));
        *cache = Some((peers, placement.clone()));
        placement
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Whether this node takes a chunk `from` puts: it holds it already, or it is among the
    /// first [`PUT_RANKS_PER_REPLICA`] × R in rank for the chunk in its own view, counting
    /// above it only the peers that are alive here and are not `from`. The slack covers a
    /// writer that fell back past owners that failed (they turn suspect here within seconds,
    /// and stop counting), a leaving node handing its copies to the next in rank (it does not
    /// count), repair pushes to owners by a view that differs by a few members, and readers
    /// (capacity 0, ranked last) in a network of at most that many holders. A node whose view
    /// lacks members (one just joined) ranks itself higher, never lower, so it refuses less.
    pub fn takes_put(&self, from: &PeerId, id: &ChunkId) -> bool {
        if self.store.contains(id) {
            return true;
        }
        let ranked = self.placement().ranked(id);
        let membership = self.membership.read();
        takes_by_rank(
            &ranked,
            &self.local,
            from,
            PUT_RANKS_PER_REPLICA * self.replicas,
            |p| {
                membership
                    .get(p)
                    .is_some_and(|m| m.state == crate::cluster::membership::PeerState::Alive)
            },
        )
    }

    /// Bytes this node offers for chunks (its placement weight).
    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Whether `peer` is alive in the view now. Repair plans with the view at the start of a
    /// pass; a peer that has gone quiet (or dead, or left) since is not waited on.
    pub fn is_alive(&self, peer: &PeerId) -> bool {
        self.membership
            .read()
            .get(peer)
            .is_some_and(|m| m.state == crate::cluster::membership::PeerState::Alive)
    }

    /// Holders that failed to prove they hold a chunk, recently ([`crate::cluster::audit`]).
    pub fn failed_holders(&self) -> &crate::cluster::audit::FailedHolders {
        &self.failed_holders
    }

    /// `ranked` with quiet peers (suspect, offline, paused), and holders that failed a proof, moved to the end (order
    /// otherwise kept): a peer that has gone quiet is tried only after every responsive one,
    /// so a cut-off owner costs a writer or a reader nothing once membership has noticed it,
    /// and a writer's copies go to nodes that have not been caught lying.
    fn responsive_first(&self, ranked: Vec<PeerId>) -> Vec<PeerId> {
        let membership = self.membership.read();
        let (mut responsive, suspect): (Vec<PeerId>, Vec<PeerId>) =
            ranked.into_iter().partition(|p| {
                *p == self.local
                    || (membership.get(p).is_none_or(|m| !m.state.is_quiet())
                        && !self.failed_holders.contains(p))
            });
        responsive.extend(suspect);
        responsive
    }

    /// Fetches a chunk from the peers, owners first, verified against its id. When no peer
    /// had it but some could not be asked (a connection dropped a moment ago: a missed ping
    /// under load closes it, and it is dialed again within seconds), it asks again, twice,
    /// before the reader gets EIO.
    pub async fn fetch_async(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        for pause in FETCH_RETRY_PAUSES.iter().map(Some).chain([None]) {
            let mut unreachable = 0;
            let peers: Vec<PeerId> = self
                .responsive_first(self.placement().ranked(id))
                .into_iter()
                .filter(|p| *p != self.local)
                .collect();
            for peer in &peers {
                match self.client.get(*peer, *id).await {
                    Ok(Some(data)) => return Ok(data),
                    Ok(None) => {}
                    Err(e) => {
                        unreachable += 1;
                        tracing::debug!(%peer, chunk = %id, error = %e, "fetch failed; trying the next peer")
                    }
                }
            }
            match pause {
                Some(pause) if unreachable > 0 => tokio::time::sleep(*pause).await,
                _ => break,
            }
        }
        Err(StoreError::Missing(*id))
    }

    /// Chunks written with fewer than R copies since start (repair then restores them).
    pub fn written_under_replicated(&self) -> u64 {
        self.under_replicated.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn local(&self) -> PeerId {
        self.local
    }

    pub fn client(&self) -> &ChunkClient {
        &self.client
    }

    pub fn repair_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.repair_wanted.clone()
    }

    /// Stores one copy; the error says whether the holder's disk was full. This node's own copy
    /// is written on the calling thread when the future is first polled: `replicate` (which
    /// checks that its thread may block) runs it under `block_on` on a seal thread, never a
    /// runtime worker, and this spares a copy of the chunk for a blocking task.
    async fn put_one(
        &self,
        peer: PeerId,
        id: ChunkId,
        ciphertext: &[u8],
    ) -> Result<(), (bool, String)> {
        if peer == self.local {
            // A panic stays this copy's failure (as it was on a blocking task), rather than
            // ending the seal thread with the chunk's writer waiting on it.
            let put = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.store.put(&id, ciphertext)
            }));
            match put {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err((e.is_no_space(), e.to_string())),
                Err(_) => Err((false, "storing the chunk panicked".into())),
            }
        } else {
            self.client.put(peer, id, ciphertext).await.map_err(|e| {
                if let ChunkRpcError::BadProof(..) = e {
                    self.failed_holders.failed(peer);
                }
                (
                    matches!(&e, ChunkRpcError::Refused(_, why) if why == NO_SPACE),
                    e.to_string(),
                )
            })
        }
    }
}

impl crate::rpc::chunk::PutPolicy for ChunkRouter {
    fn takes(&self, from: &PeerId, id: &ChunkId) -> bool {
        self.takes_put(from, id)
    }
}

/// Blocks the calling thread on the node's runtime (see [`RemoteChunks`]); each method checks
/// first, in debug builds, that the thread does not run async tasks.
impl RemoteChunks for ChunkRouter {
    fn replicate(&self, id: &ChunkId, ciphertext: &[u8]) -> Result<(), StoreError> {
        debug_assert_may_block();
        let placement = self.placement();
        // Copies go to holders; a reader node (capacity 0) is ranked last and takes a copy
        // only when every holder failed.
        let want = self.replicas.min(placement.holders()).max(1);
        let ranked = self.responsive_first(placement.ranked(id));
        self.rt.block_on(async {
            // The owners first, in parallel; an owner that fails is replaced by the next in
            // rank (repair moves the copy back when the owner returns).
            let mut copies = 0;
            let mut next = 0;
            let mut last_error = None;
            let mut all_full = true;
            while copies < want && next < ranked.len() {
                let mut batch: Vec<PeerId> = ranked[next..].iter().take(want - copies).copied().collect();
                // This node's copy last, so the peers' requests are on their way while it is
                // written (see `put_one`).
                batch.sort_by_key(|p| *p == self.local);
                next += batch.len();
                for (peer, result) in batch.iter().zip(join_all(batch.iter().map(|p| self.put_one(*p, *id, ciphertext))).await) {
                    match result {
                        Ok(()) => copies += 1,
                        Err((full, e)) => {
                            tracing::warn!(%peer, chunk = %id, error = %e, "could not store a chunk copy");
                            all_full &= full;
                            last_error = Some(e);
                        }
                    }
                }
            }
            if copies == 0 && all_full && last_error.is_some() {
                // Every holder is full: the writer gets ENOSPC, as from a local disk.
                return Err(StoreError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            if copies == 0 {
                let why = last_error.unwrap_or_else(|| "no live node".into());
                return Err(StoreError::Io(std::io::Error::other(format!("no copy of chunk {id} could be stored: {why}"))));
            }
            if copies < self.replicas {
                self.under_replicated.fetch_add(1, Ordering::Relaxed);
                self.repair_wanted.notify_one();
            }
            Ok(())
        })
    }

    fn fetch(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        debug_assert_may_block();
        self.rt.block_on(self.fetch_async(id))
    }

    /// Asks every owner of `ids` (and this node, when it holds any) to flush its store. An
    /// owner that cannot be reached is logged and skipped (repair restores its copy); the
    /// call fails only when no holder flushed.
    fn sync(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        debug_assert_may_block();
        let placement = self.placement();
        let mut holders: std::collections::BTreeSet<PeerId> = ids
            .iter()
            .flat_map(|id| placement.owners(id, self.replicas))
            .collect();
        if ids.iter().any(|id| self.store.contains(id)) {
            holders.insert(self.local);
        }
        self.rt.block_on(async {
            let results = join_all(holders.iter().map(|peer| async move {
                if *peer == self.local {
                    let store = self.store.clone();
                    match tokio::task::spawn_blocking(move || store.sync()).await {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    self.client.sync(*peer).await.map_err(|e| e.to_string())
                }
            }))
            .await;
            let mut flushed = 0;
            let mut last_error = None;
            for (peer, result) in holders.iter().zip(results) {
                match result {
                    Ok(()) => flushed += 1,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "an owner could not flush its chunks to disk");
                        last_error = Some(e);
                    }
                }
            }
            match last_error {
                Some(e) if flushed == 0 => Err(StoreError::Io(std::io::Error::other(format!(
                    "no holder could flush the chunks to disk: {e}"
                )))),
                _ => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_taken_within_twice_r_alive_peers_above_not_counting_the_sender() {
        let ranked: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        let all_alive = |_: &PeerId| true;
        let outsider = PeerId::random();
        // R = 2: the first four in rank take it, the fifth does not.
        assert!(takes_by_rank(&ranked, &ranked[3], &outsider, 4, all_alive));
        assert!(!takes_by_rank(&ranked, &ranked[4], &outsider, 4, all_alive));
        // The sender ranked above does not count (a leaving node handing its copy on).
        assert!(takes_by_rank(&ranked, &ranked[4], &ranked[0], 4, all_alive));
        // Peers above that are not alive here (owners a writer fell back past) do not count.
        let down = [ranked[0], ranked[1], ranked[2]];
        assert!(takes_by_rank(&ranked, &ranked[6], &outsider, 4, |p| {
            !down.contains(p)
        }));
        assert!(!takes_by_rank(&ranked, &ranked[7], &outsider, 4, |p| {
            !down.contains(p)
        }));
        // A node not in the ranking at all (it holds no capacity and the ranking was cut)
        // counts every alive peer above it.
        assert!(!takes_by_rank(&ranked, &outsider, &ranked[0], 4, all_alive));
    }
}
