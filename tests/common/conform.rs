//! Differential conformance: the same operations run on the mount and on a reference ext4
//! made like it, and must give the same results and errnos.
//!
//! [`RefDisk`] is a fresh ext4 on a loop device, mounted with the mount's options
//! (`nodev,nosuid,noatime`, and `noacl` since the mount does not do POSIX ACLs), registered
//! with the node so its drop unmounts it. A [`Pair`] is one directory on each side;
//! [`Pair::same`] runs a closure on both and compares. [`run_as`] runs [`Op`]s under other
//! credentials (uid, gid, supplementary groups) in a child process: the test binary itself,
//! re-executed into its [`conform_child!`] test, so no `fork` in a multithreaded process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Debug;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::Node;
use super::process::{CMD_TIMEOUT, out_text, run_cmd};

/// A reference ext4, made and mounted like the p2pfs mount.
pub struct RefDisk {
    /// Where it is mounted.
    pub root: PathBuf,
}

impl RefDisk {
    /// A fresh ext4 of `size_mib` MiB on a sparse file in the node's base dir: 4 KiB blocks
    /// and 256-byte inodes (nanosecond times, in-inode xattrs), mounted
    /// `loop,nodev,nosuid,noatime,noacl` (without `noacl` on kernels that no longer know it:
    /// ext4 then does ACLs, which the mount refuses); unmounted (and its loop device freed) by the
    /// node's drop.
    pub fn new(node: &mut Node, size_mib: u64) -> RefDisk {
        let image = node.base_path.join("ref-ext4.img");
        let root = node.base_path.join("ref");
        fs::create_dir_all(&root).unwrap();
        fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .unwrap();
        let out = run_cmd(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096", "-I", "256"])
                .arg(&image),
            CMD_TIMEOUT,
        );
        assert!(out.status.success(), "mkfs.ext4: {}", out_text(&out));
        // Recent kernels (6.18 here) no longer take `noacl`: ext4 then keeps ACLs, so a test of
        // `system.posix_acl_*` checks the mount alone.
        let mount = |options: &str| {
            run_cmd(
                Command::new("mount")
                    .args(["-o", options])
                    .arg(&image)
                    .arg(&root),
                CMD_TIMEOUT,
            )
        };
        let mut out = mount("loop,nodev,nosuid,noatime,noacl");
        if !out.status.success() {
            out = mount("loop,nodev,nosuid,noatime");
        }
        assert!(out.status.success(), "mount ext4: {}", out_text(&out));
        node.register_mount(&root);
        RefDisk { root }
    }
}

/// One directory on the mount and its twin on the reference disk.
pub struct Pair {
    pub mnt: PathBuf,
    pub reference: PathBuf,
}

/// What a side answered: a value, or an errno (an error without one is a test failure).
pub type Outcome<T> = Result<T, i32>;

fn outcome<T>(side: &str, r: io::Result<T>) -> Outcome<T> {
    r.map_err(|e| {
        e.raw_os_error()
            .unwrap_or_else(|| panic!("{side}: error without errno: {e:?}"))
    })
}

impl Pair {
    /// A new directory `name` (mode 0755, owned by root) in the mount's root and in the
    /// reference's root.
    pub fn new(node: &Node, reference: &RefDisk, name: &str) -> Pair {
        let pair = Pair {
            mnt: node.mnt.join(name),
            reference: reference.root.join(name),
        };
        for dir in [&pair.mnt, &pair.reference] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        pair
    }

    /// Both twins of `rel`.
    pub fn both(&self, rel: &str) -> [PathBuf; 2] {
        [self.mnt.join(rel), self.reference.join(rel)]
    }

    /// Runs `op` on the mount's directory, then on the reference's; asserts both gave the
    /// same value or the same errno, and returns that.
    #[track_caller]
    pub fn same<T: PartialEq + Debug>(
        &self,
        what: &str,
        op: impl Fn(&Path) -> io::Result<T>,
    ) -> Outcome<T> {
        let mnt = outcome("mount", op(&self.mnt));
        let reference = outcome("reference", op(&self.reference));
        assert_eq!(
            mnt, reference,
            "{what}: the mount (left) and ext4 (right) differ"
        );
        mnt
    }

    /// Runs `scenario` (which may start processes, take locks, and returns all it saw) on the
    /// mount's directory, then on the reference's; asserts both saw the same and returns it.
    #[track_caller]
    pub fn same_seen<T: PartialEq + Debug>(&self, what: &str, scenario: impl Fn(&Path) -> T) -> T {
        let mnt = scenario(&self.mnt);
        let reference = scenario(&self.reference);
        assert_eq!(
            mnt, reference,
            "{what}: the mount (left) and ext4 (right) differ"
        );
        mnt
    }

    /// Runs the operations `ops(root)` makes as `creds` (see [`run_as`]) on the mount's
    /// directory, then on the reference's; asserts every outcome agrees and returns them.
    #[track_caller]
    pub fn same_as(
        &self,
        what: &str,
        creds: &Creds,
        ops: impl Fn(&Path) -> Vec<Op>,
    ) -> Vec<Outcome<Done>> {
        let mnt = run_as(creds, &ops(&self.mnt));
        let reference = run_as(creds, &ops(&self.reference));
        assert_eq!(
            mnt, reference,
            "{what} as {creds:?}: the mount (left) and ext4 (right) differ"
        );
        mnt
    }

    /// Asserts `rel` looks the same on both sides to `lstat`: type, permission bits, owner,
    /// link count, device number and size. Times are compared with [`Pair::stamp`].
    #[track_caller]
    pub fn same_stat(&self, rel: &str) -> Outcome<Stat> {
        self.same(&format!("lstat {rel}"), |root| {
            fs::symlink_metadata(root.join(rel)).map(|m| Stat::of(&m))
        })
    }

    /// Asserts `rel` has the same extended attributes (names and values) on both sides.
    #[track_caller]
    pub fn same_xattrs(&self, rel: &str) -> Outcome<BTreeMap<Vec<u8>, Vec<u8>>> {
        self.same(&format!("xattrs of {rel}"), |root| xattrs(&root.join(rel)))
    }

    /// The times of `rel` on both sides now. Waits a little afterwards, so that a change made
    /// next shows in ext4's (coarse-clocked) times.
    pub fn stamp(&self, rel: &str) -> Stamp {
        let times = self.both(rel).map(|p| Times::of(&p));
        std::thread::sleep(Duration::from_millis(20));
        Stamp {
            rel: rel.to_string(),
            times,
        }
    }

    /// Asserts which of `rel`'s modification and change times moved since `stamp` is the
    /// same on both sides; returns (mtime changed, ctime changed).
    #[track_caller]
    pub fn same_times_since(&self, stamp: &Stamp) -> (bool, bool) {
        let [mnt, reference] = self
            .both(&stamp.rel)
            .map(|p| Times::of(&p))
            .into_iter()
            .zip(&stamp.times)
            .map(|(now, then)| (now.mtime != then.mtime, now.ctime != then.ctime))
            .collect::<Vec<_>>()
            .try_into()
            .expect("two sides");
        assert_eq!(
            mnt, reference,
            "{}: (mtime, ctime) changed on the mount (left) and ext4 (right)",
            stamp.rel
        );
        mnt
    }
}

/// What `lstat` says of a path, without its inode number and times (which differ between two
/// filesystems by nature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// `S_IFMT` bits.
    pub kind: u32,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub rdev: u64,
    /// Size of a regular file or symlink; 0 for anything else (directory sizes are
    /// filesystem-specific).
    pub size: u64,
}

impl Stat {
    pub fn of(m: &fs::Metadata) -> Stat {
        let t = m.file_type();
        Stat {
            kind: m.mode() & libc::S_IFMT,
            perm: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            nlink: m.nlink(),
            rdev: if t.is_char_device() || t.is_block_device() {
                m.rdev()
            } else {
                0
            },
            size: if t.is_file() || t.is_symlink() {
                m.size()
            } else {
                0
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Times {
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Times {
    fn of(p: &Path) -> Times {
        let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        Times {
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The times of one path on both sides of a [`Pair`], taken by [`Pair::stamp`].
pub struct Stamp {
    rel: String,
    times: [Times; 2],
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Every extended attribute of `p` (not following a symlink), by name.
pub fn xattrs(p: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let path = cpath(p)?;
    // SAFETY: a NULL buffer of size 0 asks for the size only.
    let len = check(unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut names = vec![0u8; len];
    // SAFETY: `names` has `len` writable bytes.
    let len = check(unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), len) })?;
    names.truncate(len);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        out.insert(name.to_vec(), get_xattr(p, name)?);
    }
    Ok(out)
}

/// The value of attribute `name` of `p` (not following a symlink).
pub fn get_xattr(p: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let path = cpath(p)?;
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NULL buffer of size 0 asks for the size only.
    let len =
        check(unsafe { libc::lgetxattr(path.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut value = vec![0u8; len];
    // SAFETY: `value` has `len` writable bytes.
    let len = check(unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            cname.as_ptr(),
            value.as_mut_ptr().cast(),
            len,
        )
    })?;
    value.truncate(len);
    Ok(value)
}

/// Sets attribute `name` of `p` (not following a symlink); `flags` as `lsetxattr`'s.
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let path = cpath(p)?;
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `value` is readable for its length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    check(rc as libc::ssize_t).map(|_| ())
}

/// Credentials to run [`Op`]s under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn root() -> Creds {
        Creds {
            uid: 0,
            gid: 0,
            groups: vec![],
        }
    }

    /// uid and gid 1000, also in group 2000.
    pub fn user() -> Creds {
        Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 2000],
        }
    }

    pub fn nobody() -> Creds {
        Creds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        }
    }
}

/// A time for [`Op::Utimens`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeArg {
    Now,
    Omit,
    At(i64, i64),
}

impl TimeArg {
    fn timespec(self) -> libc::timespec {
        let (tv_sec, tv_nsec) = match self {
            TimeArg::Now => (0, libc::UTIME_NOW),
            TimeArg::Omit => (0, libc::UTIME_OMIT),
            TimeArg::At(s, ns) => (s, ns),
        };
        libc::timespec { tv_sec, tv_nsec }
    }
}

/// One system call (or a short fixed sequence) on paths, for [`run_as`]. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `open(path, flags, mode)` then `close`.
    Open {
        path: PathBuf,
        flags: i32,
        mode: u32,
    },
    /// Opens for writing (flags | O_WRONLY), writes `data`, closes.
    Write {
        path: PathBuf,
        flags: i32,
        data: Vec<u8>,
    },
    /// Opens read-only and reads everything.
    Read {
        path: PathBuf,
    },
    Truncate {
        path: PathBuf,
        len: i64,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    Mknod {
        path: PathBuf,
        mode: u32,
        rdev: u64,
    },
    Link {
        from: PathBuf,
        to: PathBuf,
    },
    Symlink {
        target: PathBuf,
        path: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    Rmdir {
        path: PathBuf,
    },
    /// `renameat2(from, to, flags)`.
    Rename {
        from: PathBuf,
        to: PathBuf,
        flags: u32,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
    },
    /// `lchown`; `u32::MAX` leaves that id unchanged, as -1 does.
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    /// `utimensat(AT_FDCWD, path, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
    Utimens {
        path: PathBuf,
        atime: TimeArg,
        mtime: TimeArg,
    },
    SetXattr {
        path: PathBuf,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
    },
    GetXattr {
        path: PathBuf,
        name: Vec<u8>,
    },
    /// Every attribute the caller may list, with values.
    ListXattr {
        path: PathBuf,
    },
    RemoveXattr {
        path: PathBuf,
        name: Vec<u8>,
    },
    Stat {
        path: PathBuf,
    },
    /// `open(path, flags, mode)`, keeping the descriptor open until [`Op::Close`] or the
    /// process exits. Descriptors are numbered from 0 in the order `Keep`s succeed.
    Keep {
        path: PathBuf,
        flags: i32,
        mode: u32,
    },
    /// `write` on a kept descriptor.
    WriteFd {
        fd: usize,
        data: Vec<u8>,
    },
    /// `flock(fd, how)` on a kept descriptor.
    Flock {
        fd: usize,
        how: i32,
    },
    /// `fcntl(fd, cmd, &flock { kind, SEEK_SET, start, len })` on a kept descriptor: a set
    /// (`F_SETLK`, `F_OFD_SETLK`, …) answers [`Done::Ok`], a test (`F_GETLK`, `F_OFD_GETLK`)
    /// answers [`Done::Lock`].
    Fcntl {
        fd: usize,
        cmd: i32,
        kind: i16,
        start: i64,
        len: i64,
    },
    /// Closes a kept descriptor.
    Close {
        fd: usize,
    },
}

/// What an [`Op`] returned when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    Ok,
    Bytes(Vec<u8>),
    /// Name and value pairs, sorted by name (a list: JSON maps take only string keys).
    Xattrs(Vec<(Vec<u8>, Vec<u8>)>),
    Stat(Stat),
    /// What `F_GETLK`/`F_OFD_GETLK` reported: the conflicting lock's type (`F_UNLCK` for
    /// none), holder's pid (-1 for an OFD lock), start and length.
    Lock {
        kind: i16,
        pid: i32,
        start: i64,
        len: i64,
    },
}

/// The descriptors [`Op::Keep`] opened in one process, by number.
#[derive(Default)]
pub struct Fds(Vec<Option<std::os::fd::OwnedFd>>);

impl Fds {
    fn raw(&self, fd: usize) -> io::Result<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.0
            .get(fd)
            .and_then(|f| f.as_ref())
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }
}

fn rc(r: libc::c_int) -> io::Result<Done> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(Done::Ok)
    }
}

impl Op {
    /// Runs the operation in this process, with its credentials (and no kept descriptors).
    pub fn run(&self) -> io::Result<Done> {
        self.run_with(&mut Fds::default())
    }

    /// Runs the operation in this process, with its credentials and kept descriptors `fds`.
    pub fn run_with(&self, fds: &mut Fds) -> io::Result<Done> {
        use std::io::{Read, Write};
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::fs::OpenOptionsExt;
        match self {
            Op::Open { path, flags, mode } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string; the descriptor is closed right away.
                let fd = unsafe { libc::open(c.as_ptr(), *flags | libc::O_CLOEXEC, *mode) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just opened by this call.
                rc(unsafe { libc::close(fd) })
            }
            Op::Write { path, flags, data } => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(*flags)
                    .open(path)?;
                f.write_all(data)?;
                Ok(Done::Ok)
            }
            Op::Read { path } => {
                let mut data = Vec::new();
                fs::File::open(path)?.read_to_end(&mut data)?;
                Ok(Done::Bytes(data))
            }
            Op::Truncate { path, len } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                rc(unsafe { libc::truncate(c.as_ptr(), *len) })
            }
            Op::Mkdir { path, mode } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                rc(unsafe { libc::mkdir(c.as_ptr(), *mode) })
            }
            Op::Mknod { path, mode, rdev } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                rc(unsafe { libc::mknod(c.as_ptr(), *mode, *rdev) })
            }
            Op::Link { from, to } => fs::hard_link(from, to).map(|()| Done::Ok),
            Op::Symlink { target, path } => {
                std::os::unix::fs::symlink(target, path).map(|()| Done::Ok)
            }
            Op::Unlink { path } => fs::remove_file(path).map(|()| Done::Ok),
            Op::Rmdir { path } => fs::remove_dir(path).map(|()| Done::Ok),
            Op::Rename { from, to, flags } => {
                let (f, t) = (cpath(from)?, cpath(to)?);
                // SAFETY: valid C strings.
                rc(unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        f.as_ptr(),
                        libc::AT_FDCWD,
                        t.as_ptr(),
                        *flags,
                    )
                })
            }
            Op::Chmod { path, mode } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                rc(unsafe { libc::chmod(c.as_ptr(), *mode) })
            }
            Op::Chown { path, uid, gid } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                rc(unsafe { libc::lchown(c.as_ptr(), *uid, *gid) })
            }
            Op::Utimens { path, atime, mtime } => {
                let c = cpath(path)?;
                let times = [atime.timespec(), mtime.timespec()];
                // SAFETY: a valid C string and two timespecs.
                rc(unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => set_xattr(path, name, value, *flags).map(|()| Done::Ok),
            Op::GetXattr { path, name } => get_xattr(path, name).map(Done::Bytes),
            Op::ListXattr { path } => xattrs(path).map(|x| Done::Xattrs(x.into_iter().collect())),
            Op::RemoveXattr { path, name } => {
                let c = cpath(path)?;
                let n = CString::new(name.as_slice())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: valid C strings.
                rc(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
            }
            Op::Stat { path } => fs::symlink_metadata(path).map(|m| Done::Stat(Stat::of(&m))),
            Op::Keep { path, flags, mode } => {
                let c = cpath(path)?;
                // SAFETY: a valid C string.
                let fd = unsafe { libc::open(c.as_ptr(), *flags | libc::O_CLOEXEC, *mode) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just opened by this call and is owned by nothing else.
                fds.0.push(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
                Ok(Done::Ok)
            }
            Op::WriteFd { fd, data } => {
                let fd = fds.raw(*fd)?;
                // SAFETY: `data` is readable for its length; `fd` is open.
                let n = check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })?;
                if n != data.len() {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                Ok(Done::Ok)
            }
            Op::Flock { fd, how } => {
                let fd = fds.raw(*fd)?;
                // SAFETY: `fd` is open.
                rc(unsafe { libc::flock(fd, *how) })
            }
            Op::Fcntl {
                fd,
                cmd,
                kind,
                start,
                len,
            } => {
                let fd = fds.raw(*fd)?;
                // SAFETY: all-zero is a valid `flock` (OFD commands require `l_pid` 0).
                let mut lock: libc::flock = unsafe { std::mem::zeroed() };
                lock.l_type = *kind;
                lock.l_whence = libc::SEEK_SET as i16;
                lock.l_start = *start;
                lock.l_len = *len;
                // SAFETY: `fd` is open and `lock` a valid `flock` for the call to fill.
                rc(unsafe { libc::fcntl(fd, *cmd, &mut lock) })?;
                if *cmd == libc::F_GETLK || *cmd == libc::F_OFD_GETLK {
                    Ok(Done::Lock {
                        kind: lock.l_type,
                        pid: lock.l_pid,
                        start: lock.l_start,
                        len: lock.l_len,
                    })
                } else {
                    Ok(Done::Ok)
                }
            }
            Op::Close { fd } => {
                let owned = fds
                    .0
                    .get_mut(*fd)
                    .and_then(Option::take)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
                drop(owned);
                Ok(Done::Ok)
            }
        }
    }
}

/// The environment variable carrying the child's credentials and operations.
const CHILD_ENV: &str = "P2PFS_CONFORM_CHILD";
/// The name of the test [`conform_child!`] defines.
const CHILD_TEST: &str = "conform_child";
/// Set in a child started by [`hold_as`]: after its operations it keeps its descriptors (and
/// so its locks) until its stdin closes.
const HOLD_ENV: &str = "P2PFS_CONFORM_HOLD";
/// What precedes the child's outcomes on its stdout (the test harness prints too).
const OUTCOMES_MARK: &str = "conform-outcomes:";

fn child_command(creds: &Creds, ops: &[Op]) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let request = serde_json::to_string(&(creds, ops)).unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, request);
    cmd
}

fn parse_outcomes(creds: &Creds, ops: &[Op], line: &str) -> Vec<Outcome<Done>> {
    let outcomes: Vec<Outcome<Done>> = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{creds:?}: bad outcomes {line:?}: {e}"));
    assert_eq!(outcomes.len(), ops.len(), "run_as: one outcome per op");
    outcomes
}

/// A child process that ran [`Op`]s (see [`hold_as`]) and holds its descriptors, with the
/// locks taken on them, until released or dropped (killed).
pub struct Held {
    child: super::process::ChildGuard,
    stdin: Option<std::process::ChildStdin>,
    /// The outcome of each operation.
    pub outcomes: Vec<Outcome<Done>>,
}

impl Held {
    /// The holder's process id (as `F_GETLK` reports it).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets the holder exit (closing its descriptors) and waits until it did.
    pub fn release(mut self) {
        self.stdin.take();
        let status = self
            .child
            .wait_timeout(CMD_TIMEOUT)
            .expect("the lock holder exits once released");
        assert!(status.success(), "lock holder: {status}");
    }

    /// Kills the holder (SIGKILL) and waits until it is gone: the kernel closes its
    /// descriptors.
    pub fn kill(mut self) {
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        self.child
            .wait_timeout(CMD_TIMEOUT)
            .expect("killed holder exits");
    }
}

/// Runs `ops` in order as `creds` in a child process that then stays alive, keeping its
/// descriptors ([`Op::Keep`]) and so its locks, until [`Held::release`] (or drop). Returns once
/// the operations ran.
pub fn hold_as(creds: &Creds, ops: &[Op]) -> Held {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut cmd = child_command(creds, ops);
    cmd.env(HOLD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn the lock holder");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let guard = super::process::ChildGuard(Some(child));
    // Read on a thread, so a child that never answers fails the test after a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    // It drains stdout to the end: the child's test harness still prints when it exits.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, rest)) = line.split_once(OUTCOMES_MARK) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let line = rx
        .recv_timeout(CMD_TIMEOUT)
        .unwrap_or_else(|e| panic!("hold_as {creds:?}: no outcomes: {e}"));
    Held {
        child: guard,
        stdin,
        outcomes: parse_outcomes(creds, ops, &line),
    }
}

/// `renameat2(from, to, flags)` under `root`, as a test calls it in its own process.
pub fn rename2(root: &Path, from: &str, to: &str, flags: u32) -> io::Result<()> {
    Op::Rename {
        from: root.join(from),
        to: root.join(to),
        flags,
    }
    .run()
    .map(|_| ())
}

/// Runs `ops` in order as `creds` and returns each one's outcome: in a child process (this
/// test binary re-executed into its [`conform_child!`] test, which takes the credentials
/// before running them), so no `fork` in a multithreaded process.
pub fn run_as(creds: &Creds, ops: &[Op]) -> Vec<Outcome<Done>> {
    let out = run_cmd(&mut child_command(creds, ops), CMD_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(OUTCOMES_MARK).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("run_as {creds:?}: no outcomes: {}", out_text(&out)));
    parse_outcomes(creds, ops, line)
}

/// The child half of [`run_as`]: runs the operations it was handed and prints their outcomes.
/// A no-op when run as an ordinary test.
pub fn child_main() {
    let Ok(request) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (creds, ops): (Creds, Vec<Op>) = serde_json::from_str(&request).unwrap();
    // glibc applies these to every thread of the process (the test harness runs the test on
    // a thread of its own).
    // SAFETY: plain system calls on valid memory.
    let set = unsafe {
        [
            libc::setgroups(creds.groups.len(), creds.groups.as_ptr()),
            libc::setresgid(creds.gid, creds.gid, creds.gid),
            libc::setresuid(creds.uid, creds.uid, creds.uid),
        ]
    };
    assert!(
        set.iter().all(|&r| r == 0),
        "taking the credentials {creds:?}: {}",
        io::Error::last_os_error()
    );
    let mut fds = Fds::default();
    let outcomes: Vec<Outcome<Done>> = ops
        .iter()
        .map(|op| outcome("child", op.run_with(&mut fds)))
        .collect();
    println!(
        "{OUTCOMES_MARK}{}",
        serde_json::to_string(&outcomes).unwrap()
    );
    if std::env::var_os(HOLD_ENV).is_some() {
        // Hold the descriptors until the parent closes our stdin (or kills us).
        let _ = io::Read::read_to_end(&mut io::stdin(), &mut Vec::new());
    }
    drop(fds);
}

/// Defines the test [`run_as`] re-executes the test binary into. Put it once in every test
/// file that calls `run_as`.
#[macro_export]
macro_rules! conform_child {
    () => {
        #[test]
        fn conform_child() {
            $crate::common::conform::child_main();
        }
    };
}
