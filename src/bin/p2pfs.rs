//! `p2pfs`: create a node, or run it with its mount.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use p2pfs::identity::{USER_KEY_FILE, UserIdentity};
use p2pfs::node::{self, Node};

#[derive(Parser)]
#[command(
    name = "p2pfs",
    version,
    about = "Serverless, end-to-end encrypted peer-to-peer file store, mounted as a directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Print the user id (ed25519 public key) and age recipient, which others share with.
    Show {
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Write the user identity (secret) to FILE (created with mode 0600, never overwritten),
    /// for `p2pfs init --user-key FILE` on another machine.
    Export {
        file: PathBuf,
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration: the data dir's config.toml with the given flags
    /// applied (as `run` would use it), every key explained with its default.
    Show {
        /// Defaults to $XDG_DATA_HOME/p2pfs; without a node there, the defaults are shown.
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        net: NetFlags,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Create a node: identities, network key and a config with every default.
    Init {
        /// Where the node keeps its keys, config, chunks and namespace.
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: PathBuf,
        /// Network key file: used if it exists, created (mode 0600) with a fresh key if not.
        /// Without it (and without --join), a fresh key is made inside the data dir: a new
        /// network.
        #[arg(long, conflicts_with = "join")]
        network_key: Option<PathBuf>,
        /// Join the network of an invite token (`p2pfs-ctl invite` on any member prints one):
        /// its network key and the inviter's addresses are all that is needed.
        #[arg(long, value_name = "TOKEN")]
        join: Option<String>,
        /// Use this user identity (from `p2pfs user export` on another machine) instead of
        /// making a new one: same user, same personal files.
        #[arg(long, value_name = "FILE")]
        user_key: Option<PathBuf>,
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
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: PathBuf,
        /// Directory to mount the files at (created if missing).
        #[arg(long)]
        mount: PathBuf,
        #[command(flatten)]
        net: NetFlags,
    },
    /// One-command start: mount at MOUNTPOINT using the default data dir, created on first use.
    Mount {
        mountpoint: PathBuf,
        /// On first use, join the network of this invite token instead of starting a new one.
        #[arg(long, value_name = "TOKEN")]
        join: Option<String>,
        /// Defaults to $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
        #[arg(long, env = "P2PFS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        net: NetFlags,
    },
}

/// Network settings that override the config file for this run.
#[derive(clap::Args)]
struct NetFlags {
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001. Default: every
    /// interface, TCP port `network.listen_port`.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<libp2p::Multiaddr>,
    /// Peer to dial at start (repeatable), e.g. /ip4/192.0.2.7/tcp/4001. Added to the config's.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Do not look for peers on the LAN by multicast DNS.
    #[arg(long)]
    no_mdns: bool,
    /// Copies of every chunk (default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    replicas: Option<u32>,
    /// Seconds of silence after which a peer counts as dead (default 60).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    dead_after: Option<u64>,
    /// Seconds an unreferenced chunk (a deleted or overwritten file's) is kept before garbage
    /// collection removes it everywhere (default 60).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    gc_grace: Option<u64>,
}

impl NetFlags {
    fn apply(self, config: &mut p2pfs::config::Config) {
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
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("P2PFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,fuser=error,libp2p_kad=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn print_init(data_dir: &std::path::Path, r: &node::InitReport) {
    println!("initialized p2pfs node in {}", data_dir.display());
    println!("  peer id:      {}", r.peer_id);
    println!("  user id:      {}", r.user_id);
    println!(
        "  network key:  {} ({}, fingerprint {})",
        r.network_key_file.display(),
        if r.network_key_created {
            "new"
        } else {
            "existing"
        },
        r.network_fingerprint
    );
}

fn read_invite(token: &str) -> Result<p2pfs::identity::Invite> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(p2pfs::identity::Invite::decode(token, now)?)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Init {
            data_dir,
            network_key,
            user_key,
            join,
        } => {
            let invite = join.as_deref().map(read_invite).transpose()?;
            let report = node::init(
                &data_dir,
                network_key.as_deref(),
                user_key.as_deref(),
                invite.as_ref(),
            )?;
            print_init(&data_dir, &report);
            if let Some(i) = &invite {
                println!(
                    "  joining:      {} (invited by {}); start it with p2pfs run",
                    i.bootstrap.join(", "),
                    i.inviter
                );
            }
        }
        Command::Config {
            command: ConfigCommand::Show { data_dir, net },
        } => {
            let data_dir = data_dir.or_else(p2pfs::util::paths::default_data_dir);
            let mut config = match &data_dir {
                Some(d) if node::is_initialized(d) => p2pfs::config::Config::load(d)?,
                _ => {
                    eprintln!("(no node in the data dir: showing the defaults)");
                    p2pfs::config::Config::default()
                }
            };
            net.apply(&mut config);
            print!("{}", config.to_documented_toml());
        }
        Command::User { command } => match command {
            UserCommand::Show { data_dir } => {
                let user = UserIdentity::load(&data_dir.join(USER_KEY_FILE))?;
                println!("user id:    {}", user.user_id());
                println!("recipient:  {}", user.recipient());
                println!(
                    "public key: {}",
                    p2pfs::namespace::volume::UserKey::of(&user)
                );
                println!(
                    "(others share a volume with you by: p2pfs-ctl volume share NAME --with PUBLIC_KEY)"
                );
            }
            UserCommand::Export { file, data_dir } => {
                let user = UserIdentity::load(&data_dir.join(USER_KEY_FILE))?;
                user.save_new(&file).with_context(|| {
                    format!("cannot export the user identity to {}", file.display())
                })?;
                eprintln!(
                    "exported user {} to {} (secret: it decrypts and signs your files)",
                    user.user_id(),
                    file.display()
                );
            }
        },
        Command::Run {
            data_dir,
            mount,
            net,
        } => {
            let mut node = Node::load(&data_dir)?;
            net.apply(&mut node.config);
            node.run(&mount)?;
        }
        Command::Mount {
            mountpoint,
            join,
            data_dir,
            net,
        } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => p2pfs::util::paths::default_data_dir().context(
                    "no default data dir: set HOME or XDG_DATA_HOME, or pass --data-dir",
                )?,
            };
            if !node::is_initialized(&data_dir) {
                let invite = join.as_deref().map(read_invite).transpose()?;
                let report = node::init(&data_dir, None, None, invite.as_ref())?;
                print_init(&data_dir, &report);
            } else if join.is_some() {
                anyhow::bail!(
                    "{} already holds a node; --join is only for a new one",
                    data_dir.display()
                );
            }
            let mut node = Node::load(&data_dir)?;
            net.apply(&mut node.config);
            node.run(&mountpoint)?;
        }
    }
    Ok(())
}
