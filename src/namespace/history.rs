//! The versions an entry had before it was overwritten, changed or deleted, kept by each node
//! for as long as the volume's [`RetentionPolicy`] says: what `p2pfs-ctl versions`, `restore`
//! and the snapshot views read.
//!
//! A kept version is a *history row*: the signed entry as it was stored, with `replaced_at`,
//! the clock of the version that replaced it (so the version was the state of its entry during
//! `[entry.hlc, replaced_at)`: "what was there at time T" needs no tombstone), and
//! `kept_since`, this node's wall clock when it kept the row. Expiry counts from `kept_since`,
//! never from a clock a peer wrote: a version stamped far in the past or the future is kept
//! exactly as long as any other. A row's chunks stay counted in the store's chunk references,
//! so GC keeps them and repair keeps them at R copies like any live chunk; `history_refs`
//! counts the rows referencing each chunk, so a node can tell what it holds only for
//! retention.
//!
//! Rows are written in the commit that replaces the version (`store.rs`), per node: a node
//! keeps the versions it saw. A purge tombstone ([`Entry::purge`]) removes every row it covers.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::entry::{Entry, EntryKey, VolumeId};
use super::retention::{RetentionPolicy, RetentionTable};
use super::store::{NamespaceError, NamespaceStore, count_refs, db_err};
use crate::block::ChunkId;
use crate::util::hlc::Hlc;

/// `volume || id || replaced_at (BE) || version hash (8)` -> `kept_since ms (LE, 8) ||
/// live_from hlc (LE, 8) || entry`.
/// Volume first, so one volume's rows (snapshots, path lookups) are one range, and one entry's
/// rows (its versions, oldest first) a sub-range.
pub(super) const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
/// `kept_since ms (BE) || history key` -> (): expiry reads the oldest rows first.
pub(super) const HISTORY_BY_TIME: TableDefinition<&[u8], ()> =
    TableDefinition::new("history_by_time");
/// Chunk id -> how many history rows reference it (a part of its count in `chunk_refs`).
pub(super) const HISTORY_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("history_refs");

const KEY_LEN: usize = 16 + 16 + 8 + 8;

/// One kept version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// The clock of the version that replaced this one.
    pub replaced_at: Hlc,
    /// When this node kept it (ms since the epoch): expiry counts from here.
    pub kept_since_ms: u64,
    /// Since when the state this row stands for held: the entry's own clock, or earlier when
    /// it absorbed the rows of intermediate versions before it (see [`COALESCE_MS`]).
    pub live_from: Hlc,
    pub entry: Entry,
}

/// A replaced version whose predecessor row was kept less than this long before, by the same
/// node, and references no chunk the newer one does not (a directory whose times changed with
/// each name made in it, a file's periodic checkpoint while it was being written), takes that
/// row's place: the history of a busy directory or a long write is one row a minute, not one
/// per change. The row keeps the start of the absorbed one's life, so "the state at T" has no
/// gap.
pub const COALESCE_MS: u64 = 60_000;

fn entry_prefix(key: &EntryKey) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&key.volume.0);
    k[16..].copy_from_slice(&key.id.0);
    k
}

fn row_key(entry: &Entry, replaced_at: Hlc) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..32].copy_from_slice(&entry_prefix(&entry.key()));
    k[32..40].copy_from_slice(&replaced_at.0.to_be_bytes());
    k[40..].copy_from_slice(&entry.version_hash()[..8]);
    k
}

fn decode_row(key: &[u8], value: &[u8]) -> Option<HistoryRow> {
    if key.len() != KEY_LEN || value.len() <= 16 {
        return None;
    }
    let entry = Entry::from_bytes(&value[16..]).ok()?;
    if entry_prefix(&entry.key())[..] != key[..32] {
        return None;
    }
    Some(HistoryRow {
        replaced_at: Hlc(u64::from_be_bytes(key[32..40].try_into().ok()?)),
        kept_since_ms: u64::from_le_bytes(value[..8].try_into().ok()?),
        live_from: Hlc(u64::from_le_bytes(value[8..16].try_into().ok()?)),
        entry,
    })
}

/// The tables a commit touches to keep or drop rows, opened in its write transaction.
pub(super) struct HistoryTables<'t> {
    rows: redb::Table<'t, &'static [u8], &'static [u8]>,
    by_time: redb::Table<'t, &'static [u8], ()>,
    refs: redb::Table<'t, &'static [u8], u64>,
}

impl<'t> HistoryTables<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, NamespaceError> {
        Ok(Self {
            rows: txn.open_table(HISTORY).map_err(db_err)?,
            by_time: txn.open_table(HISTORY_BY_TIME).map_err(db_err)?,
            refs: txn.open_table(HISTORY_REFS).map_err(db_err)?,
        })
    }

    /// Keeps `old`, replaced by a version stamped `replaced_at`, under `policy`. Its chunks
    /// keep the reference the caller would otherwise have released. Past `max_versions` rows
    /// of the entry, the oldest go (their released chunks into `released`).
    pub(super) fn keep(
        &mut self,
        chunk_refs: &mut redb::Table<&[u8], u64>,
        old: &Entry,
        replaced_at: Hlc,
        now_ms: u64,
        policy: RetentionPolicy,
        released: &mut Vec<ChunkId>,
    ) -> Result<(), NamespaceError> {
        let key = row_key(old, replaced_at);
        if self.rows.get(&key[..]).map_err(db_err)?.is_some() {
            // The same version replaced at the same clock: already kept; its reference is
            // counted once.
            count_refs(chunk_refs, &old.chunks, -1, released)?;
            return Ok(());
        }
        let prefix = entry_prefix(&old.key());
        let mut live_from = old.hlc;
        if let Some((prev_key, prev)) = self.rows_of(&prefix)?.pop()
            && prev.entry.origin == old.origin
            && prev.entry.author == old.author
            && now_ms.saturating_sub(prev.kept_since_ms) < COALESCE_MS
            && prev
                .entry
                .chunks
                .iter()
                .all(|c| old.chunks.binary_search(c).is_ok())
        {
            // Its chunks are all old's: none is released.
            live_from = prev.live_from.min(old.hlc);
            self.remove(chunk_refs, &prev_key, &prev, released)?;
        }
        let mut value = now_ms.to_le_bytes().to_vec();
        value.extend_from_slice(&live_from.0.to_le_bytes());
        value.extend_from_slice(&old.to_bytes());
        self.rows
            .insert(&key[..], value.as_slice())
            .map_err(db_err)?;
        self.by_time
            .insert(&time_key(now_ms, &key)[..], ())
            .map_err(db_err)?;
        count_refs(&mut self.refs, &old.chunks, 1, &mut Vec::new())?;
        if policy.max_versions > 0 {
            let rows = self.rows_of(&prefix)?;
            let excess = rows.len().saturating_sub(policy.max_versions as usize);
            for (key, row) in rows.into_iter().take(excess) {
                self.remove(chunk_refs, &key, &row, released)?;
            }
        }
        Ok(())
    }

    /// Removes every row of `purge`'s entry that it covers (written before it, in its
    /// history). Released chunks go into `released`.
    pub(super) fn purge(
        &mut self,
        chunk_refs: &mut redb::Table<&[u8], u64>,
        purge: &Entry,
        released: &mut Vec<ChunkId>,
    ) -> Result<usize, NamespaceError> {
        let rows = self.rows_of(&entry_prefix(&purge.key()))?;
        let mut n = 0;
        for (key, row) in rows {
            if purge.covers(&row.entry) {
                self.remove(chunk_refs, &key, &row, released)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn rows_of(
        &self,
        prefix: &[u8; 32],
    ) -> Result<Vec<([u8; KEY_LEN], HistoryRow)>, NamespaceError> {
        let mut out = Vec::new();
        for row in self.rows.range(&prefix[..]..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            match (<[u8; KEY_LEN]>::try_from(k), decode_row(k, v.value())) {
                (Ok(key), Some(row)) => out.push((key, row)),
                _ => tracing::error!("undecodable history row skipped"),
            }
        }
        Ok(out)
    }

    fn remove(
        &mut self,
        chunk_refs: &mut redb::Table<&[u8], u64>,
        key: &[u8; KEY_LEN],
        row: &HistoryRow,
        released: &mut Vec<ChunkId>,
    ) -> Result<(), NamespaceError> {
        if self.rows.remove(&key[..]).map_err(db_err)?.is_none() {
            return Ok(());
        }
        self.by_time
            .remove(&time_key(row.kept_since_ms, key)[..])
            .map_err(db_err)?;
        count_refs(&mut self.refs, &row.entry.chunks, -1, &mut Vec::new())?;
        count_refs(chunk_refs, &row.entry.chunks, -1, released)
    }
}

fn time_key(kept_since_ms: u64, key: &[u8; KEY_LEN]) -> [u8; 8 + KEY_LEN] {
    let mut k = [0u8; 8 + KEY_LEN];
    k[..8].copy_from_slice(&kept_since_ms.to_be_bytes());
    k[8..].copy_from_slice(key);
    k
}

impl NamespaceStore {
    /// The kept versions of one entry, oldest replaced first.
    pub fn history_of(&self, key: &EntryKey) -> Result<Vec<HistoryRow>, NamespaceError> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(HISTORY).map_err(db_err)?;
        let prefix = entry_prefix(key);
        let mut out = Vec::new();
        for row in table.range(&prefix[..]..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            if let Some(row) = decode_row(k.value(), v.value()) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Hands every kept version of one volume to `take`, entry by entry (each entry's oldest
    /// first), decoding one at a time.
    pub fn for_each_history(
        &self,
        volume: &VolumeId,
        mut take: impl FnMut(HistoryRow),
    ) -> Result<(), NamespaceError> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(HISTORY).map_err(db_err)?;
        for row in table.range(&volume.0[..]..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            if !k.value().starts_with(&volume.0) {
                break;
            }
            match decode_row(k.value(), v.value()) {
                Some(row) => take(row),
                None => tracing::error!("undecodable history row skipped"),
            }
        }
        Ok(())
    }

    /// The `replaced_at` of every kept version of one volume, read from the keys alone (no
    /// entry decoded): when the volume changed, for the listing of `.snapshots`.
    pub fn replaced_times(&self, volume: &VolumeId) -> Result<Vec<Hlc>, NamespaceError> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let table = txn.open_table(HISTORY).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range(&volume.0[..]..).map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let k = k.value();
            if !k.starts_with(&volume.0) {
                break;
            }
            if let Some(at) = k.get(32..40) {
                out.push(Hlc(u64::from_be_bytes(at.try_into().expect("8 bytes"))));
            }
        }
        Ok(out)
    }

    /// The state of every entry of `volume` at `at`: for each entry, the version that was
    /// current then, i.e. a kept version with `hlc <= at < replaced_at`, or the stored live
    /// version if its `hlc <= at`. Entries deleted by then, or created after, are absent; so
    /// are versions this node never held (it keeps what it saw). One scan of the current
    /// states (rows of other volumes skipped by key) and one range of the volume's history.
    pub fn versions_at(&self, volume: &VolumeId, at: Hlc) -> Result<Vec<Entry>, NamespaceError> {
        let mut state: std::collections::HashMap<super::EntryId, Entry> = Default::default();
        let current = self.placed_versions_in_where(|v| v == volume, |e| e.hlc <= at)?;
        for (placed, e) in current {
            if placed == super::StoredAs::Current && !e.deleted {
                state.insert(e.id, e);
            }
        }
        self.for_each_history(volume, |row| {
            if row.live_from <= at && at < row.replaced_at && !row.entry.deleted {
                let newer = state
                    .get(&row.entry.id)
                    .is_none_or(|held| row.entry.hlc > held.hlc);
                if newer {
                    state.insert(row.entry.id, row.entry);
                }
            }
        })?;
        Ok(state.into_values().collect())
    }

    /// How many versions are kept, in all volumes.
    pub fn history_len(&self) -> Result<u64, NamespaceError> {
        let txn = self.db().begin_read().map_err(db_err)?;
        txn.open_table(HISTORY)
            .map_err(db_err)?
            .len()
            .map_err(db_err)
    }

    /// For each chunk, whether only kept versions reference it (a live version dropped it:
    /// this node holds it for retention alone).
    pub fn kept_only_for_history(&self, ids: &[ChunkId]) -> Result<Vec<bool>, NamespaceError> {
        let txn = self.db().begin_read().map_err(db_err)?;
        let all = txn.open_table(super::store::CHUNK_REFS).map_err(db_err)?;
        let kept = txn.open_table(HISTORY_REFS).map_err(db_err)?;
        ids.iter()
            .map(|id| {
                let h = kept
                    .get(&id.0[..])
                    .map_err(db_err)?
                    .map_or(0, |v| v.value());
                let a = all.get(&id.0[..]).map_err(db_err)?.map_or(0, |v| v.value());
                Ok(h > 0 && h >= a)
            })
            .collect()
    }

    /// The policies this store keeps versions by.
    pub fn retention(&self) -> RetentionTable {
        self.retention_table().read().clone()
    }

    /// Sets the policies (the node's config and the volume records); versions already kept
    /// expire by the new ones at the next [`expire_history`](Self::expire_history).
    pub fn set_retention(&self, table: RetentionTable) {
        *self.retention_table().write() = table;
    }

    /// Drops the versions kept longest, whatever their retention (space is short: earlier
    /// versions never take the room current data needs), one by one until the chunks they
    /// alone held add up to `owed` bytes (`size_of` tells a chunk's size here; chunks not held
    /// here count nothing) or none is left, in one transaction. Returns how many rows went and
    /// the chunks no stored version references any more.
    pub fn drop_oldest_history(
        &self,
        owed: u64,
        size_of: impl Fn(&ChunkId) -> Option<u64>,
    ) -> Result<(u64, Vec<ChunkId>), NamespaceError> {
        let txn = self.db().begin_write().map_err(db_err)?;
        let mut released = Vec::new();
        let mut dropped = 0u64;
        {
            let mut tables = HistoryTables::open(&txn)?;
            let mut chunk_refs = txn.open_table(super::store::CHUNK_REFS).map_err(db_err)?;
            let mut freed = 0u64;
            while freed < owed {
                let Some(k) = tables
                    .by_time
                    .first()
                    .map_err(db_err)?
                    .map(|(k, _)| k.value().to_vec())
                else {
                    break;
                };
                tables.by_time.remove(k.as_slice()).map_err(db_err)?;
                let Ok(key) = <[u8; KEY_LEN]>::try_from(&k[8..]) else {
                    continue;
                };
                let row = tables
                    .rows
                    .get(&key[..])
                    .map_err(db_err)?
                    .and_then(|v| decode_row(&key, v.value()));
                let before = released.len();
                match row {
                    Some(row) => tables.remove(&mut chunk_refs, &key, &row, &mut released)?,
                    None => {
                        tables.rows.remove(&key[..]).map_err(db_err)?;
                    }
                }
                dropped += 1;
                freed += released[before..].iter().filter_map(&size_of).sum::<u64>();
            }
        }
        txn.commit().map_err(db_err)?;
        Ok((dropped, released))
    }

    /// Drops the kept versions past their volume's retention at `now_ms`, the oldest first,
    /// in one transaction. Returns the chunks no stored version references any more.
    pub fn expire_history(&self, now_ms: u64) -> Result<Vec<ChunkId>, NamespaceError> {
        let policies = self.retention();
        let horizon = now_ms.saturating_sub(policies.shortest_keep_secs().saturating_mul(1000));
        let txn = self.db().begin_write().map_err(db_err)?;
        let mut released = Vec::new();
        {
            let mut tables = HistoryTables::open(&txn)?;
            let mut chunk_refs = txn.open_table(super::store::CHUNK_REFS).map_err(db_err)?;
            let mut due = Vec::new();
            for row in tables.by_time.iter().map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                let k = k.value();
                let Some(since) = k
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8")))
                else {
                    continue;
                };
                if since > horizon {
                    break;
                }
                let Ok(key) = <[u8; KEY_LEN]>::try_from(&k[8..]) else {
                    continue;
                };
                let volume = VolumeId(key[..16].try_into().expect("16 bytes"));
                let keep_ms = policies.of(&volume).keep_secs.saturating_mul(1000);
                if since.saturating_add(keep_ms) <= now_ms {
                    due.push((since, key));
                }
            }
            for (since, key) in due {
                let row = tables
                    .rows
                    .get(&key[..])
                    .map_err(db_err)?
                    .and_then(|v| decode_row(&key, v.value()));
                match row {
                    Some(row) => tables.remove(&mut chunk_refs, &key, &row, &mut released)?,
                    None => {
                        // Undecodable: drop the row and its index, leave the counts (a leak
                        // of references, never a chunk deleted in use).
                        tables.rows.remove(&key[..]).map_err(db_err)?;
                        tables
                            .by_time
                            .remove(&time_key(since, &key)[..])
                            .map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::EntryId;
    use crate::namespace::entry::EntrySealer;
    use crate::namespace::store::purge_tests::file;
    use ed25519_dalek::SigningKey;

    const VOLUME: VolumeId = VolumeId([3; 16]);

    fn store(policy: RetentionPolicy) -> (tempfile::TempDir, NamespaceStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = NamespaceStore::open(&dir.path().join("ns.redb")).unwrap();
        store.set_retention(RetentionTable {
            default: policy,
            volumes: Default::default(),
        });
        (dir, store)
    }

    fn sealer(sk: &SigningKey) -> EntrySealer<'_> {
        EntrySealer {
            volume: VOLUME,
            payload_key: &[2; 32],
            signer: sk,
            origin: 1,
        }
    }

    fn refs(store: &NamespaceStore, chunks: &[u8]) -> Vec<bool> {
        let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId([*c; 32])).collect();
        store.referenced(&ids).unwrap()
    }

    const DAY: RetentionPolicy = RetentionPolicy {
        keep_secs: 86_400,
        max_versions: 0,
    };

    #[test]
    fn an_overwrite_and_a_delete_keep_the_replaced_versions_and_their_chunks() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        let v1 = sealer(&sk).seal(id, Hlc(10), &[], &file(1));
        let v2 = sealer(&sk).seal(id, Hlc(20), &v1.seen, &file(2));
        let gone = sealer(&sk).tombstone(id, Hlc(30), &v2.seen);
        for e in [&v1, &v2, &gone] {
            let c = store.commit(std::slice::from_ref(e)).unwrap();
            assert!(c.released.is_empty(), "{:?}", c.released);
        }
        let rows = store.history_of(&v1.key()).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.entry.clone(), r.replaced_at))
                .collect::<Vec<_>>(),
            vec![(v1.clone(), Hlc(20)), (v2.clone(), Hlc(30))]
        );
        assert_eq!(refs(&store, &[1, 2]), vec![true, true]);
        assert_eq!(
            store
                .kept_only_for_history(&[ChunkId([1; 32]), ChunkId([2; 32])])
                .unwrap(),
            vec![true, true]
        );
        let mut seen = Vec::new();
        store
            .for_each_history(&VOLUME, |r| seen.push(r.entry))
            .unwrap();
        assert_eq!(seen, vec![v1, v2]);
        store
            .for_each_history(&VolumeId([9; 16]), |_| panic!("another volume's rows"))
            .unwrap();
    }

    #[test]
    fn without_retention_nothing_is_kept_and_chunks_are_released_as_before() {
        let (_dir, store) = store(RetentionPolicy::OFF);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        let v1 = sealer(&sk).seal(id, Hlc(10), &[], &file(1));
        let v2 = sealer(&sk).seal(id, Hlc(20), &v1.seen, &file(2));
        store.commit(std::slice::from_ref(&v1)).unwrap();
        let c = store.commit(std::slice::from_ref(&v2)).unwrap();
        assert_eq!(c.released, vec![ChunkId([1; 32])]);
        assert_eq!(store.history_len().unwrap(), 0);
    }

    #[test]
    fn max_versions_keeps_the_newest_and_releases_the_rest() {
        let (_dir, store) = store(RetentionPolicy {
            keep_secs: 86_400,
            max_versions: 2,
        });
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        let mut prev: Option<Entry> = None;
        let mut released = Vec::new();
        for n in 1..=5u8 {
            let base = prev.as_ref().map_or(&[][..], |p| &p.seen[..]);
            let v = sealer(&sk).seal(id, Hlc(u64::from(n) * 10), base, &file(n));
            released.extend(store.commit(std::slice::from_ref(&v)).unwrap().released);
            prev = Some(v);
        }
        let rows = store.history_of(&prev.unwrap().key()).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.entry.hlc).collect::<Vec<_>>(),
            vec![Hlc(30), Hlc(40)]
        );
        assert_eq!(released, vec![ChunkId([1; 32]), ChunkId([2; 32])]);
        assert_eq!(
            refs(&store, &[1, 2, 3, 4, 5]),
            vec![false, false, true, true, true]
        );
    }

    #[test]
    fn expiry_counts_from_when_this_node_kept_the_version_whatever_its_clock() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        // Stamped far in the past: a peer's clock does not make it expire sooner.
        let v1 = sealer(&sk).seal(id, Hlc(10), &[], &file(1));
        let v2 = sealer(&sk).seal(id, Hlc(20), &v1.seen, &file(2));
        store.commit(std::slice::from_ref(&v1)).unwrap();
        store.commit(std::slice::from_ref(&v2)).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(store.expire_history(now + 3_600_000).unwrap().is_empty());
        assert_eq!(store.history_len().unwrap(), 1);
        // A volume of its own with a shorter policy expires first.
        let mut table = store.retention();
        table.volumes.insert(
            VOLUME,
            RetentionPolicy {
                keep_secs: 60,
                max_versions: 0,
            },
        );
        store.set_retention(table);
        assert_eq!(
            store.expire_history(now + 61_000).unwrap(),
            vec![ChunkId([1; 32])]
        );
        assert_eq!(store.history_len().unwrap(), 0);
        assert_eq!(refs(&store, &[1, 2]), vec![false, true]);
        assert_eq!(
            store.kept_only_for_history(&[ChunkId([2; 32])]).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn a_purge_erases_what_it_covers_and_its_chunks_are_released_as_purged() {
        let (_dir, store) = store(DAY);
        let (sk1, sk2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let id = EntryId([5; 16]);
        let v1 = sealer(&sk1).seal(id, Hlc(10), &[], &file(1));
        let v2 = sealer(&sk1).seal(id, Hlc(20), &v1.seen, &file(2));
        store.commit(std::slice::from_ref(&v1)).unwrap();
        store.commit(std::slice::from_ref(&v2)).unwrap();
        // A concurrent version from another node: displaced, waiting as a conflict copy.
        let other = EntrySealer {
            origin: 2,
            ..sealer(&sk2)
        }
        .seal(id, Hlc(15), &v1.seen, &file(3));
        assert_eq!(
            store
                .commit(std::slice::from_ref(&other))
                .unwrap()
                .displaced,
            vec![other.clone()]
        );
        let purge = sealer(&sk1).purge_tombstone(id, Hlc(40), &v2.seen);
        assert!(purge.verify_signature().is_ok());
        let decoded = Entry::from_bytes(&purge.to_bytes()).unwrap();
        assert!(decoded.purge && decoded == purge);
        let c = store.commit(std::slice::from_ref(&purge)).unwrap();
        assert_eq!(c.applied, vec![purge.clone()]);
        let mut purged = c.purged.clone();
        purged.sort();
        // v1 and v2 it covers; the concurrent version it did not see stays.
        assert_eq!(purged, vec![ChunkId([1; 32]), ChunkId([2; 32])]);
        assert!(c.released.is_empty());
        assert_eq!(store.history_len().unwrap(), 0);
        assert_eq!(store.displaced().unwrap().len(), 1);
        assert_eq!(refs(&store, &[1, 2, 3]), vec![false, false, true]);
    }

    #[test]
    fn an_ordinary_entry_encodes_without_the_purge_field_and_a_live_purge_is_refused() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let gone = sealer(&sk).tombstone(EntryId([5; 16]), Hlc(10), &[]);
        assert!(!gone.to_bytes().windows(5).any(|w| w == b"purge"));
        let mut live = sealer(&sk).seal(EntryId([5; 16]), Hlc(10), &[], &file(1));
        live.purge = true;
        assert!(Entry::from_bytes(&live.to_bytes()).is_err());
    }

    #[test]
    fn the_state_at_a_time_is_the_version_current_then() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let (a, b) = (EntryId([5; 16]), EntryId([6; 16]));
        let a1 = sealer(&sk).seal(a, Hlc(10), &[], &file(1));
        let a2 = sealer(&sk).seal(a, Hlc(20), &a1.seen, &file(2));
        let b1 = sealer(&sk).seal(b, Hlc(15), &[], &file(3));
        let b_gone = sealer(&sk).tombstone(b, Hlc(25), &b1.seen);
        for e in [&a1, &b1, &a2, &b_gone] {
            store.commit(std::slice::from_ref(e)).unwrap();
        }
        let at = |t| {
            let mut v = store.versions_at(&VOLUME, Hlc(t)).unwrap();
            v.sort_by_key(|e| e.id);
            v
        };
        assert_eq!(at(5), vec![]);
        assert_eq!(at(12), vec![a1.clone()]);
        assert_eq!(at(16), vec![a1.clone(), b1.clone()]);
        assert_eq!(at(22), vec![a2.clone(), b1.clone()]);
        assert_eq!(at(30), vec![a2.clone()]);
        // Once the tombstone expired, the kept version still ends where it was deleted.
        assert_eq!(store.forget(std::slice::from_ref(&b_gone)).unwrap(), 1);
        assert_eq!(at(22), vec![a2.clone(), b1]);
        assert_eq!(at(30), vec![a2]);
        assert!(
            store
                .versions_at(&VolumeId([9; 16]), Hlc(30))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn under_pressure_the_versions_kept_longest_go_first() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        let mut prev: Option<Entry> = None;
        for n in 1..=4u8 {
            let base = prev.as_ref().map_or(&[][..], |p| &p.seen[..]);
            let v = sealer(&sk).seal(id, Hlc(u64::from(n) * 10), base, &file(n));
            store.commit(std::slice::from_ref(&v)).unwrap();
            prev = Some(v);
            // Distinct arrival times, so "kept longest" is an order.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(store.history_len().unwrap(), 3);
        // Each chunk "weighs" 100 bytes here: 150 owed takes two versions.
        assert_eq!(
            store.drop_oldest_history(150, |_| Some(100)).unwrap(),
            (2, vec![ChunkId([1; 32]), ChunkId([2; 32])])
        );
        let left = store.history_of(&prev.unwrap().key()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].entry.hlc, Hlc(30));
        assert_eq!(refs(&store, &[1, 2, 3, 4]), vec![false, false, true, true]);
    }

    #[test]
    fn a_chunk_a_purge_released_that_a_later_entry_of_the_commit_references_is_not_erased() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let (x, y) = (EntryId([5; 16]), EntryId([6; 16]));
        let x1 = sealer(&sk).seal(x, Hlc(10), &[], &file(1));
        store.commit(std::slice::from_ref(&x1)).unwrap();
        // A copy of x's bytes (the same chunk) and x's purge, caught up with in one commit.
        let purge = sealer(&sk).purge_tombstone(x, Hlc(20), &x1.seen);
        let y1 = sealer(&sk).seal(y, Hlc(15), &[], &file(1));
        let c = store.commit(&[purge, y1]).unwrap();
        assert!(c.purged.is_empty(), "{:?}", c.purged);
        assert_eq!(refs(&store, &[1]), vec![true]);
    }

    #[test]
    fn quick_intermediate_versions_by_one_node_are_one_row_without_a_gap() {
        let (_dir, store) = store(DAY);
        let sk = SigningKey::from_bytes(&[1; 32]);
        let id = EntryId([5; 16]);
        let mut dir_meta = file(1);
        dir_meta.blocks.clear();
        // A directory whose times change with every name made in it: five versions, no chunks.
        let mut prev: Option<Entry> = None;
        for n in 1..=5u64 {
            let base = prev.as_ref().map_or(&[][..], |p| &p.seen[..]);
            let v = sealer(&sk).seal(id, Hlc(n * 10), base, &dir_meta);
            store.commit(std::slice::from_ref(&v)).unwrap();
            prev = Some(v);
        }
        let rows = store.history_of(&prev.clone().unwrap().key()).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].live_from, rows[0].entry.hlc), (Hlc(10), Hlc(40)));
        // The state at any time before the current one still has the directory.
        for t in [10, 15, 25, 35, 45] {
            assert_eq!(
                store.versions_at(&VOLUME, Hlc(t)).unwrap().len(),
                1,
                "at {t}"
            );
        }
        // Another node's version ends the run (and is kept on its own).
        let other = EntrySealer {
            origin: 2,
            ..sealer(&sk)
        }
        .seal(id, Hlc(60), &prev.unwrap().seen, &file(2));
        store.commit(std::slice::from_ref(&other)).unwrap();
        let last = sealer(&sk).seal(id, Hlc(70), &other.seen, &file(3));
        store.commit(std::slice::from_ref(&last)).unwrap();
        let rows = store.history_of(&last.key()).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.live_from, r.entry.hlc))
                .collect::<Vec<_>>(),
            vec![(Hlc(10), Hlc(50)), (Hlc(60), Hlc(60))]
        );
        assert_eq!(refs(&store, &[2, 3]), vec![true, true]);
    }
}
