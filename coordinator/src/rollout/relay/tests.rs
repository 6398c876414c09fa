//! The rollout relay against the in-memory store on paused time, with an agent's session
//! registered in the mailbox as an in-memory stream.

use std::time::Duration;

use fleetshift_common::proto::v1::{
    Assignment, CoordinatorMessage, MigrationSet as WireSet, ShardState, ShardTask,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::*;
use crate::store::{Condition, MemoryStore};

const LONG: Duration = Duration::from_secs(3600);

type FromReplica = mpsc::Receiver<Result<CoordinatorMessage, Status>>;

/// Claims `shard` for `agent` and writes an assignment under that claim, as the leader does;
/// the assignment's id.
async fn dispatch(store: &MemoryStore, agent: &str, shard: &str) -> String {
    let lease = store.grant_lease(LONG).await.expect("lease");
    let token = store
        .commit(
            None,
            &[Condition::Absent(claims::key(shard))],
            &[Write::Put {
                key: claims::key(shard),
                value: agent.as_bytes().to_vec(),
                lease: Some(lease),
            }],
        )
        .await
        .expect("claim")
        .expect("unclaimed");
    let id = format!("p1~{shard}~{token}");
    let task = ShardTask {
        shard_id: shard.to_owned(),
        state: ShardState::Running.into(),
        fence_token: token,
        ..ShardTask::default()
    };
    let dispatch = Dispatch {
        assignment: Some(Assignment {
            assignment_id: id.clone(),
            plan_id: "p1".to_owned(),
            shard_id: shard.to_owned(),
            fence_token: token,
            migration_set: Some(WireSet {
                digest: "d1".to_owned(),
                ..WireSet::default()
            }),
            ..Assignment::default()
        }),
        task: Some(task),
    };
    store
        .commit(
            None,
            &[],
            &[Write::put(
                keys::assignment(agent, &id),
                dispatch.encode_to_vec(),
            )],
        )
        .await
        .expect("assignment");
    id
}

/// The next message down the agent's stream (at most a minute of session time).
async fn next(from_replica: &mut FromReplica) -> CoordinatorBody {
    let message = tokio::time::timeout(Duration::from_secs(60), from_replica.recv())
        .await
        .expect("a message within a minute")
        .expect("stream open")
        .expect("not an error");
    message.body.expect("a body")
}

async fn nothing_more(from_replica: &mut FromReplica) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(from_replica.try_recv().is_err(), "nothing else was sent");
}

async fn running_state(store: &MemoryStore, shard: &str) -> Option<ShardState> {
    let entry = store.read(&keys::task("p1", shard)).await.expect("read")?;
    Some(
        ShardTask::decode(entry.value.as_slice())
            .expect("task")
            .state(),
    )
}

async fn stored_set(store: &MemoryStore) {
    crate::rollout::records::save_set(
        store,
        &WireSet {
            digest: "d1".to_owned(),
            format: "sqlx".to_owned(),
            files: Vec::new(),
            origin: String::new(),
        },
    )
    .await
    .expect("set");
}

#[tokio::test(start_paused = true)]
async fn an_assignment_reaches_its_agent_once_and_again_when_the_agent_reconnects() {
    let store = Arc::new(MemoryStore::new());
    stored_set(&store).await;
    let mailbox = Mailbox::new();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(run(Arc::clone(&store), Arc::clone(&mailbox), stop.clone()));
    let (outbound, mut from_replica) = mpsc::channel(16);
    let session = mailbox.register("a1", ["s1".to_owned()].into(), outbound);
    let id = dispatch(&store, "a1", "s1").await;
    match next(&mut from_replica).await {
        CoordinatorBody::Assignment(assignment) => assert_eq!(assignment.assignment_id, id),
        other => panic!("expected the assignment, got {other:?}"),
    }
    assert_eq!(running_state(&store, "s1").await, Some(ShardState::Running));
    nothing_more(&mut from_replica).await;
    // The agent reconnects (a new session here): it gets its outstanding assignment again.
    drop(session);
    let (outbound, mut again) = mpsc::channel(16);
    let _session = mailbox.register("a1", ["s1".to_owned()].into(), outbound);
    match next(&mut again).await {
        CoordinatorBody::Assignment(assignment) => assert_eq!(assignment.assignment_id, id),
        other => panic!("expected the assignment again, got {other:?}"),
    }
    stop.cancel();
    relay.await.expect("relay");
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_assignment_becomes_a_cancel() {
    let store = Arc::new(MemoryStore::new());
    stored_set(&store).await;
    let mailbox = Mailbox::new();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(run(Arc::clone(&store), Arc::clone(&mailbox), stop.clone()));
    let (outbound, mut from_replica) = mpsc::channel(16);
    let _session = mailbox.register("a1", ["s1".to_owned()].into(), outbound);
    let id = dispatch(&store, "a1", "s1").await;
    assert!(matches!(
        next(&mut from_replica).await,
        CoordinatorBody::Assignment(_)
    ));
    store
        .commit(None, &[], &[Write::Delete(keys::assignment("a1", &id))])
        .await
        .expect("withdrawn");
    match next(&mut from_replica).await {
        CoordinatorBody::Cancel(cancel) => assert_eq!(cancel.assignment_id, id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    stop.cancel();
    relay.await.expect("relay");
}

#[tokio::test(start_paused = true)]
async fn an_assignment_whose_claim_is_gone_is_not_delivered() {
    let store = Arc::new(MemoryStore::new());
    stored_set(&store).await;
    let mailbox = Mailbox::new();
    let id = dispatch(&store, "a1", "s1").await;
    // The claim lapses before any replica delivered the assignment.
    store
        .commit(None, &[], &[claims::release("s1")])
        .await
        .expect("claim gone");
    let (outbound, mut from_replica) = mpsc::channel(16);
    let _session = mailbox.register("a1", ["s1".to_owned()].into(), outbound);
    let stop = CancellationToken::new();
    let relay = tokio::spawn(run(Arc::clone(&store), Arc::clone(&mailbox), stop.clone()));
    nothing_more(&mut from_replica).await;
    assert_ne!(
        running_state(&store, "s1").await,
        Some(ShardState::Running),
        "{id} was not marked running"
    );
    stop.cancel();
    relay.await.expect("relay");
}
