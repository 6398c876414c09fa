//! The fleet's dry run, `fleetshift plan <dir> --sql`, on a real fleet (etcd, a coordinator
//! replica, an agent process with two PostgreSQL shards at different versions): each group of
//! shards at one version gets exactly the SQL its shards would run, framed per transaction
//! mode; `--shard` narrows it; nothing is planned and nothing runs.

use std::time::Duration;

use fleetshift_tests::binary;
use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::support::{self, assert_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_group_gets_the_sql_its_shards_would_run_and_nothing_runs() {
    let environment = vec![("FLEETSHIFT_FACTS_REFRESH".to_owned(), "300ms".to_owned())];
    let fleet =
        CliFleet::start_shards("dry_sql", "SELECT 1;", 2, |_| String::new(), environment).await;
    let migrations = fixtures::migrations(&[
        ("1_a.sql", "CREATE TABLE a (id int);"),
        ("2_b.sql", "CREATE TABLE b (id int);"),
        (
            "3_a_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);",
        ),
    ]);
    let directory = support::dir(&migrations);
    // The second shard is at 1 already.
    let moved = binary::run(
        &fleet.shard_urls[1],
        &["migrate", "up", "--dir", directory, "--to", "1"],
    );
    assert_exit(&moved, 0);
    let reported = wait_until(Duration::from_secs(30), || async {
        let listed = fleet.cli.alice(&["shards", "--output", "json"]).await;
        summary(&listed)["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|shard| shard["current_version"] == "1"))
    })
    .await;
    assert!(reported, "the agent never reported version 1");

    let dry = fleet
        .cli
        .alice(&["plan", directory, "--sql", "--output", "json"])
        .await;
    assert_exit(&dry, 0);
    let dry: Value = serde_json::from_slice(&dry.stdout).expect("one JSON document");
    assert_eq!(dry["target_version"], "3", "{dry:#}");
    let groups = dry["groups"].as_array().expect("groups");
    let group = |version: &str| -> &Value {
        groups
            .iter()
            .find(|group| group["current_version"] == version)
            .unwrap_or_else(|| panic!("no group at {version}: {dry:#}"))
    };
    let versions = |group: &Value| -> Vec<String> {
        group["revisions"]
            .as_array()
            .expect("revisions")
            .iter()
            .map(|revision| revision["version"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(group("base")["shards"], serde_json::json!(["a-db0"]));
    assert_eq!(versions(group("base")), ["1", "2", "3"]);
    assert_eq!(group("1")["shards"], serde_json::json!(["a-db1"]));
    assert_eq!(versions(group("1")), ["2", "3"]);
    assert_eq!(group("1")["revisions"][1]["transactional"], false);
    assert_eq!(
        group("1")["revisions"][1]["statements"][0],
        "CREATE INDEX CONCURRENTLY a_id ON a (id)"
    );

    let one = fleet
        .cli
        .alice(&[
            "plan",
            directory,
            "--sql",
            "--shard",
            "a-db1",
            "--lock-timeout",
            "3s",
        ])
        .await;
    assert_exit(&one, 0);
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(
        text.contains("-- dry run on 1 shard(s) at 1 (postgres): a-db1: 2 revision(s)")
            && text.contains("SET LOCAL lock_timeout = '3000ms';")
            && text.contains("-- 3_a_index (outside a transaction")
            && !text.contains("a-db0"),
        "{text}"
    );

    let plans = fleet.cli.alice(&["status", "--output", "json"]).await;
    assert_eq!(
        summary(&plans)["plans"].as_array().map(Vec::len),
        Some(0),
        "a dry run plans nothing"
    );
    let untouched: bool = sqlx::query_scalar("SELECT to_regclass('a') IS NULL")
        .fetch_one(&fleet.database.admin)
        .await
        .expect("catalog");
    assert!(untouched, "nothing ran on the first shard");
}
