//! Messages beyond tonic's default 4 MiB, across real processes: a set with a 5 MiB revision
//! (the size of the reference data some histories carry) goes from the CLI to the
//! coordinator in its plan request and from the coordinator to the agent in its assignment,
//! and is applied.

use fleetshift_tests::fixtures;

use super::cli_fleet::CliFleet;
use super::support::{self, assert_exit};

/// Over tonic's default limit of 4 MiB.
const LARGE: usize = 5 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_larger_than_four_mebibytes_is_planned_delivered_and_applied() {
    let fleet = CliFleet::start("large", "CREATE TABLE notes (id int);", |_| String::new()).await;
    let text = "fleet ".repeat(LARGE / 6 + 1);
    let migrations = fixtures::migrations(&[(
        "1_described.sql",
        &format!("COMMENT ON TABLE notes IS '{text}';"),
    )]);
    let (plan, applied) = fleet
        .cli
        .planned_and_applied(&[support::dir(&migrations)])
        .await;
    assert_exit(&applied, 0);
    let length: i32 = sqlx::query_scalar("SELECT length(obj_description('notes'::regclass))")
        .fetch_one(&fleet.database.admin)
        .await
        .expect("the comment");
    assert_eq!(
        usize::try_from(length).expect("a length"),
        text.len(),
        "plan {plan}"
    );
}
