//! `fleetshift lifecycle SHARD STATE --reason R`: sets a shard's lifecycle over its agent's
//! configuration (`active`, `suspended`, `provisioning`, `retired`), or with `agent` hands it
//! back to the configuration. Only active shards are planned; `fleetshift shards` shows each
//! shard's lifecycle and where it comes from.

use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::{SetShardLifecycleRequest, ShardLifecycle};
use fleetshift_common::rollout_names::{lifecycle_name, parse_lifecycle};
use serde_json::json;

use super::Output;
use super::fleet::{Connection, one_call};
use super::progress::FleetClient;
use super::render;
use crate::exit;

/// What `agent` stands for: the operator's setting removed.
const AGENT: &str = "agent";

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    connection: Connection,
    /// The shard's id, as `fleetshift shards` lists it.
    shard: String,
    /// active, suspended, provisioning or retired; `agent` removes the setting, so the
    /// shard's agent configuration decides again.
    state: String,
    /// Why (required, except with `agent`); kept with the setting and shown by `shards`.
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: LifecycleArgs) -> ExitCode {
    let lifecycle = if arguments.state == AGENT {
        ShardLifecycle::Unspecified
    } else {
        match parse_lifecycle(&arguments.state) {
            Ok(lifecycle) => lifecycle,
            Err(why) => {
                let message = format!("{why}, or `{AGENT}` to hand it back to its agent");
                render::failure(
                    arguments.output,
                    &message,
                    fleetshift_common::error::ErrorKind::BadInput,
                );
                return ExitCode::from(exit::BAD_INPUT);
            }
        }
    };
    let request = SetShardLifecycleRequest {
        shard_id: arguments.shard.clone(),
        lifecycle: lifecycle.into(),
        reason: arguments.reason.clone(),
    };
    let set = async |client: &mut FleetClient| client.set_shard_lifecycle(request).await;
    one_call(&arguments.connection, arguments.output, set, |setting| {
        let state = if lifecycle == ShardLifecycle::Unspecified {
            AGENT
        } else {
            lifecycle_name(lifecycle)
        };
        match arguments.output {
            Output::Json => println!(
                "{}",
                json!({
                    "shard": setting.shard_id,
                    "lifecycle": state,
                    "reason": setting.reason,
                    "author": setting.author,
                })
            ),
            Output::Human if lifecycle == ShardLifecycle::Unspecified => println!(
                "{}: the operator's setting is removed; its agent's configuration decides",
                setting.shard_id
            ),
            Output::Human => println!(
                "{} is {state} until changed ({})",
                setting.shard_id, setting.reason
            ),
        }
    })
    .await
}
