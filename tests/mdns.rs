//! Peer discovery by mDNS, with nothing to bootstrap from: three nodes, each
//! in a network namespace of its own, joined by veth pairs to one bridge that
//! has no address and no way out. Everything (nodes, mounts, namespaces,
//! veths, bridge) is removed on drop, also when the test fails. Needs root.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `ip ARGS`; panics with its output on failure.
#[track_caller]
fn ip(args: &[&str]) {
    let out = run_cmd(Command::new("ip").args(args), Duration::from_secs(30));
    assert!(out.status.success(), "ip {args:?}: {}", out_text(&out));
}

/// Runs `ip ARGS`, ignoring failure (never panics: used in drop); true on
/// success.
fn ip_quiet(args: &[&str]) -> bool {
    try_run_cmd(Command::new("ip").args(args), Duration::from_secs(30))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes what an earlier run of this test left behind when it was killed
/// before its drop ran (e.g. by a test-runner timeout): namespaces named
/// `p2pfs-t-<pid>-<i>` whose pid is gone, and that run's bridge. (Deleting a
/// namespace destroys the veth pair whose end is in it.)
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("p2pfs-t-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("mdns test: removing netns {name} left by dead pid {pid}");
        ip_quiet(&["netns", "del", &name]);
        for salt in 0..2 {
            let bridge = format!("br-p2pfs{}{salt}", pid % 100_000);
            if link_exists(&bridge) {
                ip_quiet(&["link", "del", &bridge]);
            }
        }
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Turns IPv6 off on a root-namespace interface so the host sends nothing
/// (router solicitations, MLD) onto the test link.
fn no_ipv6(ifname: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if Path::new(&p).exists() {
        let _ = std::fs::write(p, "1");
    }
}

/// The test network: `n` namespaces with an `eth0` each, on one bridge.
/// Records what it created as it goes, so a half-built network is removed
/// too.
struct NetLab {
    /// Tells apart the labs of tests that share a process (plain `cargo test`).
    salt: usize,
    bridge: String,
    /// Namespaces created (deleted on drop).
    namespaces: Vec<String>,
    /// Root-namespace veth ends created (deleted on drop if still there).
    veths: Vec<String>,
    bridge_created: bool,
    /// 10.213.X.0/24
    subnet: String,
}

impl NetLab {
    fn new(n: usize, salt: usize) -> NetLab {
        let pid = std::process::id();
        let short = pid % 100_000;
        let mut lab = NetLab {
            salt,
            bridge: format!("br-p2pfs{short}{salt}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge_created: false,
            subnet: format!("10.{}.{}", 213 + salt, pid % 250),
        };
        assert!(lab.bridge.len() <= 15);
        sweep_stale();
        // Leftovers of an earlier run that had our pid and died hard.
        for i in 1..=n {
            if netns_exists(&lab.ns(i)) {
                ip_quiet(&["netns", "del", &lab.ns(i)]);
            }
            if link_exists(&lab.veth(i)) {
                ip_quiet(&["link", "del", &lab.veth(i)]);
            }
        }
        if link_exists(&lab.bridge) {
            ip_quiet(&["link", "del", &lab.bridge]);
        }

        ip(&["link", "add", "name", &lab.bridge, "type", "bridge"]);
        lab.bridge_created = true;
        no_ipv6(&lab.bridge);
        // Forward multicast to every port, whatever IGMP snooping thinks.
        ip(&[
            "link",
            "set",
            "dev",
            &lab.bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for i in 1..=n {
            let (ns, host, peer) = (lab.ns(i), lab.veth(i), lab.veth_peer(i));
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
            lab.veths.push(host.clone());
            no_ipv6(&host);
            ip(&["link", "set", &peer, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"]);
            ip(&["link", "set", &host, "master", &lab.bridge]);
            ip(&["link", "set", &host, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lab
    }

    fn ns(&self, i: usize) -> String {
        format!("p2pfs-t-{}-{}{i}", std::process::id(), self.salt)
    }

    fn veth(&self, i: usize) -> String {
        format!("vp{}{}-{i}", std::process::id() % 100_000, self.salt)
    }

    fn veth_peer(&self, i: usize) -> String {
        format!("vq{}{}-{i}", std::process::id() % 100_000, self.salt)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// `nsenter` prefix that runs a program in namespace `i`.
    fn enter(&self, i: usize) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.ns(i))]
    }

    /// Removes everything; returns what could not be removed.
    fn teardown(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for ns in self.namespaces.drain(..) {
            // Deleting the namespace destroys its eth0 and so the veth pair.
            if netns_exists(&ns) {
                ip_quiet(&["netns", "del", &ns]);
            }
            if netns_exists(&ns) {
                left.push(format!("netns {ns}"));
            }
        }
        for v in self.veths.drain(..) {
            if link_exists(&v) {
                ip_quiet(&["link", "del", &v]);
            }
            if link_exists(&v) {
                left.push(format!("veth {v}"));
            }
        }
        if self.bridge_created {
            self.bridge_created = false;
            ip_quiet(&["link", "del", &self.bridge]);
            if link_exists(&self.bridge) {
                left.push(format!("bridge {}", self.bridge));
            }
        }
        left
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("mdns test: could not remove {left:?}");
        }
    }
}

/// The nodes and their network. Fields drop in order: the nodes (killed,
/// unmounted) before the namespaces they run in.
struct Lab {
    cluster: Cluster,
    net: NetLab,
}

impl Lab {
    /// `n` hosts in their own namespaces, one node each, started with mDNS on and nothing to
    /// bootstrap from.
    fn start(n: usize, salt: usize, replicas: u32) -> Lab {
        let mut lab = Lab {
            cluster: Cluster::empty(ClusterOpts::replicas(replicas)),
            net: NetLab::new(n, salt),
        };
        for i in 1..=n {
            let mut node = lab.cluster.init_node();
            node.set_run_prefix(&lab.net.enter(i));
            node.set_run_args(&[
                "--listen".to_string(),
                format!("/ip4/{}/tcp/0", lab.net.addr(i)),
                "--replicas".to_string(),
                replicas.to_string(),
            ]);
            lab.cluster.nodes.push(node);
            lab.cluster.nodes[i - 1].start();
        }
        lab
    }
}

#[test]
fn mdns_discovery_in_network_namespaces() {
    let mut lab = Lab::start(3, 0, 3);
    for (i, node) in lab.cluster.nodes.iter().enumerate() {
        let addr = node.listen_addr();
        assert!(
            addr.starts_with(&format!("/ip4/{}/tcp/", lab.net.addr(i + 1))),
            "node {} listens on {addr}",
            i + 1
        );
    }
    let t = Instant::now();
    lab.cluster.wait_formed();
    eprintln!(
        "mDNS: all 3 nodes alive to each other after {:?}",
        t.elapsed()
    );
    for (i, node) in lab.cluster.nodes.iter().enumerate() {
        let s = node.status();
        for p in s["peers"].as_array().unwrap() {
            for a in p["addrs"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(
                    a.starts_with(&format!("/ip4/{}.", lab.net.subnet)),
                    "node {} lists peer address {a} outside the test subnet",
                    i + 1
                );
            }
        }
    }

    let data = random_bytes(5, 300 * KIB + 3);
    write_and_close(&lab.cluster.nodes[0].p("over-mdns.bin"), &data).unwrap();
    if let Err(e) = wait_for_file(
        &lab.cluster.nodes[2].p("over-mdns.bin"),
        &data,
        SPREAD_TIMEOUT,
    ) {
        panic!("node 3: {e}");
    }

    // Tear down here too, to check that nothing is left behind.
    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A partition made by taking one host's link down: both sides keep working and write
/// separately (one file each, and the same path on both); after healing, anti-entropy brings
/// both sides to the same view, and the path written on both sides is kept twice (the later
/// version under its name, the other as a conflict copy): nothing is lost.
#[test]
fn partition_then_heal_reconciles_without_losing_writes() {
    let n = 2;
    let mut lab = Lab::start(n, 1, 2);
    lab.cluster.wait_formed();
    let before = random_bytes(21, 200 * KIB);
    write_and_close(&lab.cluster.nodes[0].p("before.bin"), &before).unwrap();
    assert!(
        wait_for_file(
            &lab.cluster.nodes[1].p("before.bin"),
            &before,
            SPREAD_TIMEOUT
        )
        .is_ok()
    );

    // Partition: host 2's link goes down; both sides write.
    ip(&["link", "set", &lab.net.veth(2), "down"]);
    let (a, b) = (random_bytes(22, 150 * KIB), random_bytes(23, 170 * KIB));
    write_and_close(&lab.cluster.nodes[0].p("side-a.bin"), &a).unwrap();
    write_and_close(&lab.cluster.nodes[1].p("side-b.bin"), &b).unwrap();
    write_and_close(&lab.cluster.nodes[0].p("same.txt"), b"written on side A\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    write_and_close(&lab.cluster.nodes[1].p("same.txt"), b"written on side B\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !lab.cluster.nodes[1].p("side-a.bin").exists(),
        "the partition did not hold"
    );

    // Heal.
    ip(&["link", "set", &lab.net.veth(2), "up"]);
    for i in 0..n {
        let node = &lab.cluster.nodes[i];
        let other = if i == 0 { "side-b.bin" } else { "side-a.bin" };
        let want = if i == 0 { &b } else { &a };
        if let Err(e) = wait_for_file(&node.p(other), want, Duration::from_secs(60)) {
            panic!("node {} after healing: {e}\n{}", i + 1, node.log_text());
        }
    }
    let view = |node: &Node| -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<String> = std::fs::read_dir(&node.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("same.txt"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let c = std::fs::read(node.mnt.join(&n)).unwrap();
                (n, c)
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (v1, v2) = (view(&lab.cluster.nodes[0]), view(&lab.cluster.nodes[1]));
            v1 == v2 && v1.len() == 2
        }),
        "the two sides do not agree on same.txt and its conflict copy: {:?} vs {:?}",
        view(&lab.cluster.nodes[0])
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>(),
        view(&lab.cluster.nodes[1])
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    );
    let v = view(&lab.cluster.nodes[0]);
    let contents: Vec<&[u8]> = v.iter().map(|(_, c)| c.as_slice()).collect();
    assert!(
        contents.contains(&&b"written on side A\n"[..])
            && contents.contains(&&b"written on side B\n"[..])
    );
    assert!(
        v.iter().any(|(n, _)| n == "same.txt")
            && v.iter().any(|(n, _)| n.starts_with("same.txt.conflict-"))
    );
    assert_file_eq(&lab.cluster.nodes[1].p("before.bin"), &before);

    lab.cluster.nodes.clear();
    let left = lab.net.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}
