//! Rehearsals: a plan's pending revisions run on a sampled copy of a shard under a tracer that
//! reads, after every statement, which locks it took, which relations it rewrote and which
//! tables it scanned; the findings name each hazard.
//!
//! - [`scratch`]: the scratch database beside the shard: its schema, a sample of its rows.
//! - [`catalog_state`]: one reading of the catalog and the connection's locks and scans.
//! - [`effects`]: what one statement did, as the difference of two readings.
//! - [`tracer`]: the readings taken around every statement a traced engine runs.
//! - [`estimates`]: each statement's time scaled from the sample to the shard.
//! - [`findings`]: the hazards a trace shows, with eugene's hint ids and lock hold times.
//! - [`wire`]: a rehearsal as the agent reports it and the plan keeps it.
//!
//! [`rehearse`] puts them together: build the scratch database, run the revisions there with
//! the executor exactly as a rollout would (same transaction modes, timeouts and fenced
//! protocol, on the scratch copy of the ledger), read the findings, drop the scratch database
//! whatever happened.

pub mod baselines;
pub mod catalog_state;
pub mod effects;
pub mod estimates;
pub mod findings;
pub mod scratch;
pub mod tracer;
pub mod wire;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::baselines::BaselineComparison;
use self::catalog_state::CatalogState;
use self::estimates::{Scale, StatementEstimate};
use self::findings::{Finding, RevisionTrace, UnindexedForeignKey};
use self::scratch::{SampleOptions, SampleReport, Scratch};
use self::tracer::{TracedRun, Tracer};
use crate::baseline::BaselineError;
use crate::engine::{DatabaseMessage, PostgresShard, Timeouts};
use crate::error::ExecError;
use crate::executor::{Executor, ExecutorSettings, Identity, Request};
use crate::proto::v1::BaselinePolicy;
use crate::secrets::DatabaseUrl;
use crate::source::MigrationSet;
use crate::touched::{ForeignKeyClause, added_foreign_keys};

/// Why a rehearsal could not run (a revision failing on the sample is a result, not this).
#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    #[error(
        "{shard}: cannot create the scratch database: {detail}; grant the user CREATEDB (rehearsals build a sampled copy beside the shard)"
    )]
    CannotCreate { shard: String, detail: String },
    #[error("{shard}: no room for the rehearsal's scratch database: {detail}")]
    NoRoom { shard: String, detail: String },
    #[error("{shard}: building the scratch database failed while {step}: {detail}")]
    Build {
        shard: String,
        step: String,
        detail: String,
    },
    #[error(
        "{shard}: reading the scratch database {database} after the revisions failed: {detail}"
    )]
    Trace {
        shard: String,
        database: String,
        detail: String,
    },
    #[error("{shard}: the scratch database {database} was not dropped: {detail}; drop it by hand")]
    NotDropped {
        shard: String,
        database: String,
        detail: String,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl RehearsalError {
    fn build(shard: &DatabaseUrl, step: &str, error: &dyn std::fmt::Display) -> Self {
        Self::Build {
            shard: shard.masked(),
            step: step.to_owned(),
            detail: shard.scrub(&error.to_string()),
        }
    }
}

/// What a rehearsal of one shard found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rehearsal {
    pub shard: String,
    /// The shard's newest applied revision before the rehearsal (`None`: none).
    pub shard_version: Option<String>,
    pub sample: SampleReport,
    /// The revisions that ran, with every statement's trace.
    pub revisions: Vec<RevisionTrace>,
    pub findings: Vec<Finding>,
    /// The statements whose time grows with a table, estimated at the shard's size.
    pub estimates: Vec<StatementEstimate>,
    /// The revision that failed on the sample, and why; the ones after it did not run.
    pub failure: Option<String>,
    /// The plan's baseline queries on the sample, before and after the revisions.
    pub baselines: Vec<BaselineComparison>,
    /// The baselines that got slower past the threshold (or fail only afterwards), described.
    pub degradation: Option<String>,
}

impl Rehearsal {
    /// Passed: every revision ran, no E-class hazard was found and no baseline degraded.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self.degradation.is_none()
            && !self.findings.iter().any(|finding| finding.hint.is_hazard())
    }
}

/// How to rehearse.
#[derive(Debug, Clone)]
pub struct RehearsalSettings {
    pub sample: SampleOptions,
    /// The rollout's timeouts, applied to the scratch database as they would be to the shard.
    pub timeouts: Timeouts,
    pub executor: ExecutorSettings,
    pub plan_id: Option<String>,
    /// The plan's baseline queries, timed on the sample before and after the revisions.
    pub baselines: Option<BaselinePolicy>,
}

/// Rehearses `set`'s pending revisions (up to `request.target`) for the shard at `shard`.
pub async fn rehearse(
    shard: &DatabaseUrl,
    set: &MigrationSet,
    request: &Request,
    settings: &RehearsalSettings,
) -> Result<Rehearsal, RehearsalError> {
    let references: Vec<ForeignKeyClause> = set
        .revisions
        .iter()
        .flat_map(|revision| revision.up.statements())
        .flat_map(added_foreign_keys)
        .collect();
    let (scratch, sample) = Scratch::build(shard, &settings.sample, &references).await?;
    let outcome = run_traced(&scratch, set, request, settings).await;
    let dropped = scratch.drop_database().await;
    let traced = outcome?;
    dropped?;
    let revisions = attribute(set, traced.runs);
    let scale = Scale::from_sample(&sample);
    let findings = findings::findings(&revisions, &traced.unindexed, &scale);
    let estimates = estimates::estimates(&revisions, &scale);
    Ok(Rehearsal {
        shard: shard.masked(),
        shard_version: traced.shard_version,
        failure: traced.failure,
        baselines: traced.baselines,
        degradation: traced.degradation,
        sample,
        revisions,
        findings,
        estimates,
    })
}

/// What the traced run left.
struct Traced {
    runs: Vec<TracedRun>,
    shard_version: Option<String>,
    failure: Option<String>,
    unindexed: Vec<UnindexedForeignKey>,
    baselines: Vec<BaselineComparison>,
    degradation: Option<String>,
}

/// Runs the revisions in the scratch database under a tracer.
async fn run_traced(
    scratch: &Scratch,
    set: &MigrationSet,
    request: &Request,
    settings: &RehearsalSettings,
) -> Result<Traced, RehearsalError> {
    let tracer = Arc::new(Tracer::default());
    let engine = PostgresShard::connect(scratch.url(), settings.timeouts)
        .await?
        .traced(Arc::clone(&tracer));
    let executor = Executor::new(
        &engine,
        Identity {
            agent_id: "fleetshift-rehearsal".to_owned(),
            plan_id: settings.plan_id.clone(),
            fence_token: None,
        },
        settings.executor,
    );
    let shard_version = executor.status(set).await?.current_version;
    let policy = settings.baselines.as_ref();
    let timed = baselines::before(policy, engine.pool())
        .await
        .map_err(|error| baselines_failed(scratch, &error))?;
    let failure = executor
        .up(set, request)
        .await
        .err()
        .map(|error| error.to_string());
    let (baselines, degradation) = match (&timed, &failure) {
        (Some(before), None) => baselines::after(policy, engine.pool(), before)
            .await
            .map_err(|error| baselines_failed(scratch, &error))?,
        _ => (Vec::new(), None),
    };
    let mut connection = engine
        .pool()
        .acquire()
        .await
        .map_err(|error| reading_failed(scratch, &error))?;
    let state = CatalogState::read(&mut connection)
        .await
        .map_err(|error| reading_failed(scratch, &error))?;
    drop(connection);
    Ok(Traced {
        runs: tracer.take(),
        shard_version,
        failure,
        unindexed: state.unindexed_foreign_keys(),
        baselines,
        degradation,
    })
}

fn baselines_failed(scratch: &Scratch, error: &BaselineError) -> RehearsalError {
    RehearsalError::Trace {
        shard: scratch.shard().to_owned(),
        database: scratch.name().to_owned(),
        detail: format!("timing the baselines: {error}"),
    }
}

fn reading_failed(scratch: &Scratch, error: &sqlx::Error) -> RehearsalError {
    RehearsalError::Trace {
        shard: scratch.shard().to_owned(),
        database: scratch.name().to_owned(),
        detail: DatabaseMessage(error).to_string(),
    }
}

/// Each run under the revision whose up script holds its first statement.
fn attribute(set: &MigrationSet, runs: Vec<TracedRun>) -> Vec<RevisionTrace> {
    let mut revisions: Vec<RevisionTrace> = Vec::new();
    for run in runs {
        let Some(first) = run.statements.first() else {
            continue;
        };
        let version = set
            .revisions
            .iter()
            .find(|revision| {
                revision
                    .up
                    .statements()
                    .iter()
                    .any(|statement| statement.line == first.line && statement.sql == first.sql)
            })
            .map_or_else(
                || "?".to_owned(),
                |revision| revision.version.as_str().to_owned(),
            );
        match revisions.last_mut() {
            Some(last) if last.version == version => last.runs.push(run),
            _ => revisions.push(RevisionTrace {
                version,
                runs: vec![run],
            }),
        }
    }
    revisions
}
