//! Earlier versions of a volume's files and directories (`p2pfs-ctl versions` and `restore`),
//! from the versions this node keeps ([`crate::namespace::history`]) and the current ones.
//!
//! A path is resolved over time: each component is the live child of that name if there is
//! one, else the entry that held that name in that directory most recently (a deleted file, a
//! file inside a deleted directory, a deleted directory). Payloads are opened with the volume's
//! keys, as the tree's loader does; a version that does not open is left out.
//!
//! A restore never destroys anything: it writes new versions. In place, a new version of the
//! same entry on top of its current one (or of its tombstone), with the old metadata and chunk
//! map (ctime now); the current version becomes history. With a destination, new entries (new
//! ids). A directory comes back with its subtree as it was at the chosen time. Everything goes
//! through the core's commit path (the mutate lock, one transaction, the tree, gossip), so
//! every mount shows the restored files at once.

use crate::util::calendar::{civil_from_days, days_from_civil};
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{FsCore, FsError};
use crate::namespace::{Entry, EntryId, EntryKind, EntryMeta, Seen, StoredAs, Timestamp, UserId};
use crate::util::hlc::Hlc;

/// How far before a directory's deletion the deletions of its contents still count as the same
/// `rm -rf` (the default time a deleted directory is restored at is just before the first).
pub const DELETION_BURST_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}: no such file or directory, now or in the kept versions")]
    NotFound(String),
    #[error("{path}: the name is now taken by another file; restore elsewhere with --to DEST")]
    NameTaken { path: String },
    #[error("{0}: no such version")]
    NoVersion(String),
    #[error("{0}: no kept version was current at that time")]
    NothingAt(String),
    #[error("{0}: no earlier version is kept")]
    NoEarlier(String),
    #[error("{0}: a live directory: say which state with --at TIME or --version N")]
    LiveDirectory(String),
    #[error("{0}: its directory is gone and no version of it is kept; restore with --to DEST")]
    NoParent(String),
    #[error("bad time {0:?}: give 2026-12-01T10:00[:05][Z] (UTC), or an age such as 10m, 2h, 3d")]
    BadTime(String),
    #[error("{0}: exists already")]
    DestTaken(String),
    #[error("--to must be in the same volume as the restored path")]
    OtherVolume,
    #[error("{0}")]
    Fs(#[from] FsError),
}

pub type HistoryResult<T> = Result<T, HistoryError>;

/// Names for node tags and user ids, given by the node (its membership view and ledger).
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub nodes: HashMap<u64, String>,
    pub users: HashMap<UserId, String>,
}

impl Labels {
    /// The node's name, or its tag in hex.
    pub fn node(&self, tag: u64) -> String {
        self.nodes
            .get(&tag)
            .cloned()
            .unwrap_or_else(|| format!("{tag:016x}"))
    }

    /// The user's name, or a short user id.
    pub fn user(&self, user: &UserId) -> String {
        self.users
            .get(user)
            .cloned()
            .unwrap_or_else(|| hex::encode(&user.0[..6]))
    }
}

/// One version as `p2pfs-ctl versions` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// 1 is the oldest kept.
    pub number: u32,
    /// When it was written (UTC, RFC 3339).
    pub time: String,
    /// Its clock (orders versions exactly; `--at` compares against it).
    pub hlc: u64,
    /// The node that wrote it.
    pub node: String,
    pub author: String,
    pub size: u64,
    /// `file`, `dir`, `symlink`, ...
    pub kind: String,
    /// Its name then (a version may predate a rename).
    pub name: String,
    /// The entry's current version.
    pub current: bool,
    /// When it stopped being current (None: it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_at: Option<String>,
    /// A version of a file that had this name before the current one replaced it (another
    /// entry): restored with `--to`, the name being the current file's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced_file: bool,
}

/// The deletion of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionInfo {
    pub time: String,
    pub hlc: u64,
    pub node: String,
    pub author: String,
}

/// Every kept version of the entry at a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionList {
    pub path: String,
    pub id: String,
    pub versions: Vec<VersionInfo>,
    /// Set when the entry is deleted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<DeletionInfo>,
}

/// Which version a restore brings back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// A deleted entry: its last version (a directory: as it was just before the deletion
    /// burst). A live file: the version before the current one.
    Latest,
    /// Version N of [`VersionList`] (1 = oldest).
    Number(u32),
    /// The version current at this clock (a directory: its subtree as it was then).
    At(Hlc),
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Entries given a new version (or created).
    pub entries: usize,
    /// The restored path, relative to the volume root.
    pub path: String,
    /// The time of the state restored (UTC, RFC 3339).
    pub time: String,
}

/// Where a path's last component is looked up: its parent's id and its name.
type Place = (EntryId, Vec<u8>);

/// One version this node holds, opened.
#[derive(Clone, Debug)]
struct Held {
    entry: Entry,
    meta: EntryMeta,
    /// The clock of the version that replaced it; `None`: current.
    until: Option<Hlc>,
    /// Since when it stood: its own clock, or earlier when its kept row absorbed intermediate
    /// versions (`namespace::history::COALESCE_MS`).
    from: Hlc,
}

impl Held {
    fn live_at(&self, t: Hlc) -> bool {
        self.from <= t && self.until.is_none_or(|u| t < u)
    }
}

/// Every version of one volume's entries this node holds, opened, with an index by name.
struct Archive {
    root: EntryId,
    /// Live versions of each entry, oldest first.
    versions: HashMap<EntryId, Vec<Held>>,
    /// The stored state of each entry (a tombstone when deleted; an expired tombstone when
    /// only that is left).
    stored: HashMap<EntryId, Entry>,
    /// `(parent, name)` -> entries with a version there.
    named: HashMap<(EntryId, Vec<u8>), HashSet<EntryId>>,
}

impl Archive {
    fn of(&self, id: &EntryId) -> &[Held] {
        self.versions.get(id).map_or(&[], |v| &v[..])
    }

    fn deleted(&self, id: &EntryId) -> Option<&Entry> {
        self.stored.get(id).filter(|e| e.deleted)
    }

    fn is_live(&self, id: &EntryId) -> bool {
        self.of(id).last().is_some_and(|h| h.until.is_none())
    }

    /// The version of `id` current at `t`.
    fn at(&self, id: &EntryId, t: Hlc) -> Option<&Held> {
        self.of(id).iter().rev().find(|h| h.live_at(t))
    }

    /// When `id` was deleted (its tombstone's clock, or the end of its last version).
    fn deleted_at(&self, id: &EntryId) -> Option<Hlc> {
        if self.is_live(id) {
            return None;
        }
        self.deleted(id)
            .map(|e| e.hlc)
            .or_else(|| self.of(id).last().and_then(|h| h.until))
    }

    /// The entry that held `name` in `parent` last: the one whose time under that name ended
    /// latest (or has not ended).
    fn last_holder(&self, parent: &EntryId, name: &[u8]) -> Option<EntryId> {
        let ids = self.named.get(&(*parent, name.to_vec()))?;
        ids.iter()
            .filter_map(|id| {
                let end = self
                    .of(id)
                    .iter()
                    .filter(|h| h.meta.parent == *parent && h.meta.name == name && !h.meta.unnamed)
                    .map(|h| h.until.map_or(u64::MAX, |u| u.0))
                    .max()?;
                Some((end, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// The state at `t` of the subtree under `root` (children first found by parent id), in
    /// an order where a directory comes before its contents; `root` itself is not included.
    fn subtree_at(&self, root: &EntryId, t: Hlc) -> Vec<(EntryId, EntryMeta)> {
        let mut children: HashMap<EntryId, Vec<(EntryId, &EntryMeta)>> = HashMap::new();
        for id in self.versions.keys() {
            if let Some(h) = self.at(id, t)
                && !h.meta.unnamed
                && *id != self.root
            {
                children
                    .entry(h.meta.parent)
                    .or_default()
                    .push((*id, &h.meta));
            }
        }
        let mut out = Vec::new();
        let mut queue = vec![*root];
        let mut seen = HashSet::from([*root]);
        while let Some(dir) = queue.pop() {
            for (id, meta) in children.remove(&dir).unwrap_or_default() {
                if !seen.insert(id) {
                    continue;
                }
                if meta.kind == EntryKind::Dir {
                    queue.push(id);
                }
                out.push((id, meta.clone()));
            }
        }
        out
    }

    /// The time a deleted directory is restored at by default: just before the earliest
    /// deletion among its contents deleted within [`DELETION_BURST_MS`] before its own
    /// deletion (an `rm -rf` deletes the contents first).
    fn before_burst(&self, dir: &EntryId, deleted: Hlc) -> Hlc {
        let window = Hlc(deleted.0.saturating_sub(DELETION_BURST_MS << 16));
        let mut dirs = HashSet::from([*dir]);
        let mut earliest = deleted;
        let mut counted = HashSet::new();
        loop {
            let mut grew = false;
            for (id, held) in &self.versions {
                if counted.contains(id) {
                    continue;
                }
                let Some(last) = held.last() else { continue };
                let Some(gone) = self.deleted_at(id) else {
                    continue;
                };
                if dirs.contains(&last.meta.parent) && gone >= window && gone <= deleted {
                    counted.insert(*id);
                    earliest = earliest.min(gone);
                    if last.meta.kind == EntryKind::Dir {
                        dirs.insert(*id);
                    }
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        Hlc(earliest.0.saturating_sub(1))
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDev => "char-device",
        EntryKind::BlockDev => "block-device",
        EntryKind::Link => "link",
    }
}

fn parts(path: &str) -> HistoryResult<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(FsError::Invalid.into());
    }
    Ok(parts)
}

impl FsCore {
    /// Opens every version of this volume this node holds (current states, expired tombstones
    /// and kept versions): one pass over the store's current states, one range of history.
    fn archive(&self) -> HistoryResult<Archive> {
        let volume = self.volume.read().clone();
        let vid = volume.id;
        let mut a = Archive {
            root: volume.root_id(),
            versions: HashMap::new(),
            stored: HashMap::new(),
            named: HashMap::new(),
        };
        let open = |e: &Entry| -> Option<EntryMeta> {
            if !volume.can_write(e) || crate::namespace::volume::VolumeRecord::is_record(e) {
                return None;
            }
            volume.open_entry(e).ok()
        };
        let add = |a: &mut Archive, entry: Entry, from: Hlc, until: Option<Hlc>| {
            let Some(meta) = open(&entry) else { return };
            if !meta.unnamed {
                a.named
                    .entry((meta.parent, meta.name.clone()))
                    .or_default()
                    .insert(entry.id);
            }
            a.versions.entry(entry.id).or_default().push(Held {
                entry,
                meta,
                until,
                from,
            });
        };
        let stored = self
            .namespace
            .placed_versions_in_where(|v| *v == vid, |_| true)
            .map_err(FsError::from)?;
        for (placed, e) in stored {
            match placed {
                StoredAs::Current => {
                    a.stored.insert(e.id, e.clone());
                    if !e.deleted {
                        let from = e.hlc;
                        add(&mut a, e, from, None);
                    }
                }
                StoredAs::Expired => {
                    a.stored.entry(e.id).or_insert(e);
                }
                StoredAs::Displaced => {}
            }
        }
        self.namespace
            .for_each_history(&vid, |row| {
                add(&mut a, row.entry, row.live_from, Some(row.replaced_at));
            })
            .map_err(FsError::from)?;
        for held in a.versions.values_mut() {
            held.sort_by_key(|h| (h.entry.hlc, h.until));
        }
        Ok(a)
    }

    /// The entry at `path` (relative to the volume root) now or at any time within retention.
    /// Also returns where the last component was looked up: its parent's id and its name.
    fn resolve_over_time(
        &self,
        a: &Archive,
        path: &str,
    ) -> HistoryResult<(EntryId, Option<Place>)> {
        let tree = self.tree.read();
        let mut id = a.root;
        let mut live = Some(super::ROOT_INO);
        let mut place = None;
        for part in parts(path)? {
            let name = part.as_bytes();
            place = Some((id, name.to_vec()));
            let now = live.and_then(|ino| tree.lookup(ino, name));
            match now.and_then(|ino| tree.get(ino)) {
                Some(node) => {
                    id = node.id;
                    live = now;
                }
                None => {
                    id = a
                        .last_holder(&id, name)
                        .ok_or_else(|| HistoryError::NotFound(path.to_string()))?;
                    live = None;
                }
            }
        }
        // A further name (hard link) stands for the entry it names.
        if let Some(last) = a.of(&id).last()
            && last.meta.kind == EntryKind::Link
            && let Some(target) = last.meta.target
        {
            id = target;
        }
        if a.of(&id).is_empty() && id != a.root {
            return Err(HistoryError::NotFound(path.to_string()));
        }
        Ok((id, place))
    }

    /// What `versions` lists for a path: every version of its entry, and, for a file, the
    /// versions under that name of the files it replaced (deleted since: a rename over the
    /// name, as `p2pfs-ctl put` and many editors save, puts a new entry there), oldest first.
    fn lineage<'a>(
        a: &'a Archive,
        id: &EntryId,
        place: &Option<Place>,
    ) -> Vec<(EntryId, &'a Held)> {
        let mut out: Vec<(EntryId, &Held)> = a.of(id).iter().map(|h| (*id, h)).collect();
        let is_dir = out
            .last()
            .is_some_and(|(_, h)| h.meta.kind == EntryKind::Dir);
        if let (Some((parent, name)), false) = (place, is_dir)
            && let Some(others) = a.named.get(&(*parent, name.clone()))
        {
            for other in others.iter().filter(|o| *o != id && !a.is_live(o)) {
                out.extend(
                    a.of(other)
                        .iter()
                        .filter(|h| {
                            h.meta.parent == *parent
                                && h.meta.name == *name
                                && h.meta.kind != EntryKind::Dir
                        })
                        .map(|h| (*other, h)),
                );
            }
        }
        out.sort_by_key(|(_, h)| (h.entry.hlc, h.until));
        out
    }

    /// Every kept version of the file or directory at `path` (which may be deleted, or inside
    /// a deleted directory), oldest first, with the current one.
    pub fn versions(&self, path: &str, labels: &Labels) -> HistoryResult<VersionList> {
        let a = self.archive()?;
        let (id, place) = self.resolve_over_time(&a, path)?;
        let versions = Self::lineage(&a, &id, &place)
            .into_iter()
            .enumerate()
            .map(|(i, (of, h))| VersionInfo {
                number: i as u32 + 1,
                time: format_utc(h.entry.hlc.millis()),
                hlc: h.entry.hlc.0,
                node: labels.node(h.entry.origin),
                author: labels.user(&h.entry.author),
                size: if h.meta.kind == EntryKind::File {
                    h.meta.size
                } else {
                    0
                },
                kind: kind_name(h.meta.kind).to_string(),
                name: String::from_utf8_lossy(&h.meta.name).into_owned(),
                current: h.until.is_none(),
                replaced_at: h.until.map(|u| format_utc(u.millis())),
                replaced_file: of != id,
            })
            .collect();
        let deleted = match (a.is_live(&id), a.deleted(&id)) {
            (false, Some(t)) => Some(DeletionInfo {
                time: format_utc(t.hlc.millis()),
                hlc: t.hlc.0,
                node: labels.node(t.origin),
                author: labels.user(&t.author),
            }),
            _ => None,
        };
        Ok(VersionList {
            path: path.to_string(),
            id: id.to_string(),
            versions,
            deleted,
        })
    }

    /// Restores the file or directory at `path` (see the module doc): in place, or as new
    /// entries at `to` (a path in this volume: a directory to restore into, or the new name).
    pub fn restore(&self, path: &str, pick: Pick, to: Option<&str>) -> HistoryResult<Restored> {
        let a = self.archive()?;
        let (id, place) = self.resolve_over_time(&a, path)?;
        let versions = a.of(&id);
        let last = versions
            .last()
            .ok_or_else(|| HistoryError::NotFound(path.to_string()))?;
        let is_dir = last.meta.kind == EntryKind::Dir;
        let (id, held, t) = match pick {
            Pick::Number(n) => {
                let lineage = Self::lineage(&a, &id, &place);
                let (of, h) = *lineage
                    .get((n as usize).wrapping_sub(1))
                    .ok_or_else(|| HistoryError::NoVersion(format!("{path} version {n}")))?;
                (of, h, self.end_of(&a, &of, h))
            }
            Pick::At(t) => {
                // The file that had this name then (the current one, or one it replaced),
                // else the entry's version then (under another name).
                let lineage = Self::lineage(&a, &id, &place);
                let under_name = place.as_ref().and_then(|(parent, name)| {
                    lineage.iter().rev().find(|(_, h)| {
                        h.live_at(t) && h.meta.parent == *parent && h.meta.name == *name
                    })
                });
                match under_name {
                    Some(&(of, h)) => (of, h, t),
                    None => (
                        id,
                        a.at(&id, t)
                            .ok_or_else(|| HistoryError::NothingAt(path.to_string()))?,
                        t,
                    ),
                }
            }
            Pick::Latest if !a.is_live(&id) => (id, last, self.end_of(&a, &id, last)),
            Pick::Latest if is_dir => return Err(HistoryError::LiveDirectory(path.to_string())),
            Pick::Latest => {
                let h = versions
                    .len()
                    .checked_sub(2)
                    .map(|i| &versions[i])
                    .ok_or_else(|| HistoryError::NoEarlier(path.to_string()))?;
                (id, h, self.end_of(&a, &id, h))
            }
        };
        let mut set = vec![(id, held.meta.clone())];
        if held.meta.kind == EntryKind::Dir {
            set.extend(a.subtree_at(&id, t));
        }
        let time = format_utc(t.millis());
        match to {
            None => self.restore_in_place(&a, path, set, t, time),
            Some(to) => self.restore_to(set, to, time),
        }
    }

    /// The last moment version `h` of `id` was current: now for the current one; just before
    /// the deletion burst for the last version of a deleted directory; else just before it
    /// was replaced.
    fn end_of(&self, a: &Archive, id: &EntryId, h: &Held) -> Hlc {
        match h.until {
            None => self.clock.now(),
            Some(u) if h.meta.kind == EntryKind::Dir && a.deleted_at(id) == Some(u) => {
                a.before_burst(id, u)
            }
            Some(u) => Hlc(u.0.saturating_sub(1)),
        }
    }

    fn restore_in_place(
        &self,
        a: &Archive,
        path: &str,
        mut set: Vec<(EntryId, EntryMeta)>,
        t: Hlc,
        time: String,
    ) -> HistoryResult<Restored> {
        let _g = self.mutate.lock();
        let now = Timestamp::now();
        let tree = self.tree.read();
        // Deleted ancestors come back too, as they were at `t` (else as they were last).
        let mut ancestors = Vec::new();
        let mut parent = set[0].1.parent;
        while set[0].0 != a.root
            && tree
                .ino_if_known(&parent)
                .and_then(|i| tree.get(i))
                .is_none()
        {
            let h = a
                .at(&parent, t)
                .or_else(|| a.of(&parent).last())
                .ok_or_else(|| HistoryError::NoParent(path.to_string()))?;
            if ancestors.iter().any(|(id, _)| *id == parent) || parent == a.root {
                return Err(HistoryError::NoParent(path.to_string()));
            }
            ancestors.push((parent, h.meta.clone()));
            parent = h.meta.parent;
        }
        ancestors.reverse();
        ancestors.append(&mut set);
        let mut changes = Vec::new();
        for (id, meta) in ancestors {
            let current = tree.ino_if_known(&id).and_then(|i| tree.get(i));
            if let Some(node) = current
                && node.meta == meta
            {
                continue;
            }
            // The name must be free, or held by this very entry.
            if !meta.unnamed
                && let Some(dir) = tree.ino_if_known(&meta.parent)
                && let Some(holder) = tree.claim(dir, &meta.name)
                && tree.get(holder).is_some_and(|n| n.id != id)
            {
                return Err(HistoryError::NameTaken {
                    path: path.to_string(),
                });
            }
            // Written on the state stored now (read under the lock: a version that arrived
            // since the archive was read is replaced, not raced), else the newest known.
            let key = crate::namespace::EntryKey {
                id,
                volume: self.volume_id(),
            };
            let base: Seen = match self.namespace.get(&key).map_err(FsError::from)? {
                Some(stored) => stored.seen,
                None => a
                    .stored
                    .get(&id)
                    .map(|e| e.seen.clone())
                    .or_else(|| a.of(&id).last().map(|h| h.entry.seen.clone()))
                    .unwrap_or_default(),
            };
            changes.push((id, Some(EntryMeta { ctime: now, ..meta }), Some(base)));
        }
        drop(tree);
        let entries = changes.len();
        if entries > 0 {
            self.persist_on(changes)?;
        }
        Ok(Restored {
            entries,
            path: path.trim_matches('/').to_string(),
            time,
        })
    }

    fn restore_to(
        &self,
        set: Vec<(EntryId, EntryMeta)>,
        to: &str,
        time: String,
    ) -> HistoryResult<Restored> {
        let _g = self.mutate.lock();
        let now = Timestamp::now();
        let tree = self.tree.read();
        // DEST: an existing directory to restore into under the old name, or the new path.
        let mut ino = super::ROOT_INO;
        let to_parts = parts(to)?;
        let mut walked = 0;
        for part in &to_parts {
            match tree.lookup(ino, part.as_bytes()) {
                Some(i) => {
                    ino = i;
                    walked += 1;
                }
                None => break,
            }
        }
        let (dir_ino, name, shown) = match to_parts.len() - walked {
            0 if tree.get(ino).is_some_and(|n| n.meta.kind == EntryKind::Dir) => {
                let name = set[0].1.name.clone();
                let shown = format!(
                    "{}/{}",
                    to.trim_matches('/'),
                    String::from_utf8_lossy(&name)
                );
                (ino, name, shown.trim_start_matches('/').to_string())
            }
            0 => return Err(HistoryError::DestTaken(to.to_string())),
            1 => (
                ino,
                to_parts[walked].as_bytes().to_vec(),
                to.trim_matches('/').to_string(),
            ),
            _ => return Err(FsError::NotFound.into()),
        };
        let dir = tree.get(dir_ino).ok_or(FsError::NotFound)?;
        if dir.meta.kind != EntryKind::Dir {
            return Err(FsError::NotDir.into());
        }
        if tree.lookup(dir_ino, &name).is_some() {
            return Err(HistoryError::DestTaken(shown));
        }
        let new_ids: HashMap<EntryId, EntryId> =
            set.iter().map(|(id, _)| (*id, EntryId::random())).collect();
        let mut changes = Vec::new();
        for (i, (id, meta)) in set.into_iter().enumerate() {
            let mut meta = EntryMeta { ctime: now, ..meta };
            if i == 0 {
                meta.parent = dir.id;
                meta.name = name.clone();
                // Restored under a name of its own (an inode whose own name was gone while
                // links named it gets this one).
                meta.unnamed = false;
            } else if let Some(p) = new_ids.get(&meta.parent) {
                meta.parent = *p;
            }
            if let Some(target) = meta.target {
                match new_ids.get(&target) {
                    Some(t) => meta.target = Some(*t),
                    // A further name of a file outside what is restored: left out.
                    None => continue,
                }
            }
            changes.push((new_ids[&id], Some(meta), Some(Seen::new())));
        }
        changes.push((
            dir.id,
            Some(EntryMeta {
                mtime: now,
                ctime: now,
                ..dir.meta.clone()
            }),
            None,
        ));
        drop(tree);
        let entries = changes.len() - 1;
        self.persist_on(changes)?;
        Ok(Restored {
            entries,
            path: shown,
            time,
        })
    }
}

/// `ms` since the epoch as UTC RFC 3339, to the second (`2026-12-01T10:00:05Z`).
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a time as `restore --at` takes it: `2026-12-01T10:00`, `...T10:00:05`, a `Z` or
/// fractional seconds optional, `T` or a space (all UTC); or an age: `90s`, `10m`, `2h`, `3d`
/// (an `ago` after it allowed). Returns the clock that includes everything written during
/// that millisecond.
pub fn parse_time(s: &str, now_ms: u64) -> HistoryResult<Hlc> {
    let bad = || HistoryError::BadTime(s.to_string());
    let t = s.trim();
    let t = t.strip_suffix("ago").map(str::trim_end).unwrap_or(t);
    let ms = if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c))
        && let Ok(n) = t[..t.len() - 1].trim().parse::<f64>()
    {
        let per = match unit {
            's' => 1_000.0,
            'm' => 60_000.0,
            'h' => 3_600_000.0,
            'd' => 86_400_000.0,
            _ => 7.0 * 86_400_000.0,
        };
        if !(n.is_finite() && n >= 0.0) {
            return Err(bad());
        }
        now_ms.saturating_sub((n * per) as u64)
    } else {
        let t = t.strip_suffix('Z').unwrap_or(t);
        let (date, clock) = t.split_once(['T', ' ']).unwrap_or((t, "00:00"));
        let num = |x: &str| x.parse::<u64>().map_err(|_| bad());
        let ymd: Vec<&str> = date.split('-').collect();
        let hms: Vec<&str> = clock.split(':').collect();
        if ymd.len() != 3 || !(2..=3).contains(&hms.len()) {
            return Err(bad());
        }
        let (y, mo, d) = (num(ymd[0])?, num(ymd[1])?, num(ymd[2])?);
        let (h, mi) = (num(hms[0])?, num(hms[1])?);
        let (sec, frac_ms) = match hms.get(2) {
            None => (0, 0),
            Some(s) => {
                let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
                let frac_ms = if frac.is_empty() {
                    0
                } else {
                    let f: String = frac.chars().chain("000".chars()).take(3).collect();
                    num(&f)?
                };
                (num(whole)?, frac_ms)
            }
        };
        if !(1970..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || !(1..=31).contains(&d)
            || h > 23
            || mi > 59
            || sec > 60
        {
            return Err(bad());
        }
        let days = days_from_civil(y as i64, mo as u32, d as u32);
        (days as u64 * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + frac_ms
    };
    Ok(Hlc((ms << 16) | 0xffff))
}

#[cfg(test)]
mod tests;
