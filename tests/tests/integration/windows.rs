//! Maintenance windows on a real fleet (etcd, a coordinator replica and an agent process on
//! PostgreSQL, driven with the CLI), with real short windows: one that opens seconds after the
//! plan is applied and closes twelve seconds later, and a second one after a gap. Before the
//! first opens, `status` says the shard waits for it and nothing has run; revisions run in the
//! first, the run stops between revisions at its close (the revision running then finishes),
//! and the shard goes on in the second without that counting as an interruption. No revision
//! starts outside a window. The notice names the windows and the first start.

use std::time::Duration;

use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use jiff::{SignedDuration, Timestamp};

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};

/// A one-off window `from` for `seconds`, as `--window` takes it.
fn window(from: Timestamp, seconds: i64) -> String {
    format!("{}/{seconds}s UTC", from.strftime("%Y-%m-%dT%H:%M:%S"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_runs_only_in_its_windows_and_goes_on_in_the_next() {
    let fleet = CliFleet::start("windowed", "CREATE TABLE ticks (n int);", |_| String::new()).await;
    // Six revisions of three seconds each: more than the first window holds.
    let files: Vec<(String, String)> = (1..=6)
        .map(|n| {
            (
                format!("{n}_tick.sql"),
                format!("SELECT pg_sleep(3);\nINSERT INTO ticks VALUES ({n});"),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, sql)| (name.as_str(), sql.as_str()))
        .collect();
    let migrations = fixtures::migrations(&borrowed);
    // Whole seconds, as `--window` is written: the windows open exactly when this test thinks.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now");
    let first = now + SignedDuration::from_secs(8);
    let first_closes = first + SignedDuration::from_secs(12);
    let second = first_closes + SignedDuration::from_secs(8);
    let second_closes = second + SignedDuration::from_secs(40);
    let planned = fleet
        .cli
        .alice(&[
            "plan",
            support::dir(&migrations),
            "--window",
            &window(first, 12),
            "--window",
            &window(second, 40),
            "--output",
            "json",
        ])
        .await;
    assert_exit(&planned, 0);
    let plan = summary(&planned);
    let plan_id = plan["plan"].as_str().expect("id").to_owned();
    let notice = fleet.cli.alice(&["plan", "notice", &plan_id]).await;
    assert_exit(&notice, 0);
    let notice = String::from_utf8_lossy(&notice.stdout);
    assert!(
        notice.contains(&format!(
            "- Start: {}",
            first.strftime("%Y-%m-%d %H:%M UTC")
        )) && notice.contains(&format!(
            "- Maintenance windows: {}; {}",
            window(first, 12),
            window(second, 40)
        )),
        "{notice}"
    );
    assert_exit(&fleet.cli.bob(&["approve", &plan_id]).await, 0);
    let applied = fleet.cli.alice(&["apply", &plan_id]).await;
    assert_exit(&applied, 0);
    // A watch that follows the plan to its end, from before the first window.
    let watch = ["watch", plan_id.as_str()];
    let watching = fleet.cli.alice(&watch);
    let checking = async {
        let status = fleet
            .cli
            .alice(&["status", &plan_id, "--output", "json"])
            .await;
        let shard = &summary(&status)["shards"][0];
        assert_eq!(shard["state"], "pending", "{shard:#}");
        let waiting = shard["waiting"].as_str().expect("what it waits for");
        assert!(
            waiting.starts_with("waiting for window (opens in"),
            "{waiting}"
        );
        let human = fleet.cli.alice(&["status", &plan_id]).await;
        assert!(
            String::from_utf8_lossy(&human.stdout).contains("waiting for window (opens in"),
            "{}",
            fleetshift_tests::binary::printed(&human)
        );

        wait_until(Duration::from_secs(120), || async {
            let status = fleet
                .cli
                .alice(&["status", &plan_id, "--output", "json"])
                .await;
            summary(&status)["state"] == "succeeded"
        })
        .await
    };
    let (watched, ended) = tokio::join!(watching, checking);
    assert!(ended, "the plan never finished\n{}", fleet.diagnose());
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.contains("a-db0 waiting for window (opens in"),
        "{watched}"
    );
    let status = fleet
        .cli
        .alice(&["status", &plan_id, "--output", "json"])
        .await;
    let shard = &summary(&status)["shards"][0];
    assert_eq!(
        shard["interruptions"], 0,
        "a window's close is no interruption: {shard:#}"
    );

    let started: Vec<(String, f64)> = sqlx::query_as(
        "SELECT version, extract(epoch FROM started_at)::float8 FROM fleetshift.history
         ORDER BY started_at",
    )
    .fetch_all(&fleet.database.admin)
    .await
    .expect("history");
    assert_eq!(started.len(), 6, "{started:?}");
    let seconds = |at: Timestamp| at.as_millisecond() as f64 / 1000.0;
    let inside = |at: f64, opens: Timestamp, closes: Timestamp| {
        // The database's clock and this one are the same machine's; a little slack for
        // rounding.
        at >= seconds(opens) - 0.5 && at < seconds(closes) + 0.5
    };
    let in_first = started
        .iter()
        .filter(|(_, at)| inside(*at, first, first_closes))
        .count();
    let in_second = started
        .iter()
        .filter(|(_, at)| inside(*at, second, second_closes))
        .count();
    assert!(
        in_first >= 1 && in_second >= 1,
        "the run was split: {started:?}"
    );
    assert_eq!(
        in_first + in_second,
        6,
        "every revision started inside a window: {started:?}"
    );
}
