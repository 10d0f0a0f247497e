//! Special files (FIFOs, sockets, character and block devices) on the mount, against a
//! reference ext4 mounted like it (`nodev`): creation, attributes, device numbers, what the
//! kernel does with them once made, who may make them, and that they survive a restart.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use common::*;

conform_child!();

fn mknod(p: &Path, mode: u32, rdev: libc::dev_t) -> io::Result<()> {
    Op::Mknod {
        path: p.to_path_buf(),
        mode,
        rdev,
    }
    .run()
    .map(|_| ())
}

/// Device numbers that need the kernel's full encoding (12-bit major, 20-bit minor).
fn devices() -> [(&'static str, u32, libc::dev_t); 3] {
    [
        ("null", libc::S_IFCHR, libc::makedev(1, 3)),
        ("wide", libc::S_IFCHR, libc::makedev(4000, 0xabcde)),
        ("disk", libc::S_IFBLK, libc::makedev(8, 300)),
    ]
}

#[test]
fn special_files_agree_with_ext4_and_survive_a_restart() {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, "special");

    let dir = pair.stamp("");
    pair.same("mkfifo", |r| {
        mknod(&r.join("fifo"), libc::S_IFIFO | 0o640, 0)
    })
    .unwrap();
    assert_eq!(pair.same_times_since(&dir), (true, true));
    for (name, kind, rdev) in devices() {
        pair.same(name, |r| mknod(&r.join(name), kind | 0o620, rdev))
            .unwrap();
        let stat = pair.same_stat(name).unwrap();
        assert_eq!((stat.kind, stat.rdev), (kind, rdev), "{name}");
    }
    let stat = pair.same_stat("fifo").unwrap();
    assert_eq!((stat.kind, stat.perm, stat.size), (libc::S_IFIFO, 0o640, 0));
    pair.same("mknod over a name", |r| {
        mknod(&r.join("fifo"), libc::S_IFIFO | 0o600, 0)
    })
    .unwrap_err();

    // Sockets: bind() makes the node; connect() reaches the listener of this node.
    pair.same("bind", |r| UnixListener::bind(r.join("sock")).map(|_| ()))
        .unwrap();
    assert_eq!(pair.same_stat("sock").unwrap().kind, libc::S_IFSOCK);
    pair.same("bind and connect", |r| {
        let path = r.join("live.sock");
        let listener = UnixListener::bind(&path)?;
        let mut client = UnixStream::connect(&path)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"ping")?;
        let mut got = [0u8; 4];
        server.read_exact(&mut got)?;
        Ok(got)
    })
    .unwrap();

    // A FIFO is a pipe between processes of this node: the kernel serves it.
    let through = pair
        .same("fifo pass-through", |r| {
            let path = r.join("fifo");
            let writer = std::thread::spawn({
                let path = path.clone();
                move || {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(path)?
                        .write_all(b"through")
                }
            });
            let mut got = Vec::new();
            fs::File::open(&path)?.read_to_end(&mut got)?;
            writer.join().unwrap()?;
            Ok(got)
        })
        .unwrap();
    assert_eq!(through, b"through");

    // Device nodes cannot be opened on a `nodev` mount, on either side.
    let open = |rel: &'static str| {
        move |r: &Path| {
            Op::Open {
                path: r.join(rel),
                flags: libc::O_RDONLY,
                mode: 0,
            }
            .run()
            .map(|_| ())
        }
    };
    assert_eq!(pair.same("open null", open("null")), Err(libc::EACCES));
    assert_eq!(pair.same("open disk", open("disk")), Err(libc::EACCES));

    // Another user: no device nodes without CAP_MKNOD, FIFOs in a directory of its own.
    pair.same("own dir", |r| {
        fs::create_dir(r.join("nobody"))?;
        std::os::unix::fs::chown(r.join("nobody"), Some(65534), Some(65534))
    })
    .unwrap();
    let outcomes = pair.same_as("nobody mknod", &Creds::nobody(), |r| {
        vec![
            Op::Mknod {
                path: r.join("nobody/c"),
                mode: libc::S_IFCHR | 0o600,
                rdev: libc::makedev(1, 3),
            },
            Op::Mknod {
                path: r.join("nobody/p"),
                mode: libc::S_IFIFO | 0o600,
                rdev: 0,
            },
            Op::Mknod {
                path: r.join("p"),
                mode: libc::S_IFIFO | 0o600,
                rdev: 0,
            },
            Op::Stat {
                path: r.join("nobody/p"),
            },
        ]
    });
    assert_eq!(outcomes[0], Err(libc::EPERM));
    assert_eq!(outcomes[1], Ok(Done::Ok));
    assert_eq!(outcomes[2], Err(libc::EACCES));
    let Ok(Done::Stat(stat)) = &outcomes[3] else {
        panic!("{outcomes:?}")
    };
    assert_eq!((stat.uid, stat.gid), (65534, 65534));

    // Chmod and chown of a special file change its entry like any other.
    pair.same("chmod fifo", |r| {
        fs::set_permissions(
            r.join("fifo"),
            std::os::unix::fs::PermissionsExt::from_mode(0o604),
        )
    })
    .unwrap();
    pair.same("chown disk", |r| {
        std::os::unix::fs::lchown(r.join("disk"), Some(1000), Some(2000))
    })
    .unwrap();

    // Everything comes back from the store after a restart.
    let names = [
        "fifo",
        "null",
        "wide",
        "disk",
        "sock",
        "nobody/p",
        "live.sock",
    ];
    let before: Vec<_> = names.iter().map(|rel| pair.same_stat(rel)).collect();
    n.stop();
    n.start();
    for (rel, stat) in names.iter().zip(before) {
        let after = fs::symlink_metadata(pair.mnt.join(rel)).map(|m| Stat::of(&m));
        assert_eq!(after.ok(), stat.ok(), "{rel} after a restart");
    }
}
