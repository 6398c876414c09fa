//! A zero-downtime change across a real fleet (coordinator, etcd, agent, three PostgreSQL
//! shards): expand (add a column), backfill (a backfill job), contract (NOT NULL through a
//! validated CHECK, drop the old column). The contract phase starts neither while one shard
//! is still backfilling nor while a session of the old application version is connected to
//! any shard; it starts by itself once both have cleared. An application reads and writes
//! one shard throughout, its statements bounded by a lock timeout, and none fails.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::cli_fleet::{CliFleet, summary};
use super::support::{assert_exit, json};

const SCHEMA: &str = "
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, touched integer NOT NULL DEFAULT 0);
INSERT INTO users (id, email) SELECT g, 'User' || g || '@Example.com' FROM generate_series(1, 3000) AS g;
CREATE TABLE pace (seconds float8 NOT NULL);
INSERT INTO pace VALUES (0);";

/// Each phase's revisions; the backfill waits `pace.seconds` per batch.
fn phased_set() -> tempfile::TempDir {
    fixtures::migrations(&[
        (
            "1_email_lower.up.sql",
            "-- fleetshift:phase expand\nALTER TABLE users ADD COLUMN email_lower text;",
        ),
        (
            "1_email_lower.down.sql",
            "ALTER TABLE users DROP COLUMN email_lower;",
        ),
        (
            "2_fill_email_lower.up.sql",
            "-- fleetshift:phase backfill\n-- fleetshift:backfill key=id batch=100\nUPDATE users SET email_lower = lower(email)\n WHERE email_lower IS NULL AND :batch AND (SELECT pg_sleep(seconds) FROM pace) IS NOT NULL;",
        ),
        (
            "2_fill_email_lower.down.sql",
            "-- fleetshift:nothing-to-undo",
        ),
        (
            "3_email_lower_present.up.sql",
            "-- fleetshift:phase contract\nALTER TABLE users ADD CONSTRAINT users_email_lower_present CHECK (email_lower IS NOT NULL) NOT VALID;",
        ),
        (
            "4_validate_present.up.sql",
            "ALTER TABLE users VALIDATE CONSTRAINT users_email_lower_present;",
        ),
        (
            "5_not_null_drop_email.up.sql",
            "ALTER TABLE users ALTER COLUMN email_lower SET NOT NULL;\nALTER TABLE users DROP CONSTRAINT users_email_lower_present;\nALTER TABLE users DROP COLUMN email;",
        ),
    ])
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("shard pool")
}

/// A session of the old application version on the shard at `url`.
async fn old_application(url: &str) -> PgConnection {
    PgConnectOptions::from_str(url)
        .expect("url")
        .application_name("billing-v1.4")
        .connect()
        .await
        .expect("old application session")
}

/// The status of `version` in the shard's ledger.
async fn status_of(shard: &PgPool, version: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM fleetshift.history WHERE version = $1")
        .bind(version)
        .fetch_optional(shard)
        .await
        .ok()
        .flatten()
}

async fn batches(shard: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(batches), 0) FROM fleetshift.backfills")
        .fetch_one(shard)
        .await
        .unwrap_or(0)
}

/// Whether any shard has applied a contract revision.
async fn contracted(shards: &[PgPool]) -> bool {
    for shard in shards {
        if status_of(shard, "3").await.is_some() {
            return true;
        }
    }
    false
}

async fn plan_status(fleet: &CliFleet, plan: &str) -> Value {
    let output = fleet.cli.alice(&["status", plan, "--output", "json"]).await;
    assert_exit(&output, 0);
    json(&output)
}

/// An application reading and writing one shard until told to stop, each statement under a
/// 5 s lock timeout; how many statements ran, and the first that failed.
struct Application {
    stop: Arc<AtomicBool>,
    ran: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Duration, String>>,
}

impl Application {
    fn start(shard: PgPool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, ran) = (Arc::clone(&stop), Arc::clone(&ran));
            async move {
                let mut slowest = Duration::ZERO;
                let mut id = 1_i64;
                while !stop.load(Ordering::Relaxed) {
                    id = id % 3000 + 7;
                    let started = Instant::now();
                    let mut transaction = shard.begin().await.map_err(|e| e.to_string())?;
                    sqlx::query("SET LOCAL lock_timeout = '5s'")
                        .execute(&mut *transaction)
                        .await
                        .map_err(|error| error.to_string())?;
                    for sql in [
                        "UPDATE users SET touched = touched + 1 WHERE id = $1",
                        "SELECT touched FROM users WHERE id = $1",
                    ] {
                        sqlx::query(sql)
                            .bind(id)
                            .execute(&mut *transaction)
                            .await
                            .map_err(|error| format!("{sql}: {error}"))?;
                    }
                    transaction.commit().await.map_err(|e| e.to_string())?;
                    slowest = slowest.max(started.elapsed());
                    ran.fetch_add(1, Ordering::Relaxed);
                }
                Ok(slowest)
            }
        });
        Self { stop, ran, task }
    }

    async fn stopped(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let slowest = self
            .task
            .await
            .expect("application task")
            .unwrap_or_else(|failure| panic!("the application failed: {failure}"));
        (self.ran.load(Ordering::Relaxed), slowest)
    }
}

/// Alice plans the set over every shard in one wave after the canary (`arguments` after
/// `plan`), rehearses it on a-db0, bob approves and alice starts it; the plan's summary.
async fn started(fleet: &CliFleet, arguments: &[&str]) -> Value {
    let planned = fleet
        .cli
        .alice(
            &[
                &["plan", "--selector", "env=test", "--waves", "100"],
                arguments,
                &["--output", "json"],
            ]
            .concat(),
        )
        .await;
    assert_exit(&planned, 0);
    let summary = summary(&planned);
    let plan = summary["plan"].as_str().expect("id");
    let rehearsed = fleet
        .cli
        .alice(&["rehearse", plan, "--shards", "a-db0"])
        .await;
    assert!(
        matches!(rehearsed.status.code(), Some(0 | 11)),
        "{}",
        fleetshift_tests::binary::printed(&rehearsed)
    );
    assert_exit(&fleet.cli.bob(&["approve", plan]).await, 0);
    assert_exit(&fleet.cli.alice(&["apply", plan]).await, 0);
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_waits_for_every_backfill_and_for_the_old_application_to_leave() {
    let fleet = CliFleet::start_configured(
        "phased",
        SCHEMA,
        3,
        |_| String::new(),
        "",
        vec![("FLEETSHIFT_FACTS_REFRESH".to_owned(), "1s".to_owned())],
    )
    .await;
    let shards: Vec<PgPool> =
        futures_util::future::join_all(fleet.shard_urls.iter().map(|url| pool(url))).await;
    let slow = &shards[2];
    sqlx::query("UPDATE pace SET seconds = 0.5")
        .execute(slow)
        .await
        .expect("slow down the third shard's backfill");
    let application = Application::start(shards[0].clone());
    let old_session = old_application(&fleet.shard_urls[0]).await;

    let set = phased_set();
    let dir = set.path().to_str().expect("utf-8 path");
    let planned = started(
        &fleet,
        &[
            dir,
            "--canary",
            "1",
            "--no-gate",
            "backfill",
            "--gate-when-quiet",
            "contract=billing-v1*@2s",
        ],
    )
    .await;
    let plan = planned["plan"].as_str().expect("id").to_owned();
    let phases = &planned["phases"];
    assert_eq!(phases[0]["phase"], "expand", "{phases}");
    assert_eq!(phases[2]["gate"]["quiet_application"], "billing-v1*");

    // Two shards backfilled, the third still at it: the old application leaves, and still
    // contract does not start while the third shard backfills (several more of its batches,
    // well past the 2 s the gate asks for).
    let two_done = wait_until(Duration::from_secs(120), || async {
        status_of(&shards[0], "2").await.as_deref() == Some("applied")
            && status_of(&shards[1], "2").await.as_deref() == Some("applied")
            && batches(slow).await >= 1
    })
    .await;
    assert!(two_done, "two shards backfill\n{}", fleet.diagnose());
    assert_eq!(status_of(slow, "2").await.as_deref(), Some("started"));
    old_session
        .close()
        .await
        .expect("the old application leaves");
    let mark = batches(slow).await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            batches(slow).await >= mark + 8
        })
        .await,
        "the third shard keeps backfilling"
    );
    assert_eq!(status_of(slow, "2").await.as_deref(), Some("started"));
    assert!(
        !contracted(&shards).await,
        "contract waits for every backfill"
    );

    // The old application comes back on another shard; the third shard finishes: every shard
    // is backfilled, and contract waits for the old application, saying so.
    let old_again = old_application(&fleet.shard_urls[1]).await;
    sqlx::query("UPDATE pace SET seconds = 0")
        .execute(slow)
        .await
        .expect("let the third shard finish");
    let waiting = wait_until(Duration::from_secs(120), || async {
        let status = plan_status(&fleet, &plan).await;
        status["phases"][2]["gate"]["waiting_for"]
            .as_str()
            .is_some_and(|waits| waits.contains("billing-v1*") && waits.contains("on a-db1"))
    })
    .await;
    assert!(
        waiting,
        "the gate waits for the old application\n{}",
        plan_status(&fleet, &plan).await
    );
    for shard in &shards {
        assert_eq!(status_of(shard, "2").await.as_deref(), Some("applied"));
    }
    assert!(
        !contracted(&shards).await,
        "contract waits for the old application"
    );

    // It leaves: the gate opens by itself and contract runs everywhere.
    old_again
        .close()
        .await
        .expect("the old application leaves again");
    let done = wait_until(Duration::from_secs(120), || async {
        plan_status(&fleet, &plan).await["state"] == "succeeded"
    })
    .await;
    let status = plan_status(&fleet, &plan).await;
    assert!(done, "{status}\n{}", fleet.diagnose());
    assert_eq!(status["phases"][2]["gate"]["opened_by"], "condition");
    for shard in &shards {
        assert_eq!(status_of(shard, "5").await.as_deref(), Some("applied"));
        let (nullable, email): (String, i64) = sqlx::query_as(
            "SELECT (SELECT is_nullable FROM information_schema.columns
                     WHERE table_name = 'users' AND column_name = 'email_lower'),
                    (SELECT count(*) FROM information_schema.columns
                     WHERE table_name = 'users' AND column_name = 'email')",
        )
        .fetch_one(shard)
        .await
        .expect("columns");
        assert_eq!((nullable.as_str(), email), ("NO", 0));
    }
    let (ran, slowest) = application.stopped().await;
    assert!(ran > 0);
    eprintln!("application: {ran} transactions, slowest {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_opens_the_contract_gate_and_rollback_stops_at_the_contract_phase() {
    let fleet =
        CliFleet::start_configured("phased_gate", SCHEMA, 2, |_| String::new(), "", Vec::new())
            .await;
    let shards: Vec<PgPool> =
        futures_util::future::join_all(fleet.shard_urls.iter().map(|url| pool(url))).await;
    let set = fixtures::migrations(&[
        (
            "1_email_lower.up.sql",
            "-- fleetshift:phase expand\nALTER TABLE users ADD COLUMN email_lower text;",
        ),
        (
            "1_email_lower.down.sql",
            "ALTER TABLE users DROP COLUMN email_lower;",
        ),
        (
            "2_drop_email.up.sql",
            "-- fleetshift:phase contract\nALTER TABLE users DROP COLUMN email;",
        ),
    ]);
    let dir = set.path().to_str().expect("utf-8 path");
    let planned = started(&fleet, &[dir]).await;
    let plan = planned["plan"].as_str().expect("id").to_owned();

    // Expanded everywhere, the contract gate waits for an approver, and says so.
    let waiting = wait_until(Duration::from_secs(120), || async {
        plan_status(&fleet, &plan).await["phases"][1]["gate"]["waiting_for"]
            .as_str()
            .is_some_and(|waits| waits.contains("fleetshift gate open"))
    })
    .await;
    assert!(
        waiting,
        "{}\n{}",
        plan_status(&fleet, &plan).await,
        fleet.diagnose()
    );
    for shard in &shards {
        assert_eq!(status_of(shard, "1").await.as_deref(), Some("applied"));
        assert_eq!(status_of(shard, "2").await, None);
    }
    let human = fleet.cli.alice(&["status", &plan]).await;
    let printed = fleetshift_tests::binary::printed(&human);
    assert!(
        printed.contains("phase expand (to 1): done")
            && printed.contains("phase contract (to 2): gate waits for an approver"),
        "{printed}"
    );

    // An operator may not open it; an approver must say why.
    let refused = fleet
        .cli
        .alice(&["gate", "open", &plan, "contract", "--reason", "deployed"])
        .await;
    assert_exit(&refused, 9);
    let unexplained = fleet
        .cli
        .bob(&["gate", "open", &plan, "contract", "--reason", " "])
        .await;
    assert_exit(&unexplained, 2);
    let unknown = fleet
        .cli
        .bob(&["gate", "open", &plan, "cleanup", "--reason", "deployed"])
        .await;
    assert_exit(&unknown, 2);
    assert!(
        fleetshift_tests::binary::printed(&unknown).contains("has phases expand, contract"),
        "{}",
        fleetshift_tests::binary::printed(&unknown)
    );
    let opened = fleet
        .cli
        .bob(&[
            "gate",
            "open",
            &plan,
            "contract",
            "--reason",
            "billing v2 deployed",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&opened, 0);
    assert_eq!(
        json(&opened)["phases"][1]["gate"]["opened_by"],
        "spiffe://fleet.example/operator/bob"
    );
    let done = wait_until(Duration::from_secs(120), || async {
        plan_status(&fleet, &plan).await["state"] == "succeeded"
    })
    .await;
    assert!(done, "{}", plan_status(&fleet, &plan).await);
    for shard in &shards {
        assert_eq!(status_of(shard, "2").await.as_deref(), Some("applied"));
    }

    // The contract phase ran: a rollback reverts it only with its down scripts, and says so.
    let rollback = fleet.cli.alice(&["rollback", &plan]).await;
    assert_exit(&rollback, 2);
    let printed = fleetshift_tests::binary::printed(&rollback);
    assert!(
        printed.contains("ran its contract phase, which only its down scripts revert")
            && printed.contains("to 1, stay applied")
            && printed.contains("2_drop_email"),
        "{printed}"
    );
}
