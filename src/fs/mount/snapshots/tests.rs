//! Views of the past in `.snapshots`, without a kernel or a network: two mounts exchanging
//! entries as anti-entropy would.

use super::super::*;
use super::*;
use crate::block::ChunkStore;
use crate::fs::{Caller, SetAttr};
use crate::namespace::{RetentionPolicy, RetentionTable};

const ME: Caller = Caller { uid: 0, gid: 0 };

fn mount(dir: &Path, chunks: &Arc<ChunkStore>, name: &str, origin: u64) -> Mount {
    crate::fs::mount::tests::test_mount(
        &dir.join(name),
        chunks,
        origin,
        UserIdentity::generate(),
        true,
    )
}

fn exchange(a: &Mount, b: &Mount) {
    crate::fs::mount::tests::exchange(&[a, b]);
}

fn write(m: &Mount, parent: u64, name: &str, data: &[u8]) {
    let (_, fh) = m.create(parent, name.as_bytes(), 0o644, ME, true).unwrap();
    m.write(fh, 0, data).unwrap();
    m.release(fh).unwrap();
}

fn overwrite(m: &Mount, parent: u64, name: &str, data: &[u8]) {
    let ino = m.lookup(parent, name.as_bytes()).unwrap().ino;
    m.setattr(
        ino,
        SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    let fh = m.open(ino, true).unwrap();
    m.write(fh, 0, data).unwrap();
    m.release(fh).unwrap();
}

fn walk(m: &Mount, mut ino: u64, path: &str) -> FsResult<u64> {
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = m.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

fn read(m: &Mount, ino: u64) -> Vec<u8> {
    let fh = m.open(ino, false).unwrap();
    let data = m.read(fh, 0, 1 << 20).unwrap().to_vec();
    m.release(fh).unwrap();
    data
}

fn names(m: &Mount, ino: u64) -> Vec<String> {
    let fh = m.opendir(ino).unwrap();
    let out = m
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|d| String::from_utf8_lossy(&d.name).into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    m.releasedir(fh);
    out
}

/// Waits for the next whole second, so that a view named with it (second precision) falls
/// between what was written before and what is written after.
fn next_second() -> u64 {
    let now = now_ms();
    let next = (now / 1000 + 1) * 1000;
    std::thread::sleep(Duration::from_millis(next - now + 5));
    next
}

#[test]
fn a_view_shows_the_old_names_and_bytes_after_an_overwrite_and_a_delete_on_either_node() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let a = mount(dir.path(), &chunks, "a", 1);
    let b = mount(dir.path(), &chunks, "b", 2);
    write(&a, ROOT_INO, "report.txt", b"first draft");
    let d = a.mkdir(ROOT_INO, b"docs", 0o755, ME).unwrap().ino;
    write(&a, d, "notes.txt", b"keep me");
    exchange(&a, &b);
    let before = next_second();
    let changed_from = now_ms();
    overwrite(&a, ROOT_INO, "report.txt", b"final version, longer");
    a.unlink(d, b"notes.txt").unwrap();
    a.rmdir(ROOT_INO, b"docs").unwrap();
    let changed_to = now_ms();
    exchange(&a, &b);

    let time = snapshot::format_second(before);
    for m in [&a, &b] {
        assert_eq!(
            read(m, walk(m, ROOT_INO, "report.txt").unwrap()),
            b"final version, longer"
        );
        assert!(matches!(walk(m, ROOT_INO, "docs"), Err(FsError::NotFound)));
        let view = walk(m, ROOT_INO, &format!(".snapshots/{time}")).unwrap();
        let mut listed = names(m, view);
        listed.sort();
        assert_eq!(listed, ["docs", "report.txt"]);
        assert_eq!(
            read(m, walk(m, view, "report.txt").unwrap()),
            b"first draft"
        );
        assert_eq!(names(m, walk(m, view, "docs").unwrap()), ["notes.txt"]);
        assert_eq!(
            read(m, walk(m, view, "docs/notes.txt").unwrap()),
            b"keep me"
        );
        let attr = m.getattr(walk(m, view, "docs/notes.txt").unwrap()).unwrap();
        assert_eq!(attr.size, 7);
        // The same view, named with its minute-less spelling variants, opens too.
        let no_z = time.trim_end_matches('Z');
        assert_eq!(
            read(
                m,
                walk(m, ROOT_INO, &format!(".snapshots/{no_z}/report.txt")).unwrap()
            ),
            b"first draft"
        );

        // `.snapshots` is not listed in the root, and lists the minute of the changes.
        assert!(!names(m, ROOT_INO).contains(&".snapshots".to_string()));
        let minutes: Vec<u64> = names(m, walk(m, ROOT_INO, ".snapshots").unwrap())
            .iter()
            .filter_map(|n| parse_time(n))
            .collect();
        assert!(
            minutes
                .iter()
                .any(|&t| (changed_from / 60_000 * 60_000..=changed_to).contains(&t)),
            "{minutes:?}"
        );

        // A time in the future, or no time at all, names nothing.
        let future = snapshot::format_second(now_ms() + 120_000);
        for bad in [future.as_str(), "yesterday", "2026-13-01T00:00"] {
            assert!(
                matches!(
                    walk(m, ROOT_INO, &format!(".snapshots/{bad}")),
                    Err(FsError::NotFound)
                ),
                "{bad}"
            );
        }
    }
}

#[test]
fn every_write_under_snapshots_fails_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let a = mount(dir.path(), &chunks, "a", 1);
    let d = a.mkdir(ROOT_INO, b"dir", 0o755, ME).unwrap().ino;
    write(&a, d, "f", b"data");
    let at = next_second();
    let snaps = walk(&a, ROOT_INO, ".snapshots").unwrap();
    let view = walk(&a, snaps, &snapshot::format_second(at)).unwrap();
    let vdir = walk(&a, view, "dir").unwrap();
    let vfile = walk(&a, vdir, "f").unwrap();
    let ro = |r: FsResult<()>| assert!(matches!(r, Err(FsError::ReadOnly)), "{r:?}");
    for parent in [snaps, view, vdir] {
        ro(a.create(parent, b"new", 0o644, ME, true).map(|_| ()));
        ro(a.mkdir(parent, b"new", 0o755, ME).map(|_| ()));
        ro(a.symlink(parent, b"new", b"t", ME).map(|_| ()));
        ro(a.mknod(parent, b"new", 0o10644, 0, ME).map(|_| ()));
    }
    ro(a.unlink(vdir, b"f"));
    ro(a.rmdir(view, b"dir"));
    ro(a.rename(vdir, b"f", vdir, b"g", crate::fs::RenameMode::Plain));
    ro(a.rename(vdir, b"f", ROOT_INO, b"g", crate::fs::RenameMode::Plain));
    ro(a.rename(ROOT_INO, b"dir", vdir, b"g", crate::fs::RenameMode::Plain));
    ro(a.link(vfile, ROOT_INO, b"g").map(|_| ()));
    ro(a.open(vfile, true).map(|_| ()));
    for ino in [vfile, vdir, view, snaps] {
        ro(a.setattr(
            ino,
            SetAttr {
                mode: Some(0o777),
                ..Default::default()
            },
        )
        .map(|_| ()));
        ro(a.setxattr(ino, b"user.x", b"1", crate::fs::XattrSet::Any));
        ro(a.removexattr(ino, b"user.x"));
    }
    // `.snapshots` itself cannot be made, replaced or removed in a volume's root.
    ro(a.mkdir(ROOT_INO, b".snapshots", 0o755, ME).map(|_| ()));
    ro(a.rename(
        ROOT_INO,
        b"dir",
        ROOT_INO,
        b".snapshots",
        crate::fs::RenameMode::Plain,
    ));
    ro(a.rmdir(ROOT_INO, b".snapshots"));
    // A file of the view still reads, and the live tree is unchanged.
    assert_eq!(read(&a, vfile), b"data");
    assert_eq!(names(&a, d), ["f"]);
}

#[test]
fn member_volumes_have_views_and_named_snapshots_name_times() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let a = mount(dir.path(), &chunks, "a", 1);
    a.create_volume("team").unwrap();
    let team = walk(&a, ROOT_INO, "@team").unwrap();
    write(&a, team, "plan.txt", b"v1");
    let path = a.snapshot(Some("@team"), Some("before-v2"), None).unwrap();
    assert_eq!(path, "/@team/.snapshots/before-v2");
    overwrite(&a, team, "plan.txt", b"v2");
    assert_eq!(read(&a, walk(&a, team, "plan.txt").unwrap()), b"v2");
    assert_eq!(
        read(&a, walk(&a, ROOT_INO, &format!("{path}/plan.txt")).unwrap()),
        b"v1"
    );
    assert!(!names(&a, team).contains(&".snapshots".to_string()));
    let snaps = walk(&a, team, ".snapshots").unwrap();
    assert!(names(&a, snaps).contains(&"before-v2".to_string()));
    // A view of a member volume is private to this node's user, as the volume's root is.
    let attr = a.getattr(walk(&a, snaps, "before-v2").unwrap()).unwrap();
    assert_eq!(attr.perm, 0o500);

    // The name is recorded in the data dir: a mount loaded again shows it.
    let listed = a.named_snapshots();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, path);
    assert_eq!(listed[0].volume_dir, "/@team");
    assert!(listed[0].visible);
    assert!(matches!(
        a.snapshot(Some("team"), Some("before-v2"), None),
        Err(SnapshotError::NameTaken(_))
    ));
    for bad in ["", ".hidden", "a/b", "2026-12-01T10:00"] {
        assert!(
            matches!(
                a.snapshot(None, Some(bad), None),
                Err(SnapshotError::BadName(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        a.snapshot(Some("@nope"), None, None),
        Err(SnapshotError::UnknownVolume(_))
    ));
    assert!(matches!(
        a.snapshot(None, None, Some(now_ms() + 60_000)),
        Err(SnapshotError::Future(_))
    ));
    // Without retention no version is kept, and no view of the past shows.
    a.namespace().set_retention(RetentionTable {
        default: RetentionPolicy::OFF,
        volumes: Default::default(),
    });
    assert!(matches!(
        walk(&a, snaps, "before-v2"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        a.snapshot(None, None, Some(now_ms() - 60_000)),
        Err(SnapshotError::TooOld(..))
    ));
}

#[test]
fn views_past_the_built_ones_are_rebuilt_with_the_same_inode_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let a = mount(dir.path(), &chunks, "a", 1);
    let mut times = Vec::new();
    for i in 0..=BUILT {
        write(&a, ROOT_INO, &format!("f{i}"), format!("{i}").as_bytes());
        times.push(next_second());
    }
    let snaps = walk(&a, ROOT_INO, ".snapshots").unwrap();
    let first = walk(
        &a,
        snaps,
        &format!("{}/f0", snapshot::format_second(times[0])),
    )
    .unwrap();
    assert_eq!(read(&a, first), b"0");
    for (i, t) in times.iter().enumerate() {
        let view = walk(&a, snaps, &snapshot::format_second(*t)).unwrap();
        assert_eq!(names(&a, view).len(), i + 1);
    }
    // The first view's tree was evicted (a walk over more views than are built, as `find
    // .snapshots` does): the inode numbers the kernel holds still name the same files, and a
    // lookup gives them again.
    assert_eq!(a.getattr(first).unwrap().ino, first);
    assert_eq!(read(&a, first), b"0");
    let again = walk(
        &a,
        snaps,
        &format!("{}/f0", snapshot::format_second(times[0])),
    )
    .unwrap();
    assert_eq!(again, first);
}

#[test]
fn a_view_takes_in_versions_that_arrive_late_and_keeps_its_inode_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let a = mount(dir.path(), &chunks, "a", 1);
    let b = mount(dir.path(), &chunks, "b", 2);
    write(&b, ROOT_INO, "here.txt", b"b's");
    // Several, so that without the earlier build's order some would take `here.txt`'s
    // inode number (a build numbers entries by id).
    for i in 0..8 {
        write(
            &a,
            ROOT_INO,
            &format!("late{i}.txt"),
            b"a's, before the view's time",
        );
    }
    let at = next_second();
    let view = walk(
        &b,
        ROOT_INO,
        &format!(".snapshots/{}", snapshot::format_second(at)),
    )
    .unwrap();
    let here = walk(&b, view, "here.txt").unwrap();
    assert_eq!(names(&b, view), ["here.txt"]);
    // Node A's version reaches node B after the view was built.
    exchange(&a, &b);
    std::thread::sleep(REFRESH_RECENT + Duration::from_millis(100));
    assert_eq!(names(&b, view).len(), 9);
    assert_eq!(walk(&b, view, "here.txt").unwrap(), here);
    assert_eq!(read(&b, here), b"b's");
    assert_eq!(
        read(&b, walk(&b, view, "late5.txt").unwrap()),
        b"a's, before the view's time"
    );
}
