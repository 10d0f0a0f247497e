//! Fills a node's namespace with many entries, fast, for namespace-at-scale measurements
//! (`bench/namespace`). Creating a million files through FUSE takes an hour (each create is
//! one durable commit); this writes the same entries a real `mkdir`/`touch` would, in large
//! batches.
//!
//! What it writes, into a data dir made by `p2pfs init` (the node must not be running):
//! - first, exactly what the node does on its first start (`Mount::load`: the network
//!   volume's root and the user's personal volume record), unless already there;
//! - DIRS directories `d000`, `d001`, ... in the network volume's root, each holding FILES
//!   empty regular files `file-0000000.txt`, ... (0-byte files are real files: no chunk is
//!   referenced, so there is no chunk data to fake);
//! - a last version of each directory and of the root (the mtime a real create leaves on its
//!   parent).
//!
//! Every entry is what `FsCore::create_node` seals: a random id, the node's origin tag (from
//! its peer id, as `p2pfs run` derives it), a clock from an `HlcClock`, the user's signing key,
//! the network volume's payload key, mode 0644 (0755 for directories), uid/gid of the filler
//! (root in the bench), one `seen` pair. They are committed with `NamespaceStore::commit`,
//! BATCH entries per transaction, sealed on THREADS threads.
//!
//! Usage: cargo run --release --example namespace_fill -- --data-dir D [--dirs 100]
//!        [--files 10000] [--batch 20000] [--threads 2]
//! `--measure` (alone with --data-dir) times the load into a tree, digest and a paged pass
//! instead, with the memory each takes.
//! Prints one line of JSON: new entries (directories and files), seconds, the encoded size
//! of a file entry, and the store's entry count (these plus the root and volume records).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use p2pfs::block::ChunkStore;
use p2pfs::fs::{Mount, MountParts};
use p2pfs::identity::{NODE_KEY_FILE, NetworkKey, NodeIdentity, USER_KEY_FILE, UserIdentity};
use p2pfs::namespace::entry::EntrySealer;
use p2pfs::namespace::{Entry, EntryId, EntryKind, EntryMeta, NamespaceStore, Timestamp, Volume};
use p2pfs::node::config::Config;
use p2pfs::node::{CHUNKS_DIR, NAMESPACE_FILE};
use p2pfs::util::hlc::HlcClock;

struct Args {
    data_dir: PathBuf,
    dirs: usize,
    files: usize,
    batch: usize,
    threads: usize,
    measure: bool,
}

fn parse() -> Args {
    let mut a = Args {
        data_dir: PathBuf::new(),
        dirs: 100,
        files: 10_000,
        batch: 20_000,
        threads: 2,
        measure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--measure" {
            a.measure = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        let n = || {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("{k}: not a number"))
        };
        match k.as_str() {
            "--data-dir" => a.data_dir = PathBuf::from(&v),
            "--dirs" => a.dirs = n(),
            "--files" => a.files = n(),
            "--batch" => a.batch = n().max(1),
            "--threads" => a.threads = n().max(1),
            _ => panic!("unknown option {k}"),
        }
    }
    assert!(!a.data_dir.as_os_str().is_empty(), "--data-dir is required");
    a
}

fn meta(parent: EntryId, name: String, kind: EntryKind, now: Timestamp) -> EntryMeta {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
    EntryMeta::new_empty(parent, name.into_bytes(), kind, mode, (uid, gid), now)
}

/// This process's resident set, MiB (from /proc/self/status).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `--measure`: times, on the stopped node's store, what a node does with the whole
/// namespace: the load at start (entries decoded one at a time into the network volume's
/// in-memory `Tree`, as `Mount::load` does), one anti-entropy digest (both sides of every
/// session compute one), and one pass over every bucket in pages (`bucket_entries`, what a
/// joining node pulls). Also where a node's memory goes: RSS after the tree is built (redb's
/// page cache + the tree), and, for comparison, after decoding the whole store into one
/// `Vec<Entry>` (`load_all`, what the load did before); and the sizes of the structures.
fn measure(store: &NamespaceStore, network_key: &NetworkKey) -> anyhow::Result<()> {
    use p2pfs::fs::tree::{Node, Tree};
    let rss_open = rss_mib();
    let t = Instant::now();
    let volume = Volume::for_network(network_key);
    let mut tree = Tree::new(volume.root_id());
    let mut n = 0usize;
    store.for_each_entry(|e| {
        n += 1;
        if e.volume == volume.id
            && !e.deleted
            && let Ok(meta) = volume.open_entry(&e)
        {
            tree.upsert(&e, meta);
        }
    })?;
    let tree_secs = t.elapsed().as_secs_f64();
    let rss_tree = rss_mib();
    let t = Instant::now();
    let loaded = store.load_all()?;
    let load_all = t.elapsed().as_secs_f64();
    let rss_loaded = rss_mib();
    drop(loaded);
    let t = Instant::now();
    let _ = store.digest()?;
    let digest = t.elapsed().as_secs_f64();
    let rss_digest = rss_mib();
    let t = Instant::now();
    let mut paged = 0;
    for bucket in 0..=255u8 {
        let mut after = None;
        loop {
            let page = store.bucket_entries(bucket, after, 512)?;
            paged += page.len();
            after = page.last().map(|e| e.key());
            if page.len() < 512 {
                break;
            }
        }
    }
    let pages = t.elapsed().as_secs_f64();
    println!(
        "{{\"entries\":{n},\"tree_nodes\":{},\"load_secs\":{tree_secs:.3},\"load_all_secs\":{load_all:.3},\"digest_secs\":{digest:.3},\"bucket_pages_secs\":{pages:.3},\"paged\":{paged},\"rss_open_mib\":{rss_open:.1},\"rss_with_tree_mib\":{rss_tree:.1},\"rss_plus_load_all_mib\":{rss_loaded:.1},\"rss_after_digest_mib\":{rss_digest:.1},\"size_of_entry\":{},\"size_of_node\":{},\"size_of_meta\":{}}}",
        tree.len(),
        std::mem::size_of::<Entry>(),
        std::mem::size_of::<Node>(),
        std::mem::size_of::<EntryMeta>(),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse();
    let dir = &args.data_dir;
    if args.measure {
        let config = Config::load(dir)?;
        let network_key = NetworkKey::load(&config.network_key_path(dir))?;
        return measure(
            &NamespaceStore::open(&dir.join(NAMESPACE_FILE))?,
            &network_key,
        );
    }
    let config = Config::load(dir)?;
    let network_key = NetworkKey::load(&config.network_key_path(dir))?;
    let node_id = NodeIdentity::load(&dir.join(NODE_KEY_FILE))?;
    // As `Node::run` derives it.
    let origin = u64::from_le_bytes(
        blake3::hash(&node_id.peer_id().to_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let store = NamespaceStore::open(&dir.join(NAMESPACE_FILE))?;
    let chunks = Arc::new(ChunkStore::open(&dir.join(CHUNKS_DIR))?);

    // What the node does at its first start: the root of the network volume, the user's
    // personal volume record.
    {
        let s = &config.storage;
        let mount = Mount::load(MountParts {
            network: Volume::for_network(&network_key),
            user: UserIdentity::load(&dir.join(USER_KEY_FILE))?,
            origin,
            namespace: store.clone(),
            chunks,
            remote: None,
            publish: None,
            chunk_size: s.chunk_size,
            cache_bytes: 1 << 20,
            write_buffer_bytes: s.write_buffer_bytes,
            seal_threads: 1,
            read_ahead_chunks: 16,
            data_dir: dir.clone(),
        })?;
        mount.shutdown();
    }

    let user = UserIdentity::load(&dir.join(USER_KEY_FILE))?;
    let volume = Volume::for_network(&network_key);
    let root_id = volume.root_id();
    let root = store
        .get(&p2pfs::namespace::EntryKey {
            id: root_id,
            volume: volume.id,
        })?
        .ok_or_else(|| anyhow::anyhow!("no root entry after the first load"))?;
    let root_meta = volume.open_entry(&root)?;
    let clock = HlcClock::new();
    for (_, e) in store.displaced()? {
        clock.observe(e.hlc);
    }
    clock.observe(root.hlc);
    let sealer = EntrySealer {
        volume: volume.id,
        payload_key: volume.payload_key(),
        signer: &user.signing,
        origin,
    };

    let start = Instant::now();
    let now = Timestamp::now();
    let dir_ids: Vec<EntryId> = (0..args.dirs).map(|_| EntryId::random()).collect();
    // Directories first (their first version), then the files, then the directories' and
    // the root's last version.
    let first: Vec<Entry> = dir_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let m = meta(root_id, format!("d{i:03}"), EntryKind::Dir, now);
            sealer.seal(*id, clock.now(), &[], &m)
        })
        .collect();
    store.commit(&first)?;

    let total = args.dirs * args.files;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(2 * args.threads);
    let mut sample_len = 0;
    let mut written = first.len();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let batches = total.div_ceil(args.batch);
        for t in 0..args.threads {
            let tx = tx.clone();
            let (sealer, clock, dir_ids, args) = (&sealer, &clock, &dir_ids, &args);
            s.spawn(move || {
                for b in (t..batches).step_by(args.threads) {
                    let lo = b * args.batch;
                    let hi = (lo + args.batch).min(total);
                    let entries: Vec<Entry> = (lo..hi)
                        .map(|k| {
                            let (d, f) = (k / args.files, k % args.files);
                            let m = meta(
                                dir_ids[d],
                                format!("file-{f:07}.txt"),
                                EntryKind::File,
                                Timestamp::now(),
                            );
                            sealer.seal(EntryId::random(), clock.now(), &[], &m)
                        })
                        .collect();
                    if tx.send(entries).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut last_report = Instant::now();
        for entries in rx {
            if sample_len == 0 {
                sample_len = entries[0].to_bytes().len();
            }
            let c = store.commit(&entries)?;
            anyhow::ensure!(
                c.applied.len() == entries.len(),
                "a new entry was not applied"
            );
            written += entries.len();
            if last_report.elapsed().as_secs() >= 10 {
                eprintln!(
                    "[namespace_fill] {written} entries, {:.0}/s",
                    written as f64 / start.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        Ok(())
    })?;

    let now = Timestamp::now();
    let mut last: Vec<Entry> = dir_ids
        .iter()
        .zip(&first)
        .enumerate()
        .map(|(i, (id, e))| {
            let m = meta(root_id, format!("d{i:03}"), EntryKind::Dir, now);
            sealer.seal(*id, clock.now(), &e.seen, &m)
        })
        .collect();
    let touched = EntryMeta {
        mtime: now,
        ctime: now,
        ..root_meta
    };
    last.push(sealer.seal(root_id, clock.now(), &root.seen, &touched));
    let c = store.commit(&last)?;
    anyhow::ensure!(
        c.applied.len() == last.len(),
        "a directory version was not applied"
    );
    println!(
        "{{\"entries_written\":{written},\"dirs\":{},\"files_per_dir\":{},\"seconds\":{:.2},\"entry_bytes\":{sample_len},\"store_entries\":{}}}",
        args.dirs,
        args.files,
        start.elapsed().as_secs_f64(),
        store.len()?
    );
    Ok(())
}
