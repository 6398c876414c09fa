//! Shards that are one schema of a database (tenants), on real PostgreSQL: 200 tenant schemas
//! in one database, each migrated as a shard of its own with unqualified SQL. Each tenant's
//! tables land in its schema, its ledger and fence are its own (`fleetshift_<tenant>`), every
//! tenant at a version has the same fingerprint and one that drifted does not, and the whole
//! database's own snapshot and table facts leave the tenants' ledgers out. Across real processes,
//! one agent serves the 200 tenants of a `tenants = "tenant\_%"` entry (their facts read
//! through one engine of the database): a fleet target takes them all to
//! its version, never more at once than the server's cap; a tenant created while the agent
//! runs becomes a shard and is caught up, and stops being one when dropped; and `schema drift`
//! names the one tenant edited by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleetshift_common::engine::{PostgresShard, ShardEngine, ShardScope, Timeouts, catalog};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::Request;
use fleetshift_common::schema::Fingerprint;
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use futures_util::StreamExt as _;

use super::cli_fleet::CliFleet;
use super::support::{self, Database, assert_exit, json};

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

    // The whole database's own snapshot and table facts see the tenants' tables, not their
    // ledgers, and no ledger's function counts as a dependent of a table.
    // A tenant's table named like the ledger's (whose functions name it) has no dependents.
    sqlx::raw_sql("CREATE TABLE tenant_007.history (id bigint)")
        .execute(&admin)
        .await
        .expect("a table named like the ledger's");
    let whole = support::postgres(&url).await;
    let tables = catalog::table_facts(whole.pool())
        .await
        .expect("table facts");
    assert_eq!(tables.len(), TENANTS + 1, "{:?}", tables.first());
    let history = tables
        .iter()
        .find(|facts| facts.table == "tenant_007.history")
        .expect("the tenant's history table");
    assert!(history.dependents.is_empty(), "{:?}", history.dependents);
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

/// Each tenant's (standing, plan) in `target status tenants`.
async fn standings(fleet: &CliFleet) -> BTreeMap<String, (String, String)> {
    let status = fleet
        .cli
        .alice(&["target", "status", "tenants", "--output", "json"])
        .await;
    assert_exit(&status, 0);
    json(&status)["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| {
            let text = |key: &str| shard[key].as_str().expect(key).to_owned();
            (text("shard"), (text("standing"), text("plan")))
        })
        .collect()
}

/// The most revisions that ran at once across the tenants, from their ledgers' times.
async fn most_at_once(admin: &sqlx::PgPool) -> i64 {
    let mut union = Vec::new();
    for index in 0..TENANTS {
        union.push(format!(
            "SELECT started_at, finished_at FROM fleetshift_{}.history",
            tenant(index)
        ));
    }
    let query = format!(
        "WITH runs AS ({}) SELECT max((SELECT count(*) FROM runs other WHERE other.started_at < run.finished_at AND other.finished_at > run.started_at)) FROM runs run",
        union.join(" UNION ALL ")
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .fetch_one(admin)
        .await
        .expect("overlaps")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_rolls_out_to_one_agents_tenants_within_the_servers_cap() {
    let schemas: String = (0..TENANTS)
        .map(|index| format!("CREATE SCHEMA {};\n", tenant(index)))
        .collect();
    let tenants_entry = |database: &Database| {
        format!(
            "[[shards]]\nid = \"billing\"\nlabels = {{ env = \"tenants\" }}\ndatabase_url = \"{}\"\ntenants = \"tenant\\\\_%\"\n",
            database.url
        )
    };
    let every_five_seconds = ["FLEETSHIFT_FACTS_REFRESH", "FLEETSHIFT_SCHEMA_CHECK"]
        .map(|name| (name.to_owned(), "5s".to_owned()))
        .to_vec();
    // One database: its tenants are announced with it.
    let fleet = CliFleet::start_configured(
        "tenanted",
        &schemas,
        1,
        tenants_entry,
        "",
        every_five_seconds,
    )
    .await;
    let migrations = fixtures::migrations(&[(
        "1_accounts.sql",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, note text);\nCREATE INDEX accounts_note ON accounts (note);\nSELECT pg_sleep(0.05);",
    )]);
    let directory = migrations.path().to_str().expect("path");
    let set = [
        "target",
        "set",
        directory,
        "--name",
        "tenants",
        "--selector",
        "env=tenants",
        "--canary",
        "1",
        "--waves",
        "100",
        "--max-concurrency",
        "64",
        "--max-per-host",
        "4",
    ];
    assert_exit(&fleet.cli.alice(&set).await, 0);
    let planned = wait_until(Duration::from_secs(60), || async {
        let standings = standings(&fleet).await;
        standings.len() == TENANTS && standings.values().all(|(_, plan)| !plan.is_empty())
    })
    .await;
    let first = standings(&fleet).await;
    assert!(planned, "{first:?}\n{}", fleet.diagnose());
    let plans: BTreeSet<&String> = first.values().map(|(_, plan)| plan).collect();
    assert_eq!(plans.len(), 1, "one catch-up for every tenant: {plans:?}");
    let plan = first.values().next().expect("a tenant").1.clone();
    assert_exit(&fleet.cli.bob(&["approve", &plan]).await, 0);
    let done = wait_until(Duration::from_secs(180), || async {
        let standings = standings(&fleet).await;
        standings.len() == TENANTS && standings.values().all(|(standing, _)| standing == "at")
    })
    .await;
    assert!(done, "{:?}\n{}", standings(&fleet).await, fleet.diagnose());
    let admin = &fleet.database.admin;
    let at_once = most_at_once(admin).await;
    assert!(
        (1..=4).contains(&at_once),
        "one server's tenants ran {at_once} at once; its cap is 4"
    );

    // A tenant created while the agent runs is a shard from its next facts read on, and the
    // target (approved once, for the same revisions) brings it there without an operator.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {}",
        tenant(TENANTS)
    )))
    .execute(admin)
    .await
    .expect("a new tenant");
    let newcomer = format!("billing.{}", tenant(TENANTS));
    let caught_up = wait_until(Duration::from_secs(120), || async {
        standings(&fleet)
            .await
            .get(&newcomer)
            .is_some_and(|(standing, _)| standing == "at")
    })
    .await;
    assert!(
        caught_up,
        "{:?}\n{}",
        standings(&fleet).await.get(&newcomer),
        fleet.diagnose()
    );

    // Drift per schema: one tenant edited by hand is named, the others agree.
    sqlx::raw_sql("DROP INDEX tenant_007.accounts_note")
        .execute(admin)
        .await
        .expect("hand edit");
    let named = wait_until(Duration::from_secs(60), || async {
        let drift = fleet
            .cli
            .alice(&["schema", "drift", "--output", "json"])
            .await;
        drift.status.code() != Some(0)
            && String::from_utf8_lossy(&drift.stdout).contains("billing.tenant_007")
    })
    .await;
    let drift = fleet
        .cli
        .alice(&["schema", "drift", "--output", "json"])
        .await;
    assert!(
        named,
        "{}\n{}",
        String::from_utf8_lossy(&drift.stdout),
        fleet.diagnose()
    );
    let report = json(&drift);
    let version = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|version| version["version"] == "1")
        .expect("version 1")
        .clone();
    // 201 tenants now, one of them drifted.
    assert_eq!(version["majority_shards"], TENANTS, "{version:#}");

    // A tenant dropped while the agent runs stops being announced (its target status then
    // calls it unseen).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {} CASCADE",
        tenant(TENANTS)
    )))
    .execute(admin)
    .await
    .expect("drop the new tenant");
    let gone = wait_until(Duration::from_secs(120), || async {
        let listed = fleet.cli.alice(&["shards", "--output", "json"]).await;
        let shards = json(&listed)["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        shards.len() == 1 + TENANTS
            && shards
                .iter()
                .all(|shard| shard["shard"] != newcomer.as_str())
    })
    .await;
    assert!(gone, "{}", fleet.diagnose());
}
