//! Closest-peers candidates (issue 8): at scale, a node need not score every member of its view
//! for every chunk. The candidates are then the `k` members whose DHT key is XOR-closest to the
//! chunk's key (what a Kademlia closest-peers lookup returns), ranked by the same rendezvous.
//!
//! Plain capacity weights balance badly there: a member is a candidate for the keys of its XOR
//! "region" (the keys it is among the k closest to), and regions differ in size with the local
//! density of keys (coefficient of variation about 1/sqrt(k)). The correction: weight each
//! candidate by `capacity / region`, the region computed exactly from the member's own
//! Kademlia bucket sizes (public: any node can compute it from the membership, and the member
//! can announce it). The simulation ([`crate::Strategy`]) measures these rules; figures in
//! ARCHITECTURE "Placement at scale".
//!
//! Keys here are the first 64 bits of the DHT key, big-endian (XOR order on 64-bit prefixes is
//! the DHT's order except between keys sharing 64 bits).
//!
//! Research only: no node runs these. Past [`p2pfs::cluster::placement::MAX_CANDIDATES`]
//! members a node takes a chunk's XOR-closest members as its candidates with plain capacity
//! weights; these are the corrected rules the simulation measured against that.

use libp2p::PeerId;
use p2pfs::block::ChunkId;
use p2pfs::cluster::placement::{Candidate, chunk_key, chunk_seed, member_seed, rendezvous_score};

/// The indices of the `k` keys XOR-closest to `target`, closest first (ties, only between equal
/// keys, by index): the candidate set of a chunk whose key is `target`, among members whose
/// keys are `keys`. O(n + k log k).
pub fn xor_closest(target: u64, keys: &[u64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by_key(k - 1, |&i| (keys[i] ^ target, i));
        order.truncate(k);
    }
    order.sort_unstable_by_key(|&i| (keys[i] ^ target, i));
    order
}

/// Kademlia bucket sizes of a member with key `key`: entry `b` counts the `others` whose key
/// first differs from `key` at bit `b` (63 = most significant), i.e. the members of the
/// subtree next to the member's at that depth. Keys equal to `key` are not counted.
pub fn bucket_sizes(key: u64, others: impl IntoIterator<Item = u64>) -> [u32; 64] {
    let mut sizes = [0u32; 64];
    for other in others {
        let distance = key ^ other;
        if distance != 0 {
            sizes[63 - distance.leading_zeros() as usize] += 1;
        }
    }
    sizes
}

/// The fraction of the 64-bit key space for which a member is among the `k` XOR-closest
/// members (its "region"), from its bucket sizes ([`bucket_sizes`]). Exact: the regions of all
/// members sum to `min(k, members)`, and it is 1 when `k` is at least the number of members.
/// Bucket sizes matter only up to `k`, so a routing table whose buckets hold up to `k` peers
/// has all it needs. 0 when `k` is 0.
///
/// For a target whose key first differs from the member's at bit `b`, the members closer to it
/// are the whole bucket `b` plus those of the member's own subtree below `b` that are closer
/// to the target with bit `b` flipped, which lies in that subtree. So with `g(b, m)` the
/// fraction of the member's depth-`b` subtree's keys with fewer than `m` closer members,
/// `g(b, m) = (g(b-1, m) + g(b-1, m - sizes[b-1])) / 2`, `g(0, m) = 1` for `m >= 1` and
/// `g(_, m) = 0` for `m <= 0`, and the region is `g(64, k)`.
pub fn xor_region(sizes: &[u32; 64], k: usize) -> f64 {
    // g[m] for the current depth, m = 0..=k.
    let mut g: Vec<f64> = (0..=k).map(|m| if m >= 1 { 1.0 } else { 0.0 }).collect();
    let mut next = vec![0.0; k + 1];
    for &size in sizes.iter() {
        let size = size as usize;
        for m in 0..=k {
            let far = if m > size { g[m - size] } else { 0.0 };
            next[m] = (g[m] + far) / 2.0;
        }
        std::mem::swap(&mut g, &mut next);
    }
    g[k]
}

/// The rendezvous weight of a closest-peers candidate: `capacity / region` (see
/// [`xor_region`]), so that a member's expected share of copies follows its capacity whatever
/// the size of its region. Equal to the capacity when the region is the whole space; 0 for no
/// capacity or an empty region.
pub fn region_weight(capacity: u64, region: f64) -> f64 {
    if capacity == 0 || region <= 0.0 {
        0.0
    } else {
        capacity as f64 / region
    }
}

/// A candidate with an explicit rendezvous weight (e.g. [`region_weight`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedCandidate {
    pub peer: PeerId,
    pub weight: f64,
}

/// The first `r` owners of `chunk` among `candidates`, best first, by [`rendezvous_score`]
/// with their weights; candidates with weight 0 (or not finite and positive) never own.
/// A pure function of the chunk and the candidate set: the order of `candidates` does not
/// matter (a peer listed twice counts once, with its highest weight). With the capacities as
/// weights it is [`Placement::owners`](p2pfs::cluster::placement::Placement::owners).
pub fn weighted_owners(chunk: &ChunkId, candidates: &[WeightedCandidate], r: usize) -> Vec<PeerId> {
    let seed = chunk_seed(chunk);
    let mut scored: Vec<(f64, Vec<u8>, PeerId)> = candidates
        .iter()
        .filter(|c| c.weight.is_finite() && c.weight > 0.0)
        .map(|c| {
            let bytes = c.peer.to_bytes();
            let score = rendezvous_score(seed, member_seed(&bytes), c.weight);
            (score, bytes, c.peer)
        })
        .collect();
    // Higher score first, then peer bytes; a duplicate peer keeps its best (first) entry.
    scored.sort_by(|(sa, a, _), (sb, b, _)| sb.total_cmp(sa).then_with(|| a.cmp(b)));
    let mut owners: Vec<PeerId> = Vec::with_capacity(r);
    for (_, _, peer) in scored {
        if owners.len() == r {
            break;
        }
        if !owners.contains(&peer) {
            owners.push(peer);
        }
    }
    owners
}

/// The key of a chunk's `l`-th closest-peers lookup: for `l = 0` the chunk's own key
/// ([`chunk_key`], what a node looks up), for `l >= 1` the first 8 bytes of
/// `blake3(chunk id || l as u64 little-endian)`, big-endian: independent of each other.
pub fn lookup_key(chunk: &ChunkId, l: usize) -> u64 {
    if l == 0 {
        return chunk_key(chunk);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&chunk.0);
    hasher.update(&(l as u64).to_le_bytes());
    u64::from_be_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// The region-corrected closest-peers candidates of a chunk, from a membership view
/// (`members` are `(DHT key, candidate)`): the union of the `k` members XOR-closest to each of
/// `targets` (the chunk's [`lookup_key`]s `0..lookups`), each weighted by [`region_weight`]
/// with its [`xor_region`] for `k` in the view. Feed them to [`weighted_owners`].
///
/// One lookup (`targets` = the chunk's key) only corrects the spread of load within a
/// neighbourhood: a chunk's k candidates share its density, so load still follows
/// 1/density at the neighbourhood's scale. Several independent lookups let the weights move
/// load between neighbourhoods; the simulation measured 4-8 lookups of 8 to reach the sampling-noise
/// floor of balance (capacities spread 4x, R = 3).
///
/// With `k` at least the number of members every region is the whole space and every weight
/// the capacity, so the owners are [`Placement::owners`](p2pfs::cluster::placement::Placement::owners)'s. A node that does not hold the whole
/// view gets the same candidates from closest-peers lookups, and their regions from what they
/// announce (each computes its own from its bucket sizes).
pub fn closest_candidates(
    targets: &[u64],
    members: &[(u64, Candidate)],
    k: usize,
) -> Vec<WeightedCandidate> {
    let keys: Vec<u64> = members.iter().map(|(key, _)| *key).collect();
    let mut chosen: Vec<usize> = targets
        .iter()
        .flat_map(|&target| xor_closest(target, &keys, k))
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    chosen
        .into_iter()
        .map(|i| {
            let (key, candidate) = &members[i];
            let sizes = bucket_sizes(*key, keys.iter().copied());
            WeightedCandidate {
                peer: candidate.peer,
                weight: region_weight(candidate.capacity, xor_region(&sizes, k)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    use p2pfs::cluster::placement::Placement;

    use super::*;

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

    /// The region by brute force, for keys that differ only in their top `bits` bits: the
    /// ranking from a target then depends only on its top `bits` bits too.
    fn brute_region(keys: &[u64], i: usize, k: usize, bits: u32) -> f64 {
        let mut inside = 0u64;
        for t in 0..1u64 << bits {
            let target = t << (64 - bits);
            let closer = keys
                .iter()
                .enumerate()
                .filter(|&(j, key)| j != i && key ^ target < keys[i] ^ target)
                .count();
            if closer < k {
                inside += 1;
            }
        }
        inside as f64 / (1u64 << bits) as f64
    }

    fn keyed(capacities: &[u64]) -> Vec<(u64, Candidate)> {
        candidates(capacities)
            .into_iter()
            .map(|c| {
                (
                    u64::from_be_bytes(
                        blake3::hash(&c.peer.to_bytes()).as_bytes()[..8]
                            .try_into()
                            .unwrap(),
                    ),
                    c,
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn xor_region_is_the_brute_force_region(
            prefixes in proptest::collection::btree_set(0u64..1024, 1..40),
            k in 0usize..12,
        ) {
            let keys: Vec<u64> = prefixes.into_iter().map(|p| p << 54).collect();
            let mut sum = 0.0;
            for (i, &key) in keys.iter().enumerate() {
                let sizes = bucket_sizes(key, keys.iter().copied());
                let region = xor_region(&sizes, k);
                prop_assert!((region - brute_region(&keys, i, k, 10)).abs() < 1e-12);
                // Bucket sizes beyond k change nothing.
                let capped = sizes.map(|s| s.min(k as u32));
                prop_assert_eq!(xor_region(&capped, k), region);
                sum += region;
            }
            prop_assert!((sum - k.min(keys.len()) as f64).abs() < 1e-9);
        }

        #[test]
        fn xor_closest_is_exactly_the_k_nearest(
            keys in proptest::collection::vec(any::<u64>(), 0..60),
            target in any::<u64>(),
            k in 0usize..70,
        ) {
            let got = xor_closest(target, &keys, k);
            let mut all: Vec<usize> = (0..keys.len()).collect();
            all.sort_by_key(|&i| (keys[i] ^ target, i));
            all.truncate(k);
            prop_assert_eq!(got, all);
        }

        #[test]
        fn closest_candidates_with_every_member_are_the_full_rule(
            capacities in proptest::collection::vec(0u64..1000, 0..12),
            extra in 0usize..5,
            lookups in 1usize..4,
            r in 1usize..5,
        ) {
            let members = keyed(&capacities);
            let placement = Placement::new(candidates(&capacities));
            for i in 0..20 {
                let id = chunk(i);
                let targets: Vec<u64> = (0..lookups).map(|l| lookup_key(&id, l)).collect();
                let chosen = closest_candidates(&targets, &members, capacities.len() + extra);
                prop_assert_eq!(chosen.len(), capacities.len());
                for (c, (_, m)) in chosen.iter().zip(&members) {
                    prop_assert_eq!(c.weight, m.capacity as f64);
                }
                prop_assert_eq!(weighted_owners(&id, &chosen, r), placement.owners(&id, r));
            }
        }

        #[test]
        fn closest_candidates_are_the_union_of_the_k_nearest(
            capacities in proptest::collection::vec(1u64..1000, 1..40),
            k in 1usize..10,
            lookups in 1usize..4,
        ) {
            let members = keyed(&capacities);
            let keys: Vec<u64> = members.iter().map(|(key, _)| *key).collect();
            for i in 0..10 {
                let id = chunk(i);
                let targets: Vec<u64> = (0..lookups).map(|l| lookup_key(&id, l)).collect();
                let got: HashSet<PeerId> = closest_candidates(&targets, &members, k)
                    .into_iter()
                    .map(|c| c.peer)
                    .collect();
                let mut want = HashSet::new();
                for &target in &targets {
                    let mut order: Vec<usize> = (0..keys.len()).collect();
                    order.sort_by_key(|&j| keys[j] ^ target);
                    want.extend(order.into_iter().take(k).map(|j| members[j].1.peer));
                }
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn weighted_owners_do_not_depend_on_input_order(
            weights in proptest::collection::vec(0.0f64..100.0, 0..12),
            rotation in any::<usize>(),
            r in 1usize..5,
        ) {
            let listed: Vec<WeightedCandidate> = weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| WeightedCandidate { peer: peer(i as u32), weight })
                .collect();
            let mut shuffled = listed.clone();
            shuffled.rotate_left(rotation % listed.len().max(1));
            shuffled.reverse();
            for i in 0..20 {
                let owners = weighted_owners(&chunk(i), &listed, r);
                prop_assert_eq!(&owners, &weighted_owners(&chunk(i), &shuffled, r));
                let positive = weights.iter().filter(|&&w| w > 0.0).count();
                prop_assert_eq!(owners.len(), r.min(positive));
            }
        }
    }

    #[test]
    fn lookup_keys_are_frozen() {
        let id = chunk(0);
        assert_eq!(
            lookup_key(&id, 0),
            u64::from_be_bytes(id.0[..8].try_into().unwrap())
        );
        let keys: Vec<u64> = (0..4).map(|l| lookup_key(&id, l)).collect();
        let distinct: HashSet<u64> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
    }
}
