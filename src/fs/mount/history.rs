//! `p2pfs-ctl versions` and `restore` on mount paths: which volume's core a path is in (see
//! [`crate::fs::history`] for the work).

use std::sync::Arc;

use super::{Mount, VOLUME_PREFIX};
use crate::fs::history::{HistoryError, HistoryResult, Labels, Pick, Restored, VersionList};
use crate::fs::{FsCore, FsError};

impl Mount {
    /// The core serving `path` (relative to the mount), the path inside its volume, and the
    /// volume's directory in the mount (`""` for the network volume).
    fn core_at(&self, path: &str) -> HistoryResult<(Arc<FsCore>, String, String)> {
        let trimmed = path.trim_start_matches('/');
        let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if first.as_bytes().first() == Some(&VOLUME_PREFIX) {
            let slot = self
                .volume_dirs()
                .into_iter()
                .find(|(_, dir)| dir == first.as_bytes())
                .map(|(slot, _)| slot)
                .ok_or_else(|| HistoryError::NotFound(path.to_string()))?;
            return Ok((self.core(slot)?, rest.to_string(), first.to_string()));
        }
        Ok((self.network.clone(), trimmed.to_string(), String::new()))
    }

    /// This node's user (the author of what it writes), for naming authors.
    pub fn user_id(&self) -> crate::namespace::UserId {
        self.me()
    }

    /// Every kept version of the file or directory at `path`, deleted or not.
    pub fn versions(&self, path: &str, labels: &Labels) -> HistoryResult<VersionList> {
        let (core, inner, _) = self.core_at(path)?;
        let mut list = core.versions(&inner, labels).map_err(|e| shown(e, path))?;
        list.path = path.to_string();
        Ok(list)
    }

    /// Restores `path` as new versions, in place or at `to` (in the same volume).
    pub fn restore(&self, path: &str, pick: Pick, to: Option<&str>) -> HistoryResult<Restored> {
        let (core, inner, dir) = self.core_at(path)?;
        let to_inner = match to {
            None => None,
            Some(to) => {
                let (to_core, to_inner, _) = self.core_at(to)?;
                if !Arc::ptr_eq(&core, &to_core) {
                    return Err(HistoryError::OtherVolume);
                }
                Some(to_inner)
            }
        };
        if !core.writable() {
            return Err(FsError::ReadOnly.into());
        }
        let mut done = core
            .restore(&inner, pick, to_inner.as_deref())
            .map_err(|e| shown(e, path))?;
        if !dir.is_empty() {
            done.path = format!("{dir}/{}", done.path);
        }
        Ok(done)
    }
}

/// Names the path as the user gave it (the core knows only the part inside its volume).
fn shown(e: HistoryError, path: &str) -> HistoryError {
    let path = path.to_string();
    match e {
        HistoryError::NotFound(_) => HistoryError::NotFound(path),
        HistoryError::NameTaken { .. } => HistoryError::NameTaken { path },
        HistoryError::NoVersion(p) => HistoryError::NoVersion(match p.rsplit_once(" version ") {
            Some((_, n)) => format!("{path} version {n}"),
            None => path,
        }),
        HistoryError::NothingAt(_) => HistoryError::NothingAt(path),
        HistoryError::NoEarlier(_) => HistoryError::NoEarlier(path),
        HistoryError::LiveDirectory(_) => HistoryError::LiveDirectory(path),
        HistoryError::NoParent(_) => HistoryError::NoParent(path),
        other => other,
    }
}
