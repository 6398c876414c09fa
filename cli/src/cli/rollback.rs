//! `fleetshift rollback PLAN [--shards SELECTOR] [--to VERSION]`: plans the revert of the
//! shards a finished plan moved, each to its version before that plan (or to
//! VERSION, where that is later). A revision on the way without a down script is refused here,
//! at planning, with the lowest version the plan can reach. The rollback plan is
//! approved and applied like any other (`fleetshift approve`, `fleetshift apply --watch`).

use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::CreateRollbackPlanRequest;

use super::Output;
use super::fleet::{Connection, client, refused};
use super::rollout::{Detail, print_created};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan whose shards go back; it must have ended (succeeded, finished with failures, halted or cancelled).
    plan: String,
    /// Only these shards: ids or patterns with `*`, comma-separated or repeated (default:
    /// every shard the plan moved: to its target, or part of the way before failing).
    #[arg(long, value_delimiter = ',', value_name = "SELECTOR")]
    shards: Vec<String>,
    /// Back only this far: each shard goes to the later of VERSION and its version before the
    /// plan (when older revisions have no down script, the refusal names the lowest VERSION).
    #[arg(long = "to", value_name = "VERSION")]
    to_version: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: RollbackArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = CreateRollbackPlanRequest {
        plan_id: arguments.plan.clone(),
        shards: arguments.shards.clone(),
        to_version: arguments.to_version.clone().unwrap_or_default(),
    };
    match client.create_rollback_plan(request).await {
        Ok(response) => print_created(&response.into_inner(), arguments.output, Detail::ByRule),
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}
