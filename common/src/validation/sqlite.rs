//! Validation of a SQLite shard: `quick_check` for integrity, exact counts (a SQLite database
//! is small enough to count), a checksum hashed here row by row (SQLite has no hash function),
//! and `foreign_key_check`, since SQLite enforces foreign keys only when a connection asks it
//! to.

use std::collections::BTreeMap;

use futures_util::TryStreamExt as _;
use sha2::{Digest, Sha256};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::{
    Checks, Checksum, ChecksumRead, EXAMPLES, Observed, RowCount, ValidationError, failed,
};
use crate::engine::{DatabaseMessage, quote_identifier};
use crate::proto::v1::{DataCheck, ForeignKeyCheck};

pub(super) async fn observe(
    pool: &SqlitePool,
    checks: &Checks<'_>,
) -> Result<Observed, ValidationError> {
    let doing = "observing the shard";
    let mut connection = pool.acquire().await.map_err(|e| failed(doing, &e))?;
    let mut transaction = connection.begin().await.map_err(|e| failed(doing, &e))?;
    let mut observed = Observed::default();
    let complaints: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| failed("running quick_check", &e))?;
    if complaints != ["ok"] {
        observed.integrity = Some(complaints.join("; "));
    }
    for table in checks.touched {
        let count = match exists(&mut transaction, table).await? {
            Some(name) => Some(RowCount {
                rows: count(&mut transaction, &name).await?,
                estimated: false,
            }),
            None => None,
        };
        observed.rows.insert(table.clone(), count);
    }
    observed.checksums = checksums(&mut transaction, checks.verify_data).await?;
    transaction.commit().await.map_err(|e| failed(doing, &e))?;
    Ok(observed)
}

/// The table's name as the schema spells it, when it exists.
async fn exists(
    connection: &mut SqliteConnection,
    table: &str,
) -> Result<Option<String>, ValidationError> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
    )
    .bind(table.strip_prefix("main.").unwrap_or(table))
    .fetch_optional(&mut *connection)
    .await
    .map_err(|e| failed(&format!("looking up table {table}"), &e))
}

async fn count(connection: &mut SqliteConnection, table: &str) -> Result<i64, ValidationError> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        quote_identifier(table)
    )))
    .fetch_one(&mut *connection)
    .await
    .map_err(|e| failed(&format!("counting the rows of {table}"), &e))
}

/// The checksums of `checks`, on `connection` (inside a revision's transaction too).
pub(crate) async fn checksums(
    connection: &mut SqliteConnection,
    checks: &[DataCheck],
) -> Result<Vec<ChecksumRead>, ValidationError> {
    let mut read = Vec::with_capacity(checks.len());
    for check in checks {
        read.push(checksum(connection, check).await?);
    }
    Ok(read)
}

/// The checksum of `check`: the wrapping sum of the first 64 bits of each row's SHA-256,
/// over the row's values as SQLite quotes them.
async fn checksum(
    connection: &mut SqliteConnection,
    check: &DataCheck,
) -> Result<ChecksumRead, ValidationError> {
    let doing = format!("checksumming {}", check.table);
    let Some(table) = exists(connection, &check.table).await? else {
        return Ok(Ok(None));
    };
    let columns: Vec<String> = if check.columns.is_empty() {
        sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .bind(&table)
            .fetch_all(&mut *connection)
            .await
            .map_err(|e| failed(&doing, &e))?
    } else {
        check.columns.clone()
    };
    let row: Vec<String> = columns
        .iter()
        .map(|column| format!("quote({})", quote_identifier(column)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        row.join(" || char(31) || "),
        quote_identifier(&table)
    );
    let query = sqlx::AssertSqlSafe(sql);
    let mut rows = sqlx::query_scalar::<_, String>(query).fetch(&mut *connection);
    let (mut count, mut sum) = (0_i64, 0_u64);
    loop {
        match rows.try_next().await {
            Ok(Some(text)) => {
                let digest = Sha256::digest(text.as_bytes());
                let mut first = [0_u8; 8];
                first.copy_from_slice(&digest[..8]);
                sum = sum.wrapping_add(u64::from_be_bytes(first));
                count += 1;
            }
            Ok(None) => break,
            Err(error) if crate::engine::connection_lost(&error) => {
                return Err(failed(&doing, &error));
            }
            Err(error) => return Ok(Err(DatabaseMessage(&error).to_string())),
        }
    }
    Ok(Ok(Some(Checksum {
        rows: count,
        sum: format!("{sum:016x}"),
    })))
}

/// Every foreign key with rows that violate it, from `foreign_key_check`: grouped by child
/// table and parent, with the first rows' ids.
pub(super) async fn foreign_keys(
    pool: &SqlitePool,
) -> Result<Vec<ForeignKeyCheck>, ValidationError> {
    let doing = "running foreign_key_check";
    let mut connection = pool.acquire().await.map_err(|e| failed(doing, &e))?;
    let rows: Vec<(String, Option<i64>, String)> =
        sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
            .fetch_all(&mut *connection)
            .await
            .map_err(|e| failed(doing, &e))?;
    let mut grouped: BTreeMap<String, ForeignKeyCheck> = BTreeMap::new();
    for (table, rowid, parent) in rows {
        let constraint = format!("{table} -> {parent}");
        let check = grouped
            .entry(constraint.clone())
            .or_insert_with(|| ForeignKeyCheck {
                constraint,
                ..ForeignKeyCheck::default()
            });
        check.violating_rows += 1;
        if check.examples.len() < EXAMPLES {
            check.examples.push(rowid.map_or_else(
                || "a row without rowid".to_owned(),
                |rowid| format!("rowid {rowid}"),
            ));
        }
    }
    Ok(grouped.into_values().collect())
}
