//! Turning a `CreatePlanRequest` into a plan: the request is checked into a `PlanRequest`
//! where it arrives (`TryFrom`), then the shipped set is unpacked and must hash to its
//! digest, the target must be one of its versions, the selector must match announced shards,
//! and the shards are split into waves: a canary wave of N shards, then waves up to each
//! cumulative percentage of the rest. Shards are ordered by id, so a plan is reproducible.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use fleetshift_common::proto::v1::{
    self as v1, CreatePlanRequest, Direction, ExecutionLimits, Hello, HostDuties, Plan, PlanState,
    Schedule, SchemaChange, ShardAnalysis, ShardState, ShardTask, StatusUpdates, TableFacts, Wave,
    WavePolicy,
};
use fleetshift_common::selector::Announced;
use fleetshift_common::shipped;
use fleetshift_common::source::{MigrationSet, Revision};
use fleetshift_common::touched::touched;

use crate::lint;

use super::{RolloutError, outcome, phases, risk, schedule, spans};

/// Defaults for what the request leaves at zero.
const DEFAULT_CANARY: u32 = 1;
const DEFAULT_PER_WAVE: u32 = 16;
const DEFAULT_PER_HOST: u32 = 4;
const DEFAULT_FAILURE_THRESHOLD: u32 = 1;

/// A shard as announced by its agent.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub shard_id: String,
    pub agent_id: String,
    /// The database server it lives on, as the per-host cap counts it
    /// (`selector::Announced::server_key`).
    pub host: String,
    /// The shard's `env` (or `environment`) label.
    pub environment: Option<String>,
    /// Its tables as its agent reported them.
    pub tables: Vec<TableFacts>,
    /// When the agent read them.
    pub observed_at: Option<prost_types::Timestamp>,
    /// Its own maintenance windows (its `maintenance-window` label), when it has any.
    pub windows_label: Option<String>,
}

/// Every announced shard whose attributes (labels and reported facts) match `selector`, by id;
/// a shard two agents announce is refused (which one runs it would be a guess).
pub fn candidates(
    agents: &[(String, Hello)],
    selector: &HashMap<String, String>,
) -> Result<Vec<Candidate>, RolloutError> {
    let mut found: BTreeMap<String, Candidate> = BTreeMap::new();
    for (agent, hello) in agents {
        for shard in &hello.shards {
            let announced = Announced {
                agent,
                host: hello.host.as_ref(),
                shard,
            };
            if !fleetshift_common::selector::selects(selector, &announced.attributes()) {
                continue;
            }
            let candidate = Candidate {
                shard_id: shard.shard_id.clone(),
                agent_id: agent.clone(),
                host: announced.server_key(),
                environment: shard
                    .labels
                    .get("env")
                    .or_else(|| shard.labels.get("environment"))
                    .cloned(),
                tables: shard.tables.clone(),
                observed_at: shard.observed_at,
                windows_label: shard.labels.get(schedule::WINDOW_LABEL).cloned(),
            };
            if let Some(other) = found.insert(shard.shard_id.clone(), candidate) {
                return Err(RolloutError::BadRequest(format!(
                    "shard {} is announced by agents {} and {agent}; fix their configurations",
                    shard.shard_id, other.agent_id
                )));
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The policy with defaults filled in, checked.
/// Timed runs a baseline query may ask for, at most: more only delays every shard.
const MAX_BASELINE_RUNS: u32 = 1_000;

/// Refuses duties an agent could not do: `--verify-data` tables without a name or with an
/// empty column, and baselines it could not run or compare (see [`check_baselines`]).
pub fn check_duties(duties: Option<&HostDuties>) -> Result<(), RolloutError> {
    for check in duties.iter().flat_map(|duties| &duties.verify_data) {
        if check.table.trim().is_empty() || check.columns.iter().any(|c| c.trim().is_empty()) {
            return Err(RolloutError::BadRequest(format!(
                "every --verify-data check needs a table and non-empty column names; got table {:?} with columns {:?}",
                check.table, check.columns
            )));
        }
    }
    check_baselines(duties)
}

/// Refuses baselines an agent could not run or compare: unnamed, duplicated or empty queries,
/// too many runs, or a threshold that would call any jitter a degradation.
fn check_baselines(duties: Option<&HostDuties>) -> Result<(), RolloutError> {
    let Some(baselines) = duties.and_then(|duties| duties.baselines.as_ref()) else {
        return Ok(());
    };
    let mut names = std::collections::HashSet::new();
    for query in &baselines.queries {
        if query.name.trim().is_empty() || query.sql.trim().is_empty() {
            return Err(RolloutError::BadRequest(format!(
                "every baseline query needs a name and SQL; got name {:?} with SQL {:?}",
                query.name, query.sql
            )));
        }
        if !names.insert(query.name.as_str()) {
            return Err(RolloutError::BadRequest(format!(
                "baseline query {} is named twice; names must be unique",
                query.name
            )));
        }
    }
    if baselines.runs > MAX_BASELINE_RUNS {
        return Err(RolloutError::BadRequest(format!(
            "baseline runs {} is above the limit of {MAX_BASELINE_RUNS}",
            baselines.runs
        )));
    }
    let threshold = baselines.degradation_threshold;
    if threshold != 0.0 && !(threshold > 1.0 && threshold.is_finite()) {
        return Err(RolloutError::BadRequest(format!(
            "the degradation threshold must be above 1.0 (a ratio of medians, after over before); got {threshold}"
        )));
    }
    Ok(())
}

pub fn policy(requested: Option<WavePolicy>) -> Result<WavePolicy, RolloutError> {
    let requested = requested.unwrap_or_default();
    let or = |value: u32, default: u32| if value == 0 { default } else { value };
    let mut percentages = requested.percentages.clone();
    if percentages
        .iter()
        .any(|&percent| percent == 0 || percent > 100)
        || percentages.windows(2).any(|pair| pair[0] >= pair[1])
    {
        return Err(RolloutError::BadRequest(format!(
            "wave percentages must increase within 1..=100, got {percentages:?}"
        )));
    }
    if percentages.last() != Some(&100) {
        percentages.push(100);
    }
    Ok(WavePolicy {
        canary_shards: or(requested.canary_shards, DEFAULT_CANARY),
        percentages,
        max_concurrency_per_wave: or(requested.max_concurrency_per_wave, DEFAULT_PER_WAVE),
        max_concurrency_per_host: or(requested.max_concurrency_per_host, DEFAULT_PER_HOST),
        failure_threshold: or(requested.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        max_shard_retries: outcome::max_retries(requested.max_shard_retries),
    })
}

/// Canary first, then up to each cumulative percentage of the remaining shards.
pub fn waves(shards: &[Candidate], policy: &WavePolicy) -> Vec<Wave> {
    let canary = shards
        .len()
        .min(usize::try_from(policy.canary_shards).unwrap_or(usize::MAX));
    let rest = shards.len() - canary;
    let mut bounds = vec![canary];
    for &percent in &policy.percentages {
        let cumulative = (rest * percent as usize).div_ceil(100);
        bounds.push(canary + cumulative);
    }
    let mut waves = Vec::new();
    let mut start = 0;
    for end in bounds {
        if end > start {
            let index = u32::try_from(waves.len()).unwrap_or(u32::MAX);
            let tasks = shards[start..end]
                .iter()
                .map(|shard| ShardTask {
                    shard_id: shard.shard_id.clone(),
                    state: ShardState::Pending.into(),
                    agent_id: shard.agent_id.clone(),
                    host: shard.host.clone(),
                    wave: index,
                    ..ShardTask::default()
                })
                .collect();
            waves.push(Wave {
                index,
                shards: tasks,
            });
            start = end;
        }
    }
    waves
}

/// A new plan id: time-ordered, unique enough that creation (create-if-absent) never collides
/// in practice.
pub fn new_plan_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("p{}-{:05x}", now.as_secs(), now.subsec_micros())
}

/// The version a plan goes to: the requested one in the set's own spelling (agents and
/// ledgers name it so), or the set's last.
pub fn target_of(set: &MigrationSet, requested: &str) -> Result<String, RolloutError> {
    let last = set
        .revisions
        .last()
        .map(|revision| revision.version.as_str().to_owned())
        .ok_or_else(|| RolloutError::BadRequest("the migration set is empty".to_owned()))?;
    if requested.is_empty() {
        return Ok(last);
    }
    let revision = set.revision(requested).ok_or_else(|| {
        RolloutError::BadRequest(format!(
            "target version {requested} is not in the migration set (its versions run from {} to {last})",
            set.revisions
                .first()
                .map(|revision| revision.version.as_str())
                .unwrap_or_default()
        ))
    })?;
    Ok(revision.version.as_str().to_owned())
}

/// What each shard knows of the tables `revisions` change.
fn analyses_of(shards: &[Candidate], revisions: &[Revision]) -> Vec<ShardAnalysis> {
    let changed: Vec<String> = revisions
        .iter()
        .flat_map(|revision| risk::changed_tables(revision.up.statements()))
        .collect();
    shards
        .iter()
        .map(|shard| ShardAnalysis {
            shard_id: shard.shard_id.clone(),
            tables: shard
                .tables
                .iter()
                .filter(|facts| changed.contains(&facts.table))
                .cloned()
                .collect(),
            observed_at: shard.observed_at,
        })
        .collect()
}

/// Every table change `revisions` make, with its lock and the first line of its statement.
fn schema_changes(revisions: &[Revision]) -> Vec<SchemaChange> {
    revisions
        .iter()
        .flat_map(|revision| {
            revision
                .up
                .statements()
                .iter()
                .filter_map(move |statement| {
                    touched(statement).map(|touch| SchemaChange {
                        revision: revision.label(),
                        table: touch.table,
                        operation: touch.operation.to_owned(),
                        lock: touch.lock.to_owned(),
                        statement: statement
                            .sql
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    })
                })
        })
        .collect()
}

/// A `CreatePlanRequest` checked where it arrives: a migration set, a wave policy with its
/// defaults filled in and its percentages in order, duties that make sense, limits (default
/// when absent). What [`plan`] works from.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub set: v1::MigrationSet,
    /// Empty: the set's last version.
    pub target_version: String,
    pub selector: HashMap<String, String>,
    pub policy: WavePolicy,
    pub limits: ExecutionLimits,
    pub duties: Option<HostDuties>,
    /// Why drifted shards may be planned; empty: they are refused.
    pub allow_drift_shards: String,
    /// When it may run.
    pub schedule: Option<Schedule>,
    /// Timed status updates while it runs.
    pub updates: Option<StatusUpdates>,
    /// The fleet's schema baselines (without their SQL): the plan names the newest verified
    /// one of its set at or below its target, to seed new, empty shards from.
    pub baselines: Vec<v1::SchemaBaseline>,
    /// How the phases of a phased set are gated.
    pub gates: Vec<v1::GateRequest>,
}

impl TryFrom<CreatePlanRequest> for PlanRequest {
    type Error = RolloutError;

    fn try_from(request: CreatePlanRequest) -> Result<Self, Self::Error> {
        let set = request.migration_set.ok_or_else(|| {
            RolloutError::BadRequest("the request carries no migration_set".to_owned())
        })?;
        let policy = policy(request.waves)?;
        check_duties(request.duties.as_ref())?;
        Ok(Self {
            set,
            target_version: request.target_version,
            selector: request.selector,
            policy,
            limits: request.limits.unwrap_or_default(),
            duties: request.duties,
            allow_drift_shards: request.allow_drift_shards,
            schedule: schedule::checked(request.schedule)?,
            updates: checked_updates(request.updates)?,
            baselines: Vec::new(),
            gates: request.gates,
        })
    }
}

/// `shipped` written to a fresh directory (removed when it is dropped) and loaded.
pub fn unpacked(
    shipped: &fleetshift_common::proto::v1::MigrationSet,
) -> Result<(tempfile::TempDir, MigrationSet), RolloutError> {
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-plan-")
        .tempdir()
        .map_err(|error| {
            RolloutError::NotNow(format!("cannot unpack the migration set: {error}"))
        })?;
    let set = shipped::unpack(shipped, directory.path())
        .map_err(|error| RolloutError::BadRequest(error.to_string()))?;
    Ok((directory, set))
}

/// Plans `request` for `author` over the announced `agents`.
pub fn plan(
    request: PlanRequest,
    author: &str,
    agents: &[(String, Hello)],
) -> Result<Plan, RolloutError> {
    let shipped = &request.set;
    let (_directory, set) = unpacked(shipped)?;
    let target = target_of(&set, &request.target_version)?;
    let shards = candidates(agents, &request.selector)?;
    if shards.is_empty() {
        return Err(RolloutError::BadRequest(format!(
            "no connected agent announces a shard matching {:?}; `fleetshift shards` lists them",
            request.selector
        )));
    }
    let drift_allowed = drift::allowances(agents, &shards, &request.allow_drift_shards)?;
    let applied = set
        .position(&target)
        .map_or(set.revisions.len(), |index| index + 1);
    let findings: Vec<_> = lint::lint_revisions(&set.revisions[..applied])
        .findings
        .iter()
        .map(|finding| finding.to_wire(std::path::Path::new(&shipped.origin)))
        .collect();
    let revisions = &set.revisions[..applied];
    let phases = phases::planned(&set, applied.saturating_sub(1), &request.gates)?;
    let backup_required = request
        .duties
        .as_ref()
        .is_some_and(|duties| duties.require_backup);
    let contexts: Vec<risk::ShardContext> = shards
        .iter()
        .map(|shard| risk::ShardContext {
            shard_id: shard.shard_id.clone(),
            environment: shard.environment.clone(),
            tables: shard.tables.clone(),
            observed_at: shard.observed_at,
            backup_required,
        })
        .collect();
    let analyses = analyses_of(&shards, revisions);
    let risk = risk::assess(revisions, &findings, &contexts);
    let changes = schema_changes(revisions);
    let mut waves = waves(&shards, &request.policy);
    for task in waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        let label = shards
            .iter()
            .find(|shard| shard.shard_id == task.shard_id)
            .and_then(|shard| shard.windows_label.as_deref());
        task.windows = schedule::shard_windows(&task.shard_id, label, request.schedule.as_ref())?;
    }
    let baseline = crate::schema_baselines::for_plan(&request.baselines, &set, &target);
    let PlanRequest {
        set: shipped,
        selector,
        policy,
        limits,
        duties,
        schedule,
        updates,
        ..
    } = request;
    Ok(Plan {
        plan_id: new_plan_id(),
        author: author.to_owned(),
        set_digest: shipped.digest.clone(),
        target_version: target,
        state: PlanState::AwaitingApproval.into(),
        waves,
        approvals: Vec::new(),
        rehearsals: Vec::new(),
        created_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        state_reason: String::new(),
        policy: Some(policy),
        limits: Some(limits),
        selector,
        set_format: shipped.format,
        set_origin: shipped.origin,
        findings,
        risk: Some(risk),
        changes,
        analyses,
        duties,
        direction: Direction::Up.into(),
        rolls_back: String::new(),
        trace_context: spans::new_trace_context(),
        drift_allowed,
        schedule,
        updates,
        retries: String::new(),
        left_out: Vec::new(),
        fleet_target: String::new(),
        catch_up_from: HashMap::new(),
        baseline,
        phases,
        current_phase: 0,
    })
}

/// Status updates whose template renders, at an interval of a minute or more.
fn checked_updates(updates: Option<StatusUpdates>) -> Result<Option<StatusUpdates>, RolloutError> {
    let Some(updates) = updates else {
        return Ok(None);
    };
    let every = updates
        .every
        .and_then(|every| std::time::Duration::try_from(every).ok())
        .unwrap_or_default();
    if every < MIN_UPDATE_INTERVAL {
        return Err(RolloutError::BadRequest(format!(
            "status updates every {}s are too frequent for a channel; the least is {}s",
            every.as_secs(),
            MIN_UPDATE_INTERVAL.as_secs()
        )));
    }
    crate::webhooks::status::check_template(&updates.template)?;
    Ok(Some(updates))
}

/// The shortest interval between status updates.
const MIN_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

mod drift;
#[cfg(test)]
mod tests;
