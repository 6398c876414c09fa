//! `AgentService.Session`: one bidirectional stream per agent, handled by one [`Session`]
//! (init → run → cleanup), generic over the inbound stream.
//!
//! - init: the peer certificate must carry an agent identity of this trust domain, the first
//!   message must be `Hello` naming that same agent; a lease is granted and the `Handshake`
//!   carries every interval derived from the one base.
//! - run: each `Heartbeat` keeps the lease alive and is acknowledged with its remaining TTL; a
//!   lapsed lease ends the session (the agent's own lease clock has stopped its work already).
//! - cleanup: a clean end (the agent closed its stream) revokes the lease at once; an abrupt end
//!   (a crash, a partition) leaves it to lapse on its TTL, as the agent's clock expects.

use std::pin::Pin;
use std::sync::Arc;

use fleetshift_common::lease::SessionIntervals;
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_server::AgentService;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    AgentMessage, AssignmentResult, CoordinatorMessage, FactsRefresh, Handshake, HeartbeatAck,
    Hello, HostReply,
};
use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::versions;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::authz;
use crate::error::{ErrorCode, refuse};
use crate::events::journal::{Feed, Handed};
use crate::mailbox::{Mailbox, Outbound, Registration};
use crate::rollout::{self, throttled};
use crate::schemas;
use crate::store::{Condition, FenceToken, LeaseId, Store, StoreError, Write, keys};
use crate::tasks::TaskSet;

/// The agent service of one coordinator replica.
#[derive(Debug)]
pub struct AgentSessions<S> {
    store: Arc<S>,
    mailbox: Arc<Mailbox>,
    intervals: SessionIntervals,
    coordinator_id: String,
    trust_domain: String,
    /// Where sessions run; stopping it ends them (abruptly: their agents move on to another
    /// replica and resume their leases there).
    tasks: TaskSet,
}

impl<S: Store + 'static> AgentSessions<S> {
    pub fn new(
        store: Arc<S>,
        intervals: SessionIntervals,
        coordinator_id: &str,
        trust_domain: &str,
        tasks: TaskSet,
    ) -> Self {
        Self {
            store,
            mailbox: Mailbox::new(),
            intervals,
            coordinator_id: coordinator_id.to_owned(),
            trust_domain: trust_domain.to_owned(),
            tasks,
        }
    }

    /// These sessions, their agents' progress going to `journal` (without it, nowhere).
    #[must_use]
    pub fn journaling(mut self, journal: Feed) -> Self {
        self.mailbox = Arc::new(Mailbox::with_journal(journal));
        self
    }

    /// Where assignments are dispatched to connected agents.
    pub fn mailbox(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

    fn agent_identity<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let identity = authz::caller(request, &self.trust_domain)?;
        if identity.role() != Role::Agent {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!(
                    "{identity} is not an agent identity; agents present spiffe://{}/agent/<id>",
                    self.trust_domain
                ),
            ));
        }
        Ok(identity)
    }
}

#[tonic::async_trait]
impl<S: Store + 'static> AgentService for AgentSessions<S> {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = self.agent_identity(&request)?;
        let (outbound, responses) = mpsc::channel(16);
        let session = Session::new(
            Arc::clone(&self.store),
            Arc::clone(&self.mailbox),
            self.intervals,
            &self.coordinator_id,
            identity,
            request.into_inner(),
            outbound,
        );
        // The task ends with the agent's stream, when the replica stops, or when the
        // response stream is dropped.
        let stopping = self.tasks.stopping().clone();
        self.tasks.spawn(session.drive(stopping));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// One agent's session.
pub struct Session<S, I> {
    store: Arc<S>,
    mailbox: Arc<Mailbox>,
    registration: Option<Registration>,
    intervals: SessionIntervals,
    coordinator_id: String,
    identity: SpiffeId,
    inbound: I,
    outbound: Outbound,
    lease: Option<LeaseId>,
    /// The Hello as announced, with the freshest shard facts the agent sent.
    announced: Option<Hello>,
}

impl<S, I> std::fmt::Debug for Session<S, I> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Session")
            .field("agent", &self.identity.to_string())
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// How the agent's side of a session ended.
enum Ending {
    /// The agent closed its stream: it has stopped.
    Closed,
    /// The stream broke or the session failed: the agent may still be working.
    Abrupt,
}

impl<S, I> Session<S, I>
where
    S: Store + 'static,
    I: Stream<Item = Result<AgentMessage, Status>> + Unpin + Send + 'static,
{
    pub fn new(
        store: Arc<S>,
        mailbox: Arc<Mailbox>,
        intervals: SessionIntervals,
        coordinator_id: &str,
        identity: SpiffeId,
        inbound: I,
        outbound: Outbound,
    ) -> Self {
        Self {
            store,
            mailbox,
            registration: None,
            intervals,
            coordinator_id: coordinator_id.to_owned(),
            identity,
            inbound,
            outbound,
            lease: None,
            announced: None,
        }
    }

    /// Runs the session to its end (or until `stopping`) and reports a failure to the agent.
    pub async fn drive(mut self, stopping: CancellationToken) {
        let ending = tokio::select! {
            () = stopping.cancelled() => {
                tracing::info!(agent = %self.identity, "replica stopping; the session ends and its lease lapses unless the agent resumes it elsewhere");
                Ok(Ending::Abrupt)
            }
            ending = self.init_and_run() => ending,
        };
        let ending = match ending {
            Ok(ending) => ending,
            Err(status) => {
                tracing::warn!(agent = %self.identity, code = ?status.code(), message = status.message(), "agent session refused or failed");
                // The agent may be gone already; then nobody is left to tell.
                let _ = self.outbound.send(Err(status)).await;
                Ending::Abrupt
            }
        };
        self.cleanup(ending).await;
    }

    async fn init(&mut self) -> Result<(), Status> {
        let first = tokio::time::timeout(self.intervals.lease_ttl, self.inbound.next())
            .await
            .map_err(|_| refuse(ErrorCode::TimedOut, "no Hello within the lease TTL"))?;
        let mut hello: Hello = match first {
            Some(Ok(AgentMessage {
                body: Some(AgentBody::Hello(hello)),
            })) => hello,
            Some(Ok(_)) => {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    "the first message of a session must be Hello",
                ));
            }
            Some(Err(status)) => return Err(status),
            None => {
                return Err(refuse(
                    ErrorCode::Gone,
                    "the agent closed the session before Hello",
                ));
            }
        };
        if hello.agent_id != self.identity.name() {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!(
                    "Hello names agent {:?} but the certificate is {}; an agent speaks only for itself",
                    hello.agent_id, self.identity
                ),
            ));
        }
        compatibility::check(&hello)?;
        let lease = match self.resumable(hello.resume_lease_id).await {
            Some(lease) => {
                tracing::info!(agent = %self.identity, lease, "session lease resumed after a reconnect");
                lease
            }
            None => self
                .store
                .grant_lease(self.intervals.lease_ttl)
                .await
                .map_err(Status::from)?,
        };
        self.lease = Some(lease);
        let previous = self
            .store
            .agent_lease(self.identity.name())
            .await
            .map_err(Status::from)?;
        schemas::keep(self.store.as_ref(), self.identity.name(), &mut hello.shards)
            .await
            .map_err(Status::from)?;
        self.store
            .announce_agent(self.identity.name(), &hello.encode_to_vec(), lease)
            .await
            .map_err(Status::from)?;
        if let Some(previous) = previous.filter(|previous| *previous != lease) {
            self.supersede(previous).await;
        }
        let shards = hello
            .shards
            .iter()
            .map(|shard| shard.shard_id.clone())
            .collect();
        let handshake = Handshake {
            lease_id: lease,
            coordinator_id: self.coordinator_id.clone(),
            heartbeat_interval: prost_types::Duration::try_from(self.intervals.heartbeat).ok(),
            lease_ttl: prost_types::Duration::try_from(self.intervals.lease_ttl).ok(),
            safety_margin: prost_types::Duration::try_from(self.intervals.safety_margin).ok(),
            coordinator_version: versions::VERSION.to_owned(),
            oldest_agent: versions::OLDEST_AGENT.to_owned(),
        };
        // The handshake goes first on the stream: once registered, the relays and the leader
        // may hand the session work at once, and the agent takes only a handshake first.
        self.send(CoordinatorBody::Handshake(handshake)).await?;
        self.registration = Some(self.mailbox.register(
            self.identity.name(),
            shards,
            self.outbound.clone(),
        ));
        tracing::info!(agent = %self.identity, lease, shards = hello.shards.len(), "agent session opened");
        self.announced = Some(hello);
        Ok(())
    }

    /// A new session of this agent (a restarted process, or one that could not resume) ends
    /// the previous session's lease: its claims lapse now rather than at its TTL, so the
    /// shards are claimed again at once under newer tokens, and a stale copy of the process
    /// still running under the old claims is fenced out by them. The newest session speaks
    /// for the agent.
    async fn supersede(&self, previous: LeaseId) {
        match self.store.revoke(previous).await {
            Ok(()) => {
                tracing::info!(agent = %self.identity, previous, "previous session lease revoked; its claims are released")
            }
            // It lapses at its TTL anyway.
            Err(error) => {
                tracing::warn!(agent = %self.identity, previous, %error, "cannot revoke the previous session lease; its claims lapse with it")
            }
        }
    }

    /// The lease a reconnecting agent asks to resume, if it is still alive and still carries
    /// this agent's announcement (an agent cannot take over another's lease).
    async fn resumable(&self, requested: LeaseId) -> Option<LeaseId> {
        if requested == 0 {
            return None;
        }
        let owned = self
            .store
            .agent_lease(self.identity.name())
            .await
            .ok()
            .flatten()
            == Some(requested);
        if !owned {
            return None;
        }
        self.store
            .keep_alive(requested)
            .await
            .ok()
            .map(|_| requested)
    }

    async fn init_and_run(&mut self) -> Result<Ending, Status> {
        self.init().await?;
        self.run().await
    }

    /// Takes the agent's messages until its stream ends. A stream silent for a whole lease
    /// TTL (heartbeats come every heartbeat interval) is a half-open connection: the session
    /// ends abruptly and the lease lapses on its own.
    async fn run(&mut self) -> Result<Ending, Status> {
        let lease = self
            .lease
            .ok_or_else(|| refuse(ErrorCode::Internal, "session without a lease"))?;
        loop {
            let next = tokio::time::timeout(self.intervals.lease_ttl, self.inbound.next()).await;
            let Ok(next) = next else {
                tracing::warn!(agent = %self.identity, ttl_ms = self.intervals.lease_ttl.as_millis() as u64, "nothing from the agent within the lease TTL; the connection is presumed dead and the session ends");
                return Ok(Ending::Abrupt);
            };
            let Some(message) = next else { break };
            match message {
                Ok(AgentMessage {
                    body: Some(AgentBody::Heartbeat(heartbeat)),
                }) => {
                    let remaining =
                        self.store
                            .keep_alive(lease)
                            .await
                            .map_err(|error| match error {
                                StoreError::LeaseExpired(_) => refuse(
                                    ErrorCode::NotNow,
                                    "the session's lease lapsed; stop all work and reconnect",
                                ),
                                other => Status::from(other),
                            })?;
                    let ack = HeartbeatAck {
                        sequence: heartbeat.sequence,
                        lease_remaining: prost_types::Duration::try_from(remaining).ok(),
                    };
                    self.send(CoordinatorBody::HeartbeatAck(ack)).await?;
                }
                Ok(AgentMessage {
                    body: Some(AgentBody::Progress(event)),
                }) => {
                    let shard = event.shard_id.clone();
                    let wait = throttled::recorded(&event, lease);
                    let relayed = self
                        .registration
                        .as_ref()
                        .is_some_and(|registration| registration.report_progress(event));
                    if !relayed {
                        tracing::warn!(agent = %self.identity, %shard, "progress for a shard that is not this agent's; not relayed");
                    } else if let Some(wait) = wait {
                        self.store
                            .commit(None, &[], &[wait])
                            .await
                            .map_err(Status::from)?;
                    }
                }
                Ok(AgentMessage {
                    body: Some(AgentBody::Result(result)),
                }) => {
                    self.take_result(result).await?;
                }
                Ok(AgentMessage {
                    body: Some(AgentBody::Facts(refresh)),
                }) => {
                    self.refresh_facts(refresh, lease).await?;
                }
                Ok(AgentMessage {
                    body: Some(AgentBody::HostReply(reply)),
                }) => {
                    self.take_host_reply(reply).await?;
                }
                Ok(AgentMessage {
                    body: Some(AgentBody::Hello(_)),
                }) => {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "Hello may only open a session",
                    ));
                }
                Ok(other) => {
                    return Err(refuse(
                        ErrorCode::Unsupported,
                        format!(
                            "this coordinator does not take {:?} messages yet",
                            other.body.map(|body| std::mem::discriminant(&body))
                        ),
                    ));
                }
                Err(status) => {
                    tracing::info!(agent = %self.identity, code = ?status.code(), "agent stream broke; its lease lapses on its own");
                    return Ok(Ending::Abrupt);
                }
            }
        }
        Ok(Ending::Closed)
    }

    /// Fresh facts replace those of the same shards in the agent's announcement; shards the
    /// Hello did not name are ignored (an agent speaks only for the shards it opened with).
    async fn refresh_facts(&mut self, refresh: FactsRefresh, lease: LeaseId) -> Result<(), Status> {
        let Some(announced) = self.announced.as_mut() else {
            return Err(refuse(ErrorCode::Internal, "session without a Hello"));
        };
        let mut fresh_shards = refresh.shards;
        schemas::keep(self.store.as_ref(), self.identity.name(), &mut fresh_shards)
            .await
            .map_err(Status::from)?;
        for fresh in fresh_shards {
            match announced
                .shards
                .iter_mut()
                .find(|shard| shard.shard_id == fresh.shard_id)
            {
                Some(shard) => *shard = fresh,
                None => {
                    tracing::warn!(agent = %self.identity, shard = %fresh.shard_id, "facts for a shard the session's Hello did not name; ignored")
                }
            }
        }
        self.store
            .announce_agent(self.identity.name(), &announced.encode_to_vec(), lease)
            .await
            .map_err(Status::from)?;
        tracing::debug!(agent = %self.identity, "shard facts refreshed");
        Ok(())
    }

    /// A result goes into the store for the leader; only for the agent's own shards, and only
    /// a complete one (see [`check_result`]).
    async fn take_result(&self, mut result: AssignmentResult) -> Result<(), Status> {
        check_result(&result)?;
        let Some(registration) = &self.registration else {
            return Err(refuse(
                ErrorCode::Internal,
                "session without a registration",
            ));
        };
        if !registration.owns(&result.shard_id) {
            tracing::warn!(agent = %self.identity, shard = %result.shard_id, "result for a shard that is not this agent's; refused");
            return Ok(());
        }
        schemas::keep_left(self.store.as_ref(), self.identity.name(), &mut result)
            .await
            .map_err(Status::from)?;
        let assignment = result.assignment_id.clone();
        let writes = vec![
            Write::put(keys::result(&assignment), result.encode_to_vec()),
            throttled::ended(&assignment),
        ];
        // With the run's last progress: it goes before the run's end in every watcher's order.
        match registration.store_after_progress(writes).await {
            Handed::Stored(stored) => stored,
            Handed::NoWriter(writes) => self.store.commit(None, &[], &writes).await.map(drop),
        }
        .map_err(Status::from)?;
        tracing::info!(agent = %self.identity, %assignment, succeeded = result.succeeded, "result recorded for the leader");
        Ok(())
    }

    /// A reply goes to the request it answers, under that request's lease, so the replica
    /// the operator called sees it; only for a request made of this agent.
    async fn take_host_reply(&self, reply: HostReply) -> Result<(), Status> {
        let request_key = keys::host_request(self.identity.name(), &reply.request_id);
        let Some(request) = self.store.read(&request_key).await.map_err(Status::from)? else {
            tracing::warn!(agent = %self.identity, request = %reply.request_id, "reply to a host request nobody waits for (it ended or was never made of this agent); dropped");
            return Ok(());
        };
        let request_id = reply.request_id.clone();
        let recorded = self
            .store
            .commit(
                None,
                &[Condition::CreatedAt(request_key, request.create_revision)],
                &[Write::Put {
                    key: keys::host_reply(&request_id),
                    value: reply.encode_to_vec(),
                    lease: Some(request.lease),
                }],
            )
            .await;
        match recorded {
            Ok(Some(_)) => {}
            // The caller gave up meanwhile: its lease and request are gone.
            Ok(None) | Err(StoreError::LeaseExpired(_)) => {
                tracing::warn!(agent = %self.identity, request = %request_id, "the host request ended before its reply; dropped");
                return Ok(());
            }
            Err(error) => return Err(Status::from(error)),
        }
        tracing::info!(agent = %self.identity, request = %request_id, failed = reply.error.is_some(), "host reply recorded for the replica that asked");
        Ok(())
    }

    async fn cleanup(self, ending: Ending) {
        let Some(lease) = self.lease else { return };
        match ending {
            Ending::Closed => match self.store.revoke(lease).await {
                Ok(()) => {
                    tracing::info!(agent = %self.identity, lease, "agent closed its session; lease revoked")
                }
                Err(error) => {
                    tracing::warn!(agent = %self.identity, lease, %error, "revoking the lease failed; it lapses on its TTL")
                }
            },
            Ending::Abrupt => {
                tracing::info!(agent = %self.identity, lease, "session ended abruptly; the lease lapses on its TTL")
            }
        }
    }

    async fn send(&self, body: CoordinatorBody) -> Result<(), Status> {
        self.outbound
            .send(Ok(CoordinatorMessage { body: Some(body) }))
            .await
            .map_err(|_| refuse(ErrorCode::Gone, "the agent is gone"))
    }
}

/// A result as the leader may act on it: it names its assignment, shard and claim, and a
/// failure says what failed; otherwise INVALID_ARGUMENT naming the field (the session ends).
fn check_result(result: &AssignmentResult) -> Result<(), Status> {
    let missing = if result.assignment_id.is_empty() {
        Some("assignment_id is missing")
    } else if result.shard_id.is_empty() {
        Some("shard_id is missing")
    } else if result.fence_token <= 0 {
        Some("fence_token is not a claim's token (it must be positive)")
    } else if !result.succeeded && result.rollback.is_none() && result.error.is_none() {
        Some("error is missing from a failed result")
    } else if !names_its_own(result) {
        // The leader ends the task of the result's shard and drops the result kept under the
        // id: an id naming another shard's assignment would take that assignment's place.
        Some("the assignment id names another shard or claim than the result's own")
    } else {
        None
    };
    match missing {
        Some(problem) => Err(refuse(
            ErrorCode::BadRequest,
            format!("result {:?}: {problem}", result.assignment_id),
        )),
        None => Ok(()),
    }
}

/// Whether `result`'s assignment id names the result's own shard and claim token.
fn names_its_own(result: &AssignmentResult) -> bool {
    rollout::claim_of(&result.assignment_id).is_some_and(|claim| {
        claim.shard == result.shard_id && claim.token == FenceToken::from_raw(result.fence_token)
    })
}

mod compatibility;

#[cfg(test)]
mod tests;
