//! Commands down agent sessions: an assignment goes down the agent's stream with its id, and
//! the caller waits for the matching result on a oneshot, under a timeout. An agent is sent
//! only assignments for shards it announced; a newer session of the same agent replaces the
//! older one; a session's end fails its pending assignments.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{
    Assignment, AssignmentResult, CoordinatorMessage, ProgressEvent,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

pub type Outbound = mpsc::Sender<Result<CoordinatorMessage, Status>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("agent {0} has no session with this coordinator")]
    NotConnected(String),
    #[error(
        "shard {shard} is not one of agent {agent}'s shards; an agent runs only its own shards"
    )]
    NotTheAgentsShard { agent: String, shard: String },
    #[error("agent {agent} did not report on assignment {assignment} within {waited:?}")]
    Timeout {
        agent: String,
        assignment: String,
        waited: Duration,
    },
    #[error("agent {agent}'s session ended before assignment {assignment} reported")]
    SessionEnded { agent: String, assignment: String },
}

/// Progress events kept for slow watchers before the oldest are dropped.
const PROGRESS_BACKLOG: usize = 4096;

/// Live sessions by agent, and the progress they report.
#[derive(Debug)]
pub struct Mailbox {
    sessions: Mutex<HashMap<String, Registered>>,
    next_session: AtomicU64,
    progress: broadcast::Sender<ProgressEvent>,
    opened: broadcast::Sender<String>,
}

/// Session openings kept for a slow follower (it re-lists when it falls behind).
const OPENED_BACKLOG: usize = 1024;

impl Default for Mailbox {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            next_session: AtomicU64::default(),
            progress: broadcast::channel(PROGRESS_BACKLOG).0,
            opened: broadcast::channel(OPENED_BACKLOG).0,
        }
    }
}

#[derive(Debug)]
struct Registered {
    session: u64,
    shards: HashSet<String>,
    outbound: Outbound,
    pending: HashMap<String, oneshot::Sender<AssignmentResult>>,
}

/// A session's place in the mailbox; removing it fails the session's pending assignments.
#[derive(Debug)]
pub struct Registration {
    mailbox: Arc<Mailbox>,
    agent: String,
    session: u64,
}

impl Mailbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn register(
        self: &Arc<Self>,
        agent: &str,
        shards: HashSet<String>,
        outbound: Outbound,
    ) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let registered = Registered {
            session,
            shards,
            outbound,
            pending: HashMap::new(),
        };
        // A newer session of the same agent replaces the older one.
        self.sessions().insert(agent.to_owned(), registered);
        // Nobody following openings is fine.
        let _ = self.opened.send(agent.to_owned());
        Registration {
            mailbox: Arc::clone(self),
            agent: agent.to_owned(),
            session,
        }
    }

    /// Sends `assignment` to `agent` and waits for its result.
    pub async fn dispatch(
        &self,
        agent: &str,
        assignment: Assignment,
        waited: Duration,
    ) -> Result<AssignmentResult, DispatchError> {
        let assignment_id = assignment.assignment_id.clone();
        let (reply, result) = oneshot::channel();
        let outbound = {
            let mut sessions = self.sessions();
            let registered = sessions
                .get_mut(agent)
                .ok_or_else(|| DispatchError::NotConnected(agent.to_owned()))?;
            if !registered.shards.contains(&assignment.shard_id) {
                return Err(DispatchError::NotTheAgentsShard {
                    agent: agent.to_owned(),
                    shard: assignment.shard_id.clone(),
                });
            }
            registered.pending.insert(assignment_id.clone(), reply);
            registered.outbound.clone()
        };
        let ended = || DispatchError::SessionEnded {
            agent: agent.to_owned(),
            assignment: assignment_id.clone(),
        };
        let message = CoordinatorMessage {
            body: Some(CoordinatorBody::Assignment(assignment)),
        };
        if outbound.send(Ok(message)).await.is_err() {
            if let Some(registered) = self.sessions().get_mut(agent) {
                registered.pending.remove(&assignment_id);
            }
            return Err(ended());
        }
        match tokio::time::timeout(waited, result).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ended()),
            Err(_) => {
                if let Some(registered) = self.sessions().get_mut(agent) {
                    registered.pending.remove(&assignment_id);
                }
                Err(DispatchError::Timeout {
                    agent: agent.to_owned(),
                    assignment: assignment_id,
                    waited,
                })
            }
        }
    }

    /// Hands a result to whoever dispatched it; false for results nobody waits for.
    fn complete(&self, agent: &str, session: u64, result: AssignmentResult) -> bool {
        let mut sessions = self.sessions();
        let Some(registered) = sessions
            .get_mut(agent)
            .filter(|registered| registered.session == session)
        else {
            return false;
        };
        match registered.pending.remove(&result.assignment_id) {
            Some(reply) => reply.send(result).is_ok(),
            None => false,
        }
    }
}

impl Mailbox {
    /// The agent's current session here, if it has one.
    pub fn session_of(&self, agent: &str) -> Option<u64> {
        self.sessions()
            .get(agent)
            .map(|registered| registered.session)
    }

    /// Agents whose sessions open here, as they open.
    pub fn subscribe_openings(&self) -> broadcast::Receiver<String> {
        self.opened.subscribe()
    }

    /// Sends `body` down `agent`'s session without waiting for an answer; an assignment only
    /// for one of the agent's own shards.
    pub async fn send(&self, agent: &str, body: CoordinatorBody) -> Result<(), DispatchError> {
        let outbound = {
            let sessions = self.sessions();
            let registered = sessions
                .get(agent)
                .ok_or_else(|| DispatchError::NotConnected(agent.to_owned()))?;
            if let CoordinatorBody::Assignment(assignment) = &body
                && !registered.shards.contains(&assignment.shard_id)
            {
                return Err(DispatchError::NotTheAgentsShard {
                    agent: agent.to_owned(),
                    shard: assignment.shard_id.clone(),
                });
            }
            registered.outbound.clone()
        };
        outbound
            .send(Ok(CoordinatorMessage { body: Some(body) }))
            .await
            .map_err(|_| DispatchError::NotConnected(agent.to_owned()))
    }

    /// Progress agents report, as it arrives (a watcher that falls behind misses the oldest).
    pub fn subscribe_progress(&self) -> broadcast::Receiver<ProgressEvent> {
        self.progress.subscribe()
    }
}

impl Registration {
    /// Whether `shard` is one this session's agent announced.
    pub fn owns(&self, shard: &str) -> bool {
        self.mailbox
            .sessions()
            .get(&self.agent)
            .is_some_and(|registered| {
                registered.session == self.session && registered.shards.contains(shard)
            })
    }

    /// Delivers a result reported on this session.
    pub fn complete(&self, result: AssignmentResult) -> bool {
        self.mailbox.complete(&self.agent, self.session, result)
    }

    /// Relays progress reported on this session, for the agent's own shards only.
    pub fn report_progress(&self, event: ProgressEvent) -> bool {
        let owned = self
            .mailbox
            .sessions()
            .get(&self.agent)
            .is_some_and(|registered| {
                registered.session == self.session && registered.shards.contains(&event.shard_id)
            });
        if owned {
            // No watcher at the moment is fine.
            let _ = self.mailbox.progress.send(event);
        }
        owned
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.mailbox.sessions();
        // Only this session's entry: a newer session of the agent stays registered.
        if sessions
            .get(&self.agent)
            .is_some_and(|registered| registered.session == self.session)
        {
            sessions.remove(&self.agent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str, shard: &str) -> Assignment {
        Assignment {
            assignment_id: id.to_owned(),
            shard_id: shard.to_owned(),
            ..Assignment::default()
        }
    }

    #[tokio::test]
    async fn results_reach_their_dispatcher_and_strangers_shards_are_refused() {
        let mailbox = Mailbox::new();
        let (outbound, mut agent_side) = mpsc::channel(4);
        let registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        let refused = mailbox
            .dispatch("a", assignment("x", "s2"), Duration::from_secs(1))
            .await;
        assert!(matches!(
            refused,
            Err(DispatchError::NotTheAgentsShard { .. })
        ));
        assert!(matches!(
            mailbox
                .dispatch("b", assignment("x", "s1"), Duration::from_secs(1))
                .await,
            Err(DispatchError::NotConnected(_))
        ));
        let dispatcher = {
            let mailbox = Arc::clone(&mailbox);
            tokio::spawn(async move {
                mailbox
                    .dispatch("a", assignment("x", "s1"), Duration::from_secs(5))
                    .await
            })
        };
        let sent = agent_side.recv().await.expect("sent").expect("ok");
        assert!(
            matches!(sent.body, Some(CoordinatorBody::Assignment(ref a)) if a.assignment_id == "x")
        );
        let result = AssignmentResult {
            assignment_id: "x".to_owned(),
            succeeded: true,
            ..AssignmentResult::default()
        };
        assert!(registration.complete(result.clone()));
        assert_eq!(dispatcher.await.expect("task"), Ok(result));
    }

    #[tokio::test]
    async fn a_session_ending_fails_its_pending_assignments() {
        let mailbox = Mailbox::new();
        let (outbound, mut agent_side) = mpsc::channel(4);
        let registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        let dispatcher = {
            let mailbox = Arc::clone(&mailbox);
            tokio::spawn(async move {
                mailbox
                    .dispatch("a", assignment("x", "s1"), Duration::from_secs(5))
                    .await
            })
        };
        agent_side.recv().await.expect("sent").expect("ok");
        drop(registration);
        assert!(matches!(
            dispatcher.await.expect("task"),
            Err(DispatchError::SessionEnded { .. })
        ));
    }

    #[tokio::test]
    async fn progress_is_relayed_only_for_the_agents_own_shards() {
        let mailbox = Mailbox::new();
        let (outbound, _agent_side) = mpsc::channel(4);
        let registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        let mut watcher = mailbox.subscribe_progress();
        let event = |shard: &str| ProgressEvent {
            shard_id: shard.to_owned(),
            ..ProgressEvent::default()
        };
        assert!(registration.report_progress(event("s1")));
        assert!(
            !registration.report_progress(event("s2")),
            "not this agent's shard"
        );
        assert_eq!(
            watcher.try_recv().map(|event| event.shard_id),
            Ok("s1".to_owned())
        );
        assert!(
            watcher.try_recv().is_err(),
            "the foreign shard's event was not relayed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_times_out() {
        let mailbox = Mailbox::new();
        let (outbound, _agent_side) = mpsc::channel(4);
        let _registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        let waited = mailbox
            .dispatch("a", assignment("x", "s1"), Duration::from_secs(3))
            .await;
        assert!(matches!(waited, Err(DispatchError::Timeout { .. })));
    }
}
