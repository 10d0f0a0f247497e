//! Several p2pfs nodes on loopback (no mDNS) forming one network: a file
//! written on one node is readable on the others, chunks live on exactly R
//! owners, a late joiner catches up with the whole namespace, and a node with
//! another network key is kept out. Needs root (FUSE mounts).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// For every chunk id stored anywhere in the cluster, the (1-based) nodes
/// holding it.
fn chunk_holders(c: &Cluster) -> BTreeMap<String, Vec<usize>> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, n) in c.nodes.iter().enumerate() {
        for id in n.chunk_ids() {
            m.entry(id).or_default().push(i + 1);
        }
    }
    m
}

/// Chunks whose holders are not exactly `r` nodes, for a failure message.
fn misplaced(holders: &BTreeMap<String, Vec<usize>>, r: usize) -> Vec<(String, Vec<usize>)> {
    holders
        .iter()
        .filter(|(_, h)| h.len() != r)
        .map(|(id, h)| (id[..12].to_string(), h.clone()))
        .collect()
}

#[test]
fn three_nodes_write_on_one_read_on_others() {
    let c = Cluster::start(3, 3);
    let big = random_bytes(1, 5 * MIB + 12_345);
    let text = b"hello from node 1\nsecond line\n".to_vec();
    write_and_close(&c.nodes[0].p("big.bin"), &big).unwrap();
    write_and_close(&c.nodes[0].p("note.txt"), &text).unwrap();

    for i in [1, 2] {
        for (name, want) in [("big.bin", &big), ("note.txt", &text)] {
            if let Err(e) = wait_for_file(&c.nodes[i].p(name), want, SPREAD_TIMEOUT) {
                panic!("node {}: {e}", i + 1);
            }
        }
        // And with cmp, as a user would.
        let out = run_cmd(
            std::process::Command::new("cmp")
                .arg(c.nodes[0].p("big.bin"))
                .arg(c.nodes[i].p("big.bin")),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "cmp node 1 vs node {}: {}",
            i + 1,
            out_text(&out)
        );
    }

    // R = 3 with 3 nodes: every chunk on every node. 5 MiB + a bit in 1 MiB
    // chunks is 6 chunks, the text file 1.
    let holders = chunk_holders(&c);
    assert_eq!(
        holders.len(),
        7,
        "expected 7 distinct chunks in the cluster, found {}: {holders:?}",
        holders.len()
    );
    let bad = misplaced(&holders, 3);
    assert!(bad.is_empty(), "chunks not on all 3 nodes: {bad:?}");

    // `p2pfs-ctl where` agrees: 6 chunks, each owned by and held on the 3 nodes.
    let out = run_cmd(
        Command::new(ctl_bin())
            .arg("--data-dir")
            .arg(&c.nodes[1].dir)
            .args(["where", "big.bin", "--json"]),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out_text(&out));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chunks = w["chunks"].as_array().expect("chunks array");
    assert_eq!(chunks.len(), 6, "{w}");
    let mut ids = c.peer_ids();
    ids.sort();
    for ch in chunks {
        assert!(holders.contains_key(ch["id"].as_str().unwrap()), "{ch}");
        for field in ["owners", "holders"] {
            let mut got: Vec<String> = ch[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, ids, "{field} of {ch}");
        }
    }
    let missing = run_cmd(
        Command::new(ctl_bin())
            .arg("--data-dir")
            .arg(&c.nodes[1].dir)
            .args(["where", "no/such/file"]),
        CMD_TIMEOUT,
    );
    assert!(
        !missing.status.success(),
        "where of a missing file must fail"
    );
}

#[test]
fn five_nodes_chunks_on_exactly_r_owners() {
    let chunk = 65_536;
    let c = Cluster::start_opts(
        5,
        ClusterOpts {
            chunk_size: Some(chunk),
            ..ClusterOpts::replicas(3)
        },
    );
    let data = random_bytes(2, 3 * MIB);
    let n_chunks = data.len().div_ceil(chunk);
    assert_eq!(n_chunks, 48);
    write_and_close(&c.nodes[0].p("three.bin"), &data).unwrap();

    // close returned: every chunk is stored on its R owners.
    let holders = chunk_holders(&c);
    assert_eq!(
        holders.len(),
        n_chunks,
        "expected {n_chunks} distinct chunks right after close, found {}",
        holders.len()
    );
    let bad = misplaced(&holders, 3);
    assert!(
        bad.is_empty(),
        "{} of {n_chunks} chunks are not on exactly 3 of 5 nodes right after close: {bad:?}",
        bad.len()
    );
    // Placement spreads the load: with 48 chunks every node holds some.
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(
            !n.chunk_ids().is_empty(),
            "node {} holds none of the {n_chunks} chunks",
            i + 1
        );
    }

    for i in [4, 2] {
        if let Err(e) = wait_for_file(&c.nodes[i].p("three.bin"), &data, SPREAD_TIMEOUT) {
            panic!("node {}: {e}", i + 1);
        }
    }

    // Reading fetched remote chunks but did not add copies: still exactly 3.
    let after = chunk_holders(&c);
    let bad = misplaced(&after, 3);
    assert!(
        bad.is_empty() && after.len() == n_chunks,
        "after reads on nodes 5 and 3, chunks not on exactly 3 nodes: {bad:?} ({} chunks)",
        after.len()
    );

    let ids = c.peer_ids();
    for (i, n) in c.nodes.iter().enumerate() {
        let s = n.status();
        let want = others(&ids, i);
        assert_eq!(
            alive_peers(&s),
            want,
            "node {}: peers {:?}",
            i + 1,
            status_peers(&s)
        );
        assert_eq!(s["network"], "connected", "node {}", i + 1);
        assert_eq!(s["replication"]["factor"], 3, "node {}", i + 1);
        assert_eq!(
            s["replication"]["chunks_stored"],
            n.chunk_ids().len(),
            "node {}: chunks_stored vs files in chunks/",
            i + 1
        );
        assert_eq!(s["replication"]["under_replicated"], 0, "node {}", i + 1);
    }
}

/// What a tree looks like, for comparison between nodes: per relative path,
/// the kind, permission bits, size (files and symlinks), symlink target and
/// file content.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Item {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        content: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
    },
}

type Tree = BTreeMap<PathBuf, Item>;

/// Describes the tree below `root`; an error (a vanished entry, a failed
/// read) is returned, not panicked on, so callers can poll.
fn describe(root: &Path) -> Result<Tree, String> {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|e| format!("read_dir {}: {e}", d.display()))?;
        for ent in rd {
            let p = ent.map_err(|e| e.to_string())?.path();
            if d == root && is_volume_dir(p.file_name().unwrap()) {
                continue;
            }
            let md = fs::symlink_metadata(&p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = md.permissions().mode() & 0o7777;
            let item = if md.is_dir() {
                stack.push(p.clone());
                Item::Dir { mode }
            } else if md.file_type().is_symlink() {
                Item::Symlink {
                    target: fs::read_link(&p)
                        .map_err(|e| format!("readlink {}: {e}", p.display()))?,
                }
            } else {
                let content = fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
                if content.len() as u64 != md.size() {
                    return Err(format!(
                        "{}: read {} bytes, stat says {}",
                        p.display(),
                        content.len(),
                        md.size()
                    ));
                }
                Item::File {
                    mode,
                    size: md.size(),
                    content,
                }
            };
            out.insert(rel, item);
        }
    }
    Ok(out)
}

/// The differences between two trees, without dumping file contents.
fn tree_diff(got: &Tree, want: &Tree) -> String {
    let brief = |i: &Item| match i {
        Item::File { mode, size, .. } => format!("file {mode:o} {size} bytes"),
        other => format!("{other:?}"),
    };
    let keys: BTreeSet<&PathBuf> = got.keys().chain(want.keys()).collect();
    let mut s = String::new();
    for k in keys {
        match (got.get(k), want.get(k)) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) => {
                let what = if brief(g) == brief(w) {
                    "contents differ".to_string()
                } else {
                    format!("got {}, want {}", brief(g), brief(w))
                };
                s.push_str(&format!("  {}: {what}\n", k.display()));
            }
            (Some(g), None) => s.push_str(&format!("  {}: unexpected {}\n", k.display(), brief(g))),
            (None, Some(w)) => s.push_str(&format!("  {}: missing {}\n", k.display(), brief(w))),
            (None, None) => unreachable!(),
        }
    }
    s
}

/// Polls until the tree at `root` equals `want`; panics with the difference.
#[track_caller]
fn wait_for_tree(what: &str, root: &Path, want: &Tree, timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, || match describe(root) {
        Ok(t) if &t == want => true,
        Ok(t) => {
            last = tree_diff(&t, want);
            false
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(
        ok,
        "{what}: tree did not match within {timeout:?}; last difference:\n{last}"
    );
}

#[test]
fn late_joiner_gets_whole_namespace() {
    // The expected modes below assume the usual umask.
    unsafe {
        libc::umask(0o022);
    }
    let mut c = Cluster::start(3, 3);
    let data = random_bytes(3, 200 * KIB + 7);
    let photo = random_bytes(4, 300 * KIB);

    // Node 1: directories, files with several modes, symlinks.
    let n1 = &c.nodes[0];
    fs::create_dir_all(n1.p("docs/sub/deep")).unwrap();
    fs::create_dir(n1.p("tmpdir")).unwrap();
    write_and_close(&n1.p("docs/readme.txt"), b"read me\n").unwrap();
    write_and_close(&n1.p("docs/sub/data.bin"), &data).unwrap();
    write_and_close(&n1.p("docs/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(n1.p("docs/script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write_and_close(&n1.p("tmpdir/old-name.txt"), b"moved across dirs\n").unwrap();
    write_and_close(&n1.p("gone.txt"), b"deleted later\n").unwrap();
    std::os::unix::fs::symlink("sub/data.bin", n1.p("docs/link")).unwrap();
    let from_n1 = describe(&n1.mnt).unwrap();
    assert_eq!(from_n1.len(), 10, "node 1 tree: {from_n1:?}");

    // Node 2 works on node 1's files once it sees them.
    let n2 = &c.nodes[1];
    wait_for_tree(
        "node 2 before its changes",
        &n2.mnt,
        &from_n1,
        SPREAD_TIMEOUT,
    );
    fs::rename(n2.p("tmpdir/old-name.txt"), n2.p("docs/new-name.txt")).unwrap();
    fs::rename(n2.p("tmpdir"), n2.p("renamed-dir")).unwrap();
    fs::remove_file(n2.p("gone.txt")).unwrap();
    fs::create_dir(n2.p("photos")).unwrap();
    write_and_close(&n2.p("photos/p1.jpg"), &photo).unwrap();
    fs::set_permissions(n2.p("photos/p1.jpg"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(n2.p("docs/sub/deep"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", n2.p("abs-link")).unwrap();
    // A file written on node 1, then overwritten on node 2.
    write_and_close(&n2.p("docs/readme.txt"), b"read me, version 2\n").unwrap();

    let want = describe(&n2.mnt).unwrap();
    let expect = |p: &str, item: Item| {
        assert_eq!(want.get(Path::new(p)), Some(&item), "node 2: {p}");
    };
    expect("docs", Item::Dir { mode: 0o755 });
    expect("docs/sub/deep", Item::Dir { mode: 0o700 });
    expect("renamed-dir", Item::Dir { mode: 0o755 });
    expect(
        "docs/new-name.txt",
        Item::File {
            mode: 0o644,
            size: 18,
            content: b"moved across dirs\n".to_vec(),
        },
    );
    expect(
        "docs/script.sh",
        Item::File {
            mode: 0o755,
            size: 18,
            content: b"#!/bin/sh\necho hi\n".to_vec(),
        },
    );
    expect(
        "docs/readme.txt",
        Item::File {
            mode: 0o644,
            size: 19,
            content: b"read me, version 2\n".to_vec(),
        },
    );
    expect(
        "docs/link",
        Item::Symlink {
            target: "sub/data.bin".into(),
        },
    );
    expect(
        "abs-link",
        Item::Symlink {
            target: "/nonexistent/target".into(),
        },
    );
    assert!(matches!(
        want.get(Path::new("photos/p1.jpg")),
        Some(Item::File {
            mode: 0o600,
            size: 307_200,
            ..
        })
    ));
    assert!(!want.contains_key(Path::new("gone.txt")));
    assert!(!want.contains_key(Path::new("tmpdir")));
    assert_eq!(want.len(), 12, "node 2 tree: {:?}", want.keys());

    wait_for_tree("node 1", &c.nodes[0].mnt, &want, SPREAD_TIMEOUT);
    wait_for_tree("node 3", &c.nodes[2].mnt, &want, SPREAD_TIMEOUT);

    // Node 4 comes after all that, bootstrapped to node 2.
    let t = Instant::now();
    let i = c.add_node(1);
    c.wait_formed();
    wait_for_tree("late node 4", &c.nodes[i].mnt, &want, SPREAD_TIMEOUT);
    eprintln!("late joiner caught up in {:?}", t.elapsed());
    let s = c.nodes[i].status();
    assert_eq!(s["files"], 12, "node 4 status.files");
}

#[test]
fn wrong_network_key_is_refused() {
    let c = Cluster::start(2, 3);
    let key_dir = tempfile::tempdir().unwrap();
    let key_b = key_dir.path().join("other.key");
    let mut b = Node::init_with_key(&key_b);
    assert_ne!(
        fs::read(&key_b).unwrap(),
        fs::read(&c.key).unwrap(),
        "the two network keys must differ"
    );
    let boot = c.nodes[0].bootstrap_addr();
    b.start_args(&loopback_args(3, &["--bootstrap".into(), boot]));
    let report_b = |b: &Node| format!("\n===== node B log =====\n{}", b.log_text());

    let (id1, id2) = (c.nodes[0].peer_id(), c.nodes[1].peer_id());
    let from_b = b"written on the key-B node\n".to_vec();
    let from_a = b"written on node 1 (key A)\n".to_vec();
    write_and_close(&b.p("from-b.txt"), &from_b).unwrap();
    write_and_close(&c.nodes[0].p("from-a.txt"), &from_a).unwrap();

    // Positive control: node 2 (same key) does get node 1's file.
    if let Err(e) = wait_for_file(&c.nodes[1].p("from-a.txt"), &from_a, SPREAD_TIMEOUT) {
        panic!("node 2: {e}{}", report_b(&b));
    }

    // barrier: node B has dialed node 1 and failed (the handshake needs the same key).
    assert!(
        wait_until(SPREAD_TIMEOUT, || b.count_log_lines(
            |l| l.contains("cannot connect to a bootstrap address")
        ) > 0),
        "node B never tried its bootstrap address{}",
        report_b(&b)
    );
    // For 12 s (longer than the 10 s anti-entropy period) node B stays out.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut checks = 0;
    while Instant::now() < deadline {
        let sb = b.status();
        assert_eq!(
            sb["network"],
            "isolated",
            "node B is not isolated: {sb:#}{}",
            report_b(&b)
        );
        assert!(
            status_peers(&sb).is_empty(),
            "node B lists peers: {:?}{}",
            status_peers(&sb),
            report_b(&b)
        );
        let s1 = c.nodes[0].status();
        let peers1 = status_peers(&s1);
        assert!(
            peers1.len() == 1 && peers1[0].0 == id2,
            "node 1 should list only node 2 ({id2}); lists {peers1:?}{}",
            report_b(&b)
        );
        let s2 = c.nodes[1].status();
        let peers2 = status_peers(&s2);
        assert!(
            peers2.len() == 1 && peers2[0].0 == id1,
            "node 2 should list only node 1 ({id1}); lists {peers2:?}{}",
            report_b(&b)
        );
        for (i, n) in c.nodes.iter().enumerate() {
            assert!(
                fs::symlink_metadata(n.p("from-b.txt")).is_err(),
                "node B's file appeared on node {}{}",
                i + 1,
                report_b(&b)
            );
        }
        assert!(
            fs::symlink_metadata(b.p("from-a.txt")).is_err(),
            "node 1's file appeared on node B{}",
            report_b(&b)
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(checks >= 5);
    // B still has its own file and only that.
    assert_file_eq(&b.p("from-b.txt"), &from_b);
    assert_eq!(root_names(&b.mnt), ["from-b.txt"], "node B's mount");
    assert_eq!(b.status()["files"], 1);
}

#[test]
fn crashed_peer_turns_suspect_then_dead_and_restart_revives_it() {
    let opts = ClusterOpts {
        extra_args: vec!["--dead-after".into(), "8".into()],
        ..ClusterOpts::replicas(3)
    };
    let mut c = Cluster::start_opts(3, opts);
    let victim = c.nodes[2].peer_id();
    c.nodes[2].kill9();
    c.nodes[2].cleanup_dead_mount();
    let state_of = |s: &serde_json::Value| {
        status_peers(s)
            .into_iter()
            .find(|(p, _)| *p == victim)
            .map(|(_, st)| st)
    };
    let started = Instant::now();
    // Suspect after a few seconds of silence (6 s by default), not yet dead.
    let mut seen_suspect_at = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let st = state_of(&c.nodes[0].status());
            if st.as_deref() == Some("suspect") && seen_suspect_at.is_none() {
                seen_suspect_at = Some(started.elapsed());
            }
            st.as_deref() == Some("dead")
        }),
        "node 1 never saw the killed peer as dead: {}",
        c.nodes[0].status()
    );
    let dead_at = started.elapsed();
    let suspect_at = seen_suspect_at.expect("the peer must be suspect before it is dead");
    assert!(
        suspect_at >= Duration::from_secs(4),
        "suspect too early: {suspect_at:?}"
    );
    assert!(
        dead_at >= Duration::from_secs(7),
        "dead before --dead-after: {dead_at:?}"
    );
    // The other survivor agrees (its clock of the last contact may differ by a moment).
    assert!(
        wait_until(Duration::from_secs(5), || state_of(&c.nodes[1].status())
            .as_deref()
            == Some("dead")),
        "node 2 does not see the killed peer as dead: {}",
        c.nodes[1].status()
    );

    // It comes back: alive again everywhere.
    let boot = c.nodes[0].bootstrap_addr();
    c.nodes[2].start_args(&loopback_args(
        3,
        &[
            "--dead-after".into(),
            "8".into(),
            "--bootstrap".into(),
            boot,
        ],
    ));
    assert!(
        wait_until(FORM_TIMEOUT, || state_of(&c.nodes[0].status()).as_deref()
            == Some("alive")),
        "the restarted peer is not alive again: {}",
        c.nodes[0].status()
    );
}

/// Self-repair: a node killed for good has its chunks re-replicated from the survivors once it
/// is dead; when it comes back, data moves back to it and the extra copies are dropped, so
/// every chunk ends on exactly R nodes again.
#[test]
fn dead_node_is_repaired_and_a_rejoin_rebalances_to_exactly_r() {
    let chunk = 65_536;
    let mut c = Cluster::start_opts(
        4,
        ClusterOpts {
            chunk_size: Some(chunk),
            extra_args: vec!["--dead-after".into(), "5".into()],
            ..ClusterOpts::replicas(3)
        },
    );
    let data = random_bytes(9, 2 * MIB);
    write_and_close(&c.nodes[0].p("repair.bin"), &data).unwrap();
    let n_chunks = data.len().div_ceil(chunk);
    let holders = chunk_holders(&c);
    assert_eq!(holders.len(), n_chunks);
    assert!(misplaced(&holders, 3).is_empty());
    let victim_held = c.nodes[3].chunk_ids().len();
    assert!(victim_held > 0, "node 4 should hold some chunks");

    // Kill node 4 for good: once it is dead, the 3 survivors must hold every chunk.
    c.nodes[3].kill9();
    c.nodes[3].cleanup_dead_mount();
    let survivors_hold_all =
        |c: &Cluster| c.nodes[..3].iter().all(|n| n.chunk_ids().len() == n_chunks);
    assert!(
        wait_until(Duration::from_secs(60), || survivors_hold_all(&c)),
        "survivors did not restore 3 copies: {:?}",
        c.nodes[..3]
            .iter()
            .map(|n| n.chunk_ids().len())
            .collect::<Vec<_>>()
    );
    for n in &c.nodes[..3] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let s = n.status();
                s["replication"]["under_replicated"] == 0 && s["replication"]["repair_queue"] == 0
            }),
            "repair not finished: {}",
            n.status()
        );
    }
    assert_file_eq(&c.nodes[2].p("repair.bin"), &data);

    // It comes back: data moves back to it, and extra copies go, to exactly 3 per chunk.
    let boot = c.nodes[0].bootstrap_addr();
    c.nodes[3].start_args(&loopback_args(
        3,
        &[
            "--dead-after".into(),
            "5".into(),
            "--bootstrap".into(),
            boot,
        ],
    ));
    assert!(
        wait_until(Duration::from_secs(90), || misplaced(&chunk_holders(&c), 3)
            .is_empty()),
        "not rebalanced to exactly 3 copies: {:?}",
        misplaced(&chunk_holders(&c), 3)
    );
    assert_eq!(chunk_holders(&c).len(), n_chunks);
    assert_file_eq(&c.nodes[3].p("repair.bin"), &data);
}

/// Graceful leave (`p2pfs-ctl leave`, same path as SIGTERM): the node hands its chunks off
/// before it exits 0, and the others show it `left` at once, without waiting for --dead-after.
/// Proof work is paced at 1 MB/s per asker, and the leaver holds ~27 MiB that two survivors
/// each claim: proving every claim one owner after another would take ~55 s, over the 45 s
/// the handoff has, so this also shows claims are checked by a sample, owners in parallel.
#[test]
fn graceful_leave_hands_off_and_shows_left() {
    let chunk = 65_536;
    let mut c = Cluster::empty(ClusterOpts {
        chunk_size: Some(chunk),
        ..ClusterOpts::replicas(3)
    });
    for i in 0..4 {
        let node = c.init_node();
        node.set_config("network", "prove_rate_mb", "1");
        c.nodes.push(node);
        let boot = (i > 0).then(|| c.nodes[0].bootstrap_addr());
        c.start_node(i, boot.as_deref());
    }
    c.wait_formed();
    let data = random_bytes(11, 36 * MIB);
    write_and_close(&c.nodes[0].p("leave.bin"), &data).unwrap();
    let n_chunks = data.len().div_ceil(chunk);
    assert!(misplaced(&chunk_holders(&c), 3).is_empty());
    let leaver = c.nodes[3].peer_id();
    let held = c.nodes[3].chunk_ids().len();
    assert!(held > 0);

    let out = run_cmd(
        Command::new(ctl_bin())
            .args(["--data-dir"])
            .arg(&c.nodes[3].dir)
            .arg("leave"),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains(&format!("handed off {held} of {held} chunks")),
        "{}",
        out_text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(30), || !c.nodes[3].is_running()),
        "the node did not exit after leave; log:\n{}",
        c.nodes[3].log_text()
    );
    c.nodes[3].stop(); // asserts exit status 0 and no mount left
    // Handed off before exit: the three others hold every chunk, right away.
    for n in &c.nodes[..3] {
        assert_eq!(
            n.chunk_ids().len(),
            n_chunks,
            "a survivor lacks chunks right after the leave"
        );
    }
    // Shown as left well before the 60 s --dead-after.
    assert!(
        wait_until(Duration::from_secs(5), || {
            status_peers(&c.nodes[0].status())
                .iter()
                .any(|(p, s)| *p == leaver && s == "left")
        }),
        "node 1 does not show the leaver as left: {}",
        c.nodes[0].status()
    );
    assert_file_eq(&c.nodes[1].p("leave.bin"), &data);
}

/// A chunk file whose bytes no longer match its name (chunks are named by the blake3 of their
/// bytes).
fn chunk_is_intact(path: &Path) -> bool {
    match fs::read(path) {
        Ok(bytes) => {
            blake3::hash(&bytes).to_hex().as_str() == path.file_name().unwrap().to_str().unwrap()
        }
        Err(_) => false,
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x5a;
    fs::write(path, bytes).unwrap();
    assert!(!chunk_is_intact(path));
}

fn a_chunk_file(node: &Node) -> PathBuf {
    let id = node
        .chunk_ids()
        .into_iter()
        .next()
        .expect("the node holds chunks");
    node.dir
        .join("chunks")
        .join(&id[0..2])
        .join(&id[2..4])
        .join(&id)
}

/// A read that meets a corrupt local chunk is served from a replica without an error and puts
/// a good copy back; the periodic scrub finds and replaces corrupt copies nobody reads.
#[test]
fn corrupt_chunks_are_served_from_replicas_and_scrubbed() {
    let chunk = 65_536;
    let mut c = Cluster::empty(ClusterOpts {
        chunk_size: Some(chunk),
        ..ClusterOpts::replicas(3)
    });
    for _ in 0..3 {
        let n = c.init_node();
        // Node 3 scrubs every 2 s.
        if c.nodes.len() == 2 {
            n.set_config("storage", "scrub_interval_secs", "2");
        }
        c.nodes.push(n);
    }
    c.start_node(0, None);
    let boot = c.nodes[0].bootstrap_addr();
    c.start_node(1, Some(&boot));
    c.start_node(2, Some(&boot));
    c.wait_formed();
    let data = random_bytes(13, MIB);
    write_and_close(&c.nodes[0].p("heal.bin"), &data).unwrap();
    assert!(wait_for_file(&c.nodes[1].p("heal.bin"), &data, SPREAD_TIMEOUT).is_ok());

    // Read path: corrupt one of node 2's chunks while it is down (so nothing is cached).
    c.nodes[1].stop();
    let bad = a_chunk_file(&c.nodes[1]);
    flip_a_byte(&bad);
    c.start_node(1, Some(&boot));
    c.wait_formed();
    assert_file_eq(&c.nodes[1].p("heal.bin"), &data);
    assert!(
        chunk_is_intact(&bad),
        "the read did not put a good copy back"
    );

    // Scrub: corrupt a chunk on node 3 and read nothing; the scrub replaces it.
    let bad = a_chunk_file(&c.nodes[2]);
    flip_a_byte(&bad);
    assert!(
        wait_until(Duration::from_secs(20), || chunk_is_intact(&bad)),
        "scrub did not restore the corrupt chunk; log:\n{}",
        c.nodes[2].log_text()
    );
}

/// For every chunk of the files at `paths` (by `p2pfs-ctl where` on `asker`), the (1-based)
/// nodes among `among` (0-based) holding it on disk; the path it belongs to is kept for
/// failure messages.
fn live_chunk_holders(
    c: &Cluster,
    asker: usize,
    paths: &[&str],
    among: &[usize],
) -> BTreeMap<String, (String, Vec<usize>)> {
    let mut out = BTreeMap::new();
    for p in paths {
        let ids = c.nodes[asker]
            .where_chunk_ids(p)
            .unwrap_or_else(|e| panic!("node {}: {e}", asker + 1));
        for id in ids {
            out.insert(id, (p.to_string(), Vec::new()));
        }
    }
    for &i in among {
        let held = c.nodes[i].chunk_ids();
        for (id, (_, holders)) in out.iter_mut() {
            if held.contains(id) {
                holders.push(i + 1);
            }
        }
    }
    out
}

/// Polls until every chunk of the files at `paths` is held by exactly `r` of the nodes in
/// `among`; panics with the chunks that are not.
#[track_caller]
fn wait_live_chunks_on(c: &Cluster, paths: &[&str], among: &[usize], r: usize, timeout: Duration) {
    let asker = among[0];
    let mut bad = Vec::new();
    let mut n = 0;
    let ok = wait_until(timeout, || {
        let holders = live_chunk_holders(c, asker, paths, among);
        n = holders.len();
        bad = holders
            .iter()
            .filter(|(_, (_, h))| h.len() != r)
            .map(|(id, (p, h))| format!("{} of {p} on {h:?}", &id[..12]))
            .collect();
        if bad.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
        false
    });
    let statuses: Vec<String> = among
        .iter()
        .map(|&i| format!("node {}: {}", i + 1, c.nodes[i].status()["replication"]))
        .collect();
    assert!(
        ok,
        "{} of {n} live chunks are not on exactly {r} of nodes {:?} after {timeout:?}: {bad:?}\n{}",
        bad.len(),
        among.iter().map(|i| i + 1).collect::<Vec<_>>(),
        statuses.join("\n")
    );
}

/// A node killed while the others change the namespace (modify, delete, rename, create) comes
/// back on its stale data dir: its mount converges to the new state, what it still holds of
/// the old one (the deleted file, the old name, the old content) does not come back anywhere
/// however often anti-entropy runs, and every chunk of the live files ends on exactly R nodes.
#[test]
fn node_restarted_with_stale_data_converges_and_deletions_stick() {
    // The expected modes below assume the usual umask.
    unsafe {
        libc::umask(0o022);
    }
    let sync_secs = 2;
    let mut c = Cluster::empty(ClusterOpts {
        chunk_size: Some(256 * KIB),
        extra_args: vec!["--dead-after".into(), "5".into()],
        ..ClusterOpts::replicas(3)
    });
    for _ in 0..4 {
        let n = c.init_node();
        // Anti-entropy every 2 s instead of 10.
        n.set_config("network", "sync_interval_secs", &sync_secs.to_string());
        c.nodes.push(n);
    }
    c.start_node(0, None);
    let boot = c.nodes[0].bootstrap_addr();
    for i in 1..4 {
        c.start_node(i, Some(&boot));
    }
    c.wait_formed();

    let keep = random_bytes(31, 700 * KIB + 1);
    let old = random_bytes(32, MIB + 5);
    let doomed = random_bytes(33, 600 * KIB);
    let moved = random_bytes(34, 900 * KIB + 3);
    let n1 = &c.nodes[0];
    fs::create_dir(n1.p("dir")).unwrap();
    write_and_close(&n1.p("keep.bin"), &keep).unwrap();
    write_and_close(&n1.p("modified.bin"), &old).unwrap();
    write_and_close(&n1.p("deleted.bin"), &doomed).unwrap();
    write_and_close(&n1.p("dir/old-name.bin"), &moved).unwrap();
    let before = describe(&n1.mnt).unwrap();
    assert_eq!(before.len(), 5, "{:?}", before.keys());
    for i in 1..4 {
        wait_for_tree(
            &format!("node {}", i + 1),
            &c.nodes[i].mnt,
            &before,
            SPREAD_TIMEOUT,
        );
    }

    // Node 4 goes down hard; the others change the namespace, each through its own mount.
    let victim = c.nodes[3].peer_id();
    c.nodes[3].kill9();
    c.nodes[3].cleanup_dead_mount();
    let new = random_bytes(35, 3 * MIB / 2 + 11);
    let created = random_bytes(36, 800 * KIB);
    write_and_close(&c.nodes[1].p("modified.bin"), &new).unwrap();
    fs::remove_file(c.nodes[2].p("deleted.bin")).unwrap();
    fs::rename(
        c.nodes[0].p("dir/old-name.bin"),
        c.nodes[0].p("new-name.bin"),
    )
    .unwrap();
    write_and_close(&c.nodes[1].p("dir/created.bin"), &created).unwrap();

    let file = |content: &[u8]| Item::File {
        mode: 0o644,
        size: content.len() as u64,
        content: content.to_vec(),
    };
    let want: Tree = [
        ("dir", Item::Dir { mode: 0o755 }),
        ("keep.bin", file(&keep)),
        ("modified.bin", file(&new)),
        ("new-name.bin", file(&moved)),
        ("dir/created.bin", file(&created)),
    ]
    .into_iter()
    .map(|(p, item)| (PathBuf::from(p), item))
    .collect();
    for i in 0..3 {
        wait_for_tree(
            &format!("node {} after the changes", i + 1),
            &c.nodes[i].mnt,
            &want,
            SPREAD_TIMEOUT,
        );
    }
    // Wait until the survivors have given the victim up (and repaired), so its return is a
    // rejoin of a dead node with stale data.
    for n in &c.nodes[..3] {
        assert!(
            wait_until(Duration::from_secs(30), || n.peer_state(&victim).as_deref()
                == Some("dead")),
            "the killed node is not dead to {}: {}",
            n.dir.display(),
            n.status()
        );
    }
    // Its data dir still has the old state.
    assert!(c.nodes[3].dir.join("namespace.redb").exists());

    let t = Instant::now();
    c.start_node(3, Some(&boot));
    c.wait_formed();
    wait_for_tree(
        "restarted node 4",
        &c.nodes[3].mnt,
        &want,
        Duration::from_secs(60),
    );
    eprintln!("the restarted node converged in {:?}", t.elapsed());

    // Several anti-entropy rounds later nothing stale has come back, on any node.
    // barrier: every node has started and completed two more anti-entropy sessions
    // (status.passes.sync); a session merges both ways.
    let want_syncs: Vec<u64> = c.nodes.iter().map(|n| passes(n, "sync") + 2).collect();
    let synced = || {
        c.nodes
            .iter()
            .zip(&want_syncs)
            .all(|(n, &want)| passes(n, "sync") >= want)
    };
    let until = Instant::now() + Duration::from_secs(4 * sync_secs + 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    while Instant::now() < until || !synced() {
        assert!(
            Instant::now() < deadline,
            "barrier: the nodes did not complete two more anti-entropy sessions{}",
            c.report()
        );
        for (i, n) in c.nodes.iter().enumerate() {
            match describe(&n.mnt) {
                Ok(tree) if tree == want => {}
                Ok(tree) => panic!(
                    "node {}: {:?} after the restart the tree differs:\n{}",
                    i + 1,
                    t.elapsed(),
                    tree_diff(&tree, &want)
                ),
                Err(e) => panic!("node {}: {e}", i + 1),
            }
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(rounds >= 5);
    for (i, n) in c.nodes.iter().enumerate() {
        let s = n.status();
        assert_eq!(s["files"], want.len(), "node {}: status.files", i + 1);
        assert_eq!(s["rejected_entries"], 0, "node {}", i + 1);
    }

    // Every chunk of every live file on exactly R = 3 of the 4 nodes.
    wait_live_chunks_on(
        &c,
        &[
            "keep.bin",
            "modified.bin",
            "new-name.bin",
            "dir/created.bin",
        ],
        &[0, 1, 2, 3],
        3,
        Duration::from_secs(90),
    );
}

/// kill -9 of R - 1 = 2 of 5 nodes while a writer streams files through node 1's mount: every
/// write and close that returned success reads back intact on every survivor, and once the
/// two are dead (`--dead-after`) every chunk of every file is on all 3 survivors.
#[test]
fn kill_r_minus_one_nodes_during_writes_loses_nothing() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut c = Cluster::start_opts(
        5,
        ClusterOpts {
            extra_args: vec!["--dead-after".into(), "5".into()],
            ..ClusterOpts::replicas(3)
        },
    );
    const FILES: usize = 10;
    const PIECE: usize = 256 * KIB;
    let sizes: Vec<usize> = (0..FILES).map(|k| 3 * MIB + k * 123_457).collect();
    let total: usize = sizes.iter().sum();
    // Bytes the writer has handed to write(2) so far.
    let progress = Arc::new(AtomicUsize::new(0));
    let mnt = c.nodes[0].mnt.clone();
    let t = Instant::now();
    let writer = {
        let (progress, sizes) = (progress.clone(), sizes.clone());
        std::thread::spawn(move || {
            let mut results = Vec::new();
            for (k, size) in sizes.into_iter().enumerate() {
                let name = format!("stream-{k}.bin");
                let data = random_bytes(200 + k as u64, size);
                let result = (|| -> std::io::Result<()> {
                    let mut f = fs::File::create(mnt.join(&name))?;
                    for piece in data.chunks(PIECE) {
                        f.write_all(piece)?;
                        progress.fetch_add(piece.len(), Ordering::SeqCst);
                        // Slow enough that the kills land in the middle of the series.
                        std::thread::sleep(Duration::from_millis(15));
                    }
                    close_checked(f)
                })();
                results.push((name, data, result.map_err(|e| e.to_string())));
            }
            results
        })
    };

    // Kill node 4 a quarter of the way in, node 5 halfway, each in the middle of a file.
    let victims = [3, 4];
    let dead: Vec<String> = victims.iter().map(|&v| c.nodes[v].peer_id()).collect();
    let mut killed_at = Vec::new();
    for (v, at) in victims.iter().zip([total / 4, total / 2]) {
        assert!(
            wait_until(Duration::from_secs(120), || progress.load(Ordering::SeqCst)
                >= at),
            "the writer made no progress (at {} of {total} bytes)",
            progress.load(Ordering::SeqCst)
        );
        c.nodes[*v].kill9();
        killed_at.push(progress.load(Ordering::SeqCst));
        c.nodes[*v].cleanup_dead_mount();
    }
    let results = writer.join().expect("writer thread");
    eprintln!(
        "killed nodes 4 and 5 after {killed_at:?} of {total} bytes written; the writes took {:?}",
        t.elapsed()
    );
    assert!(
        killed_at.iter().all(|&b| b < total),
        "the kills did not land during the writes: {killed_at:?} of {total}"
    );
    let failed: Vec<_> = results
        .iter()
        .filter_map(|(n, _, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    let ok: Vec<&(String, Vec<u8>, Result<(), String>)> =
        results.iter().filter(|(_, _, r)| r.is_ok()).collect();

    // What returned success is intact on every survivor, before and after the two are dead.
    let survivors = [0, 1, 2];
    for &i in &survivors {
        for (name, data, _) in &ok {
            if let Err(e) = wait_for_file(&c.nodes[i].p(name), data, SPREAD_TIMEOUT) {
                panic!("node {}: {e} (failed writes: {failed:?})", i + 1);
            }
        }
    }
    // With 3 live nodes for R = 3 every write must have found its copies.
    assert!(failed.is_empty(), "writes failed: {failed:?}");

    for &i in &survivors {
        assert!(
            wait_until(Duration::from_secs(30), || dead
                .iter()
                .all(|p| c.nodes[i].peer_state(p).as_deref() == Some("dead"))),
            "node {} does not see nodes 4 and 5 dead: {:?}",
            i + 1,
            status_peers(&c.nodes[i].status())
        );
    }
    let names: Vec<&str> = ok.iter().map(|(n, _, _)| n.as_str()).collect();
    wait_live_chunks_on(&c, &names, &survivors, 3, Duration::from_secs(60));
    eprintln!(
        "every chunk on the 3 survivors {:?} after the start",
        t.elapsed()
    );
    for &i in &survivors {
        assert!(
            wait_until(Duration::from_secs(30), || {
                let s = c.nodes[i].status();
                s["replication"]["under_replicated"] == 0 && s["replication"]["repair_queue"] == 0
            }),
            "node {}: repair not finished: {}",
            i + 1,
            c.nodes[i].status()["replication"]
        );
        for (name, data, _) in &ok {
            assert_file_eq(&c.nodes[i].p(name), data);
        }
    }
}

#[test]
fn reader_node_without_storage_holds_nothing_and_reads_everything() {
    // Three holders with R = 3, and a fourth node started with `--no-storage`: it is never
    // an owner, so whatever it writes goes to the three others and whatever it reads comes
    // from them.
    let mut c = Cluster::start(3, 3);
    let boot = c.nodes[0].bootstrap_addr();
    let reader = c.init_node();
    c.nodes.push(reader);
    let mut args = c.run_args(Some(&boot));
    args.push("--no-storage".into());
    c.nodes[3].start_args(&args);
    c.wait_formed();

    let from_reader = random_bytes(41, 3 * MIB + 777);
    write_and_close(&c.nodes[3].p("from-reader.bin"), &from_reader).unwrap();
    let from_holder = random_bytes(42, 4 * MIB + 5);
    write_and_close(&c.nodes[0].p("from-holder.bin"), &from_holder).unwrap();
    if let Err(e) = wait_for_file(
        &c.nodes[3].p("from-holder.bin"),
        &from_holder,
        SPREAD_TIMEOUT,
    ) {
        panic!("reader: {e}");
    }
    if let Err(e) = wait_for_file(
        &c.nodes[1].p("from-reader.bin"),
        &from_reader,
        SPREAD_TIMEOUT,
    ) {
        panic!("node 2: {e}");
    }

    // 4 + 5 chunks of 1 MiB, each on the three holders and none on the reader.
    let holders = chunk_holders(&c);
    assert_eq!(holders.len(), 9, "{holders:?}");
    for (id, on) in &holders {
        assert_eq!(on, &vec![1, 2, 3], "chunk {id} held by nodes {on:?}");
    }
    assert!(c.nodes[3].chunk_ids().is_empty());
    // The reader announces no capacity: df counts only the holders' space.
    let df: serde_json::Value =
        serde_json::from_str(&c.nodes[3].ctl_ok(&["df", "--json"])).expect("df --json");
    let peers = c.nodes[3].status()["peers"].clone();
    assert!(df["capacity_bytes"].as_u64().unwrap() > 0, "{df}");
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["capacity"].as_u64().unwrap_or(0) > 0),
        "{peers}"
    );
    let on_holder = c.nodes[0].status()["peers"].clone();
    let reader_id = c.nodes[3].peer_id();
    let seen = on_holder
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == reader_id.as_str())
        .unwrap_or_else(|| panic!("reader not in node 1's peers: {on_holder}"));
    assert_eq!(seen["capacity"], 0, "{seen}");
    // Its disk is not counted as free space, and health wants 3 copies, not 4.
    let df_holder: serde_json::Value =
        serde_json::from_str(&c.nodes[0].ctl_ok(&["df", "--json"])).expect("df --json");
    // (All data dirs share one filesystem, so counting the reader would add a quarter.)
    let ratio = df["free_bytes"].as_f64().unwrap() / df_holder["free_bytes"].as_f64().unwrap();
    assert!((0.9..1.1).contains(&ratio), "{df} vs {df_holder}");
    c.nodes[3].ctl_ok(&["health"]);
}

#[test]
fn kernel_page_cache_is_kept_for_unchanged_files_and_dropped_for_new_versions() {
    // Node 2 keeps the pages of a file it read (repeated reads never reach p2pfs), but a new
    // version of the same size written on node 1 must be what node 2 reads next.
    let c = Cluster::start(2, 2);
    let (p1, p2) = (c.nodes[0].p("same-size.bin"), c.nodes[1].p("same-size.bin"));
    let v1 = random_bytes(51, 2 * MIB + 100);
    write_and_close(&p1, &v1).unwrap();
    wait_for_file(&p2, &v1, SPREAD_TIMEOUT).unwrap();
    for _ in 0..3 {
        assert_bytes_eq("node 2, unchanged", &fs::read(&p2).unwrap(), &v1);
    }
    // Overwritten in place (no O_TRUNC, which would commit an empty version first and so
    // change the size node 2 sees): only the version tells node 2 its pages are stale.
    let v2 = random_bytes(52, v1.len());
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().write(true).open(&p1).unwrap();
        f.write_all(&v2).unwrap();
    }
    let mut last = Vec::new();
    let changed = wait_until(SPREAD_TIMEOUT, || {
        last = fs::read(&p2).unwrap();
        last != v1 && last.len() == v2.len()
    });
    assert!(changed, "node 2 still reads the old version");
    assert_bytes_eq("node 2 after the overwrite", &last, &v2);
    // A local overwrite on node 2, read back there and on node 1.
    let v3 = random_bytes(53, v1.len());
    write_and_close(&p2, &v3).unwrap();
    assert_bytes_eq("node 2 after its own write", &fs::read(&p2).unwrap(), &v3);
    let changed = wait_until(SPREAD_TIMEOUT, || fs::read(&p1).unwrap() == v3);
    assert!(changed, "node 1 never read node 2's version");
}
