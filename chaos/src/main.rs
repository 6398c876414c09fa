//! `fleetshift-chaos`: a seeded chaos campaign against a real fleet on loopback.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleetshift_chaos::campaign::{self, Options};
use fleetshift_chaos::fleet::Size;
use fleetshift_chaos::schedule::{self, FaultClass, Shape};
use fleetshift_chaos::workload;
use fleetshift_common::duration;

/// Exit status when the campaign ran and found a violation.
const VIOLATIONS: u8 = 1;
/// Exit status when the campaign could not run (a part did not start, the fleet never
/// answered).
const NOT_RUN: u8 = 3;

/// Runs a chaos campaign: a real fleet on loopback (etcd, three coordinator replicas,
/// PostgreSQL clusters, one agent per cluster) rolls a migration set forward and back under
/// faults drawn from the seed, while an application reads and writes; after every plan a
/// checker reads every shard's ledger and witnesses, the store and the event stream, and
/// reports what broke the rules. Exit status: 0 no violation, 1 violations found, 2 bad
/// arguments, 3 the campaign could not run.
#[derive(Debug, Parser)]
#[command(name = "fleetshift-chaos", version)]
struct Arguments {
    /// The schedule's seed; the same seed replays the same faults (default: from the clock,
    /// printed first).
    #[arg(long, env = "FLEETSHIFT_CHAOS_SEED")]
    seed: Option<u64>,
    /// Rounds: a forward plan under faults, perhaps a rollback after it.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Fault classes to draw from, comma-separated: kill, stop, pg-restart, etcd, operator,
    /// partition, disk-full, clock (partitions run each agent in a network namespace and
    /// disk-full puts its backups on a disk of their own: both need root; with disk-full every
    /// plan requires a backup; clock runs each replica under libfaketime).
    #[arg(long, value_delimiter = ',', default_values = ["kill", "stop", "pg-restart", "etcd", "operator", "partition", "disk-full", "clock"])]
    faults: Vec<FaultClass>,
    /// At most this many faults per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    faults_per_round: u16,
    /// etcd members: 1, or 3 (a quorum survives one member's fault).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=5))]
    etcd_members: u16,
    /// PostgreSQL clusters, each served by its own agent.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    clusters: u16,
    /// Shard databases per cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    databases: u16,
    /// Rows in each shard's `accounts` table (index builds on it take longer with more).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// The plans' lock timeout; application reads may wait this long plus 50 ms at p99.
    #[arg(long, default_value = "200ms", value_parser = duration::parse)]
    lock_timeout: Duration,
    /// A plan not ended this long after its last fault healed is stuck (a violation).
    #[arg(long, default_value = "3m", value_parser = duration::parse)]
    stuck_after: Duration,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the fleet's files and logs go (a fresh directory inside it); kept when a
    /// violation is found or with --keep.
    #[arg(long, env = "FLEETSHIFT_CHAOS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the fleet's files and logs even when no violation is found.
    #[arg(long)]
    keep: bool,
    /// Print the rounds and faults the seed draws, and exit without starting a fleet.
    #[arg(long)]
    schedule_only: bool,
    /// The directory holding `fleetshift` and `fleetshift-agent` (default: this binary's).
    #[arg(long, env = "FLEETSHIFT_CHAOS_BINARIES")]
    binaries: Option<PathBuf>,
    /// Damage the first shard behind fleetshift's back before the first round is checked (a
    /// second witness of revision 1, as if it ran twice), to see the checker catch it.
    #[arg(long)]
    tamper: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleetshift-chaos: cannot start the runtime: {error}");
            return ExitCode::from(NOT_RUN);
        }
    };
    match runtime.block_on(run(arguments)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fleetshift-chaos: the campaign could not run: {error:#}");
            ExitCode::from(NOT_RUN)
        }
    }
}

async fn run(arguments: Arguments) -> anyhow::Result<ExitCode> {
    let seed = arguments.seed.unwrap_or_else(clock_seed);
    eprintln!("fleetshift-chaos: seed {seed} (replay with --seed {seed})");
    let shape = Shape {
        agents: usize::from(arguments.clusters),
        clusters: usize::from(arguments.clusters),
        etcd_members: usize::from(arguments.etcd_members),
        last_version: workload::LAST,
        classes: arguments.faults,
        faults_per_round: usize::from(arguments.faults_per_round),
    };
    if arguments.schedule_only {
        let rounds = schedule::draw(seed, arguments.rounds, &shape);
        let mut stdout = std::io::stdout().lock();
        match arguments.output {
            Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&rounds)?)?,
            Output::Table => {
                for round in &rounds {
                    writeln!(stdout, "round {}: plan to {}", round.index, round.target)?;
                    for timed in &round.faults {
                        writeln!(stdout, "  +{:>6} ms  {}", timed.at.as_millis(), timed.fault)?;
                    }
                    if let Some(to) = round.rollback_to {
                        writeln!(stdout, "  then a rollback to {to}")?;
                    }
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let binaries = match arguments.binaries {
        Some(binaries) => binaries,
        None => std::env::current_exe()?
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
    };
    let home = campaign::home(arguments.work_dir.as_deref())?;
    let options = Options {
        seed,
        rounds: arguments.rounds,
        shape,
        size: Size {
            etcd_members: usize::from(arguments.etcd_members),
            clusters: usize::from(arguments.clusters),
            databases: usize::from(arguments.databases),
        },
        rows: arguments.rows,
        lock_timeout: arguments.lock_timeout,
        stuck_after: arguments.stuck_after,
        binaries,
        home: home.path().to_path_buf(),
        tamper: arguments.tamper,
    };
    let say = |line: String| eprintln!("{line}");
    // Interrupted, the campaign is dropped: every process of its fleet is killed, its
    // namespaces deleted and its disks unmounted before the program exits.
    let outcome = tokio::select! {
        outcome = campaign::run(&options, &say) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; the fleet was stopped")),
    };
    let keep = arguments.keep || !matches!(&outcome, Ok(report) if report.violations.is_empty());
    if keep {
        let kept = home.keep();
        eprintln!(
            "fleetshift-chaos: the fleet's files and logs are kept in {}",
            kept.display()
        );
    }
    let report = outcome?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &arguments.report {
        std::fs::write(path, &json)?;
    }
    let mut stdout = std::io::stdout().lock();
    match arguments.output {
        Output::Table => write!(stdout, "{}", report.table())?,
        Output::Json => writeln!(stdout, "{json}")?,
    }
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(VIOLATIONS)
    })
}

/// The name of the first of SIGINT and SIGTERM to arrive.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the signals keep their default: the process ends at once.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// A seed from the clock, for a run not told one.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos() % u128::from(u64::MAX)).unwrap_or_default())
        .unwrap_or_default()
}
