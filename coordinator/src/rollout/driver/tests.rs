//! The leader's driver against the in-memory store on paused time: the test plays the relay
//! and the agents (it reads the assignments the driver writes and writes their results).

use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::{
    AssignmentResult, Dispatch, ErrorDetail, ErrorKind, Hello, PhaseGate, Plan, PlanPhase,
    PlanState, ShardFacts, ShardState, ShardTask, Wave, WavePolicy,
};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lead;
use crate::metrics::rollouts::RolloutGauges;
use crate::rollout::{phases, records};
use crate::store::{Epoch, LeaseId, MemoryStore, Store, Write, keys};

const LONG: Duration = Duration::from_secs(3600);

/// Who leads, under which lease.
async fn elect(store: &MemoryStore, candidate: &str) -> (Epoch, LeaseId) {
    let lease = store.grant_lease(LONG).await.expect("lease");
    let leadership = store
        .campaign(candidate, lease)
        .await
        .expect("campaign")
        .expect("nobody else leads");
    (leadership.epoch, lease)
}

/// Agent `agent` announces `shards`.
async fn announce(store: &MemoryStore, agent: &str, shards: &[&str]) {
    let lease = store.grant_lease(LONG).await.expect("lease");
    let hello = Hello {
        agent_id: agent.to_owned(),
        shards: shards
            .iter()
            .map(|shard| ShardFacts {
                shard_id: (*shard).to_owned(),
                reachable: true,
                ..ShardFacts::default()
            })
            .collect(),
        ..Hello::default()
    };
    store
        .announce_agent(agent, &hello.encode_to_vec(), lease)
        .await
        .expect("announce");
}

/// A running plan: `waves` of (shard, host).
fn plan(id: &str, waves: &[&[(&str, &str)]], policy: WavePolicy) -> Plan {
    Plan {
        plan_id: id.to_owned(),
        state: PlanState::Running.into(),
        target_version: "2".to_owned(),
        waves: waves
            .iter()
            .enumerate()
            .map(|(index, shards)| {
                let index = u32::try_from(index).expect("few waves");
                Wave {
                    index,
                    shards: shards
                        .iter()
                        .map(|(shard, host)| ShardTask {
                            shard_id: (*shard).to_owned(),
                            host: (*host).to_owned(),
                            wave: index,
                            state: ShardState::Pending.into(),
                            ..ShardTask::default()
                        })
                        .collect(),
                }
            })
            .collect(),
        policy: Some(policy),
        ..Plan::default()
    }
}

fn policy(per_wave: u32, per_host: u32, threshold: u32) -> WavePolicy {
    WavePolicy {
        max_concurrency_per_wave: per_wave,
        max_concurrency_per_host: per_host,
        failure_threshold: threshold,
        ..WavePolicy::default()
    }
}

/// The driver of `epoch`, on its own task until `stop`.
fn drive(store: &Arc<MemoryStore>, epoch: Epoch) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let store = Arc::clone(store);
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let gauges = RolloutGauges::default();
        lead(store, epoch, token, &gauges).await;
    });
    (stop, task)
}

/// Outstanding assignments: (shard, assignment id, fence token), by shard.
async fn assignments(store: &MemoryStore) -> Vec<(String, String, i64)> {
    let listing = store.list(&keys::assignments_prefix()).await.expect("list");
    let mut found: Vec<(String, String, i64)> = listing
        .entries
        .iter()
        .map(|entry| {
            let dispatch = Dispatch::decode(entry.value.as_slice()).expect("dispatch");
            let assignment = dispatch.assignment.expect("assignment");
            (
                assignment.shard_id,
                assignment.assignment_id,
                assignment.fence_token,
            )
        })
        .collect();
    found.sort();
    found
}

async fn shards_assigned(store: &MemoryStore) -> Vec<String> {
    assignments(store)
        .await
        .into_iter()
        .map(|(shard, _, _)| shard)
        .collect()
}

async fn task(store: &MemoryStore, plan: &str, shard: &str) -> ShardTask {
    records::load_tasks(store, plan)
        .await
        .expect("tasks")
        .remove(shard)
        .expect("task")
}

async fn plan_state(store: &MemoryStore, plan: &str) -> (PlanState, String) {
    let stored = records::load_plan(store, plan).await.expect("plan").plan;
    (stored.state(), stored.state_reason)
}

/// The agent's result for `shard`'s outstanding assignment: success, or an error of `kind`.
async fn report(store: &MemoryStore, shard: &str, failed: Option<ErrorKind>) {
    let (_, assignment, token) = assignments(store)
        .await
        .into_iter()
        .find(|(assigned, _, _)| assigned == shard)
        .expect("an outstanding assignment for the shard");
    let result = AssignmentResult {
        assignment_id: assignment.clone(),
        shard_id: shard.to_owned(),
        fence_token: token,
        succeeded: failed.is_none(),
        current_version: if failed.is_none() { "2" } else { "1" }.to_owned(),
        error: failed.map(|kind| ErrorDetail {
            kind: kind.into(),
            message: format!("{shard}: {}", kind.as_str_name()),
        }),
        ..AssignmentResult::default()
    };
    store
        .commit(
            None,
            &[],
            &[Write::put(
                keys::result(&assignment),
                result.encode_to_vec(),
            )],
        )
        .await
        .expect("result written");
}

/// Waits (in paused time) until `check` holds; fails after a minute of it.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never: {what}");
}

/// Lets the driver take several rounds (ticks and changes) in paused time.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_wave_starts_within_its_caps_and_the_next_waits_for_it() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2", "s3", "s4"]).await;
    let planned = plan(
        "p1",
        &[&[("s1", "h1"), ("s2", "h1"), ("s3", "h2")], &[("s4", "h2")]],
        policy(2, 1, 1),
    );
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("two shards of wave 0 start", || async {
        shards_assigned(&store).await.len() == 2
    })
    .await;
    settle().await;
    assert_eq!(
        shards_assigned(&store).await,
        ["s1", "s3"],
        "one per host; s2 waits for h1, s4 for its wave"
    );
    report(&store, "s1", None).await;
    eventually("s2 starts once h1 is free", || async {
        shards_assigned(&store).await == ["s2", "s3"]
    })
    .await;
    report(&store, "s2", None).await;
    settle().await;
    assert_eq!(shards_assigned(&store).await, ["s3"], "wave 1 waits for s3");
    report(&store, "s3", None).await;
    eventually("wave 1 starts", || async {
        shards_assigned(&store).await == ["s4"]
    })
    .await;
    report(&store, "s4", None).await;
    eventually("the plan succeeds", || async {
        plan_state(&store, "p1").await.0 == PlanState::Succeeded
    })
    .await;
    assert!(shards_assigned(&store).await.is_empty());
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_the_threshold_halts_the_plan_and_nothing_new_starts() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2"]).await;
    let planned = plan("p1", &[&[("s1", "h1"), ("s2", "h2")]], policy(1, 1, 1));
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("s1 starts", || async {
        shards_assigned(&store).await == ["s1"]
    })
    .await;
    report(&store, "s1", Some(ErrorKind::Failed)).await;
    eventually("the plan halts", || async {
        plan_state(&store, "p1").await.0 == PlanState::Halted
    })
    .await;
    let (_, reason) = plan_state(&store, "p1").await;
    assert!(
        reason.contains("1 shard(s) failed, threshold 1: s1"),
        "{reason}"
    );
    settle().await;
    assert!(shards_assigned(&store).await.is_empty());
    assert_eq!(task(&store, "p1", "s2").await.state(), ShardState::Pending);
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_withdraws_running_work_and_cancels_what_waits() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2"]).await;
    let planned = plan("p1", &[&[("s1", "h1"), ("s2", "h2")]], policy(1, 1, 1));
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("s1 starts", || async {
        shards_assigned(&store).await == ["s1"]
    })
    .await;
    let (_, running, _) = assignments(&store).await.remove(0);
    records::update_plan(&*store, "p1", None, |plan| {
        plan.state = PlanState::Cancelled.into();
        Ok(())
    })
    .await
    .expect("cancelled by an operator");
    eventually("the waiting shard is cancelled", || async {
        task(&store, "p1", "s2").await.state() == ShardState::Cancelled
    })
    .await;
    eventually("the running assignment is withdrawn", || async {
        assignments(&store).await.is_empty()
    })
    .await;
    // The agent's run, stopped by the withdrawal, reports; the task ends cancelled.
    let stopped = AssignmentResult {
        assignment_id: running.clone(),
        shard_id: "s1".to_owned(),
        fence_token: task(&store, "p1", "s1").await.fence_token,
        error: Some(ErrorDetail {
            kind: ErrorKind::Stopped.into(),
            message: "stopped".to_owned(),
        }),
        ..AssignmentResult::default()
    };
    store
        .commit(
            None,
            &[],
            &[Write::put(keys::result(&running), stopped.encode_to_vec())],
        )
        .await
        .expect("result");
    eventually("s1 ends cancelled", || async {
        task(&store, "p1", "s1").await.state() == ShardState::Cancelled
    })
    .await;
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_run_starts_again_under_a_newer_token() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1"]).await;
    let planned = plan("p1", &[&[("s1", "h1")]], policy(1, 1, 1));
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("s1 starts", || async {
        shards_assigned(&store).await == ["s1"]
    })
    .await;
    let (_, first, first_token) = assignments(&store).await.remove(0);
    report(&store, "s1", Some(ErrorKind::Interrupted)).await;
    eventually("s1 starts again", || async {
        assignments(&store)
            .await
            .first()
            .is_some_and(|(_, id, _)| *id != first)
    })
    .await;
    let (_, _, second_token) = assignments(&store).await.remove(0);
    assert!(second_token > first_token, "a newer claim");
    let retried = task(&store, "p1", "s1").await;
    assert_eq!(retried.interruptions, 1);
    assert_ne!(plan_state(&store, "p1").await.0, PlanState::Halted);
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_resumes_the_wave_without_dispatching_again() {
    let store = Arc::new(MemoryStore::new());
    let (first_epoch, first_lease) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2"]).await;
    let planned = plan("p1", &[&[("s1", "h1"), ("s2", "h1")]], policy(2, 1, 1));
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, first_epoch);
    eventually("s1 starts", || async {
        shards_assigned(&store).await == ["s1"]
    })
    .await;
    let before = assignments(&store).await;
    // The leader goes; another replica leads under a newer epoch.
    stop.cancel();
    driver.await.expect("first driver");
    store.revoke(first_lease).await.expect("revoke");
    let (second_epoch, _) = elect(&store, "c2").await;
    assert!(second_epoch > first_epoch);
    let (stop, driver) = drive(&store, second_epoch);
    settle().await;
    assert_eq!(
        assignments(&store).await,
        before,
        "the running task keeps its claim and assignment"
    );
    report(&store, "s1", None).await;
    eventually("s2 starts under the new leader", || async {
        shards_assigned(&store).await == ["s2"]
    })
    .await;
    report(&store, "s2", None).await;
    eventually("the plan succeeds", || async {
        plan_state(&store, "p1").await.0 == PlanState::Succeeded
    })
    .await;
    stop.cancel();
    driver.await.expect("second driver");
}

/// The revision each of `shards`' task records was last written at.
async fn written_at(store: &MemoryStore, plan: &str, shards: &[&str]) -> Vec<i64> {
    let mut revisions = Vec::new();
    for shard in shards {
        let entry = store.read(&keys::task(plan, shard)).await.expect("read");
        revisions.push(entry.expect("a task").mod_revision);
    }
    revisions
}

#[tokio::test(start_paused = true)]
async fn a_steps_hand_overs_and_a_rounds_endings_each_go_in_one_commit() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    let shards = ["s1", "s2", "s3", "s4"];
    announce(&store, "a1", &shards).await;
    let wave = [("s1", "h1"), ("s2", "h2"), ("s3", "h3"), ("s4", "h4")];
    records::create_plan(&*store, &plan("p1", &[&wave], policy(4, 1, 1)))
        .await
        .expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("the wave starts", || async {
        shards_assigned(&store).await.len() == shards.len()
    })
    .await;
    stop.cancel();
    driver.await.expect("driver");
    let handed = written_at(&store, "p1", &shards).await;
    assert!(
        handed.iter().all(|at| *at == handed[0]),
        "one commit hands the step's tasks over: {handed:?}"
    );
    // Bound to the agent's session lease, like the claims: an assignment goes with its claim
    // when the session's lease lapses, which is all the relay relies on.
    let session = store
        .agent_lease("a1")
        .await
        .expect("read")
        .expect("a session");
    let listed = store.list(&keys::assignments_prefix()).await.expect("list");
    assert_eq!(listed.entries.len(), shards.len());
    assert!(listed.entries.iter().all(|entry| entry.lease == session));
    for shard in shards {
        assert_eq!(task(&store, "p1", shard).await.state(), ShardState::Running);
        report(&store, shard, None).await;
    }
    let (stop, driver) = drive(&store, epoch);
    eventually("the plan succeeds", || async {
        plan_state(&store, "p1").await.0 == PlanState::Succeeded
    })
    .await;
    let ended = written_at(&store, "p1", &shards).await;
    assert!(
        ended.iter().all(|at| *at == ended[0] && *at > handed[0]),
        "one commit ends the round's tasks: {ended:?}"
    );
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn a_result_whose_claim_lapsed_before_the_leader_read_it_still_ends_its_task() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1"]).await;
    records::create_plan(&*store, &plan("p1", &[&[("s1", "h1")]], policy(1, 1, 1)))
        .await
        .expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("s1 starts", || async {
        shards_assigned(&store).await == ["s1"]
    })
    .await;
    stop.cancel();
    driver.await.expect("driver");
    report(&store, "s1", None).await;
    store
        .commit(None, &[], &[crate::claims::release("s1")])
        .await
        .expect("the claim lapses");
    let (stop, driver) = drive(&store, epoch);
    eventually("the plan succeeds", || async {
        plan_state(&store, "p1").await.0 == PlanState::Succeeded
    })
    .await;
    let ended = task(&store, "p1", "s1").await;
    assert_eq!(ended.state(), ShardState::Succeeded);
    assert_eq!(ended.interruptions, 0, "the run's result stands");
    assert!(assignments(&store).await.is_empty());
    let results = store.list(&keys::results_prefix()).await.expect("list");
    assert!(results.entries.is_empty(), "the result was taken");
    stop.cancel();
    driver.await.expect("driver");
}

/// The target version of `shard`'s outstanding assignment.
async fn assigned_target(store: &MemoryStore, shard: &str) -> Option<String> {
    let listing = store.list(&keys::assignments_prefix()).await.expect("list");
    listing.entries.iter().find_map(|entry| {
        let assignment = Dispatch::decode(entry.value.as_slice())
            .expect("dispatch")
            .assignment?;
        (assignment.shard_id == shard).then_some(assignment.target_version)
    })
}

/// A running plan of two phases (expand to 1, contract to 2), its contract gate `gate`.
fn phased(id: &str, gate: PhaseGate) -> Plan {
    Plan {
        phases: vec![
            PlanPhase {
                name: "expand".to_owned(),
                last_version: "1".to_owned(),
                gate: None,
                started_at: None,
            },
            PlanPhase {
                name: "contract".to_owned(),
                last_version: "2".to_owned(),
                gate: Some(gate),
                started_at: None,
            },
        ],
        ..plan(id, &[&[("s1", "h1"), ("s2", "h2")]], policy(2, 1, 1))
    }
}

#[tokio::test(start_paused = true)]
async fn a_phased_plan_takes_every_shard_through_one_phase_before_the_next() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2"]).await;
    records::create_plan(&*store, &phased("p1", PhaseGate::default()))
        .await
        .expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("both shards expand", || async {
        shards_assigned(&store).await.len() == 2
    })
    .await;
    assert_eq!(assigned_target(&store, "s1").await.as_deref(), Some("1"));
    report(&store, "s1", None).await;
    report(&store, "s2", None).await;
    eventually("the contract gate says what it waits for", || async {
        let stored = records::load_plan(&*store, "p1").await.expect("plan").plan;
        stored.phases[1]
            .gate
            .as_ref()
            .is_some_and(|gate| gate.waiting_for.contains("an approver"))
    })
    .await;
    settle().await;
    assert!(shards_assigned(&store).await.is_empty(), "held at the gate");
    assert_eq!(plan_state(&store, "p1").await.0, PlanState::Running);
    records::update_plan(&*store, "p1", None, |stored| {
        phases::open(
            stored,
            "contract",
            "bob",
            "v2 deployed",
            std::time::SystemTime::now(),
        )
    })
    .await
    .expect("gate opened");
    eventually("both shards contract", || async {
        shards_assigned(&store).await.len() == 2
    })
    .await;
    for shard in ["s1", "s2"] {
        assert_eq!(assigned_target(&store, shard).await.as_deref(), Some("2"));
    }
    let stored = records::load_plan(&*store, "p1").await.expect("plan").plan;
    assert_eq!(stored.current_phase, 1);
    assert!(stored.phases[1].started_at.is_some());
    report(&store, "s1", None).await;
    report(&store, "s2", None).await;
    eventually("the plan succeeds", || async {
        plan_state(&store, "p1").await.0 == PlanState::Succeeded
    })
    .await;
    stop.cancel();
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_a_phase_ends_the_plan_before_the_next() {
    let store = Arc::new(MemoryStore::new());
    let (epoch, _) = elect(&store, "c1").await;
    announce(&store, "a1", &["s1", "s2"]).await;
    let mut planned = phased(
        "p2",
        PhaseGate {
            none: true,
            ..PhaseGate::default()
        },
    );
    planned.policy = Some(policy(2, 1, 2));
    records::create_plan(&*store, &planned).await.expect("plan");
    let (stop, driver) = drive(&store, epoch);
    eventually("both shards expand", || async {
        shards_assigned(&store).await.len() == 2
    })
    .await;
    report(&store, "s1", None).await;
    report(&store, "s2", Some(ErrorKind::Failed)).await;
    eventually("the plan ends", || async {
        plan_state(&store, "p2").await.0 == PlanState::FinishedWithFailures
    })
    .await;
    let (_, reason) = plan_state(&store, "p2").await;
    assert!(
        reason.contains(
            "phase expand did not finish on every shard, so phase contract never started"
        ),
        "{reason}"
    );
    assert!(shards_assigned(&store).await.is_empty());
    stop.cancel();
    driver.await.expect("driver");
}
