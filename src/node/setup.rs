//! Around a node's first start and its removal: the checks of a mountpoint made before anything
//! is created, what a node holds (what `p2pfs reset` or `--force-join` would lose), and
//! removing a node from its data dir.

use std::path::{Path, PathBuf};

use super::{CHUNKS_DIR, NAMESPACE_FILE, Node, NodeError};
use crate::identity::{NODE_KEY_FILE, USER_KEY_FILE};
use crate::node::config::CONFIG_FILE;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "{} is a mount point already ({fstype}): another node's mount, or another filesystem; unmount it or choose another directory",
        path.display()
    )]
    Mounted { path: PathBuf, fstype: String },
    #[error("{} is not a directory", path.display())]
    NotDir { path: PathBuf },
    #[error(
        "{} is not empty: its files would be hidden while the mount is up; choose an empty directory, or pass --allow-non-empty",
        path.display()
    )]
    NotEmpty { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a node is running for {}: stop it first", .0.display())]
    Running(PathBuf),
    #[error(transparent)]
    Node(#[from] Box<NodeError>),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `path` can be mounted at: missing (it is created), or an empty directory that is
/// not a mount point (a dead FUSE mount a crashed node left is fine: it is cleared). A
/// non-empty directory only with `allow_non_empty`. Changes nothing.
pub fn check_mountpoint(path: &Path, allow_non_empty: bool) -> Result<(), SetupError> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other,
    };
    // Even a mount this user cannot look into (another user's FUSE mount) is in mountinfo.
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(io_at(path))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_at(Path::new("/proc/self/mountinfo")))?;
    if let Some(fstype) = mount_type(&mountinfo, &abs) {
        return Err(SetupError::Mounted {
            path: path.to_path_buf(),
            fstype,
        });
    }
    let meta = meta.map_err(io_at(path))?;
    if !meta.is_dir() {
        return Err(SetupError::NotDir {
            path: path.to_path_buf(),
        });
    }
    if !allow_non_empty
        && std::fs::read_dir(path)
            .map_err(io_at(path))?
            .next()
            .is_some()
    {
        return Err(SetupError::NotEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The filesystem type of the mount at `path` in a mountinfo table, if something is mounted
/// there. Paths in mountinfo escape space, tab, newline and backslash as octal (`\040`).
pub fn mount_type(mountinfo: &str, path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let wanted = path.as_os_str().as_bytes();
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = unescape(fields.get(4)?);
        if point != wanted {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        Some(fields.get(sep + 1)?.to_string())
    })
}

fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether a node answers on the control socket of `data_dir`.
pub fn is_running(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(data_dir.join(crate::node::control::SOCKET_FILE))
        .is_ok()
}

/// What a node in a data dir holds: what removing it would lose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub peer_id: String,
    pub user_id: String,
    /// Chunks in its store.
    pub chunks: u64,
    /// Namespace entries that reference chunks (file versions with data).
    pub file_versions: u64,
    /// Namespace entries written by other nodes: it has synced with a network.
    pub foreign_entries: u64,
    /// Other certified nodes in its network's ledger.
    pub other_members: u64,
}

impl Footprint {
    /// Nothing would be lost but keys: no data, and never in touch with another node.
    pub fn is_pristine(&self) -> bool {
        self.chunks == 0
            && self.file_versions == 0
            && self.foreign_entries == 0
            && self.other_members == 0
    }

    /// One line for a warning: `3 chunks, 2 file versions, 4 other members`.
    pub fn describe(&self) -> String {
        format!(
            "{} chunks stored, {} file versions, {} entries from other nodes, {} other members",
            self.chunks, self.file_versions, self.foreign_entries, self.other_members
        )
    }
}

/// Reads what the (stopped) node in `data_dir` holds.
pub fn footprint(data_dir: &Path) -> Result<Footprint, SetupError> {
    if is_running(data_dir) {
        return Err(SetupError::Running(data_dir.to_path_buf()));
    }
    let node = Node::load(data_dir).map_err(Box::new)?;
    let peer = node.node_id.peer_id();
    let own = crate::namespace::entry::node_tag(&peer.to_bytes());
    let chunks = node
        .chunks
        .list()
        .map_err(io_at(&data_dir.join(CHUNKS_DIR)))?;
    let (mut file_versions, mut foreign_entries) = (0, 0);
    node.namespace
        .for_each_entry(|e| {
            if e.origin != own {
                foreign_entries += 1;
            }
            if !e.chunks.is_empty() {
                file_versions += 1;
            }
        })
        .map_err(|e| Box::new(NodeError::from(e)))?;
    let other_members = node
        .gate
        .ledger()
        .certs()
        .filter(|c| c.peer_id() != Some(peer))
        .count() as u64;
    Ok(Footprint {
        peer_id: peer.to_string(),
        user_id: node.user.user_id().to_string(),
        chunks: chunks.len() as u64,
        file_versions,
        foreign_entries,
        other_members,
    })
}

/// The files a node keeps in its data dir (beside the network key, whose path the config
/// gives).
const NODE_FILES: &[&str] = &[
    CONFIG_FILE,
    NODE_KEY_FILE,
    USER_KEY_FILE,
    NAMESPACE_FILE,
    CHUNKS_DIR,
    crate::admission::gate::MEMBERSHIP_FILE,
    crate::admission::gate::INVITES_FILE,
    crate::node::pins::PINS_FILE,
    crate::node::control::SOCKET_FILE,
    "snapshots.json",
    "web.token",
];

/// Removes the stopped node in `data_dir`: its files (and its network key when that is in the
/// data dir), then the data dir itself if nothing else is left in it. Returns what was left
/// (files the node did not make).
pub fn remove_node(data_dir: &Path) -> Result<Vec<PathBuf>, SetupError> {
    if is_running(data_dir) {
        return Err(SetupError::Running(data_dir.to_path_buf()));
    }
    let key = crate::node::config::Config::load(data_dir)
        .ok()
        .map(|c| c.network_key_path(data_dir));
    let mut paths: Vec<PathBuf> = NODE_FILES.iter().map(|f| data_dir.join(f)).collect();
    paths.extend(key.filter(|k| k.parent() == Some(data_dir)));
    for path in paths {
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(io_at(&path))?;
    }
    let left: Vec<PathBuf> = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(data_dir)(e)),
    };
    if left.is_empty() {
        std::fs::remove_dir(data_dir).map_err(io_at(data_dir))?;
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lookup_unescapes_paths() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:50 / /home/a\\040b/p2pfs rw,nosuid,nodev shared:60 - fuse.p2pfs p2pfs rw,user_id=0
99 22 0:51 / /tmp/t rw shared:61 - tmpfs tmpfs rw";
        assert_eq!(
            mount_type(table, Path::new("/home/a b/p2pfs")).as_deref(),
            Some("fuse.p2pfs")
        );
        assert_eq!(
            mount_type(table, Path::new("/tmp/t")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(mount_type(table, Path::new("/home/a b")), None);
        assert_eq!(mount_type(table, Path::new("/")).as_deref(), Some("ext4"));
    }

    /// A file, a non-empty directory and a live mount are refused; a missing or empty
    /// directory is fine, and a non-empty one with `allow_non_empty`.
    #[test]
    fn mountpoint_checks() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert!(check_mountpoint(&base.join("new"), false).is_ok());
        std::fs::create_dir(base.join("empty")).unwrap();
        assert!(check_mountpoint(&base.join("empty"), false).is_ok());
        std::fs::write(base.join("file"), b"x").unwrap();
        assert!(matches!(
            check_mountpoint(&base.join("file"), false),
            Err(SetupError::NotDir { .. })
        ));
        let err = check_mountpoint(base, false).unwrap_err();
        assert!(matches!(err, SetupError::NotEmpty { .. }));
        assert!(err.to_string().contains("--allow-non-empty"), "{err}");
        assert!(check_mountpoint(base, true).is_ok());
        // `/` is a mount point on any system.
        assert!(matches!(
            check_mountpoint(Path::new("/"), true),
            Err(SetupError::Mounted { .. })
        ));
    }

    /// A new node is pristine; reset removes its files and its data dir, and leaves what it
    /// did not make.
    #[test]
    fn fresh_node_is_pristine_and_removable() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("node");
        crate::node::init(&dir, None, None, None, Some("n")).unwrap();
        let f = footprint(&dir).unwrap();
        assert!(f.is_pristine(), "{f:?}");
        assert!(remove_node(&dir).unwrap().is_empty());
        assert!(!dir.exists());

        crate::node::init(&dir, None, None, None, Some("n")).unwrap();
        std::fs::write(dir.join("mine.txt"), b"keep").unwrap();
        let left = remove_node(&dir).unwrap();
        assert_eq!(left, vec![dir.join("mine.txt")]);
        assert!(!crate::node::is_initialized(&dir));
    }
}
