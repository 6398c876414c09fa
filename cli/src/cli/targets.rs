//! `fleetshift target set|list|status|remove`: fleet targets, the versions the shards a
//! selector matches are kept at. The leader plans the catch-up of every active shard behind a
//! target under the target's terms (a new shard, one whose agent was away, one reactivated),
//! starts each once approved, and runs without asking again a catch-up through revisions an
//! approved plan of the target took already.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::{
    FleetTarget, GetTargetStatusRequest, ListTargetsRequest, RemoveTargetRequest, SetTargetRequest,
    TargetStanding, TargetStatus,
};
use fleetshift_common::rollout_names::target_standing_name;
use serde_json::{Value, json};

use super::fleet::{Connection, one_call};
use super::progress::FleetClient;
use super::rollout::PlanArgs;
use super::{Output, render};
use crate::exit;

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(subcommand)]
    command: TargetCommand,
}

#[derive(Debug, Subcommand)]
enum TargetCommand {
    /// Keep the shards a selector matches at a version (operator): `fleetshift plan`'s
    /// arguments are the terms of every catch-up. Setting a target again with the same set and
    /// version keeps its approvals; anything else needs approval again.
    Set(Box<SetArgs>),
    /// Every fleet target (viewer).
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Where a target's shards stand (at, behind, ahead), and why each behind is not there yet
    /// (viewer).
    Status {
        #[command(flatten)]
        connection: Connection,
        /// The target.
        #[arg(default_value = "default")]
        name: String,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Remove a target: nothing more is planned for it; its running plans go on (operator).
    Remove {
        #[command(flatten)]
        connection: Connection,
        /// The target.
        name: String,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

#[derive(Debug, Args)]
struct SetArgs {
    /// The target's name.
    #[arg(long, default_value = "default")]
    name: String,
    #[command(flatten)]
    plan: PlanArgs,
}

pub async fn run(arguments: TargetArgs) -> ExitCode {
    match arguments.command {
        TargetCommand::Set(set) => run_set(*set).await,
        TargetCommand::List { connection, output } => {
            let list =
                async |client: &mut FleetClient| client.list_targets(ListTargetsRequest {}).await;
            one_call(&connection, output, list, |listed| {
                print_targets(&listed.targets, output);
            })
            .await
        }
        TargetCommand::Status {
            connection,
            name,
            output,
        } => {
            let status = async |client: &mut FleetClient| {
                client
                    .get_target_status(GetTargetStatusRequest { name })
                    .await
            };
            one_call(&connection, output, status, |status| {
                print_status(&status, output);
            })
            .await
        }
        TargetCommand::Remove {
            connection,
            name,
            output,
        } => {
            let remove = async |client: &mut FleetClient| {
                client.remove_target(RemoveTargetRequest { name }).await
            };
            one_call(&connection, output, remove, |target| match output {
                Output::Json => println!("{}", json!({ "removed": described(&target) })),
                Output::Human => println!(
                    "fleet target {} removed: nothing more is planned for it",
                    target.name
                ),
            })
            .await
        }
    }
}

async fn run_set(arguments: SetArgs) -> ExitCode {
    let plan = &arguments.plan;
    let output = plan.output;
    if plan.sql {
        let message = "a target has no dry run: `fleetshift plan <dir> --sql` shows the SQL";
        render::failure(output, message, ErrorKind::BadInput);
        return ExitCode::from(exit::BAD_INPUT);
    }
    let terms = plan
        .set("fleetshift target set <dir> --selector …")
        .and_then(|set| plan.request(&set));
    let terms = match terms {
        Ok(terms) => terms,
        Err(message) => {
            render::failure(output, &message, ErrorKind::BadInput);
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let request = SetTargetRequest {
        name: arguments.name.clone(),
        terms: Some(terms),
    };
    let set = async |client: &mut FleetClient| client.set_target(request).await;
    one_call(&plan.connection, output, set, |target| match output {
        Output::Json => println!("{}", json!({ "target": described(&target) })),
        Output::Human => println!(
            "fleet target {0} set: {1}; the leader plans every active shard behind it (`fleetshift target status {0}`)",
            target.name,
            goal(&target)
        ),
    })
    .await
}

/// `version V of <origin> over env=prod`.
fn goal(target: &FleetTarget) -> String {
    let terms = target.terms.clone().unwrap_or_default();
    let set = terms.migration_set.unwrap_or_default();
    let mut selector: Vec<String> = terms
        .selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    selector.sort();
    format!(
        "version {} of {} ({}) over {}",
        terms.target_version,
        if set.origin.is_empty() {
            "the set"
        } else {
            &set.origin
        },
        set.digest.get(..12).unwrap_or(&set.digest),
        if selector.is_empty() {
            "every shard".to_owned()
        } else {
            selector.join(",")
        }
    )
}

fn described(target: &FleetTarget) -> Value {
    let terms = target.terms.clone().unwrap_or_default();
    let set = terms.migration_set.unwrap_or_default();
    let approved: Vec<Value> = target
        .approved
        .iter()
        .map(|approval| {
            json!({
                "from_version": approval.from_version,
                "plan": approval.plan_id,
                "approvers": approval.approvals.iter().map(|a| a.approver.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": target.name,
        "version": terms.target_version,
        "digest": set.digest,
        "origin": set.origin,
        "selector": terms.selector,
        "author": target.author,
        "set_at": target.set_at.map(|at| at.to_string()),
        "approved": approved,
        "refusal": target.refusal,
    })
}

fn print_targets(targets: &[FleetTarget], output: Output) {
    match output {
        Output::Json => {
            let listed: Vec<Value> = targets.iter().map(described).collect();
            println!("{}", json!({ "targets": listed }));
        }
        Output::Human => {
            if targets.is_empty() {
                println!("no fleet target; `fleetshift target set <dir> --selector …` sets one");
            }
            for target in targets {
                println!(
                    "{}: {} (set by {})",
                    target.name,
                    goal(target),
                    target.author
                );
            }
        }
    }
}

fn standing_of(standing: i32) -> TargetStanding {
    TargetStanding::try_from(standing).unwrap_or(TargetStanding::Unspecified)
}

fn print_status(status: &TargetStatus, output: Output) {
    let target = status.target.clone().unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for shard in &status.shards {
        *counts
            .entry(target_standing_name(standing_of(shard.standing)))
            .or_insert(0_usize) += 1;
    }
    match output {
        Output::Json => {
            let shards: Vec<Value> = status
                .shards
                .iter()
                .map(|shard| {
                    json!({
                        "shard": shard.shard_id,
                        "version": shard.current_version,
                        "standing": target_standing_name(standing_of(shard.standing)),
                        "plan": shard.plan_id,
                        "reason": shard.reason,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({ "target": described(&target), "counts": counts, "shards": shards })
            );
        }
        Output::Human => {
            println!("fleet target {}: {}", target.name, goal(&target));
            let tally: Vec<String> = counts
                .iter()
                .map(|(standing, count)| format!("{count} {standing}"))
                .collect();
            println!(
                "  {}",
                if tally.is_empty() {
                    "no shard matches its selector".to_owned()
                } else {
                    tally.join(", ")
                }
            );
            if !target.refusal.is_empty() {
                println!("  last catch-up refused: {}", target.refusal);
            }
            if status.shards.is_empty() {
                return;
            }
            println!(
                "{:<24} {:<20} {:<16} {:<22} REASON",
                "SHARD", "VERSION", "STANDING", "PLAN"
            );
            for shard in &status.shards {
                println!(
                    "{:<24} {:<20} {:<16} {:<22} {}",
                    shard.shard_id,
                    if shard.current_version.is_empty() {
                        "(empty)"
                    } else {
                        &shard.current_version
                    },
                    target_standing_name(standing_of(shard.standing)),
                    shard.plan_id,
                    shard.reason
                );
            }
        }
    }
}
