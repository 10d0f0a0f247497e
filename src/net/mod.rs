//! The network: one event loop owns the libp2p `Swarm`; the rest of the program talks to it
//! through a cloneable [`NetHandle`] (commands, with oneshot replies where there is an answer)
//! and hears from it through a channel of [`NetEvent`]s. Bulk transfers do not go through the
//! loop: they use libp2p-stream `Control`s ([`NetHandle::streams`]), which open streams
//! directly. The loop is one of the node's workers: it ends when they are cancelled.
//!
//! Admission: the Noise handshake carries a prologue derived from the network key. Both sides
//! must present the same prologue or the handshake fails, so a peer without the key never gets
//! a connection, at no cost per byte (pnet, measured here, cost 3x the CPU per byte).
//! Then, before any other protocol, the admission handshake ([`admit`]) shows each side the
//! other's hello and lets the node's membership rules ([`admit::Admission`]) refuse it.
//!
//! Hostile peers ([`guard`]): gossip is validated before it is forwarded (the cluster decodes
//! and checks every message and reports a verdict), rate-limited per signed source, and the
//! peers [`guard::PeerGuard`] finds guilty of offences are disconnected and, when they repeat,
//! blocked.

pub mod admit;
pub mod bandwidth;
pub mod counters;
pub mod guard;
pub mod limits;
pub mod overlap;
pub mod reach;
pub mod secure;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, dcutr, gossipsub, identify, kad, mdns, ping,
    relay, tcp, upnp, yamux,
};
use tokio::sync::mpsc;

use crate::identity::NetworkKey;
use crate::util::workers::Workers;
use admit::{Admission, AdmissionRefusal, AdmissionRefusals, AdmitError, RefusalSide};
use guard::{Blocklist, Offence, PeerGuard};
use reach::{ConnKind, ConnKinds, ReachConfig, ReachState, Reachability, RelayServerMode};

/// Largest gossip message (an entry announcement or a membership announcement).
pub const MAX_GOSSIP: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot build the network stack: {0}")]
    Build(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("the network event loop has stopped")]
    Stopped,
}

/// The gossip topics of one network (named after its key's fingerprint, so two networks on
/// one LAN never mix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Membership,
    Namespace,
    /// Signed membership records (certificates, revocations, admin grants, key epochs) of a
    /// certified network. Nodes before certificates never subscribe to it.
    Ledger,
}

impl Topic {
    /// Index of the topic's label in [`crate::net::counters::GOSSIP_TOPICS`].
    fn index(self) -> usize {
        match self {
            Topic::Membership => 0,
            Topic::Namespace => 1,
            Topic::Ledger => 2,
        }
    }
}

pub struct NetConfig {
    pub keypair: libp2p::identity::Keypair,
    pub network_key: NetworkKey,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    /// Gossip messages waiting for the program at most ([`MAX_QUEUED_GOSSIP`]).
    pub max_queued_gossip: usize,
    /// Connection limits before admission ([`limits`]).
    pub limits: limits::AdmissionLimits,
    /// The node's guard: offences, per-peer limits, the block list.
    pub guard: Arc<PeerGuard>,
    /// Who is admitted past the admission handshake ([`admit`]); a key-only node passes
    /// [`admit::KeyOnlyAdmission`].
    pub admission: Arc<dyn Admission>,
    /// Reachability beyond the LAN: relaying for members, UPnP ([`reach`]).
    pub reach: ReachConfig,
}

pub enum NetEvent {
    /// A gossip message, not yet forwarded: the receiver must report a verdict on it with
    /// [`NetHandle::validated`].
    Gossip {
        topic: Topic,
        from: PeerId,
        data: Vec<u8>,
        id: GossipId,
    },
    /// A peer subscribed to one of our topics: it can now hear what we publish.
    Subscribed(PeerId),
    Connected(PeerId),
    Disconnected(PeerId),
}

/// Names a received gossip message for its verdict.
#[derive(Clone, Debug)]
pub struct GossipId(Box<GossipIdInner>);

#[derive(Clone, Debug)]
struct GossipIdInner {
    id: gossipsub::MessageId,
    propagation: PeerId,
    source: PeerId,
}

/// What the receiver of a gossip message found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Not to be forwarded, nobody's fault (stale, or dropped under load).
    Ignore,
    /// Invalid, but not provably the source's doing: not forwarded.
    Reject,
    /// Invalid, and the source's offence: not forwarded, and counted against the source.
    Offence(Offence),
}

enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
    },
    Validated {
        id: GossipId,
        acceptance: gossipsub::MessageAcceptance,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    Dial(PeerId),
}

#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    /// Opens and accepts the streams of the rpc protocols (chunk, sync), beside the loop.
    pub streams: libp2p_stream::Control,
    pub local: PeerId,
    /// Offences, per-peer limits and the block list.
    pub guard: Arc<PeerGuard>,
    /// What the loop knows that others ask about often, readable without a round trip
    /// through the loop (see [`SharedState`]).
    shared: Arc<parking_lot::RwLock<SharedState>>,
}

/// Kept by the event loop, read by anyone. Queries never wait on the loop: the loop may itself
/// be waiting for the program to take its events, and a query that waited on it would close
/// the cycle (this deadlocked nodes of a 64-node network under gossip load).
#[derive(Default)]
struct SharedState {
    connected: HashSet<PeerId>,
    /// Concrete addresses we listen on (a wildcard listener expands to one per interface).
    listen_addrs: Vec<Multiaddr>,
    /// Admission refusals, both ways.
    refusals: AdmissionRefusals,
    /// Whether this node is reachable from outside, and by which addresses.
    reachability: Reachability,
    /// How each open connection reaches its peer.
    conn_kinds: ConnKinds,
    /// Whether this node relays for members now.
    relaying: bool,
}

/// Gossip messages waiting to be taken by the program at most; past it, new ones are dropped
/// (not forwarded; anti-entropy and the next announcement carry what they said).
pub const MAX_QUEUED_GOSSIP: usize = 1024;

/// The events of the network, in order. Connection events are never dropped (there is one per
/// connection change); gossip is dropped when [`MAX_QUEUED_GOSSIP`] messages wait already, so
/// a slow consumer never stalls the event loop.
pub struct NetEvents {
    rx: mpsc::UnboundedReceiver<NetEvent>,
    queued_gossip: Arc<AtomicUsize>,
}

impl NetEvents {
    pub async fn recv(&mut self) -> Option<NetEvent> {
        let event = self.rx.recv().await;
        if let Some(NetEvent::Gossip { .. }) = &event {
            self.queued_gossip.fetch_sub(1, Ordering::Relaxed);
        }
        event
    }
}

impl NetHandle {
    /// Publishes on a topic. Never blocks the caller: if the loop is saturated the message is
    /// dropped (anti-entropy will carry what gossip missed).
    pub fn publish(&self, topic: Topic, data: Vec<u8>) {
        if self.tx.try_send(Command::Publish { topic, data }).is_err() {
            tracing::debug!(?topic, "network loop busy; gossip message dropped");
        }
    }

    /// Reports the verdict on a gossip message ([`NetEvent::Gossip`]): only accepted ones are
    /// forwarded; an offence is counted against the message's (signed) source.
    pub fn validated(&self, id: GossipId, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
            Verdict::Reject => gossipsub::MessageAcceptance::Reject,
            Verdict::Offence(kind) => {
                self.guard.offence(id.0.source, kind, "gossip message");
                gossipsub::MessageAcceptance::Reject
            }
        };
        // Unreported (the loop is saturated), the message is not forwarded and leaves the
        // cache after a few heartbeats.
        let _ = self.tx.try_send(Command::Validated { id, acceptance });
    }

    pub fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self.tx.try_send(Command::AddAddresses { peer, addrs });
    }

    pub fn dial(&self, peer: PeerId) {
        let _ = self.tx.try_send(Command::Dial(peer));
    }

    /// Concrete addresses this node listens on (relayed ones included).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared.read().listen_addrs.clone()
    }

    /// The addresses to announce (and to put in invites): those listened on, and the external
    /// ones members confirmed (a router's mapped port, a public address in front of a
    /// forwarded port); loopback and link-local ones only when there is nothing else
    /// ([`reach::for_peers`]).
    pub fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let shared = self.shared.read();
        let mut addrs = shared.listen_addrs.clone();
        for a in shared.reachability.addrs() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        reach::for_peers(addrs)
    }

    /// Peers with at least one open connection.
    pub fn connected(&self) -> Vec<PeerId> {
        self.shared.read().connected.iter().copied().collect()
    }

    /// How many peers have an open connection.
    pub fn connected_count(&self) -> usize {
        self.shared.read().connected.len()
    }

    /// The admission refusals seen since start, both ways, and the last one.
    pub fn admission_refusals(&self) -> AdmissionRefusals {
        self.shared.read().refusals.clone()
    }

    /// Whether this node is reachable from outside (AutoNAT), and by which addresses.
    pub fn reachability(&self) -> (ReachState, Vec<Multiaddr>) {
        let shared = self.shared.read();
        (shared.reachability.state(), shared.reachability.addrs())
    }

    /// Whether this node relays for other members now.
    pub fn relaying(&self) -> bool {
        self.shared.read().relaying
    }

    /// How `peer`'s open connections reach it, best first; empty when not connected.
    pub fn connection_kinds(&self, peer: &PeerId) -> Vec<ConnKind> {
        self.shared.read().conn_kinds.of(peer)
    }

    /// The last admission refusal, either way: this node refused a peer, or a peer refused it.
    pub fn last_refusal(&self) -> Option<AdmissionRefusal> {
        self.shared.read().refusals.last.clone()
    }

    /// Closes every connection of `peer` now and blocks it (both ways) until
    /// [`NetHandle::unblock`] or the node restarts: for a member that is no longer one.
    pub fn disconnect_and_block(&self, peer: PeerId) {
        self.guard.block(peer, guard::BLOCK_EXCLUDED);
    }

    /// Lifts a block on `peer` (its offences' or [`NetHandle::disconnect_and_block`]'s).
    pub fn unblock(&self, peer: PeerId) {
        self.guard.unblock(&peer);
    }
}

/// Everything a node speaks. Public so test tools (the `p2pfs-rogue` binary) join a network
/// exactly as a node does.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First: a connection over the admission limits is closed at `accept`.
    pub limits: limits::ConnectionLimits,
    /// Then a blocked peer's connection is denied before any other protocol sees it.
    pub blocklist: Blocklist,
    pub gossipsub: gossipsub::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub ping: ping::Behaviour,
    pub stream: libp2p_stream::Behaviour,
    /// Reservations on members that relay, and circuits through them ([`reach`]).
    pub relay_client: relay::client::Behaviour,
    /// Relaying for members (absent when `relay_server = off`).
    pub relay: Toggle<relay::Behaviour>,
    /// Hole punching over a relayed connection.
    pub dcutr: dcutr::Behaviour,
    /// Asks members to dial this node's addresses back, and does it for them.
    pub autonat: autonat::v1::Behaviour,
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

/// The value both ends of a connection mix into the Noise handshake.
fn admission_prologue(key: &NetworkKey) -> Vec<u8> {
    blake3::derive_key("p2pfs network admission v1", &key.0).to_vec()
}

/// The gossipsub topic of `t` in the network of `key`.
pub fn topic(key: &NetworkKey, t: Topic) -> gossipsub::IdentTopic {
    let name = match t {
        Topic::Membership => "membership",
        Topic::Namespace => "namespace",
        Topic::Ledger => "ledger",
    };
    gossipsub::IdentTopic::new(format!("p2pfs/{}/{name}", key.fingerprint()))
}

/// Peers a node stays connected to at most, unless more are in its gossip mesh or in use: past
/// it, the connections idle longest are closed (`EventLoop::trim_connections`). gossipsub
/// keeps a stream open on every connection, so without this every peer a node ever exchanged a
/// chunk with would stay connected for good, and a node's pings, gossip and memory would grow
/// with the network. (The cluster dials while under `cluster::gossip::PEERS_TARGET`, half of this.)
pub const MAX_CONNECTED_PEERS: usize = 16;
/// A connection is not closed for being surplus while younger than this, or while a chunk or
/// sync request used it within this.
const CONNECTION_GRACE: Duration = Duration::from_secs(30);

/// A connection nothing uses (no stream open, not in a gossip mesh) is closed after this long:
/// a chunk transfer to an owner outside the mesh reuses the connection for a burst of chunks,
/// and a node does not keep a connection to every owner it ever talked to.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The admission refusal a connection failed with, if it did.
fn refusal_in(error: &libp2p::TransportError<std::io::Error>) -> Option<&AdmitError> {
    match error {
        libp2p::TransportError::Other(e) => {
            admit::find_admit_error(e).filter(|e| matches!(e, AdmitError::Refused { .. }))
        }
        libp2p::TransportError::MultiaddrNotSupported(_) => None,
    }
}

/// Largest yamux data frame. Yamux's 16 KiB default makes every 16 KiB of a 1 MiB chunk its
/// own Noise message, flush and socket write; 256 KiB frames cut that per-frame cost 16-fold
/// while a small message on the same connection waits behind at most one frame (under 1 ms).
const YAMUX_FRAME: usize = 256 * 1024;

fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_split_send_size(YAMUX_FRAME);
    config
}

/// The swarm of a node of the network of `network_key`: TCP, Noise with the admission
/// prologue, the admission handshake of `admission` ([`admit`]), Yamux, and [`Behaviour`];
/// blocked peers per `guard`, the default admission limits. Not listening, not subscribed.
pub fn build_swarm(
    keypair: libp2p::identity::Keypair,
    network_key: &NetworkKey,
    mdns_enabled: bool,
    guard: Arc<PeerGuard>,
    admission: Arc<dyn Admission>,
) -> Result<Swarm<Behaviour>, NetError> {
    build_swarm_limited(
        keypair,
        network_key,
        mdns_enabled,
        guard,
        admission,
        limits::AdmissionLimits::default(),
        &ReachConfig::default(),
    )
}

/// [`build_swarm`] with the given connection limits and reachability parts. The handshakes
/// (TCP or a relay's circuit, Noise, admission, Yamux) must finish within
/// [`limits::HANDSHAKE_TIMEOUT`].
///
/// A connection through a relay runs the same upgrade as a TCP one: the relay client's
/// transport is composed with TCP under one Noise + admission + Yamux stack, never the
/// SwarmBuilder's own relay client (which would upgrade circuits without the admission
/// handshake).
pub fn build_swarm_limited(
    keypair: libp2p::identity::Keypair,
    network_key: &NetworkKey,
    mdns_enabled: bool,
    guard: Arc<PeerGuard>,
    admission: Arc<dyn Admission>,
    limits: limits::AdmissionLimits,
    reach: &ReachConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    build_swarm_secured(
        keypair,
        network_key,
        mdns_enabled,
        guard,
        admission,
        limits,
        reach,
        true,
    )
}

/// [`build_swarm_limited`], offering the AES-256-GCM Noise variant ([`secure`]) or, with
/// `aes_gcm` false, standard `/noise` only (as nodes without the variant do).
#[allow(clippy::too_many_arguments)]
pub fn build_swarm_secured(
    keypair: libp2p::identity::Keypair,
    network_key: &NetworkKey,
    mdns_enabled: bool,
    guard: Arc<PeerGuard>,
    admission: Arc<dyn Admission>,
    limits: limits::AdmissionLimits,
    reach: &ReachConfig,
    aes_gcm: bool,
) -> Result<Swarm<Behaviour>, NetError> {
    use libp2p::Transport;
    let prologue = admission_prologue(network_key);
    let handshake_guard = guard.clone();
    let (relay_transport, relay_client) = relay::client::new(keypair.public().to_peer_id());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|kp: &libp2p::identity::Keypair| {
            let noise = secure::Secure::new(kp, prologue.clone(), aes_gcm)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                relay_transport
                    .or_transport(
                        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)).map(
                            |stream: tcp::tokio::TcpStream, _| {
                                overlap::bound_unacked(&stream.0);
                                stream
                            },
                        ),
                    )
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex_ext(move |peer, _| {
                        admit::AdmitThenYamux::new(
                            admission.clone(),
                            handshake_guard.clone(),
                            *peer,
                            yamux_config(),
                        )
                    })
                    .timeout(limits::HANDSHAKE_TIMEOUT),
            )
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|kp| {
            let peer = kp.public().to_peer_id();
            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(MAX_GOSSIP)
                .validation_mode(gossipsub::ValidationMode::Strict)
                // Nothing is forwarded before the cluster has checked it (NetHandle::validated).
                .validate_messages()
                .heartbeat_interval(Duration::from_millis(700))
                // A mesh of 4-8 peers per topic (default 5-12): each topic's mesh is kept
                // connected, so this bounds the connections gossip holds open
                // (MAX_CONNECTED_PEERS).
                .mesh_n(6)
                .mesh_n_low(4)
                .mesh_n_high(8)
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(kp.clone()),
                gossip_config,
            )?;
            let mdns = if mdns_enabled {
                Some(
                    mdns::tokio::Behaviour::new(mdns::Config::default(), peer)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            let mut kad_config = kad::Config::new(StreamProtocol::new("/p2pfs/kad/1"));
            kad_config.set_query_timeout(Duration::from_secs(30));
            // No periodic bootstrap: each one walks the id space and connects to dozens of
            // peers, which then stay connected. Membership announcements already carry every
            // member's addresses (see `Cluster::redial_members` for how a node stays
            // connected); Kademlia is the address book and answers closest-peers queries.
            kad_config.set_periodic_bootstrap_interval(None);
            let mut kad =
                kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
            kad.set_mode(Some(kad::Mode::Server));
            let relay = match reach.relay_server {
                RelayServerMode::Off => None,
                mode => {
                    let mut relay =
                        relay::Behaviour::new(peer, reach::relay_config(&reach.relay_limits));
                    // The event loop decides (`EventLoop::update_reachability`), not the relay's
                    // own rule, which counts a relayed address as reachable.
                    relay.set_status(Some(if mode == RelayServerMode::On {
                        relay::Status::Enable
                    } else {
                        relay::Status::Disable
                    }));
                    Some(relay)
                }
            };
            Ok(Behaviour {
                limits: limits::ConnectionLimits::new(limits, guard.clone()),
                blocklist: Blocklist::new(guard),
                gossipsub,
                mdns: Toggle::from(mdns),
                // Address updates are pushed: a relayed address arrives after the connection.
                identify: identify::Behaviour::new(
                    identify::Config::new("/p2pfs/id/1".into(), kp.public())
                        .with_push_listen_addr_updates(true),
                ),
                kad,
                // A connection whose peer stopped answering (a cut link: TCP itself notices
                // only after minutes) is closed after one missed ping, so requests on it fail
                // at once instead of each waiting for its own timeout.
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(Duration::from_secs(2))
                        .with_timeout(Duration::from_secs(4)),
                ),
                stream: libp2p_stream::Behaviour::new(),
                relay_client,
                relay: Toggle::from(relay),
                dcutr: dcutr::Behaviour::new(peer),
                autonat: autonat::v1::Behaviour::new(peer, reach::autonat_config()),
                upnp: Toggle::from(reach.upnp.then(upnp::tokio::Behaviour::default)),
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Builds the swarm, starts listening and dialing, and spawns the event loop on the current
/// tokio runtime, among `workers` (it stops when they are cancelled).
pub fn start(config: NetConfig, workers: &Workers) -> Result<(NetHandle, NetEvents), NetError> {
    let guard = config.guard;
    let mut swarm = build_swarm_limited(
        config.keypair.clone(),
        &config.network_key,
        config.mdns,
        guard.clone(),
        config.admission,
        config.limits,
        &config.reach,
    )?;

    for t in [Topic::Membership, Topic::Namespace, Topic::Ledger] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic(&config.network_key, t))
            .map_err(|e| NetError::Build(e.to_string()))?;
    }
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let streams = swarm.behaviour().stream.new_control();
    let local = *swarm.local_peer_id();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let queued_gossip = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(parking_lot::RwLock::new(SharedState {
        relaying: config.reach.relay_server == RelayServerMode::On,
        ..SharedState::default()
    }));
    let event_loop = EventLoop {
        swarm,
        network_key: config.network_key,
        bootstrap: config.bootstrap,
        commands: cmd_rx,
        events: event_tx,
        queued_gossip: queued_gossip.clone(),
        max_queued_gossip: config.max_queued_gossip,
        connected_since: Default::default(),
        shared: shared.clone(),
        dial_failures_reported: HashSet::new(),
        dial_failures_unreported: Default::default(),
        refusals_logged: Default::default(),
        guard: guard.clone(),
        circuit_dialed: Default::default(),
        direct_dialed: Default::default(),
        reach: config.reach,
        relays: Default::default(),
        reserved_here: Default::default(),
        circuits_here: Default::default(),
        upgrade_tried: Default::default(),
        peer_addrs: Default::default(),
        relayed_superseded: Default::default(),
        overlaps: Default::default(),
        observed_ips: Default::default(),
        upnp_addrs: Default::default(),
        implausible_logged: false,
    };
    workers.spawn(event_loop.run());
    Ok((
        NetHandle {
            tx: cmd_tx,
            streams,
            local,
            guard,
            shared,
        },
        NetEvents {
            rx: event_rx,
            queued_gossip,
        },
    ))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    network_key: NetworkKey,
    bootstrap: Vec<Multiaddr>,
    commands: mpsc::Receiver<Command>,
    /// Never awaited: the loop must not wait for the program (see [`SharedState`]).
    events: mpsc::UnboundedSender<NetEvent>,
    /// Gossip events sent and not yet taken ([`NetEvents::recv`]).
    queued_gossip: Arc<AtomicUsize>,
    max_queued_gossip: usize,
    /// When each connected peer's first open connection was established.
    connected_since: std::collections::HashMap<PeerId, std::time::Instant>,
    shared: Arc<parking_lot::RwLock<SharedState>>,
    /// Bootstrap failures already logged (each is logged once).
    dial_failures_reported: HashSet<String>,
    /// Bootstrap failures not logged yet, and when each was first seen: logged only if no
    /// bootstrap peer is reached within [`BOOTSTRAP_WARN_AFTER`] (a busy peer refusing the
    /// first attempt of many nodes starting at once is not worth a warning).
    dial_failures_unreported: std::collections::HashMap<String, std::time::Instant>,
    /// The admission refusals already logged.
    refusals_logged: admit::RefusalLog,
    guard: Arc<PeerGuard>,
    reach: ReachConfig,
    /// The relayed address each peer was last dialed by (a failed hole punch is retried
    /// through it).
    circuit_dialed: std::collections::HashMap<PeerId, Multiaddr>,
    /// The direct address each connected peer was last dialed at.
    direct_dialed: std::collections::HashMap<PeerId, Multiaddr>,
    /// Members that relay (they advertise the relay protocol), and this node's reservation on
    /// each, if any.
    relays: std::collections::HashMap<PeerId, RelayUse>,
    /// Members with a reservation on this node, and the circuits through it per member: their
    /// connections are never closed as surplus (that would end the reservation or the circuit).
    reserved_here: HashSet<PeerId>,
    circuits_here: std::collections::HashMap<PeerId, usize>,
    /// Peers reached only through a relay, and when a direct connection to them was last
    /// tried ([`EventLoop::retry_direct`]).
    upgrade_tried: std::collections::HashMap<PeerId, std::time::Instant>,
    /// The addresses each connected peer listens on (identify; at most [`PEER_ADDRS`]).
    peer_addrs: std::collections::HashMap<PeerId, Vec<Multiaddr>>,
    /// Relayed connections found beside a direct one at the last reach tick: closed at the
    /// next if still there, so requests already on them finish first.
    relayed_superseded: HashSet<(PeerId, ConnectionId)>,
    /// Which connections were opened behind older ones to the same peer ([`overlap`]).
    overlaps: overlap::Overlaps,
    /// The IP addresses members last saw this node's connections come from (identify), the
    /// only ones a dial-back can honestly confirm besides its listen addresses.
    observed_ips: std::collections::VecDeque<std::net::IpAddr>,
    /// Addresses a router mapped for this node (UPnP).
    upnp_addrs: HashSet<Multiaddr>,
    /// Whether an implausible confirmation was already logged.
    implausible_logged: bool,
}

/// How many of the IP addresses members observed are kept.
const OBSERVED_IPS: usize = 16;

/// A member that relays, as this node knows it.
#[derive(Default)]
struct RelayUse {
    /// Its address as this node dialed it directly (a reservation goes there).
    addr: Option<Multiaddr>,
    /// The listener holding this node's reservation on it.
    listener: Option<libp2p::core::transport::ListenerId>,
    /// When a reservation on it last failed (it is retried after [`RELAY_RETRY`]).
    failed: Option<std::time::Instant>,
}

/// A bootstrap failure is logged if no bootstrap peer is reached within this of it.
const BOOTSTRAP_WARN_AFTER: Duration = Duration::from_secs(10);
/// A relay that refused or dropped a reservation is asked again after this.
const RELAY_RETRY: Duration = Duration::from_secs(20);
/// How many of a peer's listen addresses are kept.
const PEER_ADDRS: usize = 16;
/// A failed hole punch is tried again after this (DCUtR itself tries three times at once).
const PUNCH_RETRY: Duration = Duration::from_secs(5 * 60);

impl EventLoop {
    async fn run(mut self) {
        self.dial_bootstrap();
        // Re-dial bootstrap addresses while alone.
        let mut redial = tokio::time::interval(Duration::from_secs(5));
        let mut trim = tokio::time::interval(Duration::from_secs(10));
        let mut reach = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                // A paused node dials no one (its connections are refused anyway).
                _ = redial.tick(), if !self.guard.is_paused() => {
                    if self.shared.read().connected.is_empty() {
                        self.dial_bootstrap();
                    }
                    self.report_bootstrap_failures();
                }
                _ = trim.tick() => self.trim_connections(),
                _ = reach.tick() => {
                    self.keep_reservations();
                    self.retry_direct();
                    self.close_superseded_relayed();
                }
                _ = self.guard.pending_changed() => {
                    for peer in self.guard.take_pending() {
                        tracing::debug!(%peer, "disconnecting a hostile peer");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                    if self.guard.take_disconnect_all() {
                        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                        tracing::info!(peers = peers.len(), "paused: closing every connection");
                        for peer in peers {
                            let _ = self.swarm.disconnect_peer_id(peer);
                        }
                    }
                }
            }
        }
    }

    /// Closes surplus connections: past [`MAX_CONNECTED_PEERS`] peers, those not in a gossip
    /// mesh, not carrying a relay reservation or circuit ([`EventLoop::relay_pinned`]),
    /// connected for at least [`CONNECTION_GRACE`] and not used by a request within it, longest
    /// connected first. A request that still races a close is retried on a fresh connection by
    /// the rpc clients.
    fn trim_connections(&mut self) {
        let now = std::time::Instant::now();
        let surplus = self
            .connected_since
            .len()
            .saturating_sub(MAX_CONNECTED_PEERS);
        if surplus == 0 {
            return;
        }
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let mut idle: Vec<(std::time::Instant, PeerId)> = self
            .connected_since
            .iter()
            .filter(|(peer, since)| {
                !mesh.contains(peer)
                    && !self.relay_pinned(peer)
                    && now.saturating_duration_since(**since) >= CONNECTION_GRACE
                    && !self.guard.in_use(peer, CONNECTION_GRACE, now)
            })
            .map(|(peer, since)| (*since, *peer))
            .collect();
        idle.sort();
        for (_, peer) in idle.into_iter().take(surplus) {
            tracing::debug!(%peer, "closing a surplus connection");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Counts an admission refusal, keeps it as the last one, and logs it once per peer and
    /// side until its reason changes.
    fn on_refusal(&mut self, error: &AdmitError) {
        let AdmitError::Refused {
            peer,
            by_us,
            by_peer,
        } = error
        else {
            return;
        };
        for (side, reason) in [(RefusalSide::ByUs, by_us), (RefusalSide::ByPeer, by_peer)] {
            let Some(reason) = reason else { continue };
            match side {
                RefusalSide::ByUs => counters::ADMISSION.refused_peer(),
                RefusalSide::ByPeer => counters::ADMISSION.refused_by_peer(),
            }
            {
                let mut shared = self.shared.write();
                let refusals = &mut shared.refusals;
                match side {
                    RefusalSide::ByUs => refusals.refused_peers += 1,
                    RefusalSide::ByPeer => refusals.refused_by_peers += 1,
                }
                refusals.last = Some(AdmissionRefusal {
                    at: std::time::SystemTime::now(),
                    peer: *peer,
                    side,
                    reason: reason.clone(),
                });
            }
            if !self.refusals_logged.is_new(*peer, side, reason) {
                continue;
            }
            match side {
                RefusalSide::ByUs => tracing::warn!("refused peer {peer}: {reason}"),
                RefusalSide::ByPeer => tracing::warn!("peer {peer} refused this node: {reason}"),
            }
        }
    }

    /// Hands an event to the program without waiting (the receiver gone means the node is
    /// stopping).
    fn emit(&self, event: NetEvent) {
        let _ = self.events.send(event);
    }

    fn report(&mut self, id: GossipId, acceptance: gossipsub::MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id.0.id, &id.0.propagation, acceptance);
    }

    /// Whether `peer` is named by one of the bootstrap addresses (`.../p2p/PEER`).
    fn is_bootstrap_peer(&self, peer: &PeerId) -> bool {
        self.bootstrap.iter().any(
            |a| matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(p)) if p == *peer),
        )
    }

    /// Whether a peer named by a bootstrap address is connected (any peer, when no bootstrap
    /// address names one).
    fn bootstrap_reached(&self) -> bool {
        let shared = self.shared.read();
        let named = self
            .bootstrap
            .iter()
            .any(|a| matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))));
        if named {
            shared.connected.iter().any(|p| self.is_bootstrap_peer(p))
        } else {
            !shared.connected.is_empty()
        }
    }

    /// Logs, once each, the bootstrap failures not followed by a connection to a bootstrap
    /// peer within [`BOOTSTRAP_WARN_AFTER`]: a wrong key or address is visible without debug
    /// logs, a transient refusal at start is not.
    fn report_bootstrap_failures(&mut self) {
        if self.dial_failures_unreported.is_empty() {
            return;
        }
        if self.bootstrap_reached() {
            self.dial_failures_unreported.clear();
            return;
        }
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .dial_failures_unreported
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= BOOTSTRAP_WARN_AFTER)
            .map(|(why, _)| why.clone())
            .collect();
        for why in due {
            self.dial_failures_unreported.remove(&why);
            tracing::warn!(
                error = %why,
                "cannot connect to a bootstrap address (a peer with a different network key fails the handshake; a busy one closes connections over its limits); retrying every 5 s"
            );
            self.dial_failures_reported.insert(why);
        }
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    /// Records how a new connection reaches its peer, and the addresses worth keeping: the
    /// relayed one a peer was dialed by (a failed hole punch is retried through it), the direct
    /// one a relay was dialed at (a reservation goes there).
    fn connection_opened(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let relayed = match endpoint {
            ConnectedPoint::Dialer { address, .. } => reach::is_relayed(address),
            ConnectedPoint::Listener {
                local_addr,
                send_back_addr,
            } => reach::is_relayed(local_addr) || reach::is_relayed(send_back_addr),
        };
        let kind = if relayed {
            ConnKind::Relayed
        } else {
            ConnKind::Direct
        };
        self.shared.write().conn_kinds.opened(peer, id, kind);
        self.overlaps.opened(peer, id, relayed);
        if let ConnectedPoint::Dialer { address, .. } = endpoint {
            if relayed {
                self.circuit_dialed.insert(peer, address.clone());
            } else {
                self.direct_dialed.insert(peer, address.clone());
                self.relays.entry(peer).and_modify(|r| {
                    r.addr = Some(address.clone());
                });
            }
        }
    }

    /// Keeps track of the members that relay (those whose identify lists the relay protocol).
    fn relay_seen(&mut self, peer: PeerId, info: &identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            let used = self.relays.entry(peer).or_default();
            // Where this node reached it, else where it listens: loopback last (a relayed
            // address is advertised to others, who must be able to reach the relay there).
            let dialed = self.direct_dialed.get(&peer).cloned();
            if dialed.is_some() || used.addr.is_none() {
                let mut listening: Vec<&Multiaddr> = info
                    .listen_addrs
                    .iter()
                    .filter(|a| !reach::is_relayed(a))
                    .collect();
                listening.sort_by_key(|a| reach::is_loopback(a));
                used.addr = dialed.or_else(|| listening.first().map(|a| (*a).clone()));
            }
            self.keep_reservations();
        } else if let Some(used) = self.relays.remove(&peer)
            && let Some(listener) = used.listener
        {
            self.swarm.remove_listener(listener);
        }
    }

    /// Whether `peer`'s connection carries a relay's reservation or circuit, either way: this
    /// node's reservation on it, its reservation here, or a circuit through here.
    fn relay_pinned(&self, peer: &PeerId) -> bool {
        self.relays.get(peer).is_some_and(|r| r.listener.is_some())
            || self.reserved_here.contains(peer)
            || self.circuits_here.contains_key(peer)
    }

    /// Keeps count of the reservations and circuits this node holds for members.
    fn relayed_for(&mut self, event: &relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                self.reserved_here.insert(*src_peer_id);
            }
            // The relay reports this for every closed connection of the member, including
            // ones that held no reservation: its reservation may live on another.
            relay::Event::ReservationClosed { src_peer_id }
                if !self.swarm.is_connected(src_peer_id) =>
            {
                self.reserved_here.remove(src_peer_id);
            }
            relay::Event::ReservationTimedOut { src_peer_id } => {
                self.reserved_here.remove(src_peer_id);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                for p in [src_peer_id, dst_peer_id] {
                    *self.circuits_here.entry(*p).or_default() += 1;
                }
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                for p in [src_peer_id, dst_peer_id] {
                    if let std::collections::hash_map::Entry::Occupied(mut n) =
                        self.circuits_here.entry(*p)
                    {
                        *n.get_mut() -= 1;
                        if *n.get() == 0 {
                            n.remove();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Follows a change of reachability: an `auto` relay relays while public.
    fn update_reachability(&mut self) {
        let state = self.shared.read().reachability.state();
        if self.reach.relay_server == RelayServerMode::Auto {
            let relay = state == ReachState::Public;
            if std::mem::replace(&mut self.shared.write().relaying, relay) != relay {
                tracing::info!(
                    relay,
                    "relaying for members: {}",
                    if relay {
                        "on (publicly reachable)"
                    } else {
                        "off (not publicly reachable)"
                    }
                );
                if let Some(r) = self.swarm.behaviour_mut().relay.as_mut() {
                    r.set_status(Some(if relay {
                        relay::Status::Enable
                    } else {
                        relay::Status::Disable
                    }));
                }
            }
        }
        self.keep_reservations();
    }

    /// A private node keeps reservations on up to `relay_reservations` relays (its relayed
    /// addresses); a public one needs none.
    fn keep_reservations(&mut self) {
        let state = self.shared.read().reachability.state();
        if state == ReachState::Public {
            for used in self.relays.values_mut() {
                if let Some(listener) = used.listener.take() {
                    self.swarm.remove_listener(listener);
                }
            }
            return;
        }
        if state != ReachState::Private {
            return;
        }
        let now = std::time::Instant::now();
        let mut held = self
            .relays
            .values()
            .filter(|r| r.listener.is_some())
            .count();
        let mut candidates: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|(_, r)| {
                r.listener.is_none()
                    && r.addr.is_some()
                    && r.failed
                        .is_none_or(|t| now.duration_since(t) >= RELAY_RETRY)
            })
            .map(|(p, _)| *p)
            .collect();
        // Connected relays first: a reservation on them needs no new connection.
        candidates.sort_by_key(|p| !self.swarm.is_connected(p));
        for relay in candidates {
            if held >= self.reach.relay_reservations {
                break;
            }
            let used = self.relays.get_mut(&relay).expect("listed above");
            let addr = reach::circuit_listen_addr(relay, used.addr.as_ref().expect("filtered"));
            match self.swarm.listen_on(addr.clone()) {
                Ok(listener) => {
                    tracing::info!(%relay, %addr, "reserving a relayed address");
                    used.listener = Some(listener);
                    held += 1;
                }
                Err(e) => {
                    tracing::debug!(%relay, error = %e, "cannot reserve on a relay");
                    used.failed = Some(now);
                }
            }
        }
    }

    /// Whether `addr`, a relayed address the reservation on `listener` handed out, goes through
    /// that relay at the IP address this node reached it at: a relay's reservation reply lists
    /// the addresses to advertise, and a hostile one must not point members elsewhere.
    fn relayed_addr_of_relay(
        &self,
        listener: libp2p::core::transport::ListenerId,
        addr: &Multiaddr,
    ) -> bool {
        let Some((relay, used)) = self
            .relays
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
        else {
            return false;
        };
        let through = addr
            .iter()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| matches!(w, [libp2p::multiaddr::Protocol::P2p(p), libp2p::multiaddr::Protocol::P2pCircuit] if p == relay));
        through
            && used
                .addr
                .as_ref()
                .is_some_and(|dialed| reach::ip_of(dialed) == reach::ip_of(addr))
    }

    /// Whether `addr`, confirmed by a member's dial-back, can be this node's: its IP is one this
    /// node listens on or members saw its connections come from (AutoNAT's server dials only
    /// addresses the client sent it; a hostile member answering with another must not have it
    /// announced to the network), or a router mapped it.
    fn plausible_external(&self, addr: &Multiaddr) -> bool {
        if self.upnp_addrs.contains(addr) {
            return true;
        }
        let Some(ip) = reach::ip_of(addr) else {
            return false;
        };
        self.observed_ips.contains(&ip)
            || self
                .shared
                .read()
                .listen_addrs
                .iter()
                .any(|a| reach::ip_of(a) == Some(ip))
    }

    /// Keeps as confirmed external addresses only AutoNAT's current public address and the
    /// routers' mappings: AutoNAT moving to another address (or to private) says nothing
    /// else about the old one, which would otherwise keep the node "public" for good.
    fn prune_external(&mut self) {
        let current = self.swarm.behaviour().autonat.public_address().cloned();
        let stale: Vec<Multiaddr> = self
            .shared
            .read()
            .reachability
            .confirmed_addrs()
            .iter()
            .filter(|a| Some(*a) != current.as_ref() && !self.upnp_addrs.contains(*a))
            .cloned()
            .collect();
        for addr in stale {
            tracing::debug!(%addr, "external address no longer confirmed");
            self.swarm.remove_external_address(&addr);
            self.shared.write().reachability.expired(&addr);
        }
    }

    /// Closes the relayed connections of peers also reached directly (or by a hole punch), once
    /// they have been so for a reach tick: traffic then leaves the relay (a stream opened on the
    /// relayed one meanwhile is retried on a fresh connection by the rpc clients).
    fn close_superseded_relayed(&mut self) {
        let now = self.shared.read().conn_kinds.superseded_relayed();
        for (peer, id) in now.intersection(&self.relayed_superseded) {
            tracing::debug!(%peer, "closing a relayed connection beside a direct one");
            self.swarm.close_connection(*id);
        }
        self.relayed_superseded = now;
    }

    /// Tries to reach directly the peers reached only through a relay: at once, at their
    /// advertised direct addresses (a member on the same LAN is dialed there, where no hole
    /// punch is needed and hairpinning through the router may not work), then every
    /// [`PUNCH_RETRY`] both there and by a new relayed dial, which starts DCUtR again (the
    /// NATs' mappings may have changed, the peer may have moved). DCUtR tells only one side of
    /// a failed punch, so neither side waits for its verdict.
    fn retry_direct(&mut self) {
        let now = std::time::Instant::now();
        let mut dials = Vec::new();
        {
            let shared = self.shared.read();
            let relayed_only: Vec<PeerId> = self
                .connected_since
                .keys()
                .filter(|p| !shared.conn_kinds.of(p).is_empty() && !shared.conn_kinds.has_direct(p))
                .copied()
                .collect();
            self.upgrade_tried.retain(|p, _| relayed_only.contains(p));
            for peer in relayed_only {
                let known = self.peer_addrs.get(&peer);
                let direct: Vec<Multiaddr> = known
                    .into_iter()
                    .flatten()
                    .filter(|a| !reach::is_relayed(a))
                    .cloned()
                    .collect();
                match self.upgrade_tried.get_mut(&peer) {
                    None => {
                        self.upgrade_tried.insert(peer, now);
                        if !direct.is_empty() {
                            dials.push((peer, direct));
                        }
                    }
                    Some(when) if now.duration_since(*when) >= PUNCH_RETRY => {
                        *when = now;
                        if !direct.is_empty() {
                            dials.push((peer, direct));
                        }
                        let via = self.circuit_dialed.get(&peer).cloned().or_else(|| {
                            known
                                .into_iter()
                                .flatten()
                                .find(|a| reach::is_relayed(a))
                                .cloned()
                        });
                        if let Some(via) = via {
                            dials.push((peer, vec![via]));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for (peer, addresses) in dials {
            tracing::debug!(%peer, ?addresses, "trying to reach a relayed peer directly");
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::Always)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic: t, data } => {
                let topic = topic(&self.network_key, t);
                let len = data.len();
                match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    Ok(_) => crate::net::counters::GOSSIP.published(t.index(), len),
                    // No subscribed peer yet (alone, or just starting): anti-entropy covers it.
                    Err(e) => tracing::debug!(?t, error = %e, "gossip publish"),
                }
            }
            Command::Validated { id, acceptance } => self.report(id, acceptance),
            Command::AddAddresses { peer, addrs } => {
                for addr in addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            Command::Dial(peer) => {
                if !self.swarm.is_connected(&peer) {
                    let _ = self.swarm.dial(peer);
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                if reach::is_relayed(&address) && !self.relayed_addr_of_relay(listener_id, &address)
                {
                    tracing::warn!(%address, "a relay handed out an address that is not its own; not advertised");
                    return;
                }
                tracing::info!(%address, "listening");
                let mut shared = self.shared.write();
                if reach::is_relayed(&address) {
                    shared.reachability.relayed_listen(address.clone(), true);
                }
                if !shared.listen_addrs.contains(&address) {
                    shared.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let mut shared = self.shared.write();
                shared.listen_addrs.retain(|a| *a != address);
                shared.reachability.relayed_listen(address, false);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                {
                    let mut shared = self.shared.write();
                    for address in addresses {
                        shared.listen_addrs.retain(|a| *a != address);
                        shared.reachability.relayed_listen(address, false);
                    }
                }
                for (relay, used) in &mut self.relays {
                    if used.listener == Some(listener_id) {
                        tracing::info!(%relay, ?reason, "relay reservation ended");
                        used.listener = None;
                        used.failed = Some(std::time::Instant::now());
                    }
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                if self.plausible_external(&address) {
                    self.shared.write().reachability.confirmed(address);
                    self.prune_external();
                } else {
                    if !std::mem::replace(&mut self.implausible_logged, true) {
                        tracing::warn!(%address, "a member confirmed an address this node neither listens on nor was seen at; ignored");
                    }
                    self.swarm.remove_external_address(&address);
                }
                self.update_reachability();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.shared.write().reachability.expired(&address);
                self.update_reachability();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v1::Event::StatusChanged {
                old,
                new,
            })) => {
                tracing::info!(?old, ?new, "reachability");
                // The address members dialed back is this node's confirmed external address
                // (a relay hands those out in its reservations); AutoNAT confirms it itself
                // (`ExternalAddrConfirmed`, checked there), and the ones it confirmed before
                // go.
                self.shared
                    .write()
                    .reachability
                    .autonat(new == autonat::v1::NatStatus::Private);
                self.prune_external();
                self.update_reachability();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(connection) => {
                    tracing::info!(peer = %remote_peer_id, "hole punch succeeded: direct connection");
                    self.shared
                        .write()
                        .conn_kinds
                        .punched(remote_peer_id, connection);
                }
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punch failed; staying relayed, retrying later");
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => {
                tracing::debug!(event = ?e, "relay client");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => {
                tracing::debug!(event = ?e, "relay server");
                self.relayed_for(&e);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => match e {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "router mapped a port (UPnP)");
                    self.upnp_addrs.insert(external_addr.clone());
                    self.shared.write().reachability.confirmed(external_addr);
                    self.update_reachability();
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    tracing::info!(%external_addr, "router port mapping expired (UPnP)");
                    self.upnp_addrs.remove(&external_addr);
                    self.shared.write().reachability.expired(&external_addr);
                    self.update_reachability();
                }
                upnp::Event::GatewayNotFound => tracing::info!("no UPnP router found"),
                upnp::Event::NonRoutableGateway => {
                    tracing::info!("the UPnP router is itself behind a NAT: no mapping")
                }
            },
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                self.guard.connection_opened(peer_id);
                self.connection_opened(peer_id, connection_id, &endpoint);
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                self.connected_since
                    .entry(peer_id)
                    .or_insert_with(std::time::Instant::now);
                if self.shared.write().connected.insert(peer_id) {
                    tracing::debug!(peer = %peer_id, "connected");
                    self.emit(NetEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                connection_id,
                cause,
                ..
            } => {
                self.guard.connection_closed(peer_id, num_established);
                // An idle connection ends with a keep-alive timeout: no sign of a dead peer.
                let failed = matches!(cause, Some(libp2p::swarm::ConnectionError::IO(_)));
                for behind in self.overlaps.closed(peer_id, connection_id, failed) {
                    tracing::debug!(
                        peer = %peer_id,
                        "a dead connection closed: closing the one opened behind it, so that \
                         the reconnection exchanges gossip subscriptions"
                    );
                    self.swarm.close_connection(behind);
                }
                self.shared
                    .write()
                    .conn_kinds
                    .closed(peer_id, connection_id);
                if num_established == 0 {
                    self.connected_since.remove(&peer_id);
                    self.direct_dialed.remove(&peer_id);
                    self.circuit_dialed.remove(&peer_id);
                    self.peer_addrs.remove(&peer_id);
                    self.upgrade_tried.remove(&peer_id);
                    self.reserved_here.remove(&peer_id);
                    // A relay that left is found again by identify if it comes back; one
                    // holding this node's reservation keeps its entry until the listener
                    // closes.
                    if self
                        .relays
                        .get(&peer_id)
                        .is_some_and(|r| r.listener.is_none())
                    {
                        self.relays.remove(&peer_id);
                    }
                }
                if num_established == 0 && self.shared.write().connected.remove(&peer_id) {
                    self.emit(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                error: libp2p::swarm::DialError::Transport(errors),
                ..
            } if errors.iter().any(|(_, e)| refusal_in(e).is_some()) => {
                for (_, e) in &errors {
                    if let Some(refusal) = refusal_in(e) {
                        self.on_refusal(refusal);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Transport(error),
                ..
            } if refusal_in(&error).is_some() => {
                if let Some(refusal) = refusal_in(&error) {
                    self.on_refusal(refusal);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. }
                if peer_id.is_none_or(|p| self.is_bootstrap_peer(&p)) =>
            {
                // A bootstrap address (with or without its peer id): said once, if it keeps
                // failing ([`EventLoop::report_bootstrap_failures`]).
                let why = error.to_string();
                if !self.dial_failures_reported.contains(&why) {
                    self.dial_failures_unreported
                        .entry(why)
                        .or_insert_with(std::time::Instant::now);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Most often a peer with another network key: its Noise handshake fails.
                tracing::debug!(%send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.relay_seen(peer_id, &info);
                // Identify sends every listen address to everyone: one on another machine
                // (it sees us at a non-loopback address) keeps its loopback and link-local
                // ones to itself.
                let mut info = info;
                if !reach::is_loopback(&info.observed_addr) {
                    info.listen_addrs = reach::for_peers(info.listen_addrs);
                }
                self.peer_addrs.insert(
                    peer_id,
                    info.listen_addrs.iter().take(PEER_ADDRS).cloned().collect(),
                );
                if let Some(ip) = reach::ip_of(&info.observed_addr)
                    && !self.observed_ips.contains(&ip)
                {
                    if self.observed_ips.len() == OBSERVED_IPS {
                        self.observed_ips.pop_front();
                    }
                    self.observed_ips.push_back(ip);
                }
                for addr in info.listen_addrs.into_iter().take(16) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Strict validation: the source is signed, so it is whom to blame or throttle
                // (an honest peer forwards only what it validated).
                let from = message.source.unwrap_or(propagation_source);
                let id = GossipId(Box::new(GossipIdInner {
                    id: message_id,
                    propagation: propagation_source,
                    source: from,
                }));
                let t = if message.topic == topic(&self.network_key, Topic::Membership).hash() {
                    Topic::Membership
                } else if message.topic == topic(&self.network_key, Topic::Namespace).hash() {
                    Topic::Namespace
                } else if message.topic == topic(&self.network_key, Topic::Ledger).hash() {
                    Topic::Ledger
                } else {
                    self.report(id, gossipsub::MessageAcceptance::Ignore);
                    return;
                };
                crate::net::counters::GOSSIP.received(t.index(), message.data.len());
                if !self.guard.allow_gossip(from) {
                    crate::net::counters::GOSSIP.dropped();
                    self.report(id, gossipsub::MessageAcceptance::Ignore);
                    return;
                }
                // Past the queue bound the message is dropped here, unforwarded: the loop
                // never waits for the program.
                if self.queued_gossip.load(Ordering::Relaxed) >= self.max_queued_gossip {
                    tracing::debug!(%from, "gossip queue full; a message dropped");
                    crate::net::counters::GOSSIP.dropped();
                    self.report(id, gossipsub::MessageAcceptance::Ignore);
                    return;
                }
                self.queued_gossip.fetch_add(1, Ordering::Relaxed);
                self.emit(NetEvent::Gossip {
                    topic: t,
                    from,
                    data: message.data,
                    id,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                ..
            })) => {
                self.emit(NetEvent::Subscribed(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) => {
                tracing::debug!(%peer, error = %e, "ping failed; closing the connection");
                self.overlaps.ping_failed(connection);
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &NetworkKey, bootstrap: Vec<Multiaddr>, queue: usize) -> (NetHandle, NetEvents) {
        node_with(
            key,
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap,
            queue,
            ReachConfig::default(),
        )
    }

    fn node_with(
        key: &NetworkKey,
        listen: Vec<Multiaddr>,
        bootstrap: Vec<Multiaddr>,
        queue: usize,
        reach: ReachConfig,
    ) -> (NetHandle, NetEvents) {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        start(
            config(key, &keypair, listen, bootstrap, queue, reach),
            &Workers::new(),
        )
        .unwrap()
    }

    fn config(
        key: &NetworkKey,
        keypair: &libp2p::identity::Keypair,
        listen: Vec<Multiaddr>,
        bootstrap: Vec<Multiaddr>,
        queue: usize,
        reach: ReachConfig,
    ) -> NetConfig {
        NetConfig {
            keypair: keypair.clone(),
            network_key: key.clone(),
            listen,
            bootstrap,
            mdns: false,
            max_queued_gossip: queue,
            limits: limits::AdmissionLimits::default(),
            reach,
            guard: PeerGuard::new(),
            admission: Arc::new(admit::KeyOnlyAdmission),
        }
    }

    /// A node with the given identity and its own workers (to stop it alone).
    fn node_as(
        key: &NetworkKey,
        keypair: &libp2p::identity::Keypair,
        bootstrap: Vec<Multiaddr>,
    ) -> (NetHandle, NetEvents, Workers) {
        let workers = Workers::new();
        let listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let (handle, events) = start(
            config(
                key,
                keypair,
                listen,
                bootstrap,
                1024,
                ReachConfig::default(),
            ),
            &workers,
        )
        .unwrap();
        (handle, events, workers)
    }

    /// A peer that comes back (a new process, the same identity) while this node still holds
    /// its previous connection hears this node and is heard by it once that connection is gone.
    /// gossipsub tells a peer this node's subscriptions only on its first connection, so
    /// the new process, connected second, never learnt them and sent this node nothing: the
    /// soak saw a restarted node stay dead on every other node for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_back_while_its_old_connection_lingers_is_heard_once_that_one_goes() {
        let key = NetworkKey::generate();
        let (here, mut here_events) = node(&key, vec![], 1024);
        eventually("listening", || !here.listen_addrs().is_empty()).await;
        let addr = here.listen_addrs()[0].clone();
        let identity = libp2p::identity::Keypair::generate_ed25519();
        let (old, mut old_events, old_workers) = node_as(&key, &identity, vec![addr.clone()]);
        tokio::spawn(async move { while old_events.recv().await.is_some() {} });
        wait_subscribed(&mut here_events, old.local, "the first process subscribes").await;
        // The same identity again, connecting while the first process's connection is open.
        let (new, mut new_events, new_workers) = node_as(&key, &identity, vec![addr]);
        tokio::spawn(async move { while new_events.recv().await.is_some() {} });
        eventually("the second process connected", || {
            new.connected() == vec![here.local]
        })
        .await;
        old_workers.stop(Duration::from_secs(5)).await;
        // The second process says something every 300 ms until it is heard.
        let speaker = {
            let new = new.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    new.publish(Topic::Membership, format!("back {i}").into_bytes());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        let heard = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match here_events.recv().await {
                    Some(NetEvent::Gossip { data, id, from, .. }) => {
                        here.validated(id, Verdict::Accept);
                        if from == new.local && data.starts_with(b"back") {
                            break;
                        }
                    }
                    Some(_) => {}
                    None => panic!("node stopped"),
                }
            }
        })
        .await;
        speaker.abort();
        new_workers.stop(Duration::from_secs(5)).await;
        heard.expect("the second process is heard once the first one's connection is gone");
    }

    /// Takes `events` until `peer` subscribed (20 s at most).
    async fn wait_subscribed(events: &mut NetEvents, peer: PeerId, what: &str) {
        let subscribed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.recv().await {
                    Some(NetEvent::Subscribed(p)) if p == peer => break,
                    Some(_) => {}
                    None => panic!("node stopped"),
                }
            }
        });
        subscribed.await.expect(what);
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A node whose program does not take its events (busy, or waiting on the network) keeps
    /// answering queries and keeps its event loop running; gossip beyond the queue bound is
    /// dropped, connection events are not. Before, the loop waited for room in the event
    /// channel while the program waited for the loop's answer: nodes of a 64-node network
    /// stopped for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_does_not_take_its_events_stays_responsive_and_bounded() {
        const QUEUE: usize = 20;
        let key = NetworkKey::generate();
        let (slow, mut slow_events) = node(&key, vec![], QUEUE);
        eventually("slow node listening", || !slow.listen_addrs().is_empty()).await;
        let addr = slow.listen_addrs()[0].clone();
        let (fast, mut fast_events) = node(&key, vec![addr], 1024);
        // The fast node's program takes its events; wait until the slow node subscribed.
        wait_subscribed(&mut fast_events, slow.local, "the slow node subscribes").await;
        // Five times the queue bound, paced under the per-source rate limit.
        for i in 0..QUEUE * 5 {
            fast.publish(Topic::Namespace, format!("message {i}").into_bytes());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Queries answer at once, and the loop still runs: it hears what the fast node says.
        assert_eq!(slow.connected(), vec![fast.local]);
        assert_eq!(slow.connected_count(), 1);
        slow.publish(Topic::Namespace, b"still here".to_vec());
        let heard = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match fast_events.recv().await {
                    Some(NetEvent::Gossip { data, id, .. }) => {
                        fast.validated(id, Verdict::Accept);
                        if data == b"still here" {
                            break;
                        }
                    }
                    Some(_) => {}
                    None => panic!("fast node stopped"),
                }
            }
        });
        heard.await.expect("the slow node's loop still runs");
        // What waited: the connection event, then at most QUEUE gossip messages.
        let mut gossip = 0;
        let mut connected = false;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), slow_events.recv()).await
        {
            match event {
                NetEvent::Gossip { .. } => gossip += 1,
                NetEvent::Connected(p) => connected |= p == fast.local,
                _ => {}
            }
        }
        assert!(connected, "connection events are never dropped");
        assert_eq!(
            gossip, QUEUE,
            "gossip waits up to the bound, the rest is dropped"
        );
        // Once taken, the queue has room again.
        fast.publish(Topic::Namespace, b"after".to_vec());
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(NetEvent::Gossip { data, .. }) = slow_events.recv().await
                    && data == b"after"
                {
                    break;
                }
            }
        });
        again.await.expect("the queue drains and takes new gossip");
    }

    /// A node that listens nowhere finds itself private, reserves a relayed address on the
    /// member that relays (which finds itself public), and a third member reaches it through
    /// that address: status and the connection kinds say so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_node_is_reached_through_a_relaying_member() {
        let key = NetworkKey::generate();
        // Takes a node's events, as its program does.
        fn drain(mut events: NetEvents) {
            tokio::spawn(async move { while events.recv().await.is_some() {} });
        }
        let relay_reach = ReachConfig {
            relay_server: RelayServerMode::Auto,
            ..ReachConfig::default()
        };
        let (relay, relay_events) = node_with(
            &key,
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            vec![],
            64,
            relay_reach,
        );
        drain(relay_events);
        eventually("relay listening", || !relay.listen_addrs().is_empty()).await;
        let relay_addr = relay.listen_addrs()[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(relay.local));
        let (private, private_events) = node_with(
            &key,
            vec![],
            vec![relay_addr.clone()],
            64,
            ReachConfig::default(),
        );
        drain(private_events);
        let deadline = Duration::from_secs(60);
        eventually_within(
            "the relay is found public (the private node dialed it back)",
            deadline,
            || relay.reachability().0 == ReachState::Public,
        )
        .await;
        assert!(relay.relaying(), "an auto relay relays while public");
        eventually_within("the private node finds itself private", deadline, || {
            private.reachability().0 == ReachState::Private
        })
        .await;
        assert!(!private.relaying());
        eventually_within("the private node holds a relayed address", deadline, || {
            private.reachability().1.iter().any(reach::is_relayed)
        })
        .await;
        let (third, third_events) = node_with(
            &key,
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            vec![relay_addr],
            64,
            ReachConfig::default(),
        );
        drain(third_events);
        third.add_addresses(private.local, private.listen_addrs());
        third.dial(private.local);
        eventually_within("the third node reaches the private one", deadline, || {
            !third.connection_kinds(&private.local).is_empty()
        })
        .await;
        // The connection is relayed, or already hole-punched (the third node listens, so the
        // private one can dial it back directly); never plainly direct: nothing can dial the
        // private node.
        let kinds = third.connection_kinds(&private.local);
        assert!(
            kinds
                .iter()
                .all(|k| matches!(k, ConnKind::Relayed | ConnKind::HolePunched)),
            "{kinds:?}"
        );
        let kinds = relay.connection_kinds(&private.local);
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| *k == ConnKind::Direct),
            "the relay and the private node are connected directly: {kinds:?}"
        );
    }

    async fn eventually_within(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Chunk-sized data crosses a connection that can only be relayed (neither end listens, so
    /// no hole punch can succeed): the relay's limits carry it, and the connection stays
    /// relayed. The libp2p defaults (128 KiB per circuit) would cut it off.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_cross_a_relayed_connection() {
        use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
        fn drain(mut events: NetEvents) {
            tokio::spawn(async move { while events.recv().await.is_some() {} });
        }
        let key = NetworkKey::generate();
        let (relay, relay_events) = node_with(
            &key,
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            vec![],
            64,
            ReachConfig::default(),
        );
        drain(relay_events);
        eventually("relay listening", || !relay.listen_addrs().is_empty()).await;
        let relay_addr = relay.listen_addrs()[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(relay.local));
        let mut private = Vec::new();
        for _ in 0..2 {
            let (node, events) = node_with(
                &key,
                vec![],
                vec![relay_addr.clone()],
                64,
                ReachConfig::default(),
            );
            drain(events);
            private.push(node);
        }
        let deadline = Duration::from_secs(60);
        for node in &private {
            eventually_within("a private node holds a relayed address", deadline, || {
                node.reachability().1.iter().any(reach::is_relayed)
            })
            .await;
        }
        let (sender, receiver) = (&private[0], &private[1]);
        const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pfs/test-relayed/1");
        const LEN: usize = 3 << 20;
        let mut incoming = receiver.streams.clone().accept(PROTOCOL).unwrap();
        let received = tokio::spawn(async move {
            let (_, mut stream) = incoming.next().await.unwrap();
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await.unwrap();
            data
        });
        sender.add_addresses(receiver.local, receiver.listen_addrs());
        sender.dial(receiver.local);
        eventually_within("the sender reaches the receiver", deadline, || {
            !sender.connection_kinds(&receiver.local).is_empty()
        })
        .await;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let mut stream = sender
            .streams
            .clone()
            .open_stream(receiver.local, PROTOCOL)
            .await
            .unwrap();
        stream.write_all(&data).await.unwrap();
        stream.close().await.unwrap();
        let got = tokio::time::timeout(deadline, received)
            .await
            .expect("the data arrives")
            .unwrap();
        assert!(got == data, "{} bytes of {LEN} arrived intact", got.len());
        assert_eq!(
            sender.connection_kinds(&receiver.local),
            vec![ConnKind::Relayed]
        );
        assert_eq!(
            receiver.connection_kinds(&sender.local),
            vec![ConnKind::Relayed],
            "the accepting side sees it relayed too"
        );
    }
}
