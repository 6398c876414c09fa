//! `fleetshift rehearse <plan>` across real processes: etcd, a coordinator replica and an agent
//! serving two PostgreSQL shards of different sizes, each rehearsal built by real `pg_dump` and
//! `pg_restore` beside its shard.
//!
//! A plain index build rehearsed on both shards: each reports the build's SHARE lock (E6), the
//! estimates scale with each shard's size, the hazard on the large shard raises the approved
//! plan to HIGH and reopens its approval, and the kept rehearsals let it be approved again.
//! Then the agent is SIGKILLed mid-rehearsal: after its restart the killed run's scratch copy is
//! gone, the waiting call is answered by the restarted agent. A plan HIGH from the start is
//! refused approval until a rehearsal ran it, and approved after. Neither shard was touched.

use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::fleet::fleetshift_as_with;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;
use sqlx::PgPool;

use super::cli::scratch_databases;
use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};

const EVENTS: &str = "CREATE TABLE events (id bigint PRIMARY KEY, kind text, payload text);";

async fn fill(admin: &PgPool, rows: u32) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO events SELECT g, 'k' || (g % 7), repeat('x', 40) FROM generate_series(1, {rows}) g;
         ANALYZE events;"
    )))
    .execute(admin)
    .await
    .expect("rows");
}

fn rehearsal_of<'a>(report: &'a Value, shard: &str) -> &'a Value {
    report["rehearsals"]
        .as_array()
        .and_then(|all| all.iter().find(|rehearsal| rehearsal["shard"] == shard))
        .unwrap_or_else(|| panic!("{shard} rehearsed: {report:#}"))
}

/// Shard rows per sampled row of the index build's table, and the E6 finding's lock.
fn scale_and_lock(rehearsal: &Value) -> (f64, &str) {
    let estimate = rehearsal["estimates"]
        .as_array()
        .and_then(|estimates| estimates.first())
        .unwrap_or_else(|| panic!("the index build is estimated: {rehearsal:#}"));
    assert_eq!(estimate["table"], "public.events", "{estimate}");
    let finding = rehearsal["findings"]
        .as_array()
        .and_then(|findings| findings.iter().find(|finding| finding["hint"] == "E6"))
        .unwrap_or_else(|| panic!("E6 found: {rehearsal:#}"));
    (
        estimate["factor"].as_f64().expect("factor"),
        finding["lock_mode"].as_str().expect("lock"),
    )
}

fn risk(plan: &Value) -> (&str, Vec<&str>) {
    let factors = plan["risk"]["factors"]
        .as_array()
        .map(|factors| {
            factors
                .iter()
                .filter(|factor| factor["points"].as_u64() > Some(0))
                .filter_map(|factor| factor["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    (plan["risk"]["level"].as_str().expect("level"), factors)
}

/// Bob approves `plan_id`, and the plan is approved.
async fn approved_by_bob(fleet: &CliFleet, plan_id: &str) {
    let approved = fleet
        .cli
        .bob(&["approve", plan_id, "--output", "json"])
        .await;
    assert_exit(&approved, 0);
    assert_eq!(summary(&approved)["state"], "approved");
}

/// The plan alice makes of `directory`, and its id.
async fn planned(fleet: &CliFleet, directory: &str) -> (Value, String) {
    let planned = fleet
        .cli
        .alice(&["plan", directory, "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let planned = summary(&planned);
    let plan_id = planned["plan"].as_str().expect("id").to_owned();
    (planned, plan_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsals_scale_with_each_shard_raise_the_risk_and_survive_a_killed_agent() {
    let mut fleet = CliFleet::start_shards(
        "rehearsed",
        EVENTS,
        2,
        |database| {
            let binaries = database.cluster.binaries();
            format!(
                "[rehearsals]\nmax_concurrent = 2\npg_dump = \"{}\"\npg_restore = \"{}\"\n",
                binaries.join("pg_dump").display(),
                binaries.join("pg_restore").display()
            )
        },
        Vec::new(),
    )
    .await;
    let large = fleet
        .database
        .cluster
        .admin_pool("rehearsed_1")
        .await
        .expect("admin pool");
    fill(&fleet.database.admin, 20_000).await;
    fill(&large, 200_000).await;
    let before = (
        snapshot_of(&fleet.database.admin).await,
        snapshot_of(&large).await,
    );

    let migrations = fixtures::migrations(&[
        (
            "1_events_kind.up.sql",
            "CREATE INDEX events_kind ON events (kind);",
        ),
        ("1_events_kind.down.sql", "DROP INDEX events_kind;"),
    ]);
    let directory = support::dir(&migrations);
    let (planned, plan_id) = planned(&fleet, directory).await;
    let (level, _) = risk(&planned);
    assert!(matches!(level, "LOW" | "MEDIUM"), "{planned:#}");
    assert_exit(
        &fleet
            .cli
            .bob(&["approve", &plan_id, "--output", "json"])
            .await,
        0,
    );

    // Both shards, a sample of at most 2000 rows each: the small shard's 20000 rows and the
    // large one's 200000 stand behind ten times as many rows per sampled row.
    let rehearsed = fleet
        .cli
        .alice(&[
            "rehearse",
            &plan_id,
            "--max-rows-per-table",
            "2000",
            "--hazard-table-rows",
            "100000",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&rehearsed, 11);
    let report = support::json(&rehearsed);
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    let (small_scale, small_lock) = scale_and_lock(rehearsal_of(&report, "a-db0"));
    let (large_scale, large_lock) = scale_and_lock(rehearsal_of(&report, "a-db1"));
    assert_eq!((small_lock, large_lock), ("ShareLock", "ShareLock"));
    let ratio = large_scale / small_scale;
    assert!(
        (5.0..=20.0).contains(&ratio),
        "the large shard's estimate scales ~10x the small one's: {small_scale} vs {large_scale}"
    );
    assert_eq!(report["risk"]["level"], "HIGH", "{report:#}");

    // The hazard on the large shard's 200000-row table reopened the approved plan.
    let status = fleet
        .cli
        .alice(&["status", &plan_id, "--output", "json"])
        .await;
    assert_exit(&status, 0);
    let status = summary(&status);
    assert_eq!(status["state"], "awaiting-approval", "{status:#}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("a rehearsal raised the risk")),
        "{status:#}"
    );
    let (level, factors) = risk(&status);
    assert_eq!(level, "HIGH");
    assert!(factors.contains(&"rehearsal"), "{status:#}");
    assert_eq!(status["rehearsals"].as_array().map(Vec::len), Some(2));
    approved_by_bob(&fleet, &plan_id).await;

    killed_mid_rehearsal(&mut fleet, directory).await;
    high_plan_waits_for_a_rehearsal(&fleet).await;
    assert_eq!(
        (
            snapshot_of(&fleet.database.admin).await,
            snapshot_of(&large).await
        ),
        before,
        "rehearsals never touch the shards"
    );
}

/// A plan whose second revision sleeps, rehearsed on the small shard; the agent is killed while
/// the sleep runs on the scratch copy, then restarted.
async fn killed_mid_rehearsal(fleet: &mut CliFleet, directory: &str) {
    let directory = std::path::Path::new(directory);
    for (file, sql) in [
        ("2_pause.up.sql", "SELECT pg_sleep(3);"),
        ("2_pause.down.sql", "SELECT 1;"),
    ] {
        std::fs::write(directory.join(file), sql).expect("revision");
    }
    let directory = directory.to_str().expect("utf-8");
    let (_, plan_id) = planned(fleet, directory).await;
    let (address, pki) = fleet.cli.endpoint();
    let call = tokio::spawn(async move {
        let arguments = [
            "rehearse",
            &plan_id,
            "--shards",
            "a-db0",
            "--timeout",
            "2m",
            "--output",
            "json",
        ];
        fleetshift_as_with(&address, &pki, "operator-alice", &arguments, &[]).await
    });
    let admin = fleet.database.admin.clone();
    let reached = wait_until(Duration::from_secs(60), || async {
        sleeping_scratch(&admin).await.is_some()
    })
    .await;
    assert!(
        reached,
        "the rehearsal never reached its sleep\n{}",
        fleet.diagnose()
    );
    let killed = sleeping_scratch(&admin).await.expect("scratch copy");
    fleet.restart_agent();
    let gone = wait_until(Duration::from_secs(60), || async {
        !scratch_databases(&admin).await.contains(&killed)
    })
    .await;
    assert!(
        gone,
        "{killed} outlived its agent's restart\n{}",
        fleet.diagnose()
    );

    // The call was still waiting; the restarted agent took the request up again.
    let answered = call.await.expect("the call");
    assert_exit(&answered, 11);
    let report = support::json(&answered);
    let rehearsal = rehearsal_of(&report, "a-db0");
    assert!(
        rehearsal["trace"]
            .as_array()
            .is_some_and(|trace| trace.iter().any(|statement| statement["revision"] == "2")),
        "{rehearsal:#}"
    );
    assert_eq!(scratch_databases(&admin).await, Vec::<String>::new());
}

/// A plan HIGH before any rehearsal (a validating CHECK with no down script takes ACCESS
/// EXCLUSIVE and carries a lint error): approval is refused until a rehearsal ran every
/// revision; one on `a-db0` speaks for `a-db1`, which is at the same version.
async fn high_plan_waits_for_a_rehearsal(fleet: &CliFleet) {
    let migrations = fixtures::migrations(&[(
        "1_kind_present.up.sql",
        "ALTER TABLE events ADD CONSTRAINT kind_present CHECK (kind IS NOT NULL);",
    )]);
    let directory = support::dir(&migrations);
    let (planned, plan_id) = planned(fleet, directory).await;
    assert_eq!(risk(&planned).0, "HIGH", "{planned:#}");

    let refused = fleet.cli.bob(&["approve", &plan_id]).await;
    assert_exit(&refused, 10);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("a-db0") && said.contains(&format!("fleetshift rehearse {plan_id}")),
        "the refusal names the shards and what to run: {said}"
    );

    let rehearsed = fleet
        .cli
        .alice(&[
            "rehearse", &plan_id, "--shards", "a-db0", "--output", "json",
        ])
        .await;
    let report = support::json(&rehearsed);
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        rehearsal_of(&report, "a-db0")["failure"],
        Value::Null,
        "{report:#}"
    );
    approved_by_bob(fleet, &plan_id).await;
}

/// The scratch database where a rehearsal's `pg_sleep` runs now, if any.
async fn sleeping_scratch(admin: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_stat_activity
         WHERE datname LIKE 'fleetshift\\_rehearsal\\_%' AND query LIKE '%pg_sleep%'",
    )
    .fetch_optional(admin)
    .await
    .expect("pg_stat_activity")
}

/// What a rehearsal must not change on a shard: its relations and their storage, and its rows.
async fn snapshot_of(admin: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ',
            (SELECT string_agg(relname || ':' || relfilenode, ',' ORDER BY relname)
             FROM pg_class WHERE relnamespace = 'public'::regnamespace),
            (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace),
            (SELECT count(*) FROM events)::text)",
    )
    .fetch_one(admin)
    .await
    .expect("snapshot")
}
