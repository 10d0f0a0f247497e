//! Placement at scale, simulated: in-process, deterministic, no sockets (issue 8). Research on
//! the placement rule of p2pfs (`p2pfs::cluster::placement`), not part of the node: the
//! `placement_sim` binary prints its tables (`cargo run --release -p p2pfs-sim -- --help`), and
//! [`closest`] holds the closest-peers rules it measured that no node runs.
//!
//! A [`World`] is a set of members (seeded ed25519 peer ids, capacities drawn from a seeded
//! generator) and a number of equal-size chunks (`blake3` of their index). A [`Strategy`] says
//! which members are candidates for a chunk and with what rendezvous weight:
//! - [`Strategy::Full`]: every member, weighted by capacity: the rule the nodes run today
//!   ([`Placement`] over the whole membership view, up to [`placement::MAX_CANDIDATES`]
//!   members). Exact, but O(members) work per chunk (~17 ns per member).
//! - [`Strategy::FullRule1`]: the same with placement rule 1's pair hash (a blake3 of the
//!   chunk id and the peer id per member, ~230 ns), kept as the baseline that rule 2 replaced.
//! - [`Strategy::Closest`]: the `k` members whose DHT key (`blake3` of the peer id) is
//!   XOR-closest to the chunk's key, as a Kademlia closest-peers lookup returns them, then the
//!   same capacity-weighted rendezvous among those `k`. O(k) hashes per chunk.
//! - [`Strategy::ClosestRegion`]: the same `k` candidates, each weighted by `capacity /
//!   region`, its region being the exact fraction of the key space for which it is among the
//!   `k` closest ([`closest::xor_region`], computed from its bucket sizes). This corrects
//!   the imbalance of plain closest-k, whose members are candidates for regions of different
//!   sizes.
//! - [`Strategy::ClosestNeighbour`]: the same `k` candidates weighted by `capacity / d_j`,
//!   `d_j` the XOR distance from the member's key to its `j`-th closest other member's: a
//!   cruder density estimate, for comparison.
//! - [`Strategy::ClosestMulti`]: the union of the `k` closest to each of several keys derived
//!   from the chunk id ([`closest::lookup_key`]), weighted by `capacity / region`: several
//!   closest-peers lookups per chunk, so that the weights can move load between
//!   neighbourhoods of different density, which one lookup cannot ([`closest::closest_candidates`]
//!   is the same rule for a node).
//!
//! [`measure`] places every chunk's R owners and reports what the issue asks for: stored
//! copies per unit of capacity (max/mean, with the max/mean that pure sampling noise would give
//! for the same mean), the copies that move when a member joins or leaves compared with the
//! optimum (the joiner's share of capacity, or exactly the leaver's copies), and the copies to
//! re-create after losing 1% of the members. Owners are stored compactly (a `u32` member id per
//! copy); the chunks are split over threads. After a change only the chunks whose candidates
//! (before or after) include a member that appeared, left or changed weight are placed again;
//! the others keep their owners by construction.

use std::time::Duration;

use libp2p::PeerId;
use rand::{Rng, SeedableRng};

use p2pfs::block::ChunkId;
use p2pfs::cluster::placement::{self, Candidate, Placement};

pub mod closest;

/// Which members are candidates for a chunk, and their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Full,
    FullRule1,
    Closest {
        k: usize,
    },
    ClosestRegion {
        k: usize,
    },
    ClosestNeighbour {
        k: usize,
        j: usize,
    },
    /// The union of the `k` closest to each of `lookups` keys derived from the chunk id (the
    /// first is the chunk's own key), weighted by `capacity / region` (the region for one
    /// lookup of `k`).
    ClosestMulti {
        k: usize,
        lookups: usize,
    },
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Full => write!(f, "full membership"),
            Strategy::FullRule1 => write!(f, "full membership, rule 1 (blake3 per pair)"),
            Strategy::Closest { k } => write!(f, "closest k={k}, capacity"),
            Strategy::ClosestRegion { k } => write!(f, "closest k={k}, capacity/region"),
            Strategy::ClosestNeighbour { k, j } => write!(f, "closest k={k}, capacity/d_{j}"),
            Strategy::ClosestMulti { k, lookups } => {
                write!(f, "{lookups} lookups of closest k={k}, capacity/region")
            }
        }
    }
}

/// No owner in a slot (fewer candidates with capacity than replicas).
const NONE: u32 = u32::MAX;

/// One simulated member.
#[derive(Clone, Debug)]
pub struct Member {
    pub peer: PeerId,
    pub capacity: u64,
    /// Stable across worlds (the index it was created with): owners are stored as these.
    pub id: u32,
    /// The member's key in the DHT's id space (first 8 bytes of `blake3(peer id)`).
    key: u64,
    /// Its placement seed ([`placement::member_seed`]).
    seed: u64,
    /// `peer.to_bytes()`, hashed by every score.
    bytes: Vec<u8>,
}

/// Members and chunks of one simulation.
#[derive(Clone)]
pub struct World {
    /// Sorted by DHT key, so a key prefix is a contiguous range.
    members: Vec<Member>,
    keys: Vec<u64>,
    pub chunks: u64,
    pub replicas: usize,
    /// Worker threads (default: the available parallelism). Results do not depend on it.
    pub threads: usize,
}

/// A member with a seeded identity: the same `(seed, index)` gives the same peer id. Its
/// stable id is `index`, so indices must be distinct within a simulation.
pub fn member(seed: u64, index: u64, capacity: u64) -> Member {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8..16].copy_from_slice(&index.to_le_bytes());
    secret[16] = 1; // never the all-zero key
    let keypair =
        libp2p::identity::Keypair::ed25519_from_bytes(secret).expect("32 bytes make a key");
    let peer = keypair.public().to_peer_id();
    let bytes = peer.to_bytes();
    Member {
        key: dht_key(&bytes),
        seed: placement::member_seed(&bytes),
        id: u32::try_from(index).expect("member index fits u32"),
        bytes,
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

/// Per-thread scratch space, so placing a chunk allocates nothing.
#[derive(Default)]
struct Scratch {
    candidates: Vec<u32>,
    best: Vec<(f64, u32)>,
}

impl World {
    pub fn new(members: Vec<Member>, chunks: u64, replicas: usize) -> Self {
        let mut members = members;
        members.sort_by(|a, b| (a.key, &a.bytes).cmp(&(b.key, &b.bytes)));
        let keys = members.iter().map(|m| m.key).collect();
        Self {
            members,
            keys,
            chunks,
            replicas,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn like(&self, members: Vec<Member>) -> World {
        World {
            threads: self.threads,
            ..World::new(members, self.chunks, self.replicas)
        }
    }

    /// The world with `m` added.
    pub fn with(&self, m: Member) -> World {
        let mut members = self.members.clone();
        members.push(m);
        self.like(members)
    }

    /// The world without the members for which `gone` is true.
    pub fn without(&self, gone: impl Fn(&Member) -> bool) -> World {
        self.like(self.members.iter().filter(|m| !gone(m)).cloned().collect())
    }

    /// The same members with only the first `chunks` chunks (a uniform sample: chunk ids are
    /// hashes of the index).
    pub fn sample(&self, chunks: u64) -> World {
        World {
            chunks: chunks.min(self.chunks),
            ..self.clone()
        }
    }

    /// The `k` members XOR-closest to `target` (ties cannot happen between distinct keys;
    /// equal keys are kept in peer order), closest first, as a Kademlia lookup converges to them.
    pub fn closest(&self, target: u64, k: usize) -> Vec<&Member> {
        let mut out = Vec::with_capacity(k);
        self.closest_into(target, k, &mut out);
        out.into_iter().map(|i| &self.members[i as usize]).collect()
    }

    /// [`World::closest`] as positions in `members`, into `out` (cleared first).
    fn closest_into(&self, target: u64, k: usize, out: &mut Vec<u32>) {
        out.clear();
        self.collect_closest(0, self.members.len(), 63, target, k, true, out);
    }

    /// The same set as [`World::closest_into`] in no particular order: what a chunk's
    /// candidates need (their ranking is by score), without sorting each whole subtree taken
    /// (O(k log k) per chunk, which dominated at k = 16,384).
    fn closest_set_into(&self, target: u64, k: usize, out: &mut Vec<u32>) {
        out.clear();
        self.collect_closest(0, self.members.len(), 63, target, k, false, out);
    }

    /// Appends the members of `lo..hi` (all sharing the key bits above `bit`) in XOR order
    /// from `target` until `k` are taken: the half that agrees with `target` at `bit` first.
    /// Unless `sorted`, a subtree taken whole stays in key order instead of XOR order.
    #[allow(clippy::too_many_arguments)]
    fn collect_closest(
        &self,
        lo: usize,
        hi: usize,
        bit: i32,
        target: u64,
        k: usize,
        sorted: bool,
        out: &mut Vec<u32>,
    ) {
        if out.len() >= k || lo >= hi {
            return;
        }
        if bit < 0 || hi - lo <= k - out.len() {
            // Everything here is wanted (or, past the last bit, equal keys: any k of them, the
            // first in peer order), ordered by distance when asked (stable sort).
            let start = out.len();
            out.extend(lo as u32..hi as u32);
            if sorted {
                out[start..].sort_by_key(|&i| self.keys[i as usize] ^ target);
            }
            out.truncate(k);
            return;
        }
        let mask = 1u64 << bit;
        let split = lo + self.keys[lo..hi].partition_point(|key| key & mask == 0);
        let (near, far) = if target & mask == 0 {
            ((lo, split), (split, hi))
        } else {
            ((split, hi), (lo, split))
        };
        self.collect_closest(near.0, near.1, bit - 1, target, k, sorted, out);
        self.collect_closest(far.0, far.1, bit - 1, target, k, sorted, out);
    }

    /// Kademlia bucket sizes of the member at position `i`, capped at `cap` (which changes
    /// nothing for [`closest::xor_region`] with `k <= cap`): each bucket is a key range.
    fn bucket_sizes(&self, i: usize, cap: u32) -> [u32; 64] {
        let key = self.keys[i];
        let mut sizes = [0u32; 64];
        for (b, size) in sizes.iter_mut().enumerate() {
            // Keys sharing the bits above b with `key` and differing at b.
            let sibling = (key ^ (1u64 << b)) & !((1u64 << b) - 1);
            let lo = self.keys.partition_point(|&x| x < sibling);
            let end = sibling | ((1u64 << b) - 1);
            let hi = self.keys.partition_point(|&x| x <= end);
            *size = ((hi - lo) as u32).min(cap);
        }
        sizes
    }

    /// Each member's rendezvous weight under `strategy`, by position.
    pub fn weights(&self, strategy: Strategy) -> Vec<f64> {
        let n = self.members.len();
        match strategy {
            Strategy::Full | Strategy::FullRule1 | Strategy::Closest { .. } => {
                self.members.iter().map(|m| m.capacity as f64).collect()
            }
            Strategy::ClosestRegion { k } | Strategy::ClosestMulti { k, .. } => (0..n)
                .map(|i| {
                    let region = closest::xor_region(&self.bucket_sizes(i, k as u32), k);
                    closest::region_weight(self.members[i].capacity, region)
                })
                .collect(),
            Strategy::ClosestNeighbour { j, .. } => {
                let mut out = Vec::new();
                (0..n)
                    .map(|i| {
                        // The member itself comes first, at distance 0.
                        self.closest_into(self.keys[i], j + 1, &mut out);
                        let last = *out.last().expect("the member itself") as usize;
                        let d = (self.keys[last] ^ self.keys[i]).max(1) as f64;
                        closest::region_weight(self.members[i].capacity, d)
                    })
                    .collect()
            }
        }
    }

    /// Each member's region under `k` (fraction of the key space), by position.
    pub fn regions(&self, k: usize) -> Vec<f64> {
        (0..self.members.len())
            .map(|i| closest::xor_region(&self.bucket_sizes(i, k as u32), k))
            .collect()
    }

    /// Candidate positions of a chunk with key `key` under `strategy`, into `out`.
    fn candidates(&self, strategy: Strategy, id: &ChunkId, key: u64, out: &mut Vec<u32>) {
        match strategy {
            Strategy::Full | Strategy::FullRule1 => {
                out.clear();
                out.extend(0..self.members.len() as u32);
            }
            Strategy::ClosestMulti { k, lookups } => {
                self.closest_set_into(key, k, out);
                let mut more = Vec::with_capacity(k);
                for l in 1..lookups {
                    self.closest_set_into(closest::lookup_key(id, l), k, &mut more);
                    out.extend_from_slice(&more);
                }
                out.sort_unstable();
                out.dedup();
            }
            Strategy::Closest { k }
            | Strategy::ClosestRegion { k }
            | Strategy::ClosestNeighbour { k, .. } => self.closest_set_into(key, k, out),
        }
    }

    /// Places chunk `i` into `owners` (stable member ids, best first, [`NONE`] when short).
    fn place_into(
        &self,
        strategy: Strategy,
        weights: &[f64],
        i: u64,
        scratch: &mut Scratch,
        owners: &mut [u32],
    ) {
        let (id, key) = chunk(i);
        self.candidates(strategy, &id, key, &mut scratch.candidates);
        self.best_into(strategy, weights, &id, scratch, owners);
    }

    /// The owners of chunk `id` among the positions in `scratch.candidates`, into `owners`.
    fn best_into(
        &self,
        strategy: Strategy,
        weights: &[f64],
        id: &ChunkId,
        scratch: &mut Scratch,
        owners: &mut [u32],
    ) {
        let Scratch { candidates, best } = scratch;
        best.clear();
        let r = owners.len();
        let rule1 = strategy == Strategy::FullRule1;
        let chunk_seed = placement::chunk_seed(id);
        // Higher score first, then peer bytes: the order of `Placement`.
        let before = |(sa, a): (f64, u32), (sb, b): (f64, u32)| {
            sb.total_cmp(&sa)
                .then_with(|| {
                    self.members[a as usize]
                        .bytes
                        .cmp(&self.members[b as usize].bytes)
                })
                .is_lt()
        };
        for &c in candidates.iter() {
            let w = weights[c as usize];
            if w.is_nan() || w <= 0.0 {
                continue;
            }
            let member = &self.members[c as usize];
            let score = if rule1 {
                rule1_score(id, &member.bytes, w)
            } else {
                placement::rendezvous_score(chunk_seed, member.seed, w)
            };
            let entry = (score, c);
            if best.len() == r && !before(entry, best[r - 1]) {
                continue;
            }
            if best.len() == r {
                best.pop();
            }
            let at = best
                .iter()
                .position(|&e| before(entry, e))
                .unwrap_or(best.len());
            best.insert(at, entry);
        }
        for (slot, owner) in owners.iter_mut().enumerate() {
            *owner = best
                .get(slot)
                .map_or(NONE, |&(_, c)| self.members[c as usize].id);
        }
    }

    /// The owners of chunk `i` under `strategy`.
    pub fn owners(&self, strategy: Strategy, i: u64) -> Vec<PeerId> {
        let weights = self.weights(strategy);
        let mut slots = vec![NONE; self.replicas];
        self.place_into(strategy, &weights, i, &mut Scratch::default(), &mut slots);
        slots
            .into_iter()
            .filter(|&s| s != NONE)
            .map(|s| self.peer_of(s))
            .collect()
    }

    fn peer_of(&self, id: u32) -> PeerId {
        self.members
            .iter()
            .find(|m| m.id == id)
            .expect("an owner is a member")
            .peer
    }

    pub fn placement(&self) -> Placement {
        Placement::new(self.members.iter().map(|m| Candidate {
            peer: m.peer,
            capacity: m.capacity,
        }))
    }

    /// Every chunk's owners, `replicas` stable member ids per chunk, and the CPU time spent.
    pub fn place(&self, strategy: Strategy) -> (Vec<u32>, Duration) {
        let r = self.replicas;
        let weights = self.weights(strategy);
        let mut owners = vec![NONE; self.chunks as usize * r];
        let per = (self.chunks as usize).div_ceil(self.threads.max(1)).max(1);
        let cpu = std::thread::scope(|s| {
            let handles: Vec<_> = owners
                .chunks_mut(per * r)
                .enumerate()
                .map(|(t, slice)| {
                    let weights = &weights;
                    s.spawn(move || {
                        let start = thread_cpu();
                        let mut scratch = Scratch::default();
                        let first = (t * per) as u64;
                        for (j, out) in slice.chunks_mut(r).enumerate() {
                            self.place_into(strategy, weights, first + j as u64, &mut scratch, out);
                        }
                        thread_cpu() - start
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("placement thread"))
                .sum::<Duration>()
        });
        (owners, cpu)
    }
}

/// Placement rule 1's score (replaced by rule 2, [`placement::rendezvous_score`]): `-weight /
/// ln(u)`, `u` from `blake3("p2pfs placement v1" || chunk id || peer id bytes)`, first 8 bytes
/// little-endian, top 53 bits, centred. One blake3 per (chunk, member) pair.
fn rule1_score(chunk: &ChunkId, peer_bytes: &[u8], weight: f64) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"p2pfs placement v1");
    hasher.update(&chunk.0);
    hasher.update(peer_bytes);
    let hash = hasher.finalize();
    let first = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    placement::logarithmic_score(first, weight)
}

/// This thread's CPU time (so a shared machine does not inflate the per-chunk cost).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What changed between two worlds, for the chunks of `before`.
struct Change {
    /// Copies whose owner after is not among the chunk's owners before.
    moved: u64,
    /// Chunks placed again (their candidates, before or after, include a changed member).
    replaced: u64,
}

/// Compares `base` (the owners in `before`) with the owners in `after`, placing again only the
/// chunks whose candidates before or after include a member that is new, gone or reweighted:
/// the others have the same candidates with the same weights, hence the same owners.
///
/// When every member is a candidate for every chunk (the full view), every chunk has a changed
/// candidate, so that test would place everything again. Rendezvous gives a shortcut instead:
/// if a chunk's owners before are all still there with the same weight, every other unchanged
/// member still scores below them, so the owners after are the best of those owners and the
/// changed members (scores for R + changed members, not for all); only a chunk that lost an
/// owner (or had fewer than R) is placed again in full.
fn change(before: &World, after: &World, strategy: Strategy, base: &[u32]) -> Change {
    let r = before.replicas;
    let old_weights = before.weights(strategy);
    let new_weights = after.weights(strategy);
    let ids = before
        .members
        .iter()
        .chain(&after.members)
        .map(|m| m.id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut old_weight = vec![f64::NAN; ids];
    for (m, w) in before.members.iter().zip(&old_weights) {
        old_weight[m.id as usize] = *w;
    }
    let mut changed = vec![true; ids];
    for (m, w) in after.members.iter().zip(&new_weights) {
        changed[m.id as usize] = old_weight[m.id as usize].to_bits() != w.to_bits();
    }
    let old_changed: Vec<bool> = before
        .members
        .iter()
        .map(|m| changed[m.id as usize])
        .collect();
    let new_changed: Vec<bool> = after
        .members
        .iter()
        .map(|m| changed[m.id as usize])
        .collect();
    let every_member = matches!(strategy, Strategy::Full | Strategy::FullRule1);
    let mut after_position = vec![NONE; ids];
    for (position, m) in after.members.iter().enumerate() {
        after_position[m.id as usize] = position as u32;
    }
    let after_changed: Vec<u32> = (0..after.members.len() as u32)
        .filter(|&position| new_changed[position as usize])
        .collect();
    let threads = before.threads.max(1) as u64;
    let per = before.chunks.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (old_changed, new_changed, new_weights) =
                    (&old_changed, &new_changed, &new_weights);
                let (changed, after_position, after_changed) =
                    (&changed, &after_position, &after_changed);
                s.spawn(move || {
                    let mut scratch = Scratch::default();
                    let mut owners = vec![NONE; r];
                    let (mut moved, mut replaced) = (0, 0);
                    for i in t * per..((t + 1) * per).min(before.chunks) {
                        let (id, key) = chunk(i);
                        let old = &base[i as usize * r..(i as usize + 1) * r];
                        // Owners kept by construction need no placing; the rest are placed
                        // again, from the kept owners plus the changed members when that is
                        // exact (full view, see above), else from all their candidates.
                        let shortcut = if every_member {
                            let kept = old.iter().all(|&o| o != NONE && !changed[o as usize]);
                            if kept && after_changed.is_empty() {
                                continue;
                            }
                            kept
                        } else {
                            before.candidates(strategy, &id, key, &mut scratch.candidates);
                            let mut dirty =
                                scratch.candidates.iter().any(|&c| old_changed[c as usize]);
                            if !dirty {
                                after.candidates(strategy, &id, key, &mut scratch.candidates);
                                dirty = scratch.candidates.iter().any(|&c| new_changed[c as usize]);
                            }
                            if !dirty {
                                continue;
                            }
                            false
                        };
                        replaced += 1;
                        if shortcut {
                            scratch.candidates.clear();
                            scratch
                                .candidates
                                .extend(old.iter().map(|&o| after_position[o as usize]));
                            scratch.candidates.extend_from_slice(after_changed);
                            after.best_into(strategy, new_weights, &id, &mut scratch, &mut owners);
                        } else {
                            after.place_into(strategy, new_weights, i, &mut scratch, &mut owners);
                        }
                        moved += owners
                            .iter()
                            .filter(|&&o| o != NONE && !old.contains(&o))
                            .count() as u64;
                    }
                    (moved, replaced)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("change thread"))
            .fold(
                Change {
                    moved: 0,
                    replaced: 0,
                },
                |acc, (moved, replaced)| Change {
                    moved: acc.moved + moved,
                    replaced: acc.replaced + replaced,
                },
            )
    })
}

/// What a simulation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub members: usize,
    pub chunks: u64,
    /// Mean copies per member.
    pub mean_copies: f64,
    /// Max over members of (copies held / capacity), divided by the mean of it: 1.0 is a
    /// perfectly capacity-proportional spread.
    pub load_max_over_mean: f64,
    /// The same for copies drawn independently in proportion to capacity (deterministic
    /// draw): the sampling-noise floor of `load_max_over_mean` at this many copies.
    pub noise_max_over_mean: f64,
    /// Systematic spread of (copies / capacity) / mean: the standard deviation with the
    /// sampling noise's variance taken out (0 for a placement exactly proportional to capacity).
    pub excess_cv: f64,
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
    /// Fraction of chunks placed again after the 1% loss (the rest provably kept owners; with
    /// the full view, the chunks that lost an owner).
    pub loss_replaced: f64,
    /// CPU time to place one chunk (the base placement), in microseconds.
    pub us_per_chunk: f64,
}

/// Places, then measures load, a join, a leave and a 1% loss. `seed` picks the joiner, the
/// leaver and the lost members.
pub fn measure(world: &World, strategy: Strategy, seed: u64) -> Report {
    let r = world.replicas;
    let (base, cpu) = world.place(strategy);
    let copies = base.iter().filter(|&&o| o != NONE).count() as u64;

    let ids = world
        .members
        .iter()
        .map(|m| m.id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut held = vec![0u64; ids];
    for &o in base.iter().filter(|&&o| o != NONE) {
        held[o as usize] += 1;
    }
    let total_capacity: u64 = world.members.iter().map(|m| m.capacity).sum();
    let n = world.members.len().max(1) as f64;

    // Load per unit of capacity, normalized by its mean; the noise floor from copies drawn
    // (normal approximation of the binomial) in proportion to capacity.
    let mut noise = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6e6f697365);
    let mut loads = Vec::with_capacity(world.members.len());
    let mut ideal = Vec::with_capacity(world.members.len());
    let mut poisson_var = 0.0;
    for m in &world.members {
        let share = m.capacity as f64 / total_capacity.max(1) as f64;
        let expected = copies as f64 * share;
        let per_capacity = copies as f64 / total_capacity.max(1) as f64;
        loads.push(held[m.id as usize] as f64 / m.capacity.max(1) as f64 / per_capacity);
        let (u1, u2): (f64, f64) = (noise.r#gen::<f64>().max(1e-300), noise.r#gen());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ideal.push(
            (expected + z * (expected * (1.0 - share.min(1.0))).sqrt()).max(0.0)
                / expected.max(1e-300),
        );
        poisson_var += if expected > 0.0 { 1.0 / expected } else { 0.0 };
    }
    let max_over_mean = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / n;
        if mean > 0.0 {
            v.iter().copied().fold(0.0, f64::max) / mean
        } else {
            0.0
        }
    };
    let mean_load = loads.iter().sum::<f64>() / n;
    let var = loads
        .iter()
        .map(|l| (l / mean_load - 1.0).powi(2))
        .sum::<f64>()
        / n;
    let excess_cv = (var - poisson_var / n).max(0.0).sqrt();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // A join: a member with the median capacity, with the next unused index.
    let mut caps: Vec<u64> = world.members.iter().map(|m| m.capacity).collect();
    caps.sort_unstable();
    let joiner = member(seed ^ 0x6a6f696e, ids as u64, caps[caps.len() / 2]);
    let join_optimal =
        copies as f64 * joiner.capacity as f64 / (total_capacity + joiner.capacity) as f64;
    let join = change(world, &world.with(joiner), strategy, &base);

    // A leave: a random member.
    let leaver = world.members[rng.gen_range(0..world.members.len())].id;
    let leave = change(world, &world.without(|m| m.id == leaver), strategy, &base);
    let leave_optimal = held[leaver as usize] as f64;

    // Losing 1% (at least one).
    let lose = (world.members.len() / 100).max(1);
    let mut lost = vec![false; ids];
    let mut count = 0;
    while count < lose {
        let id = world.members[rng.gen_range(0..world.members.len())].id as usize;
        if !lost[id] {
            lost[id] = true;
            count += 1;
        }
    }
    let loss = change(
        world,
        &world.without(|m| lost[m.id as usize]),
        strategy,
        &base,
    );
    let loss_optimal: u64 = (0..ids).filter(|&id| lost[id]).map(|id| held[id]).sum();
    let all_gone = base
        .chunks(r)
        .filter(|o| o[0] != NONE && o.iter().all(|&p| p == NONE || lost[p as usize]))
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
        mean_copies: copies as f64 / n,
        load_max_over_mean: max_over_mean(&loads),
        noise_max_over_mean: max_over_mean(&ideal),
        excess_cv,
        join_moved_over_optimal: ratio(join.moved, join_optimal),
        leave_moved_over_optimal: ratio(leave.moved, leave_optimal),
        loss_moved_over_optimal: ratio(loss.moved, loss_optimal as f64),
        loss_all_owners_gone: all_gone as f64 / world.chunks.max(1) as f64,
        loss_replaced: loss.replaced as f64 / world.chunks.max(1) as f64,
        us_per_chunk: cpu.as_secs_f64() * 1e6 / world.chunks.max(1) as f64,
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
        for s in [
            Strategy::Closest { k: 12 },
            Strategy::ClosestRegion { k: 12 },
        ] {
            let a = measure(&world(7, 40, 4, 2000, 3), s, 1);
            let mut single = world(7, 40, 4, 2000, 3);
            single.threads = 1;
            let b = measure(&single, s, 1);
            // Everything but the timing, whatever the number of threads.
            assert_eq!(
                Report {
                    us_per_chunk: 0.0,
                    ..a
                },
                Report {
                    us_per_chunk: 0.0,
                    ..b
                }
            );
        }
    }

    #[test]
    fn closest_returns_the_k_xor_nearest_keys() {
        let w = world(3, 300, 1, 0, 3);
        for target in [0u64, u64::MAX, 0x8000_0000_0000_0000, 0x1234_5678_9abc_def0] {
            let got: Vec<u64> = w.closest(target, 20).iter().map(|m| m.key).collect();
            let mut all: Vec<u64> = w.members().iter().map(|m| m.key).collect();
            all.sort_by_key(|k| k ^ target);
            assert_eq!(got, all[..20].to_vec(), "target {target:x}");
            // The same set as the placement module's helper.
            let helper: Vec<u64> = closest::xor_closest(target, &w.keys, 20)
                .into_iter()
                .map(|i| w.keys[i])
                .collect();
            assert_eq!(got, helper);
            // The unordered set for candidates is the same set.
            let mut set = Vec::new();
            w.closest_set_into(target, 20, &mut set);
            let mut set: Vec<u64> = set.into_iter().map(|i| w.keys[i as usize]).collect();
            set.sort_by_key(|k| k ^ target);
            assert_eq!(got, set);
        }
    }

    #[test]
    fn full_is_the_placement_rule() {
        let w = world(5, 30, 3, 300, 3);
        let placement = w.placement();
        for i in 0..w.chunks {
            assert_eq!(
                w.owners(Strategy::Full, i),
                placement.owners(&chunk(i).0, 3)
            );
        }
    }

    #[test]
    fn with_every_member_a_candidate_closest_is_the_full_rule() {
        let w = world(5, 30, 3, 500, 3);
        let full = w.place(Strategy::Full).0;
        assert_eq!(full, w.place(Strategy::Closest { k: 30 }).0);
        // The region correction too: every region is the whole space.
        assert_eq!(full, w.place(Strategy::ClosestRegion { k: 30 }).0);
        assert_eq!(full, w.place(Strategy::ClosestRegion { k: 64 }).0);
    }

    #[test]
    fn region_owners_are_the_placement_helpers() {
        // The simulation's corrected rule is the one in `closest`, for a node's view.
        let w = world(9, 60, 4, 200, 3);
        let members: Vec<(u64, Candidate)> = w
            .members()
            .iter()
            .map(|m| {
                (
                    m.key,
                    Candidate {
                        peer: m.peer,
                        capacity: m.capacity,
                    },
                )
            })
            .collect();
        for i in 0..w.chunks {
            let (id, key) = chunk(i);
            let candidates = closest::closest_candidates(&[key], &members, 8);
            assert_eq!(
                w.owners(Strategy::ClosestRegion { k: 8 }, i),
                closest::weighted_owners(&id, &candidates, 3)
            );
            let targets: Vec<u64> = (0..4).map(|l| closest::lookup_key(&id, l)).collect();
            let candidates = closest::closest_candidates(&targets, &members, 8);
            assert_eq!(
                w.owners(Strategy::ClosestMulti { k: 8, lookups: 4 }, i),
                closest::weighted_owners(&id, &candidates, 3)
            );
        }
    }

    #[test]
    fn regions_sum_to_k() {
        let w = world(4, 500, 1, 0, 3);
        for k in [1, 8, 32] {
            let sum: f64 = w.regions(k).iter().sum();
            assert!((sum - k as f64).abs() < 1e-9, "k {k}: {sum}");
        }
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

    #[test]
    fn incremental_change_equals_placing_everything_again() {
        // `change` skips chunks whose candidates kept their weights: check it against a full
        // re-placement.
        let w = world(13, 80, 4, 3000, 3);
        let mut reweighted = w.members().to_vec();
        for m in reweighted.iter_mut().filter(|m| m.id % 11 == 5) {
            m.capacity = m.capacity / 3 + 1;
        }
        let afters = [
            w.without(|m| m.id % 7 == 3),
            w.with(member(99, 1000, 300 << 30)),
            w.like(reweighted),
        ];
        for s in [
            Strategy::Full,
            Strategy::FullRule1,
            Strategy::Closest { k: 8 },
            Strategy::ClosestRegion { k: 8 },
            Strategy::ClosestNeighbour { k: 8, j: 4 },
            Strategy::ClosestMulti { k: 4, lookups: 3 },
        ] {
            let (base, _) = w.place(s);
            for (n, after) in afters.iter().enumerate() {
                let (again, _) = after.place(s);
                let moved = base
                    .chunks(3)
                    .zip(again.chunks(3))
                    .map(|(b, a)| {
                        a.iter().filter(|&&o| o != NONE && !b.contains(&o)).count() as u64
                    })
                    .sum::<u64>();
                assert!(moved > 0, "{s}, change {n}");
                assert_eq!(change(&w, after, s, &base).moved, moved, "{s}, change {n}");
            }
        }
    }

    #[test]
    fn several_region_weighted_lookups_balance_closest_k() {
        // 400 members, capacities spread 4x. Plain closest-k is visibly unbalanced; weighting
        // by capacity / region within one lookup barely helps (the k candidates share their
        // density); the union of 8 lookups of 8 so weighted is close to proportional.
        let w = world(17, 400, 4, 40_000, 3);
        let plain = measure(&w, Strategy::Closest { k: 16 }, 1);
        let multi = measure(&w, Strategy::ClosestMulti { k: 8, lookups: 8 }, 1);
        assert!(plain.excess_cv > 0.12, "{plain:?}");
        assert!(multi.excess_cv < 0.06, "{multi:?} vs {plain:?}");
    }
}
