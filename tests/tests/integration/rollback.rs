//! Rollback across real processes, driven with the `fleetshift` CLI: etcd, a coordinator
//! replica (`fleetshift serve`) and an agent (`fleetshift-agent run`) on real PostgreSQL.
//!
//! 1. A plan takes the shard to revision 1.
//! 2. A plan with baselines and `--auto-rollback` drops an index a baseline needs: the agent
//!    rolls the shard back to 1 on its own, the shard ends ROLLED_BACK, the plan halts and
//!    `apply --watch` exits 1 with the rollback in its JSON.
//! 3. `fleetshift rollback` of the first plan (operator only) makes a down plan back to `base`,
//!    approved and applied like any plan: the column is gone again.

use fleetshift_tests::fixtures;

use super::baselines::{EVENTS, has_account_index, has_column};
use super::cli_fleet::{CliFleet, summary};
use super::support::assert_exit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_shard_rolls_back_on_its_own_and_a_finished_plan_rolls_back_on_request() {
    let fleet = CliFleet::start("rolled", EVENTS, |_| String::new()).await;
    let (admin, cli) = (&fleet.database.admin, &fleet.cli);
    let migrations = fixtures::migrations(&[
        (
            "1_event_notes.up.sql",
            "ALTER TABLE events ADD COLUMN note text;",
        ),
        (
            "1_event_notes.down.sql",
            "ALTER TABLE events DROP COLUMN note;",
        ),
        (
            "2_drop_account_index.up.sql",
            "DROP INDEX events_account_idx;",
        ),
        (
            "2_drop_account_index.down.sql",
            "CREATE INDEX events_account_idx ON events (account_id);",
        ),
    ]);
    let directory = migrations.path().to_str().expect("path");
    let baselines = fleet.home.path().join("baselines.sql");
    std::fs::write(
        &baselines,
        "-- name: by_account\nSELECT count(*) FROM events WHERE account_id = 42;\n",
    )
    .expect("baselines");
    // 1. To revision 1.
    let first = cli
        .alice(&["plan", directory, "--target", "1", "--output", "json"])
        .await;
    assert_exit(&first, 0);
    let first_id = summary(&first)["plan"].as_str().expect("id").to_owned();
    let applied = cli.approved_and_applied(&first_id).await;
    assert_exit(&applied, 0);
    assert!(has_column(admin, "events", "note").await);

    // 2. Revision 2 degrades the baseline: the agent rolls the shard back to 1 on its own.
    let degrading = cli
        .alice(&[
            "plan",
            directory,
            "--baselines",
            baselines.to_str().expect("path"),
            "--auto-rollback",
            // The index turns a ~0.1 ms lookup into a scan of 400k rows (tens of ms); a floor
            // of 5 ms keeps a busy host's jitter from reading as a failed recovery.
            "--baseline-noise-floor",
            "5ms",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&degrading, 0);
    let degrading_id = summary(&degrading)["plan"].as_str().expect("id").to_owned();
    let applied = cli.approved_and_applied(&degrading_id).await;
    assert_exit(&applied, 1);
    let printed = String::from_utf8_lossy(&applied.stdout);
    assert!(
        printed.contains("\"progress\":\"rollback_started\""),
        "{printed}"
    );
    let ended = summary(&applied);
    assert_eq!(ended["state"], "halted", "{ended}");
    let shard = &ended["shards"][0];
    assert_eq!(shard["state"], "rolled back", "{shard}");
    assert_eq!(shard["current_version"], "1");
    assert_eq!(shard["previous_version"], "1");
    assert_eq!(shard["rollback"]["reverted_to"], "1");
    assert_eq!(shard["rollback"]["recovered"], true);
    let phases: Vec<&str> = shard["baselines"]
        .as_array()
        .expect("baselines")
        .iter()
        .filter_map(|measured| measured["phase"].as_str())
        .collect();
    assert_eq!(phases, ["before", "after", "recovered"]);
    assert!(shard["baselines"][1]["queries"][0]["p50_ratio"].as_f64() > Some(1.5));
    // The same timings in the shard's validation report, the degradation noted there.
    let report = &shard["validation"];
    assert_eq!(
        report["performance"][0]["query"], "by_account",
        "{report:#}"
    );
    assert_eq!(report["performance"][0]["degraded"], true, "{report:#}");
    assert!(
        report["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .any(|note| note
                .as_str()
                .is_some_and(|note| note.starts_with("baseline by_account degraded: median"))),
        "{report:#}"
    );
    assert!(has_account_index(admin).await, "the index is back");

    // 3. The first plan rolled back on request: operators only, then the usual gates.
    let refused = cli.bob(&["rollback", &first_id]).await;
    assert_exit(&refused, 9);
    let planned = cli
        .alice(&["rollback", &first_id, "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let rollback = summary(&planned);
    assert_eq!(rollback["direction"], "down");
    assert_eq!(rollback["rolls_back"], first_id.as_str());
    assert_eq!(rollback["target_version"], "base");
    assert_eq!(rollback["shards"][0]["target_version"], "base");
    let rollback_id = rollback["plan"].as_str().expect("id").to_owned();
    let applied = cli.approved_and_applied(&rollback_id).await;
    assert_exit(&applied, 0);
    assert_eq!(summary(&applied)["state"], "succeeded");
    assert!(
        !has_column(admin, "events", "note").await,
        "revision 1 was reverted"
    );
}

/// A rollback over a revision without a down script is refused when it is planned, naming the
/// revision and the `--to` that goes back as far as the down scripts do; with that `--to`, the
/// shard goes back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_past_an_irreversible_revision_is_refused_at_planning_and_offers_to() {
    let fleet = CliFleet::start("irreversible", "SELECT 1;", |_| String::new()).await;
    let (admin, cli) = (&fleet.database.admin, &fleet.cli);
    let migrations = fixtures::migrations(&[
        ("1_a.up.sql", "CREATE TABLE a (id int);"),
        ("1_a.down.sql", "DROP TABLE a;"),
        ("2_b.up.sql", "CREATE TABLE b (id int);"),
        ("3_c.up.sql", "CREATE TABLE c (id int);"),
        ("3_c.down.sql", "DROP TABLE c;"),
    ]);
    let directory = migrations.path().to_str().expect("path");
    let planned = cli.alice(&["plan", directory, "--output", "json"]).await;
    assert_exit(&planned, 0);
    let plan_id = summary(&planned)["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.approved_and_applied(&plan_id).await, 0);

    let refused = cli.alice(&["rollback", &plan_id]).await;
    assert_exit(&refused, 2);
    let said = fleetshift_tests::binary::printed(&refused);
    assert!(
        said.contains("1 revision(s) it would revert have no down script: 2_b")
            && said.contains(&format!("fleetshift rollback {plan_id} --to 2")),
        "{said}"
    );
    let plans = cli.alice(&["status", "--output", "json"]).await;
    assert_eq!(
        summary(&plans)["plans"].as_array().map(Vec::len),
        Some(1),
        "nothing was planned: {}",
        fleetshift_tests::binary::printed(&plans)
    );

    let planned = cli
        .alice(&["rollback", &plan_id, "--to", "2", "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let rollback = summary(&planned);
    assert_eq!(rollback["shards"][0]["target_version"], "2", "{rollback:#}");
    let rollback_id = rollback["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.approved_and_applied(&rollback_id).await, 0);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .expect("tables");
    assert_eq!(tables, ["a", "b"], "back to 2: c reverted, b stays");
}
