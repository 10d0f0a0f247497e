//! Extended attributes on the mount against a reference ext4 mounted `noacl`: namespaces,
//! flags, sizes and limits, who may do what, times, survival of rename and restart, and
//! replication to another node. Also the set-id bits a write clears, which the mount does
//! itself since it took over privilege removal from the kernel (FUSE_HANDLE_KILLPRIV_V2).

mod common;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

conform_child!();

fn set(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    set_xattr(p, name.as_bytes(), value, flags)
}

fn remove(p: &Path, name: &str) -> io::Result<()> {
    Op::RemoveXattr {
        path: p.to_path_buf(),
        name: name.as_bytes().to_vec(),
    }
    .run()
    .map(|_| ())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn ssize(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `lgetxattr` with a buffer of `len` bytes (NULL when 0, which asks for the size).
fn get_len(p: &Path, name: &str, len: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; len];
    let ptr = if len == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings; `ptr` is NULL or has `len` writable bytes.
    ssize(unsafe { libc::lgetxattr(cpath(p).as_ptr(), name.as_ptr(), ptr, len) })
}

/// `llistxattr` with a buffer of `len` bytes (NULL when 0).
fn list_len(p: &Path, len: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; len];
    let ptr = if len == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: a valid C string; `ptr` is NULL or has `len` writable bytes.
    ssize(unsafe { libc::llistxattr(cpath(p).as_ptr(), ptr, len) })
}

/// A valid `system.posix_acl_access` value: user::rw-, group::r--, other::r--.
fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 4)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

#[test]
fn xattrs_agree_with_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "xattr");

    pair.same("setup", |r| {
        fs::write(r.join("f"), b"content")?;
        fs::create_dir(r.join("d"))?;
        std::os::unix::fs::symlink("f", r.join("l"))?;
        Op::Mknod {
            path: r.join("p"),
            mode: libc::S_IFIFO | 0o644,
            rdev: 0,
        }
        .run()
        .map(|_| ())
    })
    .unwrap();

    // Set, flags, missing names.
    let file = pair.stamp("f");
    pair.same("set user.a", |r| set(&r.join("f"), "user.a", b"hello", 0))
        .unwrap();
    assert_eq!(pair.same_times_since(&file), (false, true));
    let errno = |what: &str, op: &dyn Fn(&Path) -> io::Result<()>| pair.same(what, op).unwrap_err();
    assert_eq!(
        errno("create existing", &|r| set(
            &r.join("f"),
            "user.a",
            b"x",
            libc::XATTR_CREATE
        )),
        libc::EEXIST
    );
    assert_eq!(
        errno("replace missing", &|r| set(
            &r.join("f"),
            "user.m",
            b"x",
            libc::XATTR_REPLACE
        )),
        libc::ENODATA
    );
    pair.same("replace existing", |r| {
        set(&r.join("f"), "user.a", b"world!", libc::XATTR_REPLACE)
    })
    .unwrap();
    pair.same("create new", |r| {
        set(&r.join("f"), "user.b", b"", libc::XATTR_CREATE)
    })
    .unwrap();
    assert_eq!(
        pair.same("get empty", |r| get_xattr(&r.join("f"), b"user.b")),
        Ok(Vec::new())
    );
    assert_eq!(
        pair.same("get missing", |r| get_xattr(&r.join("f"), b"user.m")),
        Err(libc::ENODATA)
    );
    assert_eq!(
        errno("remove missing", &|r| remove(&r.join("f"), "user.m")),
        libc::ENODATA
    );

    // Size queries and buffers too small.
    assert_eq!(
        pair.same("size of value", |r| get_len(&r.join("f"), "user.a", 0)),
        Ok(6)
    );
    assert_eq!(
        pair.same("value buffer too small", |r| get_len(
            &r.join("f"),
            "user.a",
            3
        )),
        Err(libc::ERANGE)
    );
    let names = pair.same("size of list", |r| list_len(&r.join("f"), 0));
    assert_eq!(names, Ok(b"user.a\0user.b\0".len()));
    assert_eq!(
        pair.same("list buffer too small", |r| list_len(&r.join("f"), 4)),
        Err(libc::ERANGE)
    );

    // Where user attributes may go, and the limits.
    pair.same("user.* on a dir", |r| {
        set(&r.join("d"), "user.d", b"dir", 0)
    })
    .unwrap();
    // user.* only on files and directories, as the VFS rules it.
    for (what, path) in [("user.* on a symlink", "l"), ("user.* on a fifo", "p")] {
        assert_eq!(
            errno(what, &|r| set(&r.join(path), "user.x", b"1", 0)),
            libc::EPERM
        );
    }
    assert_eq!(
        errno("value over 64 KiB", &|r| set(
            &r.join("d"),
            "user.v",
            &vec![1; 65_537],
            0
        )),
        libc::E2BIG
    );
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(
        errno("name of 256 bytes", &|r| set(&r.join("d"), &long, b"1", 0)),
        libc::ERANGE
    );
    pair.same("budget setup", |r| fs::write(r.join("g"), b""))
        .unwrap();
    pair.same("3000 bytes fit", |r| {
        set(&r.join("g"), "user.big", &[7; 3000], 0)
    })
    .unwrap();
    assert_eq!(
        errno("another 3000 do not", &|r| set(
            &r.join("g"),
            "user.big2",
            &[7; 3000],
            0
        )),
        libc::ENOSPC
    );
    assert_eq!(
        errno("5000 bytes never fit", &|r| set(
            &r.join("d"),
            "user.huge",
            &[7; 5000],
            0
        )),
        libc::ENOSPC
    );
    pair.same("many small fit", |r| {
        (0..30).try_for_each(|i| set(&r.join("g"), &format!("user.s{i}"), &[1; 8], 0))
    })
    .unwrap();
    pair.same_xattrs("g").unwrap();

    // Other namespaces.
    pair.same("trusted.*", |r| set(&r.join("f"), "trusted.t", b"t", 0))
        .unwrap();
    pair.same("security.*", |r| set(&r.join("f"), "security.s", b"s", 0))
        .unwrap();
    pair.same("trusted.* on a symlink", |r| {
        set(&r.join("l"), "trusted.l", b"l", 0)
    })
    .unwrap();
    // POSIX ACLs: not supported by the mount (EOPNOTSUPP, as a filesystem without them
    // answers). Not differential: this kernel's ext4 always has ACLs (6.x knows no `noacl`).
    let f = pair.mnt.join("f");
    let acl = |p: &Path, name: &str| set(p, name, &acl_value(), 0).map_err(|e| e.raw_os_error());
    assert_eq!(
        acl(&f, "system.posix_acl_access"),
        Err(Some(libc::EOPNOTSUPP))
    );
    assert_eq!(
        get_xattr(&f, b"system.posix_acl_access").map_err(|e| e.raw_os_error()),
        Err(Some(libc::EOPNOTSUPP))
    );
    assert_eq!(
        acl(&pair.mnt.join("d"), "system.posix_acl_default"),
        Err(Some(libc::EOPNOTSUPP))
    );
    for (what, name) in [
        ("other system.*", "system.x"),
        ("unknown namespace", "other.x"),
    ] {
        assert_eq!(
            errno(what, &|r| set(&r.join("f"), name, b"1", 0)),
            libc::EOPNOTSUPP
        );
    }
    errno("bare prefix", &|r| set(&r.join("f"), "user.", b"1", 0));
    for rel in ["f", "d", "l", "p"] {
        pair.same_xattrs(rel).unwrap();
    }

    // Remove; rename keeps them.
    let file = pair.stamp("f");
    pair.same("remove", |r| remove(&r.join("f"), "user.b"))
        .unwrap();
    assert_eq!(pair.same_times_since(&file), (false, true));
    pair.same("rename", |r| fs::rename(r.join("f"), r.join("f2")))
        .unwrap();
    let kept = pair.same_xattrs("f2").unwrap();
    assert_eq!(kept.len(), 3, "{kept:?}");

    // Another user: list hides trusted.*, write needs write permission, trusted.* and the
    // sticky-directory rule as the VFS applies them.
    pair.same("sticky dir", |r| {
        fs::create_dir(r.join("tmp"))?;
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777))?;
        fs::write(r.join("tmp/root"), b"")?;
        fs::set_permissions(r.join("tmp/root"), fs::Permissions::from_mode(0o666))
    })
    .unwrap();
    let nobody = pair.same_as("nobody", &Creds::nobody(), |r| {
        let x = |path: &str, name: &str| Op::SetXattr {
            path: r.join(path),
            name: name.as_bytes().to_vec(),
            value: b"v".to_vec(),
            flags: 0,
        };
        vec![
            Op::GetXattr {
                path: r.join("f2"),
                name: b"user.a".to_vec(),
            },
            Op::GetXattr {
                path: r.join("f2"),
                name: b"user.a".to_vec(),
            },
            x("f2", "user.n"),
            x("f2", "trusted.n"),
            Op::GetXattr {
                path: r.join("f2"),
                name: b"trusted.t".to_vec(),
            },
            x("tmp/root", "user.n"),
            Op::Write {
                path: r.join("tmp/mine"),
                flags: libc::O_CREAT,
                data: b"m".to_vec(),
            },
            x("tmp/mine", "user.n"),
            x("tmp", "user.n"),
        ]
    });
    assert_eq!(nobody[0], Ok(Done::Bytes(b"world!".to_vec())));
    assert_eq!(nobody[2], Err(libc::EACCES));
    assert_eq!(nobody[3], Err(libc::EPERM));
    // A writable file in a sticky directory takes them; the sticky directory itself only
    // from its owner, though anyone may write in it.
    assert_eq!(nobody[5], Ok(Done::Ok));
    assert_eq!(nobody[7], Ok(Done::Ok));
    assert_eq!(nobody[8], Err(libc::EPERM));
    let listed = pair.same_as("nobody lists", &Creds::nobody(), |r| {
        vec![Op::ListXattr { path: r.join("f2") }]
    });
    let names: Vec<&[u8]> = match &listed[0] {
        Ok(Done::Xattrs(x)) => x.iter().map(|(n, _)| n.as_slice()).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names, [&b"security.s"[..], b"user.a"]);

    // Everything comes back from the store after a restart.
    let rels = ["f2", "d", "g", "l", "tmp/mine"];
    let before: Vec<_> = rels.iter().map(|rel| pair.same_xattrs(rel)).collect();
    n.stop();
    n.start();
    for (rel, want) in rels.iter().zip(before) {
        assert_eq!(xattrs(&pair.mnt.join(rel)).ok(), want.ok(), "{rel}");
    }
}

#[test]
fn set_id_bits_are_cleared_by_writes_as_on_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "setid");
    // (name, mode): setuid, setgid with group execute, setgid without it (not a set-id
    // program: left alone), and setuid files for root's write, a truncate and a chown.
    let files = [
        ("suid", 0o4777),
        ("sgid", 0o2777),
        ("sgid-nox", 0o2767),
        ("root", 0o4777),
        ("trunc", 0o4777),
        ("chown", 0o4777),
    ];
    pair.same("setup", |r| {
        files.iter().try_for_each(|(name, mode)| {
            fs::write(r.join(name), b"0123456789")?;
            fs::set_permissions(r.join(name), fs::Permissions::from_mode(*mode))
        })
    })
    .unwrap();
    let write = |r: &Path, name: &str| Op::Write {
        path: r.join(name),
        flags: libc::O_APPEND,
        data: b"more".to_vec(),
    };
    let outcomes = pair.same_as("nobody writes", &Creds::nobody(), |r| {
        vec![
            write(r, "suid"),
            write(r, "sgid"),
            write(r, "sgid-nox"),
            Op::Truncate {
                path: r.join("trunc"),
                len: 3,
            },
        ]
    });
    assert!(outcomes.iter().all(|o| *o == Ok(Done::Ok)), "{outcomes:?}");
    pair.same("root writes", |r| write(r, "root").run().map(|_| ()))
        .unwrap();
    pair.same("root chowns", |r| {
        std::os::unix::fs::chown(r.join("chown"), Some(1000), None)
    })
    .unwrap();
    let perms = |root: &Path| {
        files.map(|(name, _)| {
            let mode = fs::symlink_metadata(root.join(name))
                .unwrap()
                .permissions()
                .mode();
            (name, mode & 0o7777)
        })
    };
    let mnt = perms(&pair.mnt);
    assert_eq!(
        mnt,
        perms(&pair.reference),
        "the mount (left) and ext4 (right)"
    );
    assert_eq!(
        mnt,
        [
            ("suid", 0o777),
            ("sgid", 0o777),
            ("sgid-nox", 0o767),
            ("root", 0o4777),
            ("trunc", 0o777),
            ("chown", 0o777),
        ]
    );
    // File capabilities go with any write, root's too.
    let cap = [2u32 << 24, 1 << 10, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect::<Vec<u8>>();
    pair.same("setcap", |r| {
        ["cap-root", "cap-nobody"].iter().try_for_each(|name| {
            fs::write(r.join(name), b"bin")?;
            fs::set_permissions(r.join(name), fs::Permissions::from_mode(0o777))?;
            set(&r.join(name), "security.capability", &cap, 0)
        })
    })
    .unwrap();
    assert_eq!(pair.same_xattrs("cap-root").unwrap().len(), 1);
    pair.same("root writes cap-root", |r| {
        write(r, "cap-root").run().map(|_| ())
    })
    .unwrap();
    let outcomes = pair.same_as("nobody writes cap-nobody", &Creds::nobody(), |r| {
        vec![write(r, "cap-nobody")]
    });
    assert_eq!(outcomes, [Ok(Done::Ok)]);
    for name in ["cap-root", "cap-nobody"] {
        assert_eq!(pair.same_xattrs(name).unwrap().len(), 0, "{name}");
    }
    // The cleared bits are committed, not just shown.
    n.stop();
    n.start();
    let mode = fs::metadata(pair.mnt.join("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o777);
}

#[test]
fn xattrs_and_special_files_replicate_to_another_node() {
    let c = Cluster::start(2, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    fs::write(a.p("f"), b"x").unwrap();
    set(&a.p("f"), "user.color", b"blue", 0).unwrap();
    set(&a.p("f"), "trusted.t", &[0, 1, 2], 0).unwrap();
    fs::create_dir(a.p("d")).unwrap();
    set(&a.p("d"), "user.d", b"dir", 0).unwrap();
    let node = |rel: &str, mode, rdev| {
        Op::Mknod {
            path: a.p(rel),
            mode,
            rdev,
        }
        .run()
        .unwrap()
    };
    node("fifo", libc::S_IFIFO | 0o640, 0);
    node("chr", libc::S_IFCHR | 0o600, libc::makedev(4000, 0xabcde));
    node("blk", libc::S_IFBLK | 0o660, libc::makedev(8, 1));
    std::os::unix::fs::lchown(a.p("blk"), Some(0), Some(6)).unwrap();
    let rels = ["f", "d", "fifo", "chr", "blk"];
    let seen = |n: &Node| {
        rels.map(|rel| {
            let p = n.p(rel);
            (
                fs::symlink_metadata(&p).map(|m| Stat::of(&m)).ok(),
                xattrs(&p).ok(),
            )
        })
    };
    let want = seen(a);
    assert!(
        want.iter().all(|(s, x)| s.is_some() && x.is_some()),
        "{want:?}"
    );
    let arrived = wait_until(Duration::from_secs(60), || seen(b) == want);
    assert!(arrived, "node B shows {:?}, node A {want:?}", seen(b));
}
