//! Onboarding a new shard: replaying crates.io's 285 revisions on an empty database against
//! seeding it from a schema baseline of crates.io's last version (one fenced transaction:
//! the baseline's schema, 285 ledger rows, the fingerprint), each on a fresh database of the
//! same throwaway server in the same run, alternating which goes first. Both end with the same
//! schema (checked by fingerprint) and a ledger at the last version. Taking and verifying the
//! baseline happen once, before, and are reported apart.
//!
//! `cargo bench -p fleetshift-tests --bench baseline_onboarding [-- ROUNDS]` (default 5).
//! Target: seeding at least 10x faster than replaying.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::engine::{PostgresShard, ShardEngine, Timeouts};
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::schema::Fingerprint;
use fleetshift_common::schema_baseline::{self, SchemaBaseline};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::bench::numbers;
use fleetshift_tests::fixtures;
use fleetshift_tests::postgres::PostgresCluster;
use tokio::runtime::Runtime;

/// Seeding's median against replaying's, at least this many times faster.
const TARGET: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
enum Way {
    Replay,
    Seed,
    /// The baseline's SQL alone in one transaction on a plain connection: no ledger, no
    /// fence, no checks; the floor of any seeding.
    Floor,
}

fn main() -> anyhow::Result<()> {
    let [rounds] = numbers(["ROUNDS"], [5])?;
    let runtime = Runtime::new()?;
    let cluster = PostgresCluster::start()?;
    let set = MigrationSet::load(&fixtures::crates_io(), None)?;
    let last = set
        .revisions
        .last()
        .context("an empty set")?
        .version
        .to_string();
    let source = runtime.block_on(cluster.create_database("source"))?;
    let taken = Instant::now();
    let (baseline, expected) = runtime.block_on(async {
        let (_, fingerprint) = apply(&DatabaseUrl::new(source.clone()), &set, None).await?;
        let pg_dump = cluster.binaries().join("pg_dump");
        let baseline =
            schema_baseline::take(&DatabaseUrl::new(source.clone()), &set, &last, &pg_dump).await?;
        anyhow::Ok((baseline, fingerprint))
    })?;
    let take_time = taken.elapsed();
    let verifying = Instant::now();
    let server = DatabaseUrl::new(cluster.admin_url("postgres"));
    let verification = runtime.block_on(schema_baseline::verify(&server, &set, &baseline))?;
    if !verification.holds() {
        bail!("the baseline does not verify: {verification:?}");
    }
    let verify_time = verifying.elapsed();
    let mut replays = Vec::new();
    let mut seeds = Vec::new();
    let mut floors = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Way::Replay, Way::Seed, Way::Floor]
        } else {
            [Way::Floor, Way::Seed, Way::Replay]
        };
        for way in order {
            let name = format!("onboard_{round}_{way:?}").to_lowercase();
            let url = DatabaseUrl::new(runtime.block_on(cluster.create_database(&name))?);
            let (took, fingerprint) = runtime.block_on(async {
                match way {
                    Way::Replay => apply(&url, &set, None).await,
                    Way::Seed => apply(&url, &set, Some(&baseline)).await,
                    Way::Floor => floor(&url, &baseline).await,
                }
            })?;
            if fingerprint != expected {
                bail!("{way:?} left another schema: {fingerprint} against {expected}");
            }
            match way {
                Way::Replay => replays.push(took),
                Way::Seed => seeds.push(took),
                Way::Floor => floors.push(took),
            }
        }
    }
    let replay = median(&mut replays);
    let seed = median(&mut seeds);
    let floor = median(&mut floors);
    let speedup = replay.as_secs_f64() / seed.as_secs_f64();
    println!(
        "crates.io ({} revisions), median of {rounds}: replaying {:.0} ms, seeding from the baseline {:.0} ms: {speedup:.1}x faster (target: {TARGET}x); the baseline's SQL alone in one transaction {:.0} ms (replaying is {:.1}x that floor); taking the baseline {:.0} ms, verifying it {:.0} ms ({} bytes of schema SQL)",
        set.revisions.len(),
        ms(replay),
        ms(seed),
        ms(floor),
        replay.as_secs_f64() / floor.as_secs_f64(),
        ms(take_time),
        ms(verify_time),
        baseline.schema_sql.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "baseline_onboarding",
            "revisions": set.revisions.len(),
            "rounds": rounds,
            "replay_ms": ms(replay),
            "seed_ms": ms(seed),
            "floor_ms": ms(floor),
            "speedup": speedup,
            "target": TARGET,
            "take_ms": ms(take_time),
            "verify_ms": ms(verify_time),
        })
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Brings the empty database at `url` to the set's last version, by replaying it or by
/// seeding it from `baseline`; how long that took (connecting aside) and the schema's
/// fingerprint.
async fn apply(
    url: &DatabaseUrl,
    set: &MigrationSet,
    baseline: Option<&SchemaBaseline>,
) -> anyhow::Result<(Duration, Fingerprint)> {
    let shard = PostgresShard::connect(url, Timeouts::default()).await?;
    let identity = Identity {
        agent_id: "bench".to_owned(),
        plan_id: None,
        fence_token: None,
    };
    let executor = Executor::new(&shard, identity, ExecutorSettings::default());
    let started = Instant::now();
    match baseline {
        Some(baseline) => {
            executor.seed(set, baseline, "bench").await?;
        }
        None => {
            executor.up(set, &Request::default()).await?;
        }
    }
    let took = started.elapsed();
    Ok((took, shard.schema_snapshot().await?.fingerprint()))
}

/// The baseline's SQL alone, in one transaction on a plain connection; how long that took
/// (connecting aside) and the schema's fingerprint.
async fn floor(
    url: &DatabaseUrl,
    baseline: &SchemaBaseline,
) -> anyhow::Result<(Duration, Fingerprint)> {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(url.expose()).await?;
    let started = Instant::now();
    let mut transaction = connection.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(baseline.schema_sql.clone()))
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    let took = started.elapsed();
    connection.close().await?;
    let shard = PostgresShard::connect(url, Timeouts::default()).await?;
    Ok((took, shard.schema_snapshot().await?.fingerprint()))
}
