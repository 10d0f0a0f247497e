//! Test harness for the p2pfs integration tests.
//!
//! A [`Node`] owns a private temporary directory holding the node's data dir,
//! its mountpoint and its log files. It can run `p2pfs init`, start
//! `p2pfs run` in the background, stop it with SIGTERM or SIGKILL, and it
//! always cleans up on drop (even when the test panicked): the node process is
//! SIGKILLed if still running, the FUSE mount is unmounted (`umount`, falling
//! back to `umount -l`) and any extra mounts the test registered (tmpfs) are
//! unmounted too. The temporary directory is only removed once nothing is
//! mounted below it any more.
//!
//! A node starts alone on loopback without mDNS unless given other run
//! arguments (`set_run_args`, `start_args`) or a launcher (`set_run_prefix`,
//! e.g. `nsenter` into a network namespace). A [`Cluster`] is N nodes sharing
//! one network key file, bootstrapped to the first, on loopback; it waits
//! until every node sees every other alive, and on drop kills and unmounts
//! them all (printing every node's status and log if the test panicked).
//!
//! [`netlab`] puts nodes into network namespaces of their own, on one bridge,
//! for tests that need a network between them (mDNS, partitions).
//!
//! All tests need root (FUSE mounts, tmpfs mounts, setpriv, namespaces).

#![allow(dead_code)]

pub mod netlab;
pub mod rogue;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The binary under test. `P2PFS_TEST_BIN` may point elsewhere (only
/// useful to try the harness against a stand-in).
pub fn bin() -> String {
    std::env::var("P2PFS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2pfs").to_string())
}

/// How long `start` waits for the mount to show up and `stop` waits for the
/// process to exit.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Default timeout for shell commands run through the mount.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(180);

/// What `Node::start` passes after `run --data-dir DIR --mount MNT` unless
/// told otherwise: alone, on loopback only (tests never send traffic beyond
/// this machine), without mDNS, one copy of every chunk.
pub const DEFAULT_RUN_ARGS: &[&str] = &[
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
    "--no-mdns",
    "--replicas",
    "1",
];

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

pub struct Node {
    /// Private temp dir holding everything below. `None` once it was
    /// deliberately leaked because something could not be unmounted.
    base: Option<tempfile::TempDir>,
    pub base_path: PathBuf,
    /// The node's data dir (`--data-dir`).
    pub dir: PathBuf,
    /// The mountpoint (`--mount`).
    pub mnt: PathBuf,
    /// stderr of every `p2pfs run` of this node (appended across restarts).
    pub log: PathBuf,
    /// stdout of every `p2pfs run` of this node.
    pub stdout_log: PathBuf,
    child: Option<Child>,
    /// Extra mounts (e.g. tmpfs) to unmount on drop, in reverse order,
    /// after the FUSE mount.
    extra_mounts: Vec<PathBuf>,
    /// Number of times `start` was called (for log separators).
    starts: u32,
    /// Program and arguments put in front of `p2pfs run` (e.g. `nsenter
    /// --net=/run/netns/X`); empty: run the binary directly.
    run_prefix: Vec<String>,
    /// Arguments after `run --data-dir DIR --mount MNT`. Defaults to
    /// [`DEFAULT_RUN_ARGS`]: alone, on loopback, without mDNS.
    run_args: Vec<String>,
    /// Shared with the watchdog thread: pid of the running node (0 = none)
    /// and a "node dropped" flag.
    watch_pid: Arc<AtomicU32>,
    watch_done: Arc<AtomicBool>,
}

impl Node {
    /// Paths only: a fresh base temp dir with an (empty) mountpoint; the data
    /// dir does not exist yet and `init` has not been run.
    pub fn uninit() -> Node {
        let base = tempfile::Builder::new()
            .prefix("p2pfs-test-")
            .tempdir()
            .expect("create temp dir");
        let base_path = base.path().canonicalize().expect("canonicalize temp dir");
        // Let unprivileged users (uid 65534 in the permission tests) traverse
        // into the mountpoint. The data dir itself is created 0700 by init.
        fs::set_permissions(&base_path, fs::Permissions::from_mode(0o755)).unwrap();
        let mnt = base_path.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let watch_pid = Arc::new(AtomicU32::new(0));
        let watch_done = Arc::new(AtomicBool::new(false));
        spawn_watchdog(watch_pid.clone(), watch_done.clone());
        Node {
            watch_pid,
            watch_done,
            dir: base_path.join("data"),
            mnt,
            log: base_path.join("node.stderr.log"),
            stdout_log: base_path.join("node.stdout.log"),
            base: Some(base),
            base_path,
            child: None,
            extra_mounts: Vec::new(),
            starts: 0,
            run_prefix: Vec::new(),
            run_args: DEFAULT_RUN_ARGS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Fresh node: temp data dir + temp mountpoint, `p2pfs init` run
    /// successfully.
    pub fn init() -> Node {
        let node = Node::uninit();
        node.init_ok(&[]);
        node
    }

    /// Fresh node whose data dir lives on a freshly mounted tmpfs of
    /// `size_mib` MiB (unmounted on drop). The mountpoint is outside the
    /// tmpfs.
    pub fn init_on_tmpfs(size_mib: u32) -> Node {
        let mut node = Node::uninit();
        let fsdir = node.base_path.join("tmpfs");
        fs::create_dir(&fsdir).unwrap();
        let out = run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mib}m,mode=0755"))
                .arg("tmpfs")
                .arg(&fsdir),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "mounting tmpfs failed: {}",
            out_text(&out)
        );
        node.extra_mounts.push(fsdir.clone());
        node.dir = fsdir.join("data");
        node.init_ok(&[]);
        node
    }

    /// Runs `p2pfs init --data-dir DIR <extra>` and returns its output.
    pub fn run_init(&self, extra: &[&str]) -> Output {
        run_cmd(
            Command::new(bin())
                .arg("init")
                .arg("--data-dir")
                .arg(&self.dir)
                .args(extra)
                .env_remove("RUST_LOG")
                .env_remove("P2PFS_LOG"),
            Duration::from_secs(60),
        )
    }

    /// Runs init and asserts it succeeded.
    pub fn init_ok(&self, extra: &[&str]) {
        let out = self.run_init(extra);
        assert!(
            out.status.success(),
            "p2pfs init failed ({}): {}",
            out.status,
            out_text(&out)
        );
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Sets `key = value` (value is a TOML literal, e.g. `65536` or `"x"`)
    /// under `[section]` in config.toml, replacing an existing assignment of
    /// that key in that section, or adding it.
    pub fn set_config(&self, section: &str, key: &str, value: &str) {
        let path = self.config_path();
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let new = edit_toml(&text, section, key, value);
        fs::write(&path, new).unwrap();
    }

    /// Sets `[storage] chunk_size`.
    pub fn set_chunk_size(&self, n: usize) {
        self.set_config("storage", "chunk_size", &n.to_string());
    }

    /// Path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Spawns `p2pfs run` and waits (up to 20 s) for the mount to appear in
    /// /proc/mounts. Panics with the log content if the process exits first or
    /// the mount does not appear in time.
    pub fn start(&mut self) {
        self.start_with(Duration::from_millis(25), true);
    }

    /// `start` with a given poll interval (zero = busy poll) and optionally
    /// without the first stat of the fresh mount.
    pub fn start_with(&mut self, poll: Duration, probe_root: bool) {
        assert!(self.child.is_none(), "node already running");
        assert!(
            !is_mounted(&self.mnt),
            "mountpoint already mounted before start"
        );
        self.starts += 1;
        let mut err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        {
            use std::io::Write;
            writeln!(err, "===== harness: start #{} =====", self.starts).unwrap();
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout_log)
            .unwrap();
        let mut cmd = match self.run_prefix.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--mount")
            .arg(&self.mnt)
            .args(&self.run_args)
            .env_remove("RUST_LOG")
            .env_remove("P2PFS_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // If the test process dies without running destructors (e.g. killed
        // by a test-runner timeout) take the node down with it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn p2pfs run");
        self.watch_pid.store(child.id(), Ordering::SeqCst);
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.watch_pid.store(0, Ordering::SeqCst);
                panic!(
                    "p2pfs run exited before the mount appeared ({st}); log:\n{}",
                    self.log_text()
                );
            }
            if let Some(fstype) = mount_fstype(&self.mnt) {
                assert!(
                    fstype.starts_with("fuse"),
                    "mount at {} has fstype {fstype:?}, expected fuse*",
                    self.mnt.display()
                );
                // The mount table entry can appear a moment before the
                // filesystem answers INIT; make sure it serves requests.
                if probe_root {
                    let md = fs::metadata(&self.mnt);
                    assert!(
                        md.is_ok(),
                        "stat of fresh mount failed: {md:?}\nlog:\n{}",
                        self.log_text()
                    );
                }
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "mount did not appear at {} within {:?}; log:\n{}",
                    self.mnt.display(),
                    START_TIMEOUT,
                    self.log_text()
                );
            }
            if poll.is_zero() {
                std::hint::spin_loop();
            } else {
                thread::sleep(poll);
            }
        }
    }

    /// Sends SIGTERM, waits up to 20 s, asserts exit status 0 and that the
    /// mount is gone.
    pub fn stop(&mut self) {
        let st = self.signal_and_wait(libc::SIGTERM, STOP_TIMEOUT);
        match st {
            Some(st) => assert!(
                st.success(),
                "p2pfs run exited with {st} after SIGTERM; log:\n{}",
                self.log_text()
            ),
            None => panic!(
                "p2pfs run did not exit within {:?} after SIGTERM; log:\n{}",
                STOP_TIMEOUT,
                self.log_text()
            ),
        }
        assert!(
            !is_mounted(&self.mnt),
            "mount still present after clean shutdown; log:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGINT instead of SIGTERM; same checks as `stop`.
    pub fn stop_sigint(&mut self) {
        let st = self.signal_and_wait(libc::SIGINT, STOP_TIMEOUT);
        match st {
            Some(st) => assert!(
                st.success(),
                "exit {st} after SIGINT; log:\n{}",
                self.log_text()
            ),
            None => panic!(
                "no exit within {STOP_TIMEOUT:?} after SIGINT; log:\n{}",
                self.log_text()
            ),
        }
        assert!(
            !is_mounted(&self.mnt),
            "mount still present after SIGINT shutdown"
        );
    }

    /// SIGKILLs the node and reaps it. The (now dead) mount stays in place;
    /// call `cleanup_dead_mount` before restarting.
    pub fn kill9(&mut self) {
        let st = self.signal_and_wait(libc::SIGKILL, STOP_TIMEOUT);
        assert!(st.is_some(), "node did not die after SIGKILL");
    }

    /// Unmounts a mount left behind by a killed node (umount, then umount -l).
    pub fn cleanup_dead_mount(&self) {
        unmount(&self.mnt);
        assert!(
            !is_mounted(&self.mnt),
            "could not unmount {}",
            self.mnt.display()
        );
    }

    /// True if the node process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().unwrap().is_none(),
        }
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mnt)
    }

    /// Whole stderr log (lossy UTF-8).
    pub fn log_text(&self) -> String {
        let mut s = String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned();
        // Keep panics readable when logs are huge.
        const MAX: usize = 20_000;
        if s.len() > MAX {
            let mut cut = s.len() - MAX;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = format!("[... {} bytes cut ...]\n{}", cut, &s[cut..]);
        }
        s
    }

    /// Runs `sh -c script` with the mountpoint as cwd, with a timeout.
    pub fn sh(&self, script: &str) -> Output {
        run_cmd(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(&self.mnt),
            CMD_TIMEOUT,
        )
    }

    /// Runs `sh -c script` in the mount and asserts success; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}): {}",
            out.status,
            out_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sh -c script` in the mount and asserts failure; returns stderr.
    pub fn sh_fail(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "`{script}` unexpectedly succeeded: {}",
            out_text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A scratch directory next to (not inside) the mount and the data dir,
    /// for local reference files.
    pub fn scratch(&self) -> PathBuf {
        let p = self.base_path.join("scratch");
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Some(st) = child.try_wait().unwrap() {
            self.child = None;
            self.watch_pid.store(0, Ordering::SeqCst);
            return Some(st);
        }
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                self.watch_pid.store(0, Ordering::SeqCst);
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn cleanup(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
            self.watch_pid.store(0, Ordering::SeqCst);
        }
        let mut all_unmounted = true;
        if is_mounted(&self.mnt) {
            unmount(&self.mnt);
            if is_mounted(&self.mnt) {
                eprintln!("harness: could not unmount {}", self.mnt.display());
                all_unmounted = false;
            }
        }
        for m in self.extra_mounts.drain(..).rev().collect::<Vec<_>>() {
            if is_mounted(&m) {
                unmount(&m);
                if is_mounted(&m) {
                    eprintln!("harness: could not unmount {}", m.display());
                    all_unmounted = false;
                }
            }
        }
        // Anything else mounted below the base dir (should not happen)?
        for m in mounts_below(&self.base_path) {
            unmount(&m);
            if is_mounted(&m) {
                all_unmounted = false;
            }
        }
        if !all_unmounted {
            // Never let remove_dir_all walk into a live mount.
            if let Some(b) = self.base.take() {
                let _ = b.keep();
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.watch_done.store(true, Ordering::SeqCst);
        self.cleanup();
    }
}

/// How long a node may live before the watchdog SIGKILLs it, so that a hung
/// filesystem turns into failing syscalls (ENOTCONN) and a failing test
/// instead of a test run that never ends. P2PFS_TEST_WATCHDOG_SECS overrides.
fn watchdog_limit() -> Duration {
    let secs = std::env::var("P2PFS_TEST_WATCHDOG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

fn spawn_watchdog(pid: Arc<AtomicU32>, done: Arc<AtomicBool>) {
    let limit = watchdog_limit();
    thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while !done.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                let p = pid.load(Ordering::SeqCst);
                eprintln!("harness watchdog: node still alive after {limit:?}; SIGKILLing pid {p}");
                if p != 0 {
                    unsafe {
                        libc::kill(p as i32, libc::SIGKILL);
                    }
                }
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Registers a tmpfs (or other) mount for cleanup by the node's drop.
impl Node {
    pub fn register_mount(&mut self, p: &Path) {
        self.extra_mounts.push(p.to_path_buf());
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().unwrap().try_wait().unwrap()
    }
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take()
            && c.try_wait().ok().flatten().is_none()
        {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// mounts

fn unescape_mount_field(s: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mountpoint, fstype) for every line in /proc/mounts.
pub fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _src = f.next()?;
            let mp = f.next()?;
            let ty = f.next()?;
            Some((PathBuf::from(unescape_mount_field(mp)), ty.to_string()))
        })
        .collect()
}

pub fn mount_fstype(p: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(m, _)| m == p)
        .map(|(_, t)| t)
}

pub fn is_mounted(p: &Path) -> bool {
    mount_fstype(p).is_some()
}

fn mounts_below(base: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.starts_with(base))
        .collect();
    v.sort();
    v.dedup();
    v.reverse(); // deepest first
    v
}

/// `umount P`, falling back to `umount -l P`. Repeats while the path stays
/// mounted (stacked mounts), a bounded number of times.
pub fn unmount(p: &Path) {
    for _ in 0..5 {
        if !is_mounted(p) {
            return;
        }
        let ok = run_cmd(Command::new("umount").arg(p), Duration::from_secs(30))
            .status
            .success();
        if !ok && is_mounted(p) {
            let _ = run_cmd(
                Command::new("umount").arg("-l").arg(p),
                Duration::from_secs(30),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// commands

/// Runs a command with stdin null and captured stdout/stderr; SIGKILLs it
/// and panics if it takes longer than `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Output {
    try_run_cmd(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// `run_cmd` that returns an error text instead of panicking when the
/// command cannot be spawned or times out (for cleanup and failure reports,
/// which must not panic).
pub fn try_run_cmd(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {cmd:?}: {e}")),
        }
        if Instant::now() > deadline {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(format!("command {cmd:?} timed out after {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    })
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status={} stdout={:?} stderr={:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command as uid/gid 65534 (nobody) with no supplementary groups.
pub fn as_nobody(args: &[&str]) -> Output {
    run_cmd(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args),
        CMD_TIMEOUT,
    )
}

// ---------------------------------------------------------------------------
// data helpers

/// Small fast deterministic PRNG (splitmix64) for bulk test data; fast
/// enough in debug builds.
pub struct FastRng(pub u64);

impl FastRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rem.len();
            rem.copy_from_slice(&v[..n]);
        }
    }
}

/// Deterministic pseudo-random bytes (not compressible).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = FastRng(seed ^ 0x1234_5678_9abc_def0);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Compares two byte slices; on mismatch panics with the first differing
/// offset (without dumping megabytes).
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b);
    panic!(
        "{what}: content mismatch: got {} bytes, want {} bytes, first difference at {:?}",
        got.len(),
        want.len(),
        first.or(Some(got.len().min(want.len())))
    );
}

#[track_caller]
pub fn assert_file_eq(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_bytes_eq(&path.display().to_string(), &got, want);
}

/// Raw errno of an io::Error (panics if there is none).
#[track_caller]
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e:?}"))
}

#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: &[i32]) {
    match r {
        Ok(v) => panic!("{what}: expected errno {want:?}, got success ({v:?})"),
        Err(e) => assert!(
            want.contains(&errno(&e)),
            "{what}: expected errno {want:?}, got {e:?} (errno {:?})",
            e.raw_os_error()
        ),
    }
}

/// Every regular file below `root` (recursively, not following symlinks),
/// with its content. Paths are relative to `root`.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_file() {
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            );
        }
    }
    out
}

/// A root entry of a mount that is a volume directory (`@home`, shared volumes).
pub fn is_volume_dir(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'@')
}

/// Names in the root of a mount, without the volume directories (see [`walk`]).
pub fn root_names(mnt: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !is_volume_dir(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path below `root` (files, dirs, symlinks), not following symlinks,
/// excluding `root` itself.
///
/// In a mount, the root's `@NAME` directories are the user's volumes (`@home`, shared ones):
/// they are left out, so a walk covers the network volume, as the tests' models do.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(r) => r,
            Err(e) => panic!("read_dir {}: {e}", d.display()),
        };
        for ent in rd {
            let ent = ent.unwrap();
            let p = ent.path();
            if d == root && is_volume_dir(&ent.file_name()) {
                continue;
            }
            let ft = ent.file_type().unwrap();
            out.push(p.clone());
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Snapshot of (content, mtime, mode) of every file below `root`.
pub fn snapshot_files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime, u32)> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            p,
            (content, md.modified().unwrap(), md.permissions().mode()),
        );
    }
    out
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `data` to `path` (create/truncate) and closes it explicitly,
/// returning the first error from open, write or close.
pub fn write_and_close(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let w = f.write_all(data);
    let fd = f.into_raw_fd();
    let rc = unsafe { libc::close(fd) };
    let close_err = if rc != 0 {
        Some(io::Error::last_os_error())
    } else {
        None
    };
    w?;
    match close_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Closes a file explicitly, returning the close(2) error if any (std's
/// drop ignores it).
pub fn close_checked(f: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// TOML editing (text based, so the tests don't depend on a toml crate)

pub fn edit_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut lines: Vec<String> = text.lines().map(|s| s.to_string()).collect();
    let mut in_section = false;
    let mut section_idx = None;
    for i in 0..lines.len() {
        let t = lines[i].trim();
        if t.starts_with('[') {
            in_section = t == header;
            if in_section {
                section_idx = Some(i);
            }
            continue;
        }
        if in_section
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            lines[i] = format!("{key} = {value}");
            return lines.join("\n") + "\n";
        }
    }
    match section_idx {
        Some(i) => lines.insert(i + 1, format!("{key} = {value}")),
        None => {
            lines.push(String::new());
            lines.push(header);
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// Reads `key` under `[section]` from TOML text (raw value text).
pub fn toml_get(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_section = t == header;
            continue;
        }
        if in_section
            && let Some((k, v)) = t.split_once('=')
            && k.trim() == key
        {
            let v = v.split('#').next().unwrap().trim();
            return Some(v.to_string());
        }
    }
    None
}

#[test]
fn harness_edit_toml() {
    let t = "[a]\nx = 1\n\n[storage]\nchunk_size = 1048576 # default\nother = 2\n";
    let n = edit_toml(t, "storage", "chunk_size", "65536");
    assert_eq!(
        toml_get(&n, "storage", "chunk_size").as_deref(),
        Some("65536")
    );
    assert_eq!(toml_get(&n, "storage", "other").as_deref(), Some("2"));
    assert_eq!(toml_get(&n, "a", "x").as_deref(), Some("1"));
    let n = edit_toml("[a]\nx=1\n", "storage", "chunk_size", "65536");
    assert_eq!(
        toml_get(&n, "storage", "chunk_size").as_deref(),
        Some("65536")
    );
    let n = edit_toml(
        "[storage]\n[b]\nchunk_size = 3\n",
        "storage",
        "chunk_size",
        "7",
    );
    assert_eq!(toml_get(&n, "storage", "chunk_size").as_deref(), Some("7"));
    assert_eq!(toml_get(&n, "b", "chunk_size").as_deref(), Some("3"));
    assert_eq!(unescape_mount_field("/a\\040b"), "/a b");
}

// ---------------------------------------------------------------------------
// networked nodes: run arguments, status, clusters

/// `p2pfs-ctl`. `P2PFS_TEST_CTL_BIN` may point elsewhere.
pub fn ctl_bin() -> String {
    std::env::var("P2PFS_TEST_CTL_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2pfs-ctl").to_string())
}

/// How long a cluster may take to form (every node sees every other alive).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a change may take to show up on another node.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Run arguments for a networked node on loopback without mDNS:
/// `--listen /ip4/127.0.0.1/tcp/0 --no-mdns --replicas R` plus `extra`.
pub fn loopback_args(replicas: u32, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--replicas",
        &replicas.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().cloned());
    v
}

impl Node {
    /// Fresh node initialized with `--network-key key` (the file is created
    /// with a fresh key if missing, reused if present).
    pub fn init_with_key(key: &Path) -> Node {
        let node = Node::uninit();
        node.init_ok(&["--network-key", key.to_str().expect("utf-8 key path")]);
        node
    }

    /// Replaces the arguments after `run --data-dir DIR --mount MNT` for
    /// this and every later `start`.
    pub fn set_run_args<S: AsRef<str>>(&mut self, args: &[S]) {
        self.run_args = args.iter().map(|s| s.as_ref().to_string()).collect();
    }

    /// Puts a program and its arguments in front of `p2pfs run` for this and
    /// every later `start` (e.g. `["nsenter", "--net=/run/netns/X"]`).
    pub fn set_run_prefix<S: AsRef<str>>(&mut self, prefix: &[S]) {
        self.run_prefix = prefix.iter().map(|s| s.as_ref().to_string()).collect();
    }

    /// `set_run_args(args)` then `start()`.
    pub fn start_args<S: AsRef<str>>(&mut self, args: &[S]) {
        self.set_run_args(args);
        self.start();
    }

    /// Runs `p2pfs-ctl --data-dir DIR ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_cmd(
            Command::new(ctl_bin())
                .arg("--data-dir")
                .arg(&self.dir)
                .args(args),
            Duration::from_secs(60),
        )
    }

    /// [`ctl`](Self::ctl) that must succeed; its standard output.
    #[track_caller]
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "p2pfs-ctl {args:?}: {}",
            out_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `p2pfs-ctl --data-dir DIR status --json`.
    pub fn status_output(&self) -> Output {
        run_cmd(&mut self.status_command(), Duration::from_secs(60))
    }

    fn status_command(&self) -> Command {
        let mut c = Command::new(ctl_bin());
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(["status", "--json"]);
        c
    }

    /// The node's status, or why there is none (not running, bad JSON).
    pub fn try_status(&self) -> Result<serde_json::Value, String> {
        self.try_status_within(Duration::from_secs(60))
    }

    /// `try_status`, giving up after `timeout`; never panics.
    pub fn try_status_within(&self, timeout: Duration) -> Result<serde_json::Value, String> {
        let out = try_run_cmd(&mut self.status_command(), timeout)?;
        if !out.status.success() {
            return Err(format!("p2pfs-ctl status failed: {}", out_text(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "p2pfs-ctl status printed bad JSON ({e}): {}",
                out_text(&out)
            )
        })
    }

    /// The node's status; panics (with the log) if there is none.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.log_text()))
    }

    pub fn peer_id(&self) -> String {
        self.status()["peer_id"]
            .as_str()
            .expect("status.peer_id is a string")
            .to_string()
    }

    /// The first listen address (`listen_addrs[0]`), polled until the node
    /// reports one.
    #[track_caller]
    pub fn listen_addr(&self) -> String {
        let mut addr = None;
        let ok = wait_until(START_TIMEOUT, || {
            if let Ok(s) = self.try_status()
                && let Some(a) = s["listen_addrs"].get(0).and_then(|a| a.as_str())
            {
                addr = Some(a.to_string());
                return true;
            }
            false
        });
        assert!(
            ok,
            "node reported no listen address within {START_TIMEOUT:?}; log:\n{}",
            self.log_text()
        );
        addr.unwrap()
    }

    /// `<listen_addrs[0]>/p2p/<peer_id>`, for `--bootstrap`.
    pub fn bootstrap_addr(&self) -> String {
        format!("{}/p2p/{}", self.listen_addr(), self.peer_id())
    }

    /// Ids of every chunk in the node's chunk store (`chunks/xx/yy/<id>`,
    /// temp files excluded).
    pub fn chunk_ids(&self) -> std::collections::BTreeSet<String> {
        chunk_ids_in(&self.dir.join("chunks"))
    }

    /// The ids of a file's chunks, in order, by `p2pfs-ctl where PATH --json` (`path` relative
    /// to the mount's root). Asks every live peer the node knows whether it holds them, so it
    /// may take a request timeout per unreachable peer that is not yet dead.
    pub fn where_chunk_ids(&self, path: &str) -> Result<Vec<String>, String> {
        let out = try_run_cmd(
            Command::new(ctl_bin())
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["where", path, "--json"]),
            Duration::from_secs(120),
        )?;
        if !out.status.success() {
            return Err(format!("p2pfs-ctl where {path}: {}", out_text(&out)));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("p2pfs-ctl where {path}: bad JSON ({e}): {}", out_text(&out)))?;
        v["chunks"]
            .as_array()
            .ok_or_else(|| format!("p2pfs-ctl where {path}: no chunks array: {v}"))?
            .iter()
            .map(|c| {
                c["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("p2pfs-ctl where {path}: chunk without id: {c}"))
            })
            .collect()
    }

    /// This node's view of the peer `peer_id` (`alive`, `suspect`, `dead`, `leaving`,
    /// `left`), `None` if it does not list it or has no status.
    pub fn peer_state(&self, peer_id: &str) -> Option<String> {
        let s = self.try_status_within(Duration::from_secs(30)).ok()?;
        status_peers(&s)
            .into_iter()
            .find(|(p, _)| p == peer_id)
            .map(|(_, st)| st)
    }
}

/// Peers of a status, as (peer_id, state).
pub fn status_peers(status: &serde_json::Value) -> Vec<(String, String)> {
    status["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["peer_id"].as_str().unwrap_or("?").to_string(),
                        p["state"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Peer ids a status lists as `alive`, sorted.
/// Every peer id but the `i`th, sorted (what node `i` should list as its peers).
pub fn others(ids: &[String], i: usize) -> Vec<String> {
    let mut want: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| p.clone())
        .collect();
    want.sort();
    want
}

pub fn alive_peers(status: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = status_peers(status)
        .into_iter()
        .filter(|(_, s)| s == "alive")
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

/// Chunk ids stored below a `chunks` dir: files named by 64 hex digits in
/// `xx/yy/` fan-out dirs (`tmp/` and anything else ignored).
pub fn chunk_ids_in(chunks: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Ok(level1) = fs::read_dir(chunks) else {
        return out;
    };
    for a in level1.flatten() {
        let an = a.file_name().to_string_lossy().into_owned();
        if !is_hex(&an, 2) || !a.path().is_dir() {
            continue;
        }
        for b in fs::read_dir(a.path()).into_iter().flatten().flatten() {
            let bn = b.file_name().to_string_lossy().into_owned();
            if !is_hex(&bn, 2) || !b.path().is_dir() {
                continue;
            }
            for c in fs::read_dir(b.path()).into_iter().flatten().flatten() {
                let cn = c.file_name().to_string_lossy().into_owned();
                if is_hex(&cn, 64) && c.path().is_file() {
                    out.insert(cn);
                }
            }
        }
    }
    out
}

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// `--replicas`.
    pub replicas: u32,
    /// `[storage] chunk_size` written to every node's config before start.
    pub chunk_size: Option<usize>,
    /// More `p2pfs run` arguments for every node.
    pub extra_args: Vec<String>,
}

impl ClusterOpts {
    pub fn replicas(replicas: u32) -> ClusterOpts {
        ClusterOpts {
            replicas,
            chunk_size: None,
            extra_args: Vec::new(),
        }
    }
}

/// N nodes of one network (one shared network key file) on loopback,
/// without mDNS: the first is started alone, the others bootstrap to it.
/// Dropping the cluster kills every node and cleans up its mounts; when the
/// drop happens during a panic it prints every node's status and log first.
pub struct Cluster {
    /// Declared first: dropped (killed, unmounted) before the key dir goes.
    pub nodes: Vec<Node>,
    pub opts: ClusterOpts,
    /// The network key file every node was initialized with.
    pub key: PathBuf,
    _key_dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes with `--replicas replicas`, formed (see `wait_formed`).
    pub fn start(n: usize, replicas: u32) -> Cluster {
        Cluster::start_opts(n, ClusterOpts::replicas(replicas))
    }

    /// `n` nodes with the given options; returns once every node lists the
    /// other `n - 1` as alive.
    pub fn start_opts(n: usize, opts: ClusterOpts) -> Cluster {
        assert!(n >= 1);
        let mut c = Cluster::empty(opts);
        let first = c.init_node();
        c.nodes.push(first);
        c.start_node(0, None);
        let boot = c.nodes[0].bootstrap_addr();
        for i in 1..n {
            let node = c.init_node();
            c.nodes.push(node);
            c.start_node(i, Some(&boot));
        }
        c.wait_formed();
        c
    }

    /// No nodes yet, only the network key file's place (the first
    /// `init_node` creates the key). For tests that start their nodes
    /// themselves (e.g. in network namespaces) and push them to `nodes`.
    pub fn empty(opts: ClusterOpts) -> Cluster {
        let key_dir = tempfile::Builder::new()
            .prefix("p2pfs-test-key-")
            .tempdir()
            .expect("create temp dir");
        let key = key_dir.path().join("network.key");
        Cluster {
            nodes: Vec::new(),
            opts,
            key,
            _key_dir: key_dir,
        }
    }

    /// A fresh node initialized with the cluster's key and chunk size, not
    /// started and not part of `nodes`.
    pub fn init_node(&self) -> Node {
        let node = Node::init_with_key(&self.key);
        if let Some(cs) = self.opts.chunk_size {
            node.set_chunk_size(cs);
        }
        node
    }

    /// The run arguments of a node of this cluster, bootstrapping to `boot`.
    pub fn run_args(&self, boot: Option<&str>) -> Vec<String> {
        let mut extra = self.opts.extra_args.clone();
        if let Some(b) = boot {
            extra.push("--bootstrap".into());
            extra.push(b.to_string());
        }
        loopback_args(self.opts.replicas, &extra)
    }

    /// Starts `nodes[i]`, bootstrapping to `boot` if given.
    pub fn start_node(&mut self, i: usize, boot: Option<&str>) {
        let args = self.run_args(boot);
        self.nodes[i].start_args(&args);
    }

    /// Inits and starts one more node bootstrapped to `nodes[to]`; returns
    /// its index. Does not wait for it to join.
    pub fn add_node(&mut self, to: usize) -> usize {
        let boot = self.nodes[to].bootstrap_addr();
        let node = self.init_node();
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.start_node(i, Some(&boot));
        i
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Peer ids of every node, in order.
    pub fn peer_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.peer_id()).collect()
    }

    /// Waits until every node lists every other node (and only those) as
    /// alive and reports `network: connected`; panics after FORM_TIMEOUT.
    #[track_caller]
    pub fn wait_formed(&self) {
        let ids = self.peer_ids();
        let mut last = String::new();
        let ok = wait_until(FORM_TIMEOUT, || {
            for (i, n) in self.nodes.iter().enumerate() {
                let s = match n.try_status() {
                    Ok(s) => s,
                    Err(e) => {
                        last = format!("node {}: {e}", i + 1);
                        return false;
                    }
                };
                let want = others(&ids, i);
                if alive_peers(&s) != want || (ids.len() > 1 && s["network"] != "connected") {
                    last = format!(
                        "node {} ({}): network={} peers={:?}, want alive {want:?}",
                        i + 1,
                        ids[i],
                        s["network"],
                        status_peers(&s)
                    );
                    return false;
                }
            }
            true
        });
        assert!(
            ok,
            "cluster of {} did not form within {FORM_TIMEOUT:?}: {last}",
            self.nodes.len()
        );
    }

    /// Every node's status (or why there is none) and log.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let st = match n.try_status_within(Duration::from_secs(10)) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                Err(e) => e,
            };
            s.push_str(&format!(
                "\n===== node {} ({}) status =====\n{st}\n===== node {} log =====\n{}\n",
                i + 1,
                n.dir.display(),
                i + 1,
                n.log_text()
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "cluster test failed; node states and logs:{}",
                self.report()
            );
        }
        // Every node is SIGKILLed and unmounted by its own drop.
        self.nodes.clear();
    }
}

/// Polls until `path` is a regular file of `want.len()` bytes, then reads it
/// and compares. Returns an error text (with what was seen last) on timeout
/// or mismatch.
pub fn wait_for_file(path: &Path, want: &[u8], timeout: Duration) -> Result<(), String> {
    let mut last = String::from("never looked");
    let ok = wait_until(timeout, || match fs::metadata(path) {
        Ok(md) if md.is_file() && md.len() == want.len() as u64 => true,
        Ok(md) => {
            last = format!("size {} (want {})", md.len(), want.len());
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if !ok {
        return Err(format!(
            "{} did not appear with {} bytes within {timeout:?}; last seen: {last}",
            path.display(),
            want.len()
        ));
    }
    let got = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        return Err(format!(
            "{}: content mismatch: got {} bytes, want {}, first difference at {:?}",
            path.display(),
            got.len(),
            want.len(),
            first.or(Some(got.len().min(want.len())))
        ));
    }
    Ok(())
}

/// What `p2pfs user show` prints as this node's user's public key.
pub fn public_key(node: &Node) -> String {
    let out = run_cmd(
        Command::new(bin())
            .args(["user", "show", "--data-dir"])
            .arg(&node.dir),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key:").map(|k| k.trim().to_string()))
        .expect("user show prints a public key")
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
