//! Invites made by this node: each mints one node certificate, once. The token holds a random
//! secret; this node keeps only what checks a redemption (a key derived from the secret), so
//! the book's file does not let anyone redeem.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::cert::NodeRole;
use crate::util::fsutil::write_atomic;

/// Invites one node keeps at most (used and revoked ones are forgotten first).
pub const MAX_INVITES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    #[error("this invite is not known to this node; it is redeemed by the node that made it")]
    Unknown,
    #[error(
        "this invite was already used (by {name:?}, {ago} s ago); an invite admits one node: ask for a new one"
    )]
    AlreadyUsed { name: String, ago: u64 },
    #[error("this invite expired {0} s ago; ask for a new one")]
    Expired(u64),
    #[error("this invite was revoked; ask for a new one")]
    Revoked,
    #[error("the invite's proof does not match (a changed token?)")]
    BadProof,
}

/// The id a token's secret is known by (shown in `p2pfs-ctl invites`, sent when redeeming).
pub fn invite_id(secret: &[u8; 32]) -> [u8; 16] {
    blake3::derive_key("p2pfs invite id v1", secret)[..16]
        .try_into()
        .expect("16 bytes")
}

fn redeem_key(secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("p2pfs invite redemption v1", secret)
}

fn proof_under(key: &[u8; 32], peer: &PeerId) -> [u8; 32] {
    *blake3::keyed_hash(key, &peer.to_bytes()).as_bytes()
}

/// What a joining node sends to show it holds the token, bound to its own peer id (so a
/// redemption seen by another node cannot be replayed for a different one).
pub fn redemption_proof(secret: &[u8; 32], peer: &PeerId) -> [u8; 32] {
    proof_under(&redeem_key(secret), peer)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    pub name: String,
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeInvite {
    pub id: [u8; 16],
    redeem_key: [u8; 32],
    pub role: NodeRole,
    pub made_at: u64,
    pub expires: Option<u64>,
    pub used: Option<Used>,
    pub revoked: bool,
}

impl MadeInvite {
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id[..6])
    }

    /// Still redeemable at `now`.
    pub fn is_open(&self, now: u64) -> bool {
        self.used.is_none() && !self.revoked && self.expires.is_none_or(|t| now <= t)
    }
}

#[derive(Debug)]
pub struct InviteBook {
    path: PathBuf,
    invites: Vec<MadeInvite>,
}

impl InviteBook {
    /// The book in `path` (empty when the file is missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let invites = match std::fs::read(path) {
            Ok(bytes) => ciborium::from_reader(&bytes[..]).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: path.to_path_buf(),
            invites,
        })
    }

    fn save(&self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        ciborium::into_writer(&self.invites, &mut bytes).expect("invites serialize");
        write_atomic(&self.path, &bytes, 0o600)
    }

    /// Records a new invite for `secret`.
    pub fn add(
        &mut self,
        secret: &[u8; 32],
        role: NodeRole,
        now: u64,
        expires: Option<u64>,
    ) -> std::io::Result<MadeInvite> {
        if self.invites.len() >= MAX_INVITES {
            // Forget the oldest closed one; if every invite is open, the oldest open one.
            let victim = self
                .invites
                .iter()
                .position(|i| !i.is_open(now))
                .unwrap_or(0);
            self.invites.remove(victim);
        }
        let made = MadeInvite {
            id: invite_id(secret),
            redeem_key: redeem_key(secret),
            role,
            made_at: now,
            expires,
            used: None,
            revoked: false,
        };
        self.invites.push(made.clone());
        self.save()?;
        Ok(made)
    }

    pub fn list(&self) -> &[MadeInvite] {
        &self.invites
    }

    /// Revokes the invites whose id starts with `prefix` (hex); how many.
    pub fn revoke(&mut self, prefix: &str) -> std::io::Result<usize> {
        let prefix = prefix.to_ascii_lowercase();
        let mut n = 0;
        for i in &mut self.invites {
            if hex::encode(i.id).starts_with(&prefix) && !i.revoked && i.used.is_none() {
                i.revoked = true;
                n += 1;
            }
        }
        if n > 0 {
            self.save()?;
        }
        Ok(n)
    }

    /// Checks a redemption by `peer` at `now`, and on success records the invite as used by
    /// it (durably, before the certificate is handed out). The same peer may redeem again:
    /// its first connection may have broken after the certificate was made.
    pub fn redeem(
        &mut self,
        id: &[u8; 16],
        proof: &[u8; 32],
        peer: &PeerId,
        name: &str,
        now: u64,
    ) -> Result<NodeRole, RedeemError> {
        let invite = self
            .invites
            .iter_mut()
            .find(|i| i.id == *id)
            .ok_or(RedeemError::Unknown)?;
        let expected = proof_under(&invite.redeem_key, peer);
        if !subtle_eq(&expected, proof) {
            return Err(RedeemError::BadProof);
        }
        if let Some(used) = &invite.used {
            if used.peer == peer.to_bytes() {
                return Ok(invite.role);
            }
            return Err(RedeemError::AlreadyUsed {
                name: used.name.clone(),
                ago: now.saturating_sub(used.at),
            });
        }
        if invite.revoked {
            return Err(RedeemError::Revoked);
        }
        if let Some(t) = invite.expires
            && now > t
        {
            return Err(RedeemError::Expired(now - t));
        }
        invite.used = Some(Used {
            peer: peer.to_bytes(),
            name: name.to_string(),
            at: now,
        });
        let role = invite.role;
        self.save().map_err(|_| RedeemError::Unknown)?;
        Ok(role)
    }
}

/// Constant-time equality of two 32-byte values.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_admits_one_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("invites.cbor");
        let mut book = InviteBook::open(&path).unwrap();
        let secret = [9u8; 32];
        let made = book.add(&secret, NodeRole::Reader, 100, Some(200)).unwrap();
        let id = made.id;
        let (a, b) = (PeerId::random(), PeerId::random());

        // A proof for another peer (a replayed redemption) does not pass.
        assert_eq!(
            book.redeem(&id, &redemption_proof(&secret, &b), &a, "a", 150),
            Err(RedeemError::BadProof)
        );
        assert_eq!(
            book.redeem(&id, &redemption_proof(&secret, &a), &a, "a", 150),
            Ok(NodeRole::Reader)
        );
        // The same node again (a broken first connection): fine. Another node: refused, and
        // the refusal survives a restart.
        assert_eq!(
            book.redeem(&id, &redemption_proof(&secret, &a), &a, "a", 160),
            Ok(NodeRole::Reader)
        );
        let mut book = InviteBook::open(&path).unwrap();
        let err = book
            .redeem(&id, &redemption_proof(&secret, &b), &b, "b", 170)
            .unwrap_err();
        assert_eq!(
            err,
            RedeemError::AlreadyUsed {
                name: "a".into(),
                ago: 20
            }
        );
        assert!(err.to_string().contains("already used"));

        // Expired and revoked invites are refused; unknown ids too.
        let s2 = [3u8; 32];
        let i2 = book.add(&s2, NodeRole::Storage, 100, Some(200)).unwrap().id;
        assert_eq!(
            book.redeem(&i2, &redemption_proof(&s2, &b), &b, "b", 250),
            Err(RedeemError::Expired(50))
        );
        assert_eq!(book.revoke(&hex::encode(&i2[..3])).unwrap(), 1);
        assert_eq!(
            book.redeem(&i2, &redemption_proof(&s2, &b), &b, "b", 150),
            Err(RedeemError::Revoked)
        );
        assert_eq!(
            book.redeem(&[0; 16], &[0; 32], &b, "b", 150),
            Err(RedeemError::Unknown)
        );
    }
}
