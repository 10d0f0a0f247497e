//! The ledger: what a certified network's members agree on about membership. The founder (the
//! root of trust), admin grants, node certificates, revocations and key epochs. Every record is
//! checked before it is kept, so merging what any peer sends is safe: a record nobody entitled
//! signed is refused, whoever relays it.

use std::collections::BTreeMap;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::cert::{
    AdminGrant, CertError, KeyEpoch, LedgerRecord, MAX_KEEP, MAX_SEALED, NodeCert, Revocation,
};
use crate::identity::UserId;

/// Bounds on what one ledger keeps (a member cannot grow every node's ledger without end).
pub const MAX_CERTS: usize = 16_384;
/// (A hello carries every grant and revocation: 2,048 revocations are ~300 KiB.)
pub const MAX_REVOCATIONS: usize = 2_048;
pub const MAX_GRANTS: usize = 1_024;
pub const MAX_EPOCHS: usize = 1_024;

/// What a merge of one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merged {
    /// Known already, or older than what is known.
    Nothing,
    Cert(PeerId),
    Grant(UserId),
    Revocation(PeerId),
    Epoch([u8; 16]),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    root: Option<UserId>,
    grants: BTreeMap<UserId, AdminGrant>,
    certs: BTreeMap<Vec<u8>, NodeCert>,
    revocations: BTreeMap<Vec<u8>, Revocation>,
    epochs: BTreeMap<[u8; 16], KeyEpoch>,
}

impl Ledger {
    pub fn new(root: UserId) -> Self {
        Self {
            root: Some(root),
            ..Self::default()
        }
    }

    /// The founder. (A default ledger has none: nothing validates against it.)
    pub fn root(&self) -> Option<UserId> {
        self.root
    }

    fn network(&self) -> UserId {
        self.root.unwrap_or(UserId([0; 32]))
    }

    /// The founder, or a user whose latest grant makes them an admin.
    pub fn is_admin(&self, user: &UserId) -> bool {
        Some(*user) == self.root || self.grants.get(user).is_some_and(|g| g.body.admin)
    }

    pub fn admins(&self) -> Vec<UserId> {
        let mut all: Vec<UserId> = self.root.into_iter().collect();
        all.extend(
            self.grants
                .values()
                .filter(|g| g.body.admin)
                .map(|g| g.body.user),
        );
        all
    }

    /// The latest grant about `user`, if any.
    pub fn grant(&self, user: &UserId) -> Option<&AdminGrant> {
        self.grants.get(user)
    }

    pub fn revocation(&self, peer: &PeerId) -> Option<&Revocation> {
        self.revocations.get(&peer.to_bytes())
    }

    pub fn is_revoked(&self, peer: &PeerId) -> bool {
        self.revocations.contains_key(&peer.to_bytes())
    }

    /// The known certificate of `peer` (valid when it was kept; check revocation separately).
    pub fn cert(&self, peer: &PeerId) -> Option<&NodeCert> {
        self.certs.get(&peer.to_bytes())
    }

    pub fn certs(&self) -> impl Iterator<Item = &NodeCert> {
        self.certs.values()
    }

    /// Key epochs, oldest first (by time, then id, so every node orders them alike).
    pub fn epochs(&self) -> Vec<&KeyEpoch> {
        let mut all: Vec<&KeyEpoch> = self.epochs.values().collect();
        all.sort_by_key(|e| (e.body.at, e.body.id));
        all
    }

    /// Whether `cert` admits `peer` now: well formed, for this network and this peer, signed
    /// by the founder or an admin (a demoted admin's only when the demotion kept it), and the
    /// peer not revoked.
    pub fn check_cert(&self, cert: &NodeCert, peer: &PeerId) -> Result<(), CertError> {
        cert.check_form()?;
        if self.root.is_none() || cert.body.network != self.network() {
            return Err(CertError::OtherNetwork("certificate"));
        }
        if cert.body.peer != peer.to_bytes() {
            return Err(CertError::WrongPeer(
                cert.peer_id().map(|p| p.to_string()).unwrap_or_default(),
            ));
        }
        if Some(cert.by) != self.root {
            match self.grants.get(&cert.by) {
                Some(g) if g.body.admin => {}
                Some(g) if g.body.keep.contains(&cert.digest()) => {}
                _ => return Err(CertError::NotAdmitter(cert.by.to_string())),
            }
        }
        if let Some(r) = self.revocations.get(&cert.body.peer) {
            return Err(CertError::Revoked(r.body.at));
        }
        Ok(())
    }

    /// Keeps `record` if it is valid and new. Grants should come before what they entitle:
    /// [`Ledger::merge_all`] orders a batch so.
    pub fn merge(&mut self, record: LedgerRecord) -> Result<Merged, CertError> {
        match record {
            LedgerRecord::Grant(g) => self.merge_grant(g),
            LedgerRecord::Cert(c) => self.merge_cert(c),
            LedgerRecord::Revocation(r) => self.merge_revocation(r),
            LedgerRecord::Epoch(e) => self.merge_epoch(e),
        }
    }

    /// Merges a batch (grants first, then certificates, revocations, epochs); returns what
    /// changed and how many records were refused.
    pub fn merge_all(&mut self, mut records: Vec<LedgerRecord>) -> (Vec<Merged>, usize) {
        records.sort_by_key(|r| match r {
            LedgerRecord::Grant(g) => (0, g.body.seq),
            LedgerRecord::Cert(_) => (1, 0),
            LedgerRecord::Revocation(_) => (2, 0),
            LedgerRecord::Epoch(_) => (3, 0),
        });
        let mut changed = Vec::new();
        let mut refused = 0;
        for r in records {
            match self.merge(r) {
                Ok(Merged::Nothing) => {}
                Ok(m) => changed.push(m),
                Err(_) => refused += 1,
            }
        }
        (changed, refused)
    }

    fn merge_grant(&mut self, g: AdminGrant) -> Result<Merged, CertError> {
        // What is known already costs no signature check (every hello repeats the grants).
        if let Some(old) = self.grants.get(&g.body.user)
            && old.body.seq >= g.body.seq
        {
            return Ok(Merged::Nothing);
        }
        g.verify_signature()?;
        if g.body.network != self.network() || self.root.is_none() {
            return Err(CertError::OtherNetwork("admin grant"));
        }
        if Some(g.by) != self.root {
            return Err(CertError::NotFounder);
        }
        if g.body.keep.len() > MAX_KEEP {
            return Err(CertError::Malformed("too many kept certificates".into()));
        }
        if let Some(old) = self.grants.get(&g.body.user)
            && old.body.seq >= g.body.seq
        {
            return Ok(Merged::Nothing);
        }
        if !self.grants.contains_key(&g.body.user) && self.grants.len() >= MAX_GRANTS {
            return Err(CertError::Full("admin grants"));
        }
        let user = g.body.user;
        self.grants.insert(user, g);
        Ok(Merged::Grant(user))
    }

    fn merge_cert(&mut self, c: NodeCert) -> Result<Merged, CertError> {
        let peer = c
            .peer_id()
            .ok_or_else(|| CertError::Malformed("bad peer id".into()))?;
        if let Some(r) = self.revocations.get(&c.body.peer) {
            return Err(CertError::Revoked(r.body.at));
        }
        if let Some(old) = self.certs.get(&c.body.peer) {
            if *old == c || old.body.issued_at >= c.body.issued_at {
                return Ok(Merged::Nothing);
            }
            // A newer certificate replaces a node's only when its first signer or the founder
            // made it: an admin cannot re-issue another admin's node (or the founder's) under
            // another user or role, then expel it as that.
            if c.by != old.by && Some(c.by) != self.root {
                return Err(CertError::NotAdmitter(c.by.to_string()));
            }
        }
        self.check_cert(&c, &peer)?;
        if !self.certs.contains_key(&c.body.peer) && self.certs.len() >= MAX_CERTS {
            return Err(CertError::Full("certificates"));
        }
        self.certs.insert(c.body.peer.clone(), c);
        Ok(Merged::Cert(peer))
    }

    fn merge_revocation(&mut self, r: Revocation) -> Result<Merged, CertError> {
        if let Some(old) = self.revocations.get(&r.body.peer)
            && old.body.at <= r.body.at
        {
            return Ok(Merged::Nothing);
        }
        r.verify_signature()?;
        if r.body.network != self.network() || self.root.is_none() {
            return Err(CertError::OtherNetwork("revocation"));
        }
        if !self.is_admin(&r.by) {
            return Err(CertError::NotAdmin("a revocation"));
        }
        let peer = PeerId::from_bytes(&r.body.peer)
            .map_err(|_| CertError::Malformed("bad peer id".into()))?;
        // Only the founder may expel the founder's own nodes: an admin cannot lock the founder
        // out.
        if let Some(c) = self.certs.get(&r.body.peer)
            && Some(c.body.user) == self.root
            && Some(r.by) != self.root
        {
            return Err(CertError::NotFounder);
        }
        if let Some(old) = self.revocations.get(&r.body.peer)
            && old.body.at <= r.body.at
        {
            return Ok(Merged::Nothing);
        }
        if !self.revocations.contains_key(&r.body.peer) && self.revocations.len() >= MAX_REVOCATIONS
        {
            return Err(CertError::Full("revocations"));
        }
        self.revocations.insert(r.body.peer.clone(), r);
        Ok(Merged::Revocation(peer))
    }

    fn merge_epoch(&mut self, e: KeyEpoch) -> Result<Merged, CertError> {
        if self.epochs.contains_key(&e.body.id) {
            return Ok(Merged::Nothing);
        }
        e.verify_signature()?;
        if e.body.network != self.network() || self.root.is_none() {
            return Err(CertError::OtherNetwork("key epoch"));
        }
        if !self.is_admin(&e.by) {
            return Err(CertError::NotAdmin("a key epoch"));
        }
        if e.body.sealed.len() > MAX_SEALED {
            return Err(CertError::Malformed("sealed key too large".into()));
        }
        if self.epochs.contains_key(&e.body.id) {
            return Ok(Merged::Nothing);
        }
        if self.epochs.len() >= MAX_EPOCHS {
            return Err(CertError::Full("key epochs"));
        }
        let id = e.body.id;
        self.epochs.insert(id, e);
        Ok(Merged::Epoch(id))
    }

    /// Every record, grants first (the order [`Ledger::merge_all`] wants).
    pub fn records(&self) -> Vec<LedgerRecord> {
        let mut out: Vec<LedgerRecord> = Vec::new();
        out.extend(self.grants.values().cloned().map(LedgerRecord::Grant));
        out.extend(self.certs.values().cloned().map(LedgerRecord::Cert));
        out.extend(
            self.revocations
                .values()
                .cloned()
                .map(LedgerRecord::Revocation),
        );
        out.extend(self.epochs.values().cloned().map(LedgerRecord::Epoch));
        out
    }

    /// The records a handshake hello carries: grants, revocations and epochs (the chain any
    /// certificate needs, and what every member must learn), and as many certificates as fit
    /// in `budget` bytes after them, newest first.
    pub fn records_for_hello(&self, budget: usize) -> Vec<LedgerRecord> {
        let mut out: Vec<LedgerRecord> = Vec::new();
        out.extend(self.grants.values().cloned().map(LedgerRecord::Grant));
        out.extend(
            self.revocations
                .values()
                .cloned()
                .map(LedgerRecord::Revocation),
        );
        let mut used = encoded_len(&out);
        // Epochs grow with every expel: the newest ones, as many as fit (a node that missed
        // older ones was a member then, and had them; a node admitted later gets the keys
        // sealed to it with its certificate).
        for e in self.epochs().into_iter().rev() {
            let rec = LedgerRecord::Epoch(e.clone());
            let n = encoded_len(std::slice::from_ref(&rec));
            if used + n > budget {
                break;
            }
            used += n;
            out.push(rec);
        }
        let mut certs: Vec<&NodeCert> = self.certs.values().collect();
        certs.sort_by_key(|c| std::cmp::Reverse(c.body.issued_at));
        for c in certs {
            let rec = LedgerRecord::Cert(c.clone());
            let n = encoded_len(std::slice::from_ref(&rec));
            if used + n > budget {
                break;
            }
            used += n;
            out.push(rec);
        }
        out
    }
}

fn encoded_len(records: &[LedgerRecord]) -> usize {
    let mut bytes = Vec::new();
    ciborium::into_writer(records, &mut bytes).expect("records serialize");
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::cert::{
        CertBody, EpochBody, GrantBody, NodeRole, RevocationBody, Signed,
    };
    use crate::identity::UserIdentity;

    fn cert_for(
        net: &UserIdentity,
        signer: &UserIdentity,
        peer: &PeerId,
        user: &UserIdentity,
    ) -> NodeCert {
        Signed::sign(
            CertBody {
                network: net.user_id(),
                peer: peer.to_bytes(),
                name: "laptop".into(),
                user: user.user_id(),
                recipient: user.recipient().to_string(),
                role: NodeRole::Storage,
                issued_at: 100,
            },
            signer,
        )
    }

    fn grant(founder: &UserIdentity, user: &UserIdentity, admin: bool, seq: u64) -> AdminGrant {
        Signed::sign(
            GrantBody {
                network: founder.user_id(),
                user: user.user_id(),
                admin,
                seq,
                at: seq,
                keep: Vec::new(),
            },
            founder,
        )
    }

    #[test]
    fn certificates_chain_to_the_founder_and_nothing_else() {
        let founder = UserIdentity::generate();
        let alice = UserIdentity::generate();
        let mallory = UserIdentity::generate();
        let peer = PeerId::random();
        let mut ledger = Ledger::new(founder.user_id());

        // Signed by the founder: valid for its peer only.
        let good = cert_for(&founder, &founder, &peer, &alice);
        assert_eq!(ledger.check_cert(&good, &peer), Ok(()));
        assert!(matches!(
            ledger.check_cert(&good, &PeerId::random()),
            Err(CertError::WrongPeer(_))
        ));
        // Self-signed, or by a stranger: refused.
        let selfsigned = cert_for(&founder, &mallory, &peer, &mallory);
        assert!(matches!(
            ledger.check_cert(&selfsigned, &peer),
            Err(CertError::NotAdmitter(_))
        ));
        // A changed field breaks the signature.
        let mut forged = good.clone();
        forged.body.role = NodeRole::Reader;
        forged.body.name = "desk".into();
        assert_eq!(
            ledger.check_cert(&forged, &peer),
            Err(CertError::BadSignature("node certificate"))
        );
        // A signature by the founder of another network.
        let other = UserIdentity::generate();
        let foreign = cert_for(&other, &other, &peer, &alice);
        assert_eq!(
            ledger.check_cert(&foreign, &peer),
            Err(CertError::OtherNetwork("certificate"))
        );
        // Grants come from the founder only; an admin's certificates count while it is one.
        assert_eq!(
            ledger.merge(LedgerRecord::Grant(Signed::sign(
                grant(&founder, &alice, true, 1).body,
                &alice
            ))),
            Err(CertError::NotFounder)
        );
        let by_alice = cert_for(&founder, &alice, &peer, &alice);
        assert!(ledger.check_cert(&by_alice, &peer).is_err());
        ledger
            .merge(LedgerRecord::Grant(grant(&founder, &alice, true, 1)))
            .unwrap();
        assert!(ledger.is_admin(&alice.user_id()));
        assert_eq!(ledger.check_cert(&by_alice, &peer), Ok(()));
        // Demoted: only the certificates the demotion keeps stay valid.
        let peer2 = PeerId::random();
        let later = cert_for(&founder, &alice, &peer2, &alice);
        let mut demote = grant(&founder, &alice, false, 2);
        demote.body.keep = vec![by_alice.digest()];
        let demote = Signed::sign(demote.body, &founder);
        ledger.merge(LedgerRecord::Grant(demote)).unwrap();
        assert!(!ledger.is_admin(&alice.user_id()));
        assert_eq!(ledger.check_cert(&by_alice, &peer), Ok(()));
        assert!(ledger.check_cert(&later, &peer2).is_err());
        // An older grant does not undo a newer one.
        assert_eq!(
            ledger.merge(LedgerRecord::Grant(grant(&founder, &alice, true, 1))),
            Ok(Merged::Nothing)
        );
        assert!(!ledger.is_admin(&alice.user_id()));
    }

    #[test]
    fn revocations_need_an_admin_and_stick() {
        let founder = UserIdentity::generate();
        let alice = UserIdentity::generate();
        let peer = PeerId::random();
        let mut ledger = Ledger::new(founder.user_id());
        let cert = cert_for(&founder, &founder, &peer, &alice);
        assert_eq!(
            ledger.merge(LedgerRecord::Cert(cert.clone())),
            Ok(Merged::Cert(peer))
        );
        let revoke = |by: &UserIdentity| {
            Signed::sign(
                RevocationBody {
                    network: founder.user_id(),
                    peer: peer.to_bytes(),
                    at: 500,
                },
                by,
            )
        };
        assert_eq!(
            ledger.merge(LedgerRecord::Revocation(revoke(&alice))),
            Err(CertError::NotAdmin("a revocation"))
        );
        assert_eq!(ledger.check_cert(&cert, &peer), Ok(()));
        assert_eq!(
            ledger.merge(LedgerRecord::Revocation(revoke(&founder))),
            Ok(Merged::Revocation(peer))
        );
        assert_eq!(
            ledger.check_cert(&cert, &peer),
            Err(CertError::Revoked(500))
        );
        // A fresh certificate for the same peer does not bring it back.
        let mut again = cert.body.clone();
        again.issued_at = 900;
        assert_eq!(
            ledger.merge(LedgerRecord::Cert(Signed::sign(again, &founder))),
            Err(CertError::Revoked(500))
        );
        // It survives a round trip through another ledger (records are self-checking).
        let mut other = Ledger::new(founder.user_id());
        let (changed, refused) = other.merge_all(ledger.records());
        assert_eq!(refused, 0);
        assert_eq!(changed.len(), 2);
        assert!(other.is_revoked(&peer));
    }

    #[test]
    fn key_epochs_open_for_their_recipients_only() {
        let founder = UserIdentity::generate();
        let bob = UserIdentity::generate();
        let eve = UserIdentity::generate();
        let key = [7u8; 32];
        let sealed = crate::admission::cert::seal_key(
            &key,
            &[founder.recipient().to_string(), bob.recipient().to_string()],
        )
        .unwrap();
        let epoch = Signed::sign(
            EpochBody {
                network: founder.user_id(),
                id: [1; 16],
                at: 10,
                sealed,
            },
            &founder,
        );
        let mut ledger = Ledger::new(founder.user_id());
        assert_eq!(
            ledger.merge(LedgerRecord::Epoch(epoch.clone())),
            Ok(Merged::Epoch([1; 16]))
        );
        assert_eq!(
            crate::admission::cert::open_key(&epoch.body.sealed, &bob),
            Some(key)
        );
        assert_eq!(
            crate::admission::cert::open_key(&epoch.body.sealed, &eve),
            None
        );
        let by_eve = Signed::sign(epoch.body.clone(), &eve);
        let mut other = Ledger::new(founder.user_id());
        assert_eq!(
            other.merge(LedgerRecord::Epoch(by_eve)),
            Err(CertError::NotAdmin("a key epoch"))
        );
    }
}
