//! The maintenance notice of a plan on a real fleet (etcd, a replica, an agent process on
//! PostgreSQL), driven with the CLI: the variables that come from the shards (engine and
//! version, masked URL, version before the plan), the plan's duties (time limit, baselines,
//! pre-flight) and the approvals by capacity (`approve --as dba`) are all filled.

use fleetshift_tests::fixtures;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::support::{self, assert_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_names_the_fleets_facts_and_each_capacitys_approval() {
    let fleet = CliFleet::start("noticed", "CREATE TABLE notes (id int);", |_| String::new()).await;
    let cli = &fleet.cli;
    let migrations = fixtures::migrations(&[
        (
            "1_note_body.up.sql",
            "ALTER TABLE notes ADD COLUMN body text;",
        ),
        (
            "1_note_body.down.sql",
            "ALTER TABLE notes DROP COLUMN body;",
        ),
    ]);
    let baselines = fleet.home.path().join("baselines.sql");
    std::fs::write(
        &baselines,
        "-- name: all_notes\nSELECT count(*) FROM notes;\n",
    )
    .expect("baselines");
    let planned = cli
        .alice(&[
            "plan",
            support::dir(&migrations),
            "--auto-rollback",
            "--revision-time-limit",
            "10m",
            "--baselines",
            baselines.to_str().expect("path"),
            "--output",
            "json",
        ])
        .await;
    assert_exit(&planned, 0);
    let plan_id = summary(&planned)["plan"].as_str().expect("id").to_owned();
    let refused = cli.bob(&["approve", &plan_id, "--as", "cfo"]).await;
    assert_exit(&refused, 2);
    assert_exit(
        &cli.bob(&[
            "approve",
            &plan_id,
            "--as",
            "dba",
            "--comment",
            "indexes checked",
        ])
        .await,
        0,
    );

    let context = cli
        .alice(&["plan", "notice", &plan_id, "--format", "json"])
        .await;
    assert_exit(&context, 0);
    let context: Value = serde_json::from_slice(&context.stdout).expect("JSON");
    let text = |name: &str| context[name].as_str().unwrap_or_default().to_owned();
    assert!(
        text("database_engine").starts_with("PostgreSQL 1"),
        "{context:#}"
    );
    let port = fleet.database.cluster.port.to_string();
    assert!(
        text("database_url_masked").contains(&format!("127.0.0.1:{port}/")),
        "{context:#}"
    );
    assert_eq!(text("previous_version"), "base");
    assert_eq!(text("rollback_timeout"), "10m");
    assert_eq!(
        text("baseline_db_query"),
        "all_notes: SELECT count(*) FROM notes"
    );
    assert!(
        text("dba_approval").starts_with("approved by spiffe://fleet.example/operator/bob at ")
            && text("dba_approval").ends_with(": indexes checked"),
        "{context:#}"
    );
    assert_eq!(context["eng_approval"], Value::Null, "not given: undefined");
    assert_eq!(
        text("rollback_command"),
        format!("fleetshift rollback {plan_id}")
    );

    let markdown = cli.alice(&["plan", "notice", &plan_id]).await;
    assert_exit(&markdown, 0);
    let markdown = String::from_utf8_lossy(&markdown.stdout);
    for expected in [
        "- DBA: approved by spiffe://fleet.example/operator/bob",
        "- Engineering: pending",
        "a revision runs longer than 10m",
        &format!("`fleetshift rollback {plan_id}`"),
    ] {
        assert!(
            markdown.contains(expected),
            "missing {expected:?} in:\n{markdown}"
        );
    }
}
