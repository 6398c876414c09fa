//! Paused and delayed migrators: a holder that wakes up after a newer claim is fenced out,
//! and a frozen process loses its lock and its transaction to the server's own timeouts.

use std::process::{Command, Stdio};
use std::time::Duration;

use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{Executor, Request};
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::fleetshift_running;
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};
use sqlx::PgPool;

use super::support::{self, Database};

fn slow_set() -> (tempfile::TempDir, MigrationSet) {
    let directory = fixtures::migrations(&[
        (
            "1_slow.sql",
            "CREATE TABLE work_log (agent text);
             SELECT pg_sleep(coalesce(nullif(current_setting('fleetshift_test.sleep_seconds', true), ''), '0')::float8);",
        ),
        ("2_log.sql", "INSERT INTO work_log VALUES (current_setting('application_name'));"),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    (directory, set)
}

async fn history_tokens(admin: &PgPool) -> Vec<(String, i64, String)> {
    sqlx::query_as("SELECT version, fence_token, agent_id FROM fleetshift.history ORDER BY version")
        .fetch_all(admin)
        .await
        .expect("history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holder_delayed_past_a_newer_claim_is_fenced_out_when_it_resumes() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("delayed").await;
    sqlx::query("ALTER DATABASE delayed SET fleetshift_test.sleep_seconds = '1'")
        .execute(&admin)
        .await
        .expect("slow revision");
    let (_directory, set) = slow_set();

    let newer = tokio::spawn({
        let (url, set) = (url.clone(), set.clone());
        async move {
            let shard = support::postgres(&url).await;
            support::executor(&shard, "agent-b", Some(7))
                .up(&set, &Request::default())
                .await
        }
    });
    assert!(
        wait_until(Duration::from_secs(20), || async {
            fleetshift_running(&admin, "pg_sleep").await.is_some()
        })
        .await
    );

    // agent-a still believes it holds token 5; it waits for the migrator lock meanwhile.
    let shard = support::postgres(&url).await;
    let stale = support::executor(&shard, "agent-a", Some(5))
        .up(&set, &Request::default())
        .await;
    let newer = newer
        .await
        .expect("newer task")
        .expect("the newer claim succeeds");
    assert_eq!(newer.steps.len(), 2);
    assert!(
        matches!(
            stale,
            Err(ExecError::FencedOut { ours, current, .. })
                if ours.get() == 5 && current.get() == 7
        ),
        "{stale:?}"
    );
    let history = history_tokens(&admin).await;
    assert!(
        history
            .iter()
            .all(|(_, token, agent)| *token == 7 && agent == "agent-b"),
        "{history:?}"
    );
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_migrator_loses_its_lock_and_changes_nothing_after_what_it_had_sent() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("frozen").await;
    sqlx::query("ALTER DATABASE frozen SET fleetshift_test.sleep_seconds = '1'")
        .execute(&admin)
        .await
        .expect("slow revision");
    let (directory, set) = slow_set();
    let dir = directory.path().to_str().expect("utf-8 path");
    let frozen = Command::new(binary::fleetshift())
        .args([
            "migrate",
            "up",
            "--dir",
            dir,
            "--fence-token",
            "5",
            "--agent-id",
            "agent-a",
            "--idle-in-transaction-timeout",
            "1s",
            "--migrator-lock-idle",
            "2s",
        ])
        .env("FLEETSHIFT_DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleetshift");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            fleetshift_running(&admin, "pg_sleep").await.is_some()
        })
        .await
    );
    let pid = frozen.id().to_string();
    let stopped = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("SIGSTOP");
    assert!(stopped.success());

    // The frozen migrator had sent revision 1's last statement with its records and COMMIT
    // (one round trip): the server finishes that revision under the frozen holder's token,
    // which still held the fence. It then ends the lock session (no heartbeat): a newer claim
    // gets the shard without anyone killing anything, and applies the rest.
    let shard = support::postgres(&url).await;
    let mut settings = support::quick_settings();
    settings.migrator_lock_wait = Duration::from_secs(20);
    let report = Executor::new(&shard, support::identity("agent-b", Some(7)), settings)
        .up(&set, &Request::default())
        .await
        .expect("the newer claim proceeds while the old holder is frozen");
    assert_eq!(report.steps.len(), 1, "revision 1 was the frozen holder's");

    let resumed = Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("SIGCONT");
    assert!(resumed.success());
    let output = frozen.wait_with_output().expect("frozen migrator exits");
    assert!(
        !output.status.success(),
        "the frozen migrator must not report success"
    );
    let history = history_tokens(&admin).await;
    assert_eq!(
        history,
        vec![
            ("1".to_owned(), 5, "agent-a".to_owned()),
            ("2".to_owned(), 7, "agent-b".to_owned()),
        ],
        "nothing of the frozen holder's after the newer claim moved the fence"
    );
    support::assert_sound_ledger(&support::postgres(&url).await, &set, None).await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM work_log")
        .fetch_one(&admin)
        .await
        .expect("work log");
    assert_eq!(logged, 1, "revision 2 ran exactly once");
}
