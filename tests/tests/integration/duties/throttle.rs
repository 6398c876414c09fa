//! Throttling on a real primary with a real streaming replica whose replay is paused: the
//! agent waits before its next revision while the replica falls behind, holding no transaction
//! open meanwhile, and goes on once replay resumes; the wait shows as progress events and in
//! the run's figures. A second run, with a short longest wait, fails throttled, naming the
//! replica lag of the standby the agent is told to watch, and is not rolled back even with
//! automatic rollback on. A throttle query that fails, or a watched replica that is no
//! replica, refuses the shard before anything runs.

use fleetshift_common::proto::v1::{RollbackPolicy, ThrottlePolicy};

use super::preflight::{replay_lag, streaming_standby};
use super::*;

/// Sessions of the shard's database holding a transaction open while doing nothing for more
/// than a second, other than this one (the moments between two statements of one transaction
/// do not count: a throttled run would sit there for seconds).
async fn idle_in_transaction(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND state LIKE 'idle in transaction%'
           AND state_change < now() - interval '1 second'",
    )
    .fetch_one(admin)
    .await
    .expect("pg_stat_activity")
}

/// Pauses replay on `replica` and writes on the primary until the replica is `behind` seconds
/// behind.
async fn fall_behind(shard: &Shard, replica: &sqlx::PgPool, id: i64, behind: f64) {
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(replica)
        .await
        .expect("pause replay");
    sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'not yet on the replica')")
        .bind(id)
        .execute(&shard.admin)
        .await
        .expect("write on the primary");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            replay_lag(&shard.admin).await > behind
        })
        .await,
        "the replica falls behind"
    );
}

fn throttled(max_wait: Duration, rollback: bool) -> HostDuties {
    HostDuties {
        throttle: Some(ThrottlePolicy {
            max_replication_lag: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
            max_wait: prost_types::Duration::try_from(max_wait).ok(),
            ..ThrottlePolicy::default()
        }),
        rollback: rollback.then(|| RollbackPolicy {
            on_failure: true,
            ..RollbackPolicy::default()
        }),
        ..HostDuties::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_holds_the_next_revision_until_replay_resumes() {
    let shard = shard("throttled").await;
    let config = Arc::new(shard.config(shard.settings(5)));
    let (standby, replica) = streaming_standby(&shard, "throttled").await;
    fall_behind(&shard, &replica, 1, 2.0).await;
    let set = migrations();
    let run = tokio::spawn({
        let config = Arc::clone(&config);
        let assignment = assignment("t1", set.path(), throttled(Duration::from_secs(120), false));
        async move { execute(&config, assignment).await }
    });
    // Held while the replica falls further behind (from 2 s to 5 s of lag): nothing applied,
    // and no transaction kept open while it waits.
    let held = wait_until(Duration::from_secs(30), || async {
        assert_eq!(idle_in_transaction(&shard.admin).await, 0);
        assert!(!shard.has_note_column().await, "held before the revision");
        replay_lag(&shard.admin).await > 5.0
    })
    .await;
    assert!(held, "the replica falls further behind");
    assert!(!run.is_finished());
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .expect("resume replay");
    let (result, events) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run goes on once the replica catches up")
        .expect("run");
    assert!(result.succeeded, "{:?}", result.error);
    assert!(shard.has_note_column().await);
    let throttles: Vec<String> = events
        .iter()
        .filter_map(|event| match event {
            Event::Throttled(throttled) => Some(format!(
                "{} {} {}",
                throttled.signal,
                throttled.resumed,
                throttled.detail.starts_with("replica lag")
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        throttles,
        ["replica lag false true", "replica lag true true"],
        "one wait, begun and ended"
    );
    let waited = result
        .metrics
        .and_then(|metrics| metrics.throttled)
        .and_then(|waited| Duration::try_from(waited).ok())
        .unwrap_or_default();
    assert!(waited >= Duration::from_secs(3), "{waited:?}");

    // Behind again, with a short longest wait: the shard fails throttled and stays as it is.
    // This time the agent also watches the standby itself (`throttle_replicas`), whose own
    // replay timestamp it reads first and names.
    fall_behind(&shard, &replica, 2, 2.0).await;
    let mut config = shard.config(shard.settings(5));
    let standby_url = standby.admin_url("throttled");
    config.shards[0].throttle_replicas = vec![DatabaseUrl::new(standby_url.clone())];
    let standby_server = DatabaseUrl::new(standby_url).server();
    let more = fixtures::migrations(&[
        (
            "1_account_notes.sql",
            "ALTER TABLE accounts ADD COLUMN note text;",
        ),
        (
            "2_more_notes.sql",
            "ALTER TABLE accounts ADD COLUMN more text;",
        ),
    ]);
    let (result, _) = execute(
        &config,
        assignment("t2", more.path(), throttled(Duration::from_secs(2), true)),
    )
    .await;
    assert!(!result.succeeded);
    assert!(result.rollback.is_none(), "a busy shard is not reverted");
    let error = result.error.expect("why");
    assert_eq!(error.kind, i32::from(ErrorKind::Failed), "{error:?}");
    assert!(
        error
            .message
            .contains("throttled before revision 2_more_notes")
            && error.message.contains("replica lag")
            && error.message.contains(&format!("on {standby_server}"))
            && error.message.contains("--throttle-max-wait"),
        "{}",
        error.message
    );
    assert!(shard.has_note_column().await, "revision 1 stays");
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .expect("resume replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_query_that_fails_refuses_the_shard_before_anything_runs() {
    let shard = shard("badly_throttled").await;
    let config = shard.config(shard.settings(5));
    let set = migrations();
    let duties = HostDuties {
        throttle: Some(ThrottlePolicy {
            query: "SELECT depth FROM no_such_queue".to_owned(),
            query_threshold: 10.0,
            ..ThrottlePolicy::default()
        }),
        ..HostDuties::default()
    };
    let (result, _) = execute(&config, assignment("q1", set.path(), duties)).await;
    assert!(!result.succeeded);
    let error = result.error.expect("why");
    assert_eq!(error.kind, i32::from(ErrorKind::Precondition), "{error:?}");
    assert!(
        error.message.contains("the plan's throttle query fails")
            && error.message.contains("no_such_queue")
            && error.message.contains("nothing ran"),
        "{}",
        error.message
    );
    assert!(!shard.has_note_column().await, "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_replica_that_is_no_replica_refuses_the_shard_before_anything_runs() {
    let shard = shard("not_a_replica").await;
    let mut config = shard.config(shard.settings(5));
    // The primary itself, listed by mistake.
    config.shards[0].throttle_replicas = vec![DatabaseUrl::new(shard.url.clone())];
    let set = migrations();
    let (result, _) = execute(
        &config,
        assignment("r1", set.path(), throttled(Duration::from_secs(60), false)),
    )
    .await;
    let error = result.error.expect("why");
    assert_eq!(error.kind, i32::from(ErrorKind::Precondition), "{error:?}");
    assert!(
        error
            .message
            .contains("is not a replica (it is not in recovery)")
            && error.message.contains("throttle_replicas")
            && error.message.contains("nothing ran")
            && !error.message.contains("postgres://")
            && !error.message.contains(CANARY),
        "{}",
        error.message
    );
    assert!(!shard.has_note_column().await, "nothing ran");
}

/// Batches a backfill job has committed.
async fn backfill_batches(admin: &sqlx::PgPool) -> i64 {
    let ledger: bool = sqlx::query_scalar("SELECT to_regclass('fleetshift.backfills') IS NOT NULL")
        .fetch_one(admin)
        .await
        .expect("catalog");
    if !ledger {
        return 0;
    }
    sqlx::query_scalar("SELECT coalesce(max(batches), 0) FROM fleetshift.backfills")
        .fetch_one(admin)
        .await
        .expect("the backfill's mark")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_pauses_a_backfill_between_batches() {
    let shard = shard("backfill_throttled").await;
    let config = Arc::new(shard.config(shard.settings(5)));
    let (_standby, replica) = streaming_standby(&shard, "backfill_throttled").await;
    sqlx::query("ALTER TABLE accounts ADD COLUMN witness integer NOT NULL DEFAULT 0")
        .execute(&shard.admin)
        .await
        .expect("witness column");
    // 2,000 rows in 100 batches of at least 50 ms each.
    let set = fixtures::migrations(&[(
        "1_witness.sql",
        "-- fleetshift:backfill key=id batch=20\nUPDATE accounts SET witness = witness + 1\n WHERE :batch AND (SELECT pg_sleep(0.05)) IS NOT NULL;",
    )]);
    let run = tokio::spawn({
        let config = Arc::clone(&config);
        let assignment = assignment("b1", set.path(), throttled(Duration::from_secs(120), false));
        async move { execute(&config, assignment).await }
    });
    assert!(
        wait_until(Duration::from_secs(60), || async {
            backfill_batches(&shard.admin).await >= 5
        })
        .await,
        "the backfill gets under way"
    );
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica)
        .await
        .expect("pause replay");
    // Once the lag passes the plan's 1 s, no batch commits while it stays above: the count
    // read at 3 s of lag is the count at 5 s, short of the whole job, with no transaction
    // held open meanwhile.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            replay_lag(&shard.admin).await > 3.0
        })
        .await,
        "the replica falls behind"
    );
    let held_at = backfill_batches(&shard.admin).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            assert_eq!(idle_in_transaction(&shard.admin).await, 0);
            replay_lag(&shard.admin).await > 5.0
        })
        .await,
        "the replica falls further behind"
    );
    assert_eq!(backfill_batches(&shard.admin).await, held_at);
    assert!(held_at < 100, "held mid-way, at batch {held_at}");
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .expect("resume replay");
    let (result, events) = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the backfill goes on once the replica catches up")
        .expect("run");
    assert!(result.succeeded, "{:?}", result.error);
    let witnessed: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE witness = 1), count(*) FILTER (WHERE witness <> 1)
         FROM accounts",
    )
    .fetch_one(&shard.admin)
    .await
    .expect("witnesses");
    assert_eq!(witnessed, (2000, 0));
    // The wait sits between two batches, begun and ended once.
    let steps: Vec<String> = events
        .iter()
        .map(step)
        .filter(|step| step.starts_with("throttled") || step.starts_with("backfill"))
        .collect();
    let waits: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, step)| step.starts_with("throttled"))
        .map(|(index, _)| index)
        .collect();
    assert_eq!(waits.len(), 2, "{steps:?}");
    assert_eq!(steps[waits[0]], "throttled resumed false");
    assert_eq!(steps[waits[1]], "throttled resumed true");
    assert_eq!(waits[1], waits[0] + 1, "{steps:?}");
    assert_eq!(steps[waits[0] - 1], format!("backfill batch {held_at}"));
    assert_eq!(
        steps[waits[1] + 1],
        format!("backfill batch {}", held_at + 1)
    );
    assert_eq!(steps.last().map(String::as_str), Some("backfill batch 100"));
}
