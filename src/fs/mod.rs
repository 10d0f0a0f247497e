//! The filesystem core: everything a mount does, as plain method calls that tests can drive
//! without a kernel. [`crate::fuse`] only translates kernel requests into these calls.
//!
//! Consistency is close-to-open: metadata operations (create, mkdir, rename, chmod, ...) are
//! committed durably before they return; file data is committed as a new entry version when a
//! descriptor is flushed (every `close()`), fsync'd or released.
//!
//! Lock order, to stay deadlock-free: open-files map, then one file's state, then `mutate`,
//! then `tree`. Never the other way round.
//!
//! One volume's filesystem is an [`FsCore`]: `ops.rs` holds it and its POSIX operations,
//! `load.rs` builds it from the store, `merge.rs` takes in what other nodes wrote. A [`Mount`]
//! (`mount/`) puts every volume of this node's user in one tree.

pub mod error;
pub mod file;
pub mod history;
mod load;
mod merge;
pub mod mount;
mod ops;
mod pinned;
mod purge;
pub mod snapshot;
pub mod tree;
mod xattr;

pub use error::{FsError, FsResult};
pub use file::ReadBuf;
pub use file::RemoteChunks;
pub use load::TreeLoader;
pub use mount::{HeldStatus, Mount, MountParts, RetentionInfo, SnapshotInfo, VolumeInfo};
pub use ops::{CoreParts, FsCore};
pub use pinned::{ConflictInfo, PinnedFile};
pub use purge::PurgeReport;
pub use tree::ROOT_INO;

use crate::block::cache::CacheStats;
use crate::namespace::{Entry, EntryKind, Timestamp};

/// Attributes of a file, directory or symlink, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: EntryKind,
    pub size: u64,
    pub blocks: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub blksize: u32,
    /// Device number of a device node (kernel encoding), else 0.
    pub rdev: u32,
}

/// Who is asking (from the kernel request).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

impl TimeSet {
    fn resolve(self) -> Timestamp {
        match self {
            TimeSet::Now => Timestamp::now(),
            TimeSet::At(t) => t,
        }
    }
}

/// How `rename` treats its destination (`renameat2` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replaces the destination if there is one.
    Plain,
    /// Fails with EEXIST if the destination exists (RENAME_NOREPLACE).
    NoReplace,
    /// Swaps source and destination, both of which must exist (RENAME_EXCHANGE).
    Exchange,
    /// As `Plain`, leaving a whiteout device node at the source (RENAME_WHITEOUT).
    Whiteout,
}

/// What `setxattr` requires of the attribute it sets (`XATTR_CREATE` / `XATTR_REPLACE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrSet {
    /// Creates or replaces.
    Any,
    /// Fails with EEXIST if the attribute exists.
    Create,
    /// Fails with ENODATA if the attribute does not exist.
    Replace,
}

/// The changes of a `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: Attr,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Counters for status and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStats {
    pub entries: usize,
    pub open_files: usize,
    pub rejected_entries: usize,
    pub cache: CacheStats,
}

/// What applying entries from a peer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteApply {
    /// Entries that were newer than what this node had.
    pub applied: usize,
    /// Entries refused: bad signature, a non-writer author, or a payload that does not open.
    pub rejected: usize,
    /// Expired tombstones that deleted some of the entries (the sender missed the deletion
    /// and should apply them).
    pub forgotten: Vec<Entry>,
}

#[cfg(test)]
mod tests;
