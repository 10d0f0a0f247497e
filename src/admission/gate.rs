//! The gate: this node's side of admission. It knows the node's mode (key-only, joining,
//! certified), its certificate, the ledger and the invites it made, and answers the network
//! handshake (`hello`, `check`, `granted`): a connection is admitted only when the peer's
//! certificate chains to the founder and is not revoked. What changes in the ledger is
//! persisted at once and reported on a channel (the cluster closes revoked peers' connections).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::cert::{
    AdminGrant, CertBody, CertError, EpochBody, GrantBody, KeyEpoch, LedgerRecord, NodeCert,
    NodeRole, Revocation, RevocationBody, Signed, now_unix, open_key, seal_key,
};
use super::invites::{InviteBook, MadeInvite, RedeemError, invite_id, redemption_proof};
use super::ledger::{Ledger, Merged};
use crate::identity::{UserId, UserIdentity};
use crate::util::fsutil::write_atomic;

pub const MEMBERSHIP_FILE: &str = "membership.cbor";
pub const INVITES_FILE: &str = "invites.cbor";
/// Bytes of ledger records a hello carries at most (the net layer caps a hello at 512 KiB).
const HELLO_RECORDS_BUDGET: usize = 384 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a membership file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("this network has no certificates (key only); run `p2pfs-ctl certify` first")]
    KeyOnly,
    #[error("this node has no certificate yet")]
    NotCertified,
    #[error("only an admin may do this; admins here: {0}")]
    NotAdmin(String),
    #[error("only the founder may grant or withdraw admin rights")]
    NotFounder,
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{0}")]
    Refused(String),
}

/// How this node takes part in admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The network key is the whole membership (networks made with `--network-key`, or before
    /// certificates).
    KeyOnly,
    /// Invited to a certified network; waiting for the inviting node to mint a certificate.
    Joining,
    /// Holds a certificate; admits only certified peers.
    Certified,
}

/// What a joining node keeps until its invite is redeemed.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    secret: [u8; 32],
}

/// The membership file: everything the gate keeps across restarts.
#[derive(Serialize, Deserialize)]
struct MembershipFile {
    mode: Mode,
    own: Option<NodeCert>,
    pending: Option<Pending>,
    ledger: Ledger,
    /// Network-volume keys of the epochs this node could open, by epoch id.
    epoch_keys: BTreeMap<[u8; 16], [u8; 32]>,
}

/// A handshake hello.
#[derive(Serialize, Deserialize)]
struct Hello {
    mode: Mode,
    root: Option<UserId>,
    cert: Option<NodeCert>,
    redeem: Option<Redeem>,
    records: Vec<LedgerRecord>,
}

/// A joining node's claim to an invite, bound to its peer id.
#[derive(Serialize, Deserialize)]
struct Redeem {
    invite: [u8; 16],
    proof: [u8; 32],
    name: String,
    user: UserId,
    recipient: String,
    /// By `user`'s signing key over [`redeem_message`]: the joiner holds the user it claims
    /// (so it cannot claim the founder's, or a volume owner's).
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

/// What a joiner signs with its user key when it redeems an invite.
fn redeem_message(root: &UserId, peer: &PeerId, invite: &[u8; 16], recipient: &str) -> Vec<u8> {
    let mut m = b"p2pfs invite redemption by a user v1\0".to_vec();
    m.extend_from_slice(&root.0);
    m.extend_from_slice(&peer.to_bytes());
    m.extend_from_slice(invite);
    m.extend_from_slice(recipient.as_bytes());
    m
}

/// What an admitting node hands a peer it just certified.
#[derive(Serialize, Deserialize)]
struct Grant {
    cert: NodeCert,
    records: Vec<LedgerRecord>,
    /// The network-volume keys this node holds (CBOR map epoch id -> key), sealed to the new
    /// member's recipient.
    #[serde(with = "serde_bytes")]
    keys: Vec<u8>,
}

struct State {
    file: MembershipFile,
    invites: InviteBook,
    /// The last refusal another node gave this one: (peer, reason, unix time).
    last_refusal: Option<(PeerId, String, u64)>,
}

/// What the gate reports when the ledger or the node's standing changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateEvent {
    Merged(Merged),
    /// This node now holds a certificate (its invite was redeemed, or the network upgraded).
    Certified,
}

pub struct Gate {
    path: PathBuf,
    me: PeerId,
    user: UserIdentity,
    name: String,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<GateEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<GateEvent>>>,
}

fn load_file(path: &Path) -> Result<Option<MembershipFile>, GateError> {
    match std::fs::read(path) {
        Ok(bytes) => ciborium::from_reader(&bytes[..])
            .map(Some)
            .map_err(|e| GateError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Founds a certified network in `data_dir`: `user` is the founder; the node's own
/// certificate is signed at once.
pub fn found(
    data_dir: &Path,
    me: &PeerId,
    user: &UserIdentity,
    name: &str,
) -> Result<(), GateError> {
    let mut ledger = Ledger::new(user.user_id());
    let cert = mint(user, user.user_id(), me, name, user, NodeRole::Storage);
    ledger.merge(LedgerRecord::Cert(cert.clone()))?;
    let file = MembershipFile {
        mode: Mode::Certified,
        own: Some(cert),
        pending: None,
        ledger,
        epoch_keys: BTreeMap::new(),
    };
    save_file(&data_dir.join(MEMBERSHIP_FILE), &file)
}

/// Records in `data_dir` that this node joins the certified network of `founder` with the
/// invite `secret` (redeemed at its first connection to the inviting node).
pub fn join(data_dir: &Path, founder: UserId, secret: [u8; 32]) -> Result<(), GateError> {
    let file = MembershipFile {
        mode: Mode::Joining,
        own: None,
        pending: Some(Pending { secret }),
        ledger: Ledger::new(founder),
        epoch_keys: BTreeMap::new(),
    };
    save_file(&data_dir.join(MEMBERSHIP_FILE), &file)
}

fn save_file(path: &Path, file: &MembershipFile) -> Result<(), GateError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(file, &mut bytes).expect("membership serializes");
    write_atomic(path, &bytes, 0o600).map_err(|source| GateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn mint(
    signer: &UserIdentity,
    network: UserId,
    peer: &PeerId,
    name: &str,
    user_of: &UserIdentity,
    role: NodeRole,
) -> NodeCert {
    Signed::sign(
        CertBody {
            network,
            peer: peer.to_bytes(),
            name: name.to_string(),
            user: user_of.user_id(),
            recipient: user_of.recipient().to_string(),
            role,
            issued_at: now_unix(),
        },
        signer,
    )
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("serializes");
    bytes
}

impl Gate {
    /// The gate of the node in `data_dir` (key-only when the data dir has no membership file).
    pub fn open(
        data_dir: &Path,
        me: PeerId,
        user: &UserIdentity,
        name: &str,
    ) -> Result<Self, GateError> {
        let path = data_dir.join(MEMBERSHIP_FILE);
        let file = load_file(&path)?.unwrap_or(MembershipFile {
            mode: Mode::KeyOnly,
            own: None,
            pending: None,
            ledger: Ledger::default(),
            epoch_keys: BTreeMap::new(),
        });
        let invites_path = data_dir.join(INVITES_FILE);
        let invites = InviteBook::open(&invites_path).map_err(|source| GateError::Io {
            path: invites_path,
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            path,
            me,
            user: UserIdentity {
                age: user.age.clone(),
                signing: user.signing.clone(),
            },
            name: name.to_string(),
            state: Mutex::new(State {
                file,
                invites,
                last_refusal: None,
            }),
            events: tx,
            events_rx: Mutex::new(Some(rx)),
        })
    }

    /// The channel of changes (taken once, by the cluster).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<GateEvent>> {
        self.events_rx.lock().take()
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().file.mode
    }

    pub fn own_cert(&self) -> Option<NodeCert> {
        self.state.lock().file.own.clone()
    }

    /// A copy of the ledger (small: read it, do not keep it).
    pub fn ledger(&self) -> Ledger {
        self.state.lock().file.ledger.clone()
    }

    pub fn last_refusal(&self) -> Option<(PeerId, String, u64)> {
        self.state.lock().last_refusal.clone()
    }

    /// Whether `peer` may be a member of this node's view: always in a key-only network; in
    /// a certified one, when its certificate is known, valid and not revoked.
    pub fn admits(&self, peer: &PeerId) -> bool {
        let st = self.state.lock();
        match st.file.mode {
            Mode::KeyOnly => true,
            Mode::Joining | Mode::Certified => st
                .file
                .ledger
                .cert(peer)
                .is_some_and(|c| st.file.ledger.check_cert(c, peer).is_ok()),
        }
    }

    /// The role `peer`'s certificate gives it (`None`: key-only network, or no certificate).
    pub fn role_of(&self, peer: &PeerId) -> Option<NodeRole> {
        let st = self.state.lock();
        st.file.ledger.cert(peer).map(|c| c.body.role)
    }

    /// The network-volume keys of every epoch this node holds, oldest first.
    pub fn network_epoch_keys(&self) -> Vec<[u8; 32]> {
        let st = self.state.lock();
        st.file
            .ledger
            .epochs()
            .iter()
            .filter_map(|e| st.file.epoch_keys.get(&e.body.id).copied())
            .collect()
    }

    fn save(&self, st: &State) {
        if let Err(e) = save_file(&self.path, &st.file) {
            tracing::error!(error = %e, "cannot save the membership file");
        }
    }

    /// Opens the keys of new epochs sealed to this node's user.
    fn open_epochs(&self, st: &mut State) {
        let missing: Vec<([u8; 16], Vec<u8>)> = st
            .file
            .ledger
            .epochs()
            .iter()
            .filter(|e| !st.file.epoch_keys.contains_key(&e.body.id))
            .map(|e| (e.body.id, e.body.sealed.clone()))
            .collect();
        for (id, sealed) in missing {
            if let Some(key) = open_key(&sealed, &self.user) {
                st.file.epoch_keys.insert(id, key);
            }
        }
    }

    /// Merges records from anyone (each is checked); persists and reports what changed.
    pub fn merge_records(&self, records: Vec<LedgerRecord>) -> Vec<Merged> {
        let mut st = self.state.lock();
        if st.file.mode == Mode::KeyOnly {
            return Vec::new();
        }
        let (changed, refused) = st.file.ledger.merge_all(records);
        if refused > 0 {
            tracing::debug!(refused, "ledger records refused");
        }
        if !changed.is_empty() {
            self.open_epochs(&mut st);
            self.save(&st);
            for m in &changed {
                let _ = self.events.send(GateEvent::Merged(m.clone()));
            }
        }
        changed
    }

    /// Every ledger record (the ledger gossip topic carries new ones; this is for a full push).
    pub fn records(&self) -> Vec<LedgerRecord> {
        self.state.lock().file.ledger.records()
    }

    fn require_admin(&self, st: &State) -> Result<(), GateError> {
        match st.file.mode {
            Mode::KeyOnly => return Err(GateError::KeyOnly),
            Mode::Joining => return Err(GateError::NotCertified),
            Mode::Certified => {}
        }
        if st.file.ledger.is_admin(&self.user.user_id()) {
            Ok(())
        } else {
            Err(GateError::NotAdmin(
                st.file
                    .ledger
                    .admins()
                    .iter()
                    .map(short_user)
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        }
    }

    /// Makes an invite (admins only): returns the founder and the token's secret.
    pub fn make_invite(
        &self,
        role: NodeRole,
        expires: Option<u64>,
    ) -> Result<(UserId, [u8; 32], MadeInvite), GateError> {
        let mut st = self.state.lock();
        self.require_admin(&st)?;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let made = st
            .invites
            .add(&secret, role, now_unix(), expires)
            .map_err(|source| GateError::Io {
                path: self.path.with_file_name(INVITES_FILE),
                source,
            })?;
        let root = st
            .file
            .ledger
            .root()
            .expect("a certified ledger has a root");
        Ok((root, secret, made))
    }

    pub fn invites(&self) -> Vec<MadeInvite> {
        self.state.lock().invites.list().to_vec()
    }

    /// Revokes the unused invites whose id starts with `prefix`; how many.
    pub fn revoke_invite(&self, prefix: &str) -> Result<usize, GateError> {
        let mut st = self.state.lock();
        st.invites.revoke(prefix).map_err(|source| GateError::Io {
            path: self.path.with_file_name(INVITES_FILE),
            source,
        })
    }

    /// Signs and merges a revocation of `peer` (admins only).
    pub fn expel(&self, peer: &PeerId) -> Result<Revocation, GateError> {
        let mut st = self.state.lock();
        self.require_admin(&st)?;
        if *peer == self.me {
            return Err(GateError::Refused(
                "a node cannot expel itself (use `p2pfs-ctl leave`)".into(),
            ));
        }
        let root = st.file.ledger.root().expect("certified");
        if let Some(c) = st.file.ledger.cert(peer) {
            let user = c.body.user;
            if user == root {
                return Err(GateError::Refused(
                    "this is one of the founder's nodes: it holds the founder's user key, which \
                     signs for the whole network, so expelling the node would not stop it"
                        .into(),
                ));
            }
            if st.file.ledger.is_admin(&user) {
                return Err(GateError::Refused(format!(
                    "this node's user ({}) is an admin: its user key could admit the node again; \
                     the founder removes the admin first (p2pfs-ctl admin remove)",
                    short_user(&user)
                )));
            }
        }
        let r = Signed::sign(
            RevocationBody {
                network: root,
                peer: peer.to_bytes(),
                at: now_unix(),
            },
            &self.user,
        );
        let m = st.file.ledger.merge(LedgerRecord::Revocation(r.clone()))?;
        self.save(&st);
        let _ = self.events.send(GateEvent::Merged(m));
        Ok(r)
    }

    /// Signs and merges a grant (founder only). Demoting keeps the certificates the admin
    /// issued that are valid now.
    pub fn set_admin(&self, user: UserId, admin: bool) -> Result<AdminGrant, GateError> {
        let mut st = self.state.lock();
        self.require_admin(&st)?;
        let root = st.file.ledger.root().expect("certified");
        if root != self.user.user_id() {
            return Err(GateError::NotFounder);
        }
        if user == root {
            return Err(GateError::Refused(
                "the founder is always an admin".to_string(),
            ));
        }
        let seq = st.file.ledger.grant(&user).map_or(0, |g| g.body.seq) + 1;
        let keep = if admin {
            Vec::new()
        } else {
            let ledger = &st.file.ledger;
            ledger
                .certs()
                .filter(|c| c.by == user)
                .filter(|c| {
                    c.peer_id()
                        .is_some_and(|p| ledger.check_cert(c, &p).is_ok())
                })
                .map(|c| c.digest())
                .collect()
        };
        let g = Signed::sign(
            GrantBody {
                network: root,
                user,
                admin,
                seq,
                at: now_unix(),
                keep,
            },
            &self.user,
        );
        let m = st.file.ledger.merge(LedgerRecord::Grant(g.clone()))?;
        self.save(&st);
        let _ = self.events.send(GateEvent::Merged(m));
        Ok(g)
    }

    /// Makes a new network-volume key sealed to the users of every certified, unrevoked node
    /// (admins only), and merges it. The caller publishes it.
    pub fn rotate_network_key(&self) -> Result<KeyEpoch, GateError> {
        let mut st = self.state.lock();
        self.require_admin(&st)?;
        let root = st.file.ledger.root().expect("certified");
        let ledger = &st.file.ledger;
        let mut recipients: Vec<String> = ledger
            .certs()
            .filter(|c| {
                c.peer_id()
                    .is_some_and(|p| ledger.check_cert(c, &p).is_ok())
            })
            .map(|c| c.body.recipient.clone())
            .collect();
        recipients.push(self.user.recipient().to_string());
        recipients.sort();
        recipients.dedup();
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let sealed = seal_key(&key, &recipients)?;
        // Epochs are ordered by time: a new one comes after every known one, whatever this
        // node's clock says (two rotations within a second, or a clock behind another admin's).
        let at = ledger
            .epochs()
            .last()
            .map_or(0, |e| e.body.at + 1)
            .max(now_unix());
        let e = Signed::sign(
            EpochBody {
                network: root,
                id,
                at,
                sealed,
            },
            &self.user,
        );
        let m = st.file.ledger.merge(LedgerRecord::Epoch(e.clone()))?;
        st.file.epoch_keys.insert(id, *key);
        self.save(&st);
        let _ = self.events.send(GateEvent::Merged(m));
        Ok(e)
    }

    /// Upgrades a key-only network: this node's user founds it, and certifies this node and
    /// every `members` entry (peer, name, user, recipient, role). Returns the certificates.
    pub fn certify(
        &self,
        members: &[(PeerId, String, UserId, String, NodeRole)],
    ) -> Result<Vec<NodeCert>, GateError> {
        let mut st = self.state.lock();
        if st.file.mode != Mode::KeyOnly {
            return Err(GateError::Refused(
                "this network is certified already".into(),
            ));
        }
        let root = self.user.user_id();
        let mut ledger = Ledger::new(root);
        let own = mint(
            &self.user,
            root,
            &self.me,
            &self.name,
            &self.user,
            NodeRole::Storage,
        );
        ledger.merge(LedgerRecord::Cert(own.clone()))?;
        let mut certs = vec![own.clone()];
        for (peer, name, user, recipient, role) in members {
            if *peer == self.me {
                continue;
            }
            let c = Signed::sign(
                CertBody {
                    network: root,
                    peer: peer.to_bytes(),
                    name: name.clone(),
                    user: *user,
                    recipient: recipient.clone(),
                    role: *role,
                    issued_at: now_unix(),
                },
                &self.user,
            );
            ledger.merge(LedgerRecord::Cert(c.clone()))?;
            certs.push(c);
        }
        st.file = MembershipFile {
            mode: Mode::Certified,
            own: Some(own),
            pending: None,
            ledger,
            epoch_keys: BTreeMap::new(),
        };
        self.save(&st);
        let _ = self.events.send(GateEvent::Certified);
        Ok(certs)
    }

    /// Adopts a certificate for this node that arrived outside a handshake (the ledger topic
    /// of a network being upgraded). Only a key-only node does; the founder is whoever signed
    /// it, since in a key-only network every holder of the key is equally trusted.
    pub fn adopt_upgrade(&self, records: Vec<LedgerRecord>) -> bool {
        let mut st = self.state.lock();
        if st.file.mode != Mode::KeyOnly {
            return false;
        }
        let Some(cert) = records.iter().find_map(|r| match r {
            LedgerRecord::Cert(c) if c.body.peer == self.me.to_bytes() => Some(c.clone()),
            _ => None,
        }) else {
            return false;
        };
        self.adopt(&mut st, cert.body.network, cert, records, None)
    }

    fn adopt(
        &self,
        st: &mut State,
        root: UserId,
        cert: NodeCert,
        records: Vec<LedgerRecord>,
        keys: Option<&[u8]>,
    ) -> bool {
        let mut ledger = if st.file.ledger.root() == Some(root) {
            st.file.ledger.clone()
        } else {
            Ledger::new(root)
        };
        ledger.merge_all(records);
        if ledger.check_cert(&cert, &self.me).is_err() || cert.body.user != self.user.user_id() {
            return false;
        }
        let _ = ledger.merge(LedgerRecord::Cert(cert.clone()));
        st.file.mode = Mode::Certified;
        st.file.own = Some(cert);
        st.file.pending = None;
        st.file.ledger = ledger;
        if let Some(sealed) = keys
            && let Some(plain) = age::decrypt(&self.user.age, sealed)
                .ok()
                .map(zeroize::Zeroizing::new)
            && let Ok(map) = ciborium::from_reader::<BTreeMap<[u8; 16], [u8; 32]>, _>(&plain[..])
        {
            st.file.epoch_keys.extend(map);
        }
        self.open_epochs(st);
        self.save(st);
        let _ = self.events.send(GateEvent::Certified);
        tracing::info!("this node is now a certified member of the network");
        true
    }

    // ---- the handshake ----

    /// The hello this node sends on every new connection.
    pub fn hello(&self, _remote: &PeerId) -> Vec<u8> {
        let st = self.state.lock();
        let f = &st.file;
        let redeem = match (&f.mode, &f.pending) {
            (Mode::Joining, Some(p)) => {
                let invite = invite_id(&p.secret);
                let recipient = self.user.recipient().to_string();
                let root = f.ledger.root().expect("a joining node knows its founder");
                let sig = ed25519_dalek::Signer::sign(
                    &self.user.signing,
                    &redeem_message(&root, &self.me, &invite, &recipient),
                );
                Some(Redeem {
                    invite,
                    proof: redemption_proof(&p.secret, &self.me),
                    name: self.name.clone(),
                    user: self.user.user_id(),
                    recipient,
                    sig: sig.to_bytes().to_vec(),
                })
            }
            _ => None,
        };
        encode(&Hello {
            mode: f.mode,
            root: f.ledger.root(),
            cert: f.own.clone(),
            redeem,
            records: if f.mode == Mode::Certified {
                f.ledger.records_for_hello(HELLO_RECORDS_BUDGET)
            } else {
                Vec::new()
            },
        })
    }

    /// Decides on a peer's hello: `Ok(Some(grant))` admits it and hands it a certificate.
    pub fn check(&self, remote: &PeerId, hello: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut st = self.state.lock();
        // Every holder of the key is a member (a certified peer is one too), whatever its
        // hello says: pre-certificate tools send none.
        if st.file.mode == Mode::KeyOnly {
            return Ok(None);
        }
        let hello: Hello =
            ciborium::from_reader(hello).map_err(|_| "malformed admission hello".to_string())?;
        match st.file.mode {
            Mode::KeyOnly => Ok(None),
            Mode::Joining => {
                let (Mode::Certified, Some(cert)) = (hello.mode, &hello.cert) else {
                    return Err(
                        "this node is joining a certified network and waits for its certificate"
                            .into(),
                    );
                };
                let mut ledger = st.file.ledger.clone();
                ledger.merge_all(hello.records);
                ledger.check_cert(cert, remote).map_err(|e| {
                    format!("not a member of the network this node was invited to: {e}")
                })?;
                // Kept (without the rest of the hello) so that the members this node met
                // while joining are admitted once it is certified.
                let _ = st.file.ledger.merge(LedgerRecord::Cert(cert.clone()));
                Ok(None)
            }
            Mode::Certified => self.check_certified(&mut st, remote, hello),
        }
    }

    fn check_certified(
        &self,
        st: &mut State,
        remote: &PeerId,
        hello: Hello,
    ) -> Result<Option<Vec<u8>>, String> {
        let root = st.file.ledger.root().expect("certified");
        if let Some(r) = st.file.ledger.revocation(remote) {
            return Err(format!(
                "this node was expelled from the network {} s ago",
                now_unix().saturating_sub(r.body.at)
            ));
        }
        match hello.mode {
            Mode::Certified => {
                if hello.root != Some(root) {
                    return Err(format!(
                        "another network (founder {}, this one's is {})",
                        hello.root.map(|r| short_user(&r)).unwrap_or_default(),
                        short_user(&root)
                    ));
                }
                let cert = hello.cert.ok_or("no certificate")?;
                // Only the grants (the chain a certificate may need) are taken before the
                // certificate checks; the rest only from an admitted peer, so a refused one
                // cannot make this node verify a hello's worth of signatures each time.
                let (grants, rest): (Vec<LedgerRecord>, Vec<LedgerRecord>) = hello
                    .records
                    .into_iter()
                    .partition(|r| matches!(r, LedgerRecord::Grant(_)));
                let (mut changed, _) = st.file.ledger.merge_all(grants);
                let result = st.file.ledger.check_cert(&cert, remote);
                if result.is_ok() {
                    changed.extend(st.file.ledger.merge_all(rest).0);
                }
                if result.is_ok()
                    && let Ok(m @ Merged::Cert(_)) = st.file.ledger.merge(LedgerRecord::Cert(cert))
                {
                    changed.push(m);
                }
                if !changed.is_empty() {
                    self.open_epochs(st);
                    self.save(st);
                    for m in changed {
                        let _ = self.events.send(GateEvent::Merged(m));
                    }
                }
                result
                    .map(|()| None)
                    .map_err(|e| format!("certificate refused: {e}"))
            }
            Mode::Joining => {
                let redeem = hello.redeem.ok_or("no invite to redeem")?;
                self.redeem(st, remote, redeem).map(Some)
            }
            Mode::KeyOnly => {
                // A member certified by `p2pfs-ctl certify` while it was away gets its
                // certificate now; anyone else is told why it cannot connect.
                if let Some(cert) = st.file.ledger.cert(remote).cloned()
                    && st.file.ledger.check_cert(&cert, remote).is_ok()
                {
                    return Ok(Some(self.grant(st, cert)));
                }
                Err(format!(
                    "this network admits certified nodes only (founder {}); this node has no \
                     certificate: ask an admin for an invite (p2pfs-ctl invite) and join with it",
                    short_user(&root)
                ))
            }
        }
    }

    fn redeem(&self, st: &mut State, remote: &PeerId, r: Redeem) -> Result<Vec<u8>, String> {
        if !st.file.ledger.is_admin(&self.user.user_id()) {
            return Err(RedeemError::Unknown.to_string());
        }
        if r.name.len() > super::cert::MAX_CERT_NAME
            || !(r.name.is_empty() || super::names::check_name(&r.name).is_ok())
            || r.recipient.parse::<age::x25519::Recipient>().is_err()
        {
            return Err("malformed invite redemption".into());
        }
        let root = st.file.ledger.root().expect("certified");
        let signed = ed25519_dalek::VerifyingKey::from_bytes(&r.user.0)
            .ok()
            .zip(<[u8; 64]>::try_from(r.sig.as_slice()).ok())
            .is_some_and(|(key, sig)| {
                ed25519_dalek::Verifier::verify(
                    &key,
                    &redeem_message(&root, remote, &r.invite, &r.recipient),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .is_ok()
            });
        if !signed {
            return Err("the invite redemption is not signed by the user it names".into());
        }
        let now = now_unix();
        let role = st
            .invites
            .redeem(&r.invite, &r.proof, remote, &r.name, now)
            .map_err(|e| e.to_string())?;
        // An earlier certificate for this peer (a retried redemption) is handed out again.
        let cert = match st.file.ledger.cert(remote) {
            Some(c) if c.body.user == r.user => c.clone(),
            Some(_) => return Err("this node is certified already, as another user".into()),
            None => {
                let root = st.file.ledger.root().expect("certified");
                let c = Signed::sign(
                    CertBody {
                        network: root,
                        peer: remote.to_bytes(),
                        name: r.name.clone(),
                        user: r.user,
                        recipient: r.recipient.clone(),
                        role,
                        issued_at: now,
                    },
                    &self.user,
                );
                let m = st
                    .file
                    .ledger
                    .merge(LedgerRecord::Cert(c.clone()))
                    .map_err(|e| e.to_string())?;
                self.save(st);
                let _ = self.events.send(GateEvent::Merged(m));
                tracing::info!(peer = %remote, name = %r.name, "invite redeemed: node admitted");
                c
            }
        };
        Ok(self.grant(st, cert))
    }

    fn grant(&self, st: &State, cert: NodeCert) -> Vec<u8> {
        let keys = encode(&st.file.epoch_keys);
        let sealed = seal_key_bytes(&keys, &cert.body.recipient).unwrap_or_default();
        encode(&Grant {
            cert,
            records: st.file.ledger.records_for_hello(HELLO_RECORDS_BUDGET),
            keys: sealed,
        })
    }

    /// A peer minted this node a certificate in the handshake.
    pub fn granted(&self, remote: &PeerId, grant: &[u8]) {
        let Ok(grant) = ciborium::from_reader::<Grant, _>(grant) else {
            tracing::warn!(peer = %remote, "malformed certificate grant ignored");
            return;
        };
        let mut st = self.state.lock();
        let root = match st.file.mode {
            Mode::Certified => return,
            Mode::Joining => st
                .file
                .ledger
                .root()
                .expect("a joining node knows its founder"),
            Mode::KeyOnly => grant.cert.body.network,
        };
        let keys = (!grant.keys.is_empty()).then_some(&grant.keys[..]);
        if !self.adopt(&mut st, root, grant.cert, grant.records, keys) {
            tracing::warn!(peer = %remote, "a certificate that does not admit this node was ignored");
        }
    }

    /// A peer refused this node in the handshake.
    pub fn refused(&self, remote: &PeerId, reason: &str) {
        self.state.lock().last_refusal = Some((*remote, reason.to_string(), now_unix()));
    }
}

/// Seals arbitrary bytes to one age recipient.
fn seal_key_bytes(bytes: &[u8], recipient: &str) -> Option<Vec<u8>> {
    let r: age::x25519::Recipient = recipient.parse().ok()?;
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).ok()?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).ok()?;
    std::io::Write::write_all(&mut w, bytes).ok()?;
    w.finish().ok()?;
    Some(out)
}

/// A user id as people see it: its first 12 hex digits.
pub fn short_user(u: &UserId) -> String {
    hex::encode(&u.0[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestNode {
        _dir: tempfile::TempDir,
        peer: PeerId,
        gate: Gate,
    }

    fn node(setup: impl FnOnce(&Path, &PeerId, &UserIdentity)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let user = UserIdentity::generate();
        setup(dir.path(), &peer, &user);
        let gate = Gate::open(dir.path(), peer, &user, "n").unwrap();
        TestNode {
            _dir: dir,
            peer,
            gate,
        }
    }

    /// Both directions of a handshake between `a` (dialer) and `b`: what each side's check
    /// said, with grants delivered as the network layer would.
    fn handshake(a: &TestNode, b: &TestNode) -> (Result<(), String>, Result<(), String>) {
        let ha = a.gate.hello(&b.peer);
        let hb = b.gate.hello(&a.peer);
        let at_b = b.gate.check(&a.peer, &ha);
        let at_a = a.gate.check(&b.peer, &hb);
        match (&at_a, &at_b) {
            (Ok(ga), Ok(gb)) => {
                if let Some(g) = gb {
                    a.gate.granted(&b.peer, g);
                }
                if let Some(g) = ga {
                    b.gate.granted(&a.peer, g);
                }
            }
            _ => {
                if let Err(r) = &at_b {
                    a.gate.refused(&b.peer, r);
                }
                if let Err(r) = &at_a {
                    b.gate.refused(&a.peer, r);
                }
            }
        }
        (at_a.map(|_| ()), at_b.map(|_| ()))
    }

    fn founder() -> TestNode {
        node(|dir, peer, user| found(dir, peer, user, "founder").unwrap())
    }

    fn invited(by: &TestNode, role: NodeRole) -> TestNode {
        let (root, secret, _) = by.gate.make_invite(role, None).unwrap();
        node(|dir, _, _| join(dir, root, secret).unwrap())
    }

    #[test]
    fn an_invite_admits_one_node_and_only_certified_nodes_connect() {
        let f = founder();
        let j = invited(&f, NodeRole::Reader);
        assert_eq!(j.gate.mode(), Mode::Joining);
        assert_eq!(handshake(&j, &f), (Ok(()), Ok(())));
        assert_eq!(j.gate.mode(), Mode::Certified);
        assert_eq!(f.gate.role_of(&j.peer), Some(NodeRole::Reader));
        assert!(f.gate.admits(&j.peer));
        // Now certified both ways, and again after a restart of the gate.
        assert_eq!(handshake(&j, &f), (Ok(()), Ok(())));

        // The same token used by a second node: refused, saying why.
        let (root, secret, _) = f.gate.make_invite(NodeRole::Storage, None).unwrap();
        let k = node(|dir, _, _| join(dir, root, secret).unwrap());
        assert_eq!(handshake(&k, &f).1, Ok(()));
        let again = node(|dir, _, _| join(dir, root, secret).unwrap());
        let (_, at_f) = handshake(&again, &f);
        assert!(at_f.unwrap_err().contains("already used"));
        assert_eq!(again.gate.mode(), Mode::Joining);
        assert!(
            again
                .gate
                .last_refusal()
                .unwrap()
                .1
                .contains("already used")
        );

        // A node with only the network key: refused with the reason.
        let keyonly = node(|_, _, _| {});
        let (_, at_f) = handshake(&keyonly, &f);
        assert!(at_f.unwrap_err().contains("certified nodes only"));
        // A joining node does not accept an uncertified peer either.
        let (at_j, _) = handshake(&again, &keyonly);
        assert!(at_j.is_err());
    }

    #[test]
    fn forged_and_self_signed_certificates_are_refused() {
        let f = founder();
        let j = invited(&f, NodeRole::Storage);
        assert_eq!(handshake(&j, &f), (Ok(()), Ok(())));
        // Mallory copies j's hello but claims it for her own peer id; or edits the name; or
        // signs her own certificate.
        let mut hello: Hello = ciborium::from_reader(&j.gate.hello(&f.peer)[..]).unwrap();
        let mallory = PeerId::random();
        assert!(f.gate.check(&mallory, &encode(&hello)).is_err());
        let cert = hello.cert.as_mut().unwrap();
        cert.body.name = "admin".into();
        let err = f.gate.check(&j.peer, &encode(&hello)).unwrap_err();
        assert!(err.contains("bad signature"), "{err}");
        let eve = UserIdentity::generate();
        let mut body = hello.cert.clone().unwrap().body;
        body.peer = mallory.to_bytes();
        hello.cert = Some(Signed::sign(body, &eve));
        let err = f.gate.check(&mallory, &encode(&hello)).unwrap_err();
        assert!(err.contains("may not admit"), "{err}");
        // A certificate of another network's founder.
        let other = founder();
        let err = f
            .gate
            .check(&other.peer, &other.gate.hello(&f.peer))
            .unwrap_err();
        assert!(err.contains("another network"), "{err}");
        // Garbage.
        assert!(f.gate.check(&mallory, b"\xff\x00junk").is_err());
    }

    #[test]
    fn an_expelled_node_is_refused_everywhere_and_cannot_open_new_keys() {
        let f = founder();
        let a = invited(&f, NodeRole::Storage);
        let x = invited(&f, NodeRole::Storage);
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        assert_eq!(handshake(&x, &f), (Ok(()), Ok(())));
        assert_eq!(handshake(&a, &x), (Ok(()), Ok(())));
        // A non-admin may not expel.
        assert!(matches!(a.gate.expel(&x.peer), Err(GateError::NotAdmin(_))));
        f.gate.expel(&x.peer).unwrap();
        let epoch = f.gate.rotate_network_key().unwrap();
        // The founder refuses x at once; a learns the revocation from the founder's hello.
        assert!(handshake(&x, &f).1.unwrap_err().contains("expelled"));
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        assert!(!a.gate.admits(&x.peer));
        assert!(handshake(&x, &a).1.unwrap_err().contains("expelled"));
        // The new key reaches the members, not the expelled node.
        assert_eq!(f.gate.network_epoch_keys().len(), 1);
        assert_eq!(a.gate.network_epoch_keys(), f.gate.network_epoch_keys());
        x.gate.merge_records(vec![LedgerRecord::Epoch(epoch)]);
        assert!(x.gate.network_epoch_keys().is_empty());
        // A node admitted later gets the keys with its certificate.
        let late = invited(&f, NodeRole::Storage);
        assert_eq!(handshake(&late, &f), (Ok(()), Ok(())));
        assert_eq!(late.gate.network_epoch_keys(), f.gate.network_epoch_keys());
    }

    #[test]
    fn admins_are_promoted_and_demoted_by_the_founder_only() {
        let f = founder();
        let a = invited(&f, NodeRole::Storage);
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        let a_user = f.gate.ledger().cert(&a.peer).unwrap().body.user;
        assert!(a.gate.make_invite(NodeRole::Storage, None).is_err());
        f.gate.set_admin(a_user, true).unwrap();
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        // a admits b; everyone accepts b's certificate.
        let b = invited(&a, NodeRole::Storage);
        assert_eq!(handshake(&b, &a), (Ok(()), Ok(())));
        assert_eq!(handshake(&b, &f), (Ok(()), Ok(())));
        assert!(matches!(
            a.gate.set_admin(a_user, false),
            Err(GateError::NotFounder)
        ));
        // Demoted: b stays, a's new invites do not admit anyone.
        f.gate.set_admin(a_user, false).unwrap();
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        assert_eq!(handshake(&b, &f), (Ok(()), Ok(())));
        assert!(a.gate.make_invite(NodeRole::Storage, None).is_err());
    }

    #[test]
    fn a_key_only_network_upgrades_and_members_away_get_their_certificate_later() {
        let f = node(|_, _, _| {});
        let m = node(|_, _, _| {});
        let away = node(|_, _, _| {});
        let stranger = node(|_, _, _| {});
        // Members as they announce themselves (peer, name, user, recipient).
        let user_of = |n: &TestNode| {
            (
                n.peer,
                "m".to_string(),
                n.gate.user.user_id(),
                n.gate.user.recipient().to_string(),
                NodeRole::Storage,
            )
        };
        let certs = f.gate.certify(&[user_of(&m), user_of(&away)]).unwrap();
        assert_eq!(certs.len(), 3);
        assert_eq!(f.gate.mode(), Mode::Certified);
        // m hears the upgrade on the ledger topic.
        assert!(m.gate.adopt_upgrade(f.gate.records()));
        assert_eq!(m.gate.mode(), Mode::Certified);
        assert_eq!(handshake(&m, &f), (Ok(()), Ok(())));
        // `away` was offline: its first connection hands it its certificate.
        assert_eq!(handshake(&away, &f), (Ok(()), Ok(())));
        assert_eq!(away.gate.mode(), Mode::Certified);
        // A node nobody certified is told why it cannot connect.
        let err = handshake(&stranger, &f).1.unwrap_err();
        assert!(err.contains("certified nodes only"), "{err}");
    }

    /// Review findings: a joiner claiming a user it does not hold, an admin re-issuing the
    /// founder's node, an admin's node expelled by an admin, and a pre-certificate tool's empty
    /// hello in a key-only network.
    #[test]
    fn claims_nobody_can_back_are_refused() {
        let f = founder();
        // A redemption naming the founder's user, signed with the joiner's own key.
        let (root, secret, _) = f.gate.make_invite(NodeRole::Storage, None).unwrap();
        let j = node(|dir, _, _| join(dir, root, secret).unwrap());
        let mut hello: Hello = ciborium::from_reader(&j.gate.hello(&f.peer)[..]).unwrap();
        let founder_user = f.gate.user.user_id();
        hello.redeem.as_mut().unwrap().user = founder_user;
        let err = f.gate.check(&j.peer, &encode(&hello)).unwrap_err();
        assert!(err.contains("not signed by the user"), "{err}");
        // Its honest redemption still works (the invite was not used up by the forgery).
        assert_eq!(handshake(&j, &f), (Ok(()), Ok(())));

        // An admin cannot re-issue another node's certificate (here the founder's) under a
        // user or role of its choosing.
        let a = invited(&f, NodeRole::Storage);
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        let a_user = a.gate.user.user_id();
        f.gate.set_admin(a_user, true).unwrap();
        assert_eq!(handshake(&a, &f), (Ok(()), Ok(())));
        let mut body = f.gate.own_cert().unwrap().body;
        body.user = a_user;
        body.role = NodeRole::Reader;
        body.issued_at += 10;
        let reissued = Signed::sign(body, &a.gate.user);
        assert!(
            f.gate
                .merge_records(vec![LedgerRecord::Cert(reissued)])
                .is_empty()
        );
        assert_eq!(f.gate.role_of(&f.peer), Some(NodeRole::Storage));

        // An admin's node, and the founder's, are not expelled (their user keys would admit
        // them again); a plain member's is.
        assert!(matches!(f.gate.expel(&a.peer), Err(GateError::Refused(_))));
        assert!(matches!(a.gate.expel(&f.peer), Err(GateError::Refused(_))));
        assert!(f.gate.expel(&j.peer).is_ok());

        // A key-only node takes any hello, even none (pre-certificate tools send none).
        let keyonly = node(|_, _, _| {});
        assert_eq!(keyonly.gate.check(&PeerId::random(), b""), Ok(None));
    }
}
