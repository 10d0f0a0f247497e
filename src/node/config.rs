//! Node configuration: `config.toml` in the data dir. Every key has a default, and `p2pfs init`
//! writes them all out so a user sees what can be tuned.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What every key does, in the order `config show` prints them. A test checks that every key
/// of [`Config`] is here.
pub const KEY_DOCS: &[(&str, &str, &str)] = &[
    (
        "node",
        "name",
        "What this node is called in `p2pfs-ctl status`, `peers`, `where` and logs (up to 64\nbytes, no control characters; not unique: a shared name is shown with a short peer id).\nEmpty: the host name.",
    ),
    (
        "node",
        "leave_on_stop",
        "Leave the network (hand this node's data off to the others) on every stop, as\n`p2pfs-ctl leave` does. Off: a stop (Ctrl-C, SIGTERM, systemctl stop) only takes the\nnode offline; it keeps its data and is back at its next start.",
    ),
    (
        "network",
        "network_key_file",
        "File holding the 32-byte network key (raw or 64 hex digits); relative paths are\ninside the data dir. Every node of one network uses the same key.",
    ),
    (
        "network",
        "listen",
        "Addresses to listen on (multiaddrs, e.g. \"/ip4/0.0.0.0/tcp/4001\"). Empty: every\ninterface on TCP `listen_port`.",
    ),
    (
        "network",
        "listen_port",
        "TCP port used when `listen` is empty.",
    ),
    (
        "network",
        "bootstrap",
        "Peers to dial at start (multiaddrs); any one of them brings in the rest.",
    ),
    ("network", "mdns", "Find peers on the LAN by multicast DNS."),
    (
        "network",
        "replicas",
        "Copies of every chunk (the replication factor R): losing R-1 nodes loses no file.",
    ),
    (
        "network",
        "suspect_after_secs",
        "Silence after which a peer is suspect (tried last; placement keeps it); at least 3 announce periods.",
    ),
    (
        "network",
        "dead_after_secs",
        "Silence after which a peer is dead and its data is re-replicated; at least 5 announce periods.",
    ),
    (
        "network",
        "leave_timeout_secs",
        "A member still leaving this long after it announced it is dead (it no longer holds back garbage collection or placement).",
    ),
    (
        "network",
        "forget_after_secs",
        "Dead and left members are dropped from the view after this much silence; a member down (suspect, dead, leaving) holds back garbage collection at most this long.",
    ),
    (
        "network",
        "announce_interval_ms",
        "How often this node announces itself, in milliseconds; past 16 nodes, every nodes/8 seconds (flat traffic per node).",
    ),
    (
        "network",
        "sync_interval_secs",
        "How often this node compares its namespace with a random peer (anti-entropy).",
    ),
    (
        "network",
        "repair_interval_secs",
        "Time between periodic repair passes (membership changes also start one).",
    ),
    (
        "network",
        "repair_rate_mb",
        "Repair bandwidth limit in MB/s (10^6 bytes); 0 = unlimited.",
    ),
    (
        "network",
        "audit_interval_secs",
        "Time between audit rounds: each challenges the other owners of 16 chunks this node\nholds to prove they hold the bytes (a holder that fails counts as holding nothing).",
    ),
    (
        "network",
        "prove_rate_mb",
        "Chunk bytes each peer may have this node read and hash for its proof requests, in MB/s\n(10^6 bytes); a request that would wait over 5 s for its peer's share is refused as busy.",
    ),
    (
        "network",
        "relay_server",
        "Relay connections between members that cannot reach each other (behind NATs):\n\"auto\" while this node is publicly reachable, \"on\" always, \"off\" never. Only members'\nconnections are relayed; the relay sees encrypted bytes only.",
    ),
    (
        "network",
        "relay_max_circuits",
        "Relayed connections this node carries at once, all members together.",
    ),
    (
        "network",
        "relay_max_circuit_mb",
        "Megabytes (10^6 bytes) one relayed connection carries before the relay closes it (the\nmembers reconnect).",
    ),
    (
        "network",
        "relay_max_circuit_secs",
        "Seconds a relayed connection lasts at most.",
    ),
    (
        "network",
        "relay_circuits_per_minute",
        "New relayed connections each member may open through this node per minute.",
    ),
    (
        "network",
        "upnp",
        "Ask the router (UPnP) to forward the listening port to this node. Off by default: a\nprogram that opens ports on a router unasked is a surprise to its owner.",
    ),
    (
        "storage",
        "chunk_size",
        "Size of a file chunk in bytes (4096 to 16777216; a file's last chunk is shorter).",
    ),
    (
        "storage",
        "cache_bytes",
        "Bytes of decrypted chunks kept in memory for hot reads.",
    ),
    (
        "storage",
        "write_buffer_bytes",
        "Bytes of written, not yet encrypted data all open files may hold in memory\ntogether; past it, writers encrypt and store their oldest chunks (at least two chunks).",
    ),
    (
        "storage",
        "seal_threads",
        "Threads per volume that encrypt and store chunks while writes go on (1 to 64).",
    ),
    (
        "storage",
        "read_ahead_chunks",
        "Chunks a sequential reader fetches ahead, in parallel (1 to 256).",
    ),
    (
        "storage",
        "capacity_bytes",
        "Bytes offered to the network for chunks (this node's placement weight);\n0 = the size of the data dir's filesystem.",
    ),
    (
        "storage",
        "min_free_percent",
        "Free space to leave on the data dir's filesystem, in percent of its size (0 to 100):\nbelow it this node drops its oldest kept versions before their retention ends (live\ndata is never dropped). 0: only `capacity_bytes` bounds kept versions.",
    ),
    (
        "storage",
        "sync_chunks",
        "Flush every chunk copy to disk before it counts as stored, so close() waits for R\ndisks. false: close() waits for R copies in the memory of R nodes (each writes it back\nwithin seconds), and fsync() flushes them on every owner.",
    ),
    (
        "storage",
        "hold_chunks",
        "Hold chunks for the network. false: a reader node (a laptop, a client) that offers\nno storage: it is never an owner, keeps only its cache and fetches from peers.",
    ),
    (
        "storage",
        "scrub_interval_secs",
        "Time between scrubs, which re-hash every stored chunk and replace corrupt copies.",
    ),
    (
        "storage",
        "scrub_rate_mb",
        "Scrub read rate limit in MB/s (10^6 bytes); 0 = unlimited.",
    ),
    (
        "storage",
        "gc_grace_secs",
        "Seconds a stored chunk stays unreferenced (and a deletion marker waits) before\ngarbage collection removes it; open files are committed every third of it.",
    ),
    (
        "fuse",
        "threads",
        "Kernel request threads: a slow request holds one of them, never all (1 to 256).",
    ),
    (
        "fuse",
        "allow_other",
        "Let other local users use the mount (only when running as root); the kernel still\nchecks mode bits.",
    ),
    (
        "fuse",
        "attr_ttl_ms",
        "How long the kernel may cache names and attributes, in milliseconds.",
    ),
    (
        "metrics",
        "listen",
        "Address (IP:port) of a Prometheus endpoint serving GET /metrics, e.g.\n\"127.0.0.1:9464\"; empty = off. `--metrics ADDR` sets it for one run.",
    ),
    (
        "metrics",
        "allow_remote",
        "Allow `listen` on an address other than loopback. Off by default: the metrics show\nthis node's peer id, its peers by state and its traffic and activity to anyone\nwho can reach the port, without authentication.",
    ),
    (
        "web",
        "listen",
        "Address (IP:port) of the web dashboard (and an authenticated GET /metrics);\nempty = off. When this port is taken, a free one on the same IP is used.\n`p2pfs-ctl web` prints the URL and a login link. `--web ADDR` and `--no-web`\nset it for one run.",
    ),
    (
        "web",
        "allow_remote",
        "Allow `listen` on an address other than loopback. Off by default: the dashboard\nacts for this node's user (files, shares, invites, expel) for anyone holding\nits login token, which travels unencrypted over plain HTTP.",
    ),
    (
        "retention",
        "days",
        "Days a file's earlier versions (overwritten or deleted) are kept for `p2pfs-ctl\nversions`, `restore` and the snapshot views, in the network volume and in\nvolumes whose owner set no policy; fractions allowed; 0 keeps none.",
    ),
    (
        "retention",
        "max_versions",
        "At most this many earlier versions kept per file (the newest); 0: no cap.",
    ),
    (
        "bandwidth",
        "upload",
        "Most bytes per second this node sends to all peers together (chunks and\nsync; repair and scrub keep their own rates too), e.g. \"10MiB\", \"500KB\" or a\nplain number; \"0\" = unlimited. `p2pfs-ctl limit` changes the limits while running.",
    ),
    (
        "bandwidth",
        "download",
        "Most bytes per second this node receives from all peers together; \"0\" = unlimited.",
    ),
    (
        "bandwidth",
        "peer_upload",
        "Most bytes per second this node sends to any one peer; \"0\" = unlimited.",
    ),
    (
        "bandwidth",
        "peer_download",
        "Most bytes per second this node receives from any one peer; \"0\" = unlimited.",
    ),
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
    pub fuse: FuseConfig,
    pub metrics: MetricsConfig,
    pub web: WebConfig,
    pub retention: RetentionConfig,
    pub bandwidth: BandwidthConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// What this node is called where peers are shown; empty: the host name
    /// ([`Config::node_name`]).
    pub name: String,
    /// Leave (hand off) on every stop instead of going offline.
    pub leave_on_stop: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// File holding the 32-byte network key; relative paths are inside the data dir.
    pub network_key_file: PathBuf,
    /// Addresses to listen on (multiaddrs). Empty: every interface, TCP `listen_port`.
    pub listen: Vec<String>,
    /// TCP port used when `listen` is empty.
    pub listen_port: u16,
    /// Peers to dial at start (multiaddrs); any one of them brings in the rest.
    pub bootstrap: Vec<String>,
    /// Find peers on the LAN by multicast DNS.
    pub mdns: bool,
    /// Copies of every chunk (replication factor R).
    pub replicas: u32,
    /// Silence after which a peer is suspect (placement keeps it until it is dead).
    pub suspect_after_secs: u64,
    /// Silence after which a peer is dead (its data is re-replicated).
    pub dead_after_secs: u64,
    /// A member still leaving this long after it announced it is dead.
    pub leave_timeout_secs: u64,
    /// Dead and left members are forgotten after this much silence; a member that is down
    /// holds back garbage collection at most this long.
    pub forget_after_secs: u64,
    /// How often this node announces itself.
    pub announce_interval_ms: u64,
    /// How often this node runs anti-entropy with a random peer.
    pub sync_interval_secs: u64,
    /// Time between periodic repair passes (membership changes also start one).
    pub repair_interval_secs: u64,
    /// Repair bandwidth limit in MB/s (10^6 bytes); 0 = unlimited.
    pub repair_rate_mb: u64,
    /// Time between audit rounds (each challenges the other owners of a few held chunks).
    pub audit_interval_secs: u64,
    /// Chunk bytes each peer may have this node read for its proofs, in MB/s (10^6 bytes).
    pub prove_rate_mb: u64,
    /// Relay for members: while publicly reachable (auto), always (on), never (off).
    pub relay_server: crate::net::reach::RelayServerMode,
    /// Relayed connections carried at once.
    pub relay_max_circuits: usize,
    /// Megabytes one relayed connection carries at most.
    pub relay_max_circuit_mb: u64,
    /// Seconds one relayed connection lasts at most.
    pub relay_max_circuit_secs: u64,
    /// New relayed connections per member per minute.
    pub relay_circuits_per_minute: u32,
    /// Ask the router (UPnP) to forward the listening port.
    pub upnp: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Size of a file chunk in bytes (the last chunk of a file is shorter).
    pub chunk_size: u32,
    /// Bytes of decrypted chunks kept in memory for hot reads.
    pub cache_bytes: u64,
    /// Bytes of not-yet-sealed written data all open files may hold in memory together;
    /// past it, writers seal (encrypt and store) their oldest dirty chunks.
    pub write_buffer_bytes: u64,
    /// Threads that encrypt and store chunks in the background while writes go on.
    pub seal_threads: usize,
    /// Chunks a sequential reader fetches ahead of the chunk it reads, each on its own thread
    /// (a remote fetch mostly waits on the network, so they overlap).
    pub read_ahead_chunks: usize,
    /// Bytes offered to the network for chunks (the placement weight); 0 = the size of the
    /// data dir's filesystem.
    pub capacity_bytes: u64,
    /// Free space, in percent of the data dir's filesystem (for unprivileged writers), under
    /// which kept versions give way before their retention ends.
    pub min_free_percent: u8,
    /// Flush every chunk copy to disk before it counts as stored (`fsync()` always does).
    pub sync_chunks: bool,
    /// Hold chunks for the network; false makes a reader node with placement weight 0.
    pub hold_chunks: bool,
    /// Time between scrubs, which re-hash every stored chunk and replace corrupt copies.
    pub scrub_interval_secs: u64,
    /// Scrub read rate limit in MB/s (10^6 bytes); 0 = unlimited.
    pub scrub_rate_mb: u64,
    /// Seconds a stored chunk stays unreferenced (and a tombstone waits) before garbage
    /// collection removes it; open files are committed every third of it.
    pub gc_grace_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FuseConfig {
    /// Kernel request threads: a slow request holds one of them, never all.
    pub threads: usize,
    /// Let other local users use the mount (only when running as root); the kernel still
    /// checks mode bits (`default_permissions`).
    pub allow_other: bool,
    /// How long the kernel may cache names and attributes, in milliseconds.
    pub attr_ttl_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address (IP:port) of the Prometheus endpoint; empty = off.
    pub listen: String,
    /// Allow `listen` on a non-loopback address: the metrics reveal the node's peer id, its
    /// peers and its traffic, and the endpoint has no authentication.
    pub allow_remote: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address (IP:port) of the dashboard; empty = off.
    pub listen: String,
    /// Allow `listen` on a non-loopback address.
    pub allow_remote: bool,
}

/// Where the dashboard listens unless told otherwise (a free port on the same IP when taken).
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:7464";

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_WEB_LISTEN.to_string(),
            allow_remote: false,
        }
    }
}

impl WebConfig {
    /// The dashboard's address: `None` when off; an error for an address that is not IP:port,
    /// or is not loopback without `allow_remote`.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        loopback_listen_addr(
            "web",
            &self.listen,
            self.allow_remote,
            DEFAULT_WEB_LISTEN,
            "the dashboard acts for this node's user, and its login token would cross the network in clear; use 127.0.0.1 or [::1] (and an SSH tunnel)",
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a version replaced by an overwrite or a delete is kept (fractions allowed); 0: none.
    pub days: f64,
    /// At most this many replaced versions per file; 0: no cap.
    pub max_versions: u32,
}

/// Bandwidth limits (`net::bandwidth`), as rates: a number of bytes per second or a text
/// with a unit ("10MiB", "500KB"); "0" = unlimited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandwidthConfig {
    #[serde(deserialize_with = "rate_text")]
    pub upload: String,
    #[serde(deserialize_with = "rate_text")]
    pub download: String,
    #[serde(deserialize_with = "rate_text")]
    pub peer_upload: String,
    #[serde(deserialize_with = "rate_text")]
    pub peer_download: String,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        Self {
            upload: "0".into(),
            download: "0".into(),
            peer_upload: "0".into(),
            peer_download: "0".into(),
        }
    }
}

impl BandwidthConfig {
    /// The limits in bytes per second; an error names the key whose rate does not parse.
    pub fn limits(&self) -> Result<crate::net::bandwidth::Limits, String> {
        let rate = |key: &str, text: &str| {
            crate::net::bandwidth::parse_rate(text).map_err(|e| format!("bandwidth.{key}: {e}"))
        };
        Ok(crate::net::bandwidth::Limits {
            upload: rate("upload", &self.upload)?,
            download: rate("download", &self.download)?,
            peer_upload: rate("peer_upload", &self.peer_upload)?,
            peer_download: rate("peer_download", &self.peer_download)?,
        })
    }
}

/// A rate key as text, whether written as a number or a string.
fn rate_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Number(u64),
        Text(String),
    }
    Ok(match Rate::deserialize(d)? {
        Rate::Number(n) => n.to_string(),
        Rate::Text(t) => t,
    })
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            days: 7.0,
            max_versions: 0,
        }
    }
}

impl RetentionConfig {
    /// The policy of the network volume, and of member volumes whose owner set none.
    pub fn policy(&self) -> crate::namespace::RetentionPolicy {
        crate::namespace::RetentionPolicy::from_days(self.days, self.max_versions)
    }
}

impl MetricsConfig {
    /// The endpoint's address: `None` when off; an error for an address that is not IP:port,
    /// or is not loopback without `allow_remote`.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        loopback_listen_addr(
            "metrics",
            &self.listen,
            self.allow_remote,
            "127.0.0.1:9464",
            "the metrics show this node's peer id, its peers and its traffic to anyone who can connect, without authentication; use 127.0.0.1 or [::1] (and a tunnel or a local scraper)",
        )
    }
}

/// A listen address of an HTTP endpoint (`[SECTION] listen`): `None` when empty; an error for
/// one that is not IP:port, or is not loopback without `allow_remote` (`why` says what a
/// remote address would expose).
fn loopback_listen_addr(
    section: &str,
    text: &str,
    allow_remote: bool,
    example: &str,
    why: &str,
) -> Result<Option<std::net::SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        format!("{section}.listen: {text:?} is not an IP address and port, e.g. {example}")
    })?;
    if !allow_remote && !addr.ip().to_canonical().is_loopback() {
        return Err(format!(
            "{section} address {addr} is not a loopback address: {why}, or set `allow_remote = true` under [{section}] in config.toml to serve it on the network"
        ));
    }
    Ok(Some(addr))
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            network_key_file: PathBuf::from("network.key"),
            listen: Vec::new(),
            listen_port: 4001,
            bootstrap: Vec::new(),
            mdns: true,
            replicas: 3,
            suspect_after_secs: 6,
            dead_after_secs: 60,
            leave_timeout_secs: 120,
            forget_after_secs: 3600,
            announce_interval_ms: 2000,
            sync_interval_secs: 10,
            repair_interval_secs: 60,
            repair_rate_mb: 100,
            audit_interval_secs: 10,
            prove_rate_mb: 16,
            relay_server: crate::net::reach::RelayServerMode::Auto,
            relay_max_circuits: 32,
            relay_max_circuit_mb: 1024,
            relay_max_circuit_secs: 3600,
            relay_circuits_per_minute: 6,
            upnp: false,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            chunk_size: 1 << 20,
            cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            seal_threads: 4,
            read_ahead_chunks: 16,
            capacity_bytes: 0,
            min_free_percent: 5,
            sync_chunks: false,
            hold_chunks: true,
            scrub_interval_secs: 24 * 3600,
            scrub_rate_mb: 50,
            gc_grace_secs: 60,
        }
    }
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            threads: 8,
            allow_other: true,
            attr_ttl_ms: 1000,
        }
    }
}

impl Config {
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source: Box::new(source),
        })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { path, message })?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// The configuration as TOML with every key explained and its default shown: what `init`
    /// writes and `p2pfs config show` prints.
    pub fn to_documented_toml(&self) -> String {
        let value = toml::Table::try_from(self).expect("config serializes");
        let default = toml::Table::try_from(Config::default()).expect("config serializes");
        let mut out = String::from(
            "# p2pfs node configuration. Every key is shown with what it does and its default;\n\
             # delete a line to go back to the default.\n",
        );
        let mut section = "";
        for (sec, key, doc) in KEY_DOCS {
            if *sec != section {
                section = sec;
                out.push_str(&format!("\n[{sec}]\n"));
            } else {
                out.push('\n');
            }
            let line = |table: &toml::Table| {
                let mut one = toml::Table::new();
                if let Some(v) = table.get(*sec).and_then(|s| s.get(*key)) {
                    one.insert(key.to_string(), v.clone());
                }
                toml::to_string(&one).expect("value serializes")
            };
            for doc_line in doc.lines() {
                out.push_str(&format!("# {doc_line}\n"));
            }
            let (now, default) = (line(&value), line(&default));
            let shown_default = default.trim_end().split_once(" = ").map_or("", |(_, v)| v);
            if shown_default.is_empty() {
                out.push_str("# default: (none)\n");
            } else {
                out.push_str(&format!("# default: {shown_default}\n"));
            }
            if now.trim().is_empty() {
                out.push_str(&format!("# {key} =\n"));
            } else {
                out.push_str(&now);
            }
        }
        out
    }

    fn validate(&self) -> Result<(), String> {
        if !self.node.name.is_empty() {
            crate::cluster::names::check_name(&self.node.name)
                .map_err(|e| format!("node.name {:?}: {e}", self.node.name))?;
        }
        let s = &self.storage;
        if !(4096..=(16 << 20)).contains(&s.chunk_size) {
            return Err(format!(
                "storage.chunk_size must be between 4096 and 16777216, not {}",
                s.chunk_size
            ));
        }
        if s.write_buffer_bytes < u64::from(s.chunk_size) * 2 {
            return Err("storage.write_buffer_bytes must hold at least two chunks".into());
        }
        if s.scrub_interval_secs == 0 {
            return Err("storage.scrub_interval_secs must be > 0".into());
        }
        if s.gc_grace_secs == 0 {
            return Err("storage.gc_grace_secs must be > 0".into());
        }
        if s.seal_threads == 0 || s.seal_threads > 64 {
            return Err("storage.seal_threads must be between 1 and 64".into());
        }
        if s.read_ahead_chunks == 0 || s.read_ahead_chunks > 256 {
            return Err("storage.read_ahead_chunks must be between 1 and 256".into());
        }
        if s.min_free_percent > 100 {
            return Err(format!(
                "storage.min_free_percent must be between 0 and 100, not {}",
                s.min_free_percent
            ));
        }
        self.bandwidth.limits()?;
        let r = &self.retention;
        if !r.days.is_finite() || r.days < 0.0 || r.days > 3650.0 {
            return Err(format!(
                "retention.days must be between 0 and 3650, not {}",
                r.days
            ));
        }
        let n = &self.network;
        if n.replicas == 0 || n.replicas > 16 {
            return Err("network.replicas must be between 1 and 16".into());
        }
        if n.suspect_after_secs == 0 || n.dead_after_secs < n.suspect_after_secs {
            return Err(
                "network.dead_after_secs must be at least network.suspect_after_secs (> 0)".into(),
            );
        }
        if n.leave_timeout_secs == 0 || n.forget_after_secs < n.dead_after_secs {
            return Err(
                "network.leave_timeout_secs must be > 0 and forget_after_secs at least dead_after_secs"
                    .into(),
            );
        }
        if n.announce_interval_ms < 100 || n.sync_interval_secs == 0 || n.repair_interval_secs == 0
        {
            return Err(
                "network.announce_interval_ms must be >= 100 and sync_interval_secs > 0".into(),
            );
        }
        if n.prove_rate_mb == 0 {
            return Err("network.prove_rate_mb must be > 0".into());
        }
        if n.audit_interval_secs == 0 {
            return Err("network.audit_interval_secs must be > 0".into());
        }
        if n.relay_max_circuits == 0
            || n.relay_max_circuit_mb == 0
            || n.relay_max_circuit_secs == 0
            || n.relay_max_circuit_secs > u32::MAX.into()
            || n.relay_circuits_per_minute == 0
        {
            return Err(
                "network.relay_max_circuits, relay_max_circuit_mb, relay_max_circuit_secs (up to 2^32-1) and relay_circuits_per_minute must be > 0 (relay_server = \"off\" turns relaying off)".into(),
            );
        }
        for a in n.listen.iter().chain(&n.bootstrap) {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| format!("network: {a:?} is not a multiaddr: {e}"))?;
        }
        if self.fuse.threads == 0 || self.fuse.threads > 256 {
            return Err("fuse.threads must be between 1 and 256".into());
        }
        self.metrics.listen_addr()?;
        self.web.listen_addr()?;
        Ok(())
    }

    /// The name this node goes by: `node.name`, else the host name, else the short form of
    /// `peer_id`. A data dir made before names gets its host name here, each time it loads.
    pub fn node_name(&self, peer_id: &str) -> String {
        if self.node.name.is_empty() {
            crate::cluster::names::default_name(peer_id)
        } else {
            self.node.name.clone()
        }
    }

    /// Listen addresses, parsed (validated on load).
    pub fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        if self.network.listen.is_empty() {
            let port = self.network.listen_port;
            return vec![
                format!("/ip4/0.0.0.0/tcp/{port}")
                    .parse()
                    .expect("valid multiaddr"),
            ];
        }
        self.network
            .listen
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The reachability parts of the network ([`crate::net::reach`]).
    pub fn reach(&self) -> crate::net::reach::ReachConfig {
        let n = &self.network;
        crate::net::reach::ReachConfig {
            relay_server: n.relay_server,
            relay_limits: crate::net::reach::RelayLimits {
                max_circuits: n.relay_max_circuits,
                max_circuit_bytes: n.relay_max_circuit_mb.saturating_mul(1_000_000),
                max_circuit_duration: std::time::Duration::from_secs(n.relay_max_circuit_secs),
                circuits_per_minute: n.relay_circuits_per_minute,
                ..Default::default()
            },
            upnp: n.upnp,
            ..Default::default()
        }
    }

    pub fn bootstrap_addrs(&self) -> Vec<libp2p::Multiaddr> {
        self.network
            .bootstrap
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The network key file, resolved against the data dir.
    pub fn network_key_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.network.network_key_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_partial_files_fill_in() {
        let text = Config::default().to_toml();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), Config::default());
        let partial: Config = toml::from_str("[storage]\nchunk_size = 65536\n").unwrap();
        assert_eq!(partial.storage.chunk_size, 65536);
        assert_eq!(partial.fuse, FuseConfig::default());
    }

    #[test]
    fn every_key_is_documented_and_the_documented_form_reads_back() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let mut keys: Vec<(String, String)> = table
            .iter()
            .flat_map(|(sec, v)| {
                v.as_table()
                    .unwrap()
                    .keys()
                    .map(|k| (sec.clone(), k.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut documented: Vec<(String, String)> = KEY_DOCS
            .iter()
            .map(|(s, k, _)| (s.to_string(), k.to_string()))
            .collect();
        keys.sort();
        documented.sort();
        assert_eq!(
            keys, documented,
            "KEY_DOCS must list every key exactly once"
        );
        let mut c = Config::default();
        c.network.bootstrap = vec!["/ip4/10.0.0.1/tcp/4001".into()];
        c.storage.cache_bytes = 12345;
        let text = c.to_documented_toml();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
        assert!(
            text.contains("# default: 67108864\ncache_bytes = 12345"),
            "{text}"
        );
        assert!(
            text.contains("# default: []\nbootstrap = [\"/ip4/10.0.0.1/tcp/4001\"]"),
            "{text}"
        );
    }

    #[test]
    fn metrics_listen_only_on_loopback_unless_allowed() {
        let mut m = MetricsConfig::default();
        assert_eq!(m.listen_addr(), Ok(None));
        m.listen = "127.0.0.1:9464".into();
        assert_eq!(m.listen_addr(), Ok(Some("127.0.0.1:9464".parse().unwrap())));
        m.listen = "[::1]:9464".into();
        assert!(m.listen_addr().unwrap().is_some());
        for remote in ["0.0.0.0:9464", "192.0.2.7:9464", "[::]:9464"] {
            m.listen = remote.into();
            let e = m.listen_addr().unwrap_err();
            assert!(
                e.contains("not a loopback") && e.contains("allow_remote"),
                "{e}"
            );
            let c = Config {
                metrics: m.clone(),
                ..Config::default()
            };
            assert!(c.validate().is_err());
        }
        m.allow_remote = true;
        assert_eq!(m.listen_addr(), Ok(Some("[::]:9464".parse().unwrap())));
        m.listen = "localhost".into();
        assert!(m.listen_addr().unwrap_err().contains("IP address and port"));
    }

    #[test]
    fn the_node_name_is_checked_and_defaults_to_the_host_name() {
        let id = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaa";
        let old: Config = toml::from_str("[storage]\nchunk_size = 65536\n").unwrap();
        assert_eq!(old.node.name, "");
        assert_eq!(
            old.node_name(id),
            crate::cluster::names::host_name().unwrap_or_else(|| "12D3…aaaa".into())
        );
        let named: Config = toml::from_str("[node]\nname = \"laptop\"\n").unwrap();
        assert_eq!(named.node_name(id), "laptop");
        assert_eq!(named.validate(), Ok(()));
        let mut c = Config::default();
        c.node.name = "lap\u{1b}top".into();
        assert!(c.validate().unwrap_err().contains("node.name"));
        c.node.name = "x".repeat(65);
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[storage]\nchunk_sise = 1\n").is_err());
        let mut c = Config::default();
        c.storage.chunk_size = 100;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.storage.min_free_percent = 101;
        assert!(c.validate().unwrap_err().contains("min_free_percent"));
        c.storage.min_free_percent = 0;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn bandwidth_rates_are_numbers_or_texts_with_units() {
        let c: Config = toml::from_str(
            "[bandwidth]\nupload = \"10MiB\"\ndownload = 500000\npeer_upload = \"500KB\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.bandwidth.limits().unwrap(),
            crate::net::bandwidth::Limits {
                upload: 10 << 20,
                download: 500_000,
                peer_upload: 500_000,
                peer_download: 0,
            }
        );
        let mut c = Config::default();
        assert_eq!(c.bandwidth.limits().unwrap(), Default::default());
        c.bandwidth.peer_download = "fast".into();
        let e = c.validate().unwrap_err();
        assert!(e.contains("bandwidth.peer_download"), "{e}");
    }
}
