//! Everyday commands: joining by invite, the documented configuration. Needs root (mounts).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn ctl(node: &Node, args: &[&str]) -> std::process::Output {
    run_cmd(
        Command::new(ctl_bin())
            .arg("--data-dir")
            .arg(&node.dir)
            .args(args),
        Duration::from_secs(60),
    )
}

#[test]
fn a_node_joins_with_nothing_but_an_invite_token() {
    let c = Cluster::start(1, 2);
    let out = ctl(&c.nodes[0], &["invite", "--expires", "1h"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("p2pfs-invite-1-"), "{token}");

    let mut joiner = Node::uninit();
    joiner.init_ok(&["--join", &token]);
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
}

#[test]
fn expired_mangled_and_foreign_tokens_are_refused_and_create_nothing() {
    let c = Cluster::start(1, 1);
    let out = ctl(&c.nodes[0], &["invite", "--expires", "1s"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::thread::sleep(Duration::from_millis(2500));
    let fresh = Node::uninit();
    let out = fresh.run_init(&["--join", &token]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("expired"), "{}", out_text(&out));
    let mut cut = token.clone();
    cut.truncate(token.len() - 6);
    for bad in [cut.as_str(), "p2pfs-invite-1-00", "hello"] {
        let out = fresh.run_init(&["--join", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(out_text(&out).contains("invite"), "{}", out_text(&out));
    }
    assert!(!fresh.dir.exists(), "a refused token left a data dir");
    let out = ctl(&c.nodes[0], &["invite", "--expires", "soon"]);
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
