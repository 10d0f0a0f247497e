//! Mounts of several users exchanging entries, without a kernel or a network.

use super::*;
use crate::block::ChunkStore;
use crate::identity::NetworkKey;
use crate::namespace::entry::{EntryId, EntryKind, EntryMeta, EntrySealer, Timestamp};
use crate::util::hlc::Hlc;

const ME: Caller = Caller { uid: 0, gid: 0 };

struct Net {
    dir: tempfile::TempDir,
    chunks: Arc<ChunkStore>,
}

impl Net {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks")).unwrap());
        Self { dir, chunks }
    }

    fn mount(&self, name: &str, origin: u64) -> (Mount, UserKey) {
        self.mount_as(name, origin, UserIdentity::generate())
    }

    fn mount_as(&self, name: &str, origin: u64, user: UserIdentity) -> (Mount, UserKey) {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let key = UserKey::of(&user);
        let mount = Mount::load(MountParts {
            network: Volume::for_network(&NetworkKey([9; 32])),
            user,
            origin,
            namespace: NamespaceStore::open(&d.join("ns.redb")).unwrap(),
            chunks: self.chunks.clone(),
            remote: None,
            publish: None,
            chunk_size: 4096,
            cache_bytes: 1 << 20,
            write_buffer_bytes: 1 << 20,
            seal_threads: 1,
            data_dir: d,
        })
        .unwrap();
        (mount, key)
    }
}

/// Anti-entropy among all mounts until nothing changes.
fn exchange(mounts: &[&Mount]) {
    for _ in 0..10 {
        let mut changed = 0;
        for from in mounts {
            let entries = from.namespace().load_all().unwrap().entries;
            for to in mounts {
                changed += to.apply_remote(entries.clone()).unwrap().applied;
            }
        }
        if changed == 0 {
            return;
        }
    }
    panic!("mounts keep changing each other");
}

fn write(m: &Mount, parent: u64, name: &str, data: &[u8]) -> FsResult<u64> {
    let (attr, fh) = m.create(parent, name.as_bytes(), 0o644, ME, true)?;
    m.write(fh, 0, data)?;
    m.release(fh)?;
    Ok(attr.ino)
}

fn read(m: &Mount, ino: u64) -> Vec<u8> {
    let fh = m.open(ino, false).unwrap();
    let data = m.read(fh, 0, 1 << 20).unwrap().to_vec();
    m.release(fh).unwrap();
    data
}

fn vol(m: &Mount, dir: &str) -> FsResult<u64> {
    m.lookup(ROOT_INO, dir.as_bytes()).map(|a| a.ino)
}

/// The volume with id `id` as mount `m` holds it (its keys as that user has them).
fn volume_of(m: &Mount, id: &str) -> Volume {
    m.slots
        .read()
        .iter()
        .find(|s| s.volume.id.to_string() == id)
        .map(|s| s.volume.clone())
        .expect("the mount has the volume")
}

fn names(m: &Mount, ino: u64) -> Vec<String> {
    let fh = m.opendir(ino).unwrap();
    let mut out: Vec<String> = m
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|d| String::from_utf8_lossy(&d.name).into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    m.releasedir(fh);
    out.sort();
    out
}

#[test]
fn sharing_gives_access_read_only_blocks_writes_and_unshare_takes_it_away() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let (c, _) = net.mount("c", 3);
    let team = a.create_volume("team").unwrap();
    assert_eq!(team.dir, "/@team");
    let root = vol(&a, "@team").unwrap();
    write(&a, root, "plan.txt", b"secret plan").unwrap();
    exchange(&[&a, &b, &c]);
    // Not shared yet: B stores the entries but sees no volume.
    assert_eq!(vol(&b, "@team"), Err(FsError::NotFound));
    assert_eq!(names(&b, ROOT_INO), vec!["@home"]);
    assert!(b.namespace().len().unwrap() >= a.namespace().len().unwrap());

    a.share("team", &b_key, true).unwrap();
    exchange(&[&a, &b, &c]);
    let b_root = vol(&b, "@team").unwrap();
    assert_eq!(names(&b, ROOT_INO), vec!["@home", "@team"]);
    let plan = b.lookup(b_root, b"plan.txt").unwrap();
    assert_eq!(read(&b, plan.ino), b"secret plan");
    assert_eq!(
        write(&b, b_root, "mine.txt", b"x").unwrap_err(),
        FsError::ReadOnly
    );
    assert_eq!(b.open(plan.ino, true).unwrap_err(), FsError::ReadOnly);
    assert_eq!(
        b.unlink(b_root, b"plan.txt").unwrap_err(),
        FsError::ReadOnly
    );
    // C is no member and sees nothing.
    assert_eq!(vol(&c, "@team"), Err(FsError::NotFound));

    a.share("team", &b_key, false).unwrap();
    exchange(&[&a, &b, &c]);
    let b_root = vol(&b, "@team").unwrap();
    write(&b, b_root, "from-b.txt", b"hello from b").unwrap();
    exchange(&[&a, &b, &c]);
    let from_b = a.lookup(vol(&a, "@team").unwrap(), b"from-b.txt").unwrap();
    assert_eq!(read(&a, from_b.ino), b"hello from b");

    assert!(a.unshare("team", &b_key.id).unwrap());
    let a_root = vol(&a, "@team").unwrap();
    write(&a, a_root, "after.txt", b"written after the removal").unwrap();
    exchange(&[&a, &b, &c]);
    assert_eq!(vol(&b, "@team"), Err(FsError::NotFound));
    // B's earlier write stays valid and readable by A.
    let from_b = a.lookup(a_root, b"from-b.txt").unwrap();
    assert_eq!(read(&a, from_b.ino), b"hello from b");
    let info = a.volumes();
    let team = info.iter().find(|v| v.name == "team").unwrap();
    assert_eq!((team.members, team.writers, team.keys), (1, 1, 2));
    // B's node stores the new entry but cannot open it with the key B had.
    let after = a.namespace().load_all().unwrap().entries;
    let stored_at_b = b.namespace().load_all().unwrap().entries;
    let newest = after
        .iter()
        .filter(|e| e.volume.to_string() == team.id && !VolumeRecord::is_record(e))
        .max_by_key(|e| e.hlc)
        .unwrap();
    assert!(stored_at_b.contains(newest));
    assert!(volume_of(&b, &team.id).open_entry(newest).is_err());
}

#[test]
fn writes_by_non_writers_and_forged_records_are_refused_everywhere() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let team = a.create_volume("team").unwrap();
    a.share("team", &b_key, true).unwrap();
    exchange(&[&a, &b]);
    // B (a reader, so it has the key) seals an entry anyway, bypassing its own mount.
    let volume = volume_of(&b, &team.id);
    let meta = EntryMeta::new_empty(
        volume.root_id(),
        b"smuggled".to_vec(),
        EntryKind::File,
        0o644,
        (0, 0),
        Timestamp::now(),
    );
    let smuggled = EntrySealer {
        volume: volume.id,
        payload_key: volume.payload_key(),
        signer: &b.user.signing,
        origin: 2,
    }
    .seal(EntryId::random(), b.clock.now(), &[], &meta);
    let before = a.stats().rejected_entries;
    let report = a.apply_remote(vec![smuggled.clone()]).unwrap();
    assert_eq!((report.applied, report.rejected), (0, 1));
    assert_eq!(a.stats().rejected_entries, before + 1);
    assert!(a.namespace().get(&smuggled.id).unwrap().is_none());
    // B's own record for A's volume (making itself a writer) is refused: not the owner.
    let mut grabbed = volume.clone();
    grabbed.writers.push(b_key.id);
    let forged = grabbed
        .record_entry(&b.user.signing, 2, b.clock.now(), &[])
        .unwrap();
    let report = a.apply_remote(vec![forged]).unwrap();
    assert_eq!((report.applied, report.rejected), (0, 1));
    let report = a.apply_remote(vec![smuggled.clone()]).unwrap();
    assert_eq!(report.rejected, 1, "the forged record gave no write right");
    // A replayed older record changes nothing.
    let stored = a
        .namespace()
        .get(&VolumeRecord::entry_id(&volume.id))
        .unwrap()
        .unwrap();
    assert_eq!(a.apply_remote(vec![stored]).unwrap().applied, 0);
}

#[test]
fn entries_wait_for_their_volume_record() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, _) = net.mount("b", 2);
    let team = a.create_volume("team").unwrap();
    write(&a, vol(&a, "@team").unwrap(), "f", b"data").unwrap();
    let (records, files): (Vec<Entry>, Vec<Entry>) = a
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.volume.to_string() == team.id)
        .partition(VolumeRecord::is_record);
    let report = b.apply_remote(files.clone()).unwrap();
    assert_eq!((report.applied, report.rejected), (0, 0));
    assert!(b.namespace().get(&files[0].id).unwrap().is_none());
    b.apply_remote(records).unwrap();
    for f in &files {
        assert!(
            b.namespace().get(&f.id).unwrap().is_some(),
            "held entry stored"
        );
    }
}

#[test]
fn volume_directories_are_reserved_and_moves_between_volumes_are_cross_device() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    assert_eq!(names(&a, ROOT_INO), vec!["@home"]);
    let home = vol(&a, "@home").unwrap();
    assert_eq!(a.getattr(home).unwrap().kind, EntryKind::Dir);
    assert!(matches!(
        a.mkdir(ROOT_INO, b"@x", 0o755, ME),
        Err(FsError::NotPermitted(_))
    ));
    assert!(matches!(
        a.rmdir(ROOT_INO, b"@home"),
        Err(FsError::NotPermitted(_))
    ));
    write(&a, ROOT_INO, "top.txt", b"top").unwrap();
    let inner = write(&a, home, "in-home.txt", b"home data").unwrap();
    assert_eq!(
        a.rename(ROOT_INO, b"top.txt", home, b"moved.txt", false),
        Err(FsError::CrossVolume)
    );
    assert_eq!(names(&a, ROOT_INO), vec!["@home", "top.txt"]);
    assert_eq!(names(&a, home), vec!["in-home.txt"]);
    assert_eq!(read(&a, inner), b"home data");
    assert_eq!(a.file_chunks("@home/in-home.txt").unwrap().len(), 1);
    a.rename(home, b"in-home.txt", home, b"renamed.txt", false)
        .unwrap();
    assert_eq!(names(&a, home), vec!["renamed.txt"]);
    assert!(a.create_volume("home").is_err());
    assert!(a.create_volume("a/b").is_err());
    a.create_volume("x").unwrap();
    assert!(a.create_volume("x").is_err(), "one name per owner");
}

#[test]
fn the_personal_volume_is_the_same_on_every_machine_of_a_user() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    write(&a, vol(&a, "@home").unwrap(), "notes", b"mine").unwrap();
    // A second machine of the same user.
    let same_user = UserIdentity {
        age: a.user.age.clone(),
        signing: a.user.signing.clone(),
    };
    let (a2, _) = net.mount_as("a2", 11, same_user);
    let (stranger, _) = net.mount("s", 3);
    exchange(&[&a, &a2, &stranger]);
    let notes = a2.lookup(vol(&a2, "@home").unwrap(), b"notes").unwrap();
    assert_eq!(read(&a2, notes.ino), b"mine");
    assert_eq!(
        names(&stranger, vol(&stranger, "@home").unwrap()),
        Vec::<String>::new()
    );
}

/// A tombstone signed by `user` over the version `current` of its id (with a history that
/// covers every version anyone will write), stamped at `hlc`.
fn back_dated_tombstone(user: &UserIdentity, current: &Entry, hlc: Hlc) -> Entry {
    let base: Vec<(u64, Hlc)> = current
        .seen
        .iter()
        .map(|(o, _)| (*o, Hlc(u64::MAX / 2)))
        .collect();
    EntrySealer {
        volume: current.volume,
        payload_key: &[0; 32],
        signer: &user.signing,
        origin: 0xbad,
    }
    .tombstone(current.id, hlc, &base)
}

#[test]
fn a_removed_writers_back_dated_versions_are_refused_and_ones_stored_before_are_dropped() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let c_user = UserIdentity::generate();
    let c_same = UserIdentity {
        age: c_user.age.clone(),
        signing: c_user.signing.clone(),
    };
    let (c, c_key) = net.mount_as("c", 3, c_user);
    let (d, _) = net.mount("d", 4);
    let team = a.create_volume("team").unwrap();
    a.share("team", &b_key, false).unwrap();
    a.share("team", &c_key, true).unwrap();
    exchange(&[&a, &b, &c, &d]);
    write(&a, vol(&a, "@team").unwrap(), "a.txt", b"the owner's").unwrap();
    write(&b, vol(&b, "@team").unwrap(), "b.txt", b"the writer's").unwrap();
    exchange(&[&a, &b, &c, &d]);
    let files: Vec<Entry> = a
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| {
            e.volume.to_string() == team.id && !VolumeRecord::is_record(e) && {
                let v = volume_of(&a, &team.id);
                e.id != v.root_id()
            }
        })
        .collect();
    assert_eq!(files.len(), 2);
    // B signs tombstones stamped long before any removal; C and D take them while B is a
    // writer (the removal has not reached them): the files are gone there.
    let forged: Vec<Entry> = files
        .iter()
        .map(|e| back_dated_tombstone(&b.user, e, Hlc(1 << 20)))
        .collect();
    assert_eq!(c.apply_remote(forged.clone()).unwrap().applied, 2);
    assert_eq!(d.apply_remote(forged.clone()).unwrap().applied, 2);
    assert!(names(&c, vol(&c, "@team").unwrap()).is_empty());

    assert!(a.unshare("team", &b_key.id).unwrap());
    // The owner refuses them now, whatever clock they claim, and so a modify B seals with the
    // key it still has (a rename of the owner's file over a history covering everything).
    let old_volume = volume_of(&b, &team.id);
    let owners = files.iter().find(|e| e.author != b_key.id).unwrap();
    let mut meta = old_volume.open_entry(owners).unwrap();
    meta.name = b"renamed-by-the-removed-writer".to_vec();
    let covering: Vec<(u64, Hlc)> = owners
        .seen
        .iter()
        .map(|(o, _)| (*o, Hlc(u64::MAX / 2)))
        .collect();
    let modify = EntrySealer {
        volume: old_volume.id,
        payload_key: old_volume.payload_key(),
        signer: &b.user.signing,
        origin: 0xbad,
    }
    .seal(owners.id, Hlc(1 << 20), &covering, &meta);
    let rejected = a.stats().rejected_entries;
    let report = a
        .apply_remote([forged.clone(), vec![modify]].concat())
        .unwrap();
    assert_eq!((report.applied, report.rejected), (0, 3));
    assert_eq!(a.stats().rejected_entries, rejected + 3);
    // B's own earlier write stays valid; C and D drop the tombstones when the removal arrives
    // and anti-entropy brings the files back.
    exchange(&[&a, &c, &d]);
    for m in [&a, &c] {
        let root = vol(m, "@team").unwrap();
        assert_eq!(names(m, root), vec!["a.txt", "b.txt"]);
        assert_eq!(
            read(m, m.lookup(root, b"a.txt").unwrap().ino),
            b"the owner's"
        );
        assert_eq!(
            read(m, m.lookup(root, b"b.txt").unwrap().ino),
            b"the writer's"
        );
    }
    for m in [&a, &c, &d] {
        let stored = m.namespace().load_all().unwrap().entries;
        assert!(files.iter().all(|f| stored.contains(f)));
        assert!(forged.iter().all(|f| !stored.contains(f)));
    }
    assert!(c.stats().rejected_entries >= 2 && d.stats().rejected_entries >= 2);

    // One stored after the removal by a path that skipped the check (a crash between a commit
    // and the purge): dropped when the node loads.
    c.namespace().commit(&forged[..1]).unwrap();
    c.shutdown();
    drop(c);
    let (c, _) = net.mount_as("c", 3, c_same);
    let stored = c.namespace().load_all().unwrap().entries;
    assert!(!stored.contains(&forged[0]));
    exchange(&[&a, &c, &d]);
    let root = vol(&c, "@team").unwrap();
    assert_eq!(
        read(&c, c.lookup(root, b"a.txt").unwrap().ino),
        b"the owner's"
    );
}

#[test]
fn a_removed_writer_made_reader_keeps_its_held_writes_and_no_later_ones() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let team = a.create_volume("team").unwrap();
    a.share("team", &b_key, false).unwrap();
    exchange(&[&a, &b]);
    write(&b, vol(&b, "@team").unwrap(), "b.txt", b"by b").unwrap();
    exchange(&[&a, &b]);
    let held = a
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .into_iter()
        .find(|e| e.author == b_key.id && e.volume.to_string() == team.id)
        .unwrap();
    a.share("team", &b_key, true).unwrap();
    exchange(&[&a, &b]);
    let b_root = vol(&b, "@team").unwrap();
    assert_eq!(
        write(&b, b_root, "later.txt", b"x").unwrap_err(),
        FsError::ReadOnly
    );
    // The write B made as a writer stays; a version B signs now, stamped before the demotion,
    // is refused.
    let root = vol(&a, "@team").unwrap();
    assert_eq!(read(&a, a.lookup(root, b"b.txt").unwrap().ino), b"by b");
    let forged = back_dated_tombstone(&b.user, &held, Hlc(held.hlc.0 + 1));
    assert_eq!(a.apply_remote(vec![forged]).unwrap().rejected, 1);
    assert_eq!(read(&a, a.lookup(root, b"b.txt").unwrap().ino), b"by b");
}
