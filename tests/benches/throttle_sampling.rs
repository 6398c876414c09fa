//! What throttling costs: 100 shards of one host (simulated on one PostgreSQL server, as an
//! agent with 100 shards would sample them) each waiting on replica lag and active sessions,
//! so each samples its shard every second, the most the throttle ever does. Reported: the
//! statements per second the samples add on the server (its commit counter) and the CPU the
//! sampling takes in this process, against the same window with nothing sampling, measured in
//! the same run.
//!
//! `cargo bench -p fleetshift-tests --bench throttle_sampling [SHARDS] [SECONDS]`

use std::time::{Duration, Instant};

use fleetshift_agent::assignment::ShardThrottle;
use fleetshift_common::engine::CountedPool;
use fleetshift_common::executor::{SAMPLE_EVERY, Throttle};
use fleetshift_common::proto::v1::ThrottlePolicy;
use fleetshift_tests::bench::{self, clock_ticks, cpu_time};
use fleetshift_tests::postgres::PostgresCluster;

/// Statements the server has committed in the database so far.
async fn commits(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    // A fresh snapshot of the statistics each time.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?)
}

/// Statements per second on the server and CPU seconds per second here, over `window`,
/// while `work` runs.
async fn measure(
    observer: &sqlx::PgPool,
    window: Duration,
    work: impl std::future::Future<Output = ()>,
) -> anyhow::Result<(f64, f64)> {
    let ticks = clock_ticks()?;
    let (commits_before, cpu_before, started) = (
        commits(observer).await?,
        cpu_time(std::process::id(), ticks)?,
        Instant::now(),
    );
    tokio::select! {
        () = work => {}
        () = tokio::time::sleep(window) => {}
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The observer's own two reads are in the count; both windows have them.
    let statements = (commits(observer).await? - commits_before) as f64 / elapsed;
    let cpu = (cpu_time(std::process::id(), ticks)? - cpu_before).as_secs_f64() / elapsed;
    Ok((statements, cpu))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let [shards, seconds] = bench::numbers(["shards", "seconds"], [100, 10])?;
    let cluster = PostgresCluster::start()?;
    let url = cluster.create_database("sampled").await?;
    let observer = cluster.admin_pool("sampled").await?;
    let pool = CountedPool::new(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await?,
    );
    let policy = ThrottlePolicy {
        max_replication_lag: prost_types::Duration::try_from(Duration::from_secs(5)).ok(),
        max_active_sessions_percent: 80,
        ..ThrottlePolicy::default()
    };
    let throttles: Vec<ShardThrottle> = (0..shards)
        .filter_map(|_| ShardThrottle::new(Some(&policy), &pool))
        .collect();
    let window = Duration::from_secs(u64::try_from(seconds)?);

    let (idle_statements, idle_cpu) = measure(&observer, window, std::future::pending()).await?;
    let sampling = async {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        loop {
            ticks.tick().await;
            futures_util::future::join_all(throttles.iter().map(|throttle| throttle.busy())).await;
        }
    };
    let (statements, cpu) = measure(&observer, window, sampling).await?;
    println!("{shards} shards sampled every {SAMPLE_EVERY:?} for {seconds}s:");
    println!(
        "  idle:     {idle_statements:>8.1} statements/s on the server, {:>6.2}% of a core here",
        idle_cpu * 100.0
    );
    println!(
        "  sampling: {statements:>8.1} statements/s on the server, {:>6.2}% of a core here",
        cpu * 100.0
    );
    println!(
        "  added:    {:.2} statements/s per shard, {:.3}% of a core per shard",
        (statements - idle_statements) / shards as f64,
        (cpu - idle_cpu) * 100.0 / shards as f64
    );
    Ok(())
}
