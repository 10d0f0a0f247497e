//! `p2pfs-ctl`: talk to a running node over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use p2pfs::control::{self, ControlError, Reply, Request, Status};
use p2pfs::namespace::volume::Role;

/// Exit codes: 0 success, 1 the node answered with an error, 2 bad usage (clap),
/// 3 no node is running for the data dir, 4 the socket failed or spoke nonsense.
const EXIT_ERROR: u8 = 1;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_IO: u8 = 4;

#[derive(Parser)]
#[command(
    name = "p2pfs-ctl",
    version,
    about = "Inspect and control a running p2pfs node"
)]
struct Cli {
    /// The node's data dir. Defaults to $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
    #[arg(long, env = "P2PFS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// This node, its network connection, peers, replication health and cache.
    Status {
        /// Print the stable JSON form instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Leave the network: hand this node's data off to the others, then unmount and exit.
    Leave,
    /// Where a file's chunks are: each chunk's owners and the peers holding it.
    Where {
        /// Path inside the mount (relative to its root, or absolute under the mount point).
        path: String,
        /// Print JSON: {path, chunks: [{id, owners, holders}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a join token for a new node: `p2pfs init --join TOKEN` (or `p2pfs mount DIR
    /// --join TOKEN`) there needs nothing else. The token holds the network key: send it only
    /// to whom you would give the key.
    Invite {
        /// Refuse the token after this long (e.g. 30m, 24h, 7d; plain numbers are seconds).
        /// Checked by the joining node.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<u64>,
    },
    /// Volumes: your personal one (`@home` in the mount), ones you created or were given.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// The volumes you are a member of, with where they are in the mount and your role.
    List {
        /// Print JSON: [{name, dir, id, owner, role, writers, members, keys, files}].
        #[arg(long)]
        json: bool,
    },
    /// Create a volume owned by you; it appears as `@NAME` in the mount of your nodes.
    Create { name: String },
    /// Give another user access to a volume you own. USER is what `p2pfs user show` prints
    /// as "public key" on their machine.
    Share {
        name: String,
        #[arg(long = "with", value_name = "USER")]
        with: String,
        /// They may read but not write.
        #[arg(long)]
        read_only: bool,
    },
    /// Take a user's access away. They keep what they could already read; a new key encrypts
    /// everything written from now on, and their later writes are refused by every node.
    Unshare {
        name: String,
        #[arg(long = "with", value_name = "USER")]
        with: String,
    },
}

fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90, 30m, 24h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d")),
    };
    n.checked_mul(scale)
        .filter(|&secs| secs > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// The invite token of the node at `data_dir`: its network key (read from the data dir, as this
/// user can) and the addresses and peer id it reports.
fn invite(
    data_dir: &std::path::Path,
    status: &Status,
    expires: Option<u64>,
) -> Result<String, String> {
    let config = p2pfs::config::Config::load(data_dir).map_err(|e| e.to_string())?;
    let key = p2pfs::identity::NetworkKey::load(&config.network_key_path(data_dir))
        .map_err(|e| e.to_string())?;
    if status.listen_addrs.is_empty() {
        return Err("the node listens on no address yet; try again in a moment".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let invite = p2pfs::identity::Invite {
        network_key: key,
        bootstrap: status
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", status.peer_id))
            .collect(),
        inviter: status.peer_id.clone(),
        expires: expires.map(|e| now.saturating_add(e)),
    };
    Ok(invite.encode())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn print_status(s: &Status) {
    println!("p2pfs {} node {}", s.version, s.peer_id);
    println!("  mount:       {}", s.mount);
    println!(
        "  network:     {} (key fingerprint {})",
        s.network, s.network_fingerprint
    );
    if !s.listen_addrs.is_empty() {
        println!("  listening:   {}", s.listen_addrs.join(", "));
    }
    println!("  peers:       {}", s.peers.len());
    for p in &s.peers {
        println!(
            "    {} {} (seen {} ms ago) {}",
            p.peer_id,
            p.state,
            p.last_seen_ms,
            p.addrs.join(", ")
        );
    }
    let r = &s.replication;
    println!(
        "  replication: factor {}, {} chunks stored ({}), {} under-replicated, {} queued for repair",
        r.factor,
        r.chunks_stored,
        human_bytes(r.bytes_stored),
        r.under_replicated,
        r.repair_queue
    );
    let c = &s.cache;
    let lookups = c.hits + c.misses;
    let rate = if lookups == 0 {
        0.0
    } else {
        100.0 * c.hits as f64 / lookups as f64
    };
    println!(
        "  cache:       {} of {}, {} hits / {} misses ({rate:.0}% hits)",
        human_bytes(c.bytes),
        human_bytes(c.capacity),
        c.hits,
        c.misses
    );
    let g = &s.gc;
    println!(
        "  gc:          {} unreferenced chunks ({}), {} deleted, {} tombstones, {} expired (grace {} s)",
        g.unreferenced_chunks,
        if g.collecting {
            "collecting"
        } else {
            "paused: a member is not alive"
        },
        g.deleted_chunks,
        g.tombstones,
        g.expired_tombstones,
        g.grace_secs
    );
    println!("  files:       {}", s.files);
    if s.rejected_entries > 0 {
        println!(
            "  rejected:    {} namespace entries refused (bad signature or author)",
            s.rejected_entries
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(data_dir) = cli.data_dir.or_else(p2pfs::util::paths::default_data_dir) else {
        eprintln!("p2pfs-ctl: no data dir: pass --data-dir or set HOME");
        return ExitCode::from(EXIT_ERROR);
    };
    let request = match &cli.command {
        Command::Status { .. } | Command::Invite { .. } => Request::Status,
        Command::Leave => Request::Leave,
        Command::Where { path, .. } => Request::Where { path: path.clone() },
        Command::Volume { command } => match command {
            VolumeCommand::List { .. } => Request::VolumeList,
            VolumeCommand::Create { name } => Request::VolumeCreate { name: name.clone() },
            VolumeCommand::Share {
                name,
                with,
                read_only,
            } => Request::VolumeShare {
                name: name.clone(),
                with: with.clone(),
                read_only: *read_only,
            },
            VolumeCommand::Unshare { name, with } => Request::VolumeUnshare {
                name: name.clone(),
                with: with.clone(),
            },
        },
    };
    let reply = match control::call(&data_dir, &request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pfs-ctl: {e}");
            return ExitCode::from(match e {
                ControlError::NotRunning(_) => EXIT_NOT_RUNNING,
                _ => EXIT_IO,
            });
        }
    };
    match (cli.command, reply) {
        (Command::Status { json }, Reply::Status(status)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("serializes")
                );
            } else {
                print_status(&status);
            }
            ExitCode::SUCCESS
        }
        (Command::Where { json, .. }, Reply::Where { path, chunks }) => {
            if json {
                let out = serde_json::json!({ "path": path, "chunks": chunks });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializes")
                );
            } else {
                println!("{path}: {} chunks", chunks.len());
                for c in &chunks {
                    println!(
                        "  {}  owners {}  holders {}",
                        &c.id[..16],
                        c.owners.len(),
                        c.holders.len()
                    );
                    for o in &c.owners {
                        let mark = if c.holders.contains(o) {
                            "holds"
                        } else {
                            "MISSING"
                        };
                        println!("      owner {o} {mark}");
                    }
                    for h in c.holders.iter().filter(|h| !c.owners.contains(h)) {
                        println!("      extra copy on {h}");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        (
            Command::Volume {
                command: VolumeCommand::List { json },
            },
            Reply::Volumes { volumes },
        ) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&volumes).expect("serializes")
                );
            } else {
                println!(
                    "{:<20} {:<24} {:<7} {:>6} {:>8}  id",
                    "name", "in the mount", "role", "files", "members"
                );
                for v in &volumes {
                    let role = match v.role {
                        Some(Role::Owner) => "owner",
                        Some(Role::Writer) => "writer",
                        Some(Role::Reader) => "reader",
                        None => "-",
                    };
                    let members = if v.members == 0 {
                        "all".to_string()
                    } else {
                        v.members.to_string()
                    };
                    println!(
                        "{:<20} {:<24} {:<7} {:>6} {:>8}  {}",
                        v.name, v.dir, role, v.files, members, v.id
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Volume { .. }, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Invite { expires }, Reply::Status(status)) => {
            match invite(&data_dir, &status, expires) {
                Ok(token) => {
                    println!("{token}");
                    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        eprintln!(
                            "On the new machine: p2pfs mount DIR --join TOKEN (or p2pfs init --join TOKEN).\nThe token holds the network key: share it as you would the key."
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("p2pfs-ctl: cannot make an invite: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        (Command::Leave, Reply::Leaving) => {
            println!(
                "the node is leaving: it hands its data off to the others, then unmounts and exits"
            );
            ExitCode::SUCCESS
        }
        (_, Reply::Error { message }) => {
            eprintln!("p2pfs-ctl: the node refused: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        (_, other) => {
            eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
            ExitCode::from(EXIT_IO)
        }
    }
}
