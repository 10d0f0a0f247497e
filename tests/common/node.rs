//! A node under test: a private temporary directory holding its data dir, mountpoint and
//! logs; `p2pfs init`, `p2pfs run` in the background, stop by SIGTERM/SIGINT/SIGKILL,
//! `p2pfs-ctl` and its status, and cleanup on drop (the process SIGKILLed, every mount it
//! registered unmounted, the directory removed only once nothing is mounted below it).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::data::edit_toml;
use super::mounts::{is_mounted, mount_fstype, mounts_below, unmount};
use super::process::{CMD_TIMEOUT, out_text, run_cmd, try_run_cmd, wait_until};

/// The binary under test. `P2PFS_TEST_BIN` may point elsewhere (only
/// useful to try the harness against a stand-in).
pub fn bin() -> String {
    std::env::var("P2PFS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2pfs").to_string())
}

/// How long `start` waits for the mount to show up and `stop` waits for the
/// process to exit.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

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

    /// Makes this node's kept versions independent of how full the host's disk is: a build
    /// directory can bring it under the default 5% free, and GC would then drop them early.
    pub fn ignore_host_disk_space(&self) {
        self.set_config("storage", "min_free_percent", "0");
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

    /// Runs init and asserts it succeeded. The node's kept versions then do not depend on how
    /// full the host's disk is (see [`Node::ignore_host_disk_space`]).
    pub fn init_ok(&self, extra: &[&str]) {
        let out = self.run_init(extra);
        assert!(
            out.status.success(),
            "p2pfs init failed ({}): {}",
            out.status,
            out_text(&out)
        );
        self.ignore_host_disk_space();
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

    /// How many lines of the whole stderr log (every start, not cut like
    /// [`log_text`](Self::log_text)) `f` accepts. Log lines are a barrier where no counter
    /// says what happened (e.g. a repair pass that kept copies).
    pub fn count_log_lines(&self, f: impl Fn(&str) -> bool) -> usize {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default())
            .lines()
            .filter(|l| f(l))
            .count()
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

/// `p2pfs-ctl`. `P2PFS_TEST_CTL_BIN` may point elsewhere.
pub fn ctl_bin() -> String {
    std::env::var("P2PFS_TEST_CTL_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2pfs-ctl").to_string())
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

/// Passes of a background worker completed on `node` since it started: `status.passes.KIND`
/// (`repair`, `gc`, `audit`, `sync`: anti-entropy sessions it started that completed).
#[track_caller]
pub fn passes(node: &Node, kind: &str) -> u64 {
    let s = node.status();
    s["passes"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no passes.{kind}: {}", s["passes"]))
}

/// A positive barrier for "X did not happen": waits until the `kind` worker (see [`passes`])
/// of every node of `nodes` has completed `more` passes after this call, so a pass that would
/// have done X has had its chance on each.
#[track_caller]
pub fn wait_passes<'a>(nodes: impl IntoIterator<Item = &'a Node>, kind: &str, more: u64) {
    let want: Vec<(&Node, u64)> = nodes
        .into_iter()
        .map(|n| (n, passes(n, kind) + more))
        .collect();
    let timeout = Duration::from_secs(120);
    for (n, want) in want {
        let mut now = 0;
        let ok = wait_until(timeout, || {
            now = n
                .try_status()
                .ok()
                .and_then(|s| s["passes"][kind].as_u64())
                .unwrap_or(now);
            now >= want
        });
        assert!(
            ok,
            "barrier: {} completed {now} {kind} passes, not {want}, within {timeout:?}; log:\n{}",
            n.dir.display(),
            n.log_text()
        );
    }
}

/// The value of the field `key` in a log line (`key=value`, up to the next space), if the
/// line has it.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
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
