//! Operators' requests about one shard's backups (list, verify, restore). The backups live on
//! the shard's agent host, so the replica called writes the request to the store under a lease
//! of the call; whichever replica holds the agent's session delivers it ([`relay`]) and writes
//! the agent's reply under the same lease; the replica called waits for that reply, then
//! revokes the lease, which removes both keys.
//!
//! A restore first claims the shard under the call's lease, exactly as the leader claims a
//! shard for a rollout task: while the claim stands no rollout dispatches to the shard, and
//! the claim's fencing token is what the restore leaves the shard's fence at. The claim goes
//! with the lease when the call ends (or its timeout passes, if the replica called dies).

pub mod relay;

use std::time::{Duration, SystemTime};

use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{ErrorDetail, ErrorKind, Hello, HostReply, HostRequest};
use prost::Message;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::claims;
use crate::error::{ErrorCode, refuse};
use crate::store::{Condition, LeaseId, Store, Write, keys};

/// The metadata key a refusal carries an agent's [`ErrorKind`] in (its number), so the CLI
/// exits with the code that kind has everywhere else.
pub const ERROR_KIND_METADATA: &str = "fleetshift-error-kind";

/// How long listing or verifying may take before the call gives up.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(120);

/// The lease outlives the wait by this much, so a late reply still finds its request.
const LEASE_SLACK: Duration = Duration::from_secs(5);

/// A request to send, and who sends it.
#[derive(Debug)]
pub struct Errand {
    pub shard_id: String,
    pub action: Action,
    pub requested_by: String,
    pub timeout: Duration,
}

/// Sends `errand` to the agent announcing its shard among `agents` and waits for the reply;
/// the agent's id and its (successful) reply.
pub async fn ask<S: Store>(
    store: &S,
    agents: &[(String, Hello)],
    errand: Errand,
) -> Result<(String, HostReply), Status> {
    let agent = agent_of(agents, &errand.shard_id)?;
    let request_id = new_request_id();
    let lease = store
        .grant_lease(errand.timeout + LEASE_SLACK)
        .await
        .map_err(Status::from)?;
    let asked = exchange(store, &agent, &request_id, lease, errand).await;
    if let Err(error) = store.revoke(lease).await {
        tracing::warn!(%error, request = %request_id, "cannot end the host request's lease; it lapses on its own");
    }
    let reply = asked?;
    match reply.error {
        Some(error) => Err(agent_refusal(&error)),
        None => Ok((agent, reply)),
    }
}

async fn exchange<S: Store>(
    store: &S,
    agent: &str,
    request_id: &str,
    lease: LeaseId,
    errand: Errand,
) -> Result<HostReply, Status> {
    let mut action = errand.action;
    if let Action::Restore(restore) = &mut action {
        let claim =
            claims::for_restore(store, &errand.shard_id, &errand.requested_by, lease).await?;
        restore.fence_token = claim.token.get();
        tracing::info!(shard = %errand.shard_id, token = %claim.token, by = %errand.requested_by, "shard claimed for a restore");
    }
    let request = HostRequest {
        request_id: request_id.to_owned(),
        shard_id: errand.shard_id.clone(),
        action: Some(action),
        requested_by: errand.requested_by,
    };
    let reply_key = keys::host_reply(request_id);
    let from = store.list(&reply_key).await.map_err(Status::from)?.revision;
    let mut replies = store.watch(&reply_key, from).await.map_err(Status::from)?;
    let written = store
        .commit(
            None,
            &[Condition::Absent(keys::host_request(agent, request_id))],
            &[Write::Put {
                key: keys::host_request(agent, request_id),
                value: request.encode_to_vec(),
                lease: Some(lease),
            }],
        )
        .await
        .map_err(Status::from)?;
    if written.is_none() {
        return Err(refuse(
            ErrorCode::Internal,
            format!("host request {request_id} exists already"),
        ));
    }
    let waited = tokio::time::timeout(errand.timeout, async {
        while let Some(change) = replies.next().await {
            let change = change.map_err(Status::from)?;
            if let Some(value) = change.value {
                return HostReply::decode(value.as_slice()).map_err(|error| {
                    refuse(
                        ErrorCode::Internal,
                        format!("agent {agent}'s reply is unreadable: {error}"),
                    )
                });
            }
        }
        Err(refuse(
            ErrorCode::Unavailable,
            "the fleet store stopped reporting changes; the request may still run on the agent",
        ))
    })
    .await;
    waited.unwrap_or_else(|_| {
        Err(refuse(ErrorCode::TimedOut, format!(
            "agent {agent} did not answer about shard {} within {}s; check the agent's log (it may still be working)",
            request.shard_id,
            errand.timeout.as_secs()
        )))
    })
}

/// The agent that announces `shard`.
fn agent_of(agents: &[(String, Hello)], shard: &str) -> Result<String, Status> {
    agents
        .iter()
        .find(|(_, hello)| hello.shards.iter().any(|facts| facts.shard_id == shard))
        .map(|(agent, _)| agent.clone())
        .ok_or_else(|| {
            refuse(ErrorCode::NotFound, format!(
                "no connected agent serves shard {shard}; `fleetshift shards` lists the fleet's shards"
            ))
        })
}

/// An agent's failure as a status whose code fits its kind, carrying the kind itself.
fn agent_refusal(error: &ErrorDetail) -> Status {
    let kind = ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Failed);
    let code = match kind {
        ErrorKind::BadInput => ErrorCode::BadRequest,
        ErrorKind::Unreachable => ErrorCode::Unavailable,
        ErrorKind::FencedOut | ErrorKind::LockTimeout | ErrorKind::Precondition => {
            ErrorCode::NotNow
        }
        ErrorKind::Stopped => ErrorCode::Contended,
        _ => ErrorCode::Internal,
    };
    let mut status = refuse(code, error.message.clone());
    status
        .metadata_mut()
        .insert(ERROR_KIND_METADATA, MetadataValue::from(error.kind));
    status
}

/// `b<seconds>-<micros>`: time-ordered and unique per call in practice; the store's
/// create-if-absent catches the rest.
fn new_request_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("b{}-{:06}", now.as_secs(), now.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_failure_keeps_its_kind_for_the_cli() {
        let status = agent_refusal(&ErrorDetail {
            kind: ErrorKind::LockTimeout.into(),
            message: "waited 1s".to_owned(),
        });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let kind = status
            .metadata()
            .get(ERROR_KIND_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<i32>().ok());
        assert_eq!(kind, Some(i32::from(ErrorKind::LockTimeout)));
    }

    #[test]
    fn a_shard_nobody_announces_is_not_found() {
        let agents = vec![("a".to_owned(), Hello::default())];
        let refused = agent_of(&agents, "users-1").expect_err("no agent");
        assert_eq!(refused.code(), tonic::Code::NotFound);
    }
}
