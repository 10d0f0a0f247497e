//! Extended attributes of an entry (`getxattr`, `listxattr`, `setxattr`, `removexattr`).
//!
//! They live in the inode entry's sealed payload (`EntryMeta::xattrs`, sorted by full name), so
//! they are encrypted, replicated and merged with the entry: a set or remove writes a new
//! version with ctime = now. Concurrent changes of one entry on two nodes are last writer wins
//! for the whole entry, as for `chmod`.
//!
//! Namespaces as on ext4 mounted `noacl`: `user.`, `trusted.` and `security.` are stored;
//! `system.*` (POSIX ACLs among them) and unknown prefixes answer EOPNOTSUPP. The kernel does
//! the permission checks before asking (`user.` only on files and directories, `trusted.`
//! needs CAP_SYS_ADMIN, `security.capability` CAP_SETFCAP); it passes no capabilities down,
//! so `listxattr` hides `trusted.` names from every caller but uid 0.

use super::{FsCore, FsError, FsResult, XattrSet};
use crate::namespace::entry::{
    MAX_XATTR_NAME_LEN, XATTR_BUDGET as BUDGET, XATTR_NAMESPACES as STORED, Xattr,
    xattr_cost as cost,
};
use crate::namespace::{EntryKind, EntryMeta, Timestamp};

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;
/// File capabilities, removed by a write as the set-user-id bit is.
const CAPABILITY: &[u8] = b"security.capability";

/// Checks that `name` is in a stored namespace and names something in it.
fn check_name(name: &[u8]) -> FsResult<()> {
    match STORED.iter().find(|(p, _)| name.starts_with(p)) {
        // `user.` alone, as the VFS answers for a handler's bare prefix.
        Some((p, _)) if name.len() == p.len() => Err(FsError::Invalid),
        Some(_) if name.contains(&0) => Err(FsError::Invalid),
        // The VFS refuses longer names before asking; a stored entry could not hold one.
        Some(_) if name.len() > MAX_XATTR_NAME_LEN => Err(FsError::Range),
        Some(_) => Ok(()),
        None => Err(FsError::NotSupported),
    }
}

fn find(meta: &EntryMeta, name: &[u8]) -> Result<usize, usize> {
    meta.xattrs
        .binary_search_by(|x| x.name.as_slice().cmp(name))
}

impl FsCore {
    /// The value of attribute `name` (full name, `user.x`) of `ino`. A tree read only: the
    /// kernel may ask `security.capability` before writes.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(name)?;
        let tree = self.tree.read();
        let node = tree.get(tree.resolve(ino)).ok_or(FsError::NotFound)?;
        match find(&node.meta, name) {
            Ok(i) => Ok(node.meta.xattrs[i].value.clone()),
            Err(_) => Err(FsError::NoData),
        }
    }

    /// The names of `ino`'s attributes `uid` may see, each followed by a NUL byte.
    pub fn listxattr(&self, ino: u64, uid: u32) -> FsResult<Vec<u8>> {
        let tree = self.tree.read();
        let node = tree.get(tree.resolve(ino)).ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        for Xattr { name, .. } in &node.meta.xattrs {
            let visible = STORED
                .iter()
                .find(|(p, _)| name.starts_with(p))
                .is_some_and(|&(_, root_only)| !root_only || uid == 0);
            if visible {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Sets attribute `name` of `ino` to `value`, as `how` allows.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], how: XattrSet) -> FsResult<()> {
        let _change = self.change()?;
        check_name(name)?;
        self.change_xattrs(ino, |meta| {
            match (find(meta, name), how) {
                (Ok(_), XattrSet::Create) => return Err(FsError::Exists),
                (Err(_), XattrSet::Replace) => return Err(FsError::NoData),
                (Ok(i), _) => meta.xattrs[i].value = value.to_vec(),
                (Err(i), _) => meta.xattrs.insert(
                    i,
                    Xattr {
                        name: name.to_vec(),
                        value: value.to_vec(),
                    },
                ),
            }
            let used: usize = meta.xattrs.iter().map(|x| cost(&x.name, &x.value)).sum();
            if used > BUDGET {
                return Err(FsError::NoSpace);
            }
            Ok(())
        })
    }

    /// Removes attribute `name` of `ino`.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        let _change = self.change()?;
        check_name(name)?;
        self.change_xattrs(ino, |meta| {
            let i = find(meta, name).map_err(|_| FsError::NoData)?;
            meta.xattrs.remove(i);
            Ok(())
        })
    }

    /// What ext4 does to a non-directory on a write or truncate by a caller without
    /// CAP_FSETID (`privileged` false) and on any chown, which the kernel leaves to the
    /// filesystem under FUSE_HANDLE_KILLPRIV_V2: clears set-user-id; set-group-id when the
    /// group may execute, or (unprivileged) when the caller is not in the file's group, known
    /// here only by its primary `gid`; and the file capabilities (`security.capability`).
    /// Asked on every unprivileged write, so a tree read when there is nothing to clear.
    pub fn kill_privileges(&self, ino: u64, privileged: bool, gid: u32) -> FsResult<()> {
        let _change = self.change()?;
        let killed = |meta: &EntryMeta| -> Option<EntryMeta> {
            if meta.kind == EntryKind::Dir {
                return None;
            }
            let mut mode = meta.mode & !S_ISUID;
            if mode & S_IXGRP != 0 || (!privileged && gid != meta.gid) {
                mode &= !S_ISGID;
            }
            let cap = find(meta, CAPABILITY);
            if mode == meta.mode && cap.is_err() {
                return None;
            }
            let mut out = meta.clone();
            out.mode = mode;
            if let Ok(i) = cap {
                out.xattrs.remove(i);
            }
            Some(out)
        };
        // A file unlinked while open has no entry left to change; its writes go on.
        let pending = |tree: &super::tree::Tree| {
            let node = tree.get(tree.resolve(ino))?;
            Some((node.id, killed(&node.meta)?))
        };
        if pending(&self.tree.read()).is_none() {
            return Ok(());
        }
        let _g = self.mutate.lock();
        let Some((id, meta)) = pending(&self.tree.read()) else {
            return Ok(());
        };
        let meta = EntryMeta {
            ctime: Timestamp::now(),
            ..meta
        };
        self.persist(vec![(id, Some(meta))])?;
        Ok(())
    }

    /// Applies `change` to the attributes of `ino` and commits the result as a new version
    /// with ctime = now (nothing is written when `change` fails).
    fn change_xattrs(
        &self,
        ino: u64,
        change: impl FnOnce(&mut EntryMeta) -> FsResult<()>,
    ) -> FsResult<()> {
        let _g = self.mutate.lock();
        let (id, mut meta) = {
            let tree = self.tree.read();
            let node = tree.get(tree.resolve(ino)).ok_or(FsError::NotFound)?;
            (node.id, node.meta.clone())
        };
        change(&mut meta)?;
        meta.ctime = Timestamp::now();
        self.persist(vec![(id, Some(meta))])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tests::{ME, fixture, write_file};
    use crate::fs::{ROOT_INO, SetAttr};

    #[test]
    fn set_get_list_remove_round_trip() {
        let f = fixture(4096);
        let c = &f.core;
        let ino = write_file(c, ROOT_INO, "f", b"data");
        let before = c.getattr(ino).unwrap().ctime;
        c.setxattr(ino, b"user.b", b"2", XattrSet::Any).unwrap();
        c.setxattr(ino, b"user.a", b"1", XattrSet::Create).unwrap();
        c.setxattr(ino, b"trusted.t", b"x", XattrSet::Any).unwrap();
        assert_eq!(c.getxattr(ino, b"user.a").unwrap(), b"1");
        assert!(c.getattr(ino).unwrap().ctime > before);
        assert_eq!(c.listxattr(ino, 0).unwrap(), b"trusted.t\0user.a\0user.b\0");
        assert_eq!(c.listxattr(ino, 1000).unwrap(), b"user.a\0user.b\0");
        c.setxattr(ino, b"user.a", b"one", XattrSet::Replace)
            .unwrap();
        assert_eq!(c.getxattr(ino, b"user.a").unwrap(), b"one");
        c.removexattr(ino, b"user.a").unwrap();
        assert_eq!(c.getxattr(ino, b"user.a"), Err(FsError::NoData));
        assert_eq!(c.removexattr(ino, b"user.a"), Err(FsError::NoData));
        // The file's content is untouched by attribute versions.
        let fh = c.open(ino, false).unwrap();
        assert_eq!(&c.read(fh, 0, 100).unwrap()[..], b"data");
        c.release(fh).unwrap();
    }

    #[test]
    fn flags_namespaces_and_budget() {
        let f = fixture(4096);
        let c = &f.core;
        let dir = c.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
        assert_eq!(
            c.setxattr(dir, b"user.x", b"", XattrSet::Replace),
            Err(FsError::NoData)
        );
        c.setxattr(dir, b"user.x", b"", XattrSet::Create).unwrap();
        assert_eq!(c.getxattr(dir, b"user.x").unwrap(), b"");
        assert_eq!(
            c.setxattr(dir, b"user.x", b"v", XattrSet::Create),
            Err(FsError::Exists)
        );
        for name in [&b"system.posix_acl_access"[..], b"system.x", b"other.x"] {
            assert_eq!(
                c.setxattr(dir, name, b"v", XattrSet::Any),
                Err(FsError::NotSupported)
            );
            assert_eq!(c.getxattr(dir, name), Err(FsError::NotSupported));
        }
        assert_eq!(
            c.setxattr(dir, b"user.", b"v", XattrSet::Any),
            Err(FsError::Invalid)
        );
        c.setxattr(dir, b"user.big", &[7; 3000], XattrSet::Any)
            .unwrap();
        assert_eq!(
            c.setxattr(dir, b"user.big2", &[7; 3000], XattrSet::Any),
            Err(FsError::NoSpace)
        );
        // A refused change leaves the attributes as they were.
        assert_eq!(c.listxattr(dir, 0).unwrap(), b"user.big\0user.x\0");
        c.setxattr(dir, b"user.big", &[7; 1000], XattrSet::Any)
            .unwrap();
        c.setxattr(dir, b"user.big2", &[7; 2000], XattrSet::Any)
            .unwrap();
    }

    #[test]
    fn privileges_are_killed_once_and_not_on_directories_or_unlinked_files() {
        let f = fixture(4096);
        let c = &f.core;
        let ino = write_file(c, ROOT_INO, "f", b"data");
        let set = |mode| {
            c.setattr(
                ino,
                SetAttr {
                    mode: Some(mode),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        set(0o6755);
        c.setxattr(ino, CAPABILITY, b"cap", XattrSet::Any).unwrap();
        c.setxattr(ino, b"user.keep", b"k", XattrSet::Any).unwrap();
        c.kill_privileges(ino, false, ME.gid).unwrap();
        assert_eq!(c.getattr(ino).unwrap().perm, 0o755);
        assert_eq!(c.listxattr(ino, 0).unwrap(), b"user.keep\0");
        // Set-group-id without group execute: kept for a member of the group or root.
        set(0o2745);
        let file_gid = c.getattr(ino).unwrap().gid;
        c.kill_privileges(ino, false, file_gid).unwrap();
        c.kill_privileges(ino, true, file_gid + 1).unwrap();
        assert_eq!(c.getattr(ino).unwrap().perm, 0o2745);
        c.kill_privileges(ino, false, file_gid + 1).unwrap();
        assert_eq!(c.getattr(ino).unwrap().perm, 0o745);
        let dir = c.mkdir(ROOT_INO, b"d", 0o2775, ME).unwrap().ino;
        c.kill_privileges(dir, false, 1).unwrap();
        assert_eq!(c.getattr(dir).unwrap().perm, 0o2775);
        let fh = c.open(ino, true).unwrap();
        c.unlink(ROOT_INO, b"f").unwrap();
        c.kill_privileges(ino, false, 1).unwrap();
        c.release(fh).unwrap();
    }

    #[test]
    fn special_files_keep_kind_and_rdev() {
        let f = fixture(4096);
        let c = &f.core;
        let rdev = (0x1234 << 20) | 0xabcde; // beyond 8-bit minors
        let chr = c
            .mknod(ROOT_INO, b"c", libc::S_IFCHR | 0o600, rdev, ME)
            .unwrap();
        assert_eq!(
            (chr.kind, chr.rdev, chr.size),
            (EntryKind::CharDev, rdev, 0)
        );
        let blk = c
            .mknod(ROOT_INO, b"b", libc::S_IFBLK | 0o600, 7, ME)
            .unwrap();
        assert_eq!((blk.kind, blk.rdev), (EntryKind::BlockDev, 7));
        let fifo = c
            .mknod(ROOT_INO, b"p", libc::S_IFIFO | 0o640, 9, ME)
            .unwrap();
        assert_eq!(
            (fifo.kind, fifo.rdev, fifo.perm),
            (EntryKind::Fifo, 0, 0o640)
        );
        let sock = c
            .mknod(ROOT_INO, b"s", libc::S_IFSOCK | 0o755, 0, ME)
            .unwrap();
        assert_eq!(sock.kind, EntryKind::Socket);
        assert_eq!(
            c.mknod(ROOT_INO, b"d", libc::S_IFDIR | 0o755, 0, ME),
            Err(FsError::Invalid)
        );
        assert_eq!(c.open(fifo.ino, false), Err(FsError::Invalid));
        let looked = c.lookup(ROOT_INO, b"c").unwrap();
        assert_eq!(
            (looked.kind, looked.rdev, looked.uid),
            (EntryKind::CharDev, rdev, ME.uid)
        );
    }
}
