//! A watch that survives its replica: when the stream breaks (the replica stops, the
//! connection drops) it opens it again, on the next replica when several are given, and
//! continues after the last sequence it handed out, so nothing is missed and nothing comes
//! twice. Given several replicas, it watches on one that does not lead: every replica serves
//! watches from its own follower of the store, so the leader's CPU goes to dispatching.

use std::time::Duration;

use fleetshift_common::proto::v1::{
    ReplicaStanding, RolloutEvent, WatchEventsRequest, WatchRolloutRequest,
};
use tonic::{Code, Status, Streaming};

use super::FleetClient;
use crate::cli::fleet::Connection;

/// Reopenings in a row, without an event in between, before the watch gives up.
const MAX_REOPENINGS: u32 = 5;

/// What is watched.
#[derive(Debug, Clone)]
pub enum Watched {
    Plan(String),
    Fleet,
}

/// A resumable watch.
pub struct Resumable<'c> {
    client: FleetClient,
    /// The replicas to move between, and the place of the current one; none: reopen on the
    /// same client.
    replicas: Option<(&'c Connection, usize)>,
    watched: Watched,
    statements: bool,
    /// The last sequence handed out.
    since: u64,
    stream: Option<Streaming<RolloutEvent>>,
    reopenings: u32,
    /// Whether a replica was chosen for the first opening.
    placed: bool,
}

impl<'c> Resumable<'c> {
    pub fn new(
        client: FleetClient,
        replicas: Option<&'c Connection>,
        watched: Watched,
        statements: bool,
        since: u64,
    ) -> Self {
        Self {
            client,
            replicas: replicas.map(|connection| (connection, 0)),
            watched,
            statements,
            since,
            stream: None,
            reopenings: 0,
            placed: false,
        }
    }

    /// The client in use (the last replica reached).
    pub fn client(&mut self) -> &mut FleetClient {
        &mut self.client
    }

    /// Opens the watch now (so what happens from here on is seen), if it is not open.
    pub async fn open(&mut self) -> Result<(), Status> {
        if !self.placed {
            self.placed = true;
            if let Some(standing) = self.move_to_follower().await {
                eprintln!(
                    "watching on {} ({}, which does not lead; {} leads)",
                    self.address(),
                    standing.coordinator_id,
                    standing.leader_id
                );
            }
        }
        while self.stream.is_none() {
            match self.request().await {
                Ok(stream) => self.stream = Some(stream),
                Err(status) if broken(&status) && self.reopen(&status).await => {}
                Err(status) => return Err(status),
            }
        }
        Ok(())
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Result<Option<RolloutEvent>, Status> {
        loop {
            self.open().await?;
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.since = self.since.max(event.sequence);
                    self.reopenings = 0;
                    return Ok(Some(event));
                }
                Ok(None) => return Ok(None),
                Err(status) if broken(&status) && self.reopen(&status).await => {
                    self.stream = None;
                }
                Err(status) => return Err(status),
            }
        }
    }

    async fn request(&mut self) -> Result<Streaming<RolloutEvent>, Status> {
        let response = match &self.watched {
            Watched::Plan(plan_id) => {
                let request = WatchRolloutRequest {
                    plan_id: plan_id.clone(),
                    include_statements: self.statements,
                    since: self.since,
                };
                self.client.watch_rollout(request).await?
            }
            Watched::Fleet => {
                let request = WatchEventsRequest {
                    since: self.since,
                    include_statements: self.statements,
                };
                self.client.watch_events(request).await?
            }
        };
        Ok(response.into_inner())
    }

    /// Moves to a replica that does not lead, when several are given and one answers as such;
    /// its standing. Else stays on the client it has.
    async fn move_to_follower(&mut self) -> Option<ReplicaStanding> {
        let (connection, _) = self.replicas?;
        let described = connection.follower().await?;
        self.client = described.client;
        self.replicas = Some((connection, described.index));
        Some(described.standing)
    }

    /// The address of the replica in use; "the same coordinator" without several.
    fn address(&self) -> String {
        self.replicas.map_or_else(
            || "the same coordinator".to_owned(),
            |(connection, index)| connection.addresses()[index].to_owned(),
        )
    }

    /// After `status` broke the stream: waits a little, moves to a replica that does not lead
    /// (else the next one) when there are several, and says so; false once it has tried too
    /// often in a row.
    async fn reopen(&mut self, status: &Status) -> bool {
        if self.reopenings >= MAX_REOPENINGS {
            return false;
        }
        self.reopenings += 1;
        tokio::time::sleep(Duration::from_millis(200) * self.reopenings).await;
        if self.move_to_follower().await.is_none()
            && let Some((connection, current)) = self.replicas
            && let Ok((client, index)) = connection.client_from(current + 1).await
        {
            self.client = client;
            self.replicas = Some((connection, index));
        }
        eprintln!(
            "the watch broke ({}); continuing on {} after sequence {}",
            status.message(),
            self.address(),
            self.since
        );
        true
    }
}

/// Whether `status` means the replica or the connection went away (watch again elsewhere),
/// rather than a refusal.
fn broken(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}
