//! What local users and the user at the terminal are told and allowed: durability counted
//! against R (`degraded_health`), the result of `leave`, private volume roots under
//! `allow_other`, join tokens kept out of argv, authenticated invite expiry, and names from
//! peers shown safely by `p2pfs-ctl ls`. Needs root (mounts, setpriv).

mod common;

use common::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `p2pfs-ctl` exit code of `health` when files are short of R copies.
const EXIT_UNHEALTHY: i32 = 5;
/// `p2pfs-ctl` exit code of `leave` when some chunks could not be handed off.
const EXIT_LEAVE_SHORT: i32 = 6;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", out_text(o)))
}

#[test]
fn degraded_health_counts_copies_against_r_until_r_nodes_hold_them() {
    let mut c = Cluster::start(1, 3);
    let n = &c.nodes[0];
    for i in 0..4u64 {
        write_and_close(&n.p(&format!("f{i}.bin")), &random_bytes(i, 300_000)).unwrap();
    }

    let out = n.ctl(&["health"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNHEALTHY),
        "one live node of R=3 is not healthy: {}",
        out_text(&out)
    );
    assert!(
        stdout(&out).contains("degraded: 1 of 3 copies"),
        "{}",
        out_text(&out)
    );
    let h = json(&n.ctl(&["health", "--json"]));
    assert!(h["chunks"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["short_chunks"], h["chunks"], "{h}");
    assert_eq!(h["copies"], 1, "{h}");

    let s = n.status();
    let r = &s["replication"];
    assert!(r["chunks_stored"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        r["under_replicated"], r["chunks_stored"],
        "every chunk stored here lacks 2 of its 3 copies: {s}"
    );
    assert_eq!(r["copies"], 1, "{s}");
    let text = n.ctl_ok(&["status"]);
    assert!(text.contains("degraded: 1 of 3 copies"), "{text}");

    let df = json(&n.ctl(&["df", "--json"]));
    assert_eq!(df["copies"], 1, "{df}");
    assert_eq!(
        df["usable_bytes"], df["free_bytes"],
        "with one node one copy is made, not 3: {df}"
    );
    let text = n.ctl_ok(&["df"]);
    assert!(text.contains("degraded: 1 of 3 copies"), "{text}");
    let text = n.ctl_ok(&["where", "f0.bin"]);
    assert!(text.contains("1 of 3 copies"), "{text}");

    // With R live nodes repair makes the copies, and health says so.
    c.add_node(0);
    c.add_node(0);
    c.wait_formed();
    let n = &c.nodes[0];
    let mut last = String::new();
    let healthy = wait_until(Duration::from_secs(180), || {
        let out = n.ctl(&["health"]);
        last = out_text(&out);
        out.status.code() == Some(0)
    });
    assert!(healthy, "never healthy with 3 live nodes: {last}");
    assert!(last.contains("healthy: all"), "{last}");
    let h = json(&n.ctl(&["health", "--json"]));
    assert_eq!(h["copies"], 3, "{h}");
    assert_eq!(h["short_chunks"], 0, "{h}");
    let df = json(&n.ctl(&["df", "--json"]));
    assert_eq!(df["copies"], 3, "{df}");
    assert!(!n.ctl_ok(&["status"]).contains("degraded"));
}

/// The number written before `word` in `text` ("3 short" -> 3).
fn count_before(text: &str, word: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(|c: char| !c.is_alphanumeric()) == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no count before {word:?} in {text:?}"))
}

#[test]
fn leave_result_counts_handed_off_and_short_chunks_and_sets_the_exit_code() {
    let mut c = Cluster::start(2, 2);
    for i in 0..3u64 {
        write_and_close(
            &c.nodes[0].p(&format!("f{i}.bin")),
            &random_bytes(10 + i, 200_000),
        )
        .unwrap();
    }
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(120), || {
            let out = c.nodes[0].ctl(&["health"]);
            last = out_text(&out);
            out.status.code() == Some(0)
        }),
        "{last}"
    );

    // Node 2 leaves: node 1 holds every chunk already, so nothing is short.
    let out = c.nodes[1].ctl(&["leave"]);
    assert_eq!(out.status.code(), Some(0), "{}", out_text(&out));
    assert_eq!(
        count_before(&stdout(&out), "short"),
        0,
        "{}",
        out_text(&out)
    );
    assert!(
        wait_until(STOP_TIMEOUT, || !c.nodes[1].is_running()),
        "node 2 did not exit after leave"
    );

    // Node 1 is now the last holder: leaving takes the only copies away.
    let out = c.nodes[0].ctl(&["leave"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_LEAVE_SHORT),
        "leaving with no one to hand off to: {}",
        out_text(&out)
    );
    assert!(
        count_before(&stdout(&out), "short") > 0,
        "{}",
        out_text(&out)
    );
    assert!(
        wait_until(STOP_TIMEOUT, || !c.nodes[0].is_running()),
        "node 1 did not exit after leave"
    );
}

#[test]
fn volume_roots_are_private_to_the_node_user_under_allow_other() {
    let mut n = Node::init();
    n.start();
    write_and_close(&n.p("@home/secret.txt"), b"mine").unwrap();
    write_and_close(&n.p("shared.txt"), b"everyone's").unwrap();
    let home = n.p("@home");
    let md = fs::metadata(&home).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o700
    );
    let out = as_nobody(&["ls", home.to_str().unwrap()]);
    assert!(!out.status.success(), "another user listed @home");
    assert!(
        out_text(&out).contains("Permission denied"),
        "{}",
        out_text(&out)
    );
    let out = as_nobody(&["cat", n.p("@home/secret.txt").to_str().unwrap()]);
    assert!(!out.status.success(), "another user read @home/secret.txt");
    // The network's files stay readable by every local user (the system service's purpose).
    let out = as_nobody(&["cat", n.p("shared.txt").to_str().unwrap()]);
    assert!(out.status.success(), "{}", out_text(&out));
    n.stop();
}

/// Starts `p2pfs mount` of `node` with `join` arguments, token on stdin if given; returns the
/// process once mounted.
fn mount_joining(node: &Node, join: &[&str], stdin: Option<&str>) -> ChildGuard {
    let mut cmd = Command::new(bin());
    cmd.arg("mount")
        .arg(&node.mnt)
        .arg("--data-dir")
        .arg(&node.dir)
        .args(join)
        .args(loopback_args(1, &[]))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(fs::File::create(&node.log).unwrap());
    let mut child = ChildGuard(Some(cmd.spawn().expect("spawn p2pfs mount")));
    if let Some(token) = stdin {
        use std::io::Write;
        let mut pipe = child.0.as_mut().unwrap().stdin.take().unwrap();
        writeln!(pipe, "{token}").unwrap();
    }
    let mut exited = None;
    let mounted = wait_until(START_TIMEOUT * 2, || {
        exited = child.try_wait();
        exited.is_some() || is_mounted(&node.mnt)
    });
    assert!(
        mounted && exited.is_none(),
        "p2pfs mount {join:?} failed ({exited:?}):\n{}",
        node.log_text()
    );
    child
}

fn stop_child(mut child: ChildGuard, node: &Node) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait_timeout(STOP_TIMEOUT).is_some());
    node.cleanup_dead_mount();
}

#[test]
fn join_file_and_stdin_keep_the_network_key_out_of_the_command_line() {
    let c = Cluster::start(1, 1);
    let inviter = c.nodes[0].peer_id();
    let token = c.nodes[0].ctl_ok(&["invite"]).trim().to_string();
    let key_hex = fs::read_to_string(&c.key).unwrap().trim().to_string();
    for how in ["file", "stdin"] {
        let joiner = Node::uninit();
        let token_file = joiner.base_path.join("token");
        fs::write(&token_file, format!("{token}\n")).unwrap();
        let child = match how {
            "file" => mount_joining(
                &joiner,
                &["--join-file", token_file.to_str().unwrap()],
                None,
            ),
            _ => mount_joining(&joiner, &["--join", "-"], Some(&token)),
        };
        let cmdline = fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(&token) && !cmdline.contains(&key_hex),
            "--join {how}: the key is in /proc/PID/cmdline: {cmdline:?}"
        );
        assert!(
            wait_until(FORM_TIMEOUT, || joiner
                .peer_state(&inviter)
                .is_some_and(|s| s == "alive")),
            "--join {how}: never reached the inviter; log:\n{}",
            joiner.log_text()
        );
        stop_child(child, &joiner);
    }
    // The token in argv still works, with a warning.
    let joiner = Node::uninit();
    let out = joiner.run_init(&["--join", &token]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--join-file"),
        "no warning about the token in argv: {}",
        out_text(&out)
    );
}

/// Rewrites a token's expiry the way an editor of the token would: the body re-encoded with
/// the new expiry and the checksum recomputed as the old format made it (a truncated hash).
fn with_expiry(token: &str, expires: u64) -> String {
    let (prefix, hexed) = token.split_at(token.rfind('-').unwrap() + 1);
    let bytes = hex::decode(hexed).unwrap();
    // Find where the CBOR body ends: the shortest prefix that decodes.
    let (mut value, trailer) = (1..bytes.len())
        .find_map(|n| {
            ciborium::from_reader::<ciborium::Value, _>(&bytes[..n])
                .ok()
                .map(|v| (v, bytes.len() - n))
        })
        .expect("a CBOR body");
    for (k, v) in value.as_map_mut().unwrap() {
        if k.as_text() == Some("expires") {
            *v = ciborium::Value::Integer(expires.into());
        }
    }
    let mut body = Vec::new();
    ciborium::into_writer(&value, &mut body).unwrap();
    let sum = blake3::hash(&body);
    body.extend_from_slice(&sum.as_bytes()[..trailer]);
    format!("{prefix}{}", hex::encode(body))
}

#[test]
fn invite_expires_in_a_day_by_default_and_a_tampered_expiry_is_refused() {
    let c = Cluster::start(1, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // An expired token whose expiry was edited to the far future.
    let short = c.nodes[0].ctl_ok(&["invite", "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let forged = with_expiry(short.trim(), now + 10 * 365 * 86_400);
    let fresh = Node::uninit();
    let forged_file = fresh.base_path.join("token");
    fs::write(&forged_file, &forged).unwrap();
    let out = fresh.run_init(&["--join-file", forged_file.to_str().unwrap()]);
    assert!(!out.status.success(), "a tampered token was accepted");
    // One line saying what is wrong (a backtrace may follow when RUST_BACKTRACE is set).
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("invite was changed") && first.contains("new one"),
        "{}",
        out_text(&out)
    );
    assert!(!fresh.dir.exists(), "a refused token left a data dir");

    let token = c.nodes[0].ctl_ok(&["invite"]).trim().to_string();
    let invite = p2pfs::identity::Invite::decode(&token, now).unwrap();
    let expires = invite.expires.expect("an invite without --expires expires");
    assert!(
        (now + 86_400 - 60..=now + 86_400 + 60).contains(&expires),
        "expires {expires}, now {now}"
    );
    let never = c.nodes[0].ctl_ok(&["invite", "--expires", "never"]);
    let never = p2pfs::identity::Invite::decode(never.trim(), now).unwrap();
    assert_eq!(never.expires, None);
}

#[test]
fn ctl_ls_escapes_names_and_json_round_trips_non_utf8_names_to_get() {
    let mut n = Node::init();
    n.start();
    let latin1: &[u8] = b"caf\xe9.txt";
    let control = "bell\x07esc\x1b[31mred\nline";
    let latin1_path = n.mnt.join(std::ffi::OsStr::from_bytes(latin1));
    write_and_close(&latin1_path, b"latin-1 name").unwrap();
    write_and_close(&n.p(control), b"control name").unwrap();

    let out = n.ctl(&["ls"]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "control characters reached the terminal: {}",
        out_text(&out)
    );
    let text = stdout(&out);
    // The two files and @home.
    assert_eq!(text.lines().count(), 3, "one line per entry: {text:?}");
    assert!(text.contains("bell\\x07esc\\x1b[31mred\\nline"), "{text:?}");
    assert!(text.contains("caf\\xe9.txt"), "{text:?}");

    let listing = json(&n.ctl(&["ls", "--json"]));
    let entries = listing.as_array().unwrap();
    let raw = entries
        .iter()
        .find(|e| e.get("name_bytes").is_some())
        .unwrap_or_else(|| panic!("no name_bytes for the non-UTF-8 name: {listing}"));
    let bytes = hex::decode(raw["name_bytes"].as_str().unwrap()).unwrap();
    assert_eq!(bytes, latin1);
    let plain = entries
        .iter()
        .find(|e| e["name"] == control)
        .unwrap_or_else(|| panic!("UTF-8 name not exact: {listing}"));
    assert!(plain.get("name_bytes").is_none(), "{plain}");

    let got = n.scratch().join("got");
    let out = run_cmd(
        Command::new(ctl_bin())
            .arg("--data-dir")
            .arg(&n.dir)
            .arg("get")
            .arg(std::ffi::OsStr::from_bytes(&bytes))
            .arg(&got),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(fs::read(&got).unwrap(), b"latin-1 name");
    assert!(Path::new(&got).exists());
    n.stop();
}

/// A holder over its proof budget refuses as busy: `health` and `where` show its claims as
/// unverified, not absent, and `health` does not exit 5 for that alone. Proof work is paced at
/// 1 MB/s per asker, so after a 16-chunk group of 1 MiB chunks a peer refuses the next group.
#[test]
fn busy_holders_are_unverified_not_degraded_health() {
    let mut c = Cluster::empty(ClusterOpts::replicas(3));
    for i in 0..3 {
        let node = c.init_node();
        node.set_config("network", "prove_rate_mb", "1");
        c.nodes.push(node);
        let boot = (i > 0).then(|| c.nodes[0].bootstrap_addr());
        c.start_node(i, boot.as_deref());
    }
    c.wait_formed();
    let n = &c.nodes[0];
    write_and_close(&n.p("big.bin"), &random_bytes(7, 20 * MIB)).unwrap();
    let chunks = n.chunk_ids().len();
    assert!(chunks >= 20, "{chunks}");
    assert!(
        wait_until(Duration::from_secs(60), || c
            .nodes
            .iter()
            .all(|m| m.chunk_ids().len() == chunks)),
        "not every node holds every chunk"
    );

    let out = n.ctl(&["health", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "busy holders are not missing copies: {}",
        out_text(&out)
    );
    let h = json(&out);
    assert!(
        h["unverified_chunks"].as_u64().unwrap() > 0,
        "some claims refused as busy: {h}"
    );
    assert_eq!(h["short_chunks"], h["unverified_chunks"], "{h}");
    assert_eq!(h["missing_chunks"], 0, "{h}");
    assert_eq!(h["files"].as_array().unwrap().len(), 0, "{h}");

    let w = json(&n.ctl(&["where", "big.bin", "--json"]));
    let located = w["chunks"].as_array().unwrap();
    assert!(
        located
            .iter()
            .any(|l| !l["unverified"].as_array().unwrap().is_empty()),
        "{w}"
    );
    for l in located {
        let found =
            l["holders"].as_array().unwrap().len() + l["unverified"].as_array().unwrap().len();
        assert_eq!(
            found, 3,
            "every copy proved or unverified, none absent: {l}"
        );
    }
}
