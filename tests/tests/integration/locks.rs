//! Lock discipline on a real server: a migration waits at most `lock_timeout` per attempt,
//! readers keep flowing behind it, and a permanent blocker makes it give up, bounded.

use std::time::Duration;

use fleetshift_common::engine::Timeouts;
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{
    ExecutionEvent, Executor, ExecutorSettings, LockRetryPolicy, Request,
};
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::{binary, fixtures};
use sqlx::PgPool;

use super::support::{self, Database};

const LOCK_TIMEOUT: Duration = Duration::from_millis(200);

fn accounts_set() -> (tempfile::TempDir, MigrationSet) {
    let directory = fixtures::migrations(&[
        (
            "1_accounts.sql",
            "CREATE TABLE accounts (id integer);\nINSERT INTO accounts SELECT generate_series(1, 10);",
        ),
        ("2_note.sql", "ALTER TABLE accounts ADD COLUMN note text;"),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    (directory, set)
}

fn settings(max_retries: usize) -> ExecutorSettings {
    ExecutorSettings {
        lock_retry: LockRetryPolicy {
            max_retries,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
        migrator_lock_wait: Duration::from_secs(10),
        lock_timeout: LOCK_TIMEOUT,
        ..ExecutorSettings::default()
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        lock_timeout: LOCK_TIMEOUT,
        statement_timeout: Duration::from_secs(30),
        ..Timeouts::default()
    }
}

async fn note_column_exists(admin: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'note')",
    )
    .fetch_one(admin)
    .await
    .expect("catalog")
}

/// A reader that tolerates at most one second of lock waiting (a semantic bound enforced
/// by the server, not a stopwatch in the test).
async fn read_with_one_second_patience(admin: &PgPool) -> Result<i64, sqlx::Error> {
    let mut transaction = admin.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '1s'")
        .execute(&mut *transaction)
        .await?;
    let count = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_retries_behind_a_reader_without_blocking_other_readers() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("locks").await;
    let (_directory, set) = accounts_set();
    let shard = support::postgres_with(&url, timeouts()).await;
    Executor::new(&shard, support::identity("setup", None), settings(0))
        .up(
            &set,
            &Request {
                target: Some("1".to_owned()),
                allow_drift: None,
            },
        )
        .await
        .expect("revision 1");

    // A long reader holds ACCESS SHARE; ALTER TABLE needs ACCESS EXCLUSIVE.
    let mut blocker = admin.begin().await.expect("blocker");
    sqlx::query("SELECT count(*) FROM accounts")
        .execute(&mut *blocker)
        .await
        .expect("read");

    let (events, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let migration = tokio::spawn({
        let set = set.clone();
        async move {
            let shard = support::postgres_with(&url, timeouts()).await;
            Executor::new(&shard, support::identity("migrator", None), settings(50))
                .report_to(events)
                .up(&set, &Request::default())
                .await
        }
    });
    // While the migration keeps retrying, new readers never wait longer than one attempt.
    for _ in 0..10 {
        let read = read_with_one_second_patience(&admin).await;
        assert_eq!(read.expect("a reader was blocked behind the migration"), 10);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !migration.is_finished(),
        "the migration must still be waiting for the blocker"
    );
    blocker.commit().await.expect("release the blocker");

    let report = migration
        .await
        .expect("migration task")
        .expect("migration succeeds");
    assert!(
        report.steps[0].lock_retries >= 1,
        "it retried behind the blocker: {report:?}"
    );
    assert!(note_column_exists(&admin).await);
    // Each retry is reported with its statement, its wait and the lock conflict's SQLSTATE.
    let mut retries = Vec::new();
    while let Ok(event) = reported.try_recv() {
        if let ExecutionEvent::LockRetry {
            location,
            wait,
            sqlstate,
            ..
        } = event
        {
            retries.push((location, wait, sqlstate));
        }
    }
    assert!(!retries.is_empty(), "lock retries are reported");
    assert!(
        retries.iter().all(
            |(location, wait, sqlstate)| location.ends_with("2_note.sql:1")
                && !wait.is_zero()
                && sqlstate.as_deref() == Some("55P03")
        ),
        "{retries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_blocker_exhausts_the_bounded_retries_with_a_clear_error() {
    let Database {
        cluster,
        url,
        admin,
    } = support::database("blocked").await;
    let (directory, set) = accounts_set();
    let shard = support::postgres_with(&url, timeouts()).await;
    let executor = Executor::new(&shard, support::identity("migrator", None), settings(2));
    executor
        .up(
            &set,
            &Request {
                target: Some("1".to_owned()),
                allow_drift: None,
            },
        )
        .await
        .expect("revision 1");
    let mut blocker = admin.begin().await.expect("blocker");
    sqlx::query("SELECT count(*) FROM accounts")
        .execute(&mut *blocker)
        .await
        .expect("read");

    let error = executor
        .up(&set, &Request::default())
        .await
        .expect_err("must give up");
    match &error {
        ExecError::LockTimeoutExhausted {
            attempts, location, ..
        } => {
            assert_eq!(*attempts, 3, "first attempt plus two retries");
            assert!(location.ends_with("2_note.sql:1"), "{location}");
        }
        other => panic!("expected lock timeout, got {other}"),
    }
    assert!(
        error
            .to_string()
            .contains("nothing of the revision is applied"),
        "{error}"
    );
    assert!(!note_column_exists(&admin).await);

    // The CLI says the same with its own exit code.
    let dir = directory.path().to_str().expect("utf-8 path");
    let output = binary::run(
        cluster.admin_url("blocked").as_str(),
        &[
            "migrate",
            "up",
            "--dir",
            dir,
            "--lock-timeout",
            "100ms",
            "--lock-retries",
            "1",
        ],
    );
    support::assert_exit(&output, 5);
    assert!(binary::printed(&output).contains("gave up after 2 attempt(s)"));
    blocker.rollback().await.expect("release the blocker");

    // A ledger locked away: the error gives the server's reason, not the line of the server's
    // own source code that raised it (which would read as a line of a migration file).
    let mut ledger_holder = admin.begin().await.expect("ledger holder");
    sqlx::query("LOCK TABLE fleetshift.history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *ledger_holder)
        .await
        .expect("lock the ledger");
    let error = executor
        .status(&set)
        .await
        .expect_err("the ledger is locked");
    ledger_holder.rollback().await.expect("release the ledger");
    let message = error.to_string();
    assert!(
        message.contains("reading the ledger")
            && message.ends_with("canceling statement due to lock timeout")
            && !message.contains(" at line "),
        "{message}"
    );
}
