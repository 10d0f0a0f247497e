//! Open files: the working version of a file between open and close.
//!
//! Writes land in per-chunk plaintext buffers. A chunk whose last byte is written is handed to
//! the seal pool at once (encrypt, hash, store, off the request thread), so a sequential copy
//! streams through; past the per-file buffer bound, the oldest buffers are sealed too and the
//! writer waits for the pool, so memory stays bounded whatever the file size. `commit` seals
//! what is left, waits, and hands back the new chunk map for the namespace: close-to-open.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::error::{FsError, FsResult};
use super::tree::Node;
use crate::block::chunk;
use crate::block::{
    ChunkCache, ChunkId, ChunkRef, ChunkSecret, ChunkStore, PlainChunk, StoreError,
};
use crate::namespace::{EntryId, EntryMeta, Seen, Timestamp};

/// Largest file size accepted (the chunk map of a bigger file would outgrow an entry).
pub const MAX_FILE_SIZE: u64 = 1 << 44;

/// Where chunks live beyond this node: placement on the chunk's owners and fetches from
/// peers. Implemented by the cluster layer; absent on a node that runs alone (tests).
///
/// Blocking: every method waits on network round trips, holding the calling thread. Call it
/// from a thread that may block (a FUSE request thread, the seal pool, a `spawn_blocking`
/// task), never from a thread that runs async tasks: the cluster's implementation asserts
/// that in debug builds (`util::blocking::debug_assert_may_block`).
pub trait RemoteChunks: Send + Sync {
    /// Stores a chunk on its owners (this node's store included when it is one). Returns once
    /// the owners hold it, or as many live nodes as there are when fewer than R.
    fn replicate(&self, id: &ChunkId, ciphertext: &[u8]) -> Result<(), StoreError>;
    /// Fetches a chunk from the peers, verified against its id.
    fn fetch(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError>;
    /// Flushes the chunks `ids` to disk on their owners (a user's `fsync()`).
    fn sync(&self, ids: &[ChunkId]) -> Result<(), StoreError>;
}

/// Reads and writes chunks for one volume: through the cache, verified, decrypted.
pub struct ChunkIo {
    pub store: Arc<ChunkStore>,
    pub remote: Option<Arc<dyn RemoteChunks>>,
    pub cache: Arc<ChunkCache>,
    /// The volume's newest chunk secret (a member's removal replaces it).
    pub secret: parking_lot::RwLock<ChunkSecret>,
    pub chunk_size: u64,
    /// Chunks fetched and decrypted ahead of a sequential reader, in parallel.
    pub read_ahead_chunks: u64,
    /// Chunks being loaded, so concurrent readers of one chunk decrypt it once.
    loading: Mutex<HashMap<ChunkId, Arc<Mutex<()>>>>,
}

impl ChunkIo {
    pub fn new(
        store: Arc<ChunkStore>,
        remote: Option<Arc<dyn RemoteChunks>>,
        cache: Arc<ChunkCache>,
        secret: ChunkSecret,
        chunk_size: u64,
        read_ahead_chunks: u64,
    ) -> Self {
        // What is read ahead must still be cached when the reader gets to it: at most half
        // the cache (a large chunk size or a small cache lowers the setting).
        let read_ahead_chunks = read_ahead_chunks
            .min(cache.stats().capacity / 2 / chunk_size.max(1))
            .max(1);
        Self {
            store,
            remote,
            cache,
            secret: parking_lot::RwLock::new(secret),
            chunk_size,
            read_ahead_chunks,
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The plaintext of a chunk, from the cache or the local store.
    pub fn load(&self, r: &ChunkRef) -> FsResult<Arc<PlainChunk>> {
        if let Some(hit) = self.cache.get(&r.id) {
            return Ok(hit);
        }
        let slot = self.loading.lock().entry(r.id).or_default().clone();
        let result = {
            let _loading = slot.lock();
            match self.cache.peek(&r.id) {
                Some(hit) => Ok(hit),
                None => self.load_uncached(r),
            }
        };
        let mut loading = self.loading.lock();
        if loading.get(&r.id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            loading.remove(&r.id);
        }
        result
    }

    fn load_uncached(&self, r: &ChunkRef) -> FsResult<Arc<PlainChunk>> {
        // Local copy first; a missing or corrupt one is fetched from the peers.
        let local = self.store.get(&r.id);
        let ciphertext = match (local, &self.remote) {
            (Ok(bytes), _) => Ok(bytes),
            (Err(StoreError::Missing(_)), Some(remote)) => remote.fetch(&r.id),
            (Err(StoreError::Corrupt(_)), Some(remote)) => {
                // The bad copy was deleted; serve a replica's and put it back in its place.
                let fetched = remote.fetch(&r.id);
                if let Ok(bytes) = &fetched
                    && let Err(e) = self.store.put(&r.id, bytes)
                {
                    tracing::warn!(chunk = %r.id, error = %e, "could not restore a corrupt chunk");
                }
                fetched
            }
            (Err(e), _) => Err(e),
        };
        let ciphertext = ciphertext.map_err(|e| {
            match &e {
                StoreError::Missing(_) => {
                    tracing::error!(chunk = %r.id, "chunk is not available from this node or any live peer")
                }
                StoreError::Corrupt(_) => {} // logged by the store
                StoreError::Io(err) => {
                    tracing::error!(chunk = %r.id, error = %err, "cannot read chunk")
                }
            }
            FsError::from(e)
        })?;
        let plain = Arc::new(chunk::open_verified(r, ciphertext).map_err(|e| {
            tracing::error!(chunk = %r.id, error = %e, "chunk does not decrypt");
            FsError::Io(e.to_string())
        })?);
        self.cache.insert(r.id, plain.clone());
        Ok(plain)
    }

    /// Flushes the copies of `ids` to disk wherever they are stored.
    pub fn sync(&self, ids: &[ChunkId]) -> FsResult<()> {
        match &self.remote {
            Some(remote) => remote.sync(ids)?,
            None => self.store.sync()?,
        }
        Ok(())
    }

    /// Encrypts and stores a chunk's plaintext.
    pub fn seal(&self, plaintext: &[u8]) -> FsResult<ChunkRef> {
        let (r, ciphertext) = self.secret.read().seal(plaintext);
        match &self.remote {
            Some(remote) => remote.replicate(&r.id, &ciphertext)?,
            None => {
                self.store.put(&r.id, &ciphertext)?;
            }
        }
        Ok(r)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs in the background: sealing while the FUSE threads go on taking writes,
/// and read-ahead fetches. A thread is started per job submitted until there are `max`, so a
/// volume nobody writes to, or reads sequentially, costs no thread.
pub struct SealPool {
    name: &'static str,
    max: usize,
    /// What happens to jobs once the pool is shut down: `false` (sealing) runs them, queued
    /// ones on the threads and later ones inline, so no write is lost; `true` (read-ahead,
    /// which only warms the cache) drops them, so a stopping node neither waits for fetches
    /// nor runs them on the caller's thread.
    discard: bool,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    rx: Arc<std::sync::Mutex<mpsc::Receiver<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl SealPool {
    /// A pool whose jobs all run, even after shutdown (sealing).
    pub fn new(name: &'static str, max: usize) -> Self {
        Self::with_mode(name, max, false)
    }

    /// A pool whose jobs may be dropped once it is shut down (read-ahead).
    pub fn discarding(name: &'static str, max: usize) -> Self {
        Self::with_mode(name, max, true)
    }

    fn with_mode(name: &'static str, max: usize, discard: bool) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        Self {
            name,
            max: max.max(1),
            discard,
            stopped: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tx: Mutex::new(Some(tx)),
            rx: Arc::new(std::sync::Mutex::new(rx)),
            threads: Mutex::new(Vec::new()),
        }
    }

    fn start_thread(&self, threads: &mut Vec<std::thread::JoinHandle<()>>) {
        let rx = self.rx.clone();
        let (discard, stopped) = (self.discard, self.stopped.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", self.name, threads.len()))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(_) if discard && stopped.load(std::sync::atomic::Ordering::Relaxed) => {}
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            // The jobs wait for the threads there are (there is at least one, or the job runs
            // inline in `submit`).
            Err(e) => {
                tracing::warn!(pool = self.name, error = %e, "could not start a worker thread")
            }
        }
    }

    pub fn submit(&self, job: Job) {
        let tx = self.tx.lock();
        if tx.is_none() {
            drop(tx);
            if !self.discard {
                // Shut down: run inline so no write is lost.
                job();
            }
            return;
        }
        let mut threads = self.threads.lock();
        if threads.len() < self.max {
            self.start_thread(&mut threads);
        }
        if threads.is_empty() {
            // No thread could be started: run it here, holding no lock (a job may submit).
            drop(threads);
            drop(tx);
            job();
            return;
        }
        drop(threads);
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send(job);
        }
    }

    /// Stops the threads: a sealing pool finishes its queued jobs first, a discarding one
    /// drops them.
    pub fn shutdown(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.tx.lock().take();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

pub struct OpenFile {
    pub id: EntryId,
    /// The file's last metadata once it has been unlinked while open.
    pub detached: Mutex<Option<Node>>,
    /// History of the version the open file's content is based on (what a commit is written
    /// on top of).
    pub base: Mutex<Seen>,
    state: Mutex<FileState>,
    changed: Condvar,
}

pub struct FileState {
    pub size: u64,
    /// Sealed chunks, in order; `None` is a hole.
    blocks: Vec<Option<ChunkRef>>,
    /// Written plaintext not yet handed to the seal pool.
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Plaintext being sealed, with the generation that tells a stale result from a current one.
    sealing: HashMap<u64, (u64, Arc<Vec<u8>>)>,
    generation: u64,
    pub(crate) buffered_bytes: u64,
    /// Uncommitted changes exist.
    pub modified: bool,
    /// Modification time of the uncommitted changes.
    pub mtime: Option<Timestamp>,
    /// First background failure (a full disk), reported by the next write, flush or fsync.
    error: Option<FsError>,
    pub open_count: usize,
    /// Where a sequential reader will read next, and how far read-ahead was already asked.
    next_read: u64,
    read_ahead_to: u64,
}

/// The bytes of a read: a slice of a cached chunk when the range lies inside one (no copy),
/// else an assembled buffer.
pub enum ReadBuf {
    Chunk(Arc<PlainChunk>, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Chunk(c, range) => &c[range.clone()],
            ReadBuf::Owned(v) => v,
        }
    }
}

enum Source {
    Bytes(Vec<u8>),
    Shared(Arc<Vec<u8>>),
    Stored(ChunkRef),
    Hole,
}

impl OpenFile {
    pub fn new(id: EntryId, meta: &EntryMeta, base: Seen) -> Arc<Self> {
        Arc::new(Self {
            id,
            detached: Mutex::new(None),
            base: Mutex::new(base),
            state: Mutex::new(FileState {
                size: meta.size,
                blocks: meta.blocks.clone(),
                dirty: BTreeMap::new(),
                sealing: HashMap::new(),
                generation: 0,
                buffered_bytes: 0,
                modified: false,
                mtime: None,
                error: None,
                open_count: 0,
                next_read: 0,
                read_ahead_to: 0,
            }),
            changed: Condvar::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock()
    }

    /// The chunks of the file's working version (committed or not).
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        self.state
            .lock()
            .blocks
            .iter()
            .flatten()
            .map(|r| r.id)
            .collect()
    }

    pub fn read(
        &self,
        io: &Arc<ChunkIo>,
        pool: &SealPool,
        offset: u64,
        len: u32,
    ) -> FsResult<ReadBuf> {
        let cs = io.chunk_size;
        let mut parts = Vec::new();
        let end;
        {
            let mut st = self.state.lock();
            end = st.size.min(offset.saturating_add(u64::from(len)));
            let mut pos = offset;
            while pos < end {
                let idx = pos / cs;
                let within = (pos - idx * cs) as usize;
                let take = ((idx + 1) * cs).min(end) - pos;
                let source = if let Some(buf) = st.dirty.get(&idx) {
                    let from = within.min(buf.len());
                    let to = (within + take as usize).min(buf.len());
                    Source::Bytes(buf[from..to].to_vec())
                } else if let Some((_, buf)) = st.sealing.get(&idx) {
                    Source::Shared(buf.clone())
                } else if let Some(Some(r)) = st.blocks.get(idx as usize) {
                    Source::Stored(*r)
                } else {
                    Source::Hole
                };
                parts.push((within, take as usize, source));
                pos += take;
            }
            if offset == st.next_read {
                self.read_ahead(&mut st, io, pool, end);
            }
            st.next_read = end;
        }
        // Chunks are fetched without the file lock, so a slow read does not stall writers.
        if let [(within, take, Source::Stored(r))] = &parts[..] {
            let chunk = io.load(r)?;
            if chunk.len() >= within + take {
                return Ok(ReadBuf::Chunk(chunk, *within..within + take));
            }
        }
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for (within, take, source) in parts {
            let start = out.len();
            match source {
                Source::Bytes(b) => out.extend_from_slice(&b),
                Source::Shared(buf) => copy_range(&mut out, &buf, within, take),
                Source::Stored(r) => copy_range(&mut out, &io.load(&r)?, within, take),
                Source::Hole => {}
            }
            // Past the stored bytes of a chunk (a hole, or a file grown by truncate) reads zeros.
            out.resize(start + take, 0);
        }
        Ok(ReadBuf::Owned(out))
    }

    /// Starts decrypting the chunks after `end` into the cache, for a sequential reader.
    fn read_ahead(&self, st: &mut FileState, io: &Arc<ChunkIo>, pool: &SealPool, end: u64) {
        let cs = io.chunk_size;
        let first = end.div_ceil(cs).max(st.read_ahead_to);
        let last = (end / cs + io.read_ahead_chunks).min(st.size.div_ceil(cs));
        for idx in first..last {
            if let Some(Some(r)) = st.blocks.get(idx as usize)
                && !st.dirty.contains_key(&idx)
                && !st.sealing.contains_key(&idx)
                && io.cache.peek(&r.id).is_none()
            {
                let (io, r) = (io.clone(), *r);
                pool.submit(Box::new(move || {
                    // A failure here shows up (and is logged) when the reader gets there.
                    let _ = io.load(&r);
                }));
            }
        }
        st.read_ahead_to = st.read_ahead_to.max(last);
    }

    pub fn write(
        self: &Arc<Self>,
        io: &Arc<ChunkIo>,
        pool: &SealPool,
        limit: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::TooLarge)?;
        let cs = io.chunk_size;
        let mut st = self.state.lock();
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        let old_size = st.size;
        let mut pos = offset;
        let mut last_idx = offset / cs;
        while pos < end {
            let idx = pos / cs;
            let chunk_start = idx * cs;
            let a = (pos - chunk_start) as usize;
            let b = ((end - chunk_start).min(cs)) as usize;
            let covers_old = a == 0 && b as u64 >= cs.min(old_size.saturating_sub(chunk_start));
            let buf = self.dirty_buffer(&mut st, io, idx, covers_old)?;
            if buf.len() < b {
                buf.resize(b, 0);
            }
            buf[a..b]
                .copy_from_slice(&data[(pos - offset) as usize..(pos - offset) as usize + (b - a)]);
            let full = b as u64 == cs && buf.len() as u64 == cs;
            if full {
                self.start_seal(&mut st, io, pool, idx);
            }
            pos = chunk_start + b as u64;
            last_idx = idx;
        }
        st.size = st.size.max(end);
        st.modified = true;
        st.mtime = Some(Timestamp::now());
        // Bound memory: seal older buffers, then wait for the pool to catch up.
        while st.buffered_bytes > limit {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            let oldest = st.dirty.keys().copied().find(|&i| i != last_idx);
            match oldest {
                Some(idx) => self.start_seal(&mut st, io, pool, idx),
                None if !st.sealing.is_empty() => self.changed.wait(&mut st),
                None => break,
            }
        }
        Ok(())
    }

    /// The dirty buffer of chunk `idx`, created from what the chunk holds now unless the
    /// write about to happen covers all of it.
    fn dirty_buffer<'a>(
        &self,
        st: &'a mut FileState,
        io: &ChunkIo,
        idx: u64,
        covers_old: bool,
    ) -> FsResult<&'a mut Vec<u8>> {
        if !st.dirty.contains_key(&idx) {
            let buf = if let Some((_, shared)) = st.sealing.remove(&idx) {
                // Being sealed: that result is now stale (its generation no longer matches).
                st.buffered_bytes -= io.chunk_size;
                shared.as_ref().clone()
            } else {
                match st.blocks.get(idx as usize) {
                    Some(Some(r)) if !covers_old => io.load(r)?.to_vec(),
                    _ => Vec::with_capacity(io.chunk_size as usize),
                }
            };
            st.dirty.insert(idx, buf);
            st.buffered_bytes += io.chunk_size;
        }
        Ok(st.dirty.get_mut(&idx).expect("just inserted"))
    }

    fn start_seal(
        self: &Arc<Self>,
        st: &mut FileState,
        io: &Arc<ChunkIo>,
        pool: &SealPool,
        idx: u64,
    ) {
        let Some(buf) = st.dirty.remove(&idx) else {
            return;
        };
        st.generation += 1;
        let generation = st.generation;
        let buf = Arc::new(buf);
        st.sealing.insert(idx, (generation, buf.clone()));
        let file = self.clone();
        let io = io.clone();
        pool.submit(Box::new(move || {
            let result = if buf.is_empty() {
                Ok(None)
            } else {
                io.seal(&buf).map(Some)
            };
            let mut st = file.state.lock();
            if st.sealing.get(&idx).is_some_and(|(g, _)| *g == generation) {
                st.sealing.remove(&idx);
                match result {
                    Ok(r) => {
                        st.buffered_bytes -= io.chunk_size;
                        if idx * io.chunk_size < st.size {
                            if st.blocks.len() <= idx as usize {
                                st.blocks.resize(idx as usize + 1, None);
                            }
                            st.blocks[idx as usize] = r;
                        }
                    }
                    Err(e) => {
                        // Keep the data so a later flush can retry; report the failure.
                        st.dirty.insert(
                            idx,
                            Arc::try_unwrap(buf).unwrap_or_else(|b| b.as_ref().clone()),
                        );
                        st.error.get_or_insert(e);
                    }
                }
            }
            drop(st);
            file.changed.notify_all();
        }));
    }

    pub fn truncate(self: &Arc<Self>, io: &Arc<ChunkIo>, new_size: u64) -> FsResult<()> {
        if new_size > MAX_FILE_SIZE {
            return Err(FsError::TooLarge);
        }
        let cs = io.chunk_size;
        let mut st = self.state.lock();
        if new_size < st.size {
            let keep = new_size.div_ceil(cs);
            let dropped_dirty = st.dirty.split_off(&keep).len() as u64;
            let before = st.sealing.len();
            st.sealing.retain(|&idx, _| idx < keep);
            let dropped = dropped_dirty + (before - st.sealing.len()) as u64;
            st.buffered_bytes -= dropped * cs;
            st.blocks.truncate(keep as usize);
            let tail = (new_size % cs) as usize;
            if tail != 0 {
                let idx = keep - 1;
                let holds_data = st.dirty.contains_key(&idx)
                    || st.sealing.contains_key(&idx)
                    || matches!(st.blocks.get(idx as usize), Some(Some(_)));
                if holds_data {
                    let buf = self.dirty_buffer(&mut st, io, idx, false)?;
                    buf.truncate(tail);
                }
            }
        }
        st.size = new_size;
        st.modified = true;
        st.mtime = Some(Timestamp::now());
        Ok(())
    }

    /// Seals everything buffered and waits for it. Returns the chunk map to commit, or the
    /// error that kept the data from being stored (the data stays buffered for a retry).
    pub fn seal_all(
        self: &Arc<Self>,
        io: &Arc<ChunkIo>,
        pool: &SealPool,
    ) -> FsResult<MutexGuard<'_, FileState>> {
        let mut st = self.state.lock();
        // The wait releases the lock, and a write on another descriptor may land meanwhile
        // (new dirty data, a larger size): seal that too, so the state handed back has every
        // byte of its size in `blocks`. Committing it otherwise would record the new size
        // over a hole and clear `modified`, losing the write.
        loop {
            if st.error.is_some() {
                // A seal failed (its data is back in `dirty` for a later retry): report it
                // once the seals in flight are done.
                while !st.sealing.is_empty() {
                    self.changed.wait(&mut st);
                }
                return Err(st.error.take().expect("checked above"));
            }
            let dirty: Vec<u64> = st.dirty.keys().copied().collect();
            for idx in dirty {
                self.start_seal(&mut st, io, pool, idx);
            }
            if st.sealing.is_empty() && st.dirty.is_empty() {
                return Ok(st);
            }
            self.changed.wait(&mut st);
        }
    }
}

impl FileState {
    /// The chunk map of the current size, for a commit (only valid after `seal_all`).
    pub fn committed_blocks(&self, chunk_size: u64) -> Vec<Option<ChunkRef>> {
        let n = self.size.div_ceil(chunk_size) as usize;
        let mut blocks = self.blocks.clone();
        blocks.truncate(n);
        while blocks.last().is_some_and(Option::is_none) {
            blocks.pop();
        }
        blocks
    }
}

fn copy_range(out: &mut Vec<u8>, buf: &[u8], within: usize, take: usize) {
    let from = within.min(buf.len());
    let to = (within + take).min(buf.len());
    out.extend_from_slice(&buf[from..to]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads start with the work, never more than the pool's size, and every job runs
    /// (jobs submitted after shutdown run inline).
    #[test]
    fn a_pool_starts_threads_as_jobs_come_up_to_its_size() {
        let pool = SealPool::new("test-pool", 3);
        assert_eq!(pool.threads.lock().len(), 0, "no job, no thread");
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let release = Arc::new(std::sync::Barrier::new(4));
        for _ in 0..3 {
            let (ran, release) = (ran.clone(), release.clone());
            pool.submit(Box::new(move || {
                // All three run at once: each needs its own thread.
                release.wait();
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        release.wait();
        for _ in 0..10 {
            let ran = ran.clone();
            pool.submit(Box::new(move || {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        assert_eq!(pool.threads.lock().len(), 3);
        pool.shutdown();
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 13);
        let ran_inline = ran.clone();
        pool.submit(Box::new(move || {
            ran_inline.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 14);
    }

    /// A read-ahead pool drops what is queued when it shuts down, and what comes after.
    #[test]
    fn a_discarding_pool_drops_jobs_at_shutdown() {
        let pool = SealPool::discarding("test-fetch", 1);
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            started_tx.send(()).unwrap();
            let _ = release.recv();
        }));
        started.recv().unwrap();
        for _ in 0..5 {
            let ran = ran.clone();
            pool.submit(Box::new(move || {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                release_tx.send(()).unwrap();
            });
            pool.shutdown();
        });
        let ran_after = ran.clone();
        pool.submit(Box::new(move || {
            ran_after.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
