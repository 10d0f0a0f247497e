//! Proof of possession, and the background audit.
//!
//! A peer's word that it holds a chunk counts for nothing: a copy counts (for `close()`, before
//! repair drops a surplus copy, in `where` and `health`) only once the holder answered a
//! challenge over the chunk's bytes. The challenger sends a fresh random nonce; the holder
//! answers [`crate::block::proof::proof`] — blake3 keyed by a key derived from the nonce, over the stored
//! ciphertext — and the challenger, who has the bytes (its own copy, or one fetched and
//! verified against the chunk id), checks it. A proof cannot be made without the bytes and
//! cannot be replayed (every challenge has a new nonce).
//!
//! The audit ([`Audit::run`]) challenges, at a bounded rate, the other owners of random chunks
//! this node holds. A holder that fails (a wrong proof, or "not found" for a chunk it claimed)
//! is counted as an offence ([`Offence::FailedProof`]), treated as not holding by this node for
//! [`DISTRUST_FOR`] ([`FailedHolders`]: repair places the copy on the next node in rank and
//! never drops one on its word) and repair is woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use parking_lot::Mutex;
use rand::seq::SliceRandom;

use crate::block::proof::{fresh_nonce, verify};
use crate::block::{ChunkId, ChunkStore};
use crate::cluster::ChunkRouter;
use crate::net::guard::Offence;
use crate::rpc::chunk::{ChunkClient, MAX_PROVE_BATCH, MAX_PROVE_BYTES};

/// Chunks an audit round challenges (at each of their other owners that claims them).
pub const AUDIT_CHUNKS_PER_ROUND: usize = 16;

/// How long a holder that failed a proof is treated as holding nothing by this node.
pub const DISTRUST_FOR: Duration = Duration::from_secs(600);

/// What a challenge showed about one holder and one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Possession {
    /// It proved it holds the bytes.
    Proven,
    /// It said it does not hold the chunk.
    Missing,
    /// It answered a wrong proof: it does not hold the bytes it claims.
    Failed,
    /// No answer (unreachable, busy, refused): counts as not holding, with no blame.
    Unknown,
}

/// Holders that failed a proof recently, by this node's own checks: treated as not holding
/// anything until [`DISTRUST_FOR`] after their last failure. Local to this node (placement
/// itself is unchanged, so nodes still agree on owners): a failed holder only makes this node
/// keep and place more copies, never fewer.
#[derive(Default)]
pub struct FailedHolders {
    until: Mutex<HashMap<PeerId, Instant>>,
}

impl FailedHolders {
    /// `peer` failed a proof now.
    pub fn failed(&self, peer: PeerId) {
        let now = Instant::now();
        let mut until = self.until.lock();
        until.retain(|_, t| *t > now);
        until.insert(peer, now + DISTRUST_FOR);
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.until
            .lock()
            .get(peer)
            .is_some_and(|t| *t > Instant::now())
    }

    /// Peers failed and still distrusted, with the seconds left (status).
    pub fn list(&self) -> Vec<(PeerId, u64)> {
        let now = Instant::now();
        let mut v: Vec<(PeerId, u64)> = self
            .until
            .lock()
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(p, t)| (*p, t.duration_since(now).as_secs()))
            .collect();
        v.sort();
        v
    }
}

/// Records that `peer` failed a proof of `chunk` (`what` says where): an offence, and this node
/// treats it as holding nothing for a while; repair is woken to place the copies elsewhere.
pub fn holder_failed(router: &ChunkRouter, peer: PeerId, chunk: &ChunkId, what: &'static str) {
    tracing::warn!(%peer, %chunk, what, "a holder failed to prove it holds a chunk; it is treated as holding nothing");
    router
        .client
        .guard()
        .offence(peer, Offence::FailedProof, what);
    router.failed_holders().failed(peer);
    router.repair_wanted().notify_one();
}

/// Challenges `peer` to prove it holds each of `ids` (a fresh nonce per batch of at most
/// [`MAX_PROVE_BATCH`] ids and [`MAX_PROVE_BYTES`] of chunks) and checks the answers against
/// `bytes` (the chunks' ciphertext, by id; an id without bytes is not asked).
pub async fn challenge(
    client: &ChunkClient,
    peer: PeerId,
    ids: &[ChunkId],
    bytes: &HashMap<ChunkId, Vec<u8>>,
) -> HashMap<ChunkId, Possession> {
    let asked: Vec<ChunkId> = ids
        .iter()
        .filter(|id| bytes.contains_key(id))
        .copied()
        .collect();
    let mut batches: Vec<Vec<ChunkId>> = Vec::new();
    let mut size = 0;
    for id in asked {
        let n = bytes[&id].len();
        match batches.last_mut() {
            Some(b) if b.len() < MAX_PROVE_BATCH && size + n <= MAX_PROVE_BYTES => {
                b.push(id);
                size += n;
            }
            _ => {
                batches.push(vec![id]);
                size = n;
            }
        }
    }
    let mut out = HashMap::new();
    for batch in &batches {
        let nonce = fresh_nonce();
        match client.prove(peer, nonce, batch.to_vec()).await {
            Ok(answers) => {
                for (id, answer) in batch.iter().zip(answers) {
                    let verdict = match answer {
                        None => Possession::Missing,
                        Some(p) if verify(&nonce, &bytes[id], &p) => Possession::Proven,
                        Some(_) => Possession::Failed,
                    };
                    out.insert(*id, verdict);
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "proof request not answered");
                out.extend(batch.iter().map(|id| (*id, Possession::Unknown)));
            }
        }
    }
    out
}

/// Reads `ids` from the local store (those it holds intact).
pub async fn read_local(store: &Arc<ChunkStore>, ids: Vec<ChunkId>) -> HashMap<ChunkId, Vec<u8>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .filter_map(|id| store.get(&id).ok().map(|b| (id, b)))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Challenges each peer for the chunks listed for it, with bytes from the local store; a wrong
/// proof is [`holder_failed`]. Returns what each (peer, chunk) showed.
pub async fn challenge_from_store(
    router: &ChunkRouter,
    asks: HashMap<PeerId, Vec<ChunkId>>,
    what: &'static str,
) -> HashMap<(PeerId, ChunkId), Possession> {
    let mut out = HashMap::new();
    for (peer, ids) in asks {
        for part in ids.chunks(MAX_PROVE_BATCH) {
            let bytes = read_local(router.store(), part.to_vec()).await;
            let results = challenge(router.client(), peer, part, &bytes).await;
            for (id, verdict) in results {
                if verdict == Possession::Failed {
                    holder_failed(router, peer, &id, what);
                }
                out.insert((peer, id), verdict);
            }
        }
    }
    out
}

/// Claimed chunks a graceful leave challenges per new owner before trusting its other claims.
pub const HANDOFF_SAMPLE: usize = 32;

/// Checks each peer's claims by a random sample: up to [`HANDOFF_SAMPLE`] of the chunks it
/// claims, challenged with bytes from the local store, peers in parallel. A peer whose sampled
/// proofs all pass is trusted for all its claims (returned `true`); one that fails or misses
/// any, or does not answer, is not (a wrong proof is [`holder_failed`]). A holder that dropped
/// a fraction `f` of what it claims passes with probability `(1-f)^32`; the background audit
/// keeps checking. For a leave, which has a deadline; decisions that drop copies use full
/// proofs ([`challenge_from_store`]).
pub async fn sample_claims(
    router: &ChunkRouter,
    claims: HashMap<PeerId, Vec<ChunkId>>,
    what: &'static str,
) -> HashMap<PeerId, bool> {
    let checks = claims.into_iter().map(|(peer, ids)| async move {
        let sample: Vec<ChunkId> = ids
            .choose_multiple(&mut rand::thread_rng(), HANDOFF_SAMPLE)
            .copied()
            .collect();
        let bytes = read_local(router.store(), sample.clone()).await;
        let results = challenge(router.client(), peer, &sample, &bytes).await;
        let mut trusted = !results.is_empty();
        for (id, verdict) in results {
            if verdict == Possession::Failed {
                holder_failed(router, peer, &id, what);
            }
            trusted &= verdict == Possession::Proven;
        }
        (peer, trusted)
    });
    libp2p::futures::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

pub struct AuditConfig {
    /// Time between audit rounds.
    pub interval: Duration,
    /// Chunks challenged per round (each at every other owner that claims it).
    pub chunks_per_round: usize,
}

/// The background audit: see the module documentation.
pub struct Audit {
    router: Arc<ChunkRouter>,
    config: AuditConfig,
    /// Chunks still to audit in this sweep (a shuffled listing of the store, refilled when
    /// empty), so every held chunk is audited once per sweep at the bounded rate.
    queue: Mutex<Vec<ChunkId>>,
    checked: AtomicU64,
    failed: AtomicU64,
    /// Rounds completed since start, an empty store's included (tests wait on it).
    passes: AtomicU64,
}

impl Audit {
    pub fn new(router: Arc<ChunkRouter>, config: AuditConfig) -> Arc<Self> {
        Arc::new(Self {
            router,
            config,
            queue: Mutex::new(Vec::new()),
            checked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            passes: AtomicU64::new(0),
        })
    }

    /// Copies challenged since start.
    pub fn checked(&self) -> u64 {
        self.checked.load(Ordering::Relaxed)
    }

    /// Challenges failed since start.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Rounds completed since start.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Audits one round per interval, until its task is cancelled.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.interval).await;
            self.round().await;
        }
    }

    async fn next_chunks(&self) -> Vec<ChunkId> {
        if self.queue.lock().is_empty() {
            let store = self.router.store().clone();
            let mut listed: Vec<ChunkId> = tokio::task::spawn_blocking(move || store.list())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            listed.shuffle(&mut rand::thread_rng());
            *self.queue.lock() = listed;
        }
        let mut queue = self.queue.lock();
        let n = queue.len().min(self.config.chunks_per_round);
        let at = queue.len() - n;
        queue.split_off(at)
    }

    /// One round: the next chunks of the sweep, challenged at their other live owners that
    /// claim to hold them (an owner that says it lacks one is repair's business, not an
    /// offence). Returns (copies challenged, failures).
    pub async fn round(&self) -> (u64, u64) {
        let ids = self.next_chunks().await;
        if ids.is_empty() {
            self.passes.fetch_add(1, Ordering::Relaxed);
            return (0, 0);
        }
        let placement = self.router.placement();
        let r = self.router.replicas();
        let local = self.router.local();
        let mut asks: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
        for id in &ids {
            for owner in placement.owners(id, r) {
                if owner != local && self.router.is_alive(&owner) {
                    asks.entry(owner).or_default().push(*id);
                }
            }
        }
        let bytes = read_local(self.router.store(), ids).await;
        let (mut checked, mut failed) = (0, 0);
        for (peer, ids) in asks {
            let claimed: Vec<ChunkId> = match self.router.client().have(peer, ids.clone()).await {
                Ok(bits) => ids
                    .iter()
                    .zip(bits)
                    .filter(|(_, has)| *has)
                    .map(|(id, _)| *id)
                    .collect(),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "audit: peer did not answer");
                    continue;
                }
            };
            for (id, verdict) in challenge(self.router.client(), peer, &claimed, &bytes).await {
                checked += 1;
                if matches!(verdict, Possession::Failed | Possession::Missing) {
                    failed += 1;
                    holder_failed(&self.router, peer, &id, "audit");
                }
            }
        }
        self.checked.fetch_add(checked, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
        if failed > 0 {
            tracing::warn!(
                checked,
                failed,
                "audit: holders failed to prove they hold chunks"
            );
        }
        (checked, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::proof::proof;

    #[test]
    fn the_right_bytes_prove_and_wrong_bytes_or_another_nonce_do_not() {
        let bytes = b"\x01some ciphertext of a chunk".to_vec();
        let nonce = fresh_nonce();
        let p = proof(&nonce, &bytes);
        assert!(verify(&nonce, &bytes, &p));
        // Other bytes (one bit flipped, one byte short) do not.
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        assert!(!verify(&nonce, &flipped, &p));
        assert!(!verify(&nonce, &bytes[..bytes.len() - 1], &p));
        // A proof made for an earlier challenge is worth nothing for a new one.
        let later = fresh_nonce();
        assert_ne!(nonce, later, "nonces are fresh");
        assert!(!verify(&later, &bytes, &p));
        // A made-up proof does not verify.
        assert!(!verify(&nonce, &bytes, &[0u8; 32]));
    }

    #[test]
    fn the_proof_is_keyed_by_the_nonce_not_a_plain_hash() {
        let bytes = b"\x01ciphertext".to_vec();
        let nonce = [7u8; 32];
        // Not something a holder could keep in place of the bytes: neither the chunk's hash
        // nor a keyed hash under the raw nonce.
        assert_ne!(proof(&nonce, &bytes), *blake3::hash(&bytes).as_bytes());
        assert_ne!(
            proof(&nonce, &bytes),
            *blake3::keyed_hash(&nonce, &bytes).as_bytes()
        );
    }

    #[test]
    fn a_failed_holder_is_distrusted_for_a_while() {
        let failed = FailedHolders::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        failed.failed(a);
        assert!(failed.contains(&a));
        assert!(!failed.contains(&b));
        let list = failed.list();
        assert_eq!(list.len(), 1);
        assert!(list[0].1 > DISTRUST_FOR.as_secs() - 5);
    }
}
