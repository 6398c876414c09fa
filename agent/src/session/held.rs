//! One session with one replica: [`Session::init`] takes the handshake and starts the lease
//! clock, [`Session::run`] handles one event at a time (a handler per message kind), and
//! [`Session::cleanup`] stops what runs, reports it and closes the stream.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::fence::FenceToken;
use fleetshift_common::lease::{LeaseClock, SessionIntervals};
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, Assignment, AssignmentResult, Cancel, CoordinatorMessage, FactsRefresh,
    Handshake, Heartbeat, HeartbeatAck, HostReply, HostRequest, ProgressEvent, ShardFacts,
};
use fleetshift_common::versions::{self, Side};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, Interval};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::connect::{Inbound, SessionError, Streams};
use super::finished::Finished;
use super::work::Work;
use crate::metrics::AgentMetrics;
use crate::stop::{StopCause, StopSignal};

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Shutdown,
    Lost(String),
    /// The agent's shards changed (tenant schemas came or went): it opens a session anew to
    /// announce them, resuming its lease.
    Reannounce,
}

/// The Hello a session opened with: when it went out, and the shards it announced.
#[derive(Debug, Clone)]
pub struct Opened {
    pub sent: Instant,
    pub shards: BTreeSet<String>,
}

impl Opened {
    /// A Hello announcing `shards` that went out at `sent`.
    pub fn announcing(sent: Instant, shards: &[ShardFacts]) -> Self {
        Self {
            sent,
            shards: ids(shards),
        }
    }
}

fn ids(shards: &[ShardFacts]) -> BTreeSet<String> {
    shards.iter().map(|shard| shard.shard_id.clone()).collect()
}

impl Ended {
    fn stream_closed() -> Self {
        Self::Lost("the session's stream closed".to_owned())
    }
}

/// One handler's verdict: carry on, or end the session.
type Step = Result<(), Ended>;

/// An assignment running in this session.
#[derive(Debug)]
struct Running {
    shard: String,
    fence_token: FenceToken,
    stop: StopSignal,
}

/// A session established with one replica.
pub struct Session<'f, W> {
    work: W,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: Inbound,
    intervals: SessionIntervals,
    clock: LeaseClock,
    metrics: Arc<AgentMetrics>,
    /// Every run of this session stops when this does: at shutdown, or when the lease may lapse.
    work_stop: CancellationToken,
    running: HashMap<String, Running>,
    runs: JoinSet<AssignmentResult>,
    /// Backup requests being answered, by id (a request delivered again is not run twice).
    answering: HashSet<String>,
    replies: JoinSet<HostReply>,
    progress: mpsc::UnboundedSender<ProgressEvent>,
    reported: mpsc::UnboundedReceiver<ProgressEvent>,
    refreshing: Option<JoinHandle<()>>,
    /// The shards the Hello announced: fresh facts of other shards end the session
    /// ([`Ended::Reannounce`]) once nothing runs, as the coordinator hears only of those.
    announced: Arc<BTreeSet<String>>,
    /// Fired by a refresh whose shards are not the announced ones.
    reannounce: CancellationToken,
    sequence: u64,
    finished: &'f mut Finished,
}

impl<W> std::fmt::Debug for Session<'_, W> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Session")
            .field("running", &self.running)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// The Handshake's intervals, all derived from the coordinator's one base.
fn intervals(handshake: &Handshake) -> Result<SessionIntervals, SessionError> {
    let to_duration = |value: Option<prost_types::Duration>, name: &str| {
        value
            .and_then(|value| Duration::try_from(value).ok())
            .ok_or_else(|| SessionError::Handshake(format!("it has no valid {name}")))
    };
    Ok(SessionIntervals {
        heartbeat: to_duration(handshake.heartbeat_interval, "heartbeat interval")?,
        lease_ttl: to_duration(handshake.lease_ttl, "lease TTL")?,
        safety_margin: to_duration(handshake.safety_margin, "safety margin")?,
    })
}

impl<'f, W: Work> Session<'f, W> {
    /// Reads the Handshake from `streams` (the Hello, `opened`, went out as heartbeat 0 of
    /// the lease clock) and starts the lease clock. `last_lease` is the lease offered for
    /// resumption; it becomes this session's.
    pub async fn init(
        work: W,
        streams: Streams,
        opened: Opened,
        last_lease: &mut i64,
        metrics: Arc<AgentMetrics>,
        finished: &'f mut Finished,
        shutdown: &CancellationToken,
    ) -> Result<(Self, Handshake), SessionError> {
        let Streams {
            outbound,
            mut inbound,
        } = streams;
        let handshake = match inbound.next().await {
            Some(Ok(CoordinatorMessage {
                body: Some(CoordinatorBody::Handshake(handshake)),
            })) => handshake,
            Some(Ok(other)) => {
                return Err(SessionError::Handshake(format!(
                    "expected a handshake, got {other:?}"
                )));
            }
            Some(Err(status)) => return Err(SessionError::Refused(status.message().to_owned())),
            None => return Err(SessionError::Refused("the stream ended".to_owned())),
        };
        if let Some(refused) = versions::refusal(
            Side::Coordinator,
            &handshake.coordinator_version,
            versions::VERSION,
            versions::OLDEST_COORDINATOR,
        ) {
            return Err(SessionError::Refused(refused));
        }
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
        clock.heartbeat_sent(0, opened.sent);
        clock.acknowledged(0);
        let (progress, reported) = mpsc::unbounded_channel();
        let session = Self {
            work,
            outbound,
            inbound,
            intervals,
            clock,
            metrics,
            work_stop: shutdown.child_token(),
            running: HashMap::new(),
            runs: JoinSet::new(),
            answering: HashSet::new(),
            replies: JoinSet::new(),
            progress,
            reported,
            refreshing: None,
            announced: Arc::new(opened.shards),
            reannounce: CancellationToken::new(),
            sequence: 0,
            finished,
        };
        Ok((session, handshake))
    }

    /// Handles events until the session ends: at `shutdown`, or when it is lost. Fresh shard
    /// facts go out every `facts_refresh` while nothing runs.
    pub async fn run(&mut self, shutdown: &CancellationToken, facts_refresh: Duration) -> Ended {
        let mut ticks = tokio::time::interval(self.intervals.heartbeat);
        let mut refreshes = tokio::time::interval_at(Instant::now() + facts_refresh, facts_refresh);
        loop {
            if let Err(ended) = self.next_event(shutdown, &mut ticks, &mut refreshes).await {
                return ended;
            }
        }
    }

    async fn next_event(
        &mut self,
        shutdown: &CancellationToken,
        ticks: &mut Interval,
        refreshes: &mut Interval,
    ) -> Step {
        tokio::select! {
            () = shutdown.cancelled() => Err(Ended::Shutdown),
            _ = ticks.tick() => self.on_tick().await,
            _ = refreshes.tick() => {
                self.on_refresh();
                Ok(())
            }
            () = self.reannounce.cancelled(), if self.running.is_empty() && self.replies.is_empty() => Err(Ended::Reannounce),
            Some(event) = self.reported.recv() => self.on_progress(event).await,
            Some(joined) = self.runs.join_next(), if !self.runs.is_empty() => self.on_run_ended(joined).await,
            Some(joined) = self.replies.join_next(), if !self.replies.is_empty() => self.on_reply(joined).await,
            message = self.inbound.next() => self.on_message(message).await,
        }
    }

    /// A heartbeat goes out; the session ends when no acknowledgement came within the lease.
    async fn on_tick(&mut self) -> Step {
        self.sequence += 1;
        self.clock.heartbeat_sent(self.sequence, Instant::now());
        let heartbeat = Heartbeat {
            sequence: self.sequence,
            running_assignments: self.running.keys().cloned().collect(),
        };
        send(&self.outbound, AgentBody::Heartbeat(heartbeat)).await?;
        let Some(until) = self.clock.work_until() else {
            return Ok(());
        };
        self.metrics
            .lease_remaining(until.saturating_duration_since(Instant::now()));
        if !self.clock.may_work(Instant::now()) {
            return Err(Ended::Lost(
                "no acknowledgement within the lease: it may lapse, so all work stopped".to_owned(),
            ));
        }
        Ok(())
    }

    /// Fresh facts, read off the stream's task so a slow catalog never delays a heartbeat;
    /// not while a revision runs (the reads would only queue behind its locks).
    fn on_refresh(&mut self) {
        let idle = self.running.is_empty()
            && self
                .refreshing
                .as_ref()
                .is_none_or(|refresh| refresh.is_finished());
        if !idle {
            return;
        }
        let work = self.work.clone();
        let outbound = self.outbound.clone();
        let (announced, reannounce) = (Arc::clone(&self.announced), self.reannounce.clone());
        self.refreshing = Some(tokio::spawn(async move {
            let refresh = FactsRefresh {
                shards: work.facts().await,
            };
            if ids(&refresh.shards) != *announced {
                reannounce.cancel();
                return;
            }
            // A closed stream ends the session in the loop.
            let _ = outbound
                .send(AgentMessage {
                    body: Some(AgentBody::Facts(refresh)),
                })
                .await;
        }));
    }

    async fn on_progress(&mut self, event: ProgressEvent) -> Step {
        self.metrics.observe(&event);
        send(&self.outbound, AgentBody::Progress(event)).await
    }

    /// A run ended: its progress goes out first, then its result, then fresh facts.
    async fn on_run_ended(&mut self, joined: Result<AssignmentResult, JoinError>) -> Step {
        let Ok(result) = joined else { return Ok(()) };
        log_outcome(&result);
        self.running.remove(&result.assignment_id);
        self.finished.remember(&result);
        self.metrics.assignments_running(self.running.len());
        while let Ok(event) = self.reported.try_recv() {
            self.metrics.observe(&event);
            if send(&self.outbound, AgentBody::Progress(event))
                .await
                .is_err()
            {
                break;
            }
        }
        send(&self.outbound, AgentBody::Result(result)).await?;
        // The shard's version moved: the coordinator hears it now, not a refresh later (a
        // fleet target's reconciliation waits for it). A refresh under way may have read the
        // shard before the run ended: it gives way to one that starts now.
        if self.running.is_empty()
            && let Some(under_way) = self.refreshing.take()
        {
            under_way.abort();
        }
        self.on_refresh();
        Ok(())
    }

    async fn on_reply(&mut self, joined: Result<HostReply, JoinError>) -> Step {
        let Ok(reply) = joined else { return Ok(()) };
        self.answering.remove(&reply.request_id);
        send(&self.outbound, AgentBody::HostReply(reply)).await
    }

    async fn on_message(&mut self, message: Option<Result<CoordinatorMessage, Status>>) -> Step {
        let body = match message {
            Some(Ok(CoordinatorMessage { body: Some(body) })) => body,
            Some(Ok(CoordinatorMessage { body: None })) => {
                tracing::debug!("empty coordinator message ignored");
                return Ok(());
            }
            None => return Err(Ended::Lost("the coordinator ended the session".to_owned())),
            Some(Err(status)) => return Err(Ended::Lost(status.message().to_owned())),
        };
        match body {
            CoordinatorBody::HeartbeatAck(ack) => {
                self.on_ack(&ack);
                Ok(())
            }
            CoordinatorBody::Assignment(assignment) => self.on_assignment(assignment).await,
            CoordinatorBody::Cancel(cancel) => {
                self.on_cancel(&cancel);
                Ok(())
            }
            CoordinatorBody::HostRequest(request) => {
                self.on_backup_request(request);
                Ok(())
            }
            CoordinatorBody::FleetThrottles(list) => {
                self.work.hold(list.throttles);
                Ok(())
            }
            CoordinatorBody::Handshake(_) => {
                tracing::debug!("a second handshake ignored");
                Ok(())
            }
        }
    }

    fn on_ack(&mut self, ack: &HeartbeatAck) {
        self.clock.acknowledged(ack.sequence);
    }

    /// Runs `assignment` unless it runs already or ended already (delivered again after a
    /// reconnect: it never runs twice under one claim); a newer claim's assignment stops an
    /// older run on the same shard.
    async fn on_assignment(&mut self, assignment: Assignment) -> Step {
        if self.running.contains_key(&assignment.assignment_id) {
            return Ok(());
        }
        if let Some(result) = self.finished.result_of(&assignment.assignment_id) {
            tracing::info!(assignment = %assignment.assignment_id, "assignment delivered again after it ended; sending its result again");
            return send(&self.outbound, AgentBody::Result(result)).await;
        }
        let token = FenceToken::from_raw(assignment.fence_token);
        let stop = StopSignal::child_of(&self.work_stop);
        if !self.clock.may_work(Instant::now()) {
            stop.stop(StopCause::Interrupted(
                "the agent's session lease may lapse before the assignment could start".to_owned(),
            ));
        }
        self.supersede(&assignment, token);
        tracing::info!(assignment = %assignment.assignment_id, shard = %assignment.shard_id, fence = %token, "assignment received");
        let running = Running {
            shard: assignment.shard_id.clone(),
            fence_token: token,
            stop: stop.clone(),
        };
        self.running
            .insert(assignment.assignment_id.clone(), running);
        self.metrics.assignments_running(self.running.len());
        let work = self.work.clone();
        let progress = self.progress.clone();
        let lease_ttl = self.intervals.lease_ttl;
        self.runs
            .spawn(async move { work.assignment(assignment, lease_ttl, stop, progress).await });
        Ok(())
    }

    /// Stops every run on `newer`'s shard under an older token.
    fn supersede(&self, newer: &Assignment, token: FenceToken) {
        for (id, older) in &self.running {
            if older.shard == newer.shard_id && older.fence_token < token {
                tracing::info!(assignment = %id, newer = %newer.assignment_id, "a newer assignment for the shard supersedes a running one");
                older.stop.stop(StopCause::Interrupted(format!(
                    "superseded by assignment {} under a newer claim (fencing token {token})",
                    newer.assignment_id
                )));
            }
        }
    }

    fn on_cancel(&self, cancel: &Cancel) {
        if let Some(run) = self.running.get(&cancel.assignment_id) {
            tracing::info!(assignment = %cancel.assignment_id, reason = %cancel.reason, "assignment cancelled");
            run.stop.stop(StopCause::Withdrawn);
        }
    }

    fn on_backup_request(&mut self, request: HostRequest) {
        if !self.answering.insert(request.request_id.clone()) {
            return;
        }
        let stop = self.work_stop.child_token();
        if !self.clock.may_work(Instant::now()) {
            stop.cancel();
        }
        tracing::info!(request = %request.request_id, shard = %request.shard_id, by = %request.requested_by, "host request received");
        let work = self.work.clone();
        self.replies
            .spawn(async move { work.host_request(request, stop).await });
    }

    /// Stops what runs (running statements are cancelled), reports it, then, at shutdown,
    /// closes the stream: a clean close tells the coordinator to revoke the lease. Runs stopped
    /// here are interrupted, not failed: the leader runs them again under newer claims.
    pub async fn cleanup(mut self, ended: &Ended) {
        let cause = match ended {
            Ended::Shutdown => "the agent is shutting down".to_owned(),
            Ended::Lost(reason) => format!("the agent's session was lost ({reason})"),
            Ended::Reannounce => "the agent announces its shards anew".to_owned(),
        };
        for run in self.running.values() {
            run.stop.stop(StopCause::Interrupted(cause.clone()));
        }
        self.work_stop.cancel();
        if let Some(refresh) = self.refreshing.take() {
            refresh.abort();
        }
        // A restore stopped by `work_stop` has rolled back; its caller's lease ends with this
        // session.
        self.replies.abort_all();
        let lease_ttl = self.intervals.lease_ttl;
        if tokio::time::timeout(lease_ttl, self.report_stopped_runs())
            .await
            .is_err()
        {
            tracing::warn!(
                "assignments did not stop within the lease TTL; abandoning them (the shards' ledgers stay consistent)"
            );
        }
        if *ended == Ended::Shutdown {
            let Self {
                outbound,
                mut inbound,
                intervals,
                ..
            } = self;
            drop(outbound);
            let drained = async { while let Some(Ok(_)) = inbound.next().await {} };
            let _ = tokio::time::timeout(intervals.heartbeat, drained).await;
            tracing::info!("session closed");
        }
    }

    async fn report_stopped_runs(&mut self) {
        while let Some(joined) = self.runs.join_next().await {
            if let Ok(result) = joined {
                log_outcome(&result);
                self.finished.remember(&result);
                let _ = send(&self.outbound, AgentBody::Result(result)).await;
            }
        }
    }
}

/// Sends `body` up the session (by the sender alone: the session itself is not `Sync`).
async fn send(outbound: &mpsc::Sender<AgentMessage>, body: AgentBody) -> Step {
    outbound
        .send(AgentMessage { body: Some(body) })
        .await
        .map_err(|_| Ended::stream_closed())
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
