//! The rollout relay against the in-memory store on paused time, with an agent's session
//! registered in the mailbox as an in-memory stream.

use std::time::Duration;

use fleetshift_common::proto::v1::{Assignment, CoordinatorMessage, MigrationSet as WireSet};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::*;
use crate::claims;
use crate::store::{Condition, LeaseId, MemoryStore, Write};

const LONG: Duration = Duration::from_secs(3600);

type FromReplica = mpsc::Receiver<Result<CoordinatorMessage, Status>>;

/// Claims `shard` for `agent` and writes an assignment under that claim, both bound to one
/// session lease, as the leader does; the assignment's id and the lease.
async fn dispatch(store: &MemoryStore, agent: &str, shard: &str) -> (String, LeaseId) {
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
        task: None,
    };
    store
        .commit(
            None,
            &[],
            &[Write::Put {
                key: keys::assignment(agent, &id),
                value: dispatch.encode_to_vec(),
                lease: Some(lease),
            }],
        )
        .await
        .expect("assignment");
    (id, lease)
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
    let (id, _) = dispatch(&store, "a1", "s1").await;
    match next(&mut from_replica).await {
        CoordinatorBody::Assignment(assignment) => assert_eq!(assignment.assignment_id, id),
        other => panic!("expected the assignment, got {other:?}"),
    }
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
    let (id, _) = dispatch(&store, "a1", "s1").await;
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
async fn an_assignment_whose_claim_lapsed_is_not_delivered() {
    let store = Arc::new(MemoryStore::new());
    stored_set(&store).await;
    let mailbox = Mailbox::new();
    let (id, lease) = dispatch(&store, "a1", "s1").await;
    let (_, other_lease) = dispatch(&store, "a1", "s2").await;
    // The agent's session lease lapses before any replica delivered the assignment: the
    // claim and the assignment go together.
    store.revoke(lease).await.expect("lapsed");
    let (outbound, mut from_replica) = mpsc::channel(16);
    let _session = mailbox.register("a1", ["s1".to_owned(), "s2".to_owned()].into(), outbound);
    let stop = CancellationToken::new();
    let relay = tokio::spawn(run(Arc::clone(&store), Arc::clone(&mailbox), stop.clone()));
    match next(&mut from_replica).await {
        CoordinatorBody::Assignment(assignment) => assert_eq!(assignment.shard_id, "s2"),
        other => panic!("expected the standing assignment, got {other:?}"),
    }
    nothing_more(&mut from_replica).await;
    assert_eq!(
        store.read(&claims::key("s1")).await.expect("read"),
        None,
        "{id}"
    );
    store.revoke(other_lease).await.expect("revoke");
    stop.cancel();
    relay.await.expect("relay");
}
