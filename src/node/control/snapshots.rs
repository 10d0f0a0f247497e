//! `p2pfs-ctl snapshot` and `snapshots`: the path of a view of a volume's past, and the
//! named snapshots (the views themselves are the mount's, `fs::mount`).

use super::proto::Reply;
use super::server::ControlService;
use crate::fs::snapshot::parse_time;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The view at `at` (or now) of `volume`, named `name` when given.
pub(super) async fn snapshot(
    source: &ControlService,
    volume: Option<String>,
    name: Option<String>,
    at: Option<String>,
) -> Reply {
    let at_ms = match at.as_deref().map(|t| (t, parse_time(t))) {
        Some((_, Some(ms))) => Some(ms),
        Some((t, None)) => {
            return Reply::Error {
                message: format!(
                    "{t:?} is not a time: use UTC 2026-12-01T10:00 or 2026-12-01T10:00:05 (Z optional)"
                ),
            };
        }
        None if name.is_none() => {
            // An unnamed view is named by its time, to the second: the next whole second,
            // once it is past, so the view holds everything written before this request.
            let now = now_ms();
            let next = (now / 1000 + 1) * 1000;
            tokio::time::sleep(std::time::Duration::from_millis(next - now + 1)).await;
            Some(next)
        }
        None => None,
    };
    let mount = source.mount.clone();
    let made = tokio::task::spawn_blocking(move || {
        mount.snapshot(volume.as_deref(), name.as_deref(), at_ms)
    })
    .await;
    match made {
        Ok(Ok(path)) => Reply::Snapshot {
            path: format!(
                "{}{path}",
                source
                    .mount_path
                    .display()
                    .to_string()
                    .trim_end_matches('/')
            ),
        },
        Ok(Err(e)) => Reply::Error {
            message: e.to_string(),
        },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

/// The named snapshots, with absolute paths.
pub(super) fn named(source: &ControlService) -> Reply {
    let base = source.mount_path.display().to_string();
    let mut snapshots = source.mount.named_snapshots();
    for s in &mut snapshots {
        s.path = format!("{}{}", base.trim_end_matches('/'), s.path);
    }
    Reply::Snapshots { snapshots }
}
