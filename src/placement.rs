//! Deterministic chunk placement: which members own a chunk.
//!
//! Every node computes a chunk's owners from its own membership view, with no index of who
//! holds what and no coordination: nodes that agree on the members agree on the owners.
//!
//! The rule is weighted rendezvous hashing, "logarithmic method": for each chunk, each member
//! gets the score `-capacity / ln(u)`, where `u` in (0, 1) is a hash of the chunk and the
//! member; the highest scores own the chunk. It was chosen because
//! - a member's chance of the first slot is exactly its share of the total capacity, so a
//!   node offering twice the space gets twice the chunks;
//! - a member's score depends only on the chunk, the member and its capacity, so adding a
//!   member moves chunks only onto it and removing one moves only the chunks it owned: repair
//!   traffic is proportional to what changed.
//!
//! The hash input and the mapping to a score are part of the protocol: nodes that computed
//! them differently would disagree on every owner.

use std::cmp::Ordering;

use libp2p::PeerId;

use crate::block::ChunkId;

/// Domain separation, so a placement hash can never collide with another use of blake3 here.
const DOMAIN: &[u8] = b"p2pfs placement v1";

/// A member that can hold chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub peer: PeerId,
    /// Free bytes the member offers; 0 means it holds nothing.
    pub capacity: u64,
}

/// A candidate with its peer id encoded once, since every score hashes those bytes.
#[derive(Clone, Debug)]
struct EncodedCandidate {
    candidate: Candidate,
    peer_bytes: Vec<u8>,
}

/// The candidates of one membership view, ready to rank chunks.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Sorted by peer bytes, one per peer.
    candidates: Vec<EncodedCandidate>,
}

impl Placement {
    /// Builds from candidates in any order. A peer listed more than once counts once, with its
    /// highest capacity, so the result never depends on the input order.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        let mut candidates: Vec<EncodedCandidate> = candidates
            .into_iter()
            .map(|candidate| EncodedCandidate {
                peer_bytes: candidate.peer.to_bytes(),
                candidate,
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.peer_bytes
                .cmp(&b.peer_bytes)
                .then(b.candidate.capacity.cmp(&a.candidate.capacity))
        });
        candidates.dedup_by(|later, first| later.peer_bytes == first.peer_bytes);
        Placement { candidates }
    }

    /// The first `r` owners of `chunk`, best first; fewer when fewer candidates have capacity.
    ///
    /// Selects the top `r` (linear) instead of ranking every candidate (n log n): repair and
    /// garbage collection ask this for every chunk a node holds.
    pub fn owners(&self, chunk: &ChunkId, r: usize) -> Vec<PeerId> {
        let mut scored: Vec<(f64, &EncodedCandidate)> = self
            .candidates
            .iter()
            .filter(|c| c.candidate.capacity > 0)
            .map(|c| (score(chunk, c), c))
            .collect();
        let r = r.min(scored.len());
        if r == 0 {
            return Vec::new();
        }
        let order = |(sa, a): &(f64, &EncodedCandidate), (sb, b): &(f64, &EncodedCandidate)| {
            rank_order(*sa, a, *sb, b)
        };
        if r < scored.len() {
            scored.select_nth_unstable_by(r - 1, order);
            scored.truncate(r);
        }
        scored.sort_by(order);
        scored.into_iter().map(|(_, c)| c.candidate.peer).collect()
    }

    /// Every candidate ranked for `chunk`, best first, so a reader tries the owners first and
    /// then the rest. Candidates without capacity come last (they may still hold copies from
    /// before their capacity dropped).
    pub fn ranked(&self, chunk: &ChunkId) -> Vec<PeerId> {
        self.ranked_candidates(chunk)
            .into_iter()
            .map(|c| c.peer)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Candidates that hold chunks (capacity above 0): at most this many copies of a chunk
    /// have an owner.
    pub fn holders(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.candidate.capacity > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    fn ranked_candidates(&self, chunk: &ChunkId) -> Vec<&Candidate> {
        let mut scored: Vec<(f64, &EncodedCandidate)> = self
            .candidates
            .iter()
            .map(|c| (score(chunk, c), c))
            .collect();
        scored.sort_by(|(score_a, a), (score_b, b)| rank_order(*score_a, a, *score_b, b));
        scored.into_iter().map(|(_, c)| &c.candidate).collect()
    }
}

/// Higher score first; equal scores by peer bytes, so the order is total.
fn rank_order(score_a: f64, a: &EncodedCandidate, score_b: f64, b: &EncodedCandidate) -> Ordering {
    score_b
        .total_cmp(&score_a)
        .then_with(|| a.peer_bytes.cmp(&b.peer_bytes))
}

/// `-capacity / ln(u)` with `u` from `blake3(DOMAIN || chunk id || peer id bytes)`: the first 8
/// bytes, little-endian, top 53 bits, centred in their interval so `u` is never 0 or 1 and the
/// score is always finite. Capacity 0 scores 0, below every candidate with capacity.
fn score(chunk: &ChunkId, c: &EncodedCandidate) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(&chunk.0);
    hasher.update(&c.peer_bytes);
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let u = ((u64::from_le_bytes(first) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -(c.candidate.capacity as f64) / u.ln()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    use super::*;

    /// A fixed peer per index, so failures reproduce.
    fn peer(index: u32) -> PeerId {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&index.to_le_bytes());
        Keypair::ed25519_from_bytes(seed)
            .expect("any 32 bytes are an ed25519 secret")
            .public()
            .to_peer_id()
    }

    fn chunk(index: u64) -> ChunkId {
        ChunkId(*blake3::hash(&index.to_le_bytes()).as_bytes())
    }

    fn candidates(capacities: &[u64]) -> Vec<Candidate> {
        capacities
            .iter()
            .enumerate()
            .map(|(i, &capacity)| Candidate {
                peer: peer(i as u32),
                capacity,
            })
            .collect()
    }

    /// How often each peer is the first owner of chunks `0..chunks`.
    fn first_owner_counts(placement: &Placement, peers: &[PeerId], chunks: u64) -> Vec<u64> {
        let mut counts = vec![0u64; peers.len()];
        for i in 0..chunks {
            let first = placement.owners(&chunk(i), 1)[0];
            counts[peers.iter().position(|p| *p == first).unwrap()] += 1;
        }
        counts
    }

    proptest! {
        #[test]
        fn owners_do_not_depend_on_input_order(
            capacities in proptest::collection::vec(0u64..1000, 0..12),
            rotation in any::<usize>(),
            r in 1usize..5,
        ) {
            let listed = candidates(&capacities);
            let mut shuffled = listed.clone();
            shuffled.rotate_left(rotation % listed.len().max(1));
            shuffled.reverse();
            // A duplicate with less capacity, listed first, changes nothing.
            if let Some(c) = listed.first() {
                shuffled.insert(0, Candidate { peer: c.peer, capacity: c.capacity / 2 });
            }
            let (a, b) = (Placement::new(listed), Placement::new(shuffled));
            prop_assert_eq!(a.len(), b.len());
            for i in 0..20 {
                prop_assert_eq!(a.owners(&chunk(i), r), b.owners(&chunk(i), r));
                prop_assert_eq!(a.ranked(&chunk(i)), b.ranked(&chunk(i)));
            }
        }

        #[test]
        fn owners_are_distinct_with_capacity_and_as_many_as_possible(
            capacities in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..1000], 0..12),
            r in 0usize..8,
        ) {
            let placement = Placement::new(candidates(&capacities));
            let with_capacity: HashSet<PeerId> = candidates(&capacities)
                .into_iter()
                .filter(|c| c.capacity > 0)
                .map(|c| c.peer)
                .collect();
            for i in 0..20 {
                let owners = placement.owners(&chunk(i), r);
                prop_assert_eq!(owners.len(), r.min(with_capacity.len()));
                prop_assert_eq!(owners.iter().collect::<HashSet<_>>().len(), owners.len());
                prop_assert!(owners.iter().all(|p| with_capacity.contains(p)));
                // The owners head the full ranking, which lists every candidate once.
                let ranked = placement.ranked(&chunk(i));
                prop_assert_eq!(ranked.len(), capacities.len());
                prop_assert_eq!(&ranked[..owners.len()], &owners[..]);
            }
        }

        #[test]
        fn adding_a_node_moves_chunks_only_onto_it(
            capacities in proptest::collection::vec(0u64..1000, 0..10),
            new_capacity in 0u64..1000,
            r in 1usize..5,
        ) {
            let before = Placement::new(candidates(&capacities));
            let mut grown = capacities.clone();
            grown.push(new_capacity);
            let after = Placement::new(candidates(&grown));
            let new_peer = peer(capacities.len() as u32);
            for i in 0..50 {
                let old: HashSet<PeerId> = before.owners(&chunk(i), r).into_iter().collect();
                for owner in after.owners(&chunk(i), r) {
                    prop_assert!(owner == new_peer || old.contains(&owner));
                }
            }
        }

        #[test]
        fn removing_a_node_changes_only_its_chunks(
            capacities in proptest::collection::vec(0u64..1000, 1..10),
            removed in any::<usize>(),
            r in 1usize..5,
        ) {
            let removed = removed % capacities.len();
            let all = candidates(&capacities);
            let gone = all[removed].peer;
            let before = Placement::new(all.clone());
            let after = Placement::new(all.into_iter().filter(|c| c.peer != gone));
            for i in 0..50 {
                let old = before.owners(&chunk(i), r);
                let new = after.owners(&chunk(i), r);
                if old.contains(&gone) {
                    // The surviving owners stay, in order; only the freed slot is refilled.
                    let survivors: Vec<PeerId> = old.into_iter().filter(|p| *p != gone).collect();
                    prop_assert_eq!(&new[..survivors.len()], &survivors[..]);
                } else {
                    prop_assert_eq!(new, old);
                }
            }
        }
    }

    #[test]
    fn equal_capacities_share_first_slots_evenly() {
        let placement = Placement::new(candidates(&[1 << 30; 10]));
        let peers: Vec<PeerId> = (0..10).map(peer).collect();
        for (i, count) in first_owner_counts(&placement, &peers, 20_000)
            .into_iter()
            .enumerate()
        {
            // 2,000 expected, ±15% (the binomial's standard deviation is ~42).
            assert!((1_700..=2_300).contains(&count), "peer {i}: {count}");
        }
    }

    #[test]
    fn double_capacity_gets_double_share() {
        let mut capacities = [1u64 << 30; 10];
        capacities[0] = 2 << 30;
        let placement = Placement::new(candidates(&capacities));
        let peers: Vec<PeerId> = (0..10).map(peer).collect();
        let counts = first_owner_counts(&placement, &peers, 20_000);
        let others = counts[1..].iter().sum::<u64>() as f64 / 9.0;
        let ratio = counts[0] as f64 / others;
        // Expected 2; the ratio's standard deviation here is ~0.04.
        assert!(
            (1.8..=2.2).contains(&ratio),
            "ratio {ratio}, counts {counts:?}"
        );
    }

    #[test]
    fn zero_capacity_never_owns_but_is_ranked_last() {
        let placement = Placement::new(candidates(&[0, 5, 0, 7]));
        let empty = [peer(0), peer(2)];
        for i in 0..1_000 {
            let owners = placement.owners(&chunk(i), 4);
            assert_eq!(owners.len(), 2);
            assert!(owners.iter().all(|p| !empty.contains(p)));
            let ranked = placement.ranked(&chunk(i));
            assert!(ranked[2..].iter().all(|p| empty.contains(p)));
        }
        assert!(
            Placement::new(candidates(&[0, 0]))
                .owners(&chunk(0), 3)
                .is_empty()
        );
        assert!(Placement::new([]).is_empty());
    }

    /// The rule is part of the protocol: this pins it, so an accidental change (hash input,
    /// byte order, score formula) fails here instead of silently splitting a mixed-version
    /// network's view of who owns what.
    #[test]
    fn rule_is_frozen() {
        let placement = Placement::new(candidates(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let firsts: Vec<usize> = (0..12)
            .map(|i| {
                let first = placement.owners(&chunk(i), 1)[0];
                (0..8).position(|p| peer(p) == first).unwrap()
            })
            .collect();
        assert_eq!(firsts, [7, 4, 6, 3, 7, 5, 0, 6, 6, 6, 7, 5]);
    }
}
