//! Tests of the filesystem core without a kernel mount.

use super::*;
use crate::block::{ChunkCache, ChunkStore};
use crate::identity::UserIdentity;
use crate::namespace::{NamespaceStore, Volume};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) core: FsCore,
}

pub(super) const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

fn parts(
    dir: &std::path::Path,
    user: &UserIdentity,
    volume: Volume,
    chunk_size: u32,
    write_buffer: u64,
) -> CoreParts {
    CoreParts {
        volume,
        signer: user.signing.clone(),
        origin: 7,
        namespace: NamespaceStore::open(&dir.join("ns.redb")).unwrap(),
        chunks: Arc::new(ChunkStore::open(&dir.join("chunks")).unwrap()),
        remote: None,
        publish: None,
        chunk_size,
        cache: Arc::new(ChunkCache::new(1 << 20)),
        write_buffer_bytes: write_buffer,
        seal_threads: 2,
        read_ahead_chunks: 4,
        data_dir: dir.to_path_buf(),
    }
}

pub(super) fn fixture(chunk_size: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let user = UserIdentity::generate();
    let volume = Volume::create(&user, "v").unwrap();
    let core = FsCore::load(parts(
        dir.path(),
        &user,
        volume,
        chunk_size,
        4 * u64::from(chunk_size),
    ))
    .unwrap();
    Fixture { _dir: dir, core }
}

pub(super) fn write_file(core: &FsCore, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = core
        .create(parent, name.as_bytes(), 0o644, ME, true)
        .unwrap();
    if !data.is_empty() {
        core.write(fh, 0, data).unwrap();
    }
    core.release(fh).unwrap();
    attr.ino
}

fn read_all(core: &FsCore, ino: u64) -> Vec<u8> {
    let fh = core.open(ino, false).unwrap();
    let size = core.getattr(ino).unwrap().size;
    let data = core.read(fh, 0, size as u32 + 10).unwrap().to_vec();
    core.release(fh).unwrap();
    data
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_read_across_chunks_holes_and_truncate() {
    let f = fixture(4096);
    let data = pattern(10_000, 1);
    let ino = write_file(&f.core, ROOT_INO, "a", &data);
    assert_eq!(read_all(&f.core, ino), data);

    // Write past EOF leaves a hole of zeros.
    let fh = f.core.open(ino, true).unwrap();
    f.core.write(fh, 20_000, b"tail").unwrap();
    f.core.release(fh).unwrap();
    let got = read_all(&f.core, ino);
    assert_eq!(got.len(), 20_004);
    assert_eq!(&got[..10_000], &data[..]);
    assert!(got[10_000..20_000].iter().all(|&b| b == 0));

    // Shrink into the middle of a chunk, then grow: the cut bytes read as zeros.
    f.core
        .setattr(
            ino,
            SetAttr {
                size: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
    f.core
        .setattr(
            ino,
            SetAttr {
                size: Some(9000),
                ..Default::default()
            },
        )
        .unwrap();
    let got = read_all(&f.core, ino);
    assert_eq!(&got[..5000], &data[..5000]);
    assert!(
        got[5000..].iter().all(|&b| b == 0),
        "truncated bytes must not come back"
    );
}

/// A busy mount detached at stop is still served until the process exits: once the core
/// stopped (the final commit), a program still writing in it gets `EROFS` for every change,
/// never an acknowledged write the commit missed, and reads go on.
#[test]
fn a_stopped_core_refuses_changes_and_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserIdentity::generate();
    let volume = Volume::create(&user, "v").unwrap();
    let again = volume.clone();
    {
        let core = FsCore::load(parts(dir.path(), &user, volume, 4096, 1 << 20)).unwrap();
        let kept = write_file(&core, ROOT_INO, "kept", b"kept");
        // The busy program's open file.
        let (attr, fh) = core.create(ROOT_INO, b"open", 0o644, ME, true).unwrap();
        core.write(fh, 0, b"before the stop").unwrap();
        core.shutdown();
        assert_eq!(
            core.write(fh, 15, b" and after"),
            Err(FsError::ReadOnly),
            "a write after the stop"
        );
        let refused = [
            core.setattr(
                attr.ino,
                SetAttr {
                    size: Some(1),
                    ..Default::default()
                },
            )
            .map(drop),
            core.create(ROOT_INO, b"new", 0o644, ME, true).map(drop),
            core.mkdir(ROOT_INO, b"dir", 0o755, ME).map(drop),
            core.unlink(ROOT_INO, b"kept"),
            core.rename(ROOT_INO, b"kept", ROOT_INO, b"moved", RenameMode::Plain),
            core.open(kept, true).map(drop),
            core.setxattr(kept, b"user.x", b"1", XattrSet::Any),
        ];
        for (i, r) in refused.into_iter().enumerate() {
            assert_eq!(r, Err(FsError::ReadOnly), "change {i} after the stop");
        }
        assert_eq!(core.read(fh, 0, 100).unwrap().to_vec(), b"before the stop");
        assert_eq!(read_all(&core, kept), b"kept");
        core.release(fh).unwrap();
    }
    // What was acknowledged is what was committed.
    let core = FsCore::load(parts(dir.path(), &user, again, 4096, 1 << 20)).unwrap();
    let ino = core.lookup(ROOT_INO, b"open").unwrap().ino;
    assert_eq!(read_all(&core, ino), b"before the stop");
}

#[test]
fn overwrite_in_place_keeps_the_rest() {
    let f = fixture(4096);
    let mut data = pattern(12_288, 2);
    let ino = write_file(&f.core, ROOT_INO, "a", &data);
    let fh = f.core.open(ino, true).unwrap();
    f.core.write(fh, 4000, &[9; 200]).unwrap();
    // Reads through the same open file see the write before it is committed.
    assert_eq!(f.core.read(fh, 3990, 20).unwrap()[10..], [9; 10]);
    f.core.release(fh).unwrap();
    data[4000..4200].fill(9);
    assert_eq!(read_all(&f.core, ino), data);
}

#[test]
fn memory_stays_bounded_for_files_much_larger_than_the_buffer() {
    let f = fixture(4096);
    let (attr, fh) = f.core.create(ROOT_INO, b"big", 0o644, ME, true).unwrap();
    let block = pattern(1000, 3);
    for i in 0..400u64 {
        f.core.write(fh, i * 1000, &block).unwrap();
        let file = f.core.open_files.lock().get(&attr.ino).cloned().unwrap();
        let buffered = file.lock().buffered_bytes;
        assert!(buffered <= 4 * 4096 + 4096, "buffered {buffered} bytes");
    }
    f.core.release(fh).unwrap();
    let got = read_all(&f.core, attr.ino);
    assert_eq!(got.len(), 400_000);
    assert!(got.chunks(1000).all(|c| c == &block[..]));
}

#[test]
fn unlinked_open_file_stays_readable_and_statable() {
    let f = fixture(4096);
    let ino = write_file(&f.core, ROOT_INO, "tmp", b"still here");
    let fh = f.core.open(ino, true).unwrap();
    f.core.unlink(ROOT_INO, b"tmp").unwrap();
    assert_eq!(
        f.core.lookup(ROOT_INO, b"tmp").unwrap_err(),
        FsError::NotFound
    );
    let attr = f.core.getattr(ino).unwrap();
    assert_eq!((attr.nlink, attr.size), (0, 10));
    assert_eq!(&f.core.read(fh, 0, 100).unwrap()[..], b"still here");
    f.core.write(fh, 0, b"STILL").unwrap();
    f.core.release(fh).unwrap();
    assert_eq!(f.core.getattr(ino).unwrap_err(), FsError::NotFound);
    assert_eq!(f.core.stats().entries, 1, "nothing came back");
}

#[test]
fn posix_errors() {
    let f = fixture(4096);
    let c = &f.core;
    write_file(c, ROOT_INO, "file", b"x");
    let d = c.mkdir(ROOT_INO, b"dir", 0o755, ME).unwrap();
    write_file(c, d.ino, "inner", b"y");
    assert_eq!(
        c.mkdir(ROOT_INO, b"file", 0o755, ME).unwrap_err(),
        FsError::Exists
    );
    assert_eq!(c.lookup(ROOT_INO, b"nope").unwrap_err(), FsError::NotFound);
    assert_eq!(c.rmdir(ROOT_INO, b"dir").unwrap_err(), FsError::NotEmpty);
    assert_eq!(c.rmdir(ROOT_INO, b"file").unwrap_err(), FsError::NotDir);
    assert_eq!(c.unlink(ROOT_INO, b"dir").unwrap_err(), FsError::IsDir);
    let long = vec![b'n'; 256];
    assert_eq!(
        c.mknod(ROOT_INO, &long, 0o644, 0, ME).unwrap_err(),
        FsError::NameTooLong
    );
    let file_ino = c.lookup(ROOT_INO, b"file").unwrap().ino;
    assert_eq!(c.lookup(file_ino, b"x").unwrap_err(), FsError::NotDir);
    assert_eq!(
        c.rename(ROOT_INO, b"dir", d.ino, b"sub", RenameMode::Plain)
            .unwrap_err(),
        FsError::Invalid
    );
    assert_eq!(
        c.rename(ROOT_INO, b"file", ROOT_INO, b"dir", RenameMode::Plain)
            .unwrap_err(),
        FsError::IsDir
    );
    assert_eq!(
        c.rename(ROOT_INO, b"dir", ROOT_INO, b"file", RenameMode::Plain)
            .unwrap_err(),
        FsError::NotDir
    );
    assert_eq!(c.open(d.ino, false).unwrap_err(), FsError::IsDir);
}

#[test]
fn rename_overwrites_and_directory_rename_rewrites_only_it_and_its_parents() {
    let f = fixture(4096);
    let c = &f.core;
    let a = c.mkdir(ROOT_INO, b"a", 0o755, ME).unwrap();
    for i in 0..10_000 {
        c.mknod(a.ino, format!("f{i}").as_bytes(), 0o644, 0, ME)
            .unwrap();
    }
    let before = c.namespace.load_all().unwrap().entries;
    let b = c.mkdir(ROOT_INO, b"b", 0o755, ME).unwrap();
    let before_b = c
        .namespace
        .get(&crate::namespace::EntryKey {
            id: c.tree.read().get(b.ino).unwrap().id,
            volume: c.volume_id(),
        })
        .unwrap()
        .unwrap();
    c.rename(ROOT_INO, b"a", b.ino, b"moved", RenameMode::Plain)
        .unwrap();
    let after = c.namespace.load_all().unwrap().entries;
    let known: std::collections::HashSet<[u8; 64]> = before
        .iter()
        .chain([&before_b])
        .map(|e| e.signature)
        .collect();
    let changed: Vec<_> = after
        .iter()
        .filter(|e| !known.contains(&e.signature))
        .collect();
    // The moved directory, its old parent (the root) and its new parent: three entries of
    // 10,000+ are rewritten; no child is touched.
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert_eq!(c.lookup(b.ino, b"moved").unwrap().ino, a.ino);
    assert!(c.lookup(a.ino, b"f9999").is_ok());

    // Rename over an existing file replaces it.
    write_file(c, ROOT_INO, "x", b"new");
    write_file(c, ROOT_INO, "y", b"old");
    c.rename(ROOT_INO, b"x", ROOT_INO, b"y", RenameMode::Plain)
        .unwrap();
    let y = c.lookup(ROOT_INO, b"y").unwrap();
    assert_eq!(read_all(c, y.ino), b"new");
    assert_eq!(c.lookup(ROOT_INO, b"x").unwrap_err(), FsError::NotFound);
    assert_eq!(
        c.rename(ROOT_INO, b"y", ROOT_INO, b"moved-no", RenameMode::NoReplace),
        Ok(())
    );
    write_file(c, ROOT_INO, "z", b"");
    assert_eq!(
        c.rename(ROOT_INO, b"z", ROOT_INO, b"moved-no", RenameMode::NoReplace)
            .unwrap_err(),
        FsError::Exists
    );
}

#[test]
fn everything_survives_a_reload_and_nothing_is_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserIdentity::generate();
    let volume = Volume::create(&user, "v").unwrap();
    let again = volume.clone();
    let secret = b"TOP-SECRET-CONTENT-MARKER".repeat(500);
    {
        let core = FsCore::load(parts(dir.path(), &user, volume, 4096, 1 << 20)).unwrap();
        let d = core.mkdir(ROOT_INO, b"SECRET-DIR-NAME", 0o700, ME).unwrap();
        write_file(&core, d.ino, "SECRET-FILE-NAME", &secret);
        core.symlink(ROOT_INO, b"link", b"SECRET-DIR-NAME/SECRET-FILE-NAME", ME)
            .unwrap();
        core.shutdown();
    }
    let core = FsCore::load(parts(dir.path(), &user, again, 4096, 1 << 20)).unwrap();
    let d = core.lookup(ROOT_INO, b"SECRET-DIR-NAME").unwrap();
    assert_eq!(d.perm, 0o700);
    let ino = core.lookup(d.ino, b"SECRET-FILE-NAME").unwrap().ino;
    assert_eq!(read_all(&core, ino), secret);
    let link = core.lookup(ROOT_INO, b"link").unwrap().ino;
    assert_eq!(
        core.readlink(link).unwrap(),
        b"SECRET-DIR-NAME/SECRET-FILE-NAME"
    );
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for marker in [&b"SECRET"[..], b"TOP-SECRET"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{} holds clear text",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Two cores of one network volume, as on two nodes, sharing one chunk store (chunk transfer
/// is not what is tested here). Entries travel only when `exchange` is called.
struct Pair {
    _dir: tempfile::TempDir,
    a: FsCore,
    b: FsCore,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::identity::NetworkKey([4; 32]);
    let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
    let core = |name: &str, origin: u64| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let user = UserIdentity::generate();
        FsCore::load(CoreParts {
            origin,
            chunks: chunks.clone(),
            ..parts(&d, &user, Volume::for_network(&key), 4096, 1 << 20)
        })
        .unwrap()
    };
    let (a, b) = (core("a", 1), core("b", 2));
    Pair { _dir: dir, a, b }
}

impl Pair {
    /// Anti-entropy both ways until nothing changes (which must happen within a few rounds).
    fn exchange(&self) {
        for _ in 0..10 {
            let from_a = self.a.namespace().load_all().unwrap().entries;
            let from_b = self.b.namespace().load_all().unwrap().entries;
            let changed = self.b.apply_remote(from_a).unwrap().applied
                + self.a.apply_remote(from_b).unwrap().applied
                + self.a.settle_conflicts(Duration::ZERO).unwrap()
                + self.b.settle_conflicts(Duration::ZERO).unwrap()
                + self.a.settle_orphans(Duration::ZERO).unwrap()
                + self.b.settle_orphans(Duration::ZERO).unwrap();
            if changed == 0 {
                return;
            }
        }
        panic!("the two cores keep changing each other: merge does not converge");
    }
}

fn overwrite(core: &FsCore, name: &str, data: &[u8]) {
    let ino = core.lookup(ROOT_INO, name.as_bytes()).unwrap().ino;
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

/// Whether `shown` is a conflict name of `base` as a core without node names shows it:
/// `stem (conflict TAG YYYY-MM-DD HH.MM).ext`, TAG the writer's tag in 8 hex digits.
fn is_conflict_name(shown: &str, base: &str) -> bool {
    let (stem, ext) = match base.rfind('.') {
        Some(p) if p > 0 && p + 1 < base.len() => base.split_at(p),
        _ => (base, ""),
    };
    let Some(inner) = shown
        .strip_prefix(stem)
        .and_then(|s| s.strip_suffix(ext))
        .and_then(|s| s.strip_prefix(" (conflict "))
        .and_then(|s| s.strip_suffix(')'))
    else {
        return false;
    };
    let shape: Vec<bool> = inner.bytes().map(|b| b.is_ascii_hexdigit()).collect();
    let parts: Vec<&str> = inner.split([' ', '-', '.']).collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    inner.len() == 25
        && shape.iter().filter(|h| **h).count() == 20
        && lens == [8, 4, 2, 2, 2, 2]
        && parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The root's listing with each file's content.
fn listing(core: &FsCore) -> Vec<(String, Vec<u8>)> {
    let fh = core.opendir(ROOT_INO).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = core
        .readdir(fh)
        .unwrap()
        .iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| {
            (
                String::from_utf8_lossy(&e.name).into_owned(),
                read_all(core, e.attr.ino),
            )
        })
        .collect();
    core.releasedir(fh);
    out.sort();
    out
}

#[test]
fn concurrent_writes_keep_both_versions_and_a_modify_beats_a_concurrent_delete() {
    let p = pair();
    write_file(&p.a, ROOT_INO, "race.txt", b"v0");
    write_file(&p.a, ROOT_INO, "kept.txt", b"v0");
    write_file(&p.a, ROOT_INO, "seq.txt", b"v0");
    p.exchange();

    // Apart: both change race.txt; A deletes kept.txt while B modifies it.
    overwrite(&p.a, "race.txt", b"written on A");
    overwrite(&p.b, "race.txt", b"written on B, later");
    p.a.unlink(ROOT_INO, b"kept.txt").unwrap();
    overwrite(&p.b, "kept.txt", b"modified on B");
    // seq.txt: B writes on top of A's write (no conflict).
    overwrite(&p.a, "seq.txt", b"first A");
    p.exchange();
    overwrite(&p.b, "seq.txt", b"then B");
    p.exchange();

    let (la, lb) = (listing(&p.a), listing(&p.b));
    assert_eq!(la, lb, "the two nodes disagree");
    let names: Vec<&str> = la.iter().map(|(n, _)| n.as_str()).collect();
    let get = |n: &str| la.iter().find(|(x, _)| x == n).map(|(_, c)| c.as_slice());
    assert_eq!(get("race.txt"), Some(&b"written on B, later"[..]));
    let copies: Vec<&(String, Vec<u8>)> = la
        .iter()
        .filter(|(n, _)| is_conflict_name(n, "race.txt"))
        .collect();
    assert_eq!(copies.len(), 1, "{names:?}");
    assert_eq!(copies[0].1, b"written on A");
    assert_eq!(get("kept.txt"), Some(&b"modified on B"[..]), "{names:?}");
    assert_eq!(get("seq.txt"), Some(&b"then B"[..]));
    assert_eq!(la.len(), 4, "{names:?}");

    // Deleting the copy sticks, on both.
    p.a.unlink(ROOT_INO, copies[0].0.as_bytes()).unwrap();
    p.exchange();
    assert_eq!(listing(&p.a).len(), 3);
    assert_eq!(listing(&p.b), listing(&p.a));
}

/// `p2pfs-ctl conflicts`: a conflict copy (of its file, by the node that wrote the lost
/// version) and a name two files claim, both under names with the node's name, which lead back.
#[test]
fn conflicts_show_node_names_and_list_copies_and_claims() {
    struct Names;
    impl crate::namespace::view::NodeNames for Names {
        fn name_of(&self, origin: u64) -> Option<String> {
            [(1, "alpha"), (2, "beta")]
                .into_iter()
                .find(|(o, _)| *o == origin)
                .map(|(_, n)| n.to_string())
        }
    }
    let p = pair();
    let names = crate::namespace::view::NodeNamer::default();
    names.set(Arc::new(Names));
    p.a.set_node_names(names.clone());
    p.b.set_node_names(names);
    write_file(&p.a, ROOT_INO, "race.txt", b"v0");
    p.exchange();
    overwrite(&p.a, "race.txt", b"written on A");
    overwrite(&p.b, "race.txt", b"written on B, later");
    write_file(&p.a, ROOT_INO, "new.txt", b"made on A");
    write_file(&p.b, ROOT_INO, "new.txt", b"made on B, later");
    p.exchange();

    let l = listing(&p.b);
    assert_eq!(l, listing(&p.a), "the two nodes disagree");
    let shown = |prefix: &str| {
        l.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}...: {l:?}"))
            .clone()
    };
    let (copy, claim) = (
        shown("race (conflict alpha "),
        shown("new (conflict alpha "),
    );
    assert_eq!(copy.1, b"written on A");
    assert_eq!(claim.1, b"made on A");
    assert_eq!(l.len(), 4, "{l:?}");
    for (name, bytes) in [&copy, &claim] {
        assert!(name.ends_with(").txt"), "{name}");
        let ino = p.a.lookup(ROOT_INO, name.as_bytes()).unwrap().ino;
        assert_eq!(&read_all(&p.a, ino), bytes);
    }
    let listed = p.b.conflicts_under("").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expect = [(&claim.0, "new.txt", false), (&copy.0, "race.txt", true)];
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (found, (path, of, is_copy)) in listed.iter().zip(expect) {
        assert_eq!(&found.path, path);
        assert_eq!(found.of.as_deref(), Some(of));
        assert_eq!(found.node, "alpha");
        assert_eq!(found.copy, is_copy);
        assert!(
            found.millis <= now && found.millis + 60_000 > now,
            "{found:?}"
        );
    }
    // The copy is marked in its entry: a copy of race.txt's entry.
    let race = p.b.lookup(ROOT_INO, b"race.txt").unwrap().ino;
    let copy_ino = p.b.lookup(ROOT_INO, copy.0.as_bytes()).unwrap().ino;
    let tree = p.b.tree.read();
    let of = tree.get(copy_ino).unwrap().meta.conflict_of.unwrap();
    assert_eq!(of.entry, tree.get(race).unwrap().id);
    assert_eq!(of.origin, 1);
}

/// `cp -p`, `tar`, `rsync`: write, then chmod/utimes through the open file, then close. The
/// node's own metadata change is part of the history the close is written on: no conflict.
#[test]
fn metadata_changes_while_open_for_writing_are_not_conflicts() {
    let p = pair();
    let (attr, fh) = p.a.create(ROOT_INO, b"copied", 0o600, ME, true).unwrap();
    p.a.write(fh, 0, b"first part ").unwrap();
    p.a.setattr(
        attr.ino,
        SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    )
    .unwrap();
    p.a.write(fh, 11, b"second part").unwrap();
    p.a.release(fh).unwrap();
    p.exchange();
    let (la, lb) = (listing(&p.a), listing(&p.b));
    assert_eq!(
        la,
        vec![("copied".to_string(), b"first part second part".to_vec())]
    );
    assert_eq!(la, lb);
    assert_eq!(
        p.b.getattr(p.b.lookup(ROOT_INO, b"copied").unwrap().ino)
            .unwrap()
            .perm
            & 0o777,
        0o640
    );
}

/// A version that lost to a concurrent one but was itself superseded by its own line (here a
/// write that arrives late, after its successor) makes no conflict copy; its successor does,
/// once settled.
#[test]
fn an_intermediate_version_makes_no_conflict_copy() {
    let p = pair();
    write_file(&p.a, ROOT_INO, "f", b"v0");
    p.exchange();
    let id_of = |core: &FsCore| {
        let ino = core.lookup(ROOT_INO, b"f").unwrap().ino;
        core.tree.read().get(ino).unwrap().id
    };
    let id = id_of(&p.a);
    overwrite(&p.a, "f", b"intermediate on A");
    let key = crate::namespace::EntryKey {
        id,
        volume: p.a.volume_id(),
    };
    let intermediate = p.a.namespace().get(&key).unwrap().unwrap();
    overwrite(&p.a, "f", b"final on A");
    overwrite(&p.b, "f", b"written on B, later");
    // The intermediate version reaches B first: displaced, but not copied before it settles.
    p.b.apply_remote(vec![intermediate]).unwrap();
    assert_eq!(p.b.settle_conflicts(Duration::from_secs(600)).unwrap(), 0);
    p.exchange();
    let (la, lb) = (listing(&p.a), listing(&p.b));
    assert_eq!(la, lb);
    let copies: Vec<&Vec<u8>> = la
        .iter()
        .filter(|(n, _)| is_conflict_name(n, "f"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(copies, vec![&b"final on A".to_vec()], "{la:?}");
    assert!(p.a.namespace().displaced().unwrap().is_empty());
    assert!(p.b.namespace().displaced().unwrap().is_empty());
}

/// Owners as far as the core can tell: stores into one local store, records flushes, and
/// (when given a gate) holds the first chunk until the test lets it go.
struct LocalRemote {
    store: Arc<ChunkStore>,
    synced: parking_lot::Mutex<Vec<Vec<crate::block::ChunkId>>>,
    gate: parking_lot::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl LocalRemote {
    fn new(store: Arc<ChunkStore>, gate: Option<std::sync::mpsc::Receiver<()>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            synced: parking_lot::Mutex::new(Vec::new()),
            gate: parking_lot::Mutex::new(gate),
        })
    }
}

impl RemoteChunks for LocalRemote {
    fn replicate(
        &self,
        id: &crate::block::ChunkId,
        ciphertext: &[u8],
    ) -> Result<(), crate::block::StoreError> {
        let gate = self.gate.lock().take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        self.store.put(id, ciphertext).map(|_| ())
    }
    fn fetch(&self, id: &crate::block::ChunkId) -> Result<Vec<u8>, crate::block::StoreError> {
        self.store.get(id)
    }
    fn sync(&self, ids: &[crate::block::ChunkId]) -> Result<(), crate::block::StoreError> {
        self.synced.lock().push(ids.to_vec());
        Ok(())
    }
}

#[test]
fn fsync_flushes_the_files_chunks_on_their_owners_and_close_does_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserIdentity::generate();
    let volume = Volume::create(&user, "v").unwrap();
    let mut p = parts(dir.path(), &user, volume, 4096, 4 * 4096);
    let remote = LocalRemote::new(p.chunks.clone(), None);
    p.remote = Some(remote.clone());
    let core = FsCore::load(p).unwrap();

    let (attr, fh) = core.create(ROOT_INO, b"f", 0o644, ME, true).unwrap();
    core.write(fh, 0, &pattern(3 * 4096 + 10, 3)).unwrap();
    core.flush(fh).unwrap();
    assert!(remote.synced.lock().is_empty(), "close() does not flush");
    core.write(fh, 4096, b"changed").unwrap();
    core.fsync(fh).unwrap();
    let blocks: Vec<crate::block::ChunkId> = core
        .tree
        .read()
        .get(attr.ino)
        .unwrap()
        .meta
        .blocks
        .iter()
        .flatten()
        .map(|r| r.id)
        .collect();
    assert_eq!(blocks.len(), 4);
    assert_eq!(
        *remote.synced.lock(),
        vec![blocks],
        "fsync flushes the current chunks"
    );
    core.release(fh).unwrap();
}

#[test]
fn a_write_that_lands_while_a_flush_waits_is_committed_not_lost() {
    // A process that spawns a child while writing gets a FLUSH from the child's exec (the
    // descriptor is closed on exec) in the middle of its writes. The flush waits for a seal
    // with the file's lock released; a write landing then must not be committed as a hole.
    let dir = tempfile::tempdir().unwrap();
    let user = UserIdentity::generate();
    let volume = Volume::create(&user, "v").unwrap();
    let mut p = parts(dir.path(), &user, volume, 4096, 64 * 4096);
    let (release, gate) = std::sync::mpsc::channel();
    p.remote = Some(LocalRemote::new(p.chunks.clone(), Some(gate)));
    let core = Arc::new(FsCore::load(p).unwrap());
    let (attr, fh) = core.create(ROOT_INO, b"f", 0o644, ME, true).unwrap();
    let first = pattern(4096, 1);
    core.write(fh, 0, &first).unwrap(); // a full chunk: its seal starts and waits at the gate
    let flusher = {
        let core = core.clone();
        std::thread::spawn(move || core.flush(fh))
    };
    std::thread::sleep(Duration::from_millis(100)); // the flush is waiting for the seal
    let second = pattern(1000, 2);
    core.write(fh, 4096, &second).unwrap();
    release.send(()).unwrap();
    flusher.join().unwrap().unwrap();
    core.release(fh).unwrap();

    let mut want = first;
    want.extend_from_slice(&second);
    assert_eq!(read_all(&core, attr.ino), want);
    let blocks = core.tree.read().get(attr.ino).unwrap().meta.blocks.len();
    assert_eq!(blocks, 2, "both chunks are in the committed version");
}

fn ino_of(core: &FsCore, parent: u64, name: &str) -> u64 {
    core.lookup(parent, name.as_bytes()).unwrap().ino
}

fn nlink_of(core: &FsCore, name: &str) -> u32 {
    core.lookup(ROOT_INO, name.as_bytes()).unwrap().nlink
}

/// The names in the root and the link count each shows, after checking that both nodes agree.
fn agreed(p: &Pair) -> Vec<(String, Vec<u8>, u32)> {
    let (la, lb) = (listing(&p.a), listing(&p.b));
    assert_eq!(la, lb, "the two nodes disagree");
    let with_links = |core: &FsCore| -> Vec<(String, Vec<u8>, u32)> {
        listing(core)
            .into_iter()
            .map(|(n, c)| {
                let nlink = nlink_of(core, &n);
                (n, c, nlink)
            })
            .collect()
    };
    let (a, b) = (with_links(&p.a), with_links(&p.b));
    assert_eq!(a, b, "the two nodes disagree on link counts");
    a
}

#[test]
fn hard_links_share_the_inode_and_its_content_and_count_every_name() {
    let f = fixture(4096);
    let c = &f.core;
    let dir = c.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
    let ino = write_file(c, ROOT_INO, "f", b"shared bytes");
    let before = c.getattr(ino).unwrap();
    let attr = c.link(ino, dir, b"g").unwrap();
    assert_eq!((attr.ino, attr.nlink), (ino, 2));
    assert!(c.getattr(ino).unwrap().ctime >= before.ctime);
    assert_eq!(ino_of(c, dir, "g"), ino);
    assert_eq!(c.lookup(dir, b"g").unwrap().nlink, 2);
    c.link(ino, ROOT_INO, b"h").unwrap();
    assert_eq!(nlink_of(c, "f"), 3);
    let fh = c.opendir(dir).unwrap();
    let shown: Vec<(Vec<u8>, u64, u32)> = c
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.attr.ino, e.attr.nlink))
        .collect();
    c.releasedir(fh);
    assert_eq!(shown[2..], [(b"g".to_vec(), ino, 3)]);
    // Errors: a taken name, a directory, a name in a file.
    assert!(matches!(c.link(ino, ROOT_INO, b"f"), Err(FsError::Exists)));
    assert!(matches!(
        c.link(dir, ROOT_INO, b"dl"),
        Err(FsError::NotPermitted(_))
    ));
    assert!(matches!(c.link(ino, ino, b"x"), Err(FsError::NotDir)));
    // Writing through one name shows through the others.
    let fh = c.open(ino_of(c, dir, "g"), true).unwrap();
    c.write(fh, 0, b"SHARED").unwrap();
    c.release(fh).unwrap();
    assert_eq!(read_all(c, ino_of(c, ROOT_INO, "h")), b"SHARED bytes");
    // A rename of one name onto another name of the same inode changes nothing.
    c.rename(ROOT_INO, b"h", dir, b"g", RenameMode::Plain)
        .unwrap();
    assert_eq!(nlink_of(c, "h"), 3);
    // Its first name goes: the others keep it (and the path of its chunks follows them).
    c.unlink(ROOT_INO, b"f").unwrap();
    assert!(c.lookup(ROOT_INO, b"f").is_err());
    assert_eq!(nlink_of(c, "h"), 2);
    assert_eq!(read_all(c, ino), b"SHARED bytes");
    let paths: Vec<String> = c.file_chunk_lists().into_iter().map(|(p, _)| p).collect();
    assert!(paths == ["h"] || paths == ["d/g"], "{paths:?}");
    // Renames of a link and over a link.
    c.rename(ROOT_INO, b"h", ROOT_INO, b"h2", RenameMode::Plain)
        .unwrap();
    let other = write_file(c, ROOT_INO, "other", b"other");
    c.rename(ROOT_INO, b"other", dir, b"g", RenameMode::Plain)
        .unwrap();
    assert_eq!(ino_of(c, dir, "g"), other);
    assert_eq!(nlink_of(c, "h2"), 1);
    // Open while its last name goes: still readable, no links.
    let fh = c.open(ino, false).unwrap();
    c.unlink(ROOT_INO, b"h2").unwrap();
    assert_eq!(c.getattr(ino).unwrap().nlink, 0);
    assert_eq!(c.read(fh, 0, 100).unwrap().to_vec(), b"SHARED bytes");
    c.release(fh).unwrap();
    assert!(c.getattr(ino).is_err());
    assert_eq!(
        c.stats().entries,
        3,
        "root, d and other; no link or inode left"
    );
}

#[test]
fn rename_exchange_swaps_two_names() {
    let f = fixture(4096);
    let c = &f.core;
    let dir = c.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
    let a = write_file(c, ROOT_INO, "a", b"A");
    let b = write_file(c, dir, "b", b"B");
    let l = c.link(a, dir, b"la").unwrap().ino;
    assert_eq!(l, a);
    c.rename(ROOT_INO, b"a", dir, b"b", RenameMode::Exchange)
        .unwrap();
    assert_eq!(ino_of(c, ROOT_INO, "a"), b);
    assert_eq!(ino_of(c, dir, "b"), a);
    // A link and a directory swap too; a missing side is ENOENT; a directory into itself
    // EINVAL.
    let e = c.mkdir(ROOT_INO, b"e", 0o755, ME).unwrap().ino;
    c.rename(dir, b"la", ROOT_INO, b"e", RenameMode::Exchange)
        .unwrap();
    assert_eq!(ino_of(c, ROOT_INO, "e"), a);
    assert_eq!(ino_of(c, dir, "la"), e);
    assert_eq!(c.lookup(dir, b"la").unwrap().nlink, 2);
    assert_eq!(c.lookup(ROOT_INO, b"d").unwrap().nlink, 3);
    assert_eq!(nlink_of(c, "e"), 2);
    assert!(matches!(
        c.rename(dir, b"b", ROOT_INO, b"d", RenameMode::Exchange),
        Err(FsError::Invalid)
    ));
    assert!(matches!(
        c.rename(ROOT_INO, b"a", ROOT_INO, b"none", RenameMode::Exchange),
        Err(FsError::NotFound)
    ));
    assert_eq!(read_all(c, ino_of(c, dir, "b")), b"A");
}

/// A pair where `f` (content "v0") also has the name `l`, known to both.
fn linked_pair() -> Pair {
    let p = pair();
    let ino = write_file(&p.a, ROOT_INO, "f", b"v0");
    p.a.link(ino, ROOT_INO, b"l").unwrap();
    p.exchange();
    assert_eq!(nlink_of(&p.b, "f"), 2);
    assert_eq!(ino_of(&p.b, ROOT_INO, "l"), ino_of(&p.b, ROOT_INO, "f"));
    p
}

fn names(l: &[(String, Vec<u8>, u32)]) -> Vec<&str> {
    l.iter().map(|(n, _, _)| n.as_str()).collect()
}

/// Case 1: a rename of a link on one node and its unlink on another: the rename (a modify)
/// beats the delete.
#[test]
fn links_concurrent_rename_beats_unlink() {
    let p = linked_pair();
    p.a.rename(ROOT_INO, b"l", ROOT_INO, b"m", RenameMode::Plain)
        .unwrap();
    p.b.unlink(ROOT_INO, b"l").unwrap();
    p.exchange();
    let l = agreed(&p);
    assert_eq!(
        l,
        vec![
            ("f".into(), b"v0".to_vec(), 2),
            ("m".into(), b"v0".to_vec(), 2)
        ]
    );
}

/// Case 2: two renames of one link: one wins, no conflict copy.
#[test]
fn links_concurrent_renames_of_one_name_keep_one() {
    let p = linked_pair();
    p.a.rename(ROOT_INO, b"l", ROOT_INO, b"x", RenameMode::Plain)
        .unwrap();
    p.b.rename(ROOT_INO, b"l", ROOT_INO, b"y", RenameMode::Plain)
        .unwrap();
    p.exchange();
    let l = agreed(&p);
    assert_eq!(l.len(), 2, "{:?}", names(&l));
    assert_eq!(l[0], ("f".into(), b"v0".to_vec(), 2));
    assert!(l[1].0 == "x" || l[1].0 == "y", "{:?}", names(&l));
}

/// Case 3: both nodes link at the same name: both names count, one shows as a conflict name.
#[test]
fn links_concurrent_links_at_one_name_both_count() {
    let p = linked_pair();
    p.a.link(ino_of(&p.a, ROOT_INO, "f"), ROOT_INO, b"n")
        .unwrap();
    p.b.link(ino_of(&p.b, ROOT_INO, "f"), ROOT_INO, b"n")
        .unwrap();
    p.exchange();
    let l = agreed(&p);
    assert_eq!(l.len(), 4, "{:?}", names(&l));
    assert!(l.iter().all(|(_, c, n)| c == b"v0" && *n == 4), "{l:?}");
    assert!(is_conflict_name(&l[3].0, "n"), "{:?}", names(&l));
    let f = ino_of(&p.b, ROOT_INO, "f");
    assert!(l.iter().all(|(n, _, _)| ino_of(&p.b, ROOT_INO, n) == f));
}

/// Case 4: an unlink of the last name known on one node races a link on another: the link's
/// new version of the inode beats the delete; both names show.
#[test]
fn links_a_link_beats_a_concurrent_delete_of_the_last_name() {
    let p = pair();
    write_file(&p.a, ROOT_INO, "f", b"v0");
    p.exchange();
    p.a.unlink(ROOT_INO, b"f").unwrap();
    p.b.link(ino_of(&p.b, ROOT_INO, "f"), ROOT_INO, b"g")
        .unwrap();
    p.exchange();
    let l = agreed(&p);
    assert_eq!(
        l,
        vec![
            ("f".into(), b"v0".to_vec(), 2),
            ("g".into(), b"v0".to_vec(), 2)
        ]
    );
}

/// Case 5: the first name goes on one node, the other name on the other. When the node that
/// kept the first name wrote last, it comes back; otherwise the inode is left unnamed with no
/// link (an orphan), invisible, and deleted once settled.
#[test]
fn links_concurrent_unlinks_of_both_names_restore_or_settle_the_orphan() {
    // B (which drops the link) writes last: its version of the inode, named, wins.
    // "Last" by clock, not by wall time: both unlinks can fall in one millisecond, where the
    // one with more writes in it (the link's tombstone, then the inode) has the later clock.
    // Observing the other side's clock orders them without making either see the other's
    // version.
    let p = linked_pair();
    p.a.unlink(ROOT_INO, b"f").unwrap();
    p.b.clock.observe(p.a.clock.now());
    p.b.unlink(ROOT_INO, b"l").unwrap();
    p.exchange();
    assert_eq!(agreed(&p), vec![("f".into(), b"v0".to_vec(), 1)]);

    // A (which drops the first name) writes last: an orphan.
    let p = linked_pair();
    p.b.unlink(ROOT_INO, b"l").unwrap();
    p.a.clock.observe(p.b.clock.now());
    p.a.unlink(ROOT_INO, b"f").unwrap();
    let b_entries = p.b.namespace().load_all().unwrap().entries;
    p.a.apply_remote(b_entries).unwrap();
    assert!(listing(&p.a).is_empty());
    // Invisible until it settles, then deleted.
    assert_eq!(p.a.settle_orphans(Duration::from_secs(600)).unwrap(), 0);
    assert_eq!(p.a.stats().entries, 2, "root and the unnamed inode");
    assert_eq!(p.a.settle_orphans(Duration::ZERO).unwrap(), 1);
    p.exchange();
    assert!(agreed(&p).is_empty());
    assert_eq!(p.a.stats().entries, 1);
    assert_eq!(p.b.stats().entries, 1);
}

/// Case 6: a write through one name races a link on the other node: concurrent versions of
/// the inode with different content, the loser kept as a conflict copy; an unnamed loser's
/// copy sits beside its link.
#[test]
fn links_a_write_racing_a_name_change_keeps_a_conflict_copy() {
    let p = linked_pair();
    p.b.link(ino_of(&p.b, ROOT_INO, "f"), ROOT_INO, b"g")
        .unwrap();
    overwrite(&p.a, "l", b"written on A");
    p.exchange();
    let l = agreed(&p);
    assert_eq!(l.len(), 4, "{:?}", names(&l));
    assert_eq!(l[0], ("f".into(), b"written on A".to_vec(), 3));
    assert!(is_conflict_name(&l[1].0, "f") && l[1].1 == b"v0", "{l:?}");
    assert_eq!(
        &l[2..],
        [
            ("g".into(), b"written on A".to_vec(), 3),
            ("l".into(), b"written on A".to_vec(), 3)
        ]
    );

    // The first name goes on A while B writes (later): the unnamed version lost; its copy
    // is named after the link.
    let p = linked_pair();
    p.a.unlink(ROOT_INO, b"f").unwrap();
    overwrite(&p.b, "f", b"written on B");
    p.exchange();
    let l = agreed(&p);
    assert_eq!(l.len(), 3, "{:?}", names(&l));
    assert_eq!(l[0], ("f".into(), b"written on B".to_vec(), 2));
    assert_eq!(l[1], ("l".into(), b"written on B".to_vec(), 2));
    assert!(is_conflict_name(&l[2].0, "l") && l[2].1 == b"v0", "{l:?}");
}

/// A link made while the file is open for writing is the node's own history: the close is
/// written on it, no conflict.
#[test]
fn links_made_while_a_file_is_written_are_not_conflicts() {
    let p = pair();
    let (attr, fh) = p.a.create(ROOT_INO, b"f", 0o644, ME, true).unwrap();
    p.a.write(fh, 0, b"first ").unwrap();
    p.a.link(attr.ino, ROOT_INO, b"g").unwrap();
    p.a.write(fh, 6, b"second").unwrap();
    p.a.release(fh).unwrap();
    p.exchange();
    assert_eq!(
        agreed(&p),
        vec![
            ("f".into(), b"first second".to_vec(), 2),
            ("g".into(), b"first second".to_vec(), 2)
        ]
    );
}

/// An unnamed inode that arrives before its links (a node catching up) is not an orphan: it
/// is never deleted for lack of links it has not received yet.
#[test]
fn links_an_unnamed_inode_arriving_before_its_links_is_kept() {
    let p = pair();
    let ino = write_file(&p.a, ROOT_INO, "f", b"v0");
    p.a.link(ino, ROOT_INO, b"l").unwrap();
    p.a.unlink(ROOT_INO, b"f").unwrap();
    let id = p.a.tree.read().get(ino).unwrap().id;
    let (inode, rest): (Vec<_>, Vec<_>) =
        p.a.namespace()
            .load_all()
            .unwrap()
            .entries
            .into_iter()
            .partition(|e| e.id == id);
    p.b.apply_remote(inode).unwrap();
    assert_eq!(p.b.settle_orphans(Duration::ZERO).unwrap(), 0);
    p.b.apply_remote(rest).unwrap();
    p.exchange();
    assert_eq!(agreed(&p), vec![("l".into(), b"v0".to_vec(), 1)]);
}

/// Links arriving out of order: B saw the inode unnamed with link `l1`; A then links `l2` and
/// unlinks `l1`. B gets the inode's newer version and `l1`'s delete before `l2`: no concurrent
/// versions met, so it is no orphan, and B must not delete the file everyone else still names.
#[test]
fn links_a_link_arriving_after_its_predecessors_delete_is_not_an_orphan() {
    let p = pair();
    let ino = write_file(&p.a, ROOT_INO, "f", b"v0");
    p.a.link(ino, ROOT_INO, b"l1").unwrap();
    p.a.unlink(ROOT_INO, b"f").unwrap();
    p.exchange();
    p.a.link(ino, ROOT_INO, b"l2").unwrap();
    p.a.unlink(ROOT_INO, b"l1").unwrap();
    let l2_id = {
        let tree = p.a.tree.read();
        let l2 = tree.claim(ROOT_INO, b"l2").unwrap();
        tree.get(l2).unwrap().id
    };
    let (l2, rest): (Vec<_>, Vec<_>) =
        p.a.namespace()
            .load_all()
            .unwrap()
            .entries
            .into_iter()
            .partition(|e| e.id == l2_id);
    p.b.apply_remote(rest).unwrap();
    assert_eq!(
        p.b.settle_orphans(Duration::ZERO).unwrap(),
        0,
        "an inode whose newer link is still on its way is no orphan"
    );
    p.b.apply_remote(l2).unwrap();
    p.exchange();
    assert_eq!(agreed(&p), vec![("l2".into(), b"v0".to_vec(), 1)]);
}

/// Two nodes rename two different names of one file: both renames stay (each name is its own
/// entry, and renaming a link writes nothing else).
#[test]
fn links_renames_of_two_names_on_two_nodes_both_stay() {
    let p = linked_pair();
    p.b.rename(ROOT_INO, b"f", ROOT_INO, b"f2", RenameMode::Plain)
        .unwrap();
    p.a.rename(ROOT_INO, b"l", ROOT_INO, b"l2", RenameMode::Plain)
        .unwrap();
    p.exchange();
    assert_eq!(
        agreed(&p),
        vec![
            ("f2".into(), b"v0".to_vec(), 2),
            ("l2".into(), b"v0".to_vec(), 2)
        ]
    );
}

/// Opening a file of the directory listed last fetches the next small files' chunks (as many
/// files as the read-ahead: `read_ahead_chunks`, at most half the cache, 4 here) into the
/// cache; files past that, and large files, are not.
#[test]
fn opening_a_listed_file_reads_the_next_small_files_ahead() {
    let f = fixture(4096);
    let core = &f.core;
    let dir = core.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap().ino;
    // Names sort in creation order; file 1 is large (over the small-file bound).
    let inos: Vec<u64> = (0..10)
        .map(|i| {
            let len = if i == 1 { 300 * 1024 } else { 1000 };
            write_file(core, dir, &format!("f{i:02}"), &pattern(len, i as u8))
        })
        .collect();
    let chunks = |ino: u64| -> Vec<crate::block::ChunkId> {
        let node = core.tree.read().get(ino).unwrap().clone();
        node.meta.blocks.iter().flatten().map(|r| r.id).collect()
    };
    for &ino in &inos {
        for id in chunks(ino) {
            core.io.cache.remove(&id);
        }
    }
    let cached = |ino: u64| {
        chunks(ino)
            .iter()
            .all(|id| core.io.cache.peek(id).is_some())
    };

    let dh = core.opendir(dir).unwrap();
    let fh = core.open(inos[0], false).unwrap();
    // The read-ahead is 4 files here: files 1 to 4, of which 1 is large.
    assert_eq!(core.io.read_ahead_chunks, 4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ![2, 3, 4].iter().all(|&i| cached(inos[i])) {
        assert!(
            std::time::Instant::now() < deadline,
            "the next small files were not read ahead"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!cached(inos[1]), "a large file was read ahead");
    assert!(!cached(inos[5]), "read ahead past the read-ahead's files");
    core.release(fh).unwrap();
    core.releasedir(dh);
}
