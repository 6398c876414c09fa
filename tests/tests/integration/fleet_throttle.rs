//! An operator's fleet throttle on a real fleet (etcd, a replica and an agent process on
//! PostgreSQL, driven with the CLI): while it is in force an applied plan's shard is not
//! dispatched; `throttle list` shows it; an identity without the operator role cannot set one;
//! once lifted, the plan runs to its end.

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
    let planned = cli
        .alice(&["plan", support::dir(&migrations), "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let plan_id = summary(&planned)["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.bob(&["approve", &plan_id]).await, 0);
    assert_exit(&cli.alice(&["apply", &plan_id]).await, 0);
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
