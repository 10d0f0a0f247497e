//! A node's life: `init` lays out a data dir with keys and defaults; `load` reads it;
//! `start` ([`lifecycle`]) runs its workers; `run` starts it, mounts the volume and serves until
//! told to stop.

pub mod admission;
pub mod config;
pub mod control;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod pins;
pub mod setup;
pub mod status;
pub mod web;

pub use lifecycle::{RunningNode, Stopped};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admission::gate::short_user;
use crate::admission::{Gate, GateError};
use crate::block::ChunkStore;

use crate::fs::FsError;
use crate::fuse::FuseAdapter;
use crate::identity::{
    IdentityError, Invite, NODE_KEY_FILE, NetworkKey, NodeIdentity, USER_KEY_FILE, UserIdentity,
};
use crate::namespace::volume::VolumeError;
use crate::namespace::{NamespaceError, NamespaceStore};
use crate::net::NetError;
use crate::node::config::{CONFIG_FILE, Config, ConfigError};
use crate::util::fsutil::{create_private_dir, write_new};
use control::ControlError;

pub const NAMESPACE_FILE: &str = "namespace.redb";
/// Longest a graceful leave spends handing data off before it exits anyway (well within the
/// default `network.leave_timeout_secs`, after which the others count a leaving node dead).
const HANDOFF_LIMIT: Duration = Duration::from_secs(45);
pub const CHUNKS_DIR: &str = "chunks";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "{0} already holds a p2pfs node; refusing to overwrite it (use another --data-dir, or remove that directory to start over)"
    )]
    AlreadyInitialized(PathBuf),
    #[error("{0} is not a p2pfs node; run `p2pfs init --data-dir {0}` first")]
    NotInitialized(PathBuf),
    #[error("invalid node name: {0}")]
    InvalidName(#[from] crate::cluster::names::NameError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("filesystem: {0}")]
    Fs(#[from] FsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("membership: {0}")]
    Admission(#[from] GateError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("web: {0}")]
    Web(#[from] web::WebError),
    #[error("cannot mount at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pins: {0}")]
    Pins(#[from] crate::node::pins::PinError),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `init` made, for the user.
pub struct InitReport {
    pub peer_id: String,
    /// The node's name, as written to its config.
    pub name: String,
    pub user_id: String,
    pub network_key_file: PathBuf,
    pub network_key_created: bool,
    pub network_fingerprint: String,
    pub membership: InitMembership,
}

/// How a new node takes part in admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMembership {
    /// `--network-key`, or a v2 invite: every holder of the key is a member.
    KeyOnly,
    /// It founded a certified network: its user (short id here) is the founder and admin.
    Founded { user: String },
    /// A v3 invite: certified once the inviting node redeems it at the first connection.
    Joining { founder: String, role: String },
}

pub fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join(CONFIG_FILE).exists()
        || data_dir.join(NODE_KEY_FILE).exists()
        || data_dir.join(USER_KEY_FILE).exists()
}

/// Creates a node in `data_dir`. Refuses, changing nothing, when one is there already.
///
/// `user_key`: a user identity exported from another node (`p2pfs user export`), so one person
/// has the same identity, and personal volume, on several machines; without it a new user is
/// made.
///
/// `join`: an invite (`p2pfs-ctl invite` on a member): its network key is stored in the data dir
/// and its addresses become the config's bootstrap addresses. A certified invite (v3) also
/// records the founder and the invite's secret, redeemed at the first connection to the
/// inviter.
///
/// Without `network_key` and `join`, the node founds a certified network: its user is the
/// founder. With either of them but no certificate, the network is key-only.
///
/// `name`: what the node is called (`[node] name`); without it, the host name is written.
pub fn init(
    data_dir: &Path,
    network_key: Option<&Path>,
    user_key: Option<&Path>,
    join: Option<&Invite>,
    name: Option<&str>,
) -> Result<InitReport, NodeError> {
    if is_initialized(data_dir) {
        return Err(NodeError::AlreadyInitialized(data_dir.to_path_buf()));
    }
    if let Some(name) = name {
        crate::cluster::names::check_name(name)?;
    }
    // Read before anything is created, so a bad file changes nothing.
    let user = match user_key {
        Some(p) => UserIdentity::load(p)?,
        None => UserIdentity::generate(),
    };
    create_private_dir(data_dir).map_err(io_at(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_at(data_dir))?;

    let mut config = Config::default();
    let key_path = match network_key {
        Some(p) => {
            let abs = std::path::absolute(p).map_err(io_at(p))?;
            config.network.network_key_file = abs.clone();
            abs
        }
        None => config.network_key_path(data_dir),
    };
    let (key, created) = match join {
        Some(invite) => {
            let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(invite.network_key.0)));
            write_new(&key_path, text.as_bytes(), 0o600).map_err(io_at(&key_path))?;
            config.network.bootstrap = invite.bootstrap.clone();
            (invite.network_key.clone(), false)
        }
        None => NetworkKey::load_or_create(&key_path)?,
    };

    let node = NodeIdentity::generate();
    config.node.name = match name {
        Some(name) => name.to_string(),
        None => crate::cluster::names::default_name(&node.peer_id().to_string()),
    };
    node.save_new(&data_dir.join(NODE_KEY_FILE))?;
    user.save_new(&data_dir.join(USER_KEY_FILE))?;
    let membership = match (join, network_key) {
        (
            Some(Invite {
                certified: Some(c), ..
            }),
            _,
        ) => {
            crate::admission::gate::join(data_dir, c.founder, c.secret)?;
            InitMembership::Joining {
                founder: short_user(&c.founder),
                role: c.role.clone(),
            }
        }
        (Some(_), _) | (None, Some(_)) => InitMembership::KeyOnly,
        (None, None) => {
            crate::admission::gate::found(data_dir, &node.peer_id(), &user, &config.node.name)?;
            InitMembership::Founded {
                user: short_user(&user.user_id()),
            }
        }
    };
    // The config goes last: its presence marks a complete node.
    let text = config.to_documented_toml();
    let config_path = data_dir.join(CONFIG_FILE);
    write_new(&config_path, text.as_bytes(), 0o600).map_err(io_at(&config_path))?;
    Ok(InitReport {
        peer_id: node.peer_id().to_string(),
        name: config.node.name.clone(),
        user_id: user.user_id().to_string(),
        network_key_file: key_path,
        network_key_created: created,
        network_fingerprint: key.fingerprint(),
        membership,
    })
}

/// A node loaded from its data dir, ready to run.
pub struct Node {
    pub config: Config,
    pub data_dir: PathBuf,
    pub chunks: Arc<ChunkStore>,
    pub node_id: NodeIdentity,
    pub user: UserIdentity,
    pub network_key: NetworkKey,
    /// Who may connect: the node's mode, certificate, the network's ledger, its invites.
    pub gate: Arc<Gate>,
    namespace: NamespaceStore,
}

impl Node {
    pub fn load(data_dir: &Path) -> Result<Self, NodeError> {
        if !data_dir.join(CONFIG_FILE).exists() {
            return Err(NodeError::NotInitialized(data_dir.to_path_buf()));
        }
        let config = Config::load(data_dir)?;
        let network_key = NetworkKey::load(&config.network_key_path(data_dir))?;
        let node_id = NodeIdentity::load(&data_dir.join(NODE_KEY_FILE))?;
        let user = UserIdentity::load(&data_dir.join(USER_KEY_FILE))?;
        let peer = node_id.peer_id();
        let gate = Arc::new(Gate::open(
            data_dir,
            peer,
            &user,
            &config.node_name(&peer.to_string()),
        )?);
        let chunks_dir = data_dir.join(CHUNKS_DIR);
        let chunks = Arc::new(
            ChunkStore::open(&chunks_dir)
                .map_err(io_at(&chunks_dir))?
                .with_sync_each(config.storage.sync_chunks),
        );
        let namespace = NamespaceStore::open(&data_dir.join(NAMESPACE_FILE))?;
        Ok(Self {
            config,
            data_dir: data_dir.to_path_buf(),
            chunks,
            node_id,
            user,
            network_key,
            gate,
            namespace,
        })
    }

    /// Bytes offered for chunks: configured, else the size of the data dir's filesystem
    /// rounded down to a GiB (a stable weight: free space would shift placement constantly).
    fn capacity(&self) -> u64 {
        if !self.config.storage.hold_chunks {
            // Weight 0: placement never names this node an owner (see `Placement::owners`).
            return 0;
        }
        if self.config.storage.capacity_bytes > 0 {
            return self.config.storage.capacity_bytes;
        }
        let path = std::ffi::CString::new(self.data_dir.as_os_str().as_encoded_bytes())
            .unwrap_or_default();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        let total = if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
            st.f_blocks as u64 * st.f_frsize as u64
        } else {
            0
        };
        (total >> 30).max(1) << 30
    }

    /// Starts the node ([`Node::start`]), mounts it at `mountpoint` and serves until SIGTERM
    /// or SIGINT (then leaves gracefully and unmounts), a `p2pfs-ctl leave`, or until the
    /// mount is taken away (`umount`); then shuts the node down.
    pub fn run(self, mountpoint: &Path) -> Result<(), NodeError> {
        prepare_mountpoint(mountpoint)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("p2pfs-net")
            .enable_all()
            .build()
            .map_err(io_at(mountpoint))?;
        // Signal handlers go in before the mount appears, so a stop request that arrives the
        // moment it does still unmounts cleanly instead of killing the process.
        let (mut term, mut int) = {
            use tokio::signal::unix::{SignalKind, signal};
            let _enter = runtime.enter();
            (
                signal(SignalKind::terminate()).map_err(io_at(mountpoint))?,
                signal(SignalKind::interrupt()).map_err(io_at(mountpoint))?,
            )
        };
        let fuse = self.config.fuse.clone();
        let self_leave_on_stop = self.config.node.leave_on_stop;
        let network_fingerprint = self.network_key.fingerprint();
        let node = self.start(runtime.handle(), mountpoint)?;

        let mut fuse_config = fuser::Config::default();
        fuse_config.mount_options = vec![
            fuser::MountOption::FSName("p2pfs".into()),
            fuser::MountOption::Subtype("p2pfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::RW,
        ];
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        fuse_config.acl = if fuse.allow_other && root {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        fuse_config.n_threads = Some(fuse.threads);
        fuse_config.clone_fd = true;
        let adapter = FuseAdapter::new(node.mount.clone(), Duration::from_millis(fuse.attr_ttl_ms));
        let mut session = match fuser::Session::new(adapter, mountpoint, &fuse_config) {
            Ok(session) => session,
            Err(source) => {
                node.shutdown();
                return Err(NodeError::Mount {
                    path: mountpoint.to_path_buf(),
                    source,
                });
            }
        };
        let mut unmounter = session.unmount_callable();
        raise_read_ahead(mountpoint);
        tracing::info!(
            mount = %mountpoint.display(),
            peer_id = %node.peer_id(),
            network = %network_fingerprint,
            "mounted"
        );
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let serve = std::thread::Builder::new()
            .name("p2pfs-fuse".into())
            .spawn(move || {
                let _ = gone_tx.send(session.run());
            })
            .map_err(io_at(mountpoint))?;

        // A plain stop takes the node offline (it keeps its data and is back at its next
        // start); only `p2pfs-ctl leave`, or `leave_on_stop`, hands its data off and leaves.
        let leave_on_stop = self_leave_on_stop;
        let (stopped_by_signal, leave) = runtime.block_on(async {
            let on_signal = |name: &str| {
                if leave_on_stop {
                    tracing::info!("{name}: leaving the network (leave_on_stop)");
                } else {
                    tracing::info!("{name}: going offline (`p2pfs-ctl leave` leaves the network)");
                }
                (true, leave_on_stop)
            };
            tokio::select! {
                _ = term.recv() => on_signal("SIGTERM"),
                _ = int.recv() => on_signal("SIGINT"),
                _ = node.leave_requested() => { tracing::info!("leave requested: leaving the network"); (true, true) }
                result = gone_rx => {
                    if let Ok(Err(e)) = result {
                        tracing::error!(error = %e, "FUSE session ended with an error");
                    } else {
                        tracing::info!("mount was removed; stopping");
                    }
                    (false, leave_on_stop)
                }
            }
        });
        if leave {
            runtime.block_on(node.leave());
        } else {
            runtime.block_on(node.go_offline());
        }
        let mut detached = false;
        if stopped_by_signal && unmounter.unmount().is_err() {
            // Busy: a shell or program has its working directory or a file in the mount. The
            // kernel keeps a detached mount until they leave; waiting for them would keep the
            // node running (and its stop hanging) for as long as they stay.
            lazy_unmount(mountpoint);
            detached = true;
            eprintln!(
                "p2pfs: the mount at {} was busy (a shell or program is in it): detached; it disappears when they leave",
                mountpoint.display()
            );
        }
        let stopped = if detached {
            node.shutdown_detached()
        } else {
            let _ = serve.join();
            node.shutdown()
        };
        runtime.shutdown_timeout(Duration::from_secs(2));
        tracing::info!(took = ?stopped.took, "stopped");
        Ok(())
    }
}

/// Creates the mountpoint if needed; clears a dead mount a crashed node left behind.
fn prepare_mountpoint(mountpoint: &Path) -> Result<(), NodeError> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(NodeError::Mount {
            path: mountpoint.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mount = %mountpoint.display(), "a dead FUSE mount is in the way (a crashed node?); detaching it");
            lazy_unmount(mountpoint);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(mountpoint).map_err(io_at(mountpoint))
        }
        Err(source) => Err(NodeError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        }),
    }
}

/// Kernel read-ahead for the mount, in KiB: a sequential reader then asks for up to 1 MiB per
/// request (one chunk) instead of 128 KiB, and chunks are fetched in parallel sooner.
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's kernel read-ahead (best effort: needs root, as mounting without
/// fusermount does). The device comes from mountinfo, not a stat of the mountpoint, which
/// would be a request to this very filesystem before it serves.
fn raise_read_ahead(mountpoint: &Path) {
    let Ok(abs) = std::path::absolute(mountpoint) else {
        return;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let wanted = abs.to_string_lossy().replace(' ', "\\040");
    let dev = info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&wanted.as_str())).then(|| fields.get(2).map(|d| d.to_string()))?
    });
    if let Some(dev) = dev {
        let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = std::fs::write(&path, READ_AHEAD_KB.to_string()) {
            tracing::debug!(%path, error = %e, "could not raise read-ahead");
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    // Not root: the setuid helper may detach a FUSE mount its user made.
    for helper in ["fusermount3", "fusermount"] {
        let done = std::process::Command::new(helper)
            .args(["-u", "-z", "--"])
            .arg(mountpoint)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if done.is_ok_and(|s| s.success()) {
            return;
        }
    }
    tracing::warn!(mount = %mountpoint.display(), "cannot detach the mount (umount2 and fusermount3 -uz failed)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Mode;
    use crate::identity::CertifiedInvite;

    fn gate_of(dir: &Path) -> Gate {
        let node = Node::load(dir).unwrap();
        Arc::try_unwrap(node.gate).ok().unwrap()
    }

    /// Without a key or an invite, init founds a certified network; with a key, or a v2
    /// invite, the node is key-only; with a v3 invite it waits to be admitted.
    #[test]
    fn init_founds_joins_or_stays_key_only() {
        let base = tempfile::tempdir().unwrap();
        let founded = base.path().join("founded");
        let r = init(&founded, None, None, None, Some("home")).unwrap();
        let gate = gate_of(&founded);
        assert_eq!(gate.mode(), Mode::Certified);
        let cert = gate.own_cert().unwrap();
        assert_eq!(cert.body.name, "home");
        assert_eq!(cert.peer_id().unwrap().to_string(), r.peer_id);
        assert_eq!(cert.body.user.to_string(), r.user_id);
        assert!(gate.ledger().is_admin(&cert.body.user));
        assert_eq!(
            r.membership,
            InitMembership::Founded {
                user: r.user_id[..12].to_string()
            }
        );

        let keyed = base.path().join("keyed");
        let r = init(&keyed, Some(&base.path().join("k")), None, None, None).unwrap();
        assert_eq!(r.membership, InitMembership::KeyOnly);
        assert!(!keyed.join(crate::admission::gate::MEMBERSHIP_FILE).exists());
        assert_eq!(gate_of(&keyed).mode(), Mode::KeyOnly);

        let mut invite = Invite {
            network_key: NetworkKey::generate(),
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            inviter: "12D3KooWinviter".into(),
            expires: None,
            certified: None,
        };
        let v2 = base.path().join("v2");
        let r = init(&v2, None, None, Some(&invite), None).unwrap();
        assert_eq!(r.membership, InitMembership::KeyOnly);
        assert_eq!(gate_of(&v2).mode(), Mode::KeyOnly);

        let founder = UserIdentity::generate().user_id();
        invite.certified = Some(CertifiedInvite {
            founder,
            secret: [7; 32],
            role: "reader".into(),
        });
        let v3 = base.path().join("v3");
        let r = init(&v3, None, None, Some(&invite), None).unwrap();
        assert_eq!(
            r.membership,
            InitMembership::Joining {
                founder: short_user(&founder),
                role: "reader".into()
            }
        );
        let gate = gate_of(&v3);
        assert_eq!(gate.mode(), Mode::Joining);
        assert_eq!(gate.ledger().root(), Some(founder));
        assert!(gate.own_cert().is_none());

        // A refused name founds nothing.
        let bad = base.path().join("bad");
        assert!(init(&bad, None, None, None, Some("a\nb")).is_err());
        assert!(!bad.exists());
    }
}
