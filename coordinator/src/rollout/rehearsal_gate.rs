//! The rehearsals a plan's risk asks for before it may be approved: a HIGH plan needs a
//! rehearsal that ran every revision on at least one shard at each schema version its shards
//! are at (the revisions run the same on every shard at one version, so one rehearsal speaks
//! for them); a CRITICAL plan needs such a rehearsal on every shard, at its current version.
//!
//! A rehearsal passes this gate when every revision ran on the sample. The hazards it found do
//! not block approval: they are measured evidence, put into the plan's risk (a hazard on a large
//! table makes the plan HIGH) and shown to the approvers, who decide with them in view.

use std::collections::BTreeMap;

use fleetshift_common::proto::v1::{Plan, RehearsalSummary, RiskLevel};

use super::waves;

/// Each shard's newest applied revision as its agent last announced it.
pub type ShardVersions = BTreeMap<String, String>;

/// What is missing before `plan` may be approved, with what to run; `None` when nothing is.
pub fn missing(plan: &Plan, versions: &ShardVersions) -> Option<String> {
    let risk = plan.risk.as_ref()?;
    let level = RiskLevel::try_from(risk.level).unwrap_or(RiskLevel::Unspecified);
    let shards: Vec<&str> = waves::planned_tasks(plan)
        .map(|task| task.shard_id.as_str())
        .collect();
    let ran: Vec<&RehearsalSummary> = plan
        .rehearsals
        .iter()
        .filter(|rehearsal| rehearsal.failure.is_empty())
        .collect();
    let version_of = |shard: &str| versions.get(shard).map(String::as_str);
    let uncovered: Vec<&str> = match level {
        RiskLevel::High => shards
            .iter()
            .copied()
            .filter(|shard| {
                !ran.iter().any(|rehearsal| {
                    rehearsal.shard_id == *shard
                        || version_of(shard) == Some(rehearsal.shard_version.as_str())
                })
            })
            .collect(),
        RiskLevel::Critical => shards
            .iter()
            .copied()
            .filter(|shard| {
                !ran.iter().any(|rehearsal| {
                    rehearsal.shard_id == *shard
                        && version_of(shard).is_none_or(|now| now == rehearsal.shard_version)
                })
            })
            .collect(),
        _ => return None,
    };
    if uncovered.is_empty() {
        return None;
    }
    Some(match level {
        RiskLevel::Critical => format!(
            "plan {} is CRITICAL (risk {}): every shard needs a rehearsal that ran every revision at its current version; {} of {} have none: {}; run `fleetshift rehearse {}`",
            plan.plan_id,
            risk.score,
            uncovered.len(),
            shards.len(),
            list(&uncovered),
            plan.plan_id
        ),
        _ => {
            let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for shard in &uncovered {
                by_version
                    .entry(version_of(shard).unwrap_or("unknown"))
                    .or_default()
                    .push(shard);
            }
            let wanted: Vec<String> = by_version
                .iter()
                .map(|(version, shards)| format!("version {version} ({})", list(shards)))
                .collect();
            let first: Vec<&str> = by_version
                .values()
                .filter_map(|shards| shards.first().copied())
                .collect();
            format!(
                "plan {} is HIGH (risk {}): approval needs a rehearsal that ran every revision on one shard at each schema version it touches; none yet at {}; run `fleetshift rehearse {} --shards '{}'`",
                plan.plan_id,
                risk.score,
                wanted.join(", "),
                plan.plan_id,
                if first.len() == 1 {
                    first[0].to_owned()
                } else {
                    format!("{{{}}}", first.join(","))
                }
            )
        }
    })
}

/// Up to five names, then how many more.
fn list(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().copied().take(5).collect();
    if names.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            names.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::proto::v1::{RiskAssessment, ShardTask, Wave};

    fn plan(level: RiskLevel, rehearsals: Vec<RehearsalSummary>) -> Plan {
        let task = |shard: &str| ShardTask {
            shard_id: shard.to_owned(),
            ..ShardTask::default()
        };
        Plan {
            plan_id: "p1".to_owned(),
            risk: Some(RiskAssessment {
                level: level.into(),
                score: 70,
                ..RiskAssessment::default()
            }),
            waves: vec![Wave {
                index: 0,
                shards: vec![task("a"), task("b"), task("c")],
            }],
            rehearsals,
            ..Plan::default()
        }
    }

    fn ran(shard: &str, version: &str) -> RehearsalSummary {
        RehearsalSummary {
            shard_id: shard.to_owned(),
            passed: false,
            hints: vec!["E6".to_owned()],
            shard_version: version.to_owned(),
            ..RehearsalSummary::default()
        }
    }

    fn versions() -> ShardVersions {
        [("a", "2"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(shard, version)| (shard.to_owned(), version.to_owned()))
            .collect()
    }

    #[test]
    fn a_high_plan_needs_one_rehearsal_that_ran_every_revision_per_schema_version() {
        let none = missing(&plan(RiskLevel::High, vec![]), &versions()).expect("missing");
        assert!(none.contains("version 2 (a, b), version 3 (c)"), "{none}");
        assert!(none.contains("--shards '{a,c}'"), "{none}");
        let failed = RehearsalSummary {
            failure: "revision 3 failed on the sample: boom".to_owned(),
            ..ran("c", "3")
        };
        let one = missing(
            &plan(RiskLevel::High, vec![ran("a", "2"), failed]),
            &versions(),
        )
        .expect("version 3 is not covered");
        assert!(one.contains("none yet at version 3 (c)"), "{one}");
        assert_eq!(
            missing(
                &plan(RiskLevel::High, vec![ran("b", "2"), ran("c", "3")]),
                &versions()
            ),
            None
        );
        assert_eq!(missing(&plan(RiskLevel::Medium, vec![]), &versions()), None);
    }

    #[test]
    fn a_critical_plan_needs_every_shard_rehearsed_at_its_current_version() {
        let stale = ran("c", "2");
        let rehearsed = vec![ran("a", "2"), ran("b", "2"), stale];
        let message = missing(&plan(RiskLevel::Critical, rehearsed.clone()), &versions())
            .expect("c moved on since its rehearsal");
        assert!(message.contains("1 of 3 have none: c"), "{message}");
        let mut all = rehearsed;
        all.push(ran("c", "3"));
        assert_eq!(missing(&plan(RiskLevel::Critical, all), &versions()), None);
    }
}
