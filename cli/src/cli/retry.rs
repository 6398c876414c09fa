//! `fleetshift retry PLAN [--failed] [--shards SELECTOR]`: plans again, alone, the shards of an
//! ended plan that did not succeed (with `--failed`, only those that failed), with the plan's
//! pinned set, target, waves, limits and duties. The plan lists every shard it leaves out and
//! why; it is approved and applied like any other (`fleetshift approve`, `fleetshift apply
//! --watch`).

use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::CreateRetryPlanRequest;

use super::Output;
use super::fleet::{Connection, client, refused};
use super::rollout::{Detail, print_created};

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan whose shards are tried again; it must have ended (finished with failures,
    /// halted or cancelled).
    plan: String,
    /// Only the shards that failed (or failed and were rolled back by their agent); without
    /// it, also those cancelled or never started.
    #[arg(long)]
    failed: bool,
    /// Only these shards: ids or patterns with `*`, comma-separated or repeated (default:
    /// every shard the above takes).
    #[arg(long, value_delimiter = ',', value_name = "SELECTOR")]
    shards: Vec<String>,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: RetryArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = CreateRetryPlanRequest {
        plan_id: arguments.plan.clone(),
        failed_only: arguments.failed,
        shards: arguments.shards.clone(),
    };
    match client.create_retry_plan(request).await {
        Ok(response) => print_created(&response.into_inner(), arguments.output, Detail::ByRule),
        Err(status) => refused(&arguments.connection, arguments.output, &status),
    }
}
