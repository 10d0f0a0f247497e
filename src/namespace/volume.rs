//! Volumes: what is mounted, and who may read and write it.
//!
//! A volume has one or more 32-byte keys (a new one each time a member is removed: the removed
//! member keeps what it could already read, but not what is written after). The newest key
//! encrypts new entry payloads and new chunks; older ones still open older entries.
//!
//! Every volume but the network volume is described by a **volume record**: a namespace entry
//! of the volume itself, signed by the owner, replicated like any other. In clear it names the
//! owner, the writers (so every node, member or not, can check an entry's author before it
//! stores it) and the removed writers, each with the list of their versions that stay valid
//! (those the owner's node held at the removal); everything else (the
//! volume's name, its keys, its members and their roles) is age-encrypted to the members'
//! recipients. The volume id is derived from the owner's public key and a nonce, so only the
//! owner can sign a record that nodes accept for it.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::entry::{Entry, EntryError, EntryMeta, EntrySealer, VersionHash, name_is_valid};
use super::retention::RetentionPolicy;
use super::{EntryId, EntryKey, UserId, VolumeId};
use crate::block::ChunkSecret;
use crate::identity::UserIdentity;
use crate::util::fixed_bytes;
use crate::util::hlc::Hlc;

/// Most writers, removed writers and members a volume has; more is refused, not allocated.
pub const MAX_MEMBERS: usize = 256;
/// Most keys a volume accumulates (one per removal).
pub const MAX_KEYS: usize = 256;
/// Most versions of removed writers one record lists as still valid (16 bytes each: 2 MiB).
/// A removal that would pass it is refused (see [`Volume::unshare`]).
pub const MAX_KEPT_VERSIONS: usize = 131_072;
/// Largest encoded volume record: the kept versions, the sealed secrets of up to
/// [`MAX_MEMBERS`] members and the writer lists, under the 4 MiB entry cap.
pub const MAX_RECORD: usize = 3 << 20;
/// Longest volume name.
pub const MAX_VOLUME_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {0:?}: 1-64 characters, no '/', NUL or leading '.'")]
    BadName(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("volume record: {0}")]
    Record(String),
    #[error(
        "not a user public key: {0} (expected USER_ID:RECIPIENT as printed by `p2pfs user show`)"
    )]
    BadUserKey(String),
}

/// A user's public half, as shared with others: the signing key that names them (writers are
/// checked against it) and the age recipient volume keys are wrapped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKey {
    pub id: UserId,
    pub recipient: age::x25519::Recipient,
}

impl UserKey {
    pub fn of(user: &UserIdentity) -> Self {
        Self {
            id: user.user_id(),
            recipient: user.recipient(),
        }
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.recipient)
    }
}

impl FromStr for UserKey {
    type Err = VolumeError;
    fn from_str(s: &str) -> Result<Self, VolumeError> {
        let bad = || VolumeError::BadUserKey(s.chars().take(200).collect());
        let (id, recipient) = s.trim().split_once(':').ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(id, &mut bytes).map_err(|_| bad())?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        let recipient = age::x25519::Recipient::from_str(recipient).map_err(|_| bad())?;
        Ok(Self {
            id: UserId(bytes),
            recipient,
        })
    }
}

/// A user named by `USER_ID` or `USER_ID:RECIPIENT` (only the id is used).
pub fn parse_user_id(s: &str) -> Result<UserId, VolumeError> {
    let bad = || VolumeError::BadUserKey(s.chars().take(200).collect());
    let id = s.trim().split(':').next().unwrap_or_default();
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(id, &mut bytes).map_err(|_| bad())?;
    Ok(UserId(bytes))
}

/// A member of a volume (inside the sealed part of its record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub recipient: String,
    pub read_only: bool,
}

/// What a member's role is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Writer,
    Reader,
}

/// The clear payload of a volume record entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub owner: UserId,
    #[serde(with = "fixed_bytes")]
    pub nonce: [u8; 16],
    /// Who may write now.
    pub writers: Vec<UserId>,
    /// Removed writers, with the clock of their removal. A removed writer listed in `kept`
    /// has exactly the versions listed there valid; one that is not (removed by a version
    /// that did not list versions yet) has its versions stamped before the clock valid.
    pub revoked: Vec<(UserId, Hlc)>,
    /// For removed writers: the versions of theirs that stay valid, whatever clock any other
    /// version of theirs claims (a clock is the writer's own claim, so it cannot bound what a
    /// removed writer signs later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptVersions>,
    /// How long replaced versions are kept (see `namespace::retention`); absent: the node's
    /// config decides. In clear: every node holding the volume's chunks honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// age-encrypted to every member: the `Secrets`.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// The versions of one removed writer that stay valid: the [`VersionHash`]es of every version
/// of theirs the owner's node held when it removed them, sorted, concatenated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersions {
    pub user: UserId,
    #[serde(with = "serde_bytes")]
    pub versions: Vec<u8>,
}

impl KeptVersions {
    pub fn new(user: UserId, mut hashes: Vec<VersionHash>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self {
            user,
            versions: hashes.concat(),
        }
    }

    pub fn len(&self) -> usize {
        self.versions.len() / 16
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    fn hash(&self, i: usize) -> &[u8] {
        &self.versions[i * 16..(i + 1) * 16]
    }

    /// Whether the list is well-formed: whole hashes, strictly increasing.
    fn is_valid(&self) -> bool {
        self.versions.len().is_multiple_of(16)
            && (1..self.len()).all(|i| self.hash(i - 1) < self.hash(i))
    }

    pub fn contains(&self, version: &VersionHash) -> bool {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.hash(mid).cmp(&version[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// Whether `entry`'s author may have written it, by the writer lists of a volume: a current
/// writer always; a removed writer only for a version its removal kept (or, for a removal
/// that kept no list, stamped before it).
fn admits(
    writers: &[UserId],
    revoked: &[(UserId, Hlc)],
    kept: &[KeptVersions],
    entry: &Entry,
) -> bool {
    if writers.contains(&entry.author) {
        return true;
    }
    let Some((_, until)) = revoked.iter().find(|(u, _)| *u == entry.author) else {
        return false;
    };
    match kept.iter().find(|k| k.user == entry.author) {
        Some(list) => list.contains(&entry.version_hash()),
        None => entry.hlc < *until,
    }
}

#[derive(Serialize, Deserialize)]
struct Secrets {
    name: String,
    /// Oldest first; the last encrypts new writes.
    keys: Vec<Key>,
    members: Vec<Member>,
}

#[derive(Serialize, Deserialize)]
struct Key(#[serde(with = "fixed_bytes")] [u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The id of a volume owned by `owner`: binds the volume to its owner's key.
pub fn volume_id(owner: &UserId, nonce: &[u8; 16]) -> VolumeId {
    let mut input = owner.0.to_vec();
    input.extend_from_slice(nonce);
    let h = blake3::derive_key("p2pfs volume id v2", &input);
    VolumeId(h[..16].try_into().expect("16 bytes"))
}

impl VolumeRecord {
    /// The entry id under which a volume's record is kept.
    pub fn entry_id(volume: &VolumeId) -> EntryId {
        let h = blake3::derive_key("p2pfs volume record v1", &volume.0);
        EntryId(h[..16].try_into().expect("16 bytes"))
    }

    /// Where a volume's record is stored.
    pub fn entry_key(volume: &VolumeId) -> EntryKey {
        EntryKey {
            id: Self::entry_id(volume),
            volume: *volume,
        }
    }

    /// Whether `entry` is in the place of its volume's record (valid or not).
    pub fn is_record(entry: &Entry) -> bool {
        entry.id == Self::entry_id(&entry.volume)
    }

    /// Reads and checks the record an entry carries: that it is the record of its volume, was
    /// written by the volume's owner and is well-formed. The signature is checked separately
    /// ([`Entry::verify_signature`]).
    pub fn from_entry(entry: &Entry) -> Result<Self, EntryError> {
        let bad = |why| EntryError::Inconsistent(entry.id, why);
        if !Self::is_record(entry) {
            return Err(bad("not a volume record"));
        }
        if entry.deleted || !entry.chunks.is_empty() {
            return Err(bad("a volume record is never deleted and holds no chunks"));
        }
        if entry.payload.len() > MAX_RECORD {
            return Err(EntryError::TooLarge(entry.payload.len()));
        }
        let record: VolumeRecord = ciborium::from_reader(&entry.payload[..])
            .map_err(|e| EntryError::Decode(e.to_string()))?;
        if record.owner != entry.author || volume_id(&record.owner, &record.nonce) != entry.volume {
            return Err(bad("volume record not signed by the volume's owner"));
        }
        if record.writers.len() > MAX_MEMBERS
            || record.revoked.len() > MAX_MEMBERS
            || record.kept.len() > MAX_MEMBERS
        {
            return Err(bad("too many writers"));
        }
        if record.kept.iter().map(KeptVersions::len).sum::<usize>() > MAX_KEPT_VERSIONS
            || !record
                .kept
                .iter()
                .all(|k| k.is_valid() && record.revoked.iter().any(|(u, _)| *u == k.user))
        {
            return Err(bad("bad list of removed writers' kept versions"));
        }
        Ok(record)
    }

    /// Whether `entry` is by a writer of the volume (see `admits`).
    pub fn can_write(&self, entry: &Entry) -> bool {
        admits(&self.writers, &self.revoked, &self.kept, entry)
    }

    /// Whether any writer was removed (so stored versions may have lost their validity).
    pub fn has_removals(&self) -> bool {
        !self.revoked.is_empty()
    }
}

/// A volume as its members hold it: keys unwrapped.
#[derive(Clone)]
pub struct Volume {
    pub id: VolumeId,
    pub owner: UserId,
    pub nonce: [u8; 16],
    pub name: String,
    pub writers: Vec<UserId>,
    pub revoked: Vec<(UserId, Hlc)>,
    pub kept: Vec<KeptVersions>,
    /// The owner's retention policy, if it set one.
    pub retention: Option<RetentionPolicy>,
    pub members: Vec<Member>,
    /// Anyone who can sign may write (the network volume: admission is the network key).
    pub open: bool,
    /// Oldest first.
    keys: Vec<Zeroizing<[u8; 32]>>,
    payload_keys: Vec<Zeroizing<[u8; 32]>>,
    chunk_secret: ChunkSecret,
}

fn payload_key_of(key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key("p2pfs volume payload key v1", key))
}

/// Checks a volume name as given by a user: it becomes a directory name in the mount.
pub fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_VOLUME_NAME
        && !name.starts_with('.')
        && !name.contains(['/', '\0'])
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.chars().take(80).collect()))
    }
}

impl Volume {
    fn new(owner: &UserIdentity, nonce: [u8; 16], name: String, key: Zeroizing<[u8; 32]>) -> Self {
        let me = UserKey::of(owner);
        let mut volume = Self {
            id: volume_id(&me.id, &nonce),
            owner: me.id,
            nonce,
            name,
            writers: vec![me.id],
            revoked: Vec::new(),
            kept: Vec::new(),
            retention: None,
            members: vec![Member {
                user: me.id,
                recipient: me.recipient.to_string(),
                read_only: false,
            }],
            open: false,
            keys: Vec::new(),
            payload_keys: Vec::new(),
            chunk_secret: ChunkSecret([0; 32]),
        };
        volume.set_keys(vec![key]);
        volume
    }

    fn set_keys(&mut self, keys: Vec<Zeroizing<[u8; 32]>>) {
        let newest = keys.last().expect("a volume has a key");
        self.chunk_secret = ChunkSecret(blake3::derive_key(
            "p2pfs volume chunk secret v1",
            &newest[..],
        ));
        self.payload_keys = keys.iter().map(|k| payload_key_of(k)).collect();
        self.keys = keys;
    }

    /// The personal volume of `owner`, named `home`: its id follows from the user's public key
    /// (a fixed nonce) and its key from the secret signing key, so every machine holding the
    /// same user identity has the same personal volume, and nobody else can read it.
    pub fn personal(owner: &UserIdentity) -> Self {
        let secret = Zeroizing::new(owner.signing.to_bytes());
        let key = Zeroizing::new(blake3::derive_key(
            "p2pfs personal volume key v1",
            &secret[..],
        ));
        Self::new(owner, [0; 16], "home".into(), key)
    }

    /// A new volume with a random key, owned (and writable only) by `owner`.
    pub fn create(owner: &UserIdentity, name: &str) -> Result<Self, VolumeError> {
        check_name(name)?;
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        if nonce == [0; 16] {
            nonce[0] = 1; // the personal volume's nonce
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        Ok(Self::new(owner, nonce, name.to_string(), key))
    }

    /// The volume every member of a network mounts: its id and key are derived from the
    /// network key, so every holder of that key reads and writes it, and nobody else can.
    pub fn for_network(network_key: &crate::identity::NetworkKey) -> Self {
        let id = blake3::derive_key("p2pfs network volume id v1", &network_key.0);
        let key = Zeroizing::new(blake3::derive_key(
            "p2pfs network volume key v1",
            &network_key.0,
        ));
        let mut volume = Self {
            id: VolumeId(id[..16].try_into().expect("16 bytes")),
            owner: UserId([0; 32]),
            nonce: [0; 16],
            name: String::new(),
            writers: Vec::new(),
            revoked: Vec::new(),
            kept: Vec::new(),
            retention: None,
            members: Vec::new(),
            open: true,
            keys: Vec::new(),
            payload_keys: Vec::new(),
            chunk_secret: ChunkSecret([0; 32]),
        };
        volume.set_keys(vec![key]);
        volume
    }

    /// Sets the network volume's key epochs (`epochs` oldest first, after the key derived
    /// from the network key): new entries and chunks use the newest, older entries stay
    /// readable. Only for the network volume; true when its keys changed.
    pub fn set_network_epochs(&mut self, epochs: &[[u8; 32]]) -> bool {
        if !self.open || self.keys.is_empty() {
            return false;
        }
        let same = self.keys.len() == epochs.len() + 1
            && self.keys[1..].iter().zip(epochs).all(|(a, b)| **a == *b);
        if same {
            return false;
        }
        let mut keys = vec![self.keys[0].clone()];
        keys.extend(epochs.iter().map(|k| Zeroizing::new(*k)));
        self.set_keys(keys);
        true
    }

    pub fn is_personal(&self) -> bool {
        self.nonce == [0; 16] && !self.open
    }

    /// The id of the volume's root directory entry, derived so every member agrees on it.
    pub fn root_id(&self) -> EntryId {
        let h = blake3::derive_key("p2pfs volume root v1", &self.id.0);
        EntryId(h[..16].try_into().expect("16 bytes"))
    }

    /// Whether `entry` is by a writer of the volume (see `admits`).
    pub fn can_write(&self, entry: &Entry) -> bool {
        self.open || admits(&self.writers, &self.revoked, &self.kept, entry)
    }

    /// Whether `user` may write new versions now.
    pub fn is_writer(&self, user: &UserId) -> bool {
        self.open || self.writers.contains(user)
    }

    pub fn role(&self, user: &UserId) -> Option<Role> {
        if *user == self.owner {
            Some(Role::Owner)
        } else if self.writers.contains(user) {
            Some(Role::Writer)
        } else if self.members.iter().any(|m| m.user == *user) {
            Some(Role::Reader)
        } else {
            None
        }
    }

    /// The key new entry payloads are sealed with.
    pub fn payload_key(&self) -> &[u8; 32] {
        self.payload_keys.last().expect("a volume has a key")
    }

    /// The secret new chunks are encrypted under.
    pub fn chunk_secret(&self) -> &ChunkSecret {
        &self.chunk_secret
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Opens an entry of this volume with whichever of its keys sealed it, newest first.
    pub fn open_entry(&self, entry: &Entry) -> Result<EntryMeta, EntryError> {
        let mut last = EntryError::Decrypt(entry.id);
        for key in self.payload_keys.iter().rev() {
            match entry.open(key) {
                // The name a local create would refuse ("", ".", ".."...) is refused from
                // anyone: the kernel fails a whole directory listing on one such name. The
                // root's name is never shown (it is the volume's directory). An unnamed
                // entry (its names are links) has none and shows in no directory.
                Ok(meta)
                    if entry.id != self.root_id()
                        && !meta.unnamed
                        && !name_is_valid(&meta.name) =>
                {
                    return Err(EntryError::Inconsistent(entry.id, "invalid name"));
                }
                Ok(meta) if entry.id == self.root_id() && meta.unnamed => {
                    return Err(EntryError::Inconsistent(entry.id, "the root is unnamed"));
                }
                Ok(meta) => return Ok(meta),
                Err(e @ EntryError::Decrypt(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Adds `user` as a member (a writer unless `read_only`), or changes their role.
    pub fn share(&mut self, user: &UserKey, read_only: bool) -> Result<(), VolumeError> {
        if self.is_personal() {
            return Err(VolumeError::NotAllowed(
                "the personal volume is not shared; create a volume to share (`p2pfs-ctl volume create NAME`)".into(),
            ));
        }
        if user.id == self.owner {
            return Err(VolumeError::NotAllowed(
                "the owner is always a member and writer".into(),
            ));
        }
        if !self.members.iter().any(|m| m.user == user.id) && self.members.len() >= MAX_MEMBERS {
            return Err(VolumeError::NotAllowed(format!(
                "a volume has at most {MAX_MEMBERS} members"
            )));
        }
        if read_only && self.writers.contains(&user.id) {
            return Err(VolumeError::NotAllowed(
                "a writer is made a reader by removing their write right first (Volume::revoke)"
                    .into(),
            ));
        }
        self.members.retain(|m| m.user != user.id);
        self.members.push(Member {
            user: user.id,
            recipient: user.recipient.to_string(),
            read_only,
        });
        if !read_only && !self.writers.contains(&user.id) {
            // A writer added back follows the current writers' rule.
            self.revoked.retain(|(u, _)| *u != user.id);
            self.kept.retain(|k| k.user != user.id);
            self.writers.push(user.id);
        }
        Ok(())
    }

    /// Takes away `user`'s right to write (they stay a member if they are one): of their
    /// versions, only those in `held` stay valid on every node that gets the new record, the
    /// versions of theirs the owner's node holds now. Ones it has not received yet (in flight)
    /// are refused from then on, whatever clock they carry. The record lists at most
    /// [`MAX_KEPT_VERSIONS`] kept versions in all: `held` comes in priority order (the owner's
    /// node lists current live versions, then current tombstones, displaced, expired), and
    /// those past the room left are refused from then on too, so a writer who
    /// made too many versions can still be removed. Returns how many were left out. Refused
    /// only past [`MAX_MEMBERS`] removed writers: the removal then changes nothing.
    pub fn revoke(
        &mut self,
        user: &UserId,
        now: Hlc,
        mut held: Vec<VersionHash>,
    ) -> Result<usize, VolumeError> {
        if !self.writers.contains(user) {
            return Ok(0);
        }
        let removed_before = self.revoked.iter().any(|(u, _)| u == user);
        if !removed_before && self.revoked.len() >= MAX_MEMBERS {
            return Err(VolumeError::NotAllowed(format!(
                "a volume has at most {MAX_MEMBERS} removed writers; create a new volume"
            )));
        }
        let others: usize = self
            .kept
            .iter()
            .filter(|k| k.user != *user)
            .map(KeptVersions::len)
            .sum();
        let room = MAX_KEPT_VERSIONS.saturating_sub(others);
        let left_out = held.len().saturating_sub(room);
        held.truncate(room);
        self.writers.retain(|w| w != user);
        self.revoked.retain(|(u, _)| u != user);
        self.revoked.push((*user, now));
        self.kept.retain(|k| k.user != *user);
        self.kept.push(KeptVersions::new(*user, held));
        Ok(left_out)
    }

    /// Removes `user`: no longer a member; of their versions only `held` (those the owner's
    /// node holds now, in priority order, see [`revoke`](Self::revoke)) stay valid, and a new
    /// key encrypts everything written from now on. Returns `None` when they were not a
    /// member, else how many of their versions did not fit the record and are refused.
    pub fn unshare(
        &mut self,
        user: &UserId,
        now: Hlc,
        held: Vec<VersionHash>,
    ) -> Result<Option<usize>, VolumeError> {
        if *user == self.owner {
            return Err(VolumeError::NotAllowed(
                "the owner cannot be removed from their volume".into(),
            ));
        }
        if !self.members.iter().any(|m| m.user == *user) {
            return Ok(None);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(VolumeError::NotAllowed(format!(
                "a volume has at most {MAX_KEYS} keys; create a new volume"
            )));
        }
        let left_out = self.revoke(user, now, held)?;
        self.members.retain(|m| m.user != *user);
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let mut keys = std::mem::take(&mut self.keys);
        keys.push(key);
        self.set_keys(keys);
        Ok(Some(left_out))
    }

    /// The record describing this volume, its secrets sealed to every member.
    pub fn record(&self) -> Result<VolumeRecord, VolumeError> {
        let recipients: Vec<age::x25519::Recipient> = self
            .members
            .iter()
            .map(|m| age::x25519::Recipient::from_str(&m.recipient))
            .collect::<Result<_, _>>()
            .map_err(|e| VolumeError::Record(format!("bad member recipient: {e}")))?;
        let secrets = Secrets {
            name: self.name.clone(),
            keys: self.keys.iter().map(|k| Key(**k)).collect(),
            members: self.members.clone(),
        };
        let mut plain = Zeroizing::new(Vec::new());
        ciborium::into_writer(&secrets, &mut *plain).expect("secrets serialize");
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| VolumeError::Record(e.to_string()))?;
        let mut sealed = Vec::with_capacity(plain.len() + 200 * recipients.len());
        let mut w = encryptor
            .wrap_output(&mut sealed)
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        std::io::Write::write_all(&mut w, &plain)
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        w.finish().map_err(|e| VolumeError::Record(e.to_string()))?;
        Ok(VolumeRecord {
            owner: self.owner,
            nonce: self.nonce,
            writers: self.writers.clone(),
            revoked: self.revoked.clone(),
            kept: self.kept.clone(),
            retention: self.retention,
            sealed,
        })
    }

    /// The record as a signed entry written on top of `base` (the history of the current
    /// record; empty for a new volume). Only the owner's signing key makes an entry that
    /// nodes accept.
    pub fn record_entry(
        &self,
        signer: &ed25519_dalek::SigningKey,
        origin: u64,
        hlc: Hlc,
        base: &[(u64, Hlc)],
    ) -> Result<Entry, VolumeError> {
        let mut payload = Vec::new();
        ciborium::into_writer(&self.record()?, &mut payload).expect("record serializes");
        if payload.len() > MAX_RECORD {
            return Err(VolumeError::NotAllowed(
                "the volume record is too large".into(),
            ));
        }
        let sealer = EntrySealer {
            volume: self.id,
            payload_key: self.payload_key(),
            signer,
            origin,
        };
        Ok(sealer.seal_clear(VolumeRecord::entry_id(&self.id), hlc, base, payload))
    }

    /// The volume a record describes, as `user` sees it: `Ok(None)` when `user` is not a
    /// member (the secrets are not sealed to them).
    pub fn from_record(
        record: &VolumeRecord,
        user: &UserIdentity,
    ) -> Result<Option<Self>, VolumeError> {
        let plain = match age::decrypt(&user.age, &record.sealed) {
            Ok(p) => Zeroizing::new(p),
            Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
            Err(e) => return Err(VolumeError::Record(e.to_string())),
        };
        let secrets: Secrets = ciborium::from_reader(&plain[..])
            .map_err(|e| VolumeError::Record(format!("sealed part does not decode: {e}")))?;
        if secrets.keys.is_empty() || secrets.keys.len() > MAX_KEYS {
            return Err(VolumeError::Record("bad key list".into()));
        }
        if secrets.members.len() > MAX_MEMBERS {
            return Err(VolumeError::Record("too many members".into()));
        }
        // A name that cannot be a directory name is shown by the volume id instead.
        let id = volume_id(&record.owner, &record.nonce);
        let name = if check_name(&secrets.name).is_ok() {
            secrets.name.clone()
        } else {
            id.to_string()
        };
        let keys = secrets.keys.iter().map(|k| Zeroizing::new(k.0)).collect();
        let mut volume = Self {
            id,
            owner: record.owner,
            nonce: record.nonce,
            name,
            writers: record.writers.clone(),
            revoked: record.revoked.clone(),
            kept: record.kept.clone(),
            retention: record.retention.map(RetentionPolicy::clipped),
            members: secrets.members.clone(),
            open: false,
            keys: Vec::new(),
            payload_keys: Vec::new(),
            chunk_secret: ChunkSecret([0; 32]),
        };
        volume.set_keys(keys);
        Ok(Some(volume))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::entry::{EntryKind, Timestamp};

    fn meta(name: &[u8]) -> EntryMeta {
        EntryMeta::new_empty(
            EntryId([0; 16]),
            name.to_vec(),
            EntryKind::File,
            0o644,
            (0, 0),
            Timestamp::default(),
        )
    }

    fn sealed_by(volume: &Volume, user: &UserIdentity, hlc: u64) -> Entry {
        EntrySealer {
            volume: volume.id,
            payload_key: volume.payload_key(),
            signer: &user.signing,
            origin: 1,
        }
        .seal(EntryId::random(), Hlc(hlc), &[], &meta(b"f"))
    }

    #[test]
    fn the_personal_volume_follows_the_user_identity() {
        let user = UserIdentity::generate();
        let (a, b) = (Volume::personal(&user), Volume::personal(&user));
        assert_eq!(a.id, b.id);
        assert_eq!(a.payload_key(), b.payload_key());
        let other = Volume::personal(&UserIdentity::generate());
        assert_ne!(a.id, other.id);
        assert_ne!(a.payload_key(), other.payload_key());
        assert!(a.can_write(&sealed_by(&a, &user, 1)) && !a.open && a.is_personal());
    }

    #[test]
    fn a_record_opens_for_members_only_and_binds_its_owner() {
        let (owner, friend, stranger) = (
            UserIdentity::generate(),
            UserIdentity::generate(),
            UserIdentity::generate(),
        );
        let mut v = Volume::create(&owner, "photos").unwrap();
        v.share(&UserKey::of(&friend), true).unwrap();
        let entry = v.record_entry(&owner.signing, 7, Hlc(5), &[]).unwrap();
        entry.verify_signature().unwrap();
        let record = VolumeRecord::from_entry(&entry).unwrap();
        let seen = Volume::from_record(&record, &friend).unwrap().unwrap();
        assert_eq!(seen.name, "photos");
        assert_eq!(seen.id, v.id);
        assert_eq!(seen.payload_key(), v.payload_key());
        assert_eq!(seen.role(&friend.user_id()), Some(Role::Reader));
        assert!(!record.can_write(&sealed_by(&v, &friend, 9)));
        assert!(Volume::from_record(&record, &stranger).unwrap().is_none());
        // Nobody but the owner signs a record nodes accept for this volume.
        let forged = EntrySealer {
            volume: v.id,
            payload_key: v.payload_key(),
            signer: &stranger.signing,
            origin: 7,
        }
        .seal_clear(entry.id, Hlc(6), &[], entry.payload.clone());
        forged.verify_signature().unwrap();
        assert!(VolumeRecord::from_entry(&forged).is_err());
        // The name and keys are not in clear.
        assert!(!entry.to_bytes().windows(6).any(|w| w == b"photos"));
    }

    #[test]
    fn unshare_rotates_the_key_and_keeps_only_the_versions_the_owner_held() {
        let (owner, friend) = (UserIdentity::generate(), UserIdentity::generate());
        let mut v = Volume::create(&owner, "team").unwrap();
        v.share(&UserKey::of(&friend), false).unwrap();
        let before = sealed_by(&v, &friend, 100);
        let in_flight = sealed_by(&v, &friend, 150);
        assert!(v.can_write(&before) && v.can_write(&in_flight));
        let old_key = *v.payload_key();
        assert!(
            v.unshare(&friend.user_id(), Hlc(200), vec![before.version_hash()])
                .unwrap()
                == Some(0)
        );
        assert_ne!(*v.payload_key(), old_key);
        assert_eq!(v.key_count(), 2);
        // Old entries still open (with the old key); the removed writer's held version stays
        // valid. One the owner had not received is refused although stamped before the
        // removal, and so is a back-dated one (a tombstone over everything, stamped at 1).
        assert_eq!(v.open_entry(&before).unwrap().name, b"f");
        assert!(v.can_write(&before));
        assert!(!v.can_write(&in_flight));
        let back_dated = EntrySealer {
            volume: v.id,
            payload_key: &old_key,
            signer: &friend.signing,
            origin: 1,
        }
        .tombstone(before.id, Hlc(1), &[(0, Hlc(u64::MAX / 2))]);
        assert!(!v.can_write(&back_dated));
        assert!(!v.is_writer(&friend.user_id()));
        let record = v.record().unwrap();
        assert!(record.can_write(&before) && !record.can_write(&back_dated));
        assert!(Volume::from_record(&record, &friend).unwrap().is_none());
        let again = Volume::from_record(&record, &owner).unwrap().unwrap();
        assert_eq!(again.key_count(), 2);
        assert_eq!(again.open_entry(&before).unwrap().name, b"f");
        assert!(again.can_write(&before) && !again.can_write(&in_flight));
        assert_eq!(
            v.unshare(&friend.user_id(), Hlc(300), Vec::new()).unwrap(),
            None
        );
        assert!(v.unshare(&owner.user_id(), Hlc(300), Vec::new()).is_err());
        // Added back as a writer: the current writers' rule, whatever was kept before.
        v.share(&UserKey::of(&friend), false).unwrap();
        assert!(v.can_write(&in_flight) && v.can_write(&back_dated));
        assert!(v.revoked.is_empty() && v.kept.is_empty());
    }

    #[test]
    fn a_writer_made_reader_keeps_the_held_versions_only() {
        let (owner, friend) = (UserIdentity::generate(), UserIdentity::generate());
        let mut v = Volume::create(&owner, "team").unwrap();
        v.share(&UserKey::of(&friend), false).unwrap();
        let held = sealed_by(&v, &friend, 100);
        let later = sealed_by(&v, &friend, 101);
        // Demoting a writer without saying what stays valid is refused.
        assert!(v.share(&UserKey::of(&friend), true).is_err());
        v.revoke(&friend.user_id(), Hlc(200), vec![held.version_hash()])
            .unwrap();
        v.share(&UserKey::of(&friend), true).unwrap();
        assert_eq!(v.role(&friend.user_id()), Some(Role::Reader));
        assert!(v.can_write(&held) && !v.can_write(&later));
    }

    /// A record as encoded before removals listed kept versions (no `kept` field).
    #[derive(Serialize)]
    struct OldRecord {
        owner: UserId,
        #[serde(with = "fixed_bytes")]
        nonce: [u8; 16],
        writers: Vec<UserId>,
        revoked: Vec<(UserId, Hlc)>,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    }

    #[test]
    fn an_old_record_without_kept_versions_decodes_and_keeps_the_clock_rule() {
        let (owner, friend) = (UserIdentity::generate(), UserIdentity::generate());
        let mut v = Volume::create(&owner, "team").unwrap();
        v.share(&UserKey::of(&friend), false).unwrap();
        let before = sealed_by(&v, &friend, 100);
        let after = sealed_by(&v, &friend, 300);
        v.unshare(&friend.user_id(), Hlc(200), Vec::new()).unwrap();
        let new = v.record().unwrap();
        let old = OldRecord {
            owner: new.owner,
            nonce: new.nonce,
            writers: new.writers.clone(),
            revoked: new.revoked.clone(),
            sealed: new.sealed.clone(),
        };
        let mut payload = Vec::new();
        ciborium::into_writer(&old, &mut payload).unwrap();
        let entry = EntrySealer {
            volume: v.id,
            payload_key: v.payload_key(),
            signer: &owner.signing,
            origin: 7,
        }
        .seal_clear(VolumeRecord::entry_id(&v.id), Hlc(250), &[], payload);
        let decoded = VolumeRecord::from_entry(&entry).unwrap();
        assert!(decoded.kept.is_empty());
        assert!(decoded.can_write(&before) && !decoded.can_write(&after));
        // A record with no removal encodes as before (no new field).
        let fresh = Volume::create(&owner, "plain").unwrap().record().unwrap();
        let mut bytes = Vec::new();
        ciborium::into_writer(&fresh, &mut bytes).unwrap();
        assert!(!bytes.windows(4).any(|w| w == b"kept"));
    }

    #[test]
    fn kept_versions_are_bounded_and_checked() {
        let (owner, friend, other) = (
            UserIdentity::generate(),
            UserIdentity::generate(),
            UserIdentity::generate(),
        );
        let mut v = Volume::create(&owner, "big").unwrap();
        v.share(&UserKey::of(&friend), false).unwrap();
        v.share(&UserKey::of(&other), false).unwrap();
        let hashes = |n: usize, tag: u8| -> Vec<VersionHash> {
            (0..n)
                .map(|i| {
                    let mut h = [tag; 16];
                    h[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    h
                })
                .collect()
        };
        v.unshare(&friend.user_id(), Hlc(10), hashes(MAX_KEPT_VERSIONS - 5, 1))
            .unwrap();
        // The record at the bound still fits an entry and decodes.
        let entry = v.record_entry(&owner.signing, 7, Hlc(11), &[]).unwrap();
        assert!(entry.to_bytes().len() <= crate::namespace::entry::MAX_ENCODED_ENTRY);
        let record = VolumeRecord::from_entry(&entry).unwrap();
        assert_eq!(record.kept[0].len(), MAX_KEPT_VERSIONS - 5);
        // Past it, the removal still happens: the first versions in priority order that fit
        // are kept, the rest are refused from then on.
        let others = hashes(6, 2);
        assert_eq!(
            v.unshare(&other.user_id(), Hlc(12), others.clone())
                .unwrap(),
            Some(1)
        );
        assert_eq!(v.role(&other.user_id()), None);
        assert_eq!(v.key_count(), 3);
        let entry = v.record_entry(&owner.signing, 7, Hlc(13), &[]).unwrap();
        let record = VolumeRecord::from_entry(&entry).unwrap();
        assert_eq!(
            record.kept.iter().map(KeptVersions::len).sum::<usize>(),
            MAX_KEPT_VERSIONS
        );
        let kept = record
            .kept
            .iter()
            .find(|k| k.user == other.user_id())
            .unwrap();
        assert!(others[..5].iter().all(|h| kept.contains(h)));
        assert!(!kept.contains(&others[5]));
        // A list that is not sorted, or names a user who was not removed, is refused.
        for bad in [
            KeptVersions {
                user: friend.user_id(),
                versions: [[2u8; 16], [1u8; 16]].concat(),
            },
            KeptVersions {
                user: friend.user_id(),
                versions: vec![1; 17],
            },
            KeptVersions::new(owner.user_id(), hashes(1, 3)),
        ] {
            let mut forged = v.record().unwrap();
            forged.kept = vec![bad];
            let mut payload = Vec::new();
            ciborium::into_writer(&forged, &mut payload).unwrap();
            let entry = EntrySealer {
                volume: v.id,
                payload_key: v.payload_key(),
                signer: &owner.signing,
                origin: 7,
            }
            .seal_clear(VolumeRecord::entry_id(&v.id), Hlc(13), &[], payload);
            assert!(VolumeRecord::from_entry(&entry).is_err());
        }
        let list = KeptVersions::new(friend.user_id(), hashes(1000, 4));
        assert!(list.contains(&hashes(1000, 4)[517]) && !list.contains(&[0; 16]));
    }

    #[test]
    fn user_keys_round_trip_and_bad_ones_are_refused() {
        let user = UserIdentity::generate();
        let key = UserKey::of(&user);
        assert_eq!(key.to_string().parse::<UserKey>().unwrap(), key);
        for bad in ["", "abc", "00:age1xyz", &format!("{}:nope", user.user_id())] {
            assert!(bad.parse::<UserKey>().is_err(), "{bad}");
        }
        assert!(Volume::personal(&user).share(&key, false).is_err());
    }

    #[test]
    fn opened_entries_have_names_except_the_root_and_unnamed_ones() {
        let owner = UserIdentity::generate();
        let volume = Volume::create(&owner, "v").unwrap();
        let seal = |id, meta: &EntryMeta| {
            let sealed = EntrySealer {
                volume: volume.id,
                payload_key: volume.payload_key(),
                signer: &owner.signing,
                origin: 1,
            }
            .seal(id, Hlc(1), &[], meta);
            volume.open_entry(&sealed)
        };
        let unnamed = EntryMeta {
            unnamed: true,
            ..meta(b"")
        };
        let root = EntryMeta {
            kind: EntryKind::Dir,
            ..meta(b"")
        };
        assert!(seal(EntryId::random(), &meta(b"f")).is_ok());
        assert!(seal(EntryId::random(), &unnamed).is_ok());
        assert!(seal(volume.root_id(), &root).is_ok());
        let refused = [
            (EntryId::random(), meta(b"")),
            (EntryId::random(), meta(b"..")),
            (volume.root_id(), unnamed.clone()),
            (
                volume.root_id(),
                EntryMeta {
                    kind: EntryKind::Dir,
                    ..unnamed.clone()
                },
            ),
        ];
        for (id, m) in refused {
            assert!(
                matches!(seal(id, &m), Err(EntryError::Inconsistent(..))),
                "{m:?}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["photos", "a b", "Ünïcode"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a\0b", &"x".repeat(65), "tab\there"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
