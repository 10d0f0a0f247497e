//! The network: one event loop owns the libp2p `Swarm`; the rest of the program talks to it
//! through a cloneable [`NetHandle`] (commands, with oneshot replies where there is an answer)
//! and hears from it through a channel of [`NetEvent`]s. Bulk transfers do not go through the
//! loop: they use libp2p-stream `Control`s, which open streams directly.
//!
//! Admission: the Noise handshake carries a prologue derived from the network key. Both sides
//! must present the same prologue or the handshake fails, so a peer without the key never gets
//! a connection, at no cost per byte (pnet, measured here, cost 3x the CPU per byte).
//!
//! Hostile peers ([`guard`]): gossip is validated before it is forwarded (the cluster decodes
//! and checks every message and reports a verdict), rate-limited per signed source, and the
//! peers [`guard::PeerGuard`] finds guilty of offences are disconnected and, when they repeat,
//! blocked.

pub mod guard;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, kad, mdns, noise, ping, tcp,
    yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::identity::NetworkKey;
use guard::{Blocklist, Offence, PeerGuard};

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
}

pub struct NetConfig {
    pub keypair: libp2p::identity::Keypair,
    pub network_key: NetworkKey,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
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
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Connected(oneshot::Sender<Vec<PeerId>>),
}

#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    pub control: libp2p_stream::Control,
    pub local: PeerId,
    /// Offences, per-peer limits and the block list.
    pub guard: Arc<PeerGuard>,
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

    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::ListenAddrs(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn connected(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Connected(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Everything a node speaks. Public so test tools (`examples/rogue_peer.rs`) join a network
/// exactly as a node does.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First: a blocked peer's connection is denied before any other protocol sees it.
    pub blocklist: Blocklist,
    pub gossipsub: gossipsub::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub ping: ping::Behaviour,
    pub stream: libp2p_stream::Behaviour,
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
    };
    gossipsub::IdentTopic::new(format!("p2pfs/{}/{name}", key.fingerprint()))
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
/// prologue, Yamux, and [`Behaviour`]; blocked peers per `guard`. Not listening, not subscribed.
pub fn build_swarm(
    keypair: libp2p::identity::Keypair,
    network_key: &NetworkKey,
    mdns_enabled: bool,
    guard: Arc<PeerGuard>,
) -> Result<Swarm<Behaviour>, NetError> {
    let prologue = admission_prologue(network_key);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            move |kp: &libp2p::identity::Keypair| {
                noise::Config::new(kp).map(|c| c.with_prologue(prologue.clone()))
            },
            yamux_config,
        )
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|kp| {
            let peer = kp.public().to_peer_id();
            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(MAX_GOSSIP)
                .validation_mode(gossipsub::ValidationMode::Strict)
                // Nothing is forwarded before the cluster has checked it (NetHandle::validated).
                .validate_messages()
                .heartbeat_interval(Duration::from_millis(700))
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
            let mut kad =
                kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                blocklist: Blocklist::new(guard),
                gossipsub,
                mdns: Toggle::from(mdns),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/p2pfs/id/1".into(),
                    kp.public(),
                )),
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
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Builds the swarm, starts listening and dialing, and spawns the event loop on the current
/// tokio runtime. The node's [`PeerGuard`] is installed for the process.
pub fn start(config: NetConfig) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let guard = PeerGuard::new();
    guard.install();
    let mut swarm = build_swarm(
        config.keypair.clone(),
        &config.network_key,
        config.mdns,
        guard.clone(),
    )?;

    for t in [Topic::Membership, Topic::Namespace] {
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
    let control = swarm.behaviour().stream.new_control();
    let local = *swarm.local_peer_id();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (event_tx, event_rx) = mpsc::channel(1024);
    let event_loop = EventLoop {
        swarm,
        network_key: config.network_key,
        bootstrap: config.bootstrap,
        commands: cmd_rx,
        events: event_tx,
        connected: HashSet::new(),
        listen_addrs: Vec::new(),
        dial_failures_reported: HashSet::new(),
        guard: guard.clone(),
    };
    tokio::spawn(event_loop.run());
    Ok((
        NetHandle {
            tx: cmd_tx,
            control,
            local,
            guard,
        },
        event_rx,
    ))
}

async fn emit(events: &mpsc::Sender<NetEvent>, event: NetEvent) {
    let _ = events.send(event).await;
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    network_key: NetworkKey,
    bootstrap: Vec<Multiaddr>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    connected: HashSet<PeerId>,
    /// Concrete addresses we listen on (a wildcard listener expands to one per interface).
    listen_addrs: Vec<Multiaddr>,
    /// Bootstrap failures already logged (each is logged once).
    dial_failures_reported: HashSet<String>,
    guard: Arc<PeerGuard>,
}

impl EventLoop {
    async fn run(mut self) {
        self.dial_bootstrap();
        // Re-dial bootstrap addresses while alone; refresh Kademlia now and then so peers
        // beyond the LAN are found through any peer.
        let mut redial = tokio::time::interval(Duration::from_secs(5));
        let mut kad_refresh = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                _ = redial.tick() => {
                    if self.connected.is_empty() {
                        self.dial_bootstrap();
                    }
                }
                _ = kad_refresh.tick() => {
                    if !self.connected.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                _ = self.guard.pending_changed() => {
                    for peer in self.guard.take_pending() {
                        tracing::debug!(%peer, "disconnecting a hostile peer");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
        }
    }

    fn report(&mut self, id: GossipId, acceptance: gossipsub::MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id.0.id, &id.0.propagation, acceptance);
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic: t, data } => {
                let topic = topic(&self.network_key, t);
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    // No subscribed peer yet (alone, or just starting): anti-entropy covers it.
                    tracing::debug!(?t, error = %e, "gossip publish");
                }
            }
            Command::Validated { id, acceptance } => self.report(id, acceptance),
            Command::AddAddresses { peer, addrs } => {
                for addr in addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            Command::Dial(peer) => {
                if !self.connected.contains(&peer) {
                    let _ = self.swarm.dial(peer);
                }
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.connected.iter().copied().collect());
            }
        }
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.guard.connection_opened(peer_id);
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                if self.connected.insert(peer_id) {
                    tracing::debug!(peer = %peer_id, "connected");
                    emit(&self.events, NetEvent::Connected(peer_id)).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.guard.connection_closed(peer_id, num_established);
                if num_established == 0 && self.connected.remove(&peer_id) {
                    emit(&self.events, NetEvent::Disconnected(peer_id)).await;
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: None,
                error,
                ..
            } => {
                // A bootstrap address (dialed without a peer id): say once why it fails, so a
                // wrong network key or address is visible without debug logs.
                let why = error.to_string();
                if self.dial_failures_reported.insert(why.clone()) {
                    tracing::warn!(
                        error = %why,
                        "cannot connect to a bootstrap address (a peer with a different network key fails the handshake); retrying every 5 s"
                    );
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
                    if !self.connected.contains(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
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
                } else {
                    self.report(id, gossipsub::MessageAcceptance::Ignore);
                    return;
                };
                if !self.guard.allow_gossip(from) {
                    self.report(id, gossipsub::MessageAcceptance::Ignore);
                    return;
                }
                emit(
                    &self.events,
                    NetEvent::Gossip {
                        topic: t,
                        from,
                        data: message.data,
                        id,
                    },
                )
                .await;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                ..
            })) => {
                emit(&self.events, NetEvent::Subscribed(peer_id)).await;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) => {
                tracing::debug!(%peer, error = %e, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }
}
