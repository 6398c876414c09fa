//! The stream over an in-memory store: a plan's life written as the leader and a replica's
//! journal writer write it, watched from the start and resumed after every event.

use std::time::Duration;

use fleetshift_common::proto::v1::{
    RevisionStarted, ShardTask, StatementFinished, StatementRunning, Wave, progress_event,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::journal::{self, Feed};
use crate::store::{MemoryStore, Write};

fn task(shard: &str, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: shard.to_owned(),
        state: state.into(),
        ..ShardTask::default()
    }
}

fn plan(state: PlanState) -> Plan {
    Plan {
        plan_id: "p1".to_owned(),
        state: state.into(),
        waves: vec![Wave {
            shards: vec![task("s1", ShardState::Pending)],
            ..Wave::default()
        }],
        ..Plan::default()
    }
}

async fn put(store: &MemoryStore, key: String, value: Vec<u8>) {
    store
        .commit(None, &[], &[Write::put(key, value)])
        .await
        .expect("commit");
}

fn progress(shard: &str, event: progress_event::Event) -> ProgressEvent {
    ProgressEvent {
        assignment_id: format!("p1~{shard}~7"),
        shard_id: shard.to_owned(),
        at: now(),
        event: Some(event),
    }
}

fn started(version: &str) -> progress_event::Event {
    progress_event::Event::RevisionStarted(RevisionStarted {
        version: version.to_owned(),
        ..RevisionStarted::default()
    })
}

/// Journals `events` through a real writer, stored before this returns.
async fn journal(store: &Arc<MemoryStore>, events: Vec<ProgressEvent>) {
    let (feed, journaled) = Feed::channel();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(journal::write(
        Arc::clone(store),
        "c2".to_owned(),
        journaled,
        stop.clone(),
    ));
    for event in events {
        feed.record(event);
    }
    let stored = feed.store_after(Vec::new()).await;
    assert!(
        matches!(stored, journal::Handed::Stored(Ok(()))),
        "{stored:?}"
    );
    stop.cancel();
    writer.await.expect("writer");
}

/// Every event of a stream, until it ends.
async fn drain(mut events: mpsc::Receiver<Result<RolloutEvent, Status>>) -> Vec<RolloutEvent> {
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the stream goes on or ends")
    {
        seen.push(event.expect("an event"));
    }
    seen
}

fn describe(event: &RolloutEvent) -> String {
    match &event.event {
        Some(Event::PlanState(changed)) => format!("plan {:?}", changed.state()),
        Some(Event::ShardState(changed)) => format!("{} {:?}", changed.shard_id, changed.state()),
        Some(Event::Progress(progress)) => match &progress.event {
            Some(progress_event::Event::RevisionStarted(started)) => {
                format!("{} started {}", progress.shard_id, started.version)
            }
            Some(progress_event::Event::StatementFinished(_)) => {
                format!("{} statement", progress.shard_id)
            }
            other => format!("{other:?}"),
        },
        None => "nothing".to_owned(),
    }
}

/// A plan's whole life: created, running, its shard's progress in two batches, ended.
async fn a_plans_life(store: &Arc<MemoryStore>) {
    put(
        store,
        keys::task("p1", "s1"),
        task("s1", ShardState::Pending).encode_to_vec(),
    )
    .await;
    put(
        store,
        keys::plan("p1"),
        plan(PlanState::Running).encode_to_vec(),
    )
    .await;
    put(
        store,
        keys::task("p1", "s1"),
        task("s1", ShardState::Running).encode_to_vec(),
    )
    .await;
    let statement = progress_event::Event::StatementFinished(StatementFinished::default());
    journal(
        store,
        vec![progress("s1", started("1")), progress("s1", statement)],
    )
    .await;
    journal(
        store,
        vec![progress("s1", started("2")), progress("s9", started("1"))],
    )
    .await;
    put(
        store,
        keys::task("p1", "s1"),
        task("s1", ShardState::Succeeded).encode_to_vec(),
    )
    .await;
    put(
        store,
        keys::plan("p1"),
        plan(PlanState::Succeeded).encode_to_vec(),
    )
    .await;
}

fn watch(since: Option<Sequence>) -> Watch {
    Watch {
        scope: Scope::Plan("p1".to_owned()),
        include_statements: false,
        since,
    }
}

#[tokio::test]
async fn a_watch_from_the_start_and_every_resumption_see_the_same_events_once() {
    let store = Arc::new(MemoryStore::new());
    put(
        &store,
        keys::plan("p1"),
        plan(PlanState::Approved).encode_to_vec(),
    )
    .await;
    let tasks = TaskSet::new();
    // Watching before the plan runs: the current state, then each change as it happens.
    let live = follow(Arc::clone(&store), &tasks, watch(None))
        .await
        .expect("follows");
    a_plans_life(&store).await;
    let seen = drain(live).await;
    assert_eq!(
        seen.iter().map(describe).collect::<Vec<_>>(),
        [
            "plan Approved",
            "s1 Pending",
            "plan Running",
            "s1 Running",
            "s1 started 1",
            "s1 started 2",
            "s9 started 1",
            "s1 Succeeded",
            "plan Succeeded",
        ],
        "statements only when asked for; every shard's progress of the plan"
    );
    let sequences: Vec<u64> = seen.iter().map(|event| event.sequence).collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "increasing: {sequences:?}"
    );

    // From the very start of the store's history: every change, the plan's creation first.
    let replayed = drain(
        follow(
            Arc::clone(&store),
            &tasks,
            watch(Some(Sequence::from_raw(1))),
        )
        .await
        .expect("follows"),
    )
    .await;
    assert_eq!(
        replayed.iter().map(describe).collect::<Vec<_>>(),
        seen.iter().map(describe).collect::<Vec<_>>()
    );

    // Resumed after each event, on another follower (as another replica would): exactly the
    // rest, with the same sequences.
    for (index, event) in seen.iter().enumerate() {
        let resumed = follow(
            Arc::clone(&store),
            &tasks,
            watch(Some(Sequence::from_raw(event.sequence))),
        )
        .await
        .expect("follows");
        let rest = drain(resumed).await;
        assert_eq!(
            rest.iter().map(|event| event.sequence).collect::<Vec<_>>(),
            sequences[index + 1..],
            "after event {index} ({})",
            describe(event)
        );
    }
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_fleet_stream_carries_every_plan_and_its_statements_when_asked() {
    let store = Arc::new(MemoryStore::new());
    let tasks = TaskSet::new();
    let fleet = Watch {
        scope: Scope::Fleet,
        include_statements: true,
        since: None,
    };
    let mut live = follow(Arc::clone(&store), &tasks, fleet)
        .await
        .expect("follows");
    a_plans_life(&store).await;
    let mut seen = Vec::new();
    while seen.len() < 9 {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("in time")
            .expect("open")
            .expect("an event");
        seen.push(describe(&event));
    }
    assert_eq!(
        seen,
        [
            "s1 Pending",
            "plan Running",
            "s1 Running",
            "s1 started 1",
            "s1 statement",
            "s1 started 2",
            "s9 started 1",
            "s1 Succeeded",
            "plan Succeeded",
        ]
    );
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_unknown_plan_is_refused_and_history_the_store_dropped_is_named() {
    let store = Arc::new(MemoryStore::new());
    let tasks = TaskSet::new();
    assert!(matches!(
        follow(Arc::clone(&store), &tasks, watch(None)).await,
        Err(RolloutError::UnknownPlan(_))
    ));
    let follower = Follower {
        watch: watch(Some(Sequence::of(3, 1))),
        sender: mpsc::channel(1).0,
        read_at: Sequence::of(9, 0),
        plans: HashMap::new(),
        tasks: HashMap::new(),
        place: (0, 0),
        caught_up: false,
    };
    let status = follower.store_failed(StoreError::Compacted(7));
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(
        status.message().contains("watch again without --since"),
        "{}",
        status.message()
    );
    tasks.stop(Duration::from_secs(5)).await;
}

#[test]
fn without_statements_only_a_long_running_statement_is_shown() {
    let running = |elapsed: Option<Duration>| {
        progress(
            "s1",
            progress_event::Event::StatementRunning(StatementRunning {
                elapsed: elapsed.and_then(|elapsed| prost_types::Duration::try_from(elapsed).ok()),
                ..StatementRunning::default()
            }),
        )
    };
    let finished = progress(
        "s1",
        progress_event::Event::StatementFinished(StatementFinished::default()),
    );
    assert!(per_statement(&finished));
    assert!(per_statement(&running(None)));
    assert!(per_statement(&running(Some(Duration::ZERO))));
    assert!(!per_statement(&running(Some(Duration::from_secs(5)))));
    assert!(!per_statement(&progress("s1", started("1"))));
}
