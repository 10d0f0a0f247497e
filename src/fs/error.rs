//! Filesystem errors, each mapping to the errno a local filesystem would give.

use crate::block::StoreError;
use crate::namespace::NamespaceError;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("no space left on device")]
    NoSpace,
    #[error("bad file handle")]
    BadHandle,
    #[error("file too large")]
    TooLarge,
    #[error("read-only: this user may not write in the volume")]
    ReadOnly,
    #[error("cannot move between volumes")]
    CrossVolume,
    #[error("no such attribute")]
    NoData,
    #[error("result does not fit the buffer")]
    Range,
    #[error("operation not supported")]
    NotSupported,
    #[error("too many links")]
    TooManyLinks,
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid => libc::EINVAL,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::NoSpace => libc::ENOSPC,
            FsError::BadHandle => libc::EBADF,
            FsError::TooLarge => libc::EFBIG,
            FsError::ReadOnly => libc::EROFS,
            FsError::CrossVolume => libc::EXDEV,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::Io(_) => libc::EIO,
        }
    }

    fn from_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => FsError::NoSpace,
            _ => FsError::Io(e.to_string()),
        }
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Io(io) => FsError::from_io(io),
            _ => FsError::Io(e.to_string()),
        }
    }
}

impl From<NamespaceError> for FsError {
    fn from(e: NamespaceError) -> Self {
        match e.io_error() {
            Some(io) => FsError::from_io(io),
            None => FsError::Io(e.to_string()),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;
