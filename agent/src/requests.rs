//! Operators' host requests, relayed by the coordinator: list a shard's backups, verify one
//! again, or restore one (under the coordinator's claim of the shard); rehearse a plan; take
//! or verify a schema baseline; read the shard's ledger. Every request gets a
//! reply: what was found or done, or an error saying what to do next.

use fleetshift_common::fence::FenceToken;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetshift_common::engine::{Connected, ShardEngine, Timeouts};
use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    BackupList, BackupRestored, BackupVerified, ErrorDetail, ErrorKind, HostReply, HostRequest,
    LedgerRow, RestoreBackup, ShardLedger,
};
use tokio_util::sync::CancellationToken;

use crate::assignment::wire::exec_failure;
use crate::config::{AgentConfig, ShardConfig};
use crate::duties::backup::{self, BackupSettings};
use crate::duties::restore::{self, RestoreOrder};
use crate::{check, rehearse, schema_baselines};

/// The longest lock wait a restore accepts when the request names none.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `request`; a restore stops (changing nothing) when `stop` is cancelled.
pub async fn answer(
    config: &AgentConfig,
    request: HostRequest,
    stop: CancellationToken,
) -> HostReply {
    let answered = answer_for_shard(config, &request, &stop).await;
    let (outcome, error) = match answered {
        Ok(outcome) => (Some(outcome), None),
        Err(error) => {
            tracing::warn!(request = %request.request_id, shard = %request.shard_id, error = %error.message, "host request failed");
            (None, Some(error))
        }
    };
    HostReply {
        request_id: request.request_id,
        shard_id: request.shard_id,
        outcome,
        error,
    }
}

fn failure(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

async fn answer_for_shard(
    config: &AgentConfig,
    request: &HostRequest,
    stop: &CancellationToken,
) -> Result<Outcome, ErrorDetail> {
    let shard = config
        .shards
        .iter()
        .find(|shard| shard.id == request.shard_id)
        .ok_or_else(|| {
            failure(
                ErrorKind::BadInput,
                format!(
                    "agent {} does not serve shard {}",
                    config.agent_id, request.shard_id
                ),
            )
        })?;
    let Some(action) = &request.action else {
        return Err(failure(
            ErrorKind::BadInput,
            "the request names no action; this agent may be older than its coordinator".to_owned(),
        ));
    };
    // A ledger is read in the shard's scope; everything else works on the whole database.
    if !matches!(action, Action::ReadLedger(_)) {
        shard
            .whole_database_only("backups, restores, rehearsals and schema baselines")
            .map_err(|why| failure(ErrorKind::BadInput, why))?;
    }
    match action {
        Action::ReadLedger(_) => ledger(shard).await.map(Outcome::Ledger),
        Action::Rehearse(order) => rehearse::rehearse(config, shard, order, stop)
            .await
            .map(Outcome::Rehearsed),
        Action::TakeBaseline(order) => schema_baselines::take(config, shard, order)
            .await
            .map(Outcome::BaselineTaken),
        Action::VerifyBaseline(order) => schema_baselines::verify(config, shard, order)
            .await
            .map(Outcome::BaselineVerified),
        Action::List(_) => {
            let (_, directory) = backups_of(config, shard)?;
            let manifests = backup::list(&directory).map_err(|error| {
                failure(
                    ErrorKind::Failed,
                    format!(
                        "shard {}: cannot read the backups in {}: {error}",
                        shard.id,
                        directory.display()
                    ),
                )
            })?;
            Ok(Outcome::Listed(BackupList {
                backups: manifests.iter().map(backup::Manifest::record).collect(),
            }))
        }
        Action::Verify(verify) => {
            let (settings, directory) = backups_of(config, shard)?;
            let manifest = find(shard, &directory, &verify.backup_id)?;
            let entries = backup::check_recorded(settings, &manifest)
                .await
                .map_err(|message| {
                    failure(ErrorKind::Failed, format!("shard {}: {message}", shard.id))
                })?;
            tracing::info!(shard = %shard.id, backup = %manifest.backup_id, entries, by = %request.requested_by, "backup verified");
            Ok(Outcome::Verified(BackupVerified {
                backup: Some(manifest.record()),
                entries,
            }))
        }
        Action::Restore(order) => {
            let (settings, directory) = backups_of(config, shard)?;
            let manifest = find(shard, &directory, &order.backup_id)?;
            restore_shard(config, settings, shard, request, order, manifest, stop).await
        }
    }
}

/// The shard's ledger as it keeps it, read in the shard's scope (a tenant's from its schema).
async fn ledger(shard: &ShardConfig) -> Result<ShardLedger, ErrorDetail> {
    let read = match shard.connect(Timeouts::default()).await {
        Ok(Connected::Postgres(engine)) => engine.read_ledger().await,
        Ok(Connected::Sqlite(engine)) => engine.read_ledger().await,
        Err(error) => Err(error),
    };
    let entries = read.map_err(|error| {
        let detail = exec_failure(&error);
        ErrorDetail {
            message: format!(
                "shard {}: cannot read its ledger: {}",
                shard.display_name(),
                detail.message
            ),
            ..detail
        }
    })?;
    Ok(ShardLedger {
        rows: entries
            .into_iter()
            .map(|entry| LedgerRow {
                version: entry.version,
                name: entry.name,
                status: entry.status.as_str().to_owned(),
                transactional: entry.transactional,
                fence_token: entry.fence_token.get(),
                plan_id: entry.plan_id.unwrap_or_default(),
                agent_id: entry.agent_id,
                started_at: entry.started_at,
                finished_at: entry.finished_at.unwrap_or_default(),
                duration_ms: entry.duration_ms.unwrap_or_default(),
                statements_run: entry.statements_run,
                error: entry.error.unwrap_or_default(),
                checksum: entry.checksum,
            })
            .collect(),
    })
}

/// The backup settings and the shard's backup directory; an agent without `[backups]` keeps
/// none.
fn backups_of<'c>(
    config: &'c AgentConfig,
    shard: &ShardConfig,
) -> Result<(&'c BackupSettings, PathBuf), ErrorDetail> {
    let settings = config.backups.as_ref().ok_or_else(|| {
        failure(
            ErrorKind::BadInput,
            format!(
                "agent {} keeps no backups (its configuration has no [backups] section), so shard {} has none",
                config.agent_id, shard.id
            ),
        )
    })?;
    Ok((settings, backup::shard_directory(settings, &shard.id)))
}

fn find(
    shard: &ShardConfig,
    directory: &Path,
    backup_id: &str,
) -> Result<backup::Manifest, ErrorDetail> {
    backup::find(directory, backup_id).map_err(|message| {
        failure(
            ErrorKind::BadInput,
            format!("shard {}: {message}", shard.id),
        )
    })
}

async fn restore_shard(
    config: &AgentConfig,
    settings: &BackupSettings,
    shard: &ShardConfig,
    request: &HostRequest,
    order: &RestoreBackup,
    manifest: backup::Manifest,
    stop: &CancellationToken,
) -> Result<Outcome, ErrorDetail> {
    let Some(fence_token) = FenceToken::from_wire(order.fence_token) else {
        return Err(failure(
            ErrorKind::BadInput,
            format!(
                "shard {}: a restore needs the coordinator's claim of the shard (a fencing token)",
                shard.id
            ),
        ));
    };
    let lock_timeout = order
        .lock_timeout
        .and_then(|timeout| Duration::try_from(timeout).ok())
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
    tracing::warn!(shard = %shard.id, backup = %manifest.backup_id, token = %fence_token, by = %request.requested_by, "restoring a backup");
    let restore_order = RestoreOrder {
        shard_id: &shard.id,
        url: &shard.database_url,
        agent_id: &config.agent_id,
        requested_by: &request.requested_by,
        backup: &manifest,
        fence_token,
        lock_timeout,
    };
    let restored = restore::restore(settings, restore_order, stop)
        .await
        .map_err(|failed| failure(failed.kind, failed.message))?;
    let after = check::inspect(shard).await;
    Ok(Outcome::Restored(BackupRestored {
        backup: Some(manifest.record()),
        safety_backup: Some(restored.safety_backup.record()),
        dropped: restored.dropped,
        current_version: after
            .latest_applied
            .unwrap_or_else(|| crate::assignment::BASE.to_owned()),
        duration: prost_types::Duration::try_from(restored.duration).ok(),
    }))
}
