//! What other nodes wrote, merged into one volume's filesystem: entries from peers (gossip,
//! anti-entropy), a new state of the volume's record, expired tombstones, concurrent versions
//! kept as conflict copies, and the versions a writer's removal refuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FsCore, FsResult, RemoteApply};
use crate::block::ChunkCache;
use crate::namespace::view::conflict_name;
use crate::namespace::volume::VolumeRecord;
use crate::namespace::{Entry, EntryId, EntryKind, NamespaceStore, Volume, VolumeId};

/// The id of the conflict copy of a lost version: the same on every node that sees the
/// conflict, so their copies are versions of one entry.
fn conflict_copy_id(lost: &Entry) -> EntryId {
    let mut h = blake3::Hasher::new_derive_key("p2pfs conflict copy v1");
    h.update(&lost.id.0);
    h.update(&lost.origin.to_le_bytes());
    h.update(&lost.hlc.0.to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EntryId(id)
}

impl FsCore {
    /// An entry from a peer may be stored: signed, and by a writer of its volume when that is
    /// the mounted one.
    fn admissible(&self, e: &Entry) -> bool {
        let volume = self.volume.read();
        let writer_ok =
            e.volume != volume.id || (!VolumeRecord::is_record(e) && volume.can_write(e));
        writer_ok && e.verify_signature().is_ok()
    }

    /// Drops every stored version of this volume (current, displaced or expired) that its
    /// writers' rule no longer admits: after a removal, the removed writer's versions that the
    /// removal did not keep, stored before the removal reached this node. They neither stay
    /// winners nor block the valid versions they had replaced, which anti-entropy brings back.
    /// Returns how many were dropped (counted as refused).
    pub fn purge_refused(&self) -> FsResult<usize> {
        let _g = self.mutate.lock();
        let volume = self.volume.read().clone();
        if volume.revoked.is_empty() {
            return Ok(0);
        }
        let (dropped, purged) = purge_refused_versions(
            &self.namespace,
            &self.io.cache,
            &self.rejected,
            |v| *v == volume.id,
            |e| !volume.can_write(e),
        )?;
        let mut tree = self.tree.write();
        for e in &purged.current {
            tree.remove(&e.id);
        }
        Ok(dropped)
    }

    /// Takes a new state of the volume's record: writers, members, keys. New writes use the
    /// newest key; entries that did not open before (sealed with a key this node lacked) are
    /// opened again.
    pub fn set_volume(&self, volume: Volume) -> FsResult<()> {
        let _g = self.mutate.lock();
        *self.io.secret.write() = volume.chunk_secret().clone();
        let had = self.volume.read().key_count();
        let more_keys = volume.key_count() > had;
        *self.volume.write() = volume;
        if more_keys {
            let volume = self.volume.read();
            // The store is read without holding the tree (requests go on meanwhile); entries
            // the tree already shows are not opened again.
            let mut opened = Vec::new();
            self.namespace.for_each_entry(|e| {
                if e.volume == volume.id
                    && !e.deleted
                    && !VolumeRecord::is_record(&e)
                    && self.tree.read().ino_if_known(&e.id).is_none()
                    && volume.can_write(&e)
                    && let Ok(meta) = volume.open_entry(&e)
                {
                    opened.push((e, meta));
                }
            })?;
            let mut tree = self.tree.write();
            for (e, meta) in opened {
                if tree.ino_if_known(&e.id).is_none() {
                    tree.upsert(&e, meta);
                }
            }
        }
        Ok(())
    }

    /// Expires tombstones every member has seen: stores them if they are new here (they may
    /// delete a stale version), then moves them out of the namespace. Returns how many expired.
    pub fn expire(&self, tombstones: Vec<Entry>) -> FsResult<usize> {
        let valid: Vec<Entry> = tombstones
            .into_iter()
            .filter(|t| t.deleted && self.admissible(t))
            .collect();
        self.apply_remote(valid.clone())?;
        let _g = self.mutate.lock();
        Ok(self.namespace.forget(&valid)?)
    }

    /// Turns settled displaced versions into conflict copies: a displaced version that its own
    /// line has since superseded (the current state, or another displaced version, was
    /// written on top of it) was an intermediate state and is dropped; one displaced for at
    /// least `min_age` is copied. Returns how many copies were made.
    pub fn settle_conflicts(&self, min_age: std::time::Duration) -> FsResult<usize> {
        let _g = self.mutate.lock();
        let volume = self.volume_id();
        // Other volumes' displaced versions are settled by their own cores (or the mount).
        let pending: Vec<(u64, Entry)> = self
            .namespace
            .displaced()?
            .into_iter()
            .filter(|(_, e)| e.volume == volume)
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (mut done, mut copy) = (Vec::new(), Vec::new());
        for (arrived, lost) in &pending {
            let superseded = self
                .namespace
                .get(&lost.key())?
                .is_some_and(|current| current.covers(lost))
                || pending.iter().any(|(_, other)| {
                    other.key() == lost.key() && other != lost && other.covers(lost)
                });
            if superseded {
                done.push(lost.clone());
            } else if now_ms.saturating_sub(*arrived) >= min_age.as_millis() as u64 {
                copy.push(lost.clone());
                done.push(lost.clone());
            }
        }
        let copies = self.keep_conflict_copies(copy)?;
        let released = self.namespace.settle(&done)?;
        self.evict(&released);
        Ok(copies)
    }

    /// Deletes the orphans that settled: unnamed inodes whose every link is gone, left by
    /// concurrent unlinks of their last names on two nodes (one made the inode unnamed, the
    /// other deleted the link it knew). Each is deleted on top of what this node has seen
    /// once it has been an orphan here for at least `min_age`: a link made concurrently on
    /// another node comes with a new version of the inode, which beats the delete. Until then
    /// it is invisible (no name shows it). Returns how many were deleted.
    pub fn settle_orphans(&self, min_age: std::time::Duration) -> FsResult<usize> {
        if !self.writable() {
            // A reader's delete would be refused; a writer settles it.
            return Ok(0);
        }
        let _g = self.mutate.lock();
        let now = std::time::Instant::now();
        let settled: Vec<(u64, super::tree::Node)> = {
            let mut tree = self.tree.write();
            tree.orphans(now)
                .into_iter()
                .filter(|(_, since)| now.duration_since(*since) >= min_age)
                .filter_map(|(ino, _)| Some((ino, tree.get(ino)?.clone())))
                .collect()
        };
        if settled.is_empty() {
            return Ok(0);
        }
        tracing::info!(
            orphans = settled.len(),
            "unnamed entries whose last links went concurrently: deleted"
        );
        // Written on top of every version of it this node still holds, the concurrent ones that
        // lost too (a node that still has one as its state then takes the delete). Usually the
        // conflict settle of the same pass has already dropped those; then a node whose state
        // is the named version that lost keeps it, it beats the delete, and the name comes back.
        let displaced = self.namespace.displaced()?;
        let deletes = settled
            .iter()
            .map(|(_, n)| {
                let mut base: std::collections::BTreeMap<u64, crate::util::hlc::Hlc> =
                    n.seen.iter().copied().collect();
                for (_, e) in displaced.iter().filter(|(_, e)| e.id == n.id) {
                    for &(o, h) in &e.seen {
                        let slot = base.entry(o).or_insert(h);
                        *slot = (*slot).max(h);
                    }
                }
                (n.id, None, Some(base.into_iter().collect()))
            })
            .collect();
        self.persist_on(deletes)?;
        let n = settled.len();
        for (ino, node) in settled {
            self.detach_if_open(ino, node);
        }
        Ok(n)
    }

    /// Keeps each live file or symlink version that lost to a concurrent one as a new entry
    /// named `name (conflict NODE DATE TIME).ext` beside it, marked as a copy of the entry.
    /// Every node that sees the conflict makes the same copy (same id, derived from the lost
    /// version), so they merge into one.
    /// Directories are not copied: their versions differ only in metadata, and their children
    /// stay with the one id. The caller holds `mutate`.
    fn keep_conflict_copies(&self, displaced: Vec<Entry>) -> FsResult<usize> {
        if !self.writable() {
            // A reader's copy would be refused by every node; a writer makes it.
            return Ok(0);
        }
        let mut copies = Vec::new();
        for lost in displaced {
            let volume = self.volume.read().clone();
            if lost.volume != volume.id
                || lost.deleted
                || VolumeRecord::is_record(&lost)
                || !volume.can_write(&lost)
            {
                continue;
            }
            let Ok(mut meta) = volume.open_entry(&lost) else {
                continue;
            };
            // A link has no content of its own (a lost rename of it is just lost, as for a
            // directory).
            if matches!(meta.kind, EntryKind::Dir | EntryKind::Link) {
                continue;
            }
            // A concurrent version with the same content loses nothing (two nodes making the
            // same conflict copy, or writing the same bytes).
            let kept = match self.namespace.get(&lost.key())? {
                Some(k) if !k.deleted && k.chunks == lost.chunks => volume.open_entry(&k).ok(),
                _ => None,
            };
            if kept.is_some_and(|k| k.size == meta.size && k.blocks == meta.blocks) {
                continue;
            }
            let copy_id = conflict_copy_id(&lost);
            let copy_key = crate::namespace::EntryKey {
                id: copy_id,
                volume: volume.id,
            };
            if self.namespace.get(&copy_key)?.is_some() {
                continue;
            }
            if meta.unnamed {
                // Named after the inode's oldest live link, beside it.
                let tree = self.tree.read();
                let link = tree
                    .ino_if_known(&lost.id)
                    .and_then(|ino| tree.links_of(ino).first().copied())
                    .and_then(|l| tree.get(l));
                let Some(link) = link else {
                    continue;
                };
                meta.parent = link.meta.parent;
                meta.name = link.meta.name.clone();
                meta.unnamed = false;
            }
            let names = self.tree.read().names().clone();
            meta.name = conflict_name(&meta.name, &lost.version(), &names);
            meta.conflict_of = Some(crate::namespace::entry::ConflictOf {
                entry: lost.id,
                origin: lost.origin,
                hlc: lost.hlc,
            });
            tracing::warn!(entry = %lost.id, copy = %copy_id, "concurrent writes to one file: the earlier version is kept as a conflict copy");
            copies.push((copy_id, Some(meta), Some(Vec::new())));
        }
        let n = copies.len();
        if n > 0 {
            self.persist_on(copies)?;
        }
        Ok(n)
    }

    /// Merges entries received from a peer (gossip or anti-entropy): each must carry a valid
    /// signature by a writer of its volume. Entries of other volumes are kept (this node stores
    /// and serves them) but never opened. Newer versions of this volume's entries show in the
    /// mount at once.
    pub fn apply_remote(&self, entries: Vec<Entry>) -> FsResult<RemoteApply> {
        let mut report = RemoteApply::default();
        let mut valid = Vec::with_capacity(entries.len());
        // This volume's live entries are opened before they are stored: one whose payload is
        // inconsistent (e.g. a name a local create refuses) is refused, never stored or passed
        // on. One sealed with a key this node does not have yet (the record with it is on its
        // way) or no longer gets is stored, and shown once a key opens it.
        let mut opened = HashMap::new();
        let mut refused_first = None;
        {
            let volume = self.volume.read();
            for e in entries {
                if !self.admissible(&e) {
                    report.rejected += 1;
                    continue;
                }
                if e.volume == volume.id && !e.deleted && !VolumeRecord::is_record(&e) {
                    match volume.open_entry(&e) {
                        Ok(meta) => {
                            opened.insert((e.id, e.version()), meta);
                        }
                        Err(crate::namespace::EntryError::Decrypt(_)) => {
                            tracing::debug!(entry = %e.id, "entry sealed with a key this node lacks");
                        }
                        Err(err) => {
                            refused_first.get_or_insert(err);
                            report.rejected += 1;
                            continue;
                        }
                    }
                }
                self.clock.observe(e.hlc);
                valid.push(e);
            }
        }
        if let Some(err) = refused_first {
            tracing::warn!(refused = report.rejected, error = %err, "entries from a peer do not open; refused");
        }
        let _g = self.mutate.lock();
        // The writers may have changed since the check ([`set_volume`] holds `mutate`, and a
        // purge after it runs under it): what they no longer admit is not stored.
        let before = valid.len();
        {
            let volume = self.volume.read();
            valid.retain(|e| e.volume != volume.id || volume.can_write(e));
        }
        report.rejected += before - valid.len();
        let committed = self.namespace.commit(&valid)?;
        self.evict(&committed.released);
        self.erase(&committed.purged);
        report.applied = committed.applied.len();
        report.forgotten = committed.forgotten;
        let volume = self.volume.read();
        let mut tree = self.tree.write();
        for e in committed
            .applied
            .iter()
            .filter(|e| e.volume == volume.id && !VolumeRecord::is_record(e))
        {
            if e.deleted {
                tree.remove(&e.id);
                continue;
            }
            // Opened above, unless the volume's keys changed meanwhile.
            let meta = match opened.remove(&(e.id, e.version())) {
                Some(meta) => Ok(meta),
                None => volume.open_entry(e),
            };
            match meta {
                Ok(meta) => tree.upsert(e, meta),
                Err(err) => {
                    tracing::debug!(entry = %e.id, error = %err, "stored entry does not open (yet)");
                }
            }
        }
        for lost in &committed.displaced {
            tree.contested(&lost.id);
        }
        drop(tree);
        drop(volume);
        if report.rejected > 0 {
            self.rejected
                .fetch_add(report.rejected as u64, Ordering::Relaxed);
        }
        Ok(report)
    }
}

/// Drops the stored versions (current, displaced or expired) of the volumes `in_volume` picks
/// that `refused` picks (volume records are never dropped): after a removal, the removed
/// writer's versions that it did not keep. Evicts the chunks no stored entry references any
/// more from `cache`, logs, and counts the dropped versions in `rejected`. One scan of the
/// store, skipping other volumes' rows undecoded.
pub(crate) fn purge_refused_versions(
    namespace: &NamespaceStore,
    cache: &ChunkCache,
    rejected: &AtomicU64,
    in_volume: impl Fn(&VolumeId) -> bool,
    refused: impl Fn(&Entry) -> bool,
) -> FsResult<(usize, crate::namespace::Purged)> {
    let versions =
        namespace.versions_in_where(in_volume, |e| !VolumeRecord::is_record(e) && refused(e))?;
    if versions.is_empty() {
        return Ok((0, Default::default()));
    }
    let purged = namespace.purge(&versions)?;
    for id in &purged.released {
        cache.remove(id);
    }
    let volumes: std::collections::BTreeSet<String> =
        versions.iter().map(|e| e.volume.to_string()).collect();
    tracing::warn!(
        ?volumes,
        dropped = versions.len(),
        "stored versions by a removed writer that its removal did not keep: dropped"
    );
    rejected.fetch_add(versions.len() as u64, Ordering::Relaxed);
    Ok((versions.len(), purged))
}
