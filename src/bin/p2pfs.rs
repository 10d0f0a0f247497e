//! `p2pfs`: create a node, or run it with its mount.

use anyhow::{Context, Result};
use clap::Parser;
use p2pfs::identity::{USER_KEY_FILE, UserIdentity};
use p2pfs::node::{self, Node};

// The command line (flags, subcommands, help texts) is defined in src/cli/p2pfs.rs.
use p2pfs::cli::p2pfs::{Cli, Command, ConfigCommand, UserCommand};

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
    println!("  name:         {}", r.name);
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
    match &r.membership {
        node::InitMembership::Founded { user } => println!(
            "founded a certified network: you (user {user}) are its founder and admin\n  \
             (add a device: p2pfs-ctl invite; remove one: p2pfs-ctl expel NAME)"
        ),
        node::InitMembership::Joining { founder, role } => println!(
            "  membership:   joining the certified network of founder {founder} as a {role} \
             node: admitted at the first connection to the inviting node"
        ),
        node::InitMembership::KeyOnly => {
            println!("  membership:   key only (every holder of the network key is a member)")
        }
    }
}

/// The invite token of `--join TOKEN`, `--join -` (standard input, one line) or
/// `--join-file FILE`, decoded; `None` without either.
fn read_invite(
    join: Option<String>,
    join_file: Option<&std::path::Path>,
) -> Result<Option<p2pfs::identity::Invite>> {
    let token = zeroize::Zeroizing::new(match (join, join_file) {
        (None, None) => return Ok(None),
        (_, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the invite token from {}", file.display()))?,
        (Some(t), None) if t == "-" => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("invite token: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the invite token from standard input")?;
            line
        }
        (Some(t), None) => {
            eprintln!(
                "warning: a token given to --join is readable by every local user in the process \
                 list while this runs; use --join-file FILE or --join - (standard input)"
            );
            t
        }
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Some(p2pfs::identity::Invite::decode(&token, now)?))
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
            join_file,
            name,
        } => {
            let invite = read_invite(join, join_file.as_deref())?;
            let report = node::init(
                &data_dir,
                network_key.as_deref(),
                user_key.as_deref(),
                invite.as_ref(),
                name.as_deref(),
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
                Some(d) if node::is_initialized(d) => p2pfs::node::config::Config::load(d)?,
                _ => {
                    eprintln!("(no node in the data dir: showing the defaults)");
                    p2pfs::node::config::Config::default()
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
            join_file,
            name,
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
                let invite = read_invite(join, join_file.as_deref())?;
                let report = node::init(&data_dir, None, None, invite.as_ref(), name.as_deref())?;
                print_init(&data_dir, &report);
            } else if join.is_some() || join_file.is_some() {
                anyhow::bail!(
                    "{} already holds a node; --join is only for a new one",
                    data_dir.display()
                );
            }
            let mut node = Node::load(&data_dir)?;
            net.apply(&mut node.config);
            if let Some(name) = name {
                node.config.node.name = name;
            }
            node.run(&mountpoint)?;
        }
    }
    Ok(())
}
