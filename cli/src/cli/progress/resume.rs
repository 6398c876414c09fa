//! A watch that survives its replica: when the stream breaks (the replica stops, the
//! connection drops) it opens it again, on the next replica when several are given, and
//! continues after the last sequence it handed out, so nothing is missed and nothing comes
//! twice.

use std::time::Duration;

use fleetshift_common::proto::v1::{RolloutEvent, WatchEventsRequest, WatchRolloutRequest};
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
        }
    }

    /// The client in use (the last replica reached).
    pub fn client(&mut self) -> &mut FleetClient {
        &mut self.client
    }

    /// Opens the watch now (so what happens from here on is seen), if it is not open.
    pub async fn open(&mut self) -> Result<(), Status> {
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

    /// After `status` broke the stream: waits a little, moves to the next replica when there
    /// are several, and says so; false once it has tried too often in a row.
    async fn reopen(&mut self, status: &Status) -> bool {
        if self.reopenings >= MAX_REOPENINGS {
            return false;
        }
        self.reopenings += 1;
        tokio::time::sleep(Duration::from_millis(200) * self.reopenings).await;
        let mut target = "the same coordinator".to_owned();
        if let Some((connection, current)) = self.replicas {
            let next = current + 1;
            if let Ok((client, index)) = connection.client_from(next).await {
                self.client = client;
                self.replicas = Some((connection, index));
                target = connection.addresses()[index].to_owned();
            }
        }
        eprintln!(
            "the watch broke ({}); continuing on {target} after sequence {}",
            status.message(),
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
