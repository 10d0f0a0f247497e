//! The mount table: what is mounted where (`/proc/self/mounts`), and unmounting.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::run_cmd;

fn unescape_mount_field(s: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mountpoint, fstype) for every line in /proc/mounts.
pub fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _src = f.next()?;
            let mp = f.next()?;
            let ty = f.next()?;
            Some((PathBuf::from(unescape_mount_field(mp)), ty.to_string()))
        })
        .collect()
}

pub fn mount_fstype(p: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(m, _)| m == p)
        .map(|(_, t)| t)
}

pub fn is_mounted(p: &Path) -> bool {
    mount_fstype(p).is_some()
}

pub(super) fn mounts_below(base: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.starts_with(base))
        .collect();
    v.sort();
    v.dedup();
    v.reverse(); // deepest first
    v
}

/// `umount P`, falling back to `umount -l P`. Repeats while the path stays
/// mounted (stacked mounts), a bounded number of times.
pub fn unmount(p: &Path) {
    for _ in 0..5 {
        if !is_mounted(p) {
            return;
        }
        let ok = run_cmd(Command::new("umount").arg(p), Duration::from_secs(30))
            .status
            .success();
        if !ok && is_mounted(p) {
            let _ = run_cmd(
                Command::new("umount").arg("-l").arg(p),
                Duration::from_secs(30),
            );
        }
    }
}

#[test]
fn harness_unescape_mount_field() {
    assert_eq!(unescape_mount_field("/a\\040b"), "/a b");
}
