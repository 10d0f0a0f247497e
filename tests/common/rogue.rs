//! The rogue peer (the `p2pfs-rogue` binary, `src/bin/p2pfs-rogue/`) run as a child process,
//! for the tests that attack a node from inside the network (hostile, insider_*). The binary
//! needs the `rogue` feature, and so do those tests (`required-features` in Cargo.toml): cargo
//! builds it with them. [`Rogue`] spawns it against a node of a [`Cluster`] and collects the
//! JSON lines it prints.
#![cfg(feature = "rogue")]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::{ChildGuard, Cluster, Node, wait_until};

/// The rogue binary cargo built for this test run.
const ROGUE_BIN: &str = env!("CARGO_BIN_EXE_p2pfs-rogue");

/// A running rogue: its JSON lines as they come. Killed (and reaped) on drop.
pub struct Rogue {
    pub child: ChildGuard,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<thread::JoinHandle<()>>,
    stderr: PathBuf,
}

impl Rogue {
    /// Starts the rogue against `c.nodes[target]` with more arguments.
    pub fn spawn(c: &Cluster, target: usize, args: &[&str]) -> Rogue {
        Rogue::spawn_quiet(c, target, args, &[])
    }

    /// [`Rogue::spawn`], not echoing the events named in `quiet` to stderr (they are still
    /// collected).
    pub fn spawn_quiet(c: &Cluster, target: usize, args: &[&str], quiet: &[&str]) -> Rogue {
        let mut all = vec![
            "--network-key".to_string(),
            c.key.display().to_string(),
            "--target".to_string(),
            c.nodes[target].bootstrap_addr(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        static SPAWNED: AtomicU32 = AtomicU32::new(0);
        let stderr = c.nodes[target].scratch().join(format!(
            "rogue-{}-{}.stderr",
            std::process::id(),
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(ROGUE_BIN);
        cmd.args(&all)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
        // SAFETY: prctl in the child before exec; it dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the rogue");
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let quiet: Vec<String> = quiet.iter().map(|s| s.to_string()).collect();
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if !quiet.iter().any(|q| v["event"] == q.as_str()) {
                        eprintln!("rogue: {v}");
                    }
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Rogue {
            child: ChildGuard(Some(child)),
            events,
            reader: Some(reader),
            stderr,
        }
    }

    /// Runs the rogue to its end (at most `limit`) and returns what it printed.
    #[track_caller]
    pub fn run(c: &Cluster, target: usize, args: &[&str], limit: Duration) -> Report {
        Rogue::spawn(c, target, args).finish(limit)
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for an event named `name`; panics after `limit`.
    #[track_caller]
    pub fn wait_event(&self, name: &str, limit: Duration) -> Value {
        let mut found = None;
        let ok = wait_until(limit, || {
            found = self.events().into_iter().find(|e| e["event"] == name);
            found.is_some()
        });
        assert!(
            ok,
            "the rogue printed no {name} within {limit:?}: {:?}\nstderr: {}",
            self.events(),
            self.stderr()
        );
        found.unwrap()
    }

    /// Its peer id, once it announces itself (panics after `limit`).
    #[track_caller]
    pub fn wait_announcing(&self, limit: Duration) -> String {
        let mut id = None;
        let ok = wait_until(limit, || {
            id = self
                .events()
                .into_iter()
                .find(|e| e["event"] == "announcing")
                .and_then(|e| e["peer_id"].as_str().map(str::to_string));
            id.is_some()
        });
        assert!(
            ok,
            "the rogue did not announce itself within {limit:?}: {:?}\nstderr: {}",
            self.events(),
            self.stderr()
        );
        id.unwrap()
    }

    /// The chunk ids it was sent a `Put` for.
    pub fn put_ids(&self) -> BTreeSet<String> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "put")
            .filter_map(|e| e["chunk"].as_str().map(str::to_string))
            .collect()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// SIGINT: a flood ends early, with its report.
    pub fn interrupt(&self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }

    /// SIGKILL, and reaps it (waiting at most 10 s).
    pub fn kill(&mut self) {
        // SAFETY: a signal to our own child, by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait_timeout(Duration::from_secs(10));
    }

    /// Waits for it to end (at most `limit`); panics unless it exited successfully.
    #[track_caller]
    pub fn finish(mut self, limit: Duration) -> Report {
        let status = self.child.wait_timeout(limit);
        if let Some(r) = self.reader.take()
            && status.is_some()
        {
            let _ = r.join();
        }
        let events = self.events();
        let stderr = self.stderr();
        assert!(
            status.is_some_and(|s| s.success()),
            "the rogue did not finish cleanly within {limit:?} ({status:?}): {events:?}\nstderr: {stderr}"
        );
        Report { events }
    }
}

/// What a rogue printed.
pub struct Report {
    pub events: Vec<Value>,
}

impl Report {
    pub fn named(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }

    pub fn in_phase<'a>(&'a self, name: &str, phase: &str) -> Vec<&'a Value> {
        self.named(name)
            .into_iter()
            .filter(|e| e["phase"] == phase)
            .collect()
    }

    /// Every phase connected, the node ended the attack's stream (if any), and the node
    /// dropped the connection.
    #[track_caller]
    pub fn assert_disconnected_in(&self, phases: &[&str]) {
        for phase in phases {
            let connect = self.in_phase("connect", phase);
            assert!(
                connect.iter().all(|e| e["ok"] == true) && !connect.is_empty(),
                "{phase}: the rogue could not connect: {:?}",
                self.events
            );
            for s in self.in_phase("stream", phase) {
                let outcome = s["outcome"].as_str().unwrap_or("");
                assert!(
                    !outcome.starts_with("open"),
                    "{phase}: the node left the stream open: {s}"
                );
            }
            assert!(
                !self.in_phase("disconnected", phase).is_empty()
                    && self.in_phase("still_connected", phase).is_empty(),
                "{phase}: the node did not disconnect the rogue: {:?}",
                self.events
            );
        }
    }

    pub fn peer_ids(&self) -> BTreeSet<String> {
        self.named("start")
            .iter()
            .filter_map(|e| e["peer_id"].as_str().map(str::to_string))
            .collect()
    }
}

/// The node's `hostile` status.
pub fn hostile(n: &Node) -> Value {
    n.status()["hostile"].clone()
}

/// The node's `hostile.offences.<kind>` (panics if the status has none).
pub fn offences(n: &Node, kind: &str) -> u64 {
    hostile(n)["offences"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("no hostile.offences.{kind} in status"))
}

/// Waits until node's `hostile.offences.<kind>` reaches `n` (offences are counted as the node
/// handles them, which can trail the rogue's report by a moment).
#[track_caller]
pub fn wait_offences(node: &Node, kind: &str, n: u64) {
    let mut last = 0;
    let ok = wait_until(Duration::from_secs(10), || {
        last = offences(node, kind);
        last >= n
    });
    assert!(
        ok,
        "hostile.offences.{kind} is {last}, want >= {n}: {}",
        hostile(node)
    );
}
