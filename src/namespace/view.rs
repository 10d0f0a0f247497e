//! The directory view: how the entries that name one directory as parent become the names a
//! user sees. Two live entries can claim the same name (concurrent creates or renames on
//! different nodes); both are kept: the later version shows under the name, every other one as
//! `name.conflict-<node>-<time>`. A write is never dropped silently. The claims of each
//! directory are kept by `fs::tree`; this module names the losers.

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
    fn a_conflict_name_shows_the_node_and_the_time() {
        let name = conflict_name(b"a.txt", &ver(100, 1));
        assert_eq!(
            String::from_utf8(name).unwrap(),
            "a.txt.conflict-00000001-100"
        );
    }
}
