//! `p2pfs-ctl versions` and `restore` on mount paths: which volume's core a path is in (see
//! [`crate::fs::history`] for the work).

use std::sync::Arc;

use super::Mount;
use crate::fs::history::{HistoryError, HistoryResult, Labels, Pick, Restored, VersionList};
use crate::fs::{FsCore, FsError};

impl Mount {
    /// The core serving `path` (relative to the mount), the path inside its volume, and the
    /// volume's directory in the mount (`""` for the network volume).
    fn core_at(&self, path: &str) -> HistoryResult<(Arc<FsCore>, String, String)> {
        match self.route_path(path) {
            Ok((core, inner, dir)) => Ok((core, inner.to_string(), dir.to_string())),
            Err(FsError::NotFound) => Err(HistoryError::NotFound(path.to_string())),
            Err(e) => Err(e.into()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::ChunkStore;
    use crate::fs::{Caller, ROOT_INO};
    use crate::identity::UserIdentity;

    const ME: Caller = Caller { uid: 0, gid: 0 };

    fn mount(dir: &std::path::Path, chunks: &Arc<ChunkStore>, origin: u64) -> Mount {
        crate::fs::mount::tests::test_mount(dir, chunks, origin, UserIdentity::generate(), true)
    }

    fn write(m: &Mount, parent: u64, name: &str, data: &[u8]) {
        let (_, fh) = m.create(parent, name.as_bytes(), 0o644, ME, true).unwrap();
        m.write(fh, 0, data).unwrap();
        m.release(fh).unwrap();
    }

    fn read(m: &Mount, path: &str) -> Vec<u8> {
        let ino = m.resolve(path).unwrap().ino;
        let fh = m.open(ino, false).unwrap();
        let data = m.read(fh, 0, 1 << 20).unwrap().to_vec();
        m.release(fh).unwrap();
        data
    }

    use crate::fs::mount::tests::exchange;

    #[test]
    fn a_deletion_made_elsewhere_is_undone_here_and_the_restore_wins_there_too() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
        let (a, b) = (
            mount(&dir.path().join("a"), &chunks, 1),
            mount(&dir.path().join("b"), &chunks, 2),
        );
        let docs = a.mkdir(ROOT_INO, b"docs", 0o755, ME).unwrap().ino;
        write(&a, docs, "f", b"kept");
        exchange(&[&a, &b]);
        a.remove("docs", true).unwrap();
        exchange(&[&a, &b]);
        assert!(b.resolve("docs").is_err());
        let list = b.versions("/docs/f", &Labels::default()).unwrap();
        assert_eq!(list.path, "/docs/f");
        assert!(list.deleted.is_some());
        assert_eq!(list.versions.last().unwrap().node, format!("{:016x}", 1));
        b.restore("docs/f", Pick::Latest, None).unwrap();
        exchange(&[&a, &b]);
        assert_eq!(read(&a, "docs/f"), b"kept");
        assert_eq!(read(&b, "docs/f"), b"kept");
    }

    #[test]
    fn member_volume_paths_are_routed_and_restores_stay_in_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
        let m = mount(&dir.path().join("m"), &chunks, 1);
        m.create_volume("team").unwrap();
        let team = m.resolve("@team").unwrap().ino;
        write(&m, team, "f", b"team file");
        m.remove("@team/f", false).unwrap();
        let list = m.versions("@team/f", &Labels::default()).unwrap();
        assert!(list.deleted.is_some());
        assert!(matches!(
            m.versions("f", &Labels::default()),
            Err(HistoryError::NotFound(_))
        ));
        assert!(matches!(
            m.restore("@team/f", Pick::Latest, Some("copy")),
            Err(HistoryError::OtherVolume)
        ));
        let done = m.restore("@team/f", Pick::Latest, None).unwrap();
        assert_eq!(done.path, "@team/f");
        assert_eq!(read(&m, "@team/f"), b"team file");
        let done = m.restore("@team/f", Pick::Latest, Some("@team/g")).unwrap();
        assert_eq!(done.path, "@team/g");
        assert_eq!(read(&m, "@team/g"), b"team file");
    }
}
