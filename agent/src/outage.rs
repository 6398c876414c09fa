//! Riding out a database outage. A lost connection or an unreachable server during a run is
//! transient until proven otherwise (a restart, a failover, a dropped link): the step that
//! lost the server runs again once it answers, resuming from the shard's ledger, and the shard
//! fails only when the server stays away longer than the agent's bound.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use fleetshift_common::proto::v1::{DatabaseOutage, ErrorDetail, ErrorKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::duties::DutyReport;

/// How long a run waits for its database server by default.
pub const DEFAULT_OUTAGE_WAIT: Duration = Duration::from_secs(120);

/// Why a step of a run did not finish.
#[derive(Debug)]
pub enum StepFailure {
    /// The server went away (or restarted) under it: the step runs again once it answers.
    Lost(String),
    /// The step's own outcome: final.
    Final(ErrorDetail),
}

impl std::fmt::Debug for Patience<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Patience")
            .field("shard", &self.shard)
            .field("server", &self.server)
            .field("bound", &self.bound)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// One run's patience with its database server: every loss of the server since the last step
/// that succeeded shares one bound. The loss and the server's return are reported as progress.
pub struct Patience<'a> {
    shard: &'a str,
    /// Where the server is, for messages (never credentials).
    server: String,
    bound: Duration,
    stop: &'a CancellationToken,
    report: &'a dyn DutyReport,
    /// When the server was first lost, while it has not come back.
    since: Option<Instant>,
    /// Pauses between attempts, reset when the server comes back.
    pauses: Option<backon::ExponentialBackoff>,
}

impl<'a> Patience<'a> {
    pub fn new(
        shard: &'a str,
        server: String,
        bound: Duration,
        stop: &'a CancellationToken,
        report: &'a dyn DutyReport,
    ) -> Self {
        Self {
            shard,
            server,
            bound,
            stop,
            report,
            since: None,
            pauses: None,
        }
    }

    fn reported(&self, step: &str, detail: &str, waited: Duration, recovered: bool) {
        self.report.database_outage(&DatabaseOutage {
            server: self.server.clone(),
            step: step.to_owned(),
            detail: detail.to_owned(),
            waited: prost_types::Duration::try_from(waited).ok(),
            recovered,
            bound: prost_types::Duration::try_from(self.bound).ok(),
        });
    }

    /// Runs `step` until it succeeds or fails for a reason of its own; after each loss of the
    /// server it pauses and runs it again, until the bound is spent or the run is told to stop.
    pub async fn persist<T, F, Fut>(&mut self, what: &str, mut step: F) -> Result<T, ErrorDetail>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepFailure>>,
    {
        loop {
            match step().await {
                Ok(value) => {
                    if let Some(since) = self.since.take() {
                        tracing::info!(shard = %self.shard, server = %self.server, step = what, waited_ms = since.elapsed().as_millis() as u64, "the database server is back; the step ran again");
                        self.reported(what, "", since.elapsed(), true);
                    }
                    self.pauses = None;
                    return Ok(value);
                }
                Err(StepFailure::Final(detail)) => return Err(detail),
                Err(StepFailure::Lost(detail)) => self.pause(what, &detail).await?,
            }
        }
    }

    /// Waits before the next attempt; `Err` once the bound is spent or the run is stopped.
    async fn pause(&mut self, what: &str, detail: &str) -> Result<(), ErrorDetail> {
        let since = match self.since {
            Some(since) => since,
            None => {
                self.reported(what, detail, Duration::ZERO, false);
                *self.since.insert(Instant::now())
            }
        };
        let waited = since.elapsed();
        if waited >= self.bound {
            return Err(ErrorDetail {
                kind: ErrorKind::Unreachable.into(),
                message: format!(
                    "shard {}: the database server {} did not come back within {:?} (waited {:.1}s while {what}); last error: {detail}\nnext: bring the server back (or fix the address), then apply the plan's shard again; everything before the outage is complete and recorded",
                    self.shard,
                    self.server,
                    self.bound,
                    waited.as_secs_f64(),
                ),
            });
        }
        let pause = self
            .pauses
            .get_or_insert_with(pauses)
            .next()
            .unwrap_or(MAX_PAUSE)
            .min(self.bound - waited);
        tracing::warn!(shard = %self.shard, server = %self.server, step = what, %detail, retry_in_ms = pause.as_millis() as u64, waited_ms = waited.as_millis() as u64, "lost the database server; waiting for it");
        tokio::select! {
            () = self.stop.cancelled() => Err(ErrorDetail {
                kind: ErrorKind::Stopped.into(),
                message: format!(
                    "shard {}: stopped while waiting for the database server {} ({what}); everything before the outage is complete and recorded",
                    self.shard, self.server
                ),
            }),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }
}

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// 100 ms, doubling with jitter up to [`MAX_PAUSE`]: a restart (a fraction of a second) is
/// caught within a few attempts, a failover within seconds.
fn pauses() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_PAUSE)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use fleetshift_common::proto::v1::{BaselineMeasured, PreflightCheck, RollbackStarted};

    use super::*;
    use crate::duties::backup::Manifest;

    /// Keeps the outages reported; nothing else happens in these tests.
    #[derive(Default)]
    struct Outages(Mutex<Vec<DatabaseOutage>>);

    impl DutyReport for Outages {
        fn check(&self, _: PreflightCheck) {}
        fn backup(&self, _: &Manifest) {}
        fn baseline(&self, _: &BaselineMeasured) {}
        fn rollback_started(&self, _: &RollbackStarted) {}
        fn database_outage(&self, outage: &DatabaseOutage) {
            self.0.lock().expect("outages").push(outage.clone());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_loses_the_server_runs_again_once_it_answers() {
        let stop = CancellationToken::new();
        let outages = Outages::default();
        let mut patience = Patience::new(
            "s1",
            "127.0.0.1:5432".to_owned(),
            DEFAULT_OUTAGE_WAIT,
            &stop,
            &outages,
        );
        let attempts = AtomicUsize::new(0);
        let started = Instant::now();
        let value = patience
            .persist("applying", || async {
                if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(StepFailure::Lost("connection refused".to_owned()))
                } else {
                    Ok(7)
                }
            })
            .await
            .expect("the server came back");
        assert_eq!(value, 7);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        let outages = outages.0.lock().expect("outages");
        let seen: Vec<(bool, &str)> = outages
            .iter()
            .map(|outage| (outage.recovered, outage.detail.as_str()))
            .collect();
        assert_eq!(
            seen,
            [(false, "connection refused"), (true, "")],
            "the loss once, then the return"
        );
        assert!(
            outages[1]
                .waited
                .is_some_and(|waited| waited.nanos > 0 || waited.seconds > 0)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stays_away_fails_the_step_naming_it_and_the_wait() {
        let stop = CancellationToken::new();
        let outages = Outages::default();
        let mut patience = Patience::new(
            "s1",
            "db-1:5432".to_owned(),
            Duration::from_secs(120),
            &stop,
            &outages,
        );
        let started = Instant::now();
        let failed = patience
            .persist("applying revision 3", || async {
                Err::<(), _>(StepFailure::Lost("connection refused".to_owned()))
            })
            .await
            .expect_err("never came back");
        assert_eq!(failed.kind, i32::from(ErrorKind::Unreachable));
        assert!(failed.message.contains("db-1:5432"), "{}", failed.message);
        assert!(
            failed.message.contains("within 120s (waited 120.0s"),
            "{}",
            failed.message
        );
        assert!(
            failed.message.contains("connection refused"),
            "{}",
            failed.message
        );
        assert_eq!(started.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_is_not_retried_and_a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        let outages = Outages::default();
        let mut patience =
            Patience::new("s1", "db".to_owned(), DEFAULT_OUTAGE_WAIT, &stop, &outages);
        let attempts = AtomicUsize::new(0);
        let failed = patience
            .persist("applying", || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StepFailure::Final(ErrorDetail {
                    kind: ErrorKind::Failed.into(),
                    message: "syntax error".to_owned(),
                }))
            })
            .await
            .expect_err("final");
        assert_eq!(failed.message, "syntax error");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        stop.cancel();
        let stopped = patience
            .persist("applying", || async {
                Err::<(), _>(StepFailure::Lost("refused".to_owned()))
            })
            .await
            .expect_err("stopped");
        assert_eq!(stopped.kind, i32::from(ErrorKind::Stopped));
    }
}
