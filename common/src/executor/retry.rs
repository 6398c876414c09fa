//! Bounded retries of lock conflicts: exponential backoff with jitter, each retry reported.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How often, and how patiently, a step retries after losing a lock race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for LockRetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The result of the last attempt and how many attempts were made.
#[derive(Debug)]
pub struct Attempts<T, E> {
    pub result: Result<T, E>,
    pub attempts: usize,
}

impl LockRetryPolicy {
    /// Runs `attempt` until it succeeds, fails with something other than a lock conflict,
    /// or the retries are spent; `on_retry(error, attempt, wait)` hears of every retry.
    pub async fn run<T, E, F, Fut>(
        &self,
        is_lock_conflict: impl Fn(&E) -> bool,
        on_retry: impl Fn(&E, usize, Duration),
        mut attempt: F,
    ) -> Attempts<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = attempt().await;
            let delay = match &result {
                Err(error) if is_lock_conflict(error) => delays.next(),
                _ => None,
            };
            let (Some(delay), Err(error)) = (delay, &result) else {
                return Attempts { result, attempts };
            };
            on_retry(error, attempts, delay);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_lock_conflicts_a_bounded_number_of_times() {
        let policy = LockRetryPolicy {
            max_retries: 3,
            ..LockRetryPolicy::default()
        };
        let mut calls = 0;
        let outcome: Attempts<(), &str> = policy
            .run(
                |e: &&str| *e == "locked",
                |_: &&str, _, _| {},
                || {
                    calls += 1;
                    async { Err("locked") }
                },
            )
            .await;
        assert_eq!(outcome.attempts, 4);
        assert_eq!(calls, 4);
        assert_eq!(outcome.result, Err("locked"));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_and_success_stop_at_once() {
        let policy = LockRetryPolicy::default();
        let failed: Attempts<(), &str> = policy
            .run(
                |e: &&str| *e == "locked",
                |_: &&str, _, _| {},
                || async { Err("syntax") },
            )
            .await;
        assert_eq!(failed.attempts, 1);
        let mut calls = 0;
        let succeeded: Attempts<u8, &str> = policy
            .run(
                |e: &&str| *e == "locked",
                |_: &&str, _, _| {},
                || {
                    calls += 1;
                    let result = if calls < 3 { Err("locked") } else { Ok(7) };
                    async move { result }
                },
            )
            .await;
        assert_eq!((succeeded.result, succeeded.attempts), (Ok(7), 3));
    }
}
