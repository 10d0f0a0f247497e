//! `versions` and `restore` requests: the names the answer shows (node tags and user ids, from
//! the membership view and the ledger), and the calls into the mount.

use std::collections::HashMap;

use super::proto::Reply;
use super::server::ControlService;
use crate::fs::history::{Labels, Pick, parse_time};
use crate::namespace::entry::node_tag;

impl ControlService {
    /// The names this node knows for node tags (every node it has heard of, and the certified
    /// ones) and for users (the name of one of their nodes).
    fn history_labels(&self) -> Labels {
        let mut by_peer = self.cluster.labels();
        let mut users: HashMap<crate::namespace::UserId, Vec<String>> = HashMap::new();
        let ledger = self.gate.ledger();
        for cert in ledger.certs() {
            if let Some(peer) = cert.peer_id() {
                let label = by_peer
                    .entry(peer.to_string())
                    .or_insert_with(|| cert.body.name.clone())
                    .clone();
                users.entry(cert.body.user).or_default().push(label);
            }
        }
        let local = self.cluster.net.local.to_string();
        if let Some(label) = by_peer.get(&local) {
            users
                .entry(self.mount.user_id())
                .or_default()
                .push(label.clone());
        }
        for m in self.cluster.membership.read().members() {
            if let (Some(user), Some(label)) = (m.user, by_peer.get(&m.peer.to_string())) {
                users.entry(user).or_default().push(label.clone());
            }
        }
        let nodes = by_peer
            .into_iter()
            .filter(|(_, label)| !label.is_empty())
            .filter_map(|(peer, label)| {
                let peer: libp2p::PeerId = peer.parse().ok()?;
                Some((node_tag(&peer.to_bytes()), label))
            })
            .collect();
        let users = users
            .into_iter()
            .filter_map(|(user, mut labels)| {
                labels.sort();
                labels.dedup();
                labels
                    .into_iter()
                    .find(|l| !l.is_empty())
                    .map(|l| (user, l))
            })
            .collect();
        Labels { nodes, users }
    }

    pub(super) async fn versions(&self, path: String) -> Reply {
        let labels = self.history_labels();
        let mount = self.mount.clone();
        match tokio::task::spawn_blocking(move || mount.versions(&path, &labels)).await {
            Ok(Ok(list)) => Reply::Versions(Box::new(list)),
            Ok(Err(e)) => Reply::Error {
                message: e.to_string(),
            },
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    pub(super) async fn restore(
        &self,
        path: String,
        version: Option<u32>,
        at: Option<String>,
        to: Option<String>,
    ) -> Reply {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let pick = match (version, at) {
            (Some(_), Some(_)) => {
                return Reply::Error {
                    message: "give --version or --at, not both".into(),
                };
            }
            (Some(n), None) => Pick::Number(n),
            (None, Some(at)) => match parse_time(&at, now_ms) {
                Ok(t) => Pick::At(t),
                Err(e) => {
                    return Reply::Error {
                        message: e.to_string(),
                    };
                }
            },
            (None, None) => Pick::Latest,
        };
        let mount = self.mount.clone();
        let shown = path.clone();
        let done =
            tokio::task::spawn_blocking(move || mount.restore(&path, pick, to.as_deref())).await;
        match done {
            Ok(Ok(r)) if r.entries == 0 => Reply::Done {
                message: format!("{shown} is already as it was at {}", r.time),
            },
            Ok(Ok(r)) => Reply::Done {
                message: format!(
                    "restored {} as it was at {} ({} entr{})",
                    r.path,
                    r.time,
                    r.entries,
                    if r.entries == 1 { "y" } else { "ies" }
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
}
