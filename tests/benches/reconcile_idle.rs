//! What keeping a fleet at its target costs the leader while nothing is behind:
//! `rollout::driver::lead` (which runs the reconciliation) on the in-memory store, N shards on
//! N / 10 agents, every one at the target's version, and a finished plan of the target that
//! took them all there (its tasks are what the reconciliation reads to judge each shard). Each
//! agent announces fresh facts once a minute, spread over the minute, as agents do by default:
//! every announcement is a change the leader follows and a reason to judge the fleet again.
//!
//! Two windows of the same length in the same run: without a target (the leader following the
//! same announcements), then with one. The difference is the reconciliation's cost; the store's
//! revisions beyond the announcements are the leader's writes, which must be none.
//!
//! `cargo bench -p fleetshift-tests --bench reconcile_idle [-- SHARDS SECONDS]` (default
//! 10,000 shards, 60 s per window).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetshift_common::proto::v1::{
    CreatePlanRequest, Hello, Plan, PlanState, SetTargetRequest, ShardFacts, ShardState, ShardTask,
    Wave,
};
use fleetshift_common::shipped;
use fleetshift_coordinator::metrics::rollouts::RolloutGauges;
use fleetshift_coordinator::rollout::{driver, records};
use fleetshift_coordinator::store::{Epoch, LeaseId, MemoryStore, Store};
use fleetshift_coordinator::targets;
use fleetshift_tests::bench::{clock_ticks, numbers, thread_cpu_time, thread_id};
use prost::Message;
use tokio_util::sync::CancellationToken;

const SHARDS_PER_AGENT: usize = 10;
const LONG: Duration = Duration::from_secs(24 * 3600);
/// The target's version: the set's third and last revision.
const VERSION: &str = "3";

/// One window: the leader's CPU and the store's revisions it was not given.
struct Window {
    cpu: Duration,
    announcements: i64,
    leader_writes: i64,
}

fn main() -> anyhow::Result<()> {
    let [shards, seconds] = numbers(["SHARDS", "SECONDS"], [10_000, 60])?;
    let ticks = clock_ticks()?;
    let window = Duration::from_secs(u64::try_from(seconds)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = Arc::new(MemoryStore::new());
    let (epoch, agents) = runtime.block_on(prepare(&store, shards))?;
    let stop = CancellationToken::new();
    let (leader_tid, leader) = {
        let store = Arc::clone(&store);
        let stop = stop.clone();
        let (tid_sender, tid) = std::sync::mpsc::channel();
        let leader = std::thread::spawn(move || -> anyhow::Result<()> {
            tid_sender.send(thread_id()?)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let gauges = RolloutGauges::default();
            runtime.block_on(driver::lead(store, epoch, stop, &gauges));
            Ok(())
        });
        (tid.recv()?, leader)
    };
    // The leader loads its model and settles before anything is measured.
    runtime.block_on(announce_for(&store, &agents, Duration::from_secs(3)))?;
    let measure = |label: &str| -> anyhow::Result<Window> {
        let before_cpu = thread_cpu_time(leader_tid, ticks)?;
        let before = runtime.block_on(revision(&store))?;
        let announcements = runtime.block_on(announce_for(&store, &agents, window))?;
        let after = runtime.block_on(revision(&store))?;
        let cpu = thread_cpu_time(leader_tid, ticks)? - before_cpu;
        let measured = Window {
            cpu,
            announcements,
            leader_writes: after - before - announcements,
        };
        println!(
            "{label}: the leader's thread {:.3} CPU-s in {seconds} s ({:.3} CPU-s per minute), {} announcements, {} store writes by the leader",
            cpu.as_secs_f64(),
            per_minute(cpu, window),
            measured.announcements,
            measured.leader_writes
        );
        Ok(measured)
    };
    let without = measure("without a target")?;
    runtime.block_on(set_target(&store))?;
    // The first pass after the target appears judges it; then the fleet is idle again.
    runtime.block_on(announce_for(&store, &agents, Duration::from_secs(3)))?;
    let plans_before = runtime.block_on(records::load_plans(&*store))?.len();
    let with = measure("with a target, nothing behind")?;
    let plans_after = runtime.block_on(records::load_plans(&*store))?.len();
    stop.cancel();
    leader
        .join()
        .map_err(|_| anyhow::anyhow!("the leader's thread panicked"))??;
    let reconciling = with.cpu.saturating_sub(without.cpu);
    println!(
        "{shards} shards idle: reconciliation {:.3} CPU-s per minute (target: under 1), {} leader writes (target: 0), {} plans created; leader CPU with/without a target {:.2}x",
        per_minute(reconciling, window),
        with.leader_writes,
        plans_after - plans_before,
        with.cpu.as_secs_f64() / without.cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "reconcile_idle",
            "shards": shards,
            "window_seconds": seconds,
            "leader_cpu_per_minute_without_target": per_minute(without.cpu, window),
            "leader_cpu_per_minute_with_target": per_minute(with.cpu, window),
            "reconciliation_cpu_per_minute": per_minute(reconciling, window),
            "leader_writes_without_target": without.leader_writes,
            "leader_writes_with_target": with.leader_writes,
            "plans_created": plans_after - plans_before,
        })
    );
    Ok(())
}

fn per_minute(cpu: Duration, window: Duration) -> f64 {
    cpu.as_secs_f64() * 60.0 / window.as_secs_f64()
}

async fn revision(store: &MemoryStore) -> anyhow::Result<i64> {
    Ok(store.list("/nothing/").await?.revision)
}

/// An agent: its id, its lease and its shards.
struct Agent {
    id: String,
    lease: LeaseId,
    shards: Vec<String>,
}

/// The leadership, every agent's first announcement, and the finished plan that took every
/// shard to the target.
async fn prepare(store: &MemoryStore, shards: usize) -> anyhow::Result<(Epoch, Vec<Agent>)> {
    let lease = store.grant_lease(LONG).await?;
    let leadership = store
        .campaign("c1", lease)
        .await?
        .context("nobody else leads")?;
    let mut agents = Vec::new();
    for first in (0..shards).step_by(SHARDS_PER_AGENT) {
        let agent = Agent {
            id: format!("agent-{:05}", first / SHARDS_PER_AGENT),
            lease: store.grant_lease(LONG).await?,
            shards: (first..shards.min(first + SHARDS_PER_AGENT))
                .map(|index| format!("shard-{index:06}"))
                .collect(),
        };
        announce(store, &agent).await?;
        agents.push(agent);
    }
    let set = packed()?;
    let tasks: Vec<ShardTask> = agents
        .iter()
        .flat_map(|agent| {
            agent.shards.iter().map(|shard| ShardTask {
                shard_id: shard.clone(),
                agent_id: agent.id.clone(),
                host: agent.id.clone(),
                state: ShardState::Succeeded.into(),
                current_version: VERSION.to_owned(),
                ..ShardTask::default()
            })
        })
        .collect();
    let plan = Plan {
        plan_id: "p0-target".to_owned(),
        state: PlanState::Succeeded.into(),
        set_digest: set.digest.clone(),
        target_version: VERSION.to_owned(),
        fleet_target: "main".to_owned(),
        waves: vec![Wave {
            index: 0,
            shards: tasks,
        }],
        ..Plan::default()
    };
    records::create_plan(store, &plan).await?;
    Ok((leadership.epoch, agents))
}

/// The target over every shard, at the version they are at.
async fn set_target(store: &MemoryStore) -> anyhow::Result<()> {
    let request = SetTargetRequest {
        name: "main".to_owned(),
        terms: Some(CreatePlanRequest {
            migration_set: Some(packed()?),
            target_version: VERSION.to_owned(),
            selector: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
            ..CreatePlanRequest::default()
        }),
    };
    targets::set(store, request, "bench").await?;
    Ok(())
}

/// A three-revision set, packed.
fn packed() -> anyhow::Result<fleetshift_common::proto::v1::MigrationSet> {
    let directory = tempfile::tempdir()?;
    for index in 1..=3 {
        std::fs::write(
            directory.path().join(format!("{index}_t{index}.sql")),
            format!("CREATE TABLE t{index} (id bigint PRIMARY KEY);\n"),
        )?;
    }
    let set = fleetshift_common::source::MigrationSet::load(directory.path(), None)?;
    Ok(shipped::pack(&set)?)
}

/// `agent` announces its shards, at the target's version, observed now.
async fn announce(store: &MemoryStore, agent: &Agent) -> anyhow::Result<()> {
    let observed_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
    let hello = Hello {
        agent_id: agent.id.clone(),
        shards: agent
            .shards
            .iter()
            .map(|shard| ShardFacts {
                shard_id: shard.clone(),
                labels: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
                current_version: VERSION.to_owned(),
                reachable: true,
                observed_at,
                ..ShardFacts::default()
            })
            .collect(),
        ..Hello::default()
    };
    store
        .announce_agent(&agent.id, &hello.encode_to_vec(), agent.lease)
        .await?;
    Ok(())
}

/// Every agent announces once over `window`, evenly spread; how many announcements were made.
async fn announce_for(
    store: &MemoryStore,
    agents: &[Agent],
    window: Duration,
) -> anyhow::Result<i64> {
    let started = Instant::now();
    let step = window / u32::try_from(agents.len().max(1))?;
    let mut count = 0;
    for (index, agent) in agents.iter().enumerate() {
        let due = started + step * u32::try_from(index)?;
        tokio::time::sleep_until(due.into()).await;
        announce(store, agent).await?;
        count += 1;
    }
    tokio::time::sleep_until((started + window).into()).await;
    Ok(count)
}
