//! Admission limits: what a connection costs a node before anyone is known to hold the network
//! key. Every TCP connection holds a file descriptor from `accept` on, and a handshake that
//! never completes would hold it for good; without limits ~1,100 stalled connections from
//! anyone on the network path use up the descriptors the chunk store, the namespace database
//! and the control socket need.
//!
//! So: handshakes time out ([`HANDSHAKE_TIMEOUT`], `net::build_swarm`), the open-file limit is
//! raised to its hard limit at start ([`raise_open_file_limit`]), and [`AdmissionLimits`],
//! sized to fit under that limit with a reserve for the node's own files, bound the incoming
//! connections being handshaken (in total and per remote IP address) and the established ones
//! (in total and per remote IP address, or per relay for a relayed connection). A connection over a limit is closed at once, at
//! `accept`, and counted in the guard's refusals (`status` `hostile.refused`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use super::guard::{PeerGuard, Refusal};

/// A connection must finish its TCP, Noise, admission ([`super::admit`]) and Yamux handshakes
/// within this, or it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept for the node's own use whatever the connections take: the namespace
/// database, chunk files being read and written (one per blocking thread at most), the FUSE
/// device, the control socket and its clients, the metrics listener.
pub const FD_RESERVE: u64 = 512;

/// The connection limits (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Incoming connections in their handshake, in total.
    pub pending_incoming: usize,
    /// Incoming connections in their handshake, per remote IP address.
    pub pending_per_ip: usize,
    /// Established connections (both directions), in total.
    pub established: usize,
    /// Established connections (both directions), per remote IP address.
    pub established_per_ip: usize,
}

impl Default for AdmissionLimits {
    /// The limits when descriptors are plentiful. A node keeps ~16 peers connected
    /// (`net::MAX_CONNECTED_PEERS`), so these leave room for a large network's churn and for
    /// several nodes behind one address (a NAT, or tests on loopback).
    fn default() -> Self {
        AdmissionLimits {
            pending_incoming: 128,
            pending_per_ip: 16,
            established: 512,
            established_per_ip: 128,
        }
    }
}

impl AdmissionLimits {
    /// The default limits, shrunk so that every connection they allow plus [`FD_RESERVE`]
    /// fit under `open_files` descriptors (a quarter of what is left for handshakes, the rest
    /// for established connections; never below a working minimum).
    pub fn for_open_files(open_files: u64) -> Self {
        let d = Self::default();
        let budget = usize::try_from(open_files.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let pending_incoming = d.pending_incoming.min(budget / 4).max(8);
        let established = d.established.min(budget - budget / 4).max(16);
        AdmissionLimits {
            pending_incoming,
            pending_per_ip: d.pending_per_ip.min(pending_incoming / 2).max(4),
            established,
            established_per_ip: d.established_per_ip.min(established / 2).max(8),
        }
    }

    /// Descriptors these limits let connections take at most.
    pub fn max_connection_fds(&self) -> usize {
        self.pending_incoming + self.established
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the soft limit in
/// force afterwards (the old one if it could not be raised).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// Where a connection comes from, as its per-address limits count it: a remote IP address, or
/// for a relayed connection the relay it crosses. A relayed connection holds no descriptor of
/// its own (it is a stream on the connection to the relay), and counting it against the relay's
/// IP address would let the members relayed by one node crowd out the direct connections of the
/// other nodes behind that address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Origin {
    Ip(IpAddr),
    Relay(PeerId),
}

fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The relay a relayed address goes through: the peer id just before `/p2p-circuit`.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last_peer = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last_peer = Some(peer),
            Protocol::P2pCircuit => return last_peer,
            _ => {}
        }
    }
    None
}

/// The origin of a connection with these addresses (`local` is the circuit address an inbound
/// relayed connection arrived on; its remote address names only the source peer).
fn origin(local: Option<&Multiaddr>, remote: &Multiaddr) -> Option<Origin> {
    local
        .and_then(relay_of)
        .or_else(|| relay_of(remote))
        .map(Origin::Relay)
        .or_else(|| remote_ip(remote).map(Origin::Ip))
}

#[derive(Debug)]
struct OverLimit(Refusal, usize);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connection refused: {} (limit {})",
            self.0.as_str(),
            self.1
        )
    }
}

impl std::error::Error for OverLimit {}

/// Counts connections by remote address; refuses those over [`AdmissionLimits`].
pub struct ConnectionLimits {
    limits: AdmissionLimits,
    guard: Arc<PeerGuard>,
    pending: HashMap<ConnectionId, Option<Origin>>,
    established: HashMap<ConnectionId, Option<Origin>>,
    pending_by_ip: HashMap<Origin, usize>,
    established_by_ip: HashMap<Origin, usize>,
}

fn add(map: &mut HashMap<Origin, usize>, ip: Option<Origin>) {
    if let Some(ip) = ip {
        *map.entry(ip).or_default() += 1;
    }
}

fn remove(map: &mut HashMap<Origin, usize>, ip: Option<Origin>) {
    if let Some(ip) = ip
        && let Some(n) = map.get_mut(&ip)
    {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl ConnectionLimits {
    pub fn new(limits: AdmissionLimits, guard: Arc<PeerGuard>) -> Self {
        Self {
            limits,
            guard,
            pending: HashMap::new(),
            established: HashMap::new(),
            pending_by_ip: HashMap::new(),
            established_by_ip: HashMap::new(),
        }
    }

    fn refuse(&self, kind: Refusal, limit: usize, addr: &Multiaddr) -> ConnectionDenied {
        self.guard.refused(kind, &addr.to_string());
        ConnectionDenied::new(OverLimit(kind, limit))
    }

    fn check_pending(&self, ip: Option<Origin>, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        if self.pending.len() >= self.limits.pending_incoming {
            return Err(self.refuse(
                Refusal::PendingConnections,
                self.limits.pending_incoming,
                addr,
            ));
        }
        if let Some(ip) = ip
            && self.pending_by_ip.get(&ip).copied().unwrap_or(0) >= self.limits.pending_per_ip
        {
            return Err(self.refuse(Refusal::PendingPerAddress, self.limits.pending_per_ip, addr));
        }
        Ok(())
    }

    fn end_pending(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            remove(&mut self.pending_by_ip, ip);
        }
    }

    fn establish(
        &mut self,
        id: ConnectionId,
        local: Option<&Multiaddr>,
        addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.end_pending(id);
        let ip = origin(local, addr);
        if self.established.len() >= self.limits.established {
            return Err(self.refuse(
                Refusal::EstablishedConnections,
                self.limits.established,
                addr,
            ));
        }
        if let Some(ip) = ip
            && self.established_by_ip.get(&ip).copied().unwrap_or(0)
                >= self.limits.established_per_ip
        {
            return Err(self.refuse(
                Refusal::EstablishedPerAddress,
                self.limits.established_per_ip,
                addr,
            ));
        }
        self.established.insert(id, ip);
        add(&mut self.established_by_ip, ip);
        Ok(())
    }

    fn end_established(&mut self, id: ConnectionId) {
        if let Some(ip) = self.established.remove(&id) {
            remove(&mut self.established_by_ip, ip);
        }
    }
}

impl NetworkBehaviour for ConnectionLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let ip = origin(Some(local), remote);
        self.check_pending(ip, remote)?;
        self.pending.insert(id, ip);
        add(&mut self.pending_by_ip, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.establish(id, Some(local), remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.establish(id, None, remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.end_established(connection_id)
            }
            // A handshake that failed or timed out, or a connection another behaviour denied.
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.end_pending(connection_id);
                self.end_established(connection_id);
            }
            FromSwarm::DialFailure(f) => self.end_established(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/tcp/{port}").parse().unwrap()
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            pending_incoming: 6,
            pending_per_ip: 3,
            established: 4,
            established_per_ip: 2,
        }
    }

    #[test]
    fn handshakes_are_limited_in_total_and_per_address_and_refusals_counted() {
        let guard = PeerGuard::new();
        let mut l = ConnectionLimits::new(limits(), guard.clone());
        let local = addr("127.0.0.1", 4001);
        let mut ids = Vec::new();
        for port in 0..3 {
            let id = ConnectionId::new_unchecked(port);
            l.handle_pending_inbound_connection(id, &local, &addr("10.0.0.1", 1000 + port as u16))
                .expect("within the per-address limit");
            ids.push(id);
        }
        assert!(
            l.handle_pending_inbound_connection(
                ConnectionId::new_unchecked(10),
                &local,
                &addr("10.0.0.1", 2000)
            )
            .is_err(),
            "a fourth handshake from one address is refused"
        );
        for port in 0..3 {
            l.handle_pending_inbound_connection(
                ConnectionId::new_unchecked(20 + port),
                &local,
                &addr("10.0.0.2", 1000 + port as u16),
            )
            .expect("another address has its own share");
        }
        assert!(
            l.handle_pending_inbound_connection(
                ConnectionId::new_unchecked(30),
                &local,
                &addr("10.0.0.3", 1000)
            )
            .is_err(),
            "the total is full"
        );
        // A handshake that times out frees its slot.
        l.end_pending(ids[0]);
        l.handle_pending_inbound_connection(
            ConnectionId::new_unchecked(31),
            &local,
            &addr("10.0.0.1", 3000),
        )
        .expect("a slot came back");
        let refused = guard.status().refused;
        assert_eq!(refused["pending_per_address"], 1);
        assert_eq!(refused["pending_connections"], 1);
    }

    #[test]
    fn established_connections_are_limited_and_closing_frees_them() {
        let guard = PeerGuard::new();
        let mut l = ConnectionLimits::new(limits(), guard.clone());
        let peer = PeerId::random();
        let local = addr("127.0.0.1", 4001);
        let a = |i: usize, ip: &str| {
            (
                ConnectionId::new_unchecked(100 + i),
                addr(ip, 5000 + i as u16),
            )
        };
        for (i, ip) in [(0, "10.0.0.1"), (1, "10.0.0.1")] {
            let (id, remote) = a(i, ip);
            l.handle_pending_inbound_connection(id, &local, &remote)
                .unwrap();
            l.handle_established_inbound_connection(id, peer, &local, &remote)
                .expect("within the limits");
        }
        assert_eq!(l.pending.len(), 0, "established is no longer pending");
        let (id, remote) = a(2, "10.0.0.1");
        assert!(
            l.handle_established_inbound_connection(id, peer, &local, &remote)
                .is_err()
        );
        for (i, ip) in [(3, "10.0.0.2"), (4, "10.0.0.3")] {
            let (id, remote) = a(i, ip);
            l.handle_established_outbound_connection(
                id,
                peer,
                &remote,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .expect("within the total");
        }
        let (id, remote) = a(5, "10.0.0.4");
        assert!(
            l.handle_established_inbound_connection(id, peer, &local, &remote)
                .is_err()
        );
        l.end_established(ConnectionId::new_unchecked(103));
        let (id, remote) = a(6, "10.0.0.4");
        l.handle_established_inbound_connection(id, peer, &local, &remote)
            .expect("a closed connection frees its place");
        let refused = guard.status().refused;
        assert_eq!(refused["established_per_address"], 1);
        assert_eq!(refused["established_connections"], 1);
    }

    /// Relayed connections count per relay, not against the relay's IP address: the direct
    /// connections from that address keep their own share.
    #[test]
    fn relayed_connections_count_per_relay_not_per_relay_address() {
        let guard = PeerGuard::new();
        let mut l = ConnectionLimits::new(limits(), guard.clone());
        let relay = PeerId::random();
        let relay_ip = "198.51.100.7";
        let circuit: Multiaddr = format!("/ip4/{relay_ip}/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        let via_relay = |i: usize| {
            let src: Multiaddr = format!("/p2p/{}", PeerId::random()).parse().unwrap();
            (ConnectionId::new_unchecked(200 + i), src)
        };
        // Two relayed connections in: the per-origin limit (2) for this relay is full ...
        for i in 0..2 {
            let (id, src) = via_relay(i);
            l.handle_pending_inbound_connection(id, &circuit, &src)
                .unwrap();
            l.handle_established_inbound_connection(id, PeerId::random(), &circuit, &src)
                .expect("within the relay's share");
        }
        let (id, src) = via_relay(2);
        assert!(
            l.handle_established_inbound_connection(id, PeerId::random(), &circuit, &src)
                .is_err(),
            "a third through the same relay is over its share"
        );
        // ... and an outbound relayed dial through it counts there too ...
        let out: Multiaddr = format!("{circuit}/p2p/{}", PeerId::random())
            .parse()
            .unwrap();
        assert!(
            l.handle_established_outbound_connection(
                ConnectionId::new_unchecked(250),
                PeerId::random(),
                &out,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .is_err()
        );
        // ... while direct connections from the relay's IP address keep their own share.
        let local = addr("127.0.0.1", 4001);
        let direct = addr(relay_ip, 6000);
        l.handle_established_inbound_connection(
            ConnectionId::new_unchecked(260),
            PeerId::random(),
            &local,
            &direct,
        )
        .expect("the relay's address is not charged for what it relays");
        assert_eq!(guard.status().refused["established_per_address"], 2);
    }

    #[test]
    fn limits_fit_under_the_open_file_limit() {
        assert_eq!(
            AdmissionLimits::for_open_files(1 << 20),
            AdmissionLimits::default()
        );
        for n in [1024u64, 2048, 4096] {
            let l = AdmissionLimits::for_open_files(n);
            assert!(
                l.max_connection_fds() as u64 + FD_RESERVE <= n,
                "{n}: {l:?}"
            );
            assert!(l.pending_per_ip <= l.pending_incoming);
        }
    }
}
