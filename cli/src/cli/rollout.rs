//! Rollout commands against a coordinator: `plan`, `approve`, `apply`, `watch`, `status`,
//! `pause`, `resume`, `cancel` (`rollback` is in its own module). Every one prints for people or (`--output json`) for scripts,
//! and exits with a code from [`crate::exit`].

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, GetPlanRequest, ListPlansRequest, Plan, PlanAction, PlanState, RiskLevel,
};
use fleetshift_common::rollout_names::{plan_state_name, risk_level_name};
use fleetshift_coordinator::rollout::waves;
use serde_json::json;

use super::events::{self, Stream};
use super::fleet::{Connection, client, refused};
use super::progress::Following;
use super::progress::resume::Watched;
use super::{Output, notice, progress, rehearsals, render};
use crate::exit;

mod findings;
mod fleet_sql;
mod gates;
mod plan_args;

pub use findings::Detail;

pub use plan_args::PlanArgs;

/// `plan <dir>` creates a plan; `plan notice <plan>` announces one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PlanCommand {
    #[command(subcommand)]
    pub action: Option<PlanSubcommand>,
    #[command(flatten)]
    pub create: PlanArgs,
}

#[derive(Debug, Subcommand)]
pub enum PlanSubcommand {
    /// Render a maintenance notice for a plan: markdown, text, your own Jinja template, or the
    /// template's context as JSON.
    Notice(notice::NoticeArgs),
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    connection: Connection,
    plan: String,
    /// Why, or what was checked.
    #[arg(long, default_value = "")]
    comment: String,
    /// The capacity you approve in (the maintenance notice names each one's approval).
    #[arg(long = "as", value_enum, value_name = "CAPACITY")]
    capacity: Option<Capacity>,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Who an approval speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Capacity {
    /// The database administrators.
    Dba,
    /// Engineering (the service's owners).
    Eng,
    /// Operations.
    Ops,
    /// Security.
    Sec,
}

impl Capacity {
    fn name(self) -> &'static str {
        match self {
            Self::Dba => "dba",
            Self::Eng => "eng",
            Self::Ops => "ops",
            Self::Sec => "sec",
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    connection: Connection,
    plan: String,
    /// Follow the rollout until it ends (exit code: how it ended).
    #[arg(long)]
    watch: bool,
    /// With --watch: show every statement as it finishes.
    #[arg(long)]
    statements: bool,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan to follow to its end.
    #[arg(required_unless_present = "all")]
    plan: Option<String>,
    /// Follow every plan of the fleet instead, until interrupted.
    #[arg(long, conflicts_with = "plan")]
    all: bool,
    /// Continue after this sequence (the last one seen, from any replica) instead of starting
    /// with the current state.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Show every statement as it finishes.
    #[arg(long)]
    statements: bool,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// One plan, shard by shard; without it, every plan.
    plan: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    connection: Connection,
    plan: String,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Which action an [`ActionArgs`] command takes.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

/// A new plan, and (for people) what to do with it next.
pub(super) fn print_created(plan: &Plan, output: Output, detail: Detail) -> ExitCode {
    print_plan(plan, output, detail);
    if output == Output::Human {
        println!(
            "next: fleetshift approve {0}, then fleetshift apply {0} --watch",
            plan.plan_id
        );
    }
    ExitCode::from(exit::OK)
}

fn print_plan(plan: &Plan, output: Output, detail: Detail) {
    if output == Output::Json {
        progress::summary(plan, output);
        return;
    }
    let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
    println!(
        "plan {} ({}) by {}: {} shard(s) in {} wave(s) to {}",
        plan.plan_id,
        plan_state_name(state),
        plan.author,
        waves::shard_count(plan),
        plan.waves.len(),
        plan.target_version
    );
    for allowed in &plan.drift_allowed {
        println!(
            "  {} planned although its schema differs from its version's majority: {}",
            allowed.shard_id, allowed.reason
        );
    }
    if !plan.rolls_back.is_empty() {
        println!(
            "  rolls back plan {} with its down scripts",
            plan.rolls_back
        );
    }
    if !plan.retries.is_empty() {
        println!(
            "  retries plan {} for the shards it did not take to their target",
            plan.retries
        );
    }
    for left in &plan.left_out {
        println!("  left out: {} {}", left.shard_id, left.reason);
    }
    for wave in &plan.waves {
        let shards: Vec<&str> = wave
            .shards
            .iter()
            .map(|task| task.shard_id.as_str())
            .collect();
        let listed = if shards.len() > 8 {
            format!("{} … {} more", shards[..8].join(", "), shards.len() - 8)
        } else {
            shards.join(", ")
        };
        println!("  wave {}: {} shard(s): {listed}", wave.index, shards.len());
    }
    print_risk(plan);
    rehearsals::print_summaries(plan);
    print_analyses(plan);
    for line in findings::lines(&plan.findings, detail) {
        println!("{line}");
    }
}

/// The changed tables on each shard (first ten shards), as the shards' catalogs describe them.
fn print_analyses(plan: &Plan) {
    let shown: Vec<_> = plan
        .analyses
        .iter()
        .filter(|analysis| !analysis.tables.is_empty())
        .collect();
    for analysis in shown.iter().take(10) {
        let tables: Vec<String> = analysis
            .tables
            .iter()
            .map(|facts| {
                let in_use = match facts.activity.len() {
                    0 => String::new(),
                    sessions => format!(", in use by {sessions} lock(s)"),
                };
                format!(
                    "{} (~{} rows, {} MiB, {} dependent(s){in_use})",
                    facts.table,
                    facts.estimated_rows,
                    facts.total_bytes / (1024 * 1024),
                    facts.dependents.len()
                )
            })
            .collect();
        println!("  {}: {}", analysis.shard_id, tables.join("; "));
    }
    if shown.len() > 10 {
        println!(
            "  … {} more shard(s); --output json lists them",
            shown.len() - 10
        );
    }
}

/// The risk score with each factor's contribution, and the approvals it asks for.
fn print_risk(plan: &Plan) {
    let Some(risk) = &plan.risk else {
        return;
    };
    let level = RiskLevel::try_from(risk.level).unwrap_or(RiskLevel::Unspecified);
    println!(
        "risk: {} {} ({} on {}); needs {} approval(s){}",
        risk.score,
        risk_level_name(level),
        risk.revision,
        risk.shard_id,
        risk.approvals_required,
        if risk.author_may_approve {
            ""
        } else {
            ", not by the plan's author"
        }
    );
    for factor in &risk.factors {
        println!(
            "  +{:<3} {:<14} {}",
            factor.points, factor.name, factor.explanation
        );
    }
}

pub async fn plan(arguments: PlanArgs) -> ExitCode {
    let set = match arguments.set("fleetshift plan <dir>") {
        Ok(set) => set,
        Err(message) => {
            render::failure(arguments.output, &message, ErrorKind::BadInput);
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    if arguments.sql {
        return fleet_sql::print(&arguments, &set).await;
    }
    let request = match arguments.request(&set) {
        Ok(request) => request,
        Err(message) => {
            render::failure(arguments.output, &message, ErrorKind::BadInput);
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.create_plan(request).await {
        Ok(response) => {
            let detail = if arguments.verbose {
                Detail::Every
            } else {
                Detail::ByRule
            };
            print_created(&response.into_inner(), arguments.output, detail)
        }
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}

pub async fn approve(arguments: ApproveArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = ApprovePlanRequest {
        plan_id: arguments.plan.clone(),
        comment: arguments.comment.clone(),
        capacity: arguments
            .capacity
            .map(Capacity::name)
            .unwrap_or_default()
            .to_owned(),
    };
    match client.approve_plan(request).await {
        Ok(response) => {
            print_plan(&response.into_inner(), arguments.output, Detail::ByRule);
            ExitCode::from(exit::OK)
        }
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}

pub async fn apply(arguments: ApplyArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    if !arguments.watch {
        let action = PlanAction {
            plan_id: arguments.plan.clone(),
            reason: String::new(),
        };
        return match client.start_rollout(action).await {
            Ok(response) => {
                print_plan(&response.into_inner(), arguments.output, Detail::ByRule);
                ExitCode::from(exit::OK)
            }
            Err(status) => refused(&arguments.connection, arguments.output, &status),
        };
    }
    let following = Following {
        replicas: Some(&arguments.connection),
        output: arguments.output,
        statements: arguments.statements,
        start: true,
        since: 0,
    };
    match progress::follow(client, &arguments.plan, following).await {
        Ok(ending) => ending.exit_code(),
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}

pub async fn watch(arguments: WatchArgs) -> ExitCode {
    let client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let Some(plan_id) = arguments.plan.as_deref().filter(|_| !arguments.all) else {
        let watched = Stream {
            connection: &arguments.connection,
            watched: Watched::Fleet,
            since: arguments.since,
            statements: arguments.statements,
            output: arguments.output,
        };
        return events::stream(client, watched).await;
    };
    let following = Following {
        replicas: Some(&arguments.connection),
        output: arguments.output,
        statements: arguments.statements,
        start: false,
        since: arguments.since,
    };
    match progress::follow(client, plan_id, following).await {
        Ok(ending) => ending.exit_code(),
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}

pub async fn status(arguments: StatusArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    if let Some(plan_id) = &arguments.plan {
        let request = GetPlanRequest {
            plan_id: plan_id.clone(),
        };
        return match client.get_plan(request).await {
            Ok(response) => {
                progress::summary(&response.into_inner(), arguments.output);
                ExitCode::from(exit::OK)
            }
            Err(status) => refused(&arguments.connection, arguments.output, &status),
        };
    }
    let plans = match client.list_plans(ListPlansRequest::default()).await {
        Ok(response) => response.into_inner().plans,
        Err(status) => return refused(&arguments.connection, arguments.output, &status),
    };
    let state = |plan: &Plan| {
        plan_state_name(PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified))
    };
    match arguments.output {
        Output::Json => {
            let listed: Vec<_> = plans
                .iter()
                .map(|plan| {
                    json!({
                        "plan": plan.plan_id,
                        "state": state(plan),
                        "author": plan.author,
                        "target_version": plan.target_version,
                        "shards": waves::shard_count(plan),
                    })
                })
                .collect();
            println!("{}", json!({ "plans": listed }));
        }
        Output::Human => {
            println!(
                "{:<24} {:<18} {:<22} {:>6}  AUTHOR",
                "PLAN", "STATE", "TARGET", "SHARDS"
            );
            for plan in &plans {
                println!(
                    "{:<24} {:<18} {:<22} {:>6}  {}",
                    plan.plan_id,
                    state(plan),
                    plan.target_version,
                    waves::shard_count(plan),
                    plan.author
                );
            }
            println!("{} plan(s)", plans.len());
        }
    }
    ExitCode::from(exit::OK)
}

pub async fn act(action: Action, arguments: ActionArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = PlanAction {
        plan_id: arguments.plan.clone(),
        reason: arguments.reason.clone(),
    };
    let answered = match action {
        Action::Pause => client.pause_rollout(request).await,
        Action::Resume => client.resume_rollout(request).await,
        Action::Cancel => client.cancel_rollout(request).await,
    };
    match answered {
        Ok(response) => {
            print_plan(&response.into_inner(), arguments.output, Detail::ByRule);
            ExitCode::from(exit::OK)
        }
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}
