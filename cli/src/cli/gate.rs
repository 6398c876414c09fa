//! `fleetshift gate open PLAN PHASE --reason R`: opens the gate of a phased plan's phase
//! (approver role), as a deploy pipeline does over gRPC (`OpenGate`) once the new application
//! version is out. Also how `status` shows a phased plan's phases and what each gate waits for.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::proto::v1::{OpenGateRequest, Plan, PlanPhase, ShardState};
use fleetshift_coordinator::rollout::waves;
use serde_json::json;

use super::Output;
use super::fleet::{Connection, one_call};
use super::progress::FleetClient;

#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(subcommand)]
    command: GateCommand,
}

#[derive(Debug, Subcommand)]
enum GateCommand {
    /// Open a phase's gate (approver role): the phase starts once every shard of the plan
    /// finished the phase before it.
    Open(OpenArgs),
}

#[derive(Debug, Args)]
struct OpenArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan, as `fleetshift status` lists it.
    plan: String,
    /// The phase whose gate opens: backfill or contract.
    phase: String,
    /// Why (required): what was deployed, or checked.
    #[arg(long)]
    reason: String,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: GateArgs) -> ExitCode {
    let GateCommand::Open(arguments) = arguments.command;
    let request = OpenGateRequest {
        plan_id: arguments.plan.clone(),
        phase: arguments.phase.clone(),
        reason: arguments.reason.clone(),
    };
    let open = async |client: &mut FleetClient| client.open_gate(request).await;
    one_call(
        &arguments.connection,
        arguments.output,
        open,
        |plan| match arguments.output {
            Output::Json => println!(
                "{}",
                json!({ "plan": plan.plan_id, "phases": json_of(&plan) })
            ),
            Output::Human => {
                println!("plan {}:", plan.plan_id);
                for line in lines(&plan) {
                    println!("  {line}");
                }
            }
        },
    )
    .await
}

/// Where each phase stands: `expand (to 2): done`, `contract (to 3): gate waits for …`.
pub fn lines(plan: &Plan) -> Vec<String> {
    let current = plan.current_phase as usize;
    let succeeded = waves::planned_tasks(plan)
        .filter(|task| task.state() == ShardState::Succeeded)
        .count();
    let shards = waves::shard_count(plan);
    plan.phases
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            format!(
                "phase {} (to {}): {}",
                phase.name,
                phase.last_version,
                standing(phase, index, current, (succeeded, shards))
            )
        })
        .collect()
}

/// `done` is (shards that finished the current phase, the plan's shards).
fn standing(
    phase: &PlanPhase,
    index: usize,
    current: usize,
    (done, shards): (usize, usize),
) -> String {
    if index < current || (index == current && done == shards) {
        return "done".to_owned();
    }
    if index == current {
        return format!("running: {done} of {shards} shards done");
    }
    let Some(gate) = &phase.gate else {
        return "waits for the phase before it".to_owned();
    };
    if gate.none {
        return "no gate: starts when the phase before it has finished everywhere".to_owned();
    }
    if gate.opened {
        return format!(
            "gate opened by {} ({}); starts when the phase before it has finished everywhere",
            gate.opened_by, gate.reason
        );
    }
    if gate.waiting_for.is_empty() {
        let quiet = if gate.quiet_application.is_empty() {
            String::new()
        } else {
            format!(
                ", or no session of {} on any shard for {}s",
                gate.quiet_application,
                gate.quiet_for.map_or(0, |quiet| quiet.seconds)
            )
        };
        return format!("gate waits for an approver (`fleetshift gate open`){quiet}");
    }
    let since = gate
        .quiet_since
        .map(|since| format!(" (quiet since {since})"))
        .unwrap_or_default();
    format!("gate waits for {}{since}", gate.waiting_for)
}

/// The phases as JSON.
pub fn json_of(plan: &Plan) -> serde_json::Value {
    let current = plan.current_phase as usize;
    plan.phases
        .iter()
        .enumerate()
        .map(|(index, phase)| {
            let gate = phase.gate.as_ref().map(|gate| {
                json!({
                    "none": gate.none,
                    "opened": gate.opened,
                    "opened_by": gate.opened_by,
                    "reason": gate.reason,
                    "opened_at": gate.opened_at.map(|at| at.to_string()),
                    "quiet_application": gate.quiet_application,
                    "quiet_for_seconds": gate.quiet_for.map(|quiet| quiet.seconds),
                    "quiet_since": gate.quiet_since.map(|at| at.to_string()),
                    "waiting_for": gate.waiting_for,
                })
            });
            json!({
                "phase": phase.name,
                "last_version": phase.last_version,
                "current": index == current,
                "done": index < current,
                "started_at": phase.started_at.map(|at| at.to_string()),
                "gate": gate,
            })
        })
        .collect()
}
