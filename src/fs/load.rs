//! Building a volume's filesystem from the namespace store: its tree, taken one stored entry
//! at a time, and its root on first use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use super::file::{ChunkIo, SealPool};
use super::ops::KERNEL_CACHED_FILES;
use super::tree::Tree;
use super::{CoreParts, FsCore, FsResult, ROOT_INO};
use crate::namespace::volume::VolumeRecord;
use crate::namespace::{Entry, EntryKind, EntryMeta, Timestamp, Volume, VolumeId};
use crate::util::hlc::{Hlc, HlcClock};

/// Builds a volume's in-memory tree from stored entries taken one at a time, so that a load
/// never holds the whole namespace decoded (at a million entries that peak was several
/// hundred MB, most of which the allocator then kept).
pub struct TreeLoader {
    volume_id: VolumeId,
    tree: Tree,
    /// Observes every entry taken, of any volume: new versions are written after all of them.
    clock: HlcClock,
    /// Entries of this volume refused: by a non-writer, or not opening.
    pub rejected: usize,
    /// Who may write and the keys to open with; a copy of the volume's.
    volume: Volume,
}

impl TreeLoader {
    pub fn new(volume: &Volume) -> Self {
        Self {
            volume_id: volume.id,
            tree: Tree::new(volume.root_id()),
            clock: HlcClock::new(),
            rejected: 0,
            volume: volume.clone(),
        }
    }

    /// Takes one stored entry; entries of other volumes only move the clock.
    pub fn take(&mut self, entry: &Entry) {
        self.clock.observe(entry.hlc);
        if entry.volume != self.volume_id || VolumeRecord::is_record(entry) {
            return;
        }
        if !self.volume.can_write(entry) {
            tracing::warn!(entry = %entry.id, author = %entry.author, "entry by a non-writer refused");
            self.rejected += 1;
            return;
        }
        if entry.deleted {
            return;
        }
        match self.volume.open_entry(entry) {
            Ok(meta) => self.tree.upsert(entry, meta),
            Err(e) => {
                tracing::warn!(entry = %entry.id, error = %e, "entry refused");
                self.rejected += 1;
            }
        }
    }

    /// Moves the clock past `hlc` (a version of an entry this loader was not handed).
    pub fn observe(&self, hlc: Hlc) {
        self.clock.observe(hlc);
    }
}

impl FsCore {
    /// Loads the volume's namespace (verifying every entry) and creates its root on first use.
    pub fn load(parts: CoreParts) -> FsResult<Self> {
        let mut loader = TreeLoader::new(&parts.volume);
        let refused = parts.namespace.for_each_entry(|e| loader.take(&e))?;
        loader.rejected += refused;
        Self::load_from(parts, loader)
    }

    /// As [`load`](Self::load), from a tree already built (a mount reads the store once for
    /// all its volumes).
    pub fn load_from(parts: CoreParts, loader: TreeLoader) -> FsResult<Self> {
        let root_id = parts.volume.root_id();
        let TreeLoader {
            tree,
            clock,
            rejected,
            ..
        } = loader;
        let io = Arc::new(ChunkIo::new(
            parts.chunks,
            parts.remote,
            parts.cache,
            parts.volume.chunk_secret().clone(),
            u64::from(parts.chunk_size),
            parts.read_ahead_chunks as u64,
        ));
        let fetch_threads = io.read_ahead_chunks as usize;
        let core = Self {
            volume: RwLock::new(parts.volume),
            signer: parts.signer,
            origin: parts.origin,
            clock,
            namespace: parts.namespace,
            io,
            pool: SealPool::new("p2pfs-seal", parts.seal_threads),
            fetch_pool: SealPool::discarding("p2pfs-fetch", fetch_threads),
            siblings: Mutex::new(None),
            tree: RwLock::new(tree),
            mutate: Mutex::new(()),
            open_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            kernel_cached: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(KERNEL_CACHED_FILES).expect("non-zero"),
            )),
            next_fh: AtomicU64::new(1),
            write_limit: parts.write_buffer_bytes,
            data_dir: parts.data_dir,
            rejected: AtomicU64::new(rejected as u64),
            publish: parts.publish,
            changes: Default::default(),
        };
        // A reader cannot write the root; it shows once the root arrives from a writer.
        if core.tree.read().get(ROOT_INO).is_none() && core.writable() {
            let now = Timestamp::now();
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let root =
                EntryMeta::new_empty(root_id, Vec::new(), EntryKind::Dir, 0o755, (uid, gid), now);
            core.persist(vec![(root_id, Some(root))])?;
        }
        tracing::info!(
            entries = core.tree.read().len(),
            rejected,
            "namespace loaded"
        );
        Ok(core)
    }
}
