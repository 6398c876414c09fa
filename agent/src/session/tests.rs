//! The session's logic on paused time, over in-memory streams: no network, no database.

use std::collections::VecDeque;
use std::sync::Mutex;

use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, Assignment, AssignmentResult, Cancel, CoordinatorMessage, ErrorDetail, ErrorKind,
    Handshake, HeartbeatAck, HostReply, HostRequest, ProgressEvent, ShardFacts,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use super::*;
use crate::stop::{StopCause, StopSignal};

const HEARTBEAT: Duration = Duration::from_secs(1);

/// Work that runs until it is told to stop, then reports why; its facts name `shards`.
#[derive(Debug, Clone)]
struct Recorder {
    stopped: mpsc::UnboundedSender<(String, StopCause)>,
    shards: Vec<String>,
}

impl Work for Recorder {
    async fn assignment(
        &self,
        assignment: Assignment,
        _lease_ttl: Duration,
        stop: StopSignal,
        _progress: mpsc::UnboundedSender<ProgressEvent>,
    ) -> AssignmentResult {
        stop.token().cancelled().await;
        let cause = stop.cause().expect("a stopped run has a cause");
        let (kind, message) = match &cause {
            StopCause::Withdrawn => (ErrorKind::Stopped, "withdrawn".to_owned()),
            StopCause::Interrupted(why) => (ErrorKind::Interrupted, why.clone()),
        };
        let _ = self.stopped.send((assignment.assignment_id.clone(), cause));
        AssignmentResult {
            assignment_id: assignment.assignment_id,
            shard_id: assignment.shard_id,
            fence_token: assignment.fence_token,
            error: Some(ErrorDetail {
                kind: kind.into(),
                message,
            }),
            ..AssignmentResult::default()
        }
    }

    async fn host_request(&self, request: HostRequest, _stop: CancellationToken) -> HostReply {
        HostReply {
            request_id: request.request_id,
            ..HostReply::default()
        }
    }

    async fn facts(&self) -> Vec<ShardFacts> {
        facts_of(&self.shards)
    }

    fn hold(&self, _throttles: Vec<fleetshift_common::proto::v1::FleetThrottle>) {}
}

/// `future`'s output, or a failure after a minute of (paused, virtual) time: a broken
/// session fails its test instead of hanging it.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("not within a minute of session time")
}

fn recorder() -> (Recorder, mpsc::UnboundedReceiver<(String, StopCause)>) {
    let (stopped, record) = mpsc::unbounded_channel();
    let shards = Vec::new();
    (Recorder { stopped, shards }, record)
}

fn facts_of(shards: &[String]) -> Vec<ShardFacts> {
    shards
        .iter()
        .map(|shard| ShardFacts {
            shard_id: shard.clone(),
            ..ShardFacts::default()
        })
        .collect()
}

fn handshake(lease: i64) -> CoordinatorMessage {
    handshake_from(lease, fleetshift_common::versions::VERSION)
}

/// The handshake of a coordinator at `version`.
fn handshake_from(lease: i64, version: &str) -> CoordinatorMessage {
    let intervals = SessionIntervals::from_heartbeat(HEARTBEAT);
    let duration = |value: Duration| prost_types::Duration::try_from(value).ok();
    CoordinatorMessage {
        body: Some(CoordinatorBody::Handshake(Handshake {
            lease_id: lease,
            coordinator_id: "c1".to_owned(),
            heartbeat_interval: duration(intervals.heartbeat),
            lease_ttl: duration(intervals.lease_ttl),
            safety_margin: duration(intervals.safety_margin),
            coordinator_version: version.to_owned(),
            oldest_agent: fleetshift_common::versions::OLDEST_AGENT.to_owned(),
        })),
    }
}

fn assignment(id: &str, shard: &str, token: i64) -> CoordinatorMessage {
    CoordinatorMessage {
        body: Some(CoordinatorBody::Assignment(Assignment {
            assignment_id: id.to_owned(),
            shard_id: shard.to_owned(),
            fence_token: token,
            ..Assignment::default()
        })),
    }
}

/// The replica's end of an in-memory session: what it sends, and what the agent sent it
/// (heartbeats answered, when it acknowledges them, and not passed on).
struct Replica {
    to_agent: mpsc::UnboundedSender<Result<CoordinatorMessage, Status>>,
    from_agent: mpsc::UnboundedReceiver<AgentMessage>,
}

impl Replica {
    fn send(&self, message: CoordinatorMessage) {
        self.to_agent.send(Ok(message)).expect("the agent listens");
    }

    /// The next message other than a heartbeat.
    async fn next(&mut self) -> AgentMessage {
        self.from_agent.recv().await.expect("the agent sent more")
    }
}

/// A session's streams with the handshake (lease `lease`) already waiting, and the replica's
/// end; heartbeats are acknowledged when `acknowledging`.
fn streams(lease: i64, acknowledging: bool) -> (Streams, Replica) {
    streams_after(handshake(lease), acknowledging)
}

/// Like [`streams`], with `handshake` waiting.
fn streams_after(handshake: CoordinatorMessage, acknowledging: bool) -> (Streams, Replica) {
    let (outbound, mut sent) = mpsc::channel::<AgentMessage>(16);
    let (to_agent, inbound) = mpsc::unbounded_channel();
    to_agent.send(Ok(handshake)).expect("open");
    let (passed, from_agent) = mpsc::unbounded_channel();
    let acknowledge = to_agent.clone();
    tokio::spawn(async move {
        while let Some(message) = sent.recv().await {
            match &message.body {
                Some(AgentBody::Heartbeat(heartbeat)) => {
                    if acknowledging {
                        let ack = CoordinatorMessage {
                            body: Some(CoordinatorBody::HeartbeatAck(HeartbeatAck {
                                sequence: heartbeat.sequence,
                                lease_remaining: None,
                            })),
                        };
                        let _ = acknowledge.send(Ok(ack));
                    }
                }
                _ => {
                    let _ = passed.send(message);
                }
            }
        }
    });
    let streams = Streams {
        outbound,
        inbound: Box::pin(UnboundedReceiverStream::new(inbound)),
    };
    (
        streams,
        Replica {
            to_agent,
            from_agent,
        },
    )
}

fn metrics() -> Arc<AgentMetrics> {
    AgentMetrics::register(&mut Registry::default())
}

/// One session (init → run → cleanup) on its own task; how it ended.
fn start(work: Recorder, streams: Streams, shutdown: &CancellationToken) -> JoinHandle<Ended> {
    let opened = Opened::announcing(Instant::now(), &[]);
    start_refreshing(work, streams, shutdown, opened, Duration::from_secs(3600))
}

/// Like [`start`], the Hello `opened`, facts refreshed every `refresh`.
fn start_refreshing(
    work: Recorder,
    streams: Streams,
    shutdown: &CancellationToken,
    opened: Opened,
    refresh: Duration,
) -> JoinHandle<Ended> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut finished = Finished::default();
        let mut last_lease = 0;
        let (mut session, _) = Session::init(
            work,
            streams,
            opened,
            &mut last_lease,
            metrics(),
            &mut finished,
            &shutdown,
        )
        .await
        .expect("handshake");
        let ended = session.run(&shutdown, refresh).await;
        session.cleanup(&ended).await;
        ended
    })
}

fn result_of(message: &AgentMessage) -> &AssignmentResult {
    match &message.body {
        Some(AgentBody::Result(result)) => result,
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn without_acknowledgements_work_stops_before_the_lease_can_lapse() {
    let (work, mut stopped) = recorder();
    let (streams, mut replica) = streams(7, false);
    let shutdown = CancellationToken::new();
    let opened = Instant::now();
    let session = start(work, streams, &shutdown);
    replica.send(assignment("a1", "s1", 5));
    let (id, cause) = within(stopped.recv()).await.expect("the run was stopped");
    let stopped_at = Instant::now();
    assert_eq!(id, "a1");
    let StopCause::Interrupted(why) = cause else {
        panic!("a lease that may lapse interrupts, it does not withdraw: {cause:?}");
    };
    assert!(why.contains("no acknowledgement within the lease"), "{why}");
    let lease_ttl = SessionIntervals::from_heartbeat(HEARTBEAT).lease_ttl;
    assert!(
        stopped_at < opened + lease_ttl,
        "stopped {:?} after the Hello; the lease lapses at {lease_ttl:?}",
        stopped_at - opened
    );
    assert_eq!(result_of(&within(replica.next()).await).assignment_id, "a1");
    let ended = within(session).await.expect("session task");
    assert!(matches!(ended, Ended::Lost(reason) if reason.contains("no acknowledgement")));
}

#[tokio::test(start_paused = true)]
async fn a_newer_assignment_for_the_shard_stops_the_older_run() {
    let (work, mut stopped) = recorder();
    let (streams, mut replica) = streams(7, true);
    let shutdown = CancellationToken::new();
    let session = start(work, streams, &shutdown);
    replica.send(assignment("p~s1~5", "s1", 5));
    replica.send(assignment("other-shard", "s2", 4));
    replica.send(assignment("p~s1~6", "s1", 6));
    let (id, cause) = within(stopped.recv()).await.expect("superseded");
    assert_eq!(id, "p~s1~5");
    assert!(
        matches!(&cause, StopCause::Interrupted(why) if why.contains("superseded by assignment p~s1~6")),
        "{cause:?}"
    );
    assert_eq!(
        result_of(&within(replica.next()).await).assignment_id,
        "p~s1~5"
    );
    shutdown.cancel();
    let mut rest: Vec<(String, StopCause)> = Vec::new();
    while let Some(stop) = within(stopped.recv()).await {
        rest.push(stop);
    }
    rest.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(
        rest.len(),
        2,
        "the newer run and the other shard's ran on: {rest:?}"
    );
    // Shutdown reaches the runs through the session's token at once, so the cause is the
    // token's or the cleanup's, whichever the run reads first: an interruption either way.
    for (_, cause) in &rest {
        assert!(matches!(cause, StopCause::Interrupted(_)), "{cause:?}");
    }
    assert_eq!(
        within(session).await.expect("session task"),
        Ended::Shutdown
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_reaches_the_run_and_a_redelivered_assignment_is_answered_not_rerun() {
    let (work, mut stopped) = recorder();
    let (streams, mut replica) = streams(7, true);
    let shutdown = CancellationToken::new();
    let session = start(work, streams, &shutdown);
    replica.send(assignment("a1", "s1", 5));
    replica.send(CoordinatorMessage {
        body: Some(CoordinatorBody::Cancel(Cancel {
            assignment_id: "a1".to_owned(),
            reason: "operator cancelled the plan".to_owned(),
        })),
    });
    assert_eq!(
        within(stopped.recv()).await,
        Some(("a1".to_owned(), StopCause::Withdrawn))
    );
    let first = result_of(&within(replica.next()).await).clone();
    let refreshed = within(replica.next()).await;
    assert!(
        matches!(refreshed.body, Some(AgentBody::Facts(_))),
        "fresh facts follow a run's result: {refreshed:?}"
    );
    replica.send(assignment("a1", "s1", 5));
    let again = result_of(&within(replica.next()).await).clone();
    assert_eq!(again, first, "the same result, sent again");
    shutdown.cancel();
    assert_eq!(
        within(session).await.expect("session task"),
        Ended::Shutdown
    );
    assert_eq!(stopped.recv().await, None, "a1 ran once");
}

/// Hands out prepared sessions and keeps every Hello it was sent.
struct Scripted {
    sessions: Mutex<VecDeque<Streams>>,
    hellos: mpsc::UnboundedSender<Hello>,
}

impl Connect for Scripted {
    async fn open(
        &self,
        _endpoint: &CoordinatorEndpoint,
        hello: Hello,
    ) -> Result<Streams, SessionError> {
        let _ = self.hellos.send(hello);
        let next = self.sessions.lock().expect("not poisoned").pop_front();
        next.ok_or_else(|| SessionError::Refused("no more sessions in this script".to_owned()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_offers_the_last_lease_for_resumption() {
    let (work, _stopped) = recorder();
    let (first, first_replica) = streams(42, true);
    let (second, _second_replica) = streams(42, true);
    let (hellos, mut hello_seen) = mpsc::unbounded_channel();
    let endpoint = CoordinatorEndpoint {
        address: "https://c1:7443".to_owned(),
        server_name: "c1".to_owned(),
    };
    let sessions = Sessions {
        connect: Scripted {
            sessions: Mutex::new(VecDeque::from([first, second])),
            hellos,
        },
        endpoints: std::slice::from_ref(&endpoint),
        facts_refresh: Duration::from_secs(3600),
        hello: Hello {
            agent_id: "db-host-1".to_owned(),
            ..Hello::default()
        },
        work,
    };
    let telemetry = SessionTelemetry::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let script = async {
        let opening = within(hello_seen.recv()).await.expect("first Hello");
        assert_eq!(opening.agent_id, "db-host-1");
        assert_eq!(opening.resume_lease_id, 0, "nothing to resume at first");
        // The replica goes away: the agent reconnects and offers lease 42 back.
        first_replica
            .to_agent
            .send(Err(Status::unavailable("replica restarting")))
            .expect("open");
        let reconnecting = within(hello_seen.recv()).await.expect("second Hello");
        assert_eq!(reconnecting.resume_lease_id, 42);
        shutdown.cancel();
    };
    tokio::join!(sessions.hold(&telemetry, &shutdown), script);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_too_old_for_this_agent_is_refused_naming_both_versions() {
    let (work, _stopped) = recorder();
    let (streams, _replica) = streams_after(handshake_from(7, "0.0.1"), true);
    let mut finished = Finished::default();
    let mut last_lease = 0;
    let refused = Session::init(
        work,
        streams,
        Opened::announcing(Instant::now(), &[]),
        &mut last_lease,
        metrics(),
        &mut finished,
        &CancellationToken::new(),
    )
    .await
    .map(drop)
    .expect_err("too old");
    let SessionError::Refused(message) = refused else {
        panic!("a refusal, got {refused:?}");
    };
    assert!(
        message.starts_with(&format!(
            "coordinator 0.0.1 is too old for agent {}",
            fleetshift_common::versions::VERSION
        )) && message.ends_with("upgrade the coordinators first"),
        "{message}"
    );
    assert_eq!(last_lease, 0, "no lease taken from a refused coordinator");
}

/// A session whose Hello announced `announced`, its facts refreshed every second; how it
/// ended, and what the replica heard before.
async fn refreshed_session(work: Recorder, announced: &[String]) -> (Ended, Vec<AgentMessage>) {
    let (streams, mut replica) = streams(7, true);
    let shutdown = CancellationToken::new();
    let opened = Opened::announcing(Instant::now(), &facts_of(announced));
    let session = start_refreshing(work, streams, &shutdown, opened, Duration::from_secs(1));
    let mut heard = Vec::new();
    let ended = tokio::select! {
        ended = within(session) => ended.expect("session task"),
        () = async {
            // Two refreshes of the announced shards go out as facts; then the test stops. A
            // session that ended closes its stream first: its end is the answer.
            while heard.len() < 2 {
                match replica.from_agent.recv().await {
                    Some(message) => heard.push(message),
                    None => break,
                }
            }
            if heard.len() == 2 {
                shutdown.cancel();
            }
            std::future::pending::<()>().await;
        } => unreachable!("pending"),
    };
    (ended, heard)
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_finds_other_shards_ends_the_session_to_announce_them() {
    let (mut work, _stopped) = recorder();
    work.shards = vec!["billing.tenant_1".to_owned(), "billing.tenant_2".to_owned()];
    let (ended, heard) = refreshed_session(work.clone(), &work.shards[..1]).await;
    assert_eq!(ended, Ended::Reannounce);
    assert!(
        heard.is_empty(),
        "facts of unannounced shards went out: {heard:?}"
    );

    let (ended, heard) = refreshed_session(work.clone(), &work.shards).await;
    assert_eq!(ended, Ended::Shutdown);
    assert!(
        heard
            .iter()
            .all(|message| matches!(&message.body, Some(AgentBody::Facts(refresh)) if refresh.shards.len() == 2)),
        "{heard:?}"
    );
}
