//! Replication ingest: what peers send, merged into the mount. Volume records first (into the
//! registry; they mount, update or hide volumes); then every entry goes to the core of its
//! volume, or to the store for a volume this node keeps without mounting it, or waits (bounded)
//! for its volume's record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{Mount, Slot};
use crate::fs::merge::purge_refused_versions;
use crate::fs::{FsResult, RemoteApply};
use crate::namespace::volume::VolumeRecord;
use crate::namespace::{Entry, Volume, VolumeId};

/// Entries of a volume whose record has not arrived yet wait here, unverified (nothing can
/// check them before the record names the volume's writers). Bounded in number, in bytes per
/// sending peer and in bytes in all: past a bound the oldest are dropped (counted in status,
/// `held_entries.dropped`), and anti-entropy offers them again once the record is here. A peer
/// can thus hold at most [`HELD_BYTES_PER_PEER`] of this node's memory this way, and all peers
/// together [`HELD_BYTES`].
pub(super) const MAX_HELD: usize = 4096;
pub const HELD_BYTES_PER_PEER: usize = 8 << 20;
pub const HELD_BYTES: usize = 64 << 20;

/// Who sent held entries (`None`: not a peer, e.g. entries applied again locally).
pub type Source = Option<libp2p::PeerId>;

/// `held_entries` in status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldStatus {
    /// Entries waiting for their volume's record, and their size in memory.
    pub entries: u64,
    pub bytes: u64,
    /// Entries dropped since start: over a peer's share, over the total, or too many.
    pub dropped: u64,
}

/// Whether `e` is by an expelled node (`expelled`: node tag → revocation time, unix ms) and
/// stamped after its revocation.
fn written_after_expulsion(expelled: &HashMap<u64, u64>, e: &Entry) -> bool {
    expelled
        .get(&e.origin)
        .is_some_and(|at_ms| e.hlc.millis() > *at_ms)
}

/// What an entry costs held in memory (its variable parts, and the rest roughly).
pub(super) fn held_size(e: &Entry) -> usize {
    e.payload.len() + e.chunks.len() * 32 + e.seen.len() * 16 + 256
}

pub(super) struct HeldEntry {
    pub(super) entry: Entry,
    bytes: usize,
    source: Source,
}

/// The entries waiting for their volume's record, oldest first.
#[derive(Default)]
pub(super) struct Held {
    pub(super) queue: VecDeque<HeldEntry>,
    pub(super) bytes: usize,
    pub(super) by_source: HashMap<Source, usize>,
    dropped: u64,
    /// Sources whose entries were dropped, logged once each (bounded like the rest).
    warned: HashSet<Source>,
}

impl Held {
    fn remove_at(&mut self, i: usize) -> Option<HeldEntry> {
        let h = self.queue.remove(i)?;
        self.bytes -= h.bytes;
        if let Some(n) = self.by_source.get_mut(&h.source) {
            *n -= h.bytes;
            if *n == 0 {
                self.by_source.remove(&h.source);
            }
        }
        Some(h)
    }

    fn drop_one(&mut self, source: Source, why: &'static str) {
        self.dropped += 1;
        if self.warned.len() >= MAX_HELD {
            self.warned.clear();
        }
        if self.warned.insert(source) {
            tracing::warn!(peer = ?source, why, "entries of a volume with no record yet dropped (further drops are only counted in status)");
        }
    }

    /// Holds `entry` from `source`, dropping the oldest held entries as needed to stay within
    /// the bounds (or `entry` itself, when it alone is over a peer's share).
    pub(super) fn push(&mut self, entry: Entry, source: Source) {
        let bytes = held_size(&entry);
        if bytes > HELD_BYTES_PER_PEER {
            self.drop_one(source, "entry over a peer's share");
            return;
        }
        while self.by_source.get(&source).copied().unwrap_or(0) + bytes > HELD_BYTES_PER_PEER {
            let Some(i) = self.queue.iter().position(|h| h.source == source) else {
                break;
            };
            self.remove_at(i);
            self.drop_one(source, "over the peer's share");
        }
        while !self.queue.is_empty()
            && (self.bytes + bytes > HELD_BYTES || self.queue.len() >= MAX_HELD)
        {
            let oldest = self.remove_at(0).map(|h| h.source).unwrap_or(None);
            self.drop_one(oldest, "over the total");
        }
        self.bytes += bytes;
        *self.by_source.entry(source).or_default() += bytes;
        self.queue.push_back(HeldEntry {
            entry,
            bytes,
            source,
        });
    }

    /// Takes out every held entry of `volume`.
    pub(super) fn take(&mut self, volume: &VolumeId) -> Vec<Entry> {
        let (now, later): (VecDeque<HeldEntry>, VecDeque<HeldEntry>) =
            std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|h| h.entry.volume == *volume);
        self.queue = later;
        for h in &now {
            self.bytes -= h.bytes;
            if let Some(n) = self.by_source.get_mut(&h.source) {
                *n -= h.bytes;
                if *n == 0 {
                    self.by_source.remove(&h.source);
                }
            }
        }
        now.into_iter().map(|h| h.entry).collect()
    }

    pub(super) fn status(&self) -> HeldStatus {
        HeldStatus {
            entries: self.queue.len() as u64,
            bytes: self.bytes as u64,
            dropped: self.dropped,
        }
    }
}

impl Mount {
    /// A stored record: into the registry; mounts, updates or hides the volume for this user.
    pub(super) fn take_record(&self, entry: &Entry) -> FsResult<()> {
        let record = match VolumeRecord::from_entry(entry) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(volume = %entry.volume, error = %e, "volume record refused");
                return Ok(());
            }
        };
        let opened = Volume::from_record(&record, &self.user);
        // Stored versions need a new look only when the removals changed: taking the same
        // record again (any member can send one) costs no scan.
        let removals_changed = record.has_removals()
            && self
                .registry
                .read()
                .get(&entry.volume)
                .is_none_or(|old| old.revoked != record.revoked || old.kept != record.kept);
        let retention_changed = self
            .registry
            .read()
            .get(&entry.volume)
            .is_none_or(|old| old.retention != record.retention);
        self.registry.write().insert(entry.volume, record);
        if retention_changed {
            self.refresh_retention();
        }
        let known = self
            .slots
            .read()
            .iter()
            .position(|s| s.volume.id == entry.volume);
        match (opened, known) {
            (Ok(Some(volume)), Some(i)) => {
                let (core, member) = {
                    let slots = self.slots.read();
                    (slots[i].core.clone(), slots[i].member)
                };
                if member {
                    core.set_volume(volume.clone())?;
                } else {
                    // Its core missed what happened while this user was out: load afresh.
                    tracing::info!(volume = %volume.id, "added back to a volume");
                    let fresh = self.load_core(volume.clone())?;
                    self.slots.write()[i].core = fresh;
                }
                let mut slots = self.slots.write();
                slots[i].volume = volume;
                slots[i].member = true;
            }
            (Ok(Some(volume)), None) => {
                tracing::info!(volume = %volume.id, "member of a volume: mounting it");
                let core = self.load_core(volume.clone())?;
                self.slots.write().push(Slot {
                    volume,
                    core,
                    member: true,
                });
            }
            (Ok(None), Some(i)) => {
                let mut slots = self.slots.write();
                if slots[i].member {
                    tracing::warn!(volume = %entry.volume, "removed from a volume: it leaves the mount");
                }
                slots[i].member = false;
            }
            (Ok(None), None) => {}
            (Err(e), _) => {
                tracing::warn!(volume = %entry.volume, error = %e, "volume record does not open")
            }
        }
        // Versions stored before a removal in this record reached this node that it does not
        // keep.
        if removals_changed {
            self.purge_refused(&entry.volume)?;
        }
        // Entries that waited for this record.
        let waiting = self.held.lock().take(&entry.volume);
        if !waiting.is_empty() {
            self.apply_remote(waiting)?;
        }
        Ok(())
    }

    /// Drops the stored versions of `volume` that its record no longer admits (see
    /// [`FsCore::purge_refused`]); for a volume this node does not mount, from the store only.
    fn purge_refused(&self, volume: &VolumeId) -> FsResult<usize> {
        if let Some(core) = self.core_of_volume(volume) {
            return core.purge_refused();
        }
        let Some(record) = self.registry.read().get(volume).cloned() else {
            return Ok(0);
        };
        if !record.has_removals() {
            return Ok(0);
        }
        let (dropped, _) = purge_refused_versions(
            &self.namespace,
            &self.template.cache,
            &self.rejected,
            |v| v == volume,
            |e| !record.can_write(e),
        )?;
        Ok(dropped)
    }

    /// Merges entries from a peer. Volume records first (each must be signed by its volume's
    /// owner); then every entry of a volume with a record must be by one of its writers, and
    /// is applied by that volume's core when this node mounts it, else stored as is (this node
    /// keeps and serves it without keys). Entries of a volume whose record has not arrived
    /// wait for it.
    pub fn apply_remote(&self, entries: Vec<Entry>) -> FsResult<RemoteApply> {
        self.apply_from(None, entries)
    }

    /// As [`apply_remote`](Self::apply_remote), for entries sent by `source` (what it may
    /// have held here is bounded per source).
    pub fn apply_from(&self, source: Source, entries: Vec<Entry>) -> FsResult<RemoteApply> {
        let mut report = RemoteApply::default();
        // Refusals made here; a core counts its own.
        let mut refused = 0usize;
        let entries = {
            let expelled = self.expelled.read();
            if expelled.is_empty() {
                entries
            } else {
                let before = entries.len();
                let kept: Vec<Entry> = entries
                    .into_iter()
                    .filter(|e| !written_after_expulsion(&expelled, e))
                    .collect();
                refused += before - kept.len();
                kept
            }
        };
        let (records, others): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(VolumeRecord::is_record);
        let mut valid_records = Vec::new();
        for r in records {
            self.clock.observe(r.hlc);
            if r.verify_signature().is_ok() && VolumeRecord::from_entry(&r).is_ok() {
                valid_records.push(r);
            } else {
                refused += 1;
            }
        }
        if !valid_records.is_empty() {
            let _g = self.record_changes.lock();
            let committed = self.namespace.commit(&valid_records)?;
            report.applied += committed.applied.len();
            report.forgotten.extend(committed.forgotten);
            for e in &committed.applied {
                self.take_record(e)?;
            }
        }
        let mut batches: HashMap<VolumeId, Vec<Entry>> = HashMap::new();
        {
            let registry = self.registry.read();
            let mut held = Vec::new();
            for e in others {
                self.clock.observe(e.hlc);
                if e.volume == self.network_id {
                    batches.entry(e.volume).or_default().push(e);
                    continue;
                }
                match registry.get(&e.volume) {
                    Some(record) if record.can_write(&e) => {
                        batches.entry(e.volume).or_default().push(e)
                    }
                    Some(_) => refused += 1,
                    None => held.push(e),
                }
            }
            if !held.is_empty() {
                let mut waiting = self.held.lock();
                for e in held {
                    waiting.push(e, source);
                }
            }
        }
        for (volume, batch) in batches {
            let part = match self.core_of_volume(&volume) {
                Some(core) => core.apply_remote(batch)?,
                None => {
                    let (good, bad): (Vec<Entry>, Vec<Entry>) = batch
                        .into_iter()
                        .partition(|e| e.verify_signature().is_ok());
                    let committed = self.namespace.commit(&good)?;
                    self.erase(&committed.purged);
                    refused += bad.len();
                    // A removal may have arrived since the check: what it refuses is not kept.
                    let stale = self
                        .registry
                        .read()
                        .get(&volume)
                        .is_some_and(|r| committed.applied.iter().any(|e| !r.can_write(e)));
                    if stale {
                        self.purge_refused(&volume)?;
                    }
                    RemoteApply {
                        applied: committed.applied.len(),
                        rejected: 0,
                        forgotten: committed.forgotten,
                    }
                }
            };
            report.applied += part.applied;
            report.rejected += part.rejected;
            report.forgotten.extend(part.forgotten);
        }
        report.rejected += refused;
        self.rejected.fetch_add(refused as u64, Ordering::Relaxed);
        if report.applied > 0 {
            self.applied.notify_one();
        }
        Ok(report)
    }

    /// Refuses, from now on, entries written by the node tagged `origin` (an expelled node)
    /// stamped after `at_unix_secs`: what it wrote before its expulsion stays.
    pub fn refuse_node_after(&self, origin: u64, at_unix_secs: u64) {
        let at_ms = at_unix_secs.saturating_mul(1000);
        let mut expelled = self.expelled.write();
        let t = expelled.entry(origin).or_insert(at_ms);
        *t = (*t).min(at_ms);
    }

    /// Sets the network volume's key epochs (oldest first, see
    /// [`Volume::set_network_epochs`]): what is written from now on uses the newest; entries
    /// that only the new keys open show up. True when the keys changed.
    pub fn set_network_epochs(&self, epochs: &[[u8; 32]]) -> FsResult<bool> {
        let mut volume = self.network.volume.read().clone();
        if !volume.set_network_epochs(epochs) {
            return Ok(false);
        }
        self.network.set_volume(volume)?;
        Ok(true)
    }

    /// Expires tombstones every member has seen (see
    /// [`FsCore::expire`](crate::fs::FsCore::expire)), in any volume.
    pub fn expire(&self, tombstones: Vec<Entry>) -> FsResult<usize> {
        let mut by_volume: HashMap<VolumeId, Vec<Entry>> = HashMap::new();
        for t in tombstones {
            by_volume.entry(t.volume).or_default().push(t);
        }
        let mut expired = 0;
        for (volume, batch) in by_volume {
            expired += match self.core_of_volume(&volume) {
                Some(core) => core.expire(batch)?,
                None => {
                    let valid: Vec<Entry> = {
                        let registry = self.registry.read();
                        batch
                            .into_iter()
                            .filter(|t| {
                                t.deleted
                                    && !VolumeRecord::is_record(t)
                                    && registry.get(&t.volume).is_some_and(|r| r.can_write(t))
                                    && t.verify_signature().is_ok()
                            })
                            .collect()
                    };
                    let committed = self.namespace.commit(&valid)?;
                    self.erase(&committed.purged);
                    self.namespace.forget(&valid)?
                }
            };
        }
        Ok(expired)
    }

    /// The entries waiting for their volume's record.
    pub fn held_status(&self) -> HeldStatus {
        self.held.lock().status()
    }

    /// Makes conflict copies and deletes settled orphans (unnamed entries left without links)
    /// in every mounted volume; displaced versions of volumes this node does not mount are
    /// settled without a copy (their members make it).
    pub fn settle_conflicts(&self, min_age: std::time::Duration) -> FsResult<usize> {
        let mut copies = 0;
        for core in self.cores() {
            copies += core.settle_conflicts(min_age)?;
            // One volume's failure leaves the others' orphans to be settled all the same.
            if let Err(e) = core.settle_orphans(min_age) {
                tracing::warn!(error = %e, "cannot settle a volume's orphaned entries; retrying at the next pass");
            }
        }
        let mounted: HashSet<VolumeId> = std::iter::once(self.network_id)
            .chain(self.slots.read().iter().map(|s| s.volume.id))
            .collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let foreign: Vec<Entry> = self
            .namespace
            .displaced()?
            .into_iter()
            .filter(|(at, e)| {
                !mounted.contains(&e.volume)
                    && now_ms.saturating_sub(*at) >= min_age.as_millis() as u64
            })
            .map(|(_, e)| e)
            .collect();
        if !foreign.is_empty() {
            let released = self.namespace.settle(&foreign)?;
            for id in released {
                self.template.cache.remove(&id);
            }
        }
        Ok(copies)
    }
}
