//! The chunk codec.
//!
//! A chunk is a piece of a file's plaintext (at most `chunk_size` bytes), encrypted with
//! ChaCha20-Poly1305 under a *convergent* key: `key = blake3_keyed(volume secret, plaintext)`.
//! Identical plaintext in one volume gives identical ciphertext (so it is stored once), while
//! without the volume secret nobody can confirm a guess of the plaintext. Because a key is used
//! for exactly one plaintext, a fixed nonce is safe.
//!
//! `ChunkId = blake3(ciphertext)`: any peer can verify what it stores and serves without keys.
//! The ciphertext starts with a format version byte so the codec can evolve.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use serde::{Deserialize, Serialize};

use crate::util::fixed_bytes;

/// Format version byte at the start of every chunk ciphertext.
const CHUNK_FORMAT_V1: u8 = 1;
/// Version byte plus Poly1305 tag.
pub const CHUNK_OVERHEAD: usize = 1 + 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkCodecError {
    #[error("chunk {0}: content does not match its id")]
    HashMismatch(ChunkId),
    #[error("chunk {0}: unknown format or too short")]
    Malformed(ChunkId),
    #[error("chunk {0}: decryption failed (wrong key or tampered)")]
    Decrypt(ChunkId),
}

/// Content address of a chunk: blake3 of its ciphertext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl ChunkId {
    pub fn of(ciphertext: &[u8]) -> Self {
        ChunkId(*blake3::hash(ciphertext).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChunkId(out))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

/// The key that decrypts one chunk. Only ever stored inside encrypted entry payloads.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// Everything a reader needs to fetch and decrypt one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub key: ChunkKey,
}

/// Per-volume secret from which convergent chunk keys are derived.
#[derive(Clone)]
pub struct ChunkSecret(pub [u8; 32]);

impl ChunkSecret {
    /// Encrypts `plaintext` into a chunk; returns its reference and ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> (ChunkRef, Vec<u8>) {
        let key = ChunkKey(*blake3::keyed_hash(&self.0, plaintext).as_bytes());
        let mut out = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
        out.push(CHUNK_FORMAT_V1);
        out.extend_from_slice(plaintext);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
        let tag = cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&[0u8; 12]),
                &[CHUNK_FORMAT_V1],
                &mut out[1..],
            )
            .expect("chunk fits the AEAD length limit");
        out.extend_from_slice(&tag);
        let id = ChunkId::of(&out);
        (ChunkRef { id, key }, out)
    }
}

/// Verifies that `ciphertext` is the chunk `id` (without needing a key).
pub fn verify(id: &ChunkId, ciphertext: &[u8]) -> Result<(), ChunkCodecError> {
    if ChunkId::of(ciphertext) == *id {
        Ok(())
    } else {
        Err(ChunkCodecError::HashMismatch(*id))
    }
}

/// A decrypted chunk, decrypted in place in the buffer its ciphertext was read into (the
/// plaintext is the middle of it: no copy on the read path).
pub struct PlainChunk {
    buf: Vec<u8>,
}

impl std::ops::Deref for PlainChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[1..self.buf.len() - 16]
    }
}

impl fmt::Debug for PlainChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainChunk({} bytes)", self.len())
    }
}

/// Verifies and decrypts a chunk.
pub fn open(chunk: &ChunkRef, ciphertext: &[u8]) -> Result<PlainChunk, ChunkCodecError> {
    verify(&chunk.id, ciphertext)?;
    open_verified(chunk, ciphertext.to_vec())
}

/// Decrypts a chunk whose hash the caller has just checked (the chunk store verifies every
/// read), in place.
pub fn open_verified(
    chunk: &ChunkRef,
    mut ciphertext: Vec<u8>,
) -> Result<PlainChunk, ChunkCodecError> {
    if ciphertext.len() < CHUNK_OVERHEAD || ciphertext[0] != CHUNK_FORMAT_V1 {
        return Err(ChunkCodecError::Malformed(chunk.id));
    }
    let n = ciphertext.len();
    let tag = *Tag::from_slice(&ciphertext[n - 16..]);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&chunk.key.0));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&[0u8; 12]),
            &[CHUNK_FORMAT_V1],
            &mut ciphertext[1..n - 16],
            &tag,
        )
        .map_err(|_| ChunkCodecError::Decrypt(chunk.id))?;
    Ok(PlainChunk { buf: ciphertext })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(b: u8) -> ChunkSecret {
        ChunkSecret([b; 32])
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let (r, ct) = secret(7).seal(&data);
            prop_assert_eq!(ct.len(), data.len() + CHUNK_OVERHEAD);
            prop_assert_eq!(&open(&r, &ct).unwrap()[..], &data[..]);
        }

        #[test]
        fn convergent_within_a_volume_only(data in proptest::collection::vec(any::<u8>(), 1..4096)) {
            let (a, _) = secret(1).seal(&data);
            let (b, _) = secret(1).seal(&data);
            let (c, _) = secret(2).seal(&data);
            prop_assert_eq!(a, b);
            prop_assert_ne!(a.id, c.id);
        }

        #[test]
        fn any_flipped_bit_is_caught(data in proptest::collection::vec(any::<u8>(), 0..4096), pos in any::<usize>(), bit in 0u8..8) {
            let (r, mut ct) = secret(3).seal(&data);
            let i = pos % ct.len();
            ct[i] ^= 1 << bit;
            prop_assert_eq!(open(&r, &ct).unwrap_err(), ChunkCodecError::HashMismatch(r.id));
        }
    }

    #[test]
    fn wrong_key_or_truncation_is_an_error_not_a_panic() {
        let (r, ct) = secret(4).seal(b"hello");
        let wrong = ChunkRef {
            id: r.id,
            key: ChunkKey([0; 32]),
        };
        assert_eq!(
            open(&wrong, &ct).unwrap_err(),
            ChunkCodecError::Decrypt(r.id)
        );
        let short = &ct[..3];
        let short_ref = ChunkRef {
            id: ChunkId::of(short),
            key: r.key,
        };
        assert_eq!(
            open(&short_ref, short).unwrap_err(),
            ChunkCodecError::Malformed(short_ref.id)
        );
        assert!(!String::from_utf8_lossy(&ct).contains("hello"));
    }
}
