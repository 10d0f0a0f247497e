//! The FUSE adapter: translates kernel requests into [`Mount`] calls and back. No logic of its
//! own beyond type conversion (and timing each request for [`crate::node::metrics`]); requests are
//! served by several threads so a slow one never blocks the rest.

pub mod counters;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Caller, FsError, Mount, RenameMode, SetAttr, TimeSet, XattrSet};
use crate::namespace::{EntryKind, Timestamp};
use counters::{FuseOp, fuse_op};

/// Largest single write or read the kernel sends us (one default chunk).
const MAX_IO: u32 = 1 << 20;

pub struct FuseAdapter {
    mount: Arc<Mount>,
    ttl: Duration,
}

impl FuseAdapter {
    pub fn new(mount: Arc<Mount>, ttl: Duration) -> Self {
        Self { mount, ttl }
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::Socket => FileType::Socket,
        EntryKind::CharDev => FileType::CharDevice,
        EntryKind::BlockDev => FileType::BlockDevice,
        // Never shown: the mount answers for a link with the entry it names.
        EntryKind::Link => FileType::RegularFile,
    }
}

fn to_fuse(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.ctime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

impl FuseAdapter {
    fn entry(&self, reply: ReplyEntry, result: Result<Attr, FsError>) {
        match result {
            Ok(a) => reply.entry(&self.ttl, &to_fuse(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn attr(&self, reply: ReplyAttr, result: Result<Attr, FsError>) {
        match result {
            Ok(a) => reply.attr(&self.ttl, &to_fuse(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn opened(reply: ReplyOpen, result: Result<u64, FsError>) {
    match result {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(errno(&e)),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(Timestamp::from_system(t)),
    }
}

fn writable(flags: OpenFlags) -> bool {
    !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY)
}

/// The rename `renameat2` flags ask for; `None` for a combination the mount does not serve
/// (the VFS already refused the invalid ones; WHITEOUT|NOREPLACE remains).
fn rename_mode(flags: RenameFlags) -> Option<RenameMode> {
    const NOREPLACE: RenameFlags = RenameFlags::RENAME_NOREPLACE;
    const EXCHANGE: RenameFlags = RenameFlags::RENAME_EXCHANGE;
    const WHITEOUT: RenameFlags = RenameFlags::RENAME_WHITEOUT;
    match flags {
        f if f.is_empty() => Some(RenameMode::Plain),
        NOREPLACE => Some(RenameMode::NoReplace),
        EXCHANGE => Some(RenameMode::Exchange),
        WHITEOUT => Some(RenameMode::Whiteout),
        _ => None,
    }
}

/// What `setxattr` flags require; `None` for flags it does not know.
fn xattr_set(flags: i32) -> Option<XattrSet> {
    match flags {
        0 => Some(XattrSet::Any),
        libc::XATTR_CREATE => Some(XattrSet::Create),
        libc::XATTR_REPLACE => Some(XattrSet::Replace),
        _ => None,
    }
}

/// Answers a `getxattr`/`listxattr` the way the kernel asks: the length alone when `size` is
/// 0, the bytes when they fit in `size`, ERANGE when they do not.
fn xattr_reply(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(value) => match u32::try_from(value.len()) {
            Ok(len) if size == 0 => reply.size(len),
            Ok(len) if len <= size => reply.data(&value),
            _ => reply.error(errno(&FsError::Range)),
        },
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_IO) {
            tracing::debug!(max, "kernel limits max_write");
        }
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        // HANDLE_KILLPRIV_V2: the mount clears set-id bits and file capabilities on writes
        // itself (`WriteFlags::FUSE_WRITE_KILL_SUIDGID`), and in return the kernel marks
        // inodes without them S_NOSEC, so it stops asking `security.capability` before
        // every write(2) (one GETXATTR per write otherwise).
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::debug!(?missing, "kernel lacks some FUSE capabilities");
            let _ = config.add_capabilities(wanted - missing);
        }
        // FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS are deliberately not asked for: the kernel
        // then serves fcntl (incl. OFD) and flock locks itself, on its inode, as for a local
        // filesystem. Locks exclude processes of this node only; locking across nodes would
        // need a lock manager with leases (see README, "Semantics worth knowing").
        Ok(())
    }

    fn destroy(&mut self) {
        self.mount.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timer = fuse_op(FuseOp::Lookup);
        self.entry(reply, self.mount.lookup(parent.0, name.as_bytes()))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timer = fuse_op(FuseOp::Getattr);
        self.attr(reply, self.mount.getattr(ino.0))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _timer = fuse_op(FuseOp::Setattr);
        // Under HANDLE_KILLPRIV_V2 the kernel drops the mode change that clears set-id bits on
        // a truncate or chown and flags the request instead, a flag fuser does not pass on:
        // truncates by anyone but root (taken as the holder of CAP_FSETID, as FUSE passes no
        // capabilities) and every chown clear them here, as on ext4.
        let chown = (uid.is_some() || gid.is_some()) && mode.is_none();
        if (chown || (size.is_some() && req.uid() != 0))
            && let Err(e) = self.mount.kill_privileges(ino.0, req.uid() == 0, req.gid())
        {
            return reply.error(errno(&e));
        }
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        self.attr(reply, self.mount.setattr(ino.0, set))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timer = fuse_op(FuseOp::Readlink);
        match self.mount.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _timer = fuse_op(FuseOp::Mknod);
        self.entry(
            reply,
            self.mount
                .mknod(parent.0, name.as_bytes(), mode & !umask, rdev, caller(req)),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _timer = fuse_op(FuseOp::Mkdir);
        self.entry(
            reply,
            self.mount
                .mkdir(parent.0, name.as_bytes(), mode & !umask, caller(req)),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = fuse_op(FuseOp::Unlink);
        empty(reply, self.mount.unlink(parent.0, name.as_bytes()))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = fuse_op(FuseOp::Rmdir);
        empty(reply, self.mount.rmdir(parent.0, name.as_bytes()))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _timer = fuse_op(FuseOp::Symlink);
        self.entry(
            reply,
            self.mount.symlink(
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
                caller(req),
            ),
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Rename);
        let Some(mode) = rename_mode(flags) else {
            reply.error(Errno::EINVAL);
            return;
        };
        empty(
            reply,
            self.mount.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                mode,
            ),
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _timer = fuse_op(FuseOp::Link);
        self.entry(
            reply,
            self.mount.link(ino.0, newparent.0, newname.as_bytes()),
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Setxattr);
        // `position` is for macOS resource forks; never set on Linux.
        match xattr_set(flags) {
            Some(how) if position == 0 => empty(
                reply,
                self.mount.setxattr(ino.0, name.as_bytes(), value, how),
            ),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _timer = fuse_op(FuseOp::Getxattr);
        xattr_reply(reply, size, self.mount.getxattr(ino.0, name.as_bytes()))
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timer = fuse_op(FuseOp::Listxattr);
        xattr_reply(reply, size, self.mount.listxattr(ino.0, req.uid()))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = fuse_op(FuseOp::Removexattr);
        empty(reply, self.mount.removexattr(ino.0, name.as_bytes()))
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _timer = fuse_op(FuseOp::Open);
        match self.mount.open(ino.0, writable(flags)) {
            Ok(fh) => {
                let keep = if self.mount.keep_kernel_cache(ino.0) {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), keep)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timer = fuse_op(FuseOp::Read);
        tracing::trace!(fh = fh.0, offset, size, "read");
        match self.mount.read(fh.0, offset, size) {
            Ok(data) => {
                crate::fuse::counters::fuse_read(data.len());
                reply.data(&data)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _timer = fuse_op(FuseOp::Write);
        tracing::trace!(fh = fh.0, offset, size = data.len(), "write");
        // Set by the kernel for a writer without CAP_FSETID (see `init`).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.mount.kill_privileges(ino.0, false, req.gid())
        {
            return reply.error(errno(&e));
        }
        match self.mount.write(fh.0, offset, data) {
            Ok(n) => {
                crate::fuse::counters::fuse_written(n as usize);
                reply.written(n)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Flush);
        empty(reply, self.mount.flush(fh.0))
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Release);
        empty(reply, self.mount.release(fh.0))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Fsync);
        empty(reply, self.mount.fsync(fh.0))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timer = fuse_op(FuseOp::Opendir);
        opened(reply, self.mount.opendir(ino.0))
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timer = fuse_op(FuseOp::Readdir);
        match self.mount.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(e.attr.ino),
                        i as u64 + 1,
                        file_type(e.attr.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _timer = fuse_op(FuseOp::Readdirplus);
        match self.mount.readdir(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let full = reply.add(
                        INodeNo(e.attr.ino),
                        i as u64 + 1,
                        OsStr::from_bytes(&e.name),
                        &self.ttl,
                        &to_fuse(&e.attr),
                        Generation(0),
                    );
                    if full {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Releasedir);
        self.mount.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = fuse_op(FuseOp::Fsyncdir);
        // Namespace changes are durable when the operation that made them returns.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timer = fuse_op(FuseOp::Statfs);
        match self.mount.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _timer = fuse_op(FuseOp::Access);
        // With default_permissions the kernel checks mode bits itself; this only reports
        // whether the inode exists.
        match self.mount.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _timer = fuse_op(FuseOp::Create);
        let writable = writable(OpenFlags(flags));
        match self.mount.create(
            parent.0,
            name.as_bytes(),
            mode & !umask,
            caller(req),
            writable,
        ) {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &to_fuse(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
