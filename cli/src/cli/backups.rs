//! `fleetshift backups list|verify|restore --shard S [--backup ID]`: a shard's backups, kept
//! by its agent on the database host and reached through the coordinator.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use fleetshift_common::duration;
use fleetshift_common::proto::v1::{
    BackupRecord, ListBackupsRequest, RestoreBackupRequest, VerifyBackupRequest,
};
use serde_json::json;

use super::Output;
use super::duties::backup_json;
use super::fleet::{Connection, client, refused};
use crate::exit;

#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(subcommand)]
    action: BackupsAction,
}

#[derive(Debug, Subcommand)]
enum BackupsAction {
    /// A shard's recorded backups, newest first (viewer).
    List(ShardArgs),
    /// Check a backup again on its host: size and SHA-256 against its manifest, then its
    /// contents (operator).
    Verify(BackupArgs),
    /// Put a backup back on its shard (approver). A backup of the shard as it is now is taken
    /// first; the restore runs in one transaction and no rollout touches the shard meanwhile.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct ShardArgs {
    #[command(flatten)]
    connection: Connection,
    /// The shard.
    #[arg(long)]
    shard: String,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Debug, Args)]
struct BackupArgs {
    #[command(flatten)]
    shard: ShardArgs,
    /// The backup's id (`fleetshift backups list` shows them).
    #[arg(long)]
    backup: String,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    #[command(flatten)]
    target: BackupArgs,
    /// How long the restore may wait for locks before it gives up, changing nothing.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    lock_timeout: Duration,
    /// How long to wait for the agent to finish (the shard is held until then at most).
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    timeout: Duration,
    /// Confirms that the shard's schema and data are replaced by the backup's.
    #[arg(long)]
    yes: bool,
}

pub async fn run(arguments: BackupsArgs) -> ExitCode {
    match arguments.action {
        BackupsAction::List(shard) => list(shard).await,
        BackupsAction::Verify(target) => verify(target).await,
        BackupsAction::Restore(restore_args) => restore(restore_args).await,
    }
}

async fn list(arguments: ShardArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = ListBackupsRequest {
        shard_id: arguments.shard.clone(),
    };
    let listed = match client.list_backups(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&arguments.connection, arguments.output, &status),
    };
    match arguments.output {
        Output::Json => println!(
            "{}",
            json!({
                "shard": listed.shard_id,
                "agent": listed.agent_id,
                "backups": listed.backups.iter().map(backup_json).collect::<Vec<_>>(),
            })
        ),
        Output::Human => {
            println!(
                "{:<36} {:<20} {:>14} {:>8}  SHA-256",
                "BACKUP", "TAKEN", "BYTES", "ENTRIES"
            );
            for backup in &listed.backups {
                println!(
                    "{:<36} {:<20} {:>14} {:>8}  {}",
                    backup.backup_id,
                    taken_at(backup),
                    backup.size_bytes,
                    backup.verified_entries,
                    backup.sha256.get(..16).unwrap_or(&backup.sha256)
                );
            }
            println!(
                "{} backup(s) of shard {} on agent {}'s host",
                listed.backups.len(),
                listed.shard_id,
                listed.agent_id
            );
        }
    }
    ExitCode::from(exit::OK)
}

async fn verify(arguments: BackupArgs) -> ExitCode {
    let shard = &arguments.shard;
    let mut client = match client(&shard.connection, shard.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = VerifyBackupRequest {
        shard_id: shard.shard.clone(),
        backup_id: arguments.backup.clone(),
    };
    let verified = match client.verify_backup(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&shard.connection, shard.output, &status),
    };
    match shard.output {
        Output::Json => println!(
            "{}",
            json!({
                "shard": shard.shard,
                "verified": true,
                "entries": verified.entries,
                "backup": verified.backup.as_ref().map(backup_json),
            })
        ),
        Output::Human => println!(
            "backup {} of shard {} is intact: size and SHA-256 match its manifest, {} entries read",
            arguments.backup, shard.shard, verified.entries
        ),
    }
    ExitCode::from(exit::OK)
}

async fn restore(arguments: RestoreArgs) -> ExitCode {
    let target = &arguments.target;
    let shard = &target.shard;
    if !arguments.yes {
        super::render::failure(
            shard.output,
            &format!(
                "restoring replaces shard {}'s schema and data with backup {}'s (a backup of the shard as it is now is taken first); pass --yes to go ahead",
                shard.shard, target.backup
            ),
            fleetshift_common::error::ErrorKind::BadInput,
        );
        return ExitCode::from(exit::BAD_INPUT);
    }
    let mut client = match client(&shard.connection, shard.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = RestoreBackupRequest {
        shard_id: shard.shard.clone(),
        backup_id: target.backup.clone(),
        lock_timeout: prost_types::Duration::try_from(arguments.lock_timeout).ok(),
        timeout: prost_types::Duration::try_from(arguments.timeout).ok(),
    };
    if shard.output == Output::Human {
        eprintln!(
            "restoring backup {} onto shard {} (the shard is held for the restore; no rollout touches it meanwhile)…",
            target.backup, shard.shard
        );
    }
    let mut call = tonic::Request::new(request);
    call.set_timeout(arguments.timeout + Duration::from_secs(30));
    let restored = match client.restore_backup(call).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&shard.connection, shard.output, &status),
    };
    let took_ms = restored
        .duration
        .and_then(|took| Duration::try_from(took).ok())
        .map(|took| took.as_millis());
    match shard.output {
        Output::Json => println!(
            "{}",
            json!({
                "shard": shard.shard,
                "restored": restored.backup.as_ref().map(backup_json),
                "safety_backup": restored.safety_backup.as_ref().map(backup_json),
                "dropped": restored.dropped,
                "current_version": restored.current_version,
                "duration_ms": took_ms,
            })
        ),
        Output::Human => {
            println!(
                "shard {} restored from backup {}; its version is now {}",
                shard.shard, target.backup, restored.current_version
            );
            if let Some(safety) = &restored.safety_backup {
                println!(
                    "the shard as it was before is backup {} ({}); restore that one to undo",
                    safety.backup_id, safety.location
                );
            }
            if !restored.dropped.is_empty() {
                println!(
                    "dropped, not in the backup: {}",
                    restored.dropped.join(", ")
                );
            }
        }
    }
    ExitCode::from(exit::OK)
}

fn taken_at(backup: &BackupRecord) -> String {
    backup.taken_at.map_or_else(
        || "-".to_owned(),
        |at| {
            let text = at.to_string();
            // RFC 3339 to the second is enough in a table.
            text.get(..19)
                .map_or(text.clone(), |second| format!("{second}Z"))
        },
    )
}
