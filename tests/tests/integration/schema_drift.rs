//! Fleet-wide schema drift across real processes: etcd, a coordinator replica and an agent
//! serving three PostgreSQL shards built from one schema. After a hand edit on one shard, seen
//! by the agent's periodic schema check, the replica's webhook endpoint (a real HTTP server on
//! loopback) receives `shard.schema_changed` for that shard, the leader's
//! `fleetshift_schema_drift_shards` goes from 0 to 1 and `schema drift` names that shard with the exact
//! differences and exits 3; `schema show` prints its snapshot and `schema diff` compares it
//! with another shard. A plan refuses the shard by name, and plans it with a recorded reason.

use std::time::Duration;

use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{fixtures, scrape};

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, assert_exit};
use crate::integration::webhooks;

const USERS: &str = "CREATE TABLE users (id bigint PRIMARY KEY, email text, note text);";

/// The leader's `fleetshift_schema_drift_shards`.
fn drift_gauge(fleet: &CliFleet) -> Option<f64> {
    scrape::sample(
        &scrape::metrics(&fleet.telemetry.coordinator),
        "fleetshift_schema_drift_shards",
    )
}

/// Each shard's reported fingerprint, by shard id.
async fn fingerprints(fleet: &CliFleet) -> Vec<(String, Option<String>)> {
    let listed = fleet.cli.alice(&["shards", "--output", "json"]).await;
    assert_exit(&listed, 0);
    support::json(&listed)["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| {
            (
                shard["shard"].as_str().expect("id").to_owned(),
                shard["schema_fingerprint"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The fingerprint `shard` reports now.
async fn now_of(fleet: &CliFleet, shard: &str) -> Option<String> {
    fingerprints(fleet)
        .await
        .into_iter()
        .find(|(id, _)| id == shard)
        .and_then(|(_, fingerprint)| fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_shard_is_named_with_each_difference() {
    // Facts every second, each shard's schema read again every second: the periodic check
    // is what sees the hand edit.
    let every_second = ["FLEETSHIFT_FACTS_REFRESH", "FLEETSHIFT_SCHEMA_CHECK"]
        .map(|name| (name.to_owned(), "1s".to_owned()))
        .to_vec();
    let (url, mut received) = webhooks::endpoint().await;
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "hook-secret").expect("secret");
    let hook = format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{}\"\nevents = [\"shard.schema_changed\"]\n",
        secret.path().display()
    );
    let fleet =
        CliFleet::start_configured("drift", USERS, 3, |_| String::new(), &hook, every_second).await;
    let reported = wait_until(Duration::from_secs(30), || async {
        fingerprints(&fleet)
            .await
            .iter()
            .all(|(_, fingerprint)| fingerprint.is_some())
    })
    .await;
    assert!(reported, "no fingerprints\n{}", fleet.diagnose());
    let calm = fleet
        .cli
        .alice(&["schema", "drift", "--output", "json"])
        .await;
    assert_exit(&calm, 0);
    let calm = support::json(&calm);
    assert_eq!(calm["versions"][0]["version"], "base", "{calm:#}");
    assert_eq!(calm["versions"][0]["majority_shards"], 3, "{calm:#}");

    assert_eq!(drift_gauge(&fleet), Some(0.0));
    let edited = fleet
        .database
        .cluster
        .admin_pool("drift_2")
        .await
        .expect("admin pool");
    sqlx::raw_sql(
        "CREATE INDEX users_email_idx ON users (email);
         ALTER TABLE users ALTER COLUMN note TYPE varchar(200);",
    )
    .execute(&edited)
    .await
    .expect("hand edit");
    edited.close().await;
    let before = fingerprints(&fleet).await;
    let seen = wait_until(Duration::from_secs(30), || async {
        let now = fingerprints(&fleet).await;
        now.len() == 3 && now[2].1.is_some() && now[2] != before[2]
    })
    .await;
    assert!(seen, "the edit never showed\n{}", fleet.diagnose());
    let (_, body) = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the webhook arrives")
        .expect("endpoint");
    let changed: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(changed["event"], "shard.schema_changed", "{changed}");
    assert_eq!(changed["detail"]["shard"], "a-db2", "{changed}");
    assert_eq!(changed["detail"]["version"], "base", "{changed}");
    assert_eq!(
        changed["detail"]["after"],
        serde_json::json!(now_of(&fleet, "a-db2").await)
    );

    let counted = wait_until(Duration::from_secs(30), || async {
        drift_gauge(&fleet) == Some(1.0)
    })
    .await;
    assert!(
        counted,
        "the leader's gauge never counted the drifted shard"
    );
    let drifted = fleet
        .cli
        .alice(&["schema", "drift", "--output", "json"])
        .await;
    assert_exit(&drifted, 3);
    let drifted = support::json(&drifted);
    let version = &drifted["versions"][0];
    assert_eq!(version["majority_shards"], 2, "{drifted:#}");
    let outliers = version["outliers"].as_array().expect("outliers");
    assert_eq!(outliers.len(), 1, "{drifted:#}");
    assert_eq!(outliers[0]["shard"], "a-db2");
    assert_eq!(
        outliers[0]["differences"],
        serde_json::json!([
            "column public.users.note: type character varying(200) vs text",
            "index public.users_email_idx: extra"
        ])
    );
    let human = fleet.cli.alice(&["schema", "drift"]).await;
    assert_exit(&human, 3);
    let printed = String::from_utf8_lossy(&human.stdout);
    assert!(printed.contains("DRIFTED a-db2"), "{printed}");

    let shown = fleet
        .cli
        .alice(&["schema", "show", "--shard", "a-db2"])
        .await;
    assert_exit(&shown, 0);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("index public.users_email_idx\n  definition: CREATE INDEX users_email_idx ON public.users USING btree (email)\n"),
        "{shown}"
    );
    let compared = fleet
        .cli
        .alice(&[
            "schema", "diff", "--shard", "a-db2", "--shard", "a-db0", "--output", "json",
        ])
        .await;
    assert_exit(&compared, 3);
    assert_eq!(
        support::json(&compared)["differences"],
        outliers[0]["differences"]
    );
    let same = fleet
        .cli
        .alice(&["schema", "diff", "--shard", "a-db0", "--shard", "a-db1"])
        .await;
    assert_exit(&same, 0);
    plans_refuse_the_drifted_shard(&fleet).await;
    let unknown = fleet
        .cli
        .alice(&["schema", "show", "--shard", "nowhere"])
        .await;
    assert_exit(&unknown, 2);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no shard nowhere in the fleet"));
}

/// A plan over the fleet refuses `a-db2` by name; with a reason it plans it and keeps the
/// reason.
async fn plans_refuse_the_drifted_shard(fleet: &CliFleet) {
    let migrations = fixtures::migrations(&[("1_orders.sql", "CREATE TABLE orders (id bigint);")]);
    let directory = support::dir(&migrations);
    let refused = fleet.cli.alice(&["plan", directory]).await;
    assert_exit(&refused, 2);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("1 shard(s) differ from the fleet's schema")
            && said.contains("a-db2 (version base")
            && said.contains("--allow-drift-shards"),
        "{said}"
    );
    let allowed = fleet
        .cli
        .alice(&[
            "plan",
            directory,
            "--allow-drift-shards",
            "hotfix 4711 stays",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&allowed, 0);
    let plan = summary(&allowed);
    assert_eq!(plan["drift_allowed"][0]["shard"], "a-db2", "{plan:#}");
    assert_eq!(plan["drift_allowed"][0]["reason"], "hotfix 4711 stays");
}
