//! What the benchmarks share: their numeric arguments (cargo bench passes `--bench` too) and
//! the large database some of them work on.

use std::time::Instant;

use anyhow::Context;

use crate::postgres::PostgresCluster;

/// Bytes per generated row, roughly, on disk.
const ROW_BYTES: u64 = 280;

/// The command line's numbers, in order, each with its default; `names` say what they mean
/// (for the error when one is not a number).
pub fn numbers<const N: usize>(
    names: [&str; N],
    defaults: [usize; N],
) -> anyhow::Result<[usize; N]> {
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    let mut numbers = defaults;
    for ((number, name), text) in numbers.iter_mut().zip(names).zip(&given) {
        *number = text
            .parse()
            .with_context(|| format!("{name} is a number, not {text:?}"))?;
    }
    Ok(numbers)
}

/// Fills `database` of `cluster` with about `mib` MiB of rows in one table, `events`; the
/// database's size.
pub async fn events_database(
    cluster: &PostgresCluster,
    database: &str,
    mib: u64,
) -> anyhow::Result<u64> {
    let pool = cluster.admin_pool(database).await?;
    let rows = mib * 1024 * 1024 / ROW_BYTES;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text, body text, at timestamptz);
         INSERT INTO events
           SELECT g, 'kind-' || (g % 17), md5(g::text) || repeat(md5((g * 7)::text), 6), now()
           FROM generate_series(1, {rows}) g;
         ANALYZE events;"
    )))
    .execute(&pool)
    .await?;
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    println!("generated {rows} rows in {:.1?}", started.elapsed());
    Ok(u64::try_from(bytes)?)
}

/// The CPU time (user and system) process `pid` has used.
pub fn cpu_time(pid: u32, ticks_per_second: f64) -> anyhow::Result<std::time::Duration> {
    stat_cpu_time(&format!("/proc/{pid}/stat"), ticks_per_second)
}

/// The CPU time (user + system) one thread of this process has used so far.
pub fn thread_cpu_time(tid: u32, ticks_per_second: f64) -> anyhow::Result<std::time::Duration> {
    stat_cpu_time(&format!("/proc/self/task/{tid}/stat"), ticks_per_second)
}

/// The calling thread's id, as `/proc/self/task/` names it.
pub fn thread_id() -> anyhow::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .context("a thread id in /proc/thread-self")?;
    Ok(tid.to_string_lossy().parse()?)
}

/// User + system time from a `/proc/.../stat` file.
fn stat_cpu_time(path: &str, ticks_per_second: f64) -> anyhow::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let after_name = stat.rsplit_once(") ").context("unexpected /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11).context("utime")?.parse()?;
    let system: f64 = fields.get(12).context("stime")?.parse()?;
    Ok(std::time::Duration::from_secs_f64(
        (user + system) / ticks_per_second,
    ))
}

/// The kernel's clock ticks per second, which `/proc/<pid>/stat` counts in.
pub fn clock_ticks() -> anyhow::Result<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}
