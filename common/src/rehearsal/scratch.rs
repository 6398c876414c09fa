//! The scratch database a rehearsal runs in, beside the shard on its own server or on a
//! staging server ([`SampleOptions::staging`]): the shard's schema from `pg_dump --schema-only` (restored with `pg_restore`), then a sample of each
//! table's rows copied straight from the shard (`TABLESAMPLE SYSTEM`, capped per table) with
//! triggers and foreign-key checks off (`session_replication_role = replica`), so the sample
//! need not be closed under references; then the sequences' positions, then `ANALYZE`.
//!
//! fleetshift's ledger and tables of at most [`WHOLE_TABLE_BYTES`] are copied whole: sampling
//! the blocks of a table that small keeps all or nothing. Scratch databases are named
//! [`SCRATCH_PREFIX`]…, and [`Scratch::drop_database`] drops one `WITH (FORCE)`.

mod leftovers;
mod rows;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};

use super::RehearsalError;
use crate::engine::{DatabaseMessage, quote_identifier};
use crate::pg_client::{ClientCredentials, client_command, run_to_end};
use crate::secrets::DatabaseUrl;
use crate::touched::ForeignKeyClause;
pub use leftovers::drop_leftovers;
use leftovers::owner_prefix;
use rows::{close_under, copy_rows, copy_sequences, scaled, source_tables};

/// Every scratch database's name starts with this.
pub const SCRATCH_PREFIX: &str = "fleetshift_rehearsal_";

/// Tables this small are copied whole.
pub const WHOLE_TABLE_BYTES: i64 = 64 * 1024;

/// Where the configuration names the client programs, for errors.
const PROGRAMS: &str = "--pg-dump / --pg-restore";

/// How much of the shard the scratch database gets.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Percent of each table's blocks, in (0, 100].
    pub percent: f64,
    /// At most this many rows per table.
    pub max_rows_per_table: u64,
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    /// Who builds the scratch databases (an agent's id, or `cli`): part of their names, so
    /// [`drop_leftovers`] finds its own.
    pub owner: String,
    /// A database on a staging server whose user may create databases: the scratch database is
    /// built there, and the shard's server only serves the reads of the sample.
    pub staging: Option<DatabaseUrl>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            percent: 10.0,
            max_rows_per_table: 1_000_000,
            pg_dump: PathBuf::from("pg_dump"),
            pg_restore: PathBuf::from("pg_restore"),
            owner: "cli".to_owned(),
            staging: None,
        }
    }
}

/// One table's sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledTable {
    pub table: String,
    /// Rows in the shard (the planner's estimate; the sample scaled up when there is none).
    pub rows_in_shard: i64,
    pub bytes_in_shard: i64,
    pub rows_sampled: u64,
    /// Sampled rows removed because they reference rows outside the sample, through a foreign
    /// key the revisions add (validating it on the sample would fail otherwise).
    pub rows_removed: u64,
    /// Copied whole (the ledger, or a table of at most [`WHOLE_TABLE_BYTES`]).
    pub whole: bool,
}

impl SampledTable {
    /// How many of the shard's rows each sampled row stands for (1 for a whole copy).
    pub fn factor(&self) -> f64 {
        let kept = self.rows_sampled.saturating_sub(self.rows_removed);
        if self.whole || kept == 0 {
            return 1.0;
        }
        (self.rows_in_shard.max(0) as f64 / kept as f64).max(1.0)
    }
}

/// What the scratch database holds of the shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleReport {
    pub percent: f64,
    pub max_rows_per_table: u64,
    pub tables: Vec<SampledTable>,
    /// What the disk check before the build found (or why it could not look).
    pub disk: String,
    pub build_ms: u64,
}

/// A scratch database, until dropped.
#[derive(Debug)]
pub struct Scratch {
    name: String,
    /// The server the scratch database is on (the shard's, or the staging one), connected to
    /// the database its URL names (never to the scratch one).
    server: PgConnectOptions,
    /// That server's URL, for `pg_restore`.
    server_url: DatabaseUrl,
    url: DatabaseUrl,
    shard: String,
}

impl Scratch {
    /// Creates the scratch database beside `shard` and fills it; dropped again if filling fails.
    pub async fn build(
        shard: &DatabaseUrl,
        options: &SampleOptions,
        references: &[ForeignKeyClause],
    ) -> Result<(Self, SampleReport), RehearsalError> {
        let started = Instant::now();
        let name = format!(
            "{}{}_{:08x}",
            owner_prefix(&options.owner),
            std::process::id(),
            rand_suffix()
        );
        let server_url = options.staging.as_ref().unwrap_or(shard);
        let server: PgConnectOptions = server_url.expose().parse().map_err(|error| {
            RehearsalError::build(server_url, "reading the database URL", &error)
        })?;
        let url = DatabaseUrl::new(scratch_url(server_url, &name)?);
        let scratch = Self {
            name,
            server,
            server_url: server_url.clone(),
            url,
            shard: shard.masked(),
        };
        let mut source = connect(shard, "connecting to the shard").await?;
        let created = scratch.create(&mut source, options.percent).await;
        let disk = match created {
            Ok(disk) => disk,
            Err(error) => {
                let _ = source.close().await;
                return Err(error);
            }
        };
        match scratch.fill(shard, &mut source, options, references).await {
            Ok(tables) => {
                let _ = source.close().await;
                let report = SampleReport {
                    percent: options.percent,
                    max_rows_per_table: options.max_rows_per_table,
                    tables,
                    disk,
                    build_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                };
                Ok((scratch, report))
            }
            Err(error) => {
                let _ = source.close().await;
                if let Err(dropped) = scratch.drop_database().await {
                    tracing::warn!(%dropped, "the scratch database of a failed rehearsal was not dropped");
                }
                Err(error)
            }
        }
    }

    /// The scratch database's URL (same server and credentials as the shard).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shard it copies, for messages (never credentials).
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// Drops the scratch database, ending any connection still in it.
    pub async fn drop_database(&self) -> Result<(), RehearsalError> {
        let mut server = self.connect_server().await?;
        let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        )))
        .execute(&mut server)
        .await;
        let _ = server.close().await;
        dropped
            .map(drop)
            .map_err(|error| RehearsalError::NotDropped {
                shard: self.shard.clone(),
                database: self.name.clone(),
                detail: DatabaseMessage(&error).to_string(),
            })
    }

    /// Checks the room on the scratch database's server for a sample of the shard (connected
    /// as `source`), then creates the database; what the check found.
    async fn create(
        &self,
        source: &mut PgConnection,
        percent: f64,
    ) -> Result<String, RehearsalError> {
        let size: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&mut *source)
                .await;
        let mut server = self.connect_server().await?;
        let disk = match size {
            Ok(size) => check_disk(&mut server, size, percent).await,
            Err(error) => Ok(format!(
                "not checked: the shard's size is unknown ({})",
                DatabaseMessage(&error)
            )),
        };
        let created = match disk {
            Ok(disk) => sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE {}",
                quote_identifier(&self.name)
            )))
            .execute(&mut server)
            .await
            .map(|_| disk)
            .map_err(|error| RehearsalError::CannotCreate {
                shard: self.shard.clone(),
                detail: DatabaseMessage(&error).to_string(),
            }),
            Err(detail) => Err(RehearsalError::NoRoom {
                shard: self.shard.clone(),
                detail,
            }),
        };
        let _ = server.close().await;
        created
    }

    async fn connect_server(&self) -> Result<PgConnection, RehearsalError> {
        self.server
            .connect()
            .await
            .map_err(|error| RehearsalError::Build {
                shard: self.shard.clone(),
                step: "connecting to the scratch database's server".to_owned(),
                detail: DatabaseMessage(&error).to_string(),
            })
    }

    async fn fill(
        &self,
        shard: &DatabaseUrl,
        source: &mut PgConnection,
        options: &SampleOptions,
        references: &[ForeignKeyClause],
    ) -> Result<Vec<SampledTable>, RehearsalError> {
        self.copy_schema(shard, options).await?;
        let failed = |step: &'static str| {
            move |error: sqlx::Error| RehearsalError::Build {
                shard: self.shard.clone(),
                step: step.to_owned(),
                detail: DatabaseMessage(&error).to_string(),
            }
        };
        let mut target = self
            .server
            .clone()
            .database(&self.name)
            .connect()
            .await
            .map_err(failed("connecting to the scratch database"))?;
        sqlx::raw_sql("SET session_replication_role = replica")
            .execute(&mut target)
            .await
            .map_err(failed(
                "turning triggers and foreign-key checks off (the user needs superuser or the shard's ownership)",
            ))?;
        let tables = source_tables(source)
            .await
            .map_err(failed("listing the shard's tables"))?;
        let mut sampled = Vec::with_capacity(tables.len());
        for table in tables {
            let rows = copy_rows(source, &mut target, &table, options)
                .await
                .map_err(failed("copying a sample of the rows"))?;
            sampled.push(SampledTable {
                rows_in_shard: if table.estimate >= 0 {
                    table.estimate
                } else {
                    scaled(rows, options.percent, table.whole)
                },
                table: table.name,
                bytes_in_shard: table.bytes,
                rows_sampled: rows,
                rows_removed: 0,
                whole: table.whole,
            });
        }
        for (table, removed) in close_under(&mut target, references).await {
            if let Some(sampled) = sampled.iter_mut().find(|sampled| sampled.table == table) {
                sampled.rows_removed += removed;
            }
        }
        copy_sequences(source, &mut target)
            .await
            .map_err(failed("setting the sequences"))?;
        sqlx::raw_sql("RESET session_replication_role; ANALYZE")
            .execute(&mut target)
            .await
            .map_err(failed("analysing the sample"))?;
        let _ = target.close().await;
        Ok(sampled)
    }

    /// `pg_dump --schema-only` of the shard, restored into the scratch database without owners
    /// or privileges (the rehearsal's user owns everything there).
    async fn copy_schema(
        &self,
        shard: &DatabaseUrl,
        options: &SampleOptions,
    ) -> Result<(), RehearsalError> {
        let failed = |step: &str, detail: String| RehearsalError::Build {
            shard: self.shard.clone(),
            step: step.to_owned(),
            detail,
        };
        let credentials = ClientCredentials::from_url(shard)
            .map_err(|detail| failed("reading the database URL", detail))?;
        let server = ClientCredentials::from_url(&self.server_url)
            .map_err(|detail| failed("reading the staging server's URL", detail))?;
        let directory = tempfile::Builder::new()
            .prefix("fleetshift-rehearsal-")
            .tempdir()
            .map_err(|error| failed("making a directory for the schema dump", error.to_string()))?;
        let dump = directory.path().join("schema.dump");
        let mut command = client_command(&options.pg_dump, Some(&credentials));
        command
            .arg("--no-password")
            .arg("--schema-only")
            .arg("--format=custom")
            .arg("--file")
            .arg(&dump)
            .arg("--dbname")
            .arg(credentials.conninfo());
        run_to_end(command, &options.pg_dump, "pg_dump --schema-only", PROGRAMS)
            .await
            .map_err(|detail| failed("dumping the shard's schema", detail))?;
        let mut command = client_command(&options.pg_restore, Some(&server));
        command
            .arg("--no-password")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--exit-on-error")
            .arg("--dbname")
            .arg(server.conninfo_for(&self.name))
            .arg(&dump);
        run_to_end(command, &options.pg_restore, "pg_restore", PROGRAMS)
            .await
            .map_err(|detail| failed("restoring the schema into the scratch database", detail))?;
        Ok(())
    }
}

/// The server's data directory, when this host can see it, must have room for the sample
/// (twice the database's size times the sampled share: rows and their indexes, with slack).
/// A server elsewhere, or a user not allowed to read `data_directory`, skips the check and
/// says so.
async fn check_disk(server: &mut PgConnection, size: i64, percent: f64) -> Result<String, String> {
    let directory: Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT current_setting('data_directory', true)")
            .fetch_one(&mut *server)
            .await;
    let directory = match directory {
        Ok(Some(directory)) => PathBuf::from(directory),
        Ok(None) | Err(_) => {
            return Ok("not checked: the user may not read the server's data_directory".to_owned());
        }
    };
    let needed = (size.max(0) as f64 * percent / 100.0 * 2.0) as u64;
    let Ok(stats) = rustix::fs::statvfs(&directory) else {
        return Ok(format!(
            "not checked: the data directory {} is not on this host",
            directory.display()
        ));
    };
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let mib = |bytes: u64| bytes / (1024 * 1024);
    if free < needed {
        return Err(format!(
            "the sample needs about {} MiB and {} has {} MiB free; sample less (--sample) or rehearse on a staging server",
            mib(needed),
            directory.display(),
            mib(free)
        ));
    }
    Ok(format!(
        "{} MiB free in {} for a sample of about {} MiB",
        mib(free),
        directory.display(),
        mib(needed)
    ))
}

/// A session on the database `url` names.
async fn connect(url: &DatabaseUrl, step: &str) -> Result<PgConnection, RehearsalError> {
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .map_err(|error| RehearsalError::build(url, "reading the database URL", &error))?;
    options
        .connect()
        .await
        .map_err(|error| RehearsalError::build(url, step, &DatabaseMessage(&error)))
}

/// The server's URL with the scratch database's name in place of the database's.
pub(crate) fn scratch_url(shard: &DatabaseUrl, name: &str) -> Result<String, RehearsalError> {
    let mut parsed = url::Url::parse(shard.expose())
        .map_err(|error| RehearsalError::build(shard, "reading the database URL", &error))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

/// Distinguishes the scratch databases of one process: the clock, and a counter for two made
/// within the clock's resolution.
pub(crate) fn rand_suffix() -> u32 {
    static MADE: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos.wrapping_add(
        MADE.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9),
    )
}
