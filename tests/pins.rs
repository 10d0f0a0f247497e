//! Pins for offline use, with real nodes in network namespaces: a node pins a directory, its
//! link goes down, the pinned files read whole from its own store, it edits a pinned file and
//! creates one; after the link comes back the others see both, and a file both sides edited
//! keeps the other side's version as a conflict copy named `name (conflict NODE DATE TIME).ext`.
//! Needs root.

mod common;

use common::netlab::Lab;
use common::*;
use std::time::Duration;

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Three named nodes (`alpha`, `beta`, `gamma`) in namespaces, R = 2, 64 KiB chunks, a peer
/// dead after 8 s of silence (so an offline write does not wait on cut-off peers for long).
/// `extra_c`: run arguments for the third node only.
fn lab(salt: usize, extra_c: &[&str]) -> Lab {
    let mut n = 0;
    let mut lab = Lab::start_with(
        3,
        salt,
        2,
        0,
        &["--dead-after".into(), "8".into()],
        |node| {
            node.set_config("node", "name", &format!("\"{}\"", NAMES[n]));
            node.set_chunk_size(65536);
            n += 1;
        },
    );
    if !extra_c.is_empty() {
        let c = &mut lab.cluster.nodes[2];
        c.stop();
        let mut args = vec![
            "--listen".to_string(),
            format!("/ip4/{}/tcp/0", lab.net.addr(3)),
            "--replicas".into(),
            "2".into(),
            "--dead-after".into(),
            "8".into(),
        ];
        args.extend(extra_c.iter().map(|s| s.to_string()));
        c.set_run_args(&args);
        c.start();
    }
    lab.cluster.wait_formed();
    lab
}

/// The pin at `path` in `pins --json` of `node`.
fn pin_state(node: &Node, path: &str) -> Option<serde_json::Value> {
    let out = node.ctl(&["pins", "--json"]);
    let pins: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    pins.as_array()?.iter().find(|p| p["path"] == path).cloned()
}

fn pin_complete(node: &Node, path: &str) -> bool {
    pin_state(node, path).is_some_and(|p| {
        p["checked"] == true
            && p["error"].is_null()
            && p["chunks"].as_u64() > Some(0)
            && p["held_chunks"] == p["chunks"]
    })
}

/// Every chunk id of the files at `paths` (by `where`, asked of `node`).
fn chunks_of(node: &Node, paths: &[&str]) -> std::collections::BTreeSet<String> {
    paths
        .iter()
        .flat_map(|p| {
            node.where_chunk_ids(p)
                .unwrap_or_else(|e| panic!("where {p}: {e}"))
        })
        .collect()
}

/// Waits until `node` lists `path` with `len` bytes (without reading it).
fn wait_listed(node: &Node, path: &str, len: usize) {
    let ok = wait_until(SPREAD_TIMEOUT, || {
        std::fs::metadata(node.p(path)).is_ok_and(|m| m.len() == len as u64)
    });
    assert!(ok, "{path} never showed up with {len} bytes");
}

fn wait_dead(node: &Node, peers: &[String]) {
    let ok = wait_until(Duration::from_secs(90), || {
        peers
            .iter()
            .all(|p| node.peer_state(p).as_deref() == Some("dead"))
    });
    assert!(ok, "the cut-off node still counts its peers alive");
}

#[test]
fn a_pinned_directory_reads_offline_and_offline_edits_reach_the_others() {
    let mut lab = lab(7, &[]);
    let (a, b, c) = (
        &lab.cluster.nodes[0],
        &lab.cluster.nodes[1],
        &lab.cluster.nodes[2],
    );
    std::fs::create_dir(a.p("docs")).unwrap();
    std::fs::create_dir(a.p("outside")).unwrap();
    let big = random_bytes(1, 40 * 65536 + 123);
    let outside = random_bytes(2, 40 * 65536);
    write_and_close(&a.p("docs/big.bin"), &big).unwrap();
    write_and_close(&a.p("docs/shared.txt"), b"original\n").unwrap();
    write_and_close(&a.p("outside/other.bin"), &outside).unwrap();
    // Not read on C before the cut: neither its cache nor the kernel's holds them.
    wait_listed(c, "docs/big.bin", big.len());
    wait_listed(c, "docs/shared.txt", 9);
    wait_listed(c, "outside/other.bin", outside.len());

    let said = c.ctl_ok(&["pin", "docs"]);
    assert!(said.contains("pinned /docs"), "{said}");
    assert!(
        wait_until(Duration::from_secs(120), || pin_complete(c, "docs")),
        "the pin never completed: {:?}",
        pin_state(c, "docs")
    );
    let text = c.ctl_ok(&["pins"]);
    assert!(
        text.contains("/docs  2.5 MiB, complete (2 files)"),
        "{text}"
    );
    let pinned = chunks_of(c, &["docs/big.bin", "docs/shared.txt"]);
    assert!(pinned.len() > 40);
    // Repair passes run on C (it owns a third of these at most): the pinned copies stay.
    wait_passes([c], "repair", 2);
    let held = c.chunk_ids();
    let dropped: Vec<&String> = pinned.difference(&held).collect();
    assert!(dropped.is_empty(), "pinned chunks not on C: {dropped:?}");
    // Of the unpinned file C holds only what placement gives it.
    let other = chunks_of(c, &["outside/other.bin"]);
    assert!(
        !other.is_subset(&held),
        "C holds every chunk of the unpinned file: the offline read below proves nothing"
    );

    // C goes offline, and both sides write.
    lab.net.cut(3);
    write_and_close(&a.p("docs/shared.txt"), b"edited on alpha\n").unwrap();
    wait_dead(c, &[a.peer_id(), b.peer_id()]);
    assert_bytes_eq(
        "pinned file read offline",
        &std::fs::read(c.p("docs/big.bin")).unwrap(),
        &big,
    );
    assert_eq!(
        std::fs::read(c.p("docs/shared.txt")).unwrap(),
        b"original\n"
    );
    let unpinned = std::fs::read(c.p("outside/other.bin"));
    assert!(
        unpinned.is_err(),
        "an unpinned file read whole offline: the cut did not hold"
    );
    write_and_close(
        &c.p("docs/shared.txt"),
        b"edited on gamma, offline, later\n",
    )
    .unwrap();
    let fresh = random_bytes(3, 5 * 65536 + 7);
    write_and_close(&c.p("docs/new.bin"), &fresh).unwrap();
    assert_bytes_eq(
        "offline write read back",
        &std::fs::read(c.p("docs/new.bin")).unwrap(),
        &fresh,
    );
    let status = c.status();
    assert!(
        status["replication"]["under_replicated"].as_u64() > Some(0),
        "{status}"
    );

    lab.net.heal(3);
    for node in [a, b, c] {
        wait_for_file(&node.p("docs/new.bin"), &fresh, Duration::from_secs(120)).unwrap();
        wait_for_file(
            &node.p("docs/shared.txt"),
            b"edited on gamma, offline, later\n",
            Duration::from_secs(120),
        )
        .unwrap();
    }
    let copy_of_alpha = |node: &Node| -> Option<(String, Vec<u8>)> {
        std::fs::read_dir(node.p("docs"))
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| conflict_label(n, "shared.txt").is_some())
            .map(|n| {
                let bytes = std::fs::read(node.p(&format!("docs/{n}"))).unwrap_or_default();
                (n, bytes)
            })
    };
    for node in [a, b, c] {
        assert!(
            wait_until(Duration::from_secs(120), || copy_of_alpha(node)
                .is_some_and(|(_, bytes)| bytes == b"edited on alpha\n")),
            "no conflict copy with alpha's version: {:?}",
            std::fs::read_dir(node.p("docs"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        let (name, _) = copy_of_alpha(node).unwrap();
        assert_eq!(
            conflict_label(&name, "shared.txt").as_deref(),
            Some("alpha"),
            "{name}"
        );
    }
    // `conflicts` lists the copy, of which file, by whom.
    let listed: serde_json::Value =
        serde_json::from_str(&b.ctl_ok(&["conflicts", "docs", "--json"])).unwrap();
    let copy = &listed.as_array().unwrap()[0];
    assert_eq!(copy["of"], "docs/shared.txt", "{listed}");
    assert_eq!(copy["node"], "alpha", "{listed}");
    assert_eq!(copy["kind"], "copy", "{listed}");
    assert!(
        copy["path"].as_str().is_some_and(|p| conflict_label(
            p.trim_start_matches("docs/"),
            "shared.txt"
        )
        .is_some()),
        "{listed}"
    );
    // The chunks written offline reach their owners: the new file reads on alpha with
    // gamma gone.
    assert!(
        wait_until(Duration::from_secs(120), || {
            let on_others: std::collections::BTreeSet<String> =
                a.chunk_ids().union(&b.chunk_ids()).cloned().collect();
            chunks_of(a, &["docs/new.bin"]).is_subset(&on_others)
        }),
        "the chunks written offline never reached the other nodes"
    );
    lab.cluster.nodes[2].stop();
    let (a, _) = (&lab.cluster.nodes[0], ());
    assert_bytes_eq(
        "offline write read on alpha with gamma stopped",
        &std::fs::read(a.p("docs/new.bin")).unwrap(),
        &fresh,
    );

    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A reader node (`--no-storage`: it owns no chunk by placement) pins a directory: it keeps
/// the chunks anyway, reads them offline, and what it writes offline (stored in its own store,
/// no peer being reachable) reaches the others after the heal.
#[test]
fn a_reader_node_keeps_what_it_pins_and_writes_offline() {
    let mut lab = lab(8, &["--no-storage"]);
    let (a, b, c) = (
        &lab.cluster.nodes[0],
        &lab.cluster.nodes[1],
        &lab.cluster.nodes[2],
    );
    std::fs::create_dir(a.p("docs")).unwrap();
    let data = random_bytes(4, 12 * 65536 + 5);
    write_and_close(&a.p("docs/data.bin"), &data).unwrap();
    wait_listed(c, "docs/data.bin", data.len());
    c.ctl_ok(&["pin", "/docs"]);
    assert!(
        wait_until(Duration::from_secs(120), || pin_complete(c, "docs")),
        "the pin never completed: {:?}",
        pin_state(c, "docs")
    );
    let pinned = chunks_of(c, &["docs/data.bin"]);
    wait_passes([c], "repair", 2);
    assert!(
        pinned.is_subset(&c.chunk_ids()),
        "a reader dropped pinned chunks"
    );

    lab.net.cut(3);
    wait_dead(c, &[a.peer_id(), b.peer_id()]);
    assert_bytes_eq(
        "pinned file read offline on a reader",
        &std::fs::read(c.p("docs/data.bin")).unwrap(),
        &data,
    );
    let fresh = random_bytes(5, 3 * 65536);
    write_and_close(&c.p("docs/offline.bin"), &fresh).unwrap();
    lab.net.heal(3);
    for node in [a, b] {
        wait_for_file(
            &node.p("docs/offline.bin"),
            &fresh,
            Duration::from_secs(120),
        )
        .unwrap();
    }
    // Its chunks reach the storage nodes (repair pushes what the reader holds).
    assert!(
        wait_until(Duration::from_secs(120), || {
            let on_others: std::collections::BTreeSet<String> =
                a.chunk_ids().union(&b.chunk_ids()).cloned().collect();
            chunks_of(a, &["docs/offline.bin"]).is_subset(&on_others)
        }),
        "the chunks a reader wrote offline never reached the storage nodes"
    );

    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}
