//! The background tasks of one node, stopped together: every task is spawned through
//! [`Workers`], is dropped at its next await once the node's one [`CancellationToken`] is
//! cancelled, and [`Workers::stop`] returns when every one of them has ended.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One node's tasks and their cancellation token. Clones share both.
#[derive(Clone, Default)]
pub struct Workers {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Workers sharing this set's tasks (stopping this set waits for theirs too) with a token
    /// of their own, cancelled with this set's or alone ([`Workers::cancel`]): one worker a
    /// node stops before the others.
    pub fn child(&self) -> Self {
        Self {
            cancel: self.cancel.child_token(),
            tracker: self.tracker.clone(),
        }
    }

    /// Spawns `task` on the current runtime; it runs until it ends or the workers are cancelled.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            cancel.run_until_cancelled(task).await;
        });
    }

    /// [`Workers::spawn`] on the runtime of `rt`.
    pub fn spawn_on<F>(&self, task: F, rt: &tokio::runtime::Handle)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn_on(
            async move {
                cancel.run_until_cancelled(task).await;
            },
            rt,
        );
    }

    /// Runs `task` on the blocking pool, counted among the workers (it is not interrupted:
    /// stopping waits for it to return).
    pub fn spawn_blocking<F>(&self, task: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.tracker.spawn_blocking(task);
    }

    /// Cancels every task (spawned before or after).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether these workers were cancelled (a child's own cancel, or its parent's).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Tasks not yet ended.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task and waits, at most `limit`, until all have ended; returns how many
    /// had not (0: all ended).
    pub async fn stop(&self, limit: Duration) -> usize {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(limit, self.tracker.wait()).await;
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_endless_tasks_and_waits_for_them() {
        let workers = Workers::new();
        let child = workers.child();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        for w in [&workers, &child] {
            let tx = tx.clone();
            w.spawn(async move {
                // Dropped with the task: the channel closes when both have ended.
                let _tx = tx;
                std::future::pending::<()>().await
            });
        }
        drop(tx);
        child.cancel();
        assert!(!workers.is_cancelled(), "a child's cancel is its own");
        assert_eq!(workers.stop(Duration::from_secs(5)).await, 0);
        assert!(rx.recv().await.is_none(), "every task ended");
        assert_eq!(workers.running(), 0);
    }
}
