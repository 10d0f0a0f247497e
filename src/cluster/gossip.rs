//! The cluster's event loop ([`Cluster::run`]): announcements and the membership view they
//! build, namespace gossip of committed entries, redialing to stay in the mesh, and the
//! scheduling of anti-entropy sessions with peers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use parking_lot::RwLock;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::block::ChunkStore;
use crate::cluster::membership::{
    AnnouncedState, Announcement, LivenessConfig, Membership, MembershipEvent, parse_addrs,
};
use crate::cluster::router::ChunkRouter;
use crate::fs::Mount;
use crate::namespace::Entry;
use crate::net::{MAX_GOSSIP, NetEvent, NetEvents, NetHandle, Topic};
// Hostile peers: gossip verdicts (see `on_gossip`).
use crate::net::guard::Offence;
use crate::net::{GossipId, Verdict};
use crate::rpc::chunk::ChunkClient;
use crate::rpc::sync;
use crate::util::workers::Workers;

pub struct ClusterConfig {
    pub replicas: usize,
    /// Liveness thresholds and the announce interval (both stretched in a large network:
    /// [`Membership::announce_period`]).
    pub liveness: LivenessConfig,
    pub sync_every: Duration,
    /// Bytes this node offers for chunks (its placement weight).
    pub capacity: u64,
    /// This node's name, as announced (checked by [`crate::cluster::names::check_name`]).
    pub name: String,
    /// The node's admission state: its mode, certificate and the network's ledger.
    pub gate: Arc<crate::admission::Gate>,
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

pub struct Cluster {
    pub net: NetHandle,
    pub router: Arc<ChunkRouter>,
    pub membership: Arc<RwLock<Membership>>,
    config: ClusterConfig,
    seq: AtomicU64,
    state: parking_lot::Mutex<AnnouncedState>,
    /// Peers this node runs an anti-entropy session with now (see `spawn_sync`).
    syncing: Arc<parking_lot::Mutex<std::collections::HashSet<PeerId>>>,
    /// Anti-entropy sessions this node started that completed, since start (tests wait on it).
    syncs: Arc<AtomicU64>,
    /// The node's workers: anti-entropy sessions and gossip batches being applied run among
    /// them.
    workers: Workers,
}

impl Cluster {
    pub fn new(
        net: NetHandle,
        store: Arc<ChunkStore>,
        config: ClusterConfig,
        workers: Workers,
    ) -> Arc<Self> {
        let membership = Arc::new(RwLock::new(Membership::new(net.local, config.liveness)));
        let router = Arc::new(ChunkRouter {
            local: net.local,
            store,
            client: ChunkClient::new(net.streams.clone(), net.guard.clone()),
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
            syncs: Default::default(),
            workers,
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Display labels of this node and every member of the view, by peer id
    /// ([`crate::cluster::names::labels`]).
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        let local = self.net.local.to_string();
        let view = self.membership.read();
        let ids: Vec<(String, &str)> = view
            .members()
            .map(|m| (m.peer.to_string(), m.name.as_str()))
            .collect();
        crate::cluster::names::labels(
            std::iter::once((local.as_str(), self.name()))
                .chain(ids.iter().map(|(id, name)| (id.as_str(), *name))),
        )
    }

    /// Anti-entropy sessions this node started that completed, since start.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
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
            placement_rule: crate::cluster::placement::RULE,
            name: self.config.name.clone(),
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
    fn spawn_sync(&self, peer: PeerId, mount: &Arc<Mount>) {
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
        let (net, mount, syncs) = (self.net.clone(), mount.clone(), self.syncs.clone());
        self.workers.spawn(async move {
            let _running = running;
            let session = sync::sync_with(&net, peer, mount).await;
            if session.is_ok() {
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            match session {
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
        // Names are checked on arrival (no control characters): safe in a log line.
        let name = |peer: &PeerId| self.membership.read().name_of(peer).to_string();
        for e in events {
            match e {
                MembershipEvent::Joined(peer) => {
                    tracing::info!(%peer, name = %name(&peer), "peer joined")
                }
                MembershipEvent::StateChanged { peer, from, to } => {
                    tracing::info!(%peer, name = %name(&peer), from = from.as_str(), to = to.as_str(), "peer state changed")
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
        mount: &Arc<Mount>,
    ) -> bool {
        match topic {
            Topic::Membership => self.on_announcement(from, &data, id),
            Topic::Namespace => {
                self.on_namespace_gossip(from, &data, id, mount);
                false
            }
            // Handled once certified membership is wired in; until then, not forwarded.
            Topic::Ledger => {
                self.net.validated(id, Verdict::Ignore);
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

    fn on_namespace_gossip(&self, from: PeerId, data: &[u8], id: GossipId, mount: &Arc<Mount>) {
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
                let (mount, net) = (mount.clone(), self.net.clone());
                self.workers.spawn_blocking(move || {
                    let _permit = permit;
                    let verdict = match sync::apply_from_peer(&mount, from, entries) {
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
                    self.spawn_sync(from, mount);
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
        use crate::cluster::membership::PeerState;
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

    /// Runs the cluster until the node's workers are cancelled (it is one of them).
    pub async fn run(
        self: Arc<Self>,
        mount: Arc<Mount>,
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
                            // Bound first: the write lock ends before logging reads the view.
                            let events = self.membership.write().heard_from(&from, Instant::now());
                            self.log_membership(events);
                            if self.on_gossip(topic, from, data, id, &mount)
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
                                    Some(m) if m.state == crate::cluster::membership::PeerState::Alive => {
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
                            let events = self.membership.write().heard_from(&peer, Instant::now());
                            self.log_membership(events);
                            self.spawn_sync(peer, &mount);
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
                        self.spawn_sync(*peer, &mount);
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
