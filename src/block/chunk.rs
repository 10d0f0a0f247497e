//! The chunk codec.
//!
//! A chunk is a piece of a file's plaintext (at most `chunk_size` bytes), encrypted with an
//! AEAD under a *convergent* key: `key = blake3_keyed(volume secret, plaintext)`. Identical
//! plaintext in one volume gives identical ciphertext (so it is stored once), while without the
//! volume secret nobody can confirm a guess of the plaintext. Because a key is used for exactly
//! one plaintext, a fixed nonce is safe.
//!
//! `ChunkId = blake3(ciphertext)`: any peer can verify what it stores and serves without keys.
//!
//! The ciphertext starts with a format byte naming the AEAD: `1` is ChaCha20-Poly1305 (what
//! age uses; fast everywhere), `2` is AES-256-GCM (three times faster where the CPU has AES and
//! carry-less multiply instructions). Writers pick AES-GCM when the CPU accelerates it; every
//! reader opens both, so nodes on different hardware share chunks freely.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::util::fixed_bytes;

/// Format byte: ChaCha20-Poly1305.
pub const FORMAT_CHACHA20_POLY1305: u8 = 1;
/// Format byte: AES-256-GCM.
pub const FORMAT_AES256_GCM: u8 = 2;
/// Format byte plus the 16-byte tag (both AEADs).
pub const CHUNK_OVERHEAD: usize = 1 + 16;

/// The format this machine writes: AES-256-GCM when the CPU accelerates it.
pub fn preferred_format() -> u8 {
    static FORMAT: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *FORMAT.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let fast_aes = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let fast_aes = std::arch::is_aarch64_feature_detected!("aes");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let fast_aes = false;
        if fast_aes {
            FORMAT_AES256_GCM
        } else {
            FORMAT_CHACHA20_POLY1305
        }
    })
}

/// A chunk's AEAD tag.
type Tag = [u8; 16];

/// The AEAD of a format; ring's implementations (the same algorithms as the RustCrypto crates
/// the format was first written with: `tests::ring_and_rustcrypto_agree`) are several times
/// faster, and the chunk AEAD is on every read and write.
fn aead_key(format: u8, key: &ChunkKey) -> Option<LessSafeKey> {
    let algorithm = match format {
        FORMAT_AES256_GCM => &AES_256_GCM,
        FORMAT_CHACHA20_POLY1305 => &CHACHA20_POLY1305,
        _ => return None,
    };
    Some(LessSafeKey::new(
        UnboundKey::new(algorithm, &key.0).expect("a 32-byte key"),
    ))
}

// The nonce is zero: every key is used for exactly one plaintext (it is derived from it).
fn encrypt(format: u8, key: &ChunkKey, data: &mut [u8]) -> Tag {
    let key = aead_key(format, key)
        .or_else(|| aead_key(FORMAT_CHACHA20_POLY1305, key))
        .expect("a known format");
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from([format]),
            data,
        )
        .expect("chunk fits the AEAD length limit");
    tag.as_ref().try_into().expect("16-byte tag")
}

fn decrypt(format: u8, key: &ChunkKey, data: &mut [u8], tag: &Tag) -> Result<(), ()> {
    let key = aead_key(format, key).ok_or(())?;
    key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from([format]),
        ring::aead::Tag::from(*tag),
        data,
        0..,
    )
    .map(|_| ())
    .map_err(|_| ())
}

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
    /// Encrypts `plaintext` into a chunk in this machine's preferred format.
    pub fn seal(&self, plaintext: &[u8]) -> (ChunkRef, Vec<u8>) {
        self.seal_as(preferred_format(), plaintext)
    }

    /// Encrypts `plaintext` into a chunk of the given format; returns its reference and
    /// ciphertext.
    pub fn seal_as(&self, format: u8, plaintext: &[u8]) -> (ChunkRef, Vec<u8>) {
        // The key commits to the format too, so the two formats of one plaintext never share
        // a key.
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&[format]);
        hasher.update(plaintext);
        let key = ChunkKey(*hasher.finalize().as_bytes());
        let mut out = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
        out.push(format);
        out.extend_from_slice(plaintext);
        let tag = encrypt(format, &key, &mut out[1..]);
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
    let format = ciphertext.first().copied();
    if ciphertext.len() < CHUNK_OVERHEAD
        || !matches!(format, Some(FORMAT_CHACHA20_POLY1305 | FORMAT_AES256_GCM))
    {
        return Err(ChunkCodecError::Malformed(chunk.id));
    }
    let n = ciphertext.len();
    let tag: Tag = ciphertext[n - 16..].try_into().expect("16 bytes");
    decrypt(ciphertext[0], &chunk.key, &mut ciphertext[1..n - 16], &tag)
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

    /// RustCrypto's implementation of a format, which chunks were first written with.
    fn rustcrypto_seal(format: u8, key: &ChunkKey, data: &mut [u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let nonce = [0u8; 12];
        let tag = match format {
            FORMAT_AES256_GCM => aes_gcm::Aes256Gcm::new((&key.0).into())
                .encrypt_in_place_detached((&nonce).into(), &[format], data),
            _ => chacha20poly1305::ChaCha20Poly1305::new((&key.0).into())
                .encrypt_in_place_detached((&nonce).into(), &[format], data),
        };
        tag.unwrap().to_vec()
    }

    proptest! {
        /// The chunk format did not change with the AEAD implementation: chunks stored before
        /// open, and other nodes' implementations agree byte for byte.
        #[test]
        fn ring_and_rustcrypto_agree(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            for format in [FORMAT_CHACHA20_POLY1305, FORMAT_AES256_GCM] {
                let (r, ct) = secret(9).seal_as(format, &data);
                let mut theirs = data.clone();
                let tag = rustcrypto_seal(format, &r.key, &mut theirs);
                let mut expected = vec![format];
                expected.extend_from_slice(&theirs);
                expected.extend_from_slice(&tag);
                prop_assert_eq!(&ct, &expected);
                prop_assert_eq!(&*open(&r, &expected).unwrap(), &data[..]);
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip_in_both_formats(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            for format in [FORMAT_CHACHA20_POLY1305, FORMAT_AES256_GCM] {
                let (r, ct) = secret(7).seal_as(format, &data);
                prop_assert_eq!(ct.len(), data.len() + CHUNK_OVERHEAD);
                prop_assert_eq!(ct[0], format);
                prop_assert_eq!(&open(&r, &ct).unwrap()[..], &data[..]);
            }
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
    fn formats_differ_and_unknown_formats_are_refused() {
        let (a, act) = secret(5).seal_as(FORMAT_CHACHA20_POLY1305, b"same");
        let (b, _) = secret(5).seal_as(FORMAT_AES256_GCM, b"same");
        assert_ne!(a.key, b.key);
        assert_ne!(a.id, b.id);
        let mut forged = act.clone();
        forged[0] = 9;
        let r = ChunkRef {
            id: ChunkId::of(&forged),
            key: a.key,
        };
        assert_eq!(
            open(&r, &forged).unwrap_err(),
            ChunkCodecError::Malformed(r.id)
        );
        // Relabelling the format does not decrypt either (the format is authenticated).
        forged[0] = FORMAT_AES256_GCM;
        let r = ChunkRef {
            id: ChunkId::of(&forged),
            key: a.key,
        };
        assert_eq!(
            open(&r, &forged).unwrap_err(),
            ChunkCodecError::Decrypt(r.id)
        );
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
