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
//! them differently would disagree on every owner. This is rule 2 ([`RULE`]): the pair hash is
//! a 64-bit finalizer of two seeds, each a `blake3` computed once (per member per membership
//! view, per chunk per placement), so scoring a member costs ~17 ns instead of rule 1's blake3
//! of the chunk id and the peer id per pair (~230 ns). That is what makes the full view
//! affordable up to [`MAX_CANDIDATES`] members (ARCHITECTURE "Placement at scale").

use std::cmp::Ordering;

use libp2p::PeerId;

use crate::block::ChunkId;

/// The placement rule's number, announced by every node: nodes on different rules disagree on
/// owners (1 hashed every (chunk, member) pair with blake3; 2 is [`rendezvous_score`]).
pub const RULE: u8 = 2;

/// A member's placement weight is at most this many times the median capacity of the view
/// ([`clip_capacities`]). Capacity is a member's own claim: unclipped, one identity claiming a
/// thousand times everyone else's would be an owner of nearly every chunk. 4 leaves honest
/// members of mixed sizes (a 4 TB disk next to 1 TB ones) their full share, while a liar gets
/// at most 4 median members' worth: among n honest members of equal size it is the first owner
/// of at most 4/(n+4) of the chunks.
pub const CAPACITY_CLIP: u64 = 4;

/// Clips every capacity in a view to [`CAPACITY_CLIP`] times the median of the nonzero ones
/// (the lower median: with an even count, the smaller middle value, so two members cannot
/// lift it). A function of the view alone, whatever its order, so nodes with the same view
/// compute the same weights. A view with no member over the bound is left unchanged (and so
/// are its owners: rule 2 as before).
pub fn clip_capacities(view: &mut [(PeerId, u64)]) {
    let mut nonzero: Vec<u64> = view.iter().map(|(_, c)| *c).filter(|c| *c > 0).collect();
    if nonzero.is_empty() {
        return;
    }
    nonzero.sort_unstable();
    let bound = nonzero[(nonzero.len() - 1) / 2].saturating_mul(CAPACITY_CLIP);
    for (_, capacity) in view.iter_mut() {
        *capacity = (*capacity).min(bound);
    }
}

/// Domain separation, so a placement seed can never collide with another use of blake3 here.
const MEMBER_DOMAIN: &[u8] = b"p2pfs placement v2 member";
const CHUNK_DOMAIN: &[u8] = b"p2pfs placement v2 chunk";

/// A member that can hold chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub peer: PeerId,
    /// Free bytes the member offers; 0 means it holds nothing.
    pub capacity: u64,
}

/// A candidate with its peer id encoded once (ties between equal scores are broken by those
/// bytes) and its placement seed ([`member_seed`]), hashed once per membership view.
#[derive(Clone, Debug)]
struct EncodedCandidate {
    candidate: Candidate,
    peer_bytes: Vec<u8>,
    seed: u64,
}

/// Members scored per chunk, at most. Up to this many members every member is a candidate for
/// every chunk (the full view: exact balance, optimal movement). Past it, a chunk's candidates
/// are the `MAX_CANDIDATES` members whose DHT key is XOR-closest to the chunk's key (what a
/// Kademlia closest-peers lookup of that size returns), so the work per chunk stops growing
/// with the network. With fewer members the closest `MAX_CANDIDATES` are all of them, so
/// crossing the threshold moves nothing by itself: the rule changes smoothly, and only for
/// the members that fall out of a chunk's neighbourhood.
///
/// The bound is where the full view costs what one chunk's placement may cost: ~17 ns per
/// member, so ~0.3 ms per chunk at 16,384 members, what rule 1 spent at 1,024. The simulation
/// (the `p2pfs-sim` crate in `sim/`) showed the XOR-closest rule leaves a systematic excess
/// spread of load (CV 0.026 at 10,000 members, 1.12 max/mean with 10M chunks), so the full view
/// is kept as far as the cost allows. Figures: ARCHITECTURE "Placement at scale".
pub const MAX_CANDIDATES: usize = 16_384;

/// The candidates of one membership view, ready to rank chunks.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Sorted by peer bytes, one per peer.
    candidates: Vec<EncodedCandidate>,
    /// Members scored per chunk at most ([`MAX_CANDIDATES`]).
    max_candidates: usize,
    /// The candidates' DHT keys ([`member_key`]), in the same order; only kept when there are
    /// more candidates than `max_candidates`.
    keys: Vec<u64>,
}

/// A member's key in the DHT's id space: the first 8 bytes, big-endian, of `blake3` of its
/// peer id bytes (the simulation's key, `sim/`).
pub fn member_key(peer_bytes: &[u8]) -> u64 {
    let hash = blake3::hash(peer_bytes);
    u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A member's placement seed: the first 8 bytes, little-endian, of
/// `blake3(MEMBER_DOMAIN || peer id bytes)`. Independent of its DHT key ([`member_key`]), so
/// being XOR-close to a chunk says nothing about the score.
pub fn member_seed(peer_bytes: &[u8]) -> u64 {
    seed(MEMBER_DOMAIN, peer_bytes)
}

/// A chunk's placement seed: the first 8 bytes, little-endian, of
/// `blake3(CHUNK_DOMAIN || chunk id)`. Hashed rather than taken from the id, so the score is
/// independent of the chunk's DHT key (the id's first bytes) and of how ids are made.
pub fn chunk_seed(chunk: &ChunkId) -> u64 {
    seed(CHUNK_DOMAIN, &chunk.0)
}

/// The first 8 bytes, little-endian, of `blake3(domain || bytes)`.
fn seed(domain: &[u8], bytes: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    hasher.update(bytes);
    u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

impl Placement {
    /// Builds from candidates in any order. A peer listed more than once counts once, with its
    /// highest capacity, so the result never depends on the input order.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        Self::with_max_candidates(candidates, MAX_CANDIDATES)
    }

    /// [`Placement::new`] with another bound on the members scored per chunk (tests, the
    /// simulation).
    pub fn with_max_candidates(
        candidates: impl IntoIterator<Item = Candidate>,
        max_candidates: usize,
    ) -> Self {
        let mut candidates: Vec<EncodedCandidate> = candidates
            .into_iter()
            .map(|candidate| {
                let peer_bytes = candidate.peer.to_bytes();
                EncodedCandidate {
                    seed: member_seed(&peer_bytes),
                    peer_bytes,
                    candidate,
                }
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.peer_bytes
                .cmp(&b.peer_bytes)
                .then(b.candidate.capacity.cmp(&a.candidate.capacity))
        });
        candidates.dedup_by(|later, first| later.peer_bytes == first.peer_bytes);
        let max_candidates = max_candidates.max(1);
        let keys = if candidates.len() > max_candidates {
            candidates
                .iter()
                .map(|c| member_key(&c.peer_bytes))
                .collect()
        } else {
            Vec::new()
        };
        Placement {
            candidates,
            max_candidates,
            keys,
        }
    }

    /// The candidates for `chunk`: every member, or past [`MAX_CANDIDATES`] the XOR-closest
    /// ones to the chunk's key.
    fn candidates_for(&self, chunk: &ChunkId) -> Vec<&EncodedCandidate> {
        if self.keys.is_empty() {
            self.candidates.iter().collect()
        } else {
            xor_closest_unordered(chunk_key(chunk), &self.keys, self.max_candidates)
                .into_iter()
                .map(|i| &self.candidates[i])
                .collect()
        }
    }

    /// The first `r` owners of `chunk`, best first; fewer when fewer candidates have capacity.
    ///
    /// Keeps a running top `r` instead of ranking every candidate (n log n) or collecting
    /// them: repair and garbage collection ask this for every chunk a node holds.
    pub fn owners(&self, chunk: &ChunkId, r: usize) -> Vec<PeerId> {
        if r == 0 {
            return Vec::new();
        }
        let seed = chunk_seed(chunk);
        let best = if self.keys.is_empty() {
            top(seed, self.candidates.iter(), r)
        } else {
            top(seed, self.candidates_for(chunk).into_iter(), r)
        };
        best.into_iter().map(|c| c.candidate.peer).collect()
    }

    /// Every candidate ranked for `chunk`, best first, so a reader tries the owners first and
    /// then the rest. Candidates without capacity come last (they may still hold copies from
    /// before their capacity dropped). Past [`MAX_CANDIDATES`] members, the chunk's candidates
    /// come ranked, then the other members in peer id order (unscored).
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
        let seed = chunk_seed(chunk);
        let mut scored: Vec<(f64, &EncodedCandidate)> = self
            .candidates_for(chunk)
            .into_iter()
            .map(|c| (score(seed, c), c))
            .collect();
        scored.sort_by(|(score_a, a), (score_b, b)| rank_order(*score_a, a, *score_b, b));
        let mut ranked: Vec<&Candidate> = scored.into_iter().map(|(_, c)| &c.candidate).collect();
        if ranked.len() < self.candidates.len() {
            let scored: std::collections::HashSet<&PeerId> =
                ranked.iter().map(|c| &c.peer).collect();
            let rest: Vec<&Candidate> = self
                .candidates
                .iter()
                .map(|c| &c.candidate)
                .filter(|c| !scored.contains(&c.peer))
                .collect();
            ranked.extend(rest);
        }
        ranked
    }
}

/// The `r` best of `candidates` with capacity for the chunk whose seed is `chunk_seed`, best
/// first: a running top `r`, as `r` is small (the replication factor).
fn top<'a>(
    chunk_seed: u64,
    candidates: impl Iterator<Item = &'a EncodedCandidate>,
    r: usize,
) -> Vec<&'a EncodedCandidate> {
    let mut best: Vec<(f64, &EncodedCandidate)> = Vec::with_capacity(r + 1);
    for c in candidates.filter(|c| c.candidate.capacity > 0) {
        let s = score(chunk_seed, c);
        if best.len() == r {
            let (last_score, last) = best[r - 1];
            if rank_order(s, c, last_score, last) != Ordering::Less {
                continue;
            }
            best.pop();
        }
        let at = best
            .iter()
            .position(|&(bs, b)| rank_order(s, c, bs, b) == Ordering::Less)
            .unwrap_or(best.len());
        best.insert(at, (s, c));
    }
    best.into_iter().map(|(_, c)| c).collect()
}

/// Higher score first; equal scores by peer bytes, so the order is total.
fn rank_order(score_a: f64, a: &EncodedCandidate, score_b: f64, b: &EncodedCandidate) -> Ordering {
    score_b
        .total_cmp(&score_a)
        .then_with(|| a.peer_bytes.cmp(&b.peer_bytes))
}

/// `-capacity / ln(u)`: [`rendezvous_score`] with the capacity as the weight.
fn score(chunk_seed: u64, c: &EncodedCandidate) -> f64 {
    rendezvous_score(chunk_seed, c.seed, c.candidate.capacity as f64)
}

/// Murmur3's 64-bit finalizer: a bijection of `u64` in which every input bit flips every
/// output bit with probability ~1/2.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The rendezvous score of a member (its [`member_seed`]) for a chunk (its [`chunk_seed`]),
/// with any non-negative `weight`: `-weight / ln(u)`, `u` from `fmix64(chunk_seed ^
/// member_seed)`: its top 53 bits, centred in their interval so `u` is never 0 or 1 and the
/// score is always finite. Weight 0 scores 0, below every candidate with weight.
/// [`Placement`] scores with the capacity as the weight (converted to `f64`), so equal weights
/// give equal scores under both.
///
/// For one chunk, the members' inputs are independent uniform 64-bit values (the members'
/// seeds are), so their `u` are too, whatever the mixer; across chunks the mixer's avalanche
/// decorrelates the inputs `x` and `x ^ (chunk_seed_1 ^ chunk_seed_2)`. The simulation
/// (`sim/`) checks the result: load at the sampling-noise floor and exactly optimal movement.
pub fn rendezvous_score(chunk_seed: u64, member_seed: u64, weight: f64) -> f64 {
    logarithmic_score(fmix64(chunk_seed ^ member_seed), weight)
}

/// `-weight / ln(u)`, `u` the top 53 bits of `hash` centred in their interval, so `u` is never 0
/// or 1 and the score always finite: the step every placement rule shares (rule 1 fed it the
/// first 8 bytes, little-endian, of a blake3 per pair; the simulation keeps that as a
/// baseline).
pub fn logarithmic_score(hash: u64, weight: f64) -> f64 {
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// A chunk's key in the DHT's id space: the first 8 bytes of its id, big-endian (what a
/// Kademlia closest-peers lookup of the chunk targets).
pub fn chunk_key(chunk: &ChunkId) -> u64 {
    u64::from_be_bytes(chunk.0[..8].try_into().expect("8 bytes"))
}

/// The indices of the `k` keys XOR-closest to `target` (ties, only between equal keys, by
/// index), in no particular order, in O(n): a chunk's candidates are ranked by score, so
/// sorting them by distance (O(k log k), ~1 ms at k = 16,384) is waste. Keys are the first 64
/// bits of the DHT key, big-endian (XOR order on 64-bit prefixes is the DHT's order except
/// between keys sharing 64 bits).
fn xor_closest_unordered(target: u64, keys: &[u64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    if k < order.len() {
        if k == 0 {
            return Vec::new();
        }
        order.select_nth_unstable_by_key(k - 1, |&i| (keys[i] ^ target, i));
        order.truncate(k);
    }
    order
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
    fn capacity_claims_are_clipped_to_a_multiple_of_the_median() {
        let ids: Vec<PeerId> = (0..5).map(peer).collect();
        let mut view: Vec<(PeerId, u64)> = vec![
            (ids[0], 100),
            (ids[1], 120),
            (ids[2], 0),
            (ids[3], 100_000),
            (ids[4], 90),
        ];
        clip_capacities(&mut view);
        // Nonzero: 90, 100, 120, 100000; the lower median is 100, the bound 400.
        let got: Vec<u64> = view.iter().map(|(_, c)| *c).collect();
        assert_eq!(got, [100, 120, 0, 400, 90]);
        // Order does not matter.
        let mut shuffled = vec![
            (ids[3], 100_000),
            (ids[4], 90),
            (ids[0], 100),
            (ids[2], 0),
            (ids[1], 120),
        ];
        clip_capacities(&mut shuffled);
        shuffled.sort();
        view.sort();
        assert_eq!(shuffled, view);
        // Two liars out of four cannot lift the median.
        let mut two = vec![
            (ids[0], 10),
            (ids[1], 10),
            (ids[2], 1 << 50),
            (ids[3], 1 << 50),
        ];
        clip_capacities(&mut two);
        assert_eq!(two[2].1, 40);
        // Nothing over the bound: unchanged, as is an empty or all-zero view.
        let mut even = vec![(ids[0], 10), (ids[1], 40), (ids[2], 5)];
        let before = even.clone();
        clip_capacities(&mut even);
        assert_eq!(even, before);
        let mut zeros = vec![(ids[0], 0)];
        clip_capacities(&mut zeros);
        assert_eq!(zeros, vec![(ids[0], 0)]);
        clip_capacities(&mut []);
    }

    #[test]
    fn a_clipped_liar_owns_a_bounded_share() {
        // 6 honest members and one claiming 1000x: its share of first owners is ~4/10 clipped
        // (~0.994 unclipped).
        let mut view: Vec<(PeerId, u64)> = (0..6).map(|i| (peer(i), 1000)).collect();
        view.push((peer(6), 1_000_000));
        clip_capacities(&mut view);
        let placement = Placement::new(
            view.iter()
                .map(|&(peer, capacity)| Candidate { peer, capacity }),
        );
        let n = 5000;
        let firsts = (0..n)
            .filter(|i| placement.owners(&chunk(*i), 1)[0] == peer(6))
            .count();
        let share = firsts as f64 / n as f64;
        assert!((0.36..0.44).contains(&share), "{share}");
    }

    #[test]
    fn rule_is_frozen() {
        let placement = Placement::new(candidates(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let firsts: Vec<usize> = (0..12)
            .map(|i| {
                let first = placement.owners(&chunk(i), 1)[0];
                (0..8).position(|p| peer(p) == first).unwrap()
            })
            .collect();
        assert_eq!(firsts, [5, 3, 3, 7, 4, 3, 6, 4, 7, 6, 4, 7]);
        // The pieces, so a reimplementation can check itself against them.
        assert_eq!(RULE, 2);
        assert_eq!(member_seed(&peer(0).to_bytes()), 0xd942_74be_df9a_89c4);
        assert_eq!(chunk_seed(&chunk(0)), 0xf0e9_5400_79b3_8f1b);
        // Checked against an independent implementation of fmix64 and the score (Python).
        assert_eq!(
            rendezvous_score(1, 2, 1.0).to_bits(),
            4_599_447_781_746_128_222
        );
        assert_eq!(
            rendezvous_score(0xf0e9_5400_79b3_8f1b, 0xd942_74be_df9a_89c4, 3.0),
            1.256_171_415_144_452_3
        );
    }

    proptest! {
        /// Past the bound, a chunk's owners are the rendezvous winners among exactly its
        /// XOR-closest members (a Kademlia closest-peers lookup): the full rule's owners over
        /// just those members. `ranked` starts with them; at or under the bound, the rule is
        /// the full view's.
        #[test]
        fn past_max_candidates_owners_come_from_the_xor_closest(
            capacities in proptest::collection::vec(0u64..1000, 1..40),
            max in 1usize..12,
            r in 1usize..5,
        ) {
            let members = candidates(&capacities);
            let keys: Vec<u64> = members.iter().map(|c| member_key(&c.peer.to_bytes())).collect();
            let bounded = Placement::with_max_candidates(members.clone(), max);
            let full = Placement::new(members.clone());
            for i in 0..20 {
                let id = chunk(i);
                if capacities.len() <= max {
                    prop_assert_eq!(bounded.owners(&id, r), full.owners(&id, r));
                    prop_assert_eq!(bounded.ranked(&id), full.ranked(&id));
                    continue;
                }
                // The `max` nearest by brute force: every member sorted by XOR distance.
                let mut order: Vec<usize> = (0..keys.len()).collect();
                order.sort_by_key(|&j| (keys[j] ^ chunk_key(&id), j));
                let near: Vec<Candidate> =
                    order[..max].iter().map(|&j| members[j].clone()).collect();
                let owners = bounded.owners(&id, r);
                prop_assert_eq!(&owners, &Placement::new(near.clone()).owners(&id, r));
                let ranked = bounded.ranked(&id);
                prop_assert_eq!(ranked.len(), capacities.len());
                prop_assert_eq!(&ranked[..owners.len()], &owners[..]);
                let near_peers: HashSet<PeerId> = near.iter().map(|c| c.peer).collect();
                prop_assert!(ranked[..max].iter().all(|p| near_peers.contains(p)));
            }
        }
    }

    #[test]
    fn chunk_key_is_the_ids_first_bytes() {
        let id = chunk(0);
        assert_eq!(
            chunk_key(&id),
            u64::from_be_bytes(id.0[..8].try_into().unwrap())
        );
    }
}
