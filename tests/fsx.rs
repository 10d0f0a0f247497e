//! fsx-style randomized test: the same random sequence of file operations is
//! applied to a set of files in the p2pfs mount and in a plain local temp
//! dir, and every result (data read, sizes, errors) is compared.
//!
//! Seed: fixed by default, overridable with P2PFS_FSX_SEED (decimal or 0x
//! hex); number of operations: P2PFS_FSX_OPS (default 10000). The seed is
//! printed at the start and in every failure message.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const CHUNK: u64 = 16384;
const MAX_SIZE: u64 = 400_000;
const DEFAULT_SEED: u64 = 0x5eed_f5c5_2024;
const NAMES: [&str; 7] = ["f0", "f1", "f2", "f3", "d/f4", "d/f5", "d/e/f6"];

struct Fsx {
    seed: u64,
    rng: StdRng,
    data_rng: FastRng,
    mnt: PathBuf,
    local: PathBuf,
    /// idx -> (mount handle, local handle)
    open: BTreeMap<usize, (File, File)>,
    history: VecDeque<String>,
    op_no: usize,
    stats: BTreeMap<&'static str, (usize, std::time::Duration)>,
}

fn read_full_at(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn path_truncate(p: &Path, size: u64) -> io::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    if unsafe { libc::truncate(c.as_ptr(), size as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn err_str<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

impl Fsx {
    fn fail(&self, msg: String) -> ! {
        let hist: Vec<String> = self.history.iter().cloned().collect();
        panic!(
            "fsx FAILED (seed={:#x}, op #{}): {msg}\n(re-run with P2PFS_FSX_SEED={:#x})\nlast operations:\n  {}",
            self.seed,
            self.op_no,
            self.seed,
            hist.join("\n  ")
        );
    }

    fn note(&mut self, s: String) {
        if self.history.len() >= 40 {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {s}", self.op_no));
    }

    fn mp(&self, i: usize) -> PathBuf {
        self.mnt.join(NAMES[i])
    }
    fn lp(&self, i: usize) -> PathBuf {
        self.local.join(NAMES[i])
    }

    /// Both results must agree: both Ok, or both Err with the same errno.
    fn same<T, U>(&self, what: &str, m: &io::Result<T>, l: &io::Result<U>) -> bool {
        match (m, l) {
            (Ok(_), Ok(_)) => true,
            (Err(a), Err(b)) if a.raw_os_error() == b.raw_os_error() => false,
            _ => self.fail(format!(
                "{what}: results differ: mount={} local={}",
                err_str(m),
                err_str(l)
            )),
        }
    }

    fn local_size(&self, i: usize) -> Option<u64> {
        fs::metadata(self.lp(i)).ok().map(|m| m.len())
    }

    /// Ensures idx has an open handle pair. `create`: create if missing.
    /// Returns false if the file does not exist (and create was false).
    fn ensure_open(&mut self, i: usize, create: bool) -> bool {
        if self.open.contains_key(&i) {
            return true;
        }
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(create);
        let m = o.open(self.mp(i));
        let l = o.open(self.lp(i));
        if self.same(&format!("open {}", NAMES[i]), &m, &l) {
            self.open.insert(i, (m.unwrap(), l.unwrap()));
            true
        } else {
            false
        }
    }

    fn close(&mut self, i: usize) {
        if let Some((m, _l)) = self.open.remove(&i)
            && let Err(e) = close_checked(m)
        {
            self.fail(format!("close {} failed: {e:?}", NAMES[i]));
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.open.keys().copied().collect();
        for k in keys {
            self.close(k);
        }
    }

    fn pick_len(&mut self) -> usize {
        match self.rng.gen_range(0..100) {
            0..=19 => self.rng.gen_range(1..=16),
            20..=69 => self.rng.gen_range(1..=4096),
            70..=96 => self.rng.gen_range(4096..=CHUNK as usize),
            // spans two or three chunks
            _ => self.rng.gen_range(CHUNK as usize..=3 * CHUNK as usize),
        }
    }

    fn pick_offset(&mut self, size: u64) -> u64 {
        match self.rng.gen_range(0..100) {
            // around a chunk boundary
            0..=29 => {
                let k = self.rng.gen_range(0..=(size / CHUNK + 1));
                let d: i64 = self.rng.gen_range(-300..=300);
                (k as i64 * CHUNK as i64 + d).max(0) as u64
            }
            // at EOF (append)
            30..=44 => size,
            // beyond EOF
            45..=54 => size + self.rng.gen_range(1..=150_000),
            _ => self.rng.gen_range(0..=size.max(1)),
        }
    }

    fn op_write(&mut self, i: usize) {
        self.ensure_open(i, true);
        let size = self.local_size(i).unwrap_or(0);
        let mut off = self.pick_offset(size);
        let mut len = self.pick_len();
        if off > MAX_SIZE {
            off = self.rng.gen_range(0..MAX_SIZE);
        }
        if off + len as u64 > MAX_SIZE {
            len = (MAX_SIZE - off).max(1) as usize;
        }
        let mut data = vec![0u8; len];
        self.data_rng.fill(&mut data);
        self.note(format!(
            "write {} off={off} len={len} (size {size})",
            NAMES[i]
        ));
        let (m, l) = self.open.get(&i).unwrap();
        let rm = m.write_all_at(&data, off);
        let rl = l.write_all_at(&data, off);
        self.same("write", &rm, &rl);
    }

    fn op_read(&mut self, i: usize) {
        if self.open.contains_key(&i) || self.rng.gen_bool(0.7) {
            if !self.ensure_open(i, false) {
                self.note(format!("read {}: ENOENT", NAMES[i]));
                return;
            }
            let size = self.local_size(i).unwrap_or(0);
            let off = self.pick_offset(size);
            let len = self.pick_len();
            self.note(format!(
                "read {} off={off} len={len} (size {size})",
                NAMES[i]
            ));
            let (m, l) = self.open.get(&i).unwrap();
            let rm = read_full_at(m, off, len);
            let rl = read_full_at(l, off, len);
            if self.same("read", &rm, &rl) {
                let (a, b) = (rm.unwrap(), rl.unwrap());
                if a != b {
                    let first = a.iter().zip(b.iter()).position(|(x, y)| x != y);
                    self.fail(format!(
                        "read {} off={off} len={len}: mount returned {} bytes, local {}; first differing byte at +{:?}",
                        NAMES[i],
                        a.len(),
                        b.len(),
                        first
                    ));
                }
            }
        } else {
            // whole-file read by path (no handle open)
            self.note(format!("read-whole {}", NAMES[i]));
            let rm = fs::read(self.mp(i));
            let rl = fs::read(self.lp(i));
            if self.same("read whole", &rm, &rl) {
                let (a, b) = (rm.unwrap(), rl.unwrap());
                if a != b {
                    let first = a.iter().zip(b.iter()).position(|(x, y)| x != y);
                    self.fail(format!(
                        "whole read {}: mount {} bytes, local {}; first difference at {:?}",
                        NAMES[i],
                        a.len(),
                        b.len(),
                        first
                    ));
                }
            }
        }
    }

    fn op_truncate(&mut self, i: usize) {
        let size = self.local_size(i).unwrap_or(0);
        let new = match self.rng.gen_range(0..10) {
            0 => 0,
            1..=3 => {
                let k = self.rng.gen_range(0..=(MAX_SIZE / CHUNK));
                let d: i64 = self.rng.gen_range(-2..=2);
                (k as i64 * CHUNK as i64 + d).max(0) as u64
            }
            4..=6 => self.rng.gen_range(0..=size), // shrink
            _ => (size + self.rng.gen_range(0..=150_000)).min(MAX_SIZE), // grow
        };
        if self.open.contains_key(&i) {
            self.note(format!("ftruncate {} {size} -> {new}", NAMES[i]));
            let (m, l) = self.open.get(&i).unwrap();
            let rm = m.set_len(new);
            let rl = l.set_len(new);
            self.same("ftruncate", &rm, &rl);
        } else {
            self.note(format!("truncate(path) {} {size} -> {new}", NAMES[i]));
            let rm = path_truncate(&self.mp(i), new);
            let rl = path_truncate(&self.lp(i), new);
            self.same("truncate", &rm, &rl);
        }
    }

    fn op_fsync(&mut self, i: usize) {
        if let Some((m, _)) = self.open.get(&i) {
            let data_only = self.rng.gen_bool(0.3);
            let r = if data_only {
                m.sync_data()
            } else {
                m.sync_all()
            };
            self.note(format!("fsync {} (data_only={data_only})", NAMES[i]));
            if let Err(e) = r {
                self.fail(format!("fsync {} failed: {e:?}", NAMES[i]));
            }
        }
    }

    fn op_stat(&mut self, i: usize) {
        if let Some((m, l)) = self.open.get(&i) {
            let (a, b) = (m.metadata().unwrap().len(), l.metadata().unwrap().len());
            self.note(format!("fstat {}", NAMES[i]));
            if a != b {
                self.fail(format!("fstat {}: size mount={a} local={b}", NAMES[i]));
            }
        } else {
            self.note(format!("stat {}", NAMES[i]));
            let rm = fs::metadata(self.mp(i));
            let rl = fs::metadata(self.lp(i));
            if self.same("stat", &rm, &rl) {
                let (a, b) = (rm.unwrap(), rl.unwrap());
                if a.len() != b.len() || a.is_file() != b.is_file() {
                    self.fail(format!(
                        "stat {}: size mount={} local={}",
                        NAMES[i],
                        a.len(),
                        b.len()
                    ));
                }
            }
        }
    }

    fn op_rename(&mut self, a: usize, b: usize) {
        // The destination's handle (if any) is closed first; the source's
        // handle stays open and follows the file.
        self.close(b);
        self.note(format!(
            "rename {} -> {} (src open: {})",
            NAMES[a],
            NAMES[b],
            self.open.contains_key(&a)
        ));
        let rm = fs::rename(self.mp(a), self.mp(b));
        let rl = fs::rename(self.lp(a), self.lp(b));
        if self.same("rename", &rm, &rl)
            && let Some(h) = self.open.remove(&a)
        {
            self.open.insert(b, h);
        }
    }

    fn op_unlink(&mut self, i: usize) {
        self.close(i);
        self.note(format!("unlink {}", NAMES[i]));
        let rm = fs::remove_file(self.mp(i));
        let rl = fs::remove_file(self.lp(i));
        self.same("unlink", &rm, &rl);
    }

    fn op_create(&mut self, i: usize) {
        self.close(i);
        let excl = self.rng.gen_bool(0.3);
        self.note(format!("create {} (excl={excl})", NAMES[i]));
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if excl {
            o.create_new(true);
        } else {
            o.create(true).truncate(true);
        }
        let m = o.open(self.mp(i));
        let l = o.open(self.lp(i));
        if self.same("create", &m, &l) {
            self.open.insert(i, (m.unwrap(), l.unwrap()));
        }
    }

    fn op_close(&mut self, i: usize) {
        if self.open.contains_key(&i) {
            self.note(format!("close {}", NAMES[i]));
            self.close(i);
        }
    }

    fn step(&mut self) {
        let i = self.rng.gen_range(0..NAMES.len());
        let op = self.rng.gen_range(0..100);
        let t = Instant::now();
        let name: &'static str = match op {
            0..=33 => {
                self.op_write(i);
                "write"
            }
            34..=63 => {
                self.op_read(i);
                "read"
            }
            64..=70 => {
                self.op_truncate(i);
                "truncate"
            }
            71..=73 => {
                self.op_fsync(i);
                "fsync"
            }
            74..=78 => {
                self.op_close(i);
                "close"
            }
            79..=81 => {
                let mut j = self.rng.gen_range(0..NAMES.len());
                if j == i {
                    j = (j + 1) % NAMES.len();
                }
                self.op_rename(i, j);
                "rename"
            }
            82..=83 => {
                self.op_unlink(i);
                "unlink"
            }
            84..=85 => {
                self.op_create(i);
                "create"
            }
            _ => {
                self.op_stat(i);
                "stat"
            }
        };
        let e = self.stats.entry(name).or_default();
        e.0 += 1;
        e.1 += t.elapsed();
    }

    fn list(root: &Path) -> BTreeSet<String> {
        walk(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Full comparison: same set of names, every file's size and content.
    fn compare_all(&mut self, when: &str) {
        let a = Self::list(&self.mnt);
        let b = Self::list(&self.local);
        if a != b {
            self.fail(format!("{when}: file sets differ: mount={a:?} local={b:?}"));
        }
        for name in &b {
            let lp = self.local.join(name);
            let mp = self.mnt.join(name);
            let lmd = fs::symlink_metadata(&lp).unwrap();
            if lmd.is_dir() {
                continue;
            }
            let mmd = fs::symlink_metadata(&mp)
                .unwrap_or_else(|e| self.fail(format!("{when}: stat {name}: {e:?}")));
            if mmd.len() != lmd.len() {
                self.fail(format!(
                    "{when}: size of {name}: mount={} local={}",
                    mmd.len(),
                    lmd.len()
                ));
            }
            let got =
                fs::read(&mp).unwrap_or_else(|e| self.fail(format!("{when}: read {name}: {e:?}")));
            let want = fs::read(&lp).unwrap();
            if got != want {
                let first = got.iter().zip(want.iter()).position(|(x, y)| x != y);
                self.fail(format!(
                    "{when}: content of {name} differs: mount {} bytes, local {}; first difference at {:?}",
                    got.len(),
                    want.len(),
                    first
                ));
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse().ok()
    }
}

#[test]
fn fsx_random_ops_match_local_fs() {
    let seed = env_u64("P2PFS_FSX_SEED").unwrap_or(DEFAULT_SEED);
    let ops = env_u64("P2PFS_FSX_OPS").unwrap_or(10_000) as usize;
    eprintln!("fsx: seed={seed:#x} ops={ops} (override with P2PFS_FSX_SEED / P2PFS_FSX_OPS)");

    let mut node = Node::init();
    node.set_chunk_size(CHUNK as usize);
    node.start();
    let local = node.scratch().join("ref");
    for root in [&node.mnt, &local] {
        fs::create_dir_all(root.join("d/e")).unwrap();
    }

    let mut fsx = Fsx {
        seed,
        rng: StdRng::seed_from_u64(seed),
        data_rng: FastRng(seed ^ 0xdada),
        mnt: node.mnt.clone(),
        local: local.clone(),
        open: BTreeMap::new(),
        history: VecDeque::new(),
        op_no: 0,
        stats: BTreeMap::new(),
    };
    let t0 = Instant::now();
    for n in 0..ops {
        fsx.op_no = n;
        fsx.step();
        if n % 2500 == 2499 {
            // periodic full check with every handle closed
            fsx.close_all();
            fsx.compare_all("periodic check");
        }
    }
    fsx.op_no = ops;
    fsx.close_all();
    fsx.compare_all("final check");
    eprintln!("fsx: {ops} ops in {:?}: {:?}", t0.elapsed(), fsx.stats);

    // Everything must also survive a clean restart.
    node.stop();
    node.start();
    fsx.compare_all("after restart");
    node.stop();
    eprintln!("fsx: total {:?}", t0.elapsed());
}
