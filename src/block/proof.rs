//! Proof of possession of a chunk: a challenger sends a fresh random nonce; the holder answers
//! [`proof`] (blake3 keyed by a key derived from the nonce, over the stored ciphertext); the
//! challenger, who has the bytes, checks it with [`verify`]. A proof cannot be made without the
//! bytes and cannot be replayed. Who challenges whom, and what a failure costs, is
//! `cluster::audit`'s business.

use rand::RngCore;

/// A challenge's nonce: 32 random bytes, never reused.
pub type Nonce = [u8; 32];
/// A holder's answer to a challenge ([`proof`]).
pub type Proof = [u8; 32];

/// Domain separation for the proof key (blake3 `derive_key` context).
const PROOF_CONTEXT: &str = "p2pfs 2026-12 chunk possession proof v1";

/// A fresh challenge nonce from the OS's random source.
pub fn fresh_nonce() -> Nonce {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// The proof of holding `ciphertext` under `nonce`: blake3 keyed by
/// `derive_key(PROOF_CONTEXT, nonce)` over the bytes.
pub fn proof(nonce: &Nonce, ciphertext: &[u8]) -> Proof {
    let key = blake3::derive_key(PROOF_CONTEXT, nonce);
    *blake3::keyed_hash(&key, ciphertext).as_bytes()
}

/// Whether `claimed` proves holding `ciphertext` under `nonce` (compared in constant time).
pub fn verify(nonce: &Nonce, ciphertext: &[u8], claimed: &Proof) -> bool {
    let key = blake3::derive_key(PROOF_CONTEXT, nonce);
    blake3::keyed_hash(&key, ciphertext) == blake3::Hash::from_bytes(*claimed)
}
