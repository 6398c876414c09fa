//! The agent sessions this replica holds: messages go down an agent's stream (an assignment
//! only for a shard the agent announced), progress comes out of them into the event journal,
//! and their openings are announced to the relays. A newer session of the same agent replaces the older
//! one. Results do not pass through here: the session records them in the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{CoordinatorMessage, ProgressEvent};
use tokio::sync::{broadcast, mpsc};

use crate::events::journal::{Feed, Handed};
use crate::store::Write;
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
}

/// Live sessions by agent, and the progress they report.
#[derive(Debug)]
pub struct Mailbox {
    sessions: Mutex<HashMap<String, Registered>>,
    next_session: AtomicU64,
    /// Where the sessions' progress goes: this replica's part of the event journal.
    journal: Feed,
    opened: broadcast::Sender<String>,
}

/// Session openings kept for a slow follower (it re-lists when it falls behind).
const OPENED_BACKLOG: usize = 1024;

impl Default for Mailbox {
    /// A mailbox whose progress goes nowhere (tests of sessions and relays).
    fn default() -> Self {
        Self::with_journal(Feed::detached())
    }
}

#[derive(Debug)]
struct Registered {
    session: u64,
    shards: HashSet<String>,
    outbound: Outbound,
}

/// A session's place in the mailbox, removed when dropped.
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

    /// A mailbox whose sessions' progress goes to `journal`.
    pub fn with_journal(journal: Feed) -> Self {
        Self {
            sessions: Mutex::default(),
            next_session: AtomicU64::default(),
            journal,
            opened: broadcast::channel(OPENED_BACKLOG).0,
        }
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
}

impl Mailbox {
    /// How many agents have a session on this replica.
    pub fn connected(&self) -> usize {
        self.sessions().len()
    }

    /// The agents with a session on this replica.
    pub fn agents(&self) -> Vec<String> {
        self.sessions().keys().cloned().collect()
    }

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

    /// Sends `body` down `agent`'s session without waiting for an answer; an assignment or a
    /// host request only for one of the agent's own shards.
    pub async fn send(&self, agent: &str, body: CoordinatorBody) -> Result<(), DispatchError> {
        let outbound = {
            let sessions = self.sessions();
            let registered = sessions
                .get(agent)
                .ok_or_else(|| DispatchError::NotConnected(agent.to_owned()))?;
            let shard = match &body {
                CoordinatorBody::Assignment(assignment) => Some(&assignment.shard_id),
                CoordinatorBody::HostRequest(request) => Some(&request.shard_id),
                _ => None,
            };
            if let Some(shard) = shard
                && !registered.shards.contains(shard)
            {
                return Err(DispatchError::NotTheAgentsShard {
                    agent: agent.to_owned(),
                    shard: shard.clone(),
                });
            }
            registered.outbound.clone()
        };
        outbound
            .send(Ok(CoordinatorMessage { body: Some(body) }))
            .await
            .map_err(|_| DispatchError::NotConnected(agent.to_owned()))
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
            self.mailbox.journal.record(event);
        }
        owned
    }

    /// Stores `writes` in one transaction with (or after) the progress this session reported.
    pub async fn store_after_progress(&self, writes: Vec<Write>) -> Handed {
        self.mailbox.journal.store_after(writes).await
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
    use fleetshift_common::proto::v1::Assignment;

    use super::*;
    use crate::events::journal::Journaled;

    fn assignment(id: &str, shard: &str) -> CoordinatorBody {
        CoordinatorBody::Assignment(Assignment {
            assignment_id: id.to_owned(),
            shard_id: shard.to_owned(),
            ..Assignment::default()
        })
    }

    #[tokio::test]
    async fn assignments_go_only_to_the_agent_owning_the_shard_while_connected() {
        let mailbox = Mailbox::new();
        let (outbound, mut agent_side) = mpsc::channel(4);
        let registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        assert!(matches!(
            mailbox.send("a", assignment("x", "s2")).await,
            Err(DispatchError::NotTheAgentsShard { .. })
        ));
        assert!(matches!(
            mailbox.send("b", assignment("x", "s1")).await,
            Err(DispatchError::NotConnected(_))
        ));
        mailbox
            .send("a", assignment("x", "s1"))
            .await
            .expect("sent");
        let sent = agent_side.recv().await.expect("sent").expect("ok");
        assert!(
            matches!(sent.body, Some(CoordinatorBody::Assignment(ref a)) if a.assignment_id == "x")
        );
        drop(registration);
        assert!(matches!(
            mailbox.send("a", assignment("y", "s1")).await,
            Err(DispatchError::NotConnected(_))
        ));
    }

    #[tokio::test]
    async fn progress_goes_to_the_journal_only_for_the_agents_own_shards() {
        let (journal, mut watcher) = Feed::channel();
        let mailbox = Arc::new(Mailbox::with_journal(journal));
        let (outbound, _agent_side) = mpsc::channel(4);
        let registration = mailbox.register("a", HashSet::from(["s1".to_owned()]), outbound);
        let event = |shard: &str| ProgressEvent {
            shard_id: shard.to_owned(),
            ..ProgressEvent::default()
        };
        assert!(registration.report_progress(event("s1")));
        assert!(
            !registration.report_progress(event("s2")),
            "not this agent's shard"
        );
        assert!(matches!(
            watcher.try_recv(),
            Ok(Journaled::Event(event)) if event.shard_id == "s1"
        ));
        assert!(
            watcher.try_recv().is_err(),
            "the foreign shard's event was not relayed"
        );
    }
}
