//! Mounts of several users exchanging entries, without a kernel or a network.

use super::ingest::{Held, MAX_HELD, held_size};
use super::*;
use crate::block::ChunkStore;
use crate::fs::{Caller, ROOT_INO, RenameMode};
use crate::identity::NetworkKey;
use crate::namespace::entry::{EntryId, EntryKind, EntryMeta, EntrySealer, Timestamp};
use crate::namespace::volume::UserKey;
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
        let key = UserKey::of(&user);
        let d = self.dir.path().join(name);
        (test_mount(&d, &self.chunks, origin, user, false), key)
    }
}

/// A mount of `user` with its store in `dir` and chunks in `chunks` (shared by the mounts of
/// one test), 4 KiB chunks; keeping earlier versions by the default policy when
/// `keep_versions` (a store keeps none until a node sets one).
pub(super) fn test_mount(
    dir: &std::path::Path,
    chunks: &Arc<ChunkStore>,
    origin: u64,
    user: UserIdentity,
    keep_versions: bool,
) -> Mount {
    std::fs::create_dir_all(dir).unwrap();
    let namespace = NamespaceStore::open(&dir.join("ns.redb")).unwrap();
    if keep_versions {
        namespace.set_retention(crate::namespace::RetentionTable {
            default: crate::namespace::RetentionPolicy::default(),
            volumes: Default::default(),
        });
    }
    Mount::load(MountParts {
        network: Volume::for_network(&NetworkKey([9; 32])),
        user,
        origin,
        namespace,
        chunks: chunks.clone(),
        remote: None,
        publish: None,
        chunk_size: 4096,
        cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        seal_threads: 1,
        read_ahead_chunks: 2,
        data_dir: dir.to_path_buf(),
    })
    .unwrap()
}

/// Anti-entropy among all mounts until nothing changes.
pub(super) fn exchange(mounts: &[&Mount]) {
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

    assert_eq!(a.unshare("team", &b_key.id).unwrap(), Some(0));
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
    assert!(a.namespace().get(&smuggled.key()).unwrap().is_none());
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
        .get(&VolumeRecord::entry_key(&volume.id))
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
    assert!(b.namespace().get(&files[0].key()).unwrap().is_none());
    b.apply_remote(records).unwrap();
    for f in &files {
        assert!(
            b.namespace().get(&f.key()).unwrap().is_some(),
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
        a.rename(ROOT_INO, b"top.txt", home, b"moved.txt", RenameMode::Plain),
        Err(FsError::CrossVolume)
    );
    assert_eq!(names(&a, ROOT_INO), vec!["@home", "top.txt"]);
    assert_eq!(names(&a, home), vec!["in-home.txt"]);
    assert_eq!(read(&a, inner), b"home data");
    assert_eq!(a.file_chunks("@home/in-home.txt").unwrap().len(), 1);
    a.rename(
        home,
        b"in-home.txt",
        home,
        b"renamed.txt",
        RenameMode::Plain,
    )
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

    assert_eq!(a.unshare("team", &b_key.id).unwrap(), Some(0));
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

/// An unsigned entry of an unknown volume with a payload of `payload` bytes (held entries are
/// not checked before their record arrives).
fn unknown_volume_entry(volume: u8, payload: usize) -> Entry {
    Entry {
        id: EntryId::random(),
        volume: VolumeId([volume; 16]),
        hlc: crate::util::hlc::Hlc(1),
        author: UserId([1; 32]),
        origin: 1,
        deleted: false,
        purge: false,
        seen: vec![(1, crate::util::hlc::Hlc(1))],
        chunks: vec![],
        payload: vec![0; payload],
        signature: [0; 64],
    }
}

/// Held entries stay within a peer's share and the total, whoever sends them and however many;
/// the oldest go first and every drop is counted; what stays is what was sent last.
#[test]
fn held_entries_are_bounded_per_peer_and_in_all() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let rogue = Some(libp2p::PeerId::random());
    let mib = 1 << 20;
    let sent: Vec<Entry> = (0..40).map(|_| unknown_volume_entry(7, mib)).collect();
    for batch in sent.chunks(4) {
        a.apply_from(rogue, batch.to_vec()).unwrap();
    }
    let s = a.held_status();
    assert!(s.bytes as usize <= HELD_BYTES_PER_PEER, "{s:?}");
    assert!(s.entries >= 6 && s.dropped == 40 - s.entries, "{s:?}");
    let kept = a
        .held
        .lock()
        .queue
        .iter()
        .map(|h| h.entry.id)
        .collect::<Vec<_>>();
    let newest: Vec<EntryId> = sent[40 - kept.len()..].iter().map(|e| e.id).collect();
    assert_eq!(kept, newest, "the oldest are dropped");
    // One entry over a peer's share is dropped alone.
    a.apply_from(rogue, vec![unknown_volume_entry(7, HELD_BYTES_PER_PEER)])
        .unwrap();
    assert_eq!(a.held_status().dropped, s.dropped + 1);
    // Many peers: the total holds.
    for _ in 0..20 {
        let peer = Some(libp2p::PeerId::random());
        let batch: Vec<Entry> = (0..8)
            .map(|_| unknown_volume_entry(8, mib - 4096))
            .collect();
        a.apply_from(peer, batch).unwrap();
        assert!(a.held_status().bytes as usize <= HELD_BYTES);
    }
    let s = a.held_status();
    assert!(s.bytes as usize > HELD_BYTES - 2 * mib, "{s:?}");
    // Small entries: the count holds.
    a.apply_from(
        None,
        (0..5000).map(|_| unknown_volume_entry(9, 10)).collect(),
    )
    .unwrap();
    assert!(a.held_status().entries as usize <= MAX_HELD);
}

/// Entries from a peer whose names a local create refuses are refused, never stored or shown;
/// the directory lists.
#[test]
fn peer_entries_with_invalid_names_are_refused() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, _) = net.mount("b", 2);
    write(&a, ROOT_INO, "good", b"x").unwrap();
    exchange(&[&a, &b]);
    let network = Volume::for_network(&NetworkKey([9; 32]));
    let signer = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let sealer = EntrySealer {
        volume: network.id,
        payload_key: network.payload_key(),
        signer: &signer,
        origin: 77,
    };
    let bad: Vec<Entry> = [&b""[..], b".", b"..", &[b'a'; 256][..]]
        .iter()
        .map(|name| {
            let meta = EntryMeta::new_empty(
                network.root_id(),
                name.to_vec(),
                EntryKind::File,
                0o644,
                (0, 0),
                Timestamp::now(),
            );
            sealer.seal(EntryId::random(), crate::util::hlc::Hlc(5), &[], &meta)
        })
        .collect();
    let before = b.stats().rejected_entries;
    let report = b.apply_remote(bad.clone()).unwrap();
    assert_eq!((report.applied, report.rejected), (0, bad.len()));
    assert_eq!(b.stats().rejected_entries, before + bad.len());
    for e in &bad {
        assert!(b.namespace().get(&e.key()).unwrap().is_none());
    }
    assert_eq!(names(&b, ROOT_INO), vec!["@home", "good"]);
}

/// Taking a volume's held entries gives back exactly those, and their bytes to their senders.
#[test]
fn held_entries_of_a_volume_are_taken_with_their_accounting() {
    let mut held = Held::default();
    let (p, q) = (
        Some(libp2p::PeerId::random()),
        Some(libp2p::PeerId::random()),
    );
    let a: Vec<Entry> = (0..3).map(|_| unknown_volume_entry(1, 1000)).collect();
    let b: Vec<Entry> = (0..2).map(|_| unknown_volume_entry(2, 1000)).collect();
    for (i, e) in a.iter().chain(&b).enumerate() {
        held.push(e.clone(), if i % 2 == 0 { p } else { q });
    }
    assert_eq!(held.take(&VolumeId([1; 16])), a);
    assert_eq!(held.status().entries, 2);
    let left: usize = held.by_source.values().sum();
    assert_eq!(left, held.bytes);
    assert_eq!(held.bytes, b.iter().map(held_size).sum::<usize>());
    assert_eq!(held.take(&VolumeId([2; 16])), b);
    assert!(held.by_source.is_empty() && held.bytes == 0);
}

#[test]
fn a_record_whose_removals_did_not_change_costs_no_scan() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let (c, c_key) = net.mount("c", 3);
    let (_e, e_key) = net.mount("e", 5);
    let team = a.create_volume("team").unwrap();
    a.share("team", &b_key, false).unwrap();
    a.share("team", &c_key, true).unwrap();
    exchange(&[&a, &b, &c]);
    write(&b, vol(&b, "@team").unwrap(), "b.txt", b"the writer's").unwrap();
    exchange(&[&a, &b, &c]);
    assert_eq!(a.unshare("team", &b_key.id).unwrap(), Some(0));
    let before = c.namespace().version_scans();
    exchange(&[&a, &c]);
    let after_removal = c.namespace().version_scans();
    assert!(after_removal > before, "a new removal is looked for");
    // The same record taken again (sent again by any member), and a newer one that changes
    // only the members: no scan of the store.
    let record = c
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .into_iter()
        .find(|e| VolumeRecord::is_record(e) && e.volume.to_string() == team.id)
        .unwrap();
    c.take_record(&record).unwrap();
    c.take_record(&record).unwrap();
    a.share("team", &e_key, true).unwrap();
    exchange(&[&a, &c]);
    assert_eq!(volume_of(&c, &team.id).members.len(), 3);
    assert_eq!(c.namespace().version_scans(), after_removal);
    // The removal still holds there: B's write was kept.
    let root = vol(&c, "@team").unwrap();
    assert_eq!(names(&c, root), vec!["b.txt"]);
}

#[test]
fn a_removal_keeps_live_versions_before_tombstones() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (b, b_key) = net.mount("b", 2);
    let team = a.create_volume("team").unwrap();
    a.share("team", &b_key, false).unwrap();
    exchange(&[&a, &b]);
    let root = vol(&b, "@team").unwrap();
    for i in 0..6 {
        write(&b, root, &format!("gone{i}"), b"deleted").unwrap();
        b.unlink(root, format!("gone{i}").as_bytes()).unwrap();
        write(&b, root, &format!("kept{i}"), b"live").unwrap();
    }
    exchange(&[&a, &b]);
    let id = volume_of(&a, &team.id).id;
    let deleted: HashMap<_, _> = a
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.volume == id && e.author == b_key.id)
        .map(|e| (e.version_hash(), e.deleted))
        .collect();
    let held: Vec<bool> = a
        .held_versions(&id, &b_key.id)
        .unwrap()
        .iter()
        .map(|h| deleted[h])
        .collect();
    // Every live version first, then every tombstone.
    assert_eq!(held.iter().filter(|d| **d).count(), 6);
    assert!(held.is_sorted(), "{held:?}");
}

/// Unix seconds now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn entries_an_expelled_node_writes_after_its_revocation_are_refused() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (x, _) = net.mount("x", 7);
    let (y, _) = net.mount("y", 8);
    write(&x, ROOT_INO, "early", b"before the expulsion").unwrap();
    // x is expelled at `at`; its clock (and y's) then runs past it.
    let at = now_secs() + 1;
    let after = Hlc(((at + 1) * 1000) << 16);
    x.network.clock.observe(after);
    y.network.clock.observe(after);
    write(&x, ROOT_INO, "late", b"after the expulsion").unwrap();
    write(&y, ROOT_INO, "other", b"a member's").unwrap();
    a.refuse_node_after(7, at);
    let from_x = x.namespace().load_all().unwrap().entries;
    let report = a.apply_remote(from_x).unwrap();
    assert!(report.rejected >= 1, "{report:?}");
    exchange(&[&a, &y]);
    // What x wrote before stays; what it wrote after is refused; others' writes are not.
    assert_eq!(names(&a, ROOT_INO), vec!["@home", "early", "other"]);
    // Arriving again (sync, gossip relayed by another member) changes nothing.
    exchange(&[&a, &x, &y]);
    assert_eq!(names(&a, ROOT_INO), vec!["@home", "early", "other"]);
}

#[test]
fn a_file_written_after_a_network_key_rotation_needs_the_new_key() {
    let net = Net::new();
    let (a, _) = net.mount("a", 1);
    let (kept_old, _) = net.mount("old", 2);
    let (member, _) = net.mount("member", 3);
    let before = write(&a, ROOT_INO, "before", b"written under the founding key").unwrap();
    let epoch = [42u8; 32];
    assert!(a.set_network_epochs(&[epoch]).unwrap());
    assert!(!a.set_network_epochs(&[epoch]).unwrap(), "no change");
    assert!(member.set_network_epochs(&[epoch]).unwrap());
    write(&a, ROOT_INO, "after", b"written after the rotation").unwrap();
    // Old files stay readable where the new key is.
    assert_eq!(read(&a, before), b"written under the founding key");
    exchange(&[&a, &kept_old, &member]);
    // With only the old key (what an expelled node kept), the new file does not open.
    assert_eq!(names(&kept_old, ROOT_INO), vec!["@home", "before"]);
    let old_only = Volume::for_network(&NetworkKey([9; 32]));
    let after_entry = a
        .namespace()
        .load_all()
        .unwrap()
        .entries
        .into_iter()
        .find(|e| {
            a.network
                .volume
                .read()
                .open_entry(e)
                .is_ok_and(|m| m.name == b"after")
        })
        .expect("the new file's entry");
    assert!(old_only.open_entry(&after_entry).is_err());
    // A member with the new key reads both.
    assert_eq!(names(&member, ROOT_INO), vec!["@home", "after", "before"]);
    let ino = member.lookup(ROOT_INO, b"after").unwrap().ino;
    assert_eq!(read(&member, ino), b"written after the rotation");
    // Given the key later, the old-key node sees the file (entries it held but could not open).
    assert!(kept_old.set_network_epochs(&[epoch]).unwrap());
    assert_eq!(names(&kept_old, ROOT_INO), vec!["@home", "after", "before"]);
}
