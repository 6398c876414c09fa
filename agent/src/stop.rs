//! Telling a run to stop, and why. An operator's cancel and the agent's own safety stop a run
//! the same way (its running statement is cancelled), but they mean different things for its
//! task: a cancel ends it, while a stop for the agent's safety (the session or its lease lost,
//! the agent shutting down, a newer assignment for the shard) only interrupts it, and the
//! leader dispatches it again under a newer claim.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Why a run was told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// The coordinator withdrew the assignment (an operator cancelled the plan, or its claim
    /// is gone); the session logs the reason it gave.
    Withdrawn,
    /// The agent stopped it for its own safety; why.
    Interrupted(String),
}

/// A run's stop token and the cause of the first stop; a stop of the parent token (the
/// session's work ending) without a cause of its own counts as an interruption.
#[derive(Debug, Clone)]
pub struct StopSignal {
    token: CancellationToken,
    cause: Arc<OnceLock<StopCause>>,
}

impl StopSignal {
    /// A signal that also fires when `parent` is cancelled.
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            cause: Arc::new(OnceLock::new()),
        }
    }

    /// Stops the run; the first cause given is the one kept.
    pub fn stop(&self, cause: StopCause) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    /// The token the run's work watches.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why the run was stopped, once it was.
    pub fn cause(&self) -> Option<StopCause> {
        if !self.token.is_cancelled() {
            return None;
        }
        Some(self.cause.get().cloned().unwrap_or_else(|| {
            StopCause::Interrupted("the agent's session with the coordinator ended".to_owned())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_is_kept_and_a_parents_stop_is_an_interruption() {
        let parent = CancellationToken::new();
        let withdrawn = StopSignal::child_of(&parent);
        assert_eq!(withdrawn.cause(), None);
        withdrawn.stop(StopCause::Withdrawn);
        withdrawn.stop(StopCause::Interrupted("shutting down".to_owned()));
        assert_eq!(withdrawn.cause(), Some(StopCause::Withdrawn));
        let orphaned = StopSignal::child_of(&parent);
        parent.cancel();
        assert!(orphaned.token().is_cancelled());
        assert!(matches!(orphaned.cause(), Some(StopCause::Interrupted(_))));
    }
}
