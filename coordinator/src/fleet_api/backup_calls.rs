//! The backup calls of the fleet API: each asks the shard's agent, as a host request, and
//! answers with what it found or did.

use std::time::Duration;

use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    BackupRestored, BackupVerified, ListBackups, ListBackupsRequest, ListBackupsResponse,
    RestoreBackup, RestoreBackupRequest, VerifyBackup, VerifyBackupRequest,
};
use tonic::{Response, Status};

use super::FleetApi;
use crate::backups::QUICK_TIMEOUT;
use crate::error::{ErrorCode, refuse};
use crate::store::Store;

impl<S: Store + 'static> FleetApi<S> {
    /// The shard's backups, as its agent lists them.
    pub async fn backups_of(
        &self,
        request: ListBackupsRequest,
        caller: String,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        let shard_id = request.shard_id;
        let (agent, outcome) = self
            .ask(
                shard_id.clone(),
                Action::List(ListBackups {}),
                caller,
                QUICK_TIMEOUT,
            )
            .await?;
        match outcome {
            Outcome::Listed(listed) => Ok(Response::new(ListBackupsResponse {
                shard_id,
                agent_id: agent,
                backups: listed.backups,
            })),
            other => Err(unexpected(&agent, &other)),
        }
    }

    /// One backup checked again on its agent's host.
    pub(super) async fn backup_checked(
        &self,
        request: VerifyBackupRequest,
        caller: String,
    ) -> Result<Response<BackupVerified>, Status> {
        let action = Action::Verify(VerifyBackup {
            backup_id: request.backup_id,
        });
        let (agent, outcome) = self
            .ask(request.shard_id, action, caller, QUICK_TIMEOUT)
            .await?;
        match outcome {
            Outcome::Verified(verified) => Ok(Response::new(verified)),
            other => Err(unexpected(&agent, &other)),
        }
    }

    /// One backup put back on its shard by its agent.
    pub(super) async fn backup_restored(
        &self,
        request: RestoreBackupRequest,
        caller: String,
    ) -> Result<Response<BackupRestored>, Status> {
        let timeout = positive(request.timeout, "timeout")?.unwrap_or(RESTORE_TIMEOUT);
        let lock_timeout =
            positive(request.lock_timeout, "lock_timeout")?.unwrap_or(RESTORE_LOCK_TIMEOUT);
        let action = Action::Restore(RestoreBackup {
            backup_id: request.backup_id.clone(),
            fence_token: 0,
            lock_timeout: prost_types::Duration::try_from(lock_timeout).ok(),
        });
        tracing::info!(shard = %request.shard_id, backup = %request.backup_id, by = %caller, "restore requested");
        let (agent, outcome) = self
            .ask(request.shard_id.clone(), action, caller, timeout)
            .await?;
        match outcome {
            Outcome::Restored(restored) => {
                tracing::info!(shard = %request.shard_id, backup = %request.backup_id, %agent, version = %restored.current_version, "backup restored");
                Ok(Response::new(restored))
            }
            other => Err(unexpected(&agent, &other)),
        }
    }
}

/// How long a restore may take by default, its safety backup included.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a restore may wait for its locks by default.
const RESTORE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration the caller set, if any; zero or negative ones are refused.
pub(super) fn positive(
    value: Option<prost_types::Duration>,
    name: &str,
) -> Result<Option<Duration>, Status> {
    match value {
        None => Ok(None),
        Some(value) => match Duration::try_from(value) {
            Ok(duration) if !duration.is_zero() => Ok(Some(duration)),
            _ => Err(refuse(
                ErrorCode::BadRequest,
                format!("{name} must be a positive duration"),
            )),
        },
    }
}

fn unexpected(agent: &str, outcome: &Outcome) -> Status {
    refuse(
        ErrorCode::Internal,
        format!("agent {agent} answered a different request: {outcome:?}"),
    )
}
