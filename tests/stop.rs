//! A node's stop, its pause and its limits, in real processes (`p2pfs run`, `p2pfs-ctl`):
//! SIGTERM takes a node offline (peers show `offline`, not `left`) and exits promptly even
//! with a program sitting in its mount (detached lazily, with one clear line); `p2pfs-ctl
//! pause`, `resume` and `limit` reach the node and show in its status. Needs root (FUSE).

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a stop may take with a busy mount: the node must not wait for the program in it.
const PROMPT_STOP: Duration = Duration::from_secs(10);

fn ctl_json(node: &Node, args: &[&str]) -> serde_json::Value {
    let out = node.ctl_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn pause_resume_and_limit_through_p2pfs_ctl() {
    let c = Cluster::start(2, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let b_id = b.peer_id();
    let set = ctl_json(
        a,
        &[
            "limit",
            "--upload",
            "1MiB",
            "--peer-download",
            "500KB",
            "--json",
        ],
    );
    assert_eq!(set["source"], "runtime", "{set}");
    assert_eq!(set["limits"]["upload"], 1 << 20, "{set}");
    assert_eq!(set["limits"]["peer_download"], 500_000, "{set}");
    assert_eq!(set["limits"]["download"], 0, "{set}");
    // Unnamed limits stay.
    let more = ctl_json(a, &["limit", "--download", "2MB", "--json"]);
    assert_eq!(more["limits"]["upload"], 1 << 20, "{more}");
    assert_eq!(more["limits"]["download"], 2_000_000, "{more}");
    assert_eq!(a.status()["limits"], more["limits"]);
    let back = ctl_json(a, &["limit", "--use-config", "--json"]);
    assert_eq!(back["source"], "config", "{back}");
    assert_eq!(back["limits"]["upload"], 0, "{back}");
    let bad = a.ctl(&["limit", "--upload", "fast"]);
    assert!(!bad.status.success());

    assert_eq!(b.status()["paused"], false);
    b.ctl_ok(&["pause"]);
    assert_eq!(b.status()["paused"], true);
    assert!(
        wait_until(SPREAD_TIMEOUT, || a.peer_state(&b_id).as_deref()
            == Some("paused")),
        "the other node does not show it paused: {}",
        a.status()
    );
    fs_write(&a.p("while-paused.txt"), b"written while b was paused");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !b.p("while-paused.txt").exists(),
        "a paused node got another node's write"
    );
    b.ctl_ok(&["resume"]);
    wait_for_file(
        &b.p("while-paused.txt"),
        b"written while b was paused",
        SPREAD_TIMEOUT,
    )
    .unwrap();
    assert!(
        wait_until(SPREAD_TIMEOUT, || a.peer_state(&b_id).as_deref()
            == Some("alive")),
        "{}",
        a.status()
    );
}

fn fs_write(path: &std::path::Path, data: &[u8]) {
    write_and_close(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Ctrl-C or SIGTERM with a shell in the mount: the node goes offline (its peers show it
/// `offline` at once, not `left`), detaches the busy mount with one line saying so, and exits
/// within seconds instead of waiting for the shell to leave.
#[test]
fn sigterm_with_a_program_in_the_mount_goes_offline_detaches_and_exits_promptly() {
    let mut c = Cluster::start(2, 2);
    let stopping = c.nodes[1].peer_id();
    let mnt = c.nodes[1].mnt.clone();
    // As a shell whose working directory is in the mount.
    let mut sitter = ChildGuard(Some(
        Command::new("sleep")
            .arg("600")
            .current_dir(&mnt)
            .spawn()
            .expect("spawn sleep in the mount"),
    ));
    let pid = c.nodes[1].pid().expect("running") as i32;
    let t0 = Instant::now();
    // SAFETY: signalling the node process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        wait_until(PROMPT_STOP, || !c.nodes[1].is_running()),
        "the node did not exit within {PROMPT_STOP:?} of SIGTERM with a busy mount; log:\n{}",
        c.nodes[1].log_text()
    );
    let took = t0.elapsed();
    // Reaps it: exit status 0, no mount left in the table.
    c.nodes[1].stop();
    let log = c.nodes[1].log_text();
    assert!(
        log.contains(&format!(
            "the mount at {} was busy (a shell or program is in it): detached; it disappears when they leave",
            mnt.display()
        )),
        "no clear line about the busy mount; log:\n{log}"
    );
    assert!(!c.nodes[1].is_mounted(), "the busy mount is still attached");
    assert!(
        wait_until(SPREAD_TIMEOUT, || c.nodes[0]
            .peer_state(&stopping)
            .as_deref()
            == Some("offline")),
        "the other node does not show the stopped node offline: {}",
        c.nodes[0].status()
    );
    assert!(
        sitter.try_wait().is_none(),
        "the program in the mount was not disturbed"
    );
    eprintln!("stopped with a busy mount in {took:.2?}");
    drop(sitter);
    // Started again, it is alive again (a stop is not a leave).
    c.nodes[1].start();
    assert!(
        wait_until(SPREAD_TIMEOUT, || c.nodes[0]
            .peer_state(&stopping)
            .as_deref()
            == Some("alive")),
        "{}",
        c.nodes[0].status()
    );
}
