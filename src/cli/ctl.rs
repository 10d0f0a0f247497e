//! The command line of `p2pfs-ctl` (src/bin/p2pfs-ctl.rs runs it): every flag, subcommand and
//! help text. Kept in the library so the packaging asset generator (packaging/gen_assets.rs)
//! builds man pages and shell completions from the same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The exit codes, as `--help` shows them (and README.md lists them).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the node answered with an error, or a local file could not be read or written
  2  bad usage; expel, admin: the name matches no certified node, or several
  3  no node is running for the data dir
  4  the control socket failed or spoke nonsense
  5  health: chunks have fewer than R copies, counting claims it could not check now (degraded: fewer live nodes hold chunks than R)
  6  leave: some chunks could not be handed off (their copies left with the node)";

#[derive(Parser)]
#[command(
    name = "p2pfs-ctl",
    version,
    about = "Inspect and control a running p2pfs node",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The node's data dir. Defaults to $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).
    #[arg(long, env = "P2PFS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// This node, its network connection, peers, replication health and cache.
    Status {
        /// Print the stable JSON form instead of the summary.
        #[arg(long)]
        json: bool,
        /// Show peers by peer id instead of by name.
        #[arg(long)]
        ids: bool,
    },
    /// Leave the network for good: hand this node's data off to the others, then unmount and
    /// exit (peers show it `left`). A plain stop (Ctrl-C, SIGTERM) only takes it offline.
    /// Shows progress on a terminal and the result (chunks handed off, chunks short); exits 6
    /// when some chunks could not be handed off.
    Leave,
    /// The peers this node knows, with their state and when they were last heard from.
    Peers {
        /// Print JSON: [{peer_id, name, addrs, state, last_seen_ms, capacity, free_bytes,
        /// version, placement_rule, connection}]; connection: direct, hole-punched or relayed
        /// (comma-separated when several), empty when not connected.
        #[arg(long)]
        json: bool,
        /// Show the peer id of each peer instead of its name.
        #[arg(long)]
        ids: bool,
    },
    /// List a directory of the mount (PATH relative to its root; `@NAME/...` for volumes).
    Ls {
        /// The directory (or file) to list; the mount's root by default.
        #[arg(default_value = "")]
        path: String,
        /// Print JSON: [{name, name_bytes, kind, size, mode, mtime, target}]. `name` is exact when
        /// the name is UTF-8; otherwise `name_bytes` holds its bytes in hex. The text form
        /// escapes control characters, backslashes and bytes that are not UTF-8 (\n, \x1b,
        /// \\, \xe9).
        #[arg(long)]
        json: bool,
    },
    /// Copy a local file into the network at PATH (replaced atomically when complete). When
    /// PATH is a directory (an existing one, the root, or any PATH ending in `/`), the file goes
    /// in it under its own name. The node checks PATH before a byte is sent.
    Put {
        /// The local file (with -r, a directory).
        local: PathBuf,
        /// Where it goes, relative to the mount's root (`@NAME/...` for volumes).
        path: String,
        /// Copy a whole directory tree: directories, files, symlinks and their modes. Into
        /// PATH/NAME when PATH is an existing directory, else PATH becomes the copy.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Copy the file at PATH out of the network to LOCAL (`-` for standard output). When LOCAL
    /// is a directory (`.`, `./`, `dir/` or any existing one) the file goes in it under its own
    /// name. PATH may hold any bytes, as `ls --json` gives them in `name_bytes`.
    Get {
        /// The file (with -r, a directory), relative to the mount's root.
        path: std::ffi::OsString,
        /// Where it goes: a file name, a directory, or `-` for standard output.
        local: PathBuf,
        /// Copy a whole directory tree: directories, files, symlinks and their modes. Into
        /// LOCAL/NAME when LOCAL is an existing directory, else LOCAL becomes the copy.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Remove a file, symlink or empty directory. Its earlier versions stay for the
    /// retention period (`p2pfs-ctl versions`, `restore`) unless `--purge`.
    Rm {
        /// What to remove, relative to the mount's root (`@NAME/...` for volumes).
        path: String,
        /// Remove a directory and everything in it.
        #[arg(short, long)]
        recursive: bool,
        /// Erase it and every earlier version, on every node: as `p2pfs-ctl purge` (implies
        /// -r for a directory).
        #[arg(long)]
        purge: bool,
    },
    /// Capacity and free space of the network; usable space counts the copies that can be
    /// made (fewer than R while fewer live nodes hold chunks).
    Df {
        /// Print JSON: {nodes, replicas, copies, holding_nodes, capacity_bytes, free_bytes,
        /// stored_here_bytes, usable_bytes, retained_here_bytes, kept_versions}.
        #[arg(long)]
        json: bool,
    },
    /// Files with chunks on fewer than R nodes, by asking every live peer. Exits 5 when
    /// some are, and when fewer live nodes hold chunks than R (degraded).
    Health {
        /// Print the stable JSON form instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Where a file's chunks are: each chunk's owners and the peers holding it.
    Where {
        /// Path inside the mount (relative to its root, or absolute under the mount point).
        path: String,
        /// Print JSON: {path, replicas, chunks: [{id, owners, holders, copies, unverified,
        /// owner_names, holder_names}]} (owners and holders by peer id, their names beside).
        #[arg(long)]
        json: bool,
        /// Show owners and holders by peer id instead of by name.
        #[arg(long)]
        ids: bool,
    },
    /// Print a join token for a new node: `p2pfs init --join TOKEN` (or `p2pfs mount DIR
    /// --join TOKEN`) there needs nothing else. In a certified network (the default) only an
    /// admin's node makes one, and it admits one node, once (`p2pfs-invite-3-`); in a key-only
    /// network (made with --network-key) it is the network key itself (`p2pfs-invite-2-`). The
    /// token holds the network key: send it only to whom you would give the key.
    Invite {
        /// Refuse the token after this long (e.g. 30m, 24h, 7d; plain numbers are seconds), or
        /// `never`. Checked by the joining node, and in a certified network by the inviting
        /// node; the token's MAC under the network key keeps the expiry from being edited.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_expiry)]
        expires: Expiry,
        /// What the new node may be (certified networks): `storage` holds chunks, `reader`
        /// never does. Default: storage.
        #[arg(long, value_name = "ROLE", value_parser = parse_role)]
        role: Option<crate::admission::NodeRole>,
    },
    /// The invites this node made (certified networks): ID ROLE MADE EXPIRES STATE, the state
    /// one of `open`, `used by NAME`, `expired`, `revoked`.
    Invites {
        /// Print JSON: [{id, role, made_at, expires, state, used_by_name, used_by_peer}]
        /// (times in seconds since the Unix epoch; expires null: never).
        #[arg(long)]
        json: bool,
        /// Revoke the unused invite with this id (or id prefix, at least 4 hex digits).
        #[arg(long, value_name = "ID")]
        revoke: Option<String>,
    },
    /// Every certified node of the network: NAME USER ROLE ADMITTED-BY SINCE STATE, the state
    /// one of alive, suspect, dead, leaving, left, expelled, not seen. Exits 1 in a key-only
    /// network.
    Members {
        /// Print JSON: [{peer_id, name, user, role, admin, admitted_by, admitted_by_name,
        /// since, state}].
        #[arg(long)]
        json: bool,
        /// Show nodes by peer id instead of by name.
        #[arg(long)]
        ids: bool,
    },
    /// Expel a node (admins only): its certificate is revoked, its connections closed, it
    /// cannot reconnect, and the network key is rotated. It keeps what it already read.
    /// Exits 2 when NODE names no certified node, or several.
    Expel {
        /// The node's name (as `members` shows it) or peer id.
        #[arg(value_name = "NAME|PEER_ID")]
        node: String,
    },
    /// Make a user an admin, or no longer one (the founder only). An admin's nodes may invite
    /// and expel.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Upgrade this key-only network to a certified one: this node's user becomes the founder
    /// and certifies the live members it sees (listed first; asks to confirm on a terminal).
    /// Members away now get their certificate at their next connection to a certified node.
    Certify {
        /// Do not ask: certify the members listed (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Volumes: your personal one (`@home` in the mount), ones you created or were given.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Erase a file or directory tree (live, or deleted and still within retention) and every
    /// earlier version of it from every node, at once, without waiting for retention or the
    /// GC grace period. Nodes offline now erase it when they are back. Cannot be undone.
    Purge {
        /// What to erase, relative to the mount's root (`@NAME/...` for volumes).
        path: String,
    },
    /// How long each volume keeps earlier versions of its files (after an overwrite or a
    /// delete). Without options: show every volume's policy. With VOLUME and an option: set
    /// the policy of a volume you own (in its record: every node honours it). The network
    /// volume follows `[retention]` in each node's config.toml.
    Retention {
        /// A volume you own (its name, as `volume list` shows it).
        volume: Option<String>,
        /// Keep earlier versions this many days (fractions allowed; 0: keep none).
        #[arg(long)]
        days: Option<f64>,
        /// Keep at most this many earlier versions per file (0: no cap).
        #[arg(long)]
        max_versions: Option<u32>,
        /// Drop the volume's own policy: each node's `[retention]` config applies again.
        #[arg(long, conflicts_with_all = ["days", "max_versions"])]
        use_config: bool,
        /// Print JSON: [{name, dir, keep_secs, max_versions, source}].
        #[arg(long)]
        json: bool,
    },
    /// Every kept version of a file or directory, also a deleted one (or one inside a deleted
    /// directory): number (1 = oldest), time (UTC), node, author, size; the current one and
    /// the deletion marked. How long versions are kept: `[retention]` (7 days by default).
    Versions {
        /// Path inside the mount (relative to its root, or absolute under the mount point).
        path: String,
        /// Print JSON: {path, id, versions: [{number, time, hlc, node, author, size, kind,
        /// name, current, replaced_at}], deleted: {time, hlc, node, author}}.
        #[arg(long)]
        json: bool,
    },
    /// Bring back an earlier version as a new version (the current one becomes a version
    /// too: nothing is lost). A directory comes back with its contents as they were; a
    /// deleted directory by default as it was just before its deletion (`rm -rf`). A deleted
    /// file's deleted directories come back with it.
    Restore {
        /// Path inside the mount, now or as it was (a deleted file or directory).
        path: String,
        /// The version number `versions` lists. Default: the last before the deletion; for a
        /// live file, the one before the current.
        #[arg(long, value_name = "N", conflicts_with = "at")]
        version: Option<u32>,
        /// The state at this time: `2026-12-01T10:00[:05][Z]` (UTC), or an age: 10m, 2h, 3d.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Restore as new files at DEST (an existing directory to restore into, or the new
        /// path) instead of in place; needed when the name is another file's now.
        #[arg(long, value_name = "DEST")]
        to: Option<String>,
    },
    /// Print the path of a read-only view of a volume as it was at a time (default: now),
    /// within the volume's retention: MOUNT/.snapshots/TIME (the network volume) or
    /// MOUNT/@VOLUME/.snapshots/TIME. With --name, records the time under that name (shown in
    /// .snapshots and by `p2pfs-ctl snapshots`).
    Snapshot {
        /// The volume (`@team`, `team`, `home`); the network volume when left out.
        volume: Option<String>,
        /// Record the view under this name.
        #[arg(long)]
        name: Option<String>,
        /// The time, in UTC: 2026-12-01T10:00 or 2026-12-01T10:00:05 (Z optional).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// The named snapshots: name, volume, time (UTC) and path.
    Snapshots {
        /// Print JSON: [{name, volume_dir, time, path, visible}]; visible: the time is within
        /// the volume's retention, so the view shows.
        #[arg(long)]
        json: bool,
    },
    /// Keep a file or directory (recursively, files added later included) whole on this node,
    /// to read and write it while the network is out of reach. Pins are this node's own.
    Pin {
        /// Relative to the mount's root (`@NAME/...` for volumes), or absolute under the mount.
        path: String,
    },
    /// Stop keeping a pinned path on this node (its chunks become ordinary copies again).
    Unpin {
        /// A path pinned before, as `pins` lists it.
        path: String,
    },
    /// The web dashboard's address and a link that logs a browser in (it carries this node's
    /// login token: whoever opens it acts as this node's user; do not share it).
    Web {
        /// Print JSON: {url, login_url}.
        #[arg(long)]
        json: bool,
    },
    /// This node's pins: PATH, size and state (`3.2 GiB, complete` or `1.1 of 3.2 GiB,
    /// syncing`).
    Pins {
        /// Print JSON: [{path, files, bytes, held_bytes, chunks, held_chunks, checked, error}].
        #[arg(long)]
        json: bool,
    },
    /// Show the bandwidth limits (bytes per second; unlimited when 0) and, with any flag, change
    /// them until the node restarts (config.toml's `[bandwidth]` section sets them for good).
    /// RATE: bytes per second, e.g. 500000, 500KB, 10MiB; 0 = unlimited.
    Limit {
        /// Most bytes per second sent to all peers together.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        upload: Option<u64>,
        /// Most bytes per second received from all peers together.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        download: Option<u64>,
        /// Most bytes per second sent to any one peer.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        peer_upload: Option<u64>,
        /// Most bytes per second received from any one peer.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        peer_download: Option<u64>,
        /// Go back to the limits of config.toml.
        #[arg(long, conflicts_with_all = ["upload", "download", "peer_upload", "peer_download"])]
        use_config: bool,
        /// Print JSON: {limits: {upload, download, peer_upload, peer_download}, source} (source:
        /// config or runtime).
        #[arg(long)]
        json: bool,
    },
    /// Pause this node's sync without unmounting: it tells its peers (they show it `paused`),
    /// closes its connections and makes none; the mount keeps working on what is here, and
    /// writes wait here until `p2pfs-ctl resume`.
    Pause,
    /// End a pause: reconnect to the peers and sync.
    Resume,
    /// Conflicts at or under PATH (the whole mount by default): conflict copies (a version
    /// that lost to a concurrent one, kept as `name (conflict NODE DATE TIME).ext`) and names
    /// two entries claim (the loser shown under such a name). PATH  OF  NODE  TIME  KIND.
    Conflicts {
        /// Where to look, relative to the mount's root; the whole mount by default.
        #[arg(default_value = "")]
        path: String,
        /// Print JSON: [{path, of, kind, node, time, millis}] (kind: copy or claim; of: null
        /// when that file is gone).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Make the user of a node (or a user id) an admin.
    Add {
        /// The node whose user becomes an admin (its name or peer id), or the user id.
        #[arg(value_name = "NAME|PEER_ID|USER_HEX")]
        node: String,
    },
    /// Withdraw a user's admin rights; the nodes it admitted stay members.
    Remove {
        /// The node whose user is an admin no longer (its name or peer id), or the user id.
        #[arg(value_name = "NAME|PEER_ID|USER_HEX")]
        node: String,
    },
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// The volumes you are a member of, with where they are in the mount and your role.
    List {
        /// Print JSON: [{name, dir, id, owner, role, writers, members, keys, files}].
        #[arg(long)]
        json: bool,
    },
    /// Create a volume owned by you; it appears as `@NAME` in the mount of your nodes.
    Create {
        /// The volume's name: `@NAME` in the mount.
        name: String,
    },
    /// Give another user access to a volume you own. USER is what `p2pfs user show` prints
    /// as "public key" on their machine.
    Share {
        /// A volume you own.
        name: String,
        /// The user to share with: the "public key" `p2pfs user show` prints on their machine.
        #[arg(long = "with", value_name = "USER")]
        with: String,
        /// They may read but not write.
        #[arg(long)]
        read_only: bool,
    },
    /// Take a user's access away. They keep what they could already read; a new key encrypts
    /// everything written from now on, and their later writes are refused by every node.
    Unshare {
        /// A volume you own.
        name: String,
        /// The user to take access from, as given to `volume share`.
        #[arg(long = "with", value_name = "USER")]
        with: String,
    },
}

/// Parses `--role`: `storage` or `reader`.
pub fn parse_role(s: &str) -> Result<crate::admission::NodeRole, String> {
    s.trim().parse()
}

/// How long an invite is valid: seconds from now, or never (`--expires never`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry(pub Option<u64>);

/// Parses `--expires`: `never`, or a duration as [`parse_duration`] reads it.
pub fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if s.trim() == "never" {
        return Ok(Expiry(None));
    }
    parse_duration(s).map(|secs| Expiry(Some(secs)))
}

/// Parses a duration: a number of seconds, or a number with a unit s, m, h or d.
pub fn parse_duration(s: &str) -> Result<u64, String> {
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

/// A name (from a peer: any bytes but `/` and NUL) made safe for a terminal: control
/// characters as `\n`, `\t`, `\r` or `\xHH` (`\u{HH}` for C1 controls), a backslash as `\\`,
/// bytes that are not UTF-8 as `\xHH`. Unambiguous: the escaped form maps back to one name.
pub fn escape_name(name: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A `--upload`-style rate: bytes per second, with an optional unit (`net::bandwidth`).
fn parse_rate(text: &str) -> Result<u64, String> {
    crate::net::bandwidth::parse_rate(text).map_err(|e| e.to_string())
}
