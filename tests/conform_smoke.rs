//! The conformance harness itself, on operations the mount has always served: the same
//! results and errnos as a reference ext4, as root and as another user.

mod common;

use std::fs;
use std::io;
use std::path::Path;

use common::*;

conform_child!();

#[test]
fn mkdir_write_stat_rename_agree_with_ext4() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "smoke");

    pair.same("mkdir", |r| fs::create_dir(r.join("d"))).unwrap();
    pair.same("mkdir again", |r| fs::create_dir(r.join("d")))
        .unwrap_err();
    pair.same("write", |r| fs::write(r.join("d/f"), b"hello"))
        .unwrap();
    pair.same("chmod", |r| {
        fs::set_permissions(
            r.join("d/f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
    })
    .unwrap();
    pair.same_stat("d/f").unwrap();
    pair.same_stat("d").unwrap();
    pair.same_stat("missing").unwrap_err();

    // A rename in a directory changes its times; the moved file keeps its content.
    let dir = pair.stamp("d");
    pair.same("rename", |r| fs::rename(r.join("d/f"), r.join("d/g")))
        .unwrap();
    assert_eq!(pair.same_times_since(&dir), (true, true));
    pair.same("read", |r| fs::read(r.join("d/g"))).unwrap();
    pair.same_stat("d/g").unwrap();

    // Errors agree too.
    pair.same("mkdir e", |r| fs::create_dir(r.join("e")))
        .unwrap();
    pair.same("write e/x", |r| fs::write(r.join("e/x"), b"x"))
        .unwrap();
    let errno = |what, op: &dyn Fn(&Path) -> io::Result<()>| pair.same(what, op).unwrap_err();
    assert_eq!(
        errno("dir over file", &|r| rename2(r, "e", "d/g", 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno("file over non-empty dir", &|r| rename2(r, "d/g", "e", 0)),
        libc::EISDIR
    );
    assert_eq!(
        errno("noreplace", &|r| rename2(
            r,
            "d/g",
            "e/x",
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST
    );
    assert_eq!(
        errno("dir into itself", &|r| rename2(r, "e", "e/sub", 0)),
        libc::EINVAL
    );
    pair.same("rmdir non-empty", |r| fs::remove_dir(r.join("e")))
        .unwrap_err();

    // Another user: may read what others may read, not a 0640 file of root's, and may not
    // write in root's 0755 directory.
    let outcomes = pair.same_as("nobody", &Creds::nobody(), |r| {
        vec![
            Op::Read {
                path: r.join("e/x"),
            },
            Op::Read {
                path: r.join("d/g"),
            },
            Op::Write {
                path: r.join("d/nobody"),
                flags: libc::O_CREAT,
                data: b"n".to_vec(),
            },
            Op::Stat {
                path: r.join("e/x"),
            },
        ]
    });
    assert_eq!(outcomes[0], Ok(Done::Bytes(b"x".to_vec())));
    assert_eq!(outcomes[1], Err(libc::EACCES));
    assert_eq!(outcomes[2], Err(libc::EACCES));
    assert!(matches!(outcomes[3], Ok(Done::Stat(_))), "{outcomes:?}");
    // The reference disk is what the harness says it is.
    assert_eq!(mount_fstype(&reference.root).as_deref(), Some("ext4"));
}
