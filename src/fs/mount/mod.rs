//! The mount: the network volume at the root, and every volume this node's user is a member of
//! as a directory `@NAME` in it (`@home` is the user's personal volume). Each volume is an
//! [`FsCore`]; this layer routes kernel requests to the right one by inode number, keeps the
//! registry of volume records (whose writers every node checks, member or not), and runs the
//! volume commands of `p2pfs-ctl volume`.
//!
//! `route.rs` takes kernel requests, `ingest.rs` what peers send, `paths.rs` the paths of
//! `p2pfs-ctl`, `volumes.rs` its volume commands; this file loads the mount and knows which
//! core serves which volume.

mod ingest;
mod paths;
mod pinned;
mod route;
mod snapshots;
mod volumes;
// `p2pfs-ctl versions` and `restore`.
mod history;

pub use ingest::{HELD_BYTES, HELD_BYTES_PER_PEER, HeldStatus, Source};
pub use route::VOLUME_ROOT_MODE;
pub use snapshots::{NamedSnapshot, SNAPSHOTS_DIR, SnapshotError, SnapshotInfo};
pub use volumes::{RetentionInfo, VolumeInfo};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::merge::purge_refused_versions;
use super::{CoreParts, CoreStats, DirEntry, FsCore, FsError, FsResult, RemoteChunks, TreeLoader};
use crate::block::{ChunkCache, ChunkId, ChunkStore};
use crate::identity::UserIdentity;
use crate::namespace::volume::VolumeRecord;
use crate::namespace::{Entry, NamespaceStore, UserId, Volume, VolumeId};
use crate::util::hlc::HlcClock;
use ingest::Held;

/// Volume directories in the root start with this; the network volume cannot use such names.
const VOLUME_PREFIX: u8 = b'@';

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
    pub read_ahead_chunks: usize,
    pub data_dir: PathBuf,
}

/// What the cores of every volume of the mount share (each core's [`CoreParts`] adds its
/// volume, the user's signing key and the store; see [`core_parts`]).
struct Template {
    origin: u64,
    chunks: Arc<ChunkStore>,
    remote: Option<Arc<dyn RemoteChunks>>,
    publish: Option<tokio::sync::mpsc::UnboundedSender<Vec<Entry>>>,
    chunk_size: u32,
    cache: Arc<ChunkCache>,
    write_buffer_bytes: u64,
    seal_threads: usize,
    read_ahead_chunks: usize,
    data_dir: PathBuf,
    /// Node names for conflict names, shared by every core's tree.
    names: crate::namespace::view::NodeNamer,
}

/// A member volume in the mount.
struct Slot {
    volume: Volume,
    core: Arc<FsCore>,
    /// False once this user was removed from the volume: it disappears from the mount.
    member: bool,
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
    record_changes: Mutex<()>,
    /// Node tags of expelled nodes, with the revocation's time (unix ms): their entries
    /// stamped later are refused wherever they arrive from ([`Mount::refuse_node_after`]).
    expelled: RwLock<HashMap<u64, u64>>,
    /// The views of `.snapshots` and the named snapshots.
    snapshots: snapshots::Snapshots,
    /// Notified when entries from peers were stored (the pin worker waits on it).
    applied: Arc<tokio::sync::Notify>,
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
            read_ahead_chunks: parts.read_ahead_chunks,
            data_dir: parts.data_dir,
            names: Default::default(),
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
        let snapshots = snapshots::Snapshots::new(&template.data_dir);
        network.set_node_names(template.names.clone());
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
            record_changes: Mutex::new(()),
            expelled: RwLock::new(HashMap::new()),
            snapshots,
            applied: Arc::new(tokio::sync::Notify::new()),
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
        mount.refresh_retention();
        // Versions a removal does not keep, stored before it arrived (a crash in between): one
        // pass for every volume with a removal. The trees above already left them out.
        {
            let registry = mount.registry.read();
            if registry.values().any(VolumeRecord::has_removals) {
                purge_refused_versions(
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

    /// Chunks a purge released in a volume no core of this node serves (see `FsCore::erase`).
    pub(super) fn erase(&self, purged: &[ChunkId]) {
        if !purged.is_empty() {
            crate::fs::ops::erase_chunks(
                &self.template.chunks,
                &self.template.cache,
                purged,
                &self.pending_chunks(),
            );
        }
    }

    /// Gives the store the retention policy each volume's record sets (the others keep the
    /// store's default: the node's config).
    pub(super) fn refresh_retention(&self) {
        let mut table = self.namespace.retention();
        table.volumes = self
            .registry
            .read()
            .iter()
            .filter_map(|(id, r)| r.retention.map(|p| (*id, p.clipped())))
            .collect();
        self.namespace.set_retention(table);
    }

    /// The core of a member volume, from a tree built from the store.
    fn build_core(&self, volume: Volume, loader: TreeLoader) -> FsResult<Arc<FsCore>> {
        let core = FsCore::load_from(
            core_parts(&self.template, &self.user, self.namespace.clone(), volume),
            loader,
        )?;
        core.set_node_names(self.template.names.clone());
        Ok(Arc::new(core))
    }

    /// The core of a member volume, read from the store.
    fn load_core(&self, volume: Volume) -> FsResult<Arc<FsCore>> {
        let core = FsCore::load(core_parts(
            &self.template,
            &self.user,
            self.namespace.clone(),
            volume,
        ))?;
        core.set_node_names(self.template.names.clone());
        Ok(Arc::new(core))
    }

    fn me(&self) -> UserId {
        self.user.user_id()
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

    pub fn namespace(&self) -> &NamespaceStore {
        &self.namespace
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
        read_ahead_chunks: template.read_ahead_chunks,
        data_dir: template.data_dir.clone(),
    }
}

#[cfg(test)]
mod tests;
