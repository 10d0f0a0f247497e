//! User identities: export from one node, import into another (the same person on two
//! machines), with private file modes and refusals that change nothing.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn p2pfs(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    run_cmd(
        Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(data_dir),
        Duration::from_secs(60),
    )
}

fn shown_user(node: &Node) -> String {
    let out = p2pfs(&["user", "show"], &node.dir);
    assert!(out.status.success(), "{}", out_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_user_exported_from_one_node_is_the_same_user_on_another() {
    let a = Node::init();
    let export = a.scratch().join("me.userkey");
    let out = p2pfs(&["user", "export", export.to_str().unwrap()], &a.dir);
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwrites.
    let again = p2pfs(&["user", "export", export.to_str().unwrap()], &a.dir);
    assert!(!again.status.success());

    let b = Node::uninit();
    b.init_ok(&["--user-key", export.to_str().unwrap()]);
    let (shown_a, shown_b) = (shown_user(&a), shown_user(&b));
    assert!(shown_a.contains("user id:") && shown_a.contains("recipient:  age1"));
    assert!(shown_a.contains("public key: "), "{shown_a}");
    assert_eq!(shown_a, shown_b);
    // A fresh node is someone else.
    assert_ne!(shown_user(&Node::init()), shown_a);
}

#[test]
fn a_bad_user_key_file_is_refused_and_creates_nothing() {
    let node = Node::uninit();
    let bad = node.scratch().join("bad.userkey");
    std::fs::write(&bad, "age_secret_key = \"nope\"\nsigning_key = \"00\"\n").unwrap();
    let out = node.run_init(&["--user-key", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("bad.userkey"), "{}", out_text(&out));
    assert!(!node.dir.exists(), "init left a partial data dir");
    let missing = node.scratch().join("missing.userkey");
    let out = node.run_init(&["--user-key", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!node.dir.exists());
}
