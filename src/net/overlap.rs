//! Connections a peer opens while an older one to it is still open, and what happens when that
//! older one dies; and the socket option that bounds how long a dead TCP connection lingers.
//!
//! A peer that restarts (or whose link comes back) may connect again before this node has seen its
//! previous connection end: a dead link shows only as a missed ping, and closing a connection whose
//! send buffer is full waits until TCP gives up. gossipsub sends its topic subscriptions only on a
//! peer's first connection, so the peer's new process never learns what this node subscribes to,
//! never sends it gossip, and stays dead in its view for good. So when a dead connection (its ping
//! failed, or it ended with an I/O error) closes, the connections of the same kind opened to that
//! peer while it was open are closed too: the peer or this node dials again, and the new connection
//! is a first one on both sides. A connection of another kind (the direct one that replaces a
//! relayed one) is left alone: it is the same process.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// How long data sent on a TCP connection may stay unacknowledged before the kernel drops the
/// connection (`TCP_USER_TIMEOUT`). The ping already closes a connection that does not answer
/// for 4 s; this makes that close end, and the connection go, when a full send buffer would
/// otherwise keep it open until TCP's own retries give up (minutes).
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets [`UNACKED_TIMEOUT`] on a TCP socket. A socket that refuses it keeps the kernel's
/// default; that costs only a slower end of a dead connection, so it is logged, not failed.
pub fn bound_unacked(socket: &impl std::os::fd::AsRawFd) {
    let ms = UNACKED_TIMEOUT.as_millis() as libc::c_uint;
    // SAFETY: `socket` owns a valid descriptor for the call, and the option value is a
    // `c_uint` that lives across it, with its size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set TCP_USER_TIMEOUT");
    }
}

/// The open connections per peer, and which were opened behind which.
#[derive(Default)]
pub struct Overlaps {
    /// Each peer's open connections, with whether each is relayed.
    open: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// For a connection opened while others of its kind to the same peer were open: those.
    behind: HashMap<ConnectionId, Vec<ConnectionId>>,
    /// Open connections whose ping failed (being closed).
    dead: HashSet<ConnectionId>,
}

impl Overlaps {
    /// `id` to `peer` is established.
    pub fn opened(&mut self, peer: PeerId, id: ConnectionId, relayed: bool) {
        let open = self.open.entry(peer).or_default();
        let older: Vec<ConnectionId> = open
            .iter()
            .filter(|(_, r)| *r == relayed)
            .map(|(c, _)| *c)
            .collect();
        if !older.is_empty() {
            self.behind.insert(id, older);
        }
        open.push((id, relayed));
    }

    /// `id`'s ping failed: it is being closed.
    pub fn ping_failed(&mut self, id: ConnectionId) {
        if self.open.values().flatten().any(|(c, _)| *c == id) {
            self.dead.insert(id);
        }
    }

    /// `id` to `peer` closed, `failed` if with an I/O error. Returns the connections to close:
    /// those opened behind it, if it was dead.
    pub fn closed(&mut self, peer: PeerId, id: ConnectionId, failed: bool) -> Vec<ConnectionId> {
        let dead = self.dead.remove(&id) || failed;
        self.behind.remove(&id);
        let Some(open) = self.open.get_mut(&peer) else {
            return Vec::new();
        };
        open.retain(|(c, _)| *c != id);
        if open.is_empty() {
            self.open.remove(&peer);
            return Vec::new();
        }
        let mut reopen = Vec::new();
        for (c, _) in open.iter() {
            let Some(older) = self.behind.get_mut(c) else {
                continue;
            };
            let was_behind = older.contains(&id);
            older.retain(|o| *o != id);
            if was_behind && dead {
                reopen.push(*c);
            }
            if older.is_empty() || (was_behind && dead) {
                self.behind.remove(c);
            }
        }
        reopen
    }

    /// Connections tracked (bounded by the open connections).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        (
            self.open.values().map(Vec::len).sum(),
            self.behind.len(),
            self.dead.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (PeerId, ConnectionId, ConnectionId, ConnectionId) {
        (
            PeerId::random(),
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        )
    }

    #[test]
    fn a_connection_opened_behind_a_dead_one_is_closed_when_that_one_goes() {
        let (peer, old, new, _) = ids();
        let mut o = Overlaps::default();
        o.opened(peer, old, false);
        o.ping_failed(old);
        o.opened(peer, new, false);
        assert_eq!(o.closed(peer, old, false), vec![new]);
        assert_eq!(o.closed(peer, new, false), vec![]);
        assert_eq!(o.tracked(), (0, 0, 0));
    }

    #[test]
    fn an_error_counts_as_dead_and_a_graceful_close_does_not() {
        let (peer, old, new, _) = ids();
        let mut o = Overlaps::default();
        o.opened(peer, old, false);
        o.opened(peer, new, false);
        assert_eq!(o.closed(peer, old, true), vec![new]);
        // Two live connections (a simultaneous dial): the older one closing idle is no sign
        // of a restart.
        let (peer, a, b, _) = ids();
        o.opened(peer, a, false);
        o.opened(peer, b, false);
        assert_eq!(o.closed(peer, a, false), vec![]);
        assert_eq!(o.closed(peer, b, true), vec![]);
    }

    #[test]
    fn a_connection_of_another_kind_or_opened_after_is_left_alone() {
        let (peer, relayed, direct, later) = ids();
        let mut o = Overlaps::default();
        o.opened(peer, relayed, true);
        o.opened(peer, direct, false);
        o.ping_failed(relayed);
        assert_eq!(o.closed(peer, relayed, true), vec![]);
        // Opened after the dead one closed: a first connection as far as gossip goes.
        o.ping_failed(direct);
        assert_eq!(o.closed(peer, direct, false), vec![]);
        o.opened(peer, later, false);
        assert_eq!(o.closed(peer, later, true), vec![]);
        assert_eq!(o.tracked(), (0, 0, 0));
    }

    #[test]
    fn the_unacked_timeout_is_set_on_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        bound_unacked(&socket);
        let mut ms: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: a valid descriptor, and an out value with its size.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut ms as *mut libc::c_uint).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(u128::from(ms), UNACKED_TIMEOUT.as_millis());
    }
}
