//! rename(2) and renameat2(2) on a real mount against a reference ext4: what replaces what,
//! errnos, RENAME_NOREPLACE and RENAME_EXCHANGE, `..` and link counts of moved directories,
//! and which times change.

mod common;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

conform_child!();

/// The names in `dir` (relative to `root`) with each file's content, sorted.
fn tree(root: &Path, dir: &str) -> io::Result<Vec<(String, Option<Vec<u8>>)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join(dir))? {
        let e = e?;
        let content = if e.file_type()?.is_file() {
            Some(fs::read(e.path())?)
        } else {
            None
        };
        out.push((e.file_name().to_string_lossy().into_owned(), content));
    }
    out.sort();
    Ok(out)
}

type Times = ((i64, i64), (i64, i64));

fn times(p: &Path) -> Times {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    ((m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()))
}

/// The times of `rel` on both sides, then a pause so that a change shows in ext4's times.
fn before(pair: &Pair, rel: &str) -> [Times; 2] {
    let t = pair.both(rel).map(|p| times(&p));
    std::thread::sleep(std::time::Duration::from_millis(20));
    t
}

/// Whether the mtime and ctime of what is now at `rel` changed since `then`, asserted the
/// same on both sides (what `Pair::same_times_since` does, for an inode that moved).
#[track_caller]
fn changed(pair: &Pair, rel: &str, then: [Times; 2]) -> (bool, bool) {
    let [mnt, reference] = pair.both(rel).map(|p| times(&p));
    let (m, r) = (
        (mnt.0 != then[0].0, mnt.1 != then[0].1),
        (reference.0 != then[1].0, reference.1 != then[1].1),
    );
    assert_eq!(
        m, r,
        "{rel}: (mtime, ctime) changed on the mount (left) and ext4 (right)"
    );
    m
}

#[test]
fn rename_replaces_and_refuses_as_on_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "rename");
    pair.same("setup", |r| {
        for d in ["a", "b", "empty", "full", "full/sub", "x"] {
            fs::create_dir(r.join(d))?;
        }
        fs::write(r.join("a/f"), b"f")?;
        fs::write(r.join("b/g"), b"g")?;
        fs::write(r.join("full/h"), b"h")?;
        fs::write(r.join("x/i"), b"i")
    })
    .unwrap();
    let errno = |what: &str, from: &str, to: &str, flags: u32| {
        pair.same(what, |r| rename2(r, from, to, flags))
            .unwrap_err()
    };

    // Over a file: the moved file's times, both directories'.
    let (moved, from, to) = (before(&pair, "a/f"), pair.stamp("a"), pair.stamp("b"));
    pair.same("file over file", |r| {
        rename2(r, "a/f", "b/g", 0)?;
        Ok((tree(r, "a")?, tree(r, "b")?))
    })
    .unwrap();
    assert_eq!(changed(&pair, "b/g", moved), (false, true));
    assert_eq!(pair.same_times_since(&from), (true, true));
    assert_eq!(pair.same_times_since(&to), (true, true));
    let (moved, dir) = (before(&pair, "b/g"), pair.stamp("b"));
    pair.same("within one dir", |r| rename2(r, "b/g", "b/g2", 0))
        .unwrap();
    assert_eq!(changed(&pair, "b/g2", moved), (false, true));
    assert_eq!(pair.same_times_since(&dir), (true, true));

    // Over directories.
    pair.same("dir over empty dir", |r| {
        rename2(r, "x", "empty", 0)?;
        tree(r, "empty")
    })
    .unwrap();
    assert_eq!(
        errno("dir over non-empty dir", "empty", "full", 0),
        libc::ENOTEMPTY
    );
    assert_eq!(errno("dir over file", "empty", "b/g2", 0), libc::ENOTDIR);
    assert_eq!(errno("file over dir", "b/g2", "full", 0), libc::EISDIR);
    assert_eq!(errno("missing source", "nothing", "b/z", 0), libc::ENOENT);
    assert_eq!(errno("into itself", "full", "full/sub/in", 0), libc::EINVAL);
    assert_eq!(
        errno("noreplace", "b/g2", "empty/i", libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    pair.same("noreplace to a free name", |r| {
        rename2(r, "b/g2", "b/g3", libc::RENAME_NOREPLACE)?;
        tree(r, "b")
    })
    .unwrap();

    // A directory moved to another parent: link counts of both parents, its `..`.
    let sub = before(&pair, "full/sub");
    pair.same("move a dir", |r| {
        rename2(r, "full/sub", "b/sub", 0)?;
        let dotdot = fs::metadata(r.join("b/sub/.."))?.ino() == fs::metadata(r.join("b"))?.ino();
        Ok(dotdot)
    })
    .map(|dotdot| assert!(dotdot))
    .unwrap();
    changed(&pair, "b/sub", sub);
    for d in ["full", "b", "b/sub"] {
        pair.same_stat(d).unwrap();
    }

    // Over one name of a file with two: the file keeps the other, with a new ctime.
    pair.same("links", |r| {
        fs::write(r.join("b/l1"), b"l")?;
        fs::hard_link(r.join("b/l1"), r.join("a/l2"))
    })
    .unwrap();
    let kept = pair.stamp("a/l2");
    pair.same("over a linked name", |r| {
        rename2(r, "b/g3", "b/l1", 0)?;
        Ok((fs::read(r.join("b/l1"))?, fs::read(r.join("a/l2"))?))
    })
    .unwrap();
    assert_eq!(pair.same_times_since(&kept), (false, true));
    pair.same_stat("a/l2").unwrap();

    // RENAME_WHITEOUT (root only): a character device 0:0 stays at the old name.
    pair.same("whiteout", |r| {
        fs::write(r.join("a/w"), b"w")?;
        rename2(r, "a/w", "b/w", libc::RENAME_WHITEOUT)?;
        fs::read(r.join("b/w"))
    })
    .unwrap();
    let stat = pair.same_stat("a/w").unwrap();
    assert_eq!((stat.kind, stat.rdev), (libc::S_IFCHR, 0));
}

#[test]
fn rename_exchange_swaps_as_on_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "exchange");
    pair.same("setup", |r| {
        fs::create_dir(r.join("a"))?;
        fs::create_dir(r.join("b"))?;
        fs::create_dir(r.join("a/d"))?;
        fs::write(r.join("a/f"), b"f")?;
        fs::write(r.join("b/g"), b"g")
    })
    .unwrap();
    let exchange = libc::RENAME_EXCHANGE;
    let (f, g, a, b) = (
        before(&pair, "a/f"),
        before(&pair, "b/g"),
        pair.stamp("a"),
        pair.stamp("b"),
    );
    pair.same("file <-> file", |r| {
        rename2(r, "a/f", "b/g", exchange)?;
        Ok((fs::read(r.join("a/f"))?, fs::read(r.join("b/g"))?))
    })
    .unwrap();
    assert_eq!(changed(&pair, "b/g", f), (false, true));
    assert_eq!(changed(&pair, "a/f", g), (false, true));
    assert_eq!(pair.same_times_since(&a), (true, true));
    assert_eq!(pair.same_times_since(&b), (true, true));

    pair.same("dir <-> file", |r| {
        rename2(r, "a/d", "b/g", exchange)?;
        Ok((tree(r, "a")?, tree(r, "b")?))
    })
    .unwrap();
    for p in ["a", "b", "a/d", "b/g"] {
        pair.same_stat(p).unwrap();
    }
    assert_eq!(
        pair.same("missing side", |r| rename2(r, "a/f", "b/none", exchange))
            .unwrap_err(),
        libc::ENOENT
    );
    assert_eq!(
        pair.same("missing source", |r| rename2(r, "a/none", "b/g", exchange))
            .unwrap_err(),
        libc::ENOENT
    );
    pair.same("a dir under it", |r| fs::create_dir(r.join("b/g/in")))
        .unwrap();
    assert_eq!(
        pair.same("into its own subtree", |r| rename2(
            r, "b/g", "b/g/in", exchange
        ))
        .unwrap_err(),
        libc::EINVAL
    );
    pair.same("two names of one file", |r| {
        fs::hard_link(r.join("a/f"), r.join("a/f2"))?;
        rename2(r, "a/f", "a/f2", exchange)?;
        tree(r, "a")
    })
    .unwrap();
}
