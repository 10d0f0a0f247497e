//! Undo across real nodes: a file overwritten, a file deleted and a tree removed with `rm -rf`
//! on one node come back through `p2pfs-ctl versions` and `restore` run on another, and read
//! back byte for byte through a third node's mount (and the first's). Needs root (mounts).

mod common;

use common::*;
use std::fs;
use std::time::Duration;

fn versions(node: &Node, path: &str) -> serde_json::Value {
    serde_json::from_str(&node.ctl_ok(&["versions", path, "--json"])).unwrap()
}

fn wait_gone(nodes: &[&Node], rel: &str) {
    for n in nodes {
        assert!(
            wait_until(SPREAD_TIMEOUT, || !n.p(rel).exists()),
            "{rel} still shows on a node"
        );
    }
}

fn wait_bytes(nodes: &[&Node], rel: &str, want: &[u8]) {
    for n in nodes {
        wait_for_file(&n.p(rel), want, SPREAD_TIMEOUT).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
}

/// `n` nodes (as `Cluster::start`) that keep replaced versions for two days.
fn keeping_versions(n: usize, replicas: u32) -> Cluster {
    let mut c = Cluster::empty(ClusterOpts::replicas(replicas));
    for i in 0..n {
        let node = c.init_node();
        node.set_config("retention", "days", "2");
        c.nodes.push(node);
        let boot = (i > 0).then(|| c.nodes[0].bootstrap_addr());
        c.start_node(i, boot.as_deref());
    }
    c.wait_formed();
    c
}

#[test]
fn an_overwrite_a_delete_and_an_rm_rf_on_one_node_are_undone_from_another() {
    let c = keeping_versions(3, 2);
    let (a, b, third) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let all = [a, b, third];

    // Every node must have seen a version to keep it: each step waits for it to spread.
    let first = random_bytes(1, 700_000);
    let second = random_bytes(2, 300_000);
    write_and_close(&a.p("doc.bin"), &first).unwrap();
    wait_bytes(&all, "doc.bin", &first);
    write_and_close(&a.p("doc.bin"), &second).unwrap();
    wait_bytes(&all, "doc.bin", &second);

    let gone = random_bytes(3, 400_000);
    write_and_close(&a.p("gone.bin"), &gone).unwrap();
    wait_bytes(&all, "gone.bin", &gone);
    fs::remove_file(a.p("gone.bin")).unwrap();
    wait_gone(&all, "gone.bin");

    let tree = [
        ("tree/x.bin", random_bytes(4, 250_000)),
        ("tree/sub/y.bin", random_bytes(5, 500_000)),
        ("tree/sub/deeper/z.txt", b"small".to_vec()),
    ];
    fs::create_dir_all(a.p("tree/sub/deeper")).unwrap();
    for (rel, data) in &tree {
        write_and_close(&a.p(rel), data).unwrap();
    }
    for (rel, data) in &tree {
        wait_bytes(&all, rel, data);
    }
    // A time at which the tree was whole (the state `--at` restores below).
    std::thread::sleep(Duration::from_millis(50));
    let before_rm = a
        .sh_ok("date -u +%Y-%m-%dT%H:%M:%S.%3NZ")
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(50));
    fs::remove_dir_all(a.p("tree")).unwrap();
    wait_gone(&all, "tree");

    // The overwrite, undone on B by version number.
    let list = versions(b, "doc.bin");
    let kept = list["versions"].as_array().unwrap();
    let old = kept
        .iter()
        .find(|v| v["size"] == first.len() as u64 && v["current"] == false)
        .unwrap_or_else(|| panic!("the first content is not listed: {list}"));
    // Written by A: named as B knows A, not by its bare tag.
    let a_name = a.status()["name"].as_str().unwrap().to_string();
    assert!(
        old["node"].as_str().unwrap().contains(&a_name)
            && old["author"].as_str().unwrap().contains(&a_name),
        "{old} (A is {a_name})"
    );
    let number = old["number"].as_u64().unwrap().to_string();
    let out = b.ctl_ok(&["restore", "doc.bin", "--version", &number]);
    assert!(out.contains("restored doc.bin"), "{out}");
    wait_bytes(&[third, a, b], "doc.bin", &first);
    // The overwritten content became a version too.
    let list = versions(b, "doc.bin");
    assert!(
        list["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["size"] == second.len() as u64 && v["current"] == false),
        "{list}"
    );

    // The deleted file: listed as deleted, restored under its own id.
    let list = versions(b, "gone.bin");
    assert!(list["deleted"].is_object(), "{list}");
    let text = b.ctl_ok(&["versions", "gone.bin"]);
    assert!(text.contains("deleted"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("   1  ")) && !text.contains("(current)"),
        "{text}"
    );
    let text = b.ctl_ok(&["versions", "doc.bin"]);
    assert!(
        text.contains("(current)") && !text.contains("deleted"),
        "{text}"
    );
    eprintln!("{text}");
    b.ctl_ok(&["restore", "gone.bin"]);
    wait_bytes(&[third, a], "gone.bin", &gone);
    assert_eq!(versions(third, "gone.bin")["id"], list["id"]);

    // The removed tree: whole, as it was just before `rm -rf`.
    assert!(versions(b, "tree")["deleted"].is_object());
    assert!(versions(b, "tree/sub/y.bin")["deleted"].is_object());
    b.ctl_ok(&["restore", "tree"]);
    for (rel, data) in &tree {
        wait_bytes(&[third, a], rel, data);
    }

    // A copy as it was at a time, as new files beside it.
    b.ctl_ok(&["restore", "tree", "--at", &before_rm, "--to", "tree-copy"]);
    for (rel, data) in &tree {
        wait_bytes(&[third], &rel.replacen("tree/", "tree-copy/", 1), data);
    }
    assert_ne!(
        versions(b, "tree-copy/sub/y.bin")["id"],
        versions(b, "tree/sub/y.bin")["id"]
    );

    // A name another file holds now is refused in place; --to restores it beside.
    fs::rename(a.p("gone.bin"), a.p("renamed.bin")).unwrap();
    write_and_close(&a.p("gone.bin"), b"another file").unwrap();
    wait_bytes(&[b], "gone.bin", b"another file");
    wait_bytes(&[b], "renamed.bin", &gone);
    let list = versions(b, "renamed.bin");
    let under_old_name = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "gone.bin" && v["size"] == gone.len() as u64)
        .unwrap_or_else(|| panic!("{list}"))["number"]
        .as_u64()
        .unwrap()
        .to_string();
    let out = b.ctl(&["restore", "renamed.bin", "--version", &under_old_name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--to"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    b.ctl_ok(&[
        "restore",
        "renamed.bin",
        "--version",
        &under_old_name,
        "--to",
        "gone-again.bin",
    ]);
    wait_bytes(&[third, a], "gone-again.bin", &gone);
    wait_bytes(&[third, a], "gone.bin", b"another file");
}
