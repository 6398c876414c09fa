//! Pre-flight on real PostgreSQL: a long transaction on a touched table, and a streaming
//! replica whose replay is paused, each make pre-flight wait and then fail with nothing run.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_on_a_touched_table_fails_preflight_naming_its_pid() {
    let shard = shard("blocked").await;
    let config = shard.config(shard.settings(5));
    let set = migrations();
    let mut holder = shard.admin.acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .expect("pid");
    for statement in ["BEGIN", "UPDATE accounts SET owner = owner WHERE id = 1"] {
        sqlx::raw_sql(statement)
            .execute(&mut *holder)
            .await
            .expect("hold a row lock");
    }
    // Long by the check's measure (1 s) once the server says so.
    let long = wait_until(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT now() - xact_start > interval '1.1 seconds' FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_one(&shard.admin)
        .await
        .unwrap_or(false)
    })
    .await;
    assert!(long, "the holder's transaction never grew long");
    let duties = HostDuties {
        require_backup: false,
        preflight: Some(PreflightPolicy {
            long_transaction: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
            wait_for_blockers: prost_types::Duration::try_from(Duration::from_secs(2)).ok(),
            ..PreflightPolicy::default()
        }),
        ..HostDuties::default()
    };
    let (result, events) = execute(&config, assignment("b1", set.path(), duties)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("rollback");

    assert!(!result.succeeded);
    let error = result.error.expect("why");
    assert_eq!(error.kind, i32::from(ErrorKind::Precondition), "{error:?}");
    assert!(
        error.message.contains("pre-flight check blockers failed")
            && error
                .message
                .contains(&format!("pid {pid} (idle in transaction"))
            && error.message.contains("UPDATE accounts")
            && error.message.contains("after 2s"),
        "{}",
        error.message
    );
    let steps: Vec<String> = events.iter().map(step).collect();
    assert_eq!(
        steps.last().map(String::as_str),
        Some("preflight blockers false")
    );
    assert!(
        !steps.iter().any(|step| step.starts_with("revision")),
        "{steps:?}"
    );
    assert!(!shard.has_note_column().await, "nothing ran");

    // With the transaction gone, the same assignment goes through.
    let duties = HostDuties {
        require_backup: false,
        preflight: None,
        ..HostDuties::default()
    };
    let (result, _) = execute(&config, assignment("b2", set.path(), duties)).await;
    assert!(result.succeeded, "{:?}", result.error);
    assert!(shard.has_note_column().await);
}

/// A hot standby of the shard's cluster, streaming, and a pool on its copy of `database`.
pub(super) async fn streaming_standby(
    shard: &Shard,
    database: &str,
) -> (PostgresCluster, sqlx::PgPool) {
    let standby = shard.cluster.start_standby().expect("hot standby");
    let replica = standby.admin_pool(database).await.expect("standby pool");
    let streaming = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .fetch_one(&shard.admin)
        .await
        .expect("pg_stat_replication")
            == 1
    };
    assert!(
        wait_until(Duration::from_secs(30), streaming).await,
        "the standby streams"
    );
    (standby, replica)
}

/// The largest replay lag the shard's server reports for its replicas, in seconds.
pub(super) async fn replay_lag(admin: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication",
    )
    .fetch_one(admin)
    .await
    .expect("pg_stat_replication")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_replay_is_paused_fails_preflight_until_it_catches_up() {
    let shard = shard("replicated").await;
    let config = shard.config(shard.settings(5));
    let set = migrations();
    let (_standby, replica) = streaming_standby(&shard, "replicated").await;

    // Replay stops on the standby while the primary keeps writing: its lag grows.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica)
        .await
        .expect("pause replay");
    sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'not yet on the replica')")
        .execute(&shard.admin)
        .await
        .expect("write on the primary");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            replay_lag(&shard.admin).await > 3.0
        })
        .await,
        "the replica falls behind"
    );
    let duties = |max_lag: Duration| HostDuties {
        require_backup: false,
        preflight: Some(PreflightPolicy {
            max_replication_lag: prost_types::Duration::try_from(max_lag).ok(),
            ..PreflightPolicy::default()
        }),
        ..HostDuties::default()
    };
    let (result, events) = execute(
        &config,
        assignment("r1", set.path(), duties(Duration::from_secs(2))),
    )
    .await;
    assert!(!result.succeeded);
    let error = result.error.expect("why");
    assert_eq!(error.kind, i32::from(ErrorKind::Precondition), "{error:?}");
    assert!(
        error
            .message
            .contains("pre-flight check replication failed")
            && error.message.contains("1 replica(s)")
            && error.message.contains("on walreceiver")
            && error.message.contains("(limit 2s)")
            && error.message.contains("--max-replication-lag"),
        "{}",
        error.message
    );
    let steps: Vec<String> = events.iter().map(step).collect();
    assert_eq!(
        steps.last().map(String::as_str),
        Some("preflight replication false"),
        "{steps:?}"
    );
    assert!(!shard.has_note_column().await, "nothing ran");

    // A threshold above the lag lets the same shard through while replay is still paused.
    let (result, events) = execute(
        &config,
        assignment("r2", set.path(), duties(Duration::from_secs(3600))),
    )
    .await;
    assert!(result.succeeded, "{:?}", result.error);
    let steps: Vec<String> = events.iter().map(step).collect();
    assert!(
        steps.contains(&"preflight replication true".to_owned()),
        "{steps:?}"
    );
    assert!(shard.has_note_column().await);

    // Once replay resumes, the replica catches up and has the revision too.
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .expect("resume replay");
    let caught_up = wait_until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM information_schema.columns
                            WHERE table_name = 'accounts' AND column_name = 'note')",
        )
        .fetch_one(&replica)
        .await
        .expect("standby catalog")
    })
    .await;
    assert!(caught_up, "the replica replays the revision");
    replica.close().await;
}
