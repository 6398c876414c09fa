//! Crashes and interruptions: a SIGKILLed migrator leaves nothing half-applied, and an
//! interrupted CREATE INDEX CONCURRENTLY is visible as `started` and repaired on the next run.

use std::time::Duration;

use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::{fleetshift_running, killed};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};
use serde_json::Value;

use sqlx::PgPool;

use super::support::{self, Database};

async fn exists(admin: &PgPool, relation: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(relation)
        .fetch_one(admin)
        .await
        .expect("catalog query")
}

fn status_json(url: &str, directory: &std::path::Path) -> Value {
    let dir = directory.to_str().expect("utf-8 path");
    let output = binary::run(
        url,
        &["migrate", "status", "--dir", dir, "--output", "json"],
    );
    assert!(output.status.success(), "{}", binary::printed(&output));
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

fn revision_status(status: &Value, version: &str) -> Value {
    status["status"]["revisions"]
        .as_array()
        .and_then(|revisions| revisions.iter().find(|r| r["version"] == version))
        .map(|revision| revision["status"].clone())
        .expect("revision in status")
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_transactional_revision_leaves_nothing() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("killed").await;
    let directory = fixtures::migrations(&[(
        "1_half_done.sql",
        "CREATE TABLE half_done (id integer);
         INSERT INTO half_done VALUES (1);
         SELECT pg_sleep(coalesce(nullif(current_setting('fleetshift_test.sleep_seconds', true), ''), '0')::float8);",
    )]);
    sqlx::query("ALTER DATABASE killed SET fleetshift_test.sleep_seconds = '60'")
        .execute(&admin)
        .await
        .expect("make the revision slow");
    let dir = directory.path().to_str().expect("utf-8 path");
    let mut child = binary::spawn(&url, &["migrate", "up", "--dir", dir]);
    let started = wait_until(Duration::from_secs(20), || async {
        fleetshift_running(&admin, "pg_sleep").await.is_some()
    })
    .await;
    assert!(started, "the revision never reached its slow statement");
    let pid = fleetshift_running(&admin, "pg_sleep")
        .await
        .expect("backend pid");
    // The server notices the vanished client (client_connection_check_interval) and aborts.
    assert!(
        killed(&mut child, &admin, pid).await,
        "the killed migrator's backend kept running"
    );
    assert!(
        !exists(&admin, "half_done").await,
        "no schema change may survive"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM fleetshift.history")
        .fetch_one(&admin)
        .await
        .expect("history");
    assert_eq!(rows, 0, "no history row may survive");

    // The next run applies it, once.
    sqlx::query("ALTER DATABASE killed RESET fleetshift_test.sleep_seconds")
        .execute(&admin)
        .await
        .expect("make the revision fast");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert!(output.status.success(), "{}", binary::printed(&output));
    let inserted: i64 = sqlx::query_scalar("SELECT count(*) FROM half_done")
        .fetch_one(&admin)
        .await
        .expect("rows");
    assert_eq!(inserted, 1, "applied exactly once");
    assert_eq!(
        revision_status(&status_json(&url, directory.path()), "1"),
        "applied"
    );
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
}

#[tokio::test]
async fn interrupted_concurrent_index_build_is_rebuilt_on_the_next_run() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("indexes").await;
    let directory = fixtures::migrations(&[
        (
            "1_table.sql",
            "CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 200) AS g;
             CREATE FUNCTION slow_id(integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
             BEGIN
                 PERFORM pg_sleep(coalesce(nullif(current_setting('fleetshift_test.delay', true), ''), '0')::float8);
                 RETURN $1;
             END $$;",
        ),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS big_slow_idx ON big (slow_id(id));",
        ),
    ]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let first = binary::run(&url, &["migrate", "up", "--dir", dir, "--to", "1"]);
    assert!(first.status.success(), "{}", binary::printed(&first));
    sqlx::query("ALTER DATABASE indexes SET fleetshift_test.delay = '0.05'")
        .execute(&admin)
        .await
        .expect("make the build slow");

    // statement_timeout interrupts the build: an INVALID index stays behind.
    let interrupted = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir,
            "--lock-timeout",
            "200ms",
            "--statement-timeout",
            "1s",
        ],
    );
    support::assert_exit(&interrupted, 1);
    let printed = binary::printed(&interrupted);
    assert!(
        printed.contains("2_index.sql:2"),
        "the error names file and line: {printed}"
    );
    assert!(printed.contains("left `started`"), "{printed}");
    assert_eq!(
        revision_status(&status_json(&url, directory.path()), "2"),
        "started"
    );
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('big_slow_idx')",
    )
    .fetch_optional(&admin)
    .await
    .expect("catalog");
    assert_eq!(
        valid,
        Some(false),
        "the interrupted build leaves an INVALID index"
    );

    // IF NOT EXISTS would skip the invalid index; fleetshift drops and rebuilds it.
    sqlx::query("ALTER DATABASE indexes RESET fleetshift_test.delay")
        .execute(&admin)
        .await
        .expect("make the build fast");
    let resumed = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert!(resumed.status.success(), "{}", binary::printed(&resumed));
    assert!(
        binary::printed(&resumed).contains("dropped and rebuilt"),
        "{}",
        binary::printed(&resumed)
    );
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('big_slow_idx')",
    )
    .fetch_optional(&admin)
    .await
    .expect("catalog");
    assert_eq!(valid, Some(true));
    assert_eq!(
        revision_status(&status_json(&url, directory.path()), "2"),
        "applied"
    );
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
}
