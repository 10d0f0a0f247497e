//! `pin`, `unpin`, `pins` and `conflicts` requests.

use super::proto::{ConflictEntry, Reply};
use super::server::ControlService;

fn error(message: impl std::fmt::Display) -> Reply {
    Reply::Error {
        message: message.to_string(),
    }
}

impl ControlService {
    pub(super) async fn pin(&self, path: &str) -> Reply {
        let (pins, path) = (self.pins.clone(), self.relative(path));
        match tokio::task::spawn_blocking(move || pins.pin(&path)).await {
            Ok(Ok(path)) => Reply::Done {
                message: format!(
                    "pinned /{path}: every chunk of it is kept on this node \
                     (`p2pfs-ctl pins` shows progress)"
                ),
            },
            Ok(Err(e)) => error(e),
            Err(e) => error(e),
        }
    }

    pub(super) fn unpin(&self, path: &str) -> Reply {
        match self.pins.unpin(&self.relative(path)) {
            Ok(path) => Reply::Done {
                message: format!("unpinned /{path}"),
            },
            Err(e) => error(e),
        }
    }

    pub(super) fn pins(&self) -> Reply {
        Reply::Pins {
            pins: self.pins.list(),
        }
    }

    pub(super) async fn conflicts(&self, path: &str) -> Reply {
        let (mount, path) = (self.mount.clone(), self.relative(path));
        let found = tokio::task::spawn_blocking(move || {
            mount.conflicts_under(&path).map_err(|e| (path, e))
        })
        .await;
        match found {
            Ok(Ok(found)) => Reply::Conflicts {
                conflicts: found
                    .into_iter()
                    .map(|c| ConflictEntry {
                        path: c.path,
                        of: c.of,
                        kind: if c.copy { "copy" } else { "claim" }.into(),
                        node: c.node,
                        time: crate::namespace::view::utc_rfc3339(c.millis),
                        millis: c.millis,
                    })
                    .collect(),
            },
            Ok(Err((path, e))) => error(format!("{path}: {e}")),
            Err(e) => error(e),
        }
    }
}
