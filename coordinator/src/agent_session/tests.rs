//! The coordinator's side of a session on paused time, over in-memory streams and the
//! in-memory store (whose leases expire on the same paused clock).

use std::time::Duration;

use fleetshift_common::proto::v1::Heartbeat;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::*;
use crate::store::MemoryStore;

const DOMAIN: &str = "fleet.example";

type Inbound = UnboundedReceiverStream<Result<AgentMessage, Status>>;

/// The agent's end of a session: what it sends, and what the replica answered.
struct Agent {
    to_replica: mpsc::UnboundedSender<Result<AgentMessage, Status>>,
    from_replica: mpsc::Receiver<Result<CoordinatorMessage, Status>>,
}

impl Agent {
    fn send(&self, body: AgentBody) {
        let _ = self.to_replica.send(Ok(AgentMessage { body: Some(body) }));
    }

    fn hello(&self, agent: &str) {
        self.send(AgentBody::Hello(Hello {
            agent_id: agent.to_owned(),
            ..Hello::default()
        }));
    }

    async fn answer(&mut self) -> Result<CoordinatorMessage, Status> {
        tokio::time::timeout(Duration::from_secs(60), self.from_replica.recv())
            .await
            .expect("an answer within a minute of session time")
            .expect("the replica answers")
    }

    async fn handshake(&mut self) -> Handshake {
        match self.answer().await {
            Ok(CoordinatorMessage {
                body: Some(CoordinatorBody::Handshake(handshake)),
            }) => handshake,
            other => panic!("expected a handshake, got {other:?}"),
        }
    }
}

fn intervals() -> SessionIntervals {
    SessionIntervals::from_heartbeat(Duration::from_secs(1))
}

/// A session of certificate `agent` on its own task, driven until it ends or `stopping`.
fn open(
    store: &Arc<MemoryStore>,
    agent: &str,
    stopping: &CancellationToken,
) -> (Agent, JoinHandle<()>) {
    let (to_replica, inbound) = mpsc::unbounded_channel();
    let (outbound, from_replica) = mpsc::channel(16);
    let identity = SpiffeId::new(DOMAIN, Role::Agent, agent).expect("identity");
    let session: Session<MemoryStore, Inbound> = Session::new(
        Arc::clone(store),
        Mailbox::new(),
        intervals(),
        "c1",
        identity,
        UnboundedReceiverStream::new(inbound),
        outbound,
    );
    let driven = tokio::spawn(session.drive(stopping.clone()));
    (
        Agent {
            to_replica,
            from_replica,
        },
        driven,
    )
}

async fn announced(store: &MemoryStore) -> usize {
    store.agents().await.expect("agents").len()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("within a minute of session time")
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_lease_and_a_clean_close_revokes_it_at_once() {
    let store = Arc::new(MemoryStore::new());
    let (mut agent, driven) = open(&store, "a1", &CancellationToken::new());
    agent.hello("a1");
    let handshake = agent.handshake().await;
    assert_ne!(handshake.lease_id, 0);
    for sequence in 1..=10 {
        tokio::time::sleep(intervals().heartbeat).await;
        agent.send(AgentBody::Heartbeat(Heartbeat {
            sequence,
            running_assignments: Vec::new(),
        }));
        let acknowledged = agent.answer().await.expect("acknowledged");
        assert!(matches!(
            acknowledged.body,
            Some(CoordinatorBody::HeartbeatAck(HeartbeatAck { sequence: acked, .. })) if acked == sequence
        ));
    }
    assert_eq!(announced(&store).await, 1, "alive past three TTLs");
    drop(agent);
    within(driven).await.expect("session task");
    assert_eq!(announced(&store).await, 0, "revoked at the clean close");
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_ends_the_session_after_one_lease_ttl_and_the_lease_lapses() {
    let store = Arc::new(MemoryStore::new());
    let (mut agent, driven) = open(&store, "a1", &CancellationToken::new());
    agent.hello("a1");
    agent.handshake().await;
    let opened = tokio::time::Instant::now();
    // The stream stays open and says nothing: a half-open connection.
    within(driven).await.expect("session task");
    let lasted = opened.elapsed();
    assert!(
        lasted >= intervals().lease_ttl && lasted < intervals().lease_ttl * 2,
        "ended after {lasted:?}; the lease TTL is {:?}",
        intervals().lease_ttl
    );
    // Its lease lapses on its own (nothing renewed it after the Hello).
    within(async {
        while announced(&store).await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drop(agent);
}

#[tokio::test(start_paused = true)]
async fn a_stopping_replica_ends_its_sessions_but_leaves_their_leases_to_be_resumed() {
    let store = Arc::new(MemoryStore::new());
    let stopping = CancellationToken::new();
    let (mut agent, driven) = open(&store, "a1", &stopping);
    agent.hello("a1");
    agent.handshake().await;
    stopping.cancel();
    within(driven).await.expect("session task");
    assert_eq!(
        announced(&store).await,
        1,
        "not revoked: the agent resumes the lease with another replica"
    );
    drop(agent);
}

#[tokio::test(start_paused = true)]
async fn an_agent_speaks_only_for_itself() {
    let store = Arc::new(MemoryStore::new());
    let (mut agent, driven) = open(&store, "a1", &CancellationToken::new());
    agent.hello("a2");
    let refused = agent.answer().await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    within(driven).await.expect("session task");
    assert_eq!(announced(&store).await, 0);
}

#[test]
fn an_incomplete_result_is_refused_naming_the_field() {
    let complete = AssignmentResult {
        assignment_id: "p1~s1~7".to_owned(),
        shard_id: "s1".to_owned(),
        fence_token: 7,
        succeeded: true,
        ..AssignmentResult::default()
    };
    assert!(check_result(&complete).is_ok());
    let no_token = AssignmentResult {
        fence_token: 0,
        ..complete.clone()
    };
    let refused = check_result(&no_token).expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("fence_token"), "{refused:?}");
    for forged in ["p1~s2~7", "p1~s1~8", "p1", "p1~s1~7~x"] {
        let refused = check_result(&AssignmentResult {
            assignment_id: forged.to_owned(),
            ..complete.clone()
        })
        .expect_err(forged);
        assert!(
            refused.message().contains("names another shard or claim"),
            "{forged}: {refused:?}"
        );
    }
    let silent_failure = AssignmentResult {
        succeeded: false,
        ..complete
    };
    let refused = check_result(&silent_failure).expect_err("no error");
    assert!(
        refused.message().contains("error is missing"),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn agents_and_coordinators_too_old_for_each_other_are_refused_naming_both() {
    let store = Arc::new(MemoryStore::new());
    let stopping = CancellationToken::new();
    let refused = |hello: Hello| {
        let store = Arc::clone(&store);
        let stopping = stopping.clone();
        async move {
            let (mut agent, driven) = open(&store, "a1", &stopping);
            agent.send(AgentBody::Hello(hello));
            let answer = agent.answer().await;
            within(driven).await.expect("session task");
            answer
        }
    };
    let old_agent = refused(Hello {
        agent_id: "a1".to_owned(),
        agent_version: "0.0.1".to_owned(),
        ..Hello::default()
    })
    .await
    .expect_err("too old an agent");
    assert_eq!(old_agent.code(), tonic::Code::FailedPrecondition);
    assert!(
        old_agent.message().starts_with(&format!(
            "agent 0.0.1 is too old for coordinator {}",
            versions::VERSION
        )) && old_agent.message().ends_with("upgrade the agents first"),
        "{}",
        old_agent.message()
    );
    let demanding_agent = refused(Hello {
        agent_id: "a1".to_owned(),
        agent_version: "99.0.0".to_owned(),
        oldest_coordinator: "98.0.0".to_owned(),
        ..Hello::default()
    })
    .await
    .expect_err("too old a coordinator");
    assert!(
        demanding_agent.message().starts_with(&format!(
            "coordinator {} is too old for agent 99.0.0",
            versions::VERSION
        )) && demanding_agent
            .message()
            .ends_with("upgrade the coordinators first"),
        "{}",
        demanding_agent.message()
    );
    assert_eq!(announced(&store).await, 0, "neither was announced");

    // An agent of this version, and one that says nothing of versions (an older contract),
    // are taken; the handshake names this coordinator's version and the oldest agent it takes.
    let (mut agent, _driven) = open(&store, "a1", &stopping);
    agent.send(AgentBody::Hello(Hello {
        agent_id: "a1".to_owned(),
        agent_version: versions::VERSION.to_owned(),
        oldest_coordinator: versions::OLDEST_COORDINATOR.to_owned(),
        ..Hello::default()
    }));
    let handshake = agent.handshake().await;
    assert_eq!(handshake.coordinator_version, versions::VERSION);
    assert_eq!(handshake.oldest_agent, versions::OLDEST_AGENT);
    let (mut silent, _driven) = open(&store, "a2", &stopping);
    silent.hello("a2");
    silent.handshake().await;
    stopping.cancel();
}
