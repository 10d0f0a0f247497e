//! The frictions a new user hit (issue 23), each fixed: `get` into a directory, `put` checking
//! its destination before a byte is sent, `put -r`/`get -r`, mount refusals, no node left by
//! a failed first start, `reset` and `--force-join`, one data-dir default, `p2pfs man`.
//! Needs root (mounts).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `p2pfs ARGS` with no data dir from the environment.
fn p2pfs(args: &[&str]) -> std::process::Output {
    run_cmd(
        Command::new(bin())
            .args(args)
            .env_remove("P2PFS_DATA_DIR")
            .env_remove("P2PFS_LOG"),
        Duration::from_secs(60),
    )
}

/// `p2pfs-ctl get REMOTE ./`, `.`, `dir/` and an existing directory write DIR/NAME (the
/// README's own form failed with "Device or resource busy"); `put FILE DIR` puts it in DIR.
#[test]
fn get_into_a_directory_and_put_into_one() {
    let mut n = Node::init();
    n.start();
    std::fs::create_dir(n.p("Documents")).unwrap();
    let data = random_bytes(1, 300_000);
    let scratch = n.scratch();
    let src = scratch.join("hello.txt");
    std::fs::write(&src, &data).unwrap();
    // An existing directory, without a trailing slash: the file goes in it.
    n.ctl_ok(&["put", src.to_str().unwrap(), "Documents"]);
    assert_eq!(std::fs::read(n.p("Documents/hello.txt")).unwrap(), data);

    for (i, local) in ["./", ".", "sub/", "sub"].iter().enumerate() {
        let cwd = scratch.join(format!("get{i}"));
        std::fs::create_dir_all(cwd.join("sub")).unwrap();
        let out = run_cmd(
            Command::new(ctl_bin())
                .arg("--data-dir")
                .arg(&n.dir)
                .args(["get", "Documents/hello.txt", local])
                .current_dir(&cwd),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "get {local}: {}", out_text(&out));
        let expected = if local.starts_with("sub") {
            cwd.join("sub/hello.txt")
        } else {
            cwd.join("hello.txt")
        };
        assert_eq!(std::fs::read(&expected).unwrap(), data, "get {local}");
    }
    // `missing/` is no directory: refused, nothing written.
    let out = n.ctl(&[
        "get",
        "Documents/hello.txt",
        scratch.join("missing/").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", out_text(&out));
    assert!(!scratch.join("missing").exists());
}

/// Counts the bytes read from it.
struct Counting<'a> {
    data: &'a [u8],
    read: u64,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.read as usize);
        buf[..n].copy_from_slice(&self.data[self.read as usize..self.read as usize + n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// `put FILE missing-dir/` is refused before a byte of the file is read (it used to upload
/// all of it first); a good destination then gets every byte.
#[test]
fn put_checks_the_destination_before_sending() {
    let mut n = Node::init();
    n.start();
    let data = random_bytes(2, 5 << 20);
    for dest in [
        "missing-dir/",
        "missing-dir/big.bin",
        "file.bin/",
        "file.bin/x",
    ] {
        if dest.starts_with("file.bin") && !n.p("file.bin").exists() {
            write_and_close(&n.p("file.bin"), b"a file, not a directory").unwrap();
        }
        let mut source = Counting {
            data: &data,
            read: 0,
        };
        let reply = p2pfs::node::control::put(
            &n.dir,
            dest,
            Some("big.bin"),
            0o644,
            data.len() as u64,
            &mut source,
            |_| {},
        )
        .unwrap();
        assert!(
            matches!(reply, p2pfs::node::control::Reply::Error { .. }),
            "{dest}: {reply:?}"
        );
        assert_eq!(source.read, 0, "{dest}: bytes were read before the refusal");
    }
    // The CLI says why, and exits 1.
    let local = n.scratch().join("big.bin");
    std::fs::write(&local, &data).unwrap();
    let out = n.ctl(&["put", local.to_str().unwrap(), "missing-dir/"]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("no such file or directory"),
        "{}",
        out_text(&out)
    );
    // A directory destination: the file goes in it under its own name, whole.
    std::fs::create_dir(n.p("dir")).unwrap();
    let mut source = Counting {
        data: &data,
        read: 0,
    };
    let reply = p2pfs::node::control::put(
        &n.dir,
        "dir/",
        Some("big.bin"),
        0o600,
        data.len() as u64,
        &mut source,
        |_| {},
    )
    .unwrap();
    assert!(
        matches!(reply, p2pfs::node::control::Reply::Done { .. }),
        "{reply:?}"
    );
    assert_eq!(std::fs::read(n.p("dir/big.bin")).unwrap(), data);
    let mode = std::fs::metadata(n.p("dir/big.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A local tree: directories, files with their modes, a symlink, an empty directory.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("top.txt"), b"top").unwrap();
    std::fs::write(root.join("a/one.bin"), random_bytes(3, 700_000)).unwrap();
    std::fs::write(root.join("a/b/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("a/b/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::symlink("../top.txt", root.join("a/link")).unwrap();
}

/// Every entry under `root`: relative path, kind, mode, content or link target.
fn tree_listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.push(format!(
                    "l {rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                out.push(format!("d {rel} {mode:o}"));
                walk(root, &p, out);
            } else {
                let hash = blake3::hash(&std::fs::read(&p).unwrap());
                out.push(format!("f {rel} {mode:o} {}", &hash.to_hex()[..16]));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// `put -r` copies a tree into the mount and `get -r` back out: directories, files, modes,
/// symlinks; into DEST/NAME when DEST is an existing directory.
#[test]
fn put_r_and_get_r_copy_whole_trees() {
    let mut n = Node::init();
    n.start();
    let scratch = n.scratch();
    let tree = scratch.join("project");
    make_tree(&tree);
    let want = tree_listing(&tree);

    // DEST missing: it becomes the copy.
    n.ctl_ok(&["put", "-r", tree.to_str().unwrap(), "copy"]);
    assert_eq!(tree_listing(&n.p("copy")), want);
    // DEST an existing directory: the copy goes in it under the tree's name.
    std::fs::create_dir(n.p("backups")).unwrap();
    n.ctl_ok(&["put", "-r", tree.to_str().unwrap(), "backups"]);
    assert_eq!(tree_listing(&n.p("backups/project")), want);

    // Out again: LOCAL an existing directory (LOCAL/NAME), then a new name.
    let out_dir = scratch.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    n.ctl_ok(&["get", "-r", "backups/project", out_dir.to_str().unwrap()]);
    assert_eq!(tree_listing(&out_dir.join("project")), want);
    let fresh = scratch.join("fresh");
    n.ctl_ok(&["get", "-r", "copy", fresh.to_str().unwrap()]);
    assert_eq!(tree_listing(&fresh), want);

    // Again over the copies: files replaced, directories and links already there kept.
    n.ctl_ok(&["put", "-r", tree.to_str().unwrap(), "backups"]);
    assert_eq!(tree_listing(&n.p("backups/project")), want);
    n.ctl_ok(&["get", "-r", "backups/project", out_dir.to_str().unwrap()]);
    assert_eq!(tree_listing(&out_dir.join("project")), want);

    // Without -r a directory is refused with a pointer to -r.
    let out = n.ctl(&["put", tree.to_str().unwrap(), "x"]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("-r"), "{}", out_text(&out));
}

/// `p2pfs mount DIR` refuses a live mountpoint, a file and a non-empty directory (naming
/// --allow-non-empty), before any node is made; `--allow-non-empty` mounts over one.
#[test]
fn mount_refuses_a_mountpoint_a_file_and_a_non_empty_dir() {
    let mut live = Node::init();
    live.start();
    let fresh = Node::uninit();
    let data = fresh.dir.to_str().unwrap();
    let file = fresh.scratch().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let full = fresh.scratch().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    for (dir, says) in [
        (live.mnt.to_str().unwrap(), "mount point already"),
        (file.to_str().unwrap(), "not a directory"),
        (full.to_str().unwrap(), "--allow-non-empty"),
    ] {
        let out = p2pfs(&["mount", dir, "--data-dir", data, "--no-mdns"]);
        assert!(!out.status.success(), "{dir}: {}", out_text(&out));
        assert!(out_text(&out).contains(says), "{dir}: {}", out_text(&out));
        assert!(
            !fresh.dir.exists(),
            "{dir}: a node was made for a refused mount"
        );
    }
    // The live mount is untouched.
    write_and_close(&live.p("still.txt"), b"here").unwrap();
    assert_eq!(std::fs::read(live.p("still.txt")).unwrap(), b"here");

    // `run` refuses a non-empty directory too, and mounts over it with --allow-non-empty.
    let mut node = Node::init();
    std::fs::write(node.mnt.join("keep.txt"), b"mine").unwrap();
    let out = p2pfs(&[
        "run",
        "--data-dir",
        node.dir.to_str().unwrap(),
        "--mount",
        node.mnt.to_str().unwrap(),
        "--no-mdns",
    ]);
    assert!(!out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("--allow-non-empty"),
        "{}",
        out_text(&out)
    );
    let mut args: Vec<&str> = DEFAULT_RUN_ARGS.to_vec();
    args.push("--allow-non-empty");
    node.start_args(&args);
    assert!(
        !node.p("keep.txt").exists(),
        "the mount shows the directory's own file"
    );
    node.stop();
    assert_eq!(std::fs::read(node.mnt.join("keep.txt")).unwrap(), b"mine");
}

/// A first start that fails (here: a metrics address the node refuses, checked after the
/// node is made) leaves no node behind, so the next `--join` starts clean.
#[test]
fn a_failed_first_start_leaves_no_node() {
    let fresh = Node::uninit();
    let out = p2pfs(&[
        "mount",
        fresh.mnt.to_str().unwrap(),
        "--data-dir",
        fresh.dir.to_str().unwrap(),
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--metrics",
        "192.0.2.1:9464",
    ]);
    assert!(!out.status.success(), "{}", out_text(&out));
    assert!(
        !p2pfs::node::is_initialized(&fresh.dir),
        "a failed first start left a node: {}",
        out_text(&out)
    );
    assert!(out_text(&out).contains("removed"), "{}", out_text(&out));
}

/// `--force-join` replaces a node that never joined anyone (its user kept); a node that holds
/// data is replaced only with --yes. `reset` removes a node: refused while it runs and without
/// --yes off a terminal.
#[test]
fn force_join_and_reset() {
    let c = Cluster::start(1, 1);
    let token = c.nodes[0]
        .ctl_ok(&["invite", "--expires", "1h"])
        .trim()
        .to_string();
    let fingerprint = c.nodes[0].status()["network_fingerprint"].clone();

    let mut lone = Node::init();
    let user_before = p2pfs(&["user", "show", "--data-dir", lone.dir.to_str().unwrap()]);
    let user_before = String::from_utf8_lossy(&user_before.stdout).into_owned();
    let out = lone.run_init(&["--join", &token]);
    assert!(!out.status.success());
    assert!(
        out_text(&out).contains("--force-join"),
        "{}",
        out_text(&out)
    );
    lone.init_ok(&["--join", &token, "--force-join"]);
    let user_after = p2pfs(&["user", "show", "--data-dir", lone.dir.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&user_after.stdout), user_before);
    lone.start_args(&loopback_args(1, &[]));
    assert_eq!(lone.status()["network_fingerprint"], fingerprint);
    lone.stop();

    // A node with files: --force-join alone is refused, --yes replaces it.
    let mut used = Node::init();
    used.start();
    write_and_close(&used.p("mine.bin"), &random_bytes(4, 100_000)).unwrap();
    // Refused while it runs.
    let out = p2pfs(&["reset", "--yes", "--data-dir", used.dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("running"), "{}", out_text(&out));
    used.stop();
    let out = used.run_init(&["--join", &token, "--force-join"]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("--yes"), "{}", out_text(&out));
    assert!(used.dir.join("config.toml").exists());
    used.init_ok(&["--join", &token, "--force-join", "--yes"]);

    // reset: not on a terminal without --yes; with it, the node is gone.
    let out = p2pfs(&["reset", "--data-dir", used.dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("--yes"), "{}", out_text(&out));
    assert!(p2pfs::node::is_initialized(&used.dir));
    let out = p2pfs(&["reset", "--yes", "--data-dir", used.dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(!used.dir.exists());
}

/// `init`, `user show`, `config show` and `p2pfs-ctl` all find the node in
/// $XDG_DATA_HOME/p2pfs without --data-dir (`init` and `user show` needed it).
#[test]
fn every_command_uses_the_default_data_dir() {
    let home = tempfile::tempdir().unwrap();
    let xdg = home.path().join("xdg");
    let with_env = |args: &[&str]| {
        run_cmd(
            Command::new(bin())
                .args(args)
                .env_remove("P2PFS_DATA_DIR")
                .env("HOME", home.path())
                .env("XDG_DATA_HOME", &xdg),
            Duration::from_secs(60),
        )
    };
    let out = with_env(&["init", "--name", "default-dir"]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(xdg.join("p2pfs/config.toml").exists());
    let out = with_env(&["user", "show"]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(out_text(&out).contains("user id:"), "{}", out_text(&out));
    let out = with_env(&["config", "show"]);
    assert!(out_text(&out).contains("default-dir"), "{}", out_text(&out));
    let export = home.path().join("me.key");
    let out = with_env(&["user", "export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out_text(&out));
    // p2pfs-ctl looks there too: no node runs, so it says so for that dir (exit 3).
    let out = run_cmd(
        Command::new(ctl_bin())
            .arg("status")
            .env_remove("P2PFS_DATA_DIR")
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", &xdg),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", out_text(&out));
    assert!(
        out_text(&out).contains(xdg.join("p2pfs").to_str().unwrap()),
        "{}",
        out_text(&out)
    );
}

/// `p2pfs man` prints a page; `--install DIR` writes every page of both programs.
#[test]
fn man_prints_and_installs_the_pages() {
    let out = p2pfs(&["man", "p2pfs-ctl-get"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH p2pfs-ctl-get 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man1");
    let out = p2pfs(&["man", "--install", man1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out_text(&out));
    for name in [
        "p2pfs.1",
        "p2pfs-mount.1",
        "p2pfs-reset.1",
        "p2pfs-ctl.1",
        "p2pfs-ctl-put.1",
    ] {
        assert!(man1.join(name).exists(), "{name} not installed");
    }
    let out = p2pfs(&["man", "no-such-page"]);
    assert!(!out.status.success());
}
