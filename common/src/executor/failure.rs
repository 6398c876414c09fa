//! Turning engine failures into [`ExecError`]s that name the shard, the revision, the
//! file and line, and what to do next.

use super::Executor;
use crate::engine::{ShardEngine, StatementError, TxError};
use crate::error::{ExecError, StatementFailure};
use crate::ledger::{GuardViolation, Writer};
use crate::source::{Revision, Script};
use crate::statements::Statement;

impl<E: ShardEngine> Executor<'_, E> {
    /// A failed step as an error. Every step retries lock conflicts, so one that reaches
    /// here has spent all the policy's attempts.
    pub(super) fn step_error(
        &self,
        error: TxError,
        revision: &Revision,
        script: &Script,
        statements: &[Statement],
        writer: &Writer,
    ) -> ExecError {
        match error {
            TxError::Statement(failure) if failure.connection_lost => self.connection_lost(
                &revision.label(),
                &locate(script, statements, &failure),
                failure,
            ),
            TxError::Statement(failure) if failure.is_lock_conflict() => {
                ExecError::LockTimeoutExhausted {
                    shard: self.shard(),
                    revision: revision.label(),
                    location: locate(script, statements, &failure),
                    attempts: self.settings.lock_retry.max_retries + 1,
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
            TxError::DataChanged(message) => {
                ExecError::StatementFailed(Box::new(StatementFailure {
                    shard: self.shard(),
                    revision: revision.label(),
                    location: after_body(script),
                    sqlstate: None,
                    message,
                    aftermath: String::new(),
                }))
            }
            other => self.bookkeeping_error(other, writer, "running the revision"),
        }
    }

    pub(super) fn bookkeeping_error(
        &self,
        error: TxError,
        writer: &Writer,
        context: &str,
    ) -> ExecError {
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
            TxError::Statement(failure) if failure.connection_lost => ExecError::ConnectionLost {
                shard: self.shard(),
                during: context.to_owned(),
                detail: failure.message,
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
            TxError::DataChanged(detail) => ExecError::Database {
                shard: self.shard(),
                context: context.to_owned(),
                detail,
            },
        }
    }
}

impl<E: ShardEngine> Executor<'_, E> {
    /// The connection went away while revision `revision` ran the statement at `location`.
    pub(super) fn connection_lost(
        &self,
        revision: &str,
        location: &str,
        failure: StatementError,
    ) -> ExecError {
        ExecError::ConnectionLost {
            shard: self.shard(),
            during: format!("revision {revision} ran the statement at {location}"),
            detail: failure.message,
        }
    }
}

/// A statement failure with what it left behind; other errors pass through unchanged.
pub(super) fn with_aftermath(error: ExecError, aftermath: String) -> ExecError {
    match error {
        ExecError::StatementFailed(mut failure) => {
            failure.aftermath = aftermath;
            ExecError::StatementFailed(failure)
        }
        other => other,
    }
}

pub(super) fn is_lock_conflict(error: &TxError) -> bool {
    matches!(error, TxError::Statement(failure) if failure.is_lock_conflict())
}

pub(super) fn describe_tx_error(error: &TxError) -> String {
    match error {
        TxError::FencedOut { current } => format!("fenced out by token {current}"),
        TxError::Guard(violation) => guard_message("guard", violation),
        TxError::Statement(failure) => failure.message.clone(),
        TxError::Database { context, detail } => format!("{context}: {detail}"),
        TxError::DataChanged(message) => message.clone(),
    }
}

/// Where the check after a script's last statement fails, for messages.
pub(super) fn after_body(script: &Script) -> String {
    format!(
        "{} (the --verify-data check after its last statement)",
        script.path.display()
    )
}

pub(super) fn guard_message(subject: &str, violation: &GuardViolation) -> String {
    let found = violation
        .found
        .map_or_else(|| "no record".to_owned(), |status| status.to_string());
    format!(
        "{subject}: revision {} was expected to be {:?} but the ledger shows {found}; another run changed the shard meanwhile\nnext: run `fleetshift migrate status` and retry",
        violation.version, violation.expected
    )
}

pub(super) fn locate(
    script: &Script,
    statements: &[Statement],
    failure: &StatementError,
) -> String {
    match failure.index.and_then(|index| statements.get(index)) {
        Some(statement) => script.locate(statement),
        None => format!("{} (fleetshift bookkeeping)", script.path.display()),
    }
}
