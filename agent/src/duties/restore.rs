//! Restoring a recorded backup onto its PostgreSQL shard, on an operator's request, under the
//! claim the coordinator took for it:
//!
//! 1. the backup is checked again (size, SHA-256, contents): a damaged one changes nothing;
//! 2. a backup of the shard as it is now is taken first, so the restore loses nothing;
//! 3. `pg_restore --clean --if-exists` writes the backup's script, which `psql` runs in ONE
//!    transaction between [`restore_sql::prologue`] (bounded lock waits, the migrator lock,
//!    the fence check, every relation locked up front, then the relations the backup lacks
//!    dropped) and [`restore_sql::epilogue`] (the fence at the claim's token, an audit entry).
//!
//! A failure anywhere, or the agent stopping (psql is killed), leaves the shard as it was.

mod contents;

use fleetshift_common::fence::FenceToken;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetshift_common::engine::{DatabaseMessage, restore_sql};
use fleetshift_common::proto::v1::ErrorKind;
use fleetshift_common::secrets::DatabaseUrl;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use super::DutyFailure;
use super::backup::{self, BackupSettings, Manifest, PROGRAMS, Subject};
use fleetshift_common::pg_client::{ClientCredentials, client_command, run_to_end};

/// Which backup goes back onto which shard, for whom.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOrder<'a> {
    pub shard_id: &'a str,
    pub url: &'a DatabaseUrl,
    pub agent_id: &'a str,
    pub requested_by: &'a str,
    pub backup: &'a Manifest,
    pub fence_token: FenceToken,
    pub lock_timeout: Duration,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub safety_backup: Manifest,
    pub dropped: Vec<String>,
    pub duration: Duration,
}

/// Why a restore changed nothing.
#[derive(Debug)]
pub struct RestoreFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl RestoreFailure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Puts `order.backup` back on its shard.
pub async fn restore(
    settings: &BackupSettings,
    order: RestoreOrder<'_>,
    stop: &CancellationToken,
) -> Result<Restored, RestoreFailure> {
    let started = Instant::now();
    let shard = order.shard_id;
    let unchanged = |kind: ErrorKind, message: String| {
        RestoreFailure::new(
            kind,
            format!(
                "shard {shard}: restoring backup {}: {}; the shard is unchanged",
                order.backup.backup_id,
                order.url.scrub(&message)
            ),
        )
    };
    if order
        .backup
        .location
        .extension()
        .is_none_or(|extension| extension != "dump")
    {
        return Err(unchanged(
            ErrorKind::BadInput,
            format!(
                "{} is not a pg_dump archive; a SQLite shard is restored by copying its backup over the database file while the application is stopped",
                order.backup.location.display()
            ),
        ));
    }
    backup::check_recorded(settings, order.backup)
        .await
        .map_err(|message| unchanged(ErrorKind::Failed, message))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(order.url.expose())
        .await
        .map_err(|error| {
            unchanged(
                ErrorKind::Unreachable,
                format!("cannot connect: {}", DatabaseMessage(&error)),
            )
        })?;
    let prepared = prepare(settings, order, &pool, stop).await;
    pool.close().await;
    let (safety_backup, reconciliation) = prepared.map_err(|failure| match failure {
        DutyFailure::Stopped => {
            unchanged(ErrorKind::Stopped, "the agent was told to stop".to_owned())
        }
        DutyFailure::Refused(message) => unchanged(ErrorKind::Precondition, message),
        DutyFailure::ConnectionLost(detail) => unchanged(ErrorKind::Unreachable, detail),
    })?;
    let credentials = ClientCredentials::from_url(order.url)
        .map_err(|message| unchanged(ErrorKind::BadInput, message))?;
    let reason = format!(
        "restored backup {}, requested by {}; the shard before it is backup {}",
        order.backup.backup_id, order.requested_by, safety_backup.backup_id
    );
    let script = Script {
        prologue: restore_sql::prologue(
            order.fence_token,
            order.lock_timeout,
            &reconciliation.locks,
        ),
        drops: reconciliation.drops.join("\n"),
        epilogue: restore_sql::epilogue(order.fence_token, order.agent_id, &reason),
    };
    run_script(settings, &credentials, order.backup, &script, stop)
        .await
        .map_err(|failure| unchanged(failure.kind, failure.message))?;
    tracing::info!(shard, backup = %order.backup.backup_id, safety_backup = %safety_backup.backup_id, dropped = ?reconciliation.dropped, token = %order.fence_token, "backup restored");
    Ok(Restored {
        safety_backup,
        dropped: reconciliation.dropped,
        duration: started.elapsed(),
    })
}

/// Takes the safety backup and reconciles the shard's contents with the backup's.
async fn prepare(
    settings: &BackupSettings,
    order: RestoreOrder<'_>,
    pool: &PgPool,
    stop: &CancellationToken,
) -> Result<(Manifest, contents::Reconciliation), DutyFailure> {
    let catalog_failed = |error: sqlx::Error| {
        DutyFailure::Refused(format!(
            "cannot read the shard's catalog: {}",
            DatabaseMessage(&error)
        ))
    };
    let database_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .map_err(catalog_failed)?;
    // Retention waits for the next backup: it must not remove the backup being restored.
    let unpruned = BackupSettings {
        keep: usize::MAX,
        max_age: None,
        ..settings.clone()
    };
    let subject = Subject {
        shard_id: order.shard_id,
        plan_id: "pre-restore",
        url: order.url,
        database_bytes: u64::try_from(database_bytes).unwrap_or_default(),
        restore_test: None,
    };
    let safety_backup = backup::take(&unpruned, subject, stop).await?;
    let mut command = client_command(&settings.pg_restore, None);
    command.arg("--list").arg(&order.backup.location);
    let listing = run_to_end(command, &settings.pg_restore, "pg_restore --list", PROGRAMS)
        .await
        .map_err(DutyFailure::Refused)?;
    let in_backup = contents::from_listing(&String::from_utf8_lossy(&listing));
    let (schemas, relations) = contents::of_shard(pool).await.map_err(catalog_failed)?;
    Ok((
        safety_backup,
        contents::reconcile(&in_backup, &schemas, &relations),
    ))
}

/// What psql runs around the backup's script.
struct Script {
    prologue: String,
    drops: String,
    epilogue: String,
}

/// `pg_restore --clean --if-exists -f -` piped into one `psql --single-transaction`.
async fn run_script(
    settings: &BackupSettings,
    credentials: &ClientCredentials,
    backup: &Manifest,
    script: &Script,
    stop: &CancellationToken,
) -> Result<(), RestoreFailure> {
    let failed = |message: String| RestoreFailure::new(ErrorKind::Failed, message);
    let mut writer = client_command(&settings.pg_restore, None);
    writer
        .arg("--clean")
        .arg("--if-exists")
        .arg("--file=-")
        .arg(&backup.location)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut writer = writer.spawn().map_err(|error| {
        failed(format!(
            "cannot run {}: {error}",
            settings.pg_restore.display()
        ))
    })?;
    let script_text: Stdio = writer
        .stdout
        .take()
        .ok_or_else(|| failed("pg_restore gave no output stream".to_owned()))?
        .try_into()
        .map_err(|error| failed(format!("cannot pipe pg_restore into psql: {error}")))?;
    let mut runner = client_command(&settings.psql, Some(credentials));
    runner
        .arg("--no-psqlrc")
        .arg("--quiet")
        .arg("--no-password")
        .arg("--set=ON_ERROR_STOP=1")
        .arg("--single-transaction")
        .arg("--dbname")
        .arg(credentials.conninfo())
        .arg("--command")
        .arg(&script.prologue);
    if !script.drops.is_empty() {
        runner.arg("--command").arg(&script.drops);
    }
    runner
        .arg("--file=-")
        .arg("--command")
        .arg(&script.epilogue)
        .stdin(script_text)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let runner = runner.spawn().map_err(|error| {
        failed(format!(
            "cannot run {}: {error}; install the PostgreSQL client programs or set [backups] psql",
            settings.psql.display()
        ))
    })?;
    let ran = tokio::select! {
        () = stop.cancelled() => {
            // Killing psql ends its session: the server rolls the transaction back.
            return Err(RestoreFailure::new(ErrorKind::Stopped, "the agent was told to stop; psql was ended before it committed"));
        }
        ran = runner.wait_with_output() => ran,
    };
    let written = writer.wait_with_output().await;
    let ran = ran.map_err(|error| failed(format!("waiting for psql: {error}")))?;
    if !ran.status.success() {
        let stderr = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
        return Err(classify(&stderr));
    }
    match written {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(failed(format!(
            "pg_restore failed writing the script: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
        Err(error) => Err(failed(format!("waiting for pg_restore: {error}"))),
    }
}

/// psql's failure, by what stopped it.
fn classify(stderr: &str) -> RestoreFailure {
    let kind = if stderr.contains(restore_sql::FENCED_OUT) {
        ErrorKind::FencedOut
    } else if stderr.contains(restore_sql::MIGRATOR_BUSY) || stderr.contains("lock timeout") {
        ErrorKind::LockTimeout
    } else if stderr.contains("connection to server") {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Failed
    };
    let hint = match kind {
        ErrorKind::LockTimeout => {
            "; sessions hold locks the restore needs: retry when they finish, or allow a longer --lock-timeout"
        }
        ErrorKind::FencedOut => {
            "; a newer claim wrote to the shard since this restore was requested"
        }
        _ => "",
    };
    RestoreFailure::new(kind, format!("psql: {stderr}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_failures_keep_their_kind() {
        let lock = classify("psql:<stdin>:3: ERROR:  canceling statement due to lock timeout");
        assert_eq!(lock.kind, ErrorKind::LockTimeout);
        assert!(lock.message.contains("--lock-timeout"));
        let fenced = classify(&format!("ERROR:  {} 9", restore_sql::FENCED_OUT));
        assert_eq!(fenced.kind, ErrorKind::FencedOut);
        assert_eq!(classify("ERROR:  syntax error").kind, ErrorKind::Failed);
    }
}
