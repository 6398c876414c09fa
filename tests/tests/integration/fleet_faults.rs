//! Faults of the processes in a rollout, one plan each, on one fleet: etcd, two coordinator
//! replicas, and one agent process serving two PostgreSQL databases, configured with both
//! replicas. Every transactional revision appends one row to `work_log`, so a revision that
//! ran twice would leave two rows; revision 5 runs outside a transaction (a slow, repeatable
//! `CREATE TABLE IF NOT EXISTS … AS`).
//!
//! 1. The agent is SIGKILLed mid-revision and restarted: its new session releases the old
//!    claims, the shard is claimed again under a newer token, and every revision runs once.
//! 2. The agent is SIGSTOPped inside revision 5's statement and a replacement process takes
//!    its shards under newer claims and finishes them. The stale process is then continued:
//!    its statement returns and it tries to record revision 5 as applied under its old token.
//!    That write is refused by the shard's fence (its log names both tokens), and the ledger
//!    and the work log are exactly as if it had never woken.
//! 3. The replica holding the agent's session is SIGKILLed: the agent moves to the other
//!    replica and resumes its lease, so its claims (and fencing tokens) survive.
//!
//! Every replica streams every event of a rollout, whichever holds the agent's session, and a
//! watcher that moves to another replica continues after the last sequence it saw.

use std::time::Duration;

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::proto::v1::progress_event::Event as ProgressKind;
use fleetshift_common::proto::v1::rollout_event::Event as RolloutEvent;
use fleetshift_common::proto::v1::{
    ErrorKind, ExecutionLimits, Plan, PlanState, ShardState, ShardTask, WatchRolloutRequest,
    WavePolicy,
};
use fleetshift_testkit::postgres::Shutdown;
use fleetshift_tests::fleet::Process;
use fleetshift_tests::rollout;
use fleetshift_tests::wait::wait_until;
use sqlx::PgPool;

use super::support;

mod fleet;

use fleet::{Fleet, INDEX_BUILDS, OUTSIDE_TRANSACTION, SHARDS, shard_id, task_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_its_agent_being_killed_frozen_and_moved_between_replicas() {
    let mut fleet = Fleet::start().await;

    // 1. SIGKILL mid-revision, then a restart (as a supervisor would).
    let first = fleet.start_rollout(3).await;
    let killed = fleet.await_mid_revision(0).await;
    let before = fleet
        .claim_token(killed)
        .await
        .expect("a claim while running");
    fleet.agent.take().expect("running").signal("KILL");
    fleet.start_agent("agent-a-restarted.log");
    let plan = fleet.await_success(&first).await;
    fleet.assert_each_revision_once(3).await;
    let after = task_token(&plan, killed);
    assert!(
        after > before,
        "claimed again under a newer token: {before} then {after}\n{}",
        fleet.logs()
    );
    let tokens = fleet.ledger_tokens(killed, &first).await;
    assert!(
        tokens.contains(&before) && tokens.last() == Some(&after),
        "revisions before the kill under the old claim, the rest under the new: {tokens:?}"
    );

    // 2. SIGSTOP inside revision 5's statement; a replacement process takes over and
    //    finishes; then the stale process is continued.
    let second = fleet.start_rollout(6).await;
    let frozen = fleet
        .await_shard(|_, running| running.contains("paused_work"))
        .await;
    let stale = fleet
        .claim_token(frozen)
        .await
        .expect("a claim while running");
    let stale_process = fleet.agent.take().expect("running");
    let stale_log = fleet.agent_log.clone();
    stale_process.signal("STOP");
    fleet.start_agent("agent-a-replacement.log");
    let plan = fleet.await_success(&second).await;
    let fresh = task_token(&plan, frozen);
    assert!(
        fresh > stale,
        "the replacement finished under a newer claim"
    );
    stale_process.signal("CONT");
    // This log already holds an earlier run's refusal (the restart above): wait for this one.
    let this_refusal = format!(
        "fenced out: this run holds fencing token {stale} but the shard has seen token {fresh}"
    );
    let refused = wait_until(Duration::from_secs(30), || async {
        fleet.log_of(&stale_log).contains(&this_refusal)
    })
    .await;
    assert!(
        refused,
        "the woken process tried its late write and the fence refused it\n{}",
        fleet.logs()
    );
    drop(stale_process);
    fleet.assert_each_revision_once(6).await;
    let engine = support::postgres(&fleet.urls[frozen]).await;
    let ledger = engine.read_ledger().await.expect("ledger");
    let outside = ledger
        .iter()
        .find(|entry| entry.version == OUTSIDE_TRANSACTION.to_string())
        .expect("revision 5 recorded");
    assert_eq!(
        outside.fence_token.get(),
        fresh,
        "revision 5 recorded by the newer claim only: {outside:?}"
    );

    // 3. The replica holding the agent's session dies: the agent moves to the other one.
    let third = fleet.start_rollout(9).await;
    let moving = fleet.await_mid_revision(5).await;
    let held = fleet
        .claim_token(moving)
        .await
        .expect("a claim while running");
    let serving = fleet.replicas.remove(fleet.agents_replica());
    serving.process.signal("KILL");
    drop(serving);
    let plan = fleet.await_success(&third).await;
    fleet.assert_each_revision_once(9).await;
    for shard in 0..SHARDS {
        let token = task_token(&plan, shard);
        let tokens = fleet.ledger_tokens(shard, &third).await;
        assert!(
            tokens.iter().all(|recorded| *recorded == token),
            "shard {shard}: the claim survived the move, one token throughout: {tokens:?}"
        );
        if shard == moving {
            assert_eq!(
                token, held,
                "the claim held before the move is the one used"
            );
        }
    }
}

fn task_of(plan: &Plan, shard: usize) -> &ShardTask {
    plan.waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .find(|task| task.shard_id == shard_id(shard))
        .expect("the shard's task")
}

/// The first line of the agent log that contains `text` appears, within `limit`.
async fn await_log(fleet: &Fleet, log: &str, text: &str) {
    let seen = wait_until(Duration::from_secs(60), || async {
        fleet.log_of(log).contains(text)
    })
    .await;
    assert!(seen, "{log} never said {text:?}\n{}", fleet.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_agent_stops_for_its_own_safety_is_interrupted_and_runs_again() {
    let mut fleet = Fleet::start().await;

    // 1. SIGTERM mid-revision (a supervisor's stop): the running statement is cancelled and
    //    the run reported interrupted, not failed; the restarted agent finishes the shard
    //    under a newer claim.
    let first = fleet.start_rollout(3).await;
    let stopped = fleet.await_mid_revision(0).await;
    let before = fleet
        .claim_token(stopped)
        .await
        .expect("a claim while running");
    fleet.stop_agent_and_restart("agent-a-after-term.log");
    let plan = fleet.await_success(&first).await;
    fleet.assert_each_revision_once(3).await;
    let task = task_of(&plan, stopped);
    assert!(
        task.fence_token > before,
        "claimed again under a newer token: {before} then {task:?}"
    );
    assert!(
        task.interruptions >= 1
            && task
                .interruption_causes
                .iter()
                .any(|cause| cause.contains("the agent is shutting down")),
        "the interruption and its cause are kept: {task:?}"
    );
    let tokens = fleet.ledger_tokens(stopped, &first).await;
    assert!(
        tokens.first() == Some(&before) && tokens.last() == Some(&task.fence_token),
        "the revision before the stop under the old claim, the rest under the new: {tokens:?}"
    );

    // 2. The agent frozen past its lease mid-revision: its claim lapses; continued, it stops
    //    what it was doing, reconnects, and the shard finishes under a newer claim.
    let second = fleet.start_rollout(6).await;
    let frozen = fleet.await_mid_revision(3).await;
    let before = fleet
        .claim_token(frozen)
        .await
        .expect("a claim while running");
    let agent = fleet.agent.as_ref().expect("running");
    agent.signal("STOP");
    let lapsed = wait_until(Duration::from_secs(30), || async {
        fleet.claim_token(frozen).await != Some(before)
    })
    .await;
    fleet.agent.as_ref().expect("running").signal("CONT");
    assert!(lapsed, "the frozen agent's claim lapsed\n{}", fleet.logs());
    let plan = fleet.await_success(&second).await;
    fleet.assert_each_revision_once(6).await;
    let after = task_of(&plan, frozen).fence_token;
    assert!(
        after > before,
        "a newer claim after the freeze: {before} then {after}"
    );
    let tokens = fleet.ledger_tokens(frozen, &second).await;
    assert!(
        tokens.contains(&before) && tokens.last() == Some(&after),
        "the revision before the freeze under the old claim, the rest under the new: {tokens:?}"
    );

    // 3. The replica holding the agent's session frozen until the agent's lease clock runs
    //    out: the agent stops its work (it may no longer hold its claims), moves to the
    //    other replica and the shard finishes; whatever the frozen replica later hands on
    //    of the stopped run is an interruption, never a failure.
    let third = fleet.start_rollout(9).await;
    let moving = fleet.await_mid_revision(6).await;
    let before = fleet
        .claim_token(moving)
        .await
        .expect("a claim while running");
    let serving = fleet.agents_replica();
    fleet.replicas[serving].process.signal("STOP");
    await_log(
        &fleet,
        &fleet.agent_log,
        "no acknowledgement within the lease",
    )
    .await;
    fleet.replicas[serving].process.signal("CONT");
    let plan = fleet.await_success(&third).await;
    fleet.assert_each_revision_once(9).await;
    // The agent may finish every revision before its lease clock runs out; the shard is
    // then claimed again and that claim finds nothing left to apply, so the final claim
    // is at least the last one the ledger names, not necessarily equal to it.
    let tokens = fleet.ledger_tokens(moving, &third).await;
    let last = task_of(&plan, moving).fence_token;
    assert!(
        tokens.first() == Some(&before)
            && tokens.windows(2).all(|pair| pair[0] <= pair[1])
            && tokens.last().is_some_and(|token| *token <= last),
        "the same claim (lease resumed) or a newer one (lapsed or interrupted), never an older: \
         {tokens:?}, claimed {before} before the freeze and {last} at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_revision_is_ridden_out() {
    let fleet = Fleet::start().await;

    // 1. A fast restart (every session ended with 57P01), then an immediate one (a crash),
    //    each inside a transactional revision: the server rolled it back; the agent waits,
    //    reconnects and runs it again.
    let first = fleet.start_rollout(3).await;
    // The replica holding the agent's session relays its progress, the outage included.
    let mut events = fleet.replicas[fleet.agents_replica()]
        .client
        .clone()
        .watch_rollout(WatchRolloutRequest {
            plan_id: first.clone(),
            include_statements: false,
            since: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    fleet.await_mid_revision(0).await;
    fleet.cluster.restart(Shutdown::Fast).expect("fast restart");
    let plan = fleet.await_success(&first).await;
    fleet.assert_each_revision_once(3).await;
    let mut outages = Vec::new();
    while let Some(event) = events.message().await.expect("the watch") {
        if let Some(RolloutEvent::Progress(progress)) = event.event
            && let Some(ProgressKind::DatabaseOutage(outage)) = progress.event
        {
            outages.push((progress.shard_id, outage));
        }
    }
    let server = format!("127.0.0.1:{}", fleet.cluster.port);
    for recovered in [false, true] {
        assert!(
            outages
                .iter()
                .any(|(_, outage)| outage.recovered == recovered && outage.server == server),
            "watchers saw the server lost and back: {outages:?}"
        );
    }
    let second = fleet.start_rollout(9).await;
    // Revision 6, after revision 4 committed and revision 5 (outside a transaction) ran.
    fleet
        .await_shard(|rows, running| rows == 4 && running.contains("pg_sleep(0.8)"))
        .await;
    fleet
        .cluster
        .restart(Shutdown::Immediate)
        .expect("immediate restart");
    let second = fleet.await_success(&second).await;
    fleet.assert_each_revision_once(9).await;
    for shard in 0..SHARDS {
        for task in [task_of(&plan, shard), task_of(&second, shard)] {
            assert_eq!(
                task.interruptions, 0,
                "the outage was ridden out within the run: {task:?}"
            );
        }
    }
    let log = fleet.log_of(&fleet.agent_log);
    assert!(
        log.contains("lost the database server; waiting for it")
            && log.contains("the database server is back"),
        "{log}"
    );

    // 2. An immediate, then a fast restart while an index is built concurrently: the build
    //    is left INVALID; the next attempt drops and rebuilds it.
    for ((version, index), how) in INDEX_BUILDS
        .into_iter()
        .zip([Shutdown::Immediate, Shutdown::Fast])
    {
        restart_during_index_build(&fleet, version, index, how).await;
    }
}

/// Rolls out to `version`, which builds `index` concurrently, and restarts the server `how`
/// while the build waits half-done (each shard keeps a snapshot open, which the build waits
/// for); every revision must run once and the index end valid, no INVALID index left.
async fn restart_during_index_build(fleet: &Fleet, version: usize, index: &str, how: Shutdown) {
    let mut holders = Vec::new();
    for admin in &fleet.admins {
        let mut holder = admin.begin().await.expect("begin");
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *holder)
            .await
            .expect("isolation");
        sqlx::query("SELECT count(*) FROM work_log")
            .execute(&mut *holder)
            .await
            .expect("snapshot");
        holders.push(holder);
    }
    let limits = ExecutionLimits {
        lock_timeout: prost_types::Duration::try_from(Duration::from_secs(30)).ok(),
        statement_timeout: prost_types::Duration::try_from(Duration::from_secs(120)).ok(),
        lock_retries: 3,
    };
    let plan_id = fleet
        .start_rollout_with(version, rollout::policy(1, 2, 2), Some(limits))
        .await;
    let building = wait_until(Duration::from_secs(60), || async {
        invalid_indexes(&fleet.admins[0]).await == [index]
    })
    .await;
    assert!(
        building,
        "the build of {index} never waited half-done\n{}",
        fleet.logs()
    );
    fleet.cluster.restart(how).expect("restart");
    drop(holders);
    fleet.await_success(&plan_id).await;
    fleet.assert_each_revision_once(version).await;
    for admin in &fleet.admins {
        assert_eq!(
            invalid_indexes(admin).await,
            Vec::<String>::new(),
            "no INVALID index left after a {how:?} restart"
        );
        let valid: bool = sqlx::query_scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
        )
        .bind(index)
        .fetch_one(admin)
        .await
        .expect("the index");
        assert!(valid, "{index} was built again, valid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stays_down_past_the_bound_fails_its_shards_naming_it() {
    let fleet = Fleet::start_with("database_outage_wait = \"3s\"").await;
    let plan_id = fleet.start_rollout(3).await;
    fleet.await_mid_revision(0).await;
    fleet.cluster.stop(Shutdown::Immediate).expect("stop");
    let plan = fleet.await_end(&plan_id).await;
    fleet.cluster.start_again().expect("start again");
    let server = format!("127.0.0.1:{}", fleet.cluster.port);
    let failed: Vec<&ShardTask> = plan
        .waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .filter(|task| task.state() == ShardState::Failed)
        .collect();
    assert!(!failed.is_empty(), "{plan:?}");
    for task in failed {
        let error = task.error.as_ref().expect("an error");
        assert_eq!(error.kind, i32::from(ErrorKind::Unreachable), "{error:?}");
        assert!(
            error.message.contains(&server)
                && error
                    .message
                    .contains("did not come back within 3s (waited"),
            "the server and the wait are named: {}",
            error.message
        );
    }
    assert_eq!(plan.state(), PlanState::Halted, "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_below_the_threshold_and_exhausted_retries_are_told_as_such() {
    let mut fleet = Fleet::start().await;

    // 1. Shard 1 fails for its own reason (its first revision's table exists already),
    //    below a threshold of 2: the plan finishes with failures, and watch exits 1.
    sqlx::query("CREATE TABLE work_log (version int NOT NULL)")
        .execute(&fleet.admins[1])
        .await
        .expect("a table in the way");
    let lenient = WavePolicy {
        failure_threshold: 2,
        ..rollout::policy(1, 2, 2)
    };
    let first = fleet.start_rollout_with(2, lenient, None).await;
    let plan = fleet.await_end(&first).await;
    assert_eq!(plan.state(), PlanState::FinishedWithFailures, "{plan:?}");
    assert!(plan.state_reason.contains(&shard_id(1)), "{plan:?}");
    assert_eq!(task_of(&plan, 0).state(), ShardState::Succeeded);
    assert_eq!(task_of(&plan, 1).state(), ShardState::Failed);
    let failure = &task_of(&plan, 1).error.as_ref().expect("an error").message;
    let in_repository = format!("{}/1_", fleet.migrations.path().display());
    assert!(
        failure.contains(&in_repository) && !failure.contains("fleetshift-assignment-"),
        "the statement is named by the file the author planned from: {failure}"
    );
    assert!(
        failure.contains("none of the revision's statements took effect"),
        "{failure}"
    );
    let watched = fleet.cli(&["watch", &first]).await;
    assert_eq!(
        watched.status.code(),
        Some(1),
        "{}",
        fleetshift_tests::binary::printed(&watched)
    );
    let status = fleet.cli(&["status", &first, "--output", "json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status as JSON");
    assert_eq!(status["state"], "finished-with-failures", "{status}");
    assert_eq!(
        status["shards"][0]["shard"],
        shard_id(1),
        "failed shards first: {status}"
    );

    // 2. A plan allowing one retry per shard, whose canary shard is interrupted twice (its
    //    agent stopped mid-revision, then restarted): the shard fails with the count and
    //    each cause.
    sqlx::query("DROP TABLE work_log")
        .execute(&fleet.admins[1])
        .await
        .expect("out of the way");
    let strict = WavePolicy {
        max_shard_retries: 1,
        ..rollout::policy(1, 2, 2)
    };
    let second = fleet.start_rollout_with(4, strict, None).await;
    for restart in ["agent-a-second.log", "agent-a-third.log"] {
        fleet.await_mid_revision(2).await;
        fleet.stop_agent_and_restart(restart);
    }
    let plan = fleet.await_end(&second).await;
    let canary = task_of(&plan, 0);
    assert_eq!(canary.state(), ShardState::Failed, "{plan:?}");
    let error = canary.error.as_ref().expect("an error");
    assert_eq!(error.kind, i32::from(ErrorKind::Interrupted), "{error:?}");
    assert!(
        error
            .message
            .contains("interrupted 2 times, more than the plan's bound of 1 retries")
            && error.message.matches("the agent is shutting down").count() == 2,
        "the count and each cause: {}",
        error.message
    );
    assert_eq!(plan.state(), PlanState::Halted, "{plan:?}");
}

/// The INVALID indexes of the database, by name.
async fn invalid_indexes(admin: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap_or_default()
}

/// Every event of `plan_id` after `since` (0: from its current state) that `replica` streams,
/// until the stream ends.
async fn watched(
    fleet: &Fleet,
    replica: usize,
    plan_id: &str,
    since: u64,
) -> Vec<fleetshift_common::proto::v1::RolloutEvent> {
    let mut events = fleet.replicas[replica]
        .client
        .clone()
        .watch_rollout(WatchRolloutRequest {
            plan_id: plan_id.to_owned(),
            include_statements: true,
            since,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), events.message())
        .await
        .expect("the stream goes on or ends")
        .expect("the watch")
    {
        seen.push(event);
    }
    seen
}

/// `shard-1 finished 2`, `shard-0 succeeded`, …
fn described(event: &fleetshift_common::proto::v1::RolloutEvent) -> String {
    match &event.event {
        Some(RolloutEvent::PlanState(changed)) => format!("plan {:?}", changed.state()),
        Some(RolloutEvent::ShardState(changed)) => {
            format!("{} {:?}", changed.shard_id, changed.state())
        }
        Some(RolloutEvent::Progress(progress)) => match &progress.event {
            Some(ProgressKind::RevisionStarted(started)) => {
                format!("{} started {}", progress.shard_id, started.version)
            }
            Some(ProgressKind::RevisionFinished(finished)) => {
                format!("{} finished {}", progress.shard_id, finished.version)
            }
            Some(ProgressKind::StatementFinished(statement)) => {
                format!("{} statement {}", progress.shard_id, statement.version)
            }
            other => format!("{} {other:?}", progress.shard_id),
        },
        None => "nothing".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_streams_every_event_and_a_watcher_resumes_on_another() {
    let fleet = Fleet::start().await;
    let plan_id = fleet.start_rollout(3).await;
    fleet.await_success(&plan_id).await;
    let holder = fleet.agents_replica();
    let other = 1 - holder;

    // From the start of the store's history, on the replica that never held the agent's
    // session: every shard's progress, statements included, each shard's before its end.
    let full = watched(&fleet, other, &plan_id, 1).await;
    let described_all: Vec<String> = full.iter().map(described).collect();
    for shard in (0..SHARDS).map(shard_id) {
        for version in 1..=3 {
            for step in ["started", "statement", "finished"] {
                let wanted = format!("{shard} {step} {version}");
                assert!(
                    described_all.contains(&wanted),
                    "{wanted} missing: {described_all:#?}"
                );
            }
        }
        let last_progress = described_all
            .iter()
            .rposition(|event| event.starts_with(&format!("{shard} finished")));
        let ended = described_all
            .iter()
            .position(|event| *event == format!("{shard} Succeeded"));
        assert!(
            last_progress < ended && ended.is_some(),
            "{shard}'s progress comes before its end: {described_all:#?}"
        );
    }
    assert_eq!(
        described_all.last().map(String::as_str),
        Some("plan Succeeded")
    );
    let sequences: Vec<u64> = full.iter().map(|event| event.sequence).collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );

    // A watcher that saw up to a point on one replica continues on the other: exactly the
    // rest, numbered alike.
    for cut in [0, full.len() / 3, full.len() / 2, full.len() - 2] {
        let rest = watched(&fleet, holder, &plan_id, full[cut].sequence).await;
        assert_eq!(
            rest.iter().map(described).collect::<Vec<_>>(),
            described_all[cut + 1..],
            "resumed after {cut} ({})",
            described_all[cut]
        );
        assert_eq!(
            rest.iter().map(|event| event.sequence).collect::<Vec<_>>(),
            sequences[cut + 1..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_keeps_streaming_events_when_its_replica_is_killed() {
    let fleet = Fleet::start().await;
    let plan_id = fleet.start_rollout(3).await;
    // `fleetshift events` for the plan, from the start of history, told of both replicas: it
    // streams from the first.
    let pki = fleet.home.path().join("pki");
    let out = fleet.home.path().join("events.jsonl");
    let err = fleet.home.path().join("events.err");
    // The second replica first: the fleet's own calls go to the first.
    let addresses = fleet
        .ports
        .iter()
        .rev()
        .map(|port| format!("https://localhost:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let operator = |file: &str| pki.join(file).display().to_string();
    let environment = [
        ("FLEETSHIFT_COORDINATOR", addresses),
        ("FLEETSHIFT_TLS_CERT", operator("operator-ops.pem")),
        ("FLEETSHIFT_TLS_KEY", operator("operator-ops.key")),
        ("FLEETSHIFT_TLS_CA", operator("ca.pem")),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let mut events = Process::spawn_printing(
        &fleetshift_tests::binary::fleetshift(),
        &[
            "events",
            "--plan",
            &plan_id,
            "--since",
            "1",
            "--statements",
            "--output",
            "json",
        ],
        &out,
        &err,
        &environment,
    );
    let streaming = wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&out).is_ok_and(|text| text.lines().count() >= 3)
    })
    .await;
    assert!(streaming, "the CLI streams\n{}", fleet.logs());

    // Its replica dies mid-rollout; the CLI moves to the other and goes on.
    fleet.replicas[1].process.signal("KILL");
    fleet.await_success(&plan_id).await;
    let ended = tokio::task::spawn_blocking(move || events.wait_for_exit(Duration::from_secs(60)))
        .await
        .expect("waited");
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        ended.is_some_and(|status| status.success()),
        "the CLI ends with the plan: {said}"
    );
    assert!(said.contains("the watch broke"), "it moved on: {said}");

    // What it printed is exactly what the surviving replica replays: no gap, no repeat.
    let printed: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("out")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let replayed = watched(&fleet, 0, &plan_id, 1).await;
    assert_eq!(
        printed
            .iter()
            .map(|event| event["sequence"].as_u64().expect("a sequence"))
            .collect::<Vec<_>>(),
        replayed
            .iter()
            .map(|event| event.sequence)
            .collect::<Vec<_>>()
    );
    assert!(
        printed
            .iter()
            .all(|event| event["plan"] == plan_id.as_str())
    );
    assert!(
        printed
            .iter()
            .any(|event| event["progress"] == "revision_finished" && event["shard"] == shard_id(1)),
        "{printed:#?}"
    );
    assert_eq!(
        printed.last().map(|event| &event["plan_state"]),
        Some(&serde_json::json!("succeeded"))
    );
    // Each transactional statement shows as running uncommitted, then committed.
    let states = |kind: &str| {
        printed
            .iter()
            .filter(|event| event["progress"] == kind)
            .map(|event| event["state"].as_str().unwrap_or_default().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        states("statement_running"),
        ["running (uncommitted)".to_owned()].into()
    );
    assert_eq!(
        states("statement_finished"),
        ["committed".to_owned()].into()
    );
}
