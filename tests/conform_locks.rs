//! Locks on the mount: `flock`, POSIX byte-range (`fcntl`) and open-file-description locks
//! behave among processes of one node as on a reference ext4 (the kernel serves them: the
//! mount negotiates neither FUSE_POSIX_LOCKS nor FUSE_FLOCK_LOCKS), so sqlite's locking
//! works; across nodes a lock means nothing (README "Semantics worth knowing").

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

conform_child!();

const WR: i16 = libc::F_WRLCK as i16;
const RD: i16 = libc::F_RDLCK as i16;
const UN: i16 = libc::F_UNLCK as i16;

fn keep(path: PathBuf) -> Op {
    Op::Keep {
        path,
        flags: libc::O_RDWR,
        mode: 0,
    }
}

fn fcntl(fd: usize, cmd: i32, kind: i16, start: i64, len: i64) -> Op {
    Op::Fcntl {
        fd,
        cmd,
        kind,
        start,
        len,
    }
}

/// `outcomes` with the holder's pid replaced by 1 (pids differ between the two runs).
fn normalized(outcomes: Vec<Outcome<Done>>, holder: i32) -> Vec<Outcome<Done>> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Ok(Done::Lock {
                kind,
                pid,
                start,
                len,
            }) => Ok(Done::Lock {
                kind,
                pid: if pid == holder { 1 } else { pid },
                start,
                len,
            }),
            other => other,
        })
        .collect()
}

/// A node, its reference disk and a directory pair `name` holding `f`, a 0666 file of root's.
fn setup(name: &str) -> (Node, RefDisk, Pair) {
    let mut n = Node::init();
    n.start();
    let reference = RefDisk::new(&mut n, 64);
    let pair = Pair::new(&n, &reference, name);
    pair.same("make f", |r| {
        fs::write(r.join("f"), vec![7u8; 100])?;
        fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o666))
    })
    .unwrap();
    (n, reference, pair)
}

#[test]
fn flock_excludes_other_processes_until_released() {
    let (_n, _r, pair) = setup("flock");
    let seen = pair.same_seen("flock", |r| {
        let f = r.join("f");
        let holder = hold_as(
            &Creds::user(),
            &[
                keep(f.clone()),
                Op::Flock {
                    fd: 0,
                    how: libc::LOCK_EX,
                },
            ],
        );
        let try_lock = |how| {
            run_as(
                &Creds::nobody(),
                &[
                    keep(f.clone()),
                    Op::Flock {
                        fd: 0,
                        how: how | libc::LOCK_NB,
                    },
                ],
            )
            .remove(1)
        };
        let while_held = [try_lock(libc::LOCK_EX), try_lock(libc::LOCK_SH)];
        holder.release();
        let after_exit = try_lock(libc::LOCK_EX);
        // Shared locks share; an exclusive one waits for them. A lock goes with its
        // descriptor's close, not only with the process.
        let sharer = hold_as(
            &Creds::user(),
            &[
                keep(f.clone()),
                Op::Flock {
                    fd: 0,
                    how: libc::LOCK_SH,
                },
                keep(f.clone()),
                Op::Flock {
                    fd: 1,
                    how: libc::LOCK_SH,
                },
                Op::Close { fd: 0 },
            ],
        );
        let shared = [try_lock(libc::LOCK_SH), try_lock(libc::LOCK_EX)];
        sharer.kill();
        let after_kill = try_lock(libc::LOCK_EX);
        (while_held, after_exit, shared, after_kill)
    });
    assert_eq!(
        seen,
        (
            [Err(libc::EWOULDBLOCK), Err(libc::EWOULDBLOCK)],
            Ok(Done::Ok),
            [Ok(Done::Ok), Err(libc::EWOULDBLOCK)],
            Ok(Done::Ok)
        )
    );
}

#[test]
fn fcntl_byte_ranges_conflict_split_and_report_the_holder() {
    let (_n, _r, pair) = setup("posix");
    let seen = pair.same_seen("fcntl", |r| {
        let f = r.join("f");
        // Holds a write lock on [0,10) with [2,5) unlocked again, and a read lock on [20,30).
        let holder = hold_as(
            &Creds::user(),
            &[
                keep(f.clone()),
                fcntl(0, libc::F_SETLK, WR, 0, 10),
                fcntl(0, libc::F_SETLK, UN, 2, 3),
                fcntl(0, libc::F_SETLK, RD, 20, 10),
            ],
        );
        assert!(holder.outcomes.iter().all(|o| o == &Ok(Done::Ok)));
        let other = run_as(
            &Creds::nobody(),
            &[
                keep(f.clone()),
                fcntl(0, libc::F_GETLK, WR, 5, 1),
                fcntl(0, libc::F_GETLK, WR, 3, 1),
                fcntl(0, libc::F_GETLK, WR, 15, 0),
                fcntl(0, libc::F_GETLK, RD, 25, 1),
                fcntl(0, libc::F_SETLK, WR, 9, 2),
                fcntl(0, libc::F_SETLK, WR, 2, 3),
                fcntl(0, libc::F_SETLK, WR, 25, 1),
                fcntl(0, libc::F_SETLK, RD, 25, 1),
                fcntl(0, libc::F_SETLK, WR, 10, 10),
            ],
        );
        let pid = holder.pid();
        // Closing any descriptor of the file drops all of a process's POSIX locks on it.
        let closer = hold_as(
            &Creds::user(),
            &[
                keep(f.clone()),
                keep(f.clone()),
                fcntl(0, libc::F_SETLK, WR, 50, 10),
                Op::Close { fd: 1 },
            ],
        );
        holder.release();
        let after = run_as(
            &Creds::nobody(),
            &[keep(f.clone()), fcntl(0, libc::F_SETLK, WR, 0, 0)],
        );
        closer.release();
        (normalized(other, pid), after)
    });
    let lock = |kind, pid, start, len| {
        Ok(Done::Lock {
            kind,
            pid,
            start,
            len,
        })
    };
    assert_eq!(
        seen.0,
        [
            Ok(Done::Ok),
            lock(WR, 1, 5, 5),
            lock(UN, 0, 3, 1),
            lock(RD, 1, 20, 10),
            lock(UN, 0, 25, 1),
            Err(libc::EAGAIN),
            Ok(Done::Ok),
            Err(libc::EAGAIN),
            Ok(Done::Ok),
            Ok(Done::Ok),
        ]
    );
    assert_eq!(seen.1, [Ok(Done::Ok), Ok(Done::Ok)]);
}

#[test]
fn ofd_locks_belong_to_the_open_file_and_go_with_it() {
    let (_n, _r, pair) = setup("ofd");
    let seen = pair.same_seen("ofd", |r| {
        let f = r.join("f");
        // In one process: two POSIX locks of one process never conflict; two open file
        // descriptions' OFD locks do.
        let one = run_as(
            &Creds::user(),
            &[
                keep(f.clone()),
                keep(f.clone()),
                fcntl(0, libc::F_SETLK, WR, 0, 10),
                fcntl(1, libc::F_SETLK, WR, 0, 10),
                fcntl(0, libc::F_OFD_SETLK, WR, 100, 10),
                fcntl(1, libc::F_OFD_SETLK, WR, 100, 10),
                fcntl(1, libc::F_OFD_GETLK, WR, 105, 1),
            ],
        );
        let holder = hold_as(
            &Creds::user(),
            &[keep(f.clone()), fcntl(0, libc::F_OFD_SETLK, WR, 0, 10)],
        );
        let other = run_as(
            &Creds::nobody(),
            &[
                keep(f.clone()),
                fcntl(0, libc::F_OFD_GETLK, RD, 0, 1),
                fcntl(0, libc::F_SETLK, RD, 0, 1),
                fcntl(0, libc::F_OFD_SETLK, RD, 10, 1),
            ],
        );
        holder.release();
        let after = run_as(
            &Creds::nobody(),
            &[keep(f.clone()), fcntl(0, libc::F_OFD_SETLK, WR, 0, 0)],
        );
        (one, other, after)
    });
    let ofd = |start, len| {
        Ok(Done::Lock {
            kind: WR,
            pid: -1,
            start,
            len,
        })
    };
    assert_eq!(
        seen.0,
        [
            Ok(Done::Ok),
            Ok(Done::Ok),
            Ok(Done::Ok),
            Ok(Done::Ok),
            Ok(Done::Ok),
            Err(libc::EAGAIN),
            ofd(100, 10),
        ]
    );
    assert_eq!(
        seen.1,
        [Ok(Done::Ok), ofd(0, 10), Err(libc::EAGAIN), Ok(Done::Ok)]
    );
    assert_eq!(seen.2, [Ok(Done::Ok), Ok(Done::Ok)]);
}

/// Two sqlite3 processes write one database at once, each row its own transaction: sqlite's
/// locks (fcntl) keep it whole, in rollback-journal and in WAL mode.
#[test]
fn sqlite_survives_two_concurrent_writers() {
    let (_n, _r, pair) = setup("sqlite");
    const ROWS: usize = 150;
    for mode in ["DELETE", "WAL"] {
        pair.same_seen(&format!("sqlite {mode}"), |r| {
            let db = r.join(format!("{mode}.db"));
            let sql = |q: &str| {
                let out = run_cmd(
                    Command::new("sqlite3")
                        .args(["-cmd", ".timeout 120000"])
                        .arg(&db)
                        .arg(q),
                    CMD_TIMEOUT,
                );
                assert!(out.status.success(), "sqlite3 {q}: {}", out_text(&out));
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            assert_eq!(
                sql(&format!(
                    "PRAGMA journal_mode={mode}; CREATE TABLE t(w INTEGER, i INTEGER, pad BLOB);"
                )),
                mode.to_lowercase()
            );
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let script: String = (0..ROWS)
                        .map(|i| format!("INSERT INTO t VALUES({w}, {i}, randomblob(3000));\n"))
                        .collect();
                    let script_path = r.join(format!("{mode}-w{w}.sql"));
                    fs::write(&script_path, script).unwrap();
                    let db = db.clone();
                    std::thread::spawn(move || {
                        run_cmd(
                            Command::new("sqlite3")
                                .args(["-bail", "-cmd", ".timeout 120000"])
                                .arg(&db)
                                .arg(format!(".read {}", script_path.display())),
                            CMD_TIMEOUT,
                        )
                    })
                })
                .collect();
            for w in writers {
                let out = w.join().unwrap();
                assert!(out.status.success(), "writer: {}", out_text(&out));
            }
            (
                sql("PRAGMA integrity_check;"),
                sql("SELECT w, count(*), count(DISTINCT i) FROM t GROUP BY w;"),
            )
        });
    }
    for mode in ["DELETE", "WAL"] {
        let out = Command::new("sqlite3")
            .arg(pair.mnt.join(format!("{mode}.db")))
            .arg("PRAGMA integrity_check; SELECT count(*) FROM t;")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("ok\n{}", 2 * ROWS),
            "{mode}"
        );
    }
}

/// The documented promise: a lock is advisory per node. A process on another node is not
/// excluded by it.
#[test]
fn a_lock_on_one_node_does_not_bind_another() {
    let c = Cluster::start(2, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    fs::write(a.p("f"), b"shared").unwrap();
    fs::set_permissions(a.p("f"), fs::Permissions::from_mode(0o666)).unwrap();
    // Content and mode arrive as separate versions: wait for both.
    let arrived = || {
        fs::read(b.p("f")).is_ok_and(|d| d == b"shared")
            && fs::metadata(b.p("f")).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o666)
    };
    assert!(
        wait_until(Duration::from_secs(60), arrived),
        "f (0666) never reached B"
    );
    let holder = hold_as(
        &Creds::user(),
        &[
            keep(a.p("f")),
            Op::Flock {
                fd: 0,
                how: libc::LOCK_EX,
            },
            fcntl(0, libc::F_SETLK, WR, 0, 0),
        ],
    );
    assert!(holder.outcomes.iter().all(|o| o == &Ok(Done::Ok)));
    let contender = |path: PathBuf| {
        run_as(
            &Creds::nobody(),
            &[
                keep(path),
                Op::Flock {
                    fd: 0,
                    how: libc::LOCK_EX | libc::LOCK_NB,
                },
                fcntl(0, libc::F_SETLK, WR, 0, 0),
            ],
        )
    };
    // On A the lock holds; on B nothing knows of it.
    assert_eq!(
        contender(a.p("f")),
        [Ok(Done::Ok), Err(libc::EWOULDBLOCK), Err(libc::EAGAIN)]
    );
    assert_eq!(
        contender(b.p("f")),
        [Ok(Done::Ok), Ok(Done::Ok), Ok(Done::Ok)]
    );
    holder.release();
}
