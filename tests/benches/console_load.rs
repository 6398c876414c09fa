//! The web console's plan page for a 1,000-shard plan, in a real headless Chromium against a
//! real `fleetshift serve` replica (release build) on a real etcd: how long the page takes to
//! load (navigation start to every cell drawn, the `fleetshift-rendered` mark), against a
//! 10-shard plan's page in the same run; and how responsive it stays while a shard changes
//! state every 10 ms (written to etcd as the leader writes tasks, followed by the replica and
//! streamed to the page): each change's delay from the write to its cell's repaint, and the
//! page's main-thread stalls (a 20 ms timer's lateness, long tasks), against the same page
//! idle for as long.
//!
//! `cargo build --release --bins && cargo bench -p fleetshift-tests --bench console_load
//! [-- SHARDS EVENTS LOADS]` (default 1000 shards, 1000 events, 5 loads of each page).
//! Targets: the 1,000-shard page loads in under 1 s and stays responsive (no main-thread stall
//! of 100 ms or more) with an event every 10 ms.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::{Plan, PlanState, RiskAssessment, ShardState, ShardTask, Wave};
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::rollout::records;
use fleetshift_coordinator::store::{EtcdStore, Store, Write, keys};
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::browser::Browser;
use fleetshift_tests::fleet::{await_leader, init_pki, issue, spawn_console_replica};
use prost::Message;
use serde_json::Value;

const ROLES: &str = "viewers = [\"ops\"]";
/// A change every this often.
const PACE: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let [shards, events, loads] =
        fleetshift_tests::bench::numbers(["SHARDS", "EVENTS", "LOADS"], [1000, 1000, 5])?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(shards, events, loads))
}

/// A paused plan of `shards` shards in four waves, with a risk assessment (what the page
/// draws besides the cells): the leader leaves a paused plan alone.
fn plan(plan_id: &str, shards: usize) -> Plan {
    let tasks: Vec<ShardTask> = (0..shards)
        .map(|index| ShardTask {
            shard_id: format!("shard-{index:05}"),
            state: ShardState::Pending.into(),
            host: format!("host-{}", index % 50),
            wave: u32::try_from(index * 4 / shards).unwrap_or(3),
            ..ShardTask::default()
        })
        .collect();
    let mut waves: Vec<Wave> = (0..4)
        .map(|index| Wave {
            index,
            shards: Vec::new(),
        })
        .collect();
    for task in tasks {
        let wave = usize::try_from(task.wave).unwrap_or(0);
        waves[wave].shards.push(task);
    }
    Plan {
        plan_id: plan_id.to_owned(),
        author: "spiffe://fleet.example/operator/ops".to_owned(),
        target_version: "3".to_owned(),
        state: PlanState::Paused.into(),
        state_reason: "paused for the benchmark".to_owned(),
        waves,
        risk: Some(RiskAssessment {
            score: 20,
            ..RiskAssessment::default()
        }),
        created_at: Some(SystemTime::now().into()),
        ..Plan::default()
    }
}

/// Stamps the page's probes: each cell's repaint time by shard, a 20 ms timer's lateness and
/// the long tasks, from now on.
const PROBES: &str = r"
  const probe = { changes: [], lateness: [], longTasks: [] };
  window.benchProbe = probe;
  new MutationObserver((records) => {
    const at = Date.now();
    for (const record of records) {
      const cell = record.target;
      if (cell.dataset && cell.dataset.shard) probe.changes.push([cell.dataset.shard, cell.dataset.state, at]);
    }
  }).observe(document.getElementById('waves'), { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  let last = performance.now();
  probe.timer = setInterval(() => {
    const now = performance.now();
    probe.lateness.push(now - last - 20);
    last = now;
  }, 20);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) probe.longTasks.push(entry.duration);
  }).observe({ type: 'longtask' });
  return true;";

const COLLECT: &str = r"
  const probe = window.benchProbe;
  clearInterval(probe.timer);
  return { changes: probe.changes, lateness: probe.lateness, longTasks: probe.longTasks };";

/// Milliseconds from navigation start to the page drawn, `loads` times.
async fn loads_of(
    browser: &Browser,
    url: &str,
    cells: usize,
    loads: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..loads {
        browser.open(url).await?;
        let drawn = browser
            .run("return document.querySelectorAll('#waves .cell').length")
            .await?;
        if drawn != cells {
            bail!("{url} drew {drawn} cells, not {cells}");
        }
        let rendered = browser
            .run("return performance.getEntriesByName('fleetshift-rendered')[0].startTime")
            .await?
            .as_f64()
            .context("no fleetshift-rendered mark")?;
        times.push(rendered);
    }
    Ok(times)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What the probes saw over a window: the timer's lateness (p50, p99, max), long tasks
/// (count, total ms), and each change's delay from its write (p50, p99, max; how many).
struct Window {
    lateness: Vec<f64>,
    long_tasks: Vec<f64>,
    delays: Vec<f64>,
}

impl Window {
    fn print(&self, label: &str) {
        let lateness = sorted(self.lateness.clone());
        let delays = sorted(self.delays.clone());
        let repaint = if delays.is_empty() {
            String::new()
        } else {
            format!(
                "; change to repaint ({} changes) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                delays.len(),
                quantile(&delays, 0.5),
                quantile(&delays, 0.99),
                delays.last().copied().unwrap_or(f64::NAN),
            )
        };
        println!(
            "{label}: timer lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; long tasks {} ({:.0} ms){repaint}",
            quantile(&lateness, 0.5),
            quantile(&lateness, 0.99),
            lateness.last().copied().unwrap_or(f64::NAN),
            self.long_tasks.len(),
            self.long_tasks.iter().fold(0.0, |total, task| total + task),
        );
    }
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Writes `events` task changes at [`PACE`] (running, then succeeded, shard after shard) and
/// returns each write's wall time by (shard, state shown).
async fn changes(
    store: &EtcdStore,
    plan: &Plan,
    events: usize,
) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let tasks: Vec<&ShardTask> = plan.waves.iter().flat_map(|wave| &wave.shards).collect();
    let mut written = Vec::new();
    let mut pace = tokio::time::interval(PACE);
    for event in 0..events {
        pace.tick().await;
        let task = tasks[(event / 2) % tasks.len()];
        let (state, shown) = if event % 2 == 0 {
            (ShardState::Running, "running")
        } else {
            (ShardState::Succeeded, "succeeded")
        };
        let changed = ShardTask {
            state: state.into(),
            started_at: Some(SystemTime::now().into()),
            finished_at: (state == ShardState::Succeeded).then(|| SystemTime::now().into()),
            ..task.clone()
        };
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        store
            .commit(
                None,
                &[],
                &[Write::put(
                    keys::task(&plan.plan_id, &task.shard_id),
                    changed.encode_to_vec(),
                )],
            )
            .await?;
        written.push((task.shard_id.clone(), shown, at.as_secs_f64() * 1000.0));
    }
    Ok(written)
}

async fn measure(shards: usize, events: usize, loads: usize) -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let home = tempfile::tempdir()?;
    let pki = home.path().join("pki");
    init_pki(&pki);
    issue(&pki, Role::Operator, "ops", &[]);
    let (_, web, _replica) = spawn_console_replica(home.path(), "c1", &etcd.endpoint, ROLES);
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?;
    if !await_leader(&store, Duration::from_secs(20)).await {
        bail!("no leader; see {}", home.path().join("c1.log").display());
    }
    let large = plan("p-large", shards);
    let small = plan("p-small", 10);
    records::create_plan(&store, &large).await?;
    records::create_plan(&store, &small).await?;
    let browser = Browser::start(&pki, "operator-ops").await?;
    let console = format!("https://127.0.0.1:{web}");

    // Load: the small page first (the baseline), then the large one, alternately warmed.
    let small_loads =
        sorted(loads_of(&browser, &format!("{console}/plans/p-small"), 10, loads).await?);
    let large_loads =
        sorted(loads_of(&browser, &format!("{console}/plans/p-large"), shards, loads).await?);
    let median = |values: &[f64]| quantile(values, 0.5);
    println!(
        "load, navigation to drawn: {shards} shards median {:.0} ms (min {:.0}, max {:.0}); 10 shards median {:.0} ms; ratio {:.2}",
        median(&large_loads),
        large_loads.first().copied().unwrap_or(f64::NAN),
        large_loads.last().copied().unwrap_or(f64::NAN),
        median(&small_loads),
        median(&large_loads) / median(&small_loads),
    );

    // Weight: what the large page fetched, by resource.
    let weights = browser
        .run(
            "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
               .map((entry) => [entry.name.replace(location.origin, ''), entry.encodedBodySize])",
        )
        .await?;
    let mut total = 0.0;
    let mut listed = Vec::new();
    for entry in weights.as_array().into_iter().flatten() {
        let name = entry[0].as_str().unwrap_or_default();
        // The event stream has no end; its size is not the page's.
        if name.contains("/api/v1/events") || name.contains("/api/v1/consoles") {
            continue;
        }
        let bytes = entry[1].as_f64().unwrap_or_default();
        total += bytes;
        listed.push(format!("{name} {:.1} KiB", bytes / 1024.0));
    }
    println!(
        "page weight ({shards} shards): {:.1} KiB in all: {}",
        total / 1024.0,
        listed.join(", ")
    );

    // Responsiveness: the same page idle, then under a change every 10 ms, for as long.
    let live = browser
        .wait_for(
            "return document.getElementById('link').dataset.state === 'live'",
            Duration::from_secs(20),
        )
        .await?;
    if !live {
        bail!("the page never followed the plan live");
    }
    let window = PACE * u32::try_from(events)?;
    browser.run(PROBES).await?;
    tokio::time::sleep(window).await;
    let idle = browser.run(COLLECT).await?;
    browser.run(PROBES).await?;
    let written = changes(&store, &large, events).await?;
    // Every change reaches the page: wait for the last one's cell.
    let (last_shard, last_state, _) = written.last().context("no change written")?.clone();
    let arrived = browser
        .wait_for(
            &format!(
                "return document.querySelector('#waves .cell[data-shard=\"{last_shard}\"]').dataset.state === '{last_state}'"
            ),
            Duration::from_secs(30),
        )
        .await?;
    if !arrived {
        bail!("the last change never reached the page");
    }
    let busy = browser.run(COLLECT).await?;
    let mut delays = Vec::new();
    let seen: Vec<(String, String, f64)> = busy["changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .filter_map(|change| {
                    Some((
                        change[0].as_str()?.to_owned(),
                        change[1].as_str()?.to_owned(),
                        change[2].as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for (shard, state, at) in &written {
        // A running state may be painted over by its success in the same frame: then the
        // success's repaint stands for both.
        let painted = seen
            .iter()
            .find(|(seen_shard, seen_state, seen_at)| {
                seen_shard == shard
                    && (seen_state == state || seen_state == "succeeded")
                    && seen_at >= at
            })
            .map(|(_, _, seen_at)| seen_at - at);
        if let Some(delay) = painted {
            delays.push(delay);
        }
    }
    println!(
        "{events} changes, one every {} ms, over {:.1} s",
        PACE.as_millis(),
        window.as_secs_f64()
    );
    let idle = Window {
        lateness: numbers(&idle["lateness"]),
        long_tasks: numbers(&idle["longTasks"]),
        delays: Vec::new(),
    };
    let busy = Window {
        lateness: numbers(&busy["lateness"]),
        long_tasks: numbers(&busy["longTasks"]),
        delays,
    };
    idle.print("idle (baseline)");
    busy.print("under changes");
    let p99 = |window: &Window| quantile(&sorted(window.lateness.clone()), 0.99);
    println!(
        "timer lateness p99 under changes / idle: {:.2} (absolute difference {:.1} ms)",
        p99(&busy) / p99(&idle).max(0.1),
        p99(&busy) - p99(&idle)
    );
    Ok(())
}
