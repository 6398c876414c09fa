use std::time::Duration;

use fleetshift_common::proto::v1::{ErrorDetail, ErrorKind, Throttled, Wave};

use super::*;

fn task(shard: &str, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: shard.to_owned(),
        state: state.into(),
        ..ShardTask::default()
    }
}

#[test]
fn failed_and_rolled_back_shards_are_listed_first_in_wave_order() {
    let plan = Plan {
        waves: vec![
            Wave {
                index: 0,
                shards: vec![
                    task("a", ShardState::Succeeded),
                    task("b", ShardState::Failed),
                ],
            },
            Wave {
                index: 1,
                shards: vec![
                    task("c", ShardState::RolledBack),
                    task("d", ShardState::Succeeded),
                ],
            },
        ],
        ..Plan::default()
    };
    let order: Vec<&str> = failed_first(&plan)
        .map(|task| task.shard_id.as_str())
        .collect();
    assert_eq!(order, ["b", "c", "a", "d"]);
}

#[test]
fn interruptions_are_told_beside_the_error() {
    let now = jiff::Timestamp::now();
    let problem = |task: &ShardTask| super::problem(&Plan::default(), task, now);
    let mut retried = task("a", ShardState::Succeeded);
    retried.interruptions = 2;
    assert_eq!(problem(&retried), "(interrupted 2x, ran again)");
    let mut failed = task("b", ShardState::Failed);
    failed.interruptions = 1;
    failed.error = Some(ErrorDetail {
        kind: ErrorKind::Failed.into(),
        message: "syntax error".to_owned(),
    });
    assert_eq!(problem(&failed), "syntax error (interrupted 1x)");
    assert_eq!(problem(&task("c", ShardState::Succeeded)), "");
}

#[test]
fn an_outage_is_told_when_lost_and_when_back() {
    let lost = DatabaseOutage {
        server: "10.0.0.5:5432".to_owned(),
        step: "applying revisions".to_owned(),
        detail: "Connection refused".to_owned(),
        waited: prost_types::Duration::try_from(Duration::ZERO).ok(),
        recovered: false,
        bound: prost_types::Duration::try_from(Duration::from_secs(120)).ok(),
    };
    assert_eq!(
        outage_line(&lost),
        "lost its database server 10.0.0.5:5432 while applying revisions (Connection refused); waiting up to 120.0s"
    );
    let back = DatabaseOutage {
        recovered: true,
        detail: String::new(),
        waited: prost_types::Duration::try_from(Duration::from_millis(800)).ok(),
        ..lost
    };
    assert_eq!(
        outage_line(&back),
        "database server 10.0.0.5:5432 back after 800ms; applying revisions goes on"
    );
}

#[test]
fn a_pending_shard_of_a_running_plan_says_what_it_waits_for() {
    let at = |text: &str| text.parse::<jiff::Timestamp>().expect("timestamp");
    let plan = Plan {
        state: PlanState::Running.into(),
        ..Plan::default()
    };
    let waiting = ShardTask {
        windows: vec!["Sat 02:00-04:00 UTC".to_owned()],
        ..task("a", ShardState::Pending)
    };
    // 2026-12-04 is a Friday.
    assert_eq!(
        problem(&plan, &waiting, at("2026-12-04T22:48:00Z")),
        "waiting for window (opens in 3h12m)"
    );
    assert_eq!(problem(&plan, &waiting, at("2026-12-05T03:00:00Z")), "");
    let ended = Plan {
        state: PlanState::Cancelled.into(),
        ..plan
    };
    assert_eq!(problem(&ended, &waiting, at("2026-12-04T22:48:00Z")), "");
}

#[test]
fn a_running_shard_waiting_on_a_throttle_says_on_what_and_for_how_long() {
    let plan = Plan {
        state: PlanState::Running.into(),
        ..Plan::default()
    };
    let held = ShardTask {
        throttled: Some(Throttled {
            signal: "fleet throttle".to_owned(),
            detail: "fleet throttle t1 set by alice (incident 42)".to_owned(),
            waited: Some(prost_types::Duration {
                seconds: 192,
                nanos: 0,
            }),
            resumed: false,
        }),
        ..task("a", ShardState::Running)
    };
    assert_eq!(
        problem(&plan, &held, jiff::Timestamp::now()),
        "throttled: fleet throttle t1 set by alice (incident 42) (for 3m)"
    );
}
