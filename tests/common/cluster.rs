//! Networked nodes: run arguments on loopback, what a status says about peers, and a
//! [`Cluster`] of N nodes sharing one network key that waits until it has formed.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::data::write_and_close;
use super::node::{Node, status_peers};
use super::process::{out_text, wait_until};

/// How long a cluster may take to form (every node sees every other alive).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a change may take to show up on another node.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Run arguments for a networked node on loopback without mDNS:
/// `--listen /ip4/127.0.0.1/tcp/0 --no-mdns --replicas R` plus `extra`.
pub fn loopback_args(replicas: u32, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--replicas",
        &replicas.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().cloned());
    v
}

/// Every peer id but the `i`th, sorted (what node `i` should list as its peers).
pub fn others(ids: &[String], i: usize) -> Vec<String> {
    let mut want: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| p.clone())
        .collect();
    want.sort();
    want
}

/// Peer ids a status lists as `alive`, sorted.
pub fn alive_peers(status: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = status_peers(status)
        .into_iter()
        .filter(|(_, s)| s == "alive")
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// `--replicas`.
    pub replicas: u32,
    /// `[storage] chunk_size` written to every node's config before start.
    pub chunk_size: Option<usize>,
    /// More `p2pfs run` arguments for every node.
    pub extra_args: Vec<String>,
}

impl ClusterOpts {
    pub fn replicas(replicas: u32) -> ClusterOpts {
        ClusterOpts {
            replicas,
            chunk_size: None,
            extra_args: Vec::new(),
        }
    }
}

/// N nodes of one network (one shared network key file) on loopback,
/// without mDNS: the first is started alone, the others bootstrap to it.
/// Dropping the cluster kills every node and cleans up its mounts; when the
/// drop happens during a panic it prints every node's status and log first.
pub struct Cluster {
    /// Declared first: dropped (killed, unmounted) before the key dir goes.
    pub nodes: Vec<Node>,
    pub opts: ClusterOpts,
    /// The network key file every node was initialized with.
    pub key: PathBuf,
    _key_dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes with `--replicas replicas`, formed (see `wait_formed`).
    pub fn start(n: usize, replicas: u32) -> Cluster {
        Cluster::start_opts(n, ClusterOpts::replicas(replicas))
    }

    /// `n` nodes with the given options; returns once every node lists the
    /// other `n - 1` as alive.
    pub fn start_opts(n: usize, opts: ClusterOpts) -> Cluster {
        assert!(n >= 1);
        let mut c = Cluster::empty(opts);
        let first = c.init_node();
        c.nodes.push(first);
        c.start_node(0, None);
        let boot = c.nodes[0].bootstrap_addr();
        for i in 1..n {
            let node = c.init_node();
            c.nodes.push(node);
            c.start_node(i, Some(&boot));
        }
        c.wait_formed();
        c
    }

    /// No nodes yet, only the network key file's place (the first
    /// `init_node` creates the key). For tests that start their nodes
    /// themselves (e.g. in network namespaces) and push them to `nodes`.
    pub fn empty(opts: ClusterOpts) -> Cluster {
        let key_dir = tempfile::Builder::new()
            .prefix("p2pfs-test-key-")
            .tempdir()
            .expect("create temp dir");
        let key = key_dir.path().join("network.key");
        Cluster {
            nodes: Vec::new(),
            opts,
            key,
            _key_dir: key_dir,
        }
    }

    /// A fresh node initialized with the cluster's key and chunk size, not
    /// started and not part of `nodes`.
    pub fn init_node(&self) -> Node {
        let node = Node::init_with_key(&self.key);
        self.configure(&node);
        node
    }

    fn configure(&self, node: &Node) {
        if let Some(cs) = self.opts.chunk_size {
            node.set_chunk_size(cs);
        }
    }

    /// `n` nodes of a certified network with `--replicas replicas`, formed and certified (see
    /// [`Cluster::certified_opts`]).
    pub fn certified(n: usize, replicas: u32) -> Cluster {
        Cluster::certified_opts(n, ClusterOpts::replicas(replicas))
    }

    /// `n` nodes of a certified network: the first, initialized without a network key, founds
    /// it; each next one joins with a fresh invite of the first (`init --join-file`) and
    /// bootstraps to it. Node `i` is named `node{i+1}`. `key` is a copy of the network key
    /// (what a holder of the key without a certificate would have). Returns once every node
    /// lists the others alive and reports itself certified.
    pub fn certified_opts(n: usize, opts: ClusterOpts) -> Cluster {
        assert!(n >= 1);
        let mut c = Cluster::empty(opts);
        let first = Node::uninit();
        let out = first.run_init(&["--name", "node1"]);
        assert!(
            out.status.success() && out_text(&out).contains("founded a certified network"),
            "p2pfs init without a network key did not found a certified network: {}",
            out_text(&out)
        );
        c.configure(&first);
        c.nodes.push(first);
        c.start_node(0, None);
        fs::copy(c.nodes[0].dir.join("network.key"), &c.key).expect("copy the network key");
        for _ in 1..n {
            c.add_invited(0);
        }
        c.wait_formed();
        c.wait_certified();
        c
    }

    /// A fresh node initialized (`init --join-file`) with a fresh invite made on `nodes[by]`,
    /// named `name`, with the cluster's chunk size; not started, not part of `nodes`.
    pub fn init_invited(&self, by: usize, name: &str) -> Node {
        let token = make_invite(&self.nodes[by], &[]);
        init_joining(&token, name, self)
    }

    /// Inits a node invited by `nodes[by]` and starts it bootstrapped to `nodes[by]`; returns
    /// its index. Does not wait for it to join.
    pub fn add_invited(&mut self, by: usize) -> usize {
        let boot = self.nodes[by].bootstrap_addr();
        let node = self.init_invited(by, &format!("node{}", self.nodes.len() + 1));
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.start_node(i, Some(&boot));
        i
    }

    /// Waits until every node's status says `admission.mode: certified`.
    #[track_caller]
    pub fn wait_certified(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let ok = wait_until(FORM_TIMEOUT, || {
                admission_mode(n).as_deref() == Some("certified")
            });
            assert!(
                ok,
                "node {} is not certified within {FORM_TIMEOUT:?}: {:?}",
                i + 1,
                n.try_status().map(|s| s["admission"].clone())
            );
        }
    }

    /// The run arguments of a node of this cluster, bootstrapping to `boot`.
    pub fn run_args(&self, boot: Option<&str>) -> Vec<String> {
        let mut extra = self.opts.extra_args.clone();
        if let Some(b) = boot {
            extra.push("--bootstrap".into());
            extra.push(b.to_string());
        }
        loopback_args(self.opts.replicas, &extra)
    }

    /// Starts `nodes[i]`, bootstrapping to `boot` if given.
    pub fn start_node(&mut self, i: usize, boot: Option<&str>) {
        let args = self.run_args(boot);
        self.nodes[i].start_args(&args);
    }

    /// Inits and starts one more node bootstrapped to `nodes[to]`; returns
    /// its index. Does not wait for it to join.
    pub fn add_node(&mut self, to: usize) -> usize {
        let boot = self.nodes[to].bootstrap_addr();
        let node = self.init_node();
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.start_node(i, Some(&boot));
        i
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Peer ids of every node, in order.
    pub fn peer_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.peer_id()).collect()
    }

    /// Waits until every node lists every other node (and only those) as
    /// alive and reports `network: connected`; panics after FORM_TIMEOUT.
    #[track_caller]
    pub fn wait_formed(&self) {
        let ids = self.peer_ids();
        let mut last = String::new();
        let ok = wait_until(FORM_TIMEOUT, || {
            for (i, n) in self.nodes.iter().enumerate() {
                let s = match n.try_status() {
                    Ok(s) => s,
                    Err(e) => {
                        last = format!("node {}: {e}", i + 1);
                        return false;
                    }
                };
                let want = others(&ids, i);
                if alive_peers(&s) != want || (ids.len() > 1 && s["network"] != "connected") {
                    last = format!(
                        "node {} ({}): network={} peers={:?}, want alive {want:?}",
                        i + 1,
                        ids[i],
                        s["network"],
                        status_peers(&s)
                    );
                    return false;
                }
            }
            true
        });
        assert!(
            ok,
            "cluster of {} did not form within {FORM_TIMEOUT:?}: {last}",
            self.nodes.len()
        );
    }

    /// Every node's status (or why there is none) and log.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let st = match n.try_status_within(Duration::from_secs(10)) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                Err(e) => e,
            };
            s.push_str(&format!(
                "\n===== node {} ({}) status =====\n{st}\n===== node {} log =====\n{}\n",
                i + 1,
                n.dir.display(),
                i + 1,
                n.log_text()
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "cluster test failed; node states and logs:{}",
                self.report()
            );
        }
        // Every node is SIGKILLed and unmounted by its own drop.
        self.nodes.clear();
    }
}

/// A positive barrier for "X did not reach node N": writes `name` through `from`'s mount and
/// waits until it reads back on every node of `to`. What `from` wrote before has then had its
/// chance to reach them too, so its absence there means something.
#[track_caller]
pub fn wait_later_file(from: &Node, to: &[&Node], name: &str) {
    let data = format!("written on {} after what is checked\n", from.dir.display()).into_bytes();
    write_and_close(&from.p(name), &data).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    for n in to {
        if let Err(e) = wait_for_file(&n.p(name), &data, SPREAD_TIMEOUT) {
            panic!(
                "barrier: {e}\nlog of {}:\n{}",
                n.dir.display(),
                n.log_text()
            );
        }
    }
}

/// A positive barrier for "nothing crossed the cut": waits until `node` lists `peer` as
/// suspect or dead, that is, has heard nothing from it for its suspect period (6 s by
/// default). Through a cut that leaks, the peer stays alive and this fails.
#[track_caller]
pub fn wait_unheard(node: &Node, peer: &str) {
    let timeout = Duration::from_secs(60);
    let ok = wait_until(timeout, || {
        matches!(node.peer_state(peer).as_deref(), Some("suspect" | "dead"))
    });
    assert!(
        ok,
        "barrier: {} still hears {peer} after {timeout:?} (peers {:?}); log:\n{}",
        node.dir.display(),
        node.try_status().map(|s| status_peers(&s)),
        node.log_text()
    );
}

/// Polls until `path` is a regular file of `want.len()` bytes, then reads it
/// and compares. Returns an error text (with what was seen last) on timeout
/// or mismatch.
pub fn wait_for_file(path: &Path, want: &[u8], timeout: Duration) -> Result<(), String> {
    let mut last = String::from("never looked");
    let ok = wait_until(timeout, || match fs::metadata(path) {
        Ok(md) if md.is_file() && md.len() == want.len() as u64 => true,
        Ok(md) => {
            last = format!("size {} (want {})", md.len(), want.len());
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if !ok {
        return Err(format!(
            "{} did not appear with {} bytes within {timeout:?}; last seen: {last}",
            path.display(),
            want.len()
        ));
    }
    let got = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        return Err(format!(
            "{}: content mismatch: got {} bytes, want {}, first difference at {:?}",
            path.display(),
            got.len(),
            want.len(),
            first.or(Some(got.len().min(want.len())))
        ));
    }
    Ok(())
}

/// A token made by `p2pfs-ctl invite ARGS` on `node` (the word of its output that starts with
/// `p2pfs-invite-`); panics if the command fails.
#[track_caller]
pub fn make_invite(node: &Node, args: &[&str]) -> String {
    let out = node.ctl_ok(&[&["invite"], args].concat());
    out.split_whitespace()
        .find(|w| w.starts_with("p2pfs-invite-"))
        .unwrap_or_else(|| panic!("p2pfs-ctl invite printed no token: {out}"))
        .to_string()
}

/// A fresh node initialized with `p2pfs init --join-file F --name NAME` (F holding `token`),
/// with `c`'s chunk size; not started.
#[track_caller]
pub fn init_joining(token: &str, name: &str, c: &Cluster) -> Node {
    let node = Node::uninit();
    init_join(&node, token, name);
    c.configure(&node);
    node
}

/// Runs `p2pfs init --join-file F --name NAME` (F holding `token`) for `node`'s data dir.
#[track_caller]
pub fn init_join(node: &Node, token: &str, name: &str) {
    let file = node.scratch().join("invite");
    fs::write(&file, format!("{token}\n")).unwrap();
    node.init_ok(&["--join-file", file.to_str().unwrap(), "--name", name]);
}

/// The node's `admission` status (`mode`, `founder`, `admin`, `role`, `last_refusal`,
/// `refused_in`, `refused_out`); `Null` without a status.
pub fn admission(node: &Node) -> serde_json::Value {
    node.try_status()
        .map(|s| s["admission"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// `admission.mode` of the node's status (`certified`, `joining`, `key-only`).
pub fn admission_mode(node: &Node) -> Option<String> {
    admission(node)["mode"].as_str().map(str::to_string)
}

/// `admission.last_refusal.reason` of the node's status: why a peer last refused it, or why
/// it last refused a peer.
pub fn last_refusal(node: &Node) -> Option<String> {
    admission(node)["last_refusal"]["reason"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the node's last admission refusal contains `want`; panics (with its status
/// and log) after `FORM_TIMEOUT`.
#[track_caller]
pub fn wait_refusal(node: &Node, want: &str) -> String {
    let mut last = None;
    let ok = wait_until(FORM_TIMEOUT, || {
        last = last_refusal(node);
        last.as_deref().is_some_and(|r| r.contains(want))
    });
    assert!(
        ok,
        "{} was never refused for {want:?} (last refusal {last:?}); admission {}; log:\n{}",
        node.dir.display(),
        admission(node),
        node.log_text()
    );
    last.unwrap()
}
