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
        let bridge = format!("br-p2pfs{}", pid % 100_000);
        if link_exists(&bridge) {
            ip_quiet(&["link", "del", &bridge]);
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
    fn new(n: usize) -> NetLab {
        let pid = std::process::id();
        let short = pid % 100_000;
        let mut lab = NetLab {
            bridge: format!("br-p2pfs{short}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge_created: false,
            subnet: format!("10.213.{}", pid % 250),
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
        format!("p2pfs-t-{}-{i}", std::process::id())
    }

    fn veth(&self, i: usize) -> String {
        format!("vp{}-{i}", std::process::id() % 100_000)
    }

    fn veth_peer(&self, i: usize) -> String {
        format!("vq{}-{i}", std::process::id() % 100_000)
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

#[test]
fn mdns_discovery_in_network_namespaces() {
    let n = 3;
    let mut lab = Lab {
        cluster: Cluster::empty(ClusterOpts::replicas(3)),
        net: NetLab::new(n),
    };
    for i in 1..=n {
        let mut node = lab.cluster.init_node();
        node.set_run_prefix(&lab.net.enter(i));
        // mDNS on, nothing to bootstrap from.
        node.set_run_args(&[
            "--listen".to_string(),
            format!("/ip4/{}/tcp/0", lab.net.addr(i)),
            "--replicas".to_string(),
            "3".to_string(),
        ]);
        lab.cluster.nodes.push(node);
        lab.cluster.nodes[i - 1].start();
    }
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
