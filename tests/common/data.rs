//! Test data and what the tests compare: deterministic random bytes, content and errno
//! assertions, trees of files read back, writes whose close is checked, and text edits of a
//! node's config.toml.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// Small fast deterministic PRNG (splitmix64) for bulk test data; fast
/// enough in debug builds.
pub struct FastRng(pub u64);

impl FastRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rem.len();
            rem.copy_from_slice(&v[..n]);
        }
    }
}

/// Deterministic pseudo-random bytes (not compressible).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = FastRng(seed ^ 0x1234_5678_9abc_def0);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Compares two byte slices; on mismatch panics with the first differing
/// offset (without dumping megabytes).
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b);
    panic!(
        "{what}: content mismatch: got {} bytes, want {} bytes, first difference at {:?}",
        got.len(),
        want.len(),
        first.or(Some(got.len().min(want.len())))
    );
}

#[track_caller]
pub fn assert_file_eq(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_bytes_eq(&path.display().to_string(), &got, want);
}

/// Raw errno of an io::Error (panics if there is none).
#[track_caller]
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e:?}"))
}

#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: &[i32]) {
    match r {
        Ok(v) => panic!("{what}: expected errno {want:?}, got success ({v:?})"),
        Err(e) => assert!(
            want.contains(&errno(&e)),
            "{what}: expected errno {want:?}, got {e:?} (errno {:?})",
            e.raw_os_error()
        ),
    }
}

/// Every regular file below `root` (recursively, not following symlinks),
/// with its content. Paths are relative to `root`.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_file() {
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            );
        }
    }
    out
}

/// A root entry of a mount that is a volume directory (`@home`, shared volumes).
pub fn is_volume_dir(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'@')
}

/// Names in the root of a mount, without the volume directories (see [`walk`]).
pub fn root_names(mnt: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !is_volume_dir(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path below `root` (files, dirs, symlinks), not following symlinks,
/// excluding `root` itself.
///
/// In a mount, the root's `@NAME` directories are the user's volumes (`@home`, shared ones):
/// they are left out, so a walk covers the network volume, as the tests' models do.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(r) => r,
            Err(e) => panic!("read_dir {}: {e}", d.display()),
        };
        for ent in rd {
            let ent = ent.unwrap();
            let p = ent.path();
            if d == root && is_volume_dir(&ent.file_name()) {
                continue;
            }
            let ft = ent.file_type().unwrap();
            out.push(p.clone());
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Snapshot of (content, mtime, mode) of every file below `root`.
pub fn snapshot_files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime, u32)> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            p,
            (content, md.modified().unwrap(), md.permissions().mode()),
        );
    }
    out
}

/// Writes `data` to `path` (create/truncate) and closes it explicitly,
/// returning the first error from open, write or close.
pub fn write_and_close(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let w = f.write_all(data);
    let fd = f.into_raw_fd();
    let rc = unsafe { libc::close(fd) };
    let close_err = if rc != 0 {
        Some(io::Error::last_os_error())
    } else {
        None
    };
    w?;
    match close_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Closes a file explicitly, returning the close(2) error if any (std's
/// drop ignores it).
pub fn close_checked(f: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// TOML editing (text based, so the tests don't depend on a toml crate)

pub fn edit_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut lines: Vec<String> = text.lines().map(|s| s.to_string()).collect();
    let mut in_section = false;
    let mut section_idx = None;
    for i in 0..lines.len() {
        let t = lines[i].trim();
        if t.starts_with('[') {
            in_section = t == header;
            if in_section {
                section_idx = Some(i);
            }
            continue;
        }
        if in_section
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            lines[i] = format!("{key} = {value}");
            return lines.join("\n") + "\n";
        }
    }
    match section_idx {
        Some(i) => lines.insert(i + 1, format!("{key} = {value}")),
        None => {
            lines.push(String::new());
            lines.push(header);
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// Reads `key` under `[section]` from TOML text (raw value text).
pub fn toml_get(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_section = t == header;
            continue;
        }
        if in_section
            && let Some((k, v)) = t.split_once('=')
            && k.trim() == key
        {
            let v = v.split('#').next().unwrap().trim();
            return Some(v.to_string());
        }
    }
    None
}

#[test]
fn harness_edit_toml() {
    let t = "[a]\nx = 1\n\n[storage]\nchunk_size = 1048576 # default\nother = 2\n";
    let n = edit_toml(t, "storage", "chunk_size", "65536");
    assert_eq!(
        toml_get(&n, "storage", "chunk_size").as_deref(),
        Some("65536")
    );
    assert_eq!(toml_get(&n, "storage", "other").as_deref(), Some("2"));
    assert_eq!(toml_get(&n, "a", "x").as_deref(), Some("1"));
    let n = edit_toml("[a]\nx=1\n", "storage", "chunk_size", "65536");
    assert_eq!(
        toml_get(&n, "storage", "chunk_size").as_deref(),
        Some("65536")
    );
    let n = edit_toml(
        "[storage]\n[b]\nchunk_size = 3\n",
        "storage",
        "chunk_size",
        "7",
    );
    assert_eq!(toml_get(&n, "storage", "chunk_size").as_deref(), Some("7"));
    assert_eq!(toml_get(&n, "b", "chunk_size").as_deref(), Some("3"));
}

/// The node label of `shown` when it is a conflict name of `base` in the exact form
/// `stem (conflict LABEL YYYY-MM-DD HH.MM).ext` (dotfiles and names without an extension:
/// the tag at the end), `None` otherwise.
pub fn conflict_label(shown: &str, base: &str) -> Option<String> {
    let (stem, ext) = match base.rfind('.') {
        Some(p) if p > 0 && p + 1 < base.len() => base.split_at(p),
        _ => (base, ""),
    };
    let inner = shown
        .strip_prefix(stem)?
        .strip_suffix(ext)?
        .strip_prefix(" (conflict ")?
        .strip_suffix(')')?;
    // LABEL, then " YYYY-MM-DD HH.MM" (17 characters).
    let (label, when) = inner.split_at(inner.len().checked_sub(17)?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let w = when.as_bytes();
    let shape = w[0] == b' '
        && w[5] == b'-'
        && w[8] == b'-'
        && w[11] == b' '
        && w[14] == b'.'
        && [
            &when[1..5],
            &when[6..8],
            &when[9..11],
            &when[12..14],
            &when[15..17],
        ]
        .iter()
        .all(|s| digits(s));
    (shape && !label.is_empty()).then(|| label.to_string())
}
