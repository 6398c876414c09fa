//! The concurrency caps and the failure threshold on a real fleet: one agent serving four
//! databases on each of two PostgreSQL servers, driven with the CLI. Each revision records
//! when it ran (on the servers' shared clock) and a sampler watches `pg_stat_activity`, so the
//! caps are observed on the databases rather than taken from the coordinator's word:
//! - the per-wave cap bounds the shards running at once, and is reached;
//! - the per-host cap counts shards per database server (by its system identifier), so two
//!   servers behind one agent run twice the cap together;
//! - a failure threshold of 3 lets a rollout with 2 failed shards run every other shard.
//!
//! `fleetshift shards` shows each shard's host and server, and selects by them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetshift_tests::fixtures;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::{self, Database, assert_exit};

/// Databases per server.
const PER_SERVER: usize = 4;

/// How often the sampler reads `pg_stat_activity` (each probe runs for a second).
const SAMPLING: std::time::Duration = std::time::Duration::from_millis(20);

/// A revision that records its own run in `runs` and takes a second.
const TIMED: &str = "INSERT INTO runs (revision, started) VALUES ({v}, clock_timestamp());
SELECT pg_sleep(1), 'fleetshift cap probe';
UPDATE runs SET ended = clock_timestamp() WHERE revision = {v};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_count_per_wave_and_per_database_server_and_failures_up_to_the_threshold() {
    let schema =
        "CREATE TABLE runs (revision int PRIMARY KEY, started timestamptz, ended timestamptz);";
    let second = second_server(schema).await;
    let extra = second.shards.clone();
    let fleet = CliFleet::start_shards(
        "caps",
        schema,
        PER_SERVER,
        move |_| extra.clone(),
        Vec::new(),
    )
    .await;
    let cli = &fleet.cli;
    let second_address = shards_show_their_servers(&fleet).await;

    let migrations = fixtures::migrations(&[
        ("1_first.sql", &TIMED.replace("{v}", "1")),
        ("2_second.sql", &TIMED.replace("{v}", "2")),
        ("3_clash.sql", "CREATE TABLE clash (id int);"),
    ]);
    let directory = support::dir(&migrations);
    let plan = |target: &'static str, caps: [&'static str; 4]| {
        let [per_wave, per_host, threshold, canary] = caps;
        let arguments = [
            directory,
            "--target",
            target,
            "--canary",
            canary,
            "--waves",
            "100",
            "--max-concurrency",
            per_wave,
            "--max-per-host",
            per_host,
            "--failure-threshold",
            threshold,
        ];
        arguments.map(str::to_owned)
    };

    // The per-wave cap: 3 of the second wave's 7 shards at once, whatever server.
    let arguments = plan("1", ["3", "8", "1", "1"]);
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let (_, applied) = cli.planned_and_applied(&arguments).await;
    assert_exit(&applied, 0);
    let runs = recorded_runs(&fleet, &second, 1).await;
    let together = most_at_once(runs.values().flatten());
    assert_eq!(
        together, 3,
        "the wave ran {together} at once under a cap of 3"
    );

    // The per-host cap: 2 per server, so 4 at once across the two servers of one agent.
    let sampler = Sampler::start(&[&fleet.database, &second.database]);
    let arguments = plan("2", ["16", "2", "1", "1"]);
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let (_, applied) = cli.planned_and_applied(&arguments).await;
    assert_exit(&applied, 0);
    let observed = sampler.stop();
    assert_eq!(
        observed,
        [2, 2],
        "most shards of each server seen running in pg_stat_activity"
    );
    let runs = recorded_runs(&fleet, &second, 2).await;
    for (server, runs) in &runs {
        let together = most_at_once(runs.iter());
        assert!(together <= 2, "{server} ran {together} shards at once");
    }
    let together = most_at_once(runs.values().flatten());
    assert!(
        together > 2,
        "the cap counted per agent, not per server: {together} at once in all"
    );

    // The failure threshold: two shards after the canary cannot take revision 3; with a
    // threshold of 3 the rollout goes on and every other shard takes it.
    for url in [&fleet.shard_urls[1], &second.urls[1]] {
        let admin = PgPool::connect(url).await.expect("shard");
        sqlx::raw_sql("CREATE TABLE clash (id int)")
            .execute(&admin)
            .await
            .expect("clash");
        admin.close().await;
    }
    let arguments = plan("3", ["16", "8", "3", "1"]);
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let (_, applied) = cli.planned_and_applied(&arguments).await;
    let ended = summary(&applied);
    assert_eq!(ended["state"], "finished-with-failures", "{ended}");
    let states: BTreeMap<&str, &str> = ended["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|task| {
            (
                task["shard"].as_str().unwrap_or_default(),
                task["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let failed: Vec<&str> = states
        .iter()
        .filter(|(_, state)| **state == "failed")
        .map(|(shard, _)| *shard)
        .collect();
    assert_eq!(failed, ["a-db1", "b-db1"], "{states:?}");
    assert!(
        states
            .iter()
            .filter(|(shard, _)| !failed.contains(shard))
            .all(|(_, state)| *state == "succeeded"),
        "{states:?}"
    );
    let selected = cli
        .bob(&[
            "shards",
            "--selector",
            &format!("fleetshift.io/server={second_address}"),
            "--output",
            "json",
        ])
        .await;
    assert_exit(&selected, 0);
    let selected = support::json(&selected);
    assert_eq!(
        selected["shards"].as_array().map(Vec::len),
        Some(PER_SERVER),
        "{selected}"
    );
}

/// A second PostgreSQL server with [`PER_SERVER`] databases prepared with `schema`, and the
/// agent's `[[shards]]` tables for them (`b-db0`, …).
struct SecondServer {
    database: Database,
    urls: Vec<String>,
    shards: String,
}

async fn second_server(schema: &str) -> SecondServer {
    let database = support::database("caps_b").await;
    let mut urls = vec![database.url.clone()];
    for index in 1..PER_SERVER {
        let name = format!("caps_b_{index}");
        urls.push(
            database
                .cluster
                .create_database(&name)
                .await
                .expect("database"),
        );
    }
    let mut shards = String::new();
    for (index, url) in urls.iter().enumerate() {
        let admin = PgPool::connect(url).await.expect("admin");
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema.to_owned()))
            .execute(&admin)
            .await
            .expect("schema");
        admin.close().await;
        shards.push_str(&format!(
            "[[shards]]\nid = \"b-db{index}\"\nlabels = {{ env = \"test\" }}\ndatabase_url = \"{url}\"\n"
        ));
    }
    SecondServer {
        database,
        urls,
        shards,
    }
}

/// Asserts that `shards` shows each shard's host and server (the two servers' identities
/// differ, one server's databases share one); the second server's address.
async fn shards_show_their_servers(fleet: &CliFleet) -> String {
    let listed = fleet.cli.bob(&["shards", "--output", "json"]).await;
    assert_exit(&listed, 0);
    let listed = support::json(&listed);
    let shards = listed["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2 * PER_SERVER, "{listed}");
    let server = |shard: &Value| shard["server"].clone();
    let identity = |shard: &Value| {
        server(shard)["system_identifier"]
            .as_str()
            .expect("system identifier")
            .to_owned()
    };
    for shard in shards {
        assert!(
            shard["host"]["hostname"]
                .as_str()
                .is_some_and(|name| !name.is_empty())
                && shard["host"]["cpus"].as_u64() >= Some(1)
                && server(shard)["version"]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
            "{shard}"
        );
    }
    let (first, second): (Vec<&Value>, Vec<&Value>) = shards.iter().partition(|shard| {
        shard["shard"]
            .as_str()
            .is_some_and(|id| id.starts_with("a-"))
    });
    assert!(
        first
            .iter()
            .all(|shard| identity(shard) == identity(first[0]))
    );
    assert!(
        second
            .iter()
            .all(|shard| identity(shard) == identity(second[0]))
    );
    assert_ne!(identity(first[0]), identity(second[0]));
    server(second[0])["address"]
        .as_str()
        .expect("address")
        .to_owned()
}

/// Each server's recorded runs of `revision`: (started, ended) in seconds since the epoch.
async fn recorded_runs(
    fleet: &CliFleet,
    second: &SecondServer,
    revision: i32,
) -> BTreeMap<&'static str, Vec<(f64, f64)>> {
    let mut runs = BTreeMap::new();
    for (server, urls) in [("first", &fleet.shard_urls), ("second", &second.urls)] {
        let mut recorded = Vec::new();
        for url in urls {
            let pool = PgPool::connect(url).await.expect("shard");
            let run: (f64, f64) = sqlx::query_as(
                "SELECT extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8
                 FROM runs WHERE revision = $1",
            )
            .bind(revision)
            .fetch_one(&pool)
            .await
            .expect("recorded run");
            pool.close().await;
            recorded.push(run);
        }
        runs.insert(server, recorded);
    }
    runs
}

/// The most of `runs` that overlap at one instant.
fn most_at_once<'r>(runs: impl Iterator<Item = &'r (f64, f64)>) -> usize {
    let mut edges: Vec<(f64, i32)> = runs
        .flat_map(|(started, ended)| [(*started, 1), (*ended, -1)])
        .collect();
    // An end sorts before a start at the same instant: touching runs do not overlap.
    edges.sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.cmp(&right.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or_default()
}

/// Watches each server's `pg_stat_activity` for running cap probes, keeping the most seen.
struct Sampler {
    most: Vec<Arc<AtomicUsize>>,
    stop: CancellationToken,
}

impl Sampler {
    fn start(servers: &[&Database]) -> Self {
        let stop = CancellationToken::new();
        let mut most = Vec::new();
        for server in servers {
            let seen = Arc::new(AtomicUsize::new(0));
            most.push(Arc::clone(&seen));
            let (admin, stop) = (server.admin.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let running: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE state = 'active' AND pid <> pg_backend_pid()
                           AND query LIKE '%fleetshift cap' || ' probe%'",
                    )
                    .fetch_one(&admin)
                    .await
                    .unwrap_or_default();
                    seen.fetch_max(
                        usize::try_from(running).unwrap_or_default(),
                        Ordering::Relaxed,
                    );
                    tokio::time::sleep(SAMPLING).await;
                }
            });
        }
        Self { most, stop }
    }

    /// The most seen running at once on each server.
    fn stop(self) -> Vec<usize> {
        self.stop.cancel();
        self.most
            .iter()
            .map(|seen| seen.load(Ordering::Relaxed))
            .collect()
    }
}
