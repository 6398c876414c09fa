//! A shard's ledger against what its revisions left behind and against its plan task: each
//! revision's witness at most once and exactly when the ledger says applied, no `started`
//! row on a shard whose task succeeded, a succeeded task's shard where the task says, and
//! fencing tokens that never go backwards along the order of application nor past the fence.

use fleetshift_common::ledger::{LedgerEntry, RevisionStatus};
use fleetshift_common::proto::v1::{Direction, Plan, ShardState, ShardTask};

use super::{Check, ShardRecord, Violation};
use crate::workload::{self, Evidence};

/// Everything broken on `shard` after `plan` ended.
pub fn check(plan: &Plan, shard: &ShardRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    let task = plan
        .waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .find(|task| task.shard_id == shard.shard);
    let succeeded = task.is_some_and(|task| task.state() == ShardState::Succeeded);
    for version in 1..=workload::LAST {
        let row = entry(shard, version);
        let status = row.map(|row| row.status);
        let applied = status == Some(RevisionStatus::Applied);
        let evidence = workload::evidence(version);
        let seen = match evidence {
            Evidence::Witness => shard.witnesses.get(&version).copied().unwrap_or_default(),
            Evidence::Index(name) => u64::from(shard.valid_indexes.contains(name)),
        };
        let violation = |check, detail: String| {
            Violation::on(check, &shard.shard, format!("revision {version}: {detail}"))
        };
        if seen > 1 {
            violations.push(violation(
                Check::AppliedTwice,
                format!("its witness is there {seen} times: it ran more than once"),
            ));
        }
        if applied && seen == 0 {
            violations.push(violation(
                Check::RecordWithoutWitness,
                format!("recorded applied but {}", missing(evidence)),
            ));
        }
        // A build run outside a transaction may finish before its record does (the agent
        // died in between): its `started` row explains the index, and the task must not
        // have succeeded (the started-row rule below).
        let explained =
            matches!(evidence, Evidence::Index(_)) && status == Some(RevisionStatus::Started);
        if !applied && seen > 0 && !explained {
            violations.push(violation(
                Check::WitnessWithoutRecord,
                format!(
                    "its witness is there but the ledger says {}",
                    status.map_or("nothing", RevisionStatus::as_str)
                ),
            ));
        }
        if succeeded && status == Some(RevisionStatus::Started) {
            violations.push(violation(
                Check::StartedLeftover,
                "left started on a shard whose task succeeded".to_owned(),
            ));
        }
    }
    if let Some(task) = task.filter(|_| succeeded) {
        violations.extend(where_the_task_says(plan, task, shard));
    }
    violations.extend(fencing(shard));
    violations
}

fn missing(evidence: Evidence) -> String {
    match evidence {
        Evidence::Witness => "no witness row names it".to_owned(),
        Evidence::Index(name) => format!("index {name} is missing or invalid"),
    }
}

fn entry(shard: &ShardRecord, version: u32) -> Option<&LedgerEntry> {
    shard
        .ledger
        .iter()
        .find(|entry| entry.version.parse::<u32>().ok() == Some(version))
}

/// A succeeded task's shard holds every revision up to its target, and, going down, none
/// past it; the version the task tells is the shard's.
fn where_the_task_says(plan: &Plan, task: &ShardTask, shard: &ShardRecord) -> Vec<Violation> {
    let wanted = if task.target_version.is_empty() {
        &plan.target_version
    } else {
        &task.target_version
    };
    let target = if wanted == fleetshift_common::ledger::BASE {
        0
    } else {
        match wanted.parse::<u32>() {
            Ok(target) => target,
            Err(_) => {
                return vec![Violation::on(
                    Check::TaskState,
                    &shard.shard,
                    format!("the task's target {wanted:?} is not one of the set's versions"),
                )];
            }
        }
    };
    let down = plan.direction() == Direction::Down;
    let mut violations = Vec::new();
    for version in 1..=workload::LAST {
        let applied =
            entry(shard, version).is_some_and(|row| row.status == RevisionStatus::Applied);
        if version <= target && !applied {
            violations.push(Violation::on(
                Check::TaskState,
                &shard.shard,
                format!("the task to {target} succeeded but revision {version} is not applied"),
            ));
        }
        if down && version > target && applied {
            violations.push(Violation::on(
                Check::TaskState,
                &shard.shard,
                format!(
                    "the rollback to {target} succeeded but revision {version} is still applied"
                ),
            ));
        }
    }
    // Going up, a shard already past the target stays where it is: the task tells the
    // shard's newest applied revision, which must be the ledger's.
    let newest = (1..=workload::LAST)
        .rev()
        .find(|version| {
            entry(shard, *version).is_some_and(|row| row.status == RevisionStatus::Applied)
        })
        .map_or_else(
            || fleetshift_common::ledger::BASE.to_owned(),
            |version| version.to_string(),
        );
    let told = if down {
        wanted.as_str()
    } else {
        newest.as_str()
    };
    if task.current_version != told {
        violations.push(Violation::on(
            Check::TaskState,
            &shard.shard,
            format!(
                "the task succeeded at {:?}, but the shard is at {told:?}",
                task.current_version
            ),
        ));
    }
    violations
}

/// Applied revisions' tokens never go back in the order they started, and nothing the ledger
/// or the audit trail recorded is newer than the fence.
fn fencing(shard: &ShardRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut applied: Vec<&LedgerEntry> = shard
        .ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Applied)
        .collect();
    applied.sort_by(|left, right| left.started_at.cmp(&right.started_at));
    for pair in applied.windows(2) {
        if pair[1].fence_token < pair[0].fence_token {
            violations.push(Violation::on(
                Check::FenceOrder,
                &shard.shard,
                format!(
                    "revision {} (token {}) was applied after revision {} (token {}) under an older token",
                    pair[1].version, pair[1].fence_token, pair[0].version, pair[0].fence_token
                ),
            ));
        }
    }
    let recorded = shard
        .ledger
        .iter()
        .map(|entry| {
            (
                format!("revision {}", entry.version),
                entry.fence_token.get(),
            )
        })
        .chain(
            shard
                .audit_tokens
                .iter()
                .map(|token| ("an audit entry".to_owned(), *token)),
        );
    for (what, token) in recorded {
        if token > shard.fence {
            violations.push(Violation::on(
                Check::FenceOrder,
                &shard.shard,
                format!(
                    "{what} carries token {token}, newer than the fence's {}",
                    shard.fence
                ),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::fence::FenceToken;
    use fleetshift_common::proto::v1::Wave;

    fn row(version: u32, status: RevisionStatus, token: i64, started: &str) -> LedgerEntry {
        crate::checker::test_row(&version.to_string(), status, token, started)
    }

    /// A shard at `through`, every revision applied once under token 5 in order.
    fn sound(through: u32) -> ShardRecord {
        let mut shard = ShardRecord {
            shard: "s".to_owned(),
            fence: 5,
            ..ShardRecord::default()
        };
        for version in 1..=through {
            shard.ledger.push(row(
                version,
                RevisionStatus::Applied,
                5,
                &format!("t{version:02}"),
            ));
            match workload::evidence(version) {
                Evidence::Witness => {
                    shard.witnesses.insert(version, 1);
                }
                Evidence::Index(name) => {
                    shard.valid_indexes.insert(name.to_owned());
                }
            }
        }
        shard
    }

    fn plan(target: &str, state: ShardState, current: &str) -> Plan {
        let mut task = ShardTask {
            shard_id: "s".to_owned(),
            current_version: current.to_owned(),
            ..ShardTask::default()
        };
        task.set_state(state);
        Plan {
            target_version: target.to_owned(),
            waves: vec![Wave {
                shards: vec![task],
                ..Wave::default()
            }],
            ..Plan::default()
        }
    }

    fn checks(violations: &[Violation]) -> Vec<Check> {
        violations.iter().map(|violation| violation.check).collect()
    }

    #[test]
    fn a_sound_shard_passes() {
        assert_eq!(check(&plan("4", ShardState::Succeeded, "4"), &sound(4)), []);
        assert_eq!(check(&plan("8", ShardState::Failed, "4"), &sound(4)), []);
        // Going up to a version the shard is past leaves it where it is.
        assert_eq!(check(&plan("2", ShardState::Succeeded, "4"), &sound(4)), []);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let succeeded = plan("4", ShardState::Succeeded, "4");
        let mut twice = sound(4);
        twice.witnesses.insert(2, 2);
        assert_eq!(checks(&check(&succeeded, &twice)), [Check::AppliedTwice]);

        let mut unwitnessed = sound(4);
        unwitnessed.witnesses.remove(&4);
        assert_eq!(
            checks(&check(&succeeded, &unwitnessed)),
            [Check::RecordWithoutWitness]
        );

        let mut unrecorded = sound(4);
        unrecorded.witnesses.insert(5, 1);
        assert_eq!(
            checks(&check(&succeeded, &unrecorded)),
            [Check::WitnessWithoutRecord]
        );

        let mut index_gone = sound(4);
        index_gone.valid_indexes.clear();
        assert_eq!(
            checks(&check(&succeeded, &index_gone)),
            [Check::RecordWithoutWitness]
        );

        let mut left = sound(3);
        left.ledger.push(row(4, RevisionStatus::Started, 5, "t04"));
        assert_eq!(
            checks(&check(&succeeded, &left)),
            // Revision 4 not applied, and the task telling 4 where the ledger says 3.
            [Check::StartedLeftover, Check::TaskState, Check::TaskState]
        );
        // The same leftover on a shard whose task failed is explained by the failure.
        assert_eq!(check(&plan("4", ShardState::Failed, "3"), &left), []);

        let mut backwards = sound(4);
        backwards.ledger[3].fence_token = FenceToken::from_raw(3);
        assert_eq!(checks(&check(&succeeded, &backwards)), [Check::FenceOrder]);
        let mut past_fence = sound(4);
        past_fence.audit_tokens.push(9);
        assert_eq!(checks(&check(&succeeded, &past_fence)), [Check::FenceOrder]);

        assert_eq!(
            checks(&check(&plan("4", ShardState::Succeeded, "3"), &sound(4))),
            [Check::TaskState]
        );
    }

    #[test]
    fn a_rollback_that_succeeded_leaves_nothing_past_its_target() {
        let mut back = plan("2", ShardState::Succeeded, "2");
        back.set_direction(Direction::Down);
        assert_eq!(checks(&check(&back, &sound(3))), [Check::TaskState]);
        let mut reverted = sound(2);
        reverted
            .ledger
            .push(row(3, RevisionStatus::Reverted, 5, "t03"));
        assert_eq!(check(&back, &reverted), []);
    }
}
