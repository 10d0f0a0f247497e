//! Surveys: where a file's chunks are (`p2pfs-ctl where`) and how far the visible files are
//! from R proven copies (`p2pfs-ctl health`).
//!
//! A survey asks every live peer which of the chunks it holds, then has the claimants prove
//! it ([`holders`]). The network part runs on the async workers; the CPU part (owners of every
//! chunk, checking proofs against the bytes, deduplicating and tallying the chunks of every
//! file) runs on the blocking pool.

use std::collections::{BTreeSet, HashMap, HashSet};

use libp2p::PeerId;
use libp2p::futures::{StreamExt, future::join_all};

use crate::block::ChunkId;
use crate::block::proof::{Nonce, Proof, fresh_nonce, verify};
use crate::cluster::ChunkRouter;
use crate::cluster::audit::{Possession, holder_failed};
use crate::rpc::chunk::{MAX_BODY, MAX_HAVE_BATCH, MAX_PROVE_BATCH, MAX_PROVE_BYTES};
use crate::util::blocking::off_workers;

/// Chunks challenged at a time (one `Prove` per peer): 16 default-size chunks are half a
/// request's byte bound and a second of a peer's proof budget.
const GROUP: usize = 16;
/// Chunks fetched at once to check a lone claimant.
const FETCHES: usize = 4;
const _: () = assert!(GROUP <= MAX_PROVE_BATCH);

/// Who holds one chunk, as a survey found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkHolders {
    /// Nodes that proved they hold it (this one first, if it does).
    pub proven: Vec<PeerId>,
    /// Peers that claim it but could not be checked now (busy, no answer).
    pub unverified: Vec<PeerId>,
}

/// Where one chunk is: its owners in this node's view, and who was found holding it.
#[derive(Debug, Clone)]
pub struct ChunkPlace {
    pub id: ChunkId,
    pub owners: Vec<PeerId>,
    pub holders: ChunkHolders,
}

/// How far the visible files are from R proven copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Distinct chunks of the files.
    pub chunks: usize,
    /// Chunks with fewer than R proven copies.
    pub short: usize,
    /// Chunks no node proved or claimed.
    pub missing: usize,
    /// Short chunks that the unverified claims would bring to R (the holders were busy).
    pub unverified: usize,
    /// Files with a chunk short for sure (even counting unverified claims), sorted.
    pub files: Vec<String>,
}

/// Whether every proof in `given` is vouched for by another claimant's equal proof.
fn all_vouched(given: &[Proof]) -> bool {
    given
        .iter()
        .all(|p| given.iter().filter(|q| *q == p).count() >= 2)
}

/// Where each of `ids` is: owners by the placement as it is now, and [`holders`]. `None`
/// when the runtime is shutting down.
pub async fn locate(router: &ChunkRouter, ids: Vec<ChunkId>) -> Option<Vec<ChunkPlace>> {
    let placement = router.placement();
    let r = router.replicas();
    let (ids, owners) = off_workers(move || {
        let owners: Vec<Vec<PeerId>> = ids.iter().map(|id| placement.owners(id, r)).collect();
        (ids, owners)
    })
    .await?;
    let found = holders(router, &ids).await?;
    Some(
        ids.into_iter()
            .zip(owners)
            .zip(found)
            .map(|((id, owners), holders)| ChunkPlace {
                id,
                owners,
                holders,
            })
            .collect(),
    )
}

/// The health of the files in `by_file` (each file's path and chunks), against R copies.
/// `None` when the runtime is shutting down.
pub async fn health(router: &ChunkRouter, by_file: Vec<(String, Vec<ChunkId>)>) -> Option<Health> {
    let (by_file, ids) = off_workers(move || {
        let ids: Vec<ChunkId> = by_file
            .iter()
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (by_file, ids)
    })
    .await?;
    let found = holders(router, &ids).await?;
    let r = router.replicas();
    off_workers(move || tally(r, by_file, &ids, &found)).await
}

/// Counts what [`Health`] reports from the holders found for each of `ids`. Counted against
/// R, not against the nodes there are: with fewer live holders than R every chunk is short,
/// however many of them hold it.
fn tally(
    r: usize,
    by_file: Vec<(String, Vec<ChunkId>)>,
    ids: &[ChunkId],
    found: &[ChunkHolders],
) -> Health {
    // Short: fewer than R proven copies. Of those, a chunk that unverified claims would bring
    // to R is only unverified (the holders were busy); the rest are short for sure.
    let short = found.iter().filter(|h| h.proven.len() < r).count();
    let short_for_sure: HashSet<ChunkId> = ids
        .iter()
        .zip(found)
        .filter(|(_, h)| h.proven.len() + h.unverified.len() < r)
        .map(|(id, _)| *id)
        .collect();
    let mut files: Vec<String> = by_file
        .into_iter()
        .filter(|(_, ids)| ids.iter().any(|id| short_for_sure.contains(id)))
        .map(|(path, _)| path)
        .collect();
    files.sort();
    Health {
        chunks: ids.len(),
        short,
        missing: found
            .iter()
            .filter(|h| h.proven.is_empty() && h.unverified.is_empty())
            .count(),
        unverified: short - short_for_sure.len(),
        files,
    }
}

/// Which nodes hold each of `ids`: this one by its store, live peers by proving it. A
/// peer's "have" only picks what to challenge; it counts once it answered a proof over the
/// bytes under a fresh nonce, so `where` and `health` never count a bare claim. All
/// claimants of a chunk get the same nonce, all peers at once. A chunk held here is checked
/// against this copy; for one not held here, equal proofs from two or more claimants count
/// as proven without the bytes (colluding holders could share one copy and answer for it;
/// the audit and repair check each holder against their own copy). A chunk with a single
/// claimant, or disagreeing answers, is fetched (verified against its id) and checked, a
/// few at once. A claimant that did not answer (busy, timed out) is unverified, not absent.
/// `None` when the runtime is shutting down.
pub async fn holders(router: &ChunkRouter, ids: &[ChunkId]) -> Option<Vec<ChunkHolders>> {
    let local = router.local();
    let store = router.store().clone();
    let listed = ids.to_vec();
    let held_here: Vec<bool> =
        off_workers(move || listed.iter().map(|id| store.contains(id)).collect()).await?;
    let mut out: Vec<ChunkHolders> = held_here
        .into_iter()
        .map(|here| ChunkHolders {
            proven: if here { vec![local] } else { Vec::new() },
            unverified: Vec::new(),
        })
        .collect();
    let peers: Vec<PeerId> = router
        .membership
        .read()
        .placement_peers()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    // Each peer's claims, asked of all peers at once; a peer that does not answer claims
    // nothing (it is not counted, and not blamed).
    let claims: Vec<Vec<bool>> = join_all(peers.iter().map(|peer| async move {
        let mut bits = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MAX_HAVE_BATCH) {
            match router.client().have(*peer, batch.to_vec()).await {
                Ok(b) => bits.extend(b),
                Err(_) => bits.extend(std::iter::repeat_n(false, batch.len())),
            }
        }
        bits
    }))
    .await;
    let claimed = |p: usize, i: usize| claims[p].get(i).copied().unwrap_or(false);
    for (g, group) in ids.chunks(GROUP).enumerate() {
        let at = g * GROUP;
        // claims_in_group[p][j]: whether peer `p` claims the group's `j`th chunk.
        let claims_in_group: Vec<Vec<bool>> = (0..peers.len())
            .map(|p| (0..group.len()).map(|j| claimed(p, at + j)).collect())
            .collect();
        let asked: Vec<Vec<ChunkId>> = claims_in_group
            .iter()
            .map(|claims| {
                group
                    .iter()
                    .zip(claims)
                    .filter(|(_, claimed)| **claimed)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .collect();
        if asked.iter().all(Vec::is_empty) {
            continue;
        }
        let nonce = fresh_nonce();
        let mut bytes = crate::cluster::audit::read_local(router.store(), group.to_vec()).await;
        // A `Prove` may make its answerer read at most MAX_PROVE_BYTES before its last
        // chunk: requests are split by size, a chunk not held here counted at the largest.
        let sizes: HashMap<ChunkId, usize> = bytes.iter().map(|(id, b)| (*id, b.len())).collect();
        let size = |id: &ChunkId| sizes.get(id).copied().unwrap_or(MAX_BODY);
        // answers[p][id]: Some(proof), or None for "not held"; absent if the peer did not
        // answer.
        let answers: Vec<HashMap<ChunkId, Option<Proof>>> =
            join_all(peers.iter().zip(&asked).map(|(peer, ids)| async move {
                let mut requests: Vec<Vec<ChunkId>> = Vec::new();
                let mut before_last = 0;
                for id in ids {
                    match requests.last_mut() {
                        Some(r)
                            if before_last + size(r.last().expect("not empty"))
                                < MAX_PROVE_BYTES =>
                        {
                            before_last += size(r.last().expect("not empty"));
                            r.push(*id);
                        }
                        _ => {
                            requests.push(vec![*id]);
                            before_last = 0;
                        }
                    }
                }
                let mut answered = HashMap::new();
                for ids in requests {
                    match router.client().prove(*peer, nonce, ids.clone()).await {
                        Ok(proofs) => answered.extend(ids.into_iter().zip(proofs)),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "proof request not answered")
                        }
                    }
                }
                answered
            }))
            .await;
        // Chunks not held here that no two claimants proved alike: fetched to check.
        let to_fetch: Vec<ChunkId> = group
            .iter()
            .enumerate()
            .filter(|(_, id)| !bytes.contains_key(id))
            .filter(|(j, id)| {
                let given = given_for(&claims_in_group, &answers, *j, id);
                !given.is_empty() && !all_vouched(&given)
            })
            .map(|(_, id)| *id)
            .collect();
        let fetched: Vec<_> = libp2p::futures::stream::iter(to_fetch)
            .map(|id| async move { (id, router.fetch_async(&id).await) })
            .buffer_unordered(FETCHES)
            .collect()
            .await;
        bytes.extend(
            fetched
                .into_iter()
                .filter_map(|(id, b)| b.ok().map(|b| (id, b))),
        );
        let group_ids = group.to_vec();
        let verdicts =
            off_workers(move || judge(&nonce, &group_ids, &claims_in_group, &answers, &bytes))
                .await?;
        for (j, (id, verdicts)) in group.iter().zip(verdicts).enumerate() {
            for (p, verdict) in verdicts {
                let peer = peers[p];
                match verdict {
                    Possession::Proven => out[at + j].proven.push(peer),
                    Possession::Failed => holder_failed(router, peer, id, "where"),
                    Possession::Unknown => out[at + j].unverified.push(peer),
                    Possession::Missing => {}
                }
            }
        }
    }
    Some(out)
}

/// The proofs the claimants of a group's `j`th chunk (`id`) gave.
fn given_for(
    claims_in_group: &[Vec<bool>],
    answers: &[HashMap<ChunkId, Option<Proof>>],
    j: usize,
    id: &ChunkId,
) -> Vec<Proof> {
    answers
        .iter()
        .zip(claims_in_group)
        .filter(|(_, claims)| claims[j])
        .filter_map(|(a, _)| a.get(id).copied().flatten())
        .collect()
}

/// The verdict on every claimant (by index, in order) of each of `group`'s chunks: proven by
/// the bytes (held here or fetched), or without them by another claimant's equal proof;
/// failed when the bytes disprove it; unknown when it did not answer or cannot be checked.
fn judge(
    nonce: &Nonce,
    group: &[ChunkId],
    claims_in_group: &[Vec<bool>],
    answers: &[HashMap<ChunkId, Option<Proof>>],
    bytes: &HashMap<ChunkId, Vec<u8>>,
) -> Vec<Vec<(usize, Possession)>> {
    group
        .iter()
        .enumerate()
        .map(|(j, id)| {
            let given = given_for(claims_in_group, answers, j, id);
            (0..answers.len())
                .filter(|p| claims_in_group[*p][j])
                .map(|p| {
                    let verdict = match answers[p].get(id).copied() {
                        None => Possession::Unknown,
                        Some(None) => Possession::Missing,
                        Some(Some(proof)) => match bytes.get(id) {
                            Some(b) if verify(nonce, b, &proof) => Possession::Proven,
                            Some(_) => Possession::Failed,
                            None if given.iter().filter(|g| **g == proof).count() >= 2 => {
                                Possession::Proven
                            }
                            // Not held here and not fetchable: cannot be checked now.
                            None => Possession::Unknown,
                        },
                    };
                    (p, verdict)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::proof::proof;

    #[test]
    fn claimants_are_judged_by_the_bytes_or_by_an_equal_proof() {
        let nonce = [7u8; 32];
        let (held, vouched, lone) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        let group = [held, vouched, lone];
        let copy = b"the copy held here".to_vec();
        let other = b"a copy held by two peers only".to_vec();
        let bytes: HashMap<ChunkId, Vec<u8>> = [(held, copy.clone())].into();
        // Peer 0 holds everything; peer 1 lies about `held` and holds `vouched`; peer 2 says
        // it does not hold `held` after claiming it, and does not answer for `lone`; peer 3
        // claims nothing.
        let claims = vec![
            vec![true, true, true],
            vec![true, true, false],
            vec![true, false, true],
            vec![false, false, false],
        ];
        let answers: Vec<HashMap<ChunkId, Option<Proof>>> = vec![
            [
                (held, Some(proof(&nonce, &copy))),
                (vouched, Some(proof(&nonce, &other))),
                (lone, Some([9; 32])),
            ]
            .into(),
            [
                (held, Some([0; 32])),
                (vouched, Some(proof(&nonce, &other))),
            ]
            .into(),
            [(held, None)].into(),
            HashMap::new(),
        ];
        let verdicts = judge(&nonce, &group, &claims, &answers, &bytes);
        assert_eq!(
            verdicts,
            vec![
                vec![
                    (0, Possession::Proven),
                    (1, Possession::Failed),
                    (2, Possession::Missing)
                ],
                // Two equal proofs count without the bytes.
                vec![(0, Possession::Proven), (1, Possession::Proven)],
                // A lone proof without the bytes cannot be checked; no answer is no verdict.
                vec![(0, Possession::Unknown), (2, Possession::Unknown)],
            ]
        );
    }

    #[test]
    fn health_counts_short_missing_and_unverified_chunks_against_r() {
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let id = |i: u8| ChunkId([i; 32]);
        let ids = [id(1), id(2), id(3), id(4)];
        let found = [
            // R proven copies.
            ChunkHolders {
                proven: vec![a, b, c],
                unverified: vec![],
            },
            // Short, but busy claimants would bring it to R.
            ChunkHolders {
                proven: vec![a],
                unverified: vec![b, d],
            },
            // Short for sure.
            ChunkHolders {
                proven: vec![a, b],
                unverified: vec![],
            },
            // Missing.
            ChunkHolders::default(),
        ];
        let by_file = vec![
            ("z/ok".to_string(), vec![id(1), id(2)]),
            ("y/short".to_string(), vec![id(1), id(3)]),
            ("x/lost".to_string(), vec![id(4)]),
        ];
        assert_eq!(
            tally(3, by_file, &ids, &found),
            Health {
                chunks: 4,
                short: 3,
                missing: 1,
                unverified: 1,
                files: vec!["x/lost".to_string(), "y/short".to_string()],
            }
        );
    }
}

#[cfg(test)]
mod vouch_tests {
    use super::all_vouched;

    #[test]
    fn a_proof_counts_without_the_bytes_only_when_another_claimant_gave_the_same() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(all_vouched(&[a, a]));
        assert!(all_vouched(&[a, a, b, b]));
        // A lone claimant, or one whose answer nobody else gave, is checked against the bytes.
        assert!(!all_vouched(&[a]));
        assert!(!all_vouched(&[a, a, b]));
        assert!(!all_vouched(&[a, b]));
    }
}
