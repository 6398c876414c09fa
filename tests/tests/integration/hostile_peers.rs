//! Hostile peers holding valid certificates, against a real replica over real mutual TLS:
//! malformed, truncated, oversized and out-of-order messages on agent sessions and watches,
//! generated from a seed (`FLEETSHIFT_HOSTILE_SEED`, `FLEETSHIFT_HOSTILE_CASES`), never crash
//! the replica (no panic anywhere in the process), never hang a call, and never disturb an
//! honest agent's session; an identity past its limits is refused naming the limit while the
//! others keep theirs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetshift_common::proto::MESSAGE_LIMIT;
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{
    AgentMessage, AssignmentResult, CoordinatorMessage, Heartbeat, Hello, HostReply,
    ListShardsRequest, ProgressEvent, ShardFacts, WatchEventsRequest, WatchRolloutRequest,
};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_coordinator::peer_limits::PeerLimits;
use fleetshift_coordinator::store::{Store, keys};
use fleetshift_tests::fleet::{FleetGround, InProcessCoordinator};
use fleetshift_tests::wait::wait_until;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

mod raw;

use fleetshift_testkit::draw::Draw;
use raw::RawCall;

const SESSION: &str = "/fleetshift.v1.AgentService/Session";
const WATCH_ROLLOUT: &str = "/fleetshift.v1.FleetService/WatchRollout";

/// A call that has not ended by then is hung.
const CALL_BOUND: Duration = Duration::from_secs(20);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in this process (each test runs in its own), still printing it.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn roles(viewers: &[&str]) -> Roles {
    let mut roles = Roles::default();
    for viewer in viewers {
        roles.grant(viewer, OperatorRole::Viewer);
    }
    roles
}

/// An honest agent's open session: it heartbeats on demand and checks each ack.
struct Honest {
    sender: mpsc::Sender<AgentMessage>,
    responses: Streaming<CoordinatorMessage>,
    lease: i64,
    sequence: u64,
}

impl Honest {
    async fn open(fleet: &InProcessCoordinator) -> Self {
        let mut client = AgentServiceClient::new(fleet.channel("agent-honest").await);
        let (sender, receiver) = mpsc::channel(8);
        sender
            .send(message(AgentBody::Hello(hello("honest", &["honest-s1"]))))
            .await
            .expect("hello");
        let mut responses = client
            .session(ReceiverStream::new(receiver))
            .await
            .expect("session")
            .into_inner();
        let Some(CoordinatorBody::Handshake(handshake)) = next_body(&mut responses).await else {
            panic!("no handshake");
        };
        Self {
            sender,
            responses,
            lease: handshake.lease_id,
            sequence: 0,
        }
    }

    /// One heartbeat, acknowledged: the session is alive and answered.
    async fn still_answered(&mut self, after: &str) {
        self.sequence += 1;
        self.sender
            .send(message(AgentBody::Heartbeat(Heartbeat {
                sequence: self.sequence,
                ..Heartbeat::default()
            })))
            .await
            .unwrap_or_else(|_| panic!("the honest session closed after {after}"));
        match next_body(&mut self.responses).await {
            Some(CoordinatorBody::HeartbeatAck(ack)) => {
                assert_eq!(ack.sequence, self.sequence, "after {after}");
            }
            other => panic!("the honest session got {other:?} after {after}"),
        }
    }
}

async fn next_body(responses: &mut Streaming<CoordinatorMessage>) -> Option<CoordinatorBody> {
    tokio::time::timeout(CALL_BOUND, responses.next())
        .await
        .expect("an answer in time")
        .and_then(Result::ok)
        .and_then(|message| message.body)
}

fn message(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn hello(agent: &str, shards: &[&str]) -> Hello {
    Hello {
        agent_id: agent.to_owned(),
        agent_version: "hostile".to_owned(),
        shards: shards
            .iter()
            .map(|shard| ShardFacts {
                shard_id: (*shard).to_owned(),
                reachable: true,
                ..ShardFacts::default()
            })
            .collect(),
        ..Hello::default()
    }
}

/// Messages a hostile agent might follow its Hello with, each aimed at another's work.
fn aimed(draw: &mut Draw) -> AgentMessage {
    match draw.below(5) {
        0 => message(AgentBody::Result(AssignmentResult {
            assignment_id: "p-1~honest-s1~1".to_owned(),
            shard_id: if draw.below(2) == 0 {
                "hostile-s1"
            } else {
                "honest-s1"
            }
            .to_owned(),
            fence_token: 1,
            succeeded: true,
            ..AssignmentResult::default()
        })),
        1 => message(AgentBody::Progress(ProgressEvent {
            shard_id: "honest-s1".to_owned(),
            assignment_id: "p-1~honest-s1~1".to_owned(),
            ..ProgressEvent::default()
        })),
        2 => message(AgentBody::HostReply(HostReply {
            request_id: raw::text(draw, 12),
            ..HostReply::default()
        })),
        3 => message(AgentBody::Hello(hello("hostile", &["hostile-s1"]))),
        _ => message(AgentBody::Heartbeat(Heartbeat {
            sequence: draw.next_u64(),
            ..Heartbeat::default()
        })),
    }
}

/// The frames of one hostile session, by `case`'s kind.
fn session_frames(draw: &mut Draw, case: u64) -> (&'static str, Vec<Vec<u8>>) {
    let own_hello = message(AgentBody::Hello(hello("hostile", &["hostile-s1"]))).encode_to_vec();
    match case % 7 {
        0 => ("random bytes", vec![raw::bytes(draw, 512)]),
        1 => ("a mutated Hello", vec![raw::mutated(draw, &own_hello)]),
        2 => {
            let cut = draw.index(own_hello.len());
            ("a truncated Hello", vec![own_hello[..cut].to_vec()])
        }
        3 => (
            "a Hello impersonating another agent",
            vec![message(AgentBody::Hello(hello("honest", &["honest-s1"]))).encode_to_vec()],
        ),
        4 => {
            let mut frames = vec![own_hello];
            for _ in 0..=draw.below(4) {
                frames.push(aimed(draw).encode_to_vec());
            }
            ("a Hello then messages aimed at another's work", frames)
        }
        5 => {
            let later = aimed(draw).encode_to_vec();
            ("a first message that is not Hello", vec![later, own_hello])
        }
        _ => {
            let mut frames = vec![own_hello];
            let aimed = aimed(draw).encode_to_vec();
            frames.push(raw::mutated(draw, &aimed));
            ("a Hello then a mutated message", frames)
        }
    }
}

/// Out-of-order and misaddressed sessions of the hostile agent, each with how it must end.
fn scripted(honest_lease: i64) -> Vec<(&'static str, Vec<AgentMessage>, Code)> {
    let own = || message(AgentBody::Hello(hello("hostile", &["hostile-s1"])));
    let result = |shard: &str| {
        message(AgentBody::Result(AssignmentResult {
            assignment_id: "p-1~honest-s1~1".to_owned(),
            shard_id: shard.to_owned(),
            fence_token: 1,
            succeeded: true,
            ..AssignmentResult::default()
        }))
    };
    vec![
        (
            "a heartbeat before Hello",
            vec![message(AgentBody::Heartbeat(Heartbeat::default()))],
            Code::InvalidArgument,
        ),
        (
            "a message without a body",
            vec![AgentMessage::default()],
            Code::InvalidArgument,
        ),
        (
            "a Hello naming the honest agent",
            vec![message(AgentBody::Hello(hello("honest", &["honest-s1"])))],
            Code::PermissionDenied,
        ),
        ("two Hellos", vec![own(), own()], Code::InvalidArgument),
        (
            "a result under another shard's assignment id",
            vec![own(), result("hostile-s1")],
            Code::InvalidArgument,
        ),
        (
            "a result for another agent's shard (dropped)",
            vec![own(), result("honest-s1")],
            Code::Ok,
        ),
        (
            "progress for another agent's shard (not relayed)",
            vec![
                own(),
                message(AgentBody::Progress(ProgressEvent {
                    shard_id: "honest-s1".to_owned(),
                    ..ProgressEvent::default()
                })),
            ],
            Code::Ok,
        ),
        (
            "a Hello resuming the honest agent's lease (a lease of its own instead)",
            vec![message(AgentBody::Hello(Hello {
                resume_lease_id: honest_lease,
                ..hello("hostile", &["hostile-s1"])
            }))],
            Code::Ok,
        ),
    ]
}

/// The frames of one hostile watch.
fn watch_frames(draw: &mut Draw, case: u64) -> (&'static str, Vec<Vec<u8>>) {
    let request = WatchRolloutRequest {
        plan_id: if draw.below(2) == 0 {
            raw::text(draw, 40)
        } else {
            "p-unknown".to_owned()
        },
        since: draw.next_u64(),
        ..WatchRolloutRequest::default()
    }
    .encode_to_vec();
    match case % 4 {
        0 => ("random bytes", vec![raw::bytes(draw, 256)]),
        1 => ("a mutated request", vec![raw::mutated(draw, &request)]),
        2 => ("two requests", vec![request.clone(), request]),
        _ => ("no request", Vec::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_never_crash_the_replica_nor_disturb_an_honest_agent() {
    count_panics();
    let seed = setting("FLEETSHIFT_HOSTILE_SEED", 20_261_206);
    let cases = setting("FLEETSHIFT_HOSTILE_CASES", 150);
    let fleet = InProcessCoordinator::start(
        roles(&["alice", "mallory"]),
        &["honest", "hostile"],
        &["alice", "mallory"],
    )
    .await;
    let mut honest = Honest::open(&fleet).await;
    let hostile_agent = RawCall::new(fleet.channel("agent-hostile").await);
    let hostile_operator = RawCall::new(fleet.channel("operator-mallory").await);
    for (what, messages, expected) in scripted(honest.lease) {
        let frames = messages.iter().map(Message::encode_to_vec).collect();
        let ended = tokio::time::timeout(CALL_BOUND, hostile_agent.call(SESSION, frames))
            .await
            .unwrap_or_else(|_| panic!("{what}: the call hung"));
        let code = ended
            .as_ref()
            .map_or_else(tonic::Status::code, |_| Code::Ok);
        assert_eq!(code, expected, "{what}: {ended:?}");
        honest.still_answered(what).await;
    }
    let mut draw = Draw::new(seed);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        let (what, frames, call) = if case % 3 == 2 {
            let (what, frames) = watch_frames(&mut draw, case);
            (what, frames, (&hostile_operator, WATCH_ROLLOUT))
        } else {
            let (what, frames) = session_frames(&mut draw, case);
            (what, frames, (&hostile_agent, SESSION))
        };
        let described = format!("seed {seed} case {case} ({what} on {})", call.1);
        let ended = tokio::time::timeout(CALL_BOUND, call.0.call(call.1, frames))
            .await
            .unwrap_or_else(|_| panic!("{described}: the call hung"));
        let code = match &ended {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        // The replica's own faults would be INTERNAL too: only bytes that are no message (or
        // no message at all), which tonic refuses before any of ours runs, may end that way.
        if let Err(status) = &ended {
            let undecodable = ["failed to decode", "Missing request message"]
                .iter()
                .any(|refusal| status.message().contains(refusal));
            assert!(
                !matches!(code, Code::Unknown | Code::DataLoss)
                    && (code != Code::Internal || undecodable),
                "{described}: {status:?}"
            );
        }
        *codes.entry(format!("{code:?}")).or_default() += 1;
        honest.still_answered(&described).await;
    }

    let oversized = hostile_agent
        .call(SESSION, vec![vec![0; MESSAGE_LIMIT + 1]])
        .await;
    let refused = oversized.expect_err("a message over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    honest.still_answered("an oversized message").await;

    assert_eq!(
        fleet.store.agent_lease("honest").await.expect("read"),
        Some(honest.lease),
        "the honest agent's lease was replaced"
    );
    assert_eq!(
        fleet
            .store
            .read(&keys::result("p-1~honest-s1~1"))
            .await
            .expect("read"),
        None,
        "a forged result took the place of the honest agent's"
    );
    let mut viewer = FleetServiceClient::new(fleet.channel("operator-alice").await);
    let shards = viewer
        .list_shards(ListShardsRequest::default())
        .await
        .expect("the fleet API still answers")
        .into_inner();
    assert!(
        shards
            .shards
            .iter()
            .any(|shard| shard.shard_id == "honest-s1"),
        "{shards:?}"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
    eprintln!("seed {seed}: {cases} hostile calls and one oversized message; ended with {codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_past_its_limits_is_refused_while_the_others_keep_theirs() {
    let limits = PeerLimits {
        requests_per_second: 2,
        burst: 6,
        calls_per_identity: 3,
    };
    let fleet = FleetGround::start()
        .await
        .in_process_limited(
            roles(&["alice", "mallory", "watcher"]),
            &[],
            &["alice", "mallory", "watcher"],
            limits,
        )
        .await;
    let mut flooding = FleetServiceClient::new(fleet.channel("operator-mallory").await);
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = flooding.list_shards(ListShardsRequest::default()).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("20 calls at once exceed a burst of 6");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("/operator/mallory sent more than 6 requests at once or 2 per second"),
        "{refused:?}"
    );
    assert!(refused.message().contains("retry after"), "{refused:?}");
    let mut other = FleetServiceClient::new(fleet.channel("operator-alice").await);
    other
        .list_shards(ListShardsRequest::default())
        .await
        .expect("another identity keeps its budget");

    let mut watching = FleetServiceClient::new(fleet.channel("operator-watcher").await);
    let mut open = Vec::new();
    for _ in 0..limits.calls_per_identity {
        open.push(
            watching
                .watch_events(WatchEventsRequest::default())
                .await
                .expect("a watch within the limit")
                .into_inner(),
        );
    }
    let refused = watching
        .watch_events(WatchEventsRequest::default())
        .await
        .expect_err("one watch too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("already has 3 calls open"),
        "{refused:?}"
    );
    drop(open.pop());
    let admitted = wait_until(Duration::from_secs(20), || {
        let mut watching = watching.clone();
        async move {
            match watching.watch_events(WatchEventsRequest::default()).await {
                Ok(stream) => {
                    drop(stream);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(admitted, "a watch that ended still counts as open");
}
