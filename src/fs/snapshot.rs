//! A volume as it was at a past time, read-only: what `.snapshots/<TIME>` in the mount shows.
//!
//! A [`Snapshot`] is a tree built from every entry's version current at that time
//! ([`NamespaceStore::versions_at`]: live versions and the history rows this node keeps), each
//! opened with the volume's keys and checked against its writers as a load does. Nothing in it
//! is ever written; file contents are read through the volume's own `ChunkIo` (the same cache,
//! verified and decrypted as any read), so a snapshot costs only its tree.
//!
//! Times are UTC, written `2026-12-01T10:00`, `2026-12-01T10:00:05`, with an optional `Z`. The
//! view at T is the volume just before T: every version stamped earlier, none stamped at or
//! after T. A node shows the versions it kept: a version it never held (written and replaced
//! while it was away) is not in its views.

use crate::util::calendar::{civil_from_days, days_from_civil};
use std::sync::Arc;

use super::tree::{Node, Tree};
use super::{Attr, DirEntry, FsCore, FsError, FsResult, ROOT_INO};
use crate::namespace::entry::XATTR_NAMESPACES;
use crate::namespace::volume::VolumeRecord;
use crate::namespace::{EntryId, EntryKind, NamespaceStore, Timestamp, Volume};
use crate::util::hlc::Hlc;

/// The clock bound of the view at `at_ms`: everything stamped before that millisecond.
pub fn view_hlc(at_ms: u64) -> Hlc {
    Hlc((at_ms << 16).saturating_sub(1))
}

/// A volume's tree at one time.
pub struct Snapshot {
    pub at_ms: u64,
    tree: Tree,
    /// Entry ids in the order their inode numbers were given: a rebuild of the same view
    /// hands them out in this order first, so the inode numbers the kernel holds keep naming
    /// the same files.
    order: Vec<EntryId>,
    /// Versions refused (by a non-writer, or not opening with the volume's keys).
    pub rejected: usize,
}

impl Snapshot {
    /// Builds the view of `volume` at `at_ms` from the store. `seed`: the [`order`] of an
    /// earlier build of the same view, whose inode numbers are kept.
    ///
    /// [`order`]: Snapshot::order
    pub fn build(
        store: &NamespaceStore,
        volume: &Volume,
        at_ms: u64,
        seed: &[EntryId],
    ) -> FsResult<Self> {
        let mut entries = store.versions_at(&volume.id, view_hlc(at_ms))?;
        entries.sort_unstable_by_key(|e| e.id);
        let mut tree = Tree::new(volume.root_id());
        for id in seed {
            tree.ino_of(*id);
        }
        let mut order = seed.to_vec();
        let mut rejected = 0;
        for entry in &entries {
            if VolumeRecord::is_record(entry) {
                continue;
            }
            if !volume.can_write(entry) {
                rejected += 1;
                continue;
            }
            match volume.open_entry(entry) {
                Ok(meta) => {
                    if tree.ino_if_known(&entry.id).is_none() {
                        order.push(entry.id);
                    }
                    tree.upsert(entry, meta);
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.id, error = %e, "version refused in a snapshot");
                    rejected += 1;
                }
            }
        }
        Ok(Self {
            at_ms,
            tree,
            order,
            rejected,
        })
    }

    pub fn order(&self) -> &[EntryId] {
        &self.order
    }

    fn node(&self, ino: u64) -> FsResult<&Node> {
        self.tree.get(ino).ok_or(FsError::NotFound)
    }

    /// The attributes of `ino` in the view (`core` gives the volume's block size).
    pub fn attr(&self, core: &FsCore, ino: u64) -> FsResult<Attr> {
        Ok(core.attr_of(ino, self.node(ino)?))
    }

    /// The inode `name` names in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<u64> {
        if parent != ROOT_INO && self.node(parent)?.meta.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        self.tree.lookup(parent, name).ok_or(FsError::NotFound)
    }

    /// The children of directory `dir` with their attributes (without `.` and `..`).
    pub fn children(&self, core: &FsCore, dir: u64) -> FsResult<Vec<DirEntry>> {
        if dir != ROOT_INO && self.node(dir)?.meta.kind != EntryKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(self
            .tree
            .children(dir)
            .into_iter()
            .filter_map(|(name, ino)| {
                Some(DirEntry {
                    name,
                    attr: core.attr_of(ino, self.tree.get(ino)?),
                })
            })
            .collect())
    }

    /// The parent directory of `ino` (the view's root for the root).
    pub fn parent(&self, ino: u64) -> u64 {
        self.tree
            .get(ino)
            .map_or(ROOT_INO, |n| self.tree.parent_ino(n))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let node = self.node(ino)?;
        if node.meta.kind != EntryKind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(node.meta.symlink_target.clone())
    }

    /// The regular file `ino` (what a read opens).
    pub fn file(&self, ino: u64) -> FsResult<&Node> {
        let node = self.node(ino)?;
        match node.meta.kind {
            EntryKind::File => Ok(node),
            EntryKind::Dir => Err(FsError::IsDir),
            _ => Err(FsError::Invalid),
        }
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if !XATTR_NAMESPACES.iter().any(|(p, _)| name.starts_with(p)) {
            return Err(FsError::NotSupported);
        }
        let node = self.node(self.tree.resolve(ino))?;
        node.meta
            .xattrs
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.clone())
            .ok_or(FsError::NoData)
    }

    /// The attribute names of `ino` that `uid` may see, each followed by a NUL byte (as
    /// `FsCore::listxattr`: `trusted.` only for uid 0).
    pub fn listxattr(&self, ino: u64, uid: u32) -> FsResult<Vec<u8>> {
        let node = self.node(self.tree.resolve(ino))?;
        let mut out = Vec::new();
        for x in &node.meta.xattrs {
            let visible = XATTR_NAMESPACES
                .iter()
                .find(|(p, _)| x.name.starts_with(p))
                .is_some_and(|&(_, root_only)| !root_only || uid == 0);
            if visible {
                out.extend_from_slice(&x.name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// An open file of a snapshot: its version as the view holds it.
pub fn open_file(node: &Node) -> Arc<super::file::OpenFile> {
    super::file::OpenFile::new(node.id, &node.meta, node.seen.clone())
}

/// The attributes of a view's own directory (`.snapshots/<TIME>`) and of `.snapshots`: a
/// read-only directory, owned as the volume's root is, stamped with the view's time.
pub fn dir_attr(ino: u64, like: &Attr, at_ms: u64) -> Attr {
    let t = Timestamp {
        secs: (at_ms / 1000) as i64,
        nanos: ((at_ms % 1000) * 1_000_000) as u32,
    };
    Attr {
        ino,
        kind: EntryKind::Dir,
        size: 4096,
        blocks: 8,
        perm: like.perm & 0o555,
        nlink: 2,
        uid: like.uid,
        gid: like.gid,
        atime: t,
        mtime: t,
        ctime: t,
        blksize: like.blksize,
        rdev: 0,
    }
}

/// Milliseconds since the epoch of a view's name: `YYYY-MM-DDTHH:MM`, with optional `:SS`
/// and an optional `Z`, in UTC. `None` for anything else.
pub fn parse_time(name: &str) -> Option<u64> {
    let name = name.strip_suffix('Z').unwrap_or(name);
    let (date, time) = name.split_once('T')?;
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let mut t = time.split(':');
    let (h, mi) = (num(t.next()?, 2)?, num(t.next()?, 2)?);
    let s = match t.next() {
        Some(s) => num(s, 2)?,
        None => 0,
    };
    if d.next().is_some() || t.next().is_some() || y < 1970 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || day == 0
        || day > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, day);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// `YYYY-MM-DDTHH:MMZ` of a time (its minute), the name `.snapshots` lists it under.
pub fn format_minute(ms: u64) -> String {
    let s = format_second(ms);
    format!("{}Z", &s[..16])
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time (its second).
pub fn format_second(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_utc_and_round_trip() {
        assert_eq!(parse_time("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        // 2026-12-01T10:00:05Z, from `date -u -d 2026-12-01T10:00:05 +%s`.
        assert_eq!(parse_time("2026-12-01T10:00:05"), Some(1_796_119_205_000));
        assert_eq!(parse_time("2026-12-01T10:00Z"), Some(1_796_119_200_000));
        assert_eq!(parse_time("2024-02-29T23:59:59"), Some(1_709_251_199_000));
        for ms in [0, 1_796_119_205_000, 1_709_251_199_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&format_second(ms)), Some(ms));
            assert_eq!(parse_time(&format_minute(ms)), Some(ms / 60_000 * 60_000));
        }
        assert_eq!(format_minute(1_796_119_205_000), "2026-12-01T10:00Z");
        for bad in [
            "",
            "latest",
            "2026-12-01",
            "2026-12-01T10",
            "2026-12-01T10:00:05:01",
            "2026-13-01T10:00",
            "2026-02-29T10:00",
            "2026-12-01T24:00",
            "2026-12-01T10:60",
            "2026-12-01 10:00",
            "2026-1-01T10:00",
            "+026-12-01T10:00",
            "1969-12-31T23:59",
            "2026-12-01T10:00ZZ",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
