//! What a shard's catalog says about its tables: estimated rows (`reltuples`), total size, and
//! every object that depends on a table or that a change to it may break: views and
//! materialized views, foreign keys in and out, indexes, triggers, functions whose body names
//! the table, row-level security policies and publications; and per column, the views,
//! indexes, foreign keys and functions that use it; and the sessions holding or awaiting a lock
//! on it at the moment of reading. The agent reports these with its shard facts; plans weigh
//! them in their risk.

use std::collections::HashMap;
use std::time::Duration;

use super::CountedPool;

use crate::proto::v1::{ColumnFacts, TableActivity, TableFacts};

/// User tables: not in `pg_catalog`, `information_schema` or fleetshift's own schemas (the
/// ledger's `fleetshift` and the tenants' `fleetshift_<tenant>`). A partitioned table counts
/// the rows and bytes of its partitions, and its leaf partitions.
const TABLES: &str = "
    SELECT c.oid::bigint, n.nspname, c.relname,
           CASE WHEN c.relkind = 'p' THEN tree.rows ELSE greatest(c.reltuples, 0)::bigint END,
           CASE WHEN c.relkind = 'p' THEN tree.bytes ELSE pg_total_relation_size(c.oid) END,
           CASE WHEN c.relkind = 'p' THEN tree.leaves ELSE 0 END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN LATERAL (
        SELECT coalesce(sum(greatest(p.reltuples, 0)), 0)::bigint AS rows,
               coalesce(sum(pg_total_relation_size(p.oid)), 0)::bigint AS bytes,
               count(*) FILTER (WHERE t.isleaf) AS leaves
        FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid
        WHERE c.relkind = 'p' AND t.relid <> c.oid
    ) tree ON true
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
      AND n.nspname NOT LIKE 'fleetshift\\_%'
      AND n.nspname NOT LIKE 'pg_toast%'
    ORDER BY n.nspname, c.relname";

/// (table oid, dependent description) for every kind of dependent; fleetshift's own
/// functions (the ledger's) are none.
const DEPENDENTS: &str = "
    SELECT DISTINCT d.refobjid::bigint,
           CASE v.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
             || vn.nspname || '.' || v.relname
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class AND v.oid <> d.refobjid
    JOIN pg_namespace vn ON vn.oid = v.relnamespace
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  UNION ALL
    SELECT con.conrelid::bigint, 'foreign key ' || con.conname || ' to ' || con.confrelid::regclass::text
    FROM pg_constraint con WHERE con.contype = 'f'
  UNION ALL
    SELECT con.confrelid::bigint, 'foreign key ' || con.conname || ' from ' || con.conrelid::regclass::text
    FROM pg_constraint con WHERE con.contype = 'f'
  UNION ALL
    SELECT i.indrelid::bigint, 'index ' || i.indexrelid::regclass::text
    FROM pg_index i
  UNION ALL
    SELECT t.tgrelid::bigint, 'trigger ' || t.tgname
    FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
    SELECT c.oid::bigint, 'function ' || p.oid::regprocedure::text
    FROM pg_proc p
    JOIN pg_namespace pn ON pn.oid = p.pronamespace
    JOIN pg_class c ON c.relkind IN ('r', 'p')
      AND p.prosrc ~* ('\\m' || c.relname || '\\M')
    WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
      AND pn.nspname NOT LIKE 'fleetshift\\_%'
  UNION ALL
    SELECT pol.polrelid::bigint, 'policy ' || pol.polname
    FROM pg_policy pol
  UNION ALL
    SELECT pr.prrelid::bigint, 'publication ' || pub.pubname
    FROM pg_publication_rel pr JOIN pg_publication pub ON pub.oid = pr.prpubid";

/// (table oid, column, dependent) for objects that depend on one column: views and
/// materialized views that read it, indexes and foreign keys on it, and functions whose body
/// names it (their SQL must change when the column is renamed or dropped).
const COLUMN_DEPENDENTS: &str = "
    SELECT DISTINCT d.refobjid::bigint, a.attname::text,
           CASE v.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
             || vn.nspname || '.' || v.relname
    FROM pg_depend d
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class AND v.oid <> d.refobjid
    JOIN pg_namespace vn ON vn.oid = v.relnamespace
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjsubid > 0
  UNION ALL
    SELECT i.indrelid::bigint, a.attname::text, 'index ' || i.indexrelid::regclass::text
    FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  UNION ALL
    SELECT con.conrelid::bigint, a.attname::text, 'foreign key ' || con.conname
    FROM pg_constraint con
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey)
    WHERE con.contype = 'f'
  UNION ALL
    SELECT con.confrelid::bigint, a.attname::text, 'foreign key ' || con.conname
    FROM pg_constraint con
    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = ANY (con.confkey)
    WHERE con.contype = 'f'
  UNION ALL
    SELECT a.attrelid::bigint, a.attname::text, 'function ' || p.oid::regprocedure::text
    FROM pg_proc p
    JOIN pg_namespace pn ON pn.oid = p.pronamespace
    JOIN pg_class c ON c.relkind IN ('r', 'p') AND p.prosrc ~* ('\\m' || c.relname || '\\M')
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND p.prosrc ~* ('\\m' || a.attname || '\\M')
    WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
      AND pn.nspname NOT LIKE 'fleetshift\\_%'";

/// (table oid, pid, mode, granted, state, transaction age in seconds, query) for every lock
/// another session of this database holds or awaits on a relation.
const ACTIVITY: &str = "
    SELECT l.relation::bigint, a.pid, l.mode, l.granted, coalesce(a.state, ''),
           extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, now()))::float8,
           left(coalesce(a.query, ''), 200)
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid <> pg_backend_pid()
    ORDER BY l.relation, a.pid, l.mode";

/// What every activity query selects after the table: pid, mode, granted, state, transaction
/// age in seconds, query.
pub(super) type ActivityColumns = (i32, String, bool, String, f64, String);

/// Every user table with its size, its dependents, and the sessions using it now.
pub async fn table_facts(pool: &CountedPool) -> Result<Vec<TableFacts>, sqlx::Error> {
    let tables: Vec<(i64, String, String, i64, i64, i64)> =
        sqlx::query_as(TABLES).fetch_all(pool).await?;
    let dependents: Vec<(i64, String)> = sqlx::query_as(DEPENDENTS).fetch_all(pool).await?;
    let column_dependents: Vec<(i64, String, String)> =
        sqlx::query_as(COLUMN_DEPENDENTS).fetch_all(pool).await?;
    let activity: Vec<(i64, i32, String, bool, String, f64, String)> =
        sqlx::query_as(ACTIVITY).fetch_all(pool).await?;
    let mut activity_by_table: HashMap<i64, Vec<TableActivity>> = HashMap::new();
    for (oid, pid, mode, granted, state, age, query) in activity {
        activity_by_table
            .entry(oid)
            .or_default()
            .push(table_activity((pid, mode, granted, state, age, query)));
    }
    Ok(tables
        .into_iter()
        .map(|(oid, schema, name, rows, bytes, partitions)| {
            let mut named: Vec<String> = dependents
                .iter()
                .filter(|(table, _)| *table == oid)
                .map(|(_, dependent)| dependent.clone())
                .collect();
            named.sort();
            named.dedup();
            let mut columns: Vec<ColumnFacts> = Vec::new();
            for (_, column, dependent) in
                column_dependents.iter().filter(|(table, ..)| *table == oid)
            {
                match columns.iter_mut().find(|facts| &facts.column == column) {
                    Some(facts) if !facts.dependents.contains(dependent) => {
                        facts.dependents.push(dependent.clone());
                    }
                    Some(_) => {}
                    None => columns.push(ColumnFacts {
                        column: column.clone(),
                        dependents: vec![dependent.clone()],
                    }),
                }
            }
            columns.sort_by(|left, right| left.column.cmp(&right.column));
            TableFacts {
                table: if schema == "public" {
                    name
                } else {
                    format!("{schema}.{name}")
                },
                estimated_rows: rows,
                total_bytes: bytes,
                dependents: named,
                columns,
                activity: activity_by_table.remove(&oid).unwrap_or_default(),
                partitions: u32::try_from(partitions).unwrap_or(u32::MAX),
            }
        })
        .collect())
}

pub(super) fn table_activity(columns: ActivityColumns) -> TableActivity {
    let (pid, mode, granted, state, age_seconds, query) = columns;
    TableActivity {
        pid,
        mode,
        granted,
        state,
        transaction_age: Duration::try_from_secs_f64(age_seconds.max(0.0))
            .ok()
            .and_then(|age| prost_types::Duration::try_from(age).ok()),
        query,
    }
}

/// How long the session's transaction had been open when the facts were read.
pub fn activity_age(activity: &TableActivity) -> Option<Duration> {
    activity
        .transaction_age
        .and_then(|age| Duration::try_from(age).ok())
}

/// One session's use of a table as one line: "pid 4242 (idle in transaction for 12s)
/// holds RowExclusiveLock: UPDATE users SET …".
pub fn describe_activity(activity: &TableActivity) -> String {
    let age =
        activity_age(activity).map_or_else(String::new, |age| format!(" for {}s", age.as_secs()));
    let state = if activity.state.is_empty() {
        "unknown state"
    } else {
        &activity.state
    };
    let holds = if activity.granted { "holds" } else { "awaits" };
    format!(
        "pid {} ({state}{age}) {holds} {}: {}",
        activity.pid, activity.mode, activity.query
    )
}

/// A table's facts as `fleetshift-agent check` and plans print them.
pub fn facts_json(facts: &TableFacts) -> serde_json::Value {
    serde_json::json!({
        "table": facts.table,
        "estimated_rows": facts.estimated_rows,
        "total_bytes": facts.total_bytes,
        "partitions": facts.partitions,
        "dependents": facts.dependents,
        "columns": facts.columns.iter().map(|column| serde_json::json!({
            "column": column.column,
            "dependents": column.dependents,
        })).collect::<Vec<_>>(),
        "activity": facts.activity.iter().map(|activity| serde_json::json!({
            "pid": activity.pid,
            "mode": activity.mode,
            "granted": activity.granted,
            "state": activity.state,
            "transaction_age_seconds": activity_age(activity).map(|age| age.as_secs_f64()),
            "query": activity.query,
        })).collect::<Vec<_>>(),
    })
}
