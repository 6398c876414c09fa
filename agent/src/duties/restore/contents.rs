//! What a backup holds against what the shard holds now: the backup's relations and schemas
//! read from its table of contents (`pg_restore --list`), the shard's from its catalog. The
//! shard's relations the backup does not have are dropped before the restore, so the shard
//! ends as the backup was, not as a blend of both.

use std::collections::BTreeSet;

use fleetshift_common::engine::quote_identifier;
use sqlx::PgPool;

/// A relation: schema, name and the keyword `DROP` takes for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub kind: &'static str,
}

impl Relation {
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.name)
        )
    }

    /// Whether `LOCK TABLE` takes it (sequences it does not).
    fn lockable(&self) -> bool {
        self.kind != "SEQUENCE"
    }
}

/// Schemas and relations, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub schemas: BTreeSet<String>,
    /// (schema, name).
    pub relations: BTreeSet<(String, String)>,
}

/// The table-of-contents entry types that name a relation, longest first so `TABLE DATA` is
/// never read as a `TABLE`; `None` for entries that are not relations.
const ENTRY_TYPES: [(&str, Option<&str>); 10] = [
    ("MATERIALIZED VIEW DATA", None),
    ("MATERIALIZED VIEW", Some("MATERIALIZED VIEW")),
    ("FOREIGN TABLE", Some("FOREIGN TABLE")),
    ("TABLE DATA", None),
    ("TABLE", Some("TABLE")),
    ("VIEW", Some("VIEW")),
    ("SEQUENCE OWNED BY", None),
    ("SEQUENCE SET", None),
    ("SEQUENCE", Some("SEQUENCE")),
    ("SCHEMA", Some("SCHEMA")),
];

/// Reads `pg_restore --list` output: `<id>; <catalog> <oid> <TYPE> <schema> <name> <owner>`.
pub fn from_listing(listing: &str) -> Contents {
    let mut contents = Contents::default();
    for line in listing.lines().filter(|line| !line.starts_with(';')) {
        let Some((_, entry)) = line.split_once("; ") else {
            continue;
        };
        let mut fields = entry.splitn(3, ' ');
        let (Some(_catalog), Some(_oid), Some(rest)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((kind, rest)) = ENTRY_TYPES.iter().find_map(|(prefix, kind)| {
            rest.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|rest| (*kind, rest))
        }) else {
            continue;
        };
        let words: Vec<&str> = rest.split(' ').collect();
        let Some(kind) = kind else { continue };
        // Schema, name (may hold spaces), owner.
        if words.len() < 3 {
            continue;
        }
        let name = words[1..words.len() - 1].join(" ");
        if kind == "SCHEMA" {
            contents.schemas.insert(name);
        } else {
            contents.relations.insert((words[0].to_owned(), name));
        }
    }
    contents
}

/// The shard's user schemas (not `public`, not an extension's) and relations (not an
/// extension's, not a sequence a column owns), as its catalog lists them now.
pub async fn of_shard(pool: &PgPool) -> Result<(BTreeSet<String>, Vec<Relation>), sqlx::Error> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_namespace n
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
           AND n.nspname !~ '^pg_'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                           AND d.objid = n.oid AND d.deptype = 'e')",
    )
    .fetch_all(pool)
    .await?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let relations = rows
        .into_iter()
        .map(|(schema, name, relkind)| Relation {
            schema,
            name,
            kind: match relkind.as_str() {
                "v" => "VIEW",
                "m" => "MATERIALIZED VIEW",
                "S" => "SEQUENCE",
                "f" => "FOREIGN TABLE",
                _ => "TABLE",
            },
        })
        .collect();
    Ok((schemas.into_iter().collect(), relations))
}

/// What the restore does beyond the backup's script: the relations to lock up front and the
/// statements dropping what the backup does not have, with a line per object dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub locks: Vec<String>,
    pub drops: Vec<String>,
    pub dropped: Vec<String>,
}

/// Reconciles the shard's `schemas` and `relations` with the backup's `contents`.
pub fn reconcile(
    backup: &Contents,
    schemas: &BTreeSet<String>,
    relations: &[Relation],
) -> Reconciliation {
    let mut reconciliation = Reconciliation {
        locks: relations
            .iter()
            .filter(|relation| relation.lockable())
            .map(Relation::quoted)
            .collect(),
        ..Reconciliation::default()
    };
    let gone_schemas: BTreeSet<&String> = schemas
        .iter()
        .filter(|schema| !backup.schemas.contains(*schema))
        .collect();
    for schema in &gone_schemas {
        reconciliation
            .drops
            .push(format!("DROP SCHEMA {} CASCADE;", quote_identifier(schema)));
        reconciliation.dropped.push(format!("schema {schema}"));
    }
    for relation in relations {
        let in_backup = backup
            .relations
            .contains(&(relation.schema.clone(), relation.name.clone()));
        if in_backup || gone_schemas.contains(&relation.schema) {
            continue;
        }
        reconciliation.drops.push(format!(
            "DROP {} IF EXISTS {} CASCADE;",
            relation.kind,
            relation.quoted()
        ));
        reconciliation.dropped.push(format!(
            "{} {}.{}",
            relation.kind.to_lowercase(),
            relation.schema,
            relation.name
        ));
    }
    reconciliation
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = ";
; Archive created at 2026-11-23 10:00:00 UTC
;
6; 2615 16387 SCHEMA - app postgres
7; 2615 16390 SCHEMA - fleetshift postgres
216; 1259 16388 TABLE app u postgres
215; 1259 16384 TABLE public t postgres
217; 1259 16400 VIEW public recent accounts postgres
218; 1259 16401 MATERIALIZED VIEW public totals postgres
219; 1259 16402 SEQUENCE public ids postgres
3344; 0 16388 TABLE DATA app u postgres
3345; 0 0 SEQUENCE SET public ids postgres
3346; 0 16401 MATERIALIZED VIEW DATA public totals postgres
";

    fn relation(schema: &str, name: &str, kind: &'static str) -> Relation {
        Relation {
            schema: schema.to_owned(),
            name: name.to_owned(),
            kind,
        }
    }

    #[test]
    fn the_listing_yields_schemas_and_relations_not_data_entries() {
        let contents = from_listing(LISTING);
        assert_eq!(
            contents.schemas,
            BTreeSet::from(["app".to_owned(), "fleetshift".to_owned()])
        );
        let names: Vec<String> = contents
            .relations
            .iter()
            .map(|(schema, name)| format!("{schema}.{name}"))
            .collect();
        assert_eq!(
            names,
            [
                "app.u",
                "public.ids",
                "public.recent accounts",
                "public.t",
                "public.totals"
            ]
        );
    }

    #[test]
    fn what_the_backup_lacks_is_dropped_and_everything_lockable_is_locked() {
        let backup = from_listing(LISTING);
        let schemas = BTreeSet::from([
            "app".to_owned(),
            "fleetshift".to_owned(),
            "reports".to_owned(),
        ]);
        let relations = [
            relation("app", "u", "TABLE"),
            relation("public", "t", "TABLE"),
            relation("public", "orders", "TABLE"),
            relation("public", "order_ids", "SEQUENCE"),
            relation("reports", "daily", "VIEW"),
        ];
        let reconciliation = reconcile(&backup, &schemas, &relations);
        assert_eq!(
            reconciliation.dropped,
            [
                "schema reports",
                "table public.orders",
                "sequence public.order_ids"
            ]
        );
        assert_eq!(
            reconciliation.drops,
            [
                "DROP SCHEMA \"reports\" CASCADE;",
                "DROP TABLE IF EXISTS \"public\".\"orders\" CASCADE;",
                "DROP SEQUENCE IF EXISTS \"public\".\"order_ids\" CASCADE;",
            ]
        );
        assert_eq!(
            reconciliation.locks,
            [
                "\"app\".\"u\"",
                "\"public\".\"t\"",
                "\"public\".\"orders\"",
                "\"reports\".\"daily\""
            ]
        );
    }
}
