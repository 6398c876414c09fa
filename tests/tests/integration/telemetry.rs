//! Telemetry of real processes: a `fleetshift serve` replica and a `fleetshift-agent run`
//! agent, both with `telemetry_listen` and `--log-format json`, scraped during a rollout on
//! real PostgreSQL through real etcd.
//!
//! 1. Both probes answer; readiness turns 200 once the replica knows a leader and the agent
//!    holds a session.
//! 2. While a revision sleeps on the shard, the leader shows the plan running with its shard
//!    task, and the agent shows the assignment and its connection in use.
//! 3. After the rollout (with a verified backup and a baseline) the figures have moved
//!    (statements, revisions, backups, baseline ratio, gRPC calls by method, store round
//!    trips) and the plan's own series are gone; no label carries the database URL.
//! 4. The logs are JSON lines whose fields name the plan, shard and fence.
//! 5. Readiness follows the links: with etcd killed the replica is not ready (naming why)
//!    and counts the failed store requests; with the replica killed the agent is not ready.
//! 6. Every metric the shipped Grafana dashboard queries was in one of these scrapes.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::scrape::{get, metrics, sample, status};
use fleetshift_tests::wait::wait_until;
use serde_json::Value;

use super::cli_fleet::{CliFleet, summary};
use super::deploy_dashboard::{assert_queries_only, families_in};
use super::support::assert_exit;

const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY);";

fn at_least(text: &str, series: &str, floor: f64) -> bool {
    sample(text, series).is_some_and(|value| value >= floor)
}

/// The JSON lines of a log, each parsed (a line that is not JSON fails the test).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: not JSON: {line}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_rollout_and_probes_follow_each_process_link() {
    let fleet = CliFleet::start("observed", ACCOUNTS, |database| {
        let binaries = database.cluster.binaries();
        format!(
            "[backups]\ndirectory = \"backups\"\npg_dump = \"{}\"\npg_restore = \"{}\"\n",
            binaries.join("pg_dump").display(),
            binaries.join("pg_restore").display(),
        )
    })
    .await;
    // Every family any scrape showed, for the dashboard's check.
    let mut seen = BTreeSet::new();
    let (coordinator, agent) = (
        fleet.telemetry.coordinator.clone(),
        fleet.telemetry.agent.clone(),
    );
    let cli = &fleet.cli;

    // 1. Probes.
    assert_eq!(status(&coordinator, "/health/liveness"), 200);
    assert_eq!(status(&agent, "/health/liveness"), 200);
    let ready = |address: String| async move { status(&address, "/health/readiness") == 200 };
    assert!(
        wait_until(Duration::from_secs(20), || ready(coordinator.clone())).await,
        "{}",
        fleet.diagnose()
    );
    assert!(
        wait_until(Duration::from_secs(20), || ready(agent.clone())).await,
        "{}",
        fleet.diagnose()
    );
    let idle = metrics(&coordinator);
    assert_eq!(sample(&idle, "fleetshift_leader"), Some(1.0), "{idle}");
    assert!(at_least(&idle, "fleetshift_leader_epoch", 1.0), "{idle}");
    assert_eq!(
        sample(&idle, "fleetshift_agents_connected"),
        Some(1.0),
        "{idle}"
    );
    // The first keep-alive of the leader's lease comes a beat after it is elected: wait
    // for it rather than expect it in the first scrape.
    let kept_alive = wait_until(Duration::from_secs(20), || {
        let coordinator = coordinator.clone();
        async move {
            at_least(
                &metrics(&coordinator),
                "fleetshift_store_request_duration_seconds_count{operation=\"keep_alive\"}",
                1.0,
            )
        }
    })
    .await;
    assert!(kept_alive, "{}", metrics(&coordinator));

    // 2. During a rollout whose second revision sleeps on the shard.
    let migrations = fixtures::migrations(&[
        (
            "1_email.up.sql",
            "ALTER TABLE accounts ADD COLUMN email text;",
        ),
        (
            "1_email.down.sql",
            "ALTER TABLE accounts DROP COLUMN email;",
        ),
        ("2_pause.up.sql", "SELECT pg_sleep(4);"),
        ("2_pause.down.sql", "SELECT 1;"),
    ]);
    let directory = migrations.path().to_str().expect("path");
    let baselines = fleet.home.path().join("baselines.sql");
    std::fs::write(
        &baselines,
        "-- name: accounts\nSELECT count(*) FROM accounts;\n",
    )
    .expect("baselines");
    let planned = cli
        .alice(&[
            "plan",
            directory,
            "--require-backup",
            "--baselines",
            baselines.to_str().expect("path"),
            "--output",
            "json",
        ])
        .await;
    assert_exit(&planned, 0);
    let plan = summary(&planned)["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.bob(&["approve", &plan, "--output", "json"]).await, 0);
    assert_exit(&cli.alice(&["apply", &plan, "--output", "json"]).await, 0);
    let running_task = format!("fleetshift_rollout_shards{{plan=\"{plan}\",state=\"running\"}}");
    let leader_sees_it = wait_until(Duration::from_secs(20), || {
        let (coordinator, running_task) = (coordinator.clone(), running_task.clone());
        async move {
            let text = metrics(&coordinator);
            sample(&text, "fleetshift_rollouts{state=\"running\"}") == Some(1.0)
                && sample(&text, &running_task) == Some(1.0)
        }
    })
    .await;
    assert!(
        leader_sees_it,
        "{}\n{}",
        metrics(&coordinator),
        fleet.diagnose()
    );
    seen.extend(families_in(&metrics(&coordinator)));
    let agent_works = wait_until(Duration::from_secs(20), || {
        let agent = agent.clone();
        async move {
            let text = metrics(&agent);
            sample(&text, "fleetshift_agent_assignments_running") == Some(1.0)
                && at_least(
                    &text,
                    "fleetshift_agent_db_pool_connections{shard=\"a-db0\",state=\"in_use\"}",
                    1.0,
                )
                && sample(&text, "fleetshift_agent_db_pool_waiters{shard=\"a-db0\"}").is_some()
        }
    })
    .await;
    assert!(agent_works, "{}\n{}", metrics(&agent), fleet.diagnose());
    seen.extend(families_in(&metrics(&agent)));
    assert!(at_least(
        &metrics(&agent),
        "fleetshift_agent_lease_remaining_seconds",
        0.1
    ));

    // 3. After it.
    let watched = cli.alice(&["watch", &plan, "--output", "json"]).await;
    assert_exit(&watched, 0);
    // The leader publishes its rollout gauges at most every 250 ms, and on its next tick.
    let published = wait_until(Duration::from_secs(5), || {
        let coordinator = coordinator.clone();
        async move {
            sample(
                &metrics(&coordinator),
                "fleetshift_rollouts{state=\"succeeded\"}",
            ) == Some(1.0)
        }
    })
    .await;
    let leader = metrics(&coordinator);
    assert!(published, "{leader}");
    let plan_series_gone = wait_until(Duration::from_secs(5), || {
        let (coordinator, plan) = (coordinator.clone(), plan.clone());
        async move { !metrics(&coordinator).contains(&format!("plan=\"{plan}\"")) }
    })
    .await;
    assert!(plan_series_gone, "{}", metrics(&coordinator));
    for method in ["CreatePlan", "ApprovePlan", "StartRollout", "WatchRollout"] {
        let series = format!(
            "fleetshift_grpc_request_duration_seconds_count{{method=\"fleetshift.v1.FleetService/{method}\"}}"
        );
        assert!(at_least(&leader, &series, 1.0), "{series} in {leader}");
    }
    assert!(
        at_least(
            &leader,
            "fleetshift_store_request_duration_seconds_count{operation=\"commit\"}",
            3.0
        ),
        "{leader}"
    );
    let agent_text = metrics(&agent);
    seen.extend(families_in(&leader));
    seen.extend(families_in(&agent_text));
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_backup_duration_seconds_count",
            1.0
        ),
        "{agent_text}"
    );
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_backup_size_bytes{shard=\"a-db0\"}",
            1.0
        ),
        "{agent_text}"
    );
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_baseline_p50_ratio{shard=\"a-db0\",query=\"accounts\"}",
            0.01
        ),
        "{agent_text}"
    );
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_statement_duration_seconds_count",
            2.0
        ),
        "{agent_text}"
    );
    // pg_sleep(4) landed in a bucket above 2 s.
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_statement_duration_seconds_sum",
            4.0
        ),
        "{agent_text}"
    );
    assert_eq!(
        sample(
            &agent_text,
            "fleetshift_agent_revisions_total{outcome=\"applied\"}"
        ),
        Some(2.0),
        "{agent_text}"
    );
    assert_eq!(
        sample(&agent_text, "fleetshift_agent_assignments_running"),
        Some(0.0)
    );
    // Every connection the run's pool handed out was timed (ledger, fence, revisions, ...).
    assert!(
        at_least(
            &agent_text,
            "fleetshift_agent_db_pool_acquire_duration_seconds_count",
            5.0
        ),
        "{agent_text}"
    );
    assert!(
        !agent_text.contains("fleetshift_agent_db_pool_connections{"),
        "a finished assignment's pool is not reported: {agent_text}"
    );
    for text in [&leader, &agent_text] {
        assert!(!text.contains("postgres://"), "{text}");
        assert!(!text.contains(&fleet.database.url), "{text}");
    }

    // 4. JSON logs with fields.
    let agent_log = std::fs::read_to_string(fleet.home.path().join("agent.log")).expect("log");
    let succeeded = json_lines(&agent_log)
        .into_iter()
        .find(|line| line["message"] == "assignment succeeded")
        .unwrap_or_else(|| panic!("no success line in {agent_log}"));
    assert_eq!(succeeded["shard"], "a-db0", "{succeeded}");
    assert!(
        succeeded["fence"].as_i64().is_some_and(|fence| fence > 0),
        "{succeeded}"
    );
    assert_eq!(succeeded["level"], "INFO", "{succeeded}");
    let replica_log = std::fs::read_to_string(fleet.home.path().join("c1.log")).expect("log");
    let ended = json_lines(&replica_log)
        .into_iter()
        .find(|line| line["message"] == "shard task ended")
        .unwrap_or_else(|| panic!("no task line in {replica_log}"));
    assert_eq!(ended["plan"], plan.as_str(), "{ended}");
    assert_eq!(ended["shard"], "a-db0", "{ended}");

    // 5. Readiness follows each process's link.
    kill(fleet.etcd.pid().expect("etcd runs"));
    let replica_unready = wait_until(Duration::from_secs(20), || {
        let coordinator = coordinator.clone();
        async move { status(&coordinator, "/health/readiness") == 503 }
    })
    .await;
    assert!(replica_unready, "{}", fleet.diagnose());
    let (_, reason) = get(&coordinator, "/health/readiness").expect("answer");
    assert!(reason.contains("no leader known"), "{reason}");
    assert_eq!(status(&coordinator, "/health/liveness"), 200);
    let cut_off = metrics(&coordinator);
    assert_eq!(sample(&cut_off, "fleetshift_leader"), Some(0.0));
    assert!(
        at_least(
            &cut_off,
            "fleetshift_store_request_errors_total{operation=\"keep_alive\",kind=\"unavailable\"}",
            1.0
        ),
        "{cut_off}"
    );
    assert!(
        at_least(&cut_off, "fleetshift_lease_keepalive_failures_total", 1.0),
        "{cut_off}"
    );
    seen.extend(families_in(&cut_off));
    assert_queries_only(&seen);
    kill(fleet.replica.id());
    let agent_unready = wait_until(Duration::from_secs(20), || {
        let agent = agent.clone();
        async move { status(&agent, "/health/readiness") == 503 }
    })
    .await;
    assert!(agent_unready, "{}", fleet.diagnose());
    let (_, reason) = get(&agent, "/health/readiness").expect("answer");
    assert!(reason.contains("no session with a coordinator"), "{reason}");
    assert!(at_least(
        &metrics(&agent),
        "fleetshift_agent_reconnects_total",
        1.0
    ));
    assert_eq!(
        sample(&metrics(&agent), "fleetshift_agent_session_up"),
        Some(0.0)
    );
}

fn kill(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_counts_the_tasks_waiting_for_one_of_its_connections() {
    let database = super::support::database("waiters").await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .expect("pool");
    let pool = fleetshift_common::engine::CountedPool::new(pool);
    let held = pool.acquire().await.expect("the only connection");
    assert_eq!(pool.waiting(), 0);
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            // Through the executor, as the engine's and duties' queries go.
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&pool)
                .await
        })
    };
    let counted = wait_until(Duration::from_secs(5), || async { pool.waiting() == 1 }).await;
    assert!(counted, "the waiting query is counted");
    drop(held);
    assert_eq!(waiter.await.expect("joined").expect("ran"), 1);
    assert_eq!(pool.waiting(), 0);
}
