//! Keys a node holds: the network key (admission to the private network), the node identity
//! (its libp2p peer id) and the user identity (age X25519 to decrypt volume keys, ed25519 to
//! sign namespace entries).

use std::fmt;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::util::fsutil::write_new;

pub const NODE_KEY_FILE: &str = "node.key";
pub const USER_KEY_FILE: &str = "user.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> IdentityError {
    IdentityError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The 32-byte secret shared by every member of one p2pfs network.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey(pub [u8; 32]);

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

impl NetworkKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        NetworkKey(key)
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space ignored).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
        if bytes.len() == 32 {
            return Ok(NetworkKey(bytes[..].try_into().expect("32 bytes")));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| {
                invalid(
                    path,
                    "not a network key: expected 32 bytes or 64 hex digits",
                )
            })?
            .trim();
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(|_| {
            invalid(
                path,
                "not a network key: expected 32 bytes or 64 hex digits",
            )
        })?;
        Ok(NetworkKey(key))
    }

    /// Uses the key in `path`, or creates the file (mode 0600) with a fresh key.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), IdentityError> {
        match Self::load(path) {
            Ok(key) => Ok((key, false)),
            Err(IdentityError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                let key = Self::generate();
                let text = Zeroizing::new(format!("{}\n", hex::encode(key.0)));
                write_new(path, text.as_bytes(), 0o600).map_err(io_err(path))?;
                Ok((key, true))
            }
            Err(e) => Err(e),
        }
    }

    /// A short, non-secret fingerprint that names the network in logs and status.
    pub fn fingerprint(&self) -> String {
        let h = blake3::derive_key("p2pfs network fingerprint v1", &self.0);
        hex::encode(&h[..8])
    }
}

/// A join token (`p2pfs-ctl invite`, `p2pfs init --join`): everything a new node needs to join
/// a network. It holds the network key, so it is as secret as the key. The expiry is checked
/// by the joining node (the network admits any holder of the key); a MAC under a key derived
/// from the network key covers the whole token, so the expiry cannot be edited without
/// deliberately re-deriving it from the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub network_key: NetworkKey,
    /// Addresses of the inviting node (multiaddrs), dialed as bootstrap addresses.
    pub bootstrap: Vec<String>,
    /// The inviting node's peer id.
    pub inviter: String,
    /// Seconds since the Unix epoch after which the token is refused; `None`: never.
    pub expires: Option<u64>,
    /// In a certified network: what mints the joiner's certificate (a `p2pfs-invite-3-` token).
    pub certified: Option<CertifiedInvite>,
}

/// The part of an invite to a certified network: the founder (the root of trust the joiner
/// checks every member against) and the single-use secret the inviting node redeems.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedInvite {
    pub founder: UserId,
    pub secret: [u8; 32],
    /// `storage` or `reader`.
    pub role: String,
}

impl std::fmt::Debug for CertifiedInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertifiedInvite({:?}, {}, ..)", self.founder, self.role)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteWireV3 {
    #[serde(with = "crate::util::fixed_bytes")]
    key: [u8; 32],
    bootstrap: Vec<String>,
    inviter: String,
    expires: Option<u64>,
    founder: UserId,
    #[serde(with = "crate::util::fixed_bytes")]
    secret: [u8; 32],
    role: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteWire {
    #[serde(with = "crate::util::fixed_bytes")]
    key: [u8; 32],
    bootstrap: Vec<String>,
    inviter: String,
    expires: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InviteError {
    #[error("not a p2pfs invite token ({0}); it starts with {INVITE_PREFIX}")]
    Malformed(String),
    #[error(
        "this invite was changed or cut (its MAC does not match); ask for a new one (p2pfs-ctl invite)"
    )]
    BadMac,
    #[error(
        "this invite is of an older format whose expiry is not authenticated; make a new one (p2pfs-ctl invite)"
    )]
    OldFormat,
    #[error("this invite expired {0} s ago; ask for a new one (p2pfs-ctl invite)")]
    Expired(u64),
}

pub const INVITE_PREFIX: &str = "p2pfs-invite-2-";
/// Invites to a certified network (single use; they mint a node certificate).
pub const CERTIFIED_INVITE_PREFIX: &str = "p2pfs-invite-3-";
/// Tokens before the MAC (a 4-byte truncated hash that anyone could recompute): refused.
const OLD_INVITE_PREFIX: &str = "p2pfs-invite-1-";
/// Longest token accepted (a few dozen addresses).
const MAX_INVITE: usize = 16 * 1024;
/// Bytes of the MAC at the end of a token.
const INVITE_MAC_LEN: usize = 32;

/// The MAC of a token's body: keyed blake3 under a key derived from the network key for this
/// purpose only.
fn invite_mac(network_key: &[u8; 32], body: &[u8]) -> blake3::Hash {
    let key = Zeroizing::new(blake3::derive_key("p2pfs invite token mac v2", network_key));
    blake3::keyed_hash(&key, body)
}

impl Invite {
    pub fn encode(&self) -> String {
        let mut bytes = Zeroizing::new(Vec::new());
        let prefix = match &self.certified {
            None => {
                let wire = InviteWire {
                    key: self.network_key.0,
                    bootstrap: self.bootstrap.clone(),
                    inviter: self.inviter.clone(),
                    expires: self.expires,
                };
                ciborium::into_writer(&wire, &mut *bytes).expect("invite serializes");
                INVITE_PREFIX
            }
            Some(c) => {
                let wire = InviteWireV3 {
                    key: self.network_key.0,
                    bootstrap: self.bootstrap.clone(),
                    inviter: self.inviter.clone(),
                    expires: self.expires,
                    founder: c.founder,
                    secret: c.secret,
                    role: c.role.clone(),
                };
                ciborium::into_writer(&wire, &mut *bytes).expect("invite serializes");
                CERTIFIED_INVITE_PREFIX
            }
        };
        let mac = invite_mac(&self.network_key.0, &bytes);
        bytes.extend_from_slice(mac.as_bytes());
        format!("{prefix}{}", hex::encode(&bytes[..]))
    }

    /// Reads a token, refusing a malformed, changed, old-format or (at `now`, seconds since the
    /// epoch) expired one.
    pub fn decode(token: &str, now: u64) -> Result<Self, InviteError> {
        let token = token.trim();
        if token.len() > MAX_INVITE {
            return Err(InviteError::Malformed("too long".into()));
        }
        if token.starts_with(OLD_INVITE_PREFIX) {
            return Err(InviteError::OldFormat);
        }
        let (hexed, v3) = match (
            token.strip_prefix(INVITE_PREFIX),
            token.strip_prefix(CERTIFIED_INVITE_PREFIX),
        ) {
            (Some(h), _) => (h, false),
            (_, Some(h)) => (h, true),
            _ => return Err(InviteError::Malformed("wrong prefix".into())),
        };
        let bytes = Zeroizing::new(
            hex::decode(hexed).map_err(|_| InviteError::Malformed("not hex".into()))?,
        );
        if bytes.len() <= INVITE_MAC_LEN {
            return Err(InviteError::Malformed("too short".into()));
        }
        let (body, mac) = bytes.split_at(bytes.len() - INVITE_MAC_LEN);
        // A cut or changed body usually does not decode; one that does must carry the MAC.
        let (wire, certified) = if v3 {
            let w: InviteWireV3 = ciborium::from_reader(body).map_err(|_| InviteError::BadMac)?;
            if w.role != "storage" && w.role != "reader" {
                return Err(InviteError::Malformed(format!("unknown role {:?}", w.role)));
            }
            let certified = CertifiedInvite {
                founder: w.founder,
                secret: w.secret,
                role: w.role,
            };
            let wire = InviteWire {
                key: w.key,
                bootstrap: w.bootstrap,
                inviter: w.inviter,
                expires: w.expires,
            };
            (wire, Some(certified))
        } else {
            let w: InviteWire = ciborium::from_reader(body).map_err(|_| InviteError::BadMac)?;
            (w, None)
        };
        let key = Zeroizing::new(wire.key);
        let mac: [u8; INVITE_MAC_LEN] = mac.try_into().expect("split at the MAC length");
        // blake3::Hash compares in constant time.
        if invite_mac(&key, body) != blake3::Hash::from_bytes(mac) {
            return Err(InviteError::BadMac);
        }
        for a in &wire.bootstrap {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|_| InviteError::Malformed(format!("bad address {a:?}")))?;
        }
        if let Some(t) = wire.expires
            && now > t
        {
            return Err(InviteError::Expired(now - t));
        }
        Ok(Invite {
            network_key: NetworkKey(*key),
            bootstrap: wire.bootstrap,
            inviter: wire.inviter,
            expires: wire.expires,
            certified,
        })
    }
}

/// The node's libp2p identity (its peer id).
pub struct NodeIdentity {
    pub keypair: libp2p::identity::Keypair,
}

impl NodeIdentity {
    pub fn generate() -> Self {
        Self {
            keypair: libp2p::identity::Keypair::generate_ed25519(),
        }
    }

    pub fn peer_id(&self) -> libp2p::PeerId {
        self.keypair.public().to_peer_id()
    }

    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let bytes = Zeroizing::new(
            self.keypair
                .to_protobuf_encoding()
                .map_err(|e| invalid(path, e.to_string()))?,
        );
        write_new(path, &bytes, 0o600).map_err(io_err(path))
    }

    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
        let keypair = libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| invalid(path, format!("not a node key: {e}")))?;
        Ok(Self { keypair })
    }
}

/// A person's identity: decrypts the volume keys wrapped to them, signs what they write.
pub struct UserIdentity {
    pub age: age::x25519::Identity,
    pub signing: SigningKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserKeyFile {
    age_secret_key: String,
    signing_key: String,
}

impl UserIdentity {
    pub fn generate() -> Self {
        Self {
            age: age::x25519::Identity::generate(),
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.signing.verifying_key().to_bytes())
    }

    pub fn recipient(&self) -> age::x25519::Recipient {
        self.age.to_public()
    }

    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let file = UserKeyFile {
            age_secret_key: self.age.to_string().expose_secret().to_string(),
            signing_key: hex::encode(self.signing.to_bytes()),
        };
        let text = Zeroizing::new(format!(
            "# p2pfs user identity: keep it secret; it decrypts and signs your files.\n{}",
            toml::to_string(&file).expect("serializes")
        ));
        write_new(path, text.as_bytes(), 0o600).map_err(io_err(path))
    }

    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
        let file: UserKeyFile =
            toml::from_str(&text).map_err(|e| invalid(path, format!("not a user key: {e}")))?;
        let age = age::x25519::Identity::from_str(&file.age_secret_key)
            .map_err(|e| invalid(path, format!("bad age key: {e}")))?;
        let mut sk = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&file.signing_key, &mut sk[..])
            .map_err(|_| invalid(path, "bad signing key: expected 64 hex digits"))?;
        Ok(Self {
            age,
            signing: SigningKey::from_bytes(&sk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_invite() -> Invite {
        Invite {
            network_key: NetworkKey::generate(),
            bootstrap: vec!["/ip4/192.0.2.1/tcp/4001".into()],
            inviter: "12D3KooW".into(),
            expires: Some(1000),
            certified: None,
        }
    }

    #[test]
    fn invites_round_trip_and_refuse_expired_mangled_and_foreign_tokens() {
        let invite = test_invite();
        let token = invite.encode();
        assert!(token.starts_with(INVITE_PREFIX));
        assert_eq!(Invite::decode(&format!(" {token}\n"), 999).unwrap(), invite);
        assert_eq!(Invite::decode(&token, 1005), Err(InviteError::Expired(5)));
        let never = Invite {
            expires: None,
            ..invite.clone()
        };
        assert!(Invite::decode(&never.encode(), u64::MAX).is_ok());
        // One changed digit (of the MAC, or of the body), a cut.
        let mut in_mac = token.clone().into_bytes();
        let i = in_mac.len() - 10;
        in_mac[i] = if in_mac[i] == b'0' { b'1' } else { b'0' };
        let mut in_body = token.clone().into_bytes();
        let i = INVITE_PREFIX.len() + 20;
        in_body[i] = if in_body[i] == b'0' { b'1' } else { b'0' };
        for bad in [
            String::from_utf8(in_mac).unwrap(),
            String::from_utf8(in_body).unwrap(),
            token[..token.len() - 2].to_string(),
        ] {
            assert_eq!(Invite::decode(&bad, 0), Err(InviteError::BadMac), "{bad}");
        }
        // Another prefix, garbage.
        for bad in [
            token.replacen("p2pfs", "xxxxx", 1),
            format!("{INVITE_PREFIX}zz"),
            format!("{INVITE_PREFIX}00"),
            String::new(),
        ] {
            assert!(
                matches!(Invite::decode(&bad, 0), Err(InviteError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn certified_invites_round_trip_under_their_own_prefix_and_mac() {
        let invite = Invite {
            certified: Some(CertifiedInvite {
                founder: UserId([5; 32]),
                secret: [6; 32],
                role: "reader".into(),
            }),
            ..test_invite()
        };
        let token = invite.encode();
        assert!(token.starts_with(CERTIFIED_INVITE_PREFIX));
        assert_eq!(Invite::decode(&token, 10).unwrap(), invite);
        let mut changed = token.clone().into_bytes();
        let i = CERTIFIED_INVITE_PREFIX.len() + 30;
        changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            Invite::decode(&String::from_utf8(changed).unwrap(), 10),
            Err(InviteError::BadMac)
        );
    }

    /// The attack the MAC stops: the body re-encoded with a later expiry and its check
    /// recomputed without the network key (as the old format's truncated hash allowed).
    #[test]
    fn an_edited_expiry_is_refused_and_old_tokens_ask_for_a_new_invite() {
        let invite = test_invite();
        let mut wire = InviteWire {
            key: invite.network_key.0,
            bootstrap: invite.bootstrap.clone(),
            inviter: invite.inviter.clone(),
            expires: Some(u64::MAX),
        };
        let mut body = Vec::new();
        ciborium::into_writer(&wire, &mut body).unwrap();
        let mut forged = body.clone();
        forged.extend_from_slice(blake3::hash(&body).as_bytes());
        let forged = format!("{INVITE_PREFIX}{}", hex::encode(&forged));
        assert_eq!(Invite::decode(&forged, 2000), Err(InviteError::BadMac));
        // A MAC under another network's key does not pass either.
        let other = NetworkKey::generate();
        let mut foreign = body.clone();
        foreign.extend_from_slice(invite_mac(&other.0, &body).as_bytes());
        let foreign = format!("{INVITE_PREFIX}{}", hex::encode(&foreign));
        assert_eq!(Invite::decode(&foreign, 2000), Err(InviteError::BadMac));

        // The old format, checksum and all, is refused with a clear message.
        wire.expires = None;
        let mut old = Vec::new();
        ciborium::into_writer(&wire, &mut old).unwrap();
        let sum = blake3::hash(&old);
        old.extend_from_slice(&sum.as_bytes()[..4]);
        let old = format!("p2pfs-invite-1-{}", hex::encode(&old));
        let err = Invite::decode(&old, 0).unwrap_err();
        assert_eq!(err, InviteError::OldFormat);
        assert!(err.to_string().contains("make a new one"));
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let user = UserIdentity::generate();
        let p = dir.path().join("user.key");
        user.save_new(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = UserIdentity::load(&p).unwrap();
        assert_eq!(back.user_id(), user.user_id());
        assert_eq!(back.recipient().to_string(), user.recipient().to_string());
        assert!(user.save_new(&p).is_err(), "never overwrites");

        let node = NodeIdentity::generate();
        let p = dir.path().join("node.key");
        node.save_new(&p).unwrap();
        assert_eq!(NodeIdentity::load(&p).unwrap().peer_id(), node.peer_id());
    }

    #[test]
    fn network_key_created_once_then_reused_raw_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("net.key");
        let (k1, created) = NetworkKey::load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, created) = NetworkKey::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        let raw = dir.path().join("raw.key");
        fs::write(&raw, k1.0).unwrap();
        assert_eq!(NetworkKey::load(&raw).unwrap(), k1);
        let bad = dir.path().join("bad.key");
        fs::write(&bad, b"short").unwrap();
        assert!(matches!(
            NetworkKey::load(&bad),
            Err(IdentityError::Invalid { .. })
        ));
    }
}

/// A user, named by their ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(#[serde(with = "crate::util::fixed_bytes")] pub [u8; 32]);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", hex::encode(&self.0[..6]))
    }
}
