//! Default locations, following the XDG base directory convention.

use std::path::PathBuf;

/// `$XDG_DATA_HOME/p2pfs`, else `~/.local/share/p2pfs`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("p2pfs"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/p2pfs"))
}
