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
use crate::util::fixed_bytes;
use crate::util::hlc::Hlc;

/// Largest encoded entry accepted from disk or the wire: a 16 GiB file in 1 MiB chunks, with
/// room to spare. Larger is refused, never allocated.
pub const MAX_ENCODED_ENTRY: usize = 4 << 20;
/// Longest name in a directory, as on Linux.
pub const MAX_NAME_LEN: usize = 255;
const SIGNING_DOMAIN: &[u8] = b"p2pfs entry v1\0";

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

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A user, named by their ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(#[serde(with = "fixed_bytes")] pub [u8; 32]);

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
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

    pub fn to_system(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.secs >= 0 {
            base + std::time::Duration::new(self.secs as u64, self.nanos)
        } else {
            base - std::time::Duration::from_secs(self.secs.unsigned_abs())
                + std::time::Duration::from_nanos(u64::from(self.nanos))
        }
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
}

/// The order of versions of one entry: last writer wins by clock, then author, then node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub hlc: Hlc,
    pub author: UserId,
    pub origin: u64,
}

/// A signed entry version, as stored and replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    pub volume: VolumeId,
    pub hlc: Hlc,
    pub author: UserId,
    /// Tag of the node that wrote this version (for conflict names and tie-breaks).
    pub origin: u64,
    pub deleted: bool,
    /// Sorted, de-duplicated ids of the chunks this version references.
    pub chunks: Vec<ChunkId>,
    /// `nonce (24) || XChaCha20-Poly1305(EntryMeta as CBOR)`; empty for a tombstone.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "fixed_bytes")]
    pub signature: [u8; 64],
}

#[derive(Serialize)]
struct SignedFields<'a> {
    id: &'a EntryId,
    volume: &'a VolumeId,
    hlc: Hlc,
    author: &'a UserId,
    origin: u64,
    deleted: bool,
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
    /// Encrypts and signs a live version of `id`.
    pub fn seal(&self, id: EntryId, hlc: Hlc, meta: &EntryMeta) -> Entry {
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
        self.sign(id, hlc, false, chunks, payload)
    }

    /// A signed deletion marker for `id`.
    pub fn tombstone(&self, id: EntryId, hlc: Hlc) -> Entry {
        self.sign(id, hlc, true, Vec::new(), Vec::new())
    }

    fn sign(
        &self,
        id: EntryId,
        hlc: Hlc,
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
            chunks,
            payload,
            signature: [0; 64],
        };
        entry.signature = self.signer.sign(&entry.signed_bytes()).to_bytes();
        entry
    }
}

impl Entry {
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
        if meta.name.len() > MAX_NAME_LEN || meta.name.contains(&b'/') || meta.name.contains(&0) {
            return Err(EntryError::Inconsistent(self.id, "invalid name"));
        }
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

    /// Decodes an entry; refuses oversized input before parsing. Does not check the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENCODED_ENTRY {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let entry: Entry =
            ciborium::from_reader(bytes).map_err(|e| EntryError::Decode(e.to_string()))?;
        if !entry.chunks.windows(2).all(|w| w[0] < w[1]) {
            return Err(EntryError::Decode(
                "chunk set is not sorted and unique".into(),
            ));
        }
        Ok(entry)
    }
}

/// Merges `incoming` into the state of its id: returns the entry that should be kept.
pub fn merge<'a>(current: Option<&'a Entry>, incoming: &'a Entry) -> &'a Entry {
    match current {
        Some(cur) if !incoming.supersedes(cur) => cur,
        _ => incoming,
    }
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
        let e = sealer(&sk).seal(EntryId([9; 16]), Hlc(77), &m);
        let bytes = e.to_bytes();
        assert!(!bytes.windows(11).any(|w| w == b"secret-name"));
        let back = Entry::from_bytes(&bytes).unwrap();
        back.verify_signature().unwrap();
        assert_eq!(back.open(&[3; 32]).unwrap(), m);
        assert_eq!(back.chunks, vec![ChunkId([7; 32])]);
        assert_eq!(back.open(&[4; 32]), Err(EntryError::Decrypt(e.id)));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let e = sealer(&sk).seal(EntryId([9; 16]), Hlc(77), &meta("a"));
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

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (0u8..4, 0u64..5, 0u8..3, 0u64..2, any::<bool>(), any::<u8>()).prop_map(
            |(id, hlc, author, origin, deleted, sig)| Entry {
                id: EntryId([id; 16]),
                volume: VolumeId([0; 16]),
                hlc: Hlc(hlc),
                author: UserId([author; 32]),
                origin,
                deleted,
                chunks: vec![],
                payload: vec![sig],
                signature: [sig; 64],
            },
        )
    }

    fn fold(entries: &[Entry]) -> BTreeMap<EntryId, Entry> {
        let mut state: BTreeMap<EntryId, Entry> = BTreeMap::new();
        for e in entries {
            let keep = merge(state.get(&e.id), e).clone();
            state.insert(e.id, keep);
        }
        state
    }

    fn merge_states(
        a: &BTreeMap<EntryId, Entry>,
        b: &BTreeMap<EntryId, Entry>,
    ) -> BTreeMap<EntryId, Entry> {
        let mut out = a.clone();
        for e in b.values() {
            let keep = merge(out.get(&e.id), e).clone();
            out.insert(e.id, keep);
        }
        out
    }

    proptest! {
        #[test]
        fn merge_is_order_independent(mut entries in proptest::collection::vec(arb_entry(), 0..30), seed in any::<u64>()) {
            let a = fold(&entries);
            // Any permutation gives the same state.
            let n = entries.len().max(1);
            entries.rotate_left((seed as usize) % n);
            entries.reverse();
            prop_assert_eq!(fold(&entries), a);
        }

        #[test]
        fn merge_is_commutative_associative_idempotent(
            xs in proptest::collection::vec(arb_entry(), 0..12),
            ys in proptest::collection::vec(arb_entry(), 0..12),
            zs in proptest::collection::vec(arb_entry(), 0..12),
        ) {
            let (a, b, c) = (fold(&xs), fold(&ys), fold(&zs));
            prop_assert_eq!(merge_states(&a, &b), merge_states(&b, &a));
            prop_assert_eq!(merge_states(&merge_states(&a, &b), &c), merge_states(&a, &merge_states(&b, &c)));
            prop_assert_eq!(merge_states(&a, &a), a.clone());
        }
    }
}
