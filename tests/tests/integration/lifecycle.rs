//! Shard lifecycles across real processes (etcd, a replica, an agent with two shards on real
//! PostgreSQL): an operator suspends a shard (operators only); `fleetshift shards` shows it
//! with who and why; a plan leaves it out, naming it, and does not touch it; handed back to its
//! agent's configuration, the next plan takes it.

use std::collections::BTreeMap;

use fleetshift_tests::fixtures;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::support::{assert_exit, json};

const SCHEMA: &str = "CREATE TABLE accounts (id bigint PRIMARY KEY);";

/// Each shard's lifecycle and its source, as `fleetshift shards --output json` lists them.
fn lifecycles(listed: &Value) -> BTreeMap<String, (String, String)> {
    listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| {
            (
                shard["shard"].as_str().expect("id").to_owned(),
                (
                    shard["lifecycle"].as_str().expect("lifecycle").to_owned(),
                    shard["lifecycle_source"]
                        .as_str()
                        .expect("source")
                        .to_owned(),
                ),
            )
        })
        .collect()
}

fn planned_shards(summary: &Value) -> Vec<String> {
    summary["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter_map(|shard| shard["shard"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_shard_is_left_out_until_it_is_active_again() {
    let fleet =
        CliFleet::start_shards("lifecycled", SCHEMA, 2, |_| String::new(), Vec::new()).await;
    let cli = &fleet.cli;
    let suspend = [
        "lifecycle",
        "a-db1",
        "suspended",
        "--reason",
        "tenant paused",
    ];
    assert_exit(&cli.bob(&suspend).await, 9);
    assert_exit(&cli.alice(&["lifecycle", "a-db1", "paused"]).await, 2);
    assert_exit(&cli.alice(&suspend).await, 0);
    let listed = cli.alice(&["shards", "--output", "json"]).await;
    assert_exit(&listed, 0);
    let states = lifecycles(&json(&listed));
    assert_eq!(
        states["a-db0"],
        ("active".to_owned(), "agent configuration".to_owned())
    );
    let (state, source) = &states["a-db1"];
    assert_eq!(state, "suspended");
    assert!(
        source.starts_with("set by spiffe://") && source.ends_with(": tenant paused"),
        "{source}"
    );

    let migrations = fixtures::migrations(&[(
        "1_account_notes.sql",
        "ALTER TABLE accounts ADD COLUMN note text;",
    )]);
    let directory = migrations.path().to_str().expect("path");
    let planned = cli.alice(&["plan", directory, "--output", "json"]).await;
    assert_exit(&planned, 0);
    let plan = summary(&planned);
    assert_eq!(planned_shards(&plan), ["a-db0"], "{plan}");
    let reason = plan["left_out"][0]["reason"].as_str().unwrap_or_default();
    assert_eq!(plan["left_out"][0]["shard"], "a-db1", "{plan}");
    assert!(
        reason.starts_with("suspended (set by ") && reason.ends_with(": tenant paused)"),
        "{reason}"
    );
    let plan_id = plan["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.approved_and_applied(&plan_id).await, 0);
    let suspended = sqlx::PgPool::connect(&fleet.shard_urls[1])
        .await
        .expect("shard");
    let untouched: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('fleetshift.history')::text")
            .fetch_one(&suspended)
            .await
            .expect("ledger");
    assert_eq!(untouched, None, "the suspended shard was not run");

    // Handed back to its agent's configuration (active): the next plan takes it.
    assert_exit(&cli.alice(&["lifecycle", "a-db1", "agent"]).await, 0);
    let (caught_up, applied) = cli.planned_and_applied(&[directory]).await;
    assert_exit(&applied, 0);
    let ended = summary(&applied);
    assert!(
        planned_shards(&ended).contains(&"a-db1".to_owned()),
        "{caught_up}: {ended}"
    );
    let note: Option<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'note'",
    )
    .fetch_optional(&suspended)
    .await
    .expect("columns");
    assert_eq!(note.as_deref(), Some("note"));
    suspended.close().await;
}
