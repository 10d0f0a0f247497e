//! In-memory LRU of decrypted chunks, bounded in bytes rather than entries, so a cache of
//! 64 MiB holds 64 MiB whatever the chunk size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use super::{ChunkId, PlainChunk};

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    lru: LruCache<ChunkId, Arc<PlainChunk>>,
    bytes: u64,
}

/// A snapshot of the cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

impl ChunkCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<Arc<PlainChunk>> {
        let found = self.inner.lock().lru.get(id).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Looks without counting a hit or a miss or refreshing recency.
    pub fn peek(&self, id: &ChunkId) -> Option<Arc<PlainChunk>> {
        self.inner.lock().lru.peek(id).cloned()
    }

    /// Adds a chunk, evicting the least recently used ones past the byte bound. A chunk larger
    /// than the whole cache is not kept.
    pub fn insert(&self, id: ChunkId, plaintext: Arc<PlainChunk>) {
        let size = plaintext.len() as u64;
        if size > self.capacity {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.put(id, plaintext) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    /// Drops a chunk (deleted or found corrupt).
    pub fn remove(&self, id: &ChunkId) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.pop(id) {
            inner.bytes -= old.len() as u64;
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.inner.lock().bytes,
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn chunk(len: usize) -> Arc<PlainChunk> {
        let (r, ct) = crate::block::ChunkSecret([1; 32]).seal(&vec![0; len]);
        Arc::new(crate::block::chunk::open(&r, &ct).unwrap())
    }

    #[test]
    fn bounded_in_bytes_and_evicts_least_recent() {
        let cache = ChunkCache::new(300);
        cache.insert(id(1), chunk(100));
        cache.insert(id(2), chunk(100));
        cache.insert(id(3), chunk(100));
        assert!(cache.get(&id(1)).is_some()); // 1 is now most recent
        cache.insert(id(4), chunk(100));
        assert!(cache.get(&id(2)).is_none());
        assert!(cache.get(&id(1)).is_some());
        let s = cache.stats();
        assert_eq!(s.bytes, 300);
        assert_eq!((s.hits, s.misses), (2, 1));
        cache.insert(id(5), chunk(1000));
        assert!(cache.get(&id(5)).is_none());
        cache.remove(&id(1));
        assert_eq!(cache.stats().bytes, 200);
    }
}
