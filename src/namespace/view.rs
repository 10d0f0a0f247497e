//! The directory view: how the entries that name one directory as parent become the names a
//! user sees. Two live entries can claim the same name (concurrent creates or renames on
//! different nodes); both are kept: the later version shows under the name, every other one as
//! `name.conflict-<node>-<time>`. A write is never dropped silently.

use std::collections::BTreeMap;

use super::Version;

/// The name under which a losing entry is shown.
pub fn conflict_name(name: &[u8], version: &Version) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(
        format!(
            ".conflict-{:08x}-{}",
            version.origin as u32,
            version.hlc.millis()
        )
        .as_bytes(),
    );
    out
}

/// The children of one directory, by name, each name with every entry that claims it.
#[derive(Debug, Clone)]
pub struct Children<V> {
    by_name: BTreeMap<Vec<u8>, Vec<(Version, V)>>,
}

impl<V> Default for Children<V> {
    fn default() -> Self {
        Self {
            by_name: BTreeMap::new(),
        }
    }
}

impl<V: Copy + PartialEq> Children<V> {
    pub fn insert(&mut self, name: Vec<u8>, version: Version, value: V) {
        let claims = self.by_name.entry(name).or_default();
        claims.retain(|(_, v)| *v != value);
        claims.push((version, value));
        // Winner last: the highest version.
        claims.sort_by_key(|c| c.0);
    }

    pub fn remove(&mut self, name: &[u8], value: V) {
        if let Some(claims) = self.by_name.get_mut(name) {
            claims.retain(|(_, v)| *v != value);
            if claims.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Resolves a name as shown by [`Children::list`].
    pub fn lookup(&self, name: &[u8]) -> Option<V> {
        if let Some(claims) = self.by_name.get(name) {
            return claims.last().map(|(_, v)| *v);
        }
        let marker = b".conflict-";
        let pos = name.windows(marker.len()).rposition(|w| w == marker)?;
        let claims = self.by_name.get(&name[..pos])?;
        let (_, losers) = claims.split_last()?;
        losers
            .iter()
            .find(|(ver, _)| conflict_name(&name[..pos], ver) == name)
            .map(|(_, v)| *v)
    }

    /// Every child with the name it is shown under, in name order of the claimed names.
    pub fn list(&self) -> Vec<(Vec<u8>, V)> {
        let mut out = Vec::with_capacity(self.by_name.len());
        for (name, claims) in &self.by_name {
            if let Some(((_, winner), losers)) = claims.split_last() {
                out.push((name.clone(), *winner));
                for (ver, v) in losers {
                    out.push((conflict_name(name, ver), *v));
                }
            }
        }
        out
    }

    /// Is any name claimed?
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::UserId;
    use crate::util::hlc::Hlc;

    fn ver(hlc: u64, origin: u64) -> Version {
        Version {
            hlc: Hlc(hlc << 16),
            author: UserId([0; 32]),
            origin,
        }
    }

    #[test]
    fn concurrent_claims_keep_both_with_the_later_under_the_name() {
        let mut c = Children::default();
        c.insert(b"a.txt".to_vec(), ver(100, 1), 10u64);
        c.insert(b"a.txt".to_vec(), ver(200, 2), 20u64);
        c.insert(b"b".to_vec(), ver(50, 1), 30u64);
        let list = c.list();
        assert_eq!(list.len(), 3);
        assert_eq!(c.lookup(b"a.txt"), Some(20));
        let loser_name = conflict_name(b"a.txt", &ver(100, 1));
        assert_eq!(
            String::from_utf8(loser_name.clone()).unwrap(),
            "a.txt.conflict-00000001-100"
        );
        assert!(list.contains(&(loser_name.clone(), 10)));
        assert_eq!(c.lookup(&loser_name), Some(10));
        assert_eq!(c.lookup(b"a.txt.conflict-00000009-100"), None);
        c.remove(b"a.txt", 20);
        assert_eq!(c.lookup(b"a.txt"), Some(10));
        assert_eq!(c.len(), 2);
        // Re-inserting the same value under a new version replaces its claim.
        c.insert(b"b".to_vec(), ver(60, 1), 30u64);
        assert_eq!(c.len(), 2);
    }
}
