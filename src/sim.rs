//! Placement at scale, simulated: in-process, deterministic, no sockets (issue 8).
//!
//! A [`World`] is a set of members (seeded ed25519 peer ids, capacities drawn from a seeded
//! generator) and a number of equal-size chunks (`blake3` of their index). A [`Strategy`] says
//! which members are candidates for a chunk:
//! - [`Strategy::Full`]: every member, the rule the nodes run today ([`Placement`] over the
//!   whole membership view). Exact, but O(members) hashes per chunk.
//! - [`Strategy::Closest`]: the `k` members whose DHT key (`blake3` of the peer id) is
//!   XOR-closest to the chunk id, as a Kademlia closest-peers lookup returns them, then the same
//!   weighted rendezvous among those `k`. O(k) hashes per chunk once the neighbourhood is known.
//!
//! [`measure`] places every chunk's R owners and reports what the issue asks for: stored bytes
//! per unit of capacity (max/mean), the copies that move when a member joins or leaves
//! compared with the optimum (the joiner's share of capacity, or exactly the leaver's copies),
//! and the copies to re-create after losing 1% of the members.

use std::collections::HashMap;

use libp2p::PeerId;
use rand::{Rng, SeedableRng};

use crate::block::ChunkId;
use crate::placement::{Candidate, Placement};

/// Which members are candidates for a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Full,
    Closest { k: usize },
}

/// One simulated member.
#[derive(Clone, Debug)]
pub struct Member {
    pub peer: PeerId,
    pub capacity: u64,
    /// The member's key in the DHT's id space (first 8 bytes of `blake3(peer id)`).
    key: u64,
}

/// Members and chunks of one simulation.
pub struct World {
    /// Sorted by DHT key, so a key prefix is a contiguous range.
    members: Vec<Member>,
    pub chunks: u64,
    pub replicas: usize,
}

/// A member with a seeded identity: the same `(seed, index)` gives the same peer id.
pub fn member(seed: u64, index: u64, capacity: u64) -> Member {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8..16].copy_from_slice(&index.to_le_bytes());
    secret[16] = 1; // never the all-zero key
    let keypair =
        libp2p::identity::Keypair::ed25519_from_bytes(secret).expect("32 bytes make a key");
    let peer = keypair.public().to_peer_id();
    Member {
        key: dht_key(&peer.to_bytes()),
        peer,
        capacity,
    }
}

fn dht_key(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Chunk `i` of a simulation: its id and its key in the DHT's id space.
pub fn chunk(i: u64) -> (ChunkId, u64) {
    let id = ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes());
    (
        id,
        u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes")),
    )
}

/// Capacities: a uniform spread between `1x` and `spread x` the smallest (1 = all equal), in
/// GiB, from `seed`.
pub fn capacities(seed: u64, n: usize, spread: u64) -> Vec<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.gen_range(100..=100 * spread.max(1)) << 30)
        .collect()
}

impl World {
    pub fn new(members: Vec<Member>, chunks: u64, replicas: usize) -> Self {
        let mut members = members;
        members.sort_by_key(|m| (m.key, m.peer.to_bytes()));
        Self {
            members,
            chunks,
            replicas,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The world with `m` added.
    pub fn with(&self, m: Member) -> World {
        let mut members = self.members.clone();
        members.push(m);
        World::new(members, self.chunks, self.replicas)
    }

    /// The world without the members for which `gone` is true.
    pub fn without(&self, gone: impl Fn(&Member) -> bool) -> World {
        let members = self.members.iter().filter(|m| !gone(m)).cloned().collect();
        World::new(members, self.chunks, self.replicas)
    }

    /// The `k` members XOR-closest to `target` (ties cannot happen between distinct keys;
    /// equal keys are kept in peer order), as a Kademlia lookup converges to them.
    pub fn closest(&self, target: u64, k: usize) -> Vec<&Member> {
        let mut out = Vec::with_capacity(k);
        self.collect_closest(0, self.members.len(), 63, target, k, &mut out);
        out
    }

    /// Appends the members of `lo..hi` (all sharing the key bits above `bit`) in XOR order
    /// from `target` until `k` are taken: the half that agrees with `target` at `bit` first.
    fn collect_closest<'a>(
        &'a self,
        lo: usize,
        hi: usize,
        bit: i32,
        target: u64,
        k: usize,
        out: &mut Vec<&'a Member>,
    ) {
        if out.len() >= k || lo >= hi {
            return;
        }
        if bit < 0 || hi - lo <= k - out.len() {
            // Everything here is wanted, ordered by distance.
            let mut here: Vec<&Member> = self.members[lo..hi].iter().collect();
            here.sort_by_key(|m| m.key ^ target);
            out.extend(here.into_iter().take(k - out.len()));
            return;
        }
        let mask = 1u64 << bit;
        let split = lo + self.members[lo..hi].partition_point(|m| m.key & mask == 0);
        let (near, far) = if target & mask == 0 {
            ((lo, split), (split, hi))
        } else {
            ((split, hi), (lo, split))
        };
        self.collect_closest(near.0, near.1, bit - 1, target, k, out);
        self.collect_closest(far.0, far.1, bit - 1, target, k, out);
    }

    /// The owners of chunk `i` under `strategy`.
    pub fn owners(&self, strategy: Strategy, full: &Placement, i: u64) -> Vec<PeerId> {
        let (id, key) = chunk(i);
        match strategy {
            Strategy::Full => full.owners(&id, self.replicas),
            Strategy::Closest { k } => {
                Placement::new(self.closest(key, k).into_iter().map(|m| Candidate {
                    peer: m.peer,
                    capacity: m.capacity,
                }))
                .owners(&id, self.replicas)
            }
        }
    }

    fn placement(&self) -> Placement {
        Placement::new(self.members.iter().map(|m| Candidate {
            peer: m.peer,
            capacity: m.capacity,
        }))
    }

    /// Every chunk's owners.
    pub fn place(&self, strategy: Strategy) -> Vec<Vec<PeerId>> {
        let full = self.placement();
        (0..self.chunks)
            .map(|i| self.owners(strategy, &full, i))
            .collect()
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub members: usize,
    pub chunks: u64,
    /// Max over members of (copies held / capacity), divided by the mean of it: 1.0 is a
    /// perfectly capacity-proportional spread.
    pub load_max_over_mean: f64,
    /// Copies that changed owner when one member joined, divided by the optimum (the joiner's
    /// share of all capacity times all copies).
    pub join_moved_over_optimal: f64,
    /// Copies that changed owner when one member left, divided by the optimum (the copies it
    /// held).
    pub leave_moved_over_optimal: f64,
    /// Copies placed anew after losing 1% of the members, divided by the copies those held.
    pub loss_moved_over_optimal: f64,
    /// Fraction of chunks whose owners the 1% loss took entirely (data lost before repair).
    pub loss_all_owners_gone: f64,
}

/// Copies whose owner in `after` is not among the chunk's owners in `before`.
fn moved(before: &[Vec<PeerId>], after: &[Vec<PeerId>]) -> u64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.iter().filter(|p| !b.contains(p)).count() as u64)
        .sum()
}

/// Places, then measures load, a join, a leave and a 1% loss. `seed` picks the joiner, the
/// leaver and the lost members.
pub fn measure(world: &World, strategy: Strategy, seed: u64) -> Report {
    let base = world.place(strategy);
    let copies: u64 = base.iter().map(|o| o.len() as u64).sum();

    let mut held: HashMap<PeerId, u64> = HashMap::new();
    for p in base.iter().flatten() {
        *held.entry(*p).or_default() += 1;
    }
    let per_capacity: Vec<f64> = world
        .members
        .iter()
        .map(|m| *held.get(&m.peer).unwrap_or(&0) as f64 / m.capacity.max(1) as f64)
        .collect();
    let mean = per_capacity.iter().sum::<f64>() / per_capacity.len().max(1) as f64;
    let max = per_capacity.iter().copied().fold(0.0, f64::max);

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let total_capacity: u64 = world.members.iter().map(|m| m.capacity).sum();

    // A join: a member with the median capacity.
    let mut caps: Vec<u64> = world.members.iter().map(|m| m.capacity).collect();
    caps.sort_unstable();
    let joiner = member(seed ^ 0x6a6f696e, rng.r#gen(), caps[caps.len() / 2]);
    let joined = world.with(joiner.clone());
    let after_join = joined.place(strategy);
    let join_optimal =
        copies as f64 * joiner.capacity as f64 / (total_capacity + joiner.capacity) as f64;

    // A leave: a random member.
    let leaver = world.members[rng.gen_range(0..world.members.len())].peer;
    let left = world.without(|m| m.peer == leaver);
    let after_leave = left.place(strategy);
    let leave_optimal = *held.get(&leaver).unwrap_or(&0) as f64;

    // Losing 1% (at least one).
    let lose = (world.members.len() / 100).max(1);
    let mut lost: Vec<PeerId> = Vec::with_capacity(lose);
    while lost.len() < lose {
        let p = world.members[rng.gen_range(0..world.members.len())].peer;
        if !lost.contains(&p) {
            lost.push(p);
        }
    }
    let survived = world.without(|m| lost.contains(&m.peer));
    let after_loss = survived.place(strategy);
    let loss_optimal: u64 = lost.iter().map(|p| *held.get(p).unwrap_or(&0)).sum();
    let all_gone = base
        .iter()
        .filter(|o| !o.is_empty() && o.iter().all(|p| lost.contains(p)))
        .count();

    let ratio = |moved: u64, optimal: f64| {
        if optimal > 0.0 {
            moved as f64 / optimal
        } else {
            0.0
        }
    };
    Report {
        members: world.members.len(),
        chunks: world.chunks,
        load_max_over_mean: if mean > 0.0 { max / mean } else { 0.0 },
        join_moved_over_optimal: ratio(moved(&base, &after_join), join_optimal),
        leave_moved_over_optimal: ratio(moved(&base, &after_leave), leave_optimal),
        loss_moved_over_optimal: ratio(moved(&base, &after_loss), loss_optimal as f64),
        loss_all_owners_gone: all_gone as f64 / world.chunks.max(1) as f64,
    }
}

/// A world of `n` members with capacities spread `spread`x, `chunks` chunks, R = `replicas`.
pub fn world(seed: u64, n: usize, spread: u64, chunks: u64, replicas: usize) -> World {
    let members = capacities(seed, n, spread)
        .into_iter()
        .enumerate()
        .map(|(i, c)| member(seed, i as u64, c))
        .collect();
    World::new(members, chunks, replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world_and_report() {
        let a = measure(&world(7, 40, 4, 2000, 3), Strategy::Closest { k: 12 }, 1);
        let b = measure(&world(7, 40, 4, 2000, 3), Strategy::Closest { k: 12 }, 1);
        assert_eq!(a, b);
    }

    #[test]
    fn closest_returns_the_k_xor_nearest_keys() {
        let w = world(3, 300, 1, 0, 3);
        for target in [0u64, u64::MAX, 0x8000_0000_0000_0000, 0x1234_5678_9abc_def0] {
            let got: Vec<u64> = w.closest(target, 20).iter().map(|m| m.key).collect();
            let mut all: Vec<u64> = w.members().iter().map(|m| m.key).collect();
            all.sort_by_key(|k| k ^ target);
            assert_eq!(got, all[..20].to_vec(), "target {target:x}");
        }
    }

    #[test]
    fn with_every_member_a_candidate_closest_is_the_full_rule() {
        let w = world(5, 30, 3, 500, 3);
        assert_eq!(
            w.place(Strategy::Full),
            w.place(Strategy::Closest { k: 30 })
        );
    }

    #[test]
    fn full_rendezvous_moves_only_what_it_must() {
        // Weighted rendezvous: a join moves copies only onto the joiner, a leave only the
        // leaver's copies, so both are at the optimum up to sampling noise.
        let r = measure(&world(11, 50, 4, 20_000, 3), Strategy::Full, 2);
        assert!((r.leave_moved_over_optimal - 1.0).abs() < 1e-9, "{r:?}");
        assert!((0.8..1.2).contains(&r.join_moved_over_optimal), "{r:?}");
        assert!((r.loss_moved_over_optimal - 1.0).abs() < 1e-9, "{r:?}");
        assert!(r.load_max_over_mean < 1.3, "{r:?}");
    }
}
