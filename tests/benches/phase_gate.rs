//! Phase gating latency: how long after an approver opens a phased plan's gate the next phase
//! is handed to the first agent, against how long after a start call the first phase is (the
//! same dispatch, measured in the same run). A real etcd, one `fleetshift serve` replica and
//! two `fleetshift-agent` processes (release builds) serving 8 PostgreSQL databases (4 at a time); a set of
//! two phases (expand, contract) behind an approver's gate.
//!
//! `cargo build --release --bins && cargo bench -p fleetshift-tests --bench phase_gate
//! [-- ROUNDS]` (default 5 rounds, each on fresh databases). Target: the next phase's first
//! dispatch under 1 s after the gate opens.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::{
    CreatePlanRequest, GetPlanRequest, OpenGateRequest, Plan, PlanState,
};
use fleetshift_coordinator::rollout::waves;
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::process_fleet::{Coordinator, announced, start_agents, start_coordinator};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{fixtures, rollout};

const SHARDS: usize = 8;
const AGENTS: usize = 2;
/// Shards running at once (the test cluster allows 50 connections).
const CONCURRENCY: usize = 4;

fn main() -> anyhow::Result<()> {
    let [rounds] = fleetshift_tests::bench::numbers(["ROUNDS"], [5])?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(rounds))
}

/// The plan's first hand-over to an agent (its tasks' earliest start), `after` a call.
fn first_dispatch(plan: &Plan, after: SystemTime) -> anyhow::Result<Duration> {
    let first = waves::planned_tasks(plan)
        .filter_map(|task| task.started_at)
        .map(SystemTime::try_from)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .context("no task started")?;
    Ok(first.duration_since(after).unwrap_or_default())
}

async fn plan_of(coordinator: &Coordinator, plan_id: &str) -> anyhow::Result<Plan> {
    Ok(coordinator
        .client
        .clone()
        .get_plan(GetPlanRequest {
            plan_id: plan_id.to_owned(),
        })
        .await?
        .into_inner())
}

/// One round: the first phase's start latency and the second's after its gate opens.
async fn round(
    coordinator: &Coordinator,
    home: &std::path::Path,
    label: &str,
    urls: &[String],
    set: &std::path::Path,
) -> anyhow::Result<(Duration, Duration)> {
    let agents = start_agents(home, coordinator, label, urls, AGENTS)?;
    announced(coordinator, label, urls.len()).await?;
    let cap = u32::try_from(CONCURRENCY)?;
    let mut rollout = rollout::prepare(
        &coordinator.client,
        CreatePlanRequest {
            migration_set: Some(fixtures::shipped(set)),
            selector: [("round".to_owned(), label.to_owned())].into(),
            waves: Some(rollout::policy(1, cap, cap)),
            ..CreatePlanRequest::default()
        },
    )
    .await?;
    let started = SystemTime::now();
    rollout.start().await?;
    // The expand phase done everywhere: the gate says what it waits for.
    let at_gate = wait_until(Duration::from_secs(120), || async {
        plan_of(coordinator, &rollout.plan_id)
            .await
            .is_ok_and(|plan| {
                plan.phases
                    .get(1)
                    .and_then(|phase| phase.gate.as_ref())
                    .is_some_and(|gate| !gate.waiting_for.is_empty())
            })
    })
    .await;
    let at_gate_plan = plan_of(coordinator, &rollout.plan_id).await?;
    if !at_gate {
        let states: Vec<(String, i32)> = waves::planned_tasks(&at_gate_plan)
            .map(|task| (task.shard_id.clone(), task.state))
            .collect();
        bail!(
            "the expand phase never finished (plan {:?}: {}; tasks {states:?})",
            at_gate_plan.state(),
            at_gate_plan.state_reason
        );
    }
    let start_latency = first_dispatch(&at_gate_plan, started)?;
    let opened = SystemTime::now();
    coordinator
        .client
        .clone()
        .open_gate(OpenGateRequest {
            plan_id: rollout.plan_id.clone(),
            phase: "contract".to_owned(),
            reason: "benchmark".to_owned(),
        })
        .await?;
    let ended = rollout.ended().await?;
    drop(agents);
    if ended != Some(PlanState::Succeeded) {
        bail!("the rollout ended {ended:?}; see {}", home.display());
    }
    let done = plan_of(coordinator, &rollout.plan_id).await?;
    Ok((start_latency, first_dispatch(&done, opened)?))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn measure(rounds: usize) -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let home = tempfile::tempdir()?;
    let coordinator = start_coordinator(home.path(), &etcd, AGENTS, Vec::new()).await?;
    let cluster = PostgresCluster::start()?;
    let set = fixtures::migrations(&[
        (
            "1_items.sql",
            "-- fleetshift:phase expand\nCREATE TABLE items (id bigint PRIMARY KEY, note text);",
        ),
        (
            "2_items_comment.sql",
            "-- fleetshift:phase contract\nCOMMENT ON TABLE items IS 'contracted';",
        ),
    ]);
    println!("{SHARDS} shards, {AGENTS} agents, expand then contract behind an approver's gate");
    let mut starts = Vec::with_capacity(rounds);
    let mut gates = Vec::with_capacity(rounds);
    for index in 0..rounds {
        let label = format!("g{index}");
        let mut urls = Vec::with_capacity(SHARDS);
        for shard in 0..SHARDS {
            urls.push(cluster.create_database(&format!("{label}_{shard}")).await?);
        }
        let (start, gate) = round(&coordinator, home.path(), &label, &urls, set.path()).await?;
        println!(
            "round {index}: first phase dispatched {:.0} ms after the start call, next phase {:.0} ms after the gate opened",
            start.as_secs_f64() * 1e3,
            gate.as_secs_f64() * 1e3
        );
        starts.push(start);
        gates.push(gate);
    }
    let start = median(&mut starts);
    let gate = median(&mut gates);
    println!(
        "median: start {:.0} ms, gate {:.0} ms; gate / start = {:.2}; gate latency {} (target < 1000 ms)",
        start.as_secs_f64() * 1e3,
        gate.as_secs_f64() * 1e3,
        gate.as_secs_f64() / start.as_secs_f64(),
        if gate < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
