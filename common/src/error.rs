//! Errors of the engine core. Each names the shard, the revision and file:line where one
//! applies, and says what to do next. [`ErrorKind`] is the small set callers map to exit
//! codes and wire status codes.

use crate::fence::FenceToken;
use crate::source::SourceError;

/// The classes of failure a script or an operator must be able to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Migration files or arguments are wrong; nothing ran.
    BadInput,
    /// An applied revision's checksum no longer matches its file.
    Drift,
    /// A newer fencing token owns the shard; this run wrote nothing more to it.
    FencedOut,
    /// Locks could not be had within the bounded retries.
    LockTimeout,
    /// The database could not be reached.
    Unreachable,
    /// The shard's state needs a decision (an interrupted revision, unknown history).
    NeedsOperator,
    /// A statement failed; the revision was rolled back (or left `started` if it cannot be).
    Failed,
    /// The run was told to stop (its lease may lapse, an operator cancelled, Ctrl-C): between
    /// revisions or statements, or (an agent's run) by cancelling the running statement,
    /// whose transaction is rolled back whole.
    Stopped,
    /// The shard's maintenance window closed, or would before the next revision ends: the run
    /// stopped between revisions.
    OutsideWindow,
}

/// An applied revision whose file changed since.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriftedRevision {
    pub version: String,
    pub name: String,
    pub applied_checksum: String,
    pub source_checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Source(#[from] SourceError),

    #[error(
        "shard {shard}: cannot reach the database: {detail}\nnext: check the address, the credentials and that the server is up, then rerun"
    )]
    Unreachable { shard: String, detail: String },

    /// The server went away or cannot be reached (a restart, a failover, a dropped link):
    /// transient until proven otherwise. Whatever was in flight was rolled back by the server.
    #[error(
        "shard {shard}: cannot reach the database server while {during}: {detail}\nnext: check that the server is up (a restart or failover ends every connection), then rerun: the run resumes from the shard's ledger"
    )]
    ConnectionLost {
        shard: String,
        during: String,
        detail: String,
    },

    #[error(
        "shard {shard}: fenced out: this run holds fencing token {ours} but the shard has seen token {current}; a newer claim owns the shard and this run wrote nothing more (the ledger is the newer claim's)"
    )]
    FencedOut {
        shard: String,
        ours: FenceToken,
        current: FenceToken,
    },

    #[error(
        "shard {shard}: revision {revision} at {location}: gave up after {attempts} attempt(s) waiting for locks ({detail}); nothing of the revision is applied\nnext: find the blocking sessions in pg_stat_activity / pg_locks and rerun once they finish"
    )]
    LockTimeoutExhausted {
        shard: String,
        revision: String,
        location: String,
        attempts: usize,
        detail: String,
    },

    #[error(
        "shard {shard}: another migrator holds the shard's migration lock ({holder}); waited {waited_ms} ms\nnext: wait for it to finish, or stop it, then rerun"
    )]
    AnotherMigrator {
        shard: String,
        holder: String,
        waited_ms: u128,
    },

    #[error("{0}")]
    StatementFailed(Box<StatementFailure>),

    #[error("shard {shard}: {count} applied revision(s) changed since they were applied:\n{listing}\nnext: restore the original files, or rerun with --allow-drift \"<reason>\" to proceed (the reason is recorded on the shard)", count = .drifted.len(), listing = drift_listing(.drifted))]
    Drift {
        shard: String,
        drifted: Vec<DriftedRevision>,
    },

    #[error("shard {shard}: revisions without a down script, nothing was reverted: {}\nnext: add the missing down scripts or choose a later target version", .revisions.join(", "))]
    MissingDownScripts {
        shard: String,
        revisions: Vec<String>,
    },

    #[error("shard {shard}: {reason}")]
    NeedsOperator { shard: String, reason: String },

    #[error(
        "shard {shard}: stopped before {next}: {reason}; everything before it is complete and recorded, nothing of it ran"
    )]
    Stopped {
        shard: String,
        next: String,
        reason: String,
    },

    #[error(
        "shard {shard}: paused before {next}: {reason}; everything before it is complete and recorded, and the shard goes on in its next window"
    )]
    OutsideWindow {
        shard: String,
        next: String,
        reason: String,
    },

    #[error(
        "shard {shard}: throttled before {next} for {waited_secs}s in all, the plan's longest wait: {detail}; everything before it is complete and recorded\nnext: find why the shard is busy, then plan it again (or with a longer --throttle-max-wait)"
    )]
    Throttled {
        shard: String,
        next: String,
        detail: String,
        waited_secs: u64,
    },

    #[error("shard {shard}: {context}: {detail}")]
    Database {
        shard: String,
        context: String,
        detail: String,
    },
}

/// A statement that failed, where, and what that left behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard}: revision {revision} failed at {location}: {message}{sqlstate}\n{aftermath}", sqlstate = .sqlstate.as_ref().map(|code| format!(" (SQLSTATE {code})")).unwrap_or_default())]
pub struct StatementFailure {
    pub shard: String,
    pub revision: String,
    /// `path:line` of the statement.
    pub location: String,
    pub sqlstate: Option<String>,
    pub message: String,
    /// What the failure left behind and what to do next.
    pub aftermath: String,
}

fn drift_listing(drifted: &[DriftedRevision]) -> String {
    drifted
        .iter()
        .map(|revision| {
            format!(
                "  - {}_{}: applied {} but the file now hashes to {}",
                revision.version,
                revision.name,
                revision.applied_checksum,
                revision.source_checksum
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl ExecError {
    /// Whether the server was out of reach rather than anything being wrong with the work or
    /// the shard: worth waiting for the server and running again.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ConnectionLost { .. })
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Source(_) | Self::MissingDownScripts { .. } => ErrorKind::BadInput,
            Self::Drift { .. } => ErrorKind::Drift,
            Self::FencedOut { .. } => ErrorKind::FencedOut,
            Self::LockTimeoutExhausted { .. } | Self::AnotherMigrator { .. } => {
                ErrorKind::LockTimeout
            }
            Self::Unreachable { .. } | Self::ConnectionLost { .. } => ErrorKind::Unreachable,
            Self::NeedsOperator { .. } => ErrorKind::NeedsOperator,
            Self::Stopped { .. } => ErrorKind::Stopped,
            Self::OutsideWindow { .. } => ErrorKind::OutsideWindow,
            Self::Throttled { .. } => ErrorKind::Failed,
            Self::StatementFailed { .. } | Self::Database { .. } => ErrorKind::Failed,
        }
    }
}
