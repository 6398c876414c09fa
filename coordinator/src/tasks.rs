//! Tasks a replica owns. Every background task is spawned on a [`TaskSet`]: tracked, told to
//! stop through the set's token, and awaited when the replica shuts down, stage by stage, each
//! stage under a deadline (no detached `spawn`, no abort of work in the middle of a write).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tasks stopped and awaited together.
#[derive(Debug, Clone, Default)]
pub struct TaskSet {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl TaskSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` as one of the set; it should end once [`TaskSet::stopping`] is cancelled.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Cancelled when the set is told to stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Tells every task to stop and waits for them, at most `deadline`; false when some were
    /// still running then (they are left to the runtime's end).
    pub async fn stop(&self, deadline: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_tasks_that_heed_it_and_gives_up_on_others() {
        let heeding = TaskSet::new();
        let token = heeding.stopping().clone();
        let ended = heeding.spawn(async move {
            token.cancelled().await;
            "ended"
        });
        assert!(heeding.stop(Duration::from_secs(1)).await);
        assert_eq!(ended.await.expect("joined"), "ended");
        let stubborn = TaskSet::new();
        stubborn.spawn(std::future::pending::<()>());
        assert!(!stubborn.stop(Duration::from_secs(1)).await);
    }
}
