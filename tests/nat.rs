//! Nodes behind NATs, in network namespaces (`common::netlab::NatLab`): iptables MASQUERADE
//! routers with conntrack filtering, a public segment, no way out of the lab.
//!
//! The `lab_*` tests check the lab itself with plain sockets (no p2pfs): a NATed host's
//! connections show its router's public address; nothing reaches it unsolicited; a cone NAT
//! keeps one outside port per inside port, a symmetric one does not; two cone NATs let a TCP
//! simultaneous open (what hole punching does) through, two symmetric ones do not. The other
//! tests run p2pfs nodes in that lab. Needs root.

mod common;

use common::netlab::*;
use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

fn v4(addr: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr.parse::<Ipv4Addr>().unwrap(), port)
}

/// A listener on `addr:0` in namespace `ns`.
fn listen_in(ns: &str, addr: &str) -> TcpListener {
    let a = v4(addr, 0);
    in_ns(ns, move || TcpListener::bind(a).unwrap())
}

/// Connects from host `h` (from `local_port`, 0 for any) to `to`; on success, the address
/// `listener` (which `to` must reach) saw the connection come from.
fn observed_source(
    lab: &NatLab,
    h: usize,
    local_port: u16,
    to: SocketAddrV4,
    listener: &TcpListener,
) -> std::io::Result<SocketAddrV4> {
    let stream = in_ns(&lab.hosts[h].ns, move || {
        connect_from(local_port, to, Duration::from_secs(5))
    })?;
    let (mut conn, from) = listener.accept().unwrap();
    // A byte each way: the connection carries data, not only a handshake.
    let mut stream = stream;
    stream.write_all(b"x").unwrap();
    let mut b = [0u8];
    conn.read_exact(&mut b).unwrap();
    conn.write_all(b"y").unwrap();
    stream.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y");
    match from {
        std::net::SocketAddr::V4(a) => Ok(a),
        other => panic!("IPv6 source {other}"),
    }
}

/// A free local port in host `h`'s namespace (bound once, then released).
fn free_port(lab: &NatLab, h: usize) -> u16 {
    let a = v4(&lab.hosts[h].addr, 0);
    in_ns(&lab.hosts[h].ns, move || {
        TcpListener::bind(a).unwrap().local_addr().unwrap().port()
    })
}

#[test]
fn lab_cone_nat_masquerades_and_drops_unsolicited_inbound() {
    let mut lab = NatLab::new(0);
    let public = lab.public_host();
    let r = lab.router(Nat::Cone);
    let a = lab.host_behind(r);
    let wan = lab.routers[r].wan_addr.clone();
    assert_eq!(lab.public_addr_of(a), wan);

    // Outbound works and comes from the router's public address, the inside port kept.
    let l = listen_in(&lab.hosts[public].ns, &lab.hosts[public].addr);
    let to = v4(&lab.hosts[public].addr, l.local_addr().unwrap().port());
    let port = free_port(&lab, a);
    let seen = observed_source(&lab, a, port, to, &l).expect("A connects out");
    assert_eq!(seen.ip().to_string(), wan, "not masqueraded");
    assert_eq!(seen.port(), port, "a cone NAT keeps a free inside port");

    // A listens; its router's LAN reaches it (the listener is up) ...
    let al = listen_in(&lab.hosts[a].ns, &lab.hosts[a].addr);
    let aport = al.local_addr().unwrap().port();
    let lan_side = in_ns(&lab.routers[r].ns, {
        let to = v4(&lab.hosts[a].addr, aport);
        move || connect_from(0, to, Duration::from_secs(5))
    });
    assert!(lan_side.is_ok(), "the router cannot reach A: {lan_side:?}");
    drop(al.accept().unwrap());
    // ... but the public side does not: not at the router's address (nothing forwarded) ...
    let at_router = in_ns(&lab.hosts[public].ns, {
        let to = v4(&wan, aport);
        move || connect_from(0, to, Duration::from_secs(3))
    });
    assert!(
        at_router.is_err(),
        "unsolicited inbound at the router's address got through"
    );
    // ... nor straight at A's private address through the router (an ISP-side host routing to
    // the LAN): the FORWARD policy drops what no connection from inside opened.
    ip(&[
        "-n",
        &lab.hosts[public].ns,
        "route",
        "add",
        &format!("{}.0/24", lab.routers[r].lan_net),
        "via",
        &wan,
    ]);
    let through = in_ns(&lab.hosts[public].ns, {
        let to = v4(&lab.hosts[a].addr, aport);
        move || connect_from(0, to, Duration::from_secs(3))
    });
    assert!(
        through.is_err(),
        "unsolicited inbound through the router got through; conntrack:\n{}",
        lab.conntrack(r)
    );
    let left = lab.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The outside ports (reply direction's `dport`) of the TCP connections `conntrack -L` lists
/// from `inside_addr`, sorted, without repeats.
fn outside_ports(table: &str, inside_addr: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .lines()
        .filter(|l| l.starts_with("tcp"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let srcs: Vec<usize> = (0..f.len()).filter(|&i| f[i].starts_with("src=")).collect();
            // Original direction first, then the reply: src= dst= sport= dport= each.
            if srcs.len() != 2 || f[srcs[0]] != format!("src={inside_addr}") {
                return None;
            }
            f[srcs[1]..]
                .iter()
                .find_map(|w| w.strip_prefix("dport="))
                .and_then(|p| p.parse().ok())
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

#[test]
fn lab_symmetric_nat_maps_each_destination_to_its_own_port() {
    let mut lab = NatLab::new(1);
    let public = lab.public_host();
    let (cone, sym) = (lab.router(Nat::Cone), lab.router(Nat::Symmetric));
    let (c, s) = (lab.host_behind(cone), lab.host_behind(sym));
    // Three destinations: three listeners on the public host.
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| listen_in(&lab.hosts[public].ns, &lab.hosts[public].addr))
        .collect();
    let dest = |l: &TcpListener| v4(&lab.hosts[public].addr, l.local_addr().unwrap().port());
    let mapped = |h: usize| -> Vec<SocketAddrV4> {
        let port = free_port(&lab, h);
        listeners
            .iter()
            .map(|l| observed_source(&lab, h, port, dest(l), l).expect("connects out"))
            .collect()
    };

    let from_cone = mapped(c);
    assert!(
        from_cone.iter().all(|a| *a == from_cone[0]),
        "a cone NAT mapped one inside port to several outside ones: {from_cone:?}"
    );
    let from_sym = mapped(s);
    assert!(
        from_sym
            .iter()
            .all(|a| a.ip().to_string() == lab.routers[sym].wan_addr),
        "{from_sym:?}"
    );
    let mut ports: Vec<u16> = from_sym.iter().map(|a| a.port()).collect();
    ports.sort();
    ports.dedup();
    // Random ports: two of three may collide by chance (~1 in 20 000), all three never.
    assert!(
        ports.len() >= 2,
        "a symmetric NAT mapped one inside port to one outside port for 3 destinations: \
         {from_sym:?}; conntrack:\n{}",
        lab.conntrack(sym)
    );
    // The routers' own tables say the same: the reply direction of each connection from the
    // host's port goes to the outside port the public host saw.
    for (r, h, seen) in [(cone, c, &from_cone), (sym, s, &from_sym)] {
        let mut want: Vec<u16> = seen.iter().map(|a| a.port()).collect();
        want.sort();
        want.dedup();
        let table = lab.conntrack(r);
        assert_eq!(
            outside_ports(&table, &lab.hosts[h].addr),
            want,
            "router {r}'s conntrack:\n{table}"
        );
    }
    let left = lab.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn lab_carrier_nat_shows_the_outermost_address() {
    let mut lab = NatLab::new(2);
    let public = lab.public_host();
    let carrier = lab.router(Nat::Cone);
    let home = lab.router_behind(carrier, Nat::Cone);
    let a = lab.host_behind(home);
    assert_eq!(lab.public_addr_of(a), lab.routers[carrier].wan_addr);
    assert!(
        lab.routers[home]
            .wan_addr
            .starts_with(&lab.routers[carrier].lan_net),
        "the home router's WAN is on the carrier's LAN"
    );
    let l = listen_in(&lab.hosts[public].ns, &lab.hosts[public].addr);
    let to = v4(&lab.hosts[public].addr, l.local_addr().unwrap().port());
    let seen = observed_source(&lab, a, 0, to, &l).expect("A connects out through both NATs");
    assert_eq!(seen.ip().to_string(), lab.routers[carrier].wan_addr);

    let al = listen_in(&lab.hosts[a].ns, &lab.hosts[a].addr);
    let aport = al.local_addr().unwrap().port();
    let inbound = in_ns(&lab.hosts[public].ns, {
        let to = v4(&lab.routers[carrier].wan_addr, aport);
        move || connect_from(0, to, Duration::from_secs(3))
    });
    assert!(
        inbound.is_err(),
        "unsolicited inbound through the carrier NAT"
    );
    let left = lab.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Hosts `a` and `b` connect to each other's public address at once, each from the port it
/// expects the other to aim at (its own: a cone NAT keeps it): a TCP simultaneous open, as a
/// hole punch does. Ok if both ends connect and carry a byte.
fn simultaneous_open(lab: &NatLab, a: usize, b: usize) -> Result<(), String> {
    let (pa, pb) = (free_port(lab, a), free_port(lab, b));
    let (to_b, to_a) = (
        v4(&lab.public_addr_of(b), pb),
        v4(&lab.public_addr_of(a), pa),
    );
    let (na, nb) = (lab.hosts[a].ns.clone(), lab.hosts[b].ns.clone());
    let ta = std::thread::spawn(move || {
        in_ns(&na, move || connect_from(pa, to_b, Duration::from_secs(10)))
    });
    let tb = std::thread::spawn(move || {
        in_ns(&nb, move || connect_from(pb, to_a, Duration::from_secs(10)))
    });
    let (sa, sb) = (ta.join().unwrap(), tb.join().unwrap());
    let (mut sa, mut sb) = (
        sa.map_err(|e| format!("A: {e}"))?,
        sb.map_err(|e| format!("B: {e}"))?,
    );
    sa.write_all(b"p").unwrap();
    let mut buf = [0u8];
    sb.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"p");
    Ok(())
}

#[test]
fn lab_cone_nats_let_a_simultaneous_open_through_symmetric_ones_do_not() {
    let mut lab = NatLab::new(3);
    let (r1, r2) = (lab.router(Nat::Cone), lab.router(Nat::Cone));
    let (a, b) = (lab.host_behind(r1), lab.host_behind(r2));
    let (s1, s2) = (lab.router(Nat::Symmetric), lab.router(Nat::Symmetric));
    let (c, d) = (lab.host_behind(s1), lab.host_behind(s2));
    simultaneous_open(&lab, a, b).unwrap_or_else(|e| {
        panic!(
            "no simultaneous open through two cone NATs: {e}\nconntrack 1:\n{}\nconntrack 2:\n{}",
            lab.conntrack(r1),
            lab.conntrack(r2)
        )
    });
    assert!(
        simultaneous_open(&lab, c, d).is_err(),
        "a simultaneous open went through two symmetric NATs"
    );
    let left = lab.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// p2pfs nodes behind NATs. The public nodes are `--no-storage` (they relay, they hold nothing)
// and the reader behind NAT B too, with one copy per chunk: every byte B reads comes from A over
// the connection between A and B, relayed or direct; none from a public node.
//
// The status names below are the node's (`reachability`: public, private or unknown, the
// node's addresses, relayed ones while private, and whether it relays; per peer, the connection
// kinds: direct, hole-punched or relayed), kept in these helpers so that a change of name is one
// edit.

/// How long a file may take to move between NATed nodes (a relay reservation, a relayed
/// connection, maybe a hole punch first).
const NAT_TIMEOUT: Duration = Duration::from_secs(180);

/// `status.reachability.state`: `public`, `private` or `unknown`.
fn reachability(s: &serde_json::Value) -> Option<String> {
    s["reachability"]["state"].as_str().map(str::to_string)
}

/// The relays the node holds a reservation on: `status.reachability.relays` (peer ids) if the
/// status has it, else the relay peer ids of its relayed addresses in `reachability.addrs`
/// (`.../p2p/RELAY/p2p-circuit/p2p/SELF`); `None` if it has neither.
fn relays(s: &serde_json::Value) -> Option<Vec<String>> {
    let r = &s["reachability"];
    if let Some(a) = r["relays"].as_array() {
        return Some(
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        );
    }
    let addrs = r["addrs"].as_array()?;
    let mut ids: Vec<String> = addrs
        .iter()
        .filter_map(|a| {
            a.as_str()?
                .split_once("/p2p-circuit")
                .map(|(relay, _)| relay)
        })
        .filter_map(|a| a.rsplit_once("/p2p/").map(|(_, id)| id.to_string()))
        .collect();
    ids.sort();
    ids.dedup();
    Some(ids)
}

/// `status.peers[peer].connection`, its best kind: `direct`, `hole-punched` or `relayed` (the
/// node lists every kind of its connections to the peer, best first, comma-separated); `None`
/// when the node does not list the peer or has no connection to it.
fn connection(s: &serde_json::Value, peer: &str) -> Option<String> {
    connections(s, peer).into_iter().next()
}

/// Every kind `status.peers[peer].connection` lists, best first.
fn connections(s: &serde_json::Value, peer: &str) -> Vec<String> {
    let Some(kinds) = s["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["peer_id"] == peer)?["connection"].as_str())
    else {
        return Vec::new();
    };
    kinds
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// `status.reachability.relaying`: whether the node relays for other members now.
fn relaying(s: &serde_json::Value) -> bool {
    s["reachability"]["relaying"] == true
}

/// Waits until `f` holds for node `i`'s status; panics with the last status and what `what`
/// says about it.
#[track_caller]
fn wait_status(net: &NatNet, i: usize, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let node = &net.cluster.nodes[i];
    let mut last = serde_json::Value::Null;
    let ok = wait_until(NAT_TIMEOUT, || {
        match node.try_status_within(Duration::from_secs(30)) {
            Ok(s) => {
                let done = f(&s);
                last = s;
                done
            }
            Err(_) => false,
        }
    });
    assert!(
        ok,
        "node{} never got to {what} within {NAT_TIMEOUT:?}; reachability {}, peers {}",
        i + 1,
        last["reachability"],
        last["peers"]
    );
}

/// Writes `data` to `name` on node `from`, waits until node `to` reads it whole.
#[track_caller]
fn moves(net: &NatNet, from: usize, to: usize, name: &str, data: &[u8]) {
    let (a, b) = (&net.cluster.nodes[from], &net.cluster.nodes[to]);
    // Named as in the cluster's failure report and the nodes' `--name`: node1 is index 0.
    let (nf, nt) = (from + 1, to + 1);
    write_and_close(&a.p(name), data).unwrap_or_else(|e| panic!("write {name} on node{nf}: {e}"));
    // Read again after an error: a read may fail while the connection to the holder is still
    // being set up (a relay reservation, a relayed dial).
    let path = b.p(name);
    let mut last = String::from("never read");
    let ok = wait_until(NAT_TIMEOUT, || match std::fs::read(&path) {
        Ok(got) if got == data => true,
        Ok(got) => {
            last = format!("{} bytes, not the {} written", got.len(), data.len());
            false
        }
        Err(e) => {
            last = e.to_string();
            std::thread::sleep(Duration::from_secs(1));
            false
        }
    });
    if !ok {
        panic!(
            "{name}, written on node{nf}, does not read on node{nt} within {NAT_TIMEOUT:?} \
             (last: {last})\nnode{nt}'s peers: {}",
            b.try_status()
                .map(|s| s["peers"].clone())
                .unwrap_or_default()
        );
    }
}

/// The NATed test networks: node 0 public (founder, relay, no storage), then a holder behind
/// `a` and a reader behind `b`, each invited by and bootstrapped to node 0.
fn nat_net(salt: usize, a: &[Nat], b: Nat) -> (NatNet, usize, usize) {
    let mut net = NatNet::new(salt, 1);
    let public = net.net.public_host();
    // `a` lists the routers from the outermost in: two for a carrier NAT.
    let mut ra = net.net.router(a[0]);
    for kind in &a[1..] {
        ra = net.net.router_behind(ra, *kind);
    }
    let rb = net.net.router(b);
    let (ha, hb) = (net.net.host_behind(ra), net.net.host_behind(rb));
    net.found(public, &["--no-storage"]);
    let a = net.join(ha, 0, &[]);
    let b = net.join(hb, 0, &["--no-storage"]);
    net.cluster.wait_certified();
    (net, a, b)
}

#[test]
fn two_cone_nats_a_file_moves_and_the_connection_becomes_direct() {
    let (net, a, b) = nat_net(4, &[Nat::Cone], Nat::Cone);
    moves(&net, a, b, "behind-a.bin", &random_bytes(20, 3 * MIB));
    wait_status(&net, 0, "reachability public, relaying", |s| {
        reachability(s).as_deref() == Some("public") && relaying(s)
    });
    for i in [a, b] {
        wait_status(&net, i, "reachability private with a relay", |s| {
            reachability(s).as_deref() == Some("private")
                && relays(s).is_some_and(|r| !r.is_empty())
        });
    }
    let (ida, idb) = (
        net.cluster.nodes[a].peer_id(),
        net.cluster.nodes[b].peer_id(),
    );
    // Direct (or hole-punched) only: the relayed connection beside it is closed, so the
    // traffic between A and B no longer crosses the relay.
    let only_direct =
        |k: Vec<String>| !k.is_empty() && k.iter().all(|k| k == "direct" || k == "hole-punched");
    wait_status(&net, a, "only direct connections to B", |s| {
        only_direct(connections(s, &idb))
    });
    wait_status(&net, b, "only direct connections to A", |s| {
        only_direct(connections(s, &ida))
    });
    // And data over the punched connection, both ways.
    moves(&net, a, b, "after-punch.bin", &random_bytes(21, 2 * MIB));
    moves(&net, b, a, "from-b.bin", &random_bytes(22, MIB));
}

#[test]
fn symmetric_nats_a_file_still_moves_relayed() {
    let (net, a, b) = nat_net(5, &[Nat::Symmetric], Nat::Symmetric);
    moves(&net, a, b, "behind-a.bin", &random_bytes(30, 3 * MIB));
    let idb = net.cluster.nodes[b].peer_id();
    let ida = net.cluster.nodes[a].peer_id();
    // Hole punching cannot work between two symmetric NATs: the connection stays relayed.
    for (i, peer) in [(a, &idb), (b, &ida)] {
        let s = net.cluster.nodes[i].status();
        assert_eq!(
            connection(&s, peer).as_deref(),
            Some("relayed"),
            "node{}: {}",
            i + 1,
            s["peers"]
        );
    }
    moves(&net, b, a, "from-b.bin", &random_bytes(31, MIB));
}

#[test]
fn carrier_nat_two_nats_in_series_a_file_moves_both_ways() {
    let (net, a, b) = nat_net(6, &[Nat::Cone, Nat::Cone], Nat::Cone);
    moves(&net, a, b, "behind-carrier.bin", &random_bytes(40, 3 * MIB));
    moves(&net, b, a, "to-carrier.bin", &random_bytes(41, MIB));
    wait_status(&net, a, "reachability private", |s| {
        reachability(s).as_deref() == Some("private")
    });
    let idb = net.cluster.nodes[b].peer_id();
    let s = net.cluster.nodes[a].status();
    assert!(
        matches!(
            connection(&s, &idb).as_deref(),
            Some("direct" | "hole-punched" | "relayed")
        ),
        "no known connection kind to B: {}",
        s["peers"]
    );
}

#[test]
fn relay_killed_another_member_relays_and_status_says_when_none_is_left() {
    let mut net = NatNet::new(7, 1);
    let (p1, p2) = (net.net.public_host(), net.net.public_host());
    // Symmetric NATs: no hole punch, so A and B depend on a relay throughout.
    let (ra, rb) = (
        net.net.router(Nat::Symmetric),
        net.net.router(Nat::Symmetric),
    );
    let (ha, hb) = (net.net.host_behind(ra), net.net.host_behind(rb));
    net.found(p1, &["--no-storage"]);
    let second = net.join(p2, 0, &["--no-storage"]);
    let a = net.join(ha, 0, &[]);
    let b = net.join(hb, 0, &["--no-storage"]);
    net.cluster.wait_certified();
    moves(&net, a, b, "before.bin", &random_bytes(50, 2 * MIB));

    let first_id = net.cluster.nodes[0].peer_id();
    let second_id = net.cluster.nodes[second].peer_id();
    net.cluster.nodes[0].kill9();
    net.cluster.nodes[0].cleanup_dead_mount();
    for i in [a, b] {
        wait_status(&net, i, "a relay other than the killed one", |s| {
            relays(s).is_some_and(|r| r.contains(&second_id) && !r.contains(&first_id))
        });
    }
    moves(
        &net,
        a,
        b,
        "after-first-relay-died.bin",
        &random_bytes(51, 2 * MIB),
    );

    net.cluster.nodes[second].kill9();
    net.cluster.nodes[second].cleanup_dead_mount();
    for i in [a, b] {
        wait_status(&net, i, "no relay left, said so", |s| {
            relays(s).is_some_and(|r| r.is_empty()) && reachability(s).as_deref() == Some("private")
        });
    }
}

/// A member on the same LAN answering a NATed node's reachability test (it can dial the node's
/// LAN address) does not make that node public: it keeps its relayed address, so a member
/// beyond both NATs still reaches it. Before LAN-only confirmations counted as private, the
/// node said `public` and dropped its reservation.
#[test]
fn a_member_on_the_same_lan_does_not_make_a_nated_node_public() {
    let mut net = NatNet::new(8, 1);
    let public = net.net.public_host();
    let (ra, rb) = (net.net.router(Nat::Cone), net.net.router(Nat::Symmetric));
    let (ha, ha2, hb) = (
        net.net.host_behind(ra),
        net.net.host_behind(ra),
        net.net.host_behind(rb),
    );
    net.found(public, &["--no-storage"]);
    let a = net.join(ha, 0, &[]);
    let neighbour = net.join(ha2, 0, &["--no-storage"]);
    let b = net.join(hb, 0, &["--no-storage"]);
    net.cluster.wait_certified();
    let neighbour_id = net.cluster.nodes[neighbour].peer_id();
    wait_status(&net, a, "a direct connection to its LAN neighbour", |s| {
        connection(s, &neighbour_id).as_deref() == Some("direct")
    });
    // Several AutoNAT rounds (one every 15 s while unknown; the neighbour is asked too): the
    // node never says public, and holds a relayed address once private.
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        if let Ok(s) = net.cluster.nodes[a].try_status_within(Duration::from_secs(30)) {
            assert_ne!(
                reachability(&s).as_deref(),
                Some("public"),
                "node{} behind a NAT says it is public: {}",
                a + 1,
                s["reachability"]
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_status(&net, a, "private with a relay", |s| {
        reachability(s).as_deref() == Some("private") && relays(s).is_some_and(|r| !r.is_empty())
    });
    moves(&net, a, b, "behind-a-lan.bin", &random_bytes(60, 2 * MIB));
}
