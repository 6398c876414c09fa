//! The plan's risk once rehearsals have run: the `locks` factor, guessed from the SQL's first
//! words at planning, becomes what the tracer saw (the strongest table-blocking lock any
//! rehearsal held, with its hold estimated at that shard's size), and an E-class hazard on a
//! table at or above the chosen size raises the plan to at least HIGH.

use fleetshift_common::proto::v1::{
    RehearsalFinding, RiskAssessment, RiskFactor, RiskLevel, ShardRehearsal,
};

use super::{factor, level_of};

/// The factors a rehearsal replaces.
const MEASURED: [&str; 2] = ["locks", "rehearsal"];

/// Where a hazard's table counts as large (either bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HazardSize {
    pub rows: i64,
    pub bytes: i64,
}

impl Default for HazardSize {
    /// 1M rows or 1 GiB.
    fn default() -> Self {
        Self {
            rows: 1_000_000,
            bytes: 1 << 30,
        }
    }
}

/// `assessment` with what `rehearsals` measured.
pub fn measured(
    assessment: &RiskAssessment,
    rehearsals: &[ShardRehearsal],
    size: HazardSize,
) -> RiskAssessment {
    if rehearsals.is_empty() {
        return assessment.clone();
    }
    let mut factors: Vec<RiskFactor> = assessment
        .factors
        .iter()
        .filter(|factor| !MEASURED.contains(&factor.name.as_str()))
        .cloned()
        .collect();
    factors.push(locks(rehearsals));
    let score: u32 = factors.iter().map(|factor| factor.points).sum();
    if let Some((rehearsal, finding, rows, bytes)) = large_hazard(rehearsals, size) {
        let high: u32 = 61;
        factors.push(factor(
            "rehearsal",
            high.saturating_sub(score),
            format!(
                "the rehearsal on {} found {} ({}) at {} on {}, which holds about {rows} rows ({} MiB) there: at least HIGH",
                rehearsal.shard_id,
                finding.hint,
                finding.title,
                finding.place,
                finding.relation,
                bytes / (1024 * 1024)
            ),
        ));
    }
    let score = factors
        .iter()
        .map(|factor| factor.points)
        .sum::<u32>()
        .min(100);
    let level = level_of(score);
    let critical = level == RiskLevel::Critical;
    RiskAssessment {
        score,
        level: level.into(),
        factors,
        approvals_required: if critical { 2 } else { 1 },
        author_may_approve: !critical,
        ..assessment.clone()
    }
}

/// The strongest table-blocking lock the rehearsals saw, with its estimated hold.
fn locks(rehearsals: &[ShardRehearsal]) -> RiskFactor {
    let points = |finding: &RehearsalFinding| match finding.lock_mode.as_str() {
        "AccessExclusiveLock" | "ExclusiveLock" | "ShareRowExclusiveLock" => 20,
        "ShareLock" => 10,
        _ => 0,
    };
    let worst = rehearsals
        .iter()
        .flat_map(|rehearsal| {
            rehearsal
                .findings
                .iter()
                .map(move |finding| (rehearsal, finding))
        })
        .max_by_key(|(_, finding)| {
            (
                points(finding),
                finding.estimated_hold.map_or(0, |hold| {
                    hold.seconds * 1_000_000_000 + i64::from(hold.nanos)
                }),
            )
        })
        .filter(|(_, finding)| points(finding) > 0);
    match worst {
        Some((rehearsal, finding)) => factor(
            "locks",
            points(finding),
            format!(
                "measured in the rehearsal on {}: {} on {} from {} ({}), held about {} at that shard's size",
                rehearsal.shard_id,
                finding.lock_mode,
                finding.relation,
                finding.place,
                finding.hint,
                finding.estimated_hold.map_or_else(
                    || "an unknown time".to_owned(),
                    |hold| format!("{:.1} s", hold.seconds as f64 + f64::from(hold.nanos) / 1e9)
                )
            ),
        ),
        None => factor(
            "locks",
            0,
            format!(
                "measured in rehearsals on {} shard(s): no table-blocking lock on an existing table",
                rehearsals.len()
            ),
        ),
    }
}

/// An E-class finding on a table at or above `size` on the shard rehearsed.
fn large_hazard(
    rehearsals: &[ShardRehearsal],
    size: HazardSize,
) -> Option<(&ShardRehearsal, &RehearsalFinding, i64, i64)> {
    rehearsals.iter().find_map(|rehearsal| {
        rehearsal
            .findings
            .iter()
            .filter(|finding| finding.hazard)
            .find_map(|finding| {
                let table = rehearsal
                    .tables
                    .iter()
                    .find(|table| table.table == finding.relation)?;
                (table.rows_in_shard >= size.rows || table.bytes_in_shard >= size.bytes).then_some(
                    (
                        rehearsal,
                        finding,
                        table.rows_in_shard,
                        table.bytes_in_shard,
                    ),
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::proto::v1::SampledTable;

    fn rehearsal(rows: i64) -> ShardRehearsal {
        ShardRehearsal {
            shard_id: "users-1".to_owned(),
            tables: vec![SampledTable {
                table: "public.events".to_owned(),
                rows_in_shard: rows,
                bytes_in_shard: rows * 100,
                ..SampledTable::default()
            }],
            findings: vec![RehearsalFinding {
                hint: "E6".to_owned(),
                title: "an index built without CONCURRENTLY".to_owned(),
                hazard: true,
                place: "2_index.sql:1".to_owned(),
                relation: "public.events".to_owned(),
                lock_mode: "ShareLock".to_owned(),
                estimated_hold: Some(prost_types::Duration {
                    seconds: 42,
                    nanos: 0,
                }),
                ..RehearsalFinding::default()
            }],
            ..ShardRehearsal::default()
        }
    }

    fn planned() -> RiskAssessment {
        RiskAssessment {
            score: 40,
            level: RiskLevel::Medium.into(),
            factors: vec![
                factor(
                    "locks",
                    20,
                    "1 statement(s) take an ACCESS EXCLUSIVE lock".to_owned(),
                ),
                factor("reversibility", 15, "no down script".to_owned()),
                factor("size", 5, "events holds about 20000 rows".to_owned()),
            ],
            approvals_required: 1,
            author_may_approve: true,
            ..RiskAssessment::default()
        }
    }

    #[test]
    fn the_measured_lock_replaces_the_guess_and_says_so() {
        let small = measured(&planned(), &[rehearsal(20_000)], HazardSize::default());
        let locks = small
            .factors
            .iter()
            .find(|factor| factor.name == "locks")
            .expect("locks");
        assert_eq!(locks.points, 10);
        assert!(
            locks
                .explanation
                .contains("measured in the rehearsal on users-1: ShareLock")
                && locks.explanation.contains("42.0 s"),
            "{}",
            locks.explanation
        );
        assert_eq!((small.score, small.level), (30, RiskLevel::Low.into()));
        assert_eq!(
            measured(&small, &[rehearsal(20_000)], HazardSize::default()),
            small
        );
    }

    #[test]
    fn a_hazard_on_a_large_table_makes_the_plan_at_least_high() {
        let large = measured(&planned(), &[rehearsal(5_000_000)], HazardSize::default());
        assert_eq!((large.score, large.level), (61, RiskLevel::High.into()));
        let why = large
            .factors
            .iter()
            .find(|factor| factor.name == "rehearsal")
            .expect("rehearsal factor");
        assert!(why.explanation.contains("E6"), "{}", why.explanation);
        let lower = HazardSize {
            rows: 10_000,
            bytes: i64::MAX,
        };
        assert_eq!(
            measured(&planned(), &[rehearsal(20_000)], lower).level,
            i32::from(RiskLevel::High)
        );
    }
}
