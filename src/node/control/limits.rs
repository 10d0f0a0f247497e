//! `limit`, `pause` and `resume`: the node's bandwidth limits (`net::bandwidth`) and its sync
//! switched off and on without unmounting.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use super::proto::Reply;
use crate::cluster::Cluster;
use crate::cluster::membership::AnnouncedState;
use crate::net::bandwidth::Limits;

/// How long a pausing node waits for gossip to carry its `paused` announcement before it
/// closes its connections.
pub const ANNOUNCE_GRACE: Duration = Duration::from_millis(300);

/// The limits config.toml set, and whether `p2pfs-ctl limit` replaced them since start.
pub struct LimitControl {
    config: Limits,
    runtime: AtomicBool,
    /// `p2pfs-ctl pause` and `resume`.
    pub pause: PauseSwitch,
}

impl LimitControl {
    pub fn new(config: Limits) -> Self {
        LimitControl {
            config,
            runtime: AtomicBool::new(false),
            pause: PauseSwitch::default(),
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

/// What a pause acts on (the node's cluster; a recorder in tests).
pub trait Pausable {
    /// Announces this state to the peers.
    fn announce(&self, state: AnnouncedState) -> impl Future<Output = ()> + Send;
    /// Closes every peer connection and refuses new ones (`true`), or allows them again.
    fn set_connections_paused(&self, paused: bool);
    /// Dials the members back after a pause.
    fn redial(&self);
}

impl Pausable for Cluster {
    fn announce(&self, state: AnnouncedState) -> impl Future<Output = ()> + Send {
        self.set_state(state)
    }

    fn set_connections_paused(&self, paused: bool) {
        self.net.guard.set_paused(paused);
    }

    fn redial(&self) {
        self.redial_members();
    }
}

const RUNNING: u8 = 0;
/// Announced `paused`, in the grace before the connections close.
const PAUSING: u8 = 1;
const PAUSED: u8 = 2;

/// Pause and resume, as one three-state switch: a resume that comes during a pause's grace
/// cancels it (the pause then never closes the connections), and announcements and
/// connection switches happen in the order the switch changed.
pub struct PauseSwitch {
    state: AtomicU8,
    /// Held while an announcement or a connection switch is made (never during the grace).
    acting: tokio::sync::Mutex<()>,
}

impl Default for PauseSwitch {
    fn default() -> Self {
        PauseSwitch {
            state: AtomicU8::new(RUNNING),
            acting: tokio::sync::Mutex::new(()),
        }
    }
}

/// What a pause cancelled by a resume during its grace answers.
const PAUSE_CANCELLED: &str = "not paused: a resume came before the pause took effect";

impl PauseSwitch {
    /// Stops syncing: announces `paused` (peers show it), then, `grace` later, closes every
    /// peer connection and refuses new ones until [`PauseSwitch::resume`]. The mount keeps
    /// working on what this node holds.
    pub async fn pause(&self, node: &impl Pausable, grace: Duration) -> Reply {
        if self
            .state
            .compare_exchange(RUNNING, PAUSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Reply::Done {
                message: "already paused".into(),
            };
        }
        {
            let _acting = self.acting.lock().await;
            if self.state.load(Ordering::SeqCst) != PAUSING {
                return Reply::Done {
                    message: PAUSE_CANCELLED.into(),
                };
            }
            node.announce(AnnouncedState::Paused).await;
        }
        // Gossip carries the announcement before the connections close.
        tokio::time::sleep(grace).await;
        {
            let _acting = self.acting.lock().await;
            if self
                .state
                .compare_exchange(PAUSING, PAUSED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return Reply::Done {
                    message: PAUSE_CANCELLED.into(),
                };
            }
            node.set_connections_paused(true);
        }
        tracing::info!("paused: no peer connections until p2pfs-ctl resume");
        Reply::Done {
            message: "paused: no sync until `p2pfs-ctl resume`; the mount keeps working on what this node holds, and writes wait here".into(),
        }
    }

    /// Ends a pause (or cancels one in its grace): connections are allowed again, the node
    /// announces itself alive and dials its members back; anti-entropy then brings both sides
    /// up to date.
    pub async fn resume(&self, node: &impl Pausable) -> Reply {
        {
            let _acting = self.acting.lock().await;
            let was = self.state.swap(RUNNING, Ordering::SeqCst);
            if was == RUNNING {
                return Reply::Done {
                    message: "not paused".into(),
                };
            }
            if was == PAUSED {
                node.set_connections_paused(false);
            }
            node.announce(AnnouncedState::Alive).await;
        }
        node.redial();
        tracing::info!("resumed");
        Reply::Done {
            message: "resumed: reconnecting and syncing".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Records what the switch did, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Pausable for Recorder {
        fn announce(&self, state: AnnouncedState) -> impl Future<Output = ()> + Send {
            self.0.lock().push(format!("announce {state:?}"));
            std::future::ready(())
        }
        fn set_connections_paused(&self, paused: bool) {
            self.0.lock().push(format!("connections paused {paused}"));
        }
        fn redial(&self) {
            self.0.lock().push("redial".into());
        }
    }

    fn message(reply: Reply) -> String {
        match reply {
            Reply::Done { message } => message,
            other => panic!("answered {other:?}"),
        }
    }

    /// A resume during the pause's grace wins: it says it resumed, the pause says it did not
    /// take effect, and the connections are never closed.
    #[tokio::test]
    async fn a_resume_during_the_pause_grace_wins() {
        let switch = Arc::new(PauseSwitch::default());
        let node = Arc::new(Recorder::default());
        let pausing = {
            let (switch, node) = (switch.clone(), node.clone());
            tokio::spawn(
                async move { message(switch.pause(&*node, Duration::from_millis(500)).await) },
            )
        };
        while node.0.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(message(switch.resume(&*node).await).starts_with("resumed"));
        assert_eq!(pausing.await.unwrap(), PAUSE_CANCELLED);
        assert_eq!(
            *node.0.lock(),
            ["announce Paused", "announce Alive", "redial"]
        );
        // Not paused: a second resume says so; a pause now takes effect.
        assert_eq!(message(switch.resume(&*node).await), "not paused");
        assert!(message(switch.pause(&*node, Duration::ZERO).await).starts_with("paused"));
        assert_eq!(node.0.lock().last().unwrap(), "connections paused true");
        assert!(message(switch.resume(&*node).await).starts_with("resumed"));
        assert_eq!(node.0.lock()[5], "connections paused false");
    }
}
