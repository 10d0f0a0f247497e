//! A member gone bad against the namespace: a rogue process holding the network key (and no
//! right in any volume but the network volume, which every member may write) plays the
//! namespace attacks of `src/bin/p2pfs-rogue/namespace.rs`:
//! - `cross_volume`: network-volume tombstones carrying other volumes' entry ids (learned by
//!   sync) with a history covering everything, by sync, gossip and expiry: the victims' files
//!   and volume records stay, on every node, across GC and a restart;
//! - `held_entries`: many large entries of volumes no node has a record of: the node's memory
//!   and its held entries stay within the bound, the drops are counted, it keeps serving;
//! - `peer_names`: entries named "", ".", ".." (and legal names with control characters): the
//!   honest nodes' mounts still list the directory, and the bad entries are refused.
//!
//! The rogue is the `p2pfs-rogue` binary (the `rogue` feature), built with the tests.
//! Needs root (FUSE mounts).

mod common;
use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use common::rogue::*;
use common::*;
use serde_json::Value;

const ROGUE_LIMIT: Duration = Duration::from_secs(240);

/// Runs the rogue against `c.nodes[target]` to its end; returns the JSON lines it printed.
fn run_rogue(c: &Cluster, target: usize, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--wait-secs", "1"];
    all.extend_from_slice(args);
    Rogue::run(c, target, &all, ROGUE_LIMIT).events
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn status_u64(n: &Node, path: &[&str]) -> u64 {
    let mut v = n.status();
    for p in path {
        v = v[*p].clone();
    }
    v.as_u64().unwrap_or(0)
}

/// Names in a directory of the mount, as the kernel lists them.
fn list(dir: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        names.push(e?.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

#[test]
fn cross_volume_tombstones_touch_no_other_volume() {
    let mut c = Cluster::start_opts(
        2,
        ClusterOpts {
            replicas: 2,
            chunk_size: Some(64 * KIB),
            // No earlier versions kept: deleted data is garbage after the grace period.
            extra_args: vec![
                "--gc-grace".into(),
                "2".into(),
                "--retention-days".into(),
                "0".into(),
            ],
        },
    );
    // The victim (node 1's user): a file in its @home, and a volume shared with node 2's user.
    let secret = random_bytes(0x5ec, 300 * KIB);
    let shared = random_bytes(0x5a7, 200 * KIB);
    write_and_close(&c.nodes[0].p("@home/secret.bin"), &secret).unwrap();
    c.nodes[0].ctl_ok(&["volume", "create", "team"]);
    write_and_close(&c.nodes[0].p("@team/shared.bin"), &shared).unwrap();
    let b_key = public_key(&c.nodes[1]);
    c.nodes[0].ctl_ok(&["volume", "share", "team", "--with", &b_key]);
    wait_for_file(&c.nodes[1].p("@team/shared.bin"), &shared, SPREAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("node 2: {e}{}", c.report()));
    let root_before = list(&c.nodes[0].mnt).unwrap();

    // The rogue learns every id from each node and sends its tombstones every way.
    let mut victims = 0;
    for target in [0, 1] {
        let events = run_rogue(&c, target, &["--attack", "cross-volume"]);
        let sent = named(&events, "tombstones");
        assert_eq!(sent.len(), 3, "one batch per phase: {events:?}");
        for t in &sent {
            assert_eq!(t["covers_all"], true, "{t}");
            victims = victims.max(t["victims"].as_u64().unwrap());
        }
    }
    // Two personal volumes (root, record, a file in the victim's), the team volume (root,
    // record, file): the rogue found them all.
    assert!(victims >= 6, "the rogue learned only {victims} entries");
    // Every node has taken the tombstones (stored, some expired) ...
    for (i, n) in c.nodes.iter().enumerate() {
        let ok = wait_until(SPREAD_TIMEOUT, || {
            status_u64(n, &["gc", "tombstones"]) + status_u64(n, &["gc", "expired_tombstones"])
                >= victims
        });
        assert!(ok, "node {}: tombstones not taken{}", i + 1, c.report());
    }
    // ... and GC collects on every node after them: it deletes a decoy file's chunks and
    // nothing else.
    // barrier: a decoy written and deleted now has its chunks collected on both nodes, so
    // each has collected more than a grace period after the tombstones came (which would
    // have taken the victims' chunks too).
    let decoy = random_bytes(0xdec0, 200 * KIB);
    write_and_close(&c.nodes[0].p("decoy.bin"), &decoy).unwrap();
    let decoy_ids: BTreeSet<String> = c.nodes[0]
        .where_chunk_ids("decoy.bin")
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        wait_until(SPREAD_TIMEOUT, || c
            .nodes
            .iter()
            .all(|n| decoy_ids.is_subset(&n.chunk_ids()))),
        "barrier: the decoy's chunks did not reach both nodes{}",
        c.report()
    );
    fs::remove_file(c.nodes[0].p("decoy.bin")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || c
            .nodes
            .iter()
            .all(|n| decoy_ids.is_disjoint(&n.chunk_ids()))),
        "barrier: the decoy's chunks were not collected{}",
        c.report()
    );
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(
            status_u64(n, &["gc", "deleted_chunks"]),
            decoy_ids.len() as u64,
            "node {} deleted chunks other than the decoy's{}",
            i + 1,
            c.report()
        );
    }
    assert_file_eq(&c.nodes[0].p("@home/secret.bin"), &secret);
    for n in &c.nodes {
        assert_file_eq(&n.p("@team/shared.bin"), &shared);
    }

    // What survives is in the store, not only in memory: restart both nodes and read again.
    c.nodes[1].stop();
    c.nodes[0].stop();
    c.start_node(0, None);
    let boot = c.nodes[0].bootstrap_addr();
    c.start_node(1, Some(&boot));
    c.wait_formed();
    assert_file_eq(&c.nodes[0].p("@home/secret.bin"), &secret);
    for (i, n) in c.nodes.iter().enumerate() {
        let path = n.p("@team/shared.bin");
        wait_for_file(&path, &shared, SPREAD_TIMEOUT)
            .unwrap_or_else(|e| panic!("node {} after restart: {e}{}", i + 1, c.report()));
    }
    // The rogue's tombstones live in the network volume, where they delete nothing.
    assert_eq!(list(&c.nodes[0].mnt).unwrap(), root_before);
    assert_eq!(list(&c.nodes[1].mnt).unwrap(), root_before);
}

#[test]
fn held_entries_stay_within_their_bound() {
    let c = Cluster::start_opts(
        2,
        ClusterOpts {
            replicas: 2,
            chunk_size: Some(64 * KIB),
            extra_args: Vec::new(),
        },
    );
    let before = random_bytes(0x4e1d, 256 * KIB);
    write_and_close(&c.nodes[0].p("before.bin"), &before).unwrap();
    wait_for_file(&c.nodes[1].p("before.bin"), &before, SPREAD_TIMEOUT).unwrap();
    let pid = c.nodes[0].pid().expect("node 1 runs");
    let rss_before = rss_kib(pid);

    let events = run_rogue(&c, 0, &["--attack", "held-entries"]);
    let pushed = named(&events, "held_pushed");
    assert_eq!(pushed.len(), 1, "{events:?}");
    let sent_bytes = pushed[0]["bytes"].as_u64().unwrap();
    assert!(
        sent_bytes >= 128 << 20,
        "the rogue pushed only {sent_bytes} bytes: {events:?}"
    );

    // Held in memory: at most one peer's share, however much it sent.
    let rss_after = rss_kib(pid);
    let grew_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        grew_mib < 96,
        "node 1 grew by {grew_mib} MiB (RSS {rss_before} -> {rss_after} KiB) after {} MiB of held entries",
        sent_bytes >> 20
    );
    let s = c.nodes[0].status();
    let held = &s["held_entries"];
    assert!(
        held["bytes"].as_u64().is_some_and(|b| b <= 8 << 20),
        "held entries over a peer's share: {s}"
    );
    assert!(
        held["dropped"].as_u64().unwrap_or(0) >= 32,
        "the drops are not counted: {s}"
    );

    // It keeps serving: the file written before reads back, a new one spreads.
    assert_file_eq(&c.nodes[0].p("before.bin"), &before);
    let after = random_bytes(0xaf7, 200 * KIB);
    write_and_close(&c.nodes[0].p("after.bin"), &after).unwrap();
    wait_for_file(&c.nodes[1].p("after.bin"), &after, SPREAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}{}", c.report()));
}

#[test]
fn peer_names_a_local_create_refuses_are_refused() {
    let c = Cluster::start(2, 2);
    write_and_close(&c.nodes[0].p("good.txt"), b"good").unwrap();
    wait_for_file(&c.nodes[1].p("good.txt"), b"good", SPREAD_TIMEOUT).unwrap();
    let rejected_before = status_u64(&c.nodes[0], &["rejected_entries"]);

    let events = run_rogue(&c, 0, &["--attack", "peer-names"]);
    let sent = named(&events, "names");
    assert_eq!(sent.len(), 2, "{events:?}");
    // What the rogue sends: names a local create refuses, and legal ones with control
    // characters.
    const BAD_NAMES: [&[u8]; 3] = [b"", b".", b".."];
    const CONTROL_NAMES: [&[u8]; 2] = [b"ctl\x01name", b"line\nbreak"];
    for e in sent {
        assert_eq!(e["refused"], serde_json::json!(BAD_NAMES), "{e}");
        assert_eq!(e["legal"], serde_json::json!(CONTROL_NAMES), "{e}");
    }

    // The legal names with control characters arrive on both nodes (by sync and gossip, and
    // between the nodes); each node lists its root throughout.
    let want: Vec<&[u8]> = CONTROL_NAMES.to_vec();
    for (i, n) in c.nodes.iter().enumerate() {
        let mut last = Ok(Vec::new());
        let ok = wait_until(SPREAD_TIMEOUT, || {
            last = list(&n.mnt);
            last.as_ref()
                .is_ok_and(|names| want.iter().all(|w| names.iter().any(|n| n == w)))
        });
        assert!(ok, "node {}: root listing {last:?}{}", i + 1, c.report());
        let names = last.unwrap();
        assert!(names.iter().any(|n| n == b"good.txt"));
        for bad in BAD_NAMES {
            assert!(!names.iter().any(|n| n == bad), "node {}: {names:?}", i + 1);
        }
        // Listing again (a fresh opendir) works too, as does `p2pfs-ctl ls`.
        list(&n.mnt).unwrap();
        n.ctl_ok(&["ls", "/"]);
    }
    // Refused and counted where they arrived: three names, by sync and by gossip.
    let refused = status_u64(&c.nodes[0], &["rejected_entries"]) - rejected_before;
    assert!(refused >= 3, "node 1 refused {refused} entries");
}
