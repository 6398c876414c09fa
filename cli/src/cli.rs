//! Command-line interface: argument definitions and dispatch.

mod backups;
mod baseline_file;
mod certs;
mod dry_run;
mod duties;
mod events;
mod fleet;
mod gate;
mod lifecycle;
mod lint;
mod migrate;
mod notice;
mod packaging;
pub mod progress;
mod rehearsals;
mod rehearse;
mod render;
mod replicas;
mod retry;
mod rollback;
mod rollout;
mod schema;
mod schema_baselines;
mod serve;
mod shards;
mod sources;
mod targets;
mod throttles;
mod validation;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fleetshift_common::telemetry::logging::LogOptions;
use tracing::Instrument as _;

use crate::{demo, exit};

#[derive(Debug, Parser)]
#[command(
    name = "fleetshift",
    version,
    about = "Roll database schema migrations out across fleets of shards, safely",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LogOptions,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, revert and inspect migrations on one database (no coordinator involved).
    Migrate(Box<migrate::MigrateArgs>),
    /// Lint a migration directory: squawk's PostgreSQL rules and fleetshift's own.
    Lint(lint::LintArgs),
    /// Run fleetshift end to end on an embedded default fleet of SQLite shards.
    Demo(demo::DemoArgs),
    /// Create a development CA and certificates for a local fleet (mutual TLS identities).
    Certs(certs::CertsArgs),
    /// Run one coordinator replica (agent sessions over mutual TLS).
    Serve(serve::ServeArgs),
    /// List the fleet's shards (labels, agent, host, database server, version, health).
    Shards(shards::ShardsArgs),
    /// Set a shard's lifecycle (active, suspended, provisioning, retired) over its agent's
    /// configuration, or hand it back with `agent` (operator). Only active shards are planned.
    Lifecycle(lifecycle::LifecycleArgs),
    /// Plan a rollout of a migration directory over the shards a selector matches; `plan
    /// notice <plan>` renders its maintenance notice.
    Plan(Box<rollout::PlanCommand>),
    /// Approve a plan (approver role).
    Approve(rollout::ApproveArgs),
    /// Open the gate of a phased plan's phase (approver role): `gate open PLAN contract
    /// --reason "billing v2 deployed"`.
    Gate(gate::GateArgs),
    /// Start an approved plan's rollout; `--watch` follows it to the end.
    Apply(rollout::ApplyArgs),
    /// Follow a rollout live: per-wave progress, then a per-shard summary; `--all` follows
    /// every plan of the fleet.
    Watch(rollout::WatchArgs),
    /// Every event of the fleet (or of one plan) as it happens, one per line; `--output json`
    /// for scripts, `--since` to continue after the last sequence seen.
    Events(events::EventsArgs),
    /// Every plan, or one plan shard by shard.
    Status(rollout::StatusArgs),
    /// Stop dispatching new shards; running ones finish.
    Pause(rollout::ActionArgs),
    /// Continue a paused rollout.
    Resume(rollout::ActionArgs),
    /// Cancel a rollout (the emergency stop): the statement running on each shard is cancelled
    /// (a transactional revision rolls back whole), pending shards never start.
    Cancel(rollout::ActionArgs),
    /// Plan the revert of a finished plan's shards, each to its version before that plan or to
    /// `--to` (down scripts, fenced); approve and apply it like any plan.
    Rollback(rollback::RollbackArgs),
    /// Plan again, alone, the shards of an ended plan that did not succeed (`--failed`: only
    /// those that failed), under the plan's own terms; approve and apply it like any plan.
    Retry(retry::RetryArgs),
    /// A shard's backups on its agent's host: list them, verify one, restore one (approver).
    Backups(backups::BackupsArgs),
    /// Run a plan on a sampled copy of each chosen shard and trace every lock it takes
    /// (operator); HIGH and CRITICAL plans need rehearsals before approval.
    Rehearse(Box<rehearsals::RehearseArgs>),
    /// The fleet's schemas by fingerprint (viewer): `drift` finds shards whose schema differs
    /// from their version's majority, `show` prints one, `diff` compares two.
    Schema(schema::SchemaArgs),
    /// Hold the shards a selector matches for a while: `set` (operator), `list` (viewer),
    /// `lift` (operator). Nothing is dispatched to a held shard.
    Throttle(throttles::ThrottleArgs),
    /// Schema baselines: `create` takes a shard's schema at its version, `verify` proves it
    /// against the set, `list`; plans seed new, empty shards from the newest verified one.
    Baseline(schema_baselines::BaselineArgs),
    /// Fleet targets: `set` keeps the shards a selector matches at a version (the leader
    /// plans every active one behind it, as a controller), `status` says where each stands and
    /// why, `list`, `remove`.
    Target(targets::TargetArgs),
    /// Every replica `--coordinator` names: whether it answers and which one leads (viewer).
    Replicas(replicas::ReplicasArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(packaging::CompletionsArgs),
    /// Write man pages for fleetshift, each subcommand and fleetshift-agent.
    Man(packaging::ManArgs),
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

pub async fn run(cli: Cli) -> ExitCode {
    let span = command_span(&cli.command);
    run_command(cli).instrument(span).await
}

/// The span of a command that calls the coordinator, so its calls join one trace with the
/// coordinator's spans of them; none for the others (`serve` has a span per request).
fn command_span(command: &Command) -> tracing::Span {
    let name = match command {
        Command::Shards(_) => "shards",
        Command::Lifecycle(_) => "lifecycle",
        Command::Plan(_) => "plan",
        Command::Approve(_) => "approve",
        Command::Gate(_) => "gate",
        Command::Apply(_) => "apply",
        Command::Watch(_) => "watch",
        Command::Events(_) => "events",
        Command::Status(_) => "status",
        Command::Pause(_) => "pause",
        Command::Resume(_) => "resume",
        Command::Cancel(_) => "cancel",
        Command::Rollback(_) => "rollback",
        Command::Backups(_) => "backups",
        Command::Rehearse(_) => "rehearse",
        Command::Schema(_) => "schema",
        Command::Throttle(_) => "throttle",
        Command::Replicas(_) => "replicas",
        Command::Retry(_) => "retry",
        Command::Target(_) => "target",
        Command::Baseline(_) => "baseline",
        Command::Migrate(_)
        | Command::Demo(_)
        | Command::Lint(_)
        | Command::Certs(_)
        | Command::Serve(_)
        | Command::Completions(_)
        | Command::Man(_) => return tracing::Span::none(),
    };
    tracing::info_span!(
        "command",
        otel.name = %format_args!("fleetshift {name}"),
        otel.kind = "client",
    )
}

async fn run_command(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Migrate(arguments) => migrate::run(*arguments).await,
        Command::Demo(arguments) => demo::run(arguments).await,
        Command::Lint(arguments) => lint::run(arguments),
        Command::Certs(arguments) => certs::run(arguments),
        Command::Serve(arguments) => serve::run(arguments).await,
        Command::Shards(arguments) => shards::run(arguments).await,
        Command::Lifecycle(arguments) => lifecycle::run(arguments).await,
        Command::Plan(arguments) => match arguments.action {
            Some(rollout::PlanSubcommand::Notice(notice)) => notice::run(notice).await,
            None => rollout::plan(arguments.create).await,
        },
        Command::Approve(arguments) => rollout::approve(arguments).await,
        Command::Gate(arguments) => gate::run(arguments).await,
        Command::Apply(arguments) => rollout::apply(arguments).await,
        Command::Watch(arguments) => rollout::watch(arguments).await,
        Command::Events(arguments) => events::run(arguments).await,
        Command::Status(arguments) => rollout::status(arguments).await,
        Command::Pause(arguments) => rollout::act(rollout::Action::Pause, arguments).await,
        Command::Resume(arguments) => rollout::act(rollout::Action::Resume, arguments).await,
        Command::Cancel(arguments) => rollout::act(rollout::Action::Cancel, arguments).await,
        Command::Rollback(arguments) => rollback::run(arguments).await,
        Command::Backups(arguments) => backups::run(arguments).await,
        Command::Rehearse(arguments) => rehearsals::run(*arguments).await,
        Command::Schema(arguments) => schema::run(arguments).await,
        Command::Throttle(arguments) => throttles::run(arguments).await,
        Command::Replicas(arguments) => replicas::run(arguments).await,
        Command::Retry(arguments) => retry::run(arguments).await,
        Command::Target(arguments) => targets::run(arguments).await,
        Command::Baseline(arguments) => schema_baselines::run(arguments).await,
        Command::Completions(arguments) => packaging::completions(&arguments),
        Command::Man(arguments) => packaging::man(&arguments),
    }
}
