//! Backfill jobs on real databases: 2 million rows backfilled in batches by a `fleetshift
//! migrate` process SIGKILLed mid-way, then resumed at its last committed batch with no row
//! processed twice (a witness column counts each row's updates); a stale holder fenced out
//! between two batches; the same job on SQLite.

use std::time::Duration;

use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{Executor, Request};
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::{backend_alive, killed};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};
use sqlx::PgPool;

use super::support::{self, Database};

/// Rows of the killed job's table.
const ROWS: i64 = 2_000_000;

/// How far a job got, by its mark.
async fn mark(admin: &PgPool) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT rows_done, batches FROM fleetshift.backfills")
        .fetch_optional(admin)
        .await
        .expect("read the mark")
}

/// Rows updated once, and rows updated more than once.
async fn witnessed(admin: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE witness = 1), count(*) FILTER (WHERE witness > 1)
         FROM events",
    )
    .fetch_one(admin)
    .await
    .expect("count the witnesses")
}

/// The status of `version` in the ledger, if it has a row.
async fn history_status_of(admin: &PgPool, version: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM fleetshift.history WHERE version = $1")
        .bind(version)
        .fetch_optional(admin)
        .await
        .expect("history")
}

/// Revision 1 makes the table (rows loaded by the test), revision 2 backfills it.
fn backfill_set(batch: u64, slow: bool) -> tempfile::TempDir {
    let pause = if slow {
        " AND (SELECT pg_sleep(0.05)) IS NOT NULL"
    } else {
        ""
    };
    let backfill = format!(
        "-- fleetshift:backfill key=id batch={batch}\nUPDATE events SET payload_upper = upper(payload), witness = witness + 1\n WHERE :batch{pause};\n"
    );
    fixtures::migrations(&[
        (
            "1_events.sql",
            "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL, payload_upper text, witness integer NOT NULL DEFAULT 0);",
        ),
        ("2_fill_upper.sql", backfill.as_str()),
    ])
}

async fn load(admin: &PgPool, rows: i64) {
    sqlx::query(
        "INSERT INTO events (id, payload) SELECT g, 'event ' || g FROM generate_series(1, $1) AS g",
    )
    .bind(rows)
    .execute(admin)
    .await
    .expect("load the rows");
    sqlx::query("ANALYZE events")
        .execute(admin)
        .await
        .expect("analyze");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backfill_resumes_at_its_last_batch_and_processes_no_row_twice() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("backfill_killed").await;
    let directory = backfill_set(20_000, false);
    let dir = directory.path().to_str().expect("utf-8 path");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir, "--to", "1"]);
    assert!(output.status.success(), "{}", binary::printed(&output));
    load(&admin, ROWS).await;

    let mut child = binary::spawn(&url, &["migrate", "up", "--dir", dir]);
    let under_way = wait_until(Duration::from_secs(120), || async {
        mark(&admin).await.is_some_and(|(_, batches)| batches >= 10)
    })
    .await;
    assert!(under_way, "the backfill never got under way");
    let backends: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND application_name LIKE 'fleetshift%'",
    )
    .fetch_all(&admin)
    .await
    .expect("the migrator's backends");
    let [first, others @ ..] = backends.as_slice() else {
        panic!("the migrator has no backend");
    };
    assert!(
        killed(&mut child, &admin, *first).await,
        "a backend of the killed migrator kept running"
    );
    for pid in others {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                !backend_alive(&admin, *pid).await
            })
            .await,
            "a backend of the killed migrator kept running"
        );
    }

    // Every committed batch and nothing else: the mark and the rows agree.
    let (rows_done, batches) = mark(&admin).await.expect("a mark");
    assert!(rows_done < ROWS, "killed mid-way ({rows_done} rows done)");
    assert_eq!(rows_done, batches * 20_000);
    assert_eq!(witnessed(&admin).await, (rows_done, 0));
    assert_eq!(
        history_status_of(&admin, "2").await.as_deref(),
        Some("started")
    );

    // The next run resumes after the last committed batch.
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert!(output.status.success(), "{}", binary::printed(&output));
    assert!(
        binary::printed(&output).contains("resum"),
        "{}",
        binary::printed(&output)
    );
    assert_eq!(witnessed(&admin).await, (ROWS, 0), "every row exactly once");
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload_upper IS DISTINCT FROM upper(payload)",
    )
    .fetch_one(&admin)
    .await
    .expect("count");
    assert_eq!(missing, 0);
    assert_eq!(mark(&admin).await, Some((ROWS, ROWS / 20_000)));
    assert_eq!(
        history_status_of(&admin, "2").await.as_deref(),
        Some("applied")
    );
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_is_fenced_out_between_two_batches() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("backfill_fenced").await;
    let directory = backfill_set(100, true);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    let shard = support::postgres(&url).await;
    Executor::new(
        &shard,
        support::identity("agent-a", Some(5)),
        support::quick_settings(),
    )
    .up(
        &set,
        &Request {
            target: Some("1".to_owned()),
            ..Request::default()
        },
    )
    .await
    .expect("the table");
    load(&admin, 10_000).await;
    let run = tokio::spawn(async move {
        let shard = support::postgres(&url).await;
        Executor::new(
            &shard,
            support::identity("agent-a", Some(5)),
            support::quick_settings(),
        )
        .up(&set, &Request::default())
        .await
    });
    let under_way = wait_until(Duration::from_secs(60), || async {
        mark(&admin).await.is_some_and(|(_, batches)| batches >= 3)
    })
    .await;
    assert!(under_way, "the backfill never got under way");
    // A newer claim moves the fence (as a new holder's first transaction does).
    sqlx::query("UPDATE fleetshift.fence SET token = 9")
        .execute(&admin)
        .await
        .expect("move the fence");
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the stale run ends")
        .expect("run");
    match result {
        Err(ExecError::FencedOut { ours, current, .. }) => {
            assert_eq!((ours.get(), current.get()), (5, 9));
        }
        other => panic!("expected the stale holder fenced out, got {other:?}"),
    }
    let (rows_done, _) = mark(&admin).await.expect("a mark");
    assert!(rows_done < 10_000);
    assert_eq!(
        witnessed(&admin).await,
        (rows_done, 0),
        "no batch after the fence moved"
    );
    let tokens: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT fence_token FROM fleetshift.backfills")
            .fetch_all(&admin)
            .await
            .expect("tokens");
    assert_eq!(tokens, [5]);
}

#[tokio::test]
async fn a_sqlite_backfill_runs_in_batches() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let database = directory.path().join("shard.db");
    let url = format!("sqlite:{}", database.display());
    let set_dir = fixtures::migrations(&[
        (
            "1_events.sql",
            "CREATE TABLE events (id integer PRIMARY KEY, payload text NOT NULL, witness integer NOT NULL DEFAULT 0);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
             INSERT INTO events (id, payload) SELECT i, 'event ' || i FROM n;",
        ),
        (
            "2_fill.sql",
            "-- fleetshift:backfill key=id batch=1000\nUPDATE events SET witness = witness + 1 WHERE :batch;",
        ),
    ]);
    let dir = set_dir.path().to_str().expect("utf-8 path");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert!(output.status.success(), "{}", binary::printed(&output));
    let shard = support::sqlite(&database).await;
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let (once, more): (i64, i64) =
        sqlx::query_as("SELECT sum(witness = 1), sum(witness > 1) FROM events")
            .fetch_one(&pool)
            .await
            .expect("witnesses");
    assert_eq!((once, more), (2500, 0));
    let (rows, batches): (i64, i64) =
        sqlx::query_as("SELECT rows_done, batches FROM fleetshift_backfills")
            .fetch_one(&pool)
            .await
            .expect("mark");
    assert_eq!((rows, batches), (2500, 3));
    let set = MigrationSet::load(set_dir.path(), None).expect("set");
    support::assert_sound_ledger(&shard, &set, None).await;
}

#[tokio::test]
async fn a_backfill_by_a_key_no_index_leads_is_refused_before_anything_runs() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("backfill_unindexed").await;
    let directory = fixtures::migrations(&[
        (
            "1_events.sql",
            "CREATE TABLE events (id bigint PRIMARY KEY, seq bigint NOT NULL, witness integer NOT NULL DEFAULT 0);
             INSERT INTO events SELECT g, g FROM generate_series(1, 100) AS g;",
        ),
        (
            "2_fill.sql",
            "-- fleetshift:backfill key=seq batch=10\nUPDATE events SET witness = witness + 1 WHERE :batch;",
        ),
    ]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        binary::printed(&output)
    );
    let printed = binary::printed(&output);
    assert!(
        printed.contains("no index on events starts with its key seq")
            && printed.contains("2_fill.sql:2")
            && printed.contains("nothing ran"),
        "{printed}"
    );
    assert_eq!(history_status_of(&admin, "2").await, None);
    assert_eq!(witnessed(&admin).await, (0, 0));
    sqlx::query("CREATE INDEX events_seq ON events (seq)")
        .execute(&admin)
        .await
        .expect("index the key");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    assert!(output.status.success(), "{}", binary::printed(&output));
    assert_eq!(witnessed(&admin).await, (100, 0));
}
