//! The restore test of a backup: the dump is restored into a scratch database on the shard's
//! own server and every table's row count there must equal the count in the shard at the
//! moment of the dump. The moment is exact: the agent exports the snapshot of a read-only
//! repeatable-read transaction, `pg_dump --snapshot` dumps that very snapshot, and the rows are
//! counted in the same transaction. The scratch database is dropped whatever happens.

use std::collections::BTreeMap;
use std::path::Path;

use fleetshift_common::engine::CountedPool;
use fleetshift_common::engine::DatabaseMessage;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres};

use super::backup::{BackupSettings, PROGRAMS};
use fleetshift_common::pg_client::{ClientCredentials, client_command, run_to_end};

/// Rows per table (`schema.table`, quoted where needed).
pub type RowCounts = BTreeMap<String, i64>;

/// The tables a dump carries rows of: ordinary tables outside the system schemas, except
/// those that belong to an extension (their rows are the extension's business).
const TABLES: &str = "
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e')
    ORDER BY 1";

/// A transaction whose snapshot `pg_dump` shares; open until released.
#[derive(Debug)]
pub struct HeldSnapshot {
    connection: PoolConnection<Postgres>,
    id: String,
}

impl HeldSnapshot {
    /// Opens the transaction and exports its snapshot.
    pub async fn export(pool: &CountedPool) -> Result<Self, String> {
        let failed = |error: sqlx::Error| {
            format!(
                "cannot export a snapshot for the dump: {}",
                DatabaseMessage(&error)
            )
        };
        let mut connection = pool.acquire().await.map_err(failed)?;
        sqlx::raw_sql(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
             SET LOCAL idle_in_transaction_session_timeout = 0",
        )
        .execute(&mut *connection)
        .await
        .map_err(failed)?;
        let id = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        Ok(Self { connection, id })
    }

    /// The snapshot's name, for `pg_dump --snapshot`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counts every table's rows as the snapshot sees them, then ends the transaction.
    pub async fn count_and_release(mut self) -> Result<RowCounts, String> {
        let counted = count_rows(&mut self.connection).await;
        // The transaction only read; ending it cannot lose anything.
        let _ = sqlx::raw_sql("ROLLBACK")
            .execute(&mut *self.connection)
            .await;
        counted.map_err(|error| format!("cannot count the shard's rows: {error}"))
    }
}

async fn count_rows(connection: &mut sqlx::PgConnection) -> Result<RowCounts, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(TABLES)
        .fetch_all(&mut *connection)
        .await?;
    let mut counts = RowCounts::new();
    for table in tables {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *connection)
                .await?;
        counts.insert(table, count);
    }
    Ok(counts)
}

/// Restores `dump` into a scratch database beside the shard and compares its row counts with
/// `expected`; the number of tables compared.
pub async fn restore_and_compare(
    settings: &BackupSettings,
    credentials: &ClientCredentials,
    pool: &CountedPool,
    dump: &Path,
    expected: &RowCounts,
) -> Result<u32, String> {
    let scratch = scratch_name();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{scratch}\"")))
        .execute(pool)
        .await
        .map_err(|error| {
            format!(
                "the restore test cannot create a scratch database ({error}); grant the shard's user CREATEDB or drop --restore-test"
            )
        })?;
    let compared = restore_into(settings, credentials, pool, &scratch, dump, expected).await;
    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
    )))
    .execute(pool)
    .await
    {
        tracing::warn!(database = %scratch, %error, "the restore test's scratch database was not dropped; drop it by hand");
    }
    compared
}

async fn restore_into(
    settings: &BackupSettings,
    credentials: &ClientCredentials,
    pool: &CountedPool,
    scratch: &str,
    dump: &Path,
    expected: &RowCounts,
) -> Result<u32, String> {
    let mut command = client_command(&settings.pg_restore, Some(credentials));
    command
        .arg("--no-password")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--dbname")
        .arg(credentials.conninfo_for(scratch))
        .arg(dump);
    run_to_end(command, &settings.pg_restore, "pg_restore", PROGRAMS)
        .await
        .map_err(|failure| format!("the dump did not restore: {failure}"))?;
    let options = pool.connect_options().as_ref().clone().database(scratch);
    let mut connection = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|error| format!("cannot connect to the restored copy: {error}"))?;
    let restored = count_rows(&mut connection).await;
    let _ = connection.close().await;
    let restored =
        restored.map_err(|error| format!("cannot count the restored copy's rows: {error}"))?;
    let differences = differences(expected, &restored);
    if !differences.is_empty() {
        return Err(format!(
            "the restored copy differs from the shard: {}",
            differences.join("; ")
        ));
    }
    Ok(u32::try_from(expected.len()).unwrap_or(u32::MAX))
}

/// `fleetshift_restore_<micros>`: unique on the server for as long as the test runs.
fn scratch_name() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    format!("fleetshift_restore_{micros}")
}

/// Each table whose count differs, or that only one side has.
fn differences(expected: &RowCounts, restored: &RowCounts) -> Vec<String> {
    let mut found = Vec::new();
    for (table, rows) in expected {
        match restored.get(table) {
            Some(back) if back == rows => {}
            Some(back) => found.push(format!(
                "{table} has {rows} rows in the shard, {back} restored"
            )),
            None => found.push(format!("{table} is missing from the restored copy")),
        }
    }
    for table in restored
        .keys()
        .filter(|table| !expected.contains_key(*table))
    {
        found.push(format!("{table} is only in the restored copy"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_difference_is_named() {
        let expected: RowCounts = [("public.a".to_owned(), 3), ("public.b".to_owned(), 1)].into();
        assert!(differences(&expected, &expected).is_empty());
        let restored: RowCounts = [("public.a".to_owned(), 2), ("public.c".to_owned(), 0)].into();
        assert_eq!(
            differences(&expected, &restored),
            [
                "public.a has 3 rows in the shard, 2 restored",
                "public.b is missing from the restored copy",
                "public.c is only in the restored copy",
            ]
        );
    }
}
