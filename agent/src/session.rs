//! The agent's session with the fleet: connect to a coordinator over mutual TLS, say Hello
//! with the host's shard facts (sent again, fresh, every refresh interval while no assignment
//! runs), take the Handshake's intervals, heartbeat and track the lease
//! on the agent's own clock ([`LeaseClock`]); reconnect with backoff when the session is lost.
//! Assignments run under the claim's fencing token and stop (their running statement
//! cancelled) when the lease may lapse, when cancelled, or at shutdown; their results go back
//! on the stream.
//! On shutdown the agent closes its stream, so the coordinator revokes its lease at once.

use fleetshift_common::fence::FenceToken;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use backon::{BackoffBuilder, ExponentialBuilder};
use fleetshift_common::lease::{LeaseClock, SessionIntervals};
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, AssignmentResult, BackupReply, CoordinatorMessage, Engine, ErrorKind,
    FactsRefresh, Handshake, Heartbeat, Hello, ProgressEvent, ShardFacts,
};
use fleetshift_common::telemetry::endpoint::Readiness;
use fleetshift_common::tls;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use crate::config::{AgentConfig, CoordinatorEndpoint, CoordinatorLink};
use crate::metrics::AgentMetrics;
use crate::stop::{StopCause, StopSignal};
use crate::{assignment, check, requests};

/// What the session tells the telemetry endpoint: its metrics, and readiness (ready while a
/// session is established).
#[derive(Debug, Clone)]
pub struct SessionTelemetry {
    pub metrics: Arc<AgentMetrics>,
    pub readiness: Arc<watch::Sender<Readiness>>,
}

impl SessionTelemetry {
    /// Metrics registered in `registry`; not ready until a session is established.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            metrics: AgentMetrics::register(registry),
            readiness: Arc::new(watch::Sender::new(Readiness::not_ready(
                "no session with a coordinator yet",
            ))),
        }
    }

    fn established(&self, coordinator: &str) {
        self.metrics.session_up(true);
        self.readiness.send_replace(Readiness::Ready);
        tracing::debug!(%coordinator, "ready");
    }

    fn lost(&self, reason: &str) {
        self.metrics.session_up(false);
        self.readiness.send_replace(Readiness::not_ready(format!(
            "no session with a coordinator: {reason}"
        )));
    }
}

/// How a session ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost(String),
}

/// Holds a session until `shutdown` is cancelled, reconnecting as needed (every failure is
/// retried, so this only ends at shutdown). When a session is lost or cannot be opened the
/// agent moves to the link's next replica: any replica can resume its lease.
pub async fn run(
    config: Arc<AgentConfig>,
    link: &CoordinatorLink,
    telemetry: &SessionTelemetry,
    shutdown: CancellationToken,
) {
    let mut delays = reconnect_delays();
    let mut finished = Finished::default();
    // The lease of the last session, offered for resumption so claims bound to it survive a
    // reconnect (a coordinator restart, a network blip).
    let mut last_lease = 0;
    for endpoint in link.endpoints.iter().cycle() {
        match session(
            &config,
            endpoint,
            link,
            telemetry,
            &shutdown,
            &mut last_lease,
            &mut finished,
        )
        .await
        {
            Ok(Ended::Shutdown) => {
                telemetry.lost("shutting down");
                return;
            }
            Ok(Ended::Lost(reason)) => {
                tracing::warn!(coordinator = %endpoint.address, %reason, "session lost; reconnecting");
                telemetry.lost(&reason);
                delays = reconnect_delays();
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::warn!(coordinator = %endpoint.address, %error, "cannot hold a session; retrying");
                telemetry.lost(&error);
            }
        }
        telemetry.metrics.reconnecting();
        let delay = delays.next().unwrap_or(Duration::from_secs(2));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Backoff between reconnects, at most one default heartbeat (before a handshake the agent
/// knows no other base).
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(SessionIntervals::default().heartbeat)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn session(
    config: &Arc<AgentConfig>,
    endpoint: &CoordinatorEndpoint,
    link: &CoordinatorLink,
    telemetry: &SessionTelemetry,
    shutdown: &CancellationToken,
    last_lease: &mut i64,
    finished: &mut Finished,
) -> anyhow::Result<Ended> {
    let metrics = &telemetry.metrics;
    let channel =
        tls::channel::connect(&endpoint.address, &endpoint.server_name, &link.tls).await?;
    let mut client = AgentServiceClient::new(channel);
    let (outbound, receiver) = mpsc::channel(16);
    let hello = Hello {
        resume_lease_id: *last_lease,
        ..hello(config).await
    };
    // The lease is granted after the Hello is sent: the Hello counts as heartbeat 0.
    let hello_sent = Instant::now();
    outbound
        .send(AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        })
        .await
        .context("opening the session")?;
    let mut inbound = client
        .session(ReceiverStream::new(receiver))
        .await
        .map_err(|status| {
            anyhow::anyhow!("the coordinator refused the session: {}", status.message())
        })?
        .into_inner();
    let handshake = match inbound.message().await {
        Ok(Some(CoordinatorMessage {
            body: Some(CoordinatorBody::Handshake(handshake)),
        })) => handshake,
        Ok(other) => bail!("expected a handshake, got {other:?}"),
        Err(status) => bail!("the coordinator refused the session: {}", status.message()),
    };
    let intervals = intervals(&handshake)?;
    if *last_lease != 0 && *last_lease != handshake.lease_id {
        tracing::warn!(
            previous = *last_lease,
            lease = handshake.lease_id,
            "the previous lease could not be resumed; its claims are released"
        );
    }
    *last_lease = handshake.lease_id;
    tracing::info!(coordinator = %handshake.coordinator_id, lease = handshake.lease_id, heartbeat_ms = intervals.heartbeat.as_millis() as u64, "session established");
    let mut clock = LeaseClock::new(intervals);
    clock.heartbeat_sent(0, hello_sent);
    clock.acknowledged(0);
    telemetry.established(&handshake.coordinator_id);
    // Every assignment stops when this does: at shutdown, or when the lease may lapse.
    let work = shutdown.child_token();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut tasks: JoinSet<AssignmentResult> = JoinSet::new();
    // Backup requests being answered, by id (a request delivered again is not run twice).
    let mut answering: HashSet<String> = HashSet::new();
    let mut replies: JoinSet<BackupReply> = JoinSet::new();
    let (progress, mut reported) = mpsc::unbounded_channel::<ProgressEvent>();
    let mut ticks = tokio::time::interval(intervals.heartbeat);
    let mut refreshes =
        tokio::time::interval_at(Instant::now() + link.facts_refresh, link.facts_refresh);
    let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
    let mut sequence = 0;
    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            _ = ticks.tick() => {
                sequence += 1;
                clock.heartbeat_sent(sequence, Instant::now());
                let heartbeat = Heartbeat { sequence, running_assignments: running.keys().cloned().collect() };
                if outbound.send(AgentMessage { body: Some(AgentBody::Heartbeat(heartbeat)) }).await.is_err() {
                    break Ended::Lost("the session's stream closed".to_owned());
                }
                if let Some(until) = clock.work_until() {
                    metrics.lease_remaining(until.saturating_duration_since(Instant::now()));
                }
                if clock.work_until().is_some() && !clock.may_work(Instant::now()) {
                    break Ended::Lost("no acknowledgement within the lease: it may lapse, so all work stopped".to_owned());
                }
            }
            _ = refreshes.tick() => {
                // Reading catalogs while a revision runs would only queue behind its locks.
                if running.is_empty() && refreshing.as_ref().is_none_or(|task| task.is_finished()) {
                    let config = Arc::clone(config);
                    let outbound = outbound.clone();
                    refreshing = Some(tokio::spawn(async move {
                        let refresh = FactsRefresh { shards: shard_facts(&config).await };
                        // A closed stream ends the session in the loop.
                        let _ = outbound.send(AgentMessage { body: Some(AgentBody::Facts(refresh)) }).await;
                    }));
                }
            }
            Some(event) = reported.recv() => {
                metrics.observe(&event);
                if outbound.send(AgentMessage { body: Some(AgentBody::Progress(event)) }).await.is_err() {
                    break Ended::Lost("the session's stream closed".to_owned());
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok(result) = joined else { continue };
                log_outcome(&result);
                running.remove(&result.assignment_id);
                finished.remember(&result);
                metrics.assignments_running(running.len());
                // An assignment's progress goes out before its result.
                while let Ok(event) = reported.try_recv() {
                    metrics.observe(&event);
                    if outbound.send(AgentMessage { body: Some(AgentBody::Progress(event)) }).await.is_err() {
                        break;
                    }
                }
                if outbound.send(AgentMessage { body: Some(AgentBody::Result(result)) }).await.is_err() {
                    break Ended::Lost("the session's stream closed".to_owned());
                }
            }
            Some(joined) = replies.join_next(), if !replies.is_empty() => {
                let Ok(reply) = joined else { continue };
                answering.remove(&reply.request_id);
                if outbound.send(AgentMessage { body: Some(AgentBody::BackupReply(reply)) }).await.is_err() {
                    break Ended::Lost("the session's stream closed".to_owned());
                }
            }
            message = inbound.message() => match message {
                Ok(Some(CoordinatorMessage { body: Some(CoordinatorBody::HeartbeatAck(ack)) })) => {
                    clock.acknowledged(ack.sequence);
                }
                Ok(Some(CoordinatorMessage { body: Some(CoordinatorBody::Assignment(assignment)) })) => {
                    if running.contains_key(&assignment.assignment_id) {
                        // Delivered again after a reconnect: it is running already.
                        continue;
                    }
                    if let Some(result) = finished.result_of(&assignment.assignment_id) {
                        // Delivered again after a reconnect: it ended, and its result may not
                        // have arrived. It never runs twice under one claim.
                        tracing::info!(assignment = %assignment.assignment_id, "assignment delivered again after it ended; sending its result again");
                        if outbound.send(AgentMessage { body: Some(AgentBody::Result(result)) }).await.is_err() {
                            break Ended::Lost("the session's stream closed".to_owned());
                        }
                        continue;
                    }
                    let stop = StopSignal::child_of(&work);
                    if !clock.may_work(Instant::now()) {
                        stop.stop(StopCause::Interrupted("the agent's session lease may lapse before the assignment could start".to_owned()));
                    }
                    for (id, older) in &running {
                        if older.shard == assignment.shard_id && older.fence_token < assignment.fence_token {
                            tracing::info!(assignment = %id, newer = %assignment.assignment_id, "a newer assignment for the shard supersedes a running one");
                            older.stop.stop(StopCause::Interrupted(format!(
                                "superseded by assignment {} under a newer claim (fencing token {})",
                                assignment.assignment_id, assignment.fence_token
                            )));
                        }
                    }
                    tracing::info!(assignment = %assignment.assignment_id, shard = %assignment.shard_id, fence = assignment.fence_token, "assignment received");
                    running.insert(assignment.assignment_id.clone(), Running {
                        shard: assignment.shard_id.clone(),
                        fence_token: assignment.fence_token,
                        stop: stop.clone(),
                    });
                    metrics.assignments_running(running.len());
                    let config = Arc::clone(config);
                    let metrics = Arc::clone(metrics);
                    let progress = progress.clone();
                    let lease_ttl = intervals.lease_ttl;
                    tasks.spawn(async move { assignment::execute(&config, &metrics, assignment, lease_ttl, stop, progress).await });
                }
                Ok(Some(CoordinatorMessage { body: Some(CoordinatorBody::Cancel(cancel)) })) => {
                    if let Some(run) = running.get(&cancel.assignment_id) {
                        tracing::info!(assignment = %cancel.assignment_id, reason = %cancel.reason, "assignment cancelled");
                        run.stop.stop(StopCause::Withdrawn);
                    }
                }
                Ok(Some(CoordinatorMessage { body: Some(CoordinatorBody::BackupRequest(request)) })) => {
                    if !answering.insert(request.request_id.clone()) {
                        continue;
                    }
                    let stop = work.child_token();
                    if !clock.may_work(Instant::now()) {
                        stop.cancel();
                    }
                    tracing::info!(request = %request.request_id, shard = %request.shard_id, by = %request.requested_by, "backup request received");
                    let config = Arc::clone(config);
                    replies.spawn(async move { requests::answer(&config, request, stop).await });
                }
                Ok(Some(other)) => tracing::debug!(?other, "coordinator message not handled"),
                Ok(None) => break Ended::Lost("the coordinator ended the session".to_owned()),
                Err(status) => break Ended::Lost(status.message().to_owned()),
            },
        }
    };
    // Stop what runs (running statements are cancelled), report it, then close our stream: a
    // clean close tells the coordinator to revoke the lease. Runs stopped here are interrupted,
    // not failed: the leader runs them again under newer claims.
    let cause = match &ended {
        Ended::Shutdown => "the agent is shutting down".to_owned(),
        Ended::Lost(reason) => format!("the agent's session was lost ({reason})"),
    };
    for run in running.values() {
        run.stop.stop(StopCause::Interrupted(cause.clone()));
    }
    work.cancel();
    if let Some(refresh) = refreshing {
        refresh.abort();
    }
    // A restore stopped by `work` has rolled back; its caller's lease ends with this session.
    replies.abort_all();
    let reported = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(result) = joined {
                log_outcome(&result);
                finished.remember(&result);
                let _ = outbound
                    .send(AgentMessage {
                        body: Some(AgentBody::Result(result)),
                    })
                    .await;
            }
        }
    };
    if tokio::time::timeout(intervals.lease_ttl, reported)
        .await
        .is_err()
    {
        tracing::warn!(
            "assignments did not stop within the lease TTL; abandoning them (the shards' ledgers stay consistent)"
        );
    }
    if matches!(ended, Ended::Shutdown) {
        drop(outbound);
        let _ = tokio::time::timeout(intervals.heartbeat, drain(&mut inbound)).await;
        tracing::info!("session closed");
    }
    Ok(ended)
}

/// An assignment running in this session.
#[derive(Debug)]
struct Running {
    shard: String,
    fence_token: i64,
    stop: StopSignal,
}

/// The results of the assignments this process ran to an end of their own last, across
/// sessions: an assignment delivered again after it ended (its result may have been lost with
/// a session) is answered with its result, not run a second time. Interrupted runs are not
/// kept: a replica delivers an assignment again only while its claim stands, and then it runs
/// again under that claim (the agent moved to another replica and kept its lease).
#[derive(Debug, Default)]
struct Finished {
    results: VecDeque<AssignmentResult>,
}

impl Finished {
    /// Enough for every shard of a large host to have ended twice in a row.
    const KEPT: usize = 256;

    fn remember(&mut self, result: &AssignmentResult) {
        let interrupted = result
            .error
            .as_ref()
            .is_some_and(|error| error.kind == i32::from(ErrorKind::Interrupted));
        if interrupted {
            return;
        }
        if self.results.len() == Self::KEPT {
            self.results.pop_front();
        }
        self.results.push_back(result.clone());
    }

    fn result_of(&self, assignment_id: &str) -> Option<AssignmentResult> {
        self.results
            .iter()
            .rev()
            .find(|result| result.assignment_id == assignment_id)
            .cloned()
    }
}

/// One line per finished assignment, with the error when it failed.
fn log_outcome(result: &AssignmentResult) {
    if result.succeeded {
        tracing::info!(assignment = %result.assignment_id, shard = %result.shard_id, fence = result.fence_token, version = %result.current_version, "assignment succeeded");
    } else {
        let error = result
            .error
            .as_ref()
            .map_or("no detail", |error| error.message.as_str());
        tracing::warn!(assignment = %result.assignment_id, shard = %result.shard_id, fence = result.fence_token, %error, "assignment failed");
    }
}

async fn drain(inbound: &mut Streaming<CoordinatorMessage>) {
    while let Ok(Some(_)) = inbound.message().await {}
}

/// Hello, with what the agent sees of each of its shards.
async fn hello(config: &AgentConfig) -> Hello {
    Hello {
        agent_id: config.agent_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        shards: shard_facts(config).await,
        host: None,
        resume_lease_id: 0,
    }
}

/// What the agent sees of each of its shards now.
async fn shard_facts(config: &AgentConfig) -> Vec<ShardFacts> {
    let mut shards = Vec::with_capacity(config.shards.len());
    for shard in &config.shards {
        let report = check::inspect(shard).await;
        let engine = if shard.database_url.expose().starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            Engine::Postgres
        };
        shards.push(ShardFacts {
            shard_id: report.id,
            labels: report.labels.into_iter().collect(),
            engine: engine.into(),
            current_version: report.latest_applied.unwrap_or_default(),
            fence_token: report.fence_token.map_or(0, FenceToken::get),
            reachable: report.reachable,
            unfinished_versions: report.unfinished,
            tables: report.tables,
            observed_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        });
    }
    shards
}

fn intervals(handshake: &Handshake) -> anyhow::Result<SessionIntervals> {
    let to_duration = |value: Option<prost_types::Duration>, name: &str| {
        value
            .and_then(|value| Duration::try_from(value).ok())
            .with_context(|| format!("the handshake has no valid {name}"))
    };
    Ok(SessionIntervals {
        heartbeat: to_duration(handshake.heartbeat_interval, "heartbeat interval")?,
        lease_ttl: to_duration(handshake.lease_ttl, "lease TTL")?,
        safety_margin: to_duration(handshake.safety_margin, "safety margin")?,
    })
}
