//! The runbook's controls of a running rollout, through the real CLI against a real replica,
//! agent, etcd and PostgreSQL: `pause` holds a rollout (the running shard finishes, nothing
//! new starts, the plan stays paused) and `resume` finishes it; `cancel` is the emergency
//! stop: the statement running on the shard is cancelled, its transaction rolled back, and
//! `watch` exits 8; so does stopping the agent. An ended plan is undone for the shards
//! `rollback --shards` selects.

use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::support::assert_exit;

const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY);";

/// `status <plan> --output json`, parsed.
async fn status(fleet: &CliFleet, plan: &str) -> Value {
    let output = fleet.cli.alice(&["status", plan, "--output", "json"]).await;
    assert_exit(&output, 0);
    summary(&output)
}

/// Plans `migrations`, has it approved and starts it (without following it).
async fn started(fleet: &CliFleet, migrations: &tempfile::TempDir) -> String {
    let directory = migrations.path().to_str().expect("path");
    let planned = fleet
        .cli
        .alice(&["plan", directory, "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let plan = summary(&planned)["plan"].as_str().expect("id").to_owned();
    assert_exit(&fleet.cli.bob(&["approve", &plan]).await, 0);
    assert_exit(&fleet.cli.alice(&["apply", &plan]).await, 0);
    plan
}

/// Whether a session on the shard is running a statement containing `text`.
async fn running(fleet: &CliFleet, text: &str) -> bool {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(text)
    .fetch_one(&fleet.database.admin)
    .await
    .expect("pg_stat_activity");
    count > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_rollout_and_resume_finishes_it() {
    let fleet = CliFleet::start("runbook_pause", ACCOUNTS, |_| String::new()).await;
    let migrations = fixtures::migrations(&[
        ("1_slow.up.sql", "SELECT pg_sleep(2);"),
        ("1_slow.down.sql", "SELECT 1;"),
    ]);
    let plan = started(&fleet, &migrations).await;
    let on_shard = wait_until(Duration::from_secs(20), || running(&fleet, "pg_sleep(2)")).await;
    assert!(on_shard, "{}", fleet.diagnose());

    let paused = fleet.cli.alice(&["pause", &plan, "--output", "json"]).await;
    assert_exit(&paused, 0);
    // The running shard finishes; the plan stays paused, with nothing else to do.
    let shard_done = wait_until(Duration::from_secs(20), || async {
        status(&fleet, &plan).await["shards"][0]["state"] == "succeeded"
    })
    .await;
    let held = status(&fleet, &plan).await;
    assert!(shard_done, "{held}\n{}", fleet.diagnose());
    assert_eq!(held["state"], "paused", "{held}");
    // `resume` on a paused plan works once; `pause` of a plan not running is refused (10).
    assert_exit(&fleet.cli.alice(&["resume", &plan]).await, 0);
    assert_exit(&fleet.cli.alice(&["resume", &plan]).await, 10);
    let watched = fleet.cli.alice(&["watch", &plan, "--output", "json"]).await;
    assert_exit(&watched, 0);
    assert_eq!(status(&fleet, &plan).await["state"], "succeeded");
    assert_exit(&fleet.cli.alice(&["pause", &plan]).await, 10);

    // The runbook's undo of an ended plan, for the shards a pattern selects.
    let none = fleet
        .cli
        .alice(&["rollback", &plan, "--shards", "b-*", "--output", "json"])
        .await;
    assert_exit(&none, 2);
    let planned = fleet
        .cli
        .alice(&["rollback", &plan, "--shards", "a-*", "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let rollback = summary(&planned);
    assert_eq!(
        rollback["shards"][0]["shard"],
        fleet.shard.as_str(),
        "{rollback}"
    );
    let rollback = rollback["plan"].as_str().expect("id").to_owned();
    assert_exit(&fleet.cli.approved_and_applied(&rollback).await, 0);
    let reverted = status(&fleet, &rollback).await;
    assert_eq!(reverted["state"], "succeeded", "{reverted}");
    // Nothing applied any more.
    assert_eq!(reverted["shards"][0]["current_version"], "", "{reverted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_statement_and_rolls_its_transaction_back() {
    let fleet = CliFleet::start("runbook_cancel", ACCOUNTS, |_| String::new()).await;
    let migrations = fixtures::migrations(&[
        (
            "1_long.up.sql",
            "CREATE TABLE long_work (id int);\nSELECT pg_sleep(120);",
        ),
        ("1_long.down.sql", "DROP TABLE long_work;"),
    ]);
    let plan = started(&fleet, &migrations).await;
    let on_shard = wait_until(Duration::from_secs(20), || running(&fleet, "pg_sleep(120)")).await;
    assert!(on_shard, "{}", fleet.diagnose());

    let cancelled = fleet
        .cli
        .alice(&["cancel", &plan, "--output", "json"])
        .await;
    assert_exit(&cancelled, 0);
    // `watch` ends as soon as the shard has stopped, long before the sleep would have.
    let watched = fleet.cli.alice(&["watch", &plan, "--output", "json"]).await;
    assert_exit(&watched, 8);
    assert!(
        !running(&fleet, "pg_sleep(120)").await,
        "the statement still runs"
    );
    let after = status(&fleet, &plan).await;
    assert_eq!(after["state"], "cancelled", "{after}");
    assert_eq!(after["shards"][0]["state"], "cancelled", "{after}");
    // The revision's transaction was rolled back whole, and the ledger does not count it.
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('long_work')::text")
        .fetch_one(&fleet.database.admin)
        .await
        .expect("regclass");
    assert_eq!(table, None, "half a revision stayed");
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fleetshift.history WHERE version = '1' AND status = 'applied'",
    )
    .fetch_one(&fleet.database.admin)
    .await
    .expect("ledger");
    assert_eq!(applied, 0);

    // Outside a transaction: the statement is cancelled too; the revision stays `started`,
    // for the next run to resume.
    let migrations = fixtures::migrations(&[
        ("1_long.up.sql", "SELECT 1;"),
        ("1_long.down.sql", "SELECT 1;"),
        ("2_slow.up.sql", "-- no-transaction\nSELECT pg_sleep(120);"),
        ("2_slow.down.sql", "SELECT 1;"),
    ]);
    let plan = started(&fleet, &migrations).await;
    let on_shard = wait_until(Duration::from_secs(20), || running(&fleet, "pg_sleep(120)")).await;
    assert!(on_shard, "{}", fleet.diagnose());
    assert_exit(&fleet.cli.alice(&["cancel", &plan]).await, 0);
    let watched = fleet.cli.alice(&["watch", &plan, "--output", "json"]).await;
    assert_exit(&watched, 8);
    assert!(!running(&fleet, "pg_sleep(120)").await);
    let left: String =
        sqlx::query_scalar("SELECT status FROM fleetshift.history WHERE version = '2'")
            .fetch_one(&fleet.database.admin)
            .await
            .expect("ledger");
    assert_eq!(left, "started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_cancels_its_running_statement_before_it_exits() {
    let mut fleet = CliFleet::start("runbook_sigterm", ACCOUNTS, |_| String::new()).await;
    let migrations = fixtures::migrations(&[
        (
            "1_long.up.sql",
            "CREATE TABLE long_work (id int);\nSELECT pg_sleep(120);",
        ),
        ("1_long.down.sql", "DROP TABLE long_work;"),
    ]);
    started(&fleet, &migrations).await;
    let on_shard = wait_until(Duration::from_secs(20), || running(&fleet, "pg_sleep(120)")).await;
    assert!(on_shard, "{}", fleet.diagnose());

    // `systemctl stop` sends SIGTERM: the statement is cancelled, not waited for.
    fleet.agent.signal("TERM");
    let status = fleet
        .agent
        .wait_for_exit(Duration::from_secs(60))
        .expect("the agent stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", fleet.diagnose());
    assert!(!running(&fleet, "pg_sleep(120)").await);
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('long_work')::text")
        .fetch_one(&fleet.database.admin)
        .await
        .expect("regclass");
    assert_eq!(table, None, "half a revision stayed");
    assert!(
        fleet
            .diagnose()
            .contains("asked the server to cancel the running statement"),
        "{}",
        fleet.diagnose()
    );
}
