//! The Prometheus endpoint: `--metrics ADDR` (or `[metrics] listen`) serves `GET /metrics`;
//! FUSE, storage, peer and rpc counters move with what the node does; no listener without it;
//! a non-loopback address is refused at start. Needs root (mounts).

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A port nobody listens on now (the kernel's pick; released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request: (status line, head, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((reply.clone(), String::new()));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, head, body))
}

/// A scrape: every sample by its series (`name{labels}`), and the whole text.
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    #[track_caller]
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape:\n{}", self.text))
    }
}

#[track_caller]
fn scrape(addr: &str) -> Scrape {
    let (status, head, body) = http_get(addr, "/metrics").expect("scrape");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect();
    Scrape {
        samples,
        text: body,
    }
}

/// TCP ports process `pid` listens on (its sockets in LISTEN state, from /proc).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit_once(':').unwrap().1;
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// The TCP ports of the node's libp2p listen addresses (`/ip4/.../tcp/PORT`).
fn libp2p_ports(node: &Node) -> BTreeSet<u16> {
    node.listen_addr(); // waits until there is one
    node.status()["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| {
            a.as_str()?
                .split("/tcp/")
                .nth(1)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn run_args_with(extra: &[&str]) -> Vec<String> {
    DEFAULT_RUN_ARGS
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

const FUSE_OPS: &str = "p2pfs_fuse_operations_total";
const FUSE_HIST: &str = "p2pfs_fuse_operation_duration_seconds";

#[test]
fn the_endpoint_counts_fuse_io_storage_and_peers() {
    let mut node = Node::init();
    let addr = format!("127.0.0.1:{}", free_port());
    node.start_args(&run_args_with(&["--metrics", &addr]));
    assert!(
        node.log_text().contains(&format!("http://{addr}/metrics")),
        "{}",
        node.log_text()
    );
    let before = scrape(&addr);
    // Every family has its help and type; the peer gauge is there for every state, alone too.
    for family in [
        "p2pfs_peers",
        "p2pfs_chunks_stored",
        "p2pfs_stored_bytes",
        "p2pfs_repair_queue",
        "p2pfs_repair_pushed_bytes",
        "p2pfs_under_replicated_chunks",
        "p2pfs_rpc_bytes",
        "p2pfs_cache_hits",
        "p2pfs_cache_misses",
        "p2pfs_namespace_entries",
        "p2pfs_rejected_entries",
        "p2pfs_fuse_operations",
        FUSE_HIST,
    ] {
        assert!(
            before.text.contains(&format!("# HELP {family} ")),
            "no help for {family}:\n{}",
            before.text
        );
        assert!(
            before.text.contains(&format!("# TYPE {family} ")),
            "no type for {family}"
        );
    }
    for state in ["alive", "suspect", "dead", "leaving", "left"] {
        assert_eq!(
            before.get(&format!("p2pfs_peers{{state=\"{state}\"}}")),
            0.0
        );
    }
    assert_eq!(before.get("p2pfs_replication_factor"), 1.0);
    let peer_id = node.peer_id();
    assert!(
        before
            .text
            .contains(&format!("p2pfs_node_info{{peer_id=\"{peer_id}\",")),
        "{}",
        before.text
    );

    // Write and read a file through the mount (the read after open goes to FUSE: the kernel
    // drops the file's cached pages on open).
    let data = random_bytes(41, 3 * MIB + 12_345);
    write_and_close(&node.p("m.bin"), &data).unwrap();
    assert_bytes_eq("read back", &std::fs::read(node.p("m.bin")).unwrap(), &data);
    std::fs::create_dir(node.p("d")).unwrap();
    assert_eq!(std::fs::read_dir(node.p("d")).unwrap().count(), 0);

    // The stored count is recounted at most every 5 s: wait for it.
    let mut after = scrape(&addr);
    assert!(
        wait_until(Duration::from_secs(30), || {
            after = scrape(&addr);
            after.get("p2pfs_stored_bytes") > 0.0
        }),
        "stored bytes never rose:\n{}",
        after.text
    );
    assert!(after.get("p2pfs_chunks_stored") >= 4.0, "{}", after.text);
    assert!(after.get("p2pfs_stored_bytes") >= data.len() as f64);
    for op in [
        "write", "read", "create", "open", "flush", "release", "lookup", "mkdir",
    ] {
        let ops = format!("{FUSE_OPS}{{op=\"{op}\"}}");
        let count = format!("{FUSE_HIST}_count{{op=\"{op}\"}}");
        let inf = format!("{FUSE_HIST}_bucket{{le=\"+Inf\",op=\"{op}\"}}");
        assert!(
            after.get(&ops) > before.get(&ops),
            "{op}: operations did not rise:\n{}",
            after.text
        );
        assert!(
            after.get(&count) > before.get(&count),
            "{op}: histogram count"
        );
        assert_eq!(
            after.get(&count),
            after.get(&inf),
            "{op}: +Inf bucket = count"
        );
        assert_eq!(after.get(&count), after.get(&ops), "{op}: one count");
        assert!(after.get(&format!("{FUSE_HIST}_sum{{op=\"{op}\"}}")) > 0.0);
    }
    // Writes arrive in pieces of at most 1 MiB: at least 4 of them.
    assert!(after.get(&format!("{FUSE_OPS}{{op=\"write\"}}")) >= 4.0);
    assert!(after.get("p2pfs_fuse_written_bytes_total") >= data.len() as f64);
    assert!(after.get("p2pfs_fuse_read_bytes_total") >= data.len() as f64);
    assert!(
        after.get("p2pfs_namespace_entries") >= 2.0,
        "{}",
        after.text
    );
    let cache = after.get("p2pfs_cache_hits_total") + after.get("p2pfs_cache_misses_total");
    assert!(cache > 0.0, "no cache lookups counted:\n{}", after.text);
    // Alone: nothing on the wire, every series still there.
    assert_eq!(
        after.get("p2pfs_rpc_bytes_total{protocol=\"chunk\",direction=\"out\"}"),
        0.0
    );
    assert_eq!(after.get("p2pfs_rejected_entries_total"), 0.0);

    // Other paths are not found; the listener is the node's.
    let (status, _, _) = http_get(&addr, "/").unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(listening_ports(node.pid().unwrap()).contains(&port));
    node.stop();
}

/// `status.passes.<kind>` as a number.
fn passes(status: &serde_json::Value, kind: &str) -> u64 {
    status["passes"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("no passes.{kind} in status: {status}"))
}

#[test]
fn status_and_scrape_count_worker_passes() {
    let mut node = Node::init();
    node.set_config("network", "repair_interval_secs", "1");
    node.set_config("network", "audit_interval_secs", "1");
    // A collection pass every half grace period, 1 s at least.
    node.set_config("storage", "gc_grace_secs", "2");
    let addr = format!("127.0.0.1:{}", free_port());
    node.start_args(&run_args_with(&["--metrics", &addr]));
    let first = node.status();
    // Two more passes of each worker, as a test waiting on them would.
    let mut now = first.clone();
    let advanced = wait_until(Duration::from_secs(60), || {
        now = node.status();
        ["repair", "gc", "audit"]
            .iter()
            .all(|kind| passes(&now, kind) >= passes(&first, kind) + 2)
    });
    assert!(
        advanced,
        "before: {first}
now: {now}"
    );
    // The scrape encodes the same counters: read between two statuses, it lies between them.
    let scraped = scrape(&addr);
    let after = node.status();
    for kind in ["repair", "gc", "audit", "sync"] {
        let metric = scraped.get(&format!("p2pfs_{kind}_passes_total")) as u64;
        assert!(
            (passes(&now, kind)..=passes(&after, kind)).contains(&metric),
            "{kind}: {metric} not between {now} and {after}:\n{}",
            scraped.text
        );
    }
    // Alone, no anti-entropy session runs.
    assert_eq!(passes(&after, "sync"), 0, "{after}");
    node.stop();
}

#[test]
fn without_the_flag_there_is_no_listener() {
    // By default: libp2p and the web dashboard (on loopback), nothing else.
    let mut node = Node::init();
    node.start();
    let libp2p = libp2p_ports(&node);
    assert!(!libp2p.is_empty());
    let web: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["web", "--json"])).expect("web --json");
    let url = web["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let web_port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut expected = libp2p.clone();
    expected.insert(web_port);
    assert_eq!(listening_ports(node.pid().unwrap()), expected);
    assert!(!node.log_text().contains("/metrics"));
    node.stop();
    // With --no-web: libp2p only.
    node.set_run_args(&run_args_with(&["--no-web"]));
    node.start();
    let libp2p = libp2p_ports(&node);
    assert_eq!(
        listening_ports(node.pid().unwrap()),
        libp2p,
        "the node listens on more than its libp2p addresses"
    );
    let out = node.ctl(&["web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no web dashboard"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop();
}

#[test]
fn a_non_loopback_or_taken_address_is_refused_at_start() {
    let node = Node::init();
    let run = |extra: &[&str]| {
        run_cmd(
            Command::new(bin())
                .arg("run")
                .arg("--data-dir")
                .arg(&node.dir)
                .arg("--mount")
                .arg(&node.mnt)
                .args(run_args_with(extra))
                .env_remove("RUST_LOG")
                .env_remove("P2PFS_LOG"),
            Duration::from_secs(60),
        )
    };
    for remote in ["0.0.0.0:9464", "[::]:9464", "192.0.2.7:9464"] {
        let out = run(&["--metrics", remote]);
        assert!(!out.status.success(), "{}", out_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is not a loopback address") && err.contains("allow_remote = true"),
            "{err}"
        );
        assert!(!node.is_mounted());
    }
    // In the config file: refused when the config is read.
    node.set_config("metrics", "listen", "\"0.0.0.0:9464\"");
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("allow_remote"),
        "{err}"
    );
    node.set_config("metrics", "listen", "\"\"");
    // A port that is taken: said so, before anything is mounted.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--metrics", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics: cannot listen on {addr}")),
        "{err}"
    );
    assert!(!node.is_mounted());
}

#[test]
fn rpc_bytes_and_peers_move_between_two_nodes() {
    // Set in config.toml this time, one endpoint per node.
    let mut c = Cluster::empty(ClusterOpts::replicas(2));
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for (i, addr) in addrs.iter().enumerate() {
        let node = c.init_node();
        node.set_config("metrics", "listen", &format!("\"{addr}\""));
        c.nodes.push(node);
        let boot = (i > 0).then(|| c.nodes[0].bootstrap_addr());
        c.start_node(i, boot.as_deref());
    }
    c.wait_formed();
    let data = random_bytes(42, 2 * MIB);
    write_and_close(&c.nodes[0].p("two.bin"), &data).unwrap();
    let chunk =
        |dir: &str| format!("p2pfs_rpc_bytes_total{{protocol=\"chunk\",direction=\"{dir}\"}}");
    let (mut a, mut b) = (scrape(&addrs[0]), scrape(&addrs[1]));
    let moved = wait_until(Duration::from_secs(30), || {
        a = scrape(&addrs[0]);
        b = scrape(&addrs[1]);
        // The writer pushed its copies (bodies and frames) to the other node.
        a.get(&chunk("out")) >= data.len() as f64
            && b.get(&chunk("in")) >= data.len() as f64
            && b.get("p2pfs_stored_bytes") >= data.len() as f64
    });
    assert!(moved, "node 0:\n{}\nnode 1:\n{}", a.text, b.text);
    for s in [&a, &b] {
        assert_eq!(s.get("p2pfs_peers{state=\"alive\"}"), 1.0, "{}", s.text);
        assert_eq!(s.get("p2pfs_peers_connected"), 1.0);
        assert_eq!(s.get("p2pfs_replication_factor"), 2.0);
    }
    // The server's answers ("stored") go back: bytes out on node 1, in on node 0.
    assert!(b.get(&chunk("out")) > 0.0 && a.get(&chunk("in")) > 0.0);
    // Anti-entropy (every 10 s) is counted on its own protocol, both ways on both nodes.
    let sync = |s: &Scrape, dir: &str| {
        s.get(&format!(
            "p2pfs_rpc_bytes_total{{protocol=\"sync\",direction=\"{dir}\"}}"
        ))
    };
    let synced = wait_until(Duration::from_secs(40), || {
        a = scrape(&addrs[0]);
        b = scrape(&addrs[1]);
        [&a, &b]
            .iter()
            .all(|s| sync(s, "in") > 0.0 && sync(s, "out") > 0.0)
    });
    assert!(synced, "node 0:\n{}\nnode 1:\n{}", a.text, b.text);
    // Completed sessions are counted as passes, in the scrape and in status.
    let counted = wait_until(Duration::from_secs(40), || {
        a = scrape(&addrs[0]);
        b = scrape(&addrs[1]);
        [&a, &b]
            .iter()
            .all(|s| s.get("p2pfs_sync_passes_total") >= 1.0)
    });
    assert!(counted, "node 0:\n{}\nnode 1:\n{}", a.text, b.text);
    for node in &c.nodes {
        let status = node.status();
        assert!(passes(&status, "sync") >= 1, "{status}");
    }
}
