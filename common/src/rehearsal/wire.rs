//! A rehearsal on the wire: what an agent reports ([`v1::ShardRehearsal`]) and the summary a
//! plan keeps for its approval gate ([`v1::RehearsalSummary`]).

use std::time::{Duration, SystemTime};

use super::Rehearsal;
use super::effects::Effects;
use crate::proto::v1;

/// The shard's identity and the run's circumstances, which the rehearsal itself does not know.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    pub shard_id: &'a str,
    pub agent_id: &'a str,
    pub duration: Duration,
}

fn micros(micros: u64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_micros(micros)).ok()
}

/// `rehearsal` as an agent reports it.
pub fn report(rehearsal: &Rehearsal, reported: Reported<'_>) -> v1::ShardRehearsal {
    v1::ShardRehearsal {
        shard_id: reported.shard_id.to_owned(),
        agent_id: reported.agent_id.to_owned(),
        passed: rehearsal.passed(),
        failure: rehearsal.failure.clone().unwrap_or_default(),
        shard_version: rehearsal
            .shard_version
            .clone()
            .unwrap_or_else(|| "base".to_owned()),
        rehearsed_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        duration: prost_types::Duration::try_from(reported.duration).ok(),
        sample_percent: rehearsal.sample.percent,
        tables: rehearsal
            .sample
            .tables
            .iter()
            .map(|table| v1::SampledTable {
                table: table.table.clone(),
                rows_in_shard: table.rows_in_shard,
                bytes_in_shard: table.bytes_in_shard,
                rows_sampled: table.rows_sampled,
                rows_removed: table.rows_removed,
                whole: table.whole,
            })
            .collect(),
        disk: rehearsal.sample.disk.clone(),
        findings: rehearsal
            .findings
            .iter()
            .map(|finding| v1::RehearsalFinding {
                hint: finding.hint.id().to_owned(),
                title: finding.hint.title().to_owned(),
                hazard: finding.hint.is_hazard(),
                revision: finding.revision.clone(),
                place: finding.place.clone(),
                statement: finding.statement.clone(),
                relation: finding.relation.clone(),
                lock_mode: finding.lock_mode.clone().unwrap_or_default(),
                held: finding.held_us.and_then(micros),
                estimated_hold: finding.estimated_hold_us.and_then(micros),
                detail: finding.detail.clone(),
            })
            .collect(),
        estimates: rehearsal
            .estimates
            .iter()
            .map(|estimate| v1::StatementEstimate {
                revision: estimate.revision.clone(),
                place: estimate.place.clone(),
                table: estimate.table.clone(),
                factor: estimate.factor,
                sample: micros(estimate.sample_us),
                estimated: micros(estimate.estimated_us),
                partitions: estimate.partitions,
            })
            .collect(),
        trace: rehearsal
            .revisions
            .iter()
            .flat_map(|revision| {
                revision.runs.iter().flat_map(move |run| {
                    run.statements
                        .iter()
                        .map(move |statement| v1::TracedStatement {
                            revision: revision.version.clone(),
                            place: statement.place.clone(),
                            in_transaction: run.in_transaction,
                            elapsed: micros(statement.elapsed_us),
                            locks: locks(&statement.effects),
                            rewritten: statement.effects.rewritten.clone(),
                            scanned: statement.effects.scanned.clone(),
                        })
                })
            })
            .collect(),
        baselines: rehearsal
            .baselines
            .iter()
            .map(|baseline| v1::RehearsedBaseline {
                query: baseline.query.clone(),
                before_ms: baseline.before_ms,
                after_ms: baseline.after_ms,
                ratio: baseline.ratio,
                degraded: baseline.degraded,
                error: baseline.error.clone().unwrap_or_default(),
            })
            .collect(),
        degradation: rehearsal.degradation.clone().unwrap_or_default(),
    }
}

fn locks(effects: &Effects) -> Vec<String> {
    super::findings::strongest_locks(&effects.locks)
        .into_iter()
        .map(|lock| format!("{} {}", lock.mode, lock.relation))
        .collect()
}

/// What a plan keeps of a shard's rehearsal.
pub fn summary(rehearsal: &v1::ShardRehearsal) -> v1::RehearsalSummary {
    let mut hints: Vec<String> = rehearsal
        .findings
        .iter()
        .map(|finding| finding.hint.clone())
        .collect();
    hints.sort();
    hints.dedup();
    v1::RehearsalSummary {
        shard_id: rehearsal.shard_id.clone(),
        passed: rehearsal.passed,
        shard_version: rehearsal.shard_version.clone(),
        rehearsed_at: rehearsal.rehearsed_at,
        hints,
        failure: rehearsal.failure.clone(),
        findings: rehearsal.findings.clone(),
        degradation: rehearsal.degradation.clone(),
        estimates: revision_estimates(rehearsal),
    }
}

/// Each revision's expected duration on the shard: the sum of its statements' times on the
/// sample, each scaled to the shard's size where an estimate scaled it.
fn revision_estimates(rehearsal: &v1::ShardRehearsal) -> Vec<v1::RevisionDuration> {
    let mut revisions: Vec<(String, std::time::Duration)> = Vec::new();
    for statement in &rehearsal.trace {
        let scaled = rehearsal
            .estimates
            .iter()
            .find(|estimate| {
                estimate.revision == statement.revision && estimate.place == statement.place
            })
            .and_then(|estimate| estimate.estimated)
            .or(statement.elapsed)
            .and_then(|took| std::time::Duration::try_from(took).ok())
            .unwrap_or_default();
        match revisions
            .iter_mut()
            .find(|(version, _)| *version == statement.revision)
        {
            Some((_, total)) => *total += scaled,
            None => revisions.push((statement.revision.clone(), scaled)),
        }
    }
    revisions
        .into_iter()
        .map(|(version, total)| v1::RevisionDuration {
            version,
            duration: prost_types::Duration::try_from(total).ok(),
            source: "rehearsal".to_owned(),
        })
        .collect()
}
