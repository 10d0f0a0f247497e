//! The decrypted namespace of the mounted volume, in memory: inode numbers, each entry's
//! metadata and every directory's children. Built from the namespace store at start and kept
//! in step with every commit; inode numbers live as long as the process.
//!
//! Memory is what limits a namespace's size (issue 8 measured ~1 KB per entry with hash maps
//! of nodes and a name-keyed map per directory). So nodes sit in a slab indexed by inode
//! number (inodes are handed out densely), in fixed pages so that growth never doubles it, and
//! a directory's children are a hash table of inode numbers alone: the name and version of a
//! claim are read from the child's node, not copied.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::namespace::view::{NodeNamer, conflict_bases, loser_names};
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
    /// Number of live `Link` entries naming this one (its further names).
    pub links: u32,
}

impl Node {
    /// The link count `stat` shows: a directory has its own name, its `.` and every child
    /// directory's `..`; anything else one per name (its own unless unnamed, and each link).
    /// Never stored: every node holding the same entries shows the same count.
    pub fn nlink(&self) -> u32 {
        if self.meta.kind == EntryKind::Dir {
            2 + self.subdirs
        } else {
            u32::from(!self.meta.unnamed) + self.links
        }
    }
}

/// Nodes by inode number. Pages of [`Slab::PAGE`] slots: a `Vec` of nodes would double (and
/// copy) as it grows, leaving up to half of a large namespace's node memory unused.
#[derive(Default)]
struct Slab {
    pages: Vec<Box<[Option<Node>]>>,
    len: usize,
}

impl Slab {
    const PAGE: usize = 1024;

    fn get(&self, ino: u64) -> Option<&Node> {
        let i = usize::try_from(ino).ok()?;
        self.pages.get(i / Self::PAGE)?[i % Self::PAGE].as_ref()
    }

    fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        let i = usize::try_from(ino).ok()?;
        self.pages.get_mut(i / Self::PAGE)?[i % Self::PAGE].as_mut()
    }

    fn insert(&mut self, ino: u64, node: Node) {
        let i = usize::try_from(ino).expect("inode numbers are handed out densely");
        while self.pages.len() <= i / Self::PAGE {
            self.pages
                .push((0..Self::PAGE).map(|_| None).collect::<Vec<_>>().into());
        }
        let slot = &mut self.pages[i / Self::PAGE][i % Self::PAGE];
        if slot.is_none() {
            self.len += 1;
        }
        *slot = Some(node);
    }

    fn remove(&mut self, ino: u64) -> Option<Node> {
        let i = usize::try_from(ino).ok()?;
        let node = self.pages.get_mut(i / Self::PAGE)?[i % Self::PAGE].take();
        if node.is_some() {
            self.len -= 1;
        }
        node
    }

    fn inos(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter()
                .enumerate()
                .filter(|(_, slot)| slot.is_some())
                .map(move |(i, _)| (p * Self::PAGE + i) as u64)
        })
    }
}

/// The children of one directory: the inode numbers of every node that claims a name in it,
/// hashed by that name. Two live entries can claim the same name (concurrent creates or
/// renames on different nodes); both are kept: the highest version shows under the name,
/// every other one under a conflict name, `name (conflict NODE DATE TIME).ext`
/// ([`crate::namespace::view::conflict_name`]). A write is never dropped silently.
///
/// Invariant: every inode in a table has its node in the slab, and that node's name is the
/// one it was hashed under (a node leaves its parent's table before it changes).
type Claims = HashTable<u64>;

/// What the tree knows of an unnamed inode, to tell an orphan (its last link went while it
/// was unnamed) from an inode whose links have not arrived yet (a node catching up).
#[derive(Clone, Copy, Default)]
struct Unnamed {
    /// Seen here unnamed and with a live link.
    linked: bool,
    /// Concurrent versions of it met here (one displaced the other): the only way an
    /// unnamed inode loses its last link without a newer version of it saying so.
    contested: bool,
    /// First seen here as an orphan.
    orphan_since: Option<std::time::Instant>,
}

pub struct Tree {
    root_id: EntryId,
    nodes: Slab,
    inos: HashMap<EntryId, u64>,
    children: HashMap<u64, Claims>,
    /// The `Link` nodes naming each inode, by the inode's number (kept whether or not that
    /// inode is present: a link can arrive before the entry it names).
    links: HashMap<u64, HashSet<u64>>,
    /// Unnamed inodes: whether this tree saw each with a link, and since when without one.
    unnamed: HashMap<u64, Unnamed>,
    hasher: RandomState,
    next_ino: u64,
    /// Node names for the conflict names of losing claims.
    names: NodeNamer,
}

fn name_of(nodes: &Slab, ino: u64) -> &[u8] {
    nodes.get(ino).map_or(&[][..], |n| &n.meta.name[..])
}

impl Tree {
    pub fn new(root_id: EntryId) -> Self {
        let mut inos = HashMap::new();
        inos.insert(root_id, ROOT_INO);
        Self {
            root_id,
            nodes: Slab::default(),
            inos,
            children: HashMap::new(),
            links: HashMap::new(),
            unnamed: HashMap::new(),
            hasher: RandomState::new(),
            next_ino: ROOT_INO + 1,
            names: NodeNamer::default(),
        }
    }

    /// Where conflict names find node names.
    pub fn set_names(&mut self, names: NodeNamer) {
        self.names = names;
    }

    pub fn names(&self) -> &NodeNamer {
        &self.names
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
        self.nodes.get(ino)
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

    /// The claims of `name` in `dir`, lowest version first (the winner last).
    fn claims(&self, dir: u64, name: &[u8]) -> Vec<(Version, u64)> {
        let Some(table) = self.children.get(&dir) else {
            return Vec::new();
        };
        let mut claims: Vec<(Version, u64)> = table
            .iter_hash(self.hasher.hash_one(name))
            .filter_map(|&ino| {
                let node = self.nodes.get(ino)?;
                (node.meta.name == name && !self.dangling(node)).then_some((node.version, ino))
            })
            .collect();
        claims.sort_unstable();
        claims
    }

    /// The entry a `Link` node names when it is present and may be linked (not a directory,
    /// not a link).
    fn link_target(&self, node: &Node) -> Option<u64> {
        if node.meta.kind != EntryKind::Link {
            return None;
        }
        let ino = *self.inos.get(node.meta.target.as_ref()?)?;
        let target = self.nodes.get(ino)?;
        (!matches!(target.meta.kind, EntryKind::Dir | EntryKind::Link)).then_some(ino)
    }

    /// A `Link` node whose entry is not (yet, or any more) here: it names nothing and is not
    /// shown.
    fn dangling(&self, node: &Node) -> bool {
        node.meta.kind == EntryKind::Link && self.link_target(node).is_none()
    }

    /// Resolves a name as shown by [`Tree::children`]: the inode it names.
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Option<u64> {
        self.claim(dir, name).map(|c| self.resolve(c))
    }

    /// The node that claims `name` in `dir` as [`Tree::children`] shows it: an entry or a
    /// further name of one (a `Link` node, which [`Tree::resolve`] turns into its entry).
    pub fn claim(&self, dir: u64, name: &[u8]) -> Option<u64> {
        if let Some(&(_, winner)) = self.claims(dir, name).last() {
            return Some(winner);
        }
        // A conflict name: the loser of its base that shows under it.
        conflict_bases(name).into_iter().find_map(|base| {
            let claims = self.claims(dir, &base);
            let (_, losers) = claims.split_last()?;
            loser_names(&base, losers, &self.names)
                .into_iter()
                .find(|(shown, _)| shown == name)
                .map(|(_, ino)| ino)
        })
    }

    /// The inode a claim stands for: the entry a `Link` node names, any other node itself.
    pub fn resolve(&self, claim: u64) -> u64 {
        self.nodes
            .get(claim)
            .and_then(|n| self.link_target(n))
            .unwrap_or(claim)
    }

    /// The link count of `ino` as `stat` shows it ([`Node::nlink`]); 0 when it is gone.
    pub fn nlink(&self, ino: u64) -> u32 {
        self.nodes.get(ino).map_or(0, Node::nlink)
    }

    /// The live `Link` nodes naming `ino`, oldest version first.
    pub fn links_of(&self, ino: u64) -> Vec<u64> {
        let mut links: Vec<(Version, u64)> = self
            .links
            .get(&ino)
            .into_iter()
            .flatten()
            .filter_map(|&l| Some((self.nodes.get(l)?.version, l)))
            .collect();
        links.sort_unstable();
        links.into_iter().map(|(_, l)| l).collect()
    }

    /// Orphans, with when this tree first saw each so: unnamed inodes seen here with a link,
    /// with concurrent versions met here, and now without any link (left by concurrent unlinks
    /// of their last names on two nodes). One that never had a link here is not one: its
    /// links may still be on their way; nor is one without concurrent versions: an honest
    /// node never leaves an inode unnamed without links, so a link made after the last one
    /// seen here is on its way. Marks new ones seen `now`.
    pub fn orphans(&mut self, now: std::time::Instant) -> Vec<(u64, std::time::Instant)> {
        let mut out = Vec::new();
        for (&ino, state) in &mut self.unnamed {
            let links = self.nodes.get(ino).map_or(0, |n| n.links);
            state.linked |= links > 0;
            if links == 0 && state.linked && state.contested {
                out.push((ino, *state.orphan_since.get_or_insert(now)));
            } else {
                state.orphan_since = None;
            }
        }
        out
    }

    /// Records that concurrent versions of `id` met here (see [`Tree::orphans`]).
    pub fn contested(&mut self, id: &EntryId) {
        if let Some(&ino) = self.inos.get(id)
            && let Some(state) = self.unnamed.get_mut(&ino)
        {
            state.contested = true;
        }
    }

    /// Every child with the name it is shown under, in order of the claimed names (a name's
    /// winner first, then its losers, oldest first).
    pub fn children(&self, dir: u64) -> Vec<(Vec<u8>, u64)> {
        let Some(table) = self.children.get(&dir) else {
            return Vec::new();
        };
        let mut claims: Vec<(&[u8], Version, u64)> = table
            .iter()
            .filter_map(|&ino| {
                let node = self.nodes.get(ino)?;
                (!self.dangling(node)).then_some((&node.meta.name[..], node.version, ino))
            })
            .collect();
        claims.sort_unstable();
        let mut out = Vec::with_capacity(claims.len());
        for group in claims.chunk_by(|a, b| a.0 == b.0) {
            let (&(name, _, winner), losers) = group.split_last().expect("chunks are non-empty");
            out.push((name.to_vec(), self.resolve(winner)));
            let losers: Vec<(Version, u64)> = losers.iter().map(|&(_, v, i)| (v, i)).collect();
            for (shown, ino) in loser_names(name, &losers, &self.names) {
                out.push((shown, self.resolve(ino)));
            }
        }
        out
    }

    /// The losing claims of `dir`: (the name each shows under, the name it claims, its
    /// version, the inode it stands for).
    pub fn claim_conflicts(&self, dir: u64) -> Vec<(Vec<u8>, Vec<u8>, Version, u64)> {
        let mut out = Vec::new();
        let listed = self.children(dir);
        let mut names: Vec<&[u8]> = listed.iter().map(|(n, _)| &n[..]).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let claims = self.claims(dir, name);
            let Some((_, losers)) = claims.split_last() else {
                continue;
            };
            for (shown, (ver, ino)) in loser_names(name, losers, &self.names)
                .into_iter()
                .zip(losers)
            {
                out.push((shown.0, name.to_vec(), *ver, self.resolve(*ino)));
            }
        }
        out
    }

    /// Whether `dir` shows any child (a dangling link is not one).
    pub fn has_children(&self, dir: u64) -> bool {
        self.children.get(&dir).is_some_and(|c| {
            c.iter()
                .any(|&i| self.nodes.get(i).is_some_and(|n| !self.dangling(n)))
        })
    }

    /// Applies a live version of an entry (`meta` is its opened payload).
    pub fn upsert(&mut self, entry: &Entry, meta: EntryMeta) {
        let (id, version) = (entry.id, entry.version());
        let ino = self.ino_of(id);
        let was_unnamed = self.unnamed.get(&ino).copied();
        let previous = self.remove_claim(ino).map(|n| n.subdirs);
        let parent = (id != self.root_id).then(|| self.ino_of(meta.parent));
        let target = match (meta.kind, meta.target) {
            (EntryKind::Link, Some(t)) => Some(self.ino_of(t)),
            _ => None,
        };
        let links = self.links.get(&ino).map_or(0, |l| l.len() as u32);
        if meta.unnamed {
            let mut state = was_unnamed.unwrap_or_default();
            state.linked |= links > 0;
            self.unnamed.insert(ino, state);
        }
        // Counted once when a node first appears (its children may have been loaded before
        // it); afterwards kept up to date incrementally.
        let subdirs = match (meta.kind, previous) {
            (EntryKind::Dir, Some(n)) => n,
            (EntryKind::Dir, None) => self.count_subdirs(ino),
            _ => 0,
        };
        let is_dir = meta.kind == EntryKind::Dir;
        // An unnamed entry (only its links name it) claims no place in its parent.
        let parent = parent.filter(|_| !meta.unnamed);
        let hash = self.hasher.hash_one(&meta.name[..]);
        self.nodes.insert(
            ino,
            Node {
                id,
                version,
                seen: entry.seen.clone(),
                meta,
                subdirs,
                links,
            },
        );
        if let Some(target) = target {
            self.links.entry(target).or_default().insert(ino);
            if let Some(t) = self.nodes.get_mut(target) {
                t.links += 1;
            }
            if let Some(state) = self.unnamed.get_mut(&target) {
                state.linked = true;
            }
        }
        if let Some(parent) = parent {
            // The node is in the slab first: growing the table rehashes by the nodes' names.
            let Self {
                nodes,
                children,
                hasher,
                ..
            } = self;
            children
                .entry(parent)
                .or_default()
                .insert_unique(hash, ino, |&i| hasher.hash_one(name_of(nodes, i)));
            if is_dir && let Some(p) = self.nodes.get_mut(parent) {
                p.subdirs += 1;
            }
        }
    }

    /// Applies a deletion.
    pub fn remove(&mut self, id: &EntryId) {
        if let Some(&ino) = self.inos.get(id) {
            self.remove_claim(ino);
        }
    }

    fn count_subdirs(&self, dir: u64) -> u32 {
        self.children.get(&dir).map_or(0, |table| {
            table
                .iter()
                .filter(|&&ino| {
                    self.nodes
                        .get(ino)
                        .is_some_and(|n| n.meta.kind == EntryKind::Dir)
                })
                .count() as u32
        })
    }

    /// Takes a node out of its parent's children (and the slab); returns it.
    fn remove_claim(&mut self, ino: u64) -> Option<Node> {
        let mut node = self.nodes.remove(ino)?;
        self.unnamed.remove(&ino);
        if node.meta.kind == EntryKind::Link
            && let Some(&target) = node.meta.target.as_ref().and_then(|t| self.inos.get(t))
        {
            if let Some(links) = self.links.get_mut(&target) {
                links.remove(&ino);
                if links.is_empty() {
                    self.links.remove(&target);
                }
            }
            if let Some(t) = self.nodes.get_mut(target) {
                t.links = t.links.saturating_sub(1);
            }
        }
        if node.id != self.root_id
            && let Some(&parent) = self.inos.get(&node.meta.parent)
        {
            if let Some(table) = self.children.get_mut(&parent) {
                let hash = self.hasher.hash_one(&node.meta.name[..]);
                if let Ok(claim) = table.find_entry(hash, |&i| i == ino) {
                    claim.remove();
                }
                if table.is_empty() {
                    self.children.remove(&parent);
                }
            }
            if node.meta.kind == EntryKind::Dir {
                // A directory naming itself as parent (only a hostile writer makes one)
                // counted itself.
                let p = if parent == ino {
                    Some(&mut node)
                } else {
                    self.nodes.get_mut(parent)
                };
                if let Some(p) = p {
                    p.subdirs = p.subdirs.saturating_sub(1);
                }
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
            match self.nodes.get(ino) {
                Some(n) => ino = self.parent_ino(n),
                None => return false,
            }
        }
        false
    }

    /// Every inode in the tree.
    pub fn inos(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.inos()
    }

    /// The `/`-separated path of `ino` from the root (lossy UTF-8), `None` when it is not
    /// attached to the root (an orphan of a concurrent directory delete).
    /// An unnamed entry goes by its oldest live link's name.
    pub fn path_of(&self, mut ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let mut node = self.nodes.get(ino)?;
            if node.meta.unnamed {
                node = self.nodes.get(*self.links_of(ino).first()?)?;
            }
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
        self.nodes.len
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::namespace::{Timestamp, UserId, VolumeId};
    use crate::util::hlc::Hlc;

    fn id(n: u8) -> EntryId {
        EntryId([n; 16])
    }

    /// An entry `n` named `name` in directory `parent`, written at `hlc` by node `origin`.
    fn entry(n: u8, parent: u8, name: &str, hlc: u64, origin: u64) -> (Entry, EntryMeta) {
        let kind = if n < 4 {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        let entry = Entry {
            id: id(n),
            volume: VolumeId([0; 16]),
            hlc: Hlc(hlc << 16),
            author: UserId([0; 32]),
            origin,
            deleted: false,
            purge: false,
            seen: vec![(origin, Hlc(hlc << 16))],
            chunks: vec![],
            payload: vec![],
            signature: [0; 64],
        };
        let t = Timestamp { secs: 0, nanos: 0 };
        let meta =
            EntryMeta::new_empty(id(parent), name.as_bytes().to_vec(), kind, 0o644, (0, 0), t);
        (entry, meta)
    }

    fn upsert(tree: &mut Tree, (e, m): (Entry, EntryMeta)) {
        tree.upsert(&e, m);
    }

    #[test]
    fn concurrent_claims_keep_both_with_the_later_under_the_name() {
        let mut tree = Tree::new(id(0));
        upsert(&mut tree, entry(0, 0, "", 1, 1));
        upsert(&mut tree, entry(10, 0, "a.txt", 100, 1));
        upsert(&mut tree, entry(20, 0, "a.txt", 200, 2));
        upsert(&mut tree, entry(30, 0, "b", 50, 1));
        let ino = |n| tree.ino_if_known(&id(n)).unwrap();
        let (i10, i20, i30) = (ino(10), ino(20), ino(30));
        let list = tree.children(ROOT_INO);
        let loser_name = b"a (conflict 00000001 1970-01-01 00.00).txt".to_vec();
        assert_eq!(
            list,
            vec![
                (b"a.txt".to_vec(), i20),
                (loser_name.clone(), i10),
                (b"b".to_vec(), i30)
            ]
        );
        assert_eq!(tree.lookup(ROOT_INO, b"a.txt"), Some(i20));
        assert_eq!(tree.lookup(ROOT_INO, &loser_name), Some(i10));
        assert_eq!(
            tree.lookup(ROOT_INO, b"a (conflict 00000009 1970-01-01 00.00).txt"),
            None
        );
        assert_eq!(tree.lookup(ROOT_INO, b"nope"), None);
        // The winner goes: the other claim shows under the name again.
        tree.remove(&id(20));
        assert_eq!(tree.lookup(ROOT_INO, b"a.txt"), Some(i10));
        assert_eq!(tree.children(ROOT_INO).len(), 2);
        // A new version of an entry replaces its claim (a rename here).
        upsert(&mut tree, entry(30, 0, "c", 60, 1));
        assert_eq!(tree.lookup(ROOT_INO, b"b"), None);
        assert_eq!(tree.lookup(ROOT_INO, b"c"), Some(i30));
        assert_eq!(tree.children(ROOT_INO).len(), 2);
        assert_eq!(tree.len(), 3);
    }

    #[test]
    fn claims_resolve_and_count_links_and_unnamed_entries_claim_no_name() {
        let mut tree = Tree::new(id(0));
        upsert(&mut tree, entry(0, 0, "", 1, 1));
        upsert(&mut tree, entry(1, 0, "d", 2, 1));
        upsert(&mut tree, entry(2, 1, "sub", 3, 1));
        upsert(&mut tree, entry(10, 1, "f", 4, 1));
        let ino = |tree: &Tree, n| tree.ino_if_known(&id(n)).unwrap();
        let (d, f) = (ino(&tree, 1), ino(&tree, 10));
        assert_eq!(tree.claim(d, b"f"), Some(f));
        assert_eq!(tree.resolve(f), f);
        assert_eq!(tree.nlink(d), 3);
        assert_eq!(tree.nlink(ROOT_INO), 3);
        assert_eq!(tree.nlink(f), 1);
        let (e, mut m) = entry(10, 1, "", 5, 1);
        m.unnamed = true;
        tree.upsert(&e, m);
        assert_eq!(tree.children(d).len(), 1);
        assert_eq!(tree.claim(d, b"f"), None);
        assert_eq!(tree.claim(d, b""), None);
        assert!(tree.get(f).is_some());
        // Named again, it claims its name; removed, it is gone.
        upsert(&mut tree, entry(10, 1, "g", 6, 1));
        assert_eq!(tree.claim(d, b"g"), Some(f));
        tree.remove(&id(10));
        assert_eq!(tree.nlink(f), 0);
        assert_eq!(tree.children(d).len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Entry, parent (0 is the root), name, clock.
        Upsert(u8, u8, u8, u64),
        /// Link entry (12..16), parent, name, target (2..12: directories make it dangle),
        /// clock.
        Link(u8, u8, u8, u8, u64),
        /// A file entry (4..12) left unnamed, clock.
        Unname(u8, u64),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u8..12, 0u8..4, 0u8..3, 1u64..50).prop_map(|(n, p, name, hlc)| Op::Upsert(n, p, name, hlc)),
            2 => (12u8..16, 0u8..4, 0u8..3, 2u8..12, 1u64..50)
                .prop_map(|(n, p, name, t, hlc)| Op::Link(n, p, name, t, hlc)),
            1 => (4u8..12, 1u64..50).prop_map(|(n, hlc)| Op::Unname(n, hlc)),
            1 => (1u8..16).prop_map(Op::Remove),
        ]
    }

    /// A live entry of the model.
    struct Live {
        parent: u8,
        name: Vec<u8>,
        version: Version,
        unnamed: bool,
        target: Option<u8>,
        /// Unnamed and seen with a link since.
        linked: bool,
    }

    proptest! {
        /// Whatever order versions and deletions arrive in, the tree shows what the live
        /// entries say: per directory, each claimed name's highest version under the name and
        /// the others under conflict names, a link as the entry it names (hidden while that
        /// entry is missing or a directory), unnamed entries nowhere; every directory's count
        /// of child directories and every file's count of names.
        #[test]
        fn the_tree_shows_exactly_the_live_entries(ops in proptest::collection::vec(op(), 1..80)) {
            let mut tree = Tree::new(id(0));
            upsert(&mut tree, entry(0, 0, "", 1, 0));
            let mut live: BTreeMap<u8, Live> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Upsert(n, parent, name, hlc) => {
                        let name = format!("n{name}");
                        let (e, m) = entry(n, parent, &name, hlc, u64::from(n));
                        live.insert(n, Live { parent, name: name.into_bytes(), version: e.version(), unnamed: false, target: None, linked: false });
                        tree.upsert(&e, m);
                    }
                    Op::Link(n, parent, name, target, hlc) => {
                        let name = format!("n{name}");
                        let (e, mut m) = entry(n, parent, &name, hlc, u64::from(n));
                        m.kind = EntryKind::Link;
                        m.target = Some(id(target));
                        live.insert(n, Live { parent, name: name.into_bytes(), version: e.version(), unnamed: false, target: Some(target), linked: false });
                        if let Some(t) = live.get_mut(&target) {
                            t.linked |= t.unnamed;
                        }
                        tree.upsert(&e, m);
                    }
                    Op::Unname(n, hlc) => {
                        let (e, mut m) = entry(n, 1, "", hlc, u64::from(n));
                        m.unnamed = true;
                        let linked = live.get(&n).is_some_and(|l| l.unnamed && l.linked)
                            || live.values().any(|k| k.target == Some(n));
                        live.insert(n, Live { parent: 1, name: Vec::new(), version: e.version(), unnamed: true, target: None, linked });
                        tree.upsert(&e, m);
                    }
                    Op::Remove(n) => {
                        live.remove(&n);
                        tree.remove(&id(n));
                    }
                }
            }
            prop_assert_eq!(tree.len(), live.len() + 1);
            // What a live entry is shown as: itself, or a link's target when that is a live
            // file; `None` when it is a dangling link.
            let shown_as = |n: u8| -> Option<u8> {
                match live[&n].target {
                    None => Some(n),
                    Some(t) => (t >= 4 && live.contains_key(&t)).then_some(t),
                }
            };
            for dir in 0u8..4 {
                let mut claims: Vec<(Vec<u8>, Version, u8)> = live
                    .iter()
                    .filter(|(n, l)| l.parent == dir && !l.unnamed && shown_as(**n).is_some())
                    .map(|(&n, l)| (l.name.clone(), l.version, n))
                    .collect();
                claims.sort();
                let mut expected = Vec::new();
                for group in claims.chunk_by(|a, b| a.0 == b.0) {
                    let ((name, _, winner), losers) = group.split_last().unwrap();
                    expected.push((name.clone(), shown_as(*winner).unwrap()));
                    let losers: Vec<(Version, u8)> =
                        losers.iter().map(|(_, v, n)| (*v, *n)).collect();
                    for (shown, n) in loser_names(name, &losers, &NodeNamer::default()) {
                        expected.push((shown, shown_as(n).unwrap()));
                    }
                }
                let shown: Vec<(Vec<u8>, u8)> = match tree.ino_if_known(&id(dir)) {
                    Some(ino) => tree
                        .children(ino)
                        .into_iter()
                        .map(|(name, ino)| (name, tree.get(ino).unwrap().id.0[0]))
                        .collect(),
                    None => Vec::new(),
                };
                prop_assert_eq!(&shown, &expected);
                if let Some(ino) = tree.ino_if_known(&id(dir)) {
                    prop_assert_eq!(tree.has_children(ino), !expected.is_empty());
                    for (name, n) in &expected {
                        let found = tree.lookup(ino, name).map(|i| tree.get(i).unwrap().id.0[0]);
                        prop_assert_eq!(found, Some(*n));
                    }
                    if let Some(node) = tree.get(ino) {
                        let subdirs = live.iter().filter(|(n, l)| l.parent == dir && **n < 4 && !l.unnamed).count();
                        prop_assert_eq!(node.subdirs as usize, subdirs);
                    }
                }
            }
            for (&n, l) in live.iter().filter(|(n, _)| (4u8..12).contains(*n)) {
                let links = live.values().filter(|k| k.target == Some(n)).count();
                let ino = tree.ino_if_known(&id(n)).unwrap();
                prop_assert_eq!(tree.nlink(ino) as usize, usize::from(!l.unnamed) + links);
            }
            prop_assert!(
                tree.orphans(std::time::Instant::now()).is_empty(),
                "no orphan without concurrent versions met"
            );
            for n in 4u8..12 {
                tree.contested(&id(n));
            }
            let mut orphans: Vec<u8> = tree
                .orphans(std::time::Instant::now())
                .into_iter()
                .map(|(ino, _)| tree.get(ino).unwrap().id.0[0])
                .collect();
            orphans.sort_unstable();
            let expected: Vec<u8> = live
                .iter()
                .filter(|(n, l)| l.unnamed && l.linked && !live.values().any(|k| k.target == Some(**n)))
                .map(|(n, _)| *n)
                .collect();
            prop_assert_eq!(orphans, expected);
        }
    }
}
