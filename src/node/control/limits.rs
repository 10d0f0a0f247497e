//! `limit`, `pause` and `resume`: the node's bandwidth limits (`net::bandwidth`) and its sync
//! switched off and on without unmounting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::proto::Reply;
use crate::cluster::Cluster;
use crate::cluster::membership::AnnouncedState;
use crate::net::bandwidth::Limits;

/// How long a pausing node waits for gossip to carry its `paused` announcement before it
/// closes its connections.
const ANNOUNCE_GRACE: Duration = Duration::from_millis(300);

/// The limits config.toml set, and whether `p2pfs-ctl limit` replaced them since start.
pub struct LimitControl {
    config: Limits,
    runtime: AtomicBool,
}

impl LimitControl {
    pub fn new(config: Limits) -> Self {
        LimitControl {
            config,
            runtime: AtomicBool::new(false),
        }
    }

    /// Shows the limits in force; with `set`, replaces them (until the node restarts) first;
    /// with `use_config`, goes back to config.toml's.
    pub fn limit(&self, cluster: &Cluster, set: Option<Limits>, use_config: bool) -> Reply {
        let bandwidth = cluster.net.guard.bandwidth();
        if use_config {
            bandwidth.set(self.config);
            self.runtime.store(false, Ordering::Relaxed);
        } else if let Some(limits) = set {
            bandwidth.set(limits);
            self.runtime.store(true, Ordering::Relaxed);
            tracing::info!(?limits, "bandwidth limits changed");
        }
        Reply::Limits {
            limits: bandwidth.limits(),
            source: if self.runtime.load(Ordering::Relaxed) {
                "runtime"
            } else {
                "config"
            }
            .into(),
        }
    }
}

/// Stops syncing: announces `paused` (peers show it), then closes every peer connection and
/// refuses new ones until [`resume`]. The mount keeps working on what this node holds.
pub async fn pause(cluster: &Cluster) -> Reply {
    let guard = &cluster.net.guard;
    if guard.is_paused() {
        return Reply::Done {
            message: "already paused".into(),
        };
    }
    cluster.set_state(AnnouncedState::Paused).await;
    tokio::time::sleep(ANNOUNCE_GRACE).await;
    guard.set_paused(true);
    tracing::info!("paused: no peer connections until p2pfs-ctl resume");
    Reply::Done {
        message: "paused: no sync until `p2pfs-ctl resume`; the mount keeps working on what this node holds, and writes wait here".into(),
    }
}

/// Ends a pause: connections are allowed again, the node announces itself alive and dials its
/// members back; anti-entropy then brings both sides up to date.
pub async fn resume(cluster: &Cluster) -> Reply {
    let guard = &cluster.net.guard;
    if !guard.is_paused() {
        return Reply::Done {
            message: "not paused".into(),
        };
    }
    guard.set_paused(false);
    cluster.set_state(AnnouncedState::Alive).await;
    cluster.redial_members();
    tracing::info!("resumed");
    Reply::Done {
        message: "resumed: reconnecting and syncing".into(),
    }
}
