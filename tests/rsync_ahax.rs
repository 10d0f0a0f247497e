//! `rsync -aHAX` of a tree with hard links, FIFOs, device nodes, symlinks, odd modes and
//! owners, times and extended attributes into the mount and back gives the same tree: what a
//! backup tool pointed at the mount expects of a disk.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn mknod(p: &Path, mode: u32, dev: u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod reads nothing else.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev as libc::dev_t) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

fn set_mtime(p: &Path, secs: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: a valid path and two timespecs; AT_SYMLINK_NOFOLLOW sets a symlink's own time.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

/// The tree: every kind of entry a home directory or a root filesystem holds.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/deep")).unwrap();
    fs::create_dir(root.join("shared")).unwrap();
    fs::create_dir(root.join("dev")).unwrap();
    fs::write(root.join("docs/report.txt"), b"the report\n".repeat(1000)).unwrap();
    fs::write(
        root.join("docs/deep/big.bin"),
        random_bytes(7, 3 * 1024 * 1024 + 17),
    )
    .unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    // A hard-link group of three names in two directories, and a pair.
    fs::write(root.join("docs/linked"), b"one inode, three names\n").unwrap();
    fs::hard_link(root.join("docs/linked"), root.join("docs/deep/linked-2")).unwrap();
    fs::hard_link(root.join("docs/linked"), root.join("linked-3")).unwrap();
    fs::write(root.join("pair-a"), random_bytes(8, 70_000)).unwrap();
    fs::hard_link(root.join("pair-a"), root.join("pair-b")).unwrap();
    // Special files.
    mknod(&root.join("dev/fifo"), libc::S_IFIFO | 0o640, 0);
    mknod(
        &root.join("dev/null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    );
    mknod(
        &root.join("dev/loop-big-minor"),
        libc::S_IFBLK | 0o660,
        libc::makedev(7, 300),
    );
    // Symlinks, relative and dangling.
    symlink("../docs/report.txt", root.join("shared/to-report")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    // Odd modes and owners.
    fs::set_permissions(root.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("docs/deep"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::set_permissions(root.join("pair-a"), fs::Permissions::from_mode(0o4755)).unwrap();
    lchown(&root.join("empty"), 65534, 65533);
    lchown(&root.join("docs/deep"), 1000, 2000);
    lchown(&root.join("dangling"), 1234, 5678);
    // Extended attributes on a file, a directory and a hard-link group.
    set_xattr(
        &root.join("docs/report.txt"),
        b"user.origin",
        b"scanner 3",
        0,
    )
    .unwrap();
    set_xattr(&root.join("docs/report.txt"), b"user.empty", b"", 0).unwrap();
    set_xattr(&root.join("docs"), b"user.colour", b"blue", 0).unwrap();
    set_xattr(&root.join("docs/linked"), b"user.links", &[0, 1, 2, 255], 0).unwrap();
    set_xattr(&root.join("pair-a"), b"trusted.kept", b"by root", 0).unwrap();
    // Times last, deepest first (a change inside a directory moves its mtime).
    for (rel, t) in [
        ("docs/deep/big.bin", 1_600_000_000),
        ("docs/deep/linked-2", 1_600_000_100),
        ("docs/deep", 1_600_000_200),
        ("docs/report.txt", 1_500_000_000),
        ("docs", 1_500_000_100),
        ("dev/fifo", 1_400_000_000),
        ("dev/null", 1_400_000_001),
        ("dev", 1_400_000_002),
        ("dangling", 1_300_000_000),
        ("shared/to-report", 1_300_000_001),
        ("shared", 1_300_000_002),
        ("empty", 1_200_000_000),
    ] {
        set_mtime(&root.join(rel), t);
    }
}

/// Everything rsync -aHAX promises to keep, per path: type, permissions, owner, device
/// number, content or target, mtime (seconds) and extended attributes; plus which paths are
/// names of one inode.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    stat: Stat,
    mtime: i64,
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn snapshot(root: &Path) -> (BTreeMap<PathBuf, Entry>, BTreeSet<BTreeSet<PathBuf>>) {
    let mut entries = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let m = fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            if t.is_dir() {
                stack.push(path.clone());
            } else if m.nlink() > 1 {
                by_ino.entry(m.ino()).or_default().insert(rel.clone());
            }
            entries.insert(
                rel,
                Entry {
                    stat: Stat::of(&m),
                    mtime: m.mtime(),
                    content: t.is_file().then(|| fs::read(&path).unwrap()),
                    target: t.is_symlink().then(|| fs::read_link(&path).unwrap()),
                    xattrs: xattrs(&path).unwrap(),
                },
            );
        }
    }
    (entries, by_ino.into_values().collect())
}

fn rsync(from: &Path, to: &Path) {
    let out = run_cmd(
        Command::new("rsync")
            .args(["-aHAX", "--numeric-ids"])
            .arg(format!("{}/", from.display()))
            .arg(format!("{}/", to.display())),
        std::time::Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "rsync -aHAX {} {}: {}",
        from.display(),
        to.display(),
        out_text(&out)
    );
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    let (ea, la) = snapshot(a);
    let (eb, lb) = snapshot(b);
    for (rel, entry) in &ea {
        assert_eq!(
            Some(entry),
            eb.get(rel),
            "{} differs between {} and {}",
            rel.display(),
            a.display(),
            b.display()
        );
    }
    assert_eq!(
        ea.keys().collect::<Vec<_>>(),
        eb.keys().collect::<Vec<_>>(),
        "the same paths"
    );
    assert_eq!(la, lb, "the same hard-link groups");
}

#[test]
fn rsync_ahax_into_the_mount_and_back_is_identical() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 256);
    let src = reference.root.join("src");
    let back = reference.root.join("back");
    let into = n.mnt.join("copy");
    for d in [&src, &back, &into] {
        fs::create_dir(d).unwrap();
    }
    make_tree(&src);

    rsync(&src, &into);
    assert_same_tree(&src, &into);
    rsync(&into, &back);
    assert_same_tree(&src, &back);
    // And rsync itself finds nothing to do (checksums, not only sizes and times).
    let out = run_cmd(
        Command::new("rsync")
            .args(["-naHAXc", "--numeric-ids", "--itemize-changes"])
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", into.display())),
        std::time::Duration::from_secs(300),
    );
    assert!(out.status.success(), "rsync -n: {}", out_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "rsync would change the copy in the mount"
    );
}
