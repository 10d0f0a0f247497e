//! `p2pfs-ctl purge` (and `rm --purge`) and `p2pfs-ctl retention`: erasing for real, and how
//! long each volume keeps earlier versions.

use crate::fs::Mount;

use super::proto::{Reply, RetentionChange};

/// Purges `path` (relative to the mount) on the blocking pool.
pub(super) async fn purge(mount: std::sync::Arc<Mount>, path: String) -> Reply {
    let shown = path.clone();
    match tokio::task::spawn_blocking(move || mount.purge(&path)).await {
        Ok(Ok(report)) => Reply::Done {
            message: format!(
                "purged {shown}: {} entr{} and every earlier version, erased on every node that is up (others erase when they are back)",
                report.entries,
                if report.entries == 1 { "y" } else { "ies" }
            ),
        },
        Ok(Err(crate::fs::FsError::NotFound)) => Reply::Error {
            message: format!(
                "{shown}: no such file or directory, now or within retention (see `p2pfs-ctl versions`)"
            ),
        },
        Ok(Err(crate::fs::FsError::Invalid)) => Reply::Error {
            message: format!("{shown}: cannot purge the root of a volume; purge what is in it"),
        },
        Ok(Err(e)) => Reply::Error {
            message: format!("{shown}: {e}"),
        },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

/// Lists every volume's policy, after applying `set` if given.
pub(super) async fn retention(mount: std::sync::Arc<Mount>, set: Option<RetentionChange>) -> Reply {
    let done = tokio::task::spawn_blocking(move || {
        if let Some(change) = set {
            mount
                .set_volume_retention(&change.volume, change.policy)
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(mount.retention_list())
    })
    .await;
    match done {
        Ok(Ok(volumes)) => Reply::Retention { volumes },
        Ok(Err(message)) => Reply::Error { message },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}
