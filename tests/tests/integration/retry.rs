//! `fleetshift retry` across real processes (etcd, a replica, an agent with three shards on
//! real PostgreSQL): a plan fails on one shard (the column it adds is already there); the
//! shard is mended by hand and retried alone with `--failed`. The retry plan takes only that
//! shard, names every other with why it is left out, needs the operator role, is approved and
//! applied like any plan, and the shards that succeeded the first time are not run again
//! (their ledgers still name the first plan).

use std::collections::BTreeMap;

use fleetshift_tests::fixtures;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::support::assert_exit;

const SCHEMA: &str = "CREATE TABLE accounts (id bigint PRIMARY KEY);";

/// Each shard's plan for revision 1, as its ledger records it.
async fn recorded_plans(fleet: &CliFleet) -> Vec<String> {
    let mut plans = Vec::new();
    for url in &fleet.shard_urls {
        let pool = sqlx::PgPool::connect(url).await.expect("shard");
        let plan: Option<String> = sqlx::query_scalar(
            "SELECT plan_id FROM fleetshift.history WHERE version = '1' AND status = 'applied'",
        )
        .fetch_optional(&pool)
        .await
        .expect("ledger")
        .flatten();
        plans.push(plan.unwrap_or_default());
        pool.close().await;
    }
    plans
}

fn states(summary: &Value) -> BTreeMap<String, String> {
    summary["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| {
            (
                shard["shard"].as_str().expect("id").to_owned(),
                shard["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shard_is_retried_alone_and_the_others_are_named() {
    let fleet = CliFleet::start_shards("retried", SCHEMA, 3, |_| String::new(), Vec::new()).await;
    let cli = &fleet.cli;
    // The third shard already has the column: revision 1 fails there.
    let third = sqlx::PgPool::connect(&fleet.shard_urls[2])
        .await
        .expect("shard");
    sqlx::query("ALTER TABLE accounts ADD COLUMN note text")
        .execute(&third)
        .await
        .expect("column");
    let migrations = fixtures::migrations(&[(
        "1_account_notes.sql",
        "ALTER TABLE accounts ADD COLUMN note text;",
    )]);
    let directory = migrations.path().to_str().expect("path");
    let (first, applied) = cli.planned_and_applied(&[directory]).await;
    assert_exit(&applied, 1);
    let ended = states(&summary(&applied));
    assert_eq!(ended["a-db2"], "failed", "{ended:?}");
    assert_eq!(ended["a-db0"], "succeeded", "{ended:?}");

    // Operators only.
    assert_exit(&cli.bob(&["retry", &first, "--failed"]).await, 9);
    sqlx::query("ALTER TABLE accounts DROP COLUMN note")
        .execute(&third)
        .await
        .expect("mended");
    let planned = cli
        .alice(&["retry", &first, "--failed", "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let retry = summary(&planned);
    assert_eq!(retry["retries"], first.as_str(), "{retry}");
    assert_eq!(retry["state"], "awaiting-approval", "{retry}");
    let taken: Vec<&str> = retry["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter_map(|shard| shard["shard"].as_str())
        .collect();
    assert_eq!(taken, ["a-db2"], "{retry}");
    let left_out: BTreeMap<&str, &str> = retry["left_out"]
        .as_array()
        .expect("left out")
        .iter()
        .filter_map(|left| Some((left["shard"].as_str()?, left["reason"].as_str()?)))
        .collect();
    let reached = format!("reached its target in plan {first}");
    assert_eq!(left_out.get("a-db0"), Some(&reached.as_str()), "{retry}");
    // The second shard ran beside the failure or never started, as the plan's threshold
    // allowed; either way it is named.
    assert!(left_out.contains_key("a-db1"), "{retry}");
    let human = cli.alice(&["retry", &first, "--failed"]).await;
    assert_exit(&human, 0);
    let printed = String::from_utf8_lossy(&human.stdout);
    assert!(
        printed.contains(&format!("left out: a-db0 {reached}")),
        "{printed}"
    );

    let retry_id = retry["plan"].as_str().expect("id").to_owned();
    let applied = cli.approved_and_applied(&retry_id).await;
    assert_exit(&applied, 0);
    assert_eq!(states(&summary(&applied))["a-db2"], "succeeded");
    let plans = recorded_plans(&fleet).await;
    assert_eq!(plans[0], first, "the first shard was not run again");
    assert_eq!(plans[2], retry_id);
    third.close().await;
}
