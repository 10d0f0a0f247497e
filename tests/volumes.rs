//! Volumes across real nodes of different users: `p2pfs-ctl volume create/share/unshare/list`,
//! `@NAME` directories in the mount, read-only members, removal, the personal volume of one
//! user on two machines — and what a node that is not a member learns: its data dir and every
//! node's log are searched for the names and contents it stores for others. Needs root.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn volume_names(node: &Node) -> Vec<String> {
    let out = node.ctl_ok(&["volume", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v["dir"].as_str().unwrap().to_string())
        .collect()
}

/// Every occurrence of any of `needles` in the files below `dir` (recursively) and in `extra`
/// files, as (file, needle).
fn find_bytes(dir: Option<&Path>, extra: &[&Path], needles: &[&[u8]]) -> Vec<(String, String)> {
    let mut files: Vec<std::path::PathBuf> = dir
        .map(walk)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.extend(extra.iter().map(|p| p.to_path_buf()));
    let mut hits = Vec::new();
    for f in files {
        let Ok(data) = fs::read(&f) else { continue };
        for n in needles {
            if data.windows(n.len()).any(|w| w == *n) {
                hits.push((
                    f.display().to_string(),
                    String::from_utf8_lossy(n).into_owned(),
                ));
            }
        }
    }
    hits
}

#[test]
fn a_volume_is_shared_read_only_then_read_write_then_taken_away_and_others_learn_nothing() {
    let c = Cluster::start(3, 3);
    let (a, b, outsider) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let out = a.ctl_ok(&["volume", "create", "team-volume"]);
    assert!(out.contains("@team-volume"), "{out}");
    let team_a = a.p("@team-volume");
    assert!(
        team_a.is_dir(),
        "the new volume is a directory in the owner's mount"
    );

    // Distinctive names and contents, to search for where they must not be.
    let secret_name = "QuarterlyPlanZebra.txt";
    let secret_dir = "HiddenDirectoryOkapi";
    let marker = b"CONTENT-MARKER-narwhal-7731 ".repeat(40_000); // ~1.1 MiB: several chunks
    fs::create_dir(team_a.join(secret_dir)).unwrap();
    write_and_close(&team_a.join(secret_dir).join(secret_name), &marker).unwrap();

    // Before sharing: B is no member and sees nothing; it still stores the volume's data.
    // barrier: a file A writes afterwards (in the network volume) has reached B.
    wait_later_file(a, &[b], "after-the-volume.txt");
    assert!(!b.p("@team-volume").exists());
    assert_eq!(volume_names(b), vec!["/", "/@home"]);

    a.ctl_ok(&[
        "volume",
        "share",
        "team-volume",
        "--with",
        &public_key(b),
        "--read-only",
    ]);
    let in_b = b.p("@team-volume").join(secret_dir).join(secret_name);
    wait_for_file(&in_b, &marker, SPREAD_TIMEOUT).unwrap_or_else(|e| panic!("B: {e}"));
    let listed = b.ctl_ok(&["volume", "list"]);
    assert!(
        listed.contains("team-volume") && listed.contains("reader"),
        "{listed}"
    );
    let refused = fs::write(b.p("@team-volume/mine.txt"), b"x").unwrap_err();
    assert_eq!(errno(&refused), libc::EROFS, "a reader's write: {refused}");
    let refused = fs::remove_file(&in_b).unwrap_err();
    assert_eq!(errno(&refused), libc::EROFS, "a reader's delete: {refused}");

    // Read-write: B writes, A reads.
    a.ctl_ok(&["volume", "share", "team-volume", "--with", &public_key(b)]);
    let b_file = b.p("@team-volume/from-b.txt");
    assert!(
        wait_until(SPREAD_TIMEOUT, || fs::write(&b_file, b"written by b")
            .is_ok()),
        "B never became a writer"
    );
    wait_for_file(&team_a.join("from-b.txt"), b"written by b", SPREAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("A: {e}"));

    // The outsider holds the volume's chunks (R = 3 on 3 nodes) but not its names or contents.
    let chunks = a
        .where_chunk_ids(&format!("@team-volume/{secret_dir}/{secret_name}"))
        .unwrap();
    assert!(chunks.len() >= 2, "{chunks:?}");
    assert!(
        wait_until(SPREAD_TIMEOUT, || {
            let held = outsider.chunk_ids();
            chunks.iter().all(|id| held.contains(id))
        }),
        "the outsider does not store the volume's chunks"
    );
    assert!(!outsider.p("@team-volume").exists());
    let needles: [&[u8]; 5] = [
        secret_name.as_bytes(),
        secret_dir.as_bytes(),
        b"team-volume",
        b"CONTENT-MARKER-narwhal",
        b"written by b",
    ];
    // The search finds what is there (a member's view of the volume)...
    assert!(!find_bytes(Some(&team_a), &[], &needles[3..4]).is_empty());
    // ... and nothing of it in the outsider's data dir and log.
    let hits = find_bytes(
        Some(&outsider.dir),
        &[&outsider.log, &outsider.stdout_log],
        &needles,
    );
    assert!(hits.is_empty(), "the outsider learned: {hits:?}");
    // No node logs a name or content at the default level, members included.
    for n in [a, b] {
        let hits = find_bytes(None, &[&n.log, &n.stdout_log], &needles);
        assert!(hits.is_empty(), "a log shows: {hits:?}");
    }

    // Taken away: B's directory goes, later writes are not readable by B, earlier ones stay.
    let b_id = public_key(b).split(':').next().unwrap().to_string();
    let out = a.ctl_ok(&["volume", "unshare", "team-volume", "--with", &b_id]);
    assert!(out.contains("new key"), "{out}");
    assert!(
        wait_until(SPREAD_TIMEOUT, || !b.p("@team-volume").exists()),
        "B still sees the volume after its removal"
    );
    write_and_close(&team_a.join("after-removal.txt"), b"not for b").unwrap();
    assert_eq!(
        fs::read(team_a.join("from-b.txt")).unwrap(),
        b"written by b"
    );
    let listed = a.ctl_ok(&["volume", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let team = v
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "team-volume")
        .unwrap();
    assert_eq!(
        (team["members"].as_u64(), team["keys"].as_u64()),
        (Some(1), Some(2))
    );

    // Only the owner changes membership; bad input is refused clearly.
    let out = b.ctl(&[
        "volume",
        "share",
        "team-volume",
        "--with",
        &public_key(outsider),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    let out = a.ctl(&["volume", "share", "team-volume", "--with", "not-a-key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out_text(&out).contains("not a user public key"),
        "{}",
        out_text(&out)
    );
    let out = a.ctl(&["volume", "create", "bad/name"]);
    assert_eq!(out.status.code(), Some(1));
    for n in &c.nodes {
        assert_eq!(
            n.status()["rejected_entries"],
            0,
            "honest nodes refused entries"
        );
    }
}

#[test]
fn one_user_on_two_machines_has_one_personal_volume_that_nobody_else_reads() {
    let mut c = Cluster::start(2, 2);
    let export = c.nodes[0].scratch().join("me.userkey");
    let out = run_cmd(
        Command::new(bin())
            .args(["user", "export"])
            .arg(&export)
            .arg("--data-dir")
            .arg(&c.nodes[0].dir),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out_text(&out));
    // A second machine of the first node's user.
    let mut twin = Node::uninit();
    twin.init_ok(&[
        "--network-key",
        c.key.to_str().unwrap(),
        "--user-key",
        export.to_str().unwrap(),
    ]);
    let boot = c.nodes[0].bootstrap_addr();
    twin.start_args(&c.run_args(Some(&boot)));
    c.nodes.push(twin);
    c.wait_formed();

    let data = random_bytes(7, 300_000);
    write_and_close(&c.nodes[0].p("@home/diary.bin"), &data).unwrap();
    wait_for_file(&c.nodes[2].p("@home/diary.bin"), &data, SPREAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("the user's second machine: {e}"));
    // The other user's @home is their own, and empty.
    // barrier: a file node 1 writes afterwards (in the network volume) has reached node 2.
    wait_later_file(&c.nodes[0], &[&c.nodes[1]], "after-the-diary.txt");
    assert!(!c.nodes[1].p("@home/diary.bin").exists());
    assert_eq!(fs::read_dir(c.nodes[1].p("@home")).unwrap().count(), 0);
    // Moving between volumes is a copy (EXDEV for rename), as between filesystems.
    fs::write(c.nodes[0].p("top.txt"), b"top").unwrap();
    let e = fs::rename(c.nodes[0].p("top.txt"), c.nodes[0].p("@home/top.txt")).unwrap_err();
    assert_eq!(errno(&e), libc::EXDEV);
    c.nodes[0].sh_ok("mv top.txt @home/ && test -f @home/top.txt && test ! -e top.txt");
    // A name starting with @ in the root is reserved.
    let e = fs::create_dir(c.nodes[0].p("@mine")).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM);
}
