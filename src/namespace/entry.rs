//! Namespace entries: the unit of metadata that is stored, replicated and merged.
//!
//! What travels and rests in clear is only what a storage peer needs: the entry's random id,
//! its volume, a hybrid logical clock, the author's public key, the writing node's tag, a
//! deleted flag and the set of chunk ids the version references (so any node can tell which
//! chunks are alive without keys). Everything else (parent, name, kind, size, mode, owner,
//! times, the ordered chunk map with its keys, a symlink target) is in `payload`, encrypted
//! with the volume's payload key. The author signs all of it.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::block::{ChunkId, ChunkRef};
pub use crate::identity::UserId;
use crate::util::fixed_bytes;
use crate::util::hlc::Hlc;

/// Largest encoded entry accepted from disk or the wire: a 16 GiB file in 1 MiB chunks, with
/// room to spare. Larger is refused, never allocated.
pub const MAX_ENCODED_ENTRY: usize = 4 << 20;
/// Longest name in a directory, as on Linux.
pub const MAX_NAME_LEN: usize = 255;
const SIGNING_DOMAIN: &[u8] = b"p2pfs entry v2\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry is {0} bytes, over the {MAX_ENCODED_ENTRY}-byte limit")]
    TooLarge(usize),
    #[error("entry does not decode: {0}")]
    Decode(String),
    #[error("entry {0}: bad signature")]
    BadSignature(EntryId),
    #[error("entry {0}: payload does not decrypt with this volume's key")]
    Decrypt(EntryId),
    #[error("entry {0}: payload is inconsistent: {1}")]
    Inconsistent(EntryId, &'static str),
    #[error("entries {0} and {1} are not versions of one entry (their ids or volumes differ)")]
    NotSameEntry(EntryKey, EntryKey),
}

/// Whether `name` may name an entry in a directory: what a local create accepts, and what
/// every entry from a peer must carry too (the kernel fails a whole `readdir` with EIO on a
/// name such as "" or "..").
pub fn name_is_valid(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// The tag a node writes into its entries' `origin`: derived from its peer id's bytes, so
/// every node can tell which node a tag names.
pub fn node_tag(peer_id_bytes: &[u8]) -> u64 {
    u64::from_le_bytes(
        blake3::hash(peer_id_bytes).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// Random, permanent id of a file, directory or symlink (survives renames).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(#[serde(with = "fixed_bytes")] pub [u8; 16]);

impl EntryId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        EntryId(b)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", hex::encode(&self.0[..6]))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeId(#[serde(with = "fixed_bytes")] pub [u8; 16]);

/// What names an entry everywhere it is stored or asked for: its id within its volume. Ids
/// are chosen by writers, so an id alone names nothing: a member of one volume can sign an
/// entry with the id of another volume's entry, and it must never touch that one. Ordered as
/// its bytes (id, then volume), so the first byte is the id's (sync's digest buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    pub id: EntryId,
    pub volume: VolumeId,
}

impl EntryKey {
    pub const LEN: usize = 32;

    /// `id || volume`: the store's key.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut k = [0u8; Self::LEN];
        k[..16].copy_from_slice(&self.id.0);
        k[16..].copy_from_slice(&self.volume.0);
        k
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN {
            return None;
        }
        Some(Self {
            id: EntryId(b[..16].try_into().expect("16 bytes")),
            volume: VolumeId(b[16..].try_into().expect("16 bytes")),
        })
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in volume {}", self.id, self.volume)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What an entry is. Encoded by variant name: a decoder that does not know a variant refuses
/// the entry, so new kinds are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A named pipe (served by the kernel of each node: a pipe between local processes).
    Fifo,
    /// A Unix socket's name (the socket itself lives in the kernel of the node that bound it).
    Socket,
    /// A character device node; `rdev` names the device.
    CharDev,
    /// A block device node; `rdev` names the device.
    BlockDev,
    /// A further name of another entry of the volume (a hard link): `target` is that entry,
    /// which holds the attributes, content and extended attributes.
    Link,
}

impl EntryKind {
    /// Kinds that have no content and no size: they only name something the kernel serves.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev
        )
    }
}

/// Longest extended attribute name, prefix included (`user.x`), as on Linux.
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// Largest extended attribute value, as on Linux.
pub const MAX_XATTR_VALUE_LEN: usize = 65_536;

/// Namespaces an extended attribute may be in, with whether listing it needs uid 0.
pub const XATTR_NAMESPACES: [(&[u8], bool); 3] = [
    (b"user.", false),
    (b"trusted.", true),
    (b"security.", false),
];

/// Room for extended attributes per entry: one 4 KiB ext4 block less its 32-byte header and
/// 4-byte end marker, counted as ext4 does (see [`xattr_cost`]). Past it ext4 (without
/// `ea_inode`) and the mount answer ENOSPC, and an entry from a peer is refused.
pub const XATTR_BUDGET: usize = 4096 - 32 - 4;

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// What one attribute takes of [`XATTR_BUDGET`]: ext4's 16-byte entry header, its name without
/// the namespace prefix and its value, each padded to 4 bytes.
pub fn xattr_cost(name: &[u8], value: &[u8]) -> usize {
    let prefix = XATTR_NAMESPACES
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map_or(0, |(p, _)| p.len());
    16 + pad4(name.len() - prefix) + pad4(value.len())
}

/// One extended attribute of an entry: its full name (`user.comment`) and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system(std::time::SystemTime::now())
    }

    pub fn from_system(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                Timestamp { secs, nanos }
            }
        }
    }

    /// Never panics: a time out of `SystemTime`'s range, or `nanos` past a second (only from
    /// a corrupt or hostile entry), gives a time in range (its whole seconds, or the epoch).
    pub fn to_system(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        let secs = std::time::Duration::from_secs(self.secs.unsigned_abs());
        let t = if self.secs >= 0 {
            base.checked_add(secs)
        } else {
            base.checked_sub(secs)
        }
        .unwrap_or(base);
        t.checked_add(std::time::Duration::from_nanos(u64::from(self.nanos)))
            .unwrap_or(t)
    }
}

/// The decrypted part of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The containing directory; a volume root names itself.
    pub parent: EntryId,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (`0o7777`), without the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// The file's chunks in order; `None` is a hole that reads as zeros.
    pub blocks: Vec<Option<ChunkRef>>,
    #[serde(with = "serde_bytes")]
    pub symlink_target: Vec<u8>,
    // The fields below are left out of the encoding when unused, so an entry that uses none
    // of them encodes exactly as before they existed (and old nodes keep reading it).
    /// The device number of a CharDev/BlockDev as the kernel encodes it (`new_encode_dev`):
    /// stored and returned, never interpreted. 0 for every other kind.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// `Link` only: the entry (of the same volume) this name points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<EntryId>,
    /// An entry whose own name was removed while other names (`Link` entries) remain: its
    /// `name` is empty and it claims no place in a directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unnamed: bool,
    /// Extended attributes, sorted by name, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// A conflict copy: the lost version it keeps (`p2pfs-ctl conflicts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_of: Option<ConflictOf>,
}

/// Which version a conflict copy keeps: the entry, and the node and clock that wrote the
/// version that lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictOf {
    pub entry: EntryId,
    pub origin: u64,
    pub hlc: Hlc,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EntryMeta {
    /// A new entry with no content (no chunks, no link target), created at `now`.
    pub fn new_empty(
        parent: EntryId,
        name: Vec<u8>,
        kind: EntryKind,
        mode: u32,
        (uid, gid): (u32, u32),
        now: Timestamp,
    ) -> Self {
        Self {
            parent,
            name,
            kind,
            size: 0,
            mode,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            blocks: vec![],
            symlink_target: vec![],
            rdev: 0,
            target: None,
            unnamed: false,
            xattrs: vec![],
            conflict_of: None,
        }
    }

    /// The structural rules every payload must follow, whoever wrote it (`id` is the entry's
    /// own). Name rules that depend on the volume (its root has no name) are checked by
    /// `Volume::open_entry`.
    fn check(&self, id: EntryId) -> Result<(), &'static str> {
        if self.name.len() > MAX_NAME_LEN || self.name.contains(&b'/') || self.name.contains(&0) {
            return Err("invalid name");
        }
        if self.unnamed && (!self.name.is_empty() || self.kind == EntryKind::Dir) {
            return Err("an unnamed entry has a name or is a directory");
        }
        let contentless = self.kind.is_special() || self.kind == EntryKind::Link;
        if contentless && (!self.blocks.is_empty() || self.size != 0) {
            return Err("a special file or link has content");
        }
        if self.kind == EntryKind::Link {
            if self.target.is_none_or(|t| t == id) || self.unnamed || !self.xattrs.is_empty() {
                return Err("a link has no target, itself as target, no name or attributes");
            }
        } else if self.target.is_some() {
            return Err("only a link has a target");
        }
        if self.rdev != 0 && !matches!(self.kind, EntryKind::CharDev | EntryKind::BlockDev) {
            return Err("only a device node has a device number");
        }
        if self.conflict_of.is_some_and(|c| c.entry == id)
            || (self.conflict_of.is_some() && matches!(self.kind, EntryKind::Dir | EntryKind::Link))
        {
            return Err("a conflict copy of itself, or of a directory or link");
        }
        let names_ok = self.xattrs.iter().all(|x| {
            !x.name.is_empty()
                && x.name.len() <= MAX_XATTR_NAME_LEN
                && !x.name.contains(&0)
                && x.value.len() <= MAX_XATTR_VALUE_LEN
        });
        if !names_ok || !self.xattrs.windows(2).all(|w| w[0].name < w[1].name) {
            return Err("extended attributes are not sorted, unique and within limits");
        }
        // What a local setxattr allows, so that a peer cannot make every node hold more.
        let in_namespace = self.xattrs.iter().all(|x| {
            XATTR_NAMESPACES
                .iter()
                .any(|(p, _)| x.name.starts_with(p) && x.name.len() > p.len())
        });
        let used: usize = self
            .xattrs
            .iter()
            .map(|x| xattr_cost(&x.name, &x.value))
            .sum();
        if !in_namespace || used > XATTR_BUDGET {
            return Err("extended attributes outside the stored namespaces or over the budget");
        }
        Ok(())
    }
}

/// The order of versions of one entry: last writer wins by clock, then author, then node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: Hlc,
    pub author: UserId,
    pub origin: u64,
}

/// What the writer of a version had seen of its entry: for every node that wrote the entry,
/// the clock of its latest write it knew of (a version vector), sorted by node. It tells a
/// version written on top of another (which replaces it) from one written concurrently, on a
/// node that had not seen the other (a race or a partition: the loser is kept as a conflict
/// copy, and a modify beats a concurrent delete).
pub type Seen = Vec<(u64, Hlc)>;
/// Longest [`Seen`]: an entry written by more nodes forgets its oldest writers, which can only
/// make a later comparison report "concurrent" (an extra conflict copy), never lose a write.
pub const MAX_SEEN: usize = 32;

/// The history of a new version written by `origin` at `hlc` on top of `base`.
pub fn descend(base: &[(u64, Hlc)], origin: u64, hlc: Hlc) -> Seen {
    let mut seen: Seen = base.iter().copied().filter(|(o, _)| *o != origin).collect();
    if seen.len() >= MAX_SEEN {
        seen.sort_by_key(|(_, h)| std::cmp::Reverse(*h));
        seen.truncate(MAX_SEEN - 1);
    }
    seen.push((origin, hlc));
    seen.sort_unstable_by_key(|(o, _)| *o);
    seen
}

/// A signed entry version, as stored and replicated. Decoding checks its structure (the
/// rules in `DecodedEntry`'s conversion) wherever it comes from: the disk, sync or gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DecodedEntry")]
pub struct Entry {
    pub id: EntryId,
    pub volume: VolumeId,
    pub hlc: Hlc,
    pub author: UserId,
    /// Tag of the node that wrote this version (for conflict names and tie-breaks).
    pub origin: u64,
    pub deleted: bool,
    /// A tombstone that also erases every kept earlier version of the entry it covers (`p2pfs-ctl
    /// purge`): nodes drop their history of it and delete the chunks only it kept at once.
    /// Left out of the encoding when false, so every other entry encodes as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
    /// The history this version was written on (see [`Seen`]); holds `(origin, hlc)` itself.
    pub seen: Seen,
    /// Sorted, de-duplicated ids of the chunks this version references.
    pub chunks: Vec<ChunkId>,
    /// `nonce (24) || XChaCha20-Poly1305(EntryMeta as CBOR)`; empty for a tombstone.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "fixed_bytes")]
    pub signature: [u8; 64],
}

/// An [`Entry`] as decoded, before its structure is checked.
#[derive(Deserialize)]
struct DecodedEntry {
    id: EntryId,
    volume: VolumeId,
    hlc: Hlc,
    author: UserId,
    origin: u64,
    deleted: bool,
    #[serde(default)]
    purge: bool,
    seen: Seen,
    chunks: Vec<ChunkId>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(with = "fixed_bytes")]
    signature: [u8; 64],
}

impl TryFrom<DecodedEntry> for Entry {
    type Error = &'static str;

    fn try_from(d: DecodedEntry) -> Result<Self, Self::Error> {
        let entry = Entry {
            id: d.id,
            volume: d.volume,
            hlc: d.hlc,
            author: d.author,
            origin: d.origin,
            deleted: d.deleted,
            purge: d.purge,
            seen: d.seen,
            chunks: d.chunks,
            payload: d.payload,
            signature: d.signature,
        };
        if !entry.chunks.windows(2).all(|w| w[0] < w[1]) {
            return Err("chunk set is not sorted and unique");
        }
        if entry.purge && !entry.deleted {
            return Err("only a tombstone can purge");
        }
        if entry.seen.len() > MAX_SEEN
            || !entry.seen.windows(2).all(|w| w[0].0 < w[1].0)
            || entry.seen_of(entry.origin) != Some(entry.hlc)
        {
            return Err("history is not sorted, too long or lacks the version itself");
        }
        Ok(entry)
    }
}

#[derive(Serialize)]
struct SignedFields<'a> {
    id: &'a EntryId,
    volume: &'a VolumeId,
    hlc: Hlc,
    author: &'a UserId,
    origin: u64,
    deleted: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    purge: bool,
    seen: &'a [(u64, Hlc)],
    chunks: &'a [ChunkId],
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

/// What an entry writer needs: the volume's payload key and the author's signing key.
pub struct EntrySealer<'a> {
    pub volume: VolumeId,
    pub payload_key: &'a [u8; 32],
    pub signer: &'a SigningKey,
    pub origin: u64,
}

fn payload_aad(id: &EntryId, volume: &VolumeId) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(&id.0);
    aad[16..].copy_from_slice(&volume.0);
    aad
}

impl EntrySealer<'_> {
    /// Encrypts and signs a live version of `id`, written on top of the version whose history
    /// is `base` (empty for a new entry).
    pub fn seal(&self, id: EntryId, hlc: Hlc, base: &[(u64, Hlc)], meta: &EntryMeta) -> Entry {
        let mut chunks: Vec<ChunkId> = meta.blocks.iter().flatten().map(|r| r.id).collect();
        chunks.sort_unstable();
        chunks.dedup();
        let mut plain = Vec::new();
        ciborium::into_writer(meta, &mut plain).expect("meta serializes");
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(self.payload_key.into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &payload_aad(&id, &self.volume),
                },
            )
            .expect("payload fits the AEAD limit");
        let mut payload = nonce.to_vec();
        payload.extend_from_slice(&sealed);
        self.sign(id, hlc, base, false, chunks, payload)
    }

    /// Signs a version whose payload is in clear (a volume record: its secrets are sealed
    /// inside it with age).
    pub fn seal_clear(
        &self,
        id: EntryId,
        hlc: Hlc,
        base: &[(u64, Hlc)],
        payload: Vec<u8>,
    ) -> Entry {
        self.sign(id, hlc, base, false, Vec::new(), payload)
    }

    /// A signed deletion marker for `id`, deleting the version whose history is `base`.
    pub fn tombstone(&self, id: EntryId, hlc: Hlc, base: &[(u64, Hlc)]) -> Entry {
        self.sign(id, hlc, base, true, Vec::new(), Vec::new())
    }

    /// A tombstone for `id` that also erases every earlier version of it that it covers (see
    /// [`Entry::purge`]).
    pub fn purge_tombstone(&self, id: EntryId, hlc: Hlc, base: &[(u64, Hlc)]) -> Entry {
        let mut entry = Entry {
            purge: true,
            ..self.sign(id, hlc, base, true, Vec::new(), Vec::new())
        };
        entry.signature = self.signer.sign(&entry.signed_bytes()).to_bytes();
        entry
    }

    fn sign(
        &self,
        id: EntryId,
        hlc: Hlc,
        base: &[(u64, Hlc)],
        deleted: bool,
        chunks: Vec<ChunkId>,
        payload: Vec<u8>,
    ) -> Entry {
        let mut entry = Entry {
            id,
            volume: self.volume,
            hlc,
            author: UserId(self.signer.verifying_key().to_bytes()),
            origin: self.origin,
            deleted,
            purge: false,
            seen: descend(base, self.origin, hlc),
            chunks,
            payload,
            signature: [0; 64],
        };
        entry.signature = self.signer.sign(&entry.signed_bytes()).to_bytes();
        entry
    }
}

/// Names one signed version of an entry (a truncated hash of everything its author signed): a
/// volume record lists a removed writer's versions that stay valid by these.
pub type VersionHash = [u8; 16];

impl Entry {
    /// The hash naming this exact version (see [`VersionHash`]).
    pub fn version_hash(&self) -> VersionHash {
        let h = blake3::derive_key("p2pfs entry version v1", &self.signed_bytes());
        h[..16].try_into().expect("16 bytes")
    }

    /// The entry this is a version of: its id in its volume.
    pub fn key(&self) -> EntryKey {
        EntryKey {
            id: self.id,
            volume: self.volume,
        }
    }

    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            author: self.author,
            origin: self.origin,
        }
    }

    /// Last-writer-wins: true when `self` replaces `other` as the state of the same id. A total
    /// order (the signature breaks the last tie), so merging is commutative and associative.
    pub fn supersedes(&self, other: &Entry) -> bool {
        match (self.version(), &self.signature[..]).cmp(&(other.version(), &other.signature[..])) {
            // Only forged or corrupt input gets here (a signature covers every field): compare
            // the whole encoding so the order stays total even then.
            std::cmp::Ordering::Equal => self.to_bytes() > other.to_bytes(),
            o => o == std::cmp::Ordering::Greater,
        }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        ciborium::into_writer(
            &SignedFields {
                id: &self.id,
                volume: &self.volume,
                hlc: self.hlc,
                author: &self.author,
                origin: self.origin,
                deleted: self.deleted,
                purge: self.purge,
                seen: &self.seen,
                chunks: &self.chunks,
                payload: &self.payload,
            },
            &mut out,
        )
        .expect("fields serialize");
        out
    }

    pub fn verify_signature(&self) -> Result<(), EntryError> {
        let key = VerifyingKey::from_bytes(&self.author.0)
            .map_err(|_| EntryError::BadSignature(self.id))?;
        key.verify(
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| EntryError::BadSignature(self.id))
    }

    /// Decrypts the payload and checks it agrees with the clear fields.
    pub fn open(&self, payload_key: &[u8; 32]) -> Result<EntryMeta, EntryError> {
        if self.deleted || self.payload.len() < 24 {
            return Err(EntryError::Inconsistent(self.id, "no payload"));
        }
        let cipher = XChaCha20Poly1305::new(payload_key.into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&self.payload[..24]),
                Payload {
                    msg: &self.payload[24..],
                    aad: &payload_aad(&self.id, &self.volume),
                },
            )
            .map_err(|_| EntryError::Decrypt(self.id))?;
        let meta: EntryMeta =
            ciborium::from_reader(&plain[..]).map_err(|e| EntryError::Decode(e.to_string()))?;
        meta.check(self.id)
            .map_err(|why| EntryError::Inconsistent(self.id, why))?;
        if meta
            .blocks
            .iter()
            .flatten()
            .any(|r| self.chunks.binary_search(&r.id).is_err())
        {
            return Err(EntryError::Inconsistent(
                self.id,
                "chunk map names a chunk not in the clear set",
            ));
        }
        Ok(meta)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.payload.len() + self.chunks.len() * 34);
        ciborium::into_writer(self, &mut out).expect("entry serializes");
        out
    }

    /// Decodes an entry; refuses oversized input before parsing. Checks its structure, not
    /// its signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENCODED_ENTRY {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        ciborium::from_reader(bytes).map_err(|e| EntryError::Decode(e.to_string()))
    }

    /// The clock of `origin`'s latest write this version was written on top of.
    pub fn seen_of(&self, origin: u64) -> Option<Hlc> {
        self.seen
            .binary_search_by_key(&origin, |(o, _)| *o)
            .ok()
            .map(|i| self.seen[i].1)
    }

    /// Whether this version was written with `other` (or a later version of its line) seen.
    pub fn covers(&self, other: &Entry) -> bool {
        other
            .seen
            .iter()
            .all(|(o, h)| self.seen_of(*o).is_some_and(|mine| mine >= *h))
    }
}

/// How an incoming version of an entry meets the current one.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// The version to keep as the entry's state.
    pub keep: &'a Entry,
    /// A live version that lost to a concurrent one: its content must be kept under a
    /// conflict name, or that write would be lost silently.
    pub displaced: Option<&'a Entry>,
}

/// Resolves `incoming` against the state of its entry. A version written on top of the other
/// replaces it. Concurrent versions (neither writer had seen the other's): a modify beats a
/// delete; of two deletes or two modifies the later wins (last writer wins), and a losing
/// modify is reported as displaced. Two entries of different volumes (or ids) are never
/// versions of one another, whatever their histories say: refused.
pub fn resolve<'a>(
    current: Option<&'a Entry>,
    incoming: &'a Entry,
) -> Result<Resolution<'a>, EntryError> {
    let Some(cur) = current else {
        return Ok(Resolution {
            keep: incoming,
            displaced: None,
        });
    };
    if cur.key() != incoming.key() {
        return Err(EntryError::NotSameEntry(cur.key(), incoming.key()));
    }
    let later = |a: &'a Entry, b: &'a Entry| if a.supersedes(b) { (a, b) } else { (b, a) };
    let (keep, displaced) = match (incoming.covers(cur), cur.covers(incoming)) {
        // Same history: a replay, or (only from a forged or corrupt writer) a twin.
        (true, true) => (later(incoming, cur).0, None),
        (true, false) => (incoming, None),
        (false, true) => (cur, None),
        (false, false) => match (cur.deleted, incoming.deleted) {
            (true, false) => (incoming, None),
            (false, true) => (cur, None),
            (true, true) => (later(incoming, cur).0, None),
            (false, false) => {
                let (won, lost) = later(incoming, cur);
                (won, Some(lost))
            }
        },
    };
    Ok(Resolution { keep, displaced })
}

/// Merges `incoming` into the state of its entry: returns the entry that should be kept.
pub fn merge<'a>(current: Option<&'a Entry>, incoming: &'a Entry) -> Result<&'a Entry, EntryError> {
    Ok(resolve(current, incoming)?.keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{ChunkKey, ChunkRef};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn meta(name: &str) -> EntryMeta {
        EntryMeta {
            parent: EntryId([1; 16]),
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File,
            size: 5,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Timestamp::now(),
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            blocks: vec![
                Some(ChunkRef {
                    id: ChunkId([7; 32]),
                    key: ChunkKey([8; 32]),
                }),
                None,
            ],
            symlink_target: vec![],
            rdev: 0,
            target: None,
            unnamed: false,
            xattrs: vec![],
            conflict_of: None,
        }
    }

    fn sealer(key: &SigningKey) -> EntrySealer<'_> {
        EntrySealer {
            volume: VolumeId([2; 16]),
            payload_key: &[3; 32],
            signer: key,
            origin: 42,
        }
    }

    #[test]
    fn seal_verify_open_round_trip_and_no_clear_name() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let m = meta("secret-name.txt");
        let e = sealer(&sk).seal(EntryId([9; 16]), Hlc(77), &[], &m);
        let bytes = e.to_bytes();
        assert!(!bytes.windows(11).any(|w| w == b"secret-name"));
        let back = Entry::from_bytes(&bytes).unwrap();
        back.verify_signature().unwrap();
        assert_eq!(back.open(&[3; 32]).unwrap(), m);
        assert_eq!(back.chunks, vec![ChunkId([7; 32])]);
        assert_eq!(back.open(&[4; 32]), Err(EntryError::Decrypt(e.id)));
    }

    /// `EntryMeta` and `EntryKind` as they were before special files, links and extended
    /// attributes: what nodes of that version encode and decode.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    enum OldKind {
        File,
        Dir,
        Symlink,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct OldMeta {
        parent: EntryId,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: OldKind,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        atime: Timestamp,
        mtime: Timestamp,
        ctime: Timestamp,
        blocks: Vec<Option<ChunkRef>>,
        #[serde(with = "serde_bytes")]
        symlink_target: Vec<u8>,
    }

    fn old_of(m: &EntryMeta) -> OldMeta {
        OldMeta {
            parent: m.parent,
            name: m.name.clone(),
            kind: match m.kind {
                EntryKind::File => OldKind::File,
                EntryKind::Dir => OldKind::Dir,
                EntryKind::Symlink => OldKind::Symlink,
                k => panic!("{k:?} did not exist"),
            },
            size: m.size,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            blocks: m.blocks.clone(),
            symlink_target: m.symlink_target.clone(),
        }
    }

    fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    /// Existing entries need no conversion: a payload that uses none of the new fields
    /// encodes byte for byte as before, and what older nodes wrote decodes unchanged.
    #[test]
    fn unused_new_fields_encode_as_before_and_old_payloads_decode() {
        let mut link = meta("l");
        link.symlink_target = b"../target".to_vec();
        link.kind = EntryKind::Symlink;
        let dir = EntryMeta::new_empty(
            EntryId([4; 16]),
            b"d".to_vec(),
            EntryKind::Dir,
            0o2755,
            (1000, 100),
            Timestamp::now(),
        );
        for m in [meta("file.txt"), link, dir] {
            let old = old_of(&m);
            assert_eq!(cbor(&m), cbor(&old), "{m:?}");
            let decoded: EntryMeta = ciborium::from_reader(&cbor(&old)[..]).unwrap();
            assert_eq!(decoded, m);
        }
        // What an old node makes of the new fields: extended attributes of a file are
        // ignored (so it drops them if it rewrites the entry), a new kind refuses the entry.
        let mut with_xattr = meta("f");
        with_xattr.xattrs = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        }];
        let old: OldMeta = ciborium::from_reader(&cbor(&with_xattr)[..]).unwrap();
        let without = EntryMeta {
            xattrs: vec![],
            ..with_xattr.clone()
        };
        assert_eq!(old, old_of(&without));
        let mut fifo = EntryMeta::new_empty(
            EntryId([1; 16]),
            b"p".to_vec(),
            EntryKind::Fifo,
            0o644,
            (0, 0),
            Timestamp::now(),
        );
        fifo.ctime = with_xattr.ctime;
        assert!(ciborium::from_reader::<OldMeta, _>(&cbor(&fifo)[..]).is_err());
        // And every new field round-trips.
        let mut dev = fifo.clone();
        dev.kind = EntryKind::CharDev;
        dev.rdev = (4 << 8) | 1;
        dev.xattrs = with_xattr.xattrs.clone();
        let mut unnamed = meta("");
        unnamed.unnamed = true;
        let mut hard = fifo.clone();
        hard.kind = EntryKind::Link;
        hard.target = Some(EntryId([6; 16]));
        let mut copy = meta("f (conflict laptop 2026-12-02 10.31)");
        copy.conflict_of = Some(ConflictOf {
            entry: EntryId([6; 16]),
            origin: 7,
            hlc: Hlc(9),
        });
        for m in [dev, unnamed, hard, copy] {
            let back: EntryMeta = ciborium::from_reader(&cbor(&m)[..]).unwrap();
            assert_eq!(back, m);
            assert_ne!(cbor(&m), cbor(&meta("f")));
        }
    }

    /// Opens `m` sealed as entry `[9; 16]`: the rules every payload is held to.
    fn open_as_sealed(m: &EntryMeta) -> Result<EntryMeta, EntryError> {
        let sk = SigningKey::from_bytes(&[5; 32]);
        sealer(&sk)
            .seal(EntryId([9; 16]), Hlc(1), &[], m)
            .open(&[3; 32])
    }

    #[test]
    fn payloads_of_every_kind_are_checked() {
        let own = EntryId([9; 16]);
        let empty = |kind| {
            EntryMeta::new_empty(
                EntryId([1; 16]),
                b"n".to_vec(),
                kind,
                0o644,
                (0, 0),
                Timestamp::now(),
            )
        };
        let link_to = |target| EntryMeta {
            target,
            ..empty(EntryKind::Link)
        };
        let xattr = |name: &[u8], len: usize| Xattr {
            name: name.to_vec(),
            value: vec![7; len],
        };
        let good = vec![
            meta("file"),
            empty(EntryKind::Fifo),
            empty(EntryKind::Socket),
            EntryMeta {
                rdev: (8 << 8) | 1,
                ..empty(EntryKind::BlockDev)
            },
            EntryMeta {
                rdev: u32::MAX,
                ..empty(EntryKind::CharDev)
            },
            link_to(Some(EntryId([6; 16]))),
            EntryMeta {
                name: vec![],
                unnamed: true,
                ..meta("")
            },
            EntryMeta {
                name: vec![],
                unnamed: true,
                ..empty(EntryKind::Fifo)
            },
            EntryMeta {
                xattrs: vec![
                    xattr(b"trusted.x", 3700),
                    xattr(
                        &[&b"user."[..], &[b'u'; MAX_XATTR_NAME_LEN - 5]].concat(),
                        0,
                    ),
                ],
                ..empty(EntryKind::Dir)
            },
        ];
        for m in &good {
            assert_eq!(open_as_sealed(m).as_ref(), Ok(m), "{m:?}");
        }
        let with_content = |kind| EntryMeta {
            kind,
            target: (kind == EntryKind::Link).then_some(EntryId([6; 16])),
            ..meta("n")
        };
        let sized = |kind| EntryMeta {
            size: 1,
            ..empty(kind)
        };
        let bad = [
            // A name no directory may hold.
            meta("a/b"),
            // Unnamed yet named, or an unnamed directory.
            EntryMeta {
                unnamed: true,
                ..meta("n")
            },
            EntryMeta {
                name: vec![],
                unnamed: true,
                ..empty(EntryKind::Dir)
            },
            // Special files and links have no content.
            with_content(EntryKind::Fifo),
            with_content(EntryKind::Socket),
            with_content(EntryKind::CharDev),
            with_content(EntryKind::BlockDev),
            with_content(EntryKind::Link),
            sized(EntryKind::Fifo),
            sized(EntryKind::BlockDev),
            // A link needs a target other than itself, a name, no attributes.
            link_to(None),
            link_to(Some(own)),
            EntryMeta {
                name: vec![],
                unnamed: true,
                ..link_to(Some(EntryId([6; 16])))
            },
            EntryMeta {
                xattrs: vec![xattr(b"user.a", 1)],
                ..link_to(Some(EntryId([6; 16])))
            },
            // Only a link has a target.
            EntryMeta {
                target: Some(EntryId([6; 16])),
                ..meta("n")
            },
            // A conflict copy of itself, or of a directory or link.
            EntryMeta {
                conflict_of: Some(ConflictOf {
                    entry: own,
                    origin: 1,
                    hlc: Hlc(1),
                }),
                ..meta("n")
            },
            EntryMeta {
                conflict_of: Some(ConflictOf {
                    entry: EntryId([6; 16]),
                    origin: 1,
                    hlc: Hlc(1),
                }),
                ..empty(EntryKind::Dir)
            },
            // Only a device node has a device number.
            EntryMeta {
                rdev: 1,
                ..empty(EntryKind::Fifo)
            },
            EntryMeta {
                rdev: 1,
                ..meta("n")
            },
            // Attributes within the per-entry budget a local setxattr keeps to, in the stored
            // namespaces.
            EntryMeta {
                xattrs: vec![xattr(b"user.a", 2100), xattr(b"user.b", 2100)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"other.a", 1)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"user.", 1)],
                ..meta("n")
            },
            // Attributes sorted and unique, names and values within Linux's limits.
            EntryMeta {
                xattrs: vec![xattr(b"user.b", 1), xattr(b"user.a", 1)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"user.a", 1), xattr(b"user.a", 2)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"", 1)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(&[b'u'; MAX_XATTR_NAME_LEN + 1], 1)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"user.\0a", 1)],
                ..meta("n")
            },
            EntryMeta {
                xattrs: vec![xattr(b"user.a", MAX_XATTR_VALUE_LEN + 1)],
                ..meta("n")
            },
        ];
        for m in &bad {
            assert!(
                matches!(open_as_sealed(m), Err(EntryError::Inconsistent(..))),
                "{m:?}"
            );
        }
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let e = sealer(&sk).seal(EntryId([9; 16]), Hlc(77), &[], &meta("a"));
        let mut t = e.clone();
        t.hlc = Hlc(78);
        assert_eq!(t.verify_signature(), Err(EntryError::BadSignature(e.id)));
        let mut t = e.clone();
        t.deleted = true;
        assert!(t.verify_signature().is_err());
        let mut t = e.clone();
        t.payload[30] ^= 1;
        assert!(t.verify_signature().is_err());
        let mut t = e.clone();
        t.author = UserId(SigningKey::from_bytes(&[6; 32]).verifying_key().to_bytes());
        assert!(t.verify_signature().is_err());
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert!(Entry::from_bytes(&vec![0u8; MAX_ENCODED_ENTRY + 1]).is_err());
        assert!(Entry::from_bytes(b"\xff\x00garbage").is_err());
        assert!(Entry::from_bytes(&[]).is_err());
    }

    /// An unsigned version for merge tests (merging never looks at signatures).
    fn version(origin: u64, hlc: u64, base: &[(u64, Hlc)], deleted: bool) -> Entry {
        Entry {
            id: EntryId([1; 16]),
            volume: VolumeId([0; 16]),
            hlc: Hlc(hlc),
            author: UserId([origin as u8; 32]),
            origin,
            deleted,
            purge: false,
            seen: descend(base, origin, Hlc(hlc)),
            chunks: vec![],
            payload: vec![],
            signature: [origin as u8; 64],
        }
    }

    #[test]
    fn a_version_written_on_top_replaces_and_concurrent_ones_are_resolved() {
        let v0 = version(1, 10, &[], false);
        let v1 = version(2, 20, &v0.seen, false); // node 2 edits after seeing v0
        assert_eq!(
            resolve(Some(&v0), &v1).unwrap(),
            Resolution {
                keep: &v1,
                displaced: None
            }
        );
        assert_eq!(
            resolve(Some(&v1), &v0).unwrap(),
            Resolution {
                keep: &v1,
                displaced: None
            }
        );

        // Node 1 edits v0 too, without having seen v1: concurrent, later one wins, the other
        // is displaced (kept as a conflict copy by the caller), whichever arrives first.
        let v2 = version(1, 25, &v0.seen, false);
        assert_eq!(
            resolve(Some(&v1), &v2).unwrap(),
            Resolution {
                keep: &v2,
                displaced: Some(&v1)
            }
        );
        assert_eq!(
            resolve(Some(&v2), &v1).unwrap(),
            Resolution {
                keep: &v2,
                displaced: Some(&v1)
            }
        );

        // A delete concurrent with a modify loses even when it is later.
        let del = version(3, 99, &v0.seen, true);
        assert_eq!(
            resolve(Some(&v1), &del).unwrap(),
            Resolution {
                keep: &v1,
                displaced: None
            }
        );
        assert_eq!(
            resolve(Some(&del), &v1).unwrap(),
            Resolution {
                keep: &v1,
                displaced: None
            }
        );
        // A delete of what the deleter saw wins.
        let del_seen = version(3, 30, &v1.seen, true);
        assert_eq!(resolve(Some(&v1), &del_seen).unwrap().keep, &del_seen);
        assert_eq!(resolve(Some(&del_seen), &v1).unwrap().keep, &del_seen);
        // Replays change nothing.
        assert_eq!(resolve(Some(&v1), &v1.clone()).unwrap().displaced, None);
    }

    /// Versions of entries of different volumes never meet, whatever their ids and histories:
    /// a tombstone that claims another volume's entry id and has seen everything is refused.
    #[test]
    fn resolve_refuses_entries_of_another_volume() {
        let victim = version(1, 10, &[], false);
        let mut everything: Seen = (0..MAX_SEEN as u64).map(|o| (o, Hlc(u64::MAX))).collect();
        everything.sort_unstable();
        let mut hostile = version(2, u64::MAX, &everything, true);
        hostile.volume = VolumeId([9; 16]);
        assert!(hostile.covers(&victim));
        assert_eq!(
            resolve(Some(&victim), &hostile),
            Err(EntryError::NotSameEntry(victim.key(), hostile.key()))
        );
        assert!(resolve(Some(&hostile), &victim).is_err());
        let mut other_id = version(2, 20, &victim.seen, false);
        other_id.id = EntryId([2; 16]);
        assert!(merge(Some(&victim), &other_id).is_err());
        // The same id in the same volume still resolves.
        let later = version(2, 20, &victim.seen, true);
        assert_eq!(resolve(Some(&victim), &later).unwrap().keep, &later);
    }

    #[test]
    fn entry_keys_order_as_their_bytes() {
        let a = EntryKey {
            id: EntryId([1; 16]),
            volume: VolumeId([9; 16]),
        };
        let b = EntryKey {
            id: EntryId([2; 16]),
            volume: VolumeId([0; 16]),
        };
        assert!(a < b && a.to_bytes() < b.to_bytes());
        assert_eq!(EntryKey::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(EntryKey::from_bytes(&a.id.0), None);
    }

    #[test]
    fn history_is_bounded_and_keeps_the_writer() {
        let mut seen = Vec::new();
        for o in 0..100u64 {
            seen = descend(&seen, o, Hlc(o + 1));
        }
        assert_eq!(seen.len(), MAX_SEEN);
        assert!(seen.contains(&(99, Hlc(100))));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn decoding_refuses_a_history_without_the_version() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let mut e = sealer(&sk).seal(EntryId([9; 16]), Hlc(77), &[], &meta("a"));
        e.seen = vec![(1, Hlc(3))];
        assert!(Entry::from_bytes(&e.to_bytes()).is_err());
    }

    /// One step of a simulated run: `node` writes (or deletes) on top of what it has, or takes
    /// in what `from` has.
    #[derive(Debug, Clone)]
    enum Step {
        Write(usize, bool),
        Receive(usize, usize),
    }

    fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, any::<bool>()).prop_map(|(n, d)| Step::Write(n, d)),
                (0usize..3, 0usize..3).prop_map(|(n, f)| Step::Receive(n, f)),
            ],
            1..24,
        )
    }

    /// Runs the steps on three nodes; returns every version written. Clocks are honest: every
    /// write is later than everything its node has seen.
    fn simulate(steps: &[Step], allow_deletes: bool) -> Vec<Entry> {
        let mut state: [Option<Entry>; 3] = [None, None, None];
        let mut written = Vec::new();
        let mut clock = 0;
        for step in steps {
            match *step {
                Step::Write(n, delete) => {
                    let delete = delete && allow_deletes;
                    let base = state[n]
                        .as_ref()
                        .map(|e| e.seen.clone())
                        .unwrap_or_default();
                    if delete && state[n].as_ref().is_none_or(|e| e.deleted) {
                        continue;
                    }
                    clock += 1;
                    let v = version(n as u64 + 1, clock, &base, delete);
                    written.push(v.clone());
                    state[n] = Some(v);
                }
                Step::Receive(n, from) => {
                    if let Some(e) = state[from].clone() {
                        state[n] = Some(merge(state[n].as_ref(), &e).unwrap().clone());
                    }
                }
            }
        }
        written
    }

    /// Folds versions in order: the final state and every version reported displaced.
    fn fold(versions: &[Entry]) -> (Option<Entry>, Vec<Entry>) {
        let mut state: Option<Entry> = None;
        let mut displaced = Vec::new();
        for v in versions {
            let r = resolve(state.as_ref(), v).unwrap();
            if let Some(d) = r.displaced {
                displaced.push(d.clone());
            }
            state = Some(r.keep.clone());
        }
        (state, displaced)
    }

    fn shuffled(mut v: Vec<Entry>, seed: u64) -> Vec<Entry> {
        let n = v.len().max(1);
        v.rotate_left((seed as usize) % n);
        if seed & 1 == 1 {
            v.reverse();
        }
        v
    }

    proptest! {
        /// Without deletes, the state is the same whatever order versions arrive in.
        #[test]
        fn modifies_merge_in_any_order(steps in arb_steps(), seed in any::<u64>()) {
            let versions = simulate(&steps, false);
            let (a, _) = fold(&versions);
            let (b, _) = fold(&shuffled(versions, seed));
            prop_assert_eq!(a, b);
        }

        /// No write is lost silently: every live version no other version was written on top
        /// of ends as the state or is reported displaced (and kept as a conflict copy), in
        /// any arrival order.
        #[test]
        fn no_latest_modify_is_lost(steps in arb_steps(), seed in any::<u64>()) {
            let versions = simulate(&steps, true);
            let heads: Vec<&Entry> = versions
                .iter()
                .filter(|v| !v.deleted && !versions.iter().any(|w| w != *v && w.covers(v)))
                .collect();
            let (state, displaced) = fold(&shuffled(versions.clone(), seed));
            for h in heads {
                prop_assert!(
                    state.as_ref() == Some(h) || displaced.contains(h),
                    "{h:?} lost; state {state:?}"
                );
            }
        }

        /// A delete written after seeing every other version wins in any order.
        #[test]
        fn a_delete_that_saw_everything_wins(steps in arb_steps(), seed in any::<u64>()) {
            let mut versions = simulate(&steps, true);
            // The union of every history: what a node that has seen it all writes on.
            let mut all: BTreeMap<u64, Hlc> = BTreeMap::new();
            for &(o, h) in versions.iter().flat_map(|v| v.seen.iter()) {
                let e = all.entry(o).or_default();
                *e = (*e).max(h);
            }
            let all: Seen = all.into_iter().collect();
            let top = versions.iter().map(|v| v.hlc.0).max().unwrap_or(0) + 1;
            let del = version(9, top, &all, true);
            versions.push(del.clone());
            let (state, _) = fold(&shuffled(versions, seed));
            prop_assert_eq!(state, Some(del));
        }
    }
}
