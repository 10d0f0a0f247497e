//! A writer removed from a volume cannot rewrite its past: after `volume unshare`, the removed
//! user (a rogue peer holding its user key, `src/bin/p2pfs-rogue/removed_writer.rs`) signs
//! tombstones stamped before its removal over every file of the volume, with a history that
//! covers everything, and pushes them by sync and gossip. Every node refuses them (the removal
//! lists the removed writer's versions that stay valid) and counts the refusals; the files stay,
//! on every member, with their content. Needs root (FUSE).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::rogue::*;
use common::*;
use serde_json::Value;

/// Runs the rogue against `c.nodes[target]` to its end and returns the JSON lines it printed.
fn run_rogue(c: &Cluster, target: usize, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--wait-secs", "1"];
    all.extend_from_slice(args);
    let events = Rogue::run(c, target, &all, Duration::from_secs(120)).events;
    assert!(
        !events.iter().any(|e| e["event"] == "error"),
        "the rogue reported an error: {events:?}"
    );
    events
}

/// The `volume list --json` line of the volume named `name`.
fn volume_info(node: &Node, name: &str) -> Option<Value> {
    let out = node.ctl_ok(&["volume", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()?.iter().find(|v| v["name"] == name).cloned()
}

fn rejected(node: &Node) -> u64 {
    node.status()["rejected_entries"].as_u64().unwrap()
}

/// The files of the test and their contents (the second one written by the removed writer).
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plans/by-owner.txt", random_bytes(1, 300 * KIB)),
        (
            "by-writer.txt",
            b"written by the writer before its removal".to_vec(),
        ),
        ("plans/notes.txt", b"the owner's notes".to_vec()),
    ]
}

/// Every file is in `node`'s `@team` with its content.
fn intact(node: &Node) -> Result<(), String> {
    for (path, want) in files() {
        match fs::read(node.p("@team").join(path)) {
            Ok(got) if got == want => {}
            Ok(got) => return Err(format!("{path}: {} bytes, not the ones written", got.len())),
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(())
}

#[test]
fn removed_writer_back_dated_tombstones_are_refused_everywhere() {
    let c = Cluster::start(3, 3);
    let (owner, writer, reader) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    owner.ctl_ok(&["volume", "create", "team"]);
    owner.ctl_ok(&["volume", "share", "team", "--with", &public_key(writer)]);
    owner.ctl_ok(&[
        "volume",
        "share",
        "team",
        "--with",
        &public_key(reader),
        "--read-only",
    ]);
    let id = volume_info(owner, "team").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::create_dir(owner.p("@team/plans")).unwrap();
    let all = files();
    write_and_close(&owner.p("@team").join(all[0].0), &all[0].1).unwrap();
    write_and_close(&owner.p("@team").join(all[2].0), &all[2].1).unwrap();
    let by_writer = writer.p("@team").join(all[1].0);
    assert!(
        wait_until(SPREAD_TIMEOUT, || fs::write(&by_writer, &all[1].1).is_ok()),
        "the writer never became a writer"
    );
    for n in [owner, writer, reader] {
        assert!(
            wait_until(SPREAD_TIMEOUT, || intact(n).is_ok()),
            "before the attack: {:?}",
            intact(n)
        );
    }

    let writer_id = public_key(writer).split(':').next().unwrap().to_string();
    owner.ctl_ok(&["volume", "unshare", "team", "--with", &writer_id]);
    // The removal has reached every node: the writer's mount drops the volume, the reader's
    // sees one writer left.
    assert!(
        wait_until(SPREAD_TIMEOUT, || !writer.p("@team").exists()),
        "the removed writer still mounts the volume"
    );
    assert!(
        wait_until(SPREAD_TIMEOUT, || volume_info(reader, "team")
            .is_some_and(|v| v["writers"] == 1 && v["keys"] == 2)),
        "the removal did not reach the reader"
    );
    let before: Vec<u64> = c.nodes.iter().map(rejected).collect();

    // The removed writer's key, from its node's data dir, in the rogue's hands: tombstones
    // over every entry of the volume, by sync and by gossip to the reader, by sync to the owner.
    let key = writer.dir.join("user.key");
    let key = key.to_str().unwrap();
    let attack = |target: usize, phases: &str| {
        run_rogue(
            &c,
            target,
            &[
                "--attack",
                "removed-writer",
                "--phases",
                phases,
                "--user-key",
                key,
                "--volume",
                &id,
            ],
        )
    };
    let mut events = attack(2, "sync,gossip");
    events.extend(attack(0, "sync"));
    let made: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "back_dated")
        .map(|e| {
            assert!(
                e["stamp"].as_u64() < e["removal_clock"].as_u64(),
                "not stamped before the removal: {e}"
            );
            e["tombstones"].as_u64().unwrap()
        })
        .collect();

    assert_eq!(made.len(), 3, "{events:?}");
    // barrier: both targets have judged the tombstones (their refusals are counted).
    let judged = || {
        let now: Vec<u64> = c.nodes.iter().map(rejected).collect();
        now[0] >= before[0] + made[2] && now[2] >= before[2] + made[0]
    };
    assert!(
        wait_until(SPREAD_TIMEOUT, judged),
        "the tombstones were not judged: {before:?} -> {:?}, made {made:?}",
        c.nodes.iter().map(rejected).collect::<Vec<_>>()
    );
    // Nothing is deleted on any node, while anti-entropy and gossip run (a window: a deletion
    // that got in shows on the reader at once, and on the owner within a sync round).
    // barrier: the window lasts until the owner and the reader have each completed two more
    // anti-entropy sessions (status.passes.sync).
    let watch = Duration::from_secs(20);
    let want_syncs: Vec<u64> = [owner, reader]
        .iter()
        .map(|n| passes(n, "sync") + 2)
        .collect();
    let synced = || {
        [owner, reader]
            .iter()
            .zip(&want_syncs)
            .all(|(n, &want)| passes(n, "sync") >= want)
    };
    let started = Instant::now();
    let ended = wait_until(Duration::from_secs(120), || {
        intact(owner).is_err()
            || intact(reader).is_err()
            || (started.elapsed() >= watch && synced())
    });
    assert!(
        intact(owner).is_ok() && intact(reader).is_ok(),
        "files lost: owner {:?}, reader {:?}",
        intact(owner),
        intact(reader)
    );
    assert!(
        ended,
        "barrier: the owner and the reader did not complete two more anti-entropy sessions{}",
        c.report()
    );
    for n in [owner, reader] {
        let names: Vec<String> = fs::read_dir(n.p("@team"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("conflict")),
            "a conflict copy: {names:?}"
        );
    }
    // The volume's root, its directory and its three files.
    assert!(made.iter().all(|&n| n >= 5), "{made:?}");
    // Every push was refused whole, and counted.
    let pushes: Vec<&Value> = events.iter().filter(|e| e["event"] == "pushed").collect();
    assert_eq!(pushes.len(), 2, "{events:?}");
    for (p, n) in pushes.iter().zip([made[0], made[2]]) {
        assert_eq!(
            (p["applied"].as_u64(), p["rejected"].as_u64()),
            (Some(0), Some(n)),
            "{p}"
        );
    }
    let after: Vec<u64> = c.nodes.iter().map(rejected).collect();
    assert!(
        after[0] >= before[0] + made[2] && after[2] >= before[2] + made[0],
        "refusals not counted: {before:?} -> {after:?}"
    );
    let log = owner.log_text() + &reader.log_text();
    assert!(!log.contains("panicked"), "a node panicked");
}
