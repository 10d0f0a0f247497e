//! Node names: what a person calls a node (`laptop`, `nas`), shown wherever peers are.
//!
//! A name is a claim: a node says it in its announcement, and in a certified network its
//! certificate carries it too. A name received is checked ([`check_name`]) before it is kept,
//! and names are not unique: [`labels`] turns (peer id, name) pairs into display labels
//! that stay unambiguous, adding a short peer id to a name more than one node claims.

use std::collections::HashMap;

pub use crate::admission::names::{MAX_NAME_BYTES, NameError, check_name};

/// A peer id shortened for display: its first 4 and last 4 characters (`12D3…abcd`).
pub fn short_id(peer_id: &str) -> String {
    let chars: Vec<char> = peer_id.chars().collect();
    if chars.len() <= 9 {
        return peer_id.to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Display labels for a set of nodes, given as (peer id, name) with an empty name for a node
/// that announced none: the name when exactly one node of the set claims it, `name (short id)`
/// when several do, the short id when there is no name. Keyed by peer id.
pub fn labels<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str)>) -> HashMap<String, String> {
    let nodes: Vec<(&str, &str)> = nodes.into_iter().collect();
    let mut claims: HashMap<&str, usize> = HashMap::new();
    for (_, name) in &nodes {
        *claims.entry(name).or_default() += 1;
    }
    nodes
        .iter()
        .map(|&(id, name)| {
            let label = if name.is_empty() {
                short_id(id)
            } else if claims[name] > 1 {
                format!("{name} ({})", short_id(id))
            } else {
                name.to_string()
            };
            (id.to_string(), label)
        })
        .collect()
}

/// This machine's host name, when it is a valid node name.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: a valid buffer and its length; gethostname NUL-terminates within it on success
    // (the last byte stays 0 if the name was truncated).
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    check_name(name).is_ok().then(|| name.to_string())
}

/// The name a node goes by when its config names none: the host name, else the short form of
/// its peer id.
pub fn default_name(peer_id: &str) -> String {
    host_name().unwrap_or_else(|| short_id(peer_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in [
            "laptop",
            "nas-2",
            "Büro PC",
            "📦",
            &"x".repeat(MAX_NAME_BYTES),
        ] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(
            check_name(&"x".repeat(10_000)),
            Err(NameError::TooLong(10_000))
        );
        // 64 bytes is the limit, whatever the characters: 22 three-byte characters are 66.
        assert_eq!(check_name(&"€".repeat(22)), Err(NameError::TooLong(66)));
        assert_eq!(check_name("lap\ntop"), Err(NameError::Control('\n')));
        assert_eq!(check_name("a\u{1b}[2Jb"), Err(NameError::Control('\u{1b}')));
        assert_eq!(check_name("a\u{7f}"), Err(NameError::Control('\u{7f}')));
        assert_eq!(check_name("a\u{85}"), Err(NameError::Control('\u{85}')));
        assert_eq!(
            check_name("pot\u{202e}pal"),
            Err(NameError::Control('\u{202e}'))
        );
        assert_eq!(check_name(" laptop"), Err(NameError::Padded));
        // A name that looks like another node's disambiguated label, or a nameless node's.
        assert_eq!(check_name("nas (12D3…abcd)"), Err(NameError::Ellipsis));
        assert_eq!(check_name("12D3…abcd"), Err(NameError::Ellipsis));
        assert_eq!(check_name("laptop "), Err(NameError::Padded));
    }

    #[test]
    fn short_ids_keep_both_ends() {
        let id = "12D3KooWGzXNqcJDs8xgTRYx5Gwp1hjpRk8Bd7k3cJN6EMcXabcd";
        assert_eq!(short_id(id), "12D3…abcd");
        assert_eq!(short_id("short"), "short");
    }

    #[test]
    fn labels_are_names_unless_shared_or_missing() {
        let (a, b, c, d) = (
            "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaa",
            "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbb",
            "12D3KooWCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCcccc",
            "12D3KooWDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDdddd",
        );
        let l = labels([(a, "laptop"), (b, "laptop"), (c, "nas"), (d, "")]);
        assert_eq!(l[a], "laptop (12D3…aaaa)");
        assert_eq!(l[b], "laptop (12D3…bbbb)");
        assert_eq!(l[c], "nas");
        assert_eq!(l[d], "12D3…dddd");
        // Every label differs, so a listing by label names every node.
        let mut all: Vec<&String> = l.values().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4);
        // Alone, a name is shown as it is.
        assert_eq!(labels([(a, "laptop"), (c, "nas")])[a], "laptop");
    }

    #[test]
    fn the_host_name_or_the_short_id_is_the_default() {
        let id = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaa";
        let name = default_name(id);
        assert_eq!(check_name(&name), Ok(()));
        match host_name() {
            Some(host) => assert_eq!(name, host),
            None => assert_eq!(name, "12D3…aaaa"),
        }
    }
}
