//! Post-migration validation in a rollout across real processes: etcd, a coordinator replica
//! and an agent serving PostgreSQL shards, driven with the `fleetshift` CLI.
//!
//! 1. A data migration whose steps delete rows only some shards have (`--verify-data
//!    orders:id,total --auto-rollback`). The shard without such rows passes its validation
//!    (counts, checksums equal). Where a transactional revision deletes them, it is rolled back
//!    whole inside its transaction, the agent reverts the revision before it, and every row is
//!    still there. Where a revision run outside a transaction deletes them, the validation
//!    after the run fails and the agent reverts every revision of the run with its down
//!    scripts (which cannot bring the row back: the reason in-transaction checks exist).
//!    `status`, its JSON and the maintenance notice show the reports.
//! 2. A shard hand-edited after the plan was made reaches the target with a schema that
//!    differs from the canary's: it fails, naming the extra index.

use fleetshift_tests::fixtures;

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};

const ORDERS: &str = "
    CREATE TABLE orders (id bigint PRIMARY KEY, region text, total numeric NOT NULL);
    INSERT INTO orders SELECT g, 'eu', g * 10 FROM generate_series(1, 20) g;";

/// The shard in `plan`'s JSON whose id is `shard`.
fn shard<'a>(plan: &'a serde_json::Value, shard: &str) -> &'a serde_json::Value {
    plan["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .find(|task| task["shard"] == shard)
        .unwrap_or_else(|| panic!("no {shard} in {plan:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_that_deletes_one_shards_rows_is_refused_there_and_rolled_back() {
    let fleet = CliFleet::start_shards("checked", ORDERS, 3, |_| String::new(), Vec::new()).await;
    let admin = |database: &'static str| async {
        fleet
            .database
            .cluster
            .admin_pool(database)
            .await
            .expect("admin pool")
    };
    let (zero, odd) = (admin("checked_1").await, admin("checked_2").await);
    for (pool, row) in [(&zero, "(21, 'eu', 0)"), (&odd, "(21, NULL, 5)")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO orders VALUES {row}"
        )))
        .execute(pool)
        .await
        .expect("the shard's own row");
    }
    let migrations = fixtures::migrations(&[
        ("1_note.up.sql", "ALTER TABLE orders ADD COLUMN note text;"),
        ("1_note.down.sql", "ALTER TABLE orders DROP COLUMN note;"),
        (
            "2_cleanup.up.sql",
            "UPDATE orders SET region = upper(region);\nDELETE FROM orders WHERE region IS NULL;",
        ),
        (
            "2_cleanup.down.sql",
            "UPDATE orders SET region = lower(region);",
        ),
        (
            "3_purge.up.sql",
            "-- no-transaction\nDELETE FROM orders WHERE total = 0;",
        ),
        ("3_purge.down.sql", "SELECT 1;"),
    ]);
    let (plan_id, applied) = fleet
        .cli
        .planned_and_applied(&[
            support::dir(&migrations),
            "--verify-data",
            "orders:id,total",
            "--auto-rollback",
            "--failure-threshold",
            "3",
        ])
        .await;
    let ended = summary(&applied);
    assert_eq!(ended["state"], "finished-with-failures", "{ended:#}");

    let refused = shard(&ended, "a-db2");
    assert_eq!(refused["state"], "rolled back", "{refused:#}");
    let reason = refused["rollback"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("the revision changed data the plan says no revision may change: --verify-data orders:id,total: the data changed: 21 row(s) before, 20 after"),
        "{reason}"
    );
    assert_eq!(refused["rollback"]["reverted_to"], "base");
    let rows_and_note = |pool| async move {
        sqlx::query_as::<_, (i64, bool)>(
            "SELECT count(*), EXISTS (SELECT 1 FROM information_schema.columns
                                      WHERE table_name = 'orders' AND column_name = 'note')
             FROM orders",
        )
        .fetch_one(pool)
        .await
        .expect("rows")
    };
    assert_eq!(
        rows_and_note(&odd).await,
        (21, false),
        "every row is there; revision 1 reverted"
    );

    let purged = shard(&ended, "a-db1");
    assert_eq!(purged["state"], "rolled back", "{purged:#}");
    let reason = purged["rollback"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("post-migration validation failed: --verify-data orders:id,total: the data changed: 21 row(s) before, 20 after"),
        "{reason}"
    );
    assert_eq!(
        purged["rollback"]["revisions"],
        serde_json::json!(["3_purge", "2_cleanup", "1_note"])
    );
    assert_eq!(purged["validation"]["passed"], false);
    assert_eq!(
        rows_and_note(&zero).await,
        (20, false),
        "reverted by the down scripts, which cannot bring the row back"
    );

    let passed = shard(&ended, "a-db0");
    assert_eq!(passed["state"], "succeeded", "{passed:#}");
    let report = &passed["validation"];
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(
        report["row_counts"],
        serde_json::json!([{"table": "orders", "before": 20, "after": 20, "estimated": false}])
    );
    assert_eq!(report["checksums"][0]["equal"], true, "{report:#}");
    assert_eq!(
        report["checksums"][0]["columns"],
        serde_json::json!(["id", "total"])
    );

    let status = fleet.cli.alice(&["status", &plan_id]).await;
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(printed.contains("post-migration validation:"), "{printed}");
    assert!(
        printed.contains("a-db0: passed; rows orders 20 → 20; 1/1 checksum(s) equal"),
        "{printed}"
    );
    let notice = fleet.cli.alice(&["plan", "notice", &plan_id]).await;
    assert_exit(&notice, 0);
    let notice = String::from_utf8_lossy(&notice.stdout);
    assert!(
        notice.contains("## Post-migration validation")
            && notice.contains("- data checksum of orders:id,total before and after")
            && notice.contains("- Results: 1 of 2 shard(s) passed; `a-db1` failed: --verify-data orders:id,total: the data changed"),
        "{notice}"
    );
    zero.close().await;
    odd.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_ends_with_another_schema_than_the_canary_fails_with_the_difference() {
    let users = "CREATE TABLE users (id bigint PRIMARY KEY, email text);";
    let fleet = CliFleet::start_shards("compared", users, 2, |_| String::new(), Vec::new()).await;
    let migrations =
        fixtures::migrations(&[("1_note.sql", "ALTER TABLE users ADD COLUMN note text;")]);
    let planned = fleet
        .cli
        .alice(&["plan", support::dir(&migrations), "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let plan = summary(&planned);
    let plan_id = plan["plan"].as_str().expect("id").to_owned();
    let shards = plan["shards"].as_array().expect("shards");
    let canary = shards
        .iter()
        .find(|task| task["wave"] == 0)
        .and_then(|task| task["shard"].as_str())
        .expect("a canary");
    let (other, database) = if canary == "a-db0" {
        ("a-db1", "compared_1")
    } else {
        ("a-db0", "compared")
    };
    // A hotfix on one shard after the plan was made: nobody has seen it yet.
    let edited = fleet
        .database
        .cluster
        .admin_pool(database)
        .await
        .expect("admin pool");
    sqlx::raw_sql("CREATE INDEX users_email_idx ON users (email)")
        .execute(&edited)
        .await
        .expect("hand edit");
    edited.close().await;

    let applied = fleet.cli.approved_and_applied(&plan_id).await;
    let ended = summary(&applied);
    assert_eq!(shard(&ended, canary)["state"], "succeeded", "{ended:#}");
    let failed = shard(&ended, other);
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(failed["current_version"], "1");
    let error = failed["error"].as_str().expect("error");
    assert!(
        error.contains(&format!("differs from canary shard {canary}'s"))
            && error.contains("at version 1: index public.users_email_idx: extra")
            && error.contains("the revisions stand"),
        "{error}"
    );
    let report = &failed["validation"];
    assert_eq!(report["passed"], false, "{report:#}");
    assert_eq!(report["canary"]["shard"], canary);
}
