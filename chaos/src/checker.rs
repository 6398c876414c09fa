//! The history checker, independent of the code it checks: it reads what the shards, the
//! store and the event stream hold after a plan ended and says what breaks the rules. It
//! trusts nothing fleetshift reports about itself beyond the plan's task states, which it
//! holds the shards to.
//!
//! - [`ledger`]: each shard's ledger against its witnesses and fence;
//! - [`events`]: the event stream a watcher saw against a replay of it;
//! - [`schema`]: shards with the same revisions against each other's schema;
//! - [`latency`]: the application's reads while migrations waited for locks.

pub mod events;
pub mod latency;
pub mod ledger;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleetshift_common::ledger::LedgerEntry;
use fleetshift_common::proto::v1::{Plan, RolloutEvent};
use serde::Serialize;

/// The rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// A revision's witness appears more than once: it ran twice.
    AppliedTwice,
    /// The ledger says applied, the witness is missing.
    RecordWithoutWitness,
    /// The witness is there, the ledger does not say applied.
    WitnessWithoutRecord,
    /// A revision left `started` on a shard whose task succeeded.
    StartedLeftover,
    /// A task succeeded but its shard is not where it says.
    TaskState,
    /// Fencing tokens went backwards, or past the fence.
    FenceOrder,
    /// The events a watcher saw are out of order, have a gap, or end elsewhere than the plan.
    Events,
    /// Application reads waited longer than a lock wait may make them.
    ReadLatency,
    /// A plan did not end within the bound after the last fault healed.
    Stuck,
    /// Shards with the same revisions applied hold different schemas.
    SchemaDivergence,
    /// The coordinator refused a plan for schema drift that no one made.
    DriftReported,
    /// The coordinator refused one of the campaign's (valid) plans.
    PlanRefused,
    /// A backup left a half-written file behind (a failed one must remove it).
    BackupLeftover,
}

/// One broken rule, with the shard it was seen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub check: Check,
    pub shard: Option<String>,
    pub detail: String,
}

impl Violation {
    pub fn on(check: Check, shard: &str, detail: String) -> Self {
        Self {
            check,
            shard: Some(shard.to_owned()),
            detail,
        }
    }

    pub fn fleet(check: Check, detail: String) -> Self {
        Self {
            check,
            shard: None,
            detail,
        }
    }
}

/// What one shard holds, read straight from its database.
#[derive(Debug, Clone, Default)]
pub struct ShardRecord {
    pub shard: String,
    pub ledger: Vec<LedgerEntry>,
    /// Rows in `witness`, by version.
    pub witnesses: BTreeMap<u32, u64>,
    /// The valid indexes on the application's tables.
    pub valid_indexes: BTreeSet<String>,
    /// `fleetshift.fence`'s token.
    pub fence: i64,
    /// The fencing tokens `fleetshift.audit` recorded.
    pub audit_tokens: Vec<i64>,
    /// The application's tables, columns and indexes, one line each.
    pub schema: BTreeSet<String>,
}

/// An ended plan, as the store holds it, with the events seen of it.
#[derive(Debug, Clone, Default)]
pub struct PlanRecord {
    pub plan: Plan,
    /// Every event a watcher saw, moving between replicas with the last sequence it saw.
    pub live: Vec<RolloutEvent>,
    /// The same plan's events replayed after it ended, after the live watch's first sequence.
    pub replayed: Vec<RolloutEvent>,
    /// How long after the last fault healed the plan ended; `None`: it had not within the
    /// bound.
    pub ended_after_heal: Option<Duration>,
}

/// Everything broken in `plan` and the `shards` it ran on.
pub fn check(plan: &PlanRecord, shards: &[ShardRecord]) -> Vec<Violation> {
    let mut violations = Vec::new();
    if plan.ended_after_heal.is_none() {
        violations.push(Violation::fleet(
            Check::Stuck,
            format!(
                "plan {} did not end after the faults healed: {:?}, tasks {}",
                plan.plan.plan_id,
                plan.plan.state(),
                events::task_states(&plan.plan)
            ),
        ));
    }
    for shard in shards {
        violations.extend(ledger::check(&plan.plan, shard));
    }
    violations.extend(schema::check(shards));
    violations.extend(events::check(plan));
    violations
}

/// A ledger row for the checker's tests: revision `version` with `status`, under `token`,
/// started at `started`.
#[cfg(test)]
pub(crate) fn test_row(
    version: &str,
    status: fleetshift_common::ledger::RevisionStatus,
    token: i64,
    started: &str,
) -> LedgerEntry {
    let transactional = version.parse().is_ok_and(|version| {
        !matches!(
            crate::workload::evidence(version),
            crate::workload::Evidence::Index(_)
        )
    });
    LedgerEntry {
        version: version.to_owned(),
        name: "n".to_owned(),
        checksum: "c".to_owned(),
        status,
        transactional,
        fence_token: fleetshift_common::fence::FenceToken::from_raw(token),
        plan_id: None,
        agent_id: "a".to_owned(),
        started_at: started.to_owned(),
        finished_at: None,
        duration_ms: None,
        statements_run: 1,
        error: None,
    }
}
