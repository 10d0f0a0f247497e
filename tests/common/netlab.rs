//! Network-namespace lab for multi-node tests that need a real network between nodes (mDNS,
//! partitions): `n` namespaces with an `eth0` each, joined by veth pairs to one bridge that has
//! no address and no way out, so no traffic leaves the machine. A host is cut off by taking its
//! veth down ([`NetLab::cut`]), or moved with others to a second bridge, an island that does not
//! reach the first ([`NetLab::move_to_island`]: a minority side whose hosts still see each other),
//! and healed by putting its veth back on the first bridge, up ([`NetLab::heal`]).
//!
//! [`NatLab`] builds a different network: a public segment, NAT routers (cone, symmetric, in
//! series) and hosts behind them (see its section below).
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

// ---------------------------------------------------------------------------------------------
// NAT topologies.
//
// A [`NatLab`] is a small internet in namespaces: a "switch" namespace whose bridge is the public
// segment (198.51.100.0/24), public hosts on it, and routers. A router is a namespace with a
// `wan0` on the segment above it and a LAN bridge `lan0` (192.168.R.1/24) that the veths of the
// hosts behind it are plugged into. It masquerades what leaves by `wan0` and forwards inbound only
// for connections its LAN opened (conntrack), like a home router with no port forwarded: a
// cone-like NAT (Linux keeps the source port when free, so one inside port maps to one outside
// port for every destination), or a symmetric one with `--random-fully` (a new outside port per
// connection). Unsolicited packets to the router itself are dropped silently. A router on another
// router's LAN makes two NATs in series (the outer one plays the carrier-grade NAT). Hosts and
// routers behind a router route by default via it; public hosts and routers on the public segment
// have no default route: nothing leaves the lab.
//
// Every link and bridge lives inside the lab's namespaces (none in the root namespace), and the
// iptables rules and `ip_forward` live in the router namespaces, so deleting the namespaces
// removes everything; [`sweep_stale`] removes the namespaces of a dead test process.

/// The public segment's first three octets (a documentation range, routed nowhere).
pub const PUBLIC_NET: &str = "198.51.100";

/// Opens a TCP connection from local port `local_port` (0: any; `SO_REUSEADDR`, so one port can
/// make several connections, as a hole-punching node does) to `to`, giving up after `timeout`.
/// Call it in the namespace to connect from ([`in_ns`]).
pub fn connect_from(
    local_port: u16,
    to: std::net::SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream built from it (or
    // closed by that stream's drop on the error paths).
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        check(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        // A blocking connect gives up after the send timeout.
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        check(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        ))?;
        let local = sockaddr(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            local_port,
        ));
        check(libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        let remote = sockaddr(to);
        check(libc::connect(
            fd,
            (&remote as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        stream.set_write_timeout(None)?;
        Ok(stream)
    }
}

/// What a router does to connections its LAN opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// MASQUERADE: the outside port is the inside one when free, whatever the destination
    /// (endpoint-independent mapping); inbound only on an existing conntrack entry.
    Cone,
    /// MASQUERADE `--random-fully`: a fresh random outside port per connection (mapping depends
    /// on the destination, so a peer cannot predict it and hole punching fails).
    Symmetric,
}

/// A router: a namespace between an upper segment (its `wan0`) and its LAN (`lan0`).
#[derive(Clone, Debug)]
pub struct Router {
    pub ns: String,
    pub kind: Nat,
    /// `wan0`'s address: what hosts on the upper segment see connections of its LAN come from.
    pub wan_addr: String,
    /// The LAN's first three octets; the router is `.1`, its hosts `.2` up.
    pub lan_net: String,
    /// The router above, for a NAT in series; `None` for one on the public segment.
    pub upstream: Option<usize>,
    /// Addresses handed out on the LAN so far (hosts and routers behind this one).
    lan_used: u8,
}

/// A host: a namespace with `eth0` on the public segment or on a router's LAN.
#[derive(Clone, Debug)]
pub struct NatHost {
    pub ns: String,
    pub addr: String,
    /// The router it sits behind; `None` on the public segment.
    pub behind: Option<usize>,
    /// Its veth's other end: (namespace, name), which [`NatLab::cut`] takes down.
    port: (String, String),
}

/// Runs a command in a namespace (`nsenter --net`, which, unlike `ip netns exec`, leaves the
/// mount namespace alone); panics with its output on failure.
#[track_caller]
pub fn in_ns_cmd(ns: &str, args: &[&str]) -> String {
    let out = run_cmd(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(args),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "in {ns}: {args:?}: {}",
        out_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that has entered namespace `ns` (a network namespace is a property of a
/// thread): sockets it opens stay in that namespace and can be used from any thread afterwards.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open namespace file, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Sets a `net.*` sysctl of namespace `ns` (`/proc/sys/net` shows the reading thread's).
fn ns_sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_ns(ns, move || {
        std::fs::write(&path, &value).unwrap_or_else(|e| panic!("write {path}: {e}"))
    });
}

/// The NAT lab: see the section comment above. Built step by step ([`NatLab::public_host`],
/// [`NatLab::router`], [`NatLab::router_behind`], [`NatLab::host_behind`]); torn down on drop.
pub struct NatLab {
    pub salt: usize,
    /// The switch namespace, holding the public segment's bridge `br0`.
    switch: String,
    pub routers: Vec<Router>,
    pub hosts: Vec<NatHost>,
    /// Namespaces created (deleted on drop).
    namespaces: Vec<String>,
    /// Public addresses handed out so far.
    public_used: u8,
    /// Veths made so far in the switch or a router (names them).
    ports: usize,
}

impl NatLab {
    /// The public segment alone. `salt` (below [`MAX_SALT`]) must differ between labs that may
    /// exist at once in one process ([`NetLab`]s included).
    pub fn new(salt: usize) -> NatLab {
        assert!(salt < MAX_SALT);
        sweep_stale();
        let mut lab = NatLab {
            salt,
            switch: String::new(),
            routers: Vec::new(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            public_used: 1,
            ports: 0,
        };
        let sw = lab.add_ns("sw");
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            "dev",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        lab.switch = sw;
        lab
    }

    /// A fresh namespace `p2pfs-t-<pid>-<salt>n<name>` with `lo` up and IPv6 off (nothing but
    /// the test's IPv4 on its links).
    fn add_ns(&mut self, name: &str) -> String {
        let ns = format!("p2pfs-t-{}-{}n{name}", std::process::id(), self.salt);
        if netns_exists(&ns) {
            // Left by an earlier process with our pid that died hard.
            ip_quiet(&["netns", "del", &ns]);
        }
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ns_sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
        ns_sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1");
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Plugs namespace `ns` into the segment above it (the public bridge, or `router`'s LAN) as
    /// interface `ifname` with the next free address there, routing by default via the router
    /// if any; returns (address, the veth's other end as (namespace, name)).
    fn plug(
        &mut self,
        ns: &str,
        ifname: &str,
        router: Option<usize>,
    ) -> (String, (String, String)) {
        self.ports += 1;
        let port_name = format!("p{}", self.ports);
        let (seg_ns, bridge, addr, gw) = match router {
            None => {
                self.public_used += 1;
                (
                    self.switch.clone(),
                    "br0",
                    format!("{PUBLIC_NET}.{}", self.public_used),
                    None,
                )
            }
            Some(r) => {
                let rt = &mut self.routers[r];
                rt.lan_used += 1;
                (
                    rt.ns.clone(),
                    "lan0",
                    format!("{}.{}", rt.lan_net, rt.lan_used),
                    Some(format!("{}.1", rt.lan_net)),
                )
            }
        };
        ip(&[
            "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", &port_name, "netns",
            &seg_ns,
        ]);
        ip(&["-n", &seg_ns, "link", "set", &port_name, "master", bridge]);
        ip(&["-n", &seg_ns, "link", "set", &port_name, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            ifname,
        ]);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
        if let Some(gw) = &gw {
            ip(&["-n", ns, "route", "add", "default", "via", gw]);
        }
        (addr, (seg_ns, port_name))
    }

    /// A host on the public segment; returns its index in `hosts`.
    pub fn public_host(&mut self) -> usize {
        self.add_host(None)
    }

    /// A host on `router`'s LAN; returns its index in `hosts`.
    pub fn host_behind(&mut self, router: usize) -> usize {
        self.add_host(Some(router))
    }

    fn add_host(&mut self, behind: Option<usize>) -> usize {
        let i = self.hosts.len() + 1;
        let ns = self.add_ns(&format!("h{i}"));
        let (addr, port) = self.plug(&ns, "eth0", behind);
        // mDNS goes out by eth0 whatever the default route.
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        self.hosts.push(NatHost {
            ns,
            addr,
            behind,
            port,
        });
        i - 1
    }

    /// A NAT router on the public segment; returns its index in `routers`.
    pub fn router(&mut self, kind: Nat) -> usize {
        self.add_router(kind, None)
    }

    /// A NAT router whose `wan0` is on `upstream`'s LAN (two NATs in series: `upstream` plays
    /// the carrier); returns its index in `routers`.
    pub fn router_behind(&mut self, upstream: usize, kind: Nat) -> usize {
        self.add_router(kind, Some(upstream))
    }

    fn add_router(&mut self, kind: Nat, upstream: Option<usize>) -> usize {
        let r = self.routers.len() + 1;
        let ns = self.add_ns(&format!("r{r}"));
        let (wan_addr, _) = self.plug(&ns, "wan0", upstream);
        let lan_net = format!("192.168.{r}");
        ip(&["-n", &ns, "link", "add", "lan0", "type", "bridge"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{lan_net}.1/24"),
            "dev",
            "lan0",
        ]);
        ip(&["-n", &ns, "link", "set", "lan0", "up"]);
        ns_sysctl(&ns, "net.ipv4.ip_forward", "1");
        let mut masquerade = vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan0",
            "-j",
            "MASQUERADE",
        ];
        if kind == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        in_ns_cmd(&ns, &masquerade);
        in_ns_cmd(&ns, &["iptables", "-P", "FORWARD", "DROP"]);
        in_ns_cmd(
            &ns,
            &[
                "iptables", "-A", "FORWARD", "-i", "lan0", "-o", "wan0", "-j", "ACCEPT",
            ],
        );
        // Hosts on one LAN reach each other, as through a home router's switch (with
        // br_netfilter loaded, frames bridged on lan0 cross this chain too).
        in_ns_cmd(
            &ns,
            &[
                "iptables", "-A", "FORWARD", "-i", "lan0", "-o", "lan0", "-j", "ACCEPT",
            ],
        );
        in_ns_cmd(
            &ns,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "wan0",
                "-o",
                "lan0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        // Unsolicited packets to the router itself are dropped, not answered with a reset (a
        // "stealth" WAN side, as most home routers have): a reset would end the first SYN of a
        // TCP hole punch at once instead of letting the other side's SYN cross it.
        in_ns_cmd(
            &ns,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "wan0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        in_ns_cmd(
            &ns,
            &["iptables", "-A", "INPUT", "-i", "wan0", "-j", "DROP"],
        );
        self.routers.push(Router {
            ns,
            kind,
            wan_addr,
            lan_net,
            upstream,
            lan_used: 1,
        });
        r - 1
    }

    /// The address the public segment sees host `h`'s outgoing connections come from: its own
    /// on the public segment, else its outermost router's.
    pub fn public_addr_of(&self, h: usize) -> String {
        let mut r = match self.hosts[h].behind {
            None => return self.hosts[h].addr.clone(),
            Some(r) => r,
        };
        while let Some(up) = self.routers[r].upstream {
            r = up;
        }
        self.routers[r].wan_addr.clone()
    }

    /// `nsenter` prefix that runs a program in host `h`'s namespace.
    pub fn enter(&self, h: usize) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.hosts[h].ns),
        ]
    }

    /// Cuts host `h` off (its veth's other end goes down).
    #[track_caller]
    pub fn cut(&self, h: usize) {
        let (ns, port) = &self.hosts[h].port;
        ip(&["-n", ns, "link", "set", port, "down"]);
    }

    /// The router's conntrack table (`conntrack -L`: one connection a line), or why there is
    /// none.
    pub fn conntrack(&self, r: usize) -> String {
        let out = try_run_cmd(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.routers[r].ns))
                .args(["conntrack", "-L"]),
            Duration::from_secs(30),
        );
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => out_text(&o),
            Err(e) => e,
        }
    }

    /// Removes every namespace (and with them every link, bridge and rule); returns what could
    /// not be removed.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        // Hosts and inner routers first: a veth goes with either end's namespace.
        for ns in self.namespaces.drain(..).rev() {
            if netns_exists(&ns) {
                ip_quiet(&["netns", "del", &ns]);
            }
            if netns_exists(&ns) {
                left.push(format!("netns {ns}"));
            }
        }
        left
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("netlab: could not remove {left:?}");
        }
    }
}

/// Nodes of one certified network in a [`NatLab`], node `i` in `cluster.nodes[i]` on host
/// `hosts[i]`. Fields drop in order: the nodes (killed, unmounted) before the namespaces.
pub struct NatNet {
    pub cluster: Cluster,
    /// The host each node runs on.
    pub hosts: Vec<usize>,
    pub net: NatLab,
    replicas: u32,
}

impl NatNet {
    /// An empty network of `replicas` copies in an empty [`NatLab`] of salt `salt`.
    pub fn new(salt: usize, replicas: u32) -> NatNet {
        NatNet {
            cluster: Cluster::empty(ClusterOpts::replicas(replicas)),
            hosts: Vec::new(),
            net: NatLab::new(salt),
            replicas,
        }
    }

    /// Run arguments for a node on host `h`: listening on its address, no mDNS (the lab's
    /// nodes find each other by bootstrapping, as across the internet), `extra` last.
    fn run_args(&self, h: usize, boot: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--listen".into(),
            format!("/ip4/{}/tcp/0", self.net.hosts[h].addr),
            "--no-mdns".into(),
            "--replicas".into(),
            self.replicas.to_string(),
        ];
        if let Some(b) = boot {
            v.push("--bootstrap".into());
            v.push(b.into());
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn start(&mut self, mut node: Node, h: usize, boot: Option<&str>, extra: &[&str]) -> usize {
        node.set_run_prefix(&self.net.enter(h));
        node.set_run_args(&self.run_args(h, boot, extra));
        self.cluster.nodes.push(node);
        self.hosts.push(h);
        let i = self.cluster.nodes.len() - 1;
        self.cluster.nodes[i].start();
        i
    }

    /// Founds the network with a node on host `h` (node 0, named `node1`); returns its index.
    pub fn found(&mut self, h: usize, extra: &[&str]) -> usize {
        assert!(self.cluster.nodes.is_empty(), "the network is founded once");
        let node = Node::uninit();
        node.init_ok(&["--name", "node1"]);
        let i = self.start(node, h, None, extra);
        std::fs::copy(
            self.cluster.nodes[0].dir.join("network.key"),
            &self.cluster.key,
        )
        .expect("copy the network key");
        i
    }

    /// Node `i`'s address to bootstrap from: its listen address on its host's own address (the
    /// one other hosts can dial if any can), with its peer id.
    pub fn dial_addr(&self, i: usize) -> String {
        let node = &self.cluster.nodes[i];
        let own = format!("/ip4/{}/tcp/", self.net.hosts[self.hosts[i]].addr);
        let mut found = None;
        let ok = wait_until(START_TIMEOUT, || {
            found = node.try_status().ok().and_then(|s| {
                s["listen_addrs"]
                    .as_array()?
                    .iter()
                    .filter_map(|a| a.as_str())
                    .find(|a| a.starts_with(&own))
                    .map(str::to_string)
            });
            found.is_some()
        });
        assert!(
            ok,
            "node{} does not listen on {own}...; log:\n{}",
            i + 1,
            node.log_text()
        );
        format!("{}/p2p/{}", found.unwrap(), node.peer_id())
    }

    /// A node on host `h` invited by node 0, started bootstrapped to node `boot`; returns its
    /// index. Does not wait for it to join.
    pub fn join(&mut self, h: usize, boot: usize, extra: &[&str]) -> usize {
        let name = format!("node{}", self.cluster.nodes.len() + 1);
        let node = self.cluster.init_invited(0, &name);
        let boot = self.dial_addr(boot);
        self.start(node, h, Some(&boot), extra)
    }
}
