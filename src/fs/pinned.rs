//! What `p2pfs-ctl pin` and `conflicts` read of one volume: every file under a path with its
//! chunks (a pin keeps those on this node), and the conflicts under a path (conflict copies and
//! names claimed twice).

use std::collections::HashSet;

use super::tree::Tree;
use super::{FsCore, FsError, FsResult, ROOT_INO};
use crate::block::ChunkId;
use crate::namespace::EntryKind;
use crate::namespace::view::NodeNamer;

/// A file under a pinned path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedFile {
    /// Path relative to the volume root.
    pub path: String,
    /// Its chunks with the plaintext bytes each holds, holes left out.
    pub chunks: Vec<(ChunkId, u64)>,
}

/// One conflict: a conflict copy, or an entry shown under a conflict name because another
/// claims its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictInfo {
    /// Where it shows, relative to the volume root.
    pub path: String,
    /// The file it is a copy of (a copy), or the path whose name it claims (a claim); `None`
    /// when that file is gone.
    pub of: Option<String>,
    /// The node that wrote the version that lost (its name, else its tag in hex).
    pub node: String,
    /// When that version was written, ms since the epoch.
    pub millis: u64,
    /// A conflict copy (true), or a losing claim (false).
    pub copy: bool,
}

impl FsCore {
    /// Where conflict names find node names.
    pub fn set_node_names(&self, names: NodeNamer) {
        self.tree.write().set_names(names);
    }

    /// The inode `path` names (relative to the volume root, `/`-separated).
    fn ino_at(&self, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(FsError::Invalid);
            }
            ino = self.lookup(ino, part.as_bytes())?.ino;
        }
        Ok(ino)
    }

    /// Every file at or under `path` (each once, whatever names it has), with its chunks.
    pub fn files_under(&self, path: &str) -> FsResult<Vec<PinnedFile>> {
        let top = self.ino_at(path)?;
        let chunk_size = self.io.chunk_size;
        let tree = self.tree.read();
        let mut out = Vec::new();
        walk(&tree, top, path, |ino, path| {
            let Some(node) = tree.get(ino) else {
                return;
            };
            if node.meta.kind != EntryKind::File {
                return;
            }
            let size = node.meta.size;
            let chunks = node
                .meta
                .blocks
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let start = i as u64 * chunk_size;
                    Some((b.as_ref()?.id, size.saturating_sub(start).min(chunk_size)))
                })
                .collect();
            out.push(PinnedFile {
                path: path.to_string(),
                chunks,
            });
        });
        Ok(out)
    }

    /// The conflicts at or under `path`, by path: conflict copies, and entries shown under a
    /// conflict name because another entry claims their name.
    pub fn conflicts_under(&self, path: &str) -> FsResult<Vec<ConflictInfo>> {
        let top = self.ino_at(path)?;
        let tree = self.tree.read();
        let names = tree.names().clone();
        let mut out = Vec::new();
        walk(&tree, top, path, |ino, shown| {
            let Some(node) = tree.get(ino) else {
                return;
            };
            if let Some(c) = node.meta.conflict_of {
                out.push(ConflictInfo {
                    path: shown.to_string(),
                    of: tree.ino_if_known(&c.entry).and_then(|i| tree.path_of(i)),
                    node: names.label(c.origin),
                    millis: c.hlc.millis(),
                    copy: true,
                });
            }
            if node.meta.kind == EntryKind::Dir {
                for (name, claimed, version, _) in tree.claim_conflicts(ino) {
                    let at = |n: &[u8]| join(shown, &String::from_utf8_lossy(n));
                    out.push(ConflictInfo {
                        path: at(&name),
                        of: Some(at(&claimed)),
                        node: names.label(version.origin),
                        millis: version.hlc.millis(),
                        copy: false,
                    });
                }
            }
        });
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Calls `visit` with every inode at or under `top` (each once) and the path it shows under.
fn walk(tree: &Tree, top: u64, top_path: &str, mut visit: impl FnMut(u64, &str)) {
    let mut seen = HashSet::new();
    let mut stack = vec![(top, top_path.trim_matches('/').to_string())];
    while let Some((ino, path)) = stack.pop() {
        if !seen.insert(ino) {
            continue;
        }
        visit(ino, &path);
        if tree.get(ino).is_some_and(|n| n.meta.kind == EntryKind::Dir) || ino == ROOT_INO {
            for (name, child) in tree.children(ino) {
                stack.push((child, join(&path, &String::from_utf8_lossy(&name))));
            }
        }
    }
}
