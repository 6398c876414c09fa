//! What an operator sees through the CLI: drift and its recorded override, dry runs,
//! failures recorded with file and line, and exit codes scripts can trust.

use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{binary, fixtures};
use serde_json::Value;

use super::support::{self, Database, dir, json};

#[tokio::test]
async fn drift_blocks_up_until_overridden_with_a_recorded_reason() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("drift").await;
    let directory = fixtures::migrations(&[("1_a.sql", "CREATE TABLE a (id integer);")]);
    let up = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));

    fixtures::write(directory.path(), "1_a.sql", "CREATE TABLE a (id bigint);");
    fixtures::write(directory.path(), "2_b.sql", "CREATE TABLE b (id integer);");
    let status = binary::run(
        &url,
        &[
            "migrate",
            "status",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    let drifted = &json(&status)["status"]["drifted"];
    assert_eq!(drifted.as_array().map(Vec::len), Some(1), "{drifted}");
    let verify = binary::run(&url, &["migrate", "verify", "--dir", dir(&directory)]);
    support::assert_exit(&verify, 3);

    let refused = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    support::assert_exit(&refused, 3);
    assert!(
        binary::printed(&refused).contains("1_a: applied"),
        "{}",
        binary::printed(&refused)
    );
    let b_exists: bool = sqlx::query_scalar("SELECT to_regclass('b') IS NOT NULL")
        .fetch_one(&admin)
        .await
        .expect("catalog");
    assert!(!b_exists, "nothing runs while drift is unresolved");

    let overridden = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--allow-drift",
            "type change reviewed in CHG-42",
        ],
    );
    assert!(
        overridden.status.success(),
        "{}",
        binary::printed(&overridden)
    );
    let (action, reason): (String, String) =
        sqlx::query_as("SELECT action, reason FROM fleetshift.audit WHERE version = '1'")
            .fetch_one(&admin)
            .await
            .expect("audit row");
    assert_eq!(action, "allow-drift");
    assert!(
        reason.starts_with("type change reviewed in CHG-42"),
        "{reason}"
    );
}

#[tokio::test]
async fn dry_run_prints_the_sql_and_changes_nothing() {
    let cluster = PostgresCluster::start().expect("cluster");
    let url = cluster.create_database("dryrun").await.expect("database");
    let directory = fixtures::migrations(&[
        (
            "1_a.sql",
            "CREATE TABLE a (id integer);\nINSERT INTO a VALUES (1);",
        ),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);",
        ),
    ]);
    let output = binary::run(
        &url,
        &["migrate", "up", "--dir", dir(&directory), "--dry-run"],
    );
    assert!(output.status.success(), "{}", binary::printed(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("BEGIN;\nSET LOCAL lock_timeout = '2000ms';"),
        "{text}"
    );
    assert!(
        text.contains("CREATE TABLE a (id integer);\nINSERT INTO a VALUES (1);"),
        "{text}"
    );
    assert!(text.contains("-- 2_index (outside a transaction"), "{text}");
    let plan = json(&binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--dry-run",
            "--output",
            "json",
        ],
    ));
    assert_eq!(plan["revisions"][1]["transactional"], false);
    let status = json(&binary::run(
        &url,
        &[
            "migrate",
            "status",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    ));
    assert_eq!(
        status["status"]["current_version"],
        Value::Null,
        "a dry run applies nothing"
    );
}

#[tokio::test]
async fn failed_statement_is_rolled_back_recorded_and_located() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("failing").await;
    let directory = fixtures::migrations(&[
        ("1_a.sql", "CREATE TABLE a (id integer);"),
        (
            "2_broken.sql",
            "CREATE TABLE b (id integer);\n\nALTER TABLE b ADD COLUMN oops nonexistent_type;",
        ),
    ]);
    let output = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    support::assert_exit(&output, 1);
    let printed = binary::printed(&output);
    assert!(printed.contains("2_broken.sql:3"), "{printed}");
    assert!(printed.contains("SQLSTATE 42704"), "{printed}");
    assert!(printed.contains("recorded as failed"), "{printed}");
    let b_exists: bool = sqlx::query_scalar("SELECT to_regclass('b') IS NOT NULL")
        .fetch_one(&admin)
        .await
        .expect("catalog");
    assert!(
        !b_exists,
        "the failed revision's first statement was rolled back"
    );
    let status = json(&binary::run(
        &url,
        &[
            "migrate",
            "status",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    ));
    assert_eq!(status["status"]["revisions"][0]["status"], "applied");
    assert_eq!(status["status"]["revisions"][1]["status"], "failed");
    assert!(
        status["status"]["revisions"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("2_broken.sql:3"))
    );

    let error = json(&binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    ));
    assert_eq!(error["error"]["kind"], "Failed");
}

#[tokio::test]
async fn exit_codes_tell_bad_input_unreachable_and_fenced_out_apart() {
    let cluster = PostgresCluster::start().expect("cluster");
    let url = cluster.create_database("codes").await.expect("database");
    let bad = fixtures::migrations(&[
        ("1_a.sql", "SELECT 1;"),
        ("01_again.sql", "SELECT 2;"),
        ("2x_b.up.sql", "SELECT 3;"),
    ]);
    let output = binary::run(&url, &["migrate", "up", "--dir", dir(&bad)]);
    support::assert_exit(&output, 2);
    let printed = binary::printed(&output);
    assert!(
        printed.contains("duplicate version")
            && printed.contains("2x_b.up.sql: named like an up/down migration script but the version `2x` is not a number"),
        "{printed}"
    );

    let good = fixtures::migrations(&[
        ("1_a.sql", "CREATE TABLE a (id integer);"),
        ("2_b.sql", "CREATE TABLE b (id integer);"),
    ]);
    let closed = format!(
        "postgres://postgres:x@127.0.0.1:{}/codes",
        cluster.port.wrapping_add(1)
    );
    let output = binary::run(&closed, &["migrate", "status", "--dir", dir(&good)]);
    support::assert_exit(&output, 6);
    assert!(binary::printed(&output).contains("cannot reach the database"));

    let claimed = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&good),
            "--to",
            "1",
            "--fence-token",
            "9",
        ],
    );
    assert!(claimed.status.success(), "{}", binary::printed(&claimed));
    let stale = binary::run(
        &url,
        &["migrate", "up", "--dir", dir(&good), "--fence-token", "3"],
    );
    support::assert_exit(&stale, 4);
    assert!(binary::printed(&stale).contains("fenced out"));

    let unknown_target = binary::run(&url, &["migrate", "up", "--dir", dir(&good), "--to", "77"]);
    support::assert_exit(&unknown_target, 7);

    let irreversible = binary::run(&url, &["migrate", "down", "--dir", dir(&good)]);
    support::assert_exit(&irreversible, 2);
    assert!(binary::printed(&irreversible).contains("revisions without a down script"));
}

#[tokio::test]
async fn unfinished_revision_that_cannot_be_repeated_is_refused_then_resolved() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("unfinished").await;
    let directory = fixtures::migrations(&[
        ("1_t.sql", "CREATE TABLE t (id integer);"),
        (
            "2_backfill.sql",
            "-- no-transaction\nINSERT INTO t VALUES (1);\nINSERT INTO not_yet_there VALUES (1);",
        ),
    ]);
    let failed = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    support::assert_exit(&failed, 1);
    assert!(
        binary::printed(&failed).contains("1 of 2 statements finished"),
        "{}",
        binary::printed(&failed)
    );

    // The first INSERT ran; repeating it would insert twice, so fleetshift will not guess.
    sqlx::query("CREATE TABLE not_yet_there (id integer)")
        .execute(&admin)
        .await
        .expect("fix");
    let refused = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    support::assert_exit(&refused, 7);
    let printed = binary::printed(&refused);
    assert!(
        printed.contains("2_backfill.sql:2") && printed.contains("migrate resolve"),
        "{printed}"
    );

    sqlx::query("INSERT INTO not_yet_there VALUES (1)")
        .execute(&admin)
        .await
        .expect("finish by hand");
    let resolved = binary::run(
        &url,
        &[
            "migrate",
            "resolve",
            "--dir",
            dir(&directory),
            "--version",
            "2",
            "--as",
            "applied",
            "--reason",
            "finished by hand, CHG-9",
        ],
    );
    assert!(resolved.status.success(), "{}", binary::printed(&resolved));
    let status = json(&binary::run(
        &url,
        &[
            "migrate",
            "status",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    ));
    assert_eq!(status["status"]["revisions"][1]["status"], "applied");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&admin)
        .await
        .expect("rows");
    assert_eq!(rows, 1, "nothing was repeated");
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM fleetshift.audit WHERE action = 'resolve-applied'")
            .fetch_one(&admin)
            .await
            .expect("audit");
    assert_eq!(reason, "finished by hand, CHG-9");
}

/// Runs `fleetshift demo --output json` with `arguments`; checks that it succeeded with
/// `agents` shards at the newest version, canary first, with live progress; returns the stale
/// holder's refusal and the plan id.
fn run_demo(arguments: &[&str], agents: usize) -> (String, String) {
    let output = std::process::Command::new(binary::fleetshift())
        .args(["demo", "--output", "json"])
        .args(arguments)
        .output()
        .expect("run the demo");
    assert!(output.status.success(), "{}", binary::printed(&output));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let summary = lines
        .iter()
        .find(|line| line.get("shards").is_some())
        .expect("a summary");
    assert_eq!(summary["state"], "succeeded", "{summary}");
    let shards = summary["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), agents);
    assert!(
        shards
            .iter()
            .all(|shard| shard["current_version"] == "4" && shard["state"] == "succeeded"),
        "{summary}"
    );
    // Every shard left the same schema, and its task says which.
    let left: std::collections::BTreeSet<&str> = shards
        .iter()
        .filter_map(|shard| shard["schema"]["after"].as_str())
        .collect();
    assert_eq!(left.len(), 1, "one schema after the rollout: {summary}");
    assert!(
        shards
            .iter()
            .all(|shard| shard["schema"]["before"] != shard["schema"]["after"]),
        "{summary}"
    );
    assert_eq!(
        summary["risk"]["level"], "LOW",
        "the plan is assessed and explained: {summary}"
    );
    assert!(
        summary["risk"]["factors"]
            .as_array()
            .is_some_and(|factors| factors.iter().any(|factor| factor["name"] == "locks")),
        "{summary}"
    );
    assert!(
        shards
            .iter()
            .all(|shard| shard["metrics"]["revisions_run"] == 4
                && shard["metrics"]["statements"] == 5
                && shard["metrics"]["duration_ms"].is_u64()),
        "each shard's run is kept with its task: {summary}"
    );
    let waves: std::collections::BTreeSet<u64> = shards
        .iter()
        .filter_map(|shard| shard["wave"].as_u64())
        .collect();
    assert_eq!(waves.len(), 2, "canary, then the rest");
    assert!(
        lines
            .iter()
            .any(|line| line["progress"] == "revision_finished"),
        "live progress reached the watcher"
    );
    let fencing = lines.last().expect("output");
    let refusal = fencing["stale_holder"]["refusal"]
        .as_str()
        .filter(|text| text.contains("fenced out"))
        .unwrap_or_else(|| panic!("the stale holder is fenced out: {fencing}"));
    let plan = summary["plan"].as_str().expect("plan id");
    (refusal.to_owned(), plan.to_owned())
}

/// The README's first command: a coordinator and agents over mutual TLS in one process roll
/// the bundled set out canary first; every shard ends at the newest version, then a stale
/// holder is fenced out.
#[test]
fn demo_rolls_out_over_mtls_and_fences_out_the_stale_holder() {
    let (refusal, _) = run_demo(&["--agents", "3"], 3);
    assert!(
        refusal.contains("shard shard-001 (") && refusal.contains("shard-001.db)"),
        "named by id and file: {refusal}"
    );
    assert!(!refusal.contains("sqlite:"), "never by URL: {refusal}");
}

/// The same demo with its shards in throwaway PostgreSQL clusters (nine agents: two clusters)
/// and the fleet's state in a real etcd; the clusters are gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_postgres_and_etcd_keeps_its_state_in_etcd_and_leaves_no_cluster() {
    use fleetshift_coordinator::store::{EtcdStore, Store, keys};

    let etcd = fleetshift_testkit::etcd::EtcdServer::start().expect("etcd");
    let endpoint = etcd.endpoint.clone();
    let (refusal, plan) = tokio::task::spawn_blocking(move || {
        run_demo(&["--agents", "9", "--postgres", "--etcd", &endpoint], 9)
    })
    .await
    .expect("demo");
    assert!(!refusal.contains("postgres://"), "never by URL: {refusal}");
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("store");
    let stored = store.read(&keys::plan(&plan)).await.expect("read the plan");
    assert!(stored.is_some(), "the plan is kept in etcd");
    let port = refusal
        .split("(127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|port| port.parse::<u16>().ok())
        .expect("the shard's port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the demo's PostgreSQL cluster is stopped at exit"
    );
}

#[test]
fn verify_without_a_database_checks_the_files_alone() {
    let directory =
        fixtures::migrations(&[("1_a.sql", "SELECT 1;"), ("notes.txt", "not a revision")]);
    let output = std::process::Command::new(binary::fleetshift())
        .args([
            "migrate",
            "verify",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ])
        .env_remove("FLEETSHIFT_DATABASE_URL")
        .output()
        .expect("run verify");
    assert!(output.status.success(), "{}", binary::printed(&output));
    let verified = json(&output);
    assert_eq!(verified["revisions"], 1);
    assert_eq!(verified["ignored"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn ctrl_c_stops_between_revisions_with_everything_done_recorded() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use fleetshift_tests::postgres::fleetshift_running;
    use fleetshift_tests::wait::wait_until;

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("interrupted").await;
    let directory = fixtures::migrations(&[
        (
            "1_slow.sql",
            "CREATE TABLE slow (id integer);\nSELECT pg_sleep(1.5);",
        ),
        ("2_next.sql", "CREATE TABLE next (id integer);"),
    ]);
    let child = Command::new(binary::fleetshift())
        .args(["migrate", "up", "--dir", dir(&directory)])
        .env("FLEETSHIFT_DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            fleetshift_running(&admin, "pg_sleep").await.is_some()
        })
        .await
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("SIGINT");
    assert!(interrupted.success());
    let output = child.wait_with_output().expect("exit");
    support::assert_exit(&output, 8);
    assert!(
        binary::printed(&output).contains("stopped before revision 2_next"),
        "{}",
        binary::printed(&output)
    );
    let status = json(&binary::run(
        &url,
        &[
            "migrate",
            "status",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    ));
    assert_eq!(
        status["status"]["revisions"][0]["status"], "applied",
        "the running revision finished"
    );
    assert_eq!(
        status["status"]["revisions"][1]["status"],
        Value::Null,
        "the next one never started"
    );
}
