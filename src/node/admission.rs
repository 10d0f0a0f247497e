//! The node's gate ([`crate::admission::Gate`]) as the network's admission check: the net layer
//! calls [`Admission`] on every new connection and knows nothing of certificates; this counts
//! the refusals both ways for `status` and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::PeerId;

use crate::admission::Gate;
use crate::net::admit::Admission;

pub struct GateAdmission {
    pub gate: Arc<Gate>,
    /// Peers this node refused in the handshake, since start.
    refused_in: AtomicU64,
    /// Times another node refused this one, since start.
    refused_out: AtomicU64,
}

impl GateAdmission {
    pub fn new(gate: Arc<Gate>) -> Arc<Self> {
        Arc::new(Self {
            gate,
            refused_in: AtomicU64::new(0),
            refused_out: AtomicU64::new(0),
        })
    }

    /// (refused by this node, refused by others), since start.
    pub fn refusals(&self) -> (u64, u64) {
        (
            self.refused_in.load(Ordering::Relaxed),
            self.refused_out.load(Ordering::Relaxed),
        )
    }
}

impl Admission for GateAdmission {
    fn hello(&self, remote: &PeerId, _dialer: bool) -> Vec<u8> {
        self.gate.hello(remote)
    }

    fn check(&self, remote: &PeerId, hello: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let verdict = self.gate.check(remote, hello);
        if verdict.is_err() {
            self.refused_in.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn granted(&self, remote: &PeerId, grant: &[u8]) {
        self.gate.granted(remote, grant)
    }

    fn refused(&self, remote: &PeerId, reason: &str) {
        self.refused_out.fetch_add(1, Ordering::Relaxed);
        self.gate.refused(remote, reason)
    }

    fn admits_plain(&self) -> bool {
        self.gate.mode() == crate::admission::Mode::KeyOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserIdentity;

    /// The wrapper answers as the gate does and counts the refusals of both directions.
    #[test]
    fn refusals_are_counted_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let (founder, user) = (PeerId::random(), UserIdentity::generate());
        crate::admission::gate::found(dir.path(), &founder, &user, "f").unwrap();
        let certified = GateAdmission::new(Arc::new(
            Gate::open(dir.path(), founder, &user, "f").unwrap(),
        ));
        let other = tempfile::tempdir().unwrap();
        let stranger = PeerId::random();
        let key_only = GateAdmission::new(Arc::new(
            Gate::open(other.path(), stranger, &UserIdentity::generate(), "s").unwrap(),
        ));
        let hello = key_only.hello(&founder, true);
        let reason = certified.check(&stranger, &hello).unwrap_err();
        assert!(reason.contains("certified nodes only"), "{reason}");
        key_only.refused(&founder, &reason);
        assert_eq!(certified.refusals(), (1, 0));
        assert_eq!(key_only.refusals(), (0, 1));
        assert_eq!(key_only.gate.last_refusal().unwrap().1, reason);
        // A key-only node admits anyone.
        assert_eq!(
            key_only.check(&founder, &certified.hello(&stranger, false)),
            Ok(None)
        );
        assert_eq!(key_only.refusals(), (0, 1));
    }
}
