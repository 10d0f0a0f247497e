//! Reachability beyond a LAN: whether this node can be dialed from outside (AutoNAT), relays
//! among members (circuit relay v2), hole punching (DCUtR) and, when asked for, UPnP port
//! mapping; and what kind each connection is (direct, hole-punched, relayed).
//!
//! Every part runs on admitted connections only: AutoNAT requests, relay reservations and
//! circuit requests arrive on a connection that passed Noise with the network key's prologue and
//! the admission handshake, and a connection through a relay runs the same Noise + admission +
//! yamux upgrade end to end as a TCP one (`net::build_swarm_limited` composes the relay client
//! transport by hand for that). A relay only forwards bytes it cannot read between two members.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, relay};
use serde::{Deserialize, Serialize};

/// Whether this node relays for other members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayServerMode {
    /// Relay while AutoNAT finds this node publicly reachable (a private node's reservations
    /// would be useless to the members that cannot reach it either).
    #[default]
    Auto,
    /// Always relay (a node known to be reachable, e.g. with a forwarded port).
    On,
    /// Never relay.
    Off,
}

/// What a relay gives the members it relays for. A circuit carries a whole connection (chunks,
/// sync, gossip) between two members that cannot reach each other directly, so the limits are
/// sized for data: the libp2p defaults (2 min, 128 KiB per circuit) carry a hole punch, not a
/// 1 MiB chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayLimits {
    /// Circuits open through this node at once (all members together).
    pub max_circuits: usize,
    /// Circuits open at once per member (either end).
    pub max_circuits_per_peer: usize,
    /// Bytes a circuit carries before the relay closes it (both directions); the members
    /// reconnect through it or another relay, within the circuit rate.
    pub max_circuit_bytes: u64,
    /// Age at which the relay closes a circuit.
    pub max_circuit_duration: Duration,
    /// New circuits each member may open per minute (a burst of that many, then one per
    /// `60 / n` seconds).
    pub circuits_per_minute: u32,
    /// Members that may hold a reservation (a relayed address) here at once.
    pub max_reservations: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_circuits: 32,
            max_circuits_per_peer: 8,
            max_circuit_bytes: 1_000_000_000,
            max_circuit_duration: Duration::from_secs(60 * 60),
            circuits_per_minute: 6,
            max_reservations: 128,
        }
    }
}

/// The reachability parts of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct ReachConfig {
    pub relay_server: RelayServerMode,
    pub relay_limits: RelayLimits,
    /// Ask the router (UPnP IGD) to forward the listening port. Off unless asked for: a node
    /// that opens ports on a router nobody told it to is a surprise to its owner.
    pub upnp: bool,
    /// Relays a private node keeps a reservation on (its relayed addresses), at most.
    pub relay_reservations: usize,
}

impl Default for ReachConfig {
    fn default() -> Self {
        Self {
            relay_server: RelayServerMode::Auto,
            relay_limits: RelayLimits::default(),
            upnp: false,
            relay_reservations: 2,
        }
    }
}

/// The relay server's configuration for `limits`. Whether it serves at all is its advertised
/// status, set by the event loop (`relay::Behaviour::set_status`): always for
/// [`RelayServerMode::On`], while publicly reachable for [`RelayServerMode::Auto`].
pub fn relay_config(limits: &RelayLimits) -> relay::Config {
    let per_minute = NonZeroU32::new(limits.circuits_per_minute.max(1)).expect("at least 1");
    let mut config = relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: 2,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits
            .max_circuit_duration
            .min(Duration::from_secs(u32::MAX.into())),
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    };
    // Per source peer only: the default also limits per source IP, and members behind one NAT
    // share an IP.
    config.circuit_src_rate_limiters.clear();
    config.circuit_src_per_peer(per_minute, Duration::from_secs(60) / per_minute.get())
}

/// What a node knows of its own reachability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReachState {
    /// A member dialed one of this node's addresses back (or the router mapped a port).
    Public,
    /// Members tried this node's addresses and none answered: behind a NAT or a firewall.
    Private,
    /// Not tested yet (no other member connected, or no address to test).
    #[default]
    Unknown,
}

/// This node's reachability, kept by the event loop.
#[derive(Clone, Debug, Default)]
pub struct Reachability {
    /// External addresses confirmed reachable (not relayed ones).
    confirmed: Vec<Multiaddr>,
    /// AutoNAT found members could not dial this node back.
    private: bool,
    /// Relayed addresses this node listens on (`.../p2p-circuit`).
    relayed: Vec<Multiaddr>,
}

impl Reachability {
    /// Public once an address others can reach from beyond a LAN is confirmed; private when
    /// members could not dial this node back, or could only at a LAN address (a member on the
    /// same LAN answering says nothing about the members beyond it, who still need a relay).
    pub fn state(&self) -> ReachState {
        if self.confirmed.iter().any(|a| !is_lan_only(a)) {
            ReachState::Public
        } else if self.private || !self.confirmed.is_empty() {
            ReachState::Private
        } else {
            ReachState::Unknown
        }
    }

    /// The addresses others reach this node by: confirmed ones when public, else the relayed
    /// ones (then the LAN ones members confirmed).
    pub fn addrs(&self) -> Vec<Multiaddr> {
        if self.state() == ReachState::Public {
            self.confirmed.clone()
        } else {
            self.relayed
                .iter()
                .chain(&self.confirmed)
                .cloned()
                .collect()
        }
    }

    /// The confirmed external addresses (relayed ones never are).
    pub fn confirmed_addrs(&self) -> &[Multiaddr] {
        &self.confirmed
    }

    pub fn relayed(&self) -> &[Multiaddr] {
        &self.relayed
    }

    /// AutoNAT's finding: members could (or could not) dial this node back.
    pub(crate) fn autonat(&mut self, private: bool) {
        self.private = private;
    }

    pub(crate) fn confirmed(&mut self, addr: Multiaddr) {
        if !is_relayed(&addr) && !self.confirmed.contains(&addr) {
            self.confirmed.push(addr);
        }
    }

    pub(crate) fn expired(&mut self, addr: &Multiaddr) {
        self.confirmed.retain(|a| a != addr);
    }

    pub(crate) fn relayed_listen(&mut self, addr: Multiaddr, open: bool) {
        self.relayed.retain(|a| *a != addr);
        if open {
            self.relayed.push(addr);
        }
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether `addr` is reachable only within a private network: RFC 1918, carrier-grade NAT
/// (100.64.0.0/10), link-local, IPv6 unique-local. Loopback is not: a network on one machine
/// reaches it from every member.
pub fn is_lan_only(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        Protocol::Ip6(ip) => {
            let first = ip.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
        _ => false,
    })
}

/// The IP address of `addr`, if it has one.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Whether `addr` is on a loopback interface.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Whether `addr` (its first IP: the relay's for a relayed one) reaches only this host or
/// this link: loopback, IPv4 169.254/16, IPv6 fe80::/10.
pub fn is_host_or_link_local(addr: &Multiaddr) -> bool {
    match ip_of(addr) {
        Some(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Some(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80,
        None => false,
    }
}

/// The addresses worth telling other machines of: `addrs` without the loopback and link-local
/// ones (a peer on another machine would dial itself, or a link it is not on), unless there
/// are no others (a network on one machine: its members reach each other only there).
pub fn for_peers(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    if addrs.iter().all(is_host_or_link_local) {
        return addrs;
    }
    addrs
        .into_iter()
        .filter(|a| !is_host_or_link_local(a))
        .collect()
}

/// How a connection reaches its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnKind {
    /// Dialed or accepted directly.
    Direct,
    /// Direct, opened by a hole punch (DCUtR) after a relayed connection.
    HolePunched,
    /// Through a relay (a member's circuit).
    Relayed,
}

impl ConnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Direct => "direct",
            ConnKind::HolePunched => "hole-punched",
            ConnKind::Relayed => "relayed",
        }
    }
}

/// AutoNAT (v1) for members: any member may be asked to dial back, private addresses included
/// (a network of friends' machines, or a lab of namespaces, is not on global addresses), and the
/// tests are repeated often enough that a node learns it is reachable within seconds of its
/// first connections.
///
/// Not v2: its server answers only on connections the client dialed, so a lone public member,
/// dialed by everyone and able to dial no one behind the NATs, could never learn it is public
/// (and would never relay).
pub fn autonat_config() -> libp2p::autonat::v1::Config {
    libp2p::autonat::v1::Config {
        timeout: Duration::from_secs(15),
        boot_delay: Duration::from_secs(3),
        retry_interval: Duration::from_secs(15),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(10),
        confidence_max: 2,
        only_global_ips: false,
        ..Default::default()
    }
}

/// The kind of every open connection, per peer.
#[derive(Clone, Debug, Default)]
pub struct ConnKinds(HashMap<PeerId, Vec<(ConnectionId, ConnKind)>>);

impl ConnKinds {
    pub(crate) fn opened(&mut self, peer: PeerId, id: ConnectionId, kind: ConnKind) {
        self.0.entry(peer).or_default().push((id, kind));
    }

    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.0.get_mut(&peer) {
            conns.retain(|(c, _)| *c != id);
            if conns.is_empty() {
                self.0.remove(&peer);
            }
        }
    }

    /// Marks `id` hole-punched; false if it is not open (yet).
    pub(crate) fn punched(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        let Some(conns) = self.0.get_mut(&peer) else {
            return false;
        };
        match conns.iter_mut().find(|(c, _)| *c == id) {
            Some((_, kind)) => {
                *kind = ConnKind::HolePunched;
                true
            }
            None => false,
        }
    }

    /// The kinds of `peer`'s open connections, best first (direct, hole-punched, relayed).
    pub fn of(&self, peer: &PeerId) -> Vec<ConnKind> {
        let mut kinds: Vec<ConnKind> = self
            .0
            .get(peer)
            .map(|c| c.iter().map(|(_, k)| *k).collect())
            .unwrap_or_default();
        kinds.sort();
        kinds
    }

    /// Relayed connections of peers that also have a direct or hole-punched one: they cost a
    /// relay's bandwidth and CPU for nothing.
    pub(crate) fn superseded_relayed(&self) -> HashSet<(PeerId, ConnectionId)> {
        self.0
            .iter()
            .filter(|(_, conns)| conns.iter().any(|(_, k)| *k != ConnKind::Relayed))
            .flat_map(|(peer, conns)| {
                conns
                    .iter()
                    .filter(|(_, k)| *k == ConnKind::Relayed)
                    .map(|(id, _)| (*peer, *id))
            })
            .collect()
    }

    /// Whether `peer` has a connection that is not relayed.
    pub fn has_direct(&self, peer: &PeerId) -> bool {
        self.of(peer)
            .first()
            .is_some_and(|k| *k != ConnKind::Relayed)
    }
}

/// The address to listen on for a reservation on `relay`, reached at `addr` (the relay's own
/// address, as dialed).
pub fn circuit_listen_addr(relay: PeerId, addr: &Multiaddr) -> Multiaddr {
    let mut base: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    base.push(Protocol::P2p(relay));
    base.with(Protocol::P2pCircuit)
}

#[cfg(test)]
mod tests {
    /// A node listening on every interface tells others its LAN and public addresses, not
    /// 127.0.0.1 nor link-local ones; a node on loopback alone still tells its loopback ones.
    #[test]
    fn loopback_and_link_local_addresses_go_only_where_nothing_else_is() {
        let a = |s: &str| s.parse::<libp2p::Multiaddr>().unwrap();
        let everywhere = vec![
            a("/ip4/127.0.0.1/tcp/4001"),
            a("/ip4/192.168.1.20/tcp/4001"),
            a("/ip6/::1/tcp/4001"),
            a("/ip6/fe80::1/tcp/4001"),
            a("/ip4/169.254.3.4/tcp/4001"),
            a("/ip4/203.0.113.5/tcp/4001"),
        ];
        assert_eq!(
            super::for_peers(everywhere),
            vec![
                a("/ip4/192.168.1.20/tcp/4001"),
                a("/ip4/203.0.113.5/tcp/4001")
            ]
        );
        let local = vec![a("/ip4/127.0.0.1/tcp/4001"), a("/ip6/::1/tcp/4001")];
        assert_eq!(super::for_peers(local.clone()), local);
    }

    use super::*;

    #[test]
    fn state_follows_tests_and_confirmations() {
        let mut r = Reachability::default();
        assert_eq!(r.state(), ReachState::Unknown);
        let a: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        r.autonat(true);
        assert_eq!(r.state(), ReachState::Private);
        let relay = PeerId::random();
        let circuit = circuit_listen_addr(relay, &"/ip4/198.51.100.7/tcp/4001".parse().unwrap());
        r.confirmed(circuit.clone());
        assert_eq!(
            r.state(),
            ReachState::Private,
            "a relayed address is no proof"
        );
        r.relayed_listen(circuit.clone(), true);
        assert_eq!(r.addrs(), vec![circuit.clone()]);
        r.confirmed(a.clone());
        assert_eq!(r.state(), ReachState::Public);
        assert_eq!(r.addrs(), vec![a.clone()]);
        r.expired(&a);
        assert_eq!(r.state(), ReachState::Private);
        r.autonat(false);
        assert_eq!(r.state(), ReachState::Unknown);
        // A member on this node's LAN dialing it back proves nothing about the others.
        let lan: Multiaddr = "/ip4/192.168.1.2/tcp/4001".parse().unwrap();
        r.confirmed(lan.clone());
        assert_eq!(r.state(), ReachState::Private);
        assert_eq!(r.addrs(), vec![circuit, lan]);
    }

    #[test]
    fn lan_only_addresses() {
        for a in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ] {
            assert!(is_lan_only(&a.parse().unwrap()), "{a}");
        }
        for a in [
            "/ip4/198.51.100.2/tcp/1",
            "/ip4/8.8.8.8/tcp/1",
            "/ip4/100.128.0.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
        ] {
            assert!(!is_lan_only(&a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn connection_kinds_best_first() {
        let mut k = ConnKinds::default();
        let p = PeerId::random();
        k.opened(p, ConnectionId::new_unchecked(1), ConnKind::Relayed);
        assert!(!k.has_direct(&p));
        assert!(!k.punched(p, ConnectionId::new_unchecked(2)));
        k.opened(p, ConnectionId::new_unchecked(2), ConnKind::Direct);
        assert!(k.punched(p, ConnectionId::new_unchecked(2)));
        assert_eq!(k.of(&p), vec![ConnKind::HolePunched, ConnKind::Relayed]);
        assert!(k.has_direct(&p));
        let only_relayed = PeerId::random();
        k.opened(
            only_relayed,
            ConnectionId::new_unchecked(3),
            ConnKind::Relayed,
        );
        assert_eq!(
            k.superseded_relayed(),
            HashSet::from([(p, ConnectionId::new_unchecked(1))]),
            "only the relayed connection beside a punched one is superseded"
        );
        k.closed(p, ConnectionId::new_unchecked(2));
        k.closed(p, ConnectionId::new_unchecked(1));
        assert!(k.of(&p).is_empty());
    }
}

/// A connection through a relay runs the admission handshake end to end: the bypass of a relay
/// client upgraded without it cannot come back unnoticed.
#[cfg(test)]
mod relayed_admission {
    use std::sync::Arc;
    use std::time::Duration;

    use libp2p::futures::StreamExt;
    use libp2p::identity::Keypair;
    use libp2p::multiaddr::Protocol;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, PeerId, Swarm};
    use parking_lot::Mutex;

    use super::{ReachConfig, RelayServerMode, is_relayed};
    use crate::identity::NetworkKey;
    use crate::net::admit::{Admission, KeyOnlyAdmission};
    use crate::net::guard::PeerGuard;
    use crate::net::limits::AdmissionLimits;
    use crate::net::{Behaviour, BehaviourEvent, build_swarm_limited, refusal_in};

    /// Admits everyone but `refused`; records whom it was asked about.
    struct RefusePeer {
        refused: Option<PeerId>,
        checked: Mutex<Vec<PeerId>>,
    }

    impl Admission for RefusePeer {
        fn hello(&self, _: &PeerId, _: bool) -> Vec<u8> {
            Vec::new()
        }
        fn check(&self, remote: &PeerId, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
            self.checked.lock().push(*remote);
            if Some(*remote) == self.refused {
                Err("not a member".into())
            } else {
                Ok(None)
            }
        }
        fn granted(&self, _: &PeerId, _: &[u8]) {}
        fn refused(&self, _: &PeerId, _: &str) {}
        fn admits_plain(&self) -> bool {
            false
        }
    }

    fn swarm(
        keypair: Keypair,
        key: &NetworkKey,
        admission: Arc<dyn Admission>,
        relay_server: RelayServerMode,
    ) -> Swarm<Behaviour> {
        build_swarm_limited(
            keypair,
            key,
            false,
            PeerGuard::new(),
            admission,
            AdmissionLimits::default(),
            &ReachConfig {
                relay_server,
                ..ReachConfig::default()
            },
        )
        .unwrap()
    }

    /// Polls the three swarms until `until` returns a value for one of their events (the index
    /// says whose); fails after a generous deadline.
    async fn run_until<T>(
        swarms: &mut [&mut Swarm<Behaviour>; 3],
        what: &str,
        mut until: impl FnMut(usize, SwarmEvent<BehaviourEvent>) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = libp2p::futures::future::select_all(
                swarms.iter_mut().map(|s| s.select_next_some()),
            );
            let (event, i, _) = tokio::time::timeout_at(deadline, next)
                .await
                .unwrap_or_else(|_| panic!("timed out: {what}"));
            if let Some(t) = until(i, event) {
                return t;
            }
        }
    }

    /// The relay R, the listener A (reserved on R, with `a_admission`) and the dialer B; B
    /// dials A through R. Returns whether B got a connection to A, and whether it was refused
    /// by admission.
    async fn dial_through_relay(refuse_b: bool) -> (bool, Arc<RefusePeer>, PeerId) {
        let key = NetworkKey::generate();
        let b_key = Keypair::generate_ed25519();
        let b_id = b_key.public().to_peer_id();
        let a_admission = Arc::new(RefusePeer {
            refused: refuse_b.then_some(b_id),
            checked: Mutex::new(Vec::new()),
        });
        let mut r = swarm(
            Keypair::generate_ed25519(),
            &key,
            Arc::new(KeyOnlyAdmission),
            RelayServerMode::On,
        );
        let mut a = swarm(
            Keypair::generate_ed25519(),
            &key,
            a_admission.clone(),
            RelayServerMode::Off,
        );
        let mut b = swarm(
            b_key,
            &key,
            Arc::new(KeyOnlyAdmission),
            RelayServerMode::Off,
        );
        let (r_id, a_id) = (*r.local_peer_id(), *a.local_peer_id());
        r.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let r_addr: Multiaddr = run_until(
            &mut [&mut r, &mut a, &mut b],
            "relay listening",
            |i, e| match (i, e) {
                (0, SwarmEvent::NewListenAddr { address, .. }) => Some(address),
                _ => None,
            },
        )
        .await;
        // A relay hands out its confirmed external addresses (AutoNAT's, in a node).
        r.add_external_address(r_addr.clone());
        let circuit = r_addr.with(Protocol::P2p(r_id)).with(Protocol::P2pCircuit);
        a.listen_on(circuit.clone()).unwrap();
        run_until(
            &mut [&mut r, &mut a, &mut b],
            "reservation on the relay",
            |i, e| match (i, e) {
                (1, SwarmEvent::NewListenAddr { address, .. }) if is_relayed(&address) => Some(()),
                _ => None,
            },
        )
        .await;
        b.dial(circuit.with(Protocol::P2p(a_id))).unwrap();
        let connected = run_until(
            &mut [&mut r, &mut a, &mut b],
            "B's dial to A ends",
            |i, e| match (i, e) {
                (
                    2,
                    SwarmEvent::ConnectionEstablished {
                        peer_id, endpoint, ..
                    },
                ) if peer_id == a_id => {
                    assert!(
                        is_relayed(endpoint.get_remote_address()),
                        "B reached A through the relay"
                    );
                    Some(true)
                }
                (
                    2,
                    SwarmEvent::OutgoingConnectionError {
                        peer_id: Some(p),
                        error: libp2p::swarm::DialError::Transport(errors),
                        ..
                    },
                ) if p == a_id => {
                    assert!(
                        errors.iter().any(|(_, e)| refusal_in(e).is_some()),
                        "B's dial failed for admission, not otherwise: {errors:?}"
                    );
                    Some(false)
                }
                (1, SwarmEvent::ConnectionEstablished { peer_id, .. })
                    if peer_id == b_id && refuse_b =>
                {
                    panic!("A must not hold a connection with a peer its admission refuses")
                }
                _ => None,
            },
        )
        .await;
        (connected, a_admission, b_id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relayed_connection_is_refused_when_admission_refuses() {
        let (connected, admission, b) = dial_through_relay(true).await;
        assert!(!connected);
        assert!(
            admission.checked.lock().contains(&b),
            "the listener's admission judged the relayed dialer"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relayed_connection_is_admitted_by_the_same_handshake() {
        let (connected, admission, b) = dial_through_relay(false).await;
        assert!(connected);
        assert!(
            admission.checked.lock().contains(&b),
            "the relayed connection ran the admission handshake"
        );
    }
}
