//! The agent session over real mutual TLS, against a real etcd: identity from the peer
//! certificate, Hello checked against it, a lease per session kept alive by heartbeats, and
//! released as the session ends (at once when closed, on its TTL when broken).

use std::time::Duration;

use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, AssignmentResult, CoordinatorMessage, Heartbeat, Hello, ShardFacts,
};
use fleetshift_coordinator::authz::Roles;
use fleetshift_coordinator::peer_limits::PeerLimits;
use fleetshift_coordinator::store::{Store, StoreError, keys};
use fleetshift_tests::fleet::{InProcessCoordinator, channel_as};
use fleetshift_tests::wait::wait_until;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// etcd, a PKI (agents db-host-1 and db-host-2, operator alice), and one coordinator replica
/// serving agent sessions on loopback.
async fn fleet() -> InProcessCoordinator {
    InProcessCoordinator::start(Roles::default(), &["db-host-1", "db-host-2"], &["alice"]).await
}

async fn client(fleet: &InProcessCoordinator, holder: &str) -> AgentServiceClient<Channel> {
    let address = format!("https://{}", fleet.address);
    AgentServiceClient::new(channel_as(&address, &fleet.pki(), holder).await)
}

/// Opens a session; returns the sender for agent messages and the coordinator's stream.
async fn open(
    client: &mut AgentServiceClient<Channel>,
    agent_id: &str,
) -> (
    mpsc::Sender<AgentMessage>,
    Result<Streaming<CoordinatorMessage>, tonic::Status>,
) {
    open_with_shards(client, agent_id, &[]).await
}

/// Opens a session announcing `shards`.
async fn open_with_shards(
    client: &mut AgentServiceClient<Channel>,
    agent_id: &str,
    shards: &[&str],
) -> (
    mpsc::Sender<AgentMessage>,
    Result<Streaming<CoordinatorMessage>, tonic::Status>,
) {
    let (sender, receiver) = mpsc::channel(8);
    let hello = Hello {
        agent_id: agent_id.to_owned(),
        agent_version: "test".to_owned(),
        shards: shards
            .iter()
            .map(|shard| ShardFacts {
                shard_id: (*shard).to_owned(),
                ..ShardFacts::default()
            })
            .collect(),
        ..Hello::default()
    };
    sender
        .send(AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        })
        .await
        .expect("hello");
    let responses = client
        .session(ReceiverStream::new(receiver))
        .await
        .map(tonic::Response::into_inner);
    (sender, responses)
}

async fn next(
    responses: &mut Streaming<CoordinatorMessage>,
) -> Result<CoordinatorBody, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("bounded")
    {
        Ok(Some(CoordinatorMessage { body: Some(body) })) => Ok(body),
        Ok(other) => panic!("unexpected end or empty message: {other:?}"),
        Err(status) => Err(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_session_lease_and_closing_revokes_it() {
    let fleet = fleet().await;
    let mut client = client(&fleet, "agent-db-host-1").await;
    let (sender, responses) = open(&mut client, "db-host-1").await;
    let mut responses = responses.expect("session");
    let CoordinatorBody::Handshake(handshake) = next(&mut responses).await.expect("handshake")
    else {
        panic!("the first answer must be the handshake");
    };
    assert_eq!(handshake.coordinator_id, "c1");
    assert_eq!(handshake.heartbeat_interval.map(|d| d.seconds), Some(1));
    assert_eq!(handshake.lease_ttl.map(|d| d.seconds), Some(3));
    let lease = handshake.lease_id;
    let announced = fleet.store.agents().await.expect("agents");
    assert_eq!(announced.len(), 1);
    assert_eq!(
        announced[0].0, "db-host-1",
        "the session announces its agent"
    );
    let claim = fleet
        .store
        .claim("users-0001", "db-host-1", lease)
        .await
        .expect("claim under the session lease");

    // Six heartbeats a second apart: twice the TTL, and the lease (with its claim) lives on.
    for sequence in 1..=6 {
        sender
            .send(AgentMessage {
                body: Some(AgentBody::Heartbeat(Heartbeat {
                    sequence,
                    running_assignments: Vec::new(),
                })),
            })
            .await
            .expect("heartbeat");
        let CoordinatorBody::HeartbeatAck(ack) = next(&mut responses).await.expect("ack") else {
            panic!("expected an acknowledgement");
        };
        assert_eq!(ack.sequence, sequence);
        assert!(
            ack.lease_remaining
                .is_some_and(|remaining| remaining.seconds > 0)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        fleet.store.claim_of("users-0001").await.expect("read"),
        Some(claim)
    );

    // The agent closes its stream: it has stopped, so the lease (and the claim) go at once —
    // well before the TTL (at least 2 s after the last keep-alive) could explain it.
    drop(sender);
    let released = wait_until(Duration::from_secs(1), || async {
        fleet
            .store
            .claim_of("users-0001")
            .await
            .expect("read")
            .is_none()
    })
    .await;
    assert!(released, "a closed session's lease must be revoked");
}

/// A TCP relay to the replica whose connections end at once, without TLS or HTTP/2 saying
/// goodbye, when it is dropped: a crashed host, as the replica sees it.
struct Relay {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        Self { address, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_session_keeps_its_lease_until_the_ttl() {
    let fleet = fleet().await;
    let relay = Relay::to(fleet.address).await;
    let address = format!("https://localhost:{}", relay.address.port());
    let mut client =
        AgentServiceClient::new(channel_as(&address, &fleet.pki(), "agent-db-host-1").await);
    let (sender, responses) = open(&mut client, "db-host-1").await;
    let mut responses = responses.expect("session");
    let CoordinatorBody::Handshake(handshake) = next(&mut responses).await.expect("handshake")
    else {
        panic!("handshake");
    };
    fleet
        .store
        .claim("users-0002", "db-host-1", handshake.lease_id)
        .await
        .expect("claim");
    // The agent's host vanishes: its connection is torn down without its stream closing.
    drop(relay);
    let _kept_open = (sender, responses, client);
    let noticed = wait_until(Duration::from_secs(15), || async {
        fleet.mailbox.connected() == 0
    })
    .await;
    assert!(noticed, "the replica never noticed the broken stream");
    assert!(
        fleet
            .store
            .claim_of("users-0002")
            .await
            .expect("read")
            .is_some(),
        "a crashed agent may still be working: its claims stay until its lease lapses"
    );
    let lapsed = wait_until(Duration::from_secs(15), || async {
        fleet
            .store
            .claim_of("users-0002")
            .await
            .expect("read")
            .is_none()
    })
    .await;
    assert!(lapsed, "without heartbeats the lease lapses on its TTL");
    assert!(matches!(
        fleet.store.keep_alive(handshake.lease_id).await,
        Err(StoreError::LeaseExpired(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaks_only_for_itself_and_operators_are_not_agents() {
    let fleet = fleet().await;
    let mut agent = client(&fleet, "agent-db-host-1").await;
    let (_sender, responses) = open(&mut agent, "db-host-2").await;
    let refused = match responses {
        Err(status) => status,
        Ok(mut stream) => next(&mut stream).await.expect_err("another agent's name"),
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("an agent speaks only for itself"),
        "{}",
        refused.message()
    );

    let mut operator = client(&fleet, "operator-alice").await;
    let (_sender, responses) = open(&mut operator, "alice").await;
    let refused = match responses {
        Err(status) => status,
        Ok(mut stream) => next(&mut stream)
            .await
            .expect_err("an operator certificate"),
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("is not an agent identity"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_resume_another_agents_lease() {
    let fleet = fleet().await;
    let mut first = client(&fleet, "agent-db-host-1").await;
    let (_first_sender, responses) = open(&mut first, "db-host-1").await;
    let CoordinatorBody::Handshake(handshake) = next(&mut responses.expect("session"))
        .await
        .expect("handshake")
    else {
        panic!("handshake");
    };
    let mut second = client(&fleet, "agent-db-host-2").await;
    let (sender, receiver) = mpsc::channel(8);
    let hello = Hello {
        agent_id: "db-host-2".to_owned(),
        resume_lease_id: handshake.lease_id,
        ..Hello::default()
    };
    sender
        .send(AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        })
        .await
        .expect("hello");
    let mut responses = second
        .session(ReceiverStream::new(receiver))
        .await
        .expect("session")
        .into_inner();
    let CoordinatorBody::Handshake(other) = next(&mut responses).await.expect("handshake") else {
        panic!("handshake");
    };
    assert_ne!(
        other.lease_id, handshake.lease_id,
        "another agent's lease is never handed over"
    );
    assert_eq!(
        fleet.store.agent_lease("db-host-1").await.expect("read"),
        Some(handshake.lease_id)
    );
}

/// Agent A reporting a result for agent B's shard: refused (nothing reaches the store for the
/// leader), while its result for its own shard, sent after it on the same stream, is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_report_for_another_agents_shard() {
    let fleet = fleet().await;
    let mut owner = client(&fleet, "agent-db-host-2").await;
    let (_owner_sender, owner_responses) = open_with_shards(&mut owner, "db-host-2", &["s2"]).await;
    let mut owner_stream = owner_responses.expect("session");
    assert!(matches!(
        next(&mut owner_stream).await,
        Ok(CoordinatorBody::Handshake(_))
    ));
    let mut intruder = client(&fleet, "agent-db-host-1").await;
    let (sender, responses) = open_with_shards(&mut intruder, "db-host-1", &["s1"]).await;
    let mut stream = responses.expect("session");
    assert!(matches!(
        next(&mut stream).await,
        Ok(CoordinatorBody::Handshake(_))
    ));
    let result = |assignment: &str, shard: &str| AgentMessage {
        body: Some(AgentBody::Result(AssignmentResult {
            assignment_id: assignment.to_owned(),
            shard_id: shard.to_owned(),
            fence_token: 1,
            succeeded: true,
            current_version: "9".to_owned(),
            ..AssignmentResult::default()
        })),
    };
    sender.send(result("p-1~s2~1", "s2")).await.expect("forged");
    sender.send(result("p-1~s1~1", "s1")).await.expect("own");
    let recorded = wait_until(Duration::from_secs(10), || async {
        fleet
            .store
            .read(&keys::result("p-1~s1~1"))
            .await
            .expect("read")
            .is_some()
    })
    .await;
    assert!(
        recorded,
        "the agent's own result is recorded for the leader"
    );
    assert!(
        fleet
            .store
            .read(&keys::result("p-1~s2~1"))
            .await
            .expect("read")
            .is_none(),
        "a result for another agent's shard is refused"
    );
}

/// A replica shutting down while an agent holds a session stops in its stages (the RPC server
/// and its streams, then the background work) instead of waiting on the open stream, and
/// leaves the agent's lease for the agent to resume with another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_ends_open_sessions_and_leaves_their_leases() {
    use std::sync::Arc;

    use fleetshift_common::lease::SessionIntervals;
    use fleetshift_common::tls::identity::Role;
    use fleetshift_common::tls::mtls::TlsFiles;
    use fleetshift_coordinator::config::{CoordinatorConfig, StoreChoice};
    use fleetshift_coordinator::serve::run_replica;
    use fleetshift_coordinator::store::MemoryStore;
    use fleetshift_tests::fleet::{TRUST_DOMAIN, init_pki, issue};
    use tokio_util::sync::CancellationToken;

    let home = tempfile::tempdir().expect("home");
    let pki = home.path().join("pki");
    init_pki(&pki);
    issue(&pki, Role::Coordinator, "c1", &["localhost"]);
    issue(&pki, Role::Agent, "db-host-1", &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let config = CoordinatorConfig {
        coordinator_id: "c1".to_owned(),
        listen: address,
        telemetry_listen: None,
        health_listen: None,
        web: None,
        trust_domain: TRUST_DOMAIN.to_owned(),
        intervals: SessionIntervals::from_heartbeat(Duration::from_secs(1)),
        tls: TlsFiles {
            certificate: pki.join("coordinator-c1.pem"),
            private_key: pki.join("coordinator-c1.key"),
            trust_bundle: pki.join("ca.pem"),
        },
        store: StoreChoice::Memory,
        roles: Roles::default(),
        webhooks: Vec::new(),
        limits: PeerLimits::default(),
    };
    let store = Arc::new(MemoryStore::new());
    let stop = CancellationToken::new();
    let replica = {
        let store = Arc::clone(&store);
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move { run_replica(store, &config, listener, shutdown).await })
    };
    let mut client = AgentServiceClient::new(
        channel_as(
            &format!("https://localhost:{}", address.port()),
            &pki,
            "agent-db-host-1",
        )
        .await,
    );
    let (_sender, responses) = open(&mut client, "db-host-1").await;
    let mut responses = responses.expect("session");
    assert!(matches!(
        next(&mut responses).await,
        Ok(CoordinatorBody::Handshake(_))
    ));
    assert_eq!(store.agents().await.expect("agents").len(), 1);

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), replica).await;
    let served = stopped.expect("the replica stops though a session was open");
    served.expect("replica task").expect("a clean stop");
    assert_eq!(
        store.agents().await.expect("agents").len(),
        1,
        "the session's lease is left for the agent to resume elsewhere"
    );
}
