//! Network-namespace lab for multi-node tests that need a real network between nodes (mDNS,
//! partitions): `n` namespaces with an `eth0` each, joined by veth pairs to one bridge that has
//! no address and no way out, so no traffic leaves the machine. A host is cut off by taking its
//! veth down ([`NetLab::cut`]), or moved with others to a second bridge, an island that does not
//! reach the first ([`NetLab::move_to_island`]: a minority side whose hosts still see each other),
//! and healed by putting its veth back on the first bridge, up ([`NetLab::heal`]).
//!
//! Everything (namespaces, veths, bridge) is removed on drop, also when the test fails; a
//! [`Lab`] drops its nodes (killed, unmounted) before the network they run in. What a test
//! process killed before its drop ran left behind is swept by the next lab ([`sweep_stale`]).
//! Needs root.

use super::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `ip ARGS`; panics with its output on failure.
#[track_caller]
pub fn ip(args: &[&str]) {
    let out = run_cmd(Command::new("ip").args(args), Duration::from_secs(30));
    assert!(out.status.success(), "ip {args:?}: {}", out_text(&out));
}

/// Runs `ip ARGS`, ignoring failure (never panics: used in drop); true on
/// success.
pub fn ip_quiet(args: &[&str]) -> bool {
    try_run_cmd(Command::new("ip").args(args), Duration::from_secs(30))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Salts (see [`NetLab::new`]) that [`sweep_stale`] knows about.
pub const MAX_SALT: usize = 10;

/// Removes what an earlier run of a lab test left behind when it was killed
/// before its drop ran (e.g. by a test-runner timeout): namespaces named
/// `p2pfs-t-<pid>-<i>` whose pid is gone, and that run's bridges. (Deleting a
/// namespace destroys the veth pair whose end is in it.)
pub fn sweep_stale() {
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
        eprintln!("netlab: removing netns {name} left by dead pid {pid}");
        ip_quiet(&["netns", "del", &name]);
        for salt in 0..MAX_SALT {
            for suffix in ["", "i"] {
                let bridge = format!("br-p2pfs{}{salt}{suffix}", pid % 100_000);
                if link_exists(&bridge) {
                    ip_quiet(&["link", "del", &bridge]);
                }
            }
        }
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_exists(name: &str) -> bool {
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

/// Sets up a fresh bridge without address: no IPv6, multicast forwarded to every port
/// (whatever IGMP snooping thinks), up.
fn bridge_up(name: &str) {
    no_ipv6(name);
    ip(&[
        "link",
        "set",
        "dev",
        name,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    ip(&["link", "set", name, "up"]);
}

/// The test network: `n` namespaces with an `eth0` each, on one bridge.
/// Records what it created as it goes, so a half-built network is removed
/// too.
pub struct NetLab {
    /// Tells apart the labs of tests that share a process (plain `cargo test`).
    pub salt: usize,
    pub bridge: String,
    /// Namespaces created (deleted on drop).
    namespaces: Vec<String>,
    /// Root-namespace veth ends created (deleted on drop if still there).
    veths: Vec<String>,
    bridge_created: bool,
    /// The island bridge, once `move_to_island` created it (deleted on drop).
    island: Option<String>,
    /// 10.213.X.0/24
    pub subnet: String,
}

impl NetLab {
    /// `n` hosts, numbered 1..=n. `salt` (below [`MAX_SALT`]) must differ between labs that
    /// may exist at once in one process.
    pub fn new(n: usize, salt: usize) -> NetLab {
        assert!(salt < MAX_SALT);
        let pid = std::process::id();
        let short = pid % 100_000;
        let mut lab = NetLab {
            salt,
            bridge: format!("br-p2pfs{short}{salt}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge_created: false,
            island: None,
            subnet: format!("10.{}.{}", 213 + salt, pid % 250),
        };
        assert!(lab.bridge.len() <= 15 && lab.island_bridge().len() <= 15);
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
        for b in [lab.bridge.clone(), lab.island_bridge()] {
            if link_exists(&b) {
                ip_quiet(&["link", "del", &b]);
            }
        }

        ip(&["link", "add", "name", &lab.bridge, "type", "bridge"]);
        lab.bridge_created = true;
        bridge_up(&lab.bridge);
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

    pub fn ns(&self, i: usize) -> String {
        format!("p2pfs-t-{}-{}{i}", std::process::id(), self.salt)
    }

    /// The root-namespace end of host `i`'s veth pair (on the bridge).
    pub fn veth(&self, i: usize) -> String {
        format!("vp{}{}-{i}", std::process::id() % 100_000, self.salt)
    }

    pub fn veth_peer(&self, i: usize) -> String {
        format!("vq{}{}-{i}", std::process::id() % 100_000, self.salt)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// `nsenter` prefix that runs a program in namespace `i`.
    pub fn enter(&self, i: usize) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.ns(i))]
    }

    /// Cuts host `i` off from every other host (its veth goes down).
    #[track_caller]
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]);
    }

    fn island_bridge(&self) -> String {
        format!("br-p2pfs{}{}i", std::process::id() % 100_000, self.salt)
    }

    /// Moves host `i` to the island: a second bridge, which reaches the hosts moved there too
    /// and nothing else (created by the first call).
    #[track_caller]
    pub fn move_to_island(&mut self, i: usize) {
        let island = match &self.island {
            Some(b) => b.clone(),
            None => {
                let b = self.island_bridge();
                ip(&["link", "add", "name", &b, "type", "bridge"]);
                self.island = Some(b.clone());
                bridge_up(&b);
                b
            }
        };
        ip(&["link", "set", &self.veth(i), "master", &island]);
    }

    /// Reconnects host `i` after `cut` or `move_to_island`: its veth is on the first bridge, up.
    #[track_caller]
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "master", &self.bridge]);
        ip(&["link", "set", &self.veth(i), "up"]);
    }

    /// Removes everything; returns what could not be removed.
    pub fn teardown(&mut self) -> Vec<String> {
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
        if let Some(b) = self.island.take() {
            ip_quiet(&["link", "del", &b]);
            if link_exists(&b) {
                left.push(format!("bridge {b}"));
            }
        }
        left
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("netlab: could not remove {left:?}");
        }
    }
}

/// The nodes and their network. Fields drop in order: the nodes (killed,
/// unmounted) before the namespaces they run in.
pub struct Lab {
    pub cluster: Cluster,
    pub net: NetLab,
}

impl Lab {
    /// `n` hosts in their own namespaces, one node each, started with mDNS on and nothing to
    /// bootstrap from.
    pub fn start(n: usize, salt: usize, replicas: u32) -> Lab {
        Lab::start_with(n, salt, replicas, 0, &[], |_| {})
    }

    /// `start`, every node listening on TCP `port` of its own address (0: a random port),
    /// with `extra` run arguments for every node and `configure` called on every node's data
    /// dir (e.g. `set_config`) after init, before its first start.
    pub fn start_with(
        n: usize,
        salt: usize,
        replicas: u32,
        port: u16,
        extra: &[String],
        mut configure: impl FnMut(&Node),
    ) -> Lab {
        let mut lab = Lab {
            cluster: Cluster::empty(ClusterOpts::replicas(replicas)),
            net: NetLab::new(n, salt),
        };
        for i in 1..=n {
            let mut node = lab.cluster.init_node();
            configure(&node);
            node.set_run_prefix(&lab.net.enter(i));
            let mut args = vec![
                "--listen".to_string(),
                format!("/ip4/{}/tcp/{port}", lab.net.addr(i)),
                "--replicas".to_string(),
                replicas.to_string(),
            ];
            args.extend(extra.iter().cloned());
            node.set_run_args(&args);
            lab.cluster.nodes.push(node);
            lab.cluster.nodes[i - 1].start();
        }
        lab
    }
}
