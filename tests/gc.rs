//! Garbage collection with real nodes: a deleted or overwritten file's chunks leave every
//! node's store after the grace period, tombstones expire, and nothing still referenced (a
//! long write in progress, the same content written again right after a delete) is touched.
//! Needs root (FUSE mounts).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

const CHUNK: usize = 65_536;
const GRACE: &str = "2";

fn gc_cluster(n: usize) -> Cluster {
    Cluster::start_opts(
        n,
        ClusterOpts {
            chunk_size: Some(CHUNK),
            extra_args: vec!["--gc-grace".into(), GRACE.into()],
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
