//! `p2pfs`: create a node, or run it with its mount.

use anyhow::{Context, Result};
use clap::Parser;
use p2pfs::identity::{USER_KEY_FILE, UserIdentity};
use p2pfs::node::{self, Node};

// The command line (flags, subcommands, help texts) is defined in src/cli/p2pfs.rs.
use p2pfs::cli::p2pfs::{Cli, Command, ConfigCommand, ReplaceFlags, UserCommand};

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

/// `--data-dir`, else $P2PFS_DATA_DIR (clap reads both), else the XDG default.
fn data_dir_or_default(data_dir: Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    match data_dir {
        Some(d) => Ok(d),
        None => p2pfs::util::paths::default_data_dir()
            .context("no default data dir: set HOME or XDG_DATA_HOME, or pass --data-dir"),
    }
}

/// Creates the node for `init` or a first `mount`; with --force-join (and an invite), first
/// replaces the node already there, keeping its user identity. Returns whether it made one.
fn create_node(
    data_dir: &std::path::Path,
    network_key: Option<&std::path::Path>,
    user_key: Option<&std::path::Path>,
    invite: Option<&p2pfs::identity::Invite>,
    name: Option<&str>,
    replace: &ReplaceFlags,
) -> Result<bool> {
    if !node::is_initialized(data_dir) {
        if replace.force_join {
            eprintln!(
                "(no node in {}: --force-join has nothing to replace)",
                data_dir.display()
            );
        }
        let report = node::init(data_dir, network_key, user_key, invite, name)?;
        print_init(data_dir, &report);
        return Ok(true);
    }
    if invite.is_none() {
        return Ok(false);
    }
    if !replace.force_join {
        anyhow::bail!(
            "{} already holds a node; --join is only for a new one. To replace it with one that \
             joins this invite's network: add --force-join (refused if it holds data or has \
             other members, unless --yes), or remove it first with p2pfs reset",
            data_dir.display()
        );
    }
    let footprint = node::setup::footprint(data_dir)?;
    if !footprint.is_pristine() && !replace.yes {
        anyhow::bail!(
            "{} holds a node that is in use ({}): replacing it loses that. Start it as it is \
             (without --join), or pass --yes to replace it anyway",
            data_dir.display(),
            footprint.describe()
        );
    }
    // The user identity is kept: moved aside, given to the new node, then removed.
    let kept = data_dir.with_file_name(format!(".p2pfs-user-key-{}", std::process::id()));
    std::fs::rename(data_dir.join(USER_KEY_FILE), &kept)
        .with_context(|| format!("cannot set the user identity aside at {}", kept.display()))?;
    let made = node::setup::remove_node(data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| {
            node::init(
                data_dir,
                network_key,
                Some(user_key.unwrap_or(&kept)),
                invite,
                name,
            )
            .map_err(anyhow::Error::from)
        });
    if made.is_err() {
        eprintln!(
            "the earlier node's user identity is kept at {} (p2pfs init --user-key FILE uses it)",
            kept.display()
        );
    } else {
        let _ = std::fs::remove_file(&kept);
    }
    let report = made?;
    eprintln!(
        "replaced the node {} (user {} kept)",
        footprint.peer_id, footprint.user_id
    );
    print_init(data_dir, &report);
    Ok(true)
}

/// After a failed first start: removes the node made for it, unless it already holds data or
/// met other nodes, so the next try (with --join, say) starts clean.
fn undo_first_start(data_dir: &std::path::Path, existed: bool) {
    match node::setup::footprint(data_dir) {
        Ok(f) if f.is_pristine() => match node::setup::remove_node(data_dir) {
            Ok(left) => {
                if existed && left.is_empty() {
                    let _ = std::fs::create_dir(data_dir);
                }
                eprintln!(
                    "p2pfs: the first start failed: the node made for it was removed ({} holds no node)",
                    data_dir.display()
                );
            }
            Err(e) => eprintln!("p2pfs: could not remove the node made for this start: {e}"),
        },
        Ok(f) => eprintln!(
            "p2pfs: the first start failed after the node joined ({}): it is kept; start it again with p2pfs mount",
            f.describe()
        ),
        Err(e) => eprintln!("p2pfs: the first start failed; the node is kept: {e}"),
    }
}

/// `p2pfs reset`: shows what goes, asks (or --yes), removes the node.
fn reset(data_dir: &std::path::Path, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !node::is_initialized(data_dir) {
        anyhow::bail!("{} holds no node", data_dir.display());
    }
    let f = node::setup::footprint(data_dir)?;
    println!("This removes the node in {}:", data_dir.display());
    println!("  peer id:  {}", f.peer_id);
    println!(
        "  user id:  {} (its secret goes too: keep it with p2pfs user export FILE first if you use it elsewhere)",
        f.user_id
    );
    println!("  holds:    {}", f.describe());
    if !f.is_pristine() {
        println!(
            "  warning:  files whose only copies are on this node are lost; other nodes keep theirs"
        );
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("not a terminal: pass --yes to remove the node");
        }
        print!("remove this node? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("nothing changed");
        }
    }
    let left = node::setup::remove_node(data_dir)?;
    println!("removed the node in {}", data_dir.display());
    for path in left {
        println!("  kept {} (not made by p2pfs)", path.display());
    }
    Ok(())
}

/// `p2pfs man`: prints one page, or installs them all.
fn man(page: &str, install: Option<Option<std::path::PathBuf>>) -> Result<()> {
    let pages = p2pfs::cli::man::pages()?;
    let Some(dir) = install else {
        let wanted = format!("{}.1", page.trim_end_matches(".1"));
        let Some((_, text)) = pages.iter().find(|(n, _)| *n == wanted) else {
            let names: Vec<&str> = pages
                .iter()
                .map(|(n, _)| n.trim_end_matches(".1"))
                .collect();
            anyhow::bail!("no page {page}; the pages: {}", names.join(", "));
        };
        std::io::Write::write_all(&mut std::io::stdout(), text)?;
        return Ok(());
    };
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .and_then(|bin| bin.parent())
            .map(|prefix| prefix.join("share/man/man1"))
            .context("cannot tell where this program is installed: give the directory")?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("installed {} man pages in {}", pages.len(), dir.display());
    Ok(())
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
            replace,
        } => {
            let data_dir = data_dir_or_default(data_dir)?;
            let invite = read_invite(join, join_file.as_deref())?;
            if node::is_initialized(&data_dir) && invite.is_none() {
                return Err(node::NodeError::AlreadyInitialized(data_dir).into());
            }
            create_node(
                &data_dir,
                network_key.as_deref(),
                user_key.as_deref(),
                invite.as_ref(),
                name.as_deref(),
                &replace,
            )?;
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
                let data_dir = data_dir_or_default(data_dir)?;
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
                let data_dir = data_dir_or_default(data_dir)?;
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
            mountpoint,
            net,
        } => {
            let data_dir = data_dir_or_default(data_dir)?;
            node::setup::check_mountpoint(&mount, mountpoint.allow_non_empty)?;
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
            mountpoint_flags,
            replace,
            net,
        } => {
            let data_dir = data_dir_or_default(data_dir)?;
            // Before anything is created: a refused mountpoint leaves no node behind.
            node::setup::check_mountpoint(&mountpoint, mountpoint_flags.allow_non_empty)?;
            let existed = data_dir.exists();
            let invite = read_invite(join, join_file.as_deref())?;
            let fresh = create_node(
                &data_dir,
                None,
                None,
                invite.as_ref(),
                name.as_deref(),
                &replace,
            )?;
            let started = (|| -> Result<()> {
                let mut node = Node::load(&data_dir)?;
                net.apply(&mut node.config);
                if let Some(name) = name {
                    node.config.node.name = name;
                }
                node.run(&mountpoint)?;
                Ok(())
            })();
            if started.is_err() && fresh {
                undo_first_start(&data_dir, existed);
            }
            started?;
        }
        Command::Reset { data_dir, yes } => reset(&data_dir_or_default(data_dir)?, yes)?,
        Command::Man { page, install } => man(&page, install)?,
    }
    Ok(())
}
