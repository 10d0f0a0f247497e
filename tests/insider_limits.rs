//! Bounded cost of hostile input (issue 17): what anyone on the network path, or a member gone
//! bad, can make a node spend, and that deletion still happens when a member never finishes
//! leaving.
//!
//! - `stalled_connections`: raw TCP connections that never start the handshake (no network
//!   key needed), over a thousand kept open against a node whose open-file limit is 1,024;
//! - `junk_chunks`: a member `Put`s valid chunks the node does not own;
//! - `leaving_forever`: a member announces `Leaving` forever while a file is deleted.
//!
//! The rogue member is the `p2pfs-rogue` binary (the `rogue` feature). Needs root (FUSE
//! mounts).

mod common;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::rogue::*;
use common::*;

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

/// How far [`stall`] got: the most connections it held at once, and its rounds so far.
#[derive(Default)]
struct StallProgress {
    most_open: AtomicUsize,
    rounds: AtomicUsize,
}

/// Keeps [`STALLED`] silent connections open to `dst` from `sources` (round robin), replacing
/// those the node closes, once a second, until `stop`. Returns the most it had open at once,
/// which it also publishes in `progress` after every round.
fn stall(
    dst: SocketAddrV4,
    sources: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    progress: Arc<StallProgress>,
) -> usize {
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
        progress.most_open.store(most, Ordering::Relaxed);
        progress.rounds.fetch_add(1, Ordering::Relaxed);
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
    let progress = Arc::new(StallProgress::default());
    let attacker = {
        let (stop, progress) = (stop.clone(), progress.clone());
        thread::spawn(move || {
            stall(
                target,
                vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
                stop,
                progress,
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
    // barrier: the attack has held half its connections (what the end of the test requires it
    // reached) and had five rounds of replacing those the node closed, so what follows runs
    // under it.
    let (most, rounds) = (
        || progress.most_open.load(Ordering::Relaxed),
        || progress.rounds.load(Ordering::Relaxed),
    );
    assert!(
        wait_until(Duration::from_secs(90), || most() >= STALLED / 2
            && rounds() >= 5),
        "the attacker held at most {} connections in {} rounds",
        most(),
        rounds()
    );

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

// ---------------------------------------------------------------------------------------------
// members

/// `n` nodes with `opts`, each configured by `configure` before it starts; formed.
fn cluster_with(n: usize, opts: ClusterOpts, configure: impl Fn(&Node)) -> Cluster {
    let mut c = Cluster::empty(opts);
    for i in 0..n {
        let node = c.init_node();
        configure(&node);
        c.nodes.push(node);
        let boot = (i > 0).then(|| c.nodes[0].bootstrap_addr());
        c.start_node(i, boot.as_deref());
    }
    c.wait_formed();
    c
}

/// A member puts 200 valid chunks (their ids are their hashes) to one node of five, R = 1: the
/// node stores only those it owns or is next in rank for (2R: about two in five), refuses the
/// rest with a clear reason, counts the refusals, and its chunk store grows by no more than
/// what it said it stored. It keeps serving honest writes.
#[test]
fn junk_chunks_from_a_member_are_refused_counted_and_not_stored() {
    let c = Cluster::start(5, 1);
    let before = c.nodes[0].chunk_ids();
    let rogue = Rogue::spawn(&c, 0, &["--attack", "junk-chunks"]);
    let junk = rogue.wait_event("junk", Duration::from_secs(120));
    let summary = serde_json::json!({
        "sent": junk["sent"], "stored": junk["stored"], "refused": junk["refused"],
        "reasons": junk["reasons"],
    });
    // The rogue's plan; the bound on what the node stores below is figured for it.
    let sent = 200;
    assert_eq!(junk["planned"], sent, "the rogue's plan changed: {summary}");
    assert_eq!(junk["sent"], sent, "every put answered: {summary}");
    let stored = junk["stored"].as_u64().unwrap();
    let refused = junk["refused"].as_u64().unwrap();
    assert_eq!(
        junk["reasons"],
        serde_json::json!({ "not an owner of this chunk": refused }),
        "every refusal says why: {summary}"
    );
    // An owner-or-next node for about 2 in 5 chunks: 80 expected; 120 is six deviations off.
    assert!(
        refused > 0 && stored <= sent * 3 / 5,
        "the node took {stored} of {sent} chunks it was not asked to hold: {summary}"
    );
    // Stored exactly what it said, nothing it refused.
    let after = c.nodes[0].chunk_ids();
    let new: std::collections::BTreeSet<String> = after.difference(&before).cloned().collect();
    let said: std::collections::BTreeSet<String> = junk["stored_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // (Repair may already have moved some it took as next in rank on to their owner.)
    let unsaid: Vec<&String> = new.difference(&said).collect();
    assert!(
        unsaid.is_empty(),
        "the chunk store grew by what the node accepted only; also stored: {unsaid:?}"
    );
    let counted = c.nodes[0].status()["hostile"]["refused"]["not_owner"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        counted >= refused,
        "refusals counted: {counted} < {refused}"
    );
    // Honest writes still land (owners take their chunks) and read back elsewhere.
    let data = random_bytes(3, 2 * MIB);
    write_and_close(&c.nodes[1].p("honest.bin"), &data).expect("an honest write");
    if let Err(e) = wait_for_file(&c.nodes[0].p("honest.bin"), &data, SPREAD_TIMEOUT) {
        panic!("{e}{}", c.report());
    }
}

/// Garbage collection's bounds in this test: a leave times out after 8 s, and a member down
/// for 20 s no longer holds collection back; a chunk is collected 5 s after it is unreferenced.
const LEAVE_TIMEOUT_SECS: u64 = 8;
const FORGET_AFTER_SECS: u64 = 20;
const GC_GRACE_SECS: u64 = 5;

/// A member announces `Leaving` once a second and never leaves. It is dead for every node
/// once the leave timeout passes, and a deleted file's chunks are collected on every node
/// within the stated bound: `forget_after` after the member went down, plus the grace period
/// and a pass (here 20 + 5 + 3 s; the test allows 90 s).
#[test]
fn leaving_forever_does_not_hold_back_deletion() {
    leaving_forever(0);
}

/// As above, but every 6 s (under the 8 s leave timeout) the member announces `Alive` once
/// between two `Leaving` announcements: its leave and its time down are not restarted by it,
/// so it is dead after the leave timeout and collection waits no longer.
#[test]
fn leaving_forever_flapping_does_not_hold_back_deletion() {
    leaving_forever(6);
}

fn leaving_forever(flap_secs: u64) {
    let mut opts = ClusterOpts::replicas(2);
    // Deleted data is garbage at once (no earlier versions kept): what is measured is GC.
    opts.extra_args = vec![
        "--gc-grace".into(),
        GC_GRACE_SECS.to_string(),
        "--retention-days".into(),
        "0".into(),
    ];
    let c = cluster_with(2, opts, |n| {
        n.set_config("network", "dead_after_secs", "10");
        n.set_config(
            "network",
            "leave_timeout_secs",
            &LEAVE_TIMEOUT_SECS.to_string(),
        );
        n.set_config(
            "network",
            "forget_after_secs",
            &FORGET_AFTER_SECS.to_string(),
        );
    });
    let data = random_bytes(4, MIB);
    write_and_close(&c.nodes[0].p("doomed.bin"), &data).unwrap();
    if let Err(e) = wait_for_file(&c.nodes[1].p("doomed.bin"), &data, SPREAD_TIMEOUT) {
        panic!("{e}{}", c.report());
    }
    let chunks: Vec<String> = c.nodes[0].where_chunk_ids("doomed.bin").unwrap();
    assert!(!chunks.is_empty());
    let held = |i: usize| {
        let ids = c.nodes[i].chunk_ids();
        chunks.iter().filter(|id| ids.contains(*id)).count()
    };
    assert!(
        wait_until(SPREAD_TIMEOUT, || held(0) == chunks.len()
            && held(1) == chunks.len()),
        "both nodes hold every chunk (R = 2){}",
        c.report()
    );

    let flap_secs = flap_secs.to_string();
    let rogue = Rogue::spawn(
        &c,
        0,
        &[
            "--attack",
            "leaving-forever",
            "--duration-secs",
            "600",
            "--flap-secs",
            &flap_secs,
        ],
    );
    let start = rogue.wait_event("start", Duration::from_secs(30));
    let rogue_id = start["peer_id"].as_str().unwrap().to_string();
    rogue.wait_event("announcing", Duration::from_secs(30));
    assert!(
        wait_until(SPREAD_TIMEOUT, || (0..2)
            .all(
                |i| c.nodes[i].peer_state(&rogue_id).as_deref() == Some("leaving")
            )),
        "both nodes see the rogue leaving{}",
        c.report()
    );
    let went_down = std::time::Instant::now();
    fs::remove_file(c.nodes[0].p("doomed.bin")).unwrap();

    // Its leave times out while it keeps announcing: dead everywhere.
    assert!(
        wait_until(Duration::from_secs(60), || (0..2)
            .all(
                |i| c.nodes[i].peer_state(&rogue_id).as_deref() == Some("dead")
            )),
        "a leave that does not finish ends in dead{}",
        c.report()
    );
    // The deleted file's chunks leave every node within the bound.
    let bound = Duration::from_secs(FORGET_AFTER_SECS + GC_GRACE_SECS + 3);
    let collected = wait_until(Duration::from_secs(90), || held(0) == 0 && held(1) == 0);
    assert!(
        collected,
        "chunks of a deleted file still held after {:?} (bound {bound:?}): node 1 {}, node 2 {}{}",
        went_down.elapsed(),
        held(0),
        held(1),
        c.report()
    );
    eprintln!(
        "collected {:?} after the rogue went down (bound {bound:?})",
        went_down.elapsed()
    );
    assert!(
        rogue.events().iter().all(|e| e["event"] != "announced"),
        "the rogue was still announcing Leaving all along"
    );
}
