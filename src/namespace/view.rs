//! The directory view: how the entries that name one directory as parent become the names a
//! user sees. Two live entries can claim the same name (concurrent creates or renames on
//! different nodes); both are kept: the later version shows under the name, every other one as
//! `name (conflict NODE YYYY-MM-DD HH.MM).ext` ([`conflict_name`]). A write is never dropped
//! silently. The claims of each directory are kept by `fs::tree`; this module names the losers.
//!
//! NODE is the name of the node that wrote the losing version, found by its origin tag through
//! a [`NodeNames`] the node plugs in (the membership view lives above this layer); a tag no
//! name is known for shows as its hex form. The time is the version's clock, UTC, to the minute.

use std::sync::Arc;

use parking_lot::RwLock;

use super::Version;
use super::entry::MAX_NAME_LEN;

/// Names of nodes by origin tag (`namespace::entry::node_tag` of the peer id's bytes).
pub trait NodeNames: Send + Sync {
    /// The name of the node whose tag is `origin`, when known.
    fn name_of(&self, origin: u64) -> Option<String>;
}

/// A shared, replaceable [`NodeNames`]: every tree of a mount holds a clone, the node sets the
/// lookup once its membership view exists. Until then (and in tests) tags show in hex.
#[derive(Clone, Default)]
pub struct NodeNamer(Arc<RwLock<Option<Arc<dyn NodeNames>>>>);

impl NodeNamer {
    pub fn set(&self, names: Arc<dyn NodeNames>) {
        *self.0.write() = Some(names);
    }

    /// What a conflict name shows for `origin`: the node's name with `/` and control
    /// characters replaced (it becomes part of a file name), or the tag in hex.
    pub fn label(&self, origin: u64) -> String {
        let name = self.0.read().as_ref().and_then(|n| n.name_of(origin));
        match name {
            Some(name) if !name.is_empty() => name
                .chars()
                .map(|c| if c == '/' || c.is_control() { '_' } else { c })
                .collect(),
            _ => format!("{:08x}", origin as u32),
        }
    }
}

/// `YYYY-MM-DD HH.MM` (UTC) of a time in milliseconds since the epoch.
pub fn utc_minute(millis: u64) -> String {
    let (y, mo, d, h, mi) = civil(millis);
    format!("{y:04}-{mo:02}-{d:02} {h:02}.{mi:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in milliseconds since the epoch.
pub fn utc_rfc3339(millis: u64) -> String {
    let (y, mo, d, h, mi) = civil(millis);
    let s = (millis / 1000) % 60;
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// (year, month, day, hour, minute) of a time in milliseconds since the epoch, UTC (the
/// proleptic Gregorian calendar, by days since 1970-01-01).
fn civil(millis: u64) -> (i64, u32, u32, u32, u32) {
    let secs = millis / 1000;
    let days = (secs / 86_400) as i64;
    let (h, mi) = (((secs % 86_400) / 3600) as u32, ((secs % 3600) / 60) as u32);
    let (y, mo, d) = crate::util::calendar::civil_from_days(days);
    (y, mo, d, h, mi)
}

const MARKER: &[u8] = b" (conflict ";

/// Where the extension starts in `name`: at its last dot, unless that dot begins the name (a
/// dotfile) or ends it; `name.len()` when there is none.
fn extension_at(name: &[u8]) -> usize {
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => name.len(),
        Some(p) if p + 1 == name.len() => name.len(),
        Some(p) => p,
    }
}

/// The name under which a losing version shows: `report (conflict laptop 2026-12-02
/// 10.31).txt`; `n` > 1 tells apart losers that would otherwise get the same name (same node,
/// same minute): `(conflict laptop 2026-12-02 10.31 2)`. The stem is cut (at a character
/// boundary when it is UTF-8) so that the result fits in [`MAX_NAME_LEN`].
pub fn conflict_name_nth(name: &[u8], version: &Version, names: &NodeNamer, n: usize) -> Vec<u8> {
    let mut tag = format!(
        "{}{} {}",
        std::str::from_utf8(MARKER).expect("ASCII"),
        names.label(version.origin),
        utc_minute(version.hlc.millis())
    );
    if n > 1 {
        tag.push_str(&format!(" {n}"));
    }
    tag.push(')');
    let at = extension_at(name);
    let (stem, ext) = name.split_at(at);
    let mut cut = stem
        .len()
        .min(MAX_NAME_LEN.saturating_sub(tag.len() + ext.len()));
    if let Ok(text) = std::str::from_utf8(stem) {
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    let stem = &stem[..cut];
    let mut out = Vec::with_capacity(stem.len() + tag.len() + ext.len());
    out.extend_from_slice(stem);
    out.extend_from_slice(tag.as_bytes());
    // An extension too long to keep with the tag is cut too (a name is at most MAX_NAME_LEN).
    let ext_room = MAX_NAME_LEN.saturating_sub(out.len());
    out.extend_from_slice(&ext[..ext.len().min(ext_room)]);
    out
}

/// [`conflict_name_nth`] for the first loser of a name.
pub fn conflict_name(name: &[u8], version: &Version, names: &NodeNamer) -> Vec<u8> {
    conflict_name_nth(name, version, names, 1)
}

/// The names the losing claims of `name` show under, in the order given (oldest first): each
/// its [`conflict_name`], numbered when two would be the same.
pub fn loser_names<T: Copy>(
    name: &[u8],
    losers: &[(Version, T)],
    names: &NodeNamer,
) -> Vec<(Vec<u8>, T)> {
    let mut out: Vec<(Vec<u8>, T)> = Vec::with_capacity(losers.len());
    for (ver, item) in losers {
        let mut n = 1;
        let shown = loop {
            let candidate = conflict_name_nth(name, ver, names, n);
            if !out.iter().any(|(taken, _)| *taken == candidate) {
                break candidate;
            }
            n += 1;
        };
        out.push((shown, *item));
    }
    out
}

/// The names a shown conflict name may have been made from: for a ` (conflict ` marker and
/// each `)` after it, the name without what lies between (the node's name may itself hold a
/// `)`). A stem cut to fit is not recovered: such a name is found by listing.
pub fn conflict_bases(shown: &[u8]) -> Vec<Vec<u8>> {
    let Some(start) = shown.windows(MARKER.len()).rposition(|w| w == MARKER) else {
        return Vec::new();
    };
    shown[start..]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b')')
        .map(|(i, _)| {
            let mut base = shown[..start].to_vec();
            base.extend_from_slice(&shown[start + i + 1..]);
            base
        })
        .filter(|b| !b.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::UserId;
    use crate::util::hlc::Hlc;

    /// 2026-12-02 10:31:07.5 UTC.
    const T: u64 = 1_796_207_467_500;

    fn ver(millis: u64, origin: u64) -> Version {
        Version {
            hlc: Hlc(millis << 16),
            author: UserId([0; 32]),
            origin,
        }
    }

    struct Known;
    impl NodeNames for Known {
        fn name_of(&self, origin: u64) -> Option<String> {
            match origin {
                7 => Some("laptop".into()),
                8 => Some("a/b\nc".into()),
                _ => None,
            }
        }
    }

    fn named() -> NodeNamer {
        let n = NodeNamer::default();
        n.set(Arc::new(Known));
        n
    }

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00.00");
        assert_eq!(utc_minute(T), "2026-12-02 10.31");
        assert_eq!(utc_rfc3339(T), "2026-12-02T10:31:07Z");
        // A leap day, and the last minute of a year.
        assert_eq!(utc_minute(951_782_400_000), "2000-02-29 00.00");
        assert_eq!(utc_minute(1_798_761_599_000), "2026-12-31 23.59");
    }

    #[test]
    fn a_conflict_name_shows_the_node_and_the_minute_before_the_extension() {
        let names = named();
        assert_eq!(
            s(conflict_name(b"report.txt", &ver(T, 7), &names)),
            "report (conflict laptop 2026-12-02 10.31).txt"
        );
        assert_eq!(
            s(conflict_name(b"archive.tar.gz", &ver(T, 7), &names)),
            "archive.tar (conflict laptop 2026-12-02 10.31).gz"
        );
        // Dotfiles, names without an extension, a trailing dot: at the end.
        assert_eq!(
            s(conflict_name(b".bashrc", &ver(T, 7), &names)),
            ".bashrc (conflict laptop 2026-12-02 10.31)"
        );
        assert_eq!(
            s(conflict_name(b"Makefile", &ver(T, 7), &names)),
            "Makefile (conflict laptop 2026-12-02 10.31)"
        );
        assert_eq!(
            s(conflict_name(b"odd.", &ver(T, 7), &names)),
            "odd. (conflict laptop 2026-12-02 10.31)"
        );
    }

    #[test]
    fn an_unknown_node_shows_as_its_tag_and_a_name_is_made_safe_for_a_file_name() {
        let names = named();
        assert_eq!(
            s(conflict_name(b"a.txt", &ver(T, 0x1234_5678_9abc), &names)),
            "a (conflict 56789abc 2026-12-02 10.31).txt"
        );
        assert_eq!(
            s(conflict_name(b"a.txt", &ver(T, 7), &NodeNamer::default())),
            "a (conflict 00000007 2026-12-02 10.31).txt"
        );
        assert_eq!(
            s(conflict_name(b"a.txt", &ver(T, 8), &names)),
            "a (conflict a_b_c 2026-12-02 10.31).txt"
        );
    }

    #[test]
    fn a_long_name_is_cut_to_fit_keeping_its_extension() {
        let names = named();
        let long = format!("{}.txt", "é".repeat(200));
        let shown = s(conflict_name(long.as_bytes(), &ver(T, 7), &names));
        assert!(shown.len() <= MAX_NAME_LEN, "{}", shown.len());
        assert!(
            shown.ends_with(" (conflict laptop 2026-12-02 10.31).txt"),
            "{shown}"
        );
        assert!(shown.starts_with("éé"));
    }

    #[test]
    fn losers_with_the_same_name_are_numbered_and_every_shown_name_leads_back() {
        let names = named();
        let losers = [(ver(T, 7), 1u64), (ver(T + 1000, 7), 2), (ver(T, 9), 3)];
        let shown = loser_names(b"r.txt", &losers, &names);
        let shown_s: Vec<String> = shown.iter().map(|(n, _)| s(n.clone())).collect();
        assert_eq!(
            shown_s,
            [
                "r (conflict laptop 2026-12-02 10.31).txt",
                "r (conflict laptop 2026-12-02 10.31 2).txt",
                "r (conflict 00000009 2026-12-02 10.31).txt",
            ]
        );
        for (n, _) in &shown {
            assert!(conflict_bases(n).contains(&b"r.txt".to_vec()), "{n:?}");
        }
        // A node name holding a parenthesis still leads back.
        assert!(
            conflict_bases(b"r (conflict x) y 2026-12-02 10.31).txt").contains(&b"r.txt".to_vec())
        );
        assert!(conflict_bases(b"plain.txt").is_empty());
    }
}
