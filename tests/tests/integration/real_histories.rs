//! Public migration histories nobody on this project wrote, taken as they are (files copied
//! unchanged into `tests/fixtures/` with their source and license): loaded, linted, applied
//! to a real PostgreSQL database and recorded.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};

use super::support::{self, Database, json};

#[tokio::test]
async fn harbors_golang_migrate_history_loads_lints_and_applies_as_it_is() {
    let directory = fixtures::harbor();
    let set = MigrationSet::load(&directory, None).expect("Harbor's history loads as it is");
    assert_eq!(set.format, SourceFormat::Sqlx);
    assert_eq!(set.revisions.len(), 39);
    assert_eq!(set.revisions[0].version.as_str(), "0001");
    assert!(set.ignored.is_empty(), "{:?}", set.ignored);
    let path = directory.to_str().expect("UTF-8 path");

    let lint = std::process::Command::new(binary::fleetshift())
        .args(["lint", path, "--output", "json", "--fail-on", "never"])
        .output()
        .expect("lint");
    support::assert_exit(&lint, 0);
    let report = json(&lint);
    assert_eq!(report["revisions"], 39, "{report}");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("harbor").await;
    // Harbor's 2.0 revision alters golang-migrate's own history table (to record a data
    // version), so the history runs where golang-migrate made that table, as on every real
    // Harbor database: make it, empty, as golang-migrate does before its first run.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    )
    .execute(&admin)
    .await
    .expect("golang-migrate's table");
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 39);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "{ledger:?}"
    );
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE schemaname = 'public' AND tablename IN ('artifact', 'project', 'repository', 'task', 'execution')
         ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .expect("catalog");
    assert_eq!(
        present,
        ["artifact", "execution", "project", "repository", "task"],
        "Harbor's schema is there"
    );
    // 0030 added a column to golang-migrate's table and 0040 dropped it again, as in Harbor.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_name = 'schema_migrations' ORDER BY ordinal_position",
    )
    .fetch_all(&admin)
    .await
    .expect("catalog");
    assert_eq!(
        columns,
        ["version", "dirty"],
        "golang-migrate's table as Harbor leaves it"
    );

    // Nothing left to do; and no down scripts, so a revert is refused naming them.
    let again = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(again.status.success(), "{}", binary::printed(&again));
    let down = binary::run(&url, &["migrate", "down", "--dir", path]);
    support::assert_exit(&down, 2);
    assert!(
        binary::printed(&down).contains("0190_2.16.0_schema"),
        "{}",
        binary::printed(&down)
    );
}
