//! Shell-tool scenarios through a real p2pfs FUSE mount, plus std::fs checks
//! of POSIX error codes and timestamp semantics. Needs root.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn started() -> Node {
    let mut n = Node::init();
    n.start();
    n
}

fn started_with_chunk(chunk: usize) -> Node {
    let mut n = Node::init();
    n.set_chunk_size(chunk);
    n.start();
    n
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn stat_field(n: &Node, fmt: &str, rel: &str) -> String {
    n.sh_ok(&format!("stat -c '{fmt}' '{rel}'"))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------

#[test]
fn mount_options_and_sigterm() {
    let mut n = started();
    let line = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(n.mnt.to_str().unwrap()))
        .map(|s| s.to_string())
        .expect("mount line");
    let opts = line.split(' ').nth(3).unwrap().to_string();
    assert!(
        line.split(' ').nth(2).unwrap().starts_with("fuse"),
        "{line}"
    );
    assert!(
        opts.contains("default_permissions"),
        "mount options lack default_permissions: {line}"
    );
    assert!(
        opts.contains("allow_other"),
        "mount options lack allow_other: {line}"
    );
    // An empty fresh filesystem.
    assert_eq!(
        root_names(&n.mnt),
        Vec::<String>::new(),
        "fresh mount is not empty"
    );
    // The user's personal volume is there too.
    assert!(n.p("@home").is_dir());
    assert!(fs::metadata(&n.mnt).unwrap().is_dir());
    n.stop();
}

#[test]
fn cp_big_file_and_tree() {
    let n = started();
    let scratch = n.scratch();
    let data = random_bytes(1, 8 * MIB + 12345);
    let local = scratch.join("big.bin");
    fs::write(&local, &data).unwrap();

    let out = run_cmd(
        std::process::Command::new("cp")
            .arg(&local)
            .arg(n.p("big.bin")),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "cp in: {}", out_text(&out));
    assert_eq!(
        fs::metadata(n.p("big.bin")).unwrap().len(),
        data.len() as u64
    );
    let out = run_cmd(
        std::process::Command::new("cmp")
            .arg(&local)
            .arg(n.p("big.bin")),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "cmp: {}", out_text(&out));
    assert_file_eq(&n.p("big.bin"), &data);

    // copy back out
    let back = scratch.join("back.bin");
    let out = run_cmd(
        std::process::Command::new("cp")
            .arg(n.p("big.bin"))
            .arg(&back),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "cp out: {}", out_text(&out));
    assert_file_eq(&back, &data);

    // cp within the mount
    n.sh_ok("cp big.bin big2.bin && cmp big.bin big2.bin");
    assert_file_eq(&n.p("big2.bin"), &data);

    // cp a small file over the big one (O_TRUNC path)
    fs::write(scratch.join("small.txt"), b"small\n").unwrap();
    let out = run_cmd(
        std::process::Command::new("cp")
            .arg(scratch.join("small.txt"))
            .arg(n.p("big2.bin")),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out_text(&out));
    assert_file_eq(&n.p("big2.bin"), b"small\n");
    assert_file_eq(&n.p("big.bin"), &data);

    // cp -r of a tree, diff -r
    let tree = scratch.join("tree");
    fs::create_dir_all(tree.join("a/b/c")).unwrap();
    fs::write(tree.join("top.txt"), b"top").unwrap();
    fs::write(tree.join("a/one.bin"), random_bytes(2, 300_000)).unwrap();
    fs::write(tree.join("a/b/empty"), b"").unwrap();
    fs::write(tree.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    let out = run_cmd(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(&tree)
            .arg(n.p("tree")),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out_text(&out));
    let out = run_cmd(
        std::process::Command::new("diff")
            .arg("-r")
            .arg(&tree)
            .arg(n.p("tree")),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "diff -r: {}", out_text(&out));
    assert_eq!(read_tree(&tree), read_tree(&n.p("tree")));
}

#[test]
fn cat_and_redirects() {
    let n = started();
    n.sh_ok("printf 'hello\\n' > a.txt && printf 'world\\n' > b.txt");
    assert_eq!(n.sh_ok("cat a.txt"), "hello\n");
    n.sh_ok("cat a.txt b.txt > c.txt");
    assert_eq!(n.sh_ok("cat c.txt"), "hello\nworld\n");
    assert_file_eq(&n.p("c.txt"), b"hello\nworld\n");
    // overwrite with shorter content via '>' (O_TRUNC)
    n.sh_ok("printf 'x' > c.txt");
    assert_eq!(n.sh_ok("cat c.txt"), "x");
    assert_eq!(fs::metadata(n.p("c.txt")).unwrap().len(), 1);
    // cat of a missing file fails
    let err = n.sh_fail("cat missing.txt");
    assert!(err.contains("No such file"), "{err}");
    // a pipe through the filesystem
    n.sh_ok("seq 1 20000 > seq.txt && sort -n -r seq.txt > rev.txt");
    let rev = fs::read_to_string(n.p("rev.txt")).unwrap();
    assert_eq!(rev.lines().count(), 20000);
    assert_eq!(rev.lines().next(), Some("20000"));
    assert_eq!(rev.lines().last(), Some("1"));
}

#[test]
fn mv_files_with_overwrite() {
    let n = started();
    fs::write(n.p("a"), b"AAA").unwrap();
    fs::write(n.p("b"), b"BBBBBB").unwrap();
    n.sh_ok("mv a a2");
    assert!(!n.p("a").exists());
    assert_file_eq(&n.p("a2"), b"AAA");
    // overwrite an existing file
    n.sh_ok("mv -f a2 b");
    assert!(!n.p("a2").exists());
    assert_file_eq(&n.p("b"), b"AAA");
    assert_eq!(root_names(&n.mnt).len(), 1);
    // into a directory, across directories, with overwrite there too
    n.sh_ok("mkdir d1 d2 && printf old > d2/b");
    n.sh_ok("mv b d1/");
    assert_file_eq(&n.p("d1/b"), b"AAA");
    n.sh_ok("mv -f d1/b d2/b");
    assert_file_eq(&n.p("d2/b"), b"AAA");
    assert!(!n.p("d1/b").exists());
    assert_eq!(fs::read_dir(n.p("d1")).unwrap().count(), 0);
    // std::fs::rename over an existing file
    fs::write(n.p("x"), b"xx").unwrap();
    fs::rename(n.p("x"), n.p("d2/b")).unwrap();
    assert_file_eq(&n.p("d2/b"), b"xx");
    // a big file keeps its content across a rename
    let data = random_bytes(3, 3 * MIB + 7);
    fs::write(n.p("big"), &data).unwrap();
    n.sh_ok("mv big d1/big.renamed");
    assert_file_eq(&n.p("d1/big.renamed"), &data);
    // renaming onto itself is a no-op
    fs::rename(n.p("d1/big.renamed"), n.p("d1/big.renamed")).unwrap();
    assert_file_eq(&n.p("d1/big.renamed"), &data);
}

#[test]
fn mv_directories_with_overwrite() {
    let n = started();
    n.sh_ok("mkdir -p src/sub && printf 1 > src/f1 && printf 2 > src/sub/f2");
    n.sh_ok("mv src dst");
    assert!(!n.p("src").exists());
    assert_file_eq(&n.p("dst/f1"), b"1");
    assert_file_eq(&n.p("dst/sub/f2"), b"2");
    // overwrite an empty directory (rename(2) semantics)
    n.sh_ok("mkdir empty && mv -T dst empty");
    assert!(!n.p("dst").exists());
    assert_file_eq(&n.p("empty/sub/f2"), b"2");
    // cannot overwrite a non-empty directory
    n.sh_ok("mkdir -p full && printf z > full/z && mkdir other");
    let err = n.sh_fail("mv -T other full");
    assert!(
        err.contains("not empty") || err.contains("exists"),
        "unexpected mv error: {err}"
    );
    expect_errno(
        "rename onto non-empty dir",
        fs::rename(n.p("other"), n.p("full")),
        &[libc::ENOTEMPTY, libc::EEXIST],
    );
    assert_file_eq(&n.p("full/z"), b"z");
    assert!(n.p("other").is_dir());
    // dir onto file and file onto dir fail
    expect_errno(
        "rename dir onto file",
        fs::rename(n.p("other"), n.p("full/z")),
        &[libc::ENOTDIR],
    );
    expect_errno(
        "rename file onto dir",
        fs::rename(n.p("full/z"), n.p("other")),
        &[libc::EISDIR],
    );
    // moving a dir into its own subtree fails
    expect_errno(
        "rename into own subdir",
        fs::rename(n.p("empty"), n.p("empty/sub/x")),
        &[libc::EINVAL],
    );
    // move a directory into another directory, deep content intact
    n.sh_ok("mv empty full/");
    assert_file_eq(&n.p("full/empty/sub/f2"), b"2");
    assert_file_eq(&n.p("full/empty/f1"), b"1");
    let names: Vec<String> = root_names(&n.mnt);
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["full".to_string(), "other".to_string()]);
}

#[test]
fn rm_files_and_trees() {
    let n = started();
    n.sh_ok("mkdir -p t/a/b && printf x > t/a/b/f && printf y > t/g && printf z > top");
    n.sh_ok("rm top");
    assert!(!n.p("top").exists());
    expect_errno("stat removed", fs::metadata(n.p("top")), &[libc::ENOENT]);
    let err = n.sh_fail("rm t");
    assert!(err.contains("Is a directory"), "{err}");
    n.sh_ok("rm -r t");
    assert!(!n.p("t").exists());
    assert!(root_names(&n.mnt).is_empty());
    let err = n.sh_fail("rm nothing");
    assert!(err.contains("No such file"), "{err}");
    // a file can be recreated under a removed name with new content
    fs::write(n.p("top"), b"new").unwrap();
    assert_file_eq(&n.p("top"), b"new");
}

#[test]
fn mkdir_rmdir_and_enotempty() {
    let n = started();
    n.sh_ok("mkdir -p a/b/c");
    assert!(n.p("a/b/c").is_dir());
    let err = n.sh_fail("mkdir a");
    assert!(err.contains("File exists"), "{err}");
    let err = n.sh_fail("rmdir a");
    assert!(err.contains("not empty"), "rmdir of non-empty dir: {err}");
    n.sh_ok("rmdir a/b/c");
    assert!(!n.p("a/b/c").exists());
    n.sh_ok("printf f > a/b/file");
    let err = n.sh_fail("rmdir a/b");
    assert!(err.contains("not empty"), "{err}");
    let err = n.sh_fail("rmdir a/b/file");
    assert!(err.contains("Not a directory"), "{err}");
    n.sh_ok("rm a/b/file && rmdir a/b && rmdir a");
    assert!(root_names(&n.mnt).is_empty());
    // nlink of a directory: 2 + number of subdirectories
    n.sh_ok("mkdir -p p/x p/y p/z");
    let nlink = fs::metadata(n.p("p")).unwrap().nlink();
    assert!(
        nlink == 5 || nlink == 1,
        "dir nlink {nlink}, want 5 (or 1 = not counted)"
    );
}

#[test]
fn truncate_grow_shrink_holes() {
    let n = started_with_chunk(65536);
    let data = random_bytes(4, 200_000);
    fs::write(n.p("t"), &data).unwrap();
    // grow past several chunk boundaries
    n.sh_ok("truncate -s 1000000 t");
    let mut want = data.clone();
    want.resize(1_000_000, 0);
    assert_eq!(fs::metadata(n.p("t")).unwrap().len(), 1_000_000);
    assert_file_eq(&n.p("t"), &want);
    // shrink into the middle of a chunk
    n.sh_ok("truncate -s 70000 t");
    want.truncate(70000);
    assert_file_eq(&n.p("t"), &want);
    // grow again: the old bytes beyond 70000 must not come back
    n.sh_ok("truncate -s 300000 t");
    want.resize(300_000, 0);
    assert_file_eq(&n.p("t"), &want);
    // shrink to exactly a chunk boundary, then to zero
    n.sh_ok("truncate -s 65536 t");
    want.truncate(65536);
    assert_file_eq(&n.p("t"), &want);
    n.sh_ok("truncate -s 0 t");
    assert_eq!(fs::read(n.p("t")).unwrap().len(), 0);
    // truncate creates a file
    n.sh_ok("truncate -s 5M sparse");
    let s = fs::read(n.p("sparse")).unwrap();
    assert_eq!(s.len(), 5 * MIB);
    assert!(
        s.iter().all(|&b| b == 0),
        "a fresh sparse file must read as zeros"
    );
    // a write far beyond EOF leaves a hole of zeros
    {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(n.p("h"))
            .unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 400_000).unwrap();
        close_checked(f).unwrap();
    }
    let mut want = vec![0u8; 400_004];
    want[..4].copy_from_slice(b"head");
    want[400_000..].copy_from_slice(b"tail");
    assert_file_eq(&n.p("h"), &want);
}

#[test]
fn append_with_shell_redirect() {
    let n = started_with_chunk(65536);
    n.sh_ok("printf abc >> ap");
    n.sh_ok("printf def >> ap");
    assert_eq!(n.sh_ok("cat ap"), "abcdef");
    // append across chunk boundaries
    let block = "0123456789abcdef".repeat(4096); // 64 KiB
    let mut want = b"abcdef".to_vec();
    for i in 0..5 {
        let piece = format!("{i}{block}");
        fs::write(n.scratch().join("piece"), &piece).unwrap();
        n.sh_ok(&format!(
            "cat '{}' >> ap",
            n.scratch().join("piece").display()
        ));
        want.extend_from_slice(piece.as_bytes());
    }
    assert_file_eq(&n.p("ap"), &want);
    // O_APPEND from std: writes go to the end even after seeking
    {
        let mut f = OpenOptions::new().append(true).open(n.p("ap")).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"END").unwrap();
        close_checked(f).unwrap();
    }
    want.extend_from_slice(b"END");
    assert_file_eq(&n.p("ap"), &want);
}

#[test]
fn touch_timestamps_and_noatime() {
    let n = started();
    n.sh_ok("touch f");
    assert!(n.p("f").is_file());
    assert_eq!(fs::metadata(n.p("f")).unwrap().len(), 0);
    // explicit times
    n.sh_ok("touch -d @1000000000 f");
    assert_eq!(stat_field(&n, "%Y", "f"), "1000000000");
    assert_eq!(stat_field(&n, "%X", "f"), "1000000000");
    // touch without a date sets 'now'
    n.sh_ok("touch f");
    let m: i64 = stat_field(&n, "%Y", "f").parse().unwrap();
    assert!(
        (m - now_secs()).abs() < 120,
        "touch did not set mtime to now: {m}"
    );
    // -a changes only atime, -m only mtime
    n.sh_ok("touch -m -d @1100000000 f");
    n.sh_ok("touch -a -d @1200000000 f");
    assert_eq!(stat_field(&n, "%Y", "f"), "1100000000");
    assert_eq!(stat_field(&n, "%X", "f"), "1200000000");
    // sub-second precision is kept
    n.sh_ok("touch -m -d '@1100000000.123456789' f");
    let md = fs::metadata(n.p("f")).unwrap();
    assert_eq!(md.mtime(), 1100000000);
    assert_eq!(md.mtime_nsec(), 123456789, "mtime nanoseconds lost");
    // noatime: reading does not update atime
    fs::write(n.p("r"), b"some content").unwrap();
    n.sh_ok("touch -a -d @1000000000 r");
    assert_eq!(n.sh_ok("cat r"), "some content");
    let mut buf = Vec::new();
    File::open(n.p("r")).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(
        stat_field(&n, "%X", "r"),
        "1000000000",
        "a read updated atime"
    );
    // directories too
    n.sh_ok("mkdir d && touch -d @1000000000 d");
    assert_eq!(stat_field(&n, "%Y", "d"), "1000000000");
    n.sh_ok("ls d > /dev/null");
    assert_eq!(
        stat_field(&n, "%X", "d"),
        "1000000000",
        "readdir updated atime"
    );
}

#[test]
fn ls_l_sizes_and_modes() {
    let n = started();
    fs::write(n.p("f1"), vec![7u8; 12345]).unwrap();
    fs::write(n.p("empty"), b"").unwrap();
    fs::write(n.p("exe"), b"#!/bin/sh\n").unwrap();
    n.sh_ok("chmod 640 f1 && chmod 755 exe && chmod 600 empty && mkdir dir && chmod 750 dir && ln -s f1 link");
    let out = n.sh_ok("ls -ln --time-style=+%s");
    let mut seen = std::collections::BTreeMap::new();
    for line in out.lines().skip_while(|l| l.starts_with("total")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 7, "odd ls line {line:?}");
        let mode = &f[0][..10];
        let size: u64 = f[4].parse().unwrap();
        let name = f[6];
        if name.starts_with('@') {
            continue; // a volume directory (`@home`)
        }
        seen.insert(
            name.to_string(),
            (mode.to_string(), size, f[2].to_string(), line.to_string()),
        );
    }
    assert_eq!(seen["f1"].0, "-rw-r-----");
    assert_eq!(seen["f1"].1, 12345);
    assert_eq!(seen["f1"].2, "0", "owner uid");
    assert_eq!(seen["empty"].0, "-rw-------");
    assert_eq!(seen["empty"].1, 0);
    assert_eq!(seen["exe"].0, "-rwxr-xr-x");
    assert_eq!(seen["exe"].1, 10);
    assert_eq!(seen["dir"].0, "drwxr-x---");
    assert!(seen["link"].0.starts_with('l'), "{:?}", seen["link"]);
    assert!(seen["link"].3.ends_with("link -> f1"), "{:?}", seen["link"]);
    assert_eq!(seen["link"].1, 2, "symlink size is the target length");
    assert_eq!(seen.len(), 5, "{out}");
    // the sizes via stat agree
    assert_eq!(stat_field(&n, "%s", "f1"), "12345");
}

#[test]
fn symlinks_and_readlink() {
    let n = started();
    n.sh_ok("mkdir d && printf target-content > d/t");
    n.sh_ok("ln -s d/t rel && ln -s /etc/hostname abs && ln -s nowhere dangling");
    assert_eq!(n.sh_ok("readlink rel"), "d/t\n");
    assert_eq!(n.sh_ok("readlink abs"), "/etc/hostname\n");
    assert_eq!(n.sh_ok("readlink dangling"), "nowhere\n");
    assert_eq!(n.sh_ok("cat rel"), "target-content");
    assert_eq!(fs::read_link(n.p("rel")).unwrap().to_str().unwrap(), "d/t");
    assert!(
        fs::symlink_metadata(n.p("rel"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    expect_errno(
        "open dangling",
        File::open(n.p("dangling")),
        &[libc::ENOENT],
    );
    // a symlink to a directory can be traversed
    n.sh_ok("ln -s d dl");
    assert_eq!(n.sh_ok("cat dl/t"), "target-content");
    // writing through a symlink changes the target
    n.sh_ok("printf new > rel");
    assert_file_eq(&n.p("d/t"), b"new");
    // long target
    let long = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long, n.p("long")).unwrap();
    assert_eq!(fs::read_link(n.p("long")).unwrap().to_str().unwrap(), long);
    // symlink can be renamed and removed without touching its target
    n.sh_ok("mv rel rel2 && readlink rel2 >/dev/null && rm rel2");
    assert_file_eq(&n.p("d/t"), b"new");
    // ln -s onto an existing name fails
    expect_errno(
        "symlink over existing",
        std::os::unix::fs::symlink("foo", n.p("abs")),
        &[libc::EEXIST],
    );
}

#[test]
fn chmod_modes() {
    let n = started();
    fs::write(n.p("f"), b"x").unwrap();
    for mode in ["751", "600", "644", "400", "777", "0", "2755", "4711"] {
        n.sh_ok(&format!("chmod {mode} f"));
        let want = format!("{:o}", u32::from_str_radix(mode, 8).unwrap());
        assert_eq!(stat_field(&n, "%a", "f"), want, "chmod {mode}");
    }
    n.sh_ok("chmod 644 f && chmod u+x,g+w f");
    assert_eq!(stat_field(&n, "%a", "f"), "764");
    n.sh_ok("mkdir d && chmod 1777 d");
    assert_eq!(stat_field(&n, "%a", "d"), "1777");
    n.sh_ok("chmod 700 d");
    assert_eq!(stat_field(&n, "%a", "d"), "700");
    let md = fs::metadata(n.p("d")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert!(md.is_dir());
    // std::fs::set_permissions
    fs::set_permissions(n.p("f"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(n.p("f")).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    // chown by root
    n.sh_ok("chown 65534:65534 f");
    assert_eq!(stat_field(&n, "%u:%g", "f"), "65534:65534");
}

#[test]
fn hard_links_share_data_and_count_names() {
    let n = started();
    fs::write(n.p("a"), b"data").unwrap();
    n.sh_ok("ln a b");
    assert_file_eq(&n.p("b"), b"data");
    let (ma, mb) = (
        fs::metadata(n.p("a")).unwrap(),
        fs::metadata(n.p("b")).unwrap(),
    );
    assert_eq!((ma.nlink(), mb.nlink()), (2, 2));
    assert_eq!(ma.ino(), mb.ino(), "two names of one file show one inode");
    n.sh_ok("echo more >> b");
    assert_file_eq(&n.p("a"), b"datamore\n");
    n.sh_ok("rm a");
    assert!(!n.p("a").exists());
    assert_file_eq(&n.p("b"), b"datamore\n");
    assert_eq!(fs::metadata(n.p("b")).unwrap().nlink(), 1);
    // A directory gets no second name, and a failed link leaves none behind.
    fs::create_dir(n.p("d")).unwrap();
    expect_errno(
        "hard_link of a directory",
        fs::hard_link(n.p("d"), n.p("dl")),
        &[libc::EPERM],
    );
    assert!(!n.p("dl").exists(), "failed hard link left a name behind");
    expect_errno(
        "hard_link onto an existing name",
        fs::hard_link(n.p("b"), n.p("d")),
        &[libc::EEXIST],
    );
    assert_eq!(fs::metadata(n.p("b")).unwrap().nlink(), 1);
}

#[test]
fn posix_open_errors() {
    let n = started();
    fs::write(n.p("f"), vec![1u8; 1000]).unwrap();
    fs::create_dir(n.p("d")).unwrap();
    // O_CREAT|O_EXCL on an existing file
    expect_errno(
        "O_EXCL on existing",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(n.p("f")),
        &[libc::EEXIST],
    );
    expect_errno(
        "O_EXCL on existing dir",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(n.p("d")),
        &[libc::EEXIST],
    );
    // O_EXCL on a new file works
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(n.p("new"))
        .unwrap();
    close_checked(f).unwrap();
    assert!(n.p("new").is_file());
    // O_TRUNC truncates
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(n.p("f"))
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    close_checked(f).unwrap();
    assert_eq!(fs::metadata(n.p("f")).unwrap().len(), 0);
    assert_eq!(fs::read(n.p("f")).unwrap(), b"");
    // missing
    expect_errno("open missing", File::open(n.p("missing")), &[libc::ENOENT]);
    expect_errno(
        "open missing dir/x",
        File::open(n.p("nodir/x")),
        &[libc::ENOENT],
    );
    expect_errno(
        "create in missing dir",
        File::create(n.p("nodir/x")),
        &[libc::ENOENT],
    );
    // path through a file
    expect_errno("open file/x", File::open(n.p("f/x")), &[libc::ENOTDIR]);
    expect_errno("create file/x", File::create(n.p("f/x")), &[libc::ENOTDIR]);
    expect_errno("mkdir file/x", fs::create_dir(n.p("f/x")), &[libc::ENOTDIR]);
    // directory opened for writing
    expect_errno(
        "open dir for write",
        OpenOptions::new().write(true).open(n.p("d")),
        &[libc::EISDIR],
    );
    expect_errno("read_dir on file", fs::read_dir(n.p("f")), &[libc::ENOTDIR]);
    expect_errno(
        "O_DIRECTORY on file",
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(n.p("f")),
        &[libc::ENOTDIR],
    );
    // rmdir / unlink type errors
    fs::write(n.p("d/inner"), b"i").unwrap();
    expect_errno(
        "rmdir non-empty",
        fs::remove_dir(n.p("d")),
        &[libc::ENOTEMPTY, libc::EEXIST],
    );
    expect_errno("rmdir on file", fs::remove_dir(n.p("f")), &[libc::ENOTDIR]);
    expect_errno(
        "unlink dir",
        fs::remove_file(n.p("d")),
        &[libc::EISDIR, libc::EPERM],
    );
    expect_errno("mkdir existing", fs::create_dir(n.p("d")), &[libc::EEXIST]);
    expect_errno(
        "unlink missing",
        fs::remove_file(n.p("missing")),
        &[libc::ENOENT],
    );
    assert!(n.p("d/inner").is_file());
}

#[test]
fn name_too_long() {
    let n = started();
    let long = "a".repeat(256);
    let max = "b".repeat(255);
    expect_errno(
        "create 256-byte name",
        File::create(n.p(&long)),
        &[libc::ENAMETOOLONG],
    );
    expect_errno(
        "mkdir 256-byte name",
        fs::create_dir(n.p(&long)),
        &[libc::ENAMETOOLONG],
    );
    expect_errno(
        "symlink 256-byte name",
        std::os::unix::fs::symlink("x", n.p(&long)),
        &[libc::ENAMETOOLONG],
    );
    fs::write(n.p("short"), b"s").unwrap();
    expect_errno(
        "rename to 256-byte name",
        fs::rename(n.p("short"), n.p(&long)),
        &[libc::ENAMETOOLONG],
    );
    assert!(n.p("short").exists());
    // 255 bytes is fine, including multi-byte UTF-8 names
    fs::write(n.p(&max), b"max").unwrap();
    assert_file_eq(&n.p(&max), b"max");
    let utf = "é".repeat(127); // 254 bytes
    fs::write(n.p(&utf), b"utf").unwrap();
    assert_file_eq(&n.p(&utf), b"utf");
    let names: std::collections::BTreeSet<String> = root_names(&n.mnt).into_iter().collect();
    assert!(
        names.contains(&max) && names.contains(&utf) && names.contains("short"),
        "{names:?}"
    );
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Waits (polling the clock, at most ~1 s) until the wall clock is in a later
/// second than `t`, so a new timestamp is distinguishable even at 1 s
/// resolution.
fn wait_past(t: i64) {
    assert!(wait_until(Duration::from_secs(3), || now_secs() > t));
}

#[test]
fn mtime_ctime_updated_on_write() {
    let n = started();
    fs::write(n.p("f"), b"hello").unwrap();
    n.sh_ok("touch -d @1000000000 f");
    let md0 = fs::metadata(n.p("f")).unwrap();
    assert_eq!(md0.mtime(), 1000000000);
    let c0 = (md0.ctime(), md0.ctime_nsec());
    wait_past(c0.0);
    let before = now_secs();
    {
        let mut f = OpenOptions::new().append(true).open(n.p("f")).unwrap();
        f.write_all(b" world").unwrap();
        close_checked(f).unwrap();
    }
    let md1 = fs::metadata(n.p("f")).unwrap();
    assert_eq!(md1.len(), 11);
    assert!(
        md1.mtime() >= before && md1.mtime() <= now_secs() + 1,
        "mtime not updated on write: {}",
        md1.mtime()
    );
    assert!(
        (md1.ctime(), md1.ctime_nsec()) > c0,
        "ctime not updated on write: {:?} -> {:?}",
        c0,
        (md1.ctime(), md1.ctime_nsec())
    );
    // truncate also updates mtime and ctime
    n.sh_ok("touch -d @1000000000 f");
    let c1 = fs::metadata(n.p("f")).unwrap().ctime();
    wait_past(c1);
    let f = OpenOptions::new().write(true).open(n.p("f")).unwrap();
    f.set_len(3).unwrap();
    close_checked(f).unwrap();
    let md2 = fs::metadata(n.p("f")).unwrap();
    assert!(md2.mtime() > 1000000000, "mtime not updated by ftruncate");
    assert!(md2.ctime() > c1, "ctime not updated by ftruncate");
    // chmod updates ctime but not mtime
    n.sh_ok("touch -d @1000000000 f");
    let c2 = fs::metadata(n.p("f")).unwrap().ctime();
    wait_past(c2);
    n.sh_ok("chmod 600 f");
    let md3 = fs::metadata(n.p("f")).unwrap();
    assert_eq!(md3.mtime(), 1000000000, "chmod changed mtime");
    assert!(md3.ctime() > c2, "ctime not updated by chmod");
    // O_TRUNC open of a non-empty file updates mtime
    n.sh_ok("touch -d @1000000000 f");
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(n.p("f"))
        .unwrap();
    close_checked(f).unwrap();
    assert!(
        fs::metadata(n.p("f")).unwrap().mtime() > 1000000000,
        "O_TRUNC did not update mtime"
    );
}

#[test]
fn parent_dir_mtime_on_create_unlink_rename() {
    let n = started();
    fs::create_dir(n.p("d")).unwrap();
    fs::create_dir(n.p("e")).unwrap();
    let old = 1000000000i64;
    let backdate = |what: &str| n.sh_ok(&format!("touch -d @{old} {what}"));
    let mtime = |what: &str| fs::metadata(n.p(what)).unwrap().mtime();

    backdate("d");
    File::create(n.p("d/f")).unwrap();
    assert!(mtime("d") > old, "create did not update parent mtime");

    backdate("d");
    fs::remove_file(n.p("d/f")).unwrap();
    assert!(mtime("d") > old, "unlink did not update parent mtime");

    backdate("d");
    fs::create_dir(n.p("d/sub")).unwrap();
    assert!(mtime("d") > old, "mkdir did not update parent mtime");

    backdate("d");
    fs::remove_dir(n.p("d/sub")).unwrap();
    assert!(mtime("d") > old, "rmdir did not update parent mtime");

    backdate("d");
    std::os::unix::fs::symlink("x", n.p("d/l")).unwrap();
    assert!(mtime("d") > old, "symlink did not update parent mtime");

    fs::write(n.p("d/m"), b"m").unwrap();
    backdate("d");
    backdate("e");
    fs::rename(n.p("d/m"), n.p("e/m")).unwrap();
    assert!(mtime("d") > old, "rename did not update source dir mtime");
    assert!(
        mtime("e") > old,
        "rename did not update destination dir mtime"
    );

    // the file's own mtime is not changed by a rename
    n.sh_ok(&format!("touch -d @{old} e/m"));
    fs::rename(n.p("e/m"), n.p("e/m2")).unwrap();
    assert_eq!(mtime("e/m2"), old, "rename changed the file's mtime");
}

#[test]
fn permissions_enforced_for_non_root() {
    let n = started();
    n.sh_ok("chmod 755 .");
    n.sh_ok("mkdir d && chmod 755 d");
    fs::write(n.p("d/secret"), b"secret\n").unwrap();
    fs::write(n.p("d/public"), b"public\n").unwrap();
    n.sh_ok("chmod 600 d/secret && chmod 644 d/public");
    let secret = n.p("d/secret");
    let public = n.p("d/public");

    let out = as_nobody(&["cat", secret.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "nobody could read a 0600 root file: {}",
        out_text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        out_text(&out)
    );

    let out = as_nobody(&["cat", public.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "nobody could not read a 0644 file: {}",
        out_text(&out)
    );
    assert_eq!(out.stdout, b"public\n");

    // no write to a 0644 root file
    let out = as_nobody(&["sh", "-c", &format!("printf x >> '{}'", public.display())]);
    assert!(
        !out.status.success(),
        "nobody could append to a 0644 root file"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        out_text(&out)
    );
    assert_file_eq(&public, b"public\n");

    // no create in a 0755 root dir
    let out = as_nobody(&["touch", n.p("d/new").to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "nobody could create in a 0755 root dir"
    );
    assert!(!n.p("d/new").exists());
    // no unlink in a 0755 root dir
    let out = as_nobody(&["rm", "-f", public.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "nobody could unlink in a 0755 root dir"
    );
    assert!(public.exists());

    // a world-writable dir: nobody creates a file, which it then owns
    n.sh_ok("chmod 777 d");
    let out = as_nobody(&[
        "sh",
        "-c",
        &format!("printf mine > '{}'", n.p("d/new").display()),
    ]);
    assert!(
        out.status.success(),
        "nobody could not create in a 0777 dir: {}",
        out_text(&out)
    );
    assert_eq!(
        stat_field(&n, "%u:%g", "d/new"),
        "65534:65534",
        "new file not owned by its creator"
    );
    assert_file_eq(&n.p("d/new"), b"mine");

    // a 0700 dir blocks traversal
    n.sh_ok("chmod 700 d");
    let out = as_nobody(&["cat", public.to_str().unwrap()]);
    assert!(!out.status.success(), "nobody traversed a 0700 root dir");
    let out = as_nobody(&["ls", n.p("d").to_str().unwrap()]);
    assert!(!out.status.success(), "nobody listed a 0700 root dir");
    // root still reads everything
    assert_file_eq(&secret, b"secret\n");
}

#[test]
fn unlinked_open_file_stays_usable() {
    let n = started();
    // a committed file, open for reading, then unlinked
    fs::write(n.p("g"), b"committed").unwrap();
    let mut g = File::open(n.p("g")).unwrap();
    fs::remove_file(n.p("g")).unwrap();
    assert!(!n.p("g").exists());
    let md = g.metadata().expect("fstat of an fd opened before unlink");
    assert_eq!(md.len(), 9);
    let mut s = String::new();
    g.read_to_string(&mut s).expect(
        "read through an fd opened before unlink (POSIX: the inode lives until the last close)",
    );
    assert_eq!(s, "committed");
    drop(g);

    // a new file, written, unlinked while open, then used further
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(n.p("f"))
        .unwrap();
    f.write_all(b"data").unwrap();
    fs::remove_file(n.p("f")).unwrap();
    assert!(!n.p("f").exists());
    let mut buf = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut buf)
        .expect("read through an fd of an unlinked, still open file");
    assert_eq!(buf, "data", "open handle of an unlinked file lost its data");
    f.write_all(b"more").unwrap();
    close_checked(f).unwrap();
    assert!(
        !n.p("f").exists(),
        "closing an unlinked file resurrected it"
    );
    assert!(root_names(&n.mnt).is_empty());
}

#[test]
fn rename_over_file_open_for_reading() {
    let n = started();
    fs::write(n.p("a"), b"version-a").unwrap();
    fs::write(n.p("b"), b"version-b").unwrap();
    let mut rb = File::open(n.p("b")).unwrap();
    fs::rename(n.p("a"), n.p("b")).unwrap();
    let mut s = String::new();
    rb.read_to_string(&mut s)
        .expect("read through an fd whose file was replaced by rename");
    assert_eq!(s, "version-b", "reader of a replaced file saw new content");
    drop(rb);
    assert_file_eq(&n.p("b"), b"version-a");
    assert!(!n.p("a").exists());
}

#[test]
fn file_renamed_while_open_keeps_its_writes() {
    let n = started();
    let mut w = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(n.p("w1"))
        .unwrap();
    w.write_all(b"one").unwrap();
    fs::rename(n.p("w1"), n.p("w2")).unwrap();
    w.write_all(b"two").unwrap();
    close_checked(w).unwrap();
    assert!(!n.p("w1").exists());
    assert_file_eq(&n.p("w2"), b"onetwo");
    // same across directories, with fsync in between
    fs::create_dir(n.p("dir")).unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(n.p("x"))
        .unwrap();
    w.write_all(b"123").unwrap();
    w.sync_all().unwrap();
    fs::rename(n.p("x"), n.p("dir/y")).unwrap();
    w.write_all(b"456").unwrap();
    w.sync_all().unwrap();
    close_checked(w).unwrap();
    assert!(!n.p("x").exists());
    assert_file_eq(&n.p("dir/y"), b"123456");
}

#[test]
fn readdir_many_and_odd_names() {
    let n = started();
    let mut want = std::collections::BTreeSet::new();
    for i in 0..600 {
        let name = format!("file-{i:04}");
        File::create(n.p(&name)).unwrap();
        want.insert(name);
    }
    for name in [
        "with space",
        "ünïcödé",
        "quote'd",
        "semi;colon",
        "-dash",
        ".hidden",
        "back\\slash",
        "tab\tname",
        "new\nline",
    ] {
        fs::write(n.p(name), name.as_bytes()).unwrap();
        want.insert(name.to_string());
    }
    let got: std::collections::BTreeSet<String> = root_names(&n.mnt).into_iter().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "readdir returned {} entries, want {}",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
    let c: usize = n
        .sh_ok("find . -mindepth 1 -maxdepth 1 ! -name '@*' -print0 | tr -cd '\\0' | wc -c")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(c, want.len());
    for name in ["with space", "ünïcödé", "tab\tname", "new\nline"] {
        assert_file_eq(&n.p(name), name.as_bytes());
    }
    // readdir includes . and .. (ls -a)
    let out = n.sh_ok("ls -a1 | grep -c '^\\.\\.\\?$'");
    assert_eq!(out.trim(), "2", "ls -a does not show . and ..");
    // removing them all leaves an empty dir
    for name in &want {
        fs::remove_file(n.p(name)).unwrap();
    }
    assert!(root_names(&n.mnt).is_empty());
}

#[test]
fn statfs_works() {
    let n = started();
    let out = n.sh_ok("stat -f -c '%l %S' .");
    let f: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0], 255, "statfs max name length: {out}");
    assert!(f[1] > 0, "statfs block size 0: {out}");
    n.sh_ok("df . > /dev/null");
}
