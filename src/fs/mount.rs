//! The mount: the network volume at the root, and every volume this node's user is a member of
//! as a directory `@NAME` in it (`@home` is the user's personal volume). Each volume is an
//! [`FsCore`]; this layer routes kernel requests to the right one by inode number, keeps the
//! registry of volume records (whose writers every node checks, member or not), and runs the
//! volume commands of `p2pfs-ctl volume`.
//!
//! Inode and handle numbers carry their volume in the top bits: `slot << 40 | local`, slot 0
//! being the network volume (so its numbers are the core's own).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{
    Attr, Caller, CoreParts, CoreStats, DirEntry, FsCore, FsError, FsResult, ROOT_INO, ReadBuf,
    RemoteApply, RemoteChunks, SetAttr, StatFs, TreeLoader,
};
use crate::block::{ChunkCache, ChunkId, ChunkStore};
use crate::identity::UserIdentity;
use crate::namespace::volume::{Role, UserKey, VolumeError, VolumeRecord};
use crate::namespace::{Entry, NamespaceStore, UserId, Volume, VolumeId};
use crate::util::hlc::HlcClock;

const SLOT_SHIFT: u32 = 40;
const LOCAL_MASK: u64 = (1 << SLOT_SHIFT) - 1;
/// Volume directories in the root start with this; the network volume cannot use such names.
const VOLUME_PREFIX: u8 = b'@';
/// Entries of a volume whose record has not arrived yet wait here, unverified (nothing can
/// check them before the record names the volume's writers). Bounded in number, in bytes per
/// sending peer and in bytes in all: past a bound the oldest are dropped (counted in status,
/// `held_entries.dropped`), and anti-entropy offers them again once the record is here. A peer
/// can thus hold at most [`HELD_BYTES_PER_PEER`] of this node's memory this way, and all peers
/// together [`HELD_BYTES`].
const MAX_HELD: usize = 4096;
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

/// What an entry costs held in memory (its variable parts, and the rest roughly).
fn held_size(e: &Entry) -> usize {
    e.payload.len() + e.chunks.len() * 32 + e.seen.len() * 16 + 256
}

struct HeldEntry {
    entry: Entry,
    bytes: usize,
    source: Source,
}

/// The entries waiting for their volume's record, oldest first.
#[derive(Default)]
struct Held {
    queue: VecDeque<HeldEntry>,
    bytes: usize,
    by_source: HashMap<Source, usize>,
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
    fn push(&mut self, entry: Entry, source: Source) {
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
    fn take(&mut self, volume: &VolumeId) -> Vec<Entry> {
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

    fn status(&self) -> HeldStatus {
        HeldStatus {
            entries: self.queue.len() as u64,
            bytes: self.bytes as u64,
            dropped: self.dropped,
        }
    }
}

fn enc(slot: usize, local: u64) -> u64 {
    ((slot as u64) << SLOT_SHIFT) | local
}

fn dec(ino: u64) -> (usize, u64) {
    ((ino >> SLOT_SHIFT) as usize, ino & LOCAL_MASK)
}

fn out(slot: usize, mut attr: Attr) -> Attr {
    if slot != 0 && attr.ino == ROOT_INO {
        // A volume's root is private to the user the node runs as, whatever mode and owner
        // its (synced) entry carries: with `allow_other` every local user could read it
        // otherwise. The network volume (slot 0) is shared with every local user by design.
        attr.perm = VOLUME_ROOT_MODE;
        // SAFETY: geteuid/getegid cannot fail.
        (attr.uid, attr.gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    }
    attr.ino = enc(slot, attr.ino);
    attr
}

/// Mode of every volume's root directory (`@home`, `@NAME`) in the mount.
pub const VOLUME_ROOT_MODE: u16 = 0o700;

/// What every volume's core is built from (one of each per node).
pub struct MountParts {
    pub network: Volume,
    pub user: UserIdentity,
    pub origin: u64,
    pub namespace: NamespaceStore,
    pub chunks: Arc<ChunkStore>,
    pub remote: Option<Arc<dyn RemoteChunks>>,
    pub publish: Option<tokio::sync::mpsc::UnboundedSender<Vec<Entry>>>,
    pub chunk_size: u32,
    pub cache_bytes: u64,
    pub write_buffer_bytes: u64,
    pub seal_threads: usize,
    pub data_dir: PathBuf,
}

struct Template {
    origin: u64,
    chunks: Arc<ChunkStore>,
    remote: Option<Arc<dyn RemoteChunks>>,
    publish: Option<tokio::sync::mpsc::UnboundedSender<Vec<Entry>>>,
    chunk_size: u32,
    cache: Arc<ChunkCache>,
    write_buffer_bytes: u64,
    seal_threads: usize,
    data_dir: PathBuf,
}

/// A member volume in the mount.
struct Slot {
    volume: Volume,
    core: Arc<FsCore>,
    /// False once this user was removed from the volume: it disappears from the mount.
    member: bool,
}

/// One line of `p2pfs-ctl volume list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// Where it shows in the mount, relative to the mountpoint.
    pub dir: String,
    pub id: String,
    pub owner: String,
    pub role: Option<Role>,
    pub writers: usize,
    pub members: usize,
    pub keys: usize,
    pub files: usize,
}

pub struct Mount {
    user: UserIdentity,
    template: Template,
    namespace: NamespaceStore,
    clock: HlcClock,
    network: Arc<FsCore>,
    network_id: VolumeId,
    /// Append-only (slot numbers are in inode numbers the kernel holds); index + 1 = slot.
    slots: RwLock<Vec<Slot>>,
    /// The record of every volume this node knows, member or not: its writers are checked
    /// before any entry of it is stored.
    registry: RwLock<HashMap<VolumeId, VolumeRecord>>,
    held: Mutex<Held>,
    /// Listings built at `opendir` for the root and for member volumes (inode numbers mapped).
    listings: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Entries refused here (not counted by a core): non-writers of other volumes, bad records.
    rejected: AtomicU64,
    /// Serializes volume record changes made here.
    records: Mutex<()>,
}

impl Mount {
    /// Loads the namespace once, builds the network volume and every member volume, and
    /// publishes the user's personal volume record if the network does not have it yet.
    pub fn load(parts: MountParts) -> FsResult<Self> {
        let template = Template {
            origin: parts.origin,
            chunks: parts.chunks,
            remote: parts.remote,
            publish: parts.publish,
            chunk_size: parts.chunk_size,
            cache: Arc::new(ChunkCache::new(parts.cache_bytes)),
            write_buffer_bytes: parts.write_buffer_bytes,
            seal_threads: parts.seal_threads,
            data_dir: parts.data_dir,
        };
        let clock = HlcClock::new();
        let mut registry = HashMap::new();
        let mut rejected = 0u64;
        // One pass over the store: the network volume's tree is built as entries are decoded;
        // other volumes' entries wait (their records, so their keys, may come later in the
        // pass): only those are ever held decoded all at once.
        let mut network_tree = TreeLoader::new(&parts.network);
        let mut others: HashMap<VolumeId, Vec<Entry>> = HashMap::new();
        let refused = parts.namespace.for_each_entry(|e| {
            clock.observe(e.hlc);
            network_tree.take(&e);
            if VolumeRecord::is_record(&e) {
                match VolumeRecord::from_entry(&e) {
                    Ok(r) => {
                        registry.insert(e.volume, r);
                    }
                    Err(err) => {
                        tracing::warn!(volume = %e.volume, error = %err, "stored volume record refused");
                        rejected += 1;
                    }
                }
            } else if e.volume != parts.network.id {
                others.entry(e.volume).or_default().push(e);
            }
        })?;
        network_tree.rejected += refused;
        let network_id = parts.network.id;
        let network = Arc::new(FsCore::load_from(
            core_parts(
                &template,
                &parts.user,
                parts.namespace.clone(),
                parts.network,
            ),
            network_tree,
        )?);
        let mount = Self {
            user: parts.user,
            template,
            namespace: parts.namespace,
            clock,
            network,
            network_id,
            slots: RwLock::new(Vec::new()),
            registry: RwLock::new(HashMap::new()),
            held: Mutex::new(Held::default()),
            listings: Mutex::new(HashMap::new()),
            rejected: AtomicU64::new(rejected),
            records: Mutex::new(()),
        };
        // Every version stored, of any volume, is older than the next one written here.
        let clock_max = mount.clock.now();
        let mut slots = Vec::new();
        for (id, record) in &registry {
            match Volume::from_record(record, &mount.user) {
                Ok(Some(volume)) => {
                    let mut loader = TreeLoader::new(&volume);
                    loader.observe(clock_max);
                    for e in others.remove(id).unwrap_or_default() {
                        loader.take(&e);
                    }
                    let core = mount.build_core(volume.clone(), loader)?;
                    slots.push(Slot {
                        volume,
                        core,
                        member: true,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(volume = %id, error = %e, "volume record does not open"),
            }
        }
        // Stable slot order across restarts of this node is not needed (the kernel forgets
        // inode numbers at unmount), but a sorted order makes listings predictable.
        slots.sort_by(|a, b| (&a.volume.name, a.volume.id).cmp(&(&b.volume.name, b.volume.id)));
        *mount.slots.write() = slots;
        *mount.registry.write() = registry;
        // Versions a removal does not keep, stored before it arrived (a crash in between): one
        // pass for every volume with a removal. The trees above already left them out.
        {
            let registry = mount.registry.read();
            if registry.values().any(VolumeRecord::has_removals) {
                super::purge_refused_versions(
                    &mount.namespace,
                    &mount.template.cache,
                    &mount.rejected,
                    |v| registry.get(v).is_some_and(VolumeRecord::has_removals),
                    |e| registry.get(&e.volume).is_some_and(|r| !r.can_write(e)),
                )?;
            }
        }
        let personal = Volume::personal(&mount.user);
        if !mount.registry.read().contains_key(&personal.id) {
            mount.publish_record(&personal, &[])?;
        }
        Ok(mount)
    }

    /// The core of a member volume, from a tree built from the store.
    fn build_core(&self, volume: Volume, loader: TreeLoader) -> FsResult<Arc<FsCore>> {
        Ok(Arc::new(FsCore::load_from(
            core_parts(&self.template, &self.user, self.namespace.clone(), volume),
            loader,
        )?))
    }

    /// The core of a member volume, read from the store.
    fn load_core(&self, volume: Volume) -> FsResult<Arc<FsCore>> {
        Ok(Arc::new(FsCore::load(core_parts(
            &self.template,
            &self.user,
            self.namespace.clone(),
            volume,
        ))?))
    }

    fn me(&self) -> UserId {
        self.user.user_id()
    }

    /// Signs, stores and publishes a new version of `volume`'s record written on `base`, then
    /// takes it as if it had arrived.
    fn publish_record(
        &self,
        volume: &Volume,
        base: &[(u64, crate::util::hlc::Hlc)],
    ) -> FsResult<()> {
        let entry = volume
            .record_entry(
                &self.user.signing,
                self.template.origin,
                self.clock.now(),
                base,
            )
            .map_err(|e| FsError::Io(e.to_string()))?;
        let committed = self.namespace.commit(std::slice::from_ref(&entry))?;
        if let Some(publish) = &self.template.publish {
            let _ = publish.send(vec![entry.clone()]);
        }
        for e in &committed.applied {
            self.take_record(e)?;
        }
        Ok(())
    }

    /// A stored record: into the registry; mounts, updates or hides the volume for this user.
    fn take_record(&self, entry: &Entry) -> FsResult<()> {
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
        self.registry.write().insert(entry.volume, record);
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
        let (dropped, _) = super::purge_refused_versions(
            &self.namespace,
            &self.template.cache,
            &self.rejected,
            |v| v == volume,
            |e| !record.can_write(e),
        )?;
        Ok(dropped)
    }

    /// The versions of `user` in `volume` this node holds (what a removal of theirs keeps), in
    /// the order a removal keeps them when they do not all fit its record
    /// ([`Volume::revoke`]): current live versions first (the files they wrote stay), then
    /// current tombstones, then displaced versions, then expired tombstones. A tombstone left
    /// out is refused, so the file it deleted comes back: what is lost is never data.
    fn held_versions(
        &self,
        volume: &VolumeId,
        user: &UserId,
    ) -> Result<Vec<crate::namespace::VersionHash>, VolumeError> {
        use crate::namespace::StoredAs;
        let mut versions = self
            .namespace
            .placed_versions_in_where(
                |v| v == volume,
                |e| e.author == *user && !VolumeRecord::is_record(e),
            )
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        versions.sort_by_key(|(place, e)| match place {
            StoredAs::Current => u8::from(e.deleted),
            StoredAs::Displaced => 2,
            StoredAs::Expired => 3,
        });
        Ok(versions.iter().map(|(_, e)| e.version_hash()).collect())
    }

    /// The core serving `slot`, if it is visible.
    fn core(&self, slot: usize) -> FsResult<Arc<FsCore>> {
        if slot == 0 {
            return Ok(self.network.clone());
        }
        match self.slots.read().get(slot - 1) {
            Some(s) if s.member => Ok(s.core.clone()),
            _ => Err(FsError::NotFound),
        }
    }

    fn route(&self, ino: u64) -> FsResult<(usize, Arc<FsCore>, u64)> {
        let (slot, local) = dec(ino);
        Ok((slot, self.core(slot)?, local))
    }

    /// As [`route`](Self::route), for a change: refused when the user may only read.
    fn route_mut(&self, ino: u64) -> FsResult<(usize, Arc<FsCore>, u64)> {
        let routed = self.route(ino)?;
        if routed.0 != 0 && !routed.1.writable() {
            return Err(FsError::ReadOnly);
        }
        Ok(routed)
    }

    /// The directory names of the visible member volumes, by slot: `@NAME`, with the volume
    /// id appended when two visible volumes share a name; the user's personal volume is
    /// `@home`.
    fn volume_dirs(&self) -> Vec<(usize, Vec<u8>)> {
        let me = self.me();
        let slots = self.slots.read();
        let base = |s: &Slot| {
            if s.volume.is_personal() && s.volume.owner == me {
                "home".to_string()
            } else {
                s.volume.name.clone()
            }
        };
        let visible: Vec<(usize, String, bool)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.member)
            .map(|(i, s)| {
                (
                    i + 1,
                    base(s),
                    s.volume.is_personal() && s.volume.owner == me,
                )
            })
            .collect();
        visible
            .iter()
            .map(|(slot, name, mine)| {
                let clash = visible.iter().filter(|(_, n, _)| n == name).count() > 1;
                let mut dir = format!("@{name}");
                if clash && !mine {
                    let id = slots[slot - 1].volume.id.to_string();
                    dir = format!("@{name}~{}", &id[..8]);
                }
                (*slot, dir.into_bytes())
            })
            .collect()
    }

    fn is_volume_name(parent: u64, name: &[u8]) -> bool {
        parent == ROOT_INO && name.first() == Some(&VOLUME_PREFIX)
    }

    fn reserved(parent: u64, name: &[u8]) -> FsResult<()> {
        if Self::is_volume_name(parent, name) {
            return Err(FsError::NotPermitted(
                "names starting with @ in the root are volume directories",
            ));
        }
        Ok(())
    }

    // ---- kernel requests ----

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let (slot, core, local) = self.route(ino)?;
        Ok(out(slot, core.getattr(local)?))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if Self::is_volume_name(parent, name) {
            let slot = self
                .volume_dirs()
                .into_iter()
                .find(|(_, dir)| dir == name)
                .map(|(slot, _)| slot)
                .ok_or(FsError::NotFound)?;
            return Ok(out(slot, self.core(slot)?.getattr(ROOT_INO)?));
        }
        let (slot, core, local) = self.route(parent)?;
        Ok(out(slot, core.lookup(local, name)?))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<Attr> {
        Self::reserved(parent, name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        Ok(out(slot, core.mkdir(local, name, mode, caller)?))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        Self::reserved(parent, name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        Ok(out(slot, core.symlink(local, name, target, caller)?))
    }

    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<Attr> {
        Self::reserved(parent, name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        Ok(out(slot, core.mknod(local, name, mode, caller)?))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        caller: Caller,
        writable: bool,
    ) -> FsResult<(Attr, u64)> {
        Self::reserved(parent, name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        let (attr, fh) = core.create(local, name, mode, caller, writable)?;
        Ok((out(slot, attr), enc(slot, fh)))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let (_, core, local) = self.route(ino)?;
        core.readlink(local)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        Self::reserved(parent, name)?;
        let (_, core, local) = self.route_mut(parent)?;
        core.unlink(local, name)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        Self::reserved(parent, name)?;
        let (_, core, local) = self.route_mut(parent)?;
        core.rmdir(local, name)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
    ) -> FsResult<()> {
        Self::reserved(parent, name)?;
        Self::reserved(new_parent, new_name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        let (new_slot, _, new_local) = self.route_mut(new_parent)?;
        if slot != new_slot {
            // As between filesystems: `mv` then copies and deletes.
            return Err(FsError::CrossVolume);
        }
        core.rename(local, name, new_local, new_name, no_replace)
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Attr> {
        let (slot, core, local) = self.route_mut(ino)?;
        Ok(out(slot, core.setattr(local, set)?))
    }

    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let (slot, core, local) = if writable {
            self.route_mut(ino)?
        } else {
            self.route(ino)?
        };
        Ok(enc(slot, core.open(local, writable)?))
    }

    /// See [`FsCore::keep_kernel_cache`].
    pub fn keep_kernel_cache(&self, ino: u64) -> bool {
        self.route(ino)
            .map(|(_, core, local)| core.keep_kernel_cache(local))
            .unwrap_or(false)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<ReadBuf> {
        let (_, core, local) = self.route(fh)?;
        core.read(local, offset, size)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (_, core, local) = self.route(fh)?;
        core.write(local, offset, data)
    }

    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (_, core, local) = self.route(fh)?;
        core.flush(local)
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (_, core, local) = self.route(fh)?;
        core.fsync(local)
    }

    /// Releases a handle even of a volume this user was removed from meanwhile (its writes
    /// are committed; other nodes refuse them if they came after the removal).
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let (slot, local) = dec(fh);
        let core = match slot {
            0 => self.network.clone(),
            s => self
                .slots
                .read()
                .get(s - 1)
                .map(|s| s.core.clone())
                .ok_or(FsError::BadHandle)?,
        };
        core.release(local)
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let (slot, core, local) = self.route(ino)?;
        let fh = core.opendir(local)?;
        if slot == 0 && local != ROOT_INO {
            return Ok(fh);
        }
        let listing = core.readdir(fh)?;
        let is_root = listing
            .iter()
            .any(|d| d.name == b"." && d.attr.ino == ROOT_INO);
        let mut mapped: Vec<DirEntry> = listing
            .iter()
            .filter(|d| !(slot == 0 && is_root && d.name.first() == Some(&VOLUME_PREFIX)))
            .map(|d| {
                let mut d = d.clone();
                d.attr = out(slot, d.attr);
                if slot != 0 && is_root && d.name == b".." {
                    // A volume's root sits in the mount's root.
                    d.attr = self.network.getattr(ROOT_INO).unwrap_or(d.attr);
                }
                d
            })
            .collect();
        if slot == 0 {
            for (vslot, dir) in self.volume_dirs() {
                if let Ok(attr) = self.core(vslot).and_then(|c| c.getattr(ROOT_INO)) {
                    mapped.push(DirEntry {
                        name: dir,
                        attr: out(vslot, attr),
                    });
                }
            }
        }
        let fh = enc(slot, fh);
        self.listings.lock().insert(fh, Arc::new(mapped));
        Ok(fh)
    }

    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        if let Some(listing) = self.listings.lock().get(&fh) {
            return Ok(listing.clone());
        }
        let (_, core, local) = self.route(fh)?;
        core.readdir(local)
    }

    pub fn releasedir(&self, fh: u64) {
        self.listings.lock().remove(&fh);
        if let Ok((_, core, local)) = self.route(fh) {
            core.releasedir(local);
        }
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        self.network.statfs()
    }

    // ---- replication ----

    fn cores(&self) -> Vec<Arc<FsCore>> {
        let mut cores = vec![self.network.clone()];
        cores.extend(self.slots.read().iter().map(|s| s.core.clone()));
        cores
    }

    fn core_of_volume(&self, volume: &VolumeId) -> Option<Arc<FsCore>> {
        if *volume == self.network_id {
            return Some(self.network.clone());
        }
        self.slots
            .read()
            .iter()
            .find(|s| s.member && s.volume.id == *volume)
            .map(|s| s.core.clone())
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
            let _g = self.records.lock();
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
        Ok(report)
    }

    /// Expires tombstones every member has seen (see [`FsCore::expire`]), in any volume.
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
                    self.namespace.commit(&valid)?;
                    self.namespace.forget(&valid)?
                }
            };
        }
        Ok(expired)
    }

    pub fn namespace(&self) -> &NamespaceStore {
        &self.namespace
    }

    /// The entries waiting for their volume's record.
    pub fn held_status(&self) -> HeldStatus {
        self.held.lock().status()
    }

    pub fn pending_chunks(&self) -> HashSet<ChunkId> {
        self.cores()
            .iter()
            .flat_map(|c| c.pending_chunks())
            .collect()
    }

    pub fn checkpoint(&self) {
        for core in self.cores() {
            core.checkpoint();
        }
    }

    /// Makes conflict copies in every mounted volume; displaced versions of volumes this node
    /// does not mount are settled without a copy (their members make it).
    pub fn settle_conflicts(&self, min_age: std::time::Duration) -> FsResult<usize> {
        let mut copies = 0;
        for core in self.cores() {
            copies += core.settle_conflicts(min_age)?;
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

    /// The chunk ids of the file at `path` (relative to the mount, `/`-separated; a first
    /// component `@NAME` names a volume).
    pub fn file_chunks(&self, path: &str) -> FsResult<Vec<ChunkId>> {
        let trimmed = path.trim_start_matches('/');
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if first.as_bytes().first() == Some(&VOLUME_PREFIX) {
            let slot = self
                .volume_dirs()
                .into_iter()
                .find(|(_, dir)| dir == first.as_bytes())
                .map(|(slot, _)| slot)
                .ok_or(FsError::NotFound)?;
            return self.core(slot)?.file_chunks(rest);
        }
        self.network.file_chunks(path)
    }

    /// Totals over every mounted volume; `entries` counts files, directories and symlinks
    /// without the volumes' roots.
    pub fn stats(&self) -> CoreStats {
        let mut total = self.network.stats();
        total.entries = total.entries.saturating_sub(1);
        for core in self.cores().iter().skip(1) {
            let s = core.stats();
            total.entries += s.entries.saturating_sub(1);
            total.open_files += s.open_files;
            total.rejected_entries += s.rejected_entries;
        }
        total.rejected_entries += self.rejected.load(Ordering::Relaxed) as usize;
        total
    }

    pub fn shutdown(&self) {
        for core in self.cores() {
            core.shutdown();
        }
    }

    // ---- paths (p2pfs-ctl ls, put, get, rm, health) ----

    /// The attributes of `path`, relative to the mount's root (`/`-separated; `""` or `/` is
    /// the root; a first component `@NAME` is a volume, as in the mount).
    pub fn resolve(&self, path: &str) -> FsResult<Attr> {
        let mut attr = self.getattr(ROOT_INO)?;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(FsError::Invalid);
            }
            attr = self.lookup(attr.ino, part.as_bytes())?;
        }
        Ok(attr)
    }

    /// The directory holding `path` and the last component's name.
    pub fn resolve_parent(&self, path: &str) -> FsResult<(u64, Vec<u8>)> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid);
        }
        let parent = self.resolve(dir)?;
        if parent.kind != crate::namespace::EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok((parent.ino, name.as_bytes().to_vec()))
    }

    /// The entries of the directory at `path` (without `.` and `..`), or the file itself.
    pub fn list(&self, path: &str) -> FsResult<Vec<DirEntry>> {
        let attr = self.resolve(path)?;
        if attr.kind != crate::namespace::EntryKind::Dir {
            let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            return Ok(vec![DirEntry {
                name: name.as_bytes().to_vec(),
                attr,
            }]);
        }
        let fh = self.opendir(attr.ino)?;
        let listing = self.readdir(fh);
        self.releasedir(fh);
        Ok(listing?
            .iter()
            .filter(|d| d.name != b"." && d.name != b"..")
            .cloned()
            .collect())
    }

    /// Removes the file, symlink or directory at `path` (a non-empty directory only when
    /// `recursive`). Returns how many entries went.
    pub fn remove(&self, path: &str, recursive: bool) -> FsResult<u64> {
        let (parent, name) = self.resolve_parent(path)?;
        let attr = self.lookup(parent, &name)?;
        if attr.kind != crate::namespace::EntryKind::Dir {
            self.unlink(parent, &name)?;
            return Ok(1);
        }
        let mut removed = 0;
        if recursive {
            let fh = self.opendir(attr.ino)?;
            let listing = self.readdir(fh);
            self.releasedir(fh);
            for child in listing?
                .iter()
                .filter(|d| d.name != b"." && d.name != b"..")
            {
                let child_path = format!(
                    "{}/{}",
                    path.trim_end_matches('/'),
                    String::from_utf8_lossy(&child.name)
                );
                removed += self.remove(&child_path, true)?;
            }
        }
        self.rmdir(parent, &name)?;
        Ok(removed + 1)
    }

    /// Every visible file (path as in the mount) with its chunk ids.
    pub fn all_file_chunks(&self) -> Vec<(String, Vec<ChunkId>)> {
        let mut out = self.network.file_chunk_lists();
        let dirs: HashMap<usize, Vec<u8>> = self.volume_dirs().into_iter().collect();
        for (i, s) in self.slots.read().iter().enumerate() {
            if let (true, Some(dir)) = (s.member, dirs.get(&(i + 1))) {
                let dir = String::from_utf8_lossy(dir);
                out.extend(
                    s.core
                        .file_chunk_lists()
                        .into_iter()
                        .map(|(p, ids)| (format!("{dir}/{p}"), ids)),
                );
            }
        }
        out
    }

    // ---- volume commands ----

    /// Volumes this node's user is a member of, the network volume first.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let me = self.me();
        let mut out = vec![VolumeInfo {
            name: "(network)".into(),
            dir: "/".into(),
            id: self.network_id.to_string(),
            owner: "(every holder of the network key)".into(),
            role: Some(Role::Writer),
            writers: 0,
            members: 0,
            keys: 1,
            files: self.network.stats().entries.saturating_sub(1),
        }];
        let dirs: HashMap<usize, Vec<u8>> = self.volume_dirs().into_iter().collect();
        for (i, s) in self.slots.read().iter().enumerate() {
            if !s.member {
                continue;
            }
            out.push(VolumeInfo {
                name: s.volume.name.clone(),
                dir: format!(
                    "/{}",
                    String::from_utf8_lossy(dirs.get(&(i + 1)).map(|d| &d[..]).unwrap_or(b""))
                ),
                id: s.volume.id.to_string(),
                owner: s.volume.owner.to_string(),
                role: s.volume.role(&me),
                writers: s.volume.writers.len(),
                members: s.volume.members.len(),
                keys: s.volume.key_count(),
                files: s.core.stats().entries.saturating_sub(1),
            });
        }
        out
    }

    /// The volume `name` owned by this user (for share/unshare), with its record's history.
    fn owned(
        &self,
        name: &str,
    ) -> Result<(Volume, Vec<(u64, crate::util::hlc::Hlc)>), VolumeError> {
        let me = self.me();
        let slots = self.slots.read();
        let matching: Vec<&Slot> = slots
            .iter()
            .filter(|s| s.member && s.volume.name == name)
            .collect();
        let Some(slot) = matching.iter().find(|s| s.volume.owner == me) else {
            return Err(VolumeError::NotAllowed(if matching.is_empty() {
                format!("no volume named {name:?} (see `p2pfs-ctl volume list`)")
            } else {
                format!("volume {name:?} is not yours; only its owner can change who shares it")
            }));
        };
        let base = self
            .namespace
            .get(&VolumeRecord::entry_key(&slot.volume.id))
            .ok()
            .flatten()
            .map(|e| e.seen)
            .unwrap_or_default();
        Ok((slot.volume.clone(), base))
    }

    /// Creates a volume owned by this user; it appears as `@NAME` in the mount.
    pub fn create_volume(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let _g = self.records.lock();
        let me = self.me();
        if name == "home"
            || self
                .slots
                .read()
                .iter()
                .any(|s| s.member && s.volume.owner == me && s.volume.name == name)
        {
            return Err(VolumeError::NotAllowed(format!(
                "you already have a volume named {name:?}"
            )));
        }
        let volume = Volume::create(&self.user, name)?;
        let id = volume.id;
        self.publish_record(&volume, &[])
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        self.volumes()
            .into_iter()
            .find(|v| v.id == id.to_string())
            .ok_or_else(|| VolumeError::Record("the new volume did not mount".into()))
    }

    /// Shares a volume of this user's with `user` (reader only when `read_only`).
    pub fn share(&self, name: &str, user: &UserKey, read_only: bool) -> Result<(), VolumeError> {
        let _g = self.records.lock();
        let (mut volume, base) = self.owned(name)?;
        if read_only && volume.writers.contains(&user.id) {
            let held = self.held_versions(&volume.id, &user.id)?;
            let left_out = volume.revoke(&user.id, self.clock.now(), held)?;
            warn_left_out(&volume, &user.id, left_out);
        }
        volume.share(user, read_only)?;
        self.publish_record(&volume, &base)
            .map_err(|e| VolumeError::Record(e.to_string()))
    }

    /// Removes `user` from a volume of this user's; a new key encrypts what is written from now
    /// on. Returns `None` when they were not a member, else how many of their versions did not
    /// fit the record and are refused from now on ([`Volume::revoke`]).
    pub fn unshare(&self, name: &str, user: &UserId) -> Result<Option<usize>, VolumeError> {
        let _g = self.records.lock();
        let (mut volume, base) = self.owned(name)?;
        let held = self.held_versions(&volume.id, user)?;
        let Some(left_out) = volume.unshare(user, self.clock.now(), held)? else {
            return Ok(None);
        };
        warn_left_out(&volume, user, left_out);
        self.publish_record(&volume, &base)
            .map_err(|e| VolumeError::Record(e.to_string()))?;
        Ok(Some(left_out))
    }
}

/// Says when a removal could not keep every version of the removed writer.
fn warn_left_out(volume: &Volume, user: &UserId, left_out: usize) {
    if left_out > 0 {
        tracing::warn!(volume = %volume.id, %user, left_out, "removed writer has more versions than the volume record can keep: those kept last (expired, displaced, then tombstones) are refused from now on");
    }
}

fn core_parts(
    template: &Template,
    user: &UserIdentity,
    namespace: NamespaceStore,
    volume: Volume,
) -> CoreParts {
    CoreParts {
        volume,
        signer: user.signing.clone(),
        origin: template.origin,
        namespace,
        chunks: template.chunks.clone(),
        remote: template.remote.clone(),
        publish: template.publish.clone(),
        chunk_size: template.chunk_size,
        cache: template.cache.clone(),
        write_buffer_bytes: template.write_buffer_bytes,
        seal_threads: template.seal_threads,
        data_dir: template.data_dir.clone(),
    }
}

#[cfg(test)]
#[path = "mount_tests.rs"]
mod tests;
