//! Persistence of the namespace in `redb`, an embedded ACID store: every commit is one
//! durable transaction, so a crash leaves the namespace as of the last commit, never half of
//! one. Entries are stored as they travel (signed, payload encrypted): nothing here is in clear.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::entry::{self, Entry, EntryError, EntryKey, VolumeId};
use super::history::HistoryTables;
use super::retention::{RetentionPolicy, RetentionTable};
use crate::block::ChunkId;
use crate::util::hlc::Hlc;

/// Every table that names entries keys them by [`EntryKey`] (`id || volume`): an entry of one
/// volume never replaces, displaces or blocks an entry of another, whatever id it claims.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// Chunk id -> how many stored live entries reference it. Kept in the same transaction as
/// `entries`, so garbage collection asks it instead of scanning the namespace.
pub(super) const CHUNK_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("chunk_refs");
/// Ids of stored tombstones (for expiry, without a scan).
const TOMBSTONES: TableDefinition<&[u8], ()> = TableDefinition::new("tombstones");
/// Expired tombstones: gone from `entries` (so from digests and sync), kept here to refuse the
/// versions they deleted should a node that was away bring one back, and to hand back to it.
const FORGOTTEN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("forgotten");
/// Live versions that lost to a concurrent one, waiting to become conflict copies: key = entry
/// key || hlc || origin, value = arrival (ms since the epoch, 8 bytes LE) || the entry. They wait a
/// little because the version that lost may be an intermediate one (a truncate before a write,
/// a checkpoint) whose own later version is still on its way: only the last of a line is kept.
/// Their chunks count as referenced meanwhile.
const DISPLACED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("displaced");
/// The store's layout version (`"layout"`): absent in stores written before entries were keyed
/// by their volume (layout 1: keyed by id alone), which [`NamespaceStore::open`] migrates.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAYOUT: u64 = 2;

fn displaced_key(e: &Entry) -> Vec<u8> {
    let mut k = e.key().to_bytes().to_vec();
    k.extend_from_slice(&e.hlc.0.to_be_bytes());
    k.extend_from_slice(&e.origin.to_be_bytes());
    k
}

/// Removes the displaced versions of `purge`'s entry that it covers; their released chunks go
/// into `released`.
fn drop_covered_displaced(
    displaced: &mut redb::Table<&[u8], &[u8]>,
    refs: &mut redb::Table<&[u8], u64>,
    purge: &Entry,
    released: &mut Vec<ChunkId>,
) -> Result<(), NamespaceError> {
    let prefix = purge.key().to_bytes();
    let mut covered = Vec::new();
    for row in displaced.range(&prefix[..]..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if let Some(e) = v.value().get(8..).and_then(|b| Entry::from_bytes(b).ok())
            && purge.covers(&e)
        {
            covered.push((k.value().to_vec(), e));
        }
    }
    for (key, e) in covered {
        displaced.remove(key.as_slice()).map_err(db_err)?;
        count_refs(refs, &e.chunks, -1, released)?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Adds `delta` (+1 or -1) to the reference count of each chunk; a count that reaches zero is
/// removed and reported in `released`.
pub(super) fn count_refs(
    refs: &mut redb::Table<&[u8], u64>,
    chunks: &[ChunkId],
    delta: i64,
    released: &mut Vec<ChunkId>,
) -> Result<(), NamespaceError> {
    for c in chunks {
        let n = refs.get(&c.0[..]).map_err(db_err)?.map_or(0, |v| v.value());
        let n = n.saturating_add_signed(delta);
        if n == 0 {
            refs.remove(&c.0[..]).map_err(db_err)?;
            released.push(*c);
        } else {
            refs.insert(&c.0[..], n).map_err(db_err)?;
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace store: {0}")]
    Db(#[from] redb::Error),
    #[error("namespace entry: {0}")]
    Entry(#[from] EntryError),
    #[error(
        "namespace store has layout {0}, newer than this version of p2pfs reads ({LAYOUT}): run the newer version"
    )]
    Layout(u64),
}

/// Re-keys a layout-1 store (entries keyed by id alone) by entry key, in the caller's
/// transaction: every table that names entries is rewritten from the entries it holds. Chunk
/// references do not change (the same entries reference the same chunks).
fn migrate_to_volume_keys(txn: &redb::WriteTransaction) -> Result<(), NamespaceError> {
    let mut moved = 0usize;
    // ENTRIES and TOMBSTONES: the value is the entry (TOMBSTONES' key is ENTRIES' key).
    let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
    let mut index = txn.open_table(TOMBSTONES).map_err(db_err)?;
    let old: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .map_err(db_err)?
        .filter_map(|row| row.ok())
        .filter(|(k, _)| k.value().len() != EntryKey::LEN)
        .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
        .collect();
    for (key, value) in old {
        entries.remove(key.as_slice()).map_err(db_err)?;
        let was_tombstone = index.remove(key.as_slice()).map_err(db_err)?.is_some();
        match Entry::from_bytes(&value) {
            Ok(e) if e.id.0[..] == key[..] => {
                let new = e.key().to_bytes();
                entries.insert(&new[..], value.as_slice()).map_err(db_err)?;
                if was_tombstone || e.deleted {
                    index.insert(&new[..], ()).map_err(db_err)?;
                }
                moved += 1;
            }
            // Kept out as `for_each_entry` would refuse it; peers resend good copies. Its
            // chunk references stay (a leak of counts, never a chunk deleted in use).
            _ => tracing::error!("undecodable stored entry dropped while re-keying the store"),
        }
    }
    let stale: Vec<Vec<u8>> = index
        .iter()
        .map_err(db_err)?
        .filter_map(|row| row.ok())
        .map(|(k, _)| k.value().to_vec())
        .filter(|k| k.len() != EntryKey::LEN)
        .collect();
    for key in stale {
        index.remove(key.as_slice()).map_err(db_err)?;
    }
    // FORGOTTEN and DISPLACED: the value holds the entry (DISPLACED's after an 8-byte time).
    for (def, skip) in [(FORGOTTEN, 0usize), (DISPLACED, 8)] {
        let mut table = txn.open_table(def).map_err(db_err)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .map_err(db_err)?
            .filter_map(|row| row.ok())
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .collect();
        for (key, value) in rows {
            let Some(e) = value.get(skip..).and_then(|b| Entry::from_bytes(b).ok()) else {
                continue;
            };
            let new = if skip == 0 {
                e.key().to_bytes().to_vec()
            } else {
                displaced_key(&e)
            };
            if new != key {
                table.remove(key.as_slice()).map_err(db_err)?;
                table
                    .insert(new.as_slice(), value.as_slice())
                    .map_err(db_err)?;
            }
        }
    }
    if moved > 0 {
        tracing::info!(entries = moved, "namespace store re-keyed by volume");
    }
    Ok(())
}

impl NamespaceError {
    /// The underlying I/O error, when the store failed on the disk (e.g. a full disk).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            NamespaceError::Db(redb::Error::Io(e)) => Some(e),
            _ => None,
        }
    }
}

pub(super) fn db_err(e: impl Into<redb::Error>) -> NamespaceError {
    NamespaceError::Db(e.into())
}

/// redb's page cache (its default is 1 GiB, which a node holding a million entries fills):
/// reads of single entries and directory pages do not need the whole store in memory.
const CACHE_BYTES: usize = 64 << 20;

/// The anti-entropy digest: 256 buckets, each the XOR of the blake3 of its entries' stored
/// bytes.
type Digest = Vec<[u8; 32]>;

fn xor_into(bucket: &mut [u8; 32], hash: &[u8; 32]) {
    for (b, x) in bucket.iter_mut().zip(hash) {
        *b ^= x;
    }
}

/// Cheap to clone: every volume of a mount shares one store.
#[derive(Clone)]
pub struct NamespaceStore {
    db: std::sync::Arc<Database>,
    /// The digest, computed by one scan on first use and then kept up to date by every write
    /// (XOR the replaced version's hash out, the new one's in): an anti-entropy round costs
    /// O(256), not a scan of the store (at a million entries the scan was 1.3 s of CPU per
    /// round, every 10 s, on both ends). Writers hold the lock across their transaction, so the
    /// first scan never races a commit.
    digest: std::sync::Arc<parking_lot::Mutex<Option<Digest>>>,
    /// Scans made by [`NamespaceStore::versions_in_where`] (status and tests).
    version_scans: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How long each volume keeps replaced versions ([`super::history`]). Until the node sets
    /// it, none are kept.
    retention: std::sync::Arc<parking_lot::RwLock<RetentionTable>>,
}

/// What a commit changed.
#[derive(Debug, Default)]
pub struct Committed {
    /// Entries now stored (they replaced the previous state of their id).
    pub applied: Vec<Entry>,
    /// Live versions that lost to a concurrent version of the same id (recorded in the
    /// displaced table, to become conflict copies once settled).
    pub displaced: Vec<Entry>,
    /// Chunks no stored entry references any more.
    pub released: Vec<ChunkId>,
    /// Chunks a purge tombstone released: GC deletes them at once, without the grace period.
    pub purged: Vec<ChunkId>,
    /// Incoming versions refused because an expired tombstone deleted them, with that
    /// tombstone (the sender had missed the deletion).
    pub forgotten: Vec<Entry>,
}

/// Result of loading the store: the valid entries and how many were refused.
pub struct Loaded {
    pub entries: Vec<Entry>,
    pub rejected: usize,
}

impl NamespaceStore {
    pub fn open(path: &Path) -> Result<Self, NamespaceError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.open_table(CHUNK_REFS).map_err(db_err)?;
        txn.open_table(TOMBSTONES).map_err(db_err)?;
        txn.open_table(FORGOTTEN).map_err(db_err)?;
        txn.open_table(DISPLACED).map_err(db_err)?;
        HistoryTables::open(&txn)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let layout = meta.get("layout").map_err(db_err)?.map(|v| v.value());
            match layout {
                Some(LAYOUT) => {}
                None => {
                    migrate_to_volume_keys(&txn)?;
                    meta.insert("layout", LAYOUT).map_err(db_err)?;
                }
                Some(other) => return Err(NamespaceError::Layout(other)),
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(Self {
            db: std::sync::Arc::new(db),
            digest: Default::default(),
            version_scans: Default::default(),
            retention: std::sync::Arc::new(parking_lot::RwLock::new(RetentionTable {
                default: RetentionPolicy::OFF,
                volumes: Default::default(),
            })),
        })
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    pub(super) fn retention_table(&self) -> &parking_lot::RwLock<RetentionTable> {
        &self.retention
    }

    /// Versions waiting to become conflict copies, with their arrival (ms since the epoch).
    pub fn displaced(&self) -> Result<Vec<(u64, Entry)>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DISPLACED).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            let v = v.value();
            if v.len() > 8
                && let Ok(e) = Entry::from_bytes(&v[8..])
            {
                let arrived = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                out.push((arrived, e));
            }
        }
        Ok(out)
    }

    /// Removes settled displaced versions (copied, or superseded by their own line). Returns
    /// the chunks no longer referenced.
    pub fn settle(&self, done: &[Entry]) -> Result<Vec<ChunkId>, NamespaceError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut released = Vec::new();
        {
            let mut table = txn.open_table(DISPLACED).map_err(db_err)?;
            let mut refs = txn.open_table(CHUNK_REFS).map_err(db_err)?;
            for e in done {
                if table
                    .remove(displaced_key(e).as_slice())
                    .map_err(db_err)?
                    .is_some()
                {
                    count_refs(&mut refs, &e.chunks, -1, &mut released)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(released)
    }

    /// For each id, whether a stored live entry references it.
    pub fn referenced(&self, ids: &[ChunkId]) -> Result<Vec<bool>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(CHUNK_REFS).map_err(db_err)?;
        ids.iter()
            .map(|id| Ok(table.get(&id.0[..]).map_err(db_err)?.is_some()))
            .collect()
    }

    /// Stored tombstones whose clock is at or before `before`.
    pub fn tombstones(&self, before: Hlc) -> Result<Vec<Entry>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let ids = txn.open_table(TOMBSTONES).map_err(db_err)?;
        let entries = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in ids.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            if let Some(v) = entries.get(key.value()).map_err(db_err)?
                && let Ok(e) = Entry::from_bytes(v.value())
                && e.deleted
                && e.hlc <= before
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Expires tombstones: each one that is the stored state of its id (or was written on top
    /// of it) leaves the namespace for the forgotten table. Returns how many expired.
    pub fn forget(&self, tombstones: &[Entry]) -> Result<usize, NamespaceError> {
        let mut digest = self.digest.lock();
        let mut delta = vec![[0u8; 32]; 256];
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut n = 0;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut index = txn.open_table(TOMBSTONES).map_err(db_err)?;
            let mut forgotten = txn.open_table(FORGOTTEN).map_err(db_err)?;
            for t in tombstones.iter().filter(|t| t.deleted) {
                let key = &t.key().to_bytes()[..];
                let (stored, stored_hash) = match entries.get(key).map_err(db_err)? {
                    Some(v) => (
                        Entry::from_bytes(v.value()).ok(),
                        *blake3::hash(v.value()).as_bytes(),
                    ),
                    None => continue,
                };
                if stored.is_some_and(|s| s.deleted && t.covers(&s)) {
                    xor_into(&mut delta[usize::from(key[0])], &stored_hash);
                    entries.remove(key).map_err(db_err)?;
                    index.remove(key).map_err(db_err)?;
                    forgotten
                        .insert(key, t.to_bytes().as_slice())
                        .map_err(db_err)?;
                    n += 1;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        if let Some(d) = digest.as_mut() {
            d.iter_mut().zip(&delta).for_each(|(b, x)| xor_into(b, x));
        }
        Ok(n)
    }

    fn table_len<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<u64, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(def).map_err(db_err)?;
        table.len().map_err(db_err)
    }

    /// Number of tombstones in the namespace.
    pub fn tombstones_len(&self) -> Result<u64, NamespaceError> {
        self.table_len(TOMBSTONES)
    }

    /// Number of expired tombstones kept.
    pub fn forgotten_len(&self) -> Result<u64, NamespaceError> {
        self.table_len(FORGOTTEN)
    }

    /// Every stored entry that decodes under its own key; others are logged and skipped (they
    /// were written by a bug or damaged on disk; peers will resend good copies). Signatures
    /// are not checked again: every entry was checked before it was stored (peers' in
    /// `rpc::sync::apply_from_peer` and the gossip path, ours are signed here), and re-checking
    /// a million at every start cost a minute of CPU. The local store is trusted like any local
    /// file of the node.
    pub fn load_all(&self) -> Result<Loaded, NamespaceError> {
        let mut entries = Vec::new();
        let rejected = self.for_each_entry(|e| entries.push(e))?;
        Ok(Loaded { entries, rejected })
    }

    /// Hands every stored entry to `take`, in id order, decoding one at a time (a node's start
    /// builds its trees this way, never holding the whole namespace decoded). Returns how many
    /// stored entries were refused (undecodable, or under the wrong key).
    pub fn for_each_entry(&self, mut take: impl FnMut(Entry)) -> Result<usize, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut rejected = 0;
        for row in table.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            match Entry::from_bytes(value.value()) {
                Ok(e) if e.key().to_bytes()[..] == *key.value() => take(e),
                Ok(e) => {
                    tracing::error!(entry = %e.id, "stored entry under the wrong key; skipped");
                    rejected += 1;
                }
                Err(err) => {
                    tracing::error!(error = %err, "stored entry refused");
                    rejected += 1;
                }
            }
        }
        Ok(rejected)
    }

    pub fn get(&self, key: &EntryKey) -> Result<Option<Entry>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        match table.get(&key.to_bytes()[..]).map_err(db_err)? {
            Some(v) => Ok(Some(Entry::from_bytes(v.value())?)),
            None => Ok(None),
        }
    }

    /// Anti-entropy digest: entries are bucketed by the first byte of their id; a bucket's hash
    /// is the XOR of its entries' version hashes, so it does not depend on order. Kept up to
    /// date by every write after the first call (see the `digest` field).
    pub fn digest(&self) -> Result<Vec<[u8; 32]>, NamespaceError> {
        let mut cached = self.digest.lock();
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let d = self.scan_digest()?;
        *cached = Some(d.clone());
        Ok(d)
    }

    /// The digest by a full scan of the store.
    fn scan_digest(&self) -> Result<Vec<[u8; 32]>, NamespaceError> {
        let mut buckets = vec![[0u8; 32]; 256];
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        for row in table.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let Some(&first) = key.value().first() else {
                continue;
            };
            let h = blake3::hash(value.value());
            for (b, x) in buckets[first as usize].iter_mut().zip(h.as_bytes()) {
                *b ^= x;
            }
        }
        Ok(buckets)
    }

    /// Entries of one digest bucket, in key order, starting after `after`, at most `limit`.
    pub fn bucket_entries(
        &self,
        bucket: u8,
        after: Option<EntryKey>,
        limit: usize,
    ) -> Result<Vec<Entry>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let after = after.map(|a| a.to_bytes());
        let start = match after {
            Some(key) => key.to_vec(),
            None => vec![bucket],
        };
        let mut out = Vec::new();
        for row in table.range(start.as_slice()..).map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let key = key.value();
            if key.first() != Some(&bucket) {
                break;
            }
            if after.is_some_and(|a| key == a) {
                continue;
            }
            if let Ok(e) = Entry::from_bytes(value.value()) {
                out.push(e);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Number of stored entries (all volumes, tombstones included).
    pub fn len(&self) -> Result<u64, NamespaceError> {
        self.table_len(ENTRIES)
    }

    pub fn is_empty(&self) -> Result<bool, NamespaceError> {
        Ok(self.len()? == 0)
    }

    /// Merges `entries` into the store in one durable transaction (see [`entry::resolve`]).
    /// Returns the entries that changed the store, and the live versions that lost to a
    /// concurrent one (whose content the caller keeps as conflict copies).
    pub fn commit(&self, entries: &[Entry]) -> Result<Committed, NamespaceError> {
        let policies = self.retention.read().clone();
        let now = now_ms();
        let mut digest = self.digest.lock();
        let mut delta = vec![[0u8; 32]; 256];
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut out = Committed::default();
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut refs = txn.open_table(CHUNK_REFS).map_err(db_err)?;
            let mut index = txn.open_table(TOMBSTONES).map_err(db_err)?;
            let mut displaced = txn.open_table(DISPLACED).map_err(db_err)?;
            let forgotten = txn.open_table(FORGOTTEN).map_err(db_err)?;
            let mut history = HistoryTables::open(&txn)?;
            for incoming in entries {
                let key = &incoming.key().to_bytes()[..];
                let (current, current_hash) = match table.get(key).map_err(db_err)? {
                    Some(v) => (
                        Entry::from_bytes(v.value()).ok(),
                        Some(*blake3::hash(v.value()).as_bytes()),
                    ),
                    None => (None, None),
                };
                if current.is_none()
                    && let Some(v) = forgotten.get(key).map_err(db_err)?
                    && let Ok(t) = Entry::from_bytes(v.value())
                    && t.covers(incoming)
                {
                    out.forgotten.push(t);
                    continue;
                }
                let resolution = match entry::resolve(current.as_ref(), incoming) {
                    Ok(r) => r,
                    // Only a stored value under another entry's key (damage) gets here.
                    Err(e) => {
                        tracing::error!(error = %e, "stored entry does not match its key; incoming version refused");
                        continue;
                    }
                };
                // A purge erases what it covers whether or not it wins: the versions it was
                // written on top of, kept here or waiting as conflict copies.
                let mut purged = Vec::new();
                if incoming.purge && incoming.deleted {
                    history.purge(&mut refs, incoming, &mut purged)?;
                    drop_covered_displaced(&mut displaced, &mut refs, incoming, &mut purged)?;
                }
                if let Some(lost) = resolution.displaced {
                    let dkey = displaced_key(lost);
                    if displaced.get(dkey.as_slice()).map_err(db_err)?.is_none() {
                        let mut value = now_ms().to_le_bytes().to_vec();
                        value.extend_from_slice(&lost.to_bytes());
                        displaced
                            .insert(dkey.as_slice(), value.as_slice())
                            .map_err(db_err)?;
                        count_refs(&mut refs, &lost.chunks, 1, &mut out.released)?;
                        out.displaced.push(lost.clone());
                    }
                }
                if !std::ptr::eq(resolution.keep, incoming) {
                    out.purged.extend(purged);
                    continue;
                }
                let bytes = incoming.to_bytes();
                let bucket = &mut delta[usize::from(key[0])];
                if let Some(old) = &current_hash {
                    xor_into(bucket, old);
                }
                xor_into(bucket, blake3::hash(&bytes).as_bytes());
                table.insert(key, bytes.as_slice()).map_err(db_err)?;
                if incoming.deleted {
                    index.insert(key, ()).map_err(db_err)?;
                } else {
                    index.remove(key).map_err(db_err)?;
                }
                // Count the new version's chunks before releasing the old one's, so chunks
                // the two share never drop to zero.
                count_refs(&mut refs, &incoming.chunks, 1, &mut out.released)?;
                let policy = policies.of(&incoming.volume);
                let released = if incoming.purge {
                    &mut purged
                } else {
                    &mut out.released
                };
                match &current {
                    Some(old) if !old.deleted && !incoming.purge && policy.keeps_versions() => {
                        history.keep(&mut refs, old, incoming.hlc, now, policy, released)?
                    }
                    _ => {
                        let old: &[ChunkId] = current.as_ref().map_or(&[], |c| &c.chunks);
                        count_refs(&mut refs, old, -1, released)?;
                    }
                }
                out.purged.extend(purged);
                out.applied.push(incoming.clone());
            }
            // Only what nothing references at the end of the transaction is erased: a later
            // entry of the same commit (a copy of the purged file's bytes, caught up with in
            // one sync page) may reference a chunk a purge released before it.
            let mut erased = Vec::with_capacity(out.purged.len());
            for c in std::mem::take(&mut out.purged) {
                if refs.get(&c.0[..]).map_err(db_err)?.is_none() && !erased.contains(&c) {
                    erased.push(c);
                }
            }
            out.purged = erased;
        }
        txn.commit().map_err(db_err)?;
        if let Some(d) = digest.as_mut() {
            d.iter_mut().zip(&delta).for_each(|(b, x)| xor_into(b, x));
        }
        Ok(out)
    }
}

/// Where a stored version is kept ([`NamespaceStore::placed_versions_in_where`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredAs {
    /// The current state of its id.
    Current,
    /// Lost to a concurrent version, waiting to become a conflict copy.
    Displaced,
    /// A tombstone past its retention, kept to refuse the versions it deleted.
    Expired,
}

/// What [`NamespaceStore::purge`] removed.
#[derive(Debug, Default)]
pub struct Purged {
    /// Versions that were the stored state of their id (the id now has none here).
    pub current: Vec<Entry>,
    /// Chunks no stored entry references any more.
    pub released: Vec<ChunkId>,
}

impl NamespaceStore {
    /// The versions the store holds (current states, displaced versions and expired
    /// tombstones) that `wanted` picks, in one pass; only those are kept decoded.
    pub fn versions_where(
        &self,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<Entry>, NamespaceError> {
        self.versions_in_where(|_| true, wanted)
    }

    /// As [`versions_where`](Self::versions_where), over the volumes `in_volume` picks: rows
    /// of other volumes are skipped by their key's volume part, never decoded.
    pub fn versions_in_where(
        &self,
        in_volume: impl Fn(&VolumeId) -> bool,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<Entry>, NamespaceError> {
        Ok(self
            .placed_versions_in_where(in_volume, wanted)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// As [`versions_in_where`](Self::versions_in_where), each with where it is stored, in
    /// that order: current states, then displaced versions, then expired tombstones.
    pub fn placed_versions_in_where(
        &self,
        in_volume: impl Fn(&VolumeId) -> bool,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<(StoredAs, Entry)>, NamespaceError> {
        self.version_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Every table's key starts with an `EntryKey` (`id || volume`).
        let picked = |key: &[u8]| {
            key.get(16..EntryKey::LEN)
                .is_some_and(|v| in_volume(&VolumeId(v.try_into().expect("16 bytes"))))
        };
        let txn = self.db.begin_read().map_err(db_err)?;
        let mut out = Vec::new();
        let entries = txn.open_table(ENTRIES).map_err(db_err)?;
        for row in entries.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            if !picked(k.value()) {
                continue;
            }
            if let Ok(e) = Entry::from_bytes(v.value())
                && e.key().to_bytes()[..] == *k.value()
                && wanted(&e)
            {
                out.push((StoredAs::Current, e));
            }
        }
        let displaced = txn.open_table(DISPLACED).map_err(db_err)?;
        for row in displaced.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let v = v.value();
            if picked(k.value())
                && v.len() > 8
                && let Ok(e) = Entry::from_bytes(&v[8..])
                && wanted(&e)
            {
                out.push((StoredAs::Displaced, e));
            }
        }
        let forgotten = txn.open_table(FORGOTTEN).map_err(db_err)?;
        for row in forgotten.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            if picked(k.value())
                && let Ok(e) = Entry::from_bytes(v.value())
                && wanted(&e)
            {
                out.push((StoredAs::Expired, e));
            }
        }
        Ok(out)
    }

    /// How many scans [`versions_in_where`](Self::versions_in_where) has made since this store
    /// was opened (each reads the whole store's keys).
    pub fn version_scans(&self) -> u64 {
        self.version_scans
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes exactly these versions wherever they are stored (current state, displaced,
    /// expired), in one transaction; a version stored nowhere is skipped. An id whose current
    /// state goes has none here until a peer sends one (which then merges as new).
    pub fn purge(&self, versions: &[Entry]) -> Result<Purged, NamespaceError> {
        let mut digest = self.digest.lock();
        let mut delta = vec![[0u8; 32]; 256];
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut out = Purged::default();
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut refs = txn.open_table(CHUNK_REFS).map_err(db_err)?;
            let mut index = txn.open_table(TOMBSTONES).map_err(db_err)?;
            let mut displaced = txn.open_table(DISPLACED).map_err(db_err)?;
            let mut forgotten = txn.open_table(FORGOTTEN).map_err(db_err)?;
            for e in versions {
                let key = &e.key().to_bytes()[..];
                let stored = entries
                    .get(key)
                    .map_err(db_err)?
                    .map(|v| (Entry::from_bytes(v.value()).ok(), blake3::hash(v.value())));
                if let Some((Some(current), hash)) = stored
                    && current == *e
                {
                    xor_into(&mut delta[usize::from(key[0])], hash.as_bytes());
                    entries.remove(key).map_err(db_err)?;
                    index.remove(key).map_err(db_err)?;
                    count_refs(&mut refs, &e.chunks, -1, &mut out.released)?;
                    out.current.push(current);
                }
                let dkey = displaced_key(e);
                let is_displaced =
                    displaced
                        .get(dkey.as_slice())
                        .map_err(db_err)?
                        .is_some_and(|v| {
                            v.value().len() > 8
                                && Entry::from_bytes(&v.value()[8..]).ok().as_ref() == Some(e)
                        });
                if is_displaced {
                    displaced.remove(dkey.as_slice()).map_err(db_err)?;
                    count_refs(&mut refs, &e.chunks, -1, &mut out.released)?;
                }
                let is_forgotten = forgotten
                    .get(key)
                    .map_err(db_err)?
                    .is_some_and(|v| Entry::from_bytes(v.value()).ok().as_ref() == Some(e));
                if is_forgotten {
                    forgotten.remove(key).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        if let Some(d) = digest.as_mut() {
            d.iter_mut().zip(&delta).for_each(|(b, x)| xor_into(b, x));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(super) mod purge_tests {
    use super::*;
    use crate::block::{ChunkKey, ChunkRef};
    use crate::namespace::EntryId;
    use crate::namespace::entry::{EntryKind, EntryMeta, EntrySealer, Timestamp, VolumeId};
    use ed25519_dalek::SigningKey;

    /// A one-chunk file's metadata (also for `history`'s tests).
    pub(in crate::namespace) fn file(chunk: u8) -> EntryMeta {
        let mut m = EntryMeta::new_empty(
            EntryId([0; 16]),
            b"f".to_vec(),
            EntryKind::File,
            0o644,
            (0, 0),
            Timestamp::now(),
        );
        m.blocks = vec![Some(ChunkRef {
            id: ChunkId([chunk; 32]),
            key: ChunkKey([0; 32]),
        })];
        m
    }

    #[test]
    fn purge_removes_exact_versions_from_every_table_and_keeps_the_digest_true() {
        let dir = tempfile::tempdir().unwrap();
        let store = NamespaceStore::open(&dir.path().join("ns.redb")).unwrap();
        let (sk1, sk2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let sealer = |sk, origin| EntrySealer {
            volume: VolumeId([3; 16]),
            payload_key: &[2; 32],
            signer: sk,
            origin,
        };
        store.digest().unwrap();
        // A current version, replaced by a tombstone written over it: purging the tombstone
        // leaves the id empty, so the version it replaced merges as new again.
        let (id, other) = (EntryId([5; 16]), EntryId([6; 16]));
        let live = sealer(&sk1, 1).seal(id, Hlc(10), &[], &file(1));
        let over = sealer(&sk2, 2).tombstone(id, Hlc(11), &live.seen);
        store.commit(&[live.clone(), over.clone()]).unwrap();
        // Two concurrent versions of another id: one is displaced.
        let a = sealer(&sk1, 1).seal(other, Hlc(20), &[], &file(2));
        let b = sealer(&sk2, 2).seal(other, Hlc(21), &[], &file(3));
        let c = store.commit(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.displaced, vec![a.clone()]);
        assert_eq!(store.referenced(&[ChunkId([2; 32])]).unwrap(), vec![true]);
        // A version that is stored nowhere, and one that differs from what is stored, stay.
        let stranger = sealer(&sk2, 2).tombstone(id, Hlc(12), &live.seen);
        let purged = store.purge(&[over.clone(), a.clone(), stranger]).unwrap();
        assert_eq!(purged.current, vec![over.clone()]);
        assert_eq!(purged.released, vec![ChunkId([2; 32])]);
        assert!(store.get(&over.key()).unwrap().is_none());
        assert_eq!(store.get(&b.key()).unwrap(), Some(b.clone()));
        assert!(store.displaced().unwrap().is_empty());
        assert_eq!(store.tombstones_len().unwrap(), 0);
        assert_eq!(store.digest().unwrap(), store.scan_digest().unwrap());
        assert_eq!(
            store.commit(std::slice::from_ref(&live)).unwrap().applied,
            vec![live.clone()]
        );
        // An expired tombstone: purged, it no longer refuses the version it deleted.
        let gone = sealer(&sk2, 2).tombstone(id, Hlc(30), &live.seen);
        store.commit(std::slice::from_ref(&gone)).unwrap();
        assert_eq!(store.forget(std::slice::from_ref(&gone)).unwrap(), 1);
        assert_eq!(
            store.commit(std::slice::from_ref(&live)).unwrap().forgotten,
            vec![gone.clone()]
        );
        store.purge(std::slice::from_ref(&gone)).unwrap();
        assert_eq!(store.forgotten_len().unwrap(), 0);
        assert_eq!(
            store.commit(std::slice::from_ref(&live)).unwrap().applied,
            vec![live]
        );
        assert_eq!(store.digest().unwrap(), store.scan_digest().unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::entry::{
        EntryId, EntryKind, EntryMeta, EntrySealer, Timestamp, VolumeId,
    };
    use crate::util::hlc::Hlc;
    use ed25519_dalek::SigningKey;

    fn sealer(sk: &SigningKey) -> EntrySealer<'_> {
        EntrySealer {
            volume: VolumeId([0; 16]),
            payload_key: &[2; 32],
            signer: sk,
            origin: 1,
        }
    }

    #[test]
    fn commit_merges_last_writer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        let sk = SigningKey::from_bytes(&[1; 32]);
        let sealer = sealer(&sk);
        let meta = EntryMeta {
            parent: EntryId([0; 16]),
            name: b"x".to_vec(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: Timestamp::now(),
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            blocks: vec![],
            symlink_target: vec![],
            rdev: 0,
            target: None,
            unnamed: false,
            xattrs: vec![],
            conflict_of: None,
        };
        let id = EntryId([5; 16]);
        let new = sealer.seal(id, Hlc(10), &[], &meta);
        let old = sealer.tombstone(id, Hlc(5), &[]);
        {
            let store = NamespaceStore::open(&path).unwrap();
            assert_eq!(
                store
                    .commit(std::slice::from_ref(&new))
                    .unwrap()
                    .applied
                    .len(),
                1
            );
            assert!(
                store.commit(&[old]).unwrap().applied.is_empty(),
                "an older version changes nothing"
            );
            assert!(
                store
                    .commit(std::slice::from_ref(&new))
                    .unwrap()
                    .applied
                    .is_empty(),
                "replay changes nothing"
            );
        }
        let store = NamespaceStore::open(&path).unwrap();
        let loaded = store.load_all().unwrap();
        assert_eq!(loaded.entries, vec![new.clone()]);
        assert_eq!(loaded.rejected, 0);
        assert_eq!(store.get(&new.key()).unwrap(), Some(new.clone()));
        let digest = store.digest().unwrap();
        assert_ne!(digest[5], [0; 32]);
        assert_eq!(digest.iter().filter(|b| **b != [0; 32]).count(), 1);
        assert_eq!(
            store.bucket_entries(5, None, 10).unwrap(),
            vec![new.clone()]
        );
        assert!(
            store
                .bucket_entries(5, Some(new.key()), 10)
                .unwrap()
                .is_empty()
        );
        assert!(store.bucket_entries(6, None, 10).unwrap().is_empty());
        assert_eq!(store.len().unwrap(), 1);
    }

    fn file_meta(chunks: &[u8]) -> EntryMeta {
        EntryMeta {
            parent: EntryId([0; 16]),
            name: b"f".to_vec(),
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            atime: Timestamp::now(),
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            blocks: chunks
                .iter()
                .map(|c| {
                    Some(crate::block::ChunkRef {
                        id: ChunkId([*c; 32]),
                        key: crate::block::ChunkKey([0; 32]),
                    })
                })
                .collect(),
            symlink_target: vec![],
            rdev: 0,
            target: None,
            unnamed: false,
            xattrs: vec![],
            conflict_of: None,
        }
    }

    #[test]
    fn chunk_references_follow_versions_and_expired_tombstones_refuse_what_they_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = NamespaceStore::open(&dir.path().join("ns.redb")).unwrap();
        let sk = SigningKey::from_bytes(&[1; 32]);
        let sealer = sealer(&sk);
        let (a, b) = (EntryId([1; 16]), EntryId([2; 16]));
        let ids = |cs: &[u8]| cs.iter().map(|c| ChunkId([*c; 32])).collect::<Vec<_>>();
        let a1 = sealer.seal(a, Hlc(10), &[], &file_meta(&[1, 2]));
        let b1 = sealer.seal(b, Hlc(11), &[], &file_meta(&[2, 3]));
        store.commit(&[a1.clone(), b1.clone()]).unwrap();
        assert_eq!(
            store.referenced(&ids(&[1, 2, 3, 4])).unwrap(),
            [true, true, true, false]
        );

        // a is rewritten: chunk 1 is released, 2 is still used by b.
        let a2 = sealer.seal(a, Hlc(20), &a1.seen, &file_meta(&[2, 5]));
        let c = store.commit(std::slice::from_ref(&a2)).unwrap();
        assert_eq!(c.released, ids(&[1]));
        // b is deleted: 3 goes, 2 stays (a2).
        let b_dead = sealer.tombstone(b, Hlc(30), &b1.seen);
        let c = store.commit(std::slice::from_ref(&b_dead)).unwrap();
        assert_eq!(c.released, ids(&[3]));
        assert_eq!(
            store.referenced(&ids(&[1, 2, 3, 5])).unwrap(),
            [false, true, false, true]
        );
        assert_eq!(store.tombstones(Hlc(29)).unwrap(), vec![]);
        assert_eq!(store.tombstones(Hlc(30)).unwrap(), vec![b_dead.clone()]);
        assert_eq!(store.tombstones_len().unwrap(), 1);

        // Expiry takes it out of the namespace (and its digest).
        let digest = store.digest().unwrap();
        assert_eq!(store.forget(std::slice::from_ref(&b_dead)).unwrap(), 1);
        assert_eq!(store.get(&b_dead.key()).unwrap(), None);
        assert_eq!(store.tombstones_len().unwrap(), 0);
        assert_eq!(store.forgotten_len().unwrap(), 1);
        assert_ne!(store.digest().unwrap(), digest);
        // A node that was away brings back the version it deleted: refused, and the tombstone
        // comes back for it.
        let c = store.commit(std::slice::from_ref(&b1)).unwrap();
        assert!(c.applied.is_empty());
        assert_eq!(c.forgotten, vec![b_dead.clone()]);
        // A modify the deleter never saw is not refused.
        let other = SigningKey::from_bytes(&[3; 32]);
        let b_concurrent = EntrySealer {
            origin: 2,
            signer: &other,
            ..sealer
        }
        .seal(b, Hlc(25), &b1.seen, &file_meta(&[6]));
        let c = store.commit(std::slice::from_ref(&b_concurrent)).unwrap();
        assert_eq!(c.applied, vec![b_concurrent]);
        assert_eq!(store.referenced(&ids(&[6])).unwrap(), [true]);
        // Forgetting only takes a tombstone that is the stored state.
        assert_eq!(store.forget(&[a2]).unwrap(), 0);
    }

    /// The digest kept up to date by commits and expiries is the digest a full scan gives,
    /// whether it was first asked for before the writes or after some of them.
    #[test]
    fn kept_digest_equals_a_full_scan() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let sealer = sealer(&sk);
        for first_digest_after in [0usize, 7, 40] {
            let dir = tempfile::tempdir().unwrap();
            let store = NamespaceStore::open(&dir.path().join("ns.redb")).unwrap();
            let mut latest: std::collections::HashMap<EntryId, Entry> = Default::default();
            for step in 0..60usize {
                // Ids spread over a few buckets; versions replace, tombstones delete, and
                // some tombstones expire.
                let id = EntryId([
                    (step % 5) as u8 * 51,
                    (step % 13) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]);
                let base = latest.get(&id).map(|e| e.seen.clone()).unwrap_or_default();
                let e = if step % 4 == 3 {
                    sealer.tombstone(id, Hlc(step as u64 + 1), &base)
                } else {
                    sealer.seal(id, Hlc(step as u64 + 1), &base, &file_meta(&[step as u8]))
                };
                store.commit(std::slice::from_ref(&e)).unwrap();
                latest.insert(id, e.clone());
                if step % 8 == 7 {
                    store.forget(std::slice::from_ref(&e)).unwrap();
                    latest.remove(&id);
                }
                if step >= first_digest_after {
                    assert_eq!(
                        store.digest().unwrap(),
                        store.scan_digest().unwrap(),
                        "step {step}"
                    );
                }
            }
        }
    }

    fn other_volume(sk: &SigningKey, volume: u8) -> EntrySealer<'_> {
        EntrySealer {
            volume: VolumeId([volume; 16]),
            payload_key: &[2; 32],
            signer: sk,
            origin: 9,
        }
    }

    /// A tombstone of another volume that claims a stored entry's id, with a history that
    /// covers everything, neither replaces nor displaces it, nor expires it, nor blocks its
    /// later versions: it is another entry.
    #[test]
    fn entries_of_two_volumes_with_one_id_never_meet() {
        let dir = tempfile::tempdir().unwrap();
        let store = NamespaceStore::open(&dir.path().join("ns.redb")).unwrap();
        let (sk, rogue) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[7; 32]),
        );
        let victim = sealer(&sk);
        let id = EntryId([4; 16]);
        let v1 = victim.seal(id, Hlc(10), &[], &file_meta(&[1]));
        store.commit(std::slice::from_ref(&v1)).unwrap();
        let everything: Vec<(u64, Hlc)> = (0..32).map(|o| (o, Hlc(u64::MAX - 1))).collect();
        let hostile = other_volume(&rogue, 0xee).tombstone(id, Hlc(u64::MAX - 1), &everything);
        assert!(hostile.covers(&v1));
        let c = store.commit(std::slice::from_ref(&hostile)).unwrap();
        assert_eq!(c.applied, vec![hostile.clone()], "stored as its own entry");
        assert!(c.displaced.is_empty() && c.released.is_empty());
        assert_eq!(store.get(&v1.key()).unwrap(), Some(v1.clone()));
        assert_eq!(store.get(&hostile.key()).unwrap(), Some(hostile.clone()));
        assert_eq!(store.referenced(&[ChunkId([1; 32])]).unwrap(), [true]);
        // Expiring it forgets only itself.
        assert_eq!(store.forget(std::slice::from_ref(&hostile)).unwrap(), 1);
        assert_eq!(store.get(&v1.key()).unwrap(), Some(v1.clone()));
        // A later version of the victim is not refused by the forgotten tombstone.
        let v2 = victim.seal(id, Hlc(20), &v1.seen, &file_meta(&[2]));
        let c = store.commit(std::slice::from_ref(&v2)).unwrap();
        assert_eq!(c.applied, vec![v2.clone()]);
        assert!(c.forgotten.is_empty());
        // A concurrent live version in a third volume is no conflict of the victim's.
        let twin = other_volume(&rogue, 0xdd).seal(id, Hlc(30), &[], &file_meta(&[3]));
        let c = store.commit(std::slice::from_ref(&twin)).unwrap();
        assert!(c.displaced.is_empty() && c.forgotten.is_empty());
        assert_eq!(c.applied, vec![twin.clone()]);
        let mut all = store.load_all().unwrap().entries;
        all.sort_by_key(|e| e.key());
        let mut want = vec![v2.clone(), twin.clone()];
        want.sort_by_key(|e| e.key());
        assert_eq!(all, want);
        // Both are in the same digest bucket, and pages go through both.
        let page = store.bucket_entries(4, None, 1).unwrap();
        assert_eq!(page.len(), 1);
        let rest = store.bucket_entries(4, Some(page[0].key()), 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_ne!(rest[0].key(), page[0].key());
        assert_eq!(store.digest().unwrap(), store.scan_digest().unwrap());
    }

    /// A store written before entries were keyed by volume (ids alone as keys, no layout) is
    /// re-keyed at open: every entry, tombstone index row, expired tombstone and displaced
    /// version is found under its new key, and nothing else changes.
    #[test]
    fn opening_a_layout_one_store_rekeys_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        let sk = SigningKey::from_bytes(&[1; 32]);
        let s = sealer(&sk);
        let live = s.seal(EntryId([1; 16]), Hlc(10), &[], &file_meta(&[1]));
        let dead = s.tombstone(EntryId([2; 16]), Hlc(11), &[]);
        let forgotten = s.tombstone(EntryId([3; 16]), Hlc(12), &[]);
        let lost = s.seal(EntryId([1; 16]), Hlc(9), &[], &file_meta(&[5]));
        {
            // The old layout, written as the old code did.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut entries = txn.open_table(ENTRIES).unwrap();
                let mut index = txn.open_table(TOMBSTONES).unwrap();
                let mut refs = txn.open_table(CHUNK_REFS).unwrap();
                let mut gone = txn.open_table(FORGOTTEN).unwrap();
                let mut displaced = txn.open_table(DISPLACED).unwrap();
                for e in [&live, &dead] {
                    entries
                        .insert(&e.id.0[..], e.to_bytes().as_slice())
                        .unwrap();
                }
                index.insert(&dead.id.0[..], ()).unwrap();
                refs.insert(&[1u8; 32][..], 1).unwrap();
                refs.insert(&[5u8; 32][..], 1).unwrap();
                gone.insert(&forgotten.id.0[..], forgotten.to_bytes().as_slice())
                    .unwrap();
                let mut dkey = lost.id.0.to_vec();
                dkey.extend_from_slice(&lost.hlc.0.to_be_bytes());
                dkey.extend_from_slice(&lost.origin.to_be_bytes());
                let mut value = 77u64.to_le_bytes().to_vec();
                value.extend_from_slice(&lost.to_bytes());
                displaced.insert(dkey.as_slice(), value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = NamespaceStore::open(&path).unwrap();
        let loaded = store.load_all().unwrap();
        assert_eq!(loaded.rejected, 0);
        assert_eq!(loaded.entries.len(), 2);
        assert_eq!(store.get(&live.key()).unwrap(), Some(live.clone()));
        assert_eq!(store.get(&dead.key()).unwrap(), Some(dead.clone()));
        assert_eq!(store.tombstones(Hlc(100)).unwrap(), vec![dead.clone()]);
        assert_eq!(store.tombstones_len().unwrap(), 1);
        assert_eq!(store.forgotten_len().unwrap(), 1);
        assert_eq!(store.displaced().unwrap(), vec![(77, lost.clone())]);
        // The expired tombstone still refuses what it deleted.
        let deleted = s.seal(EntryId([3; 16]), Hlc(1), &[], &file_meta(&[9]));
        let c = store.commit(&[deleted]).unwrap();
        assert_eq!(c.forgotten, vec![forgotten.clone()]);
        // Settling the displaced version releases its chunk, as before.
        assert_eq!(
            store.settle(std::slice::from_ref(&lost)).unwrap(),
            vec![ChunkId([5; 32])]
        );
        assert_eq!(store.digest().unwrap(), store.scan_digest().unwrap());
        drop(store);
        // Opening again changes nothing.
        let store = NamespaceStore::open(&path).unwrap();
        assert_eq!(store.len().unwrap(), 2);
        assert_eq!(store.get(&live.key()).unwrap(), Some(live));
    }
}
