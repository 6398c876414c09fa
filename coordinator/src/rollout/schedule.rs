//! When a plan's shards may run: the plan's start, and each shard's maintenance windows (its
//! own `maintenance-window` label's, else the plan's). The leader dispatches a shard only
//! while it may; the agent stops between revisions when its window closes.

use std::collections::BTreeMap;

use fleetshift_common::proto::v1::{Plan, RevisionDuration, Schedule, ShardTask};
use fleetshift_common::window::{self, Standing, Windows};
use jiff::Timestamp;

use super::RolloutError;

/// The shard label that gives a shard its own windows, separated by `;`.
pub const WINDOW_LABEL: &str = "maintenance-window";

/// The plan's schedule, every window read.
pub fn checked(schedule: Option<Schedule>) -> Result<Option<Schedule>, RolloutError> {
    if let Some(schedule) = &schedule {
        Windows::parse(&schedule.windows)
            .map_err(|error| RolloutError::BadRequest(error.to_string()))?;
    }
    Ok(schedule)
}

/// The windows `shard` runs in: those of its `label` (a value of [`WINDOW_LABEL`]), else the
/// plan's.
pub fn shard_windows(
    shard: &str,
    label: Option<&str>,
    schedule: Option<&Schedule>,
) -> Result<Vec<String>, RolloutError> {
    let Some(label) = label else {
        return Ok(schedule
            .map(|schedule| schedule.windows.clone())
            .unwrap_or_default());
    };
    let own: Vec<String> = label
        .split(';')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(str::to_owned)
        .collect();
    Windows::parse(&own).map_err(|error| {
        RolloutError::BadRequest(format!(
            "shard {shard}: its label {WINDOW_LABEL}: {error}; fix the agent's configuration"
        ))
    })?;
    Ok(own)
}

/// How long each revision is expected to take on `task`'s shard, for its windows: its own
/// rehearsal's estimate where it has one, else the longest the revision took on the plan's
/// shards that ran it. None when the shard has no windows (nothing asks).
pub fn estimates<'t>(
    plan: &Plan,
    task: &ShardTask,
    tasks: impl IntoIterator<Item = &'t ShardTask>,
) -> Vec<RevisionDuration> {
    if task.windows.is_empty() {
        return Vec::new();
    }
    let mut estimates: Vec<RevisionDuration> = plan
        .rehearsals
        .iter()
        .filter(|rehearsal| rehearsal.shard_id == task.shard_id)
        .flat_map(|rehearsal| rehearsal.estimates.iter().cloned())
        .collect();
    let mut fleet: BTreeMap<String, std::time::Duration> = BTreeMap::new();
    for took in tasks.into_iter().flat_map(|other| &other.durations) {
        let Some(duration) = took
            .duration
            .and_then(|d| std::time::Duration::try_from(d).ok())
        else {
            continue;
        };
        let longest = fleet.entry(took.version.clone()).or_default();
        *longest = (*longest).max(duration);
    }
    for (version, longest) in fleet {
        if estimates.iter().any(|estimate| estimate.version == version) {
            continue;
        }
        estimates.push(RevisionDuration {
            version,
            duration: prost_types::Duration::try_from(longest).ok(),
            source: "fleet".to_owned(),
        });
    }
    estimates
}

/// Why a task may not be dispatched yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The plan starts at `at`.
    ForStart { at: Timestamp },
    /// Every window of the shard is closed; the next opens at `opens`, if one ever does.
    ForWindow { opens: Option<Timestamp> },
}

impl Waiting {
    /// `waiting for window (opens in 3h12m)`, as of `now`.
    pub fn describe(&self, now: Timestamp) -> String {
        match self {
            Self::ForStart { at } => format!(
                "waiting for the plan's start (in {})",
                window::humane_until(now, *at)
            ),
            Self::ForWindow { opens: Some(opens) } => format!(
                "waiting for window (opens in {})",
                window::humane_until(now, *opens)
            ),
            Self::ForWindow { opens: None } => {
                "waiting for window (none of the shard's windows opens again)".to_owned()
            }
        }
    }
}

/// Why `task` of `plan` may not run at `now`, if it may not.
pub fn waiting(plan: &Plan, task: &ShardTask, now: Timestamp) -> Option<Waiting> {
    let start = plan
        .schedule
        .as_ref()
        .and_then(|schedule| schedule.start_at)
        .and_then(|at| Timestamp::new(at.seconds, at.nanos).ok());
    if let Some(at) = start.filter(|at| now < *at) {
        return Some(Waiting::ForStart { at });
    }
    // Checked when the plan was made; a window that cannot be read restricts nothing.
    let windows = Windows::parse(&task.windows).unwrap_or_default();
    match windows.standing(now) {
        Standing::Unrestricted | Standing::Open { .. } => None,
        Standing::Closed { opens } => Some(Waiting::ForWindow { opens }),
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::RehearsalSummary;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_task_waits_for_its_plans_start_then_for_its_own_window() {
        let plan = Plan {
            schedule: Some(Schedule {
                windows: vec!["Sat 02:00-04:00 UTC".to_owned()],
                start_at: Some(prost_types::Timestamp {
                    seconds: at("2026-12-05T00:00:00Z").as_second(),
                    nanos: 0,
                }),
            }),
            ..Plan::default()
        };
        let windows =
            shard_windows("s1", None, plan.schedule.as_ref()).expect("the plan's windows");
        let task = ShardTask {
            windows,
            ..ShardTask::default()
        };
        let friday = at("2026-12-04T12:00:00Z");
        let waited = waiting(&plan, &task, friday).expect("waits");
        assert_eq!(
            waited.describe(friday),
            "waiting for the plan's start (in 12h00m)"
        );
        let saturday = at("2026-12-05T01:00:00Z");
        let waited = waiting(&plan, &task, saturday).expect("waits");
        assert_eq!(
            waited.describe(saturday),
            "waiting for window (opens in 1h00m)"
        );
        assert_eq!(waiting(&plan, &task, at("2026-12-05T02:30:00Z")), None);
        let own = ShardTask {
            windows: shard_windows(
                "s2",
                Some("daily 01:00-01:30 UTC; Sun 05:00-06:00 UTC"),
                None,
            )
            .expect("its own"),
            ..ShardTask::default()
        };
        assert_eq!(waiting(&plan, &own, at("2026-12-05T01:10:00Z")), None);
        let broken = shard_windows("s3", Some("Sat 02:00-04:00 Mars/Olympus"), None)
            .expect_err("unreadable");
        assert!(
            broken
                .to_string()
                .contains("shard s3: its label maintenance-window: window"),
            "{broken}"
        );
    }

    fn took(version: &str, seconds: i64, source: &str) -> RevisionDuration {
        RevisionDuration {
            version: version.to_owned(),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            source: source.to_owned(),
        }
    }

    #[test]
    fn a_shards_rehearsal_estimates_first_then_the_longest_the_fleet_took() {
        let plan = Plan {
            rehearsals: vec![RehearsalSummary {
                shard_id: "s1".to_owned(),
                estimates: vec![took("2", 600, "rehearsal")],
                ..RehearsalSummary::default()
            }],
            ..Plan::default()
        };
        let ran = |shard: &str, durations| ShardTask {
            shard_id: shard.to_owned(),
            durations,
            ..ShardTask::default()
        };
        let tasks = [
            ran("s2", vec![took("1", 10, ""), took("2", 30, "")]),
            ran("s3", vec![took("1", 25, "")]),
        ];
        let windowed = ShardTask {
            shard_id: "s1".to_owned(),
            windows: vec!["daily 01:00-02:00 UTC".to_owned()],
            ..ShardTask::default()
        };
        assert_eq!(
            estimates(&plan, &windowed, &tasks),
            [took("2", 600, "rehearsal"), took("1", 25, "fleet")]
        );
        let unrestricted = ShardTask {
            windows: Vec::new(),
            ..windowed
        };
        assert!(estimates(&plan, &unrestricted, &tasks).is_empty());
    }
}
