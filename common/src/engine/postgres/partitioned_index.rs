//! `CREATE INDEX CONCURRENTLY` on a partitioned table, which PostgreSQL refuses, built the way
//! operators build it by hand: the index `ON ONLY` the partitioned table (invalid, no data
//! read), then for each partition an index built concurrently and attached (`ALTER INDEX …
//! ATTACH PARTITION`); once every partition's is attached the partitioned index is valid.
//! Sub-partitioned partitions get an `ON ONLY` index of their own, filled the same way, then
//! attached. Every step is read back from the catalog first, so a build interrupted anywhere
//! resumes where it stopped: attached partitions are skipped, a valid partition index is
//! attached, an INVALID one (a build killed half-way) is dropped and built again.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row as _};

use super::quote_identifier;
use crate::engine::{StatementError, statement_error};
use crate::statements::IndexBuild;

/// PostgreSQL keeps at most this many bytes of an identifier.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// What building a partitioned table's index did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Built {
    /// Leaf partitions whose index this run built.
    pub built: usize,
    /// Partitions (leaves or sub-partitioned) found attached already, from an earlier attempt.
    pub attached_before: usize,
}

/// A table or index in the catalog.
struct Relation {
    oid: u32,
    schema: String,
    name: String,
}

impl Relation {
    fn qualified(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.name)
        )
    }
}

/// `table` (as the statement writes it) when it is a partitioned table.
pub(super) async fn partitioned_table(
    connection: &mut PgConnection,
    table: &str,
) -> Result<Option<u32>, StatementError> {
    let oid: Option<i64> = sqlx::query_scalar(
        "SELECT c.oid::bigint FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'p'",
    )
    .bind(table)
    .fetch_optional(&mut *connection)
    .await
    .map_err(|error| statement_error(None, &error))?;
    Ok(oid.and_then(|oid| u32::try_from(oid).ok()))
}

/// Builds `build`'s index (named `name`) on the partitioned table `table_oid`, resuming
/// whatever an earlier attempt left. `fresh`: no earlier attempt of this statement may have
/// run, so an existing index of that name is the server's to refuse (unless `IF NOT EXISTS`).
pub(super) async fn build(
    connection: &mut PgConnection,
    build: &IndexBuild,
    name: &str,
    table_oid: u32,
    fresh: bool,
) -> Result<Built, StatementError> {
    let mut built = Built {
        built: 0,
        attached_before: 0,
    };
    let table = relation(connection, table_oid).await?;
    let parent = match index_on(connection, name, table.oid).await? {
        Some((index, _)) if !fresh || build.if_not_exists => index,
        _ => created(connection, build, name, &table, Kind::Only).await?,
    };
    fill(connection, build, &parent, &table, &mut built).await?;
    Ok(built)
}

/// Attaches an index of every partition of `table` to `parent`, building those missing.
async fn fill(
    connection: &mut PgConnection,
    build: &IndexBuild,
    parent: &Relation,
    table: &Relation,
    built: &mut Built,
) -> Result<(), StatementError> {
    let rows = sqlx::query(
        "SELECT c.oid::bigint, n.nspname::text, c.relname::text, c.relkind = 'p',
                EXISTS (SELECT FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid
                        WHERE ii.inhparent = $2::bigint::oid AND x.indrelid = c.oid)
         FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = $1::bigint::oid
         ORDER BY c.relname",
    )
    .bind(i64::from(table.oid))
    .bind(i64::from(parent.oid))
    .fetch_all(&mut *connection)
    .await
    .map_err(|error| statement_error(None, &error))?;
    for row in rows {
        let decode = |error| statement_error(None, &error);
        let oid: i64 = row.try_get(0).map_err(decode)?;
        let partition = Relation {
            oid: u32::try_from(oid).unwrap_or_default(),
            schema: row.try_get(1).map_err(decode)?,
            name: row.try_get(2).map_err(decode)?,
        };
        let sub_partitioned: bool = row.try_get(3).map_err(decode)?;
        let attached: bool = row.try_get(4).map_err(decode)?;
        if attached {
            built.attached_before += 1;
            continue;
        }
        let name = partition_index_name(&parent.name, &partition.name);
        let index = if sub_partitioned {
            let index = match index_on(connection, &name, partition.oid).await? {
                Some((index, _)) => index,
                None => created(connection, build, &name, &partition, Kind::Only).await?,
            };
            Box::pin(fill(connection, build, &index, &partition, built)).await?;
            index
        } else {
            built.built += 1;
            leaf_index(connection, build, &name, &partition).await?
        };
        run(
            connection,
            &format!(
                "ALTER INDEX {} ATTACH PARTITION {}",
                parent.qualified(),
                index.qualified()
            ),
        )
        .await?;
    }
    Ok(())
}

/// A valid index `name` on the leaf `partition`: kept when an earlier attempt built it, built
/// again when it left it INVALID, built when missing.
async fn leaf_index(
    connection: &mut PgConnection,
    build: &IndexBuild,
    name: &str,
    partition: &Relation,
) -> Result<Relation, StatementError> {
    match index_on(connection, name, partition.oid).await? {
        Some((index, true)) => return Ok(index),
        Some((index, false)) => {
            tracing::warn!(index = %name, partition = %partition.name, "dropping a partition's invalid index left by an earlier attempt");
            let drop = format!("DROP INDEX CONCURRENTLY {}", index.qualified());
            run(connection, &drop).await?;
        }
        None => {}
    }
    tracing::info!(index = %name, partition = %partition.name, "building a partition's index concurrently");
    created(connection, build, name, partition, Kind::Concurrently).await
}

/// How an index is created: `ON ONLY` a partitioned table (its partitions' attached later),
/// or concurrently on a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Only,
    Concurrently,
}

/// Creates `build`'s index `name` on `table` the `kind` way; the index.
async fn created(
    connection: &mut PgConnection,
    build: &IndexBuild,
    name: &str,
    table: &Relation,
    kind: Kind,
) -> Result<Relation, StatementError> {
    let (how, only) = match kind {
        Kind::Only => ("", "ONLY "),
        Kind::Concurrently => ("CONCURRENTLY ", ""),
    };
    let sql = format!(
        "CREATE {unique}INDEX {how}{name} ON {only}{table}{definition}",
        unique = if build.unique { "UNIQUE " } else { "" },
        name = quote_identifier(name),
        table = table.qualified(),
        definition = build.definition
    );
    run(connection, &sql).await?;
    match index_on(connection, name, table.oid).await? {
        Some((index, _)) => Ok(index),
        None => Err(StatementError {
            index: None,
            sqlstate: None,
            connection_lost: false,
            message: format!(
                "index {name} on {} is missing right after it was created",
                table.qualified()
            ),
        }),
    }
}

/// The name of a partition's index: `<index>_<partition>`, or when that is longer than
/// PostgreSQL keeps, cut and told apart by a hash of the partition's name.
fn partition_index_name(index: &str, partition: &str) -> String {
    let name = format!("{index}_{partition}");
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(partition.as_bytes())[..4]);
    let mut end = MAX_IDENTIFIER_BYTES - hash.len() - 1;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}_{hash}", &name[..end])
}

async fn relation(connection: &mut PgConnection, oid: u32) -> Result<Relation, StatementError> {
    let (schema, name): (String, String) = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::bigint::oid",
    )
    .bind(i64::from(oid))
    .fetch_one(&mut *connection)
    .await
    .map_err(|error| statement_error(None, &error))?;
    Ok(Relation { oid, schema, name })
}

/// The index `name` on the table `table_oid`, if there is one, and whether it is valid.
async fn index_on(
    connection: &mut PgConnection,
    name: &str,
    table_oid: u32,
) -> Result<Option<(Relation, bool)>, StatementError> {
    let row: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT c.oid::bigint, n.nspname::text, x.indisvalid FROM pg_index x
         JOIN pg_class c ON c.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE x.indrelid = $1::bigint::oid AND c.relname = $2",
    )
    .bind(i64::from(table_oid))
    .bind(name)
    .fetch_optional(&mut *connection)
    .await
    .map_err(|error| statement_error(None, &error))?;
    Ok(row.map(|(oid, schema, valid)| {
        let index = Relation {
            oid: u32::try_from(oid).unwrap_or_default(),
            schema,
            name: name.to_owned(),
        };
        (index, valid)
    }))
}

async fn run(connection: &mut PgConnection, sql: &str) -> Result<(), StatementError> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *connection)
        .await
        .map(drop)
        .map_err(|error| statement_error(None, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_index_names_fit_in_an_identifier_and_stay_apart() {
        assert_eq!(
            partition_index_name("events_at_idx", "events_p7"),
            "events_at_idx_events_p7"
        );
        let long = "an_index_name_that_is_already_rather_long_for_postgres";
        let first = partition_index_name(long, "measurements_y2026m01");
        let second = partition_index_name(long, "measurements_y2026m02");
        assert!(first.len() <= MAX_IDENTIFIER_BYTES, "{first}");
        assert_ne!(first, second);
    }
}
