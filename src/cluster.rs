//! The cluster: what turns one node into a network. It keeps the membership view from gossiped
//! announcements, places chunks on their owners ([`ChunkRouter`], the [`RemoteChunks`] the
//! filesystem core writes and reads through), spreads committed entries by gossip and runs
//! anti-entropy with peers. It talks to libp2p only through [`NetHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::futures::future::join_all;
use libp2p::{Multiaddr, PeerId};
use parking_lot::RwLock;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::block::{ChunkId, ChunkStore, StoreError};
use crate::fs::{Mount, RemoteChunks};
use crate::membership::{
    AnnouncedState, Announcement, LivenessConfig, Membership, MembershipEvent, parse_addrs,
};
use crate::namespace::Entry;
use crate::net::{MAX_GOSSIP, NetEvent, NetEvents, NetHandle, Topic};
// Hostile peers: gossip verdicts (see `on_gossip`).
use crate::net::guard::Offence;
use crate::net::{GossipId, Verdict};
use crate::placement::{Candidate, Placement};
use crate::rpc::chunk::{ChunkClient, ChunkRpcError, NO_SPACE};
use crate::rpc::sync;

pub struct ClusterConfig {
    pub replicas: usize,
    /// Liveness thresholds and the announce interval (both stretched in a large network:
    /// [`Membership::announce_period`]).
    pub liveness: LivenessConfig,
    pub sync_every: Duration,
    /// Bytes this node offers for chunks (its placement weight).
    pub capacity: u64,
}

/// Namespace gossip: entries as committed, or (for a batch too large for a gossip message) a
/// hint to sync with the sender.
#[derive(Debug, Serialize, Deserialize)]
pub enum NamespaceGossip {
    Entries(Vec<Entry>),
    SyncWithMe,
}

/// Decodes a membership gossip message: untrusted bytes from any member (fuzzed, `fuzz/`).
pub fn decode_announcement(data: &[u8]) -> Option<Announcement> {
    ciborium::from_reader(data).ok()
}

/// Decodes a namespace gossip message: untrusted bytes from any member (fuzzed, `fuzz/`).
pub fn decode_namespace_gossip(data: &[u8]) -> Option<NamespaceGossip> {
    ciborium::from_reader(data).ok()
}

/// How often the connections are topped up (see `redial_members`).
const REDIAL_EVERY: Duration = Duration::from_secs(3);
/// Connections a node opens on its own to stay part of the gossip mesh: enough for
/// gossipsub's mesh (6) with a margin. Others come from peers dialing in and from chunk
/// transfers; past `net::MAX_CONNECTED_PEERS` the unused ones are closed, so a node's
/// connection count, and with it its ping and gossip traffic, stays flat however large the
/// network.
pub const PEERS_TARGET: usize = 8;
/// Committed entries are gossiped at most this often (batched), and a newcomer is answered
/// with an announcement at most this often: see `run`.
const GOSSIP_PACE: Duration = Duration::from_millis(50);
const SUBSCRIBED_ANNOUNCE_PACE: Duration = Duration::from_millis(500);

/// The pace of answers to peers already alive in `view` (see `Cluster::run`): under the
/// periodic rate, so they never outnumber the announcements themselves.
fn known_peer_answer_pace(view: &Membership) -> Duration {
    SUBSCRIBED_ANNOUNCE_PACE.max(view.announce_period() / 2)
}

/// Announcements made to answer peers that may not know this node (see `Cluster::run`):
/// at most one per pace; requests within it get one more announcement at its end (an
/// announcement reaches every subscribed peer, so one answers them all).
#[derive(Default)]
struct Answers {
    last: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
}

impl Answers {
    /// Asks, at `now`, for an answer at most `pace` after the last one: true when it is to be
    /// sent now; otherwise it is scheduled (`due`) for the end of the pace.
    fn request(&mut self, now: tokio::time::Instant, pace: Duration) -> bool {
        match self.last {
            Some(t) if now < t + pace => {
                let due = t + pace;
                self.due = Some(self.due.map_or(due, |d| d.min(due)));
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// The scheduled answer is being sent, at `now`.
    fn sent_scheduled(&mut self, now: tokio::time::Instant) {
        self.due = None;
        self.last = Some(now);
    }
}

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
    local: PeerId,
    store: Arc<ChunkStore>,
    client: ChunkClient,
    membership: Arc<RwLock<Membership>>,
    replicas: usize,
    capacity: u64,
    rt: tokio::runtime::Handle,
    /// Chunks written with fewer than R copies (too few live nodes, or owners that failed).
    under_replicated: AtomicU64,
    /// Wakes the repair loop (a write fell short of R copies, or membership changed).
    repair_wanted: Arc<tokio::sync::Notify>,
    /// The last Placement built, with the candidates it was built from (see `placement`).
    placement_cache: parking_lot::Mutex<Option<PlacementFrom>>,
    /// Holders that failed to prove a chunk: their claims do not count here for a while.
    failed_holders: crate::audit::FailedHolders,
}

impl ChunkRouter {
    /// Live peers that place chunks by another rule than this node's (older or newer
    /// versions): while there are any, repair keeps surplus copies (`repair.rs`).
    pub fn peers_on_another_rule(&self) -> usize {
        self.membership.read().peers_on_another_rule()
    }

    /// Placement as it will be once this node is gone (for handing its data off).
    pub fn placement_without_self(&self) -> Placement {
        let mut candidates = self.membership.read().placement_peers();
        crate::placement::clip_capacities(&mut candidates);
        Placement::new(
            candidates
                .into_iter()
                .map(|(peer, capacity)| Candidate { peer, capacity }),
        )
    }

    /// Owners are computed from this node's view: live members (alive or suspect) and itself,
    /// weighted by their capacities clipped to a multiple of the view's median
    /// ([`crate::placement::clip_capacities`]). The Placement is rebuilt only when that set
    /// (or a capacity) changed: building one encodes and hashes every member's id (its
    /// placement seed), while every chunk written or read asks for it.
    pub fn placement(&self) -> Arc<Placement> {
        let mut peers = self.membership.read().placement_peers();
        peers.push((self.local, self.capacity));
        let mut cache = self.placement_cache.lock();
        if let Some((key, placement)) = cache.as_ref()
            && *key == peers
        {
            return placement.clone();
        }
        let mut weights = peers.clone();
        crate::placement::clip_capacities(&mut weights);
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
                    .is_some_and(|m| m.state == crate::membership::PeerState::Alive)
            },
        )
    }

    /// Bytes this node offers for chunks (its placement weight).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `peer` is alive in the view now. Repair plans with the view at the start of a
    /// pass; a peer that has gone quiet (or dead, or left) since is not waited on.
    pub fn is_alive(&self, peer: &PeerId) -> bool {
        self.membership
            .read()
            .get(peer)
            .is_some_and(|m| m.state == crate::membership::PeerState::Alive)
    }

    /// Holders that failed to prove they hold a chunk, recently ([`crate::audit`]).
    pub fn failed_holders(&self) -> &crate::audit::FailedHolders {
        &self.failed_holders
    }

    /// `ranked` with suspect peers, and holders that failed a proof, moved to the end (order
    /// otherwise kept): a peer that has gone quiet is tried only after every responsive one,
    /// so a cut-off owner costs a writer or a reader nothing once membership has noticed it,
    /// and a writer's copies go to nodes that have not been caught lying.
    fn responsive_first(&self, ranked: Vec<PeerId>) -> Vec<PeerId> {
        let membership = self.membership.read();
        let (mut responsive, suspect): (Vec<PeerId>, Vec<PeerId>) =
            ranked.into_iter().partition(|p| {
                *p == self.local
                    || (membership
                        .get(p)
                        .is_none_or(|m| m.state != crate::membership::PeerState::Suspect)
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

    /// Stores one copy; the error says whether the holder's disk was full.
    async fn put_one(
        &self,
        peer: PeerId,
        id: ChunkId,
        ciphertext: &[u8],
    ) -> Result<(), (bool, String)> {
        if peer == self.local {
            let (store, data) = (self.store.clone(), ciphertext.to_vec());
            match tokio::task::spawn_blocking(move || store.put(&id, &data)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err((e.is_no_space(), e.to_string())),
                Err(e) => Err((false, e.to_string())),
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

impl RemoteChunks for ChunkRouter {
    fn replicate(&self, id: &ChunkId, ciphertext: &[u8]) -> Result<(), StoreError> {
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
                let batch: Vec<PeerId> = ranked[next..].iter().take(want - copies).copied().collect();
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
        self.rt.block_on(self.fetch_async(id))
    }

    /// Asks every owner of `ids` (and this node, when it holds any) to flush its store. An
    /// owner that cannot be reached is logged and skipped (repair restores its copy); the
    /// call fails only when no holder flushed.
    fn sync(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
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

pub struct Cluster {
    pub net: NetHandle,
    pub router: Arc<ChunkRouter>,
    pub membership: Arc<RwLock<Membership>>,
    config: ClusterConfig,
    seq: AtomicU64,
    state: parking_lot::Mutex<AnnouncedState>,
    /// Peers this node runs an anti-entropy session with now (see `spawn_sync`).
    syncing: Arc<parking_lot::Mutex<std::collections::HashSet<PeerId>>>,
}

impl Cluster {
    pub fn new(net: NetHandle, store: Arc<ChunkStore>, config: ClusterConfig) -> Arc<Self> {
        let membership = Arc::new(RwLock::new(Membership::new(net.local, config.liveness)));
        let router = Arc::new(ChunkRouter {
            local: net.local,
            store,
            client: ChunkClient::new(net.control.clone()),
            membership: membership.clone(),
            replicas: config.replicas,
            capacity: config.capacity,
            rt: tokio::runtime::Handle::current(),
            under_replicated: AtomicU64::new(0),
            repair_wanted: Arc::new(tokio::sync::Notify::new()),
            placement_cache: parking_lot::Mutex::new(None),
            failed_holders: Default::default(),
        });
        // Announcement numbers start from the clock so a restarted node's are newer.
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Arc::new(Self {
            net,
            router,
            membership,
            config,
            seq: AtomicU64::new(seq),
            state: parking_lot::Mutex::new(AnnouncedState::Alive),
            syncing: Default::default(),
        })
    }

    /// Changes what this node announces (alive, leaving, left) and announces it now.
    pub async fn set_state(&self, state: AnnouncedState) {
        *self.state.lock() = state;
        self.announce().await;
    }

    async fn announce(&self) {
        let state = *self.state.lock();
        let addrs = self.net.listen_addrs();
        let a = Announcement {
            peer: self.net.local.to_bytes(),
            addrs: addrs.iter().map(Multiaddr::to_string).collect(),
            capacity: self.config.capacity,
            free: self.router.store.free_bytes(),
            version: env!("CARGO_PKG_VERSION").into(),
            state,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            knows: self.membership.read().knows(),
            placement_rule: crate::placement::RULE,
        };
        let mut bytes = Vec::new();
        if ciborium::into_writer(&a, &mut bytes).is_ok() {
            self.net.publish(Topic::Membership, bytes);
        }
    }

    fn publish_entries(&self, entries: Vec<Entry>) {
        // Split into gossip-sized messages; an entry too large for any goes by anti-entropy.
        let mut batch: Vec<Entry> = Vec::new();
        let mut size = 0;
        let mut hint = false;
        for e in entries {
            let n = e.payload.len() + e.chunks.len() * 34 + 256;
            if n > MAX_GOSSIP / 2 {
                hint = true;
                continue;
            }
            if size + n > MAX_GOSSIP / 2 && !batch.is_empty() {
                self.gossip(NamespaceGossip::Entries(std::mem::take(&mut batch)));
                size = 0;
            }
            size += n;
            batch.push(e);
        }
        if !batch.is_empty() {
            self.gossip(NamespaceGossip::Entries(batch));
        }
        if hint {
            self.gossip(NamespaceGossip::SyncWithMe);
        }
    }

    fn gossip(&self, msg: NamespaceGossip) {
        let mut bytes = Vec::new();
        if ciborium::into_writer(&msg, &mut bytes).is_ok() {
            self.net.publish(Topic::Namespace, bytes);
        }
    }

    /// Starts an anti-entropy session with `peer`, unless one with it is running already, in
    /// either direction: overlapping sessions (one on connect, one per round, one the peer
    /// started) each re-sent whole buckets, and past the peer's session limit got this node
    /// throttled as a flooder; a million-entry join stalled on it.
    fn spawn_sync(&self, peer: PeerId, core: &Arc<Mount>) {
        use crate::net::guard::StreamKind;
        if self.net.guard.open_streams(&peer, StreamKind::Sync) > 0
            || !self.syncing.lock().insert(peer)
        {
            return;
        }
        struct Running(
            Arc<parking_lot::Mutex<std::collections::HashSet<PeerId>>>,
            PeerId,
        );
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.lock().remove(&self.1);
            }
        }
        let running = Running(self.syncing.clone(), peer);
        let (control, core) = (self.net.control.clone(), core.clone());
        tokio::spawn(async move {
            let _running = running;
            match sync::sync_with(&control, peer, core).await {
                Ok(r) if r.buckets > 0 => {
                    tracing::debug!(%peer, buckets = r.buckets, pulled = r.pulled.applied, pushed = r.pushed, "anti-entropy")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "anti-entropy failed"),
            }
        });
    }

    fn log_membership(&self, events: Vec<MembershipEvent>) {
        if events.iter().any(|e| match e {
            MembershipEvent::Joined(_) => true,
            // Suspects keep their place: moving data for a reboot would be a storm.
            MembershipEvent::StateChanged { to, from, .. } => to.is_live() != from.is_live(),
            MembershipEvent::Forgotten(_) => false,
        }) {
            self.router.repair_wanted.notify_one();
        }
        for e in events {
            match e {
                MembershipEvent::Joined(peer) => tracing::info!(%peer, "peer joined"),
                MembershipEvent::StateChanged { peer, from, to } => {
                    tracing::info!(%peer, from = from.as_str(), to = to.as_str(), "peer state changed")
                }
                MembershipEvent::Forgotten(peer) => tracing::debug!(%peer, "peer forgotten"),
            }
        }
    }

    // ---- Hostile peers: every gossip message gets a verdict (`NetHandle::validated`); only
    // accepted ones are forwarded, and one that does not decode or is invalid is its signed
    // source's offence (`net::guard`), as is an entry whose signature does not verify. ----
    /// Handles one gossip message; true when it is an announcement from a peer that knows
    /// fewer members than this node (see `run`).
    fn on_gossip(
        &self,
        topic: Topic,
        from: PeerId,
        data: Vec<u8>,
        id: GossipId,
        core: &Arc<Mount>,
    ) -> bool {
        match topic {
            Topic::Membership => self.on_announcement(from, &data, id),
            Topic::Namespace => {
                self.on_namespace_gossip(from, &data, id, core);
                false
            }
        }
    }

    fn on_announcement(&self, from: PeerId, data: &[u8], id: GossipId) -> bool {
        let Some(a) = decode_announcement(data) else {
            tracing::debug!(%from, "undecodable announcement dropped");
            self.net
                .validated(id, Verdict::Offence(Offence::InvalidGossip));
            return false;
        };
        // Gossip is signed by its source: a node may only speak for itself.
        if a.peer != from.to_bytes() {
            tracing::debug!(%from, "announcement for another peer dropped");
            self.net
                .validated(id, Verdict::Offence(Offence::InvalidGossip));
            return false;
        }
        let result = self.membership.write().apply(&a, Instant::now());
        match result {
            Ok(events) => {
                self.net.validated(id, Verdict::Accept);
                self.net.add_addresses(from, parse_addrs(&a.addrs));
                self.log_membership(events);
                a.state == AnnouncedState::Alive && self.membership.read().knows_fewer(&from)
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "announcement refused");
                self.net.validated(id, Verdict::Ignore);
                false
            }
        }
    }

    fn on_namespace_gossip(&self, from: PeerId, data: &[u8], id: GossipId, core: &Arc<Mount>) {
        match decode_namespace_gossip(data) {
            Some(NamespaceGossip::Entries(entries)) if entries.is_empty() => {
                self.net.validated(id, Verdict::Ignore)
            }
            Some(NamespaceGossip::Entries(entries)) => {
                // Bounded work in flight: past it, a batch is left to anti-entropy.
                let Some(permit) = self.net.guard.gossip_apply_permit() else {
                    tracing::debug!(%from, "too many gossip batches being applied; one ignored");
                    self.net.validated(id, Verdict::Ignore);
                    return;
                };
                let (core, net) = (core.clone(), self.net.clone());
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let verdict = match sync::apply_from_peer(&core, from, entries) {
                        Ok((_, forged)) if forged > 0 => Verdict::Offence(Offence::ForgedEntry),
                        Ok((r, _)) if r.rejected > 0 => {
                            tracing::debug!(%from, rejected = r.rejected, "invalid entries refused");
                            Verdict::Reject
                        }
                        Ok(_) => Verdict::Accept,
                        Err(e) => {
                            tracing::error!(error = %e, "could not apply entries from a peer");
                            Verdict::Ignore
                        }
                    };
                    net.validated(id, verdict);
                });
            }
            Some(NamespaceGossip::SyncWithMe) => {
                if self.net.guard.allow_sync_hint(from) {
                    self.spawn_sync(from, core);
                }
                self.net.validated(id, Verdict::Accept);
            }
            None => {
                tracing::debug!(%from, "undecodable namespace gossip dropped");
                self.net
                    .validated(id, Verdict::Offence(Offence::InvalidGossip));
            }
        }
    }
    // ---- end of gossip verdicts ----

    /// Keeps this node connected, without connecting it to everyone: while it has fewer than
    /// [`PEERS_TARGET`] connections it dials live members it is not connected to, picked at
    /// random (random picks make a well-connected mesh); and every time it also dials one
    /// member it thinks dead, so the two halves of a healed partition, or a peer that
    /// restarted, find each other again without mDNS or a bootstrap address. Members that left
    /// are not dialed; forgotten ones are no longer in the view.
    fn redial_members(&self) {
        use crate::membership::PeerState;
        let connected: std::collections::HashSet<PeerId> =
            self.net.connected().into_iter().collect();
        let wanted = PEERS_TARGET.saturating_sub(connected.len());
        let (live, dead): (Vec<_>, Vec<_>) = self
            .membership
            .read()
            .members()
            .filter(|m| m.state != PeerState::Left && !connected.contains(&m.peer))
            .map(|m| (m.peer, m.addrs.clone(), m.state.is_live()))
            .partition(|(_, _, live)| *live);
        let mut rng = rand::thread_rng();
        let picks = live
            .choose_multiple(&mut rng, wanted)
            .chain(dead.choose(&mut rng));
        for (peer, addrs, _) in picks {
            self.net.add_addresses(*peer, addrs.clone());
            self.net.dial(*peer);
        }
    }

    /// Runs the cluster until the process ends.
    pub async fn run(
        self: Arc<Self>,
        core: Arc<Mount>,
        mut events: NetEvents,
        mut committed: mpsc::UnboundedReceiver<Vec<Entry>>,
    ) {
        // Announcements: every announce period (longer in a large network), jittered by up
        // to a tenth so the nodes' announcements do not fall in step.
        let mut next_announce = tokio::time::Instant::now();
        let mut liveness = tokio::time::interval(Duration::from_millis(500));
        let mut anti_entropy = tokio::time::interval(self.config.sync_every);
        let mut redial = tokio::time::interval(REDIAL_EVERY);
        // Hostile peers: peers rate-limit gossip per source (`net::guard`), so committed
        // entries go out at most every GOSSIP_PACE, a burst of commits batched together (at
        // once when idle), and subscriptions are answered at most every
        // SUBSCRIBED_ANNOUNCE_PACE, keeping an honest node far below that limit.
        let mut unsent: Vec<Entry> = Vec::new();
        let mut next_gossip = tokio::time::Instant::now();
        let mut answers = Answers::default();
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    match event {
                        // Answers: a peer that may not know this node (it just started, or
                        // restarted with an empty view) hears our announcement now rather than
                        // a whole announce period later. Each answer goes to the whole
                        // network, so only peers that need one get it: a subscriber that is new
                        // to our view or back from dead (at the short pace); a connected peer
                        // whose announcement shows it knows fewer members than we do (paced to
                        // half an announce period). Every reconnection subscribes; a peer alive
                        // in our view that knows as many as we do is not answered (answering
                        // those was most of the gossip at 64 nodes). Only connected peers are
                        // answered: a join heard through gossip does not make the whole network
                        // answer at once.
                        NetEvent::Gossip { topic, from, data, id } => {
                            self.log_membership(self.membership.write().heard_from(&from, Instant::now()));
                            if self.on_gossip(topic, from, data, id, &core)
                                && self.net.connected().contains(&from)
                            {
                                let pace = known_peer_answer_pace(&self.membership.read());
                                if answers.request(tokio::time::Instant::now(), pace) {
                                    self.announce().await;
                                }
                            }
                        }
                        NetEvent::Subscribed(peer) => {
                            let pace = {
                                let view = self.membership.read();
                                match view.get(&peer) {
                                    Some(m) if m.state == crate::membership::PeerState::Alive => {
                                        view.knows_fewer(&peer).then(|| known_peer_answer_pace(&view))
                                    }
                                    _ => Some(SUBSCRIBED_ANNOUNCE_PACE),
                                }
                            };
                            if let Some(pace) = pace
                                && answers.request(tokio::time::Instant::now(), pace)
                            {
                                self.announce().await;
                            }
                        }
                        NetEvent::Connected(peer) => {
                            self.log_membership(self.membership.write().heard_from(&peer, Instant::now()));
                            self.spawn_sync(peer, &core);
                        }
                        NetEvent::Disconnected(peer) => self.router.client.forget(&peer),
                    }
                }
                Some(entries) = committed.recv() => {
                    unsent.extend(entries);
                    while let Ok(more) = committed.try_recv() {
                        unsent.extend(more);
                    }
                    if tokio::time::Instant::now() >= next_gossip {
                        self.publish_entries(std::mem::take(&mut unsent));
                        next_gossip = tokio::time::Instant::now() + GOSSIP_PACE;
                    }
                }
                _ = tokio::time::sleep_until(answers.due.unwrap_or(next_gossip)),
                    if answers.due.is_some() =>
                {
                    answers.sent_scheduled(tokio::time::Instant::now());
                    self.announce().await;
                }
                _ = tokio::time::sleep_until(next_gossip), if !unsent.is_empty() => {
                    self.publish_entries(std::mem::take(&mut unsent));
                    next_gossip = tokio::time::Instant::now() + GOSSIP_PACE;
                }
                _ = tokio::time::sleep_until(next_announce) => {
                    self.announce().await;
                    let period = self.membership.read().announce_period();
                    let jitter = period.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.1));
                    next_announce = tokio::time::Instant::now() + period - jitter;
                }
                _ = liveness.tick() => {
                    let events = self.membership.write().tick(Instant::now());
                    self.log_membership(events);
                }
                _ = anti_entropy.tick() => {
                    let peers = self.net.connected();
                    if let Some(peer) = peers.choose(&mut rand::thread_rng()) {
                        self.spawn_sync(*peer, &core);
                    }
                }
                _ = redial.tick() => self.redial_members(),
            }
        }
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

    #[test]
    fn answers_are_paced_and_requests_within_the_pace_get_one_at_its_end() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let mut answers = Answers::default();
        assert!(
            answers.request(t0, ms(500)),
            "the first answer goes at once"
        );
        assert_eq!(answers.due, None);
        // Within the pace: none now, one at its end, however many ask.
        assert!(!answers.request(t0 + ms(100), ms(500)));
        assert!(!answers.request(t0 + ms(200), ms(500)));
        assert_eq!(answers.due, Some(t0 + ms(500)));
        // A shorter pace (a newcomer) brings the scheduled answer forward, never back.
        assert!(!answers.request(t0 + ms(250), ms(300)));
        assert_eq!(answers.due, Some(t0 + ms(300)));
        assert!(!answers.request(t0 + ms(260), ms(4000)));
        assert_eq!(answers.due, Some(t0 + ms(300)));
        answers.sent_scheduled(t0 + ms(300));
        assert_eq!(answers.due, None);
        // The pace runs from the scheduled answer.
        assert!(!answers.request(t0 + ms(700), ms(500)));
        assert_eq!(answers.due, Some(t0 + ms(800)));
        answers.sent_scheduled(t0 + ms(800));
        assert!(answers.request(t0 + ms(1300), ms(500)));
    }
}
