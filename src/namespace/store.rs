//! Persistence of the namespace in `redb`, an embedded ACID store: every commit is one
//! durable transaction, so a crash leaves the namespace as of the last commit, never half of
//! one. Entries are stored as they travel (signed, payload encrypted): nothing here is in clear.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::entry::{self, Entry, EntryError, EntryId};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace store: {0}")]
    Db(#[from] redb::Error),
    #[error("namespace entry: {0}")]
    Entry(#[from] EntryError),
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

fn db_err(e: impl Into<redb::Error>) -> NamespaceError {
    NamespaceError::Db(e.into())
}

pub struct NamespaceStore {
    db: Database,
}

/// What a commit changed.
#[derive(Debug, Default)]
pub struct Committed {
    /// Entries now stored (they replaced the previous state of their id).
    pub applied: Vec<Entry>,
    /// Live versions that lost to a concurrent version of the same id.
    pub displaced: Vec<Entry>,
}

/// Result of loading the store: the valid entries and how many were refused.
pub struct Loaded {
    pub entries: Vec<Entry>,
    pub rejected: usize,
}

impl NamespaceStore {
    pub fn open(path: &Path) -> Result<Self, NamespaceError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Every stored entry whose encoding and signature check out; others are logged and
    /// skipped (they were written by a bug or damaged on disk; peers will resend good copies).
    pub fn load_all(&self) -> Result<Loaded, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut loaded = Loaded {
            entries: Vec::new(),
            rejected: 0,
        };
        for row in table.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            match Entry::from_bytes(value.value()).and_then(|e| e.verify_signature().map(|()| e)) {
                Ok(e) if e.id.0[..] == *key.value() => loaded.entries.push(e),
                Ok(e) => {
                    tracing::error!(entry = %e.id, "stored entry under the wrong key; skipped");
                    loaded.rejected += 1;
                }
                Err(err) => {
                    tracing::error!(error = %err, "stored entry refused");
                    loaded.rejected += 1;
                }
            }
        }
        Ok(loaded)
    }

    pub fn get(&self, id: &EntryId) -> Result<Option<Entry>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        match table.get(&id.0[..]).map_err(db_err)? {
            Some(v) => Ok(Some(Entry::from_bytes(v.value())?)),
            None => Ok(None),
        }
    }

    /// Anti-entropy digest: entries are bucketed by the first byte of their id; a bucket's hash
    /// is the XOR of its entries' version hashes, so it does not depend on order.
    pub fn digest(&self) -> Result<Vec<[u8; 32]>, NamespaceError> {
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

    /// Entries of one digest bucket, in id order, starting after `after`, at most `limit`.
    pub fn bucket_entries(
        &self,
        bucket: u8,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Vec<Entry>, NamespaceError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let start = match after {
            Some(id) => id.0.to_vec(),
            None => vec![bucket],
        };
        let mut out = Vec::new();
        for row in table.range(start.as_slice()..).map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let key = key.value();
            if key.first() != Some(&bucket) {
                break;
            }
            if after.is_some_and(|a| key == a.0) {
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
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        table.len().map_err(db_err)
    }

    pub fn is_empty(&self) -> Result<bool, NamespaceError> {
        Ok(self.len()? == 0)
    }

    /// Merges `entries` into the store in one durable transaction (see [`entry::resolve`]).
    /// Returns the entries that changed the store, and the live versions that lost to a
    /// concurrent one (whose content the caller keeps as conflict copies).
    pub fn commit(&self, entries: &[Entry]) -> Result<Committed, NamespaceError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut applied = Vec::new();
        let mut displaced = Vec::new();
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            for incoming in entries {
                let current = match table.get(&incoming.id.0[..]).map_err(db_err)? {
                    Some(v) => Entry::from_bytes(v.value()).ok(),
                    None => None,
                };
                let resolution = entry::resolve(current.as_ref(), incoming);
                if let Some(lost) = resolution.displaced {
                    displaced.push(lost.clone());
                }
                if std::ptr::eq(resolution.keep, incoming) {
                    table
                        .insert(&incoming.id.0[..], incoming.to_bytes().as_slice())
                        .map_err(db_err)?;
                    applied.push(incoming.clone());
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(Committed { applied, displaced })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::entry::{EntryKind, EntryMeta, EntrySealer, Timestamp, VolumeId};
    use crate::util::hlc::Hlc;
    use ed25519_dalek::SigningKey;

    #[test]
    fn commit_merges_last_writer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redb");
        let sk = SigningKey::from_bytes(&[1; 32]);
        let sealer = EntrySealer {
            volume: VolumeId([0; 16]),
            payload_key: &[2; 32],
            signer: &sk,
            origin: 1,
        };
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
        assert_eq!(store.get(&id).unwrap(), Some(new.clone()));
        let digest = store.digest().unwrap();
        assert_ne!(digest[5], [0; 32]);
        assert_eq!(digest.iter().filter(|b| **b != [0; 32]).count(), 1);
        assert_eq!(
            store.bucket_entries(5, None, 10).unwrap(),
            vec![new.clone()]
        );
        assert!(store.bucket_entries(5, Some(id), 10).unwrap().is_empty());
        assert!(store.bucket_entries(6, None, 10).unwrap().is_empty());
        assert_eq!(store.len().unwrap(), 1);
    }
}
