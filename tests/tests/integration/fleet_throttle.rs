//! An operator's fleet throttle on a real fleet (etcd, a replica and an agent process on
//! PostgreSQL, driven with the CLI): while it is in force an applied plan's shard is not
//! dispatched; `throttle list` shows it; an identity without the operator role cannot set one;
//! once lifted, the plan runs to its end. A run already going when a throttle selects its shard
//! waits before its next revision, and `status` says on what, until the throttle is lifted.

use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_shard_waits_until_the_throttle_is_lifted() {
    let fleet = CliFleet::start("held", "CREATE TABLE items (id int);", |_| String::new()).await;
    let cli = &fleet.cli;
    assert_exit(&cli.bob(&["throttle", "set", "--for", "10m"]).await, 9);
    let set = cli
        .alice(&[
            "throttle",
            "set",
            "--for",
            "10m",
            "--reason",
            "incident 42",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&set, 0);
    let throttle = support::json(&set)["throttles"][0]["throttle"]
        .as_str()
        .expect("id")
        .to_owned();
    let listed = cli.bob(&["throttle", "list"]).await;
    assert_exit(&listed, 0);
    let printed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        printed.contains(&format!("{throttle} holds every shard until"))
            && printed.contains("incident 42"),
        "{printed}"
    );

    let migrations =
        fixtures::migrations(&[("1_note.sql", "ALTER TABLE items ADD COLUMN note text;")]);
    let plan_id = cli.planned_and_started(&[support::dir(&migrations)]).await;
    let state = || async {
        let status = cli.alice(&["status", &plan_id, "--output", "json"]).await;
        summary(&status)["shards"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // Held: the shard stays pending while the leader ticks (every 500 ms) several times.
    let moved = wait_until(Duration::from_secs(3), || async {
        state().await != "pending"
    })
    .await;
    assert!(!moved, "a held shard was dispatched\n{}", fleet.diagnose());

    assert_exit(&cli.alice(&["throttle", "lift", &throttle]).await, 0);
    let done = wait_until(Duration::from_secs(30), || async {
        state().await == "succeeded"
    })
    .await;
    assert!(
        done,
        "the shard never ran once lifted\n{}",
        fleet.diagnose()
    );
    let listed = cli.alice(&["throttle", "list"]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no throttle in force"));
}

/// Whether the shard's `items` table has its `note` column (the second revision ran).
async fn has_note(fleet: &CliFleet) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns
                        WHERE table_name = 'items' AND column_name = 'note')",
    )
    .fetch_one(&fleet.database.admin)
    .await
    .expect("catalog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_throttle_holds_a_running_shard_before_its_next_revision() {
    let fleet = CliFleet::start("held_run", "CREATE TABLE items (id int);", |_| {
        String::new()
    })
    .await;
    let cli = &fleet.cli;
    // The plan's own throttle query holds the run after its first revision, which opens the
    // gate the query counts: the run is going, between revisions, when the operator acts.
    let gate = fleet.home.path().join("gate.sql");
    std::fs::write(
        &gate,
        "SELECT count(*) FROM pg_class WHERE relname = 'gate'",
    )
    .expect("query");
    let migrations = fixtures::migrations(&[
        ("1_gate.sql", "CREATE TABLE gate (id int);"),
        ("2_note.sql", "ALTER TABLE items ADD COLUMN note text;"),
    ]);
    let throttle_query = format!("{}:0", gate.display());
    let plan_id = cli
        .planned_and_started(&[
            support::dir(&migrations),
            "--throttle-query",
            &throttle_query,
        ])
        .await;
    let waiting = || async {
        let status = cli.alice(&["status", &plan_id, "--output", "json"]).await;
        summary(&status)["shards"][0]["waiting"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let on_query = wait_until(Duration::from_secs(30), || async {
        waiting()
            .await
            .starts_with("throttled: the plan's throttle query returned 1 > 0")
    })
    .await;
    assert!(
        on_query,
        "the run never waited on its query\n{}",
        fleet.diagnose()
    );

    let set = cli
        .alice(&[
            "throttle",
            "set",
            "--selector",
            "env=test",
            "--for",
            "10m",
            "--reason",
            "incident 7",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&set, 0);
    let throttle = support::json(&set)["throttles"][0]["throttle"]
        .as_str()
        .expect("id")
        .to_owned();
    let on_fleet = wait_until(Duration::from_secs(30), || async {
        waiting().await.starts_with(&format!(
            "throttled: fleet throttle {throttle} set by spiffe://fleet.example/operator/alice (incident 7) until "
        ))
    })
    .await;
    assert!(
        on_fleet,
        "the run never waited on the fleet throttle\n{}",
        fleet.diagnose()
    );
    // The plan's own signal clears; the fleet throttle still holds the next revision while the
    // agent samples again, every second.
    sqlx::raw_sql("DROP TABLE gate")
        .execute(&fleet.database.admin)
        .await
        .expect("gate closed");
    let ran = wait_until(Duration::from_secs(3), || has_note(&fleet)).await;
    assert!(
        !ran,
        "a held run went on to its next revision\n{}",
        fleet.diagnose()
    );

    assert_exit(&cli.alice(&["throttle", "lift", &throttle]).await, 0);
    let done = wait_until(Duration::from_secs(30), || async {
        let status = cli.alice(&["status", &plan_id, "--output", "json"]).await;
        summary(&status)["shards"][0]["state"] == "succeeded"
    })
    .await;
    assert!(
        done,
        "the run never went on once lifted\n{}",
        fleet.diagnose()
    );
    assert!(has_note(&fleet).await);
    let status = cli.alice(&["status", &plan_id, "--output", "json"]).await;
    assert!(
        summary(&status)["shards"][0]["waiting"].is_null(),
        "an ended run waits on nothing"
    );
}
