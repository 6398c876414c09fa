//! The fenced executor: applies and reverts revisions on ONE shard so that a retry, a crash,
//! a stale agent or a concurrent migrator can never apply a revision twice or half.
//!
//! Every run holds the engine's migrator lock (released on every path), moves the shard's
//! fence to its token up front, and then runs each revision as fenced steps:
//! transactional revisions in ONE fenced transaction; non-transactional ones as a fenced
//! `started` record, autocommit statements (the fence re-read before each), and a fenced
//! `applied` record. Lock conflicts are retried a bounded number of times.
//!
//! - `status`: comparing a set with the ledger and planning (pure);
//! - `transactional`, `outside_transaction`: the two kinds of step; `backfill`: a revision
//!   run in batches of its key range, each its own fenced transaction;
//! - `resolve`, `adopt`, `drift`: operator decisions and imported histories;
//! - `failure`: errors that name shard, revision, file:line and the next step;
//! - `retry`: bounded lock-conflict retries; `report`: what a run did;
//! - `fingerprints`: the schema before and after a run, its fingerprint kept in the ledger.
//! - `gate`: whether a revision may start now (a maintenance window).
//! - `running`: the statement running now, reported as it starts and while it runs.
//! - `throttle`: waiting between revisions (and statements outside a transaction) while the
//!   shard is busy.

mod adopt;
mod backfill;
mod drift;
mod events;
mod failure;
mod fingerprints;
mod gate;
mod outside_transaction;
mod report;
mod resolve;
mod retry;
mod running;
mod seed;
mod status;
mod throttle;
mod tolerated;
mod transactional;
mod version_table;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use events::ExecutionEvent;
pub use fingerprints::SchemaFingerprints;
pub use gate::RevisionGate;
pub use report::{RunReport, StepOutcome, StepReport};
pub use retry::LockRetryPolicy;
pub use status::{RevisionState, ShardStatus};
pub use throttle::{Busy, SAMPLE_EVERY, Throttle};

use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::fence::FenceToken;
use crate::ledger::{LedgerRecord, RevisionStatus, Writer};
use crate::proto::v1::DataCheck;
use crate::schema;
use crate::source::{MigrationSet, Revision, Script};
use crate::telemetry::traces::mark_failed;

/// Who runs, under which token. `fence_token: None` reuses the shard's current token (a
/// local run that neither fences out nor is fenced by the fleet's last claim).
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub plan_id: Option<String>,
    pub fence_token: Option<FenceToken>,
}

/// How often a running statement is reported again, by default.
pub const STATEMENT_UPDATES: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct ExecutorSettings {
    pub lock_retry: LockRetryPolicy,
    /// How long to wait for another migrator to finish before giving up.
    pub migrator_lock_wait: Duration,
    /// For messages: the per-attempt lock timeout the engine was connected with.
    pub lock_timeout: Duration,
    /// How often a running statement is reported again (see [`ExecutionEvent::StatementRunning`]).
    pub statement_updates: Duration,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            lock_retry: LockRetryPolicy::default(),
            migrator_lock_wait: Duration::from_secs(60),
            lock_timeout: crate::engine::Timeouts::default().lock_timeout,
            statement_updates: STATEMENT_UPDATES,
        }
    }
}

/// What `up` or `down` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Up: the last version to apply (`None`: everything pending). Down: the version to return
    /// to (`None`: revert only the newest applied revision; `"base"`: revert everything).
    pub target: Option<String>,
    /// Proceed despite drifted revisions; the reason is recorded on the shard.
    pub allow_drift: Option<String>,
}

/// The final state an operator assigns to an interrupted revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Applied,
    Failed,
}

#[derive(Debug)]
pub struct Executor<'a, E: ShardEngine> {
    engine: &'a E,
    identity: Identity,
    settings: ExecutorSettings,
    /// Checked before every revision and every autocommit statement.
    stop: CancellationToken,
    /// Whether a stop cancels the running statement too.
    interrupt: bool,
    /// Where progress goes, if anyone listens.
    events: Option<mpsc::UnboundedSender<ExecutionEvent>>,
    /// Tables whose data no transactional revision applied may change.
    verify_data: &'a [DataCheck],
    /// Asked before each revision applied whether it may start.
    gate: Option<&'a dyn RevisionGate>,
    /// What the run waits on between revisions and statements outside a transaction.
    throttle: Option<&'a dyn Throttle>,
    /// How long it has waited, in all.
    waited: throttle::Waited,
    /// The statement running now, for its updates.
    running: running::Running,
}

/// Which way a run moves the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl<'a, E: ShardEngine> Executor<'a, E> {
    pub fn new(engine: &'a E, identity: Identity, settings: ExecutorSettings) -> Self {
        Self {
            engine,
            identity,
            settings,
            stop: CancellationToken::new(),
            interrupt: false,
            events: None,
            verify_data: &[],
            gate: None,
            throttle: None,
            waited: throttle::Waited::default(),
            running: running::Running::default(),
        }
    }

    /// Checks inside each transactional revision applied that it left the data of `checks`
    /// as it found them; one that changed them is rolled back whole and fails.
    pub fn verify_data(mut self, checks: &'a [DataCheck]) -> Self {
        self.verify_data = checks;
        self
    }

    /// Stops the run at the next revision or autocommit statement once `stop` is cancelled;
    /// a statement running then runs to its end.
    pub fn stop_when(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Like [`Executor::stop_when`], and a statement running then is cancelled by the server:
    /// a transactional revision is rolled back whole, an autocommit one stays `started` for
    /// the next run to resume. For a claim that is ending (cancelled rollout, lost session).
    pub fn interrupt_when(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self.interrupt = true;
        self
    }

    /// Runs `work` (statements on the shard); told to stop meanwhile (under
    /// [`Executor::interrupt_when`]), asks the engine to cancel the running statement, then
    /// waits for `work`, which ends in that error.
    async fn interruptible<T>(&self, work: impl Future<Output = T>) -> T {
        if !self.interrupt {
            return work.await;
        }
        let mut work = std::pin::pin!(work);
        tokio::select! {
            biased;
            done = &mut work => done,
            () = self.stop.cancelled() => {
                self.engine.interrupt().await;
                work.await
            }
        }
    }

    /// Whether a failure now may be the server cancelling a statement on our request.
    fn interrupted(&self) -> bool {
        self.interrupt && self.stop.is_cancelled()
    }

    /// The error of a run stopped while `what` was running (cancelled by the server).
    fn stopped_during(&self, what: String) -> ExecError {
        ExecError::Stopped {
            shard: self.shard(),
            next: what,
            reason: "the run was told to stop and the statement running was cancelled".to_owned(),
        }
    }

    /// An error if the run has been told to stop before `next`.
    fn check_stop(&self, next: &str) -> Result<(), ExecError> {
        if self.stop.is_cancelled() {
            return Err(ExecError::Stopped {
                shard: self.shard(),
                next: next.to_owned(),
                reason: "the run was told to stop".to_owned(),
            });
        }
        Ok(())
    }

    fn shard(&self) -> String {
        self.engine.shard().to_owned()
    }

    /// The shard's ledger compared with `set`; reads only.
    pub async fn status(&self, set: &MigrationSet) -> Result<ShardStatus, ExecError> {
        let set = set.for_engine(E::ENGINE);
        let ledger = self.engine.read_ledger().await?;
        Ok(ShardStatus::compare(self.engine.shard(), set, &ledger))
    }

    /// The revisions a run would apply (in order) or revert (newest first); reads only, for
    /// `--dry-run`.
    pub async fn plan<'s>(
        &self,
        set: &'s MigrationSet,
        direction: Direction,
        request: &Request,
    ) -> Result<Vec<&'s Revision>, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.status(set)
            .await?
            .revisions_to_run(set, direction, request)
    }

    pub async fn up(&self, set: &MigrationSet, request: &Request) -> Result<RunReport, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.with_migrator_lock(|writer| self.up_locked(set, request, writer))
            .await
    }

    pub async fn down(
        &self,
        set: &MigrationSet,
        request: &Request,
    ) -> Result<RunReport, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.with_migrator_lock(|writer| self.down_locked(set, request, writer))
            .await
    }

    /// Records the outcome of an interrupted revision after an operator finished or undid it.
    pub async fn resolve(
        &self,
        set: &MigrationSet,
        version: &str,
        resolution: Resolution,
        reason: &str,
    ) -> Result<RunReport, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.with_migrator_lock(|writer| {
            self.resolve_locked(set, version, resolution, reason, writer)
        })
        .await
    }

    /// Takes the migrator lock, prepares the ledger and the fence, runs `body`, and releases
    /// the lock whatever `body` returned.
    async fn with_migrator_lock<'s, F, Fut>(&'s self, body: F) -> Result<RunReport, ExecError>
    where
        F: FnOnce(Writer) -> Fut,
        Fut: Future<Output = Result<RunReport, ExecError>> + 's,
    {
        let lock = self
            .engine
            .lock_out_other_migrators(self.settings.migrator_lock_wait)
            .await?;
        let result = match self.prepare().await {
            Ok(writer) => body(writer).await,
            Err(error) => Err(error),
        };
        self.engine.release_migrator_lock(lock).await;
        result
    }

    /// Creates the ledger if needed and moves the fence to this run's token, so a stale
    /// holder is fenced out from this moment on.
    async fn prepare(&self) -> Result<Writer, ExecError> {
        self.engine.ensure_ledger().await?;
        let fence_token = match self.identity.fence_token {
            Some(token) => token,
            None => self.engine.current_fence().await?,
        };
        let writer = Writer {
            fence_token,
            agent_id: self.identity.agent_id.clone(),
            plan_id: self.identity.plan_id.clone(),
        };
        let claim = FencedTransaction::fence_only();
        self.engine
            .fenced_transaction(&writer, claim)
            .await
            .map_err(|error| self.bookkeeping_error(error, &writer, "claiming the fence"))?;
        Ok(writer)
    }

    async fn up_locked(
        &self,
        set: &MigrationSet,
        request: &Request,
        writer: Writer,
    ) -> Result<RunReport, ExecError> {
        let ledger = self.engine.read_ledger().await?;
        if ledger.is_empty() {
            self.refuse_unadopted_history(set).await?;
        }
        let status = ShardStatus::compare(self.engine.shard(), set, &ledger);
        let steps = status.plan_up(
            set,
            request.target.as_deref(),
            request.allow_drift.is_some(),
        )?;
        if let Some(reason) = &request.allow_drift {
            self.record_drift_overrides(&status, reason, &writer)
                .await?;
        }
        let before = self.schema_before(steps.len()).await?;
        let kept = self.kept_version_table(set).await?;
        let mut applied = version_table::applied(set, &status);
        let mut reports = Vec::with_capacity(steps.len());
        for index in steps {
            let revision = &set.revisions[index];
            let version = revision.version.as_str();
            let rows = kept.map(|kept| kept.after(&applied, version, Direction::Up));
            let next = format!("revision {}", revision.label());
            self.throttled(&next).await?;
            self.check_stop(&next)?;
            self.check_gate(revision)?;
            self.revision_started(revision, revision.up.statements().len());
            let predecessor = index
                .checked_sub(1)
                .map(|previous| &set.revisions[previous]);
            let resuming = status.revisions[index].status == Some(RevisionStatus::Started);
            let step = async {
                if let (Some(backfill), [statement]) =
                    (&revision.backfill, revision.up.statements())
                {
                    let job = backfill::Job {
                        revision,
                        backfill,
                        statement,
                    };
                    self.apply_backfill(job, predecessor, resuming, &writer, rows.as_ref())
                        .await
                } else if revision.transactional {
                    self.apply_in_transaction(
                        revision,
                        predecessor,
                        Direction::Up,
                        &writer,
                        rows.as_ref(),
                    )
                    .await
                } else {
                    self.apply_outside_transaction(
                        revision,
                        predecessor,
                        resuming,
                        &writer,
                        rows.as_ref(),
                    )
                    .await
                }
            };
            let report = in_revision_span(revision, Direction::Up, step).await?;
            applied.push(version);
            self.revision_finished(&report);
            reports.push(report);
        }
        self.finish(set, reports, &writer, before.as_ref()).await
    }

    async fn down_locked(
        &self,
        set: &MigrationSet,
        request: &Request,
        writer: Writer,
    ) -> Result<RunReport, ExecError> {
        let status = self.status(set).await?;
        let steps = status.plan_down(
            set,
            request.target.as_deref(),
            request.allow_drift.is_some(),
        )?;
        if let Some(reason) = &request.allow_drift {
            self.record_drift_overrides(&status, reason, &writer)
                .await?;
        }
        let before = self.schema_before(steps.len()).await?;
        let kept = self.kept_version_table(set).await?;
        let mut applied = version_table::applied(set, &status);
        let mut reports = Vec::with_capacity(steps.len());
        for index in steps {
            let revision = &set.revisions[index];
            let version = revision.version.as_str();
            let rows = kept.map(|kept| kept.after(&applied, version, Direction::Down));
            self.check_stop(&format!("reverting revision {}", revision.label()))?;
            let down_statements = revision
                .down
                .as_ref()
                .map_or(0, |script| script.statements().len());
            self.revision_started(revision, down_statements);
            // Repeatable scripts are never reverted: the guard looks past them.
            let successor = set.revisions[index + 1..]
                .iter()
                .find(|revision| !revision.is_repeatable());
            let step = async {
                if revision.transactional {
                    self.apply_in_transaction(
                        revision,
                        successor,
                        Direction::Down,
                        &writer,
                        rows.as_ref(),
                    )
                    .await
                } else {
                    self.revert_outside_transaction(revision, successor, &writer, rows.as_ref())
                        .await
                }
            };
            let report = in_revision_span(revision, Direction::Down, step).await?;
            applied.retain(|other| *other != version);
            self.revision_finished(&report);
            reports.push(report);
        }
        self.finish(set, reports, &writer, before.as_ref()).await
    }

    /// The run's report; when `before` was read, the schema it left, recorded.
    async fn finish(
        &self,
        set: &MigrationSet,
        steps: Vec<StepReport>,
        writer: &Writer,
        before: Option<&schema::Snapshot>,
    ) -> Result<RunReport, ExecError> {
        let status = self.status(set).await?;
        let schema = match before {
            Some(before) => Some(
                self.schema_after(before, status.current_version.as_deref(), writer)
                    .await?,
            ),
            None => None,
        };
        Ok(RunReport {
            shard: self.shard(),
            fence_token: writer.fence_token,
            steps,
            current_version: status.current_version,
            schema,
        })
    }

    fn record(
        &self,
        revision: &Revision,
        status: RevisionStatus,
        keep_started_at: bool,
        duration: Option<Duration>,
        statements_run: usize,
        error: Option<String>,
    ) -> LedgerRecord {
        LedgerRecord {
            version: revision.version.to_string(),
            name: revision.name.clone(),
            checksum: revision.checksum.clone(),
            status,
            transactional: revision.transactional,
            keep_started_at,
            duration_ms: duration
                .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
            statements_run: i64::try_from(statements_run).unwrap_or(i64::MAX),
            error,
        }
    }

    fn down_script<'r>(&self, revision: &'r Revision) -> Result<&'r Script, ExecError> {
        revision
            .down
            .as_ref()
            .ok_or_else(|| ExecError::MissingDownScripts {
                shard: self.shard(),
                revisions: vec![revision.label()],
            })
    }
}

/// Runs one revision's step in its span, marked failed when the step fails.
async fn in_revision_span(
    revision: &Revision,
    direction: Direction,
    step: impl Future<Output = Result<StepReport, ExecError>>,
) -> Result<StepReport, ExecError> {
    let span = tracing::info_span!(
        "revision",
        fleetshift.version = %revision.version,
        fleetshift.revision = %revision.label(),
        fleetshift.direction = ?direction,
        fleetshift.transactional = revision.transactional,
        fleetshift.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let result = step.instrument(span.clone()).await;
    match &result {
        Ok(report) => {
            span.record("fleetshift.outcome", tracing::field::debug(report.outcome));
        }
        Err(error) => mark_failed(&span, error),
    }
    result
}

fn step_report(
    revision: &Revision,
    outcome: StepOutcome,
    statements_run: usize,
    duration: Duration,
    lock_retries: usize,
) -> StepReport {
    StepReport {
        version: revision.version.to_string(),
        name: revision.name.clone(),
        outcome,
        transactional: revision.transactional,
        statements_run,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        lock_retries,
        tolerated_failure: None,
    }
}
