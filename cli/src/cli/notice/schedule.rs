//! The notice's schedule from the plan itself: the first moment a shard may start (the plan's
//! start and the shards' windows), how long the rollout is expected to take (the rehearsals'
//! estimates, wave after wave), and so its expected end. Each is `None` when the plan cannot
//! tell; the operator's `--start`, `--duration` and `--end` replace them.

use std::time::Duration;

use fleetshift_common::proto::v1::Plan;
use fleetshift_common::window::{self, Standing, Windows};
use fleetshift_coordinator::rollout::waves;
use jiff::Timestamp;

/// What the plan says of its schedule, as people read it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub start: Option<String>,
    pub duration: Option<String>,
    pub end: Option<String>,
}

/// The plan's expected schedule, as of `now`.
pub fn expected(plan: &Plan, now: Timestamp) -> Expected {
    let start = first_start(plan, now);
    let duration = expected_duration(plan);
    Expected {
        start: start.map(format),
        duration: duration
            .map(|took| format!("about {} (from the rehearsals)", window::humane(took))),
        end: start
            .zip(duration)
            .and_then(|(start, took)| start.checked_add(took).ok())
            .map(format),
    }
}

/// The earliest a shard of the plan may start: after the plan's start, in its window.
fn first_start(plan: &Plan, now: Timestamp) -> Option<Timestamp> {
    let schedule = plan.schedule.as_ref()?;
    let begin = schedule
        .start_at
        .and_then(|at| Timestamp::new(at.seconds, at.nanos).ok())
        .map_or(now, |at| at.max(now));
    waves::planned_tasks(plan)
        .filter_map(|task| {
            let windows = Windows::parse(&task.windows).ok()?;
            match windows.standing(begin) {
                Standing::Unrestricted | Standing::Open { .. } => Some(begin),
                Standing::Closed { opens } => opens,
            }
        })
        .min()
}

/// Wave after wave, the longest expected run of a shard in it, from the rehearsals' estimates
/// (a shard not rehearsed is expected to take as long as the longest rehearsed one).
fn expected_duration(plan: &Plan) -> Option<Duration> {
    let per_shard = |shard: &str| -> Option<Duration> {
        let rehearsal = plan
            .rehearsals
            .iter()
            .find(|r| r.shard_id == shard && !r.estimates.is_empty())?;
        Some(
            rehearsal
                .estimates
                .iter()
                .filter_map(|estimate| estimate.duration)
                .filter_map(|took| Duration::try_from(took).ok())
                .sum(),
        )
    };
    let longest_rehearsed = plan
        .rehearsals
        .iter()
        .filter_map(|rehearsal| per_shard(&rehearsal.shard_id))
        .max()?;
    Some(
        plan.waves
            .iter()
            .map(|wave| {
                wave.shards
                    .iter()
                    .map(|task| per_shard(&task.shard_id).unwrap_or(longest_rehearsed))
                    .max()
                    .unwrap_or_default()
            })
            .sum(),
    )
}

fn format(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{
        RehearsalSummary, RevisionDuration, Schedule, ShardTask, Wave,
    };

    use super::*;

    fn rehearsed(shard: &str, seconds: &[i64]) -> RehearsalSummary {
        RehearsalSummary {
            shard_id: shard.to_owned(),
            estimates: seconds
                .iter()
                .map(|seconds| RevisionDuration {
                    duration: Some(prost_types::Duration {
                        seconds: *seconds,
                        nanos: 0,
                    }),
                    ..RevisionDuration::default()
                })
                .collect(),
            ..RehearsalSummary::default()
        }
    }

    fn task(shard: &str, windows: &[&str]) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            windows: windows.iter().map(|w| (*w).to_owned()).collect(),
            ..ShardTask::default()
        }
    }

    #[test]
    fn the_schedule_comes_from_the_windows_and_the_rehearsals() {
        let plan = Plan {
            schedule: Some(Schedule {
                windows: vec!["Sat 02:00-04:00 UTC".to_owned()],
                start_at: None,
            }),
            waves: vec![
                Wave {
                    index: 0,
                    shards: vec![task("a", &["Sat 02:00-04:00 UTC"])],
                },
                Wave {
                    index: 1,
                    shards: vec![
                        task("b", &["Sat 02:00-04:00 UTC"]),
                        task("c", &["Fri 23:00-23:30 UTC"]),
                    ],
                },
            ],
            rehearsals: vec![rehearsed("a", &[300, 120]), rehearsed("b", &[60])],
            ..Plan::default()
        };
        // A Friday noon: shard c's own window opens first.
        let friday = "2026-12-04T12:00:00Z".parse().expect("timestamp");
        assert_eq!(
            expected(&plan, friday),
            Expected {
                start: Some("2026-12-04 23:00 UTC".to_owned()),
                // Wave 0: 7m; wave 1: c unrehearsed counts as the longest, 7m.
                duration: Some("about 14m (from the rehearsals)".to_owned()),
                end: Some("2026-12-04 23:14 UTC".to_owned()),
            }
        );
        let unrehearsed = Plan {
            rehearsals: Vec::new(),
            schedule: None,
            ..plan
        };
        assert_eq!(expected(&unrehearsed, friday), Expected::default());
    }
}
