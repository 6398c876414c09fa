//! `fleetshift throttle set|list|lift`: an operator's hold on the shards a selector matches.
//! Nothing is dispatched to a held shard until the throttle expires (`--for`) or is lifted;
//! runs already going on finish.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use fleetshift_common::proto::v1::{
    FleetThrottle, LiftThrottleRequest, ListThrottlesRequest, ThrottleShardsRequest,
};
use serde_json::json;

use super::Output;
use super::fleet::{Connection, client, parse_label, refused};

#[derive(Debug, Args)]
pub struct ThrottleArgs {
    #[command(subcommand)]
    command: ThrottleCommand,
}

#[derive(Debug, Subcommand)]
enum ThrottleCommand {
    /// Hold the shards a selector matches for a while (operator).
    Set {
        #[command(flatten)]
        connection: Connection,
        /// The shards to hold, e.g. `--selector region=eu` (repeatable; none: every shard).
        #[arg(long = "selector", value_parser = parse_label)]
        selector: Vec<(String, String)>,
        /// For how long, e.g. 30m (at most a day).
        #[arg(long = "for", value_parser = fleetshift_common::duration::parse)]
        duration: Duration,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// The throttles in force (viewer).
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// End a throttle before it expires (operator).
    Lift {
        #[command(flatten)]
        connection: Connection,
        /// The throttle's id, as `throttle list` shows it.
        throttle: String,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

pub async fn run(arguments: ThrottleArgs) -> ExitCode {
    let (connection, output) = match &arguments.command {
        ThrottleCommand::Set {
            connection, output, ..
        }
        | ThrottleCommand::List { connection, output }
        | ThrottleCommand::Lift {
            connection, output, ..
        } => (connection, *output),
    };
    let mut client = match client(connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let answered = match &arguments.command {
        ThrottleCommand::Set {
            selector,
            duration,
            reason,
            ..
        } => client
            .throttle_shards(ThrottleShardsRequest {
                selector: selector.iter().cloned().collect(),
                duration: prost_types::Duration::try_from(*duration).ok(),
                reason: reason.clone(),
            })
            .await
            .map(|response| vec![response.into_inner()]),
        ThrottleCommand::List { .. } => client
            .list_throttles(ListThrottlesRequest {})
            .await
            .map(|response| response.into_inner().throttles),
        ThrottleCommand::Lift { throttle, .. } => client
            .lift_throttle(LiftThrottleRequest {
                throttle_id: throttle.clone(),
            })
            .await
            .map(|response| vec![response.into_inner()]),
    };
    match answered {
        Ok(throttles) => {
            print(&throttles, output);
            ExitCode::SUCCESS
        }
        Err(status) => refused(connection, output, &status),
    }
}

fn print(throttles: &[FleetThrottle], output: Output) {
    match output {
        Output::Json => {
            let listed: Vec<_> = throttles
                .iter()
                .map(|throttle| {
                    json!({
                        "throttle": throttle.throttle_id,
                        "selector": throttle.selector,
                        "until": throttle.until.map(|until| until.to_string()),
                        "reason": throttle.reason,
                        "author": throttle.author,
                    })
                })
                .collect();
            println!("{}", json!({ "throttles": listed }));
        }
        Output::Human => {
            if throttles.is_empty() {
                println!("no throttle in force");
            }
            for throttle in throttles {
                let mut selector: Vec<String> = throttle
                    .selector
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                selector.sort();
                println!(
                    "{} holds {} until {} ({}; by {})",
                    throttle.throttle_id,
                    if selector.is_empty() {
                        "every shard".to_owned()
                    } else {
                        selector.join(",")
                    },
                    throttle
                        .until
                        .map(|until| until.to_string())
                        .unwrap_or_default(),
                    throttle.reason,
                    throttle.author
                );
            }
        }
    }
}
