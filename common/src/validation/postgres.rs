//! Validation of a PostgreSQL shard: every observation reads in one read-only repeatable-read
//! transaction (counts and checksums agree with each other), with the plan's lock and
//! statement timeouts, so a check never waits long behind the application's locks.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};

use super::{
    Checks, Checksum, ChecksumRead, EXACT_COUNT_BYTES, EXAMPLES, Observed, RowCount,
    ValidationError, failed,
};
use crate::engine::{CountedPool, DatabaseMessage, quote_identifier, quote_qualified};
use crate::proto::v1::{DataCheck, ForeignKeyCheck};

/// Schemas whose objects are not the application's.
const FOREIGN_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

pub(super) async fn observe(
    pool: &CountedPool,
    checks: &Checks<'_>,
) -> Result<Observed, ValidationError> {
    let doing = "observing the shard";
    let mut transaction = read_only(pool, checks).await?;
    let mut observed = Observed::default();
    let indexes = format!(
        "SELECT ic.oid::regclass::text, CASE WHEN NOT i.indisvalid THEN 'invalid' ELSE 'not ready' END
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = ic.relnamespace
         WHERE NOT (i.indisvalid AND i.indisready) AND {FOREIGN_SCHEMAS}"
    );
    let rows = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(indexes))
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| failed("reading the indexes", &e))?;
    observed.broken_indexes = rows.into_iter().collect();
    let constraints = format!(
        "SELECT c.conrelid::regclass::text || '.' || quote_ident(c.conname)
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE NOT c.convalidated AND c.conrelid <> 0 AND {FOREIGN_SCHEMAS}"
    );
    observed.not_validated = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(constraints))
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| failed("reading the constraints", &e))?
        .into_iter()
        .collect();
    for table in checks.touched {
        let count = row_count(&mut transaction, table).await?;
        observed.rows.insert(table.clone(), count);
    }
    observed.checksums = checksums(&mut transaction, checks.verify_data).await?;
    transaction.commit().await.map_err(|e| failed(doing, &e))?;
    Ok(observed)
}

/// A read-only, repeatable-read transaction on a pooled connection, with the plan's timeouts;
/// every setting is the transaction's own, so the connection goes back to the pool as it came
/// (a connection of its own would cost a new server session per observation).
async fn read_only(
    pool: &CountedPool,
    checks: &Checks<'_>,
) -> Result<Transaction<'static, Postgres>, ValidationError> {
    let doing = "opening a read-only transaction";
    let mut transaction = pool.begin().await.map_err(|e| failed(doing, &e))?;
    let settings = format!(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;
         SET LOCAL lock_timeout = {};
         SET LOCAL statement_timeout = {}",
        millis(checks.lock_timeout),
        millis(checks.statement_timeout)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(settings))
        .execute(&mut *transaction)
        .await
        .map_err(|e| failed(doing, &e))?;
    Ok(transaction)
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

/// The relation `table` names: as written (folded as SQL folds it), else with each part
/// taken literally (a mixed-case name the script quoted).
const RELATION: &str = "coalesce(to_regclass($1), to_regclass($2))";

/// `table`'s rows, `None` when it does not exist.
async fn row_count(
    connection: &mut PgConnection,
    table: &str,
) -> Result<Option<RowCount>, ValidationError> {
    let doing = format!("counting the rows of {table}");
    let sized = format!(
        "SELECT r::text,
                (SELECT coalesce(sum(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(r) t)::bigint,
                (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_partition_tree(r) t
                 JOIN pg_class c ON c.oid = t.relid)::bigint
         FROM {RELATION} AS r WHERE r IS NOT NULL"
    );
    let found: Option<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sized))
        .bind(table)
        .bind(quote_qualified(table))
        .fetch_optional(&mut *connection)
        .await
        .map_err(|e| failed(&doing, &e))?;
    let Some((relation, bytes, estimate)) = found else {
        return Ok(None);
    };
    if bytes > EXACT_COUNT_BYTES {
        return Ok(Some(RowCount {
            rows: estimate,
            estimated: true,
        }));
    }
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {relation}"
    )))
    .fetch_one(&mut *connection)
    .await
    .map_err(|e| failed(&doing, &e))?;
    Ok(Some(RowCount {
        rows,
        estimated: false,
    }))
}

/// The checksums of `checks`, on `connection` (inside a revision's transaction too).
pub(crate) async fn checksums(
    connection: &mut PgConnection,
    checks: &[DataCheck],
) -> Result<Vec<ChecksumRead>, ValidationError> {
    let mut read = Vec::with_capacity(checks.len());
    for check in checks {
        read.push(checksum(connection, check).await?);
    }
    Ok(read)
}

/// The checksum of `check`: the sum of a 64-bit hash of each row's text, so row order (and
/// where rows sit on disk) does not matter but every value does. A column that does not
/// exist is the check's own error, read in a savepoint so the observation goes on.
async fn checksum(
    connection: &mut PgConnection,
    check: &DataCheck,
) -> Result<ChecksumRead, ValidationError> {
    let doing = format!("checksumming {}", check.table);
    let relation: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {RELATION}::text")))
            .bind(&check.table)
            .bind(quote_qualified(&check.table))
            .fetch_one(&mut *connection)
            .await
            .map_err(|e| failed(&doing, &e))?;
    let Some(relation) = relation else {
        return Ok(Ok(None));
    };
    let row = if check.columns.is_empty() {
        "t::text".to_owned()
    } else {
        let columns: Vec<String> = check
            .columns
            .iter()
            .map(|column| format!("t.{}", quote_identifier(column)))
            .collect();
        format!("ROW({})::text", columns.join(", "))
    };
    let sql = format!(
        "SELECT count(*), coalesce(sum(hashtextextended({row}, 0)::numeric), 0)::text
         FROM {relation} AS t"
    );
    // A savepoint written out: the fenced transaction is the ledger's own, not the driver's,
    // so the driver would not know to nest.
    sqlx::raw_sql(sqlx::AssertSqlSafe("SAVEPOINT fleetshift_checksum"))
        .execute(&mut *connection)
        .await
        .map_err(|e| failed(&doing, &e))?;
    let read: Result<(i64, String), sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *connection)
        .await;
    let (end, outcome) = match read {
        Ok((rows, sum)) => (
            "RELEASE SAVEPOINT fleetshift_checksum",
            Ok(Some(Checksum { rows, sum })),
        ),
        Err(error) if crate::engine::connection_lost(&error) => {
            return Err(failed(&doing, &error));
        }
        Err(error) => (
            "ROLLBACK TO SAVEPOINT fleetshift_checksum",
            Err(DatabaseMessage(&error).to_string()),
        ),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(end))
        .execute(&mut *connection)
        .await
        .map_err(|e| failed(&doing, &e))?;
    Ok(outcome)
}

/// Foreign keys written `NOT VALID`: the child, the parent, and their columns, quoted.
const UNVALIDATED_KEYS: &str = "
SELECT c.conrelid::regclass::text || '.' || quote_ident(c.conname),
       c.conrelid::regclass::text, c.confrelid::regclass::text,
       array(SELECT quote_ident(a.attname) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.i),
       array(SELECT quote_ident(a.attname) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.i)
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE c.contype = 'f' AND NOT c.convalidated AND ";

/// One foreign key to check.
struct Key {
    name: String,
    child: String,
    parent: String,
    columns: Vec<String>,
    parent_columns: Vec<String>,
}

pub(super) async fn foreign_keys(
    pool: &CountedPool,
    checks: &Checks<'_>,
) -> Result<Vec<ForeignKeyCheck>, ValidationError> {
    let doing = "checking foreign keys not validated";
    let mut transaction = read_only(pool, checks).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{UNVALIDATED_KEYS}{FOREIGN_SCHEMAS} ORDER BY 1"
    )))
    .fetch_all(&mut *transaction)
    .await
    .map_err(|e| failed(doing, &e))?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let key = Key {
            name: row.try_get(0).map_err(|e| failed(doing, &e))?,
            child: row.try_get(1).map_err(|e| failed(doing, &e))?,
            parent: row.try_get(2).map_err(|e| failed(doing, &e))?,
            columns: row.try_get(3).map_err(|e| failed(doing, &e))?,
            parent_columns: row.try_get(4).map_err(|e| failed(doing, &e))?,
        };
        found.push(violations(&mut transaction, key).await?);
    }
    transaction.commit().await.map_err(|e| failed(doing, &e))?;
    Ok(found)
}

/// The rows of `key`'s table whose key (all of it set: MATCH SIMPLE) has no parent row, in a
/// savepoint: a lock not granted in time is this key's error, not the observation's.
async fn violations(
    connection: &mut PgConnection,
    key: Key,
) -> Result<ForeignKeyCheck, ValidationError> {
    let doing = format!("checking foreign key {}", key.name);
    let set: Vec<String> = key
        .columns
        .iter()
        .map(|column| format!("t.{column} IS NOT NULL"))
        .collect();
    let matched: Vec<String> = key
        .columns
        .iter()
        .zip(&key.parent_columns)
        .map(|(column, parent)| format!("p.{parent} = t.{column}"))
        .collect();
    let shown: Vec<String> = key
        .columns
        .iter()
        .map(|column| format!("t.{column}"))
        .collect();
    let sql = format!(
        "SELECT count(*) OVER (), ROW({})::text FROM {} AS t
         WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {}) LIMIT {EXAMPLES}",
        shown.join(", "),
        key.child,
        set.join(" AND "),
        key.parent,
        matched.join(" AND ")
    );
    let mut savepoint = connection.begin().await.map_err(|e| failed(&doing, &e))?;
    let read: Result<Vec<(i64, String)>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *savepoint)
        .await;
    let mut check = ForeignKeyCheck {
        constraint: key.name,
        ..ForeignKeyCheck::default()
    };
    match read {
        Ok(rows) => {
            savepoint.commit().await.map_err(|e| failed(&doing, &e))?;
            check.violating_rows = rows.first().map_or(0, |(count, _)| *count);
            check.examples = rows.into_iter().map(|(_, example)| example).collect();
        }
        Err(error) if crate::engine::connection_lost(&error) => return Err(failed(&doing, &error)),
        Err(error) => {
            savepoint.rollback().await.map_err(|e| failed(&doing, &e))?;
            check.error = DatabaseMessage(&error).to_string();
        }
    }
    Ok(check)
}
