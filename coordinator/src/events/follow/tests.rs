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
use crate::tasks::TaskSet;

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

/// Journals `events` through a real writer, stored before this returns; each shard is
/// claimed for its run first (as the leader claims it), the events carrying the claim's
/// token, since the writer journals only the progress of standing claims.
async fn journal(store: &Arc<MemoryStore>, mut events: Vec<ProgressEvent>) {
    let mut tokens = std::collections::HashMap::new();
    for event in &mut events {
        let token = match tokens.get(&event.shard_id) {
            Some(token) => *token,
            None => {
                let claim = crate::claims::key(&event.shard_id);
                let token = match store.read(&claim).await.expect("read") {
                    Some(held) => held.create_revision,
                    None => store
                        .commit(None, &[], &[Write::put(claim, b"agent".to_vec())])
                        .await
                        .expect("claim")
                        .expect("claimed"),
                };
                tokens.insert(event.shard_id.clone(), token);
                token
            }
        };
        event.assignment_id = format!("p1~{}~{token}", event.shard_id);
    }
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

/// A store holding plan p1 in `state`, and a replica's shared watch of it.
async fn with_plan(state: PlanState) -> (Arc<MemoryStore>, TaskSet, Arc<Fanout<MemoryStore>>) {
    let store = Arc::new(MemoryStore::new());
    put(&store, keys::plan("p1"), plan(state).encode_to_vec()).await;
    let tasks = TaskSet::new();
    let fanout = Fanout::new(Arc::clone(&store), tasks.clone());
    (store, tasks, fanout)
}

#[tokio::test]
async fn a_watch_from_the_start_and_every_resumption_see_the_same_events_once() {
    let (store, tasks, fanout) = with_plan(PlanState::Approved).await;
    // Watching before the plan runs: the current state, then each change as it happens.
    let live = follow(&fanout, watch(None)).await.expect("follows");
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
        follow(&fanout, watch(Some(Sequence::from_raw(1))))
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
        let resumed = follow(&fanout, watch(Some(Sequence::from_raw(event.sequence))))
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
async fn the_streams_on_a_replica_share_one_store_watch_until_the_last_leaves() {
    let (store, tasks, fanout) = with_plan(PlanState::Approved).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(follow(&fanout, watch(None)).await.expect("follows"));
    }
    assert_eq!(store.open_watches(), 1, "one watch for five streams");
    a_plans_life(&store).await;
    let mut seen = Vec::new();
    for stream in streams {
        seen.push(drain(stream).await);
    }
    let described: Vec<Vec<String>> = seen
        .iter()
        .map(|events| events.iter().map(describe).collect())
        .collect();
    assert_eq!(described[0].len(), 9, "{:?}", described[0]);
    assert!(
        seen.iter().all(|events| events
            .iter()
            .map(|event| event.sequence)
            .eq(seen[0].iter().map(|event| event.sequence))),
        "every stream the same events with the same sequences: {described:?}"
    );

    // The streams ended; the shared watch ends with the next change, and the next stream
    // starts another.
    put(
        &store,
        keys::plan("p2"),
        plan(PlanState::Approved).encode_to_vec(),
    )
    .await;
    wait_for_watches(&store, 0).await;
    let fleet = Watch {
        scope: Scope::Fleet,
        include_statements: false,
        since: None,
    };
    let _stream = follow(&fanout, fleet).await.expect("follows");
    assert_eq!(store.open_watches(), 1);
    tasks.stop(Duration::from_secs(5)).await;
}

async fn wait_for_watches(store: &MemoryStore, open: usize) {
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while store.open_watches() != open {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(closed.is_ok(), "{} watches open", store.open_watches());
}

#[tokio::test]
async fn a_stream_the_shared_watch_leaves_behind_follows_the_store_without_gap_or_repeat() {
    let (store, tasks, fanout) = with_plan(PlanState::Running).await;
    let keeping_up = follow(&fanout, watch(None)).await.expect("follows");
    let keeping_up = tokio::spawn(drain(keeping_up));
    // Not read until the end: more changes than its buffer and the shared backlog hold,
    // two to a revision (a journal batch of two events, then a task), so the shared watch
    // leaves it behind inside a revision, after a batch whose events it has sent.
    let behind = follow(&fanout, watch(None)).await.expect("follows");
    let revisions = super::super::fanout::BACKLOG + 2 * BUFFER;
    for revision in 0..revisions {
        let state = if revision % 2 == 0 {
            ShardState::Running
        } else {
            ShardState::Claimed
        };
        let batch = JournalBatch {
            events: vec![
                progress("s1", started(&revision.to_string())),
                progress("s2", started(&revision.to_string())),
            ],
        };
        let writes = [
            Write::put(
                keys::journal_batch("c1", &revision.to_string()),
                batch.encode_to_vec(),
            ),
            Write::put(keys::task("p1", "s1"), task("s1", state).encode_to_vec()),
        ];
        store.commit(None, &[], &writes).await.expect("commit");
        // The other stream keeps up.
        tokio::task::yield_now().await;
    }
    put(
        &store,
        keys::task("p1", "s1"),
        task("s1", ShardState::Succeeded).encode_to_vec(),
    )
    .await;
    put(
        &store,
        keys::plan("p1"),
        plan(PlanState::Succeeded).encode_to_vec(),
    )
    .await;
    let expected = keeping_up.await.expect("drained");
    assert_eq!(
        expected.len(),
        3 * revisions + 3,
        "the plan, three a revision, the ends"
    );
    let behind = drain(behind).await;
    let sequences = |events: &[RolloutEvent]| -> Vec<u64> {
        events.iter().map(|event| event.sequence).collect()
    };
    assert_eq!(sequences(&behind), sequences(&expected));
    assert_eq!(
        behind.iter().map(describe).collect::<Vec<_>>(),
        expected.iter().map(describe).collect::<Vec<_>>()
    );
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_fleet_stream_carries_every_plan_and_its_statements_when_asked() {
    let store = Arc::new(MemoryStore::new());
    let tasks = TaskSet::new();
    let fanout = Fanout::new(Arc::clone(&store), tasks.clone());
    let fleet = Watch {
        scope: Scope::Fleet,
        include_statements: true,
        since: None,
    };
    let mut live = follow(&fanout, fleet).await.expect("follows");
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
    let fanout = Fanout::new(Arc::clone(&store), tasks.clone());
    assert!(matches!(
        follow(&fanout, watch(None)).await,
        Err(RolloutError::UnknownPlan(_))
    ));
    let follower = Follower {
        watch: watch(Some(Sequence::of(3, 1))),
        sender: mpsc::channel(1).0,
        read_at: Sequence::of(9, 0),
        after: 0,
        seen: None,
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
