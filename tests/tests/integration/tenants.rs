//! Shards that are one schema of a database (tenants), on real PostgreSQL: 200 tenant schemas
//! in one database, each migrated as a shard of its own with unqualified SQL. Each tenant's
//! tables land in its schema, its ledger and fence are its own (`fleetshift_<tenant>`), every
//! tenant at a version has the same fingerprint and one that drifted does not, and the whole
//! database's own snapshot leaves the tenants' ledgers out.

use std::collections::BTreeSet;

use fleetshift_common::engine::{PostgresShard, ShardEngine, ShardScope, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::Request;
use fleetshift_common::schema::Fingerprint;
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use futures_util::StreamExt as _;

use super::support::{self, Database};

const TENANTS: usize = 200;

fn tenant(index: usize) -> String {
    format!("tenant_{index:03}")
}

async fn connect(url: &str, schema: &str) -> PostgresShard {
    let scope = ShardScope::schema(schema).expect("tenant schema");
    PostgresShard::connect_scoped(
        schema.to_owned(),
        &DatabaseUrl::new(url),
        Timeouts::default(),
        scope,
    )
    .await
    .expect("connect the tenant")
}

/// Migrates tenant `schema` with `token` as its fence; its fingerprint afterwards.
async fn migrate(url: &str, schema: &str, set: &MigrationSet, token: i64) -> Fingerprint {
    let shard = connect(url, schema).await;
    let executor = support::executor(&shard, "tenants", Some(token));
    executor
        .up(set, &Request::default())
        .await
        .unwrap_or_else(|error| panic!("{schema}: {error}"));
    shard.schema_snapshot().await.expect("schema").fingerprint()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tenants_of_one_database_are_shards_of_their_own() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("tenants").await;
    for index in 0..TENANTS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            tenant(index)
        )))
        .execute(&admin)
        .await
        .expect("schema");
    }
    let migrations = fixtures::migrations(&[
        (
            "1_accounts.sql",
            "CREATE TABLE accounts (id bigint PRIMARY KEY, note text);\nCREATE INDEX accounts_note ON accounts (note);",
        ),
        ("2_email.sql", "ALTER TABLE accounts ADD COLUMN email text;"),
    ]);
    let set = MigrationSet::load(migrations.path(), None).expect("set");

    let fingerprints: Vec<Fingerprint> = futures_util::stream::iter(0..TENANTS)
        .map(|index| {
            let (url, set) = (url.clone(), set.clone());
            async move { migrate(&url, &tenant(index), &set, 5).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let distinct: BTreeSet<&Fingerprint> = fingerprints.iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "every tenant at version 2 has one schema"
    );

    let placed: (i64, i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_tables WHERE tablename = 'accounts' AND schemaname LIKE 'tenant\\_%'),
                (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'fleetshift\\_tenant\\_%'),
                to_regclass('public.accounts') IS NULL",
    )
    .fetch_one(&admin)
    .await
    .expect("catalog");
    assert_eq!(placed, (TENANTS as i64, TENANTS as i64, true));
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fleetshift_tenant_007.history WHERE status = 'applied'",
    )
    .fetch_one(&admin)
    .await
    .expect("tenant ledger");
    assert_eq!(ledger, 2);

    // Each tenant's fence is its own: an older token is refused on tenant 0 only.
    let stale = connect(&url, &tenant(0)).await;
    let refused = support::executor(&stale, "stale", Some(3))
        .up(&set, &Request::default())
        .await
        .expect_err("fenced out");
    assert!(matches!(refused, ExecError::FencedOut { .. }), "{refused}");
    let again = connect(&url, &tenant(1)).await;
    let fence = again.current_fence().await.expect("fence");
    assert_eq!(fence.get(), 5);

    // One tenant drifts: its fingerprint alone moves.
    sqlx::raw_sql("DROP INDEX tenant_042.accounts_note")
        .execute(&admin)
        .await
        .expect("drift");
    let drifted = connect(&url, &tenant(42)).await;
    let moved = drifted
        .schema_snapshot()
        .await
        .expect("schema")
        .fingerprint();
    assert_ne!(&moved, fingerprints.first().expect("a tenant"));
    let other = connect(&url, &tenant(43)).await;
    assert_eq!(
        &other.schema_snapshot().await.expect("schema").fingerprint(),
        fingerprints.first().expect("a tenant")
    );

    // The whole database's own snapshot sees the tenants' tables, not their ledgers.
    let whole = support::postgres(&url).await;
    let snapshot = whole.schema_snapshot().await.expect("schema");
    let names: Vec<String> = snapshot.objects().map(|(id, _)| id.to_string()).collect();
    assert!(
        names.iter().any(|name| name == "table tenant_007.accounts"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|name| name.contains("fleetshift_")),
        "{names:?}"
    );
}
