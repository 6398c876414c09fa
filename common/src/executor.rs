//! The fenced executor: applies and reverts revisions on ONE shard so that a retry, a crash,
//! a stale agent or a concurrent migrator can never apply a revision twice or half.
//!
//! Every run holds the engine's migrator lock (released on every path), moves the shard's
//! fence to its token up front, and then runs each revision as fenced steps:
//! transactional revisions in ONE fenced transaction; non-transactional ones as a fenced
//! `started` record, autocommit statements (the fence re-read before each), and a fenced
//! `applied` record. Lock conflicts are retried a bounded number of times.

mod adopt;
mod report;
mod retry;
mod status;

use std::time::{Duration, Instant};

pub use report::{RunReport, StepOutcome, StepReport};
pub use retry::LockRetryPolicy;
pub use status::{RevisionState, ShardStatus};

use crate::engine::{AutocommitOutcome, FencedTransaction, ShardEngine, StatementError, TxError};
use crate::error::{ExecError, StatementFailure};
use crate::ledger::{
    AuditRecord, Expect, Guard, GuardViolation, LedgerRecord, RevisionStatus, Writer,
};
use crate::source::{MigrationSet, Revision, Script};
use crate::statements::Statement;

/// Who runs, under which token. `fence_token: None` reuses the shard's current token (a
/// local run that neither fences out nor is fenced by the fleet's last claim).
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub plan_id: Option<String>,
    pub fence_token: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct ExecutorSettings {
    pub lock_retry: LockRetryPolicy,
    /// How long to wait for another migrator to finish before giving up.
    pub migrator_lock_wait: Duration,
    /// For messages: the per-attempt lock timeout the engine was connected with.
    pub lock_timeout: Duration,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            lock_retry: LockRetryPolicy::default(),
            migrator_lock_wait: Duration::from_secs(60),
            lock_timeout: crate::engine::Timeouts::default().lock_timeout,
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
        }
    }

    fn shard(&self) -> String {
        self.engine.shard().to_owned()
    }

    /// The shard's ledger compared with `set`; reads only.
    pub async fn status(&self, set: &MigrationSet) -> Result<ShardStatus, ExecError> {
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
        let status = self.status(set).await?;
        let target = request.target.as_deref();
        let allow_drift = request.allow_drift.is_some();
        let steps = match direction {
            Direction::Up => status.plan_up(set, target, allow_drift)?,
            Direction::Down => status.plan_down(set, target, allow_drift)?,
        };
        Ok(steps
            .into_iter()
            .map(|index| &set.revisions[index])
            .collect())
    }

    pub async fn up(&self, set: &MigrationSet, request: &Request) -> Result<RunReport, ExecError> {
        self.with_migrator_lock(|writer| self.up_locked(set, request, writer))
            .await
    }

    pub async fn down(
        &self,
        set: &MigrationSet,
        request: &Request,
    ) -> Result<RunReport, ExecError> {
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
        let claim = FencedTransaction {
            guard: &Guard::default(),
            body: &[],
            records: &[],
            audit: None,
        };
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
            self.refuse_unadopted_history().await?;
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
        let mut reports = Vec::with_capacity(steps.len());
        for index in steps {
            let revision = &set.revisions[index];
            let predecessor = index
                .checked_sub(1)
                .map(|previous| &set.revisions[previous]);
            let resuming = status.revisions[index].status == Some(RevisionStatus::Started);
            let report = if revision.transactional {
                self.apply_in_transaction(revision, predecessor, Direction::Up, &writer)
                    .await?
            } else {
                self.apply_outside_transaction(revision, predecessor, resuming, &writer)
                    .await?
            };
            reports.push(report);
        }
        self.finish(set, reports, &writer).await
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
        let mut reports = Vec::with_capacity(steps.len());
        for index in steps {
            let revision = &set.revisions[index];
            let successor = set.revisions.get(index + 1);
            let report = if revision.transactional {
                self.apply_in_transaction(revision, successor, Direction::Down, &writer)
                    .await?
            } else {
                self.revert_outside_transaction(revision, successor, &writer)
                    .await?
            };
            reports.push(report);
        }
        self.finish(set, reports, &writer).await
    }

    async fn resolve_locked(
        &self,
        set: &MigrationSet,
        version: &str,
        resolution: Resolution,
        reason: &str,
        writer: Writer,
    ) -> Result<RunReport, ExecError> {
        let revision = set
            .revision(version)
            .ok_or_else(|| ExecError::NeedsOperator {
                shard: self.shard(),
                reason: format!("version {version} is not in the migration set"),
            })?;
        let status = match resolution {
            Resolution::Applied => RevisionStatus::Applied,
            Resolution::Failed => RevisionStatus::Failed,
        };
        let record = self.record(
            revision,
            status,
            true,
            None,
            0,
            Some(format!("resolved by operator: {reason}")),
        );
        let audit = AuditRecord {
            action: format!("resolve-{status}"),
            version: Some(version.to_owned()),
            reason: reason.to_owned(),
        };
        let guard = Guard::default().expect(version, Expect::Started);
        let work = FencedTransaction {
            guard: &guard,
            body: &[],
            records: std::slice::from_ref(&record),
            audit: Some(&audit),
        };
        self.engine
            .fenced_transaction(&writer, work)
            .await
            .map_err(|error| self.bookkeeping_error(error, &writer, "resolving the revision"))?;
        self.finish(set, Vec::new(), &writer).await
    }

    async fn finish(
        &self,
        set: &MigrationSet,
        steps: Vec<StepReport>,
        writer: &Writer,
    ) -> Result<RunReport, ExecError> {
        let status = self.status(set).await?;
        Ok(RunReport {
            shard: self.shard(),
            fence_token: writer.fence_token,
            steps,
            current_version: status.current_version,
        })
    }

    async fn refuse_unadopted_history(&self) -> Result<(), ExecError> {
        let foreign = self.engine.foreign_histories().await?;
        if foreign.is_empty() {
            return Ok(());
        }
        let tables: Vec<&str> = foreign.iter().map(|history| history.tool.table()).collect();
        Err(ExecError::NeedsOperator {
            shard: self.shard(),
            reason: format!(
                "this database was migrated by another tool ({}) and fleetshift has no history for it yet; applying now could re-run revisions\nnext: run `fleetshift migrate adopt` to import that history",
                tables.join(", ")
            ),
        })
    }

    async fn record_drift_overrides(
        &self,
        status: &ShardStatus,
        reason: &str,
        writer: &Writer,
    ) -> Result<(), ExecError> {
        for drifted in &status.drifted {
            let audit = AuditRecord {
                action: "allow-drift".to_owned(),
                version: Some(drifted.version.clone()),
                reason: format!(
                    "{reason} (applied checksum {}, file checksum {})",
                    drifted.applied_checksum, drifted.source_checksum
                ),
            };
            let work = FencedTransaction {
                guard: &Guard::default(),
                body: &[],
                records: &[],
                audit: Some(&audit),
            };
            self.engine
                .fenced_transaction(writer, work)
                .await
                .map_err(|error| {
                    self.bookkeeping_error(error, writer, "recording the drift override")
                })?;
            tracing::warn!(shard = %self.engine.shard(), revision = %drifted.version, reason, "proceeding despite drift");
        }
        Ok(())
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

    /// Up or down of a transactional revision: ONE fenced transaction, retried on lock
    /// conflicts. `neighbour` is the predecessor (up: must be applied) or the successor
    /// (down: must not be applied).
    async fn apply_in_transaction(
        &self,
        revision: &Revision,
        neighbour: Option<&Revision>,
        direction: Direction,
        writer: &Writer,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let (script, this_expect, neighbour_expect, final_status) = match direction {
            Direction::Up => (
                &revision.up,
                Expect::NotApplied,
                Expect::Applied,
                RevisionStatus::Applied,
            ),
            Direction::Down => (
                self.down_script(revision)?,
                Expect::Applied,
                Expect::NotApplied,
                RevisionStatus::Reverted,
            ),
        };
        let statements = script.statements();
        let mut guard = Guard::default().expect(version, this_expect);
        if let Some(neighbour) = neighbour {
            guard = guard.expect(neighbour.version.as_str(), neighbour_expect);
        }
        let label = revision.label();
        tracing::info!(shard = %self.engine.shard(), revision = %label, direction = ?direction, statements = statements.len(), fence = writer.fence_token, "running revision in one transaction");
        let started = Instant::now();
        let attempts = self
            .settings
            .lock_retry
            .run(
                self.engine.shard(),
                &label,
                is_lock_conflict,
                describe_tx_error,
                || {
                    let elapsed = started.elapsed();
                    let record = self.record(
                        revision,
                        final_status,
                        false,
                        Some(elapsed),
                        statements.len(),
                        None,
                    );
                    let guard = &guard;
                    let statements = &statements;
                    async move {
                        let work = FencedTransaction {
                            guard,
                            body: statements,
                            records: std::slice::from_ref(&record),
                            audit: None,
                        };
                        self.engine.fenced_transaction(writer, work).await
                    }
                },
            )
            .await;
        let lock_retries = attempts.attempts - 1;
        let outcome = match attempts.result {
            Ok(()) => match direction {
                Direction::Up => StepOutcome::Applied,
                Direction::Down => StepOutcome::Reverted,
            },
            Err(TxError::Guard(violation)) if violation.version == version => {
                tracing::info!(shard = %self.engine.shard(), revision = %label, "already done by another run");
                StepOutcome::AlreadyDone
            }
            Err(error) => {
                return Err(self
                    .fail_transactional(
                        revision,
                        script,
                        &statements,
                        direction,
                        error,
                        attempts.attempts,
                        writer,
                    )
                    .await);
            }
        };
        let duration = started.elapsed();
        tracing::info!(shard = %self.engine.shard(), revision = %label, outcome = ?outcome, duration_ms = duration.as_millis() as u64, "revision finished");
        Ok(step_report(
            revision,
            outcome,
            statements.len(),
            duration,
            lock_retries,
        ))
    }

    /// Turns a failed transactional step into an error; a failed `up` is recorded as failed.
    #[allow(clippy::too_many_arguments)]
    async fn fail_transactional(
        &self,
        revision: &Revision,
        script: &Script,
        statements: &[Statement],
        direction: Direction,
        error: TxError,
        attempts: usize,
        writer: &Writer,
    ) -> ExecError {
        let failure = match error {
            TxError::Statement(failure) if !failure.is_lock_conflict() => failure,
            other => return self.step_error(other, revision, script, statements, attempts, writer),
        };
        let location = locate(script, statements, &failure);
        let aftermath = match direction {
            Direction::Up => {
                let record = self.record(revision, RevisionStatus::Failed, false, None, 0, Some(format!("{location}: {}", failure.message)));
                let guard = Guard::default().expect(revision.version.as_str(), Expect::NotApplied);
                let work = FencedTransaction {
                    guard: &guard,
                    body: &[],
                    records: std::slice::from_ref(&record),
                    audit: None,
                };
                match self.engine.fenced_transaction(writer, work).await {
                    Ok(()) => "the revision was rolled back: nothing of it is applied; it is recorded as failed\nnext: fix the script and rerun `up`".to_owned(),
                    Err(record_error) => format!("the revision was rolled back: nothing of it is applied (recording the failure also failed: {})", describe_tx_error(&record_error)),
                }
            }
            Direction::Down => "the revert was rolled back: the revision is still applied\nnext: fix the down script and rerun `down`".to_owned(),
        };
        ExecError::StatementFailed(Box::new(StatementFailure {
            shard: self.shard(),
            revision: revision.label(),
            location,
            sqlstate: failure.sqlstate,
            message: failure.message,
            aftermath,
        }))
    }

    /// A non-transactional revision: fenced `started` record → statements in autocommit
    /// (fence re-read before each) → fenced `applied` record.
    async fn apply_outside_transaction(
        &self,
        revision: &Revision,
        predecessor: Option<&Revision>,
        resuming: bool,
        writer: &Writer,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let label = revision.label();
        let statements = revision.up.statements();
        let mut guard = Guard::default().expect(version, Expect::NotAppliedOrStarted);
        if let Some(predecessor) = predecessor {
            guard = guard.expect(predecessor.version.as_str(), Expect::Applied);
        }
        tracing::info!(shard = %self.engine.shard(), revision = %label, resuming, statements = statements.len(), fence = writer.fence_token, "running revision outside a transaction");
        let started = Instant::now();
        let start_record = self.record(revision, RevisionStatus::Started, resuming, None, 0, None);
        match self
            .fenced_records(&guard, &start_record, writer, &label)
            .await
        {
            Ok(()) => {}
            Err(TxError::Guard(violation))
                if violation.version == version
                    && violation.found == Some(RevisionStatus::Applied) =>
            {
                return Ok(step_report(
                    revision,
                    StepOutcome::AlreadyDone,
                    0,
                    started.elapsed(),
                    0,
                ));
            }
            Err(error) => {
                return Err(self.step_error(error, revision, &revision.up, &statements, 1, writer));
            }
        }
        let mut lock_retries = 0;
        for (index, statement) in statements.iter().enumerate() {
            let retries = self
                .run_autocommit_step(revision, &revision.up, statement, resuming, writer)
                .await
                .map_err(|error| (index, error));
            match retries {
                Ok(retries) => lock_retries += retries,
                Err((index, error)) => {
                    return Err(self
                        .leave_started(revision, &statements, index, error, writer)
                        .await);
                }
            }
        }
        let finish_guard = Guard::default().expect(version, Expect::Started);
        let done = self.record(
            revision,
            RevisionStatus::Applied,
            true,
            Some(started.elapsed()),
            statements.len(),
            None,
        );
        self.fenced_records(&finish_guard, &done, writer, &label)
            .await
            .map_err(|error| {
                self.step_error(error, revision, &revision.up, &statements, 1, writer)
            })?;
        let outcome = if resuming {
            StepOutcome::Resumed
        } else {
            StepOutcome::Applied
        };
        tracing::info!(shard = %self.engine.shard(), revision = %label, outcome = ?outcome, duration_ms = started.elapsed().as_millis() as u64, "revision finished");
        Ok(step_report(
            revision,
            outcome,
            statements.len(),
            started.elapsed(),
            lock_retries,
        ))
    }

    /// Down of a non-transactional revision: fenced check → statements → fenced `reverted`.
    async fn revert_outside_transaction(
        &self,
        revision: &Revision,
        successor: Option<&Revision>,
        writer: &Writer,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let label = revision.label();
        let script = self.down_script(revision)?;
        let statements = script.statements();
        let mut guard = Guard::default().expect(version, Expect::Applied);
        if let Some(successor) = successor {
            guard = guard.expect(successor.version.as_str(), Expect::NotApplied);
        }
        let started = Instant::now();
        let check = FencedTransaction {
            guard: &guard,
            body: &[],
            records: &[],
            audit: None,
        };
        self.engine
            .fenced_transaction(writer, check)
            .await
            .map_err(|error| self.step_error(error, revision, script, &statements, 1, writer))?;
        let mut lock_retries = 0;
        for (index, statement) in statements.iter().enumerate() {
            match self
                .run_autocommit_step(revision, script, statement, true, writer)
                .await
            {
                Ok(retries) => lock_retries += retries,
                Err(error) => {
                    return Err(with_aftermath(
                        error,
                        format!(
                            "the revert ran outside a transaction: {index} of {} statements finished and the revision is still recorded as applied\nnext: fix the down script (statements that already ran must be safe to repeat) and rerun `down`",
                            statements.len()
                        ),
                    ));
                }
            }
        }
        let reverted = self.record(
            revision,
            RevisionStatus::Reverted,
            false,
            Some(started.elapsed()),
            statements.len(),
            None,
        );
        self.fenced_records(&guard, &reverted, writer, &label)
            .await
            .map_err(|error| self.step_error(error, revision, script, &statements, 1, writer))?;
        Ok(step_report(
            revision,
            StepOutcome::Reverted,
            statements.len(),
            started.elapsed(),
            lock_retries,
        ))
    }

    async fn fenced_records(
        &self,
        guard: &Guard,
        record: &LedgerRecord,
        writer: &Writer,
        label: &str,
    ) -> Result<(), TxError> {
        self.settings
            .lock_retry
            .run(
                self.engine.shard(),
                label,
                is_lock_conflict,
                describe_tx_error,
                || {
                    self.engine.fenced_transaction(
                        writer,
                        FencedTransaction {
                            guard,
                            body: &[],
                            records: std::slice::from_ref(record),
                            audit: None,
                        },
                    )
                },
            )
            .await
            .result
    }

    /// One autocommit statement, after checking the fence; returns the lock retries spent.
    async fn run_autocommit_step(
        &self,
        revision: &Revision,
        script: &Script,
        statement: &Statement,
        resuming: bool,
        writer: &Writer,
    ) -> Result<usize, ExecError> {
        let current = self.engine.current_fence().await?;
        if current > writer.fence_token {
            return Err(ExecError::FencedOut {
                shard: self.shard(),
                ours: writer.fence_token,
                current,
            });
        }
        let label = revision.label();
        let started = Instant::now();
        let attempts = self
            .settings
            .lock_retry
            .run(
                self.engine.shard(),
                &label,
                StatementError::is_lock_conflict,
                |failure| failure.message.clone(),
                || self.engine.run_autocommit(statement, resuming),
            )
            .await;
        let location = script.locate(statement);
        match attempts.result {
            Ok(outcome) => {
                match outcome {
                    AutocommitOutcome::Ran => {}
                    AutocommitOutcome::IndexAlreadyValid => {
                        tracing::info!(shard = %self.engine.shard(), %location, "index already built and valid, statement skipped")
                    }
                    AutocommitOutcome::InvalidIndexRebuilt => {
                        tracing::warn!(shard = %self.engine.shard(), %location, "invalid index from an earlier attempt dropped and rebuilt")
                    }
                }
                tracing::debug!(shard = %self.engine.shard(), %location, duration_ms = started.elapsed().as_millis() as u64, "statement finished");
                Ok(attempts.attempts - 1)
            }
            Err(failure) if failure.is_lock_conflict() => Err(ExecError::LockTimeoutExhausted {
                shard: self.shard(),
                revision: label,
                location,
                attempts: attempts.attempts,
                detail: format!(
                    "lock_timeout {} ms per attempt; last error: {}",
                    self.settings.lock_timeout.as_millis(),
                    failure.message
                ),
            }),
            Err(failure) => Err(ExecError::StatementFailed(Box::new(StatementFailure {
                shard: self.shard(),
                revision: label,
                location,
                sqlstate: failure.sqlstate,
                message: failure.message,
                aftermath: String::new(),
            }))),
        }
    }

    /// A non-transactional revision stopped at `index`: the row stays `started`, with the error.
    async fn leave_started(
        &self,
        revision: &Revision,
        statements: &[Statement],
        index: usize,
        error: ExecError,
        writer: &Writer,
    ) -> ExecError {
        let message = error.to_string();
        let record = self.record(
            revision,
            RevisionStatus::Started,
            true,
            None,
            index,
            Some(message.clone()),
        );
        let guard = Guard::default().expect(revision.version.as_str(), Expect::Started);
        if let Err(record_error) = self
            .fenced_records(&guard, &record, writer, &revision.label())
            .await
        {
            tracing::warn!(shard = %self.engine.shard(), error = %describe_tx_error(&record_error), "could not record the error on the started revision");
        }
        let aftermath = format!(
            "the revision ran outside a transaction and is left `started` ({index} of {} statements finished)\nnext: fix the cause and rerun `up`: index builds are verified in the catalog (INVALID ones dropped and rebuilt) and repeatable statements run again",
            statements.len()
        );
        with_aftermath(error, aftermath)
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

    fn step_error(
        &self,
        error: TxError,
        revision: &Revision,
        script: &Script,
        statements: &[Statement],
        attempts: usize,
        writer: &Writer,
    ) -> ExecError {
        match error {
            TxError::Statement(failure) if failure.is_lock_conflict() => {
                ExecError::LockTimeoutExhausted {
                    shard: self.shard(),
                    revision: revision.label(),
                    location: locate(script, statements, &failure),
                    attempts,
                    detail: format!(
                        "lock_timeout {} ms per attempt; last error: {}",
                        self.settings.lock_timeout.as_millis(),
                        failure.message
                    ),
                }
            }
            TxError::Statement(failure) => ExecError::StatementFailed(Box::new(StatementFailure {
                shard: self.shard(),
                revision: revision.label(),
                location: locate(script, statements, &failure),
                sqlstate: failure.sqlstate,
                message: failure.message,
                aftermath: String::new(),
            })),
            TxError::Guard(violation) => ExecError::NeedsOperator {
                shard: self.shard(),
                reason: guard_message(&revision.label(), &violation),
            },
            other => self.bookkeeping_error(other, writer, "running the revision"),
        }
    }

    fn bookkeeping_error(&self, error: TxError, writer: &Writer, context: &str) -> ExecError {
        match error {
            TxError::FencedOut { current } => ExecError::FencedOut {
                shard: self.shard(),
                ours: writer.fence_token,
                current,
            },
            TxError::Guard(violation) => ExecError::NeedsOperator {
                shard: self.shard(),
                reason: guard_message(context, &violation),
            },
            TxError::Statement(failure) => ExecError::Database {
                shard: self.shard(),
                context: context.to_owned(),
                detail: failure.message,
            },
            TxError::Database {
                context: inner,
                detail,
            } => ExecError::Database {
                shard: self.shard(),
                context: format!("{context}: {inner}"),
                detail,
            },
        }
    }
}

/// A statement failure with what it left behind; other errors pass through unchanged.
fn with_aftermath(error: ExecError, aftermath: String) -> ExecError {
    match error {
        ExecError::StatementFailed(mut failure) => {
            failure.aftermath = aftermath;
            ExecError::StatementFailed(failure)
        }
        other => other,
    }
}

fn is_lock_conflict(error: &TxError) -> bool {
    matches!(error, TxError::Statement(failure) if failure.is_lock_conflict())
}

fn describe_tx_error(error: &TxError) -> String {
    match error {
        TxError::FencedOut { current } => format!("fenced out by token {current}"),
        TxError::Guard(violation) => guard_message("guard", violation),
        TxError::Statement(failure) => failure.message.clone(),
        TxError::Database { context, detail } => format!("{context}: {detail}"),
    }
}

fn guard_message(subject: &str, violation: &GuardViolation) -> String {
    let found = violation
        .found
        .map_or_else(|| "no record".to_owned(), |status| status.to_string());
    format!(
        "{subject}: revision {} was expected to be {:?} but the ledger shows {found}; another run changed the shard meanwhile\nnext: run `fleetshift migrate status` and retry",
        violation.version, violation.expected
    )
}

fn locate(script: &Script, statements: &[Statement], failure: &StatementError) -> String {
    match failure.index.and_then(|index| statements.get(index)) {
        Some(statement) => script.locate(statement),
        None => format!("{} (fleetshift bookkeeping)", script.path.display()),
    }
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
    }
}
