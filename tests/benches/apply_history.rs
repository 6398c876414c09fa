//! One database, a whole history applied to it empty: fleetshift (the fenced executor, in
//! process, ledger and all) against the baselines and the peers, on the same throwaway server
//! in the same run, each on a fresh database:
//! - `psql one session`: every file through one `psql` process, statements in autocommit:
//!   no per-revision atomicity at all, the floor of sending the SQL (the target's baseline);
//! - `psql one session, a transaction per revision`: the same with `BEGIN`/`COMMIT` around
//!   each transactional file: fleetshift's atomicity, nothing recorded;
//! - `sqlx migrate run` and `dbmate up`: what operators run per database today; each applies
//!   a migration per transaction and records it (install them with `scripts/bench-peers`).
//!
//! Everything connects over TCP with SCRAM, as agents do. Two histories: crates.io's 285
//! revisions, and 1,000 generated revisions of small DDL.
//!
//! `cargo bench -p fleetshift-tests --bench apply_history [-- ROUNDS]` (default 5 rounds; each
//! round runs every tool once per history, starting with a different one each round). Target:
//! fleetshift's median within 1.2x of `psql one session`, and below both peers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use fleetshift_common::engine::{PostgresShard, Timeouts};
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::fence::FenceToken;
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::peers::Peer;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{fixtures, generated, psql};
use tokio::runtime::Runtime;

/// Revisions in the generated history.
const GENERATED: usize = 1_000;
/// fleetshift's median against `psql one session`'s, at most.
const TARGET: f64 = 1.2;

/// What is measured, in the order of the report's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    PsqlSession,
    PsqlTransactions,
    Peer(Peer),
    Fleetshift,
}

impl Tool {
    const ALL: [Tool; 5] = [
        Tool::PsqlSession,
        Tool::PsqlTransactions,
        Tool::Peer(Peer::Sqlx),
        Tool::Peer(Peer::Dbmate),
        Tool::Fleetshift,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::PsqlSession => "psql one session",
            Tool::PsqlTransactions => "psql one session, a transaction per revision",
            Tool::Peer(peer) => peer.name(),
            Tool::Fleetshift => "fleetshift",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Tool::PsqlSession => "psql_one_session",
            Tool::PsqlTransactions => "psql_transaction_per_revision",
            Tool::Peer(Peer::Sqlx) => "sqlx_migrate_run",
            Tool::Peer(Peer::Dbmate) => "dbmate_up",
            Tool::Fleetshift => "fleetshift",
        }
    }
}

/// A history and where each tool reads it.
struct History {
    name: &'static str,
    directory: std::path::PathBuf,
    set: MigrationSet,
    /// Each peer's copy, in its layout.
    layouts: Vec<(Peer, tempfile::TempDir)>,
}

impl History {
    fn load(name: &'static str, directory: &Path) -> anyhow::Result<Self> {
        let set = MigrationSet::load(directory, None)?;
        let mut layouts = Vec::new();
        for peer in Peer::ALL {
            let copy = tempfile::tempdir()?;
            peer.write_layout(&set.revisions, copy.path())?;
            layouts.push((peer, copy));
        }
        Ok(Self {
            name,
            directory: directory.to_owned(),
            set,
            layouts,
        })
    }
}

/// What every measurement needs.
struct Bench {
    runtime: Runtime,
    cluster: PostgresCluster,
    peers: Vec<(Peer, std::path::PathBuf)>,
}

fn main() -> anyhow::Result<()> {
    let [rounds] = fleetshift_tests::bench::numbers(["ROUNDS"], [5])?;
    let bench = Bench {
        peers: Peer::ALL
            .into_iter()
            .map(|peer| peer.binary().map(|binary| (peer, binary)))
            .collect::<anyhow::Result<_>>()?,
        runtime: Runtime::new()?,
        cluster: PostgresCluster::start()?,
    };
    let generated_directory = tempfile::tempdir()?;
    generated::small_ddl_history(generated_directory.path(), GENERATED)?;
    let histories = [
        History::load("crates.io", &fixtures::crates_io())?,
        History::load("generated", generated_directory.path())?,
    ];
    let mut missed = Vec::new();
    for history in &histories {
        let revisions = &history.set.revisions;
        println!(
            "\n{}: {} revisions ({} outside a transaction), {rounds} rounds",
            history.name,
            revisions.len(),
            revisions.iter().filter(|r| !r.transactional).count()
        );
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Tool::ALL.len()];
        for round in 0..rounds {
            let mut line = format!("round {round}:");
            for offset in 0..Tool::ALL.len() {
                let which = (round + offset) % Tool::ALL.len();
                let tool = Tool::ALL[which];
                let elapsed = bench.measure(tool, history, round)?;
                times[which].push(elapsed);
                line.push_str(&format!("  {} {:.1} ms", tool.key(), millis(elapsed)));
            }
            println!("{line}");
        }
        let medians: Vec<Duration> = times.iter_mut().map(|each| median(each)).collect();
        missed.extend(report(history, rounds, &medians));
    }
    if missed.is_empty() {
        println!("\nevery target met");
    } else {
        println!("\ntargets missed:\n  {}", missed.join("\n  "));
    }
    Ok(())
}

impl Bench {
    /// `tool` applying `history` to a fresh database; the wall time.
    fn measure(&self, tool: Tool, history: &History, round: usize) -> anyhow::Result<Duration> {
        let database = format!("{}_{}_{round}", slug(history.name), tool.key());
        let url = self
            .runtime
            .block_on(self.cluster.create_database(&database))?;
        let revisions = &history.set.revisions;
        let binaries = self.cluster.binaries();
        match tool {
            Tool::PsqlSession => psql::apply_in_one_session(binaries, &url, revisions),
            Tool::PsqlTransactions => {
                psql::apply_in_one_session_with_transactions(binaries, &url, revisions)
            }
            Tool::Peer(peer) => {
                let binary = self.peers.iter().find(|(each, _)| *each == peer);
                let layout = history.layouts.iter().find(|(each, _)| *each == peer);
                match (binary, layout) {
                    (Some((_, binary)), Some((_, layout))) => {
                        peer.apply(binary, layout.path(), &url)
                    }
                    _ => bail!("{} is not set up", peer.name()),
                }
            }
            Tool::Fleetshift => self
                .runtime
                .block_on(with_fleetshift(&history.directory, &url)),
        }
    }
}

/// Prints the medians and their ratios (a table and a JSON line); the targets missed.
fn report(history: &History, rounds: usize, medians: &[Duration]) -> Vec<String> {
    let fleetshift = medians[Tool::ALL.len() - 1].as_secs_f64();
    let mut json = serde_json::Map::new();
    json.insert("benchmark".into(), "apply_history".into());
    json.insert("history".into(), history.name.into());
    json.insert("revisions".into(), history.set.revisions.len().into());
    json.insert("rounds".into(), rounds.into());
    json.insert("target_ratio_vs_psql_one_session".into(), TARGET.into());
    println!("median:");
    let mut missed = Vec::new();
    for (tool, median) in Tool::ALL.iter().zip(medians) {
        let ratio = fleetshift / median.as_secs_f64();
        println!(
            "  {:<46} {:>8.1} ms   fleetshift / it = {ratio:.2}",
            tool.name(),
            millis(*median)
        );
        json.insert(format!("{}_median_ms", tool.key()), millis(*median).into());
        json.insert(format!("ratio_vs_{}", tool.key()), ratio.into());
        match tool {
            Tool::PsqlSession if ratio > TARGET => missed.push(format!(
                "{}: fleetshift is {ratio:.2}x psql one session (target {TARGET:.2})",
                history.name
            )),
            Tool::Peer(peer) if ratio >= 1.0 => missed.push(format!(
                "{}: fleetshift is not faster than {}",
                history.name,
                peer.name()
            )),
            _ => {}
        }
    }
    println!("{}", serde_json::Value::Object(json));
    missed
}

/// Loading the set, connecting and applying everything under the fenced protocol.
async fn with_fleetshift(directory: &Path, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let set = MigrationSet::load(directory, None)?;
    let shard = PostgresShard::connect(&DatabaseUrl::new(url), Timeouts::default()).await?;
    let identity = Identity {
        agent_id: "bench".to_owned(),
        plan_id: None,
        fence_token: Some(FenceToken::from_raw(1)),
    };
    let report = Executor::new(&shard, identity, ExecutorSettings::default())
        .up(&set, &Request::default())
        .await?;
    let elapsed = started.elapsed();
    if report.steps.len() != set.revisions.len() {
        bail!(
            "fleetshift applied {} of {} revisions",
            report.steps.len(),
            set.revisions.len()
        );
    }
    Ok(elapsed)
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
