//! The namespace: one signed entry per file, directory or symlink ([`entry`]), the volume whose
//! keys encrypt them ([`volume`]), the directory view built from them with conflict copies
//! ([`view`]), and their persistence in an embedded ACID store ([`store`]).

pub mod entry;
pub mod store;
pub mod view;
pub mod volume;

pub use entry::{
    Entry, EntryError, EntryId, EntryKey, EntryKind, EntryMeta, Seen, Timestamp, UserId, Version,
    VersionHash, VolumeId,
};
pub use store::{Committed, NamespaceError, NamespaceStore, Purged, StoredAs};
pub use volume::Volume;
