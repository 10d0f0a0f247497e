//! Bounded cost of hostile input (issue 17): what anyone on the network path, or a member gone
//! bad, can make a node spend, and that deletion still happens when a member never finishes
//! leaving.
//!
//! - `stalled_connections`: raw TCP connections that never start the handshake (no network
//!   key needed), over a thousand kept open against a node whose open-file limit is 1,024;
//! - `junk_chunks`: a member `Put`s valid chunks the node does not own;
//! - `leaving_forever`: a member announces `Leaving` forever while a file is deleted.
//!
//! The rogue member is this test binary run again as a child (the ignored
//! `rogue_peer_process` test runs `examples/rogue_peer.rs`). Needs root (FUSE mounts).

mod common;
#[path = "../examples/rogue_peer.rs"]
mod rogue;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ROGUE_ARGS_ENV: &str = "P2PFS_ROGUE_ARGS";

/// Not a test: the rogue peer, when started by the tests below (they set the environment).
#[test]
#[ignore = "the rogue peer process the tests start"]
fn rogue_peer_process() {
    if let Ok(args) = std::env::var(ROGUE_ARGS_ENV) {
        let args: Vec<String> = serde_json::from_str(&args).expect("rogue arguments");
        std::process::exit(rogue::run(args));
    }
}

/// A running rogue member: its JSON lines as they come.
#[allow(dead_code)]
struct Rogue {
    child: ChildGuard,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: PathBuf,
}

#[allow(dead_code)]
impl Rogue {
    /// Starts the rogue against `c.nodes[target]` with more arguments.
    fn spawn(c: &Cluster, target: usize, args: &[&str]) -> Rogue {
        let mut all = vec![
            "--network-key".to_string(),
            c.key.display().to_string(),
            "--target".to_string(),
            c.nodes[target].bootstrap_addr(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        static SPAWNED: AtomicU32 = AtomicU32::new(0);
        let stderr = c.nodes[target].scratch().join(format!(
            "rogue-{}.stderr",
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "rogue_peer_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROGUE_ARGS_ENV, serde_json::to_string(&all).unwrap())
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
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Some(start) = line.find('{') else {
                    continue;
                };
                if let Ok(v) = serde_json::from_str::<Value>(line[start..].trim()) {
                    eprintln!("rogue: {v}");
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Rogue {
            child: ChildGuard(Some(child)),
            events,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for an event named `name`; panics after `limit`.
    #[track_caller]
    fn wait_event(&self, name: &str, limit: Duration) -> Value {
        let mut found = None;
        let ok = wait_until(limit, || {
            found = self.events().into_iter().find(|e| e["event"] == name);
            found.is_some()
        });
        assert!(
            ok,
            "the rogue printed no {name} within {limit:?}: {:?}\nstderr: {}",
            self.events(),
            fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        found.unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// stalled connections

/// The open-file limit the attacked node runs under (soft and hard: it cannot raise it).
const NODE_OPEN_FILES: u32 = 1024;
/// Connections the attacker keeps open: more than the node has descriptors.
const STALLED: usize = 1200;

/// A TCP connection from `src` to `dst` that never says a word. `None` when the connect
/// fails or does not complete within a second (the node's accept queue is full).
fn stalled_connection(src: Ipv4Addr, dst: SocketAddrV4) -> Option<TcpStream> {
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns (handed to TcpStream, which
    // closes it, or closed here on failure).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let stream = TcpStream::from_raw_fd(fd);
        // On Linux the send timeout bounds a blocking connect.
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        let from = sockaddr(SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return None;
        }
        let to = sockaddr(dst);
        if libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0 {
            return None;
        }
        Some(stream)
    }
}

/// Whether the other end closed `s` (or reset it).
fn closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).ok();
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Keeps [`STALLED`] silent connections open to `dst` from `sources` (round robin), replacing
/// those the node closes, once a second, until `stop`. Returns the most it had open at once.
fn stall(dst: SocketAddrV4, sources: Vec<Ipv4Addr>, stop: Arc<AtomicBool>) -> usize {
    let mut open: Vec<TcpStream> = Vec::new();
    let mut most = 0;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        open.retain(|s| !closed(s));
        let mut failures = 0;
        while open.len() < STALLED && failures < 50 {
            match stalled_connection(sources[i % sources.len()], dst) {
                Some(s) => open.push(s),
                None => failures += 1,
            }
            i += 1;
        }
        most = most.max(open.len());
        thread::sleep(Duration::from_secs(1));
    }
    most
}

fn tcp_port(multiaddr: &str) -> u16 {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    let i = parts
        .iter()
        .position(|p| *p == "tcp")
        .expect("a tcp address");
    parts[i + 1].parse().expect("a port")
}

/// A node whose open-file limit is 1,024 (hard: it cannot raise it) is attacked by someone
/// without the network key: 1,200 TCP connections that never start the handshake, from two
/// addresses, replaced as the node closes them. The node keeps running, its control socket
/// and mount answer, a new honest node joins it and files written on either side read back on
/// the other; the refusals are counted in `status`.
#[test]
fn stalled_connections_cannot_exhaust_a_nodes_file_descriptors() {
    let mut c = Cluster::empty(ClusterOpts::replicas(2));
    let mut first = c.init_node();
    first.set_run_prefix(&[
        "prlimit".to_string(),
        format!("--nofile={NODE_OPEN_FILES}:{NODE_OPEN_FILES}"),
        "--".to_string(),
    ]);
    c.nodes.push(first);
    c.start_node(0, None);
    let port = tcp_port(&c.nodes[0].listen_addr());
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        thread::spawn(move || {
            stall(
                target,
                vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
                stop,
            )
        })
    };
    let stop_attack = || {
        stop.store(true, Ordering::Relaxed);
    };
    struct StopOnDrop<F: Fn()>(F);
    impl<F: Fn()> Drop for StopOnDrop<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _stop = StopOnDrop(stop_attack);
    // Let the attack fill what it can (a few rounds of replacing closed connections).
    thread::sleep(Duration::from_secs(5));

    // The control socket answers and the node runs.
    let status = c.nodes[0]
        .try_status_within(Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "the attacked node's control socket does not answer: {e}\nlog:\n{}",
                c.nodes[0].log_text()
            )
        });
    assert!(c.nodes[0].is_running(), "the attacked node stopped");
    // The mount answers: a file written and read back on the attacked node.
    let mine = random_bytes(1, 300 * KIB);
    write_and_close(&c.nodes[0].p("under-attack.bin"), &mine).expect("write on the attacked node");
    assert_file_eq(&c.nodes[0].p("under-attack.bin"), &mine);

    // A new honest node joins during the attack and the two exchange files.
    let boot = format!(
        "{}/p2p/{}",
        c.nodes[0].listen_addr(),
        status["peer_id"].as_str().unwrap()
    );
    let second = c.init_node();
    c.nodes.push(second);
    c.start_node(1, Some(&boot));
    c.wait_formed();
    if let Err(e) = wait_for_file(&c.nodes[1].p("under-attack.bin"), &mine, SPREAD_TIMEOUT) {
        panic!("{e}{}", c.report());
    }
    let theirs = random_bytes(2, 300 * KIB);
    write_and_close(&c.nodes[1].p("joined.bin"), &theirs).expect("write on the new node");
    if let Err(e) = wait_for_file(&c.nodes[0].p("joined.bin"), &theirs, SPREAD_TIMEOUT) {
        panic!("{e}{}", c.report());
    }

    // The refusals are counted, and the attack was still going on all along.
    let status = c.nodes[0].status();
    let refused = &status["hostile"]["refused"];
    let per_address = refused["pending_per_address"].as_u64().unwrap_or(0);
    assert!(
        per_address > 0,
        "connections over the per-address limit are counted: {refused}"
    );
    stop.store(true, Ordering::Relaxed);
    let most = attacker.join().expect("the attacker thread");
    assert!(
        most >= STALLED / 2,
        "the attacker kept {most} connections open at most: the attack did not happen"
    );
    assert!(c.nodes[0].is_running(), "the attacked node stopped");
}
