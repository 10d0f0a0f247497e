//! Snapshot views in the mount (`.snapshots/<TIME>`), across real nodes. Needs root (mounts).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

#[test]
fn a_view_on_another_node_reads_what_was_there_before_an_overwrite_and_a_delete() {
    let c = Cluster::start(3, 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let old = random_bytes(1, 300_000);
    let notes = random_bytes(2, 50_000);
    write_and_close(&a.p("report.bin"), &old).unwrap();
    fs::create_dir(a.p("docs")).unwrap();
    write_and_close(&a.p("docs/notes.bin"), &notes).unwrap();
    wait_for_file(&b.p("report.bin"), &old, SPREAD_TIMEOUT).unwrap();
    wait_for_file(&b.p("docs/notes.bin"), &notes, SPREAD_TIMEOUT).unwrap();

    // The view of now, as node A names it (its time, to the second).
    let path = a.ctl_ok(&["snapshot"]).trim().to_string();
    assert!(
        path.starts_with(&format!("{}/.snapshots/", a.mnt.display())),
        "{path}"
    );
    let time = Path::new(&path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let new = random_bytes(3, 120_000);
    write_and_close(&a.p("report.bin"), &new).unwrap();
    fs::remove_dir_all(a.p("docs")).unwrap();
    wait_for_file(&b.p("report.bin"), &new, SPREAD_TIMEOUT).unwrap();
    assert!(
        wait_until(SPREAD_TIMEOUT, || !b.p("docs").exists()),
        "the delete never reached node B"
    );

    // Node B shows the old bytes and the deleted tree in its view at that time.
    let view = b.p(&format!(".snapshots/{time}"));
    assert_eq!(fs::read(view.join("report.bin")).unwrap(), old);
    assert_eq!(fs::read(view.join("docs/notes.bin")).unwrap(), notes);
    assert_eq!(fs::read(b.p("report.bin")).unwrap(), new);
    let listed: Vec<String> = fs::read_dir(b.p(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!listed.is_empty(), "no change minute listed");

    // `find` of the live tree never enters the views.
    let found = Command::new("find").arg(&b.mnt).output().unwrap();
    assert!(found.status.success(), "{}", out_text(&found));
    let found = String::from_utf8_lossy(&found.stdout);
    assert!(found.contains("report.bin"), "{found}");
    assert!(!found.contains(".snapshots"), "{found}");

    // Every write under it fails: read-only file system.
    for target in [
        view.join("new"),
        view.join("docs/notes.bin"),
        b.p(".snapshots/x"),
    ] {
        let out = Command::new("touch").arg(&target).output().unwrap();
        assert!(!out.status.success(), "touch {}", target.display());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{}",
            out_text(&out)
        );
    }
    let err = fs::create_dir(view.join("d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = fs::remove_file(view.join("report.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(view.join("report.bin")).unwrap(), old);

    // A named snapshot on node B: a name for that time, listed, in `.snapshots`.
    let named = b
        .ctl_ok(&["snapshot", "--name", "before-edit", "--at", &time])
        .trim()
        .to_string();
    assert_eq!(
        named,
        b.p(".snapshots/before-edit").to_string_lossy().into_owned()
    );
    assert_eq!(fs::read(Path::new(&named).join("report.bin")).unwrap(), old);
    let json: serde_json::Value =
        serde_json::from_str(&b.ctl_ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(json[0]["name"], "before-edit");
    assert_eq!(json[0]["path"], named.as_str());
    assert_eq!(json[0]["visible"], true);
    assert!(
        fs::read_dir(b.p(".snapshots"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "before-edit")
    );
    // A member volume has its views too, private to the node's user as the volume is.
    write_and_close(&b.p("@home/diary.txt"), b"monday").unwrap();
    let home = b.ctl_ok(&["snapshot", "@home"]).trim().to_string();
    assert!(
        home.starts_with(&format!("{}/@home/.snapshots/", b.mnt.display())),
        "{home}"
    );
    write_and_close(&b.p("@home/diary.txt"), b"tuesday").unwrap();
    assert_eq!(
        fs::read(Path::new(&home).join("diary.txt")).unwrap(),
        b"monday"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&home).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o500, "{mode:o}");

    // A time to come names nothing; asking for it is an error.
    let out = b.ctl(&["snapshot", "--at", "2999-01-01T00:00"]);
    assert!(!out.status.success(), "{}", out_text(&out));
    assert!(!b.p(".snapshots/2999-01-01T00:00").exists());
}
