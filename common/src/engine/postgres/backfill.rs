//! A backfill job's reads on PostgreSQL: how far it got, its next batch, and how many rows
//! its table holds by the planner's statistics.

use sqlx::{AssertSqlSafe, Row as _};

use super::PostgresShard;
use crate::engine::{Batch, DatabaseMessage, StatementError, statement_error};
use crate::error::ExecError;
use crate::ledger::BackfillMark;

impl PostgresShard {
    pub(super) async fn read_backfill_mark(
        &self,
        version: &str,
    ) -> Result<Option<BackfillMark>, ExecError> {
        let row = sqlx::query(AssertSqlSafe(self.ledger.sql.select_backfill.to_string()))
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.database_error("reading the backfill's progress"))?;
        row.map(|row| {
            Ok(BackfillMark {
                version: version.to_owned(),
                after: row.try_get(0)?,
                rows: row.try_get(1)?,
                batches: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(self.database_error("reading the backfill's progress"))
    }

    pub(super) async fn read_next_batch(
        &self,
        query: &str,
    ) -> Result<Option<Batch>, StatementError> {
        let row: Option<(String, i64)> = sqlx::query_as(AssertSqlSafe(query.to_owned()))
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| statement_error(None, &error))?;
        Ok(row.map(|(upto, keys)| Batch { upto, keys }))
    }

    pub(super) async fn read_key_indexed(
        &self,
        table: &str,
        column: &str,
    ) -> Result<Option<bool>, ExecError> {
        sqlx::query_scalar(
            "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE EXISTS (
                 SELECT FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = to_regclass($1) AND a.attname = $2) END",
        )
        .bind(table)
        .bind(column)
        .fetch_one(&self.pool)
        .await
        .map_err(self.database_error("checking the backfill key's index"))
    }

    /// The live rows of `table` and of its partitions, as last counted by `ANALYZE` or
    /// autovacuum; `None` when never counted.
    pub(super) async fn estimated_rows(&self, table: &str) -> Option<i64> {
        let estimate: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT sum(c.reltuples)::bigint
             FROM pg_partition_tree(to_regclass($1)) AS p
             JOIN pg_class c ON c.oid = p.relid
             WHERE c.reltuples >= 0 AND c.relkind IN ('r', 'm')",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await;
        estimate.unwrap_or_else(|error| {
            tracing::debug!(shard = %self.name, %table, error = %DatabaseMessage(&error), "cannot estimate the table's rows");
            None
        })
    }
}
