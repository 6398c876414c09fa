//! Schema baselines: a shard's schema at one version of a set, taken once (`pg_dump
//! --schema-only` without the ledger schema, owners or privileges) with the fingerprint it has
//! there, so a new, empty shard is initialised with one restore instead of replaying the whole
//! history ([`crate::executor::Executor::seed`]). Only a verified baseline is used: [`verify`]
//! builds two scratch databases beside a server, one by replaying the set up to the version and
//! one by seeding from the baseline, and compares their fingerprints with the recorded one (the
//! canonical form fleet drift uses).
//!
//! (Not to be confused with performance baselines, [`crate::baseline`].)

use std::path::Path;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::engine::{DatabaseMessage, PostgresShard, ShardEngine, Timeouts, quote_identifier};
use crate::error::ExecError;
use crate::executor::{Executor, ExecutorSettings, Identity, Request};
use crate::ledger::RevisionStatus;
use crate::pg_client::{ClientCredentials, client_command, run_to_end};
use crate::proto::v1;
use crate::schema::Fingerprint;
use crate::secrets::DatabaseUrl;
use crate::source::MigrationSet;
use crate::statements::{self, Statement};

/// Who the executor says runs a baseline's work, in the ledger and the audit trail.
const AGENT: &str = "fleetshift-baseline";

/// A shard's schema at one version of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaBaseline {
    /// The version the schema is at.
    pub version: String,
    /// The set the version belongs to.
    pub set_digest: String,
    /// `pg_dump --schema-only`'s SQL, its client meta-commands (`\restrict`) left out.
    pub schema_sql: String,
    /// The schema's fingerprint at that version.
    pub fingerprint: Fingerprint,
}

impl SchemaBaseline {
    /// The statements that build the schema.
    pub fn statements(&self) -> Vec<Statement> {
        statements::split(&self.schema_sql)
    }

    /// The baseline a wire message carries, with its SQL; why not, when it is not whole.
    pub fn from_wire(wire: &v1::SchemaBaseline) -> Result<Self, String> {
        let fingerprint = Fingerprint::from_hex(&wire.fingerprint).ok_or_else(|| {
            format!(
                "baseline {}: fingerprint {:?} is not 64 hex digits",
                wire.baseline_id, wire.fingerprint
            )
        })?;
        if wire.schema_sql.is_empty() || wire.version.is_empty() {
            return Err(format!(
                "baseline {} came without its SQL or version",
                wire.baseline_id
            ));
        }
        Ok(Self {
            version: wire.version.clone(),
            set_digest: wire.set_digest.clone(),
            schema_sql: wire.schema_sql.clone(),
            fingerprint,
        })
    }

    /// The wire message for it; the caller names it (id, source, author, time).
    pub fn to_wire(&self) -> v1::SchemaBaseline {
        v1::SchemaBaseline {
            version: self.version.clone(),
            set_digest: self.set_digest.clone(),
            schema_sql: self.schema_sql.clone(),
            fingerprint: self.fingerprint.to_string(),
            ..v1::SchemaBaseline::default()
        }
    }
}

/// Why a baseline could not be taken or verified.
#[derive(Debug, thiserror::Error)]
pub enum SchemaBaselineError {
    /// The shard is not exactly at the version, or not as the set says it should be.
    #[error("{0}")]
    NotAtVersion(String),
    #[error("{step}: {detail}")]
    Tool { step: String, detail: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Takes the baseline of the shard at `url`, which must be exactly at `version` of `set` with
/// no drifted, unfinished or unknown revision; `pg_dump` is the program to run.
pub async fn take(
    url: &DatabaseUrl,
    set: &MigrationSet,
    version: &str,
    pg_dump: &Path,
) -> Result<SchemaBaseline, SchemaBaselineError> {
    let revision = set.revision(version).ok_or_else(|| {
        SchemaBaselineError::NotAtVersion(format!("version {version} is not in the migration set"))
    })?;
    let shard = PostgresShard::connect(url, Timeouts::default()).await?;
    let executor = Executor::new(&shard, identity(), ExecutorSettings::default());
    let status = executor.status(set).await?;
    let current = status.current_version.as_deref().unwrap_or("");
    if current != revision.version.as_str() {
        return Err(SchemaBaselineError::NotAtVersion(format!(
            "shard {} is at version {}, not {}; take the baseline from a shard at that version",
            url.masked(),
            if current.is_empty() {
                "(empty ledger)"
            } else {
                current
            },
            revision.version
        )));
    }
    let unfinished: Vec<String> = status
        .revisions
        .iter()
        .filter(|state| state.status == Some(RevisionStatus::Started))
        .map(|state| state.version.to_string())
        .collect();
    let drifted: Vec<String> = status
        .drifted
        .iter()
        .map(|drift| drift.version.clone())
        .collect();
    let unknown: Vec<String> = status
        .unknown
        .iter()
        .map(|entry| entry.version.clone())
        .collect();
    if !drifted.is_empty() || !unknown.is_empty() || !unfinished.is_empty() {
        return Err(SchemaBaselineError::NotAtVersion(format!(
            "shard {} does not match the set (drifted {drifted:?}, unknown {unknown:?}, unfinished {unfinished:?}); a baseline is taken only from a shard the set describes",
            url.masked(),
        )));
    }
    let fingerprint = shard.schema_snapshot().await?.fingerprint();
    let schema_sql = dump_schema(url, pg_dump).await?;
    Ok(SchemaBaseline {
        version: revision.version.to_string(),
        set_digest: set.digest.clone(),
        schema_sql,
        fingerprint,
    })
}

/// The schema's SQL as `pg_dump` writes it for people: no owners, privileges or ledger; the
/// client's meta-commands (lines starting with `\`) dropped, as they are not SQL.
async fn dump_schema(url: &DatabaseUrl, pg_dump: &Path) -> Result<String, SchemaBaselineError> {
    let tool = |step: &str, detail: String| SchemaBaselineError::Tool {
        step: step.to_owned(),
        detail,
    };
    let credentials = ClientCredentials::from_url(url)
        .map_err(|detail| tool("reading the database URL", detail))?;
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-baseline-")
        .tempdir()
        .map_err(|error| tool("making a directory for the dump", error.to_string()))?;
    let file = directory.path().join("schema.sql");
    let mut command = client_command(pg_dump, Some(&credentials));
    command
        .arg("--no-password")
        .arg("--schema-only")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exclude-schema=fleetshift")
        .arg("--file")
        .arg(&file)
        .arg("--dbname")
        .arg(credentials.conninfo());
    run_to_end(command, pg_dump, "pg_dump --schema-only", "pg_dump")
        .await
        .map_err(|detail| tool("dumping the shard's schema", detail))?;
    let text = std::fs::read_to_string(&file)
        .map_err(|error| tool("reading the dump", error.to_string()))?;
    Ok(without_meta_commands(&text))
}

/// `text` without the lines only `psql` understands (`\restrict`, `\connect`, …).
fn without_meta_commands(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    for line in text.lines().filter(|line| !line.starts_with('\\')) {
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// What a verification found: the fingerprints of the replayed and the seeded scratch
/// databases beside the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub replayed: Fingerprint,
    pub seeded: Fingerprint,
    pub recorded: Fingerprint,
}

impl Verification {
    /// Whether the baseline builds exactly the schema the set does.
    pub fn holds(&self) -> bool {
        self.replayed == self.recorded && self.seeded == self.recorded
    }
}

/// Builds two scratch databases on the server `server` reaches (its user needs CREATEDB): one
/// by replaying `set` up to the baseline's version, one seeded from `baseline`; both are
/// dropped whatever happens.
pub async fn verify(
    server: &DatabaseUrl,
    set: &MigrationSet,
    baseline: &SchemaBaseline,
) -> Result<Verification, SchemaBaselineError> {
    if set.digest != baseline.set_digest {
        return Err(SchemaBaselineError::NotAtVersion(format!(
            "the baseline belongs to set {}, not to this one ({})",
            baseline.set_digest, set.digest
        )));
    }
    let replayed = in_scratch(server, "replay", |shard| async move {
        let executor = Executor::new(&shard, identity(), ExecutorSettings::default());
        let request = Request {
            target: Some(baseline.version.clone()),
            allow_drift: None,
        };
        executor.up(set, &request).await?;
        Ok(shard.schema_snapshot().await?.fingerprint())
    })
    .await?;
    let seeded = in_scratch(server, "seed", |shard| async move {
        let executor = Executor::new(&shard, identity(), ExecutorSettings::default());
        executor
            .seed(set, baseline, "verifying the baseline")
            .await?;
        Ok(shard.schema_snapshot().await?.fingerprint())
    })
    .await?;
    Ok(Verification {
        replayed,
        seeded,
        recorded: baseline.fingerprint.clone(),
    })
}

fn identity() -> Identity {
    Identity {
        agent_id: AGENT.to_owned(),
        plan_id: None,
        fence_token: None,
    }
}

/// Runs `work` on a fresh scratch database beside `server`, dropped afterwards.
async fn in_scratch<F, Fut>(
    server: &DatabaseUrl,
    purpose: &str,
    work: F,
) -> Result<Fingerprint, SchemaBaselineError>
where
    F: FnOnce(PostgresShard) -> Fut,
    Fut: Future<Output = Result<Fingerprint, SchemaBaselineError>>,
{
    let name = format!(
        "fleetshift_baseline_{purpose}_{}_{:08x}",
        std::process::id(),
        crate::rehearsal::scratch::rand_suffix()
    );
    let tool = |step: &str, error: &sqlx::Error| SchemaBaselineError::Tool {
        step: step.to_owned(),
        detail: DatabaseMessage(error).to_string(),
    };
    let mut admin = PgConnection::connect(server.expose())
        .await
        .map_err(|error| tool("connecting to the server", &error))?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_identifier(&name)
    )))
    .execute(&mut admin)
    .await
    .map_err(|error| {
        tool(
            "creating a scratch database (the user needs CREATEDB)",
            &error,
        )
    })?;
    let url = DatabaseUrl::new(
        crate::rehearsal::scratch::scratch_url(server, &name).map_err(|error| {
            SchemaBaselineError::Tool {
                step: "naming the scratch database".to_owned(),
                detail: error.to_string(),
            }
        })?,
    );
    let outcome = match PostgresShard::connect(&url, Timeouts::default()).await {
        Ok(shard) => work(shard).await,
        Err(error) => Err(error.into()),
    };
    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(&name)
    )))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
    if let Err(error) = dropped {
        tracing::warn!(database = %name, error = %DatabaseMessage(&error), "a scratch database was not dropped");
    }
    outcome
}

#[cfg(test)]
mod tests;
