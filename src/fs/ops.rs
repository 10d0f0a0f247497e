//! One volume's filesystem ([`FsCore`]) and its POSIX operations: lookups, creates, renames,
//! attributes, open files and their reads, writes and commits, directory listings.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ed25519_dalek::SigningKey;
use parking_lot::{Mutex, RwLock};

use super::file::{ChunkIo, OpenFile, SealPool};
use super::tree::{Node, Tree};
use super::{
    Attr, Caller, CoreStats, DirEntry, FsError, FsResult, ROOT_INO, ReadBuf, RemoteChunks,
    RenameMode, SetAttr, StatFs, TimeSet,
};
use crate::block::{ChunkCache, ChunkStore};
use crate::namespace::entry::{EntrySealer, MAX_NAME_LEN};
use crate::namespace::{
    Entry, EntryId, EntryKind, EntryMeta, NamespaceStore, Seen, Timestamp, Volume, VolumeId,
};
use crate::util::hlc::HlcClock;

const S_ISGID: u32 = 0o2000;

/// A new version of an entry, `None` deleting it.
type Change = (EntryId, Option<EntryMeta>);

/// An inode deleted with its last name (its number and last state), for its open files.
type Gone = Option<(u64, Node)>;

/// Most names one inode may have (ext4's `EXT4_LINK_MAX`).
const MAX_LINKS: u32 = 65_000;

/// Files whose kernel-cached version is remembered (about 100 bytes each).
pub(super) const KERNEL_CACHED_FILES: usize = 65_536;

/// The files of the directory listed last (`opendir`), in listing order: a program that
/// lists a directory and then reads its files one by one (`cat *`, `cp -r`, `tar`, `rsync`)
/// waits a round trip per small file; fetching the next files' chunks while it reads one
/// overlaps those waits.
pub(super) struct SiblingsAhead {
    dir: u64,
    inos: Vec<u64>,
    /// Just past the file opened last (where the next open is looked for first).
    cursor: usize,
    /// Files before this index were fetched ahead already.
    ahead_to: usize,
}

/// Files up to this size are read ahead when a sibling is opened (a larger file's own
/// read-ahead starts with its first read, and its transfer, not the round trip, dominates).
const SMALL_FILE: u64 = 256 * 1024;

pub(super) enum Handle {
    File {
        ino: u64,
        file: Arc<OpenFile>,
        writable: bool,
    },
    Dir(Arc<Vec<DirEntry>>),
}

/// What the core is built from.
pub struct CoreParts {
    pub volume: Volume,
    pub signer: SigningKey,
    /// Tag of this node in the entries it writes.
    pub origin: u64,
    pub namespace: NamespaceStore,
    pub chunks: Arc<ChunkStore>,
    /// Replication and remote fetches; `None` keeps everything on this node.
    pub remote: Option<Arc<dyn RemoteChunks>>,
    /// Where committed entries go to be gossiped; `None` when alone.
    pub publish: Option<tokio::sync::mpsc::UnboundedSender<Vec<Entry>>>,
    pub chunk_size: u32,
    /// Plaintext cache (shared by every volume of a mount).
    pub cache: Arc<ChunkCache>,
    pub write_buffer_bytes: u64,
    pub seal_threads: usize,
    /// Chunks a sequential reader fetches ahead, in parallel (`storage.read_ahead_chunks`).
    pub read_ahead_chunks: usize,
    /// Where `statfs` looks for free space.
    pub data_dir: PathBuf,
}

/// One volume's filesystem: its tree of entries, open files and handles. Every change is
/// sealed, signed and committed to the namespace store before it shows in the tree.
pub struct FsCore {
    /// Replaced when the volume's record changes (writers, a new key after a removal).
    pub(super) volume: RwLock<Volume>,
    pub(super) signer: SigningKey,
    pub(super) origin: u64,
    pub(super) clock: HlcClock,
    pub(super) namespace: NamespaceStore,
    pub(super) io: Arc<ChunkIo>,
    pub(super) pool: SealPool,
    /// Read-ahead fetches, one thread per chunk in flight (started as needed).
    pub(super) fetch_pool: SealPool,
    /// The directory listed last, for reading its small files ahead ([`FsCore::open`]).
    pub(super) siblings: Mutex<Option<SiblingsAhead>>,
    pub(super) tree: RwLock<Tree>,
    /// Serializes namespace mutations: check, commit and apply happen as one step.
    pub(super) mutate: Mutex<()>,
    pub(super) open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    pub(super) handles: Mutex<HashMap<u64, Handle>>,
    /// The version of each recently opened file whose pages the kernel may still cache (see
    /// `keep_kernel_cache`); bounded, an evicted file just has its pages dropped on next open.
    pub(super) kernel_cached: Mutex<lru::LruCache<u64, (EntryId, crate::namespace::Version)>>,
    pub(super) next_fh: AtomicU64,
    pub(super) write_limit: u64,
    pub(super) data_dir: PathBuf,
    pub(super) rejected: AtomicU64,
    pub(super) publish: Option<tokio::sync::mpsc::UnboundedSender<Vec<Entry>>>,
    /// Whether the core still takes changes (see [`FsCore::stop_changes`]).
    pub(super) changes: ChangeGate,
}

/// How long [`FsCore::stop_changes`] waits for the changes already running.
const STOP_CHANGES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lets changes in until the core stops: each holds `running` (shared) while it runs, and
/// stopping waits for them (exclusive), so no change lands after the final commit.
#[derive(Default)]
pub(super) struct ChangeGate {
    stopped: AtomicBool,
    running: RwLock<()>,
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid);
    }
    Ok(())
}

impl FsCore {
    /// Seals, signs and durably commits a set of changes, then applies them to the tree.
    /// `None` deletes. Each change is written on top of the version the tree holds. The caller
    /// holds `mutate`.
    pub(super) fn persist(
        &self,
        changes: Vec<(EntryId, Option<EntryMeta>)>,
    ) -> FsResult<Vec<Entry>> {
        self.persist_on(changes.into_iter().map(|(id, m)| (id, m, None)).collect())
    }

    /// As [`persist`](Self::persist), with the history each change is written on when it is
    /// not the tree's current version (a file written since it was opened).
    pub(super) fn persist_on(
        &self,
        changes: Vec<(EntryId, Option<EntryMeta>, Option<Seen>)>,
    ) -> FsResult<Vec<Entry>> {
        let volume = self.volume.read();
        let sealer = EntrySealer {
            volume: volume.id,
            payload_key: volume.payload_key(),
            signer: &self.signer,
            origin: self.origin,
        };
        let entries: Vec<_> = {
            let tree = self.tree.read();
            changes
                .iter()
                .map(|(id, meta, base)| {
                    let current = || {
                        tree.ino_if_known(id)
                            .and_then(|ino| tree.get(ino))
                            .map(|n| n.seen.clone())
                            .unwrap_or_default()
                    };
                    let base = base.clone().unwrap_or_else(current);
                    match meta {
                        Some(m) => sealer.seal(*id, self.clock.now(), &base, m),
                        None => sealer.tombstone(*id, self.clock.now(), &base),
                    }
                })
                .collect()
        };
        drop(volume);
        let committed = self.namespace.commit(&entries)?;
        self.evict(&committed.released);
        self.erase(&committed.purged);
        {
            let mut tree = self.tree.write();
            // Only what the store took: a local write can lose to a concurrent remote version
            // that arrived in the meantime (it is then kept as a conflict copy below).
            for (entry, (_, meta, _)) in entries.iter().zip(changes) {
                if !committed.applied.iter().any(|a| a.id == entry.id) {
                    continue;
                }
                match meta {
                    Some(m) => tree.upsert(entry, m),
                    None => tree.remove(&entry.id),
                }
            }
        }
        if let Some(publish) = &self.publish {
            let _ = publish.send(entries.clone());
        }
        Ok(entries)
    }

    pub fn volume_id(&self) -> VolumeId {
        self.volume.read().id
    }

    /// Whether this node's user may write in the volume.
    pub fn writable(&self) -> bool {
        let volume = self.volume.read();
        volume.is_writer(&crate::namespace::UserId(
            self.signer.verifying_key().to_bytes(),
        ))
    }

    /// Drops chunks no entry references any more from the cache at once: a deleted file's
    /// plaintext does not linger in memory (the stored copies go after the GC grace period).
    pub(super) fn evict(&self, released: &[crate::block::ChunkId]) {
        for id in released {
            self.io.cache.remove(id);
        }
    }

    /// Chunks a purge released: out of the cache and off this node's disk now, not after
    /// GC's grace period (a purge is a user's request to erase). A chunk an open file of this
    /// node holds (the same bytes being written again) stays for GC to decide.
    pub(super) fn erase(&self, purged: &[crate::block::ChunkId]) {
        if purged.is_empty() {
            return;
        }
        let pending = self.pending_chunks();
        erase_chunks(&self.io.store, &self.io.cache, purged, &pending);
    }

    /// Chunks the open files of this node hold that no committed entry may reference yet.
    pub fn pending_chunks(&self) -> std::collections::HashSet<crate::block::ChunkId> {
        let files: Vec<Arc<OpenFile>> = self.open_files.lock().values().cloned().collect();
        files.iter().flat_map(|f| f.chunk_ids()).collect()
    }

    /// Commits every open file with uncommitted writes, as `fsync` would. Run periodically,
    /// so a file written for longer than the GC grace period has its chunks referenced by a
    /// committed version before any node may collect them, and a crash loses at most one
    /// interval of a long write.
    pub fn checkpoint(&self) {
        let files: Vec<(u64, Arc<OpenFile>)> = self
            .open_files
            .lock()
            .iter()
            .map(|(ino, f)| (*ino, f.clone()))
            .collect();
        for (ino, file) in files {
            if file.lock().modified
                && let Err(e) = self.commit_file(ino, &file)
            {
                tracing::warn!(ino, error = %e, "checkpoint of an open file failed");
            }
        }
    }

    /// The chunk ids of the file at `path` (relative to the volume root, `/`-separated), in
    /// file order, holes left out.
    pub fn file_chunks(&self, path: &str) -> FsResult<Vec<crate::block::ChunkId>> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            ino = self.lookup(ino, part.as_bytes())?.ino;
        }
        let node = self.file_node(ino)?;
        Ok(node.meta.blocks.iter().flatten().map(|r| r.id).collect())
    }

    /// Every file's path (relative to the volume root) with its chunk ids.
    pub fn file_chunk_lists(&self) -> Vec<(String, Vec<crate::block::ChunkId>)> {
        let tree = self.tree.read();
        tree.inos()
            .filter_map(|ino| {
                let node = tree.get(ino)?;
                if node.meta.kind != EntryKind::File {
                    return None;
                }
                let ids = node.meta.blocks.iter().flatten().map(|r| r.id).collect();
                Some((tree.path_of(ino)?, ids))
            })
            .collect()
    }

    /// The namespace store (for anti-entropy).
    pub fn namespace(&self) -> &NamespaceStore {
        &self.namespace
    }

    pub(super) fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        let m = &node.meta;
        let size = match m.kind {
            EntryKind::Dir => 4096,
            EntryKind::Symlink => m.symlink_target.len() as u64,
            EntryKind::File => m.size,
            EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDev
            | EntryKind::BlockDev
            | EntryKind::Link => 0,
        };
        Attr {
            ino,
            kind: m.kind,
            size,
            blocks: size.div_ceil(512),
            perm: (m.mode & 0o7777) as u16,
            nlink: node.nlink(),
            uid: m.uid,
            gid: m.gid,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            blksize: self.io.chunk_size as u32,
            rdev: m.rdev,
        }
    }

    /// Attributes with an open file's uncommitted size and time laid over them.
    fn live_attr(&self, ino: u64, node: &Node) -> Attr {
        let mut attr = self.attr_of(ino, node);
        if node.meta.kind == EntryKind::File
            && let Some(file) = self.open_files.lock().get(&ino).cloned()
        {
            let st = file.lock();
            attr.size = st.size;
            attr.blocks = st.size.div_ceil(512);
            if let Some(t) = st.mtime {
                attr.mtime = t;
                attr.ctime = t;
            }
        }
        attr
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        self.tree.read().get(ino).cloned().ok_or(FsError::NotFound)
    }

    /// The node of a regular file (what open and truncate act on).
    fn file_node(&self, ino: u64) -> FsResult<Node> {
        let node = self.node(ino)?;
        match node.meta.kind {
            EntryKind::File => Ok(node),
            EntryKind::Dir => Err(FsError::IsDir),
            EntryKind::Symlink
            | EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDev
            | EntryKind::BlockDev
            | EntryKind::Link => Err(FsError::Invalid),
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match self.node(ino) {
            Ok(node) => Ok(self.live_attr(ino, &node)),
            Err(e) => {
                // An unlinked file that is still open keeps answering fstat, with no links.
                let file = self.open_files.lock().get(&ino).cloned().ok_or(e)?;
                let node = file.detached.lock().clone().ok_or(FsError::NotFound)?;
                let mut attr = self.live_attr(ino, &node);
                attr.nlink = 0;
                Ok(attr)
            }
        }
    }

    /// Keeps the last metadata of a removed file for its open handles.
    pub(super) fn detach_if_open(&self, ino: u64, node: Node) {
        if let Some(file) = self.open_files.lock().get(&ino).cloned() {
            *file.detached.lock() = Some(node);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let (ino, node) = {
            let tree = self.tree.read();
            let dir = tree.get(parent).ok_or(FsError::NotFound)?;
            if dir.meta.kind != EntryKind::Dir {
                return Err(FsError::NotDir);
            }
            let ino = tree.lookup(parent, name).ok_or(FsError::NotFound)?;
            (ino, tree.get(ino).cloned().ok_or(FsError::NotFound)?)
        };
        Ok(self.live_attr(ino, &node))
    }

    /// Checks that `parent` is a directory and `name` is free; returns the parent's node.
    fn prepare_create(&self, tree: &Tree, parent: u64, name: &[u8]) -> FsResult<Node> {
        check_name(name)?;
        let dir = tree.get(parent).ok_or(FsError::NotFound)?;
        if dir.meta.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        if tree.lookup(parent, name).is_some() {
            return Err(FsError::Exists);
        }
        Ok(dir.clone())
    }

    fn touched(meta: &EntryMeta, now: Timestamp) -> EntryMeta {
        EntryMeta {
            mtime: now,
            ctime: now,
            ..meta.clone()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        kind: EntryKind,
        mode: u32,
        caller: Caller,
        target: Vec<u8>,
        rdev: u32,
    ) -> FsResult<Attr> {
        let _g = self.mutate.lock();
        let dir = self.prepare_create(&self.tree.read(), parent, name)?;
        let now = Timestamp::now();
        // A set-group-id directory passes its group (and, to directories, the bit) down.
        let inherit_gid = dir.meta.mode & S_ISGID != 0;
        let mut mode = mode & 0o7777;
        if inherit_gid && kind == EntryKind::Dir {
            mode |= S_ISGID;
        }
        let id = EntryId::random();
        let gid = if inherit_gid {
            dir.meta.gid
        } else {
            caller.gid
        };
        let meta = EntryMeta {
            symlink_target: target,
            rdev,
            ..EntryMeta::new_empty(dir.id, name.to_vec(), kind, mode, (caller.uid, gid), now)
        };
        self.persist(vec![
            (id, Some(meta)),
            (dir.id, Some(Self::touched(&dir.meta, now))),
        ])?;
        let tree = self.tree.read();
        let ino = tree.ino_if_known(&id).ok_or(FsError::NotFound)?;
        let node = tree.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(ino, node))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<Attr> {
        let _change = self.change()?;
        self.create_node(parent, name, EntryKind::Dir, mode, caller, Vec::new(), 0)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        let _change = self.change()?;
        if target.is_empty() || target.len() > 4095 {
            return Err(if target.is_empty() {
                FsError::NotFound
            } else {
                FsError::NameTooLong
            });
        }
        self.create_node(
            parent,
            name,
            EntryKind::Symlink,
            0o777,
            caller,
            target.to_vec(),
            0,
        )
    }

    /// Creates a node of the type `mode`'s file type bits name (mknod, or the create half of
    /// `create`): a regular file, FIFO, socket or device node. `rdev` (a device node's number,
    /// kernel encoding) is stored verbatim and never interpreted: the kernel serves opens of
    /// special files itself.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let _change = self.change()?;
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => EntryKind::File,
            libc::S_IFIFO => EntryKind::Fifo,
            libc::S_IFSOCK => EntryKind::Socket,
            libc::S_IFCHR => EntryKind::CharDev,
            libc::S_IFBLK => EntryKind::BlockDev,
            _ => return Err(FsError::Invalid),
        };
        let rdev = match kind {
            EntryKind::CharDev | EntryKind::BlockDev => rdev,
            _ => 0,
        };
        self.create_node(parent, name, kind, mode, caller, Vec::new(), rdev)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        caller: Caller,
        writable: bool,
    ) -> FsResult<(Attr, u64)> {
        let _change = self.change()?;
        let attr = self.mknod(parent, name, mode, 0, caller)?;
        let fh = self.open(attr.ino, writable)?;
        Ok((attr, fh))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let node = self.node(ino)?;
        if node.meta.kind != EntryKind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(node.meta.symlink_target)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let _change = self.change()?;
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let _change = self.change()?;
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir_wanted: bool) -> FsResult<()> {
        let guard = self.mutate.lock();
        let now = Timestamp::now();
        let (changes, gone) = {
            let tree = self.tree.read();
            let dir = tree.get(parent).ok_or(FsError::NotFound)?.clone();
            if dir.meta.kind != EntryKind::Dir {
                return Err(FsError::NotDir);
            }
            let claim = tree.claim(parent, name).ok_or(FsError::NotFound)?;
            let ino = tree.resolve(claim);
            let victim = tree.get(ino).ok_or(FsError::NotFound)?;
            let is_dir = victim.meta.kind == EntryKind::Dir;
            if dir_wanted && !is_dir {
                return Err(FsError::NotDir);
            }
            if !dir_wanted && is_dir {
                return Err(FsError::IsDir);
            }
            if is_dir && tree.has_children(ino) {
                return Err(FsError::NotEmpty);
            }
            let (mut changes, gone) = Self::drop_name(&tree, claim, now)?;
            changes.push((dir.id, Some(Self::touched(&dir.meta, now))));
            (changes, gone)
        };
        self.persist(changes)?;
        drop(guard);
        if let Some((ino, node)) = gone {
            self.detach_if_open(ino, node);
        }
        Ok(())
    }

    /// The changes that take the name `claim` away (unlink, or the target of a rename):
    /// a `Link` node is deleted; an entry's own name is dropped by making it unnamed while
    /// links to it remain. The inode gets a new version with its ctime (as ext4 counts a
    /// changed link count), or is deleted with its last name; then it is returned (with its
    /// number) so that open files keep it.
    fn drop_name(tree: &Tree, claim: u64, now: Timestamp) -> FsResult<(Vec<Change>, Gone)> {
        let node = tree.get(claim).ok_or(FsError::NotFound)?;
        let ino = tree.resolve(claim);
        let mut changes = Vec::new();
        if ino != claim {
            // A further name: it goes, the inode stays while it has another one.
            changes.push((node.id, None));
        }
        let inode = tree.get(ino).ok_or(FsError::NotFound)?;
        // The tree keeps the count: a file with many names is not walked for every unlink.
        let other_links = inode.links - u32::from(ino != claim);
        let named = !inode.meta.unnamed && ino != claim;
        if inode.meta.kind == EntryKind::Dir || (other_links == 0 && !named) {
            changes.push((inode.id, None));
            return Ok((changes, Some((ino, inode.clone()))));
        }
        let mut meta = EntryMeta {
            ctime: now,
            ..inode.meta.clone()
        };
        if ino == claim {
            meta.unnamed = true;
            meta.name = Vec::new();
        }
        changes.push((inode.id, Some(meta)));
        Ok((changes, None))
    }

    /// Gives the inode `ino` a further name `new_name` in `new_parent` (a hard link): a `Link`
    /// entry there, and a new version of the inode with its ctime (which also makes it win
    /// over a concurrent delete of its last name elsewhere: a modify beats a delete).
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        let _change = self.change()?;
        let _g = self.mutate.lock();
        let now = Timestamp::now();
        let (inode, dir) = {
            let tree = self.tree.read();
            let inode = tree.get(ino).ok_or(FsError::NotFound)?.clone();
            match inode.meta.kind {
                EntryKind::Dir => {
                    return Err(FsError::NotPermitted(
                        "a directory cannot have further names",
                    ));
                }
                EntryKind::Link => return Err(FsError::Invalid),
                _ => {}
            }
            let dir = self.prepare_create(&tree, new_parent, new_name)?;
            if inode.nlink() >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            (inode, dir)
        };
        let link = EntryMeta {
            target: Some(inode.id),
            ..EntryMeta::new_empty(
                dir.id,
                new_name.to_vec(),
                EntryKind::Link,
                0,
                (inode.meta.uid, inode.meta.gid),
                now,
            )
        };
        let touched_inode = EntryMeta {
            ctime: now,
            ..inode.meta.clone()
        };
        self.persist(vec![
            (EntryId::random(), Some(link)),
            (inode.id, Some(touched_inode)),
            (dir.id, Some(Self::touched(&dir.meta, now))),
        ])?;
        let tree = self.tree.read();
        let node = tree.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.live_attr(ino, node))
    }

    /// Renames a name (`Plain`, `NoReplace`, `Whiteout`) or swaps two (`Exchange`). The name moved is
    /// the claim's: a `Link` entry moves alone, an entry's own name moves the entry (with its
    /// ctime, as on ext4). Both directories get their mtime and ctime.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        let _change = self.change()?;
        let (no_replace, exchange, whiteout) = match mode {
            RenameMode::Plain => (false, false, false),
            RenameMode::NoReplace => (true, false, false),
            RenameMode::Exchange => (false, true, false),
            RenameMode::Whiteout => (false, false, true),
        };
        check_name(new_name)?;
        let guard = self.mutate.lock();
        let now = Timestamp::now();
        let mut changes: Vec<Change> = Vec::new();
        let mut replaced = None;
        {
            let tree = self.tree.read();
            let from_dir = tree.get(parent).ok_or(FsError::NotFound)?;
            let to_dir = tree.get(new_parent).ok_or(FsError::NotFound)?;
            if from_dir.meta.kind != EntryKind::Dir || to_dir.meta.kind != EntryKind::Dir {
                return Err(FsError::NotDir);
            }
            let src_claim = tree.claim(parent, name).ok_or(FsError::NotFound)?;
            let src_ino = tree.resolve(src_claim);
            let src = tree.get(src_ino).ok_or(FsError::NotFound)?;
            let src_is_dir = src.meta.kind == EntryKind::Dir;
            let dst_claim = tree.claim(new_parent, new_name);
            if exchange && dst_claim.is_none() {
                return Err(FsError::NotFound);
            }
            if src_is_dir && tree.is_ancestor(src_ino, new_parent) {
                return Err(FsError::Invalid);
            }
            // Moves a claim to (dir, name): the entry itself, or only the link. A link's inode
            // gets no new version (its ctime stays): one would be concurrent with a rename of
            // its first name on another node, and could undo it.
            let moves = |claim: u64, dir: &Node, name: &[u8]| -> FsResult<Change> {
                let node = tree.get(claim).ok_or(FsError::NotFound)?;
                Ok((
                    node.id,
                    Some(EntryMeta {
                        parent: dir.id,
                        name: name.to_vec(),
                        ctime: now,
                        ..node.meta.clone()
                    }),
                ))
            };
            if let Some(dst_claim) = dst_claim {
                let dst_ino = tree.resolve(dst_claim);
                if dst_ino == src_ino {
                    // Two names of one inode: nothing changes (POSIX).
                    return Ok(());
                }
                let dst = tree.get(dst_ino).ok_or(FsError::NotFound)?;
                let dst_is_dir = dst.meta.kind == EntryKind::Dir;
                if exchange {
                    if dst_is_dir && tree.is_ancestor(dst_ino, parent) {
                        return Err(FsError::Invalid);
                    }
                    changes.push(moves(src_claim, to_dir, new_name)?);
                    changes.push(moves(dst_claim, from_dir, name)?);
                } else {
                    if no_replace {
                        return Err(FsError::Exists);
                    }
                    match (src_is_dir, dst_is_dir) {
                        (true, false) => return Err(FsError::NotDir),
                        (false, true) => return Err(FsError::IsDir),
                        (true, true) if tree.has_children(dst_ino) => {
                            return Err(FsError::NotEmpty);
                        }
                        _ => {}
                    }
                    let (dropped, gone) = Self::drop_name(&tree, dst_claim, now)?;
                    changes.extend(dropped);
                    replaced = gone;
                    changes.push(moves(src_claim, to_dir, new_name)?);
                }
            } else {
                changes.push(moves(src_claim, to_dir, new_name)?);
            }
            if whiteout {
                // What overlayfs asks for: a character device 0:0 left at the old name. The
                // kernel lets only a caller with CAP_MKNOD ask, so it is root's, as on ext4.
                changes.push((
                    EntryId::random(),
                    Some(EntryMeta::new_empty(
                        from_dir.id,
                        name.to_vec(),
                        EntryKind::CharDev,
                        0,
                        (0, 0),
                        now,
                    )),
                ));
            }
            changes.push((from_dir.id, Some(Self::touched(&from_dir.meta, now))));
            if new_parent != parent {
                changes.push((to_dir.id, Some(Self::touched(&to_dir.meta, now))));
            }
        }
        self.persist(changes)?;
        drop(guard);
        if let Some((ino, node)) = replaced {
            self.detach_if_open(ino, node);
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Attr> {
        let _change = self.change()?;
        if let Some(size) = set.size {
            let node = self.file_node(ino)?;
            let file = self.acquire_file(ino, &node);
            let result = file
                .truncate(&self.io, size)
                .and_then(|()| self.commit_file(ino, &file));
            self.release_file(ino, &file);
            result?;
        }
        let changes_meta = set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if changes_meta {
            let mtime = set.mtime.map(TimeSet::resolve);
            {
                let _g = self.mutate.lock();
                let node = self.node(ino)?;
                let mut meta = node.meta.clone();
                if let Some(mode) = set.mode {
                    meta.mode = mode & 0o7777;
                }
                if let Some(uid) = set.uid {
                    meta.uid = uid;
                }
                if let Some(gid) = set.gid {
                    meta.gid = gid;
                }
                if let Some(t) = set.atime {
                    meta.atime = t.resolve();
                }
                if let Some(t) = mtime {
                    meta.mtime = t;
                }
                meta.ctime = Timestamp::now();
                self.persist(vec![(node.id, Some(meta))])?;
            }
            // An explicit mtime also replaces that of uncommitted writes (after `mutate` is
            // released: the lock order puts file state first).
            if let Some(t) = mtime
                && let Some(file) = self.open_files.lock().get(&ino).cloned()
            {
                let mut st = file.lock();
                if st.mtime.is_some() {
                    st.mtime = Some(t);
                }
            }
        }
        self.getattr(ino)
    }

    /// The shared open state of a file, created on first open.
    fn acquire_file(&self, ino: u64, node: &Node) -> Arc<OpenFile> {
        let mut open = self.open_files.lock();
        let file = open
            .entry(ino)
            .or_insert_with(|| OpenFile::new(node.id, &node.meta, node.seen.clone()))
            .clone();
        file.lock().open_count += 1;
        file
    }

    fn release_file(&self, ino: u64, file: &Arc<OpenFile>) {
        let mut open = self.open_files.lock();
        let mut st = file.lock();
        st.open_count -= 1;
        if st.open_count == 0 {
            if st.modified {
                tracing::warn!(
                    ino,
                    "last handle closed with uncommitted data that could not be stored; it is lost"
                );
            }
            open.remove(&ino);
        }
    }

    /// Commits the file's working version as a new entry version.
    fn commit_file(&self, ino: u64, file: &Arc<OpenFile>) -> FsResult<()> {
        let mut st = file.seal_all(&self.io, &self.pool)?;
        if !st.modified {
            return Ok(());
        }
        let _g = self.mutate.lock();
        let current = self
            .tree
            .read()
            .get(ino)
            .filter(|n| n.id == file.id)
            .map(|n| n.meta.clone());
        let Some(mut meta) = current else {
            // Unlinked while open: there is nothing left to commit to.
            st.modified = false;
            return Ok(());
        };
        meta.size = st.size;
        meta.blocks = st.committed_blocks(self.io.chunk_size);
        let t = st.mtime.unwrap_or_else(Timestamp::now);
        meta.mtime = t;
        meta.ctime = t;
        // Written on the version the file was opened (or last committed) at, not on whatever
        // arrived since: a version another node wrote meanwhile is concurrent with this one.
        let base = file.base.lock().clone();
        let written = self.persist_on(vec![(file.id, Some(meta), Some(base))])?;
        if let Some(e) = written.first() {
            *file.base.lock() = e.seen.clone();
        }
        st.modified = false;
        st.mtime = None;
        Ok(())
    }

    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        // Opening for writing is a change: refused once the core stopped taking them.
        let _change = if writable { Some(self.change()?) } else { None };
        let node = self.file_node(ino)?;
        let file = self.acquire_file(ino, &node);
        if !writable {
            self.read_siblings_ahead(ino, &node);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Handle::File {
                ino,
                file,
                writable,
            },
        );
        Ok(fh)
    }

    /// When `ino` is a file of the directory listed last, fetches the chunks of the next
    /// small files of the listing (`storage.read_ahead_chunks` of them) into the cache.
    fn read_siblings_ahead(&self, ino: u64, node: &Node) {
        let wanted = {
            let mut siblings = self.siblings.lock();
            let Some(s) = siblings.as_mut() else {
                return;
            };
            if self.tree.read().parent_ino(node) != s.dir {
                return;
            }
            // Only a reader going forward through the listing is read ahead for: the file is
            // looked for just past the previous one (no scan of a large directory per open).
            let window =
                s.cursor..(s.cursor + 1 + 2 * self.io.read_ahead_chunks as usize).min(s.inos.len());
            let Some(at) = s.inos[window.clone()]
                .iter()
                .position(|&i| i == ino)
                .map(|p| p + window.start)
            else {
                return;
            };
            s.cursor = at + 1;
            let from = s.ahead_to.max(at + 1);
            let to = (at + 1 + self.io.read_ahead_chunks as usize).min(s.inos.len());
            if from >= to {
                return;
            }
            s.ahead_to = to;
            s.inos[from..to].to_vec()
        };
        // As many bytes as a sequential reader's read-ahead; chosen under the tree lock,
        // submitted after it.
        let mut budget = self.io.read_ahead_chunks * self.io.chunk_size;
        let mut chunks = Vec::new();
        {
            let tree = self.tree.read();
            for sibling in wanted {
                let Some(next) = tree.get(sibling) else {
                    continue;
                };
                if next.meta.kind != EntryKind::File || next.meta.size > SMALL_FILE {
                    continue;
                }
                if next.meta.size > budget {
                    break;
                }
                budget -= next.meta.size;
                chunks.extend(next.meta.blocks.iter().flatten().copied());
            }
        }
        for r in chunks {
            if self.io.cache.peek(&r.id).is_none() {
                let io = self.io.clone();
                self.fetch_pool.submit(Box::new(move || {
                    // A failure shows up (and is logged) when the file is read.
                    let _ = io.load(&r);
                }));
            }
        }
    }

    fn file_handle(&self, fh: u64) -> FsResult<(u64, Arc<OpenFile>, bool)> {
        match self.handles.lock().get(&fh) {
            Some(Handle::File {
                ino,
                file,
                writable,
            }) => Ok((*ino, file.clone(), *writable)),
            _ => Err(FsError::BadHandle),
        }
    }

    /// Called on every open: whether the kernel may keep the pages it cached of `ino`, which
    /// holds when the file is still the version it was at its previous open here (local
    /// writes go through the kernel's cache, so they keep it true). A version that arrived
    /// from a peer, or a commit, changes it, and the kernel then drops the pages: reads stay
    /// close-to-open consistent while repeated reads of an unchanged file never reach p2pfs.
    pub fn keep_kernel_cache(&self, ino: u64) -> bool {
        let Some(current) = self.tree.read().get(ino).map(|n| (n.id, n.version)) else {
            return false;
        };
        self.kernel_cached.lock().put(ino, current) == Some(current)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<ReadBuf> {
        let (_, file, _) = self.file_handle(fh)?;
        file.read(&self.io, &self.fetch_pool, offset, size)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let _change = self.change()?;
        let (_, file, writable) = self.file_handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        file.write(&self.io, &self.pool, self.write_limit, offset, data)?;
        Ok(data.len() as u32)
    }

    /// `close()` of one descriptor: commit what was written (close-to-open).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, file, _) = self.file_handle(fh)?;
        self.commit_file(ino, &file)
    }

    /// Data and metadata are durable when this returns: the entry is committed (the
    /// namespace store syncs every commit) and the file's chunks are flushed to disk on their
    /// owners, which `close()` alone does not wait for.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh)?;
        let (ino, _, _) = self.file_handle(fh)?;
        let ids: Vec<crate::block::ChunkId> = self
            .tree
            .read()
            .get(ino)
            .map(|n| n.meta.blocks.iter().flatten().map(|r| r.id).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(());
        }
        self.io.sync(&ids)
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(Handle::File { ino, file, .. }) = self.handles.lock().remove(&fh) else {
            return Err(FsError::BadHandle);
        };
        let result = self.commit_file(ino, &file);
        if let Err(e) = &result {
            tracing::warn!(ino, error = %e, "commit on release failed");
        }
        self.release_file(ino, &file);
        result
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let listing = {
            let tree = self.tree.read();
            let dir = tree.get(ino).ok_or(FsError::NotFound)?;
            if dir.meta.kind != EntryKind::Dir {
                return Err(FsError::NotDir);
            }
            let parent = tree.parent_ino(dir);
            let mut out = vec![
                (b".".to_vec(), ino, dir.clone()),
                (
                    b"..".to_vec(),
                    parent,
                    tree.get(parent).cloned().unwrap_or_else(|| dir.clone()),
                ),
            ];
            for (name, child) in tree.children(ino) {
                if let Some(node) = tree.get(child) {
                    out.push((name, child, node.clone()));
                }
            }
            out
        };
        *self.siblings.lock() = Some(SiblingsAhead {
            dir: ino,
            inos: listing.iter().skip(2).map(|(_, child, _)| *child).collect(),
            cursor: 0,
            ahead_to: 0,
        });
        let entries = listing
            .into_iter()
            .map(|(name, ino, node)| DirEntry {
                name,
                attr: self.live_attr(ino, &node),
            })
            .collect();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .insert(fh, Handle::Dir(Arc::new(entries)));
        Ok(fh)
    }

    /// The directory snapshot taken at `opendir`; offsets index into it.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        match self.handles.lock().get(&fh) {
            Some(Handle::Dir(entries)) => Ok(entries.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        let path =
            CString::new(self.data_dir.as_os_str().as_bytes()).map_err(|_| FsError::Invalid)?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: path is NUL-terminated and st is a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(FsError::Io(std::io::Error::last_os_error().to_string()));
        }
        Ok(StatFs {
            blocks: st.f_blocks as u64,
            bfree: st.f_bfree as u64,
            bavail: st.f_bavail as u64,
            files: st.f_files as u64,
            ffree: st.f_ffree as u64,
            bsize: st.f_bsize as u32,
            namelen: MAX_NAME_LEN as u32,
            frsize: st.f_frsize as u32,
        })
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            entries: self.tree.read().len(),
            open_files: self.open_files.lock().len(),
            rejected_entries: self.rejected.load(Ordering::Relaxed) as usize,
            cache: self.io.cache.stats(),
        }
    }

    /// Starts a change (a write, a create, a rename...): refused with `EROFS` once the core
    /// stopped taking them; the guard holds the stop off until the change is done.
    pub(super) fn change(&self) -> FsResult<parking_lot::RwLockReadGuard<'_, ()>> {
        // Recursive: a change made inside another never waits behind a stop.
        let running = self.changes.running.read_recursive();
        if self.changes.stopped.load(Ordering::SeqCst) {
            return Err(FsError::ReadOnly);
        }
        Ok(running)
    }

    /// Makes the core read-only: every later change fails with `EROFS` (reads go on), once
    /// the changes already running are done (at most `STOP_CHANGES_WAIT`). A detached
    /// mount still served after the node stopped (a busy program in it) can then have no
    /// write acknowledged that the final commit missed.
    pub fn stop_changes(&self) {
        self.changes.stopped.store(true, Ordering::SeqCst);
        if self
            .changes
            .running
            .try_write_for(STOP_CHANGES_WAIT)
            .is_none()
        {
            tracing::warn!(
                "a change to the filesystem is still running at stop; committing anyway"
            );
        }
    }

    /// Stops taking changes ([`FsCore::stop_changes`]), then commits every open file with
    /// unsaved data and stops the seal threads: called when the mount goes away, so an
    /// unmount while files are open loses nothing that can be stored.
    pub fn shutdown(&self) {
        self.stop_changes();
        let open: Vec<(u64, Arc<OpenFile>)> = self
            .open_files
            .lock()
            .iter()
            .map(|(i, f)| (*i, f.clone()))
            .collect();
        for (ino, file) in open {
            if let Err(e) = self.commit_file(ino, &file) {
                tracing::error!(ino, error = %e, "could not commit an open file at shutdown");
            }
        }
        self.pool.shutdown();
        self.fetch_pool.shutdown();
    }
}

/// Deletes purged chunks from the cache and the store (see [`FsCore::erase`]), but not those in
/// `keep`.
pub(super) fn erase_chunks(
    store: &crate::block::ChunkStore,
    cache: &crate::block::ChunkCache,
    purged: &[crate::block::ChunkId],
    keep: &std::collections::HashSet<crate::block::ChunkId>,
) {
    let mut erased = 0usize;
    for id in purged.iter().filter(|id| !keep.contains(id)) {
        cache.remove(id);
        match store.delete(id) {
            Ok(()) => erased += 1,
            Err(e) => tracing::warn!(chunk = %id, error = %e, "cannot delete a purged chunk"),
        }
    }
    tracing::info!(chunks = erased, "purged chunks erased");
}
