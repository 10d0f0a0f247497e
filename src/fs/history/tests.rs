//! Versions and restores on an in-process core with retention on.

use super::*;
use crate::fs::tests::{ME, fixture, write_file};
use crate::fs::{ROOT_INO, SetAttr};
use crate::namespace::{RetentionPolicy, RetentionTable};

fn core_keeping_versions() -> crate::fs::tests::Fixture {
    let f = fixture(4096);
    f.core.namespace().set_retention(RetentionTable {
        default: RetentionPolicy::default(),
        volumes: Default::default(),
    });
    f
}

fn ino_at(core: &FsCore, path: &str) -> Option<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/') {
        ino = core.lookup(ino, part.as_bytes()).ok()?.ino;
    }
    Some(ino)
}

fn read(core: &FsCore, path: &str) -> Vec<u8> {
    let ino = ino_at(core, path).unwrap_or_else(|| panic!("{path} is not there"));
    let size = core.getattr(ino).unwrap().size;
    let fh = core.open(ino, false).unwrap();
    let data = core.read(fh, 0, size as u32 + 10).unwrap().to_vec();
    core.release(fh).unwrap();
    data
}

fn overwrite(core: &FsCore, path: &str, data: &[u8]) {
    let ino = ino_at(core, path).unwrap();
    core.setattr(
        ino,
        SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    let fh = core.open(ino, true).unwrap();
    core.write(fh, 0, data).unwrap();
    core.release(fh).unwrap();
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn labels() -> Labels {
    Labels::default()
}

#[test]
fn an_overwritten_file_comes_back_as_a_new_version() {
    let f = core_keeping_versions();
    let (one, two) = (bytes(10_000, 1), bytes(6_000, 2));
    write_file(&f.core, ROOT_INO, "a", &one);
    overwrite(&f.core, "a", &two);
    let before = f.core.versions("a", &labels()).unwrap();
    let n = before.versions.len();
    assert!(before.versions[n - 1].current && before.versions[n - 1].size == 6_000);
    assert!(before.deleted.is_none());
    let old = before
        .versions
        .iter()
        .find(|v| v.size == 10_000)
        .expect("the first content is kept");
    let done = f.core.restore("a", Pick::Number(old.number), None).unwrap();
    assert_eq!(done.entries, 1);
    assert_eq!(read(&f.core, "a"), one);
    // Nothing was destroyed: the overwritten content is a version too, and comes back. (The
    // count stays: the truncate before the second write was an intermediate state, absorbed
    // by the version written on it.)
    let after = f.core.versions("a", &labels()).unwrap();
    assert_eq!(after.versions.len(), n);
    assert_eq!(after.id, before.id);
    let second = after
        .versions
        .iter()
        .rfind(|v| v.size == 6_000 && !v.current)
        .unwrap();
    f.core
        .restore("a", Pick::Number(second.number), None)
        .unwrap();
    assert_eq!(read(&f.core, "a"), two);
    // Without a version: the one before the current.
    f.core.restore("a", Pick::Latest, None).unwrap();
    assert_eq!(read(&f.core, "a"), one);
    assert!(matches!(
        f.core.restore("a", Pick::Number(99), None),
        Err(HistoryError::NoVersion(_))
    ));
}

#[test]
fn a_deleted_file_is_listed_and_restored_under_its_id() {
    let f = core_keeping_versions();
    let data = bytes(9_000, 3);
    write_file(&f.core, ROOT_INO, "f", &data);
    let id = f.core.versions("f", &labels()).unwrap().id;
    f.core.unlink(ROOT_INO, b"f").unwrap();
    assert!(ino_at(&f.core, "f").is_none());
    let list = f.core.versions("f", &labels()).unwrap();
    assert_eq!(list.id, id);
    assert!(list.deleted.is_some(), "{list:?}");
    assert!(list.versions.iter().all(|v| !v.current));
    f.core.restore("f", Pick::Latest, None).unwrap();
    assert_eq!(read(&f.core, "f"), data);
    let list = f.core.versions("f", &labels()).unwrap();
    assert_eq!(list.id, id);
    assert!(list.deleted.is_none());
    assert!(list.versions.last().unwrap().current);
}

/// `rm -rf d`: the contents go first, then the directory.
fn remove_tree(core: &FsCore, path: &str) {
    let ino = ino_at(core, path).unwrap();
    let fh = core.opendir(ino).unwrap();
    let listing = core.readdir(fh).unwrap();
    core.releasedir(fh);
    for child in listing.iter().filter(|d| d.name != b"." && d.name != b"..") {
        let name = String::from_utf8(child.name.clone()).unwrap();
        if child.attr.kind == EntryKind::Dir {
            remove_tree(core, &format!("{path}/{name}"));
        } else {
            core.unlink(ino, name.as_bytes()).unwrap();
        }
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if dir.is_empty() {
        ROOT_INO
    } else {
        ino_at(core, dir).unwrap()
    };
    core.rmdir(parent, name.as_bytes()).unwrap();
}

fn make_tree(core: &FsCore) -> [(String, Vec<u8>); 3] {
    let d = core.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
    let sub = core.mkdir(d, b"sub", 0o755, ME).unwrap().ino;
    let files = [
        ("d/x".to_string(), bytes(5_000, 4)),
        ("d/sub/y".to_string(), bytes(12_000, 5)),
        ("d/sub/z".to_string(), bytes(1, 6)),
    ];
    write_file(core, d, "x", &files[0].1);
    write_file(core, sub, "y", &files[1].1);
    write_file(core, sub, "z", &files[2].1);
    files
}

#[test]
fn a_removed_tree_comes_back_whole() {
    let f = core_keeping_versions();
    let files = make_tree(&f.core);
    remove_tree(&f.core, "d");
    assert!(ino_at(&f.core, "d").is_none());
    let list = f.core.versions("d", &labels()).unwrap();
    assert!(list.deleted.is_some());
    assert!(
        f.core
            .versions("d/sub/y", &labels())
            .unwrap()
            .deleted
            .is_some()
    );
    let done = f.core.restore("d", Pick::Latest, None).unwrap();
    assert_eq!(done.entries, 5, "d, sub and three files");
    for (path, data) in &files {
        assert_eq!(&read(&f.core, path), data, "{path}");
    }
}

#[test]
fn a_file_of_a_removed_tree_brings_its_directories_back_alone() {
    let f = core_keeping_versions();
    let files = make_tree(&f.core);
    remove_tree(&f.core, "d");
    f.core.restore("d/sub/y", Pick::Latest, None).unwrap();
    assert_eq!(read(&f.core, "d/sub/y"), files[1].1);
    assert!(ino_at(&f.core, "d/x").is_none());
    assert!(ino_at(&f.core, "d/sub/z").is_none());
}

#[test]
fn restore_to_makes_new_entries_and_leaves_the_old_path_alone() {
    let f = core_keeping_versions();
    let files = make_tree(&f.core);
    let old_id = f.core.versions("d/sub/y", &labels()).unwrap().id;
    remove_tree(&f.core, "d");
    let done = f.core.restore("d", Pick::Latest, Some("copy")).unwrap();
    assert_eq!(done.path, "copy");
    assert!(ino_at(&f.core, "d").is_none());
    for (path, data) in &files {
        let moved = path.replacen("d/", "copy/", 1);
        assert_eq!(&read(&f.core, &moved), data, "{moved}");
    }
    assert_ne!(f.core.versions("copy/sub/y", &labels()).unwrap().id, old_id);
    // Into an existing directory, under the old name.
    f.core.mkdir(ROOT_INO, b"into", 0o755, ME).unwrap();
    let done = f.core.restore("d/x", Pick::Latest, Some("into")).unwrap();
    assert_eq!(done.path, "into/x");
    assert_eq!(read(&f.core, "into/x"), files[0].1);
    assert!(matches!(
        f.core.restore("d/x", Pick::Latest, Some("into")),
        Err(HistoryError::DestTaken(_))
    ));
}

#[test]
fn a_name_taken_by_another_file_is_refused() {
    let f = core_keeping_versions();
    write_file(&f.core, ROOT_INO, "f", b"first");
    f.core
        .rename(ROOT_INO, b"f", ROOT_INO, b"g", crate::fs::RenameMode::Plain)
        .unwrap();
    write_file(&f.core, ROOT_INO, "f", b"another file");
    // g's earlier versions were named f: the name is another file's now.
    let list = f.core.versions("g", &labels()).unwrap();
    assert_eq!(list.versions[0].name, "f");
    let err = f.core.restore("g", Pick::Number(1), None).unwrap_err();
    assert!(matches!(err, HistoryError::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("--to"), "{err}");
    assert_eq!(read(&f.core, "f"), b"another file");
    assert_eq!(read(&f.core, "g"), b"first");
}

#[test]
fn restore_at_a_time_takes_the_version_current_then() {
    let f = core_keeping_versions();
    write_file(&f.core, ROOT_INO, "f", b"one");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let then = f.core.clock.now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    overwrite(&f.core, "f", b"two");
    f.core.restore("f", Pick::At(then), None).unwrap();
    assert_eq!(read(&f.core, "f"), b"one");
    // A directory at a time: its contents as they were.
    let d = f.core.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
    write_file(&f.core, d, "a", b"a1");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let then = f.core.clock.now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    overwrite(&f.core, "d/a", b"a2");
    f.core.unlink(d, b"a").unwrap();
    write_file(&f.core, d, "later", b"stays");
    assert!(matches!(
        f.core.restore("d", Pick::Latest, None),
        Err(HistoryError::LiveDirectory(_))
    ));
    f.core.restore("d", Pick::At(then), None).unwrap();
    assert_eq!(read(&f.core, "d/a"), b"a1");
    assert_eq!(read(&f.core, "d/later"), b"stays");
    assert!(matches!(
        f.core.restore("f", Pick::At(Hlc(1)), None),
        Err(HistoryError::NothingAt(_))
    ));
}

#[test]
fn nothing_is_kept_without_retention() {
    let f = fixture(4096);
    write_file(&f.core, ROOT_INO, "f", b"one");
    f.core.unlink(ROOT_INO, b"f").unwrap();
    assert!(matches!(
        f.core.versions("f", &labels()),
        Err(HistoryError::NotFound(_))
    ));
}

#[test]
fn times_parse_and_print_in_utc() {
    let t = parse_time("2026-12-01T10:00", 0).unwrap();
    assert_eq!(format_utc(t.millis()), "2026-12-01T10:00:00Z");
    assert_eq!(t.millis(), 1_796_119_200_000);
    let t = parse_time("2026-12-01T10:00:05.250Z", 0).unwrap();
    assert_eq!(t.millis(), 1_796_119_205_250);
    assert_eq!(
        parse_time("2026-12-01 10:00:05", 0).unwrap().millis(),
        1_796_119_205_000
    );
    assert_eq!(parse_time("10m", 3_600_000).unwrap().millis(), 3_000_000);
    assert_eq!(
        parse_time("2h ago", 10_800_000).unwrap().millis(),
        3_600_000
    );
    assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    for bad in [
        "",
        "yesterday",
        "2026-13-01T10:00",
        "2026-12-01T25:00",
        "-5m",
    ] {
        assert!(parse_time(bad, 0).is_err(), "{bad}");
    }
}

#[test]
fn files_replaced_by_a_rename_over_their_name_are_listed_and_restored_beside() {
    let f = core_keeping_versions();
    // As `p2pfs-ctl put` and many editors save: a new file renamed over the name.
    let save = |tmp: &str, data: &[u8]| {
        write_file(&f.core, ROOT_INO, tmp, data);
        f.core
            .rename(
                ROOT_INO,
                tmp.as_bytes(),
                ROOT_INO,
                b"doc",
                crate::fs::RenameMode::Plain,
            )
            .unwrap();
    };
    save(".tmp1", b"first save");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let then = f.core.clock.now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    save(".tmp2", b"second save, longer");
    let list = f.core.versions("doc", &labels()).unwrap();
    let old = list
        .versions
        .iter()
        .find(|v| v.replaced_file && v.size == 10)
        .unwrap_or_else(|| panic!("{list:?}"));
    assert!(
        list.versions
            .iter()
            .filter(|v| v.replaced_file)
            .all(|v| v.name == "doc")
    );
    let err = f
        .core
        .restore("doc", Pick::Number(old.number), None)
        .unwrap_err();
    assert!(matches!(err, HistoryError::NameTaken { .. }), "{err}");
    f.core
        .restore("doc", Pick::Number(old.number), Some("doc-first"))
        .unwrap();
    assert_eq!(read(&f.core, "doc-first"), b"first save");
    f.core
        .restore("doc", Pick::At(then), Some("doc-then"))
        .unwrap();
    assert_eq!(read(&f.core, "doc-then"), b"first save");
    assert_eq!(read(&f.core, "doc"), b"second save, longer");
}
