//! `CREATE INDEX CONCURRENTLY` on a real partitioned table of 100 partitions (one of them
//! sub-partitioned): built `ON ONLY` the parent, concurrently on each partition and attached;
//! a `fleetshift migrate` SIGKILLed in the middle of a partition's build is resumed by the
//! next run, which skips the partitions attached, rebuilds an INVALID one and leaves exactly
//! one valid, attached index per partition.

use std::time::Duration;

use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::{fleetshift_running, killed};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};
use sqlx::PgPool;

use super::support::{self, Database};

/// 99 leaf partitions of 10,000 rows and one partition split in two leaves.
const TABLE: &str = "
CREATE TABLE events (id bigint NOT NULL, created_at timestamptz NOT NULL, payload text)
    PARTITION BY RANGE (id);
DO $$
BEGIN
    FOR i IN 0..98 LOOP
        EXECUTE format('CREATE TABLE events_p%s PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       i, i * 10000, (i + 1) * 10000);
    END LOOP;
END
$$;
CREATE TABLE events_p99 PARTITION OF events FOR VALUES FROM (990000) TO (1000000)
    PARTITION BY RANGE (id);
CREATE TABLE events_p99a PARTITION OF events_p99 FOR VALUES FROM (990000) TO (995000);
CREATE TABLE events_p99b PARTITION OF events_p99 FOR VALUES FROM (995000) TO (1000000);
INSERT INTO events SELECT g, now() - g * interval '1 second', 'event ' || g
    FROM generate_series(0, 999999) AS g;
";

/// Partitions (direct children of `events`) whose index is attached to the parent's.
async fn attached(admin: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i
         WHERE i.inhparent = (SELECT to_regclass('events_created_idx'))",
    )
    .fetch_one(admin)
    .await
    .expect("attached indexes")
}

/// INVALID indexes on leaf partitions.
async fn invalid_leaf_indexes(admin: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_partition_tree('events') t
         JOIN pg_index x ON x.indrelid = t.relid
         WHERE t.isleaf AND NOT x.indisvalid",
    )
    .fetch_one(admin)
    .await
    .expect("invalid indexes")
}

/// Per leaf partition: its indexes, and how many of them are valid and attached.
async fn leaf_indexes(admin: &PgPool) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT c.relname::text, count(x.indexrelid),
                count(x.indexrelid) FILTER (WHERE x.indisvalid
                    AND EXISTS (SELECT FROM pg_inherits ii WHERE ii.inhrelid = x.indexrelid))
         FROM pg_partition_tree('events') t
         JOIN pg_class c ON c.oid = t.relid
         LEFT JOIN pg_index x ON x.indrelid = c.oid
         WHERE t.isleaf
         GROUP BY c.relname ORDER BY c.relname",
    )
    .fetch_all(admin)
    .await
    .expect("leaf indexes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_index_build_on_100_partitions_resumes_where_it_stopped() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("partitioned").await;
    sqlx::raw_sql(TABLE)
        .execute(&admin)
        .await
        .expect("partitioned table");
    let directory = fixtures::migrations(&[(
        "1_events_created.sql",
        "CREATE INDEX CONCURRENTLY events_created_idx ON events (created_at);",
    )]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let mut child = binary::spawn(&url, &["migrate", "up", "--dir", dir]);
    // Some partitions in, a transaction holding an old snapshot makes the next partition's
    // concurrent build wait with its index created INVALID: the migrator is killed there.
    assert!(
        wait_until(Duration::from_secs(120), || async {
            attached(&admin).await >= 10
        })
        .await,
        "the build never got under way"
    );
    let mut snapshot = admin.begin().await.expect("transaction");
    sqlx::raw_sql(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events_p0",
    )
    .execute(&mut *snapshot)
    .await
    .expect("hold a snapshot");
    let waiting = wait_until(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM pg_stat_progress_create_index
                            WHERE phase = 'waiting for old snapshots')",
        )
        .fetch_one(&admin)
        .await
        .expect("build progress")
    })
    .await;
    assert!(waiting, "a partition's build waits for the old snapshot");
    assert_eq!(
        invalid_leaf_indexes(&admin).await,
        1,
        "its index INVALID meanwhile"
    );
    let pid = fleetshift_running(&admin, "CREATE INDEX CONCURRENTLY")
        .await
        .expect("the build's backend");
    assert!(
        killed(&mut child, &admin, pid).await,
        "the killed migrator's build kept running"
    );
    snapshot.rollback().await.expect("release the snapshot");
    assert_eq!(invalid_leaf_indexes(&admin).await, 1, "left INVALID");
    let attached_at_kill = attached(&admin).await;
    assert!(
        attached_at_kill < 100,
        "killed mid-way ({attached_at_kill})"
    );
    let parent_valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('events_created_idx')",
    )
    .fetch_one(&admin)
    .await
    .expect("parent index");
    assert!(!parent_valid, "invalid until every partition is attached");

    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    let printed = binary::printed(&output);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("attached_before={attached_at_kill}"))
            && printed.contains("dropping a partition's invalid index"),
        "resumed after the partitions attached before, the INVALID one built again: {printed}"
    );
    assert_eq!(attached(&admin).await, 100);
    let parent_valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('events_created_idx')",
    )
    .fetch_one(&admin)
    .await
    .expect("parent index");
    assert!(parent_valid);
    let leaves = leaf_indexes(&admin).await;
    assert_eq!(leaves.len(), 101, "99 leaves and the two of the split one");
    for (leaf, indexes, valid_attached) in &leaves {
        assert_eq!(
            (*indexes, *valid_attached),
            (1, 1),
            "{leaf}: exactly one index, valid and attached"
        );
    }
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (FORMAT TEXT) SELECT * FROM events_p7 WHERE created_at = now()",
    )
    .fetch_all(&admin)
    .await
    .expect("plan");
    let plan = plan.join("\n");
    assert!(plan.contains("events_created_idx_events_p7"), "{plan}");
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
}

#[tokio::test]
async fn an_unnamed_index_on_a_partitioned_table_is_refused_by_name() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("partitioned_unnamed").await;
    sqlx::raw_sql(
        "CREATE TABLE events (id bigint NOT NULL, payload text) PARTITION BY RANGE (id);
         CREATE TABLE events_p0 PARTITION OF events FOR VALUES FROM (0) TO (10);",
    )
    .execute(&admin)
    .await
    .expect("partitioned table");
    let directory = fixtures::migrations(&[(
        "1_payload.sql",
        "CREATE INDEX CONCURRENTLY ON events (payload);",
    )]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let output = binary::run(&url, &["migrate", "up", "--dir", dir]);
    let printed = binary::printed(&output);
    assert!(!output.status.success());
    assert!(
        printed.contains("1_payload.sql:1")
            && printed.contains("events is a partitioned table: name the index"),
        "{printed}"
    );
}

/// A table of 12 range partitions.
const FLEET_TABLE: &str = "
CREATE TABLE events (id bigint NOT NULL, created_at timestamptz NOT NULL) PARTITION BY RANGE (id);
DO $$
BEGIN
    FOR i IN 0..11 LOOP
        EXECUTE format('CREATE TABLE events_p%s PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       i, i * 1000, (i + 1) * 1000);
    END LOOP;
END
$$;
INSERT INTO events SELECT g, now() FROM generate_series(0, 11999) AS g;
ANALYZE events;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notice_and_the_rehearsal_count_the_partitions_and_the_fleet_builds_them() {
    let fleet =
        super::cli_fleet::CliFleet::start("partitioned_fleet", FLEET_TABLE, |_| String::new())
            .await;
    let directory = fixtures::migrations(&[(
        "1_events_created.sql",
        "CREATE INDEX CONCURRENTLY events_created_idx ON events (created_at);",
    )]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let planned = fleet
        .cli
        .alice(&["plan", dir, "--selector", "env=test", "--output", "json"])
        .await;
    super::support::assert_exit(&planned, 0);
    let plan = super::cli_fleet::summary(&planned)["plan"]
        .as_str()
        .expect("id")
        .to_owned();

    let notice = fleet.cli.alice(&["plan", "notice", &plan]).await;
    super::support::assert_exit(&notice, 0);
    let notice = String::from_utf8_lossy(&notice.stdout);
    assert!(
        notice.contains("estimated rows: 12000 in 12 partitions")
            && notice.contains("built concurrently, partition by partition (12 partitions)"),
        "{notice}"
    );

    let rehearsed = fleet.cli.alice(&["rehearse", &plan]).await;
    let printed = binary::printed(&rehearsed);
    assert!(matches!(rehearsed.status.code(), Some(0 | 11)), "{printed}");
    assert!(
        printed.contains("index built on 12 partitions"),
        "{printed}"
    );

    let applied = fleet.cli.approved_and_applied(&plan).await;
    super::support::assert_exit(&applied, 0);
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('events_created_idx')",
    )
    .fetch_one(&fleet.database.admin)
    .await
    .expect("parent index");
    assert!(valid);
}
