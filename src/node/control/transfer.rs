//! `p2pfs-ctl put` and `get` beyond one request: where a destination that names a directory
//! puts the file, and whole directory trees (`-r`: directories, files, symlinks, modes), with
//! one progress count over the bytes of the whole tree.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ControlError;
use super::client;
use super::proto::{ListEntry, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The bytes of the files of a tree: what its progress bar counts to.
fn total_bytes(items: &[Item]) -> u64 {
    items
        .iter()
        .map(|i| match i {
            Item::File { size, .. } => *size,
            _ => 0,
        })
        .sum()
}

fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The last name of a `/`-separated path (`a/b/` -> `b`), `None` for the root, `.` or `..`.
pub fn last_name(path: &[u8]) -> Option<&[u8]> {
    path.split(|&b| b == b'/')
        .rfind(|p| !p.is_empty())
        .filter(|n| *n != b"." && *n != b"..")
}

/// Whether LOCAL names a directory the copy goes into: it ends in `/`, is `.`/`..`/`/`, or is
/// an existing directory. A name ending in `/` that is no directory is an error.
fn names_local_dir(local: &Path) -> Result<bool, TransferError> {
    let bytes = local.as_os_str().as_bytes();
    let dir_form = bytes.ends_with(b"/") || local.file_name().is_none();
    match std::fs::metadata(local) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) if dir_form => Err(TransferError::Local {
            path: local.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(e) if dir_form => Err(local_err(local)(e)),
        _ => Ok(false),
    }
}

/// Where `get REMOTE LOCAL` writes the file: LOCAL, or LOCAL/NAME (NAME: REMOTE's last name)
/// when LOCAL names a directory (`.`, `./`, `dir/`, an existing directory).
pub fn get_destination(remote: &[u8], local: &Path) -> Result<PathBuf, TransferError> {
    if !names_local_dir(local)? {
        return Ok(local.to_path_buf());
    }
    let name = last_name(remote).ok_or_else(|| {
        TransferError::Usage(format!(
            "{:?} names no file to put in {}",
            String::from_utf8_lossy(remote),
            local.display()
        ))
    })?;
    Ok(local.join(OsStr::from_bytes(name)))
}

/// What a tree copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeReport {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries left out (a special file, a name that is not UTF-8), with why.
    pub skipped: Vec<String>,
}

/// One entry of a tree, parents before their children.
#[derive(Debug)]
enum Item {
    Dir { rel: String, mode: u32 },
    File { rel: String, mode: u32, size: u64 },
    Symlink { rel: String, target: String },
}

fn join(base: &str, rel: &str) -> String {
    match (base.trim_end_matches('/'), rel) {
        (b, "") => b.to_string(),
        ("", r) => r.to_string(),
        (b, r) => format!("{b}/{r}"),
    }
}

/// The local tree under `root`, parents first, in name order.
fn walk_local(root: &Path, report: &mut TreeReport) -> Result<Vec<Item>, TransferError> {
    let mut items = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(local_err(&dir))?
            .collect::<Result<_, _>>()
            .map_err(local_err(&dir))?;
        children.sort_by_key(|c| c.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let path = child.path();
            let Some(name) = child.file_name().to_str().map(str::to_string) else {
                report
                    .skipped
                    .push(format!("{}: the name is not UTF-8", path.display()));
                continue;
            };
            let rel = join(&rel, &name);
            let meta = std::fs::symlink_metadata(&path).map_err(local_err(&path))?;
            let mode = meta.permissions().mode() & 0o7777;
            let kind = meta.file_type();
            if kind.is_dir() {
                items.push(Item::Dir {
                    rel: rel.clone(),
                    mode,
                });
                subdirs.push((path, rel));
            } else if kind.is_file() {
                items.push(Item::File {
                    rel,
                    mode,
                    size: meta.len(),
                });
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(local_err(&path))?;
                match target.to_str() {
                    Some(t) => items.push(Item::Symlink {
                        rel,
                        target: t.to_string(),
                    }),
                    None => report
                        .skipped
                        .push(format!("{}: the link target is not UTF-8", path.display())),
                }
            } else {
                report.skipped.push(format!(
                    "{}: not a file, directory or symlink",
                    path.display()
                ));
            }
        }
        // Depth first, in name order: pushed reversed so the first subdirectory comes next.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(items)
}

fn refused(reply: Reply) -> TransferError {
    match reply {
        Reply::Error { message } => TransferError::Refused(message),
        other => ControlError::Protocol(format!("unexpected reply {other:?}")).into(),
    }
}

/// The entry at `path` in the mount, if any (the root is a directory).
fn remote_entry(data_dir: &Path, path: &str) -> Result<Option<ListEntry>, TransferError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Some(ListEntry {
            name: String::new(),
            name_bytes: None,
            kind: "dir".into(),
            size: 0,
            mode: 0o755,
            mtime: 0,
            target: None,
        }));
    }
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    match client::call(
        data_dir,
        &Request::Ls {
            path: parent.to_string(),
        },
    )? {
        Reply::Listing { entries } => Ok(entries
            .into_iter()
            .find(|e| e.name == name && e.name_bytes.is_none())),
        // No parent: no entry either (the copy's own request says why).
        Reply::Error { .. } => Ok(None),
        other => Err(refused(other)),
    }
}

/// `put -r LOCAL DEST`: copies the directory tree at `local` into the mount, at DEST/NAME
/// (NAME: the directory's own name) when DEST is an existing directory, else at DEST.
/// `progress(done, total)` counts the bytes of the whole tree.
pub fn put_tree(
    data_dir: &Path,
    local: &Path,
    dest: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<TreeReport, TransferError> {
    let meta = std::fs::metadata(local).map_err(local_err(local))?;
    if !meta.is_dir() {
        return Err(TransferError::Usage(format!(
            "{} is not a directory (put copies a single file without -r)",
            local.display()
        )));
    }
    let root = match remote_entry(data_dir, dest)? {
        Some(e) if e.kind == "dir" => {
            let full = std::fs::canonicalize(local).map_err(local_err(local))?;
            let name = full
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    TransferError::Usage(format!(
                        "{} has no UTF-8 name to copy it under",
                        local.display()
                    ))
                })?
                .to_string();
            join(dest, &name)
        }
        Some(_) => {
            return Err(TransferError::Refused(format!(
                "{dest}: exists and is not a directory"
            )));
        }
        None => dest.trim_end_matches('/').to_string(),
    };
    let mut report = TreeReport::default();
    let items = walk_local(local, &mut report)?;
    let total = total_bytes(&items);
    progress(0, total);
    mkdir(data_dir, &root, meta.permissions().mode() & 0o7777)?;
    report.dirs += 1;
    for item in items {
        match item {
            Item::Dir { rel, mode } => {
                mkdir(data_dir, &join(&root, &rel), mode)?;
                report.dirs += 1;
            }
            Item::Symlink { rel, target } => {
                let reply = client::call(
                    data_dir,
                    &Request::Symlink {
                        path: join(&root, &rel),
                        target,
                    },
                )?;
                if !matches!(reply, Reply::Done { .. }) {
                    return Err(refused(reply));
                }
                report.symlinks += 1;
            }
            Item::File { rel, mode, size } => {
                let path = local.join(&rel);
                let mut file = std::fs::File::open(&path).map_err(local_err(&path))?;
                let before = report.bytes;
                let reply = client::put(
                    data_dir,
                    &join(&root, &rel),
                    None,
                    mode,
                    size,
                    &mut file,
                    |sent| progress(before + sent, total),
                )?;
                if !matches!(reply, Reply::Done { .. }) {
                    return Err(refused(reply));
                }
                report.files += 1;
                report.bytes += size;
            }
        }
    }
    Ok(report)
}

fn mkdir(data_dir: &Path, path: &str, mode: u32) -> Result<(), TransferError> {
    match client::call(
        data_dir,
        &Request::Mkdir {
            path: path.to_string(),
            mode,
        },
    )? {
        Reply::Done { .. } => Ok(()),
        other => Err(refused(other)),
    }
}

/// The remote tree under `root`, parents first, in name order.
fn walk_remote(
    data_dir: &Path,
    root: &str,
    report: &mut TreeReport,
) -> Result<Vec<Item>, TransferError> {
    let mut items = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let entries = match client::call(
            data_dir,
            &Request::Ls {
                path: join(root, &rel),
            },
        )? {
            Reply::Listing { mut entries } => {
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                entries
            }
            other => return Err(refused(other)),
        };
        let mut subdirs = Vec::new();
        for e in entries {
            let rel = join(&rel, &e.name);
            if !is_plain_name(&e.name) || e.name.contains('/') {
                report.skipped.push(format!(
                    "{}: {:?} is not a plain name, not copied",
                    join(root, &rel),
                    e.name
                ));
                continue;
            }
            if e.name_bytes.is_some() {
                report.skipped.push(format!(
                    "{}: the name is not UTF-8 (get it alone, by its bytes)",
                    join(root, &rel)
                ));
                continue;
            }
            match e.kind.as_str() {
                "dir" => {
                    items.push(Item::Dir {
                        rel: rel.clone(),
                        mode: e.mode,
                    });
                    subdirs.push(rel);
                }
                "file" => items.push(Item::File {
                    rel,
                    mode: e.mode,
                    size: e.size,
                }),
                "symlink" => match e.target {
                    Some(target) => items.push(Item::Symlink { rel, target }),
                    None => report.skipped.push(format!(
                        "{}: the node gave no link target",
                        join(root, &rel)
                    )),
                },
                kind => report
                    .skipped
                    .push(format!("{}: a {kind}, not copied", join(root, &rel))),
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(items)
}

/// `get -r REMOTE LOCAL`: copies the directory tree at `remote` out of the mount, to
/// LOCAL/NAME (NAME: its own name) when LOCAL is an existing directory, else to LOCAL (which
/// must not exist). `progress(done, total)` counts the bytes of the whole tree.
pub fn get_tree(
    data_dir: &Path,
    remote: &str,
    local: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<TreeReport, TransferError> {
    let top = match remote_entry(data_dir, remote)? {
        Some(e) if e.kind == "dir" => e,
        Some(_) => {
            return Err(TransferError::Usage(format!(
                "{remote} is not a directory (get copies a single file without -r)"
            )));
        }
        None => {
            return Err(TransferError::Refused(format!(
                "{remote}: no such file or directory"
            )));
        }
    };
    let root = if names_local_dir(local)? {
        let name = last_name(remote.as_bytes()).unwrap_or(b"p2pfs");
        local.join(OsStr::from_bytes(name))
    } else {
        local.to_path_buf()
    };
    let mut report = TreeReport::default();
    let items = walk_remote(data_dir, remote, &mut report)?;
    write_tree(
        &root,
        top.mode,
        items,
        &mut report,
        progress,
        |rel, out, progress| client::get(data_dir, join(remote, rel).as_bytes(), out, progress),
    )?;
    Ok(report)
}

/// The process's umask: from /proc (read, not changed), else set and put back (`p2pfs-ctl`
/// makes no file meanwhile).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let from_proc = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok());
    if let Some(mask) = from_proc {
        return mask;
    }
    // SAFETY: umask cannot fail; the old mask is put back at once.
    let mask = unsafe { libc::umask(0o077) };
    // SAFETY: as above.
    unsafe { libc::umask(mask) };
    mask as u32
}

/// Writes a remote tree (`items`, parents first) under the local directory `root`; `fetch`
/// writes the bytes of one file (by its path relative to the tree) and returns its size.
///
/// The tree's writer chooses every name, kind and mode in it, so nothing here follows a
/// symlink inside `root`: each directory is opened with O_NOFOLLOW from its parent's
/// descriptor, a symlink found where a directory goes is replaced (a link made by an earlier
/// run), files are written to a fresh temporary name (O_EXCL, O_NOFOLLOW), chmod-ed through
/// their descriptor and renamed into place, and modes keep only the permission bits the
/// umask allows (no setuid, setgid or sticky bit).
fn write_tree<F>(
    root: &Path,
    top_mode: u32,
    items: Vec<Item>,
    report: &mut TreeReport,
    mut progress: impl FnMut(u64, u64),
    mut fetch: F,
) -> Result<(), TransferError>
where
    F: FnMut(
        &str,
        &mut std::io::BufWriter<&std::fs::File>,
        &mut dyn FnMut(u64, u64),
    ) -> Result<Result<u64, String>, ControlError>,
{
    let allowed = 0o777 & !umask();
    let total = total_bytes(&items);
    progress(0, total);
    let root_fd = make_root_dir(root)?;
    report.dirs += 1;
    // Directory modes go on last, deepest first: a read-only directory still gets its contents.
    let mut dir_modes = Vec::new();
    for item in items {
        let rel = match &item {
            Item::Dir { rel, .. } | Item::File { rel, .. } | Item::Symlink { rel, .. } => {
                rel.clone()
            }
        };
        let path = root.join(&rel);
        if !rel.split('/').all(is_plain_name) {
            report
                .skipped
                .push(format!("{}: not a plain name, not copied", path.display()));
            continue;
        }
        let (parent, name) = open_parent(&root_fd, &rel).map_err(local_err(&path))?;
        let parent = parent.as_ref().unwrap_or(&root_fd).as_raw_fd();
        let name = OsStr::new(name);
        match item {
            Item::Dir { mode, .. } => {
                make_dir_at(parent, name).map_err(local_err(&path))?;
                dir_modes.push((rel, mode));
                report.dirs += 1;
            }
            Item::Symlink { target, .. } => {
                symlink_at(parent, name, &target).map_err(local_err(&path))?;
                report.symlinks += 1;
            }
            Item::File { mode, .. } => {
                let before = report.bytes;
                let size = receive_file(parent, name, 0o600, Some(mode & allowed), |out| {
                    fetch(&rel, out, &mut |got, _| progress(before + got, total))
                })
                .map_err(|e| e.at(&path))?;
                report.files += 1;
                report.bytes += size;
            }
        }
    }
    for (rel, mode) in dir_modes.into_iter().rev() {
        let path = root.join(&rel);
        let (parent, name) = open_parent(&root_fd, &rel).map_err(local_err(&path))?;
        let parent = parent.as_ref().unwrap_or(&root_fd).as_raw_fd();
        let dir = open_dir_at(parent, OsStr::new(name)).map_err(local_err(&path))?;
        fchmod(&dir, mode & allowed).map_err(local_err(&path))?;
    }
    fchmod(&root_fd, top_mode & allowed).map_err(local_err(root))?;
    Ok(())
}

/// One name of a tree: not empty, `.` or `..`, no NUL (a `/` splits it already).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('\0')
}

fn cstring(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The directory `name` in `dir`, never through a symlink.
fn open_dir_at(dir: RawFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let c = cstring(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid NUL-terminated name; the descriptor returned is owned here.
    let fd = check(unsafe { libc::openat(dir, c.as_ptr(), flags) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory holding `rel` (opened component by component, never through a symlink;
/// `None`: `root` itself) and `rel`'s last name.
fn open_parent<'a>(root: &OwnedFd, rel: &'a str) -> std::io::Result<(Option<OwnedFd>, &'a str)> {
    let (dirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut parent: Option<OwnedFd> = None;
    for part in dirs.split('/').filter(|p| !p.is_empty()) {
        let at = parent.as_ref().unwrap_or(root).as_raw_fd();
        parent = Some(open_dir_at(at, OsStr::new(part))?);
    }
    Ok((parent, name))
}

fn is_symlink_at(dir: RawFd, c: &CString) -> bool {
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid name and out-buffer.
    let ret = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    ret == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The tree's top directory: made, or one already there that is no symlink.
fn make_root_dir(root: &Path) -> Result<OwnedFd, TransferError> {
    match std::fs::create_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(local_err(root)(e)),
    }
    let c = cstring(root.as_os_str()).map_err(local_err(root))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid NUL-terminated path.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags) }).map_err(local_err(root))?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory `name` in `dir`: made (mode 0700 until the modes go on), or one already there;
/// a symlink there (made by an earlier `get -r`) is replaced, never followed.
fn make_dir_at(dir: RawFd, name: &OsStr) -> std::io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: a valid NUL-terminated name.
    match check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) }) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    match open_dir_at(dir, name) {
        Ok(_) => Ok(()),
        Err(_) if is_symlink_at(dir, &c) => {
            // SAFETY: a valid NUL-terminated name.
            check(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) })?;
            // SAFETY: as above.
            check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) }).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// A symlink `name` -> `target` in `dir`; the same link there already (a `get -r` run again)
/// is not an error.
fn symlink_at(dir: RawFd, name: &OsStr, target: &str) -> std::io::Result<()> {
    let c = cstring(name)?;
    let t = cstring(OsStr::new(target))?;
    // SAFETY: valid NUL-terminated strings.
    match check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let mut buf = vec![0u8; target.len() + 1];
            // SAFETY: buf is writable for its length; readlinkat does not follow `name`.
            let n =
                unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 && buf[..n as usize] == *target.as_bytes() {
                Ok(())
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

fn fchmod(fd: &impl AsRawFd, mode: u32) -> std::io::Result<()> {
    // SAFETY: an open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(|_| ())
}

/// Why receiving one file failed: where locally, or the node's refusal.
enum ReceiveError {
    Local(std::io::Error),
    Remote(TransferError),
}

impl ReceiveError {
    fn at(self, path: &Path) -> TransferError {
        match self {
            ReceiveError::Local(e) => local_err(path)(e),
            ReceiveError::Remote(e) => e,
        }
    }
}

/// Receives one file as `name` in `dir`: `fetch` writes it to a new temporary file beside it
/// (a fresh random name, O_EXCL and O_NOFOLLOW: nothing already there is written through),
/// which gets `mode` through its descriptor, then is renamed over `name` (a symlink there is
/// replaced, not followed). A failed fetch leaves no file. Returns the size.
fn receive_file(
    dir: RawFd,
    name: &OsStr,
    create_mode: u32,
    mode: Option<u32>,
    fetch: impl FnOnce(
        &mut std::io::BufWriter<&std::fs::File>,
    ) -> Result<Result<u64, String>, ControlError>,
) -> Result<u64, ReceiveError> {
    let c = cstring(name).map_err(ReceiveError::Local)?;
    let (temp, file) = loop {
        // `.NAME.p2pfs-get-XXXXXXXX`, cut to fit a file name.
        let mut temp = b".".to_vec();
        temp.extend_from_slice(&name.as_bytes()[..name.len().min(255 - 24)]);
        temp.extend_from_slice(format!(".p2pfs-get-{:08x}", rand::random::<u32>()).as_bytes());
        let temp = cstring(OsStr::from_bytes(&temp)).map_err(ReceiveError::Local)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid NUL-terminated name.
        match check(unsafe { libc::openat(dir, temp.as_ptr(), flags, create_mode as libc::c_uint) })
        {
            // SAFETY: a fresh descriptor nothing else owns.
            Ok(fd) => {
                break (
                    temp,
                    std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(ReceiveError::Local(e)),
        }
    };
    let mut out = std::io::BufWriter::new(&file);
    let fetched = fetch(&mut out);
    let flushed = std::io::Write::flush(&mut out);
    drop(out);
    let outcome = match fetched {
        Ok(Ok(size)) => flushed
            .and_then(|()| mode.map_or(Ok(()), |m| fchmod(&file, m)))
            // SAFETY: valid NUL-terminated names.
            .and_then(|()| check(unsafe { libc::renameat(dir, temp.as_ptr(), dir, c.as_ptr()) }))
            .map(|_| size)
            .map_err(ReceiveError::Local),
        Ok(Err(message)) => Err(ReceiveError::Remote(TransferError::Refused(message))),
        Err(e) => Err(ReceiveError::Remote(e.into())),
    };
    if outcome.is_err() {
        // SAFETY: a valid NUL-terminated name.
        unsafe { libc::unlinkat(dir, temp.as_ptr(), 0) };
    }
    outcome
}

/// Gets the file at `remote` into `local`: written to a new temporary file beside it, renamed
/// over it when complete (a failed get leaves no half-written file; a symlink at `local` or
/// at any temporary name is never written through). Returns its size.
pub fn get_file(
    data_dir: &Path,
    remote: &[u8],
    local: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let name = local
        .file_name()
        .ok_or_else(|| TransferError::Usage(format!("{} names no file", local.display())))?;
    let parent = match local.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let c = cstring(parent.as_os_str()).map_err(local_err(parent))?;
    // The directory LOCAL names is the user's own choice: followed as given.
    // SAFETY: a valid NUL-terminated path.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(local_err(parent))?;
    // SAFETY: a fresh descriptor nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    // A new file gets the usual 0666 less the umask, as `cp` gives it.
    receive_file(dir.as_raw_fd(), name, 0o666, None, |out| {
        client::get(data_dir, remote, out, progress)
    })
    .map_err(|e| e.at(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_name_of_paths() {
        assert_eq!(last_name(b"Documents/hello.txt"), Some(&b"hello.txt"[..]));
        assert_eq!(last_name(b"a/b/"), Some(&b"b"[..]));
        assert_eq!(last_name(b"@home/x"), Some(&b"x"[..]));
        assert_eq!(last_name(b""), None);
        assert_eq!(last_name(b"/"), None);
        assert_eq!(last_name(b"a/.."), None);
    }

    /// `get REMOTE ./`, `.`, `dir/` and an existing directory all mean "in that directory".
    #[test]
    fn get_into_a_directory_uses_the_remote_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("sub")).unwrap();
        std::fs::write(base.join("file"), b"x").unwrap();
        let remote = b"Documents/hello.txt";
        for local in [".", "./", "..", "/"] {
            let got = get_destination(remote, Path::new(local)).unwrap();
            assert_eq!(got, Path::new(local).join("hello.txt"), "{local}");
        }
        for local in [
            base.join("sub"),
            PathBuf::from(format!("{}/", base.join("sub").display())),
        ] {
            assert_eq!(
                get_destination(remote, &local).unwrap(),
                local.join("hello.txt")
            );
        }
        // A new name, or an existing file: the file itself.
        assert_eq!(
            get_destination(remote, &base.join("new.txt")).unwrap(),
            base.join("new.txt")
        );
        assert_eq!(
            get_destination(remote, &base.join("file")).unwrap(),
            base.join("file")
        );
        // `dir/` that is missing, or a file: refused, not a file named `dir`.
        assert!(get_destination(remote, &base.join("missing/")).is_err());
        assert!(
            get_destination(
                remote,
                Path::new(&format!("{}/", base.join("file").display()))
            )
            .is_err()
        );
        // The root has no name to use.
        assert!(get_destination(b"", Path::new(".")).is_err());
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// Writes `items` under `root` as `get -r` does, every file's bytes being `evil`.
    fn write_hostile(root: &Path, items: Vec<Item>) -> Result<TreeReport, TransferError> {
        let mut report = TreeReport::default();
        write_tree(
            root,
            0o7777,
            items,
            &mut report,
            |_, _| {},
            |_, out, _| {
                std::io::Write::write_all(out, b"evil")?;
                Ok(Ok(4))
            },
        )
        .map(|()| report)
    }

    /// A remote tree chooses names, kinds and modes: a symlink named like the temporary file
    /// of the file after it, names that climb out, setuid and world-writable modes. Nothing
    /// outside the target is written or chmod-ed, and modes are masked by the umask.
    #[test]
    fn a_hostile_tree_writes_nothing_outside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let root = dir.path().join("copy");
        let items = vec![
            Item::Symlink {
                rel: ".evil.p2pfs-get".into(),
                target: victim.to_str().unwrap().into(),
            },
            Item::File {
                rel: "evil".into(),
                mode: 0o6777,
                size: 4,
            },
            Item::Dir {
                rel: "d".into(),
                mode: 0o1777,
            },
            Item::File {
                rel: "../escaped".into(),
                mode: 0o644,
                size: 4,
            },
            Item::Dir {
                rel: "d/..".into(),
                mode: 0o777,
            },
        ];
        let report = write_hostile(&root, items).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode_of(&victim), 0o600);
        assert!(!dir.path().join("escaped").exists());
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        let allowed = 0o777 & !umask();
        assert_eq!(std::fs::read(root.join("evil")).unwrap(), b"evil");
        assert_eq!(mode_of(&root.join("evil")), allowed);
        assert_eq!(mode_of(&root.join("d")), allowed);
        assert_eq!(mode_of(&root), allowed);
        assert_eq!(mode_of(&dir.path().join("outside")) & 0o7000, 0);
    }

    /// A first run makes a symlink `a` -> a directory outside; the writer then replaces it by a
    /// directory `a` holding a file, and the second run must not write through the old link.
    /// A target that is itself a symlink is refused.
    #[test]
    fn a_rerun_does_not_write_through_a_link_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("ssh");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = dir.path().join("copy");
        let link = vec![Item::Symlink {
            rel: "a".into(),
            target: outside.to_str().unwrap().into(),
        }];
        write_hostile(&root, link).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("a"))
                .unwrap()
                .is_symlink()
        );
        let tree = vec![
            Item::Dir {
                rel: "a".into(),
                mode: 0o777,
            },
            Item::File {
                rel: "a/authorized_keys".into(),
                mode: 0o644,
                size: 4,
            },
        ];
        write_hostile(&root, tree).unwrap();
        assert!(!outside.join("authorized_keys").exists());
        assert_eq!(mode_of(&outside), 0o700);
        assert!(std::fs::symlink_metadata(root.join("a")).unwrap().is_dir());
        assert_eq!(
            std::fs::read(root.join("a/authorized_keys")).unwrap(),
            b"evil"
        );

        let root_link = dir.path().join("linked");
        std::os::unix::fs::symlink(&outside, &root_link).unwrap();
        let file = vec![Item::File {
            rel: "x".into(),
            mode: 0o644,
            size: 4,
        }];
        assert!(write_hostile(&root_link, file).is_err());
        assert!(!outside.join("x").exists());
        assert_eq!(mode_of(&outside), 0o700);
    }

    /// Parents before children, name order, modes and link targets kept, specials skipped.
    #[test]
    fn local_tree_walk() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("b/c")).unwrap();
        std::fs::write(base.join("a.txt"), b"hello").unwrap();
        std::fs::set_permissions(base.join("a.txt"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::write(base.join("b/c/d"), b"12").unwrap();
        std::fs::set_permissions(base.join("b/c/d"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("../a.txt", base.join("b/link")).unwrap();
        let fifo = std::ffi::CString::new(base.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let mut report = TreeReport::default();
        let items = walk_local(base, &mut report).unwrap();
        let shown: Vec<String> = items
            .iter()
            .map(|i| match i {
                Item::Dir { rel, .. } => format!("d {rel}"),
                Item::File { rel, mode, size } => format!("f {rel} {mode:o} {size}"),
                Item::Symlink { rel, target } => format!("l {rel} {target}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "f a.txt 644 5",
                "d b",
                "d b/c",
                "l b/link ../a.txt",
                "f b/c/d 640 2"
            ]
            .map(String::from)
        );
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    }
}
