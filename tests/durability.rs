//! Durability, crash consistency, at-rest secrecy, corruption detection,
//! full-disk behaviour and `init` semantics. Needs root.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------
// helpers

#[derive(Debug, PartialEq, Eq, Clone)]
enum Entry {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime: (i64, i64),
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Complete description of the tree below `root` (type, mode, owner, size,
/// mtime, content, symlink target).
fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let e = if md.file_type().is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&p).unwrap(),
            }
        } else if md.is_dir() {
            Entry::Dir {
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            }
        } else {
            Entry::File {
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: md.len(),
                mtime: (md.mtime(), md.mtime_nsec()),
                data: fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
            }
        };
        out.insert(rel, e);
    }
    out
}

#[track_caller]
fn assert_same_tree(what: &str, got: &BTreeMap<PathBuf, Entry>, want: &BTreeMap<PathBuf, Entry>) {
    let gk: Vec<_> = got.keys().collect();
    let wk: Vec<_> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: set of paths differs");
    for (k, w) in want {
        let g = &got[k];
        if g != w {
            // avoid dumping megabytes of content
            let short = |e: &Entry| match e {
                Entry::File {
                    mode,
                    uid,
                    gid,
                    size,
                    mtime,
                    data,
                } => format!(
                    "File {{ mode: {mode:o}, uid: {uid}, gid: {gid}, size: {size}, mtime: {mtime:?}, blake3-ish len {} }}",
                    data.len()
                ),
                other => format!("{other:?}"),
            };
            panic!(
                "{what}: {} differs:\n got  {}\n want {}",
                k.display(),
                short(g),
                short(w)
            );
        }
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file below `dir` (recursive, not following symlinks).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            fs::symlink_metadata(p)
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect()
}

/// All chunk files (DIR/chunks/**) with their sizes.
fn chunk_files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let chunks = dir.join("chunks");
    if !chunks.exists() {
        return BTreeMap::new();
    }
    files_below(&chunks)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------

#[test]
fn persistence_across_clean_restart() {
    let mut n = Node::init();
    n.set_chunk_size(65536);
    n.start();
    n.sh_ok("mkdir -p a/b/c empty && chmod 750 a && chmod 700 a/b && chmod 1777 empty");
    fs::write(n.p("zero"), b"").unwrap();
    fs::write(n.p("one"), b"1").unwrap();
    fs::write(n.p("a/exact"), random_bytes(10, 65536)).unwrap();
    fs::write(n.p("a/plus1"), random_bytes(11, 65537)).unwrap();
    fs::write(n.p("a/b/big"), random_bytes(12, MIB + 3)).unwrap();
    fs::write(n.p("a/b/c/text.txt"), b"some text\nwith lines\n").unwrap();
    n.sh_ok("chmod 600 zero && chmod 755 one && chmod 444 a/exact && chmod 640 a/plus1");
    n.sh_ok("ln -s a/b/c/text.txt rel && ln -s /etc/passwd abs && ln -s missing dangling && ln -s ../.. a/b/up");
    n.sh_ok("touch -m -d @1234567890 a/b/c/text.txt && chown 65534:65534 a/plus1");
    n.sh_ok("truncate -s 200000 sparse && printf end >> sparse");
    let before = describe(&n.mnt);
    assert!(
        before.len() >= 15,
        "{:?}",
        before.keys().collect::<Vec<_>>()
    );

    n.stop();
    n.start();
    assert_same_tree("after first restart", &describe(&n.mnt), &before);

    // modify after a restart, restart again
    n.sh_ok("printf more >> a/b/c/text.txt && rm one && mv a/plus1 a/b/moved && mkdir new && printf n > new/f");
    n.sh_ok("truncate -s 10 a/b/big");
    let before2 = describe(&n.mnt);
    n.stop();
    n.start();
    assert_same_tree("after second restart", &describe(&n.mnt), &before2);
    assert_file_eq(&n.p("a/b/c/text.txt"), b"some text\nwith lines\nmore");
    assert!(!n.p("one").exists());
    n.stop();
    // a third, idle restart changes nothing
    n.start();
    assert_same_tree("after idle restart", &describe(&n.mnt), &before2);
    n.stop();
}

/// A service manager may stop the node right after the mount appears: the
/// signal must still unmount cleanly and exit 0 (signal handling has to be in
/// place before the mount is visible).
#[test]
fn sigterm_right_after_mount_exits_cleanly() {
    let mut n = Node::init();
    for i in 0..25 {
        n.start_with(Duration::ZERO, false);
        let st = if i % 2 == 0 { "SIGTERM" } else { "SIGINT" };
        eprintln!("round {i}: {st}");
        if i % 2 == 0 {
            n.stop();
        } else {
            n.stop_sigint();
        }
    }
}

#[test]
fn sigint_stops_cleanly_and_keeps_data() {
    let mut n = Node::init();
    n.start();
    fs::write(n.p("f"), b"kept").unwrap();
    n.stop_sigint();
    n.start();
    assert_file_eq(&n.p("f"), b"kept");
    n.stop();
}

#[test]
fn crash_during_large_copy_loses_only_that_file() {
    let mut n = Node::init();
    n.start();
    // Files written and closed before the crash.
    n.sh_ok("mkdir -p keep/sub");
    let mut expected: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    expected.insert("keep/a.txt", b"small file a\n".to_vec());
    expected.insert("keep/b.bin", random_bytes(20, 3 * MIB + 5));
    expected.insert("keep/sub/c.bin", random_bytes(21, 1536 * 1024));
    expected.insert("keep/empty", Vec::new());
    expected.insert("top.bin", random_bytes(22, 700_000));
    for (p, d) in &expected {
        write_and_close(&n.p(p), d).unwrap();
    }
    n.sh_ok("ln -s keep/a.txt keep-link && chmod 600 keep/a.txt");
    let old_target = random_bytes(23, 2 * MIB + 1);
    write_and_close(&n.p("target.bin"), &old_target).unwrap();
    let before = describe(&n.mnt.join("keep"));

    // A 200 MiB random source file, local.
    let src = n.scratch().join("big.src");
    let out = run_cmd(
        Command::new("sh").arg("-c").arg(format!(
            "head -c 209715200 /dev/urandom > '{}'",
            src.display()
        )),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(fs::metadata(&src).unwrap().len(), 209715200);
    let new_content_len = 209715200u64;

    // Start the copy in the background and kill -9 the node mid-copy.
    let mut cp = ChildGuard(Some(
        Command::new("cp")
            .arg(&src)
            .arg(n.p("target.bin"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let cp_pid = cp.id();
    let wchar = || -> u64 {
        fs::read_to_string(format!("/proc/{cp_pid}/io"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("wchar:"))
                    .and_then(|l| l[6..].trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let mut finished_early = None;
    let reached = wait_until(Duration::from_secs(300), || {
        if let Some(st) = cp.try_wait() {
            finished_early = Some(st);
            return true;
        }
        wchar() >= 40 * MIB as u64
    });
    assert!(
        reached,
        "cp made no progress (wrote {} bytes); log:\n{}",
        wchar(),
        n.log_text()
    );
    assert!(
        finished_early.is_none(),
        "cp finished ({:?}) before it could be interrupted; log:\n{}",
        finished_early,
        n.log_text()
    );
    let written = wchar();
    n.kill9();
    let st = cp.wait_timeout(Duration::from_secs(60));
    assert!(st.is_some(), "cp did not end after the node was killed");
    eprintln!("killed node after cp wrote {written} bytes; cp exited with {st:?}");
    drop(cp);
    n.cleanup_dead_mount();

    n.start();
    // every earlier file intact
    for (p, d) in &expected {
        assert_file_eq(&n.p(p), d);
    }
    assert_same_tree("keep/ after crash", &describe(&n.mnt.join("keep")), &before);
    assert_eq!(
        fs::read_link(n.p("keep-link")).unwrap(),
        PathBuf::from("keep/a.txt")
    );
    // the interrupted file: absent, empty, the old version, or (never
    // expected here) the complete new version; never anything else
    match fs::read(n.p("target.bin")) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => eprintln!("interrupted file: absent"),
        Err(e) => panic!(
            "reading the interrupted file failed: {e:?}; log:\n{}",
            n.log_text()
        ),
        Ok(d) if d.is_empty() => eprintln!("interrupted file: empty"),
        Ok(d) if d == old_target => eprintln!("interrupted file: old version"),
        Ok(d) if d.len() as u64 == new_content_len && d == fs::read(&src).unwrap() => {
            eprintln!("interrupted file: complete new version")
        }
        Ok(d) => {
            let src_data = fs::read(&src).unwrap();
            let prefix = src_data.starts_with(&d);
            panic!(
                "interrupted file is garbage: {} bytes (old version {} bytes, new {} bytes; is a prefix of the new content: {prefix})",
                d.len(),
                old_target.len(),
                new_content_len
            );
        }
    }
    // the filesystem is fully usable again
    write_and_close(&n.p("after.txt"), b"after crash").unwrap();
    assert_file_eq(&n.p("after.txt"), b"after crash");
    fs::remove_file(n.p("keep/b.bin")).unwrap();
    n.stop();
    n.start();
    assert_file_eq(&n.p("after.txt"), b"after crash");
    assert!(!n.p("keep/b.bin").exists());
    n.stop();
}

const CONTENT_MARKER: &str = "CLEARTEXT-CONTENT-MARKER-9f27c4d1";
const BIG_MARKER: &str = "REPEATED-MARKER-TEXT-5ab3e7-";
const DIR_MARKER: &str = "SecretDirName-Q8ZKV3";
const FILE_MARKER: &str = "secret-file-name-W4VJ6H";
const SYMLINK_MARKER: &str = "SYMLINK-TARGET-H2XPR7";

#[test]
fn no_clear_text_at_rest() {
    let mut n = Node::init();
    n.set_chunk_size(65536);
    n.start();
    let dir = n.p(DIR_MARKER);
    fs::create_dir(&dir).unwrap();
    fs::create_dir(dir.join(format!("nested-{DIR_MARKER}-2"))).unwrap();
    fs::write(
        dir.join(format!("{FILE_MARKER}.txt")),
        format!("hello {CONTENT_MARKER} bye\n"),
    )
    .unwrap();
    fs::write(n.p(FILE_MARKER), CONTENT_MARKER).unwrap();
    // incompressible, non-dedupable content with the marker in the middle
    let mut random = random_bytes(40, MIB);
    random[MIB / 2..MIB / 2 + CONTENT_MARKER.len()].copy_from_slice(CONTENT_MARKER.as_bytes());
    fs::write(n.p("random.bin"), &random).unwrap();
    // a larger, highly repetitive file (several chunks of identical text)
    let big = BIG_MARKER.repeat(3 * MIB / BIG_MARKER.len());
    fs::write(dir.join("big.txt"), &big).unwrap();
    std::os::unix::fs::symlink(SYMLINK_MARKER, n.p("link")).unwrap();
    // renames leave old names behind in some designs
    fs::write(n.p(&format!("renamed-away-{FILE_MARKER}")), b"x").unwrap();
    fs::rename(n.p(&format!("renamed-away-{FILE_MARKER}")), n.p("plain")).unwrap();
    assert_file_eq(&dir.join("big.txt"), big.as_bytes());
    n.stop();

    let markers: Vec<(&str, &str)> = vec![
        ("file content", CONTENT_MARKER),
        ("repeated file content", BIG_MARKER),
        ("directory name", DIR_MARKER),
        ("file name", FILE_MARKER),
        ("symlink target", SYMLINK_MARKER),
    ];
    let mut leaks = Vec::new();
    let mut scanned = 0u64;
    let mut targets = files_below(&n.dir);
    targets.push(n.log.clone());
    targets.push(n.stdout_log.clone());
    for p in &targets {
        let data = fs::read(p).unwrap_or_default();
        scanned += data.len() as u64;
        let lower = data.to_ascii_lowercase();
        for (what, m) in &markers {
            if find_all(&data, m.as_bytes()) || find_all(&lower, m.to_ascii_lowercase().as_bytes())
            {
                leaks.push(format!("{what} {m:?} found in {}", p.display()));
            }
        }
        let pname = p.to_string_lossy().to_ascii_lowercase();
        for (what, m) in &markers {
            if pname.contains(&m.to_ascii_lowercase()) {
                leaks.push(format!("{what} {m:?} appears in the path {}", p.display()));
            }
        }
    }
    // directory names under DIR too
    for p in walk(&n.dir) {
        let pname = p.to_string_lossy().to_ascii_lowercase();
        for (what, m) in &markers {
            if pname.contains(&m.to_ascii_lowercase()) {
                leaks.push(format!("{what} {m:?} appears in the path {}", p.display()));
            }
        }
    }
    leaks.sort();
    leaks.dedup();
    assert!(
        leaks.is_empty(),
        "clear text at rest:\n{}",
        leaks.join("\n")
    );
    // the content has to be stored somewhere: sanity-check the scan itself
    // (the 1 MiB random file cannot be compressed or deduplicated away)
    assert!(
        scanned > MIB as u64,
        "scanned only {scanned} bytes under the data dir"
    );

    // and the data is still readable after the scan
    n.start();
    assert_file_eq(&n.p(FILE_MARKER), CONTENT_MARKER.as_bytes());
    assert_file_eq(&n.p(DIR_MARKER).join("big.txt"), big.as_bytes());
    assert_file_eq(&n.p("random.bin"), &random);
    n.stop();
}

#[test]
fn corrupted_chunk_gives_eio_and_is_logged() {
    let mut n = Node::init();
    n.set_chunk_size(65536);
    n.start();
    let other = random_bytes(30, 100_000);
    write_and_close(&n.p("other.bin"), &other).unwrap();
    n.stop();
    let chunks_before = chunk_files(&n.dir);

    n.start();
    let victim = random_bytes(31, 4 * 65536);
    write_and_close(&n.p("victim.bin"), &victim).unwrap();
    assert_file_eq(&n.p("victim.bin"), &victim);
    n.stop();
    let chunks_after = chunk_files(&n.dir);
    let mut new_data_chunks: Vec<(&PathBuf, &u64)> = chunks_after
        .iter()
        .filter(|(p, len)| !chunks_before.contains_key(*p) && **len >= 65536)
        .collect();
    new_data_chunks.sort();
    assert!(
        !new_data_chunks.is_empty(),
        "no new chunk file of >= 64 KiB under {}/chunks after writing a 256 KiB file; chunks: {:?}",
        n.dir.display(),
        chunks_after
    );
    for p in chunks_after.keys() {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            is_hex64(name),
            "chunk file name is not a 64-hex id: {}",
            p.display()
        );
        let rel = p.strip_prefix(n.dir.join("chunks")).unwrap();
        let comps: Vec<_> = rel
            .components()
            .map(|c| c.as_os_str().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            comps.len(),
            3,
            "chunk path layout chunks/xx/yy/id: {}",
            p.display()
        );
        assert_eq!(comps[0], name[0..2], "chunk path prefix: {}", p.display());
        assert_eq!(comps[1], name[2..4], "chunk path prefix: {}", p.display());
    }
    // chunk id = blake3 of the chunk file's bytes (the ciphertext)
    for p in chunks_after.keys() {
        let name = p.file_name().unwrap().to_str().unwrap();
        let h = blake3::hash(&fs::read(p).unwrap()).to_hex().to_string();
        assert_eq!(
            h,
            name.to_ascii_lowercase(),
            "chunk file name is not blake3 of its bytes: {}",
            p.display()
        );
    }
    let (victim_chunk, _) = new_data_chunks[new_data_chunks.len() / 2];
    let chunk_id = victim_chunk
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut bytes = fs::read(victim_chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    // chunk files may be read-only
    let mode = fs::metadata(victim_chunk).unwrap().permissions().mode();
    fs::set_permissions(victim_chunk, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(victim_chunk, &bytes).unwrap();
    fs::set_permissions(victim_chunk, fs::Permissions::from_mode(mode)).unwrap();

    n.start();
    let mut buf = Vec::new();
    let r = File::open(n.p("victim.bin")).and_then(|mut f| f.read_to_end(&mut buf));
    match r {
        Ok(len) => panic!(
            "reading a file with a corrupted chunk succeeded ({len} bytes, equal to the original: {})",
            buf == victim
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "expected EIO, got {e:?}"),
    }
    // the rest of the filesystem still works
    assert_file_eq(&n.p("other.bin"), &other);
    assert!(n.is_running(), "node died after a corrupt chunk");
    let log = String::from_utf8_lossy(&fs::read(&n.log).unwrap()).into_owned();
    assert!(
        log.to_ascii_lowercase().contains(&chunk_id),
        "the log does not name the corrupt chunk {chunk_id}; log:\n{}",
        n.log_text()
    );
    n.stop();
}

#[test]
fn enospc_on_full_disk() {
    let t0 = std::time::Instant::now();
    let mut n = Node::init_on_tmpfs(24);
    n.start();
    eprintln!("{:?} started", t0.elapsed());
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    let mut failure = None;
    for i in 0..100 {
        let name = format!("f{i:03}");
        let data = random_bytes(100 + i as u64, MIB);
        let r = write_and_close(&n.p(&name), &data);
        eprintln!("{:?} {name}: {r:?}", t0.elapsed());
        match r {
            Ok(()) => written.push((name, data)),
            Err(e) => {
                failure = Some((name, data, e));
                break;
            }
        }
    }
    let (fname, fdata, err) = failure.unwrap_or_else(|| {
        panic!(
            "wrote {} MiB to a node on a 24 MiB tmpfs without an error",
            written.len()
        )
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "the write/close that overflows must fail with ENOSPC, got {err:?} (after {} files); log:\n{}",
        written.len(),
        n.log_text()
    );
    assert!(
        written.len() >= 5,
        "only {} MiB fit on a 24 MiB tmpfs",
        written.len()
    );
    assert!(
        n.is_running(),
        "node died on a full disk; log:\n{}",
        n.log_text()
    );
    // earlier files are intact while still running
    for (name, data) in &written {
        assert_file_eq(&n.p(name), data);
    }
    // metadata operations still answer
    fs::metadata(&n.mnt).unwrap();
    let check_overflowed = |n: &Node| match fs::read(n.p(&fname)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => panic!("reading the overflowed file {fname} failed: {e:?}"),
        Ok(d) => assert!(
            fdata.starts_with(&d),
            "the overflowed file {fname} holds {} bytes that are not a prefix of what was written",
            d.len()
        ),
    };
    check_overflowed(&n);
    eprintln!("{:?} checked while running", t0.elapsed());
    n.stop();
    eprintln!("{:?} stopped", t0.elapsed());
    n.start();
    eprintln!("{:?} restarted", t0.elapsed());
    for (name, data) in &written {
        assert_file_eq(&n.p(name), data);
    }
    check_overflowed(&n);
    // freeing space makes the filesystem writable again (after a restart at
    // the latest)
    let _ = fs::remove_file(n.p(&fname));
    for (name, _) in written.iter().take(4) {
        fs::remove_file(n.p(name)).unwrap();
    }
    eprintln!("{:?} removed 4 files", t0.elapsed());
    n.stop();
    n.start();
    eprintln!("{:?} restarted again", t0.elapsed());
    write_and_close(&n.p("small-after"), b"fits again").unwrap_or_else(|e| {
        panic!(
            "writing 10 bytes after deleting 4 MiB failed: {e:?}; log:\n{}",
            n.log_text()
        )
    });
    assert_file_eq(&n.p("small-after"), b"fits again");
    for (name, data) in written.iter().skip(4) {
        assert_file_eq(&n.p(name), data);
    }
    n.stop();
}

#[test]
fn init_creates_private_data_dir_with_defaults() {
    let n = Node::uninit();
    assert!(!n.dir.exists());
    n.init_ok(&[]);
    let md = fs::metadata(&n.dir).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        md.mode() & 0o777,
        0o700,
        "data dir mode is {:o}",
        md.mode() & 0o777
    );
    let cfg = fs::read_to_string(n.config_path()).expect("config.toml");
    assert_eq!(
        toml_get(&cfg, "storage", "chunk_size")
            .as_deref()
            .map(|s| s.replace('_', "")),
        Some("1048576".to_string()),
        "config.toml lacks [storage] chunk_size = 1048576:\n{cfg}"
    );
    // identities + network key: more than just the config
    let files = files_below(&n.dir);
    assert!(files.len() >= 3, "init created only {files:?}");
    // a second init in another dir gives different identities
    let m = Node::uninit();
    m.init_ok(&[]);
    let a: Vec<Vec<u8>> = files_below(&n.dir)
        .iter()
        .filter(|p| !p.ends_with("config.toml"))
        .map(|p| fs::read(p).unwrap())
        .collect();
    let b: Vec<Vec<u8>> = files_below(&m.dir)
        .iter()
        .filter(|p| !p.ends_with("config.toml"))
        .map(|p| fs::read(p).unwrap())
        .collect();
    for x in &a {
        if !x.is_empty() {
            assert!(
                !b.contains(x),
                "two fresh nodes share an identical key/identity file"
            );
        }
    }
}

#[test]
fn init_refuses_to_overwrite_existing_node() {
    let mut n = Node::init();
    n.set_chunk_size(65536);
    n.start();
    fs::write(n.p("data.txt"), b"precious").unwrap();
    n.stop();
    let snap = snapshot_files(&n.dir);
    assert!(!snap.is_empty());
    let out = n.run_init(&[]);
    assert!(
        !out.status.success(),
        "init on an existing node succeeded: {}",
        out_text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(
        err.contains("exist") || err.contains("already") || err.contains("initiali"),
        "init on an existing node gave no clear message: {}",
        out_text(&out)
    );
    assert_eq!(
        snapshot_files(&n.dir),
        snap,
        "init on an existing node changed files (content, mtime or mode)"
    );
    // also with an explicit --network-key
    let key = n.scratch().join("other.key");
    let out = n.run_init(&["--network-key", key.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "init --network-key on an existing node succeeded"
    );
    assert_eq!(
        snapshot_files(&n.dir),
        snap,
        "second refused init changed files"
    );
    // the node still works with its data
    n.start();
    assert_file_eq(&n.p("data.txt"), b"precious");
    n.stop();
}

#[test]
fn network_key_file_created_0600_and_reused() {
    let a = Node::uninit();
    let keydir = a.scratch().join("keys");
    fs::create_dir_all(&keydir).unwrap();
    let key = keydir.join("net.key");
    a.init_ok(&["--network-key", key.to_str().unwrap()]);
    let md = fs::metadata(&key).expect("--network-key FILE was not created");
    assert!(md.is_file());
    assert_eq!(
        md.mode() & 0o777,
        0o600,
        "network key mode {:o}",
        md.mode() & 0o777
    );
    assert!(md.len() > 0, "network key file is empty");
    let key_bytes = fs::read(&key).unwrap();
    let key_mtime = md.modified().unwrap();
    // the key lives in FILE, not (also) in the data dir
    for p in files_below(&a.dir) {
        assert_ne!(
            fs::read(&p).unwrap(),
            key_bytes,
            "the network key was copied into {}",
            p.display()
        );
    }

    // a second node reuses the existing key file without touching it
    let mut b = Node::uninit();
    b.init_ok(&["--network-key", key.to_str().unwrap()]);
    assert_eq!(
        fs::read(&key).unwrap(),
        key_bytes,
        "existing network key file was rewritten"
    );
    assert_eq!(
        fs::metadata(&key).unwrap().modified().unwrap(),
        key_mtime,
        "existing key file's mtime changed"
    );
    assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);

    // a different fresh key file gets a different random key
    let c = Node::uninit();
    let key2 = keydir.join("net2.key");
    c.init_ok(&["--network-key", key2.to_str().unwrap()]);
    assert_ne!(
        fs::read(&key2).unwrap(),
        key_bytes,
        "two fresh network keys are identical"
    );

    // nodes initialised with an external key run
    b.start();
    fs::write(b.p("x"), b"x").unwrap();
    b.stop();
    b.start();
    assert_file_eq(&b.p("x"), b"x");
    b.stop();
}

/// Unmounts a path when dropped (after the guarded process is gone), even on panic.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            unmount(&self.0);
        }
    }
}

/// The README's one-command start: `p2pfs mount MOUNTPOINT` creates a node in the XDG data
/// home on first use, mounts, stops cleanly on SIGTERM, and finds its files again next time.
#[test]
fn one_command_mount_creates_default_node_and_keeps_files() {
    let base = tempfile::tempdir().unwrap();
    let xdg = base.path().join("xdg");
    let mnt = base.path().join("files");
    let _unmount = MountGuard(mnt.clone());
    let start = || {
        let mut child = ChildGuard(Some(
            Command::new(bin())
                .arg("mount")
                .arg(&mnt)
                // Alone on loopback: no traffic beyond this machine.
                .args([
                    "--listen",
                    "/ip4/127.0.0.1/tcp/0",
                    "--no-mdns",
                    "--replicas",
                    "1",
                ])
                .env("XDG_DATA_HOME", &xdg)
                .env_remove("P2PFS_DATA_DIR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        assert!(
            wait_until(START_TIMEOUT, || is_mounted(&mnt)
                || child.try_wait().is_some()),
            "mount did not appear"
        );
        assert!(
            is_mounted(&mnt),
            "p2pfs mount exited: {:?}",
            child.try_wait()
        );
        child
    };
    let stop = |mut child: ChildGuard| {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = child
            .wait_timeout(STOP_TIMEOUT)
            .expect("p2pfs mount did not stop");
        assert!(status.success(), "exit status {status:?}");
        assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
    };

    let child = start();
    let data_dir = xdg.join("p2pfs");
    assert!(
        data_dir.join("config.toml").exists(),
        "no node created in the XDG data home"
    );
    assert_eq!(
        fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    write_and_close(
        &mnt.join("hello.txt"),
        b"hello from the one-command start\n",
    )
    .unwrap();
    stop(child);

    let child = start();
    assert_file_eq(
        &mnt.join("hello.txt"),
        b"hello from the one-command start\n",
    );
    stop(child);
}
