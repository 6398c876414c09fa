//! Post-migration validation: what a shard's revisions must leave intact, observed just before
//! them and just after, and compared.
//!
//! - Integrity: indexes that are invalid or not ready (a concurrent build that failed
//!   part-way), constraints not validated (`NOT VALID`), SQLite's `quick_check`.
//! - Data: the rows of every table the revisions touch (exact under [`EXACT_COUNT_BYTES`], the
//!   planner's estimate above it, labelled), and an order-independent checksum of the tables
//!   the plan names in `--verify-data`, which the revisions must not change.
//! - Referential integrity: rows that violate a foreign key the server does not enforce for
//!   existing rows, counted with a few examples, in a read-only transaction whose lock wait
//!   is bounded, so the check never queues the application behind it.
//!
//! [`compare`] turns two observations into the report; only what the revisions broke fails it
//! (an index invalid already before the run is a note, as is every constraint left
//! `NOT VALID`, which only a revision can have written).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::SqlitePool;

use crate::engine::{CountedPool, StatementError, TxError};
use crate::proto::v1::{DataCheck, ForeignKeyCheck};

mod json;
pub(crate) mod postgres;
mod report;
pub(crate) mod sqlite;
#[cfg(test)]
mod tests;

pub use json::report_json;
pub use report::compare;

/// A table whose heap (all partitions) is bigger than this is counted from the planner's
/// estimate: an exact count of it could take minutes.
pub const EXACT_COUNT_BYTES: i64 = 256 * 1024 * 1024;

/// Violating keys listed per foreign key.
const EXAMPLES: usize = 5;

/// Why a shard could not be observed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The checks cannot run as the plan asks (a `--verify-data` table that does not exist).
    #[error("{0}")]
    Refused(String),
    /// The server went away: the observation runs again once it answers.
    #[error("{0}")]
    ConnectionLost(String),
}

/// What to observe on a shard, and how long any one statement may wait and run.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// The tables the revisions touch, as [`crate::touched`] reads them.
    pub touched: &'a [String],
    /// The plan's `--verify-data` tables.
    pub verify_data: &'a [DataCheck],
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

/// A table's rows at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCount {
    pub rows: i64,
    /// From the planner's statistics, not counted.
    pub estimated: bool,
}

/// An order-independent checksum of a table's selected columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub rows: i64,
    pub sum: String,
}

/// The checksum of one `--verify-data` table: `None` when the table does not exist, an error
/// when it could not be read as asked (a column that does not exist).
pub type ChecksumRead = Result<Option<Checksum>, String>;

/// A shard at one moment, as validation sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Indexes that are not usable, with why (`invalid`, `not ready`).
    pub broken_indexes: BTreeMap<String, String>,
    /// Constraints not validated, as `table.constraint`.
    pub not_validated: BTreeSet<String>,
    /// What an engine's own integrity check found wrong, when it found anything.
    pub integrity: Option<String>,
    /// Each touched table's rows; `None` when it does not exist.
    pub rows: BTreeMap<String, Option<RowCount>>,
    /// Each `--verify-data` table's checksum, in the plan's order.
    pub checksums: Vec<ChecksumRead>,
}

impl Observed {
    /// Why the revisions must not start, read from the observation before them: a
    /// `--verify-data` table that does not exist or cannot be read as asked.
    pub fn refusal(&self, checks: &Checks<'_>) -> Option<String> {
        checks
            .verify_data
            .iter()
            .zip(&self.checksums)
            .find_map(|(check, read)| match read {
                Ok(Some(_)) => None,
                Ok(None) => Some(format!(
                    "--verify-data {}: no such table before the revisions; fix the plan's table name",
                    label(check)
                )),
                Err(error) => Some(format!(
                    "--verify-data {}: cannot checksum it: {error}; fix the plan's table or columns",
                    label(check)
                )),
            })
    }
}

/// `orders` or `orders:id,total`, as the plan names it.
pub fn label(check: &DataCheck) -> String {
    if check.columns.is_empty() {
        check.table.clone()
    } else {
        format!("{}:{}", check.table, check.columns.join(","))
    }
}

/// How `after` differs from `before` for `check`, when it does: the data changed, the
/// table is gone, or it could not be read.
pub(crate) fn change(check: &DataCheck, before: &Checksum, after: &ChecksumRead) -> Option<String> {
    let label = label(check);
    match after {
        Ok(Some(after)) if after == before => None,
        Ok(Some(after)) => Some(format!(
            "--verify-data {label}: the data changed: {} row(s) before, {} after, checksum {} before, {} after",
            before.rows,
            after.rows,
            short(&before.sum),
            short(&after.sum)
        )),
        Ok(None) => Some(format!("--verify-data {label}: the table is gone")),
        Err(error) => Some(format!(
            "--verify-data {label}: cannot checksum it: {error}"
        )),
    }
}

/// A checksum as messages show it.
fn short(sum: &str) -> &str {
    sum.get(..16).unwrap_or(sum)
}

/// A checksum that could not be read inside a revision's transaction, as the transaction's
/// failure.
pub(crate) fn tx_error(error: ValidationError) -> TxError {
    match error {
        ValidationError::ConnectionLost(message) => TxError::Statement(StatementError {
            index: None,
            sqlstate: None,
            message,
            connection_lost: true,
        }),
        ValidationError::Refused(detail) => TxError::Database {
            context: "checksumming the plan's --verify-data tables",
            detail,
        },
    }
}

/// Inside a revision's transaction: fails it when the body changed data of `checks` (read
/// before it as `before`, after it as `after`).
pub(crate) fn unchanged(
    checks: &[DataCheck],
    before: &[ChecksumRead],
    after: &[ChecksumRead],
) -> Result<(), TxError> {
    let changes: Vec<String> = checks
        .iter()
        .zip(before.iter().zip(after))
        .filter_map(|(check, (before, after))| match before {
            Ok(Some(before)) => change(check, before, after),
            // The run was refused before any revision when a table could not be read.
            _ => None,
        })
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    Err(TxError::DataChanged(format!(
        "the revision changed data the plan says no revision may change: {}",
        changes.join("; ")
    )))
}

/// A shard's database, for validation.
#[derive(Debug, Clone, Copy)]
pub enum Validator<'a> {
    Postgres(&'a CountedPool),
    Sqlite(&'a SqlitePool),
}

impl Validator<'_> {
    /// The shard as it is now.
    pub async fn observe(&self, checks: &Checks<'_>) -> Result<Observed, ValidationError> {
        match self {
            Self::Postgres(pool) => postgres::observe(pool, checks).await,
            Self::Sqlite(pool) => sqlite::observe(pool, checks).await,
        }
    }

    /// The foreign keys the server does not enforce for existing rows, each checked for rows
    /// that violate it.
    pub async fn foreign_keys(
        &self,
        checks: &Checks<'_>,
    ) -> Result<Vec<ForeignKeyCheck>, ValidationError> {
        match self {
            Self::Postgres(pool) => postgres::foreign_keys(pool, checks).await,
            Self::Sqlite(pool) => sqlite::foreign_keys(pool).await,
        }
    }
}

/// A database error while `doing` something, as validation reports it.
fn failed(doing: &str, error: &sqlx::Error) -> ValidationError {
    let detail = format!(
        "post-migration validation: {doing}: {}",
        crate::engine::DatabaseMessage(error)
    );
    if crate::engine::connection_lost(error) {
        ValidationError::ConnectionLost(detail)
    } else {
        ValidationError::Refused(detail)
    }
}
