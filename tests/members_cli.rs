//! The membership commands of one node, as a person types them: a node made without a network
//! key founds a certified network; its invites, members, and the errors of expel and admin. Flows
//! between several certified nodes are in the admission tests. Needs root (mounts).

mod common;

use common::*;
use p2pfs::identity::Invite;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_node_made_without_a_key_founds_a_certified_network_and_manages_its_invites() {
    let mut n = Node::uninit();
    let out = n.run_init(&["--name", "home"]);
    assert!(out.status.success(), "{}", out_text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let user = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("user id:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        printed.contains(&format!(
            "founded a certified network: you (user {}) are its founder and admin",
            &user[..12]
        )),
        "{printed}"
    );
    n.start();
    let peer = n.peer_id();

    let admission = n.status()["admission"].clone();
    assert_eq!(admission["mode"], "certified", "{admission}");
    assert_eq!(admission["founder"], user.as_str());
    assert_eq!(admission["admin"], true);
    assert_eq!(admission["role"], "storage");
    assert!(admission["last_refusal"].is_null(), "{admission}");
    let text = n.ctl_ok(&["status"]);
    assert!(
        text.contains(&format!(
            "membership:  certified (founder {}), this node: storage, admin",
            &user[..12]
        )),
        "{text}"
    );

    // Two invites: two different single-use tokens of this network, each with its role and
    // expiry, naming this node as the one to redeem them.
    let storage = n.ctl_ok(&["invite"]).trim().to_string();
    let reader = n
        .ctl_ok(&["invite", "--role", "reader", "--expires", "never"])
        .trim()
        .to_string();
    assert_ne!(storage, reader);
    let (s, r) = (
        Invite::decode(&storage, now()).unwrap(),
        Invite::decode(&reader, now()).unwrap(),
    );
    for (token, invite, role) in [(&storage, &s, "storage"), (&reader, &r, "reader")] {
        assert!(token.starts_with("p2pfs-invite-3-"), "{token}");
        let c = invite.certified.as_ref().unwrap();
        assert_eq!(c.founder.to_string(), user);
        assert_eq!(c.role, role);
        assert_eq!(invite.inviter, peer);
        assert!(invite.bootstrap.iter().all(|a| a.ends_with(&peer)));
    }
    assert_ne!(
        s.certified.as_ref().unwrap().secret,
        r.certified.as_ref().unwrap().secret
    );
    let in_a_day = s.expires.unwrap() - now();
    assert!((86_000..=86_400).contains(&in_a_day), "{in_a_day}");
    assert_eq!(r.expires, None);
    let out = n.ctl(&["invite", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(2), "{}", out_text(&out));

    let invites = json(&n.ctl_ok(&["invites", "--json"]));
    let rows = invites.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{invites}");
    assert_eq!(
        (&rows[0]["role"], &rows[0]["state"]),
        (&"storage".into(), &"open".into())
    );
    assert_eq!(
        (&rows[1]["role"], &rows[1]["state"], &rows[1]["expires"]),
        (&"reader".into(), &"open".into(), &serde_json::Value::Null)
    );
    assert!(rows[0]["used_by_name"].is_null() && rows[0]["used_by_peer"].is_null());
    let first = rows[0]["id"].as_str().unwrap().to_string();

    // Revoking one: listed as revoked; a second revoke, or an id of nothing, is an error.
    let said = n.ctl_ok(&["invites", "--revoke", &first]);
    assert!(said.contains("revoked 1 invite"), "{said}");
    let states: Vec<String> = json(&n.ctl_ok(&["invites", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["revoked", "open"]);
    for bad in [first.as_str(), "ffffffff", "x"] {
        let out = n.ctl(&["invites", "--revoke", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", out_text(&out));
    }
    let table = n.ctl_ok(&["invites"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("id") && lines[0].ends_with("state"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&first) && lines[1].ends_with("revoked"),
        "{table}"
    );
    assert!(
        lines[2].contains("reader") && lines[2].contains("never") && lines[2].ends_with("open"),
        "{table}"
    );

    // Members: the founder's node alone, an admin, alive.
    let members = json(&n.ctl_ok(&["members", "--json"]));
    let m = &members.as_array().unwrap()[..];
    assert_eq!(m.len(), 1, "{members}");
    assert_eq!(m[0]["peer_id"], peer.as_str());
    assert_eq!(m[0]["name"], "home");
    assert_eq!(m[0]["user"], user.as_str());
    assert_eq!(m[0]["admitted_by"], user.as_str());
    assert_eq!(m[0]["admitted_by_name"], "home");
    assert_eq!(
        (&m[0]["role"], &m[0]["admin"]),
        (&"storage".into(), &true.into())
    );
    assert_eq!(m[0]["state"], "alive");
    let table = n.ctl_ok(&["members"]);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with("home ")
            && l.contains("storage, admin")
            && l.ends_with("alive")),
        "{table}"
    );
    assert!(n.ctl_ok(&["members", "--ids"]).contains(&peer));

    // Expel and admin name nodes: an unknown name is bad usage, listing the nodes there are.
    for args in [&["expel", "desk"][..], &["admin", "add", "desk"]] {
        let out = n.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out_text(&out));
        assert!(
            out_text(&out).contains("no certified node is called")
                && out_text(&out).contains("desk")
                && out_text(&out).contains(&peer),
            "{}",
            out_text(&out)
        );
    }
    // What the gate refuses is one line and exit 1.
    let out = n.ctl(&["expel", "home"]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("cannot expel itself"),
        "{}",
        out_text(&out)
    );
    let out = n.ctl(&["admin", "remove", &user]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("the founder is always an admin"),
        "{}",
        out_text(&out)
    );
    assert!(
        n.ctl_ok(&["admin", "add", "home"])
            .contains("already an admin")
    );
}

#[test]
fn a_network_made_with_a_key_is_key_only_and_says_so() {
    let scratch = tempfile::tempdir().unwrap();
    let mut n = Node::init_with_key(&scratch.path().join("network.key"));
    assert!(!n.dir.join("membership.cbor").exists());
    n.start();
    let admission = n.status()["admission"].clone();
    assert_eq!(admission["mode"], "key-only", "{admission}");
    assert!(admission["founder"].is_null() && admission["role"].is_null());
    assert_eq!(admission["admin"], false);
    assert!(n.ctl_ok(&["status"]).contains("membership:  key only"));
    // Invites are the network key, as before certificates; roles need certificates.
    let token = n.ctl_ok(&["invite"]);
    assert!(token.starts_with("p2pfs-invite-2-"), "{token}");
    for args in [
        &["members"][..],
        &["invites"],
        &["expel", "x"],
        &["admin", "add", "x"],
        &["invite", "--role", "reader"],
    ] {
        let out = n.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out_text(&out));
        assert!(
            out_text(&out).contains("key only") && out_text(&out).contains("certify"),
            "{args:?}: {}",
            out_text(&out)
        );
    }
}

/// Admits `joiner` (made with `p2pfs init --join` a v3 token of `admin`'s node) as the
/// handshake of their first connection would: the gates of both stopped nodes, loaded from
/// their data dirs, exchange hellos and the grant. No network: what the commands then show
/// and do is the subject here.
fn admit_offline(admin: &Node, joiner: &Node) {
    let a = p2pfs::node::Node::load(&admin.dir).unwrap();
    let j = p2pfs::node::Node::load(&joiner.dir).unwrap();
    let (ap, jp) = (a.node_id.peer_id(), j.node_id.peer_id());
    let grant = a
        .gate
        .check(&jp, &j.gate.hello(&ap))
        .unwrap()
        .expect("a grant for the invited node");
    j.gate.check(&ap, &a.gate.hello(&jp)).unwrap();
    j.gate.granted(&ap, &grant);
}

#[test]
fn the_founder_grants_admin_rights_and_expels_a_node_others_may_not() {
    let mut home = Node::uninit();
    home.init_ok(&["--name", "home"]);
    home.start();
    let token = home
        .ctl_ok(&["invite", "--role", "reader"])
        .trim()
        .to_string();
    let mut desk = Node::uninit();
    desk.init_ok(&["--join", &token, "--name", "desk"]);
    home.stop();
    admit_offline(&home, &desk);
    home.start();
    desk.start();
    let desk_id = desk.peer_id();

    // desk is certified, a reader, not an admin: it may not invite, expel or grant.
    let admission = desk.status()["admission"].clone();
    assert_eq!(admission["mode"], "certified", "{admission}");
    assert_eq!(admission["role"], "reader");
    assert_eq!(admission["admin"], false);
    let founder = home.status()["admission"]["founder"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(admission["founder"], founder.as_str());
    for args in [&["invite"][..], &["expel", "home"]] {
        let out = desk.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out_text(&out));
        assert!(
            out_text(&out).contains(&format!(
                "only an admin may do this; admins here: home (user {})",
                &founder[..12]
            )),
            "{args:?}: {}",
            out_text(&out)
        );
    }
    let out = desk.ctl(&["admin", "add", "desk"]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("only the founder"),
        "{}",
        out_text(&out)
    );
    // Both nodes list both certificates (desk got the ledger with its own).
    for node in [&home, &desk] {
        let members = json(&node.ctl_ok(&["members", "--json"]));
        let names: Vec<&str> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["desk", "home"], "{members}");
    }

    // The invite shows who used it.
    let invites = json(&home.ctl_ok(&["invites", "--json"]));
    assert_eq!(invites[0]["state"], "used by desk", "{invites}");
    assert_eq!(invites[0]["used_by_peer"], desk_id.as_str());
    assert!(home.ctl_ok(&["invites"]).contains("used by desk"));

    // The founder makes desk's user an admin, and takes it back.
    let said = home.ctl_ok(&["admin", "add", "desk"]);
    assert!(
        said.contains("desk (user ") && said.contains("is an admin now"),
        "{said}"
    );
    let desk_row = |node: &Node| {
        json(&node.ctl_ok(&["members", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["peer_id"] == desk_id.as_str())
            .cloned()
            .unwrap()
    };
    assert_eq!(desk_row(&home)["admin"], true);
    assert!(home.ctl_ok(&["members"]).contains("reader, admin"));
    let said = home.ctl_ok(&["admin", "remove", &desk_id]);
    assert!(said.contains("no longer an admin"), "{said}");
    assert_eq!(desk_row(&home)["admin"], false);

    // Expel: one line saying what happened; desk is expelled in the list; a second expel is
    // refused.
    let said = home.ctl_ok(&["expel", "desk"]);
    assert!(
        said.starts_with("expelled desk (12D3")
            && said.contains("it cannot reconnect; network key rotated (epoch 1)"),
        "{said}"
    );
    assert_eq!(desk_row(&home)["state"], "expelled");
    let out = home.ctl(&["expel", &desk_id]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("expelled already"),
        "{}",
        out_text(&out)
    );
}
