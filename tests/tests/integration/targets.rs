//! Fleet targets across real processes (etcd, a replica, an agent on real PostgreSQL): the
//! leader keeps the shards at the target by itself. The first catch-up waits for an approval
//! and starts once given; a suspended shard is left alone and says why; with the agent stopped,
//! a shard is reactivated and a new one added, and when the agent returns both are caught up
//! through the revisions already approved, with no operator command. Every shard applies the
//! revision exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;

use super::cli_fleet::{CliFleet, Operators};
use super::support::{assert_exit, json};

const SCHEMA: &str = "CREATE TABLE accounts (id bigint PRIMARY KEY);";

/// Each shard's (standing, plan, reason) in `target status main`.
async fn standings(cli: &Operators) -> (Value, BTreeMap<String, (String, String, String)>) {
    let status = cli
        .alice(&["target", "status", "main", "--output", "json"])
        .await;
    assert_exit(&status, 0);
    let status = json(&status);
    let shards = status["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| {
            let text = |key: &str| shard[key].as_str().expect(key).to_owned();
            (
                text("shard"),
                (text("standing"), text("plan"), text("reason")),
            )
        })
        .collect();
    (status, shards)
}

/// Waits until `check` holds of the standings; the last ones seen.
async fn standings_until(
    fleet: &CliFleet,
    what: &str,
    check: impl Fn(&BTreeMap<String, (String, String, String)>) -> bool,
) -> BTreeMap<String, (String, String, String)> {
    let reached = wait_until(Duration::from_secs(60), || async {
        check(&standings(&fleet.cli).await.1)
    })
    .await;
    let (status, last) = standings(&fleet.cli).await;
    assert!(reached, "{what}: {status}\n{}", fleet.diagnose());
    last
}

fn at(standings: &BTreeMap<String, (String, String, String)>, shard: &str) -> bool {
    standings
        .get(shard)
        .is_some_and(|(standing, _, _)| standing == "at")
}

/// The plans that applied revision 1 on each shard, as its ledger records them.
async fn applied_by(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.expect("shard");
    let plans: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(plan_id, '') FROM fleetshift.history WHERE version = '1' AND status = 'applied'",
    )
    .fetch_all(&pool)
    .await
    .expect("ledger");
    pool.close().await;
    plans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_new_returning_and_reactivated_shards_at_the_target() {
    let mut fleet =
        CliFleet::start_shards("targeted", SCHEMA, 2, |_| String::new(), Vec::new()).await;
    let suspend = [
        "lifecycle",
        "a-db1",
        "suspended",
        "--reason",
        "tenant paused",
    ];
    assert_exit(&fleet.cli.alice(&suspend).await, 0);
    let migrations = fixtures::migrations(&[(
        "1_account_notes.sql",
        "ALTER TABLE accounts ADD COLUMN note text;",
    )]);
    let directory = migrations.path().to_str().expect("path");
    let set = [
        "target",
        "set",
        directory,
        "--name",
        "main",
        "--selector",
        "env=test",
    ];
    // Operators only; a name that is not one key is refused before anything is stored.
    assert_exit(&fleet.cli.bob(&set).await, 9);
    let bad = ["target", "set", directory, "--name", "a/b"];
    assert_exit(&fleet.cli.alice(&bad).await, 2);
    let recorded = fleet.cli.alice(&set).await;
    assert_exit(&recorded, 0);
    assert!(
        String::from_utf8_lossy(&recorded.stdout).contains("fleet target main set: version 1"),
        "{recorded:?}"
    );

    // The first catch-up asks for an approval; the suspended shard waits and says why.
    let waiting = standings_until(&fleet, "a-db0 awaiting approval", |shards| {
        shards
            .get("a-db0")
            .is_some_and(|(_, _, reason)| reason.contains("awaiting approval"))
    })
    .await;
    let first = waiting["a-db0"].1.clone();
    let (standing, plan, reason) = &waiting["a-db1"];
    assert_eq!((standing.as_str(), plan.as_str()), ("behind", ""));
    assert!(reason.starts_with("suspended (set by"), "{reason}");
    assert_exit(&fleet.cli.bob(&["approve", &first]).await, 0);
    // Approved is enough: the leader starts a target's plan itself.
    standings_until(&fleet, "a-db0 at the target", |shards| at(shards, "a-db0")).await;

    // Away: the agent stops; meanwhile the suspended shard is handed back and a shard added.
    fleet.stop_agent();
    assert_exit(&fleet.cli.alice(&["lifecycle", "a-db1", "agent"]).await, 0);
    let added = fleet.add_shard(SCHEMA).await;
    let away = standings(&fleet.cli).await.1;
    assert_eq!(away["a-db0"].0, "unseen", "{away:?}");
    assert!(!away.contains_key(&added), "{away:?}");
    fleet.start_agent();
    let caught_up = standings_until(&fleet, "every shard at the target", |shards| {
        ["a-db0", "a-db1", added.as_str()]
            .iter()
            .all(|shard| at(shards, shard))
    })
    .await;
    // Caught up through the revisions the first plan's approval let through: no new approval.
    let catch_ups = [caught_up["a-db1"].1.clone(), caught_up[&added].1.clone()];
    for catch_up in &catch_ups {
        assert_ne!(catch_up, &first);
        let listed = fleet
            .cli
            .alice(&["status", catch_up, "--output", "json"])
            .await;
        assert_exit(&listed, 0);
        let plan = super::cli_fleet::summary(&listed);
        assert_eq!(plan["state"], "succeeded", "{plan}");
        assert_eq!(plan["fleet_target"], "main", "{plan}");
        let approvers: Vec<&str> = plan["approvals"]
            .as_array()
            .expect("approvals")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            approvers.iter().all(|approver| approver.contains("bob")) && approvers.len() == 1,
            "the first plan's approval covers the catch-up: {plan}"
        );
    }

    let mut ledgers = Vec::new();
    for url in &fleet.shard_urls {
        ledgers.push(applied_by(url).await);
    }
    let [reactivated, new] = catch_ups;
    assert_eq!(
        ledgers,
        [vec![first], vec![reactivated], vec![new]],
        "each shard applied the revision once"
    );
    let listed = fleet
        .cli
        .alice(&["target", "list", "--output", "json"])
        .await;
    assert_exit(&listed, 0);
    let targets = json(&listed);
    assert_eq!(targets["targets"][0]["approved"][0]["from_version"], "");
}

/// Whether the shard's ledger records a seeding from a schema baseline.
async fn seeded(url: &str) -> bool {
    let pool = sqlx::PgPool::connect(url).await.expect("shard");
    let seeded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM fleetshift.audit WHERE action = 'baseline')",
    )
    .fetch_one(&pool)
    .await
    .expect("audit");
    pool.close().await;
    seeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shard_is_seeded_from_the_verified_baseline_of_crates_io() {
    let mut fleet = CliFleet::start_shards("seeding", "", 1, |_| String::new(), Vec::new()).await;
    let directory = fixtures::crates_io();
    let directory = directory.to_str().expect("path");
    let set = ["target", "set", directory, "--name", "main"];
    assert_exit(&fleet.cli.alice(&set).await, 0);
    let waiting = standings_until(&fleet, "the first catch-up", |shards| {
        shards
            .get("a-db0")
            .is_some_and(|(_, plan, _)| !plan.is_empty())
    })
    .await;
    let first = &waiting["a-db0"].1;
    // crates.io's history is HIGH risk: approval needs a rehearsal first (exit 11: findings).
    let rehearsed = fleet
        .cli
        .alice(&["rehearse", first, "--shards", "a-db0"])
        .await;
    assert!(
        matches!(rehearsed.status.code(), Some(0 | 11)),
        "{rehearsed:?}"
    );
    assert_exit(&fleet.cli.bob(&["approve", first]).await, 0);
    standings_until(&fleet, "a-db0 replayed to the target", |shards| {
        at(shards, "a-db0")
    })
    .await;
    assert!(
        !seeded(&fleet.shard_urls[0]).await,
        "the first shard replays"
    );

    // A baseline is used only once verified; viewers cannot take one.
    let create = [
        "baseline",
        "create",
        directory,
        "--from-shard",
        "a-db0",
        "--output",
        "json",
    ];
    assert_exit(&fleet.cli.bob(&create).await, 9);
    let created = fleet.cli.alice(&create).await;
    assert_exit(&created, 0);
    let baseline = json(&created)["baselines"][0].clone();
    assert_eq!(baseline["version"], "2026-07-30-140000-0000", "{baseline}");
    assert!(baseline["verification"].is_null(), "{baseline}");
    let id = baseline["baseline"].as_str().expect("id").to_owned();
    let verified = fleet
        .cli
        .alice(&["baseline", "verify", &id, "--output", "json"])
        .await;
    assert_exit(&verified, 0);
    let verification = json(&verified)["baselines"][0]["verification"].clone();
    assert_eq!(verification["holds"], true, "{verification}");
    assert_eq!(verification["replayed"], baseline["fingerprint"]);

    fleet.stop_agent();
    let added = fleet.add_shard("").await;
    fleet.start_agent();
    let caught_up = standings_until(&fleet, "the new shard at the target", |shards| {
        at(shards, &added)
    })
    .await;
    assert!(
        seeded(&fleet.shard_urls[1]).await,
        "seeded from the baseline"
    );
    let plan = fleet
        .cli
        .alice(&["status", &caught_up[&added].1, "--output", "json"])
        .await;
    assert_exit(&plan, 0);
    let plan = super::cli_fleet::summary(&plan);
    assert_eq!(plan["baseline"], id.as_str(), "{plan}");
}
