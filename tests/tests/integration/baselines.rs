//! Performance baselines and automatic rollback on real PostgreSQL. A revision that drops an
//! index a baseline query needs: the query degrades past the threshold, the agent reverts the
//! shard to its version before the plan on its own (down scripts, same fencing token), the
//! index is back and the baseline recovered. A failing revision is rolled back the same way;
//! with a revision that has no down script, the shard stops and waits for an operator.

use std::time::Duration;

use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    Assignment, BaselinePhase, BaselinePolicy, BaselineQuery, ErrorKind, HostDuties, RollbackPolicy,
};
use fleetshift_testkit::postgres::Shutdown;
use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;

use super::duties::{Shard, assignment, execute, shard, step};

/// A table large enough that losing its index shows in a baseline query's median.
pub(super) const EVENTS: &str = "
    CREATE TABLE events (id bigint PRIMARY KEY, account_id bigint NOT NULL, payload text);
    INSERT INTO events SELECT g, g % 5000, repeat('x', 40) FROM generate_series(1, 400000) g;
    CREATE INDEX events_account_idx ON events (account_id);
    ANALYZE events;";

const NOTES_UP: &str = "ALTER TABLE accounts ADD COLUMN note text;";
const NOTES_DOWN: &str = "ALTER TABLE accounts DROP COLUMN note;";

fn by_account() -> BaselinePolicy {
    BaselinePolicy {
        queries: vec![BaselineQuery {
            name: "by_account".to_owned(),
            sql: "SELECT count(*) FROM events WHERE account_id = 42".to_owned(),
        }],
        runs: 7,
        // The index turns a ~0.1 ms lookup into a scan of 400k rows (tens of ms); a floor of
        // 5 ms keeps a busy host's jitter from reading as a degradation or a failed recovery.
        noise_floor: Some(prost_types::Duration {
            seconds: 0,
            nanos: 5_000_000,
        }),
        ..BaselinePolicy::default()
    }
}

pub(super) async fn has_column(admin: &sqlx::PgPool, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns
                        WHERE table_name = $1 AND column_name = $2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(admin)
    .await
    .expect("catalog")
}

/// Whether `EVENTS`' index on `account_id` exists.
pub(super) async fn has_account_index(admin: &sqlx::PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_indexes WHERE indexname = 'events_account_idx')",
    )
    .fetch_one(admin)
    .await
    .expect("pg_indexes")
}

/// Takes the shard to revision 1 without duties: the version the plan's rollback returns to.
async fn at_revision_one(shard: &Shard, set: &std::path::Path) {
    let config = shard.config(shard.settings(5));
    let (result, _) = execute(
        &config,
        Assignment {
            target_version: "1".to_owned(),
            ..assignment("setup", set, HostDuties::default())
        },
    )
    .await;
    assert!(result.succeeded, "{:?}", result.error);
}

fn lifecycle(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|event| {
            !matches!(
                event,
                Event::PreflightCheck(_)
                    | Event::StatementRunning(_)
                    | Event::StatementFinished(_)
                    | Event::LockRetry(_)
            )
        })
        .map(step)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_index_degrades_its_baseline_and_the_shard_rolls_back_on_its_own() {
    let shard = shard("degraded").await;
    sqlx::raw_sql(EVENTS)
        .execute(&shard.admin)
        .await
        .expect("events");
    let set = fixtures::migrations(&[
        ("1_account_notes.up.sql", NOTES_UP),
        ("1_account_notes.down.sql", NOTES_DOWN),
        (
            "2_drop_account_index.up.sql",
            "DROP INDEX events_account_idx;",
        ),
        (
            "2_drop_account_index.down.sql",
            "CREATE INDEX events_account_idx ON events (account_id);",
        ),
    ]);
    at_revision_one(&shard, set.path()).await;

    let duties = HostDuties {
        baselines: Some(by_account()),
        rollback: Some(RollbackPolicy {
            on_degradation: true,
            ..RollbackPolicy::default()
        }),
        ..HostDuties::default()
    };
    let config = shard.config(shard.settings(5));
    let (result, events) = execute(&config, assignment("d1", set.path(), duties)).await;

    assert!(!result.succeeded);
    let error = result.error.expect("the rollback is the shard's failure");
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert!(
        error
            .message
            .contains("rolled back to 1 because performance degraded: baseline by_account"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("the baselines recovered"),
        "{}",
        error.message
    );
    assert_eq!(result.previous_version, "1");
    assert_eq!(result.current_version, "1");
    let rollback = result.rollback.expect("rolled back");
    assert_eq!(rollback.reverted_to, "1");
    assert_eq!(rollback.revisions, ["2_drop_account_index"]);
    assert!(rollback.recovered);

    let phases: Vec<BaselinePhase> = result.baselines.iter().map(|b| b.phase()).collect();
    assert_eq!(
        phases,
        [
            BaselinePhase::Before,
            BaselinePhase::After,
            BaselinePhase::Recovered
        ]
    );
    let before = &result.baselines[0].queries[0];
    let after = &result.baselines[1].queries[0];
    let recovered = &result.baselines[2].queries[0];
    assert_eq!((before.runs, after.runs), (7, 7), "warm-up excluded");
    assert!(before.min_ms <= before.p50_ms && before.p50_ms <= before.p95_ms);
    assert!(before.p95_ms <= before.max_ms && before.stddev_ms >= 0.0);
    assert!(result.baselines[1].degraded && after.degraded, "{after:?}");
    assert!(after.p50_ratio > 1.5, "{after:?}");
    assert!(!result.baselines[2].degraded, "{recovered:?}");

    assert_eq!(
        lifecycle(&events),
        [
            "baselines Before",
            "revision 2",
            "finished 2",
            "baselines After",
            "rollback to 1",
            "revision 2",
            "finished 2",
            "baselines Recovered",
        ]
    );
    assert!(
        has_account_index(&shard.admin).await,
        "the down script put the index back"
    );
    assert!(shard.has_note_column().await, "revision 1 stays applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revision_rolls_back_and_an_irreversible_one_waits_for_an_operator() {
    let shard = shard("failing").await;
    let failing = |flag_down: Option<&'static str>| {
        let mut files = vec![
            ("1_account_notes.up.sql", NOTES_UP),
            ("1_account_notes.down.sql", NOTES_DOWN),
            (
                "2_account_flag.up.sql",
                "ALTER TABLE accounts ADD COLUMN flag int;",
            ),
            ("3_fill_flag.up.sql", "UPDATE accounts SET flag = 1 / 0;"),
            ("3_fill_flag.down.sql", "UPDATE accounts SET flag = NULL;"),
        ];
        if let Some(down) = flag_down {
            files.push(("2_account_flag.down.sql", down));
        }
        fixtures::migrations(&files)
    };
    let reversible = failing(Some("ALTER TABLE accounts DROP COLUMN flag;"));
    at_revision_one(&shard, reversible.path()).await;
    let duties = HostDuties {
        rollback: Some(RollbackPolicy {
            on_failure: true,
            ..RollbackPolicy::default()
        }),
        ..HostDuties::default()
    };
    let config = shard.config(shard.settings(5));

    let (result, events) =
        execute(&config, assignment("f1", reversible.path(), duties.clone())).await;
    let error = result.error.expect("failed");
    assert_eq!(error.kind(), ErrorKind::Failed, "{}", error.message);
    assert!(
        error
            .message
            .contains("rolled back to 1 because a revision failed")
            && error.message.contains("division by zero"),
        "{}",
        error.message
    );
    let rollback = result.rollback.expect("rolled back");
    assert_eq!(rollback.revisions, ["2_account_flag"]);
    assert!(lifecycle(&events).contains(&"rollback to 1".to_owned()));
    assert!(
        !has_column(&shard.admin, "accounts", "flag").await,
        "2 was reverted"
    );
    assert!(shard.has_note_column().await, "1 stays");

    // Without revision 2's down script there is nothing safe to run: the shard stops there.
    let irreversible = failing(None);
    let (result, _) = execute(&config, assignment("f2", irreversible.path(), duties)).await;
    let error = result.error.expect("failed");
    assert_eq!(error.kind(), ErrorKind::NeedsOperator, "{}", error.message);
    assert!(
        error.message.contains("did not finish") && error.message.contains("2_account_flag"),
        "{}",
        error.message
    );
    assert!(result.rollback.is_none());
    assert!(
        has_column(&shard.admin, "accounts", "flag").await,
        "nothing was guessed at: 2 stays applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_while_baselines_are_timed_time_them_again_and_roll_nothing_back() {
    let shard = shard("restarted_baselines").await;
    let set = fixtures::migrations(&[(
        "1_account_notes.sql",
        "ALTER TABLE accounts ADD COLUMN note text;",
    )]);
    let duties = HostDuties {
        baselines: Some(BaselinePolicy {
            queries: vec![BaselineQuery {
                name: "slow".to_owned(),
                sql: "SELECT pg_sleep(0.3)".to_owned(),
            }],
            runs: 5,
            ..BaselinePolicy::default()
        }),
        // A query cut off by the restart must not read as a degradation.
        rollback: Some(RollbackPolicy {
            on_degradation: true,
            ..RollbackPolicy::default()
        }),
        ..HostDuties::default()
    };
    let config = std::sync::Arc::new(shard.config(shard.settings(5)));
    let run = tokio::spawn({
        let config = std::sync::Arc::clone(&config);
        async move { execute(&config, assignment("b1", set.path(), duties)).await }
    });
    // Once before the revision, once after it.
    for applied in [false, true] {
        let timing = wait_until(Duration::from_secs(30), || async {
            has_column(&shard.admin, "accounts", "note").await == applied
                && fleetshift_tests::postgres::fleetshift_running(&shard.admin, "pg_sleep(0.3)")
                    .await
                    .is_some()
        })
        .await;
        assert!(
            timing,
            "the baselines never ran (revision applied: {applied})"
        );
        shard.cluster.restart(Shutdown::Fast).expect("restart");
    }
    let (result, events) = run.await.expect("the run ends");

    assert!(result.succeeded, "{:?}", result.error);
    assert!(result.rollback.is_none(), "{:?}", result.rollback);
    let phases: Vec<BaselinePhase> = result
        .baselines
        .iter()
        .map(|measured| measured.phase())
        .collect();
    assert_eq!(
        phases,
        [BaselinePhase::Before, BaselinePhase::After],
        "each phase recorded once, the interrupted one timed again"
    );
    for measured in &result.baselines {
        assert!(
            measured
                .queries
                .iter()
                .all(|query| query.error.is_empty() && query.runs == 5),
            "{measured:?}"
        );
    }
    assert!(has_column(&shard.admin, "accounts", "note").await);
    let recovered = events
        .iter()
        .filter(|event| matches!(event, Event::DatabaseOutage(outage) if outage.recovered))
        .count();
    assert_eq!(
        recovered,
        2,
        "both outages were reported: {:?}",
        events.iter().map(step).collect::<Vec<_>>()
    );
}
