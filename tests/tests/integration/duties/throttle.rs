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
