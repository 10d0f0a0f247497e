//! Repair: every node keeps the chunks it holds at R copies on their owners.
//!
//! For each chunk it holds, a node asks the nodes ranked above it and the chunk's owners
//! (have-batches, one round trip per peer) whether they hold it. The *responsible* node is the
//! highest-ranked live node that holds the chunk: normally the first owner, after a loss the
//! best-ranked survivor. Only it pushes copies to owners that lack one, so a loss does not make
//! every survivor push the same chunk. A holder that is not an owner drops its copy once every
//! owner has confirmed holding it (a join thereby moves data to the new node and nowhere else),
//! except while a live peer places chunks by another rule (a mixed-version network): each side
//! would drop copies the other side's owners hold, and a chunk whose owners by one rule are all
//! nodes on the other could lose every copy at once. Surplus copies are kept until then.
//! Passes run periodically and whenever membership changes; pushes are rate-limited.
//!
//! A "have" is a hint, never enough to drop a copy: before dropping, the node challenges every
//! owner with a fresh nonce to prove it holds the bytes ([`crate::cluster::audit`]), and keeps its copy
//! unless all of them do (a graceful leave checks the same way before it counts a copy handed
//! off). An owner that failed a proof recently counts as holding nothing here, and the next
//! node in rank takes its place as a target for this node's copies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::block::{ChunkId, ChunkStore};
use crate::cluster::ChunkRouter;
use crate::cluster::audit::Possession;
use crate::cluster::placement::Placement;
use crate::rpc::chunk::{ChunkClient, MAX_HAVE_BATCH};
use crate::util::blocking::off_workers;

/// Chunk pushes a repair pass keeps in flight.
const PUSHES_IN_FLIGHT: usize = 8;

/// Paces concurrent transfers to a byte rate: each reserves its slot on one shared timeline.
struct Pacer {
    bytes_per_sec: u64,
    next: parking_lot::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            next: parking_lot::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits until `bytes` more fit under the rate (at once when unlimited).
    async fn wait(&self, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let start = {
            let mut next = self.next.lock();
            let now = tokio::time::Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

pub struct RepairConfig {
    /// Time between periodic passes.
    pub interval: Duration,
    /// Bytes per second pushed by repair; 0 = unlimited.
    pub rate_bytes_per_sec: u64,
    /// Time between scrubs (re-hashing every stored chunk).
    pub scrub_interval: Duration,
    /// Bytes per second a scrub reads; 0 = unlimited.
    pub scrub_bytes_per_sec: u64,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub chunks: usize,
    pub pushed: usize,
    pub dropped: usize,
    /// Surplus copies not dropped because a live peer places chunks by another rule.
    pub kept: usize,
    /// Surplus copies not dropped because an owner did not prove it holds the chunk.
    pub unproven: usize,
    /// Chunks this node is responsible for that still lack copies on some owner.
    pub under_replicated: usize,
}

pub struct Repair {
    router: Arc<ChunkRouter>,
    store: Arc<ChunkStore>,
    client: ChunkClient,
    local: PeerId,
    config: RepairConfig,
    /// Notified when a pass is wanted soon (membership changed, a write fell short of R).
    trigger: Arc<Notify>,
    queue: AtomicU64,
    under_replicated: AtomicU64,
    /// Copies pushed, and their bytes, since start (metrics: the repair rate).
    pushed_copies: AtomicU64,
    pushed_bytes: AtomicU64,
    /// Passes completed since start (tests wait on it).
    passes: AtomicU64,
    /// Chunks this node keeps whatever their owners hold (pinned for offline use): never
    /// dropped as surplus copies.
    kept: parking_lot::RwLock<Arc<HashSet<ChunkId>>>,
    /// The node's namespace, once set: chunks only its kept earlier versions reference are
    /// neither pushed nor dropped (see [`Repair::set_namespace`]).
    namespace: std::sync::OnceLock<crate::namespace::NamespaceStore>,
}

impl Repair {
    /// Repairs what `router` places: its store, client and wake-up signal.
    pub fn new(router: Arc<ChunkRouter>, config: RepairConfig) -> Arc<Self> {
        Arc::new(Self {
            store: router.store().clone(),
            client: router.client().clone(),
            local: router.local(),
            trigger: router.repair_wanted(),
            router,
            config,
            queue: AtomicU64::new(0),
            under_replicated: AtomicU64::new(0),
            pushed_copies: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            kept: Default::default(),
            namespace: Default::default(),
        })
    }

    /// Lets passes see which held chunks only earlier versions kept here reference. Such a
    /// copy is never dropped as surplus (the version it belongs to stays restorable from this
    /// node whatever the placement says now), and never pushed: history is per node, so an
    /// owner that did not see the version would find the chunk unreferenced and collect it,
    /// and the push would repeat every pass for the whole retention. Those versions keep the
    /// copies placed when they were written.
    pub fn set_namespace(&self, namespace: crate::namespace::NamespaceStore) {
        let _ = self.namespace.set(namespace);
    }

    /// Sets the chunks this node keeps (its pins): a pass pushes them to their owners like
    /// any other, but never drops them.
    pub fn set_kept(&self, kept: HashSet<ChunkId>) {
        *self.kept.write() = Arc::new(kept);
    }

    /// Copies still to push in the running pass.
    pub fn queue(&self) -> u64 {
        self.queue.load(Ordering::Relaxed)
    }

    /// Chunks found short of R copies by the last pass.
    pub fn under_replicated(&self) -> u64 {
        self.under_replicated.load(Ordering::Relaxed)
    }

    /// Chunk copies pushed to other nodes (by repair passes and handoff) since start.
    pub fn pushed_copies(&self) -> u64 {
        self.pushed_copies.load(Ordering::Relaxed)
    }

    /// Bytes of the chunk copies pushed since start.
    pub fn pushed_bytes(&self) -> u64 {
        self.pushed_bytes.load(Ordering::Relaxed)
    }

    /// Repair passes completed since start.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    pub async fn run(self: Arc<Self>) {
        let mut retry = None;
        loop {
            let wait = retry.unwrap_or(self.config.interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.trigger.notified() => {
                    // Let a burst of membership changes settle into one pass.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let report = self
                .pass()
                .instrument(tracing::debug_span!("repair_pass", retry_after_short = ?retry))
                .await;
            retry = retry_after(retry, &report, self.config.interval);
            if report.pushed > 0
                || report.dropped > 0
                || report.kept > 0
                || report.unproven > 0
                || report.under_replicated > 0
            {
                tracing::info!(
                    chunks = report.chunks,
                    pushed = report.pushed,
                    dropped = report.dropped,
                    kept_for_peers_on_another_rule = report.kept,
                    kept_unproven = report.unproven,
                    under_replicated = report.under_replicated,
                    "repair pass"
                );
            }
        }
    }

    async fn holdings(
        &self,
        asks: HashMap<PeerId, Vec<ChunkId>>,
    ) -> HashMap<(PeerId, ChunkId), bool> {
        let mut known = HashMap::new();
        for (peer, ids) in asks {
            if !self.router.is_alive(&peer) {
                // Unknown holdings count as "does not hold": at worst an extra copy, which
                // the next pass drops.
                continue;
            }
            for batch in ids.chunks(MAX_HAVE_BATCH) {
                match self.client.have(peer, batch.to_vec()).await {
                    Ok(bits) => {
                        known.extend(batch.iter().zip(bits).map(|(id, has)| ((peer, *id), has)))
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "repair: peer did not answer");
                        break;
                    }
                }
            }
        }
        known
    }

    /// The chunks stored here, with their sizes (empty if the store cannot be listed).
    async fn held(&self) -> Vec<(ChunkId, u64)> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.list()).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot list the chunk store");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Scrubs until its task is cancelled: every `scrub_interval`, re-hashes every stored chunk (rate-limited); a
    /// corrupt copy is deleted by the store and fetched again from a replica.
    pub async fn run_scrub(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.scrub_interval).await;
            let (checked, repaired, lost) = self.scrub().await;
            if repaired > 0 || lost > 0 {
                tracing::warn!(checked, repaired, lost, "scrub found corrupt chunks");
            }
        }
    }

    /// One scrub: returns (chunks checked, corrupt ones restored from a replica, corrupt ones
    /// not restorable now — another holder's repair pass brings those back).
    pub async fn scrub(&self) -> (usize, usize, usize) {
        let held = self.held().await;
        let (mut repaired, mut lost) = (0, 0);
        for (id, size) in &held {
            let store = self.store.clone();
            let id = *id;
            let result = tokio::task::spawn_blocking(move || store.get(&id)).await;
            if let Ok(Err(crate::block::StoreError::Corrupt(_))) = result {
                match self.router.fetch_async(&id).await {
                    Ok(bytes) => {
                        let store = self.store.clone();
                        match tokio::task::spawn_blocking(move || store.put(&id, &bytes)).await {
                            Ok(Ok(_)) => repaired += 1,
                            _ => lost += 1,
                        }
                    }
                    Err(_) => lost += 1,
                }
            }
            if self.config.scrub_bytes_per_sec > 0 {
                let secs = *size as f64 / self.config.scrub_bytes_per_sec as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
        (held.len(), repaired, lost)
    }

    /// Before a graceful leave: makes sure every chunk this node holds is on its owners as
    /// they will be without it. Returns what it pushed and how many chunks stayed short: not on
    /// every owner, or with no owner at all (no other live node holds chunks).
    pub async fn handoff(&self) -> PassReport {
        let held: Vec<ChunkId> = self.held().await.into_iter().map(|(id, _)| id).collect();
        let placement = self.router.placement_without_self();
        let r = self.router.replicas();
        let failed = distrusted(self.router.failed_holders());
        // The owners of every held chunk, on the blocking pool (see `pass`).
        let Some(plans) = off_workers(move || {
            held.into_iter()
                .map(|id| {
                    let owners = target_owners(&placement, &id, r, &failed);
                    (id, owners)
                })
                .collect::<Vec<(ChunkId, Vec<PeerId>)>>()
        })
        .await
        else {
            return PassReport::default();
        };
        let mut asks: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
        for (id, owners) in &plans {
            for o in owners {
                asks.entry(*o).or_default().push(*id);
            }
        }
        let chunks = plans.len();
        let orphaned = plans.iter().filter(|(_, owners)| owners.is_empty()).count();
        // This node's copies are about to go: a claim counts only once proven, but the leave
        // has a deadline. Copies no owner claims are pushed at once; meanwhile each claiming
        // owner is checked by a sample, all owners in parallel (see `audit::sample_claims`),
        // and the claims of one that fails the sample are pushed after.
        let claimed = self.holdings(asks).await;
        let mut claims: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
        for ((peer, id), has) in &claimed {
            if *has {
                claims.entry(*peer).or_default().push(*id);
            }
        }
        let claims_of = |o: &PeerId, id: &ChunkId| claimed.get(&(*o, *id)) == Some(&true);
        let unclaimed: Vec<(ChunkId, Vec<PeerId>)> = plans
            .iter()
            .map(|(id, owners)| {
                let missing = owners.iter().filter(|o| !claims_of(o, id)).copied();
                (*id, missing.collect())
            })
            .collect();
        let (first, trusted) = tokio::join!(
            self.push_all(unclaimed),
            crate::cluster::audit::sample_claims(&self.router, claims, "handoff")
        );
        let distrusted: Vec<(ChunkId, Vec<PeerId>)> = plans
            .into_iter()
            .map(|(id, owners)| {
                let missing = owners
                    .into_iter()
                    .filter(|o| claims_of(o, &id) && trusted.get(o) != Some(&true))
                    .collect();
                (id, missing)
            })
            .collect();
        let then = self.push_all(distrusted).await;
        PassReport {
            chunks,
            pushed: first.pushed + then.pushed,
            under_replicated: (first.under_replicated + then.under_replicated + orphaned)
                .min(chunks),
            ..first
        }
    }

    /// Pushes each chunk to the peers that lack it, [`PUSHES_IN_FLIGHT`] at a time (one
    /// transfer at a time leaves the link idle for a round trip per chunk), paced to the rate
    /// limit, counting progress in `repair_queue`.
    /// Of the chunks a pass would push or drop, those only this node's kept versions
    /// reference.
    async fn history_only(
        &self,
        pushes: &[(ChunkId, Vec<PeerId>)],
        drops: &[(ChunkId, Vec<PeerId>)],
    ) -> HashSet<ChunkId> {
        let Some(ns) = self.namespace.get().cloned() else {
            return HashSet::new();
        };
        let ids: Vec<ChunkId> = pushes.iter().chain(drops).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return HashSet::new();
        }
        let found = tokio::task::spawn_blocking(move || {
            let only = ns.kept_only_for_history(&ids)?;
            Ok::<_, crate::namespace::NamespaceError>(
                ids.into_iter()
                    .zip(only)
                    .filter(|(_, only)| *only)
                    .map(|(id, _)| id)
                    .collect::<HashSet<_>>(),
            )
        })
        .await;
        match found {
            Ok(Ok(set)) => set,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "repair cannot read the namespace; keeping every copy this pass");
                drops.iter().map(|(id, _)| *id).collect()
            }
            Err(_) => drops.iter().map(|(id, _)| *id).collect(),
        }
    }

    async fn push_all(&self, pushes: Vec<(ChunkId, Vec<PeerId>)>) -> PassReport {
        use libp2p::futures::StreamExt;
        self.queue.store(
            pushes.iter().map(|(_, m)| m.len() as u64).sum(),
            Ordering::Relaxed,
        );
        let pacer = Pacer::new(self.config.rate_bytes_per_sec);
        let unreachable = parking_lot::Mutex::new(std::collections::HashSet::new());
        let results: Vec<(usize, bool)> = libp2p::futures::stream::iter(pushes)
            .filter(|(_, missing)| std::future::ready(!missing.is_empty()))
            .map(|(id, missing)| self.push_one(id, missing, &pacer, &unreachable))
            .buffer_unordered(PUSHES_IN_FLIGHT)
            .collect()
            .await;
        PassReport {
            pushed: results.iter().map(|(n, _)| n).sum(),
            under_replicated: results.iter().filter(|(_, short)| *short).count(),
            ..Default::default()
        }
    }

    /// Pushes one chunk to the owners that lack it: (copies pushed, whether any failed). An
    /// owner that failed once in this pass, or is no longer alive in the view, is skipped for the rest
    /// of it: a cut-off owner must not hold every other push up for a request timeout each (the
    /// next pass, started when it turns dead or comes back, places those copies).
    async fn push_one(
        &self,
        id: ChunkId,
        missing: Vec<PeerId>,
        pacer: &Pacer,
        unreachable: &parking_lot::Mutex<std::collections::HashSet<PeerId>>,
    ) -> (usize, bool) {
        let store = self.store.clone();
        let data = match tokio::task::spawn_blocking(move || store.get(&id)).await {
            Ok(Ok(d)) => d,
            _ => {
                self.queue
                    .fetch_sub(missing.len() as u64, Ordering::Relaxed);
                // Unreadable here: the owners that lack it stay without it.
                return (0, true);
            }
        };
        let (mut pushed, mut short) = (0, false);
        for owner in missing {
            self.queue.fetch_sub(1, Ordering::Relaxed);
            if unreachable.lock().contains(&owner) || !self.router.is_alive(&owner) {
                short = true;
                continue;
            }
            pacer.wait(data.len()).await;
            match self.client.put(owner, id, &data).await {
                Ok(()) => {
                    pushed += 1;
                    self.pushed_copies.fetch_add(1, Ordering::Relaxed);
                    self.pushed_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(peer = %owner, chunk = %id, error = %e, "repair push failed");
                    unreachable.lock().insert(owner);
                    short = true;
                }
            }
        }
        (pushed, short)
    }

    /// One pass over every chunk this node holds. The planning (ranking the members for every
    /// held chunk, then deciding from the peers' answers) runs on the blocking pool; the have
    /// requests, pushes and proofs run here.
    pub async fn pass(&self) -> PassReport {
        let held: Vec<ChunkId> = self.held().await.into_iter().map(|(id, _)| id).collect();
        let view = PassView {
            placement: self.router.placement(),
            local: self.local,
            replicas: self.router.replicas(),
            failed: distrusted(self.router.failed_holders()),
        };
        let Some((plans, asks)) = off_workers(move || plan_pass(&view, held)).await else {
            return PassReport::default();
        };
        let known = self.holdings(asks).await;
        let mut report = PassReport {
            chunks: plans.len(),
            ..Default::default()
        };
        let (local, failed) = (self.local, distrusted(self.router.failed_holders()));
        let mixed_rules = self.router.peers_on_another_rule() > 0;
        let Some(decided) =
            off_workers(move || decide_pass(local, &failed, plans, &known, mixed_rules)).await
        else {
            return report;
        };
        let PassDecisions {
            pushes,
            drops,
            kept,
        } = decided;
        report.kept = kept;
        let pinned = self.kept.read().clone();
        let history_only = self.history_only(&pushes, &drops).await;
        let drops: Vec<_> = drops
            .into_iter()
            .filter(|(id, _)| !pinned.contains(id) && !history_only.contains(id))
            .collect();
        let pushes: Vec<_> = pushes
            .into_iter()
            .filter(|(id, _)| !history_only.contains(id))
            .collect();
        let pushed = self.push_all(pushes).await;
        report.pushed = pushed.pushed;
        report.under_replicated = pushed.under_replicated;
        // Every owner proves it holds the bytes, or this copy stays.
        let mut challenges: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
        for (id, owners) in &drops {
            for o in owners {
                challenges.entry(*o).or_default().push(*id);
            }
        }
        let proven =
            crate::cluster::audit::challenge_from_store(&self.router, challenges, "repair").await;
        let (drops, unproven): (Vec<_>, Vec<_>) = drops.into_iter().partition(|(id, owners)| {
            owners
                .iter()
                .all(|o| proven.get(&(*o, *id)) == Some(&Possession::Proven))
        });
        report.unproven = unproven.len();
        for (id, _) in drops {
            let store = self.store.clone();
            if matches!(
                tokio::task::spawn_blocking(move || store.delete(&id)).await,
                Ok(Ok(()))
            ) {
                report.dropped += 1;
            }
        }
        self.under_replicated
            .store(report.under_replicated as u64, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
        report
    }
}

/// The first wait before a pass left short runs again.
const RETRY_SHORT_PASS: Duration = Duration::from_secs(2);

/// When the next pass runs after `report` (`None`: at the periodic interval). A pass that
/// left chunks short of their owners (a push refused as busy, a connection closed under it,
/// an owner out of space) runs again soon, since nothing else may start one before the
/// interval: 2 s after the first, doubling after each pass still short up to the interval,
/// so an owner that stays unreachable costs a few passes, not a pass every few seconds.
fn retry_after(
    previous: Option<Duration>,
    report: &PassReport,
    interval: Duration,
) -> Option<Duration> {
    if report.under_replicated == 0 {
        return None;
    }
    Some(previous.map_or(RETRY_SHORT_PASS, |d| d * 2).min(interval))
}

/// The owners this node places `id`'s copies on: its R owners, except that one caught not
/// holding what it claims (`failed`) is replaced by the next in rank.
fn target_owners(
    placement: &Placement,
    id: &ChunkId,
    r: usize,
    failed: &HashSet<PeerId>,
) -> Vec<PeerId> {
    let owners = placement.owners(id, r);
    if !owners.iter().any(|o| failed.contains(o)) {
        return owners;
    }
    placement
        .owners(id, r + failed.len())
        .into_iter()
        .filter(|o| !failed.contains(o))
        .take(r)
        .collect()
}

/// The holders distrusted now ([`crate::cluster::audit::FailedHolders`]), as a set a plan
/// can take along.
fn distrusted(failed: &crate::cluster::audit::FailedHolders) -> HashSet<PeerId> {
    failed.list().into_iter().map(|(peer, _)| peer).collect()
}

/// What a pass plans with, taken at its start and owned, so the planning runs on the
/// blocking pool.
struct PassView {
    placement: Arc<Placement>,
    local: PeerId,
    replicas: usize,
    /// Holders distrusted at the start of the pass.
    failed: HashSet<PeerId>,
}

/// One held chunk in a pass: where its copies go, and whose holdings decide whether this node
/// is the one to push them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChunkPlan {
    id: ChunkId,
    /// The owners this node places the chunk's copies on ([`target_owners`]).
    owners: Vec<PeerId>,
    /// The peers ranked above this node for the chunk (all of them when it is not ranked):
    /// this node is responsible for the chunk unless one of them holds it. The rest of the
    /// ranking is not kept.
    above: Vec<PeerId>,
}

/// Plans a pass over `held`: each chunk's [`ChunkPlan`], and which chunks to ask each peer
/// about (the nodes ranked above this one, and the owners; a distrusted holder's word is not
/// asked for).
fn plan_pass(
    view: &PassView,
    held: Vec<ChunkId>,
) -> (Vec<ChunkPlan>, HashMap<PeerId, Vec<ChunkId>>) {
    let mut plans = Vec::with_capacity(held.len());
    let mut asks: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
    for id in held {
        let mut above = view.placement.ranked(&id);
        if let Some(my_rank) = above.iter().position(|p| *p == view.local) {
            above.truncate(my_rank);
        }
        above.shrink_to_fit();
        let owners = target_owners(&view.placement, &id, view.replicas, &view.failed);
        // The owners ranked below this node (or standing in for failed ones) are asked too.
        let others = owners.iter().filter(|o| !above.contains(o));
        for p in above.iter().chain(others) {
            if *p != view.local && !view.failed.contains(p) {
                asks.entry(*p).or_default().push(id);
            }
        }
        plans.push(ChunkPlan { id, owners, above });
    }
    (plans, asks)
}

/// What a pass does, decided from its plans and the peers' answers.
#[derive(Debug, Default, PartialEq, Eq)]
struct PassDecisions {
    /// Chunks this node is responsible for, with the owners that lack them.
    pushes: Vec<(ChunkId, Vec<PeerId>)>,
    /// Surplus copies, with the owners that must prove they hold the chunk before it goes.
    drops: Vec<(ChunkId, Vec<PeerId>)>,
    /// Surplus copies kept because a live peer places chunks by another rule.
    kept: usize,
}

/// Decides a pass from `plans` and `known` (what the asked peers said they hold; a peer not
/// known to hold a chunk, or distrusted in `failed`, counts as not holding it). A non-owner
/// drops its copy once every owner holds one; the responsible node (no node ranked above it
/// holds the chunk) pushes copies to the owners that lack one.
fn decide_pass(
    local: PeerId,
    failed: &HashSet<PeerId>,
    plans: Vec<ChunkPlan>,
    known: &HashMap<(PeerId, ChunkId), bool>,
    mixed_rules: bool,
) -> PassDecisions {
    let holds = |p: &PeerId, id: &ChunkId| {
        *p == local || (!failed.contains(p) && known.get(&(*p, *id)).copied().unwrap_or(false))
    };
    let mut decided = PassDecisions::default();
    for plan in plans {
        let ChunkPlan { id, owners, above } = plan;
        let i_own = owners.contains(&local);
        let all_owners_hold = owners.iter().all(|o| holds(o, &id));
        if !i_own && all_owners_hold && !owners.is_empty() {
            if mixed_rules {
                decided.kept += 1;
            } else {
                decided.drops.push((id, owners));
            }
            continue;
        }
        // Responsible: no node ranked above us holds it.
        let responsible = above.iter().all(|p| !holds(p, &id));
        if !responsible {
            continue;
        }
        let missing: Vec<PeerId> = owners.iter().filter(|o| !holds(o, &id)).copied().collect();
        if !missing.is_empty() {
            decided.pushes.push((id, missing));
        }
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_owner_is_replaced_by_the_next_in_rank() {
        use crate::cluster::placement::{Candidate, Placement};
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        let placement = Placement::new(peers.iter().map(|&peer| Candidate {
            peer,
            capacity: 100,
        }));
        let id = ChunkId([9; 32]);
        let holders = crate::cluster::audit::FailedHolders::default();
        let owners = target_owners(&placement, &id, 3, &distrusted(&holders));
        assert_eq!(owners, placement.owners(&id, 3));
        holders.failed(owners[0]);
        holders.failed(owners[2]);
        let ranked = placement.owners(&id, 5);
        assert_eq!(
            target_owners(&placement, &id, 3, &distrusted(&holders)),
            vec![ranked[1], ranked[3], ranked[4]]
        );
        // A failed peer that owns nothing here changes nothing.
        let other = crate::cluster::audit::FailedHolders::default();
        other.failed(PeerId::random());
        assert_eq!(
            target_owners(&placement, &id, 3, &distrusted(&other)),
            owners
        );
    }

    /// A fixed peer: its id from a fixed ed25519 secret.
    fn peer(i: u8) -> PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([i + 1; 32])
            .expect("a valid secret")
            .public()
            .to_peer_id()
    }

    /// A pass's asks and decisions as `pass` made them before its planning moved to the
    /// blocking pool: in one loop, keeping each chunk's whole ranking, with `holdings` in
    /// between (here: `answer` for every asked pair).
    fn reference_pass(
        placement: &Placement,
        local: PeerId,
        r: usize,
        failed: &HashSet<PeerId>,
        held: Vec<ChunkId>,
        answer: impl Fn(&PeerId, &ChunkId) -> bool,
        mixed_rules: bool,
    ) -> (HashMap<PeerId, Vec<ChunkId>>, PassDecisions) {
        let mut plans = Vec::with_capacity(held.len());
        let mut asks: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
        for id in held {
            let ranked = placement.ranked(&id);
            let owners = target_owners(placement, &id, r, failed);
            let my_rank = ranked
                .iter()
                .position(|p| *p == local)
                .unwrap_or(ranked.len());
            let above = &ranked[..my_rank.max(owners.len()).min(ranked.len())];
            let stand_ins = owners.iter().filter(|o| !above.contains(o));
            for p in above.iter().chain(stand_ins) {
                if *p != local && !failed.contains(p) {
                    asks.entry(*p).or_default().push(id);
                }
            }
            plans.push((id, ranked, owners, my_rank));
        }
        let known: HashMap<(PeerId, ChunkId), bool> = asks
            .iter()
            .flat_map(|(p, ids)| ids.iter().map(|id| ((*p, *id), answer(p, id))))
            .collect();
        let holds = |p: &PeerId, id: &ChunkId| {
            *p == local || (!failed.contains(p) && known.get(&(*p, *id)).copied().unwrap_or(false))
        };
        let mut decided = PassDecisions::default();
        for (id, ranked, owners, my_rank) in plans {
            let i_own = owners.contains(&local);
            let all_owners_hold = owners.iter().all(|o| holds(o, &id));
            if !i_own && all_owners_hold && !owners.is_empty() {
                if mixed_rules {
                    decided.kept += 1;
                } else {
                    decided.drops.push((id, owners));
                }
                continue;
            }
            let responsible = ranked.iter().take(my_rank).all(|p| !holds(p, &id));
            if !responsible {
                continue;
            }
            let missing: Vec<PeerId> = owners.iter().filter(|o| !holds(o, &id)).copied().collect();
            if !missing.is_empty() {
                decided.pushes.push((id, missing));
            }
        }
        (asks, decided)
    }

    #[test]
    fn a_pass_planned_off_the_workers_decides_as_the_inline_pass_did() {
        use crate::cluster::placement::Candidate;
        let peers: Vec<PeerId> = (0..14).map(peer).collect();
        // Two readers (capacity 0, ranked last), the rest holders of unequal capacity.
        let capacity = |i: usize| if i >= 12 { 0 } else { 100 + 40 * i as u64 };
        let placement = Arc::new(Placement::new(peers.iter().enumerate().map(
            |(i, &peer)| Candidate {
                peer,
                capacity: capacity(i),
            },
        )));
        let held: Vec<ChunkId> = (0..400u32)
            .map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        // Whether a peer says it holds a chunk: fixed, about half of the pairs.
        let answer = |p: &PeerId, id: &ChunkId| {
            let mut h = blake3::Hasher::new();
            h.update(&p.to_bytes());
            h.update(&id.0);
            h.finalize().as_bytes()[0] < 128
        };
        let mut pushes_and_drops = (0, 0, 0);
        for (local, failed) in [
            (peers[0], vec![]),
            (peers[5], vec![peers[1], peers[7]]),
            (peers[11], vec![peers[3]]),
            // A reader holding copies (ranked below every holder).
            (peers[13], vec![peers[2], peers[9], peers[10]]),
        ] {
            let failed: HashSet<PeerId> = failed.into_iter().collect();
            for mixed_rules in [false, true] {
                let (want_asks, want) = reference_pass(
                    &placement,
                    local,
                    3,
                    &failed,
                    held.clone(),
                    answer,
                    mixed_rules,
                );
                let view = PassView {
                    placement: placement.clone(),
                    local,
                    replicas: 3,
                    failed: failed.clone(),
                };
                let (plans, asks) = plan_pass(&view, held.clone());
                assert_eq!(asks, want_asks);
                for plan in &plans {
                    // Only the peers ranked above this node are kept.
                    let ranked = placement.ranked(&plan.id);
                    let my_rank = ranked.iter().position(|p| *p == local);
                    assert_eq!(plan.above.len(), my_rank.unwrap_or(ranked.len()));
                }
                let known: HashMap<(PeerId, ChunkId), bool> = asks
                    .iter()
                    .flat_map(|(p, ids)| ids.iter().map(|id| ((*p, *id), answer(p, id))))
                    .collect();
                let got = decide_pass(local, &failed, plans, &known, mixed_rules);
                assert_eq!(got, want);
                pushes_and_drops.0 += got.pushes.len();
                pushes_and_drops.1 += got.drops.len();
                pushes_and_drops.2 += got.kept;
            }
        }
        // The input exercises every kind of decision.
        let (pushes, drops, kept) = pushes_and_drops;
        assert!(pushes > 0 && drops > 0 && kept > 0, "{pushes_and_drops:?}");
    }

    #[test]
    fn a_short_pass_runs_again_sooner_and_backs_off_to_the_interval() {
        let interval = Duration::from_secs(60);
        let short = PassReport {
            under_replicated: 3,
            ..Default::default()
        };
        let mut waits = Vec::new();
        let mut retry = None;
        for _ in 0..7 {
            retry = retry_after(retry, &short, interval);
            waits.push(retry.unwrap().as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        // A pass that placed everything goes back to the periodic interval.
        assert_eq!(retry_after(retry, &PassReport::default(), interval), None);
        // A short interval bounds the first retry too.
        let quick = Duration::from_secs(1);
        assert_eq!(retry_after(None, &short, quick), Some(quick));
    }

    #[tokio::test]
    async fn pacer_spaces_concurrent_transfers_to_the_rate() {
        // 5 transfers of 1,000 bytes at 100,000 B/s: the last may start only 40 ms in,
        // however many run at once.
        let pacer = Pacer::new(100_000);
        let t0 = tokio::time::Instant::now();
        libp2p::futures::future::join_all((0..5).map(|_| pacer.wait(1_000))).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
        // Unlimited never waits on the timeline.
        let free = Pacer::new(0);
        free.wait(usize::MAX).await;
        assert!(*free.next.lock() <= tokio::time::Instant::now());
    }
}
