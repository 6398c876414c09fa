//! Verified backups of SQLite shards: an online copy with `VACUUM INTO` (a consistent
//! snapshot, taken while the database stays in use) into the shard's backup directory, its
//! SHA-256 computed from the file, verified by opening the copy read-only and running
//! `PRAGMA integrity_check`. Recorded and kept like PostgreSQL dumps.

use std::path::Path;
use std::time::Instant;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::DutyFailure;
use super::backup::{self, BackupSettings, Manifest, Produced, Subject};
use super::preflight::free_bytes;

/// Takes, verifies and records a copy of the SQLite shard behind `pool`, then applies retention.
pub async fn take(
    settings: &BackupSettings,
    subject: Subject<'_>,
    pool: &SqlitePool,
) -> Result<Manifest, DutyFailure> {
    let started = Instant::now();
    let failed =
        |message: String| DutyFailure::Refused(format!("the required backup failed: {message}"));
    let (directory, backup_id) = backup::begin(settings, subject).map_err(failed)?;
    let free = free_bytes(&directory).map_err(|error| {
        failed(format!(
            "cannot read free space in {}: {error}",
            directory.display()
        ))
    })?;
    if free <= subject.database_bytes {
        return Err(failed(format!(
            "{} bytes free in {} for a database of {} bytes; free space there or point [backups] directory elsewhere",
            free,
            directory.display(),
            subject.database_bytes
        )));
    }
    let partial = directory.join(format!("{backup_id}.sqlite.partial"));
    let discard = |message: String| {
        let _ = std::fs::remove_file(&partial);
        failed(message)
    };
    let target = partial
        .to_str()
        .ok_or_else(|| failed(format!("{} is not a UTF-8 path", partial.display())))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        target.replace('\'', "''")
    )))
    .execute(pool)
    .await
    .map_err(|error| discard(format!("VACUUM INTO {target}: {error}")))?;
    let (size_bytes, sha256) = backup::hash_file(&partial)
        .await
        .map_err(|error| discard(format!("reading {target}: {error}")))?;
    let verified_entries = verify(&partial).await.map_err(discard)?;
    let produced = Produced {
        partial: partial.clone(),
        extension: "sqlite",
        size_bytes,
        sha256,
        verified_entries,
        restored_tables: 0,
    };
    backup::record(settings, subject, &directory, backup_id, produced, started).map_err(failed)
}

/// Opens the copy read-only and checks it; the number of schema entries it holds.
pub(super) async fn verify(copy: &Path) -> Result<u32, String> {
    let options = SqliteConnectOptions::new().filename(copy).read_only(true);
    let mut connection = SqliteConnection::connect_with(&options)
        .await
        .map_err(|error| format!("the copy does not open: {error}"))?;
    let verdict: Result<(String, i64), sqlx::Error> = async {
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut connection)
            .await?;
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut connection)
            .await?;
        Ok((integrity, entries))
    }
    .await;
    let _ = connection.close().await;
    let (integrity, entries) =
        verdict.map_err(|error| format!("the copy cannot be read: {error}"))?;
    if integrity != "ok" {
        return Err(format!(
            "the copy failed PRAGMA integrity_check: {integrity}"
        ));
    }
    u32::try_from(entries).map_err(|_| "the copy lists too many entries".to_owned())
}
