//! Paths of the whole mount for `p2pfs-ctl pin` and `conflicts`: the files under a path (the
//! root: every visible volume), the conflicts under one, and the node names conflict names show.

use std::sync::Arc;

use super::{Mount, VOLUME_PREFIX};
use crate::fs::{ConflictInfo, FsCore, FsResult, PinnedFile};
use crate::namespace::view::NodeNames;

impl Mount {
    /// Where every volume's conflict names find node names (the membership view, plugged in
    /// by the node).
    pub fn set_node_names(&self, names: Arc<dyn NodeNames>) {
        self.template.names.set(names);
    }

    /// Notified whenever entries from peers were stored.
    pub fn entries_applied(&self) -> Arc<tokio::sync::Notify> {
        self.applied.clone()
    }

    /// The cores a mount path covers, each with the path inside it and the prefix its paths
    /// take in the mount: the root covers the network volume and every visible volume.
    fn cores_at(&self, path: &str) -> FsResult<Vec<(Arc<FsCore>, String, String)>> {
        let trimmed = path.trim_matches('/');
        if trimmed.as_bytes().first() == Some(&VOLUME_PREFIX) {
            let (core, inner, dir) = self.route_path(trimmed)?;
            return Ok(vec![(core, inner.to_string(), format!("{dir}/"))]);
        }
        let mut out = vec![(self.network.clone(), trimmed.to_string(), String::new())];
        if trimmed.is_empty() {
            for (slot, dir) in self.volume_dirs() {
                out.push((
                    self.core(slot)?,
                    String::new(),
                    format!("{}/", String::from_utf8_lossy(&dir)),
                ));
            }
        }
        Ok(out)
    }

    /// Every file at or under `path` (a mount path; `@NAME` first names a volume), with its
    /// chunks; paths as in the mount.
    pub fn files_under(&self, path: &str) -> FsResult<Vec<PinnedFile>> {
        let mut out = Vec::new();
        for (core, inner, prefix) in self.cores_at(path)? {
            out.extend(core.files_under(&inner)?.into_iter().map(|mut f| {
                f.path = format!("{prefix}{}", f.path);
                f
            }));
        }
        Ok(out)
    }

    /// The conflicts at or under `path`; paths as in the mount.
    pub fn conflicts_under(&self, path: &str) -> FsResult<Vec<ConflictInfo>> {
        let mut out = Vec::new();
        for (core, inner, prefix) in self.cores_at(path)? {
            out.extend(core.conflicts_under(&inner)?.into_iter().map(|mut c| {
                c.path = format!("{prefix}{}", c.path);
                c.of = c.of.map(|of| format!("{prefix}{of}"));
                c
            }));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
