//! Verified backups of PostgreSQL shards (SQLite shards: [`super::sqlite_backup`]), and what
//! both share: the directory, the manifest and retention. `pg_dump -Fc` runs as a child
//! process, its output streamed into the shard's backup directory while a SHA-256 is computed,
//! then read back with `pg_restore --list`. Only a verified dump gets its final name and a manifest beside it
//! (`<id>.dump`, `<id>.json`); anything else is removed and the shard stops before any DDL.
//! Credentials reach `pg_dump` through a passfile (see [`super::credentials`]), never its
//! arguments or environment. Retention keeps the newest `keep` backups per shard and drops those
//! older than `max_age`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use fleetshift_common::engine::CountedPool;
use fleetshift_common::proto::v1::BackupRecord;
use fleetshift_common::secrets::DatabaseUrl;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::DutyFailure;
use super::restore_test::{self, HeldSnapshot};
use fleetshift_common::pg_client::{
    ClientCredentials, cannot_run, client_command, failure_text, run_to_end,
};

/// Where the client programs' paths are configured, for errors that cannot start one.
pub(super) const PROGRAMS: &str = "[backups] pg_dump / pg_restore";
/// Where and how an agent keeps backups (`[backups]` in its configuration).
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Each shard's backups go to `<directory>/<shard>/`.
    pub directory: PathBuf,
    /// Backups kept per shard, the newest first (at least 1).
    pub keep: usize,
    /// Backups older than this are removed (never the one just taken).
    pub max_age: Option<Duration>,
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    /// Restores run the backup's script through it, in one transaction.
    pub psql: PathBuf,
    /// `pg_dump --lock-wait-timeout`: how long it may wait for its shared table locks.
    pub lock_wait_timeout: Duration,
}

/// One backup as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub backup_id: String,
    pub shard_id: String,
    pub plan_id: String,
    pub location: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_ms: u64,
    /// Seconds since the Unix epoch.
    pub taken_at: u64,
    pub verified_entries: u32,
    pub database_bytes: u64,
    /// Tables the restore test compared; 0 when there was none.
    #[serde(default)]
    pub restored_tables: u32,
}

impl Manifest {
    pub fn record(&self) -> BackupRecord {
        BackupRecord {
            backup_id: self.backup_id.clone(),
            location: self.location.display().to_string(),
            size_bytes: self.size_bytes,
            sha256: self.sha256.clone(),
            duration: prost_types::Duration::try_from(Duration::from_millis(self.duration_ms)).ok(),
            taken_at: Some(prost_types::Timestamp::from(
                SystemTime::UNIX_EPOCH + Duration::from_secs(self.taken_at),
            )),
            verified_entries: self.verified_entries,
            database_bytes: self.database_bytes,
            restored_tables: self.restored_tables,
        }
    }
}

/// The shard and plan a backup is for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub shard_id: &'a str,
    pub plan_id: &'a str,
    pub url: &'a DatabaseUrl,
    pub database_bytes: u64,
    /// The shard's pool, when the plan asks for a restore test.
    pub restore_test: Option<&'a CountedPool>,
}

/// The directory holding `shard`'s backups.
pub fn shard_directory(settings: &BackupSettings, shard_id: &str) -> PathBuf {
    let safe: String = shard_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    settings.directory.join(safe.trim_start_matches('.'))
}

/// Takes, verifies and records a backup of `subject`, then applies retention.
pub async fn take(
    settings: &BackupSettings,
    subject: Subject<'_>,
    stop: &CancellationToken,
) -> Result<Manifest, DutyFailure> {
    let started = Instant::now();
    let failed = |message: String| {
        DutyFailure::Refused(format!(
            "the required backup failed: {}",
            subject.url.scrub(&message)
        ))
    };
    let (directory, backup_id) = begin(settings, subject).map_err(failed)?;
    let partial = directory.join(format!("{backup_id}.dump.partial"));
    let snapshot = match subject.restore_test {
        Some(pool) => Some(HeldSnapshot::export(pool).await.map_err(failed)?),
        None => None,
    };
    let dumped = dump(
        settings,
        subject.url,
        &partial,
        snapshot.as_ref().map(HeldSnapshot::id),
        stop,
    )
    .await;
    let expected = match snapshot {
        Some(snapshot) => Some(snapshot.count_and_release().await),
        None => None,
    };
    let discard = |failure: DutyFailure| {
        let _ = std::fs::remove_file(&partial);
        match failure {
            DutyFailure::Refused(message) => failed(message),
            stopped => stopped,
        }
    };
    let (size_bytes, sha256) = dumped.map_err(discard)?;
    let expected = expected
        .transpose()
        .map_err(|message| discard(DutyFailure::Refused(message)))?;
    let verified_entries = verify(settings, &partial)
        .await
        .map_err(|message| discard(DutyFailure::Refused(message)))?;
    let restored_tables = match (subject.restore_test, &expected) {
        (Some(pool), Some(expected)) => {
            let credentials = ClientCredentials::from_url(subject.url)
                .map_err(|message| discard(DutyFailure::Refused(message)))?;
            restore_test::restore_and_compare(settings, &credentials, pool, &partial, expected)
                .await
                .map_err(|message| discard(DutyFailure::Refused(message)))?
        }
        _ => 0,
    };
    let produced = Produced {
        partial,
        extension: "dump",
        size_bytes,
        sha256,
        verified_entries,
        restored_tables,
    };
    record(settings, subject, &directory, backup_id, produced, started).map_err(failed)
}

/// The shard's backup directory, ready, and the new backup's id.
pub(super) fn begin(
    settings: &BackupSettings,
    subject: Subject<'_>,
) -> Result<(PathBuf, String), String> {
    let directory = shard_directory(settings, subject.shard_id);
    prepare_directory(&directory).map_err(|error| {
        format!(
            "cannot prepare the backup directory {}: {error}; check [backups] directory and its permissions",
            directory.display()
        )
    })?;
    Ok((directory, backup_id(subject.plan_id)))
}

/// A verified copy in its `.partial` file, not recorded yet.
#[derive(Debug)]
pub(super) struct Produced {
    pub partial: PathBuf,
    /// The recorded file's extension: `dump`, `sqlite`.
    pub extension: &'static str,
    pub size_bytes: u64,
    pub sha256: String,
    pub verified_entries: u32,
    pub restored_tables: u32,
}

/// Gives `produced` its final name and a manifest, then applies retention; the `.partial` is
/// removed when it cannot be recorded.
pub(super) fn record(
    settings: &BackupSettings,
    subject: Subject<'_>,
    directory: &Path,
    backup_id: String,
    produced: Produced,
    started: Instant,
) -> Result<Manifest, String> {
    let location = directory.join(format!("{backup_id}.{}", produced.extension));
    let manifest = Manifest {
        backup_id,
        shard_id: subject.shard_id.to_owned(),
        plan_id: subject.plan_id.to_owned(),
        location: location.clone(),
        size_bytes: produced.size_bytes,
        sha256: produced.sha256,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        taken_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        verified_entries: produced.verified_entries,
        database_bytes: subject.database_bytes,
        restored_tables: produced.restored_tables,
    };
    std::fs::rename(&produced.partial, &location)
        .and_then(|()| write_manifest(directory, &manifest))
        .map_err(|error| {
            let _ = std::fs::remove_file(&produced.partial);
            format!(
                "cannot record the backup in {}: {error}",
                directory.display()
            )
        })?;
    match prune(directory, settings, &manifest.backup_id) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(shard = subject.shard_id, removed = ?removed, "older backups removed by retention")
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(shard = subject.shard_id, %error, "retention could not remove older backups")
        }
    }
    Ok(manifest)
}

/// Creates the shard's directory (owner only) and removes dumps a killed run left behind.
fn prepare_directory(directory: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(directory)?;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "partial")
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `20261123T101502.123Z-<plan>`: sorts by time, unique per plan.
fn backup_id(plan_id: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let plan: String = plan_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{plan}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// Streams `pg_dump -Fc` (of `snapshot`, when given) into `target`, hashing as it goes; the
/// size and SHA-256 (hex).
async fn dump(
    settings: &BackupSettings,
    url: &DatabaseUrl,
    target: &Path,
    snapshot: Option<&str>,
    stop: &CancellationToken,
) -> Result<(u64, String), DutyFailure> {
    let credentials = ClientCredentials::from_url(url).map_err(DutyFailure::Refused)?;
    let mut command = client_command(&settings.pg_dump, Some(&credentials));
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!(
            "--lock-wait-timeout={}",
            settings.lock_wait_timeout.as_millis()
        ))
        .arg("--dbname")
        .arg(credentials.conninfo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(snapshot) = snapshot {
        command.arg(format!("--snapshot={snapshot}"));
    }
    let mut child = command
        .spawn()
        .map_err(|error| DutyFailure::Refused(cannot_run(&settings.pg_dump, &error, PROGRAMS)))?;
    let mut output = child
        .stdout
        .take()
        .ok_or_else(|| DutyFailure::Refused("pg_dump gave no output stream".to_owned()))?;
    let errors = collect_stderr(&mut child);
    let mut file = tokio::fs::File::create(target).await.map_err(|error| {
        DutyFailure::Refused(format!("cannot create {}: {error}", target.display()))
    })?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buffer = vec![0_u8; 1 << 20];
    let streamed: Result<(), String> = async {
        loop {
            let read = tokio::select! {
                () = stop.cancelled() => return Err(String::new()),
                read = output.read(&mut buffer) => read.map_err(|error| format!("reading pg_dump's output: {error}"))?,
            };
            if read == 0 {
                return Ok(());
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read])
                .await
                .map_err(|error| format!("writing {}: {error}", target.display()))?;
            size += read as u64;
        }
    }
    .await;
    if let Err(message) = streamed {
        let _ = child.kill().await;
        return Err(if stop.is_cancelled() {
            DutyFailure::Stopped
        } else {
            DutyFailure::Refused(message)
        });
    }
    let status = child
        .wait()
        .await
        .map_err(|error| DutyFailure::Refused(format!("waiting for pg_dump: {error}")))?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(DutyFailure::Refused(failure_text(
            "pg_dump", status, &stderr,
        )));
    }
    file.sync_all()
        .await
        .map_err(|error| DutyFailure::Refused(format!("syncing {}: {error}", target.display())))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// The last 4 KiB of what the child writes to stderr.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut text).await;
        }
        let text = String::from_utf8_lossy(&text);
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|index| text.is_char_boundary(*index))
            .unwrap_or(text.len());
        text[start..].trim().to_owned()
    })
}

/// Reads the dump's table of contents back; the number of entries.
async fn verify(settings: &BackupSettings, dump: &Path) -> Result<u32, String> {
    let mut command = client_command(&settings.pg_restore, None);
    command.arg("--list").arg(dump);
    let listed = run_to_end(command, &settings.pg_restore, "pg_restore --list", PROGRAMS)
        .await
        .map_err(|failure| format!("the dump failed verification: {failure}"))?;
    let entries = String::from_utf8_lossy(&listed)
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .count();
    u32::try_from(entries).map_err(|_| "the dump lists too many entries".to_owned())
}

/// The file's size and SHA-256 (hex), read off the runtime's threads.
pub(super) async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        file.sync_all()?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0_u8; 1 << 20];
        let mut size = 0_u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok((size, hex::encode(hasher.finalize())));
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `backup_id` of the shard whose backups are in `directory`, as its manifest records it.
pub fn find(directory: &Path, backup_id: &str) -> Result<Manifest, String> {
    let manifests = list(directory).map_err(|error| {
        format!(
            "cannot read the backups in {}: {error}",
            directory.display()
        )
    })?;
    manifests
        .into_iter()
        .find(|manifest| manifest.backup_id == backup_id)
        .ok_or_else(|| {
            format!(
                "no backup {backup_id} in {}; `fleetshift backups list` shows the shard's backups",
                directory.display()
            )
        })
}

/// Checks a recorded backup again: its size and SHA-256 against the manifest, then its
/// contents (the dump's table of contents, or the SQLite copy's integrity); the entries read.
pub async fn check_recorded(settings: &BackupSettings, manifest: &Manifest) -> Result<u32, String> {
    let damaged = |detail: String| {
        format!(
            "backup {} at {} is damaged: {detail}; restore another one (`fleetshift backups list`)",
            manifest.backup_id,
            manifest.location.display()
        )
    };
    let (size_bytes, sha256) = hash_file(&manifest.location)
        .await
        .map_err(|error| damaged(format!("cannot read it: {error}")))?;
    if size_bytes != manifest.size_bytes || sha256 != manifest.sha256 {
        return Err(damaged(format!(
            "it has {size_bytes} bytes with SHA-256 {sha256}, its manifest records {} bytes with SHA-256 {}",
            manifest.size_bytes, manifest.sha256
        )));
    }
    let is_sqlite = manifest
        .location
        .extension()
        .is_some_and(|extension| extension == "sqlite");
    let entries = if is_sqlite {
        super::sqlite_backup::verify(&manifest.location).await
    } else {
        verify(settings, &manifest.location).await
    };
    entries.map_err(damaged)
}

fn write_manifest(directory: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let partial = directory.join(format!("{}.json.partial", manifest.backup_id));
    std::fs::write(&partial, text)?;
    std::fs::rename(
        &partial,
        directory.join(format!("{}.json", manifest.backup_id)),
    )
}

/// The shard's recorded backups, newest first.
pub fn list(directory: &Path) -> std::io::Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(manifests),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            let text = std::fs::read(&path)?;
            match serde_json::from_slice::<Manifest>(&text) {
                Ok(manifest) => manifests.push(manifest),
                Err(error) => {
                    tracing::warn!(manifest = %path.display(), %error, "not a backup manifest; ignored")
                }
            }
        }
    }
    manifests.sort_by(|left, right| right.backup_id.cmp(&left.backup_id));
    Ok(manifests)
}

/// Removes backups beyond the newest `keep` and older than `max_age`, never `current`; the
/// ids removed.
fn prune(
    directory: &Path,
    settings: &BackupSettings,
    current: &str,
) -> std::io::Result<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut removed = Vec::new();
    for (index, manifest) in list(directory)?.into_iter().enumerate() {
        let too_many = index >= settings.keep.max(1);
        let too_old = settings
            .max_age
            .is_some_and(|age| now.saturating_sub(manifest.taken_at) > age.as_secs());
        if manifest.backup_id != current && (too_many || too_old) {
            let _ = std::fs::remove_file(&manifest.location);
            std::fs::remove_file(directory.join(format!("{}.json", manifest.backup_id)))?;
            removed.push(manifest.backup_id);
        }
    }
    Ok(removed)
}
