//! A PostgreSQL shard's snapshot, read in one query inside a read-only repeatable-read
//! transaction whose `search_path` is `pg_catalog` alone, so every name the catalog's
//! deparsers print is schema-qualified whatever the connection's own path is; or, for a shard
//! that is one schema (a tenant), of that schema alone with names relative to it.
//!
//! Left out: the system schemas, fleetshift's ledger schemas, and every object an extension
//! owns (the extension itself, with its version, stands for them). Not-null constraints are
//! read as the column's `not_null` (PostgreSQL 18 also lists them as constraints), so shards on
//! different major versions compare equal.

use sqlx::{Connection, PgConnection, Row};

use super::{ObjectKind, Snapshot};

/// `(kind, name, [attribute, value, attribute, value, …])` for every object.
const OBJECTS: &str = r#"
WITH extension_members AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
), namespaces AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE CASE WHEN $1::text IS NULL
               THEN n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')
                    AND n.nspname NOT LIKE 'fleetshift\_%'
               ELSE n.nspname = $1::text END
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
      AND (n.oid, 'pg_namespace'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
), relations AS (
    SELECT c.oid, c.relkind, c.relpersistence, c.relrowsecurity, c.relispartition,
           c.relpartbound, n.nspname || '.' || c.relname AS name
    FROM pg_class c JOIN namespaces n ON n.oid = c.relnamespace
    WHERE (c.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
)
SELECT 'extension', e.extname::text, ARRAY['version', e.extversion, 'schema', n.nspname::text]
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE $1::text IS NULL
UNION ALL
SELECT 'schema', nspname::text, ARRAY[]::text[] FROM namespaces
UNION ALL
SELECT 'enum', n.nspname || '.' || t.typname,
       ARRAY['labels', (SELECT string_agg(quote_literal(l.enumlabel), ', ' ORDER BY l.enumsortorder)
                        FROM pg_enum l WHERE l.enumtypid = t.oid)]
FROM pg_type t JOIN namespaces n ON n.oid = t.typnamespace
WHERE t.typtype = 'e'
  AND (t.oid, 'pg_type'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
UNION ALL
SELECT 'sequence', r.name,
       ARRAY['type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text,
             'increment', s.seqincrement::text, 'min', s.seqmin::text, 'max', s.seqmax::text,
             'cycle', CASE WHEN s.seqcycle THEN 'true' ELSE '' END, 'cache', s.seqcache::text,
             'owned_by', coalesce((
                 SELECT tn.nspname || '.' || t.relname || '.' || a.attname
                 FROM pg_depend d
                 JOIN pg_class t ON t.oid = d.refobjid
                 JOIN pg_namespace tn ON tn.oid = t.relnamespace
                 JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '')]
FROM relations r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT 'table', r.name,
       ARRAY['kind', CASE r.relkind WHEN 'p' THEN 'partitioned' WHEN 'f' THEN 'foreign' ELSE 'table' END,
             'unlogged', CASE WHEN r.relpersistence = 'u' THEN 'true' ELSE '' END,
             'row_security', CASE WHEN r.relrowsecurity THEN 'true' ELSE '' END,
             'partition_key', coalesce(pg_get_partkeydef(r.oid), ''),
             'partition_of', coalesce((
                 SELECT pn.nspname || '.' || p.relname
                 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace
                 WHERE i.inhrelid = r.oid AND r.relispartition), ''),
             'partition_bound', coalesce(pg_get_expr(r.relpartbound, r.oid), '')]
FROM relations r WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT 'column', r.name || '.' || a.attname,
       ARRAY['type', format_type(a.atttypid, a.atttypmod),
             'not_null', CASE WHEN a.attnotnull THEN 'true' ELSE '' END,
             CASE WHEN a.attgenerated = 's' THEN 'generated' ELSE 'default' END,
             coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
             'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' ELSE '' END,
             'collation', CASE WHEN a.attcollation <> t.typcollation
                               THEN (SELECT cn.nspname || '.' || co.collname FROM pg_collation co
                                     JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                     WHERE co.oid = a.attcollation) ELSE '' END]
FROM relations r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT 'constraint', r.name || '.' || c.conname,
       ARRAY['definition', pg_get_constraintdef(c.oid),
             'not_valid', CASE WHEN c.convalidated THEN '' ELSE 'true' END]
FROM pg_constraint c JOIN relations r ON r.oid = c.conrelid
WHERE c.contype <> 'n'
UNION ALL
SELECT 'index', r.name,
       ARRAY['definition', pg_get_indexdef(r.oid),
             'invalid', CASE WHEN i.indisvalid THEN '' ELSE 'true' END,
             'not_ready', CASE WHEN i.indisready THEN '' ELSE 'true' END]
FROM relations r JOIN pg_index i ON i.indexrelid = r.oid
UNION ALL
SELECT 'view', r.name,
       ARRAY['materialized', CASE WHEN r.relkind = 'm' THEN 'true' ELSE '' END,
             'definition', pg_get_viewdef(r.oid)]
FROM relations r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       ARRAY['definition', pg_get_functiondef(p.oid)]
FROM pg_proc p JOIN namespaces n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p')
  AND (p.oid, 'pg_proc'::regclass) NOT IN (SELECT objid, classid FROM extension_members)
UNION ALL
SELECT 'trigger', r.name || '.' || g.tgname,
       ARRAY['definition', pg_get_triggerdef(g.oid),
             'enabled', CASE g.tgenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica'
                                         WHEN 'A' THEN 'always' ELSE '' END]
FROM pg_trigger g JOIN relations r ON r.oid = g.tgrelid
WHERE NOT g.tgisinternal
"#;

/// Reads the snapshot of the database `connection` is connected to.
pub async fn read(connection: &mut PgConnection) -> Result<Snapshot, sqlx::Error> {
    read_scoped(connection, None).await
}

/// Reads the snapshot of the database `connection` is connected to, or with `schema`, of that
/// schema alone: its objects named relative to it (the deparsers print them unqualified, as
/// the schema leads the search path), so two tenants with the same schema compare equal.
/// Extensions belong to the database, not to a tenant, and are left out of a schema's.
pub async fn read_scoped(
    connection: &mut PgConnection,
    schema: Option<&str>,
) -> Result<Snapshot, sqlx::Error> {
    let mut transaction = connection.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(schema.map_or_else(
            || "pg_catalog".to_owned(),
            |schema| {
                format!(
                    "{}, pg_catalog",
                    super::super::engine::quote_identifier(schema)
                )
            },
        ))
        .execute(&mut *transaction)
        .await?;
    let rows = sqlx::query(OBJECTS)
        .bind(schema)
        .fetch_all(&mut *transaction)
        .await?;
    transaction.commit().await?;
    let relative = |text: String| match schema {
        Some(schema) => unqualified(&text, schema),
        None => text,
    };
    let mut snapshot = Snapshot::default();
    for row in rows {
        let kind: String = row.try_get(0)?;
        if schema.is_some() && kind == "schema" {
            // The tenant's schema is the shard itself, not one of its objects.
            continue;
        }
        let name: String = relative(row.try_get(1)?);
        let pairs: Vec<Option<String>> = row.try_get(2)?;
        let Some(kind) = ObjectKind::from_name(&kind) else {
            continue;
        };
        let attributes = super::attributes(pairs.chunks(2).filter_map(|pair| match pair {
            [Some(attribute), value] => Some((
                attribute.as_str(),
                relative(value.clone().unwrap_or_default()),
            )),
            _ => None,
        }));
        snapshot.insert(kind, name, attributes);
    }
    Ok(snapshot)
}

/// `text` with every `schema.` that starts a name (not preceded by a letter, digit, `_` or `"`)
/// taken out: the names the query builds itself (`schema.table`) and any the deparsers still
/// qualify.
fn unqualified(text: &str, schema: &str) -> String {
    let prefix = format!("{schema}.");
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        let boundary = rest[..at].chars().next_back().is_none_or(|before| {
            !(before.is_ascii_alphanumeric() || before == '_' || before == '"')
        });
        kept.push_str(&rest[..at]);
        if !boundary {
            kept.push_str(&prefix);
        }
        rest = &rest[at + prefix.len()..];
    }
    kept.push_str(rest);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_names_are_relative_to_its_schema() {
        assert_eq!(unqualified("tenant_1.accounts", "tenant_1"), "accounts");
        assert_eq!(
            unqualified(
                "CREATE INDEX a ON tenant_1.accounts USING btree (id)",
                "tenant_1"
            ),
            "CREATE INDEX a ON accounts USING btree (id)"
        );
        assert_eq!(
            unqualified("xtenant_1.accounts", "tenant_1"),
            "xtenant_1.accounts"
        );
        assert_eq!(
            unqualified("tenant_10.accounts", "tenant_1"),
            "tenant_10.accounts"
        );
        assert_eq!(unqualified("other.accounts", "tenant_1"), "other.accounts");
    }
}
