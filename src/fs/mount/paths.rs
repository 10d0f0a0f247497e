//! Paths into the mount for `p2pfs-ctl` (ls, put, get, rm, health): resolving, listing and
//! removing by path, and the chunks of files.

use std::collections::HashMap;

use super::{Mount, VOLUME_PREFIX};
use crate::block::ChunkId;
use crate::fs::{Attr, DirEntry, FsError, FsResult, ROOT_INO};

impl Mount {
    /// The core serving `path` (relative to the mount, `/`-separated; a first component
    /// `@NAME` names a volume), the path inside that volume, and the volume's directory in the
    /// mount (`""` for the network volume).
    pub(super) fn route_path<'p>(
        &self,
        path: &'p str,
    ) -> FsResult<(std::sync::Arc<crate::fs::FsCore>, &'p str, &'p str)> {
        let trimmed = path.trim_start_matches('/');
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if first.as_bytes().first() == Some(&VOLUME_PREFIX) {
            let slot = self
                .volume_dirs()
                .into_iter()
                .find(|(_, dir)| dir == first.as_bytes())
                .map(|(slot, _)| slot)
                .ok_or(FsError::NotFound)?;
            return Ok((self.core(slot)?, rest, first));
        }
        Ok((self.network.clone(), trimmed, ""))
    }

    /// The chunk ids of the file at `path` (relative to the mount, `/`-separated; a first
    /// component `@NAME` names a volume).
    pub fn file_chunks(&self, path: &str) -> FsResult<Vec<ChunkId>> {
        let (core, inner, _) = self.route_path(path)?;
        core.file_chunks(inner)
    }

    /// Purges the entry at `path` (live, or deleted within retention) and everything under it:
    /// every version of them, on every node (see `fs::purge`). The root and volume
    /// directories themselves cannot be purged.
    pub fn purge(&self, path: &str) -> FsResult<crate::fs::PurgeReport> {
        // A live path is removed first, as `rm -r` would (a file that keeps a name outside it
        // loses only these names), then purged with what it held before.
        if path.split('/').any(|p| !p.is_empty() && p != ".") && self.resolve(path).is_ok() {
            self.remove(path, true)?;
        }
        let (core, inner, _) = self.route_path(path)?;
        core.purge_path(inner)
    }

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
}
