//! A campaign's report: the faults injected (each with its time and the part it hit), each
//! plan's end, the application's reads and every violation found, as JSON and as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use serde::Serialize;

use crate::campaign::Options;
use crate::checker::latency::ReadSummary;
use crate::checker::{PlanRecord, Violation};
use crate::schedule::{Fault, FaultClass, Round};

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub rounds: usize,
    pub etcd_members: usize,
    pub shards: usize,
    pub classes: Vec<FaultClass>,
    pub faults: Vec<FaultRecord>,
    pub faults_by_class: BTreeMap<FaultClass, usize>,
    pub plans: Vec<PlanOutcome>,
    /// Plans the schedule asked for that the fleet had nothing to do for.
    pub skipped: Vec<String>,
    pub reads: ReadSummary,
    pub violations: Vec<Seen>,
    pub seconds: u64,
}

/// A fault as injected.
#[derive(Debug, Serialize)]
pub struct FaultRecord {
    pub round: usize,
    /// Milliseconds from the campaign's start to the fault, and to its healing.
    pub at_ms: u64,
    pub healed_ms: u64,
    pub hit: String,
    #[serde(flatten)]
    pub fault: Fault,
}

/// How a plan ended.
#[derive(Debug, Serialize)]
pub struct PlanOutcome {
    pub round: usize,
    pub kind: &'static str,
    pub plan: String,
    pub target: String,
    pub state: String,
    /// Milliseconds from its last fault's healing to its end; absent: it did not end.
    pub ended_after_heal_ms: Option<u64>,
    pub at_ms: u64,
    /// Lock waits its migrations gave up and tried again (the events told).
    pub lock_retries: usize,
    /// Shards that failed for want of space for their backup: refused by the pre-flight
    /// disk check, or out of space while dumping.
    pub out_of_space: usize,
    /// Why each failed shard failed: the first line of its error.
    pub failures: BTreeMap<String, String>,
}

/// The plan's target version; a rollback's (a description) as its tasks' targets.
fn target(plan: &fleetshift_common::proto::v1::Plan) -> String {
    if !plan.target_version.contains(' ') {
        return plan.target_version.clone();
    }
    let targets: std::collections::BTreeSet<&str> = plan
        .waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .map(|task| task.target_version.as_str())
        .collect();
    targets.into_iter().collect::<Vec<_>>().join("/")
}

impl PlanOutcome {
    pub fn of(round: usize, kind: &'static str, record: &PlanRecord, at: Duration) -> Self {
        Self {
            round,
            kind,
            plan: record.plan.plan_id.clone(),
            target: target(&record.plan),
            state: format!("{:?}", record.plan.state()),
            ended_after_heal_ms: record.ended_after_heal.map(millis),
            at_ms: millis(at),
            lock_retries: record
                .live
                .iter()
                .filter(|event| {
                    matches!(&event.event, Some(Event::Progress(progress))
                        if matches!(progress.event, Some(Progress::LockRetry(_))))
                })
                .count(),
            out_of_space: record
                .plan
                .waves
                .iter()
                .flat_map(|wave| &wave.shards)
                .filter(|task| {
                    task.error
                        .as_ref()
                        .is_some_and(|error| for_want_of_space(&error.message))
                })
                .count(),
            failures: record
                .plan
                .waves
                .iter()
                .flat_map(|wave| &wave.shards)
                .filter_map(|task| {
                    let error = task.error.as_ref()?;
                    let first = error.message.lines().next().unwrap_or_default();
                    Some((task.shard_id.clone(), first.to_owned()))
                })
                .collect(),
        }
    }
}

/// Whether a shard's error says its backup had no room.
fn for_want_of_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("pre-flight check disk failed")
}

/// A violation, with the round and plan after which it was seen (none: the whole run's).
#[derive(Debug, Serialize)]
pub struct Seen {
    pub round: Option<usize>,
    pub plan: Option<String>,
    #[serde(flatten)]
    pub violation: Violation,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Report {
    pub fn new(options: &Options, rounds: &[Round]) -> Self {
        Self {
            seed: options.seed,
            rounds: rounds.len(),
            etcd_members: options.size.etcd_members,
            shards: options.size.clusters * options.size.databases,
            classes: options.shape.classes.clone(),
            faults: Vec::new(),
            faults_by_class: BTreeMap::new(),
            plans: Vec::new(),
            skipped: Vec::new(),
            reads: ReadSummary::default(),
            violations: Vec::new(),
            seconds: 0,
        }
    }

    pub fn finish(&mut self, took: Duration) {
        self.seconds = took.as_secs();
        self.faults_by_class = BTreeMap::new();
        for fault in &self.faults {
            *self.faults_by_class.entry(fault.fault.class()).or_default() += 1;
        }
    }

    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "seed {}: {} rounds, {} plans, {} faults in {} s ({} etcd member(s), {} shards)",
            self.seed,
            self.rounds,
            self.plans.len(),
            self.faults.len(),
            self.seconds,
            self.etcd_members,
            self.shards
        );
        let _ = writeln!(text, "\n{:<12} {:>6}", "FAULT", "COUNT");
        for (class, count) in &self.faults_by_class {
            let _ = writeln!(text, "{:<12} {count:>6}", class.name());
        }
        let _ = writeln!(
            text,
            "\n{:<6} {:<9} {:<20} {:<7} {:<22} {:>12} {:>12}",
            "ROUND", "KIND", "PLAN", "TARGET", "STATE", "LOCK RETRIES", "ENDED AFTER"
        );
        for plan in &self.plans {
            let ended = plan
                .ended_after_heal_ms
                .map_or_else(|| "stuck".to_owned(), |ms| format!("{ms} ms"));
            let _ = writeln!(
                text,
                "{:<6} {:<9} {:<20} {:<7} {:<22} {:>12} {ended:>12}",
                plan.round, plan.kind, plan.plan, plan.target, plan.state, plan.lock_retries
            );
        }
        let _ = writeln!(
            text,
            "\napplication reads: {} timed, {} outside faults; p50 {} ms, p99 {} ms, max {} ms",
            self.reads.reads,
            self.reads.counted,
            self.reads.p50_ms,
            self.reads.p99_ms,
            self.reads.max_ms
        );
        if self.classes.contains(&FaultClass::DiskFull) {
            let refused: usize = self.plans.iter().map(|plan| plan.out_of_space).sum();
            let _ = writeln!(text, "shards failed for want of backup space: {refused}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(text, "\nno violation found");
        } else {
            let _ = writeln!(text, "\n{} violation(s):", self.violations.len());
            for seen in &self.violations {
                let _ = writeln!(
                    text,
                    "  round {} plan {} {:?} {}: {}",
                    seen.round
                        .map_or_else(|| "-".to_owned(), |round| round.to_string()),
                    seen.plan.as_deref().unwrap_or("-"),
                    seen.violation.check,
                    seen.violation.shard.as_deref().unwrap_or("fleet"),
                    seen.violation.detail
                );
            }
        }
        text
    }
}
