//! The command line of `p2pfs` (src/bin/p2pfs.rs runs it): every flag, subcommand and help
//! text. Kept in the library so the packaging asset generator (packaging/gen_assets.rs) builds
//! man pages and shell completions from the same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "p2pfs",
    version,
    about = "Serverless, end-to-end encrypted peer-to-peer file store, mounted as a directory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Print the user id (ed25519 public key) and age recipient: the public key others share
    /// volumes with.
    Show {
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write the user identity (secret) to FILE (created with mode 0600, never overwritten),
    /// for `p2pfs init --user-key FILE` on another machine.
    Export {
        /// The file to write; it must not exist yet.
        file: PathBuf,
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration: the data dir's config.toml with the given flags
    /// applied (as `run` would use it), every key explained with its default.
    Show {
        /// The node's data dir. Defaults to $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs);
        /// without a node there, the defaults are shown.
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        net: NetFlags,
    },
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a node: identities, network key and a config with every default; without
    /// --network-key or --join, it founds a certified network.
    Init {
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Network key file: used if it exists, created (mode 0600) with a fresh key if not.
        /// The network is then key-only: every holder of the key is a member. Without it (and
        /// without --join), a fresh key is made inside the data dir and the node founds a new
        /// certified network: this node's user is its founder and admin.
        #[arg(long, conflicts_with = "join")]
        network_key: Option<PathBuf>,
        /// Join the network of an invite token (`p2pfs-ctl invite` prints one): its network key
        /// and the inviter's addresses are all that is needed; a certified network's token
        /// (p2pfs-invite-3-) admits this node once, at its first connection to the inviting
        /// node. `-` reads it from standard input; a token given here is visible to every
        /// local user in the process list while the command runs (prefer `-` or --join-file).
        #[arg(long, value_name = "TOKEN")]
        join: Option<String>,
        /// As --join, the token read from FILE (keep it mode 0600, delete it after).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["join", "network_key"])]
        join_file: Option<PathBuf>,
        /// Use this user identity (from `p2pfs user export` on another machine) instead of
        /// making a new one: same user, same personal files.
        #[arg(long, value_name = "FILE")]
        user_key: Option<PathBuf>,
        /// What this node is called in status, peers, where and logs (`[node] name` in
        /// config.toml): up to 64 bytes, no control characters. Default: the host name.
        #[arg(long, value_parser = parse_name)]
        name: Option<String>,
        #[command(flatten)]
        replace: ReplaceFlags,
    },
    /// The node's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The node's user identity.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run a node in the foreground with its mount; SIGTERM or SIGINT unmounts and exits.
    Run {
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Directory to mount the files at (created if missing; see --allow-non-empty).
        #[arg(long)]
        mount: PathBuf,
        #[command(flatten)]
        mountpoint: MountpointFlags,
        #[command(flatten)]
        net: NetFlags,
    },
    /// One-command start: mount at MOUNTPOINT using the default data dir, created on first use
    /// (and kept only once the mount is up: a failed first start leaves no node behind).
    Mount {
        /// The directory to mount the files at: created if missing; refused when it is a mount
        /// point already, a file, or not empty (see --allow-non-empty).
        mountpoint: PathBuf,
        /// On first use, join the network of this invite token instead of starting a new one.
        /// `-` reads it from standard input. A token given here stays in the process list
        /// (/proc/PID/cmdline, readable by every local user) for the life of the mount: prefer
        /// `-` or --join-file.
        #[arg(long, value_name = "TOKEN")]
        join: Option<String>,
        /// As --join, the token read from FILE (keep it mode 0600, delete it after).
        #[arg(long, value_name = "FILE", conflicts_with = "join")]
        join_file: Option<PathBuf>,
        /// What this node is called (see `p2pfs init --name`): written to config.toml on first
        /// use; later, names the node for this run. Default: the host name.
        #[arg(long, value_parser = parse_name)]
        name: Option<String>,
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        mountpoint_flags: MountpointFlags,
        #[command(flatten)]
        replace: ReplaceFlags,
        #[command(flatten)]
        net: NetFlags,
    },
    /// Remove this machine's node: its keys and user identity (a copy made with `p2pfs user
    /// export` stays valid), config, chunks and namespace. Refused while the node runs; asks to
    /// confirm on a terminal (--yes otherwise). Files stay in the network where other nodes
    /// hold copies.
    Reset {
        /// The node's data dir: its keys, config, chunks and namespace. Defaults to
        /// $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Do not ask: remove the node (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Print a man page (roff: `p2pfs man | man -l -`), or install every page of `p2pfs` and
    /// `p2pfs-ctl` with --install.
    Man {
        /// The page to print, as `man` names it: p2pfs, p2pfs-mount, p2pfs-ctl-status, ...
        #[arg(default_value = "p2pfs")]
        page: String,
        /// Write every page to DIR. Default: PREFIX/share/man/man1 for this program in
        /// PREFIX/bin (~/.local/share/man/man1 for ~/.local/bin/p2pfs), where `man` finds them.
        #[arg(long, value_name = "DIR", num_args = 0..=1)]
        install: Option<Option<PathBuf>>,
    },
}

/// How `run` and `mount` treat the directory they mount at.
#[derive(clap::Args)]
pub struct MountpointFlags {
    /// Mount even when the directory holds files: they are hidden (not deleted) while the
    /// mount is up.
    #[arg(long)]
    pub allow_non_empty: bool,
}

/// Replacing a node that is in the data dir already (`init`, `mount`).
#[derive(clap::Args)]
pub struct ReplaceFlags {
    /// With --join or --join-file: replace the node in the data dir with a new one that joins
    /// the invite's network (the user identity is kept). Refused when that node holds data
    /// or has other members, unless --yes.
    #[arg(long)]
    pub force_join: bool,
    /// With --force-join: replace the node even when it holds data or has other members.
    #[arg(long, requires = "force_join")]
    pub yes: bool,
}

/// A `--name`, checked as every node checks the names it hears.
fn parse_name(name: &str) -> Result<String, String> {
    crate::cluster::names::check_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

/// Network settings that override the config file for this run.
#[derive(clap::Args)]
pub struct NetFlags {
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001. Default: every
    /// interface, TCP port `network.listen_port`.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<libp2p::Multiaddr>,
    /// Peer to dial at start (repeatable), e.g. /ip4/192.0.2.7/tcp/4001, in addition to the
    /// bootstrap peers of config.toml.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<libp2p::Multiaddr>,
    /// Do not look for peers on the LAN by multicast DNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Copies of every chunk (default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: Option<u32>,
    /// Seconds of silence after which a peer counts as dead (default 60).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_after: Option<u64>,
    /// Seconds an unreferenced chunk (a deleted or overwritten file's) is kept before garbage
    /// collection removes it everywhere (default 60).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_grace: Option<u64>,
    /// Days earlier versions of files (overwritten or deleted) are kept, for the network
    /// volume and volumes whose owner set no policy (`retention.days`, default 7; fractions
    /// allowed; 0 keeps none, so deleted data leaves after the GC grace period).
    #[arg(long, value_name = "DAYS", value_parser = parse_days)]
    pub retention_days: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (`metrics.listen`).
    /// Loopback only, unless config.toml sets `allow_remote = true` in its metrics section.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the web dashboard at http://ADDR/ (`web.listen`, default 127.0.0.1:7464; a free
    /// port on the same IP when that one is taken). Loopback only, unless config.toml sets
    /// `allow_remote = true` in its web section. `p2pfs-ctl web` prints the login link.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_web")]
    pub web: Option<std::net::SocketAddr>,
    /// Serve no web dashboard for this run (`web.listen = ""` turns it off for good).
    #[arg(long)]
    pub no_web: bool,
    /// Offer no storage to the network: a reader node that is never an owner of a chunk and
    /// fetches everything from peers (storage.hold_chunks = false).
    #[arg(long)]
    pub no_storage: bool,
    /// Leave the network on this run's stop (hand this node's data off to the others), as
    /// `p2pfs-ctl leave` does; without it, a stop only takes the node offline (`node.leave_on_stop`).
    #[arg(long)]
    pub leave_on_stop: bool,
}

impl NetFlags {
    /// Writes the given flags over `config` (as `run`, `mount` and `config show` use it).
    pub fn apply(self, config: &mut crate::node::config::Config) {
        let n = &mut config.network;
        if !self.listen.is_empty() {
            n.listen = self.listen.iter().map(ToString::to_string).collect();
        }
        n.bootstrap
            .extend(self.bootstrap.iter().map(ToString::to_string));
        if self.no_mdns {
            n.mdns = false;
        }
        if let Some(r) = self.replicas {
            n.replicas = r;
        }
        if let Some(d) = self.dead_after {
            n.dead_after_secs = d;
            n.suspect_after_secs = n.suspect_after_secs.min(d);
        }
        if let Some(g) = self.gc_grace {
            config.storage.gc_grace_secs = g;
        }
        if self.no_storage {
            config.storage.hold_chunks = false;
        }
        if self.leave_on_stop {
            config.node.leave_on_stop = true;
        }
        if let Some(days) = self.retention_days {
            config.retention.days = days;
        }
        if let Some(addr) = self.metrics {
            config.metrics.listen = addr.to_string();
        }
        if let Some(addr) = self.web {
            config.web.listen = addr.to_string();
        }
        if self.no_web {
            config.web.listen.clear();
        }
    }
}

/// Parses `--retention-days`: a number of days between 0 and 3650.
fn parse_days(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && (0.0..=3650.0).contains(&d) => Ok(d),
        _ => Err(format!("{s:?} is not a number of days between 0 and 3650")),
    }
}
