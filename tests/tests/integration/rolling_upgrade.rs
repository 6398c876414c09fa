//! The middle of a rolling upgrade: agent `a` is current, agent `b` speaks the previous
//! release's contract (every field added since is dropped on its way to the replica, see
//! `previous_release`). A rollout over both shards succeeds on both, and `fleetshift shards`
//! shows what each agent reported: `b` no database server, since its contract cannot say it.

use std::time::Duration;

use fleetshift_common::tls::identity::Role;
use fleetshift_tests::fleet::{Process, agent_config_text, issue, shard_tables};
use fleetshift_tests::previous_release::PreviousRelease;
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};
use serde_json::Value;

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_spans_an_agent_of_the_previous_release_beside_a_current_one() {
    let schema = "CREATE TABLE items (id int);";
    let fleet = CliFleet::start("upgrade", schema, |_| String::new()).await;
    let cli = &fleet.cli;
    let home = fleet.home.path();
    let pki = home.join("pki");
    issue(&pki, Role::Agent, "b", &[]);
    let link = PreviousRelease::start(&pki, &cli.endpoint().0, "b").await;
    let url = fleet
        .database
        .cluster
        .create_database("upgrade_b")
        .await
        .expect("database");
    let admin = sqlx::PgPool::connect(&url).await.expect("admin");
    sqlx::raw_sql(schema).execute(&admin).await.expect("schema");
    let config = home.join("agent-b.toml");
    let text = agent_config_text(
        "b",
        &[link.address.port()],
        &shard_tables(home, "b", &[url]),
    );
    std::fs::write(&config, text).expect("agent config");
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", config.to_str().expect("path"), "run"],
        &home.join("agent-b.log"),
    );
    let listed = || async {
        let listed = cli.bob(&["shards", "--output", "json"]).await;
        support::json(&listed)["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let both = wait_until(Duration::from_secs(30), || async {
        listed().await.len() == 2
    })
    .await;
    assert!(both, "agent b never announced\n{}", fleet.diagnose());
    let shards = listed().await;
    let shard = |id: &str| -> Value {
        shards
            .iter()
            .find(|shard| shard["shard"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let (current, previous) = (shard("a-db0"), shard("b-db0"));
    assert!(current["server"]["version"].is_string(), "{current}");
    assert!(previous["server"].is_null(), "{previous}");
    assert_eq!(previous["agent_version"], current["agent_version"]);
    assert!(previous["host"]["hostname"].is_string(), "{previous}");

    let migrations = fixtures::migrations(&[
        ("1_note.sql", "ALTER TABLE items ADD COLUMN note text;"),
        ("2_tag.sql", "ALTER TABLE items ADD COLUMN tag text;"),
    ]);
    let (_, applied) = cli
        .planned_and_applied(&[support::dir(&migrations), "--canary", "1"])
        .await;
    assert_exit(&applied, 0);
    let ended = summary(&applied);
    let states: Vec<(&str, &str)> = ended["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|task| {
            (
                task["shard"].as_str().unwrap_or_default(),
                task["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("a-db0", "succeeded"), ("b-db0", "succeeded")],
        "{ended}"
    );
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_name = 'items' AND column_name IN ('note', 'tag')",
    )
    .fetch_one(&admin)
    .await
    .expect("columns");
    assert_eq!(columns, 2, "agent b's shard took both revisions");
}
