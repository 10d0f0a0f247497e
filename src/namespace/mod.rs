//! The namespace: one signed entry per file, directory or symlink ([`entry`]), the volume whose
//! keys encrypt them ([`volume`]), the directory view built from them with conflict copies
//! ([`view`]), and their persistence in an embedded ACID store ([`store`]), with the versions
//! kept after an overwrite or a delete ([`history`], [`retention`]).

pub mod entry;
pub mod history;
pub mod retention;
pub mod store;
pub mod view;
pub mod volume;

pub use entry::{
    Entry, EntryError, EntryId, EntryKey, EntryKind, EntryMeta, Seen, Timestamp, UserId, Version,
    VersionHash, VolumeId,
};
pub use history::HistoryRow;
pub use retention::{RetentionPolicy, RetentionTable};
pub use store::{Committed, NamespaceError, NamespaceStore, Purged, StoredAs};
pub use volume::Volume;
