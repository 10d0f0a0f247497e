//! The control protocol's wire types: one JSON [`Request`] per line from `p2pfs-ctl`, one JSON
//! [`Reply`] per line from the node. The `status` reply ([`Status`]) is a documented, stable
//! contract (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Leave the network gracefully: hand off data, then unmount and exit.
    Leave,
    /// Where the chunks of a file are: owners by placement, holders by asking.
    Where {
        path: String,
    },
    /// Volumes this node's user is a member of.
    VolumeList,
    VolumeCreate {
        name: String,
    },
    /// Share a volume of this user's with another user (`USER_ID:RECIPIENT`).
    VolumeShare {
        name: String,
        with: String,
        read_only: bool,
    },
    /// Remove a user from a volume of this user's; a new key protects later writes.
    VolumeUnshare {
        name: String,
        with: String,
    },
    /// The entries of a directory (or the file) at `path`, relative to the mount's root.
    Ls {
        path: String,
    },
    /// Store a file at `path`: `size` raw bytes follow the request line. Written to a
    /// temporary name and renamed over `path` once complete, so an interrupted upload leaves
    /// the old file (or none).
    Put {
        path: String,
        size: u64,
        mode: u32,
        /// The file's own name, used when `path` names a directory (ends in `/`, is the root,
        /// or is an existing directory): the file goes in it under this name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Wait: the node answers `Ready` (or `Error`) once the destination is checked and the
        /// temporary file made, and only then are the bytes sent. Without it (older clients)
        /// the bytes follow the request line at once.
        #[serde(default)]
        ready: bool,
    },
    /// Create the directory at `path` (its parent must exist); an existing directory there is
    /// not an error (`put -r` into a tree that is partly there).
    Mkdir {
        path: String,
        mode: u32,
    },
    /// Create a symbolic link at `path` pointing to `target`.
    Symlink {
        path: String,
        target: String,
    },
    /// Read the file at `path`: the reply line `Data {size}` is followed by `size` raw bytes.
    Get {
        path: String,
        /// The path's bytes in hex when it is not UTF-8 (then `path` is only for messages).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path_bytes: Option<String>,
    },
    /// Remove a file, symlink or empty directory (any directory when `recursive`).
    Rm {
        path: String,
        recursive: bool,
    },
    /// Capacity and use of the network.
    Df,
    /// Files with chunks on fewer than R live nodes, by asking every live peer.
    Health,
    /// Make a single-use invite to this certified network (admins only): a v3 token.
    Invite {
        /// `storage` or `reader`.
        role: String,
        /// Seconds from now until it expires; `None`: never.
        expires_in: Option<u64>,
    },
    /// The invites this node made.
    Invites,
    /// Revoke the unused invites whose id starts with `id` (hex).
    InviteRevoke {
        id: String,
    },
    /// Every certified node of the network, with its state in this node's view.
    Members,
    /// Expel a node (admins only): revoke its certificate and rotate the network key. `node`:
    /// its name or peer id.
    Expel {
        node: String,
    },
    /// Grant or withdraw admin rights (the founder only). `node`: a node's name or peer id
    /// (its certificate's user), or a user id.
    Admin {
        node: String,
        admin: bool,
    },
    /// Upgrade a key-only network (`p2pfs-ctl certify`): without `peers`, the plan (the live
    /// members and which can be certified); with them, this node founds the network and
    /// certifies exactly those that are still live and announce a user.
    Certify {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peers: Option<Vec<String>>,
    },
    /// Erase the file or tree at `path` (live, or deleted within retention) and every earlier
    /// version of it, on every node.
    Purge {
        path: String,
    },
    /// Show every volume's retention policy; with `set`, change the policy of `volume` (one of
    /// this user's).
    Retention {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set: Option<RetentionChange>,
    },
    /// Every kept version of the file or directory at `path`, deleted or not.
    Versions {
        path: String,
    },
    /// Restore `path` as new versions: version `version` (1 = oldest), or the state at `at`
    /// (a time as `fs::history::parse_time` reads it), or by default the last before its
    /// deletion (the one before the current for a live file); in place, or at `to`.
    Restore {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// The read-only view of a volume (`None`: the network volume) at a time (`None`: now),
    /// recorded under `name` when given.
    Snapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        volume: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// UTC, `2026-12-01T10:00[:05][Z]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    /// The named snapshots.
    Snapshots,
    /// Keep every chunk of the file or tree at `path` on this node (offline use).
    Pin {
        path: String,
    },
    Unpin {
        path: String,
    },
    /// This node's pins and how complete each is.
    Pins,
    /// Where the web dashboard is, and its login link.
    Web,
    /// The bandwidth limits in force (`Reply::Limits`); with `set`, new ones until restart;
    /// with `use_config`, config.toml's again.
    Limit {
        #[serde(default)]
        set: Option<crate::net::bandwidth::Limits>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        use_config: bool,
    },
    /// Stop syncing without unmounting: announce `paused`, close every peer connection.
    Pause,
    /// Reconnect and sync again after a pause.
    Resume,
    /// Conflict copies and names claimed twice at or under `path` (the whole mount: `""`).
    Conflicts {
        path: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    /// The node starts leaving; `LeaveProgress` lines follow while it hands its data off, then
    /// `Left` with the result, sent before it exits.
    Leaving,
    LeaveProgress {
        /// Copies still to push in the handoff (0 while it asks who holds what).
        copies_to_push: u64,
    },
    Left(LeaveReport),
    Where {
        path: String,
        /// R: the copies every chunk should have.
        #[serde(default)]
        replicas: u32,
        chunks: Vec<ChunkLocation>,
    },
    Volumes {
        volumes: Vec<crate::fs::VolumeInfo>,
    },
    /// A volume command took effect.
    Done {
        message: String,
    },
    Listing {
        entries: Vec<ListEntry>,
    },
    /// `size` raw bytes follow this reply line.
    Data {
        size: u64,
    },
    /// The destination of a `put` is checked and ready: send the bytes. `path` is where the
    /// file goes (relative to the mount's root).
    Ready {
        path: String,
    },
    Df(DfStatus),
    Health(HealthStatus),
    /// A certified invite token.
    Invite {
        token: String,
        /// Its id as `invites` lists it.
        id: String,
    },
    Invites {
        invites: Vec<InviteInfo>,
    },
    Members {
        members: Vec<MemberInfo>,
    },
    /// The node named in an `expel` or `admin` request is unknown, or several nodes match it:
    /// the message lists the candidates.
    NoSuchNode {
        message: String,
    },
    Certify(CertifyReply),
    Error {
        message: String,
    },
    Retention {
        volumes: Vec<crate::fs::RetentionInfo>,
    },
    Versions(Box<crate::fs::history::VersionList>),
    /// Where a snapshot view is (an absolute path under the mount point).
    Snapshot {
        path: String,
    },
    Snapshots {
        snapshots: Vec<crate::fs::SnapshotInfo>,
    },
    Pins {
        pins: Vec<crate::node::pins::PinState>,
    },
    /// The web dashboard's address, and a link that logs a browser in.
    Web {
        url: String,
        login_url: String,
        /// Something to know about the address (its default was taken).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The bandwidth limits in force, in bytes per second (0 = unlimited); `source`:
    /// `config` (config.toml's) or `runtime` (set by `p2pfs-ctl limit` since start).
    Limits {
        limits: crate::net::bandwidth::Limits,
        source: String,
    },
    Conflicts {
        conflicts: Vec<ConflictEntry>,
    },
}

/// One conflict, as `p2pfs-ctl conflicts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// Where it shows, relative to the mount's root.
    pub path: String,
    /// The file it is a copy of, or the path whose name it claims; `None` when that is gone.
    pub of: Option<String>,
    /// `copy` (a conflict copy: the version that lost, kept as its own file) or `claim` (an
    /// entry shown under a conflict name because another one claims its name).
    pub kind: String,
    /// The node that wrote the version shown (its name, else its tag in hex).
    pub node: String,
    /// When that version was written, UTC (RFC 3339), and as ms since the epoch.
    pub time: String,
    pub millis: u64,
}

/// One invite this node made, as `p2pfs-ctl invites` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    pub id: String,
    pub role: String,
    /// Seconds since the Unix epoch.
    pub made_at: u64,
    /// Seconds since the Unix epoch; `None`: never.
    pub expires: Option<u64>,
    /// `open`, `used by NAME`, `expired` or `revoked`.
    pub state: String,
    /// The node that redeemed it: the name it gave, its peer id.
    pub used_by_name: Option<String>,
    pub used_by_peer: Option<String>,
}

/// One certified node of the network, as `p2pfs-ctl members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub peer_id: String,
    /// The name its certificate carries, as a label (with a short peer id when several
    /// certified nodes carry it).
    pub name: String,
    /// Its user id (hex).
    pub user: String,
    /// `storage` or `reader`.
    pub role: String,
    /// Its user is an admin (the founder, or granted by the founder).
    pub admin: bool,
    /// The user who signed its certificate, and the label of a node of that user.
    pub admitted_by: String,
    pub admitted_by_name: String,
    /// When its certificate was issued (seconds since the Unix epoch).
    pub since: u64,
    /// `alive`, `suspect`, `dead`, `leaving`, `left` (this node's view), `expelled`, or
    /// `not seen` (certified, never heard from by this node).
    pub state: String,
}

/// This node's part in admission (`status`'s `admission`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionStatus {
    /// `certified`, `joining` or `key-only`.
    pub mode: String,
    /// The founder's user id (hex); `None` in a key-only network.
    pub founder: Option<String>,
    /// This node's user is an admin of the network.
    pub admin: bool,
    /// This node's role by its certificate (`storage`, `reader`); `None` without one.
    pub role: Option<String>,
    /// The last time another node refused this one in the handshake.
    pub last_refusal: Option<RefusalStatus>,
    /// Handshakes this node refused, and ones in which it was refused, since start.
    pub refused_in: u64,
    pub refused_out: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalStatus {
    pub peer: String,
    pub reason: String,
    pub secs_ago: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub peer_id: String,
    /// This node's name (`[node] name`, else the host name). Not unique: shown with a short
    /// peer id when another node claims it too.
    #[serde(default)]
    pub name: String,
    /// Announcements whose name was refused (too long, control characters), since start; the
    /// rest of each was applied.
    #[serde(default)]
    pub refused_names: u64,
    pub network_fingerprint: String,
    /// The placement rule this node computes owners by (`placement::RULE`). Peers on another
    /// (`PeerStatus::placement_rule`) disagree on owners: every node should run one version.
    #[serde(default)]
    pub placement_rule: u8,
    pub listen_addrs: Vec<String>,
    /// `connected` when at least one peer is connected, else `isolated`.
    pub network: String,
    pub peers: Vec<PeerStatus>,
    pub mount: String,
    pub replication: ReplicationStatus,
    pub cache: CacheStatus,
    pub gc: GcStatus,
    /// Versions kept after overwrites and deletes, and what they cost this node.
    #[serde(default)]
    pub retention: RetentionStatus,
    /// Files, directories and symlinks in every mounted volume (their roots excluded).
    pub files: u64,
    pub rejected_entries: u64,
    /// Entries of volumes whose record has not arrived, held unverified (bounded per peer and
    /// in all), and how many were dropped over the bounds.
    #[serde(default)]
    pub held_entries: crate::fs::HeldStatus,
    // ---- Hostile peers (`net::guard`): offences by kind, disconnections, blocks. ----
    #[serde(default)]
    pub hostile: crate::net::guard::HostileStatus,
    // ---- end hostile peers ----
    /// Who may connect: key-only, or certified (founder, this node's role, refusals).
    #[serde(default)]
    pub admission: AdmissionStatus,
    /// Whether other members can dial this node (AutoNAT), by which addresses, and whether it
    /// relays for them.
    #[serde(default)]
    pub reachability: ReachabilityStatus,
    /// Whether the node is paused (`p2pfs-ctl pause`): no peer connections, no sync.
    #[serde(default)]
    pub paused: bool,
    /// The bandwidth limits in force, bytes per second; 0 = unlimited.
    #[serde(default)]
    pub limits: crate::net::bandwidth::Limits,
    /// Passes of the background workers completed since start.
    #[serde(default)]
    pub passes: PassesStatus,
}

/// This node's reachability from outside its LAN (`net::reach`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachabilityStatus {
    /// `public`: a member dialed one of its addresses back; `private`: members tried and could
    /// not (behind a NAT or firewall; it is reached through relays); `unknown`: not tested yet.
    pub state: String,
    /// Public: the addresses confirmed reachable. Private: its relayed (`/p2p-circuit`)
    /// addresses.
    pub addrs: Vec<String>,
    /// Whether this node relays for other members now.
    pub relaying: bool,
}

/// Completed passes since start, by worker: tests (and operators) wait for "two more passes"
/// instead of guessing how long one takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassesStatus {
    /// Repair passes over every chunk held here.
    pub repair: u64,
    /// Garbage collection passes.
    pub gc: u64,
    /// Audit rounds (an empty store's included).
    pub audit: u64,
    /// Anti-entropy sessions this node started that completed (with any peer).
    pub sync: u64,
}

/// What `certify` plans or did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CertifyReply {
    /// Whether the network is now certified (false: this is the plan).
    pub done: bool,
    /// The founder's user id (this node's user).
    pub founder: String,
    /// Members certified (or to certify), this node first once done.
    pub members: Vec<CertifyMember>,
    /// Live members that announce no user (older versions): they cannot be certified.
    pub uncertifiable: Vec<CertifyMember>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CertifyMember {
    pub peer_id: String,
    pub name: String,
    /// Hex user id; empty when the member announces none.
    pub user: String,
    /// `storage`, or `reader` for a member offering no capacity.
    pub role: String,
}

/// One entry of `ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListEntry {
    /// The name, exact when it is UTF-8; otherwise with U+FFFD for the bytes that are not, and
    /// the exact bytes in `name_bytes`. Names come from peers: may hold control characters.
    pub name: String,
    /// The name's bytes in lowercase hex, only when the name is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// What a symlink points to (absent for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Capacity and use of the network, from every live node's announcement and this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DfStatus {
    /// Live nodes (alive or suspect), this one included.
    pub nodes: u64,
    pub replicas: u32,
    /// Copies a chunk written now gets: R, or fewer when fewer live nodes hold chunks
    /// (degraded).
    #[serde(default)]
    pub copies: u32,
    /// Live nodes that hold chunks (reader nodes do not), this one included if it does.
    #[serde(default)]
    pub holding_nodes: u64,
    /// Bytes offered for chunks, summed over live nodes.
    pub capacity_bytes: u64,
    /// Free bytes on their disks, summed.
    pub free_bytes: u64,
    /// Bytes of chunks stored on this node.
    pub stored_here_bytes: u64,
    /// Roughly how many more bytes of files fit: free space over the copies that can be made
    /// (`copies`).
    pub usable_bytes: u64,
    /// Of `stored_here_bytes`, what only earlier versions kept for retention hold.
    #[serde(default)]
    pub retained_here_bytes: u64,
    /// Earlier versions kept on this node.
    #[serde(default)]
    pub kept_versions: u64,
}

/// Replication health of the files this node can see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthStatus {
    pub replicas: u32,
    /// Live nodes asked (this one included).
    pub nodes: u64,
    /// Copies a chunk can have now: R, or fewer when fewer live nodes hold chunks (degraded:
    /// every chunk is then short).
    #[serde(default)]
    pub copies: u32,
    /// Live nodes that hold chunks, this one included if it does.
    #[serde(default)]
    pub holding_nodes: u64,
    /// Distinct chunks of visible files.
    pub chunks: u64,
    /// Chunks found on fewer than R nodes.
    pub short_chunks: u64,
    /// Chunks found on no live node at all.
    pub missing_chunks: u64,
    /// Short chunks whose shortfall is only claims that could not be checked now (holders busy
    /// or not answering): proven copies plus unverified claims reach R. Not in `files`.
    #[serde(default)]
    pub unverified_chunks: u64,
    /// Files with a short chunk (paths as in the mount).
    pub files: Vec<String>,
}

/// One chunk of a file: its owners by placement and the peers that confirmed holding it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub id: String,
    pub owners: Vec<String>,
    pub holders: Vec<String>,
    /// Copies found (`holders.len()`), to compare with R.
    #[serde(default)]
    pub copies: u64,
    /// Peers that claim the chunk but could not be checked now (busy, no answer): not counted
    /// in `copies`, not known to lack it either.
    #[serde(default)]
    pub unverified: Vec<String>,
    /// Display labels of `owners` and `holders`, in their order: the node's name, with a short
    /// peer id when several nodes claim it, or the short peer id of a node without a name.
    #[serde(default)]
    pub owner_names: Vec<String>,
    #[serde(default)]
    pub holder_names: Vec<String>,
    /// How this node's connections reach the owners and holders it is connected to, by peer
    /// id: `direct`, `hole-punched` or `relayed` (comma-separated when several).
    #[serde(default)]
    pub connections: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    /// The name the peer announced; empty when it announced none, or an invalid one.
    #[serde(default)]
    pub name: String,
    pub addrs: Vec<String>,
    pub state: String,
    pub last_seen_ms: u64,
    /// Bytes the peer offers (its placement weight) and has free.
    pub capacity: u64,
    pub free_bytes: u64,
    pub version: String,
    /// The placement rule the peer announced (this node's is `placement::RULE`); 1 for
    /// versions that did not announce one.
    #[serde(default)]
    pub placement_rule: u8,
    /// How this node's connections reach the peer: `direct`, `hole-punched` or `relayed`
    /// (best first, comma-separated when several); empty when not connected.
    #[serde(default)]
    pub connection: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// R: the copies every chunk should have.
    pub factor: u32,
    /// Copies a chunk can have now: `factor`, or fewer when fewer live nodes hold chunks
    /// (degraded).
    #[serde(default)]
    pub copies: u32,
    /// Live nodes that hold chunks, this one included if it does.
    #[serde(default)]
    pub holding_nodes: u64,
    pub chunks_stored: u64,
    pub bytes_stored: u64,
    /// Chunks stored here that lack copies: all of them while degraded (`copies < factor`),
    /// else those the last repair pass could not place on every owner.
    pub under_replicated: u64,
    pub repair_queue: u64,
    /// Peers that failed to prove they hold a chunk, recently: their claims do not count here
    /// (`audit`).
    #[serde(default)]
    pub failed_holders: Vec<String>,
    /// The background audit since start (`audit`).
    #[serde(default)]
    pub audit: AuditStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Copies challenged at their holders.
    pub checked: u64,
    /// Challenges a holder failed (a wrong proof, or "not found" for a chunk it claimed).
    pub failed: u64,
}

/// The result of a graceful leave's handoff, as `p2pfs-ctl leave` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReport {
    /// Chunks this node held.
    pub chunks: u64,
    /// Chunks on every owner that remains when this node is gone.
    pub handed_off: u64,
    /// Chunks that are not: a push failed, the chunk could not be read, or no other live node
    /// holds chunks (its copies leave with this node).
    pub short: u64,
    /// Copies pushed by the handoff.
    pub copies_pushed: u64,
    /// Live nodes holding chunks without this one, and R.
    pub holders_left: u64,
    pub replicas: u32,
    /// False when the handoff hit its time limit: `short` then counts every chunk not known to
    /// be handed off.
    pub finished: bool,
}

/// Garbage collection of deleted and overwritten data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcStatus {
    pub grace_secs: u64,
    /// Stored chunks no live entry references, at the last pass (collected after the grace
    /// period, while every member is alive).
    pub unreferenced_chunks: u64,
    /// Whether the last pass could collect (no member suspect, dead or leaving).
    pub collecting: bool,
    pub deleted_chunks: u64,
    /// Tombstones in the namespace, and expired ones kept to refuse stale versions.
    pub tombstones: u64,
    pub expired_tombstones: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionStatus {
    /// The config's policy (the network volume's, and that of volumes whose owner set none):
    /// seconds a replaced version is kept (0: none), and at most how many per file (0: no cap).
    pub keep_secs: u64,
    pub max_versions: u32,
    /// Volumes whose owner set a policy of their own (`p2pfs-ctl retention`).
    pub volumes_with_own_policy: u64,
    /// Versions kept on this node, in all volumes.
    pub kept_versions: u64,
    /// Chunks stored here that only kept versions reference, and their bytes (at the last GC
    /// pass, every half grace period): what retention costs this node's disk.
    pub retained_chunks: u64,
    pub retained_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheStatus {
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
}

/// A change of a volume's retention policy (`p2pfs-ctl retention VOLUME ...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionChange {
    pub volume: String,
    /// `None`: back to each node's `[retention]` config.
    pub policy: Option<crate::namespace::RetentionPolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `passes` comes last in the `status` reply, so the fields before it keep their bytes, at
    /// the paths tests wait on; a reply from a node without it still reads.
    #[test]
    fn status_passes_are_appended_and_optional() {
        let status = Status {
            passes: PassesStatus {
                repair: 1,
                gc: 2,
                audit: 3,
                sync: 4,
            },
            ..Status::default()
        };
        let text = serde_json::to_string(&Reply::Status(Box::new(status))).unwrap();
        assert!(
            text.ends_with(r#","passes":{"repair":1,"gc":2,"audit":3,"sync":4}}"#),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (kind, n) in [("repair", 1), ("gc", 2), ("audit", 3), ("sync", 4)] {
            assert_eq!(value["passes"][kind], n, "{text}");
        }
        let without = text.replace(r#","passes":{"repair":1,"gc":2,"audit":3,"sync":4}"#, "");
        let Reply::Status(old) = serde_json::from_str(&without).unwrap() else {
            panic!("not a status: {without}");
        };
        assert_eq!(old.passes, PassesStatus::default());
    }

    /// The shapes the dashboard sends and reads: `limit`, `pause`, `resume` and their replies,
    /// and `paused` and `limits` in `status` (read as defaults from a node without them).
    #[test]
    fn limit_pause_and_resume_keep_their_json_shapes() {
        let limits = crate::net::bandwidth::Limits {
            upload: 1,
            download: 2,
            peer_upload: 3,
            peer_download: 4,
        };
        let json = |r: &Request| serde_json::to_string(r).unwrap();
        assert_eq!(
            json(&Request::Limit {
                set: None,
                use_config: false
            }),
            r#"{"cmd":"limit","set":null}"#
        );
        assert_eq!(
            json(&Request::Limit {
                set: Some(limits),
                use_config: false
            }),
            r#"{"cmd":"limit","set":{"upload":1,"download":2,"peer_upload":3,"peer_download":4}}"#
        );
        assert_eq!(json(&Request::Pause), r#"{"cmd":"pause"}"#);
        assert_eq!(json(&Request::Resume), r#"{"cmd":"resume"}"#);
        let Request::Limit { set: None, .. } = serde_json::from_str(r#"{"cmd":"limit"}"#).unwrap()
        else {
            panic!("a bare limit request is a query");
        };
        let reply = Reply::Limits {
            limits,
            source: "runtime".into(),
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"result":"limits","limits":{"upload":1,"download":2,"peer_upload":3,"peer_download":4},"source":"runtime"}"#
        );
        let text = serde_json::to_string(&Reply::Status(Box::default())).unwrap();
        assert!(
            text.contains(r#""paused":false,"limits":{"upload":0,"download":0,"peer_upload":0,"peer_download":0}"#),
            "{text}"
        );
        let without = text.replace(
            r#""paused":false,"limits":{"upload":0,"download":0,"peer_upload":0,"peer_download":0},"#,
            "",
        );
        let Reply::Status(old) = serde_json::from_str(&without).unwrap() else {
            panic!("not a status: {without}");
        };
        assert!(!old.paused);
    }
}
