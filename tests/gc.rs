//! Garbage collection with real nodes: a deleted or overwritten file's chunks leave every
//! node's store after the grace period (with retention off), or once its retention passed,
//! tombstones expire, nothing still referenced (a long write in progress, the same content
//! written again right after a delete) is touched, and a purge erases every version at once.
//! Needs root (FUSE mounts).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

const CHUNK: usize = 65_536;
const GRACE: &str = "2";

/// Nodes that keep no earlier versions: deleted data is garbage after the grace period.
fn gc_cluster(n: usize) -> Cluster {
    gc_cluster_keeping(n, "0", GRACE)
}

/// Nodes that keep earlier versions `days` (`--retention-days`), with a GC grace of `grace` s.
fn gc_cluster_keeping(n: usize, days: &str, grace: &str) -> Cluster {
    Cluster::start_opts(
        n,
        ClusterOpts {
            chunk_size: Some(CHUNK),
            extra_args: vec![
                "--gc-grace".into(),
                grace.into(),
                "--retention-days".into(),
                days.into(),
            ],
            ..ClusterOpts::replicas(3)
        },
    )
}

/// Chunks of `path` by `where` on node 0, as a set.
fn chunks_of(c: &Cluster, path: &str) -> BTreeSet<String> {
    c.nodes[0]
        .where_chunk_ids(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn stores(c: &Cluster) -> Vec<BTreeSet<String>> {
    c.nodes.iter().map(|n| n.chunk_ids()).collect()
}

/// A positive barrier for "GC did not collect X": writes a decoy file (its own content,
/// seeded by `seed`), waits until every node stores its chunks, deletes it, and waits until
/// its chunks have left every store. Each node has then run a collection pass more than a
/// grace period after this call, which would have collected any chunk unreferenced since
/// before it.
#[track_caller]
fn wait_collection_pass(c: &Cluster, seed: u64) {
    let name = format!("decoy-{seed}.bin");
    let decoy = random_bytes(seed, 3 * CHUNK);
    write_and_close(&c.nodes[0].p(&name), &decoy).unwrap();
    let ids = chunks_of(c, &name);
    assert!(
        wait_until(SPREAD_TIMEOUT, || stores(c)
            .iter()
            .all(|s| ids.is_subset(s))),
        "barrier: the decoy's chunks did not reach every node: {}",
        c.report()
    );
    std::fs::remove_file(c.nodes[0].p(&name)).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || stores(c)
            .iter()
            .all(|s| s.is_disjoint(&ids))),
        "barrier: the decoy's chunks were not collected everywhere{}",
        c.report()
    );
}

#[test]
fn deleted_and_overwritten_data_leaves_every_node_and_tombstones_expire() {
    let c = gc_cluster(3);
    let (a, b) = (random_bytes(1, 20 * CHUNK), random_bytes(2, 12 * CHUNK));
    write_and_close(&c.nodes[0].p("a.bin"), &a).unwrap();
    write_and_close(&c.nodes[0].p("b.bin"), &b).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("b.bin"), &b, SPREAD_TIMEOUT).unwrap();
    }
    let (a_chunks, b_chunks) = (chunks_of(&c, "a.bin"), chunks_of(&c, "b.bin"));
    assert_eq!((a_chunks.len(), b_chunks.len()), (20, 12));
    let all: BTreeSet<String> = a_chunks.union(&b_chunks).cloned().collect();
    for (i, s) in stores(&c).iter().enumerate() {
        assert_eq!(s, &all, "node {} before the deletes", i + 1);
    }

    // Delete a.bin on node 2, overwrite b.bin on node 3.
    std::fs::remove_file(c.nodes[1].p("a.bin")).unwrap();
    let b2 = random_bytes(3, 12 * CHUNK);
    write_and_close(&c.nodes[2].p("b.bin"), &b2).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("b.bin"), &b2, SPREAD_TIMEOUT).unwrap();
    }
    let b2_chunks = chunks_of(&c, "b.bin");
    assert!(b2_chunks.is_disjoint(&b_chunks));
    assert!(
        wait_until(Duration::from_secs(30), || stores(&c)
            .iter()
            .all(|s| *s == b2_chunks)),
        "garbage left behind: {:?}",
        stores(&c)
            .iter()
            .map(|s| s.difference(&b2_chunks).count())
            .collect::<Vec<_>>()
    );
    for n in &c.nodes {
        assert!(!n.p("a.bin").exists());
        assert_file_eq(&n.p("b.bin"), &b2);
        let s = n.status();
        assert!(s["gc"]["deleted_chunks"].as_u64().unwrap() > 0, "{s}");
    }
    // The tombstone of a.bin expires everywhere.
    assert!(
        wait_until(Duration::from_secs(30), || c.nodes.iter().all(|n| {
            let s = n.status();
            s["gc"]["tombstones"] == 0 && s["gc"]["expired_tombstones"].as_u64() >= Some(1)
        })),
        "tombstones did not expire: {:?}",
        c.nodes
            .iter()
            .map(|n| n.status()["gc"].clone())
            .collect::<Vec<_>>()
    );
    // And the namespace still reads the same after a restart.
    let mut c = c;
    c.nodes[1].stop();
    c.nodes[1].start();
    wait_for_file(&c.nodes[1].p("b.bin"), &b2, SPREAD_TIMEOUT).unwrap();
    assert!(!c.nodes[1].p("a.bin").exists());
}

/// A file written for several grace periods before it is closed: its early chunks are not
/// referenced by any committed version until the periodic checkpoint commits one, and must
/// survive; the checkpointed version is visible to other nodes before the close.
#[test]
fn a_long_write_keeps_its_chunks_and_is_checkpointed() {
    let c = gc_cluster(3);
    let data = random_bytes(4, 16 * CHUNK);
    let mut f = std::fs::File::create(c.nodes[0].p("slow.bin")).unwrap();
    let mut seen_partial = false;
    for piece in data.chunks(CHUNK) {
        f.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        seen_partial |= std::fs::metadata(c.nodes[2].p("slow.bin"))
            .map(|m| m.len() > 0)
            .unwrap_or(false);
    }
    assert!(
        seen_partial,
        "no checkpoint of the open file reached another node in 8 s"
    );
    close_checked(f).unwrap();
    // Past a collection on every node, every node still reads it whole, and it has 3 copies.
    wait_collection_pass(&c, 0xdec0);
    for n in &c.nodes {
        wait_for_file(&n.p("slow.bin"), &data, SPREAD_TIMEOUT).unwrap();
    }
    let chunks = chunks_of(&c, "slow.bin");
    for (i, s) in stores(&c).iter().enumerate() {
        assert!(
            chunks.is_subset(s),
            "node {} lost chunks of a live file: {:?}",
            i + 1,
            chunks.difference(s).collect::<Vec<_>>()
        );
    }
}

/// The same bytes written again right before the deleted file's chunks were due: the new
/// file references the same chunks (convergent encryption) and must keep them.
#[test]
fn content_written_again_just_before_collection_survives() {
    let c = gc_cluster(3);
    let data = random_bytes(5, 8 * CHUNK);
    write_and_close(&c.nodes[0].p("x.bin"), &data).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("x.bin"), &data, SPREAD_TIMEOUT).unwrap();
    }
    let chunks = chunks_of(&c, "x.bin");
    std::fs::remove_file(c.nodes[0].p("x.bin")).unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    write_and_close(&c.nodes[1].p("y.bin"), &data).unwrap();
    // `where` asks node 1 (index 0): the complete entry (not only the create) must have reached it.
    wait_for_file(&c.nodes[0].p("y.bin"), &data, SPREAD_TIMEOUT).unwrap();
    assert_eq!(chunks_of(&c, "y.bin"), chunks);
    wait_collection_pass(&c, 0xdec1);
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(
            chunks.is_subset(&n.chunk_ids()),
            "node {} collected chunks y.bin references",
            i + 1
        );
        wait_for_file(&n.p("y.bin"), &data, SPREAD_TIMEOUT).unwrap();
    }
}

/// How many versions of `path` `p2pfs-ctl versions` lists on `n` (0 when it finds none).
fn kept_of(n: &Node, path: &str) -> usize {
    let out = n.ctl(&["versions", path, "--json"]);
    if !out.status.success() {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["versions"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn kept_versions(n: &Node) -> u64 {
    n.status()["retention"]["kept_versions"]
        .as_u64()
        .unwrap_or(0)
}

/// With retention on, a deleted and an overwritten file's chunks stay on every node for the
/// retention period (well past the grace period), counted as what retention costs; then they
/// leave every node.
#[test]
fn retention_keeps_old_versions_then_their_chunks_leave_every_node() {
    // 0.0004 days = 34.6 s.
    let c = gc_cluster_keeping(3, "0.0004", GRACE);
    let (a, b) = (random_bytes(11, 6 * CHUNK), random_bytes(12, 5 * CHUNK));
    write_and_close(&c.nodes[0].p("a.bin"), &a).unwrap();
    write_and_close(&c.nodes[0].p("b.bin"), &b).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("b.bin"), &b, SPREAD_TIMEOUT).unwrap();
    }
    let old: BTreeSet<String> = chunks_of(&c, "a.bin")
        .union(&chunks_of(&c, "b.bin"))
        .cloned()
        .collect();
    std::fs::remove_file(c.nodes[1].p("a.bin")).unwrap();
    let b2 = random_bytes(13, 5 * CHUNK);
    write_and_close(&c.nodes[2].p("b.bin"), &b2).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("b.bin"), &b2, SPREAD_TIMEOUT).unwrap();
    }
    let deleted_at = std::time::Instant::now();
    // Several grace periods later every node still holds the old versions' chunks, and says
    // what they cost.
    // (a pass every second, 2 s of grace).
    wait_passes(&c.nodes, "gc", 4);
    assert!(
        deleted_at.elapsed() < Duration::from_secs(30),
        "too slow to check before the retention ends"
    );
    for (i, n) in c.nodes.iter().enumerate() {
        let held = n.chunk_ids();
        assert!(
            old.is_subset(&held),
            "node {} dropped chunks of kept versions: {} missing",
            i + 1,
            old.difference(&held).count()
        );
        let s = n.status();
        assert!(kept_versions(n) >= 2, "{}", s["retention"]);
        assert!(
            s["retention"]["retained_bytes"].as_u64().unwrap_or(0) >= 11 * CHUNK as u64,
            "{}",
            s["retention"]
        );
    }
    let df = c.nodes[0].ctl_ok(&["df"]);
    assert!(df.contains("earlier versions kept (retention)"), "{df}");
    // Past the retention period they leave every node.
    assert!(
        wait_until(Duration::from_secs(90), || stores(&c)
            .iter()
            .all(|s| s.is_disjoint(&old))),
        "expired versions' chunks left behind: {:?}{}",
        stores(&c)
            .iter()
            .map(|s| s.intersection(&old).count())
            .collect::<Vec<_>>(),
        c.report()
    );
    assert!(deleted_at.elapsed() >= Duration::from_secs(34));
    for n in &c.nodes {
        assert_file_eq(&n.p("b.bin"), &b2);
    }
}

/// `p2pfs-ctl purge` erases a file and every earlier version from every node at once: with
/// a week of retention and a minute of GC grace, the chunks of all its versions leave every
/// store within seconds. A node that was down when the purge was issued erases them when it
/// is back.
#[test]
fn purge_erases_every_version_on_every_node_at_once() {
    let mut c = gc_cluster_keeping(3, "7", "60");
    let v1 = random_bytes(21, 4 * CHUNK);
    let v2 = random_bytes(22, 4 * CHUNK);
    write_and_close(&c.nodes[0].p("secret.bin"), &v1).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("secret.bin"), &v1, SPREAD_TIMEOUT).unwrap();
    }
    let first = chunks_of(&c, "secret.bin");
    write_and_close(&c.nodes[0].p("secret.bin"), &v2).unwrap();
    for n in &c.nodes {
        wait_for_file(&n.p("secret.bin"), &v2, SPREAD_TIMEOUT).unwrap();
    }
    let both: BTreeSet<String> = first.union(&chunks_of(&c, "secret.bin")).cloned().collect();
    assert_eq!(both.len(), 8);
    // Node 3 goes down; the file is deleted, then purged, on node 2.
    c.nodes[2].stop();
    std::fs::remove_file(c.nodes[1].p("secret.bin")).unwrap();
    // Both running nodes list its kept versions (the deletion reached node 1 too).
    for n in &c.nodes[..2] {
        assert!(
            wait_until(SPREAD_TIMEOUT, || kept_of(n, "secret.bin") >= 2),
            "{}",
            String::from_utf8_lossy(&n.ctl(&["versions", "secret.bin"]).stdout)
        );
    }
    let out = c.nodes[1].ctl_ok(&["purge", "secret.bin"]);
    assert!(out.contains("purged secret.bin"), "{out}");
    let purged_at = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || c.nodes[..2]
            .iter()
            .all(|n| n.chunk_ids().is_disjoint(&both))),
        "purged chunks left on a running node: {}",
        c.report()
    );
    assert!(
        purged_at.elapsed() < Duration::from_secs(60),
        "waited for GC grace"
    );
    // Its kept versions are gone: `versions` finds nothing by that name.
    for n in &c.nodes[..2] {
        assert_eq!(kept_of(n, "secret.bin"), 0);
        assert!(!n.p("secret.bin").exists());
    }
    // Node 3 comes back holding its copies and its history: it erases them once it syncs.
    assert!(!c.nodes[2].chunk_ids().is_disjoint(&both));
    c.nodes[2].start();
    assert!(
        wait_until(Duration::from_secs(60), || c.nodes[2]
            .chunk_ids()
            .is_disjoint(&both)),
        "the returning node kept purged chunks: {}",
        c.report()
    );
    assert!(!c.nodes[2].p("secret.bin").exists());
    assert!(
        wait_until(SPREAD_TIMEOUT, || kept_of(&c.nodes[2], "secret.bin") == 0),
        "the returning node still lists versions of the purged file"
    );
    // Purging what is not there, now or in retention, is a clear error.
    let err = c.nodes[0].ctl(&["purge", "never-was.bin"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains("no such file or directory, now or within retention"),
        "{err:?}"
    );
}

/// A one-node network keeping versions for a week, with `[storage] key = value` set; writes
/// `f.bin` once per seed (`chunks` chunks each) and returns the node and each version's new
/// chunks, oldest first.
fn versions_kept_for_a_week(
    (key, value): (&str, &str),
    seeds: std::ops::RangeInclusive<u64>,
    chunks: usize,
) -> (Node, Vec<BTreeSet<String>>) {
    let mut node = Node::init();
    node.set_chunk_size(CHUNK);
    node.set_config("storage", key, value);
    node.start_args(&loopback_args(
        1,
        &[
            "--gc-grace".into(),
            GRACE.into(),
            "--retention-days".into(),
            "7".into(),
        ],
    ));
    let mut versions = Vec::new();
    let mut seen = BTreeSet::new();
    for seed in seeds {
        write_and_close(&node.p("f.bin"), &random_bytes(seed, chunks * CHUNK)).unwrap();
        let now = node.chunk_ids();
        versions.push(now.difference(&seen).cloned().collect::<BTreeSet<String>>());
        seen = now;
    }
    assert!(versions.iter().all(|v| v.len() == chunks), "{versions:?}");
    (node, versions)
}

/// Kept versions give way when a node stores more than its capacity: the ones kept longest go
/// first, whatever their retention, until what is left fits, and the newest kept version stays
/// restorable.
#[test]
fn kept_versions_give_way_when_a_node_is_over_its_capacity() {
    // Room for the current version (8 chunks) and one earlier one within 95%, not two.
    let (node, versions) =
        versions_kept_for_a_week(("capacity_bytes", &(24 * CHUNK).to_string()), 31..=35, 8);
    // The three oldest versions' chunks go; the newest kept one and the current stay.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let held = node.chunk_ids();
            versions[..3].iter().all(|v| v.is_disjoint(&held))
        }),
        "kept versions did not give way: {}",
        node.log_text()
    );
    let held = node.chunk_ids();
    assert!(versions[3].is_subset(&held) && versions[4].is_subset(&held));
    assert!(
        node.log_text().contains("space is short"),
        "{}",
        node.log_text()
    );
    let listed: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["versions", "f.bin", "--json"])).unwrap();
    let kept: Vec<&serde_json::Value> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["size"] == 8 * CHUNK && v["current"] == false)
        .collect();
    assert_eq!(kept.len(), 1, "{listed}");
    let n = kept[0]["number"].to_string();
    node.ctl_ok(&["restore", "f.bin", "--version", &n, "--to", "f-before.bin"]);
    assert_file_eq(&node.p("f-before.bin"), &random_bytes(34, 8 * CHUNK));
}

/// Kept versions give way when the disk holding the chunks has less free than
/// `storage.min_free_percent` (here 100%, which no disk in use has), whatever their retention;
/// the current version stays.
#[test]
fn kept_versions_give_way_when_the_disk_is_short() {
    let (node, versions) = versions_kept_for_a_week(("min_free_percent", "100"), 41..=43, 4);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let held = node.chunk_ids();
            versions[..2].iter().all(|v| v.is_disjoint(&held))
        }),
        "kept versions did not give way to a short disk: {}",
        node.log_text()
    );
    assert!(versions[2].is_subset(&node.chunk_ids()));
    assert!(node.log_text().contains("space is short"));
    assert_file_eq(&node.p("f.bin"), &random_bytes(43, 4 * CHUNK));
}
