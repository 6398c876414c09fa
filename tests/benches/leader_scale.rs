//! The leader alone, at fleet sizes this machine cannot connect: `rollout::driver::lead` on
//! the in-memory store, one plan of N shards on N / 10 agents at concurrency 256 (one wave,
//! at most 10 shards at once per agent's host), and in-process agents that answer every
//! assignment at once (one watch on the assignments, results stored in batches as the event
//! journal stores them). No sessions, no TLS, no etcd: what is measured is the leader's own
//! work per shard as the plan grows (its model, its walk of the plan at every step, its
//! commits into the store), the part of the control plane that decides whether one leader
//! carries 100,000 shards. The leader runs on a thread of its own, whose CPU time is read
//! from `/proc/self/task/<tid>/stat`.
//!
//! `cargo bench -p fleetshift-tests --bench leader_scale [-- SMALL LARGE]` (default 10,000
//! and 100,000 shards, both in the same run; the large plan's cost per shard is set against
//! the small one's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::{
    AssignmentResult, Dispatch, Hello, Plan, PlanState, ShardFacts, ShardState, ShardTask, Wave,
    WavePolicy,
};
use fleetshift_coordinator::metrics::rollouts::RolloutGauges;
use fleetshift_coordinator::rollout::{driver, records};
use fleetshift_coordinator::store::{Epoch, MemoryStore, Store, Write, keys};
use fleetshift_tests::bench::{clock_ticks, numbers, thread_cpu_time, thread_id};
use prost::Message;
use tokio_util::sync::CancellationToken;

const SHARDS_PER_AGENT: usize = 10;
const CONCURRENCY: u32 = 256;
/// Results stored per commit, at most (as the event journal batches them).
const RESULTS_PER_COMMIT: usize = 120;
const LONG: Duration = Duration::from_secs(24 * 3600);

/// What one rollout of the leader cost.
struct Cost {
    shards: usize,
    wall: Duration,
    leader_cpu: Duration,
}

impl Cost {
    fn shards_per_second(&self) -> f64 {
        self.shards as f64 / self.wall.as_secs_f64()
    }

    fn cpu_per_thousand(&self) -> f64 {
        self.leader_cpu.as_secs_f64() * 1000.0 / self.shards as f64
    }
}

fn main() -> anyhow::Result<()> {
    let [small, large] = numbers(["SMALL", "LARGE"], [10_000, 100_000])?;
    let ticks = clock_ticks()?;
    let mut costs = Vec::new();
    for shards in [small, large] {
        let cost = roll_out(shards, ticks)?;
        println!(
            "{shards} shards: {:.1} s wall, {:.0} shards/s, the leader's thread {:.2} CPU-s ({:.3} CPU-s per 1,000 shards)",
            cost.wall.as_secs_f64(),
            cost.shards_per_second(),
            cost.leader_cpu.as_secs_f64(),
            cost.cpu_per_thousand()
        );
        costs.push(cost);
    }
    let (first, last) = (&costs[0], &costs[costs.len() - 1]);
    let growth = last.cpu_per_thousand() / first.cpu_per_thousand();
    println!(
        "{} shards against {}: the leader's CPU per shard {growth:.2}x, its rate {:.2}x",
        last.shards,
        first.shards,
        last.shards_per_second() / first.shards_per_second()
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "leader_scale",
            "small_shards": first.shards,
            "large_shards": last.shards,
            "small_shards_per_second": first.shards_per_second(),
            "large_shards_per_second": last.shards_per_second(),
            "small_cpu_per_1000_shards": first.cpu_per_thousand(),
            "large_cpu_per_1000_shards": last.cpu_per_thousand(),
            "cpu_per_shard_growth": growth,
        })
    );
    Ok(())
}

/// One plan of `shards` shards from start to success.
fn roll_out(shards: usize, ticks: f64) -> anyhow::Result<Cost> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = Arc::new(MemoryStore::new());
    let plan_id = format!("scale-{shards}");
    let epoch = runtime.block_on(prepare(&store, &plan_id, shards))?;
    let stop = CancellationToken::new();
    let (leader_tid, leader) = {
        let store = Arc::clone(&store);
        let stop = stop.clone();
        let (tid_sender, tid) = std::sync::mpsc::channel();
        let leader = std::thread::spawn(move || -> anyhow::Result<Duration> {
            let tid = thread_id()?;
            tid_sender.send(tid)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let gauges = RolloutGauges::default();
            runtime.block_on(driver::lead(store, epoch, stop, &gauges));
            thread_cpu_time(tid, ticks)
        });
        (tid.recv()?, leader)
    };
    let before = thread_cpu_time(leader_tid, ticks)?;
    let started = Instant::now();
    let answered = runtime.block_on(answer_until_done(&store, &plan_id));
    let wall = started.elapsed();
    stop.cancel();
    let after = leader
        .join()
        .map_err(|_| anyhow::anyhow!("the leader's thread panicked"))??;
    answered?;
    Ok(Cost {
        shards,
        wall,
        leader_cpu: after - before,
    })
}

/// The leadership, the agents' announcements and the running plan.
async fn prepare(store: &MemoryStore, plan_id: &str, shards: usize) -> anyhow::Result<Epoch> {
    let lease = store.grant_lease(LONG).await?;
    let leadership = store
        .campaign("c1", lease)
        .await?
        .context("nobody else leads")?;
    let names: Vec<(String, String)> = (0..shards)
        .map(|index| {
            let agent = format!("agent-{:05}", index / SHARDS_PER_AGENT);
            (format!("shard-{index:06}"), agent)
        })
        .collect();
    for agent_shards in names.chunks(SHARDS_PER_AGENT) {
        let agent = &agent_shards[0].1;
        let hello = Hello {
            agent_id: agent.clone(),
            shards: agent_shards
                .iter()
                .map(|(shard, _)| ShardFacts {
                    shard_id: shard.clone(),
                    reachable: true,
                    ..ShardFacts::default()
                })
                .collect(),
            ..Hello::default()
        };
        let lease = store.grant_lease(LONG).await?;
        store
            .announce_agent(agent, &hello.encode_to_vec(), lease)
            .await?;
    }
    let plan = Plan {
        plan_id: plan_id.to_owned(),
        state: PlanState::Running.into(),
        target_version: "2".to_owned(),
        waves: vec![Wave {
            index: 0,
            shards: names
                .iter()
                .map(|(shard, agent)| ShardTask {
                    shard_id: shard.clone(),
                    host: agent.clone(),
                    agent_id: agent.clone(),
                    state: ShardState::Pending.into(),
                    ..ShardTask::default()
                })
                .collect(),
        }],
        policy: Some(WavePolicy {
            max_concurrency_per_wave: CONCURRENCY,
            max_concurrency_per_host: u32::try_from(SHARDS_PER_AGENT)?,
            failure_threshold: 1,
            ..WavePolicy::default()
        }),
        ..Plan::default()
    };
    records::create_plan(store, &plan).await?;
    Ok(leadership.epoch)
}

/// Plays every agent: each assignment the leader writes gets a success at once, stored with
/// the others that arrived together; returns when the plan has ended.
async fn answer_until_done(store: &MemoryStore, plan_id: &str) -> anyhow::Result<()> {
    let plan_key = keys::plan(plan_id);
    // From the plan's creation on (the store keeps a bounded history).
    let created = store.list(&plan_key).await?.revision;
    let mut changes = store.watch(&keys::all(), created).await?;
    loop {
        let first = changes.next().await.context("the store's watch ended")??;
        let mut results = Vec::new();
        let mut next = Some(first);
        while let Some(change) = next {
            if change.key == plan_key
                && let Some(value) = &change.value
            {
                let plan = Plan::decode(value.as_slice())?;
                match plan.state() {
                    PlanState::Running => {}
                    PlanState::Succeeded => return Ok(()),
                    other => bail!("the plan ended {other:?}: {}", plan.state_reason),
                }
            }
            if change.key.starts_with(&keys::assignments_prefix())
                && let Some(value) = &change.value
            {
                results.push(result_of(&Dispatch::decode(value.as_slice())?)?);
            }
            next = changes.ready().transpose()?;
        }
        for batch in results.chunks(RESULTS_PER_COMMIT) {
            store.commit(None, &[], batch).await?;
        }
    }
}

/// The write of a success for `dispatch`'s assignment.
fn result_of(dispatch: &Dispatch) -> anyhow::Result<Write> {
    let assignment = dispatch.assignment.as_ref().context("an assignment")?;
    let result = AssignmentResult {
        assignment_id: assignment.assignment_id.clone(),
        shard_id: assignment.shard_id.clone(),
        fence_token: assignment.fence_token,
        succeeded: true,
        current_version: assignment.target_version.clone(),
        ..AssignmentResult::default()
    };
    Ok(Write::put(
        keys::result(&assignment.assignment_id),
        result.encode_to_vec(),
    ))
}
