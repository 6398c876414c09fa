//! The rows of a scratch database: a sample of each of the shard's tables streamed from the
//! shard (`COPY … TO STDOUT` into `COPY … FROM STDIN`), closed under the foreign keys the
//! revisions add, and the sequences set where the shard's are.

use futures_util::TryStreamExt as _;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use super::{SampleOptions, WHOLE_TABLE_BYTES};
use crate::engine::{DatabaseMessage, quote_identifier, quote_qualified};
use crate::touched::ForeignKeyClause;

/// A user table as the shard's catalog describes it.
pub(super) struct SourceTable {
    pub(super) name: String,
    pub(super) columns: String,
    pub(super) bytes: i64,
    pub(super) estimate: i64,
    pub(super) whole: bool,
}

/// The sample scaled back up to the table, when the planner has no estimate.
pub(super) fn scaled(rows: u64, percent: f64, whole: bool) -> i64 {
    let rows = rows as f64;
    let estimate = if whole { rows } else { rows * 100.0 / percent };
    estimate.round() as i64
}

/// The shard's ordinary tables (leaf partitions included), except those of extensions.
pub(super) async fn source_tables(
    source: &mut PgConnection,
) -> Result<Vec<SourceTable>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64, bool)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname),
                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''),
                pg_relation_size(c.oid), c.reltuples::int8,
                n.nspname = 'fleetshift'
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
           AND NOT EXISTS (SELECT FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype = 'e')
         ORDER BY 1",
    )
    .fetch_all(source)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, columns, bytes, estimate, ledger)| SourceTable {
            name,
            columns,
            bytes,
            estimate,
            whole: ledger || bytes <= WHOLE_TABLE_BYTES,
        })
        .collect())
}

/// Streams the table's sample from the shard into the scratch database; the rows copied.
pub(super) async fn copy_rows(
    source: &mut PgConnection,
    target: &mut PgConnection,
    table: &SourceTable,
    options: &SampleOptions,
) -> Result<u64, sqlx::Error> {
    if table.columns.is_empty() {
        return Ok(0);
    }
    let sample = if table.whole {
        String::new()
    } else {
        format!(" TABLESAMPLE SYSTEM ({})", options.percent)
    };
    let limit = if table.name.starts_with("fleetshift.") {
        String::new()
    } else {
        format!(" LIMIT {}", options.max_rows_per_table)
    };
    let mut writer = target
        .copy_in_raw(&format!(
            "COPY {} ({}) FROM STDIN",
            table.name, table.columns
        ))
        .await?;
    let mut reader = source
        .copy_out_raw(&format!(
            "COPY (SELECT {} FROM {}{sample}{limit}) TO STDOUT",
            table.columns, table.name
        ))
        .await?;
    while let Some(chunk) = reader.try_next().await? {
        writer.send(chunk).await?;
    }
    writer.finish().await
}

/// Removes the sampled rows that a foreign key the revisions add would find dangling: the
/// sample is not closed under references, the shard is. A clause whose tables do not exist
/// yet (an earlier revision creates them) is skipped. Rows removed per table.
pub(super) async fn close_under(
    target: &mut PgConnection,
    references: &[ForeignKeyClause],
) -> Vec<(String, u64)> {
    let mut removed = Vec::new();
    for clause in references {
        match close_one(target, clause).await {
            Ok(Some((table, rows))) => removed.push((table, rows)),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(table = %clause.table, referenced = %clause.referenced, error = %DatabaseMessage(&error), "not closing the sample under this foreign key");
            }
        }
    }
    removed
}

async fn close_one(
    target: &mut PgConnection,
    clause: &ForeignKeyClause,
) -> Result<Option<(String, u64)>, sqlx::Error> {
    let referenced_columns = if clause.referenced_columns.is_empty() {
        let key: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT array_agg(a.attname::text ORDER BY k.n)
             FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attnum = k.attnum
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary
               AND a.attrelid = i.indrelid",
        )
        .bind(quote_qualified(&clause.referenced))
        .fetch_one(&mut *target)
        .await?;
        key.unwrap_or_default()
    } else {
        clause.referenced_columns.clone()
    };
    if referenced_columns.len() != clause.columns.len() {
        return Ok(None);
    }
    let present: Vec<String> = clause
        .columns
        .iter()
        .map(|column| format!("r.{} IS NOT NULL", quote_identifier(column)))
        .collect();
    let matching: Vec<String> = clause
        .columns
        .iter()
        .zip(&referenced_columns)
        .map(|(column, referenced)| {
            format!(
                "p.{} = r.{}",
                quote_identifier(referenced),
                quote_identifier(column)
            )
        })
        .collect();
    let table = quote_qualified(&clause.table);
    let deleted = sqlx::raw_sql(AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         DELETE FROM {table} AS r WHERE {} AND NOT EXISTS (SELECT FROM {} AS p WHERE {});
         RESET session_replication_role",
        present.join(" AND "),
        quote_qualified(&clause.referenced),
        matching.join(" AND ")
    )))
    .execute(&mut *target)
    .await?;
    let qualified: String = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
    )
    .bind(&table)
    .fetch_one(&mut *target)
    .await?;
    Ok(Some((qualified, deleted.rows_affected())))
}

/// Each sequence where the shard's is, so rows a revision inserts do not collide with sampled
/// ones.
pub(super) async fn copy_sequences(
    source: &mut PgConnection,
    target: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    let sequences: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(source)
    .await?;
    for (sequence, last_value) in sequences {
        if let Some(last_value) = last_value {
            sqlx::query("SELECT setval($1::regclass, $2)")
                .bind(&sequence)
                .bind(last_value)
                .execute(&mut *target)
                .await?;
        }
    }
    Ok(())
}
