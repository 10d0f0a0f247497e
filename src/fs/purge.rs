//! Purge (`p2pfs-ctl purge`, `rm --purge`): a file or a directory tree erased with every
//! earlier version of it, on every node, at once.
//!
//! Each entry of the tree, live or deleted within retention, gets a purge tombstone
//! ([`crate::namespace::Entry::purge`]) written on top of every version of it this node holds
//! (its `seen` covers them all). Any node that applies one drops the versions it covers from its
//! history and displaced tables and deletes the chunks only they held at once, without GC's grace
//! period and whatever state other members are in. A node that is offline applies it when it
//! syncs back; a tombstone that expired meanwhile is handed back to it when it offers a version
//! the tombstone covers (`forgotten`), so it purges then too.

use std::collections::{HashMap, HashSet};

use super::ops::FsCore;
use super::tree::Tree;
use super::{FsError, FsResult, ROOT_INO};
use crate::namespace::entry::EntrySealer;
use crate::namespace::{EntryId, EntryMeta, Seen};
use crate::util::hlc::Hlc;

/// What a purge wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries given a purge tombstone (the path and everything under it).
    pub entries: usize,
}

/// The union of version vectors: the latest clock of each origin.
fn merge_seen(into: &mut HashMap<u64, Hlc>, seen: &Seen) {
    for (origin, hlc) in seen {
        let slot = into.entry(*origin).or_insert(*hlc);
        *slot = (*slot).max(*hlc);
    }
}

impl FsCore {
    /// The latest meta this node knows of every entry of the volume that is deleted now but
    /// kept in history (id -> meta of its newest kept version).
    fn deleted_metas(&self, live: &Tree) -> FsResult<HashMap<EntryId, (Hlc, EntryMeta)>> {
        let volume = self.volume.read();
        let mut out: HashMap<EntryId, (Hlc, EntryMeta)> = HashMap::new();
        self.namespace.for_each_history(&volume.id, |row| {
            if live
                .ino_if_known(&row.entry.id)
                .and_then(|ino| live.get(ino))
                .is_some()
            {
                return;
            }
            let newer = out
                .get(&row.entry.id)
                .is_none_or(|(hlc, _)| row.entry.hlc > *hlc);
            if newer && let Ok(meta) = volume.open_entry(&row.entry) {
                out.insert(row.entry.id, (row.entry.hlc, meta));
            }
        })?;
        Ok(out)
    }

    /// Purges the entry at `path` (relative to the volume root; live, or deleted within
    /// retention) and, for a directory, everything that was ever under it within retention.
    pub fn purge_path(&self, path: &str) -> FsResult<PurgeReport> {
        if !self.writable() {
            return Err(FsError::ReadOnly);
        }
        let _g = self.mutate.lock();
        let parts: Vec<&[u8]> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::as_bytes)
            .collect();
        if parts.is_empty() {
            return Err(FsError::Invalid);
        }
        if parts.contains(&&b".."[..]) {
            return Err(FsError::Invalid);
        }
        let tree = self.tree.read();
        let deleted = self.deleted_metas(&tree)?;
        // Each component names every entry that holds or held it: the live one and every
        // deleted one whose last kept version had that name there (a file replaced by a rename
        // over it, then deleted, had two entries under one path: both are what the user
        // calls that file).
        let root_id = tree.get(ROOT_INO).map(|n| n.id).ok_or(FsError::NotFound)?;
        let mut current: Vec<EntryId> = vec![root_id];
        for part in &parts {
            let mut next: Vec<EntryId> = current
                .iter()
                .filter_map(|parent| {
                    tree.ino_if_known(parent)
                        .filter(|dir| tree.get(*dir).is_some())
                        // The name itself: a further name (`Link`) of a file is purged as a
                        // name; the file goes only with its last name (below).
                        .and_then(|dir| tree.claim(dir, part))
                        .and_then(|ino| tree.get(ino))
                        .map(|n| n.id)
                })
                .collect();
            next.extend(
                deleted
                    .iter()
                    .filter(|(_, (_, m))| current.contains(&m.parent) && m.name == *part)
                    .map(|(id, _)| *id),
            );
            next.sort_unstable();
            next.dedup();
            current = next;
        }
        if current.is_empty() {
            return Err(FsError::NotFound);
        }
        // Everything under it: live descendants from the tree, deleted ones by their last
        // known parent.
        let mut doomed: HashSet<EntryId> = current.iter().copied().collect();
        let mut children_of: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
        for ino in tree.inos() {
            // An unnamed inode's parent is where its gone first name was: it is under no
            // directory (its links are).
            if let Some(n) = tree.get(ino).filter(|n| !n.meta.unnamed) {
                children_of.entry(n.meta.parent).or_default().push(n.id);
            }
        }
        for (id, (_, m)) in &deleted {
            children_of.entry(m.parent).or_default().push(*id);
        }
        let mut stack = current;
        while let Some(dir) = stack.pop() {
            for child in children_of.get(&dir).into_iter().flatten() {
                if doomed.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        // A file with hard links goes with its last live name: kept while a name outside the
        // purged tree still shows it, taken when every name it has is purged.
        let outside_name = |ino: u64, doomed: &HashSet<EntryId>| {
            let own = tree
                .get(ino)
                .is_some_and(|n| !n.meta.unnamed && !doomed.contains(&n.id));
            own || tree
                .links_of(ino)
                .into_iter()
                .filter_map(|l| tree.get(l))
                .any(|l| !doomed.contains(&l.id))
        };
        let live_inodes: Vec<(u64, EntryId, bool)> = tree
            .inos()
            .filter_map(|ino| tree.get(ino).map(|n| (ino, n.id, n.links > 0)))
            .filter(|(_, _, linked)| *linked)
            .collect();
        for (ino, id, _) in live_inodes {
            if outside_name(ino, &doomed) {
                doomed.remove(&id);
            } else if tree
                .links_of(ino)
                .iter()
                .any(|l| tree.get(*l).is_some_and(|l| doomed.contains(&l.id)))
            {
                doomed.insert(id);
            }
        }
        drop(tree);
        if doomed.len() > 1 {
            tracing::info!(entries = doomed.len(), "purging a directory tree");
        }
        self.write_purges(doomed.into_iter().collect())
    }

    /// Writes a purge tombstone for each id on top of every version of it this node holds.
    /// The caller holds `mutate`.
    fn write_purges(&self, ids: Vec<EntryId>) -> FsResult<PurgeReport> {
        let volume = self.volume.read();
        let sealer = EntrySealer {
            volume: volume.id,
            payload_key: volume.payload_key(),
            signer: &self.signer,
            origin: self.origin,
        };
        let mut entries = Vec::with_capacity(ids.len());
        for id in &ids {
            let key = crate::namespace::EntryKey {
                id: *id,
                volume: volume.id,
            };
            let mut seen = HashMap::new();
            if let Some(current) = self.namespace.get(&key)? {
                merge_seen(&mut seen, &current.seen);
            }
            for row in self.namespace.history_of(&key)? {
                merge_seen(&mut seen, &row.entry.seen);
            }
            let mut base: Seen = seen.into_iter().collect();
            base.sort_unstable_by_key(|(o, _)| *o);
            entries.push(sealer.purge_tombstone(*id, self.clock.now(), &base));
        }
        drop(volume);
        let committed = self.namespace.commit(&entries)?;
        self.evict(&committed.released);
        self.erase(&committed.purged);
        {
            let mut tree = self.tree.write();
            for e in &committed.applied {
                tree.remove(&e.id);
            }
        }
        if let Some(publish) = &self.publish {
            let _ = publish.send(entries.clone());
        }
        Ok(PurgeReport {
            entries: committed.applied.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::fs::ROOT_INO;
    use crate::fs::tests::{ME, fixture, write_file};
    use crate::namespace::{RetentionPolicy, RetentionTable};

    fn chunks_on_disk(core: &crate::fs::FsCore) -> usize {
        core.io.store.list().unwrap().len()
    }

    #[test]
    fn a_deleted_file_and_a_tree_are_purged_with_every_version() {
        let f = fixture(4096);
        let core = &f.core;
        core.namespace().set_retention(RetentionTable {
            default: RetentionPolicy::default(),
            volumes: Default::default(),
        });
        write_file(core, ROOT_INO, "a", &[1; 5000]);
        write_file(core, ROOT_INO, "a.tmp", &[2; 5000]);
        core.rename(
            ROOT_INO,
            b"a.tmp",
            ROOT_INO,
            b"a",
            crate::fs::RenameMode::Plain,
        )
        .unwrap();
        core.unlink(ROOT_INO, b"a").unwrap();
        let dir = core.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
        write_file(core, dir, "x", &[3; 9000]);
        write_file(core, dir, "y", &[4; 100]);
        core.unlink(dir, b"y").unwrap();
        assert!(core.namespace().history_len().unwrap() >= 3);
        assert_eq!(chunks_on_disk(core), 7);
        // The deleted file: both entries that held its name (the one renamed over it too),
        // with every version, go.
        let report = core.purge_path("a").unwrap();
        assert_eq!(report.entries, 2);
        assert_eq!(chunks_on_disk(core), 3);
        // A live directory: itself, its live child and its deleted one.
        let report = core.purge_path("d").unwrap();
        assert_eq!(report.entries, 3);
        assert_eq!(chunks_on_disk(core), 0);
        assert!(core.lookup(ROOT_INO, b"d").is_err());
        // What history is left is the root's own (its times changed with every name).
        let root = core.tree.read().get(ROOT_INO).unwrap().id;
        core.namespace()
            .for_each_history(&core.volume_id(), |row| assert_eq!(row.entry.id, root))
            .unwrap();
        assert!(matches!(
            core.purge_path("d"),
            Err(crate::fs::FsError::NotFound)
        ));
        assert!(matches!(
            core.purge_path(""),
            Err(crate::fs::FsError::Invalid)
        ));
    }

    #[test]
    fn a_file_with_a_name_outside_the_purged_tree_stays_and_goes_with_its_last_name() {
        let f = fixture(4096);
        let core = &f.core;
        core.namespace().set_retention(RetentionTable {
            default: RetentionPolicy::default(),
            volumes: Default::default(),
        });
        let d = core.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
        let e = core.mkdir(ROOT_INO, b"e", 0o755, ME).unwrap().ino;
        let ino = write_file(core, d, "f", &[7; 5000]);
        core.link(ino, e, b"l").unwrap();
        // Its first name goes (the inode is unnamed now, its parent still says d).
        core.unlink(d, b"f").unwrap();
        core.purge_path("d").unwrap();
        let l = core.lookup(e, b"l").unwrap();
        assert_eq!(l.size, 5000);
        assert_eq!(chunks_on_disk(core), 2);
        // Its last name purged: the file goes with it.
        core.purge_path("e/l").unwrap();
        assert!(core.lookup(e, b"l").is_err());
        assert_eq!(chunks_on_disk(core), 0);
    }
}
