//! Ownership and permissions against a reference ext4 mounted with the mount's options:
//! the same operations as root, as `nobody` (65534) and as a user (1000, also in group 2000)
//! give the same results, errnos, owners and modes. The kernel checks permissions from the
//! attributes the mount returns (`default_permissions`), so these tests pin down that those
//! attributes, and their changes, are what ext4 would have.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

conform_child!();

/// Creates `rel` as root on both sides (a directory when `dir`, else a file holding `hello`),
/// then gives it `uid:gid` and `mode` (chown first: it clears set-id bits).
fn make(pair: &Pair, rel: &str, dir: bool, uid: u32, gid: u32, mode: u32) {
    pair.same(&format!("make {rel}"), |r| {
        let p = r.join(rel);
        if dir {
            fs::create_dir(&p)?;
        } else {
            fs::write(&p, b"hello")?;
        }
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
    })
    .unwrap();
}

fn at(r: &Path, rel: &str) -> PathBuf {
    r.join(rel)
}

fn stat(r: &Path, rel: &str) -> Op {
    Op::Stat { path: at(r, rel) }
}

fn perm_of(outcome: &Outcome<Done>) -> (u32, u32, u32) {
    match outcome {
        Ok(Done::Stat(s)) => (s.perm, s.uid, s.gid),
        other => panic!("not a stat: {other:?}"),
    }
}

/// A node, its reference disk and one directory pair `name` (0755, root) on them.
fn setup(name: &str) -> (Node, RefDisk, Pair) {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, name);
    (n, reference, pair)
}

const KEEP: u32 = u32::MAX;

#[test]
fn chown_chgrp_chmod_follow_ext4() {
    let (_n, _r, pair) = setup("own");
    make(&pair, "d", true, 0, 0, 0o777);
    make(&pair, "d/u", false, 1000, 1000, 0o644);
    make(&pair, "d/r", false, 0, 0, 0o644);
    make(&pair, "d/other_group", false, 1000, 3000, 0o644);
    make(&pair, "d/other_group_dir", true, 1000, 3000, 0o755);

    let user = pair.same_as("user", &Creds::user(), |r| {
        vec![
            // Only root changes the owner; "changing" it to oneself is allowed.
            Op::Chown {
                path: at(r, "d/u"),
                uid: 1000,
                gid: KEEP,
            },
            Op::Chown {
                path: at(r, "d/u"),
                uid: 65534,
                gid: KEEP,
            },
            // The owner may change the group to one of theirs, not to another.
            Op::Chown {
                path: at(r, "d/u"),
                uid: KEEP,
                gid: 2000,
            },
            Op::Chown {
                path: at(r, "d/u"),
                uid: KEEP,
                gid: 3000,
            },
            // Not on a file of someone else's, even to its own group.
            Op::Chown {
                path: at(r, "d/r"),
                uid: KEEP,
                gid: 0,
            },
            // chmod by a non-owner.
            Op::Chmod {
                path: at(r, "d/r"),
                mode: 0o666,
            },
            // In the file's group (2000): setgid kept.
            Op::Chmod {
                path: at(r, "d/u"),
                mode: 0o2755,
            },
            // Not in the file's group (3000): setgid silently dropped (files only).
            Op::Chmod {
                path: at(r, "d/other_group"),
                mode: 0o2755,
            },
            Op::Chmod {
                path: at(r, "d/other_group_dir"),
                mode: 0o2755,
            },
            stat(r, "d/u"),
            stat(r, "d/r"),
            stat(r, "d/other_group"),
            stat(r, "d/other_group_dir"),
        ]
    });
    assert_eq!(user[0], Ok(Done::Ok));
    assert_eq!(user[1], Err(libc::EPERM));
    assert_eq!(user[2], Ok(Done::Ok));
    assert_eq!(user[3], Err(libc::EPERM));
    assert_eq!(user[4], Err(libc::EPERM));
    assert_eq!(user[5], Err(libc::EPERM));
    assert_eq!(perm_of(&user[9]), (0o2755, 1000, 2000));
    assert_eq!(perm_of(&user[10]), (0o644, 0, 0));
    assert_eq!(perm_of(&user[11]), (0o755, 1000, 3000));

    // nobody may not touch the user's file; root may give anything to anyone.
    let nobody = pair.same_as("nobody", &Creds::nobody(), |r| {
        vec![
            Op::Chmod {
                path: at(r, "d/u"),
                mode: 0o777,
            },
            Op::Chown {
                path: at(r, "d/u"),
                uid: KEEP,
                gid: 65534,
            },
        ]
    });
    assert_eq!(nobody[0], Err(libc::EPERM));
    assert_eq!(nobody[1], Err(libc::EPERM));
    // `chown(path, -1, -1)` changes nothing. ext4 refuses it to a stranger; the mount cannot:
    // under FUSE_HANDLE_KILLPRIV_V2 it reaches the filesystem as the same bare request as the
    // set-id clearing before a stranger's write, so it succeeds (README "Semantics worth
    // knowing"). What it must not do is change the file.
    let chown_nothing = |r: &Path| {
        vec![
            Op::Chown {
                path: at(r, "d/u"),
                uid: KEEP,
                gid: KEEP,
            },
            stat(r, "d/u"),
        ]
    };
    let on_ext4 = run_as(&Creds::nobody(), &chown_nothing(&pair.reference));
    let on_mount = run_as(&Creds::nobody(), &chown_nothing(&pair.mnt));
    assert_eq!(on_ext4[0], Err(libc::EPERM));
    assert_eq!(on_mount[0], Ok(Done::Ok), "the documented difference");
    assert_eq!(on_mount[1], on_ext4[1], "and the file is unchanged");
    let root = pair.same_as("root", &Creds::root(), |r| {
        vec![
            Op::Chown {
                path: at(r, "d/r"),
                uid: 65534,
                gid: 65533,
            },
            // Root's chown of a file clears its set-id bits too.
            Op::Chown {
                path: at(r, "d/u"),
                uid: 65534,
                gid: KEEP,
            },
            stat(r, "d/r"),
            stat(r, "d/u"),
        ]
    });
    assert_eq!(perm_of(&root[2]), (0o644, 65534, 65533));
    assert_eq!(perm_of(&root[3]), (0o755, 65534, 2000));

    // A symlink has an owner of its own (lchown), and its target keeps its own.
    pair.same("symlink", |r| {
        std::os::unix::fs::symlink("u", r.join("d/l"))
    })
    .unwrap();
    let link = pair.same_as("lchown", &Creds::root(), |r| {
        vec![
            Op::Chown {
                path: at(r, "d/l"),
                uid: 1000,
                gid: 2000,
            },
            stat(r, "d/l"),
            stat(r, "d/u"),
        ]
    });
    assert_eq!(perm_of(&link[1]), (0o777, 1000, 2000));
    assert_eq!(perm_of(&link[2]), (0o755, 65534, 2000));
}

/// The issue's report: after `chown 65534:65533`, that user's (and that group's) later checks
/// must be what ext4 says, straight away (no stale attributes in the kernel's cache).
#[test]
fn after_chown_to_nobody_checks_match_ext4() {
    let (_n, _r, pair) = setup("issue");
    make(&pair, "d", true, 0, 0, 0o750);
    make(&pair, "d/f", false, 0, 0, 0o460);
    // Read once as each caller before the change, so the kernel has cached the old attributes.
    let in_group = Creds {
        uid: 1000,
        gid: 1000,
        groups: vec![1000, 65533],
    };
    let before = |creds: &Creds| {
        pair.same_as("before chown", creds, |r| {
            vec![
                Op::Read { path: at(r, "d/f") },
                Op::Stat { path: at(r, "d/f") },
            ]
        })
    };
    assert_eq!(before(&Creds::nobody())[0], Err(libc::EACCES));
    assert_eq!(before(&in_group)[0], Err(libc::EACCES));
    pair.same("chown 65534:65533", |r| {
        for rel in ["d", "d/f"] {
            std::os::unix::fs::chown(r.join(rel), Some(65534), Some(65533))?;
        }
        Ok(())
    })
    .unwrap();
    let checks = |r: &Path| {
        vec![
            Op::Read { path: at(r, "d/f") },
            Op::Write {
                path: at(r, "d/f"),
                flags: libc::O_APPEND,
                data: b"+".to_vec(),
            },
            Op::Write {
                path: at(r, "d/new"),
                flags: libc::O_CREAT,
                data: b"n".to_vec(),
            },
            Op::Stat { path: at(r, "d/f") },
            Op::Chmod {
                path: at(r, "d/f"),
                mode: 0o640,
            },
        ]
    };
    // The owner (0460: read only for the owner class) reads, may not write, creates in its
    // 0750 dir, chmods.
    let owner = pair.same_as("owner after chown", &Creds::nobody(), checks);
    assert_eq!(owner[0], Ok(Done::Bytes(b"hello".to_vec())));
    assert_eq!(owner[1], Err(libc::EACCES));
    assert_eq!(owner[2], Ok(Done::Ok));
    assert_eq!(owner[4], Ok(Done::Ok));
    pair.same("chmod back", |r| {
        fs::set_permissions(r.join("d/f"), fs::Permissions::from_mode(0o460))
    })
    .unwrap();
    // A member of group 65533: may read and write (group rw), may not create in the 0750
    // dir nor chmod.
    let member = pair.same_as("group member after chown", &in_group, checks);
    assert_eq!(member[0], Ok(Done::Bytes(b"hello".to_vec())));
    assert_eq!(member[1], Ok(Done::Ok));
    assert_eq!(member[2], Err(libc::EACCES));
    assert_eq!(member[4], Err(libc::EPERM));
    // Anyone else: not even through the directory.
    let other = pair.same_as("other after chown", &Creds::user(), checks);
    assert!(other.iter().all(|o| o == &Err(libc::EACCES)), "{other:?}");
    pair.same_stat("d/f").unwrap();
    pair.same("content", |r| fs::read(r.join("d/f"))).unwrap();
}

#[test]
fn setid_bits_cleared_on_write_truncate_chown_as_ext4() {
    let (_n, _r, pair) = setup("kill");
    make(&pair, "d", true, 1000, 1000, 0o755);
    for f in ["w", "t", "c", "rootw", "o_trunc"] {
        make(&pair, &format!("d/{f}"), false, 1000, 1000, 0o6755);
    }
    make(&pair, "d/nogx", false, 1000, 1000, 0o2644);
    let user = pair.same_as("owner writes", &Creds::user(), |r| {
        vec![
            Op::Write {
                path: at(r, "d/w"),
                flags: libc::O_APPEND,
                data: b" world".to_vec(),
            },
            Op::Truncate {
                path: at(r, "d/t"),
                len: 2,
            },
            Op::Write {
                path: at(r, "d/nogx"),
                flags: libc::O_APPEND,
                data: b"!".to_vec(),
            },
            Op::Open {
                path: at(r, "d/o_trunc"),
                flags: libc::O_WRONLY | libc::O_TRUNC,
                mode: 0,
            },
            stat(r, "d/w"),
            stat(r, "d/t"),
            stat(r, "d/nogx"),
            stat(r, "d/o_trunc"),
        ]
    });
    // Write and truncate by the owner clear setuid, and setgid when group-executable.
    assert_eq!(perm_of(&user[4]).0, 0o755);
    assert_eq!(perm_of(&user[5]).0, 0o755);
    assert_eq!(perm_of(&user[6]).0, 0o2644);
    assert_eq!(perm_of(&user[7]).0, 0o755);
    let root = pair.same_as("root", &Creds::root(), |r| {
        vec![
            // Root writes keep the bits (CAP_FSETID)...
            Op::Write {
                path: at(r, "d/rootw"),
                flags: libc::O_APPEND,
                data: b"!".to_vec(),
            },
            // ... but a chown clears them, even root's, even to the same owner.
            Op::Chown {
                path: at(r, "d/c"),
                uid: 1000,
                gid: 1000,
            },
            stat(r, "d/rootw"),
            stat(r, "d/c"),
        ]
    });
    assert_eq!(perm_of(&root[2]).0, 0o6755);
    assert_eq!(perm_of(&root[3]).0, 0o755);
    // A writer who is not the owner clears them too; a directory's chown keeps its setgid.
    make(&pair, "d/shared", false, 1000, 1000, 0o6777);
    make(&pair, "d/sgdir", true, 1000, 1000, 0o2755);
    let nobody = pair.same_as("other writer", &Creds::nobody(), |r| {
        vec![
            Op::Write {
                path: at(r, "d/shared"),
                flags: libc::O_APPEND,
                data: b"!".to_vec(),
            },
            stat(r, "d/shared"),
        ]
    });
    assert_eq!(perm_of(&nobody[1]).0, 0o777);
    pair.same("chown a setgid dir", |r| {
        std::os::unix::fs::chown(r.join("d/sgdir"), Some(65534), Some(65534))
    })
    .unwrap();
    assert_eq!(pair.same_stat("d/sgdir").unwrap().perm, 0o2755);
    for f in ["w", "t", "nogx", "o_trunc", "rootw", "c", "shared"] {
        pair.same(&format!("content of {f}"), |r| {
            fs::read(r.join("d").join(f))
        })
        .unwrap();
    }
}

#[test]
fn sticky_dirs_and_path_components_as_ext4() {
    let (_n, _r, pair) = setup("sticky");
    make(&pair, "tmp", true, 0, 0, 0o1777);
    make(&pair, "mine", true, 1000, 1000, 0o1777);
    let created = |creds: &Creds, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        pair.same_as("create", creds, move |r| {
            names
                .iter()
                .map(|n| Op::Write {
                    path: at(r, n),
                    flags: libc::O_CREAT | libc::O_EXCL,
                    data: b"x".to_vec(),
                })
                .collect()
        })
    };
    assert!(
        created(&Creds::user(), &["tmp/a", "tmp/a2"])
            .iter()
            .all(|o| o == &Ok(Done::Ok))
    );
    assert!(
        created(&Creds::nobody(), &["tmp/b", "mine/n", "mine/n2"])
            .iter()
            .all(|o| o == &Ok(Done::Ok))
    );
    pair.same("mkdir tmp/dir as root", |r| {
        fs::create_dir(r.join("tmp/dir"))
    })
    .unwrap();
    let nobody = pair.same_as("nobody in /tmp", &Creds::nobody(), |r| {
        vec![
            Op::Unlink {
                path: at(r, "tmp/a"),
            },
            Op::Rename {
                from: at(r, "tmp/a"),
                to: at(r, "tmp/c"),
                flags: 0,
            },
            // Replacing someone else's file is a delete too.
            Op::Rename {
                from: at(r, "tmp/b"),
                to: at(r, "tmp/a"),
                flags: 0,
            },
            Op::Rmdir {
                path: at(r, "tmp/dir"),
            },
            Op::Rename {
                from: at(r, "tmp/b"),
                to: at(r, "tmp/b2"),
                flags: 0,
            },
            Op::Unlink {
                path: at(r, "tmp/b2"),
            },
        ]
    });
    assert!(
        nobody[..4].iter().all(|o| o == &Err(libc::EPERM)),
        "{nobody:?}"
    );
    assert_eq!(nobody[4..], [Ok(Done::Ok), Ok(Done::Ok)]);
    // The directory's owner may delete anyone's file in it; root may anywhere.
    let owner = pair.same_as("dir owner", &Creds::user(), |r| {
        vec![
            Op::Unlink {
                path: at(r, "mine/n"),
            },
            Op::Rename {
                from: at(r, "tmp/a"),
                to: at(r, "tmp/a3"),
                flags: 0,
            },
        ]
    });
    assert_eq!(owner, [Ok(Done::Ok), Ok(Done::Ok)]);
    let root = pair.same_as("root", &Creds::root(), |r| {
        vec![Op::Unlink {
            path: at(r, "mine/n2"),
        }]
    });
    assert_eq!(root, [Ok(Done::Ok)]);

    // Every component is checked: no search (x) on a middle directory stops the walk; x
    // without r allows it; a supplementary group counts.
    make(&pair, "p", true, 0, 0, 0o755);
    make(&pair, "p/noexec", true, 0, 0, 0o744);
    make(&pair, "p/noexec/f", false, 0, 0, 0o644);
    make(&pair, "p/xonly", true, 0, 0, 0o711);
    make(&pair, "p/xonly/f", false, 0, 0, 0o644);
    make(&pair, "p/grp", true, 0, 2000, 0o070);
    make(&pair, "p/grp/deeper", true, 0, 0, 0o777);
    let walk = |r: &Path| {
        vec![
            stat(r, "p/noexec/f"),
            Op::Read {
                path: at(r, "p/noexec/f"),
            },
            Op::Read {
                path: at(r, "p/xonly/f"),
            },
            Op::Write {
                path: at(r, "p/xonly/new"),
                flags: libc::O_CREAT,
                data: b"n".to_vec(),
            },
            Op::Write {
                path: at(r, "p/grp/deeper/new"),
                flags: libc::O_CREAT,
                data: b"g".to_vec(),
            },
            Op::Mkdir {
                path: at(r, "p/grp/sub"),
                mode: 0o755,
            },
        ]
    };
    let nobody = pair.same_as("walk as nobody", &Creds::nobody(), walk);
    assert_eq!(nobody[0], Err(libc::EACCES));
    assert_eq!(nobody[2], Ok(Done::Bytes(b"hello".to_vec())));
    assert_eq!(nobody[3], Err(libc::EACCES));
    assert_eq!(nobody[4], Err(libc::EACCES));
    let user = pair.same_as("walk as a member of 2000", &Creds::user(), walk);
    assert_eq!(user[4], Ok(Done::Ok));
    assert_eq!(user[5], Ok(Done::Ok));
    // Moving a directory to another parent rewrites its `..`: that needs write permission
    // on the directory itself, not only on both parents.
    make(&pair, "open", true, 0, 0, 0o777);
    make(&pair, "open/a", true, 0, 0, 0o777);
    make(&pair, "open/b", true, 0, 0, 0o777);
    make(&pair, "open/a/roots", true, 0, 0, 0o755);
    make(&pair, "open/a/mine", true, 65534, 65534, 0o755);
    let moves = pair.same_as("move dirs as nobody", &Creds::nobody(), |r| {
        vec![
            Op::Rename {
                from: at(r, "open/a/roots"),
                to: at(r, "open/b/roots"),
                flags: 0,
            },
            Op::Rename {
                from: at(r, "open/a/roots"),
                to: at(r, "open/a/renamed"),
                flags: 0,
            },
            Op::Rename {
                from: at(r, "open/a/mine"),
                to: at(r, "open/b/mine"),
                flags: 0,
            },
        ]
    });
    assert_eq!(moves, [Err(libc::EACCES), Ok(Done::Ok), Ok(Done::Ok)]);
    pair.same_stat("p/grp/sub").unwrap();
    pair.same_stat("p/grp/deeper/new").unwrap();
}

#[test]
fn setgid_dirs_hand_down_their_group_as_ext4() {
    let (_n, _r, pair) = setup("sgid");
    make(&pair, "g", true, 0, 2000, 0o2777);
    let user = pair.same_as("member", &Creds::user(), |r| {
        vec![
            Op::Open {
                path: at(r, "g/u"),
                flags: libc::O_CREAT | libc::O_WRONLY,
                mode: 0o2755,
            },
            Op::Mkdir {
                path: at(r, "g/ud"),
                mode: 0o755,
            },
            stat(r, "g/u"),
            stat(r, "g/ud"),
        ]
    });
    assert_eq!(perm_of(&user[2]), (0o2755, 1000, 2000));
    assert_eq!(perm_of(&user[3]), (0o2755, 1000, 2000));
    let nobody = pair.same_as("non-member", &Creds::nobody(), |r| {
        vec![
            Op::Open {
                path: at(r, "g/n"),
                flags: libc::O_CREAT | libc::O_WRONLY,
                mode: 0o2755,
            },
            Op::Mkdir {
                path: at(r, "g/nd"),
                mode: 0o2755,
            },
            Op::Mknod {
                path: at(r, "g/nm"),
                mode: libc::S_IFREG | 0o2644,
                rdev: 0,
            },
            stat(r, "g/n"),
            stat(r, "g/nd"),
            stat(r, "g/nm"),
        ]
    });
    // The group comes from the directory; a non-member's new group-executable file loses
    // setgid, a directory keeps the inherited one, and setgid without group-exec (the old
    // mandatory-locking mark) stays.
    assert_eq!(perm_of(&nobody[3]), (0o755, 65534, 2000));
    assert_eq!(perm_of(&nobody[4]), (0o2755, 65534, 2000));
    assert_eq!(perm_of(&nobody[5]), (0o2644, 65534, 2000));
}

#[test]
fn open_flags_and_utimensat_follow_ext4() {
    let (_n, _r, pair) = setup("open");
    make(&pair, "d", true, 1000, 1000, 0o777);
    make(&pair, "d/f", false, 1000, 1000, 0o644);
    make(&pair, "d/ww", false, 1000, 1000, 0o666);
    let user = pair.same_as("owner", &Creds::user(), |r| {
        vec![
            Op::Open {
                path: at(r, "d/f"),
                flags: libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                mode: 0o644,
            },
            Op::Open {
                path: at(r, "d/x"),
                flags: libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                mode: 0o600,
            },
            Op::Write {
                path: at(r, "d/f"),
                flags: libc::O_APPEND,
                data: b" more".to_vec(),
            },
            Op::Write {
                path: at(r, "d/f"),
                flags: libc::O_APPEND,
                data: b" again".to_vec(),
            },
            Op::Read { path: at(r, "d/f") },
            Op::Open {
                path: at(r, "d/ww"),
                flags: libc::O_WRONLY | libc::O_TRUNC,
                mode: 0,
            },
            Op::Read {
                path: at(r, "d/ww"),
            },
            stat(r, "d/x"),
        ]
    });
    assert_eq!(user[0], Err(libc::EEXIST));
    assert_eq!(user[1], Ok(Done::Ok));
    assert_eq!(user[4], Ok(Done::Bytes(b"hello more again".to_vec())));
    assert_eq!(user[6], Ok(Done::Bytes(vec![])));
    // An append lands at the end of what another process wrote meanwhile.
    pair.same("root appends", |r| {
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(r.join("d/f"))?
            .write_all(b" root")
    })
    .unwrap();
    let nobody = pair.same_as("nobody", &Creds::nobody(), |r| {
        vec![
            Op::Open {
                path: at(r, "d/f"),
                flags: libc::O_WRONLY | libc::O_TRUNC,
                mode: 0,
            },
            Op::Write {
                path: at(r, "d/ww"),
                flags: libc::O_APPEND,
                data: b"1".to_vec(),
            },
            Op::Write {
                path: at(r, "d/ww"),
                flags: libc::O_APPEND,
                data: b"2".to_vec(),
            },
            Op::Read { path: at(r, "d/f") },
            Op::Read {
                path: at(r, "d/ww"),
            },
        ]
    });
    assert_eq!(nobody[0], Err(libc::EACCES));
    assert_eq!(
        nobody[3],
        Ok(Done::Bytes(b"hello more again root".to_vec()))
    );
    assert_eq!(nobody[4], Ok(Done::Bytes(b"12".to_vec())));

    // utimensat: "now" needs ownership or write permission; explicit times need ownership.
    let t = TimeArg::At(1_000_000_000, 123_456_789);
    let times = |r: &Path| {
        let u = |rel: &str, atime, mtime| Op::Utimens {
            path: at(r, rel),
            atime,
            mtime,
        };
        vec![
            u("d/ww", TimeArg::Now, TimeArg::Now),
            u("d/f", TimeArg::Now, TimeArg::Now),
            u("d/f", TimeArg::Now, TimeArg::Omit),
            u("d/f", TimeArg::Omit, TimeArg::Omit),
            u("d/ww", t, TimeArg::Omit),
            u("d/ww", TimeArg::Omit, t),
            u("d/f", t, t),
        ]
    };
    let nobody = pair.same_as("utimens as nobody", &Creds::nobody(), times);
    assert_eq!(
        nobody,
        [
            Ok(Done::Ok),
            Err(libc::EACCES),
            // One time "now" and the other omitted counts as an explicit change.
            Err(libc::EPERM),
            Ok(Done::Ok),
            Err(libc::EPERM),
            Err(libc::EPERM),
            Err(libc::EPERM),
        ]
    );
    let owner = pair.same_as("utimens as owner", &Creds::user(), times);
    assert!(owner.iter().all(|o| o == &Ok(Done::Ok)), "{owner:?}");
    // The explicit times stuck, the omitted one did not move.
    pair.same("times of d/f", |r| {
        let m = fs::metadata(r.join("d/f"))?;
        Ok((m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()))
    })
    .unwrap();
    let stamp = pair.stamp("d/ww");
    let root = pair.same_as("utimens as root", &Creds::root(), |r| {
        vec![Op::Utimens {
            path: at(r, "d/ww"),
            atime: TimeArg::Omit,
            mtime: TimeArg::At(2_000_000_000, 5),
        }]
    });
    assert_eq!(root, [Ok(Done::Ok)]);
    assert_eq!(pair.same_times_since(&stamp), (true, true));
    pair.same("mtime of d/ww", |r| {
        let m = fs::metadata(r.join("d/ww"))?;
        Ok((m.mtime(), m.mtime_nsec()))
    })
    .unwrap();
}

/// Owners and modes are stored as numbers and shown as such on every node (no idmapping);
/// a change on one node governs checks on another once it arrived and the other's kernel
/// attribute cache (1 s) expired.
#[test]
fn ownership_set_on_one_node_governs_checks_on_another() {
    let c = Cluster::start(2, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    fs::create_dir(a.p("shared")).unwrap();
    fs::write(a.p("shared/f"), b"secret").unwrap();
    std::os::unix::fs::chown(a.p("shared/f"), Some(65534), Some(65533)).unwrap();
    fs::set_permissions(a.p("shared/f"), fs::Permissions::from_mode(0o600)).unwrap();
    let read_on_b = |creds: &Creds| {
        run_as(
            creds,
            &[Op::Read {
                path: b.p("shared/f"),
            }],
        )
        .remove(0)
    };
    let secret = Ok(Done::Bytes(b"secret".to_vec()));
    let start = Instant::now();
    // Content, owner and mode arrive as separate versions: wait for the last.
    let ownership_on_b = || {
        fs::metadata(b.p("shared/f"))
            .map(|m| (m.uid(), m.gid(), m.mode() & 0o7777))
            .ok()
    };
    assert!(
        wait_until(Duration::from_secs(60), || ownership_on_b()
            == Some((65534, 65533, 0o600))),
        "the chown and chmod never reached the other node"
    );
    assert_eq!(read_on_b(&Creds::nobody()), secret);
    assert_eq!(read_on_b(&Creds::user()), Err(libc::EACCES));

    // Opened up on A: B's users may read once the change arrived and B's cache expired;
    // closed again: they may not.
    fs::set_permissions(a.p("shared/f"), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || read_on_b(&Creds::user())
            == secret),
        "a chmod on A never reached B's checks"
    );
    std::os::unix::fs::chown(a.p("shared/f"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(a.p("shared/f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || read_on_b(&Creds::nobody())
            == Err(libc::EACCES)
            && read_on_b(&Creds::user()) == secret),
        "a chown on A never reached B's checks"
    );
    eprintln!("ownership round trips took {:?}", start.elapsed());
    // B's own view agrees numerically.
    assert_eq!(ownership_on_b(), Some((1000, 1000, 0o600)));
}

/// The mount's own root is a directory like any other: a chown/chmod of it (e.g. a
/// `/tmp`-style sticky root) governs later checks as on ext4's root.
#[test]
fn the_mount_root_takes_owner_and_mode_as_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    assert_eq!(mount_fstype(&n.mnt).as_deref(), Some("fuse"));
    let pair = Pair {
        mnt: n.mnt.clone(),
        reference: reference.root.clone(),
    };
    pair.same("chown and chmod the root", |r| {
        std::os::unix::fs::chown(r, Some(65534), Some(65533))?;
        fs::set_permissions(r, fs::Permissions::from_mode(0o1770))
    })
    .unwrap();
    // (Not `same_stat`: ext4's root holds lost+found, so its link count differs.)
    pair.same("owner and mode of the root", |r| {
        fs::metadata(r).map(|m| (m.mode(), m.uid(), m.gid()))
    })
    .unwrap();
    let in_group = Creds {
        uid: 1000,
        gid: 1000,
        groups: vec![65533],
    };
    let member = pair.same_as("group member", &in_group, |r| {
        vec![Op::Write {
            path: at(r, "m"),
            flags: libc::O_CREAT,
            data: b"m".to_vec(),
        }]
    });
    assert_eq!(member[0], Ok(Done::Ok));
    let owner = pair.same_as("owner", &Creds::nobody(), |r| {
        vec![
            Op::Write {
                path: at(r, "o"),
                flags: libc::O_CREAT,
                data: b"o".to_vec(),
            },
            // The root's owner may delete in its sticky root.
            Op::Unlink { path: at(r, "m") },
            Op::Chmod {
                path: r.to_path_buf(),
                mode: 0o1777,
            },
        ]
    });
    assert_eq!(owner, [Ok(Done::Ok), Ok(Done::Ok), Ok(Done::Ok)]);
    let other = pair.same_as("other", &Creds::user(), |r| {
        vec![
            Op::Write {
                path: at(r, "u"),
                flags: libc::O_CREAT,
                data: b"u".to_vec(),
            },
            Op::Unlink { path: at(r, "o") },
            Op::Rename {
                from: at(r, "o"),
                to: at(r, "o2"),
                flags: 0,
            },
            Op::Unlink { path: at(r, "u") },
        ]
    });
    assert_eq!(
        other,
        [
            Ok(Done::Ok),
            Err(libc::EPERM),
            Err(libc::EPERM),
            Ok(Done::Ok)
        ]
    );
}

/// The one deliberate difference: a volume's directory (`@home`) is shown 0700 and owned by
/// the user the node runs as, whatever chown/chmod said, so other local users cannot enter
/// it (README "Volumes"). Below it, owners and modes are kept and checked as anywhere else;
/// root (the node's user here) still reaches them.
#[test]
fn a_volume_directory_stays_private_whatever_its_owner() {
    let mut n = Node::init();
    n.start();
    let home = n.p("@home");
    assert!(wait_until(Duration::from_secs(60), || home.is_dir()));
    fs::create_dir(home.join("x")).unwrap();
    fs::write(home.join("x/f"), b"f").unwrap();
    for p in [home.clone(), home.join("x"), home.join("x/f")] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65533)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = fs::metadata(&home).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 0, 0));
    let m = fs::metadata(home.join("x/f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 65534, 65533));
    let nobody = run_as(
        &Creds::nobody(),
        &[
            Op::Read {
                path: home.join("x/f"),
            },
            Op::Stat { path: home.clone() },
        ],
    );
    assert_eq!(nobody[0], Err(libc::EACCES));
    assert!(matches!(nobody[1], Ok(Done::Stat(_))), "{nobody:?}");
}

/// A chown or chmod while another process has the file open with unwritten data stays after
/// that process closes it (its commit must not bring back the attributes it opened with).
#[test]
fn owner_and_mode_changed_while_open_survive_the_close() {
    let (_n, _r, pair) = setup("open_while");
    make(&pair, "d", true, 0, 0, 0o777);
    make(&pair, "d/f", false, 1000, 1000, 0o666);
    let seen = pair.same_seen("chown while open", |r| {
        let writer = hold_as(
            &Creds::user(),
            &[
                Op::Keep {
                    path: at(r, "d/f"),
                    flags: libc::O_WRONLY | libc::O_APPEND,
                    mode: 0,
                },
                Op::WriteFd {
                    fd: 0,
                    data: b" written while open".to_vec(),
                },
            ],
        );
        assert!(writer.outcomes.iter().all(|o| o == &Ok(Done::Ok)));
        std::os::unix::fs::chown(r.join("d/f"), Some(65534), Some(65533)).unwrap();
        fs::set_permissions(r.join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
        writer.release();
        run_as(
            &Creds::nobody(),
            &[Op::Read { path: at(r, "d/f") }, stat(r, "d/f")],
        )
    });
    assert_eq!(
        seen[0],
        Ok(Done::Bytes(b"hello written while open".to_vec()))
    );
    assert_eq!(perm_of(&seen[1]), (0o640, 65534, 65533));
}
