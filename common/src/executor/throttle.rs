//! Waiting for a busy shard: before each revision an `up` run applies, before each
//! statement of a revision run outside a transaction, and before each batch of a backfill
//! job after its first, the run asks its [`Throttle`] whether a
//! signal (replica lag, active sessions, an operator's query) is above its threshold, and waits
//! while one is, sampling again every [`SAMPLE_EVERY`]. It never waits inside a transaction,
//! where locks are held. Past the throttle's longest wait for the whole run, it stops with
//! [`ExecError::Throttled`] naming the signal; waits on an unbounded signal (an operator's
//! fleet throttle) do not count toward it. When the signal waited on changes, the old one's
//! wait is reported as over and the new one's as begun.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{ExecutionEvent, Executor};
use crate::engine::ShardEngine;
use crate::error::ExecError;

/// How often a waiting run samples the shard again.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A signal above its threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// `replica lag`, `active sessions`, `query`.
    pub signal: String,
    /// What was read against what is allowed: `replica lag 7.2s > 5s`.
    pub detail: String,
    /// Whether waiting on it counts toward the throttle's longest wait. An operator's fleet
    /// throttle does not: it ends when lifted or when it expires.
    pub bounded: bool,
}

/// What a run waits on.
pub trait Throttle: Send + Sync + Debug {
    /// Samples the shard now: the first signal above its threshold, if one is. A sample that
    /// cannot be read holds nothing up.
    fn busy(&self) -> Pin<Box<dyn Future<Output = Option<Busy>> + Send + '_>>;
    /// The longest a run may wait in all.
    fn max_wait(&self) -> Duration;
}

/// How long a run has waited, in all.
#[derive(Debug, Default)]
pub(super) struct Waited(AtomicU64);

impl Waited {
    pub(super) fn total(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }

    fn add(&self, waited: Duration) {
        let millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(millis, Ordering::Relaxed);
    }
}

impl<'a, E: ShardEngine> Executor<'a, E> {
    /// Waits on `throttle` before each revision applied and each statement run outside a
    /// transaction.
    pub fn throttle(mut self, throttle: &'a dyn Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Waits while the throttle finds the shard busy before `next`; an error once the run's
    /// waits add up past the throttle's bound. A stop ends the wait (the caller checks it).
    pub(super) async fn throttled(&self, next: &str) -> Result<(), ExecError> {
        let Some(throttle) = self.throttle else {
            return Ok(());
        };
        // The signal waited on, and since when: each signal's wait is reported on its own.
        let mut waiting: Option<(Busy, Instant)> = None;
        loop {
            let Some(busy) = throttle.busy().await else {
                if let Some((last, since)) = waiting {
                    self.throttle_event(next, last, since.elapsed(), true);
                }
                return Ok(());
            };
            if busy.bounded && self.waited.total() >= throttle.max_wait() {
                if let Some((last, since)) = waiting {
                    self.throttle_event(next, last, since.elapsed(), false);
                }
                return Err(ExecError::Throttled {
                    shard: self.shard(),
                    next: next.to_owned(),
                    detail: busy.detail,
                    waited_secs: self.waited.total().as_secs(),
                });
            }
            if waiting
                .as_ref()
                .is_none_or(|(last, _)| last.signal != busy.signal)
            {
                if let Some((last, since)) = waiting.take() {
                    self.throttle_event(next, last, since.elapsed(), true);
                }
                tracing::info!(shard = %self.engine.shard(), %next, detail = %busy.detail, "throttled: waiting for the shard to be less busy");
                self.throttle_event(next, busy.clone(), Duration::ZERO, false);
                waiting = Some((busy.clone(), Instant::now()));
            }
            tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(SAMPLE_EVERY) => {
                    if busy.bounded {
                        self.waited.add(SAMPLE_EVERY);
                    }
                }
            }
        }
    }

    fn throttle_event(&self, next: &str, busy: Busy, waited: Duration, resumed: bool) {
        self.emit(ExecutionEvent::Throttled {
            next: next.to_owned(),
            signal: busy.signal,
            detail: busy.detail,
            waited,
            resumed,
        });
    }
}
