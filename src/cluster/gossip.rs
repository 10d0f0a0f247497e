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

use crate::admission::{Gate, GateEvent, LedgerRecord, Merged, Mode, NodeCert, NodeRole};
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
    /// This node's user and its age recipient, as announced (what `p2pfs-ctl certify` run on
    /// another node needs to certify this one).
    pub user: crate::identity::UserId,
    pub recipient: String,
}

/// Largest certificate an announcement may carry (a real one is a few hundred bytes).
pub const MAX_ANNOUNCED_CERT: usize = 4 * 1024;
/// Largest ledger gossip message (the handshake hello's bound too).
pub const MAX_LEDGER_GOSSIP: usize = 512 * 1024;
/// What the periodic ledger republication carries at most (see `Cluster::republish_ledger`).
pub const LEDGER_REPUBLISH_BUDGET: usize = 256 * 1024;
/// After a change of the ledger, it is republished every this many announce periods (at
/// least [`LEDGER_REPUBLISH_MIN`]) for [`LEDGER_REPUBLISH_FOR`]: members that missed the
/// gossip of a revocation while connected learn it without waiting for a reconnection.
const LEDGER_REPUBLISH_PERIODS: u32 = 5;
const LEDGER_REPUBLISH_MIN: Duration = Duration::from_secs(10);
const LEDGER_REPUBLISH_FOR: Duration = Duration::from_secs(120);

/// Decodes a ledger gossip message: untrusted bytes from any member.
pub fn decode_ledger_gossip(data: &[u8]) -> Option<Vec<LedgerRecord>> {
    if data.len() > MAX_LEDGER_GOSSIP {
        return None;
    }
    ciborium::from_reader(data).ok()
}

/// The user whose volumes must be re-keyed when `expelled` is revoked: its certificate's
/// user, unless another certified, unrevoked node carries that user (it still reads them).
pub fn user_losing_access(
    ledger: &crate::admission::Ledger,
    expelled: &PeerId,
) -> Option<crate::identity::UserId> {
    let user = ledger.cert(expelled)?.body.user;
    let still_there = ledger.certs().any(|c| {
        c.body.user == user
            && c.peer_id()
                .is_some_and(|p| p != *expelled && ledger.check_cert(c, &p).is_ok())
    });
    (!still_there).then_some(user)
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
    /// Admission: who is a member in a certified network (see `on_announcement`).
    pub gate: Arc<Gate>,
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
    /// Until when the ledger is republished (it changed recently; see `republish_ledger`).
    ledger_changed_until: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

/// The capacity a node with `role` offers: none for a reader, whatever it announces.
fn capacity_for(role: Option<NodeRole>, configured: u64) -> u64 {
    match role {
        Some(NodeRole::Reader) => 0,
        _ => configured,
    }
}

/// Whether an announcement from `from` may enter the view, and with which role: in a
/// key-only network always (no role); in a certified one only with a valid, unrevoked
/// certificate (the one it carries is merged first). Otherwise the verdict to give it: a
/// node without a certificate, or a revoked one, is ignored; a certificate that is forged,
/// for another node or self-signed is an offence. (One signed by a user this node does
/// not know as an admin is only refused: the grant may still be on its way.)
pub fn admit_announcement(
    gate: &Gate,
    from: &PeerId,
    a: &Announcement,
) -> Result<Option<NodeRole>, Verdict> {
    if gate.mode() == Mode::KeyOnly {
        return Ok(None);
    }
    if a.cert.len() > MAX_ANNOUNCED_CERT {
        return Err(Verdict::Reject);
    }
    let cert = if a.cert.is_empty() {
        None
    } else {
        match ciborium::from_reader::<NodeCert, _>(&a.cert[..]) {
            Ok(c) => Some(c),
            Err(_) => return Err(Verdict::Offence(Offence::InvalidGossip)),
        }
    };
    if gate.admits(from) {
        return Ok(gate.role_of(from));
    }
    let Some(cert) = cert else {
        return Err(Verdict::Ignore);
    };
    gate.merge_records(vec![LedgerRecord::Cert(cert.clone())]);
    if gate.admits(from) {
        return Ok(gate.role_of(from));
    }
    use crate::admission::cert::CertError;
    match gate.ledger().check_cert(&cert, from) {
        Err(CertError::NotAdmitter(_)) if cert.by == cert.body.user => {
            Err(Verdict::Offence(Offence::InvalidGossip))
        }
        Err(CertError::NotAdmitter(_)) => Err(Verdict::Reject),
        Err(CertError::Malformed(_) | CertError::BadSignature(_) | CertError::WrongPeer(_)) => {
            Err(Verdict::Offence(Offence::InvalidGossip))
        }
        _ => Err(Verdict::Ignore),
    }
}

/// Whether this node (`me`) is the one of its user's live nodes (`others`, the rest) that
/// re-keys the user's volumes: the one with the smallest peer id.
pub fn rekeys_here(me: &PeerId, others: &[PeerId]) -> bool {
    others.iter().all(|p| p > me)
}

/// Takes a ledger gossip message into `gate` and says what it was: merged by a certified
/// node (accepted, so forwarded, when it brought something new; ignored otherwise); a key-only
/// node takes only an upgrade certifying it; undecodable or over the bound: an offence.
pub fn ledger_verdict(gate: &Gate, data: &[u8]) -> Verdict {
    let Some(records) = decode_ledger_gossip(data) else {
        return Verdict::Offence(Offence::InvalidGossip);
    };
    let new = if gate.mode() == Mode::KeyOnly {
        gate.adopt_upgrade(records)
    } else {
        !gate.merge_records(records).is_empty()
    };
    if new {
        Verdict::Accept
    } else {
        Verdict::Ignore
    }
}

/// The announcement `a` from `from` as the view takes it (see [`admit_announcement`]): a
/// reader's with capacity 0, whatever it claims.
pub fn admitted(gate: &Gate, from: &PeerId, mut a: Announcement) -> Result<Announcement, Verdict> {
    let role = admit_announcement(gate, from, &a)?;
    a.capacity = capacity_for(role, a.capacity);
    Ok(a)
}

impl Cluster {
    pub fn new(
        net: NetHandle,
        store: Arc<ChunkStore>,
        config: ClusterConfig,
        gate: Arc<Gate>,
        workers: Workers,
    ) -> Arc<Self> {
        let membership = Arc::new(RwLock::new(Membership::new(net.local, config.liveness)));
        let router = Arc::new(ChunkRouter {
            local: net.local,
            store,
            client: ChunkClient::new(net.streams.clone(), net.guard.clone()),
            membership: membership.clone(),
            replicas: config.replicas,
            capacity: AtomicU64::new(capacity_for(
                gate.own_cert().map(|c| c.body.role),
                config.capacity,
            )),
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
            gate,
            config,
            seq: AtomicU64::new(seq),
            state: parking_lot::Mutex::new(AnnouncedState::Alive),
            syncing: Default::default(),
            syncs: Default::default(),
            workers,
            ledger_changed_until: parking_lot::Mutex::new(None),
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
        let addrs = self.net.advertised_addrs();
        let a = Announcement {
            peer: self.net.local.to_bytes(),
            addrs: addrs.iter().map(Multiaddr::to_string).collect(),
            capacity: self.router.capacity(),
            free: self.router.store.free_bytes(),
            version: env!("CARGO_PKG_VERSION").into(),
            state,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            knows: self.membership.read().knows(),
            placement_rule: crate::cluster::placement::RULE,
            name: self.config.name.clone(),
            cert: match (self.gate.mode(), self.gate.own_cert()) {
                (Mode::Certified, Some(c)) => {
                    let mut bytes = Vec::new();
                    ciborium::into_writer(&c, &mut bytes).expect("a certificate serializes");
                    bytes
                }
                _ => Vec::new(),
            },
            user: Some(self.config.user),
            recipient: self.config.recipient.clone(),
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
        if !self.gate.admits(&peer)
            || self.net.guard.open_streams(&peer, StreamKind::Sync) > 0
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
            Topic::Ledger => {
                self.on_ledger_gossip(from, &data, id);
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
        // In a certified network only certified members are in the view: placement, gossip
        // and sync consider no one else.
        let a = match admitted(&self.gate, &from, a) {
            Ok(a) => a,
            Err(verdict) => {
                self.net.validated(id, verdict);
                return false;
            }
        };
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

    /// A ledger gossip message ([`ledger_verdict`]).
    fn on_ledger_gossip(&self, from: PeerId, data: &[u8], id: GossipId) {
        let verdict = ledger_verdict(&self.gate, data);
        if verdict == Verdict::Offence(Offence::InvalidGossip) {
            tracing::debug!(%from, "undecodable ledger gossip dropped");
        }
        self.net.validated(id, verdict);
    }

    /// Publishes ledger records on the ledger topic, in messages of at most
    /// [`LEDGER_REPUBLISH_BUDGET`] bytes (grants and revocations, first in `records`, in the
    /// first).
    pub fn publish_ledger(&self, records: &[LedgerRecord]) {
        let encode = |batch: &[LedgerRecord]| {
            let mut bytes = Vec::new();
            ciborium::into_writer(batch, &mut bytes).expect("records serialize");
            bytes
        };
        let mut start = 0;
        let mut size = 0;
        for (i, r) in records.iter().enumerate() {
            let n = encode(std::slice::from_ref(r)).len();
            if size + n > LEDGER_REPUBLISH_BUDGET && i > start {
                self.net.publish(Topic::Ledger, encode(&records[start..i]));
                start = i;
                size = 0;
            }
            size += n;
        }
        if start < records.len() {
            self.net.publish(Topic::Ledger, encode(&records[start..]));
        }
    }

    /// Republishes the ledger (revocations, grants, epochs and the newest certificates, within
    /// [`LEDGER_REPUBLISH_BUDGET`]) while it changed recently.
    fn republish_ledger(&self) {
        let due = self
            .ledger_changed_until
            .lock()
            .is_some_and(|t| tokio::time::Instant::now() < t);
        if due && self.gate.mode() == Mode::Certified {
            let records = self
                .gate
                .ledger()
                .records_for_members(LEDGER_REPUBLISH_BUDGET);
            self.publish_ledger(&records);
        }
    }

    /// Follows what the gate reports until the node stops: a revoked member is cut off and
    /// dropped from the view, its later entries refused and the volumes its user could read
    /// re-keyed; new network-volume keys go to the mount.
    async fn follow_gate(
        self: Arc<Self>,
        mount: Arc<Mount>,
        mut events: mpsc::UnboundedReceiver<GateEvent>,
    ) {
        // Keys the ledger already holds (opened before this start) are the mount's at once.
        self.refresh_network_keys(&mount).await;
        for r in self.gate.ledger().records() {
            if let LedgerRecord::Revocation(r) = r {
                mount.refuse_node_after(crate::namespace::entry::node_tag(&r.body.peer), r.body.at);
            }
        }
        while let Some(event) = events.recv().await {
            *self.ledger_changed_until.lock() =
                Some(tokio::time::Instant::now() + LEDGER_REPUBLISH_FOR);
            match event {
                GateEvent::Merged(Merged::Revocation(peer)) => {
                    self.on_revocation(peer, &mount).await
                }
                GateEvent::Merged(Merged::Epoch(_)) => self.refresh_network_keys(&mount).await,
                GateEvent::Certified => {
                    self.apply_own_role();
                    self.refresh_network_keys(&mount).await;
                    // Members seen while key-only stay only with a certificate.
                    let gate = self.gate.clone();
                    let dropped = self.membership.write().retain(|p| gate.admits(p));
                    if !dropped.is_empty() {
                        tracing::info!(
                            dropped = dropped.len(),
                            "uncertified members dropped from the view"
                        );
                        self.router.repair_wanted.notify_one();
                    }
                    self.drop_unadmitted_connections();
                    self.announce().await;
                }
                // A demotion can void the certificates an admin issued after it.
                GateEvent::Merged(Merged::Grant(_)) => self.drop_unadmitted_connections(),
                GateEvent::Merged(_) => {}
            }
        }
    }

    /// Closes (and blocks) the connections of peers the gate no longer admits: a node that
    /// just became certified keeps no uncertified key holder connected, and a demotion cuts
    /// the nodes whose certificates it voided. The rpc servers serve connected peers, so the
    /// connection is what must go.
    fn drop_unadmitted_connections(&self) {
        if self.gate.mode() != Mode::Certified {
            return;
        }
        for peer in self.net.connected() {
            if !self.gate.admits(&peer) {
                tracing::info!(%peer, "connection of a peer without a valid certificate closed");
                self.net.disconnect_and_block(peer);
            }
        }
    }

    /// This node's user (announced; the founder after `certify`).
    pub fn config_user(&self) -> crate::identity::UserId {
        self.config.user
    }

    /// What `p2pfs-ctl certify` can certify in a key-only network: the live members that
    /// announce a user and recipient (peer, name, user, recipient, role: a reader when it
    /// offers no capacity), and those that do not (peer, name).
    #[allow(clippy::type_complexity)]
    pub fn certify_candidates(
        &self,
    ) -> Result<
        (
            Vec<(PeerId, String, crate::identity::UserId, String, NodeRole)>,
            Vec<(PeerId, String)>,
        ),
        crate::admission::GateError,
    > {
        if self.gate.mode() != Mode::KeyOnly {
            return Err(crate::admission::GateError::Refused(
                "this network is certified already (see p2pfs-ctl members)".into(),
            ));
        }
        let view = self.membership.read();
        let mut ok = Vec::new();
        let mut not = Vec::new();
        for m in view.members().filter(|m| m.state.is_live()) {
            match m.user {
                Some(user) if m.recipient.parse::<age::x25519::Recipient>().is_ok() => {
                    let role = if m.capacity == 0 {
                        NodeRole::Reader
                    } else {
                        NodeRole::Storage
                    };
                    ok.push((m.peer, m.name.clone(), user, m.recipient.clone(), role));
                }
                _ => not.push((m.peer, m.name.clone())),
            }
        }
        Ok((ok, not))
    }

    /// Upgrades a key-only network: this node's user founds it and certifies this node and
    /// `members` ([`Gate::certify`]); the ledger goes out on the ledger topic, where each
    /// member finds its certificate. Returns the certificates made.
    pub fn certify(
        &self,
        members: &[(PeerId, String, crate::identity::UserId, String, NodeRole)],
    ) -> Result<Vec<NodeCert>, crate::admission::GateError> {
        let certs = self.gate.certify(members)?;
        self.publish_ledger(&self.gate.records());
        Ok(certs)
    }

    /// This node's capacity as its certificate's role allows (0 for a reader).
    fn apply_own_role(&self) {
        let role = self.gate.own_cert().map(|c| c.body.role);
        self.router
            .capacity
            .store(capacity_for(role, self.config.capacity), Ordering::Relaxed);
    }

    async fn refresh_network_keys(&self, mount: &Arc<Mount>) {
        let epochs = self.gate.network_epoch_keys();
        if epochs.is_empty() {
            return;
        }
        let mount = mount.clone();
        let n = epochs.len();
        match tokio::task::spawn_blocking(move || mount.set_network_epochs(&epochs)).await {
            Ok(Ok(true)) => tracing::info!(epochs = n, "network volume key rotated"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot take the new network volume key"),
            Err(e) => tracing::error!(error = %e, "network volume key task failed"),
        }
    }

    async fn on_revocation(&self, peer: PeerId, mount: &Arc<Mount>) {
        if peer == self.net.local {
            tracing::error!(
                "this node was expelled from the network: the other members refuse it from now on"
            );
            return;
        }
        let ledger = self.gate.ledger();
        let name = ledger
            .cert(&peer)
            .map(|c| c.body.name.clone())
            .unwrap_or_else(|| self.membership.read().name_of(&peer).to_string());
        let at = ledger.revocation(&peer).map_or(0, |r| r.body.at);
        self.net.disconnect_and_block(peer);
        if self.membership.write().remove(&peer) {
            self.router.repair_wanted.notify_one();
        }
        self.router.client.forget(&peer);
        mount.refuse_node_after(crate::namespace::entry::node_tag(&peer.to_bytes()), at);
        tracing::warn!(%peer, name = ?name, "peer expelled");
        let Some(user) = user_losing_access(&ledger, &peer) else {
            return;
        };
        // One node of this user re-keys (two rotating one volume at once would each make a
        // key, and the record that loses would take its key with it).
        let live_nodes_of_my_user: Vec<PeerId> = self
            .membership
            .read()
            .members()
            .filter(|m| {
                m.state.is_live()
                    && ledger.cert(&m.peer).map(|c| c.body.user).or(m.user)
                        == Some(self.config.user)
            })
            .map(|m| m.peer)
            .collect();
        if !rekeys_here(&self.net.local, &live_nodes_of_my_user) {
            tracing::debug!(%peer, "another node of this user removes the expelled user from its volumes");
            return;
        }
        let mount = mount.clone();
        let rekeyed = tokio::task::spawn_blocking(move || {
            let mut done = Vec::new();
            for name in mount.owned_volumes_shared_with(&user) {
                match mount.unshare(&name, &user) {
                    Ok(_) => done.push(name),
                    Err(e) => tracing::error!(volume = %name, error = %e, "cannot remove an expelled user from a volume"),
                }
            }
            done
        })
        .await
        .unwrap_or_default();
        if !rekeyed.is_empty() {
            tracing::warn!(%peer, user = %user, volumes = ?rekeyed, "the expelled node's user was removed from this user's volumes: new keys protect what is written from now on");
        }
    }

    fn on_namespace_gossip(&self, from: PeerId, data: &[u8], id: GossipId, mount: &Arc<Mount>) {
        if !self.gate.admits(&from) {
            tracing::debug!(%from, "namespace gossip from an uncertified node ignored");
            self.net.validated(id, Verdict::Ignore);
            return;
        }
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
    pub fn redial_members(&self) {
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
        if let Some(gate_events) = self.gate.take_events() {
            self.workers
                .spawn(self.clone().follow_gate(mount.clone(), gate_events));
        }
        let mut next_ledger = tokio::time::Instant::now() + LEDGER_REPUBLISH_MIN;
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
                // A paused node dials no one (`net::guard::PeerGuard::set_paused`).
                _ = redial.tick() => if !self.net.guard.is_paused() {
                    self.redial_members()
                },
                _ = tokio::time::sleep_until(next_ledger) => {
                    self.republish_ledger();
                    let every = (self.membership.read().announce_period() * LEDGER_REPUBLISH_PERIODS)
                        .max(LEDGER_REPUBLISH_MIN);
                    next_ledger = tokio::time::Instant::now() + every;
                }
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

    use crate::admission::cert::{CertBody, Signed};
    use crate::cluster::membership::{LivenessConfig, Membership};
    use crate::identity::UserIdentity;

    /// A node's gate in a data dir of its own (key-only: no membership file yet).
    struct TestGate {
        _dir: tempfile::TempDir,
        peer: PeerId,
        user: UserIdentity,
        gate: Gate,
    }

    fn test_gate() -> TestGate {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let user = UserIdentity::generate();
        let gate = Gate::open(dir.path(), peer, &user, "n").unwrap();
        TestGate {
            _dir: dir,
            peer,
            user,
            gate,
        }
    }

    fn member_of(
        n: &TestGate,
        role: NodeRole,
    ) -> (PeerId, String, crate::identity::UserId, String, NodeRole) {
        (
            n.peer,
            "m".into(),
            n.user.user_id(),
            n.user.recipient().to_string(),
            role,
        )
    }

    fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(v, &mut bytes).unwrap();
        bytes
    }

    fn announcement_from(peer: &PeerId, cert: Option<&NodeCert>) -> Announcement {
        Announcement {
            peer: peer.to_bytes(),
            addrs: vec![],
            capacity: 1 << 30,
            free: 1 << 29,
            version: "0".into(),
            state: AnnouncedState::Alive,
            seq: 1,
            knows: 1,
            placement_rule: crate::cluster::placement::RULE,
            name: "m".into(),
            cert: cert.map(cbor).unwrap_or_default(),
            user: None,
            recipient: String::new(),
        }
    }

    #[test]
    fn a_certified_view_takes_certified_members_only_and_readers_hold_nothing() {
        let (f, a, r, c, u) = (
            test_gate(),
            test_gate(),
            test_gate(),
            test_gate(),
            test_gate(),
        );
        // Key-only: every holder of the key is a member, as before.
        let plain = announcement_from(&u.peer, None);
        assert_eq!(admitted(&f.gate, &u.peer, plain.clone()), Ok(plain.clone()));

        let certs = f
            .gate
            .certify(&[
                member_of(&a, NodeRole::Storage),
                member_of(&r, NodeRole::Reader),
                member_of(&c, NodeRole::Storage),
            ])
            .unwrap();
        let cert_of = |p: &PeerId| certs.iter().find(|c| c.peer_id() == Some(*p)).unwrap();
        let mut view = Membership::new(f.peer, LivenessConfig::default());
        let now = Instant::now();
        for n in [&a, &r] {
            let ann = admitted(
                &f.gate,
                &n.peer,
                announcement_from(&n.peer, Some(cert_of(&n.peer))),
            )
            .unwrap();
            view.apply(&ann, now).unwrap();
        }
        // The reader is in the view but never an owner, whatever it announced.
        let mut peers = view.placement_peers();
        peers.sort();
        let mut expected = vec![(a.peer, 1 << 30), (r.peer, 0)];
        expected.sort();
        assert_eq!(peers, expected);

        // No certificate (an uncertified node, or one older than certificates): ignored.
        assert_eq!(admitted(&f.gate, &u.peer, plain), Err(Verdict::Ignore));
        // A self-signed certificate, someone else's, garbage: the source's offence.
        let selfsigned = Signed::sign(
            CertBody {
                network: f.user.user_id(),
                peer: u.peer.to_bytes(),
                name: "u".into(),
                user: u.user.user_id(),
                recipient: u.user.recipient().to_string(),
                role: NodeRole::Storage,
                issued_at: 1,
            },
            &u.user,
        );
        let offence = Err(Verdict::Offence(Offence::InvalidGossip));
        assert_eq!(
            admitted(
                &f.gate,
                &u.peer,
                announcement_from(&u.peer, Some(&selfsigned))
            ),
            offence
        );
        assert_eq!(
            admitted(
                &f.gate,
                &u.peer,
                announcement_from(&u.peer, Some(cert_of(&a.peer)))
            ),
            offence
        );
        let mut junk = announcement_from(&u.peer, None);
        junk.cert = vec![0xff, 0x00, 0x13];
        assert_eq!(admitted(&f.gate, &u.peer, junk.clone()), offence);
        // Over the bound: refused before it is decoded.
        junk.cert = vec![0; MAX_ANNOUNCED_CERT + 1];
        assert_eq!(admitted(&f.gate, &u.peer, junk), Err(Verdict::Reject));
        assert!(!f.gate.admits(&u.peer));

        // Expelled: its announcements, certificate and all, are ignored (stale, no offence).
        f.gate.expel(&a.peer).unwrap();
        assert_eq!(
            admitted(
                &f.gate,
                &a.peer,
                announcement_from(&a.peer, Some(cert_of(&a.peer)))
            ),
            Err(Verdict::Ignore)
        );

        // A member whose ledger lacks c's certificate takes it from c's announcement.
        let without_c: Vec<LedgerRecord> = f
            .gate
            .records()
            .into_iter()
            .filter(|rec| !matches!(rec, LedgerRecord::Cert(x) if x.peer_id() == Some(c.peer)))
            .collect();
        assert!(r.gate.adopt_upgrade(without_c));
        assert!(!r.gate.admits(&c.peer));
        let from_c = admitted(
            &r.gate,
            &c.peer,
            announcement_from(&c.peer, Some(cert_of(&c.peer))),
        )
        .unwrap();
        assert_eq!(from_c.capacity, 1 << 30);
        assert!(r.gate.admits(&c.peer));
    }

    #[test]
    fn an_expelled_users_volumes_are_rekeyed_only_when_it_has_no_other_node() {
        let (f, x1, x2, y) = (test_gate(), test_gate(), test_gate(), test_gate());
        // x2 is another node of x1's user.
        let mut second = member_of(&x1, NodeRole::Storage);
        second.0 = x2.peer;
        f.gate
            .certify(&[
                member_of(&x1, NodeRole::Storage),
                second,
                member_of(&y, NodeRole::Reader),
            ])
            .unwrap();
        f.gate.expel(&x1.peer).unwrap();
        assert_eq!(user_losing_access(&f.gate.ledger(), &x1.peer), None);
        f.gate.expel(&x2.peer).unwrap();
        assert_eq!(
            user_losing_access(&f.gate.ledger(), &x2.peer),
            Some(x1.user.user_id())
        );
        f.gate.expel(&y.peer).unwrap();
        assert_eq!(
            user_losing_access(&f.gate.ledger(), &y.peer),
            Some(y.user.user_id())
        );
        // Of the owner's live nodes, one re-keys.
        let mut nodes: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        nodes.sort();
        assert!(rekeys_here(&nodes[0], &nodes[1..]));
        assert!(!rekeys_here(&nodes[1], &[nodes[0], nodes[2]]));
        assert!(rekeys_here(&nodes[2], &[]));
        // A peer the ledger has no certificate of: nobody to re-key.
        assert_eq!(
            user_losing_access(&f.gate.ledger(), &PeerId::random()),
            None
        );
    }

    #[test]
    fn ledger_gossip_merges_what_is_new_upgrades_key_only_members_and_refuses_junk() {
        let (f, m, other) = (test_gate(), test_gate(), test_gate());
        f.gate.certify(&[member_of(&m, NodeRole::Storage)]).unwrap();
        let all = cbor(&f.gate.records());
        // A key-only member finds its certificate; a key-only node not in it stays as it is.
        assert_eq!(ledger_verdict(&other.gate, &all), Verdict::Ignore);
        assert_eq!(other.gate.mode(), Mode::KeyOnly);
        assert_eq!(ledger_verdict(&m.gate, &all), Verdict::Accept);
        assert_eq!(m.gate.mode(), Mode::Certified);
        // Known already: not forwarded again.
        assert_eq!(ledger_verdict(&m.gate, &all), Verdict::Ignore);
        // A revocation is new to m.
        let r = f.gate.expel(&other.peer).unwrap();
        let revocation = cbor(&vec![LedgerRecord::Revocation(r)]);
        assert_eq!(ledger_verdict(&m.gate, &revocation), Verdict::Accept);
        assert!(m.gate.ledger().is_revoked(&other.peer));
        // A record nobody entitled signed changes nothing.
        let forged = other.gate.certify(&[]).unwrap();
        let forged = cbor(&vec![LedgerRecord::Cert(forged[0].clone())]);
        assert_eq!(ledger_verdict(&m.gate, &forged), Verdict::Ignore);
        // Junk, and a message over the bound, are offences.
        let offence = Verdict::Offence(Offence::InvalidGossip);
        assert_eq!(ledger_verdict(&m.gate, b"\xff\x00junk"), offence);
        assert_eq!(
            ledger_verdict(&m.gate, &vec![0x80; MAX_LEDGER_GOSSIP + 1]),
            offence
        );
    }
}
