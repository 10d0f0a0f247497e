//! Extended attributes of an entry (`getxattr`, `listxattr`, `setxattr`, `removexattr`).
//! Not supported yet: every call answers EOPNOTSUPP, as a filesystem without them does.

use super::{FsCore, FsError, FsResult, XattrSet};

impl FsCore {
    /// The value of attribute `name` (full name, `user.x`) of `ino`.
    pub fn getxattr(&self, _ino: u64, _name: &[u8]) -> FsResult<Vec<u8>> {
        Err(FsError::NotSupported)
    }

    /// The names of `ino`'s attributes `uid` may see, each followed by a NUL byte.
    pub fn listxattr(&self, _ino: u64, _uid: u32) -> FsResult<Vec<u8>> {
        Err(FsError::NotSupported)
    }

    /// Sets attribute `name` of `ino` to `value`, as `how` allows.
    pub fn setxattr(&self, _ino: u64, _name: &[u8], _value: &[u8], _how: XattrSet) -> FsResult<()> {
        Err(FsError::NotSupported)
    }

    /// Removes attribute `name` of `ino`.
    pub fn removexattr(&self, _ino: u64, _name: &[u8]) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
}
