//! Signed membership records: node certificates, admin grants, revocations and key epochs.
//! Each is a body signed by a user's ed25519 key under its own domain, so a signature made for
//! one kind of record (or for a namespace entry) never verifies as another.

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::{UserId, UserIdentity};

/// Longest node name a certificate carries (bytes), as `cluster::names` allows.
pub const MAX_CERT_NAME: usize = 64;
/// Longest age recipient string (an X25519 recipient is 62 characters).
const MAX_RECIPIENT: usize = 128;
/// Largest sealed key of an epoch (one age stanza per remaining member, ~200 bytes each).
pub const MAX_SEALED: usize = 256 * 1024;
/// Most certificates a demotion keeps valid.
pub const MAX_KEEP: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("not a membership record: {0}")]
    Malformed(String),
    #[error("bad signature on a {0}")]
    BadSignature(&'static str),
    #[error("the {0} belongs to another network")]
    OtherNetwork(&'static str),
    #[error("the certificate is for another node ({0})")]
    WrongPeer(String),
    #[error("the certificate was signed by {0}, who may not admit nodes to this network")]
    NotAdmitter(String),
    #[error("this node was expelled from the network (at {0}, unix time)")]
    Revoked(u64),
    #[error("only the founder may grant or withdraw admin rights")]
    NotFounder,
    #[error("{0} was signed by someone who is not an admin of this network")]
    NotAdmin(&'static str),
    #[error("the ledger is full ({0}); record refused")]
    Full(&'static str),
}

/// A kind of signed body, with the domain its signatures are made under.
pub trait Body: Serialize + DeserializeOwned + Clone {
    const DOMAIN: &'static str;
    const KIND: &'static str;
}

/// A body and its signer's signature over `DOMAIN || cbor(body)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
pub struct Signed<T> {
    pub body: T,
    pub by: UserId,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

fn signed_message<T: Body>(body: &T) -> Vec<u8> {
    let mut bytes = T::DOMAIN.as_bytes().to_vec();
    bytes.push(0);
    ciborium::into_writer(body, &mut bytes).expect("a record body serializes");
    bytes
}

impl<T: Body> Signed<T> {
    pub fn sign(body: T, signer: &UserIdentity) -> Self {
        let sig = signer.signing.sign(&signed_message(&body));
        Self {
            body,
            by: signer.user_id(),
            sig: sig.to_bytes().to_vec(),
        }
    }

    /// Checks the signature against the key named in `by` (who that is, and whether they may
    /// sign this, is the ledger's question).
    pub fn verify_signature(&self) -> Result<(), CertError> {
        let bad = || CertError::BadSignature(T::KIND);
        let key = VerifyingKey::from_bytes(&self.by.0).map_err(|_| bad())?;
        let sig: [u8; 64] = self.sig.as_slice().try_into().map_err(|_| bad())?;
        key.verify(&signed_message(&self.body), &Signature::from_bytes(&sig))
            .map_err(|_| bad())
    }

    /// Names the record (the hash of everything, signature included).
    pub fn digest(&self) -> [u8; 32] {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).expect("a record serializes");
        *blake3::hash(&bytes).as_bytes()
    }
}

/// What a certified node may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Holds chunks (placement weight: its capacity).
    Storage,
    /// Never holds chunks: its capacity counts as 0 whatever it announces.
    Reader,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Storage => "storage",
            NodeRole::Reader => "reader",
        }
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "storage" => Ok(NodeRole::Storage),
            "reader" => Ok(NodeRole::Reader),
            _ => Err(format!("unknown role {s:?}: expected storage or reader")),
        }
    }
}

/// A node's admission: who it is (peer id, name, user), what it may do and who let it in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBody {
    /// The network's founder: binds the certificate to one network.
    pub network: UserId,
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    pub name: String,
    pub user: UserId,
    /// The user's age X25519 recipient: new network keys are sealed to it.
    pub recipient: String,
    pub role: NodeRole,
    pub issued_at: u64,
}

impl Body for CertBody {
    const DOMAIN: &'static str = "p2pfs node certificate v1";
    const KIND: &'static str = "node certificate";
}

pub type NodeCert = Signed<CertBody>;

impl NodeCert {
    pub fn peer_id(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.body.peer).ok()
    }

    /// Checks what the certificate says about itself (sizes, a parsable peer id and
    /// recipient) and its signature; not who signed it.
    pub fn check_form(&self) -> Result<(), CertError> {
        let b = &self.body;
        if b.name.len() > MAX_CERT_NAME
            || !(b.name.is_empty() || super::names::check_name(&b.name).is_ok())
            || b.recipient.len() > MAX_RECIPIENT
            || self.peer_id().is_none()
            || b.recipient.parse::<age::x25519::Recipient>().is_err()
        {
            return Err(CertError::Malformed("bad certificate fields".into()));
        }
        self.verify_signature()
    }
}

/// The founder's word on whether `user` is an admin (the latest `seq` counts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBody {
    pub network: UserId,
    pub user: UserId,
    pub admin: bool,
    pub seq: u64,
    pub at: u64,
    /// On a demotion: digests of the certificates this admin issued that stay valid (the
    /// members it admitted stay members; anything it signs afterwards does not count).
    pub keep: Vec<[u8; 32]>,
}

impl Body for GrantBody {
    const DOMAIN: &'static str = "p2pfs admin grant v1";
    const KIND: &'static str = "admin grant";
}

pub type AdminGrant = Signed<GrantBody>;

/// An admin's word that a node is out of the network for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBody {
    pub network: UserId,
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    pub at: u64,
}

impl Body for RevocationBody {
    const DOMAIN: &'static str = "p2pfs node revocation v1";
    const KIND: &'static str = "revocation";
}

pub type Revocation = Signed<RevocationBody>;

/// A new key for the network volume, sealed (age) to the users of the nodes that remain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochBody {
    pub network: UserId,
    pub id: [u8; 16],
    pub at: u64,
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

impl Body for EpochBody {
    const DOMAIN: &'static str = "p2pfs network key epoch v1";
    const KIND: &'static str = "key epoch";
}

pub type KeyEpoch = Signed<EpochBody>;

/// Any record of the ledger, as it travels (handshake hellos, the ledger gossip topic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRecord {
    Cert(NodeCert),
    Grant(AdminGrant),
    Revocation(Revocation),
    Epoch(KeyEpoch),
}

/// Seals a 32-byte key to every recipient (age X25519; bad recipient strings are skipped).
pub fn seal_key(key: &[u8; 32], recipients: &[String]) -> Result<Vec<u8>, CertError> {
    let parsed: Vec<age::x25519::Recipient> =
        recipients.iter().filter_map(|r| r.parse().ok()).collect();
    if parsed.is_empty() {
        return Err(CertError::Malformed(
            "no recipient to seal the key to".into(),
        ));
    }
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CertError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    std::io::Write::write_all(&mut writer, key).expect("writes to memory");
    writer
        .finish()
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Opens a key sealed with [`seal_key`]; `None` when it was not sealed to `user`.
pub fn open_key(sealed: &[u8], user: &UserIdentity) -> Option<[u8; 32]> {
    let plain = zeroize::Zeroizing::new(age::decrypt(&user.age, sealed).ok()?);
    plain.as_slice().try_into().ok()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
