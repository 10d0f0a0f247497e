//! Peer discovery by mDNS, with nothing to bootstrap from: three nodes, each
//! in a network namespace of its own, joined by veth pairs to one bridge that
//! has no address and no way out. Everything (nodes, mounts, namespaces,
//! veths, bridge) is removed on drop, also when the test fails (the lab is
//! `common::netlab`). Needs root.

mod common;

use common::netlab::*;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn mdns_discovery_in_network_namespaces() {
    let mut lab = Lab::start(3, 0, 3);
    for (i, node) in lab.cluster.nodes.iter().enumerate() {
        let addr = node.listen_addr();
        assert!(
            addr.starts_with(&format!("/ip4/{}/tcp/", lab.net.addr(i + 1))),
            "node {} listens on {addr}",
            i + 1
        );
    }
    let t = Instant::now();
    lab.cluster.wait_formed();
    eprintln!(
        "mDNS: all 3 nodes alive to each other after {:?}",
        t.elapsed()
    );
    for (i, node) in lab.cluster.nodes.iter().enumerate() {
        let s = node.status();
        for p in s["peers"].as_array().unwrap() {
            for a in p["addrs"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(
                    a.starts_with(&format!("/ip4/{}.", lab.net.subnet)),
                    "node {} lists peer address {a} outside the test subnet",
                    i + 1
                );
            }
        }
    }

    let data = random_bytes(5, 300 * KIB + 3);
    write_and_close(&lab.cluster.nodes[0].p("over-mdns.bin"), &data).unwrap();
    if let Err(e) = wait_for_file(
        &lab.cluster.nodes[2].p("over-mdns.bin"),
        &data,
        SPREAD_TIMEOUT,
    ) {
        panic!("node 3: {e}");
    }

    // Tear down here too, to check that nothing is left behind.
    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A partition made by taking one host's link down: both sides keep working and write
/// separately (one file each, and the same path on both); after healing, anti-entropy brings
/// both sides to the same view, and the path written on both sides is kept twice (the later
/// version under its name, the other as a conflict copy): nothing is lost.
#[test]
fn partition_then_heal_reconciles_without_losing_writes() {
    let n = 2;
    let mut lab = Lab::start(n, 1, 2);
    lab.cluster.wait_formed();
    let before = random_bytes(21, 200 * KIB);
    write_and_close(&lab.cluster.nodes[0].p("before.bin"), &before).unwrap();
    assert!(
        wait_for_file(
            &lab.cluster.nodes[1].p("before.bin"),
            &before,
            SPREAD_TIMEOUT
        )
        .is_ok()
    );

    // Partition: host 2's link goes down; both sides write.
    lab.net.cut(2);
    let (a, b) = (random_bytes(22, 150 * KIB), random_bytes(23, 170 * KIB));
    write_and_close(&lab.cluster.nodes[0].p("side-a.bin"), &a).unwrap();
    write_and_close(&lab.cluster.nodes[1].p("side-b.bin"), &b).unwrap();
    write_and_close(&lab.cluster.nodes[0].p("same.txt"), b"written on side A\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    write_and_close(&lab.cluster.nodes[1].p("same.txt"), b"written on side B\n").unwrap();
    // barrier: node 2 has heard nothing from node 1 since the cut, for its suspect period.
    wait_unheard(&lab.cluster.nodes[1], &lab.cluster.nodes[0].peer_id());
    assert!(
        !lab.cluster.nodes[1].p("side-a.bin").exists(),
        "the partition did not hold"
    );

    // Heal.
    lab.net.heal(2);
    for i in 0..n {
        let node = &lab.cluster.nodes[i];
        let other = if i == 0 { "side-b.bin" } else { "side-a.bin" };
        let want = if i == 0 { &b } else { &a };
        if let Err(e) = wait_for_file(&node.p(other), want, Duration::from_secs(60)) {
            panic!("node {} after healing: {e}\n{}", i + 1, node.log_text());
        }
    }
    let view = |node: &Node| -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<String> = std::fs::read_dir(&node.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n == "same.txt" || conflict_label(n, "same.txt").is_some())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let c = std::fs::read(node.mnt.join(&n)).unwrap();
                (n, c)
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (v1, v2) = (view(&lab.cluster.nodes[0]), view(&lab.cluster.nodes[1]));
            v1 == v2 && v1.len() == 2
        }),
        "the two sides do not agree on same.txt and its conflict copy: {:?} vs {:?}",
        view(&lab.cluster.nodes[0])
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>(),
        view(&lab.cluster.nodes[1])
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    );
    let v = view(&lab.cluster.nodes[0]);
    let contents: Vec<&[u8]> = v.iter().map(|(_, c)| c.as_slice()).collect();
    assert!(
        contents.contains(&&b"written on side A\n"[..])
            && contents.contains(&&b"written on side B\n"[..])
    );
    assert!(
        v.iter().any(|(n, _)| n == "same.txt")
            && v.iter()
                .any(|(n, _)| conflict_label(n, "same.txt").is_some())
    );
    assert_file_eq(&lab.cluster.nodes[1].p("before.bin"), &before);

    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}
