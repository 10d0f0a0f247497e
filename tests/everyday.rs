//! Everyday commands: joining by invite, the documented configuration. Needs root (mounts).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_node_joins_with_nothing_but_an_invite_token() {
    let c = Cluster::start(1, 2);
    let out = c.nodes[0].ctl(&["invite", "--expires", "1h"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("p2pfs-invite-2-"), "{token}");

    let mut joiner = Node::uninit();
    joiner.init_ok(&["--join", &token, "--name", "desk"]);
    // No --network-key, no --bootstrap: the token carried both.
    joiner.start_args(&loopback_args(2, &[]));
    let inviter = c.nodes[0].peer_id();
    assert!(
        wait_until(FORM_TIMEOUT, || joiner
            .peer_state(&inviter)
            .is_some_and(|s| s == "alive")),
        "the invited node never reached its inviter; log:\n{}",
        joiner.log_text()
    );
    let data = random_bytes(3, 200_000);
    write_and_close(&c.nodes[0].p("shared.bin"), &data).unwrap();
    wait_for_file(&joiner.p("shared.bin"), &data, SPREAD_TIMEOUT).unwrap();
    assert_eq!(
        c.nodes[0].status()["network_fingerprint"],
        joiner.status()["network_fingerprint"]
    );
    // Its name (--name at init) reaches the inviter: status, peers by name, ids one flag away.
    assert_eq!(joiner.status()["name"], "desk");
    let joiner_id = joiner.peer_id();
    assert!(
        wait_until(FORM_TIMEOUT, || c.nodes[0].status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == joiner_id.as_str() && p["name"] == "desk")),
        "the inviter never heard the joiner's name: {}",
        c.nodes[0].status()
    );
    let peers = c.nodes[0].ctl_ok(&["peers"]);
    assert!(
        peers.lines().any(|l| l.starts_with("desk ")) && !peers.contains(&joiner_id),
        "{peers}"
    );
    assert!(c.nodes[0].ctl_ok(&["peers", "--ids"]).contains(&joiner_id));
    let status = c.nodes[0].ctl_ok(&["status"]);
    assert!(status.contains("    desk alive"), "{status}");
    // `where` names owners by label (every node here but desk shares the host name: a short
    // peer id tells them apart); --ids prints the peer ids.
    let ids: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.peer_id())
        .chain([joiner_id])
        .collect();
    let by_name = c.nodes[0].ctl_ok(&["where", "shared.bin"]);
    assert!(by_name.contains("      owner "), "{by_name}");
    assert!(!ids.iter().any(|id| by_name.contains(id)), "{by_name}");
    let by_id = c.nodes[0].ctl_ok(&["where", "shared.bin", "--ids"]);
    assert!(ids.iter().any(|id| by_id.contains(id)), "{by_id}");
}

#[test]
fn expired_mangled_and_foreign_tokens_are_refused_and_create_nothing() {
    let c = Cluster::start(1, 1);
    let out = c.nodes[0].ctl(&["invite", "--expires", "1s"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::thread::sleep(Duration::from_millis(2500));
    let fresh = Node::uninit();
    let out = fresh.run_init(&["--join", &token]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("expired"), "{}", out_text(&out));
    let mut cut = token.clone();
    cut.truncate(token.len() - 6);
    for bad in [cut.as_str(), "p2pfs-invite-2-00", "hello"] {
        let out = fresh.run_init(&["--join", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(out_text(&out).contains("invite"), "{}", out_text(&out));
    }
    assert!(!fresh.dir.exists(), "a refused token left a data dir");
    for bad in ["lap\x1btop", &"x".repeat(65)] {
        let out = fresh.run_init(&["--name", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", out_text(&out));
        assert!(out_text(&out).contains("node name"), "{}", out_text(&out));
    }
    assert!(!fresh.dir.exists(), "a refused name left a data dir");
    let out = c.nodes[0].ctl(&["invite", "--expires", "soon"]);
    assert_eq!(out.status.code(), Some(2), "bad usage: {}", out_text(&out));
}

#[test]
fn config_show_prints_every_key_documented_with_flags_applied() {
    let node = Node::init();
    let out = run_cmd(
        Command::new(bin())
            .args(["config", "show", "--replicas", "5", "--data-dir"])
            .arg(&node.dir),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# default: 3\nreplicas = 5"), "{text}");
    assert!(text.contains("[storage]") && text.contains("gc_grace_secs = 60"));
    let keys = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .count();
    let docs = text.lines().filter(|l| l.starts_with("# default:")).count();
    assert_eq!(keys, docs, "every key has a default line");
    assert!(keys >= 20, "{keys} keys");
    // The file init wrote is the same documented form, and it loads.
    let written = std::fs::read_to_string(node.dir.join("config.toml")).unwrap();
    assert!(written.contains("# default: 3\nreplicas = 3"), "{written}");
}

#[test]
fn put_get_ls_rm_df_and_health_work_without_the_mount() {
    let mut c = Cluster::start_opts(
        3,
        ClusterOpts {
            extra_args: vec!["--dead-after".into(), "120".into()],
            ..ClusterOpts::replicas(2)
        },
    );
    let local = c.nodes[0].scratch().join("local.bin");
    let data = random_bytes(11, 3 * MIB + 777);
    std::fs::write(&local, &data).unwrap();
    let out = c.nodes[0].ctl(&["put", local.to_str().unwrap(), "docs/"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no such directory yet: {}",
        out_text(&out)
    );
    std::fs::create_dir(c.nodes[0].p("docs")).unwrap();
    let quiet = c.nodes[0].ctl_ok(&["put", local.to_str().unwrap(), "docs/"]);
    assert!(
        quiet.is_empty(),
        "put prints nothing without a terminal: {quiet}"
    );
    wait_for_file(&c.nodes[1].p("docs/local.bin"), &data, SPREAD_TIMEOUT).unwrap();
    // Absolute paths under the mount point work too; `-` is standard output.
    let abs = c.nodes[1].p("docs/local.bin");
    let out = c.nodes[1].ctl(&["get", abs.to_str().unwrap(), "-"]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert_bytes_eq("get to stdout", &out.stdout, &data);
    let back = c.nodes[1].scratch().join("back.bin");
    c.nodes[1].ctl_ok(&["get", "docs/local.bin", back.to_str().unwrap()]);
    assert_bytes_eq("get to a file", &std::fs::read(&back).unwrap(), &data);
    let out = c.nodes[1].ctl(&["get", "docs/missing", back.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_bytes_eq(
        "a failed get leaves LOCAL alone",
        &std::fs::read(&back).unwrap(),
        &data,
    );
    // Into a volume.
    c.nodes[0].ctl_ok(&["put", local.to_str().unwrap(), "@home/mine.bin"]);
    assert_file_eq(&c.nodes[0].p("@home/mine.bin"), &data);

    let listing: serde_json::Value =
        serde_json::from_str(&c.nodes[2].ctl_ok(&["ls", "docs", "--json"])).unwrap();
    assert_eq!(listing[0]["name"], "local.bin");
    assert_eq!(listing[0]["size"], data.len() as u64);
    assert!(c.nodes[2].ctl_ok(&["ls"]).contains("docs/"));

    let df: serde_json::Value =
        serde_json::from_str(&c.nodes[0].ctl_ok(&["df", "--json"])).unwrap();
    assert_eq!(df["nodes"], 3);
    assert!(df["capacity_bytes"].as_u64().unwrap() > 0);

    let health = c.nodes[0].ctl(&["health", "--json"]);
    assert!(health.status.success(), "{}", out_text(&health));
    let h: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(h["short_chunks"], 0, "{h}");
    assert!(h["chunks"].as_u64().unwrap() >= 4);

    // A holder dies (and is not yet declared dead): the file is short of R copies.
    let victim = c.nodes[0].where_chunk_ids("docs/local.bin").unwrap();
    assert!(!victim.is_empty());
    let holder = (1..3)
        .find(|&i| c.nodes[i].chunk_ids().contains(&victim[0]))
        .expect("a second node holds the first chunk");
    c.nodes[holder].kill9();
    let health = c.nodes[0].ctl(&["health"]);
    assert_eq!(health.status.code(), Some(5), "{}", out_text(&health));
    assert!(
        out_text(&health).contains("docs/local.bin"),
        "{}",
        out_text(&health)
    );

    // rm: a non-empty directory needs -r.
    let out = c.nodes[0].ctl(&["rm", "docs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out_text(&out).contains("not empty"), "{}", out_text(&out));
    c.nodes[0].ctl_ok(&["rm", "-r", "docs"]);
    // The mount's kernel may cache the name for `fuse.attr_ttl_ms` (1 s).
    assert!(wait_until(Duration::from_secs(5), || !c.nodes[0]
        .p("docs")
        .exists()));

    // No node: a distinct exit code.
    let gone = Node::init();
    assert_eq!(gone.ctl(&["ls"]).status.code(), Some(3));
}
