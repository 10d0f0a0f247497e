//! Concurrent writers across a partition, with real nodes in network namespaces: both sides
//! change the same existing file, and one side deletes a file the other modifies. After the
//! link comes back, both sides agree: the later version of the shared file keeps its name and
//! the other is kept as a conflict copy; the modified file survives the delete. Needs root.

mod common;

use common::netlab::Lab;
use common::*;
use std::time::Duration;

/// Root listing of a node with contents.
fn view(node: &Node) -> Vec<(String, Vec<u8>)> {
    let names = root_names(&node.mnt);
    names
        .into_iter()
        .map(|n| {
            let c = std::fs::read(node.mnt.join(&n)).unwrap_or_default();
            (n, c)
        })
        .collect()
}

fn names(v: &[(String, Vec<u8>)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn same_file_changed_on_both_sides_and_delete_against_modify() {
    let mut lab = Lab::start(2, 0, 2);
    lab.cluster.wait_formed();
    let (a, b) = (&lab.cluster.nodes[0], &lab.cluster.nodes[1]);
    write_and_close(&a.p("shared.txt"), b"original\n").unwrap();
    write_and_close(&a.p("doomed.txt"), b"original\n").unwrap();
    for f in ["shared.txt", "doomed.txt"] {
        wait_for_file(&b.p(f), b"original\n", SPREAD_TIMEOUT).unwrap();
    }

    lab.net.cut(2);
    write_and_close(&a.p("shared.txt"), b"changed on side A\n").unwrap();
    std::fs::remove_file(a.p("doomed.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    write_and_close(&b.p("shared.txt"), b"changed on side B, later\n").unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(b.p("doomed.txt"))
            .unwrap();
        f.write_all(b"kept by B\n").unwrap();
        close_checked(f).unwrap();
    }
    // barrier: B has heard nothing from A since the cut, for its suspect period.
    wait_unheard(b, &a.peer_id());
    assert_eq!(
        std::fs::read(b.p("shared.txt")).unwrap(),
        b"changed on side B, later\n",
        "the partition did not hold"
    );

    lab.net.heal(2);
    let agreed = wait_until(Duration::from_secs(90), || {
        let (va, vb) = (view(a), view(b));
        va == vb && va.len() == 3
    });
    let (va, vb) = (view(a), view(b));
    assert!(
        agreed,
        "the sides do not agree after healing: {:?} vs {:?}",
        names(&va),
        names(&vb)
    );
    let get = |n: &str| va.iter().find(|(x, _)| x == n).map(|(_, c)| c.clone());
    assert_eq!(
        get("shared.txt").as_deref(),
        Some(&b"changed on side B, later\n"[..])
    );
    let copy: Vec<_> = va
        .iter()
        .filter(|(n, _)| conflict_label(n, "shared.txt").is_some())
        .collect();
    assert_eq!(copy.len(), 1, "{:?}", names(&va));
    assert_eq!(copy[0].1, b"changed on side A\n");
    assert_eq!(
        get("doomed.txt").as_deref(),
        Some(&b"original\nkept by B\n"[..]),
        "a modify lost to a concurrent delete"
    );

    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}
