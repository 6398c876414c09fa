//! What the tracer reads of a database between two statements: the user's relations, columns,
//! constraints, indexes and enum types, the locks the tracer's own server process holds, the
//! sequential scans the current transaction has made per table, and `lock_timeout`.
//!
//! Everything is read through the connection that runs the revision, so inside a transaction it
//! sees the transaction's own uncommitted changes. System schemas and fleetshift's ledger are
//! left out; the tracer's own catalog reads lock only system catalogs, which are left out too.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;

/// A relation's oid, as the catalog numbers it.
pub type Oid = i64;

/// The schemas a rehearsal never reports on.
const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `schema.name`, quoted where needed.
    pub name: String,
    /// `r` table, `p` partitioned table, `i` index, `m` materialised view, `S` sequence.
    pub kind: char,
    /// Changes when the relation is rewritten.
    pub filenode: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// `GENERATED ALWAYS AS (…) STORED`.
    pub generated_stored: bool,
    /// `GENERATED … AS IDENTITY`.
    pub identity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub name: String,
    pub table: Oid,
    /// `c` check, `f` foreign key, `p` primary key, `u` unique, `x` exclusion, `t` trigger.
    pub kind: char,
    pub validated: bool,
    /// The index behind a primary key, unique or exclusion constraint (0: none).
    pub index: Oid,
    pub columns: Vec<i16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub table: Oid,
    pub valid: bool,
    pub unique: bool,
    pub columns: Vec<i16>,
}

/// One reading of the catalog and the connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogState {
    pub relations: BTreeMap<Oid, Relation>,
    pub columns: BTreeMap<(Oid, i16), Column>,
    pub constraints: BTreeMap<Oid, Constraint>,
    pub indexes: BTreeMap<Oid, Index>,
    pub enums: BTreeMap<Oid, String>,
    /// Sequential scans of each table by the current transaction so far.
    pub scans: BTreeMap<Oid, i64>,
    /// Relation locks the connection's server process holds: (relation, mode).
    pub locks: BTreeSet<(Oid, String)>,
    /// `lock_timeout` is 0: a lock wait would never end.
    pub lock_timeout_disabled: bool,
}

impl CatalogState {
    /// Reads the state through `connection`.
    pub async fn read(connection: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let relations =
            sqlx::query_as::<_, (i64, String, String, i64)>(sqlx::AssertSqlSafe(format!(
                "SELECT c.oid::int8, format('%I.%I', n.nspname, c.relname), c.relkind::text,
                    c.relfilenode::int8
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'i', 'm', 'S') AND {USER_SCHEMAS}"
            )))
            .fetch_all(&mut *connection)
            .await?
            .into_iter()
            .map(|(oid, name, kind, filenode)| {
                let kind = kind.chars().next().unwrap_or('?');
                (
                    oid,
                    Relation {
                        name,
                        kind,
                        filenode,
                    },
                )
            })
            .collect();
        let columns = read_columns(connection).await?;
        let constraints = read_constraints(connection).await?;
        let indexes =
            sqlx::query_as::<_, (i64, i64, bool, bool, Vec<i16>)>(sqlx::AssertSqlSafe(format!(
                "SELECT i.indexrelid::int8, i.indrelid::int8, i.indisvalid, i.indisunique,
                        string_to_array(i.indkey::text, ' ')::int2[]
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE {USER_SCHEMAS}"
            )))
            .fetch_all(&mut *connection)
            .await?
            .into_iter()
            .map(|(oid, table, valid, unique, columns)| {
                (
                    oid,
                    Index {
                        table,
                        valid,
                        unique,
                        columns,
                    },
                )
            })
            .collect();
        let enums = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(format!(
            "SELECT t.oid::int8, format('%I.%I', n.nspname, t.typname)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'e' AND {USER_SCHEMAS}"
        )))
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let scans = sqlx::query_as::<_, (i64, i64)>(
            "SELECT relid::int8, seq_scan FROM pg_stat_xact_user_tables WHERE seq_scan > 0",
        )
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let locks = sqlx::query_as::<_, (i64, String)>(
            "SELECT relation::int8, mode FROM pg_locks
             WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted",
        )
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let lock_timeout: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
            .fetch_one(&mut *connection)
            .await?;
        Ok(Self {
            relations,
            columns,
            constraints,
            indexes,
            enums,
            scans,
            locks,
            lock_timeout_disabled: lock_timeout.trim() == "0",
        })
    }

    /// Foreign keys no index leads with: every delete or key update of the referenced table
    /// scans the referencing one.
    pub fn unindexed_foreign_keys(&self) -> Vec<super::findings::UnindexedForeignKey> {
        self.constraints
            .values()
            .filter(|constraint| constraint.kind == 'f')
            .filter(|constraint| {
                !self.indexes.values().any(|index| {
                    index.table == constraint.table
                        && index.columns.len() >= constraint.columns.len()
                        && constraint.columns.iter().all(|column| {
                            index.columns[..constraint.columns.len()].contains(column)
                        })
                })
            })
            .map(|constraint| super::findings::UnindexedForeignKey {
                table: self.name_of(constraint.table),
                name: constraint.name.clone(),
            })
            .collect()
    }

    /// The relation's name, or its oid when it is not a user relation.
    pub fn name_of(&self, oid: Oid) -> String {
        self.relations.get(&oid).map_or_else(
            || format!("relation {oid}"),
            |relation| relation.name.clone(),
        )
    }
}

async fn read_columns(
    connection: &mut PgConnection,
) -> Result<BTreeMap<(Oid, i16), Column>, sqlx::Error> {
    let rows = sqlx::query_as::<
        _,
        (
            i64,
            i16,
            String,
            String,
            bool,
            Option<String>,
            String,
            String,
        ),
    >(sqlx::AssertSqlSafe(format!(
        "SELECT a.attrelid::int8, a.attnum, a.attname::text,
                    format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
               AND {USER_SCHEMAS}"
    )))
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(table, number, name, type_name, not_null, default, generated, identity)| {
                (
                    (table, number),
                    Column {
                        name,
                        type_name,
                        not_null,
                        default,
                        generated_stored: generated == "s",
                        identity: !identity.is_empty(),
                    },
                )
            },
        )
        .collect())
}

async fn read_constraints(
    connection: &mut PgConnection,
) -> Result<BTreeMap<Oid, Constraint>, sqlx::Error> {
    let rows = sqlx::query_as::<_, (i64, String, i64, String, bool, i64, Vec<i16>)>(
        sqlx::AssertSqlSafe(format!(
            "SELECT co.oid::int8, co.conname::text, co.conrelid::int8, co.contype::text,
                    co.convalidated, co.conindid::int8, coalesce(co.conkey, '{{}}')::int2[]
             FROM pg_constraint co
             JOIN pg_class c ON c.oid = co.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        )),
    )
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(oid, name, table, kind, validated, index, columns)| {
            (
                oid,
                Constraint {
                    name,
                    table,
                    kind: kind.chars().next().unwrap_or('?'),
                    validated,
                    index,
                    columns,
                },
            )
        })
        .collect())
}
