//! A campaign: the fleet started, its shards brought to the set's first revision and filled,
//! the application started, then each round of the schedule — a forward plan under its
//! faults, the checker run once it ended, perhaps a rollback plan checked the same way — and
//! finally the application's reads checked and the report made.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, CreateRollbackPlanRequest, ExecutionLimits,
    GetPlanRequest, HostDuties, Plan, PlanAction, ShardState, WavePolicy,
};
use fleetshift_common::source::MigrationSet;
use fleetshift_coordinator::rollout::{plan_ended, task_ended};
use sqlx::AssertSqlSafe;
use tokio::time::Instant;

use crate::checker::{self, Check, PlanRecord, Violation, latency};
use crate::faults;
use crate::fleet::{ChaosFleet, Features, LABEL, OperatorError, Size};
use crate::load::Application;
use crate::observe::{self, Watcher};
use crate::report::{FaultRecord, PlanOutcome, Report, Seen};
use crate::schedule::{self, FaultClass, Round, Shape};
use crate::workload;

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub rounds: usize,
    pub shape: Shape,
    pub size: Size,
    /// Rows in each shard's `accounts`.
    pub rows: u64,
    pub lock_timeout: Duration,
    /// How long after its last fault healed a plan may take to end.
    pub stuck_after: Duration,
    /// Where `fleetshift` and `fleetshift-agent` are.
    pub binaries: PathBuf,
    /// Where the fleet's files and logs go.
    pub home: PathBuf,
    /// Damage the first shard before the first round is checked (see `--tamper`).
    pub tamper: bool,
}

/// Runs the campaign; `say` is told each step as it happens (faults with their times).
pub async fn run(options: &Options, say: &(dyn Fn(String) + Sync)) -> anyhow::Result<Report> {
    let rounds = schedule::draw(options.seed, options.rounds, &options.shape);
    let epoch = Instant::now();
    let migrations = options.home.join("migrations");
    std::fs::create_dir_all(&migrations)?;
    workload::write(&migrations)?;
    let set = MigrationSet::load(&migrations, None).context("the campaign's migration set")?;
    let shipped = fleetshift_common::shipped::pack(&set)?;
    say(format!(
        "starting the fleet in {}: etcd with {} member(s), 3 coordinator replicas, {} PostgreSQL cluster(s) of {} shard(s), one agent each",
        options.home.display(),
        options.size.etcd_members,
        options.size.clusters,
        options.size.databases
    ));
    let features = Features {
        partitioned: options.shape.classes.contains(&FaultClass::Partition),
        backup_disks: options.shape.classes.contains(&FaultClass::DiskFull),
        clock_jumps: options.shape.classes.contains(&FaultClass::Clock),
    };
    let fleet = Arc::new(
        ChaosFleet::start(&options.home, &options.binaries, options.size, features).await?,
    );
    let mut report = Report::new(options, &rounds);
    let driver = Driver {
        fleet: Arc::clone(&fleet),
        shipped,
        options,
        epoch,
    };

    // The first revision, without faults, then the application's rows.
    let setup = driver.forward(1).await?;
    driver.start(&setup).await?;
    let ended = driver.await_end(&setup, Instant::now()).await?;
    if ended.plan.state() != fleetshift_common::proto::v1::PlanState::Succeeded {
        bail!(
            "the setup plan {setup} ended {:?}: {}",
            ended.plan.state(),
            ended.plan.state_reason
        );
    }
    for shard in &fleet.shards {
        sqlx::query(AssertSqlSafe(workload::fill_statement(options.rows)))
            .execute(&shard.admin)
            .await
            .with_context(|| format!("filling {}", shard.id))?;
        sqlx::query("ANALYZE accounts")
            .execute(&shard.admin)
            .await?;
    }
    let pools: Vec<_> = fleet
        .shards
        .iter()
        .map(|shard| shard.admin.clone())
        .collect();
    let application = Application::start(&pools, epoch, options.lock_timeout * 3);

    let mut windows = Vec::new();
    for round in &rounds {
        say(format!(
            "round {}: plan to {} under {} fault(s)",
            round.index,
            round.target,
            round.faults.len()
        ));
        fleet.await_healed().await?;
        let Some(plan_id) = driver.forward_or_skip(round, &mut report, say).await? else {
            continue;
        };
        let started = Instant::now();
        let watcher = Watcher::start(Arc::clone(&fleet), plan_id.clone());
        driver.start(&plan_id).await?;
        let mut healed = Instant::now();
        for timed in &round.faults {
            tokio::time::sleep_until(started + timed.at).await;
            let from = epoch.elapsed();
            say(format!(
                "[{:>8.3}s] round {}: {}",
                from.as_secs_f64(),
                round.index,
                timed.fault
            ));
            let hit = faults::strike(&fleet, &timed.fault, &plan_id).await?;
            healed = Instant::now();
            let to = epoch.elapsed();
            if faults::affects_reads(&timed.fault) {
                windows.push(latency::Window { from, to });
            }
            report.faults.push(FaultRecord {
                round: round.index,
                at_ms: millis(from),
                healed_ms: millis(to),
                hit,
                fault: timed.fault.clone(),
            });
        }
        let mut record = driver.await_end(&plan_id, healed).await?;
        record.live = watcher.finish(Duration::from_secs(30)).await;
        if options.tamper && round.index == 0 {
            sqlx::query("INSERT INTO witness VALUES (1)")
                .execute(&fleet.shards[0].admin)
                .await
                .context("tampering with the first shard")?;
        }
        driver
            .check(round.index, "forward", record, &mut report)
            .await?;

        if let Some(to) = round.rollback_to {
            fleet.await_healed().await?;
            driver
                .rollback(round.index, &plan_id, to, &mut report, say)
                .await?;
        }
    }

    let reads = application.stop().await;
    let bound = options.lock_timeout + Duration::from_millis(50);
    let (summary, violation) = latency::check(&reads, &windows, bound);
    report.reads = summary;
    if let Some(violation) = violation {
        report.violations.push(Seen {
            round: None,
            plan: None,
            violation,
        });
    }
    report.finish(epoch.elapsed());
    Ok(report)
}

/// The campaign's calls on the fleet.
struct Driver<'a> {
    fleet: Arc<ChaosFleet>,
    shipped: fleetshift_common::proto::v1::MigrationSet,
    options: &'a Options,
    epoch: Instant,
}

impl Driver<'_> {
    fn backups_required(&self) -> bool {
        self.options.shape.classes.contains(&FaultClass::DiskFull)
    }

    /// Creates and approves a forward plan to `target` across every shard.
    async fn forward(&self, target: u32) -> anyhow::Result<String> {
        let plan_id = self.create(target).await?;
        self.approve(&plan_id).await?;
        Ok(plan_id)
    }

    async fn create(&self, target: u32) -> Result<String, OperatorError> {
        let request = CreatePlanRequest {
            migration_set: Some(self.shipped.clone()),
            target_version: target.to_string(),
            selector: [(LABEL.0.to_owned(), LABEL.1.to_owned())].into(),
            waves: Some(WavePolicy {
                canary_shards: 1,
                percentages: vec![50, 100],
                max_concurrency_per_wave: 4,
                max_concurrency_per_host: 2,
                // Faults may fail shards; the campaign checks what every shard holds.
                failure_threshold: u32::try_from(self.fleet.shards.len()).unwrap_or(u32::MAX),
                max_shard_retries: 8,
            }),
            limits: Some(ExecutionLimits {
                lock_timeout: prost_types::Duration::try_from(self.options.lock_timeout).ok(),
                statement_timeout: prost_types::Duration::try_from(Duration::from_secs(120)).ok(),
                lock_retries: 50,
            }),
            // With backup disks, every shard's backup before its first DDL is on one.
            duties: self.backups_required().then(|| HostDuties {
                require_backup: true,
                ..HostDuties::default()
            }),
            allow_drift_shards: String::new(),
            schedule: None,
            updates: None,
            gates: Vec::new(),
        };
        self.fleet
            .operator("create a plan", |mut client| {
                let request = request.clone();
                async move { client.create_plan(request).await }
            })
            .await
            .map(|plan| plan.plan_id)
    }

    /// The round's forward plan, or `None` when the coordinator refused it: the campaign's
    /// requests are valid and a shard at or past the target only makes a plan with nothing to
    /// do, so every refusal is a violation (drift, which only the campaign's revisions could
    /// make, one of its own), and the round is skipped.
    async fn forward_or_skip(
        &self,
        round: &Round,
        report: &mut Report,
        say: &(dyn Fn(String) + Sync),
    ) -> anyhow::Result<Option<String>> {
        match self.create(round.target).await {
            Ok(plan_id) => {
                self.approve(&plan_id).await?;
                Ok(Some(plan_id))
            }
            Err(OperatorError::Refused { code, message, .. }) => {
                say(format!(
                    "round {}: no plan ({code:?}: {message})",
                    round.index
                ));
                let check = if message.contains("differ from the fleet's schema") {
                    Check::DriftReported
                } else {
                    Check::PlanRefused
                };
                report.violations.push(Seen {
                    round: Some(round.index),
                    plan: None,
                    violation: Violation::fleet(check, format!("{code:?}: {message}")),
                });
                report
                    .skipped
                    .push(format!("round {}: {message}", round.index));
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn approve(&self, plan_id: &str) -> anyhow::Result<()> {
        self.fleet
            .operator("approve", |mut client| async move {
                client
                    .approve_plan(ApprovePlanRequest {
                        plan_id: plan_id.to_owned(),
                        comment: "chaos campaign".to_owned(),
                        capacity: String::new(),
                    })
                    .await
            })
            .await?;
        Ok(())
    }

    async fn start(&self, plan_id: &str) -> anyhow::Result<()> {
        self.fleet
            .operator("start", |mut client| async move {
                client
                    .start_rollout(PlanAction {
                        plan_id: plan_id.to_owned(),
                        reason: String::new(),
                    })
                    .await
            })
            .await?;
        Ok(())
    }

    async fn plan(&self, plan_id: &str) -> anyhow::Result<Plan> {
        self.fleet
            .operator("read the plan", |mut client| async move {
                client
                    .get_plan(GetPlanRequest {
                        plan_id: plan_id.to_owned(),
                    })
                    .await
            })
            .await
            .map_err(Into::into)
    }

    /// Waits for `plan_id` to end, up to the stuck bound after `healed`.
    async fn await_end(&self, plan_id: &str, healed: Instant) -> anyhow::Result<PlanRecord> {
        loop {
            let plan = self.plan(plan_id).await?;
            let ended =
                plan_ended(plan.state())
                    && plan.waves.iter().flat_map(|wave| &wave.shards).all(|task| {
                        task_ended(task.state()) || task.state() == ShardState::Pending
                    });
            if ended || healed.elapsed() > self.options.stuck_after {
                return Ok(PlanRecord {
                    ended_after_heal: ended.then(|| healed.elapsed()),
                    plan,
                    ..PlanRecord::default()
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Replays the plan's events, reads every shard and runs the checker.
    async fn check(
        &self,
        round: usize,
        kind: &'static str,
        mut record: PlanRecord,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let plan_id = record.plan.plan_id.clone();
        if let Some(first) = record.live.first().map(|event| event.sequence) {
            record.replayed = observe::replay(&self.fleet, &plan_id, first).await?;
        }
        let mut shards = Vec::new();
        for shard in &self.fleet.shards {
            shards.push(observe::shard(shard).await?);
        }
        let mut violations = checker::check(&record, &shards);
        for disk in &self.fleet.parts.lock().await.disks {
            violations.extend(disk.leftovers()?.into_iter().map(|file| {
                Violation::fleet(
                    Check::BackupLeftover,
                    format!("{} remains after its backup ended", file.display()),
                )
            }));
        }
        for violation in violations {
            report.violations.push(Seen {
                round: Some(round),
                plan: Some(plan_id.clone()),
                violation,
            });
        }
        report
            .plans
            .push(PlanOutcome::of(round, kind, &record, self.epoch.elapsed()));
        Ok(())
    }

    /// A rollback plan of `plan_id` back to `to`, run without faults and checked.
    async fn rollback(
        &self,
        round: usize,
        plan_id: &str,
        to: u32,
        report: &mut Report,
        say: &(dyn Fn(String) + Sync),
    ) -> anyhow::Result<()> {
        say(format!("round {round}: rollback of {plan_id} to {to}"));
        let created = self
            .fleet
            .operator("create a rollback plan", |mut client| async move {
                client
                    .create_rollback_plan(CreateRollbackPlanRequest {
                        plan_id: plan_id.to_owned(),
                        shards: Vec::new(),
                        to_version: to.to_string(),
                    })
                    .await
            })
            .await;
        let back = match created {
            Ok(plan) => plan.plan_id,
            Err(error) => {
                say(format!("round {round}: no rollback ({error:#})"));
                report
                    .skipped
                    .push(format!("round {round} rollback: {error:#}"));
                return Ok(());
            }
        };
        self.approve(&back).await?;
        let watcher = Watcher::start(Arc::clone(&self.fleet), back.clone());
        self.start(&back).await?;
        let mut record = self.await_end(&back, Instant::now()).await?;
        record.live = watcher.finish(Duration::from_secs(30)).await;
        self.check(round, "rollback", record, report).await
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The directory a run keeps its fleet's files in: `work` when given, else a fresh one.
pub fn home(work: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("fleetshift-chaos-");
    Ok(match work {
        Some(work) => {
            std::fs::create_dir_all(work)?;
            builder.tempdir_in(work)?
        }
        None => builder.tempdir()?,
    })
}
