//! `.snapshots` in every volume's root: read-only views of the volume at past times
//! ([`Snapshot`]), and the named snapshots of `p2pfs-ctl snapshot --name`.
//!
//! `.snapshots` answers a lookup but is left out of the root's listing, so `find`, `du` or a
//! backup of the live tree never walks into the past. It lists the named snapshots of the
//! volume and the most recent [`LISTED_CHANGES`] minutes in which a version of it was
//! replaced (each view showing the volume at the start of that minute, just before those
//! changes); any other time within the volume's retention can be looked up by name.
//!
//! Inode numbers of views have the top bit set ([`SNAPSHOT_BIT`]), then a view number, then
//! the inode in the view's tree; view number 0 is `.snapshots` itself (its local part the
//! volume's slot). A view is numbered on first lookup. Its tree is kept built while among the
//! [`BUILT`] most recently used; an evicted view keeps its number and the order its tree gave
//! inode numbers in (a list of entry ids) among the [`REMEMBERED`] most recently evicted, so a
//! walk over more views than are built (`find .snapshots`, `diff -r` of two past times) gets
//! the same inode numbers when a view is built again. Past that, a view's number is retired,
//! so an inode number the kernel still holds for it answers ENOENT, never another file.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Mount;
use super::route::out;
use crate::fs::file::OpenFile;
use crate::fs::snapshot::{self, Snapshot, dir_attr, format_minute, parse_time};
use crate::fs::{Attr, DirEntry, FsError, FsResult, ROOT_INO, ReadBuf};
use crate::namespace::VolumeId;

/// The name of the views' directory in every volume's root.
pub const SNAPSHOTS_DIR: &[u8] = b".snapshots";
/// Inode and handle numbers of views have this bit set.
pub(super) const SNAPSHOT_BIT: u64 = 1 << 63;
const NUMBER_SHIFT: u32 = 40;
const LOCAL_MASK: u64 = (1 << NUMBER_SHIFT) - 1;
const MAX_NUMBER: u32 = (1 << (63 - NUMBER_SHIFT)) - 1;
/// Change minutes listed in `.snapshots`.
pub const LISTED_CHANGES: usize = 24;
/// Views whose trees are kept built.
pub const BUILT: usize = 4;
/// Evicted views whose numbering is remembered (to rebuild them with the same inodes).
pub const REMEMBERED: usize = 64;
/// Views numbered at once (a listing numbers its entries); past it, unbuilt ones are retired.
const MAX_VIEWS: usize = 1024;
/// A built view is rebuilt when the store changed since, at most this often: versions
/// stamped before a recent time may still be arriving from peers.
const REFRESH_RECENT: Duration = Duration::from_secs(2);
/// As [`REFRESH_RECENT`], for views older than [`RECENT`] (only a returning node's
/// anti-entropy brings versions that old).
const REFRESH_OLD: Duration = Duration::from_secs(60);
const RECENT: Duration = Duration::from_secs(600);
/// Where named snapshots are recorded, in the data dir.
const NAMED_FILE: &str = "snapshots.json";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no volume {0:?} in the mount (see `p2pfs-ctl volume list`)")]
    UnknownVolume(String),
    #[error(
        "{0:?} cannot name a snapshot: use 1 to 64 characters, no '/', not starting with '.', and not a time"
    )]
    BadName(String),
    #[error("a snapshot named {0:?} exists already in this volume")]
    NameTaken(String),
    #[error("{0} is in the future")]
    Future(String),
    #[error("{0} is older than this volume keeps versions ({1} s)")]
    TooOld(String, u64),
    #[error("{0}")]
    Fs(#[from] FsError),
    #[error("recording named snapshots in {0}: {1}")]
    Record(PathBuf, std::io::Error),
}

/// A name for a time of one volume, recorded in the data dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedSnapshot {
    pub name: String,
    /// The volume's id.
    pub volume: String,
    pub at_ms: u64,
}

/// A named snapshot as `p2pfs-ctl snapshots` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// The volume's directory in the mount (`/` for the network volume).
    pub volume_dir: String,
    /// UTC, RFC 3339.
    pub time: String,
    /// The view, relative to the mount's root.
    pub path: String,
    /// Its time is within the volume's retention (the view shows).
    pub visible: bool,
}

fn enc(number: u32, local: u64) -> u64 {
    SNAPSHOT_BIT | (u64::from(number) << NUMBER_SHIFT) | local
}

fn dec(ino: u64) -> (u32, u64) {
    (
        ((ino & !SNAPSHOT_BIT) >> NUMBER_SHIFT) as u32,
        ino & LOCAL_MASK,
    )
}

pub(super) fn is_snapshot(ino: u64) -> bool {
    ino & SNAPSHOT_BIT != 0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One numbered view: a name in one volume's `.snapshots` and the time it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    slot: usize,
    name: Vec<u8>,
    at_ms: u64,
}

struct Built {
    snapshot: Arc<Snapshot>,
    /// When it was built, or last found current.
    at: Instant,
    /// The store's digest it was built from.
    digest: Vec<[u8; 32]>,
}

struct State {
    views: HashMap<u32, View>,
    numbers: HashMap<(usize, Vec<u8>), u32>,
    next: u32,
    built: lru::LruCache<u32, Built>,
    /// Evicted views' inode order, to rebuild them numbered as before.
    orders: lru::LruCache<u32, Vec<crate::namespace::EntryId>>,
    named: Vec<NamedSnapshot>,
}

impl State {
    /// Forgets view `n` (its tree, its number).
    fn retire(&mut self, n: u32) {
        if let Some(v) = self.views.remove(&n) {
            self.numbers.remove(&(v.slot, v.name));
        }
        self.built.pop(&n);
        self.orders.pop(&n);
    }
}

/// The views of one mount.
pub(super) struct Snapshots {
    state: Mutex<State>,
    named_path: PathBuf,
    /// Open files of views, by handle: the volume's slot and the file's version.
    files: Mutex<HashMap<u64, (usize, Arc<OpenFile>)>>,
    next_fh: AtomicU64,
}

impl Snapshots {
    pub(super) fn new(data_dir: &Path) -> Self {
        let named_path = data_dir.join(NAMED_FILE);
        let named = match std::fs::read(&named_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %named_path.display(), error = %e, "named snapshots unreadable; none shown");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self {
            state: Mutex::new(State {
                views: HashMap::new(),
                numbers: HashMap::new(),
                next: 1,
                built: lru::LruCache::new(NonZeroUsize::new(BUILT).expect("non-zero")),
                orders: lru::LruCache::new(NonZeroUsize::new(REMEMBERED).expect("non-zero")),
                named,
            }),
            named_path,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn handle(&self) -> u64 {
        SNAPSHOT_BIT | self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Mount {
    fn volume_id_of_slot(&self, slot: usize) -> FsResult<VolumeId> {
        if slot == 0 {
            return Ok(self.network_id);
        }
        self.slots
            .read()
            .get(slot - 1)
            .filter(|s| s.member)
            .map(|s| s.volume.id)
            .ok_or(FsError::NotFound)
    }

    /// The live root of the volume in `slot`, as the mount shows it.
    fn live_root(&self, slot: usize) -> FsResult<Attr> {
        Ok(out(slot, self.core(slot)?.getattr(ROOT_INO)?))
    }

    /// Why a view of `volume` at `at_ms` cannot show, if it cannot: a time in the future, or
    /// before what the volume keeps.
    fn check_time(&self, volume: &VolumeId, at_ms: u64) -> Result<(), SnapshotError> {
        let now = now_ms();
        if at_ms > now {
            return Err(SnapshotError::Future(snapshot::format_second(at_ms)));
        }
        let keep = self.namespace.retention().of(volume).keep_secs;
        if at_ms < now.saturating_sub(keep.saturating_mul(1000)) {
            return Err(SnapshotError::TooOld(snapshot::format_second(at_ms), keep));
        }
        Ok(())
    }

    /// The time a name in `.snapshots` of `slot` shows: a named snapshot's, or the time it
    /// spells.
    fn view_time(&self, state: &State, slot: usize, name: &[u8]) -> FsResult<u64> {
        let volume = self.volume_id_of_slot(slot)?;
        let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
        let vol = volume.to_string();
        let at = state
            .named
            .iter()
            .find(|n| n.volume == vol && n.name == name)
            .map(|n| n.at_ms)
            .or_else(|| parse_time(name))
            .ok_or(FsError::NotFound)?;
        self.check_time(&volume, at)
            .map_err(|_| FsError::NotFound)?;
        Ok(at)
    }

    /// The number of the view `name` in `slot`'s `.snapshots`, given on first use.
    fn number(&self, state: &mut State, slot: usize, name: &[u8], at_ms: u64) -> FsResult<u32> {
        if let Some(&n) = state.numbers.get(&(slot, name.to_vec())) {
            if state.views.get(&n).is_some_and(|v| v.at_ms == at_ms) {
                return Ok(n);
            }
            // A name whose time changed (a named snapshot made again): a new view.
            state.retire(n);
        }
        if state.views.len() >= MAX_VIEWS {
            let mut idle: Vec<u32> = state
                .views
                .keys()
                .filter(|n| !state.built.contains(n))
                .copied()
                .collect();
            idle.sort_unstable();
            for n in idle.into_iter().take(MAX_VIEWS / 4) {
                state.retire(n);
            }
        }
        if state.next > MAX_NUMBER {
            return Err(FsError::Io("snapshot view numbers exhausted".into()));
        }
        let n = state.next;
        state.next += 1;
        state.views.insert(
            n,
            View {
                slot,
                name: name.to_vec(),
                at_ms,
            },
        );
        state.numbers.insert((slot, name.to_vec()), n);
        Ok(n)
    }

    /// View `n` and its tree, built (or rebuilt, when the store changed) as needed.
    fn view(&self, n: u32) -> FsResult<(View, Arc<Snapshot>)> {
        let mut state = self.snapshots.state.lock();
        let view = state.views.get(&n).cloned().ok_or(FsError::NotFound)?;
        let recent = now_ms().saturating_sub(view.at_ms) < RECENT.as_millis() as u64;
        let refresh = if recent { REFRESH_RECENT } else { REFRESH_OLD };
        // The digest is read only when a refresh is due: it waits for a commit in progress.
        let mut digest = None;
        let seed = match state.built.get_mut(&n) {
            Some(b) if b.at.elapsed() < refresh => return Ok((view, b.snapshot.clone())),
            Some(b) => {
                let now = self.namespace.digest()?;
                if b.digest == now {
                    b.at = Instant::now();
                    return Ok((view, b.snapshot.clone()));
                }
                digest = Some(now);
                b.snapshot.order().to_vec()
            }
            None => state.orders.pop(&n).unwrap_or_default(),
        };
        let digest = match digest {
            Some(d) => d,
            None => self.namespace.digest()?,
        };
        let core = self.core(view.slot)?;
        let volume = core.volume.read().clone();
        let snapshot = Arc::new(Snapshot::build(
            &self.namespace,
            &volume,
            view.at_ms,
            &seed,
        )?);
        tracing::debug!(
            view = n,
            at = view.at_ms,
            entries = snapshot.len(),
            "snapshot built"
        );
        let built = Built {
            snapshot: snapshot.clone(),
            at: Instant::now(),
            digest,
        };
        if let Some((evicted, old)) = state.built.push(n, built)
            && evicted != n
        {
            let order = old.snapshot.order().to_vec();
            if let Some((forgotten, _)) = state.orders.push(evicted, order)
                && forgotten != evicted
                && !state.built.contains(&forgotten)
            {
                state.retire(forgotten);
            }
        }
        Ok((view, snapshot))
    }

    /// The attributes of view `n`'s own directory.
    fn view_root(&self, n: u32, view: &View) -> FsResult<Attr> {
        Ok(dir_attr(
            enc(n, ROOT_INO),
            &self.live_root(view.slot)?,
            view.at_ms,
        ))
    }

    /// `.snapshots` of the volume in `slot`.
    pub(super) fn snapshots_dir(&self, slot: usize) -> FsResult<Attr> {
        let root = self.live_root(slot)?;
        let at = root.mtime.secs.max(0) as u64 * 1000 + u64::from(root.mtime.nanos) / 1_000_000;
        Ok(dir_attr(enc(0, slot as u64), &root, at))
    }

    /// Whether `name` in directory `parent` (a volume's local inode) is `.snapshots`.
    pub(super) fn names_snapshots(local_parent: u64, name: &[u8]) -> bool {
        local_parent == ROOT_INO && name == SNAPSHOTS_DIR
    }

    pub(super) fn snap_getattr(&self, ino: u64) -> FsResult<Attr> {
        match dec(ino) {
            (0, slot) => self.snapshots_dir(slot as usize),
            (n, ROOT_INO) => {
                let view = self
                    .snapshots
                    .state
                    .lock()
                    .views
                    .get(&n)
                    .cloned()
                    .ok_or(FsError::NotFound)?;
                self.view_root(n, &view)
            }
            (n, local) => {
                let (view, snapshot) = self.view(n)?;
                let mut attr = snapshot.attr(&*self.core(view.slot)?, local)?;
                attr.ino = enc(n, attr.ino);
                Ok(attr)
            }
        }
    }

    pub(super) fn snap_lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        match dec(parent) {
            (0, slot) => {
                let slot = slot as usize;
                let (n, view) = {
                    let mut state = self.snapshots.state.lock();
                    let at = self.view_time(&state, slot, name)?;
                    let n = self.number(&mut state, slot, name, at)?;
                    (n, state.views[&n].clone())
                };
                self.view_root(n, &view)
            }
            (n, local) => {
                let (view, snapshot) = self.view(n)?;
                let ino = snapshot.lookup(local, name)?;
                let mut attr = snapshot.attr(&*self.core(view.slot)?, ino)?;
                attr.ino = enc(n, ino);
                Ok(attr)
            }
        }
    }

    /// The names `.snapshots` of `slot` lists: its named snapshots, then the most recent
    /// minutes in which a version was replaced, oldest first; each with its time.
    fn listed_views(&self, state: &State, slot: usize) -> FsResult<Vec<(Vec<u8>, u64)>> {
        let volume = self.volume_id_of_slot(slot)?;
        let vol = volume.to_string();
        let mut out: Vec<(Vec<u8>, u64)> = state
            .named
            .iter()
            .filter(|n| n.volume == vol && self.check_time(&volume, n.at_ms).is_ok())
            .map(|n| (n.name.clone().into_bytes(), n.at_ms))
            .collect();
        let minutes: BTreeSet<u64> = self
            .namespace
            .replaced_times(&volume)?
            .into_iter()
            .map(|t| t.millis() / 60_000 * 60_000)
            .collect();
        let recent: Vec<u64> = minutes
            .into_iter()
            .rev()
            .filter(|&m| self.check_time(&volume, m).is_ok())
            .take(LISTED_CHANGES)
            .collect();
        out.extend(
            recent
                .into_iter()
                .rev()
                .map(|m| (format_minute(m).into_bytes(), m)),
        );
        Ok(out)
    }

    pub(super) fn snap_opendir(&self, ino: u64) -> FsResult<u64> {
        let (n, local) = dec(ino);
        let mut listing = Vec::new();
        if n == 0 {
            let slot = local as usize;
            let this = self.snapshots_dir(slot)?;
            let root = self.live_root(slot)?;
            listing.push(DirEntry {
                name: b".".to_vec(),
                attr: this,
            });
            listing.push(DirEntry {
                name: b"..".to_vec(),
                attr: root,
            });
            let mut state = self.snapshots.state.lock();
            for (name, at) in self.listed_views(&state, slot)? {
                let n = self.number(&mut state, slot, &name, at)?;
                listing.push(DirEntry {
                    name,
                    attr: dir_attr(enc(n, ROOT_INO), &root, at),
                });
            }
        } else {
            let (view, snapshot) = self.view(n)?;
            let core = self.core(view.slot)?;
            let this = if local == ROOT_INO {
                self.view_root(n, &view)?
            } else {
                snapshot.attr(&core, local)?
            };
            let parent = match snapshot.parent(local) {
                _ if local == ROOT_INO => self.snapshots_dir(view.slot)?,
                ROOT_INO => self.view_root(n, &view)?,
                p => snapshot.attr(&core, p)?,
            };
            let mut children = snapshot.children(&core, local)?;
            for d in &mut children {
                d.attr.ino = enc(n, d.attr.ino);
            }
            listing.push(DirEntry {
                name: b".".to_vec(),
                attr: Attr {
                    ino: enc(n, local),
                    ..this
                },
            });
            listing.push(DirEntry {
                name: b"..".to_vec(),
                attr: Attr {
                    ino: if local == ROOT_INO {
                        parent.ino
                    } else {
                        enc(n, parent.ino)
                    },
                    ..parent
                },
            });
            listing.extend(children);
        }
        let fh = self.snapshots.handle();
        self.listings.lock().insert(fh, Arc::new(listing));
        Ok(fh)
    }

    pub(super) fn snap_open(&self, ino: u64) -> FsResult<u64> {
        let (n, local) = dec(ino);
        if n == 0 || local == ROOT_INO {
            return Err(FsError::IsDir);
        }
        let (view, snapshot) = self.view(n)?;
        let file = snapshot::open_file(snapshot.file(local)?);
        let fh = self.snapshots.handle();
        self.snapshots.files.lock().insert(fh, (view.slot, file));
        Ok(fh)
    }

    pub(super) fn snap_read(&self, fh: u64, offset: u64, size: u32) -> FsResult<ReadBuf> {
        let (slot, file) = self
            .snapshots
            .files
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let core = self.core(slot)?;
        file.read(&core.io, &core.fetch_pool, offset, size)
    }

    pub(super) fn snap_release(&self, fh: u64) -> FsResult<()> {
        self.snapshots
            .files
            .lock()
            .remove(&fh)
            .map(|_| ())
            .ok_or(FsError::BadHandle)
    }

    /// Runs `f` on the view of `ino` and its local inode (a file, directory or symlink in it).
    fn in_view<T>(&self, ino: u64, f: impl FnOnce(&Snapshot, u64) -> FsResult<T>) -> FsResult<T> {
        match dec(ino) {
            (0, _) | (_, ROOT_INO) => Err(FsError::NoData),
            (n, local) => f(&self.view(n)?.1, local),
        }
    }

    pub(super) fn snap_readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.in_view(ino, |s, local| s.readlink(local))
            .map_err(|e| match e {
                FsError::NoData => FsError::Invalid,
                e => e,
            })
    }

    pub(super) fn snap_getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        self.in_view(ino, |s, local| s.getxattr(local, name))
    }

    pub(super) fn snap_listxattr(&self, ino: u64, uid: u32) -> FsResult<Vec<u8>> {
        match self.in_view(ino, |s, local| s.listxattr(local, uid)) {
            Err(FsError::NoData) => Ok(Vec::new()),
            r => r,
        }
    }

    /// The slot of a volume as `p2pfs-ctl` names it: its directory (`@team`, `team`,
    /// `home`) or its name; none (or `/`) is the network volume.
    fn slot_named(&self, volume: Option<&str>) -> Result<usize, SnapshotError> {
        let Some(v) = volume
            .map(|v| v.trim_matches('/'))
            .filter(|v| !v.is_empty())
        else {
            return Ok(0);
        };
        let dir = format!("@{}", v.trim_start_matches('@'));
        self.volume_dirs()
            .into_iter()
            .find(|(_, d)| d == dir.as_bytes())
            .map(|(slot, _)| slot)
            .or_else(|| {
                let slots = self.slots.read();
                let mut named = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.member && s.volume.name == v.trim_start_matches('@'));
                match (named.next(), named.next()) {
                    (Some((i, _)), None) => Some(i + 1),
                    _ => None,
                }
            })
            .ok_or_else(|| SnapshotError::UnknownVolume(v.to_string()))
    }

    /// The directory of `slot`'s volume in the mount, with its `.snapshots`: `/` or `/@NAME/`.
    fn snapshots_path(&self, slot: usize) -> String {
        if slot == 0 {
            return "/.snapshots".into();
        }
        let dir = self
            .volume_dirs()
            .into_iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, d)| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default();
        format!("/{dir}/.snapshots")
    }

    /// `p2pfs-ctl snapshot`: the view of `volume` at `at_ms` (default now), recorded under
    /// `name` when given. Returns its path relative to the mount's root.
    pub fn snapshot(
        &self,
        volume: Option<&str>,
        name: Option<&str>,
        at_ms: Option<u64>,
    ) -> Result<String, SnapshotError> {
        let slot = self.slot_named(volume)?;
        let volume_id = self.volume_id_of_slot(slot)?;
        let at = at_ms.unwrap_or_else(now_ms);
        self.check_time(&volume_id, at)?;
        let base = self.snapshots_path(slot);
        let Some(name) = name else {
            return Ok(format!("{base}/{}", snapshot::format_second(at)));
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.contains('/')
            && !name.contains('\0')
            && !name.starts_with('.')
            && parse_time(name).is_none();
        if !valid {
            return Err(SnapshotError::BadName(name.to_string()));
        }
        let mut state = self.snapshots.state.lock();
        let vol = volume_id.to_string();
        if state
            .named
            .iter()
            .any(|n| n.volume == vol && n.name == name)
        {
            return Err(SnapshotError::NameTaken(name.to_string()));
        }
        let mut named = state.named.clone();
        named.push(NamedSnapshot {
            name: name.to_string(),
            volume: vol,
            at_ms: at,
        });
        let path = &self.snapshots.named_path;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&named).expect("named snapshots serialize");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| SnapshotError::Record(path.clone(), e))?;
        state.named = named;
        Ok(format!("{base}/{name}"))
    }

    /// `p2pfs-ctl snapshots`: the named snapshots of the volumes in the mount, oldest first.
    pub fn named_snapshots(&self) -> Vec<SnapshotInfo> {
        let mut slots: HashMap<String, usize> = HashMap::new();
        slots.insert(self.network_id.to_string(), 0);
        for (i, s) in self.slots.read().iter().enumerate() {
            if s.member {
                slots.insert(s.volume.id.to_string(), i + 1);
            }
        }
        let named = self.snapshots.state.lock().named.clone();
        let mut out: Vec<SnapshotInfo> = named
            .into_iter()
            .filter_map(|n| {
                let slot = *slots.get(&n.volume)?;
                let base = self.snapshots_path(slot);
                let volume = self.volume_id_of_slot(slot).ok()?;
                Some(SnapshotInfo {
                    volume_dir: base
                        .strip_suffix("/.snapshots")
                        .filter(|d| !d.is_empty())
                        .unwrap_or("/")
                        .to_string(),
                    time: snapshot::format_second(n.at_ms),
                    path: format!("{base}/{}", n.name),
                    visible: self.check_time(&volume, n.at_ms).is_ok(),
                    name: n.name,
                })
            })
            .collect();
        out.sort_by(|a, b| a.time.cmp(&b.time).then(a.name.cmp(&b.name)));
        out
    }
}

#[cfg(test)]
mod tests;
