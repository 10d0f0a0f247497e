//! The decrypted namespace of the mounted volume, in memory: inode numbers, each entry's
//! metadata and every directory's children. Built from the namespace store at start and kept
//! in step with every commit; inode numbers live as long as the process.

use std::collections::HashMap;

use crate::namespace::view::Children;
use crate::namespace::{Entry, EntryId, EntryKind, EntryMeta, Seen, Version};

pub const ROOT_INO: u64 = 1;

#[derive(Clone, Debug)]
pub struct Node {
    pub id: EntryId,
    pub version: Version,
    /// The history of this version: what the next local write of it is written on.
    pub seen: Seen,
    pub meta: EntryMeta,
    /// Number of child directories (a directory's link count is 2 + this).
    pub subdirs: u32,
}

pub struct Tree {
    root_id: EntryId,
    nodes: HashMap<u64, Node>,
    inos: HashMap<EntryId, u64>,
    children: HashMap<u64, Children<u64>>,
    next_ino: u64,
}

impl Tree {
    pub fn new(root_id: EntryId) -> Self {
        let mut inos = HashMap::new();
        inos.insert(root_id, ROOT_INO);
        Self {
            root_id,
            nodes: HashMap::new(),
            inos,
            children: HashMap::new(),
            next_ino: ROOT_INO + 1,
        }
    }

    /// The inode number of `id`, allocated on first sight (a child may be seen before its
    /// parent while loading).
    pub fn ino_of(&mut self, id: EntryId) -> u64 {
        if let Some(&ino) = self.inos.get(&id) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(id, ino);
        ino
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn ino_if_known(&self, id: &EntryId) -> Option<u64> {
        self.inos.get(id).copied()
    }

    pub fn parent_ino(&self, node: &Node) -> u64 {
        if node.id == self.root_id {
            ROOT_INO
        } else {
            self.inos
                .get(&node.meta.parent)
                .copied()
                .unwrap_or(ROOT_INO)
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.children.get(&parent)?.lookup(name)
    }

    pub fn children(&self, dir: u64) -> Vec<(Vec<u8>, u64)> {
        self.children
            .get(&dir)
            .map(Children::list)
            .unwrap_or_default()
    }

    pub fn has_children(&self, dir: u64) -> bool {
        self.children.get(&dir).is_some_and(|c| !c.is_empty())
    }

    /// Applies a live version of an entry (`meta` is its opened payload).
    pub fn upsert(&mut self, entry: &Entry, meta: EntryMeta) {
        let (id, version) = (entry.id, entry.version());
        let ino = self.ino_of(id);
        let previous = self.remove_claim(ino).map(|n| n.subdirs);
        if id != self.root_id {
            let parent = self.ino_of(meta.parent);
            self.children
                .entry(parent)
                .or_default()
                .insert(meta.name.clone(), version, ino);
            if meta.kind == EntryKind::Dir
                && let Some(p) = self.nodes.get_mut(&parent)
            {
                p.subdirs += 1;
            }
        }
        // Counted once when a node first appears (its children may have been loaded before
        // it); afterwards kept up to date incrementally.
        let subdirs = match (meta.kind, previous) {
            (EntryKind::Dir, Some(n)) => n,
            (EntryKind::Dir, None) => self.count_subdirs(ino),
            _ => 0,
        };
        self.nodes.insert(
            ino,
            Node {
                id,
                version,
                seen: entry.seen.clone(),
                meta,
                subdirs,
            },
        );
    }

    /// Applies a deletion.
    pub fn remove(&mut self, id: &EntryId) {
        if let Some(&ino) = self.inos.get(id) {
            self.remove_claim(ino);
        }
    }

    fn count_subdirs(&self, dir: u64) -> u32 {
        self.children
            .get(&dir)
            .map(|c| {
                c.list()
                    .iter()
                    .filter(|(_, ino)| {
                        self.nodes
                            .get(ino)
                            .is_some_and(|n| n.meta.kind == EntryKind::Dir)
                    })
                    .count() as u32
            })
            .unwrap_or(0)
    }

    /// Takes a node out of its parent's children (and the node table); returns it.
    fn remove_claim(&mut self, ino: u64) -> Option<Node> {
        let node = self.nodes.remove(&ino)?;
        if node.id != self.root_id
            && let Some(&parent) = self.inos.get(&node.meta.parent)
        {
            if let Some(c) = self.children.get_mut(&parent) {
                c.remove(&node.meta.name, ino);
            }
            if node.meta.kind == EntryKind::Dir
                && let Some(p) = self.nodes.get_mut(&parent)
            {
                p.subdirs = p.subdirs.saturating_sub(1);
            }
        }
        Some(node)
    }

    /// True when `ancestor` is `ino` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        for _ in 0..4096 {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = self.parent_ino(n),
                None => return false,
            }
        }
        false
    }

    /// Every inode in the tree.
    pub fn inos(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.keys().copied()
    }

    /// The `/`-separated path of `ino` from the root (lossy UTF-8), `None` when it is not
    /// attached to the root (an orphan of a concurrent directory delete).
    pub fn path_of(&self, mut ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let node = self.nodes.get(&ino)?;
            parts.push(String::from_utf8_lossy(&node.meta.name).into_owned());
            let parent = self.parent_ino(node);
            if parent == ino || parts.len() > 4096 {
                return None;
            }
            ino = parent;
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
