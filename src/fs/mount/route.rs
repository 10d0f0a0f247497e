//! Kernel requests on the mount, each routed to the volume that serves it.
//!
//! Inode and handle numbers carry their volume in the top bits: `slot << 40 | local`, slot 0
//! being the network volume (so its numbers are the core's own).

use std::sync::Arc;

use super::snapshots::is_snapshot;
use super::{Mount, VOLUME_PREFIX};
use crate::fs::{
    Attr, Caller, DirEntry, FsCore, FsError, FsResult, ROOT_INO, ReadBuf, RenameMode, SetAttr,
    StatFs, XattrSet,
};

const SLOT_SHIFT: u32 = 40;
const LOCAL_MASK: u64 = (1 << SLOT_SHIFT) - 1;

fn enc(slot: usize, local: u64) -> u64 {
    ((slot as u64) << SLOT_SHIFT) | local
}

fn dec(ino: u64) -> (usize, u64) {
    ((ino >> SLOT_SHIFT) as usize, ino & LOCAL_MASK)
}

pub(super) fn out(slot: usize, mut attr: Attr) -> Attr {
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

impl Mount {
    fn route(&self, ino: u64) -> FsResult<(usize, Arc<FsCore>, u64)> {
        let (slot, local) = dec(ino);
        Ok((slot, self.core(slot)?, local))
    }

    /// As [`route`](Self::route), for a change: refused when the user may only read.
    fn route_mut(&self, ino: u64) -> FsResult<(usize, Arc<FsCore>, u64)> {
        if is_snapshot(ino) {
            // Views of the past are read-only.
            return Err(FsError::ReadOnly);
        }
        let routed = self.route(ino)?;
        if routed.0 != 0 && !routed.1.writable() {
            return Err(FsError::ReadOnly);
        }
        Ok(routed)
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
        if Self::names_snapshots(dec(parent).1, name) {
            // `.snapshots` in a volume's root is the read-only directory of its views.
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if is_snapshot(ino) {
            return self.snap_getattr(ino);
        }
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
        if is_snapshot(parent) {
            return self.snap_lookup(parent, name);
        }
        let (slot, core, local) = self.route(parent)?;
        if Self::names_snapshots(local, name) {
            return self.snapshots_dir(slot);
        }
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

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        Self::reserved(parent, name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        Ok(out(slot, core.mknod(local, name, mode, rdev, caller)?))
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
        if is_snapshot(ino) {
            return self.snap_readlink(ino);
        }
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
        mode: RenameMode,
    ) -> FsResult<()> {
        Self::reserved(parent, name)?;
        Self::reserved(new_parent, new_name)?;
        let (slot, core, local) = self.route_mut(parent)?;
        let (new_slot, _, new_local) = self.route_mut(new_parent)?;
        if slot != new_slot {
            // As between filesystems: `mv` then copies and deletes.
            return Err(FsError::CrossVolume);
        }
        core.rename(local, name, new_local, new_name, mode)
    }

    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        Self::reserved(new_parent, new_name)?;
        let (slot, core, local) = self.route_mut(ino)?;
        let (new_slot, _, new_local) = self.route_mut(new_parent)?;
        if slot != new_slot {
            // A name and its inode live in one volume, as on one filesystem (`cp -l` fails).
            return Err(FsError::CrossVolume);
        }
        Ok(out(slot, core.link(local, new_local, new_name)?))
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if is_snapshot(ino) {
            return self.snap_getxattr(ino, name);
        }
        let (_, core, local) = self.route(ino)?;
        core.getxattr(local, name)
    }

    /// The attribute names of `ino` that `uid` may see, each followed by a NUL byte.
    pub fn listxattr(&self, ino: u64, uid: u32) -> FsResult<Vec<u8>> {
        if is_snapshot(ino) {
            return self.snap_listxattr(ino, uid);
        }
        let (_, core, local) = self.route(ino)?;
        core.listxattr(local, uid)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], how: XattrSet) -> FsResult<()> {
        let (_, core, local) = self.route_mut(ino)?;
        core.setxattr(local, name, value, how)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        let (_, core, local) = self.route_mut(ino)?;
        core.removexattr(local, name)
    }

    /// See [`FsCore::kill_privileges`].
    pub fn kill_privileges(&self, ino: u64, privileged: bool, gid: u32) -> FsResult<()> {
        let (_, core, local) = self.route_mut(ino)?;
        core.kill_privileges(local, privileged, gid)
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Attr> {
        let (slot, core, local) = self.route_mut(ino)?;
        Ok(out(slot, core.setattr(local, set)?))
    }

    pub fn open(&self, ino: u64, writable: bool) -> FsResult<u64> {
        if is_snapshot(ino) && !writable {
            return self.snap_open(ino);
        }
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
        if is_snapshot(fh) {
            return self.snap_read(fh, offset, size);
        }
        let (_, core, local) = self.route(fh)?;
        core.read(local, offset, size)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        if is_snapshot(fh) {
            return Err(FsError::ReadOnly);
        }
        let (_, core, local) = self.route(fh)?;
        core.write(local, offset, data)
    }

    pub fn flush(&self, fh: u64) -> FsResult<()> {
        if is_snapshot(fh) {
            return Ok(());
        }
        let (_, core, local) = self.route(fh)?;
        core.flush(local)
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        if is_snapshot(fh) {
            return Ok(());
        }
        let (_, core, local) = self.route(fh)?;
        core.fsync(local)
    }

    /// Releases a handle even of a volume this user was removed from meanwhile (its writes
    /// are committed; other nodes refuse them if they came after the removal).
    pub fn release(&self, fh: u64) -> FsResult<()> {
        if is_snapshot(fh) {
            return self.snap_release(fh);
        }
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
        if is_snapshot(ino) {
            return self.snap_opendir(ino);
        }
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
            // A stored entry named `.snapshots` in a root is shadowed by the views' directory,
            // which is not listed.
            .filter(|d| !(is_root && d.name == super::snapshots::SNAPSHOTS_DIR))
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
        if !is_snapshot(fh)
            && let Ok((_, core, local)) = self.route(fh)
        {
            core.releasedir(local);
        }
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        self.network.statfs()
    }
}
