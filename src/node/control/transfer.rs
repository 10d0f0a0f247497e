//! `p2pfs-ctl put` and `get` beyond one request: where a destination that names a directory
//! puts the file, and whole directory trees (`-r`: directories, files, symlinks, modes), with
//! one progress count over the bytes of the whole tree.

use std::ffi::OsStr;
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
    let total: u64 = items
        .iter()
        .map(|i| match i {
            Item::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
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
    mut progress: impl FnMut(u64, u64),
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
    let total: u64 = items
        .iter()
        .map(|i| match i {
            Item::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    progress(0, total);
    make_local_dir(&root)?;
    report.dirs += 1;
    // Directory modes go on last, deepest first: a read-only directory still gets its contents.
    let mut dir_modes = vec![(root.clone(), top.mode)];
    for item in items {
        match item {
            Item::Dir { rel, mode } => {
                let path = root.join(&rel);
                make_local_dir(&path)?;
                dir_modes.push((path, mode));
                report.dirs += 1;
            }
            Item::Symlink { rel, target } => {
                let path = root.join(&rel);
                // The same link there already (a `get -r` run again) is not an error.
                let same = std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target));
                if !same {
                    std::os::unix::fs::symlink(&target, &path).map_err(local_err(&path))?;
                }
                report.symlinks += 1;
            }
            Item::File { rel, mode, .. } => {
                let path = root.join(&rel);
                let before = report.bytes;
                let size = get_file(data_dir, join(remote, &rel).as_bytes(), &path, |got, _| {
                    progress(before + got, total)
                })?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(local_err(&path))?;
                report.files += 1;
                report.bytes += size;
            }
        }
    }
    for (path, mode) in dir_modes.into_iter().rev() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(local_err(&path))?;
    }
    Ok(report)
}

/// A directory at `path`: made, or one already there.
fn make_local_dir(path: &Path) -> Result<(), TransferError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(local_err(path)(e)),
    }
}

/// Gets the file at `remote` into `local`: written to a temporary file beside it, renamed over
/// it when complete (a failed get leaves no half-written file). Returns its size.
pub fn get_file(
    data_dir: &Path,
    remote: &[u8],
    local: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let name = local
        .file_name()
        .ok_or_else(|| TransferError::Usage(format!("{} names no file", local.display())))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".p2pfs-get");
    let temp = local.with_file_name(temp_name);
    let file = std::fs::File::create(&temp).map_err(local_err(&temp))?;
    let mut out = std::io::BufWriter::new(file);
    let result = client::get(data_dir, remote, &mut out, progress);
    drop(out);
    let outcome = match result {
        Ok(Ok(size)) => std::fs::rename(&temp, local)
            .map(|()| size)
            .map_err(local_err(local)),
        Ok(Err(message)) => Err(TransferError::Refused(message)),
        Err(e) => Err(e.into()),
    };
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    outcome
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
