//! `fleetshift shards`: the fleet's shards with their agents, hosts, database servers,
//! versions, health and lifecycle, selected by labels or by those facts.

use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::{ListShardsRequest, ServerFacts, ShardHealth, ShardLifecycle};
use fleetshift_common::rollout_names::lifecycle_name;
use serde_json::json;

use super::Output;
use super::fleet::{self, Connection, parse_label};
use crate::exit;

#[derive(Debug, Args)]
pub struct ShardsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only shards whose labels match, e.g. `--selector env=production` (repeatable); the
    /// reported facts are selectable too: `fleetshift.io/host`, `fleetshift.io/server`
    /// (`host:port`), `fleetshift.io/server-version`, `fleetshift.io/agent` and
    /// `fleetshift.io/engine` (`postgres` or `sqlite`).
    #[arg(long = "selector", value_parser = parse_label)]
    selector: Vec<(String, String)>,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: ShardsArgs) -> ExitCode {
    let mut client = match fleet::client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = ListShardsRequest {
        selector: arguments.selector.into_iter().collect(),
    };
    let listed = match client.list_shards(request).await {
        Ok(response) => response.into_inner().shards,
        Err(status) => return fleet::refused(&arguments.connection, arguments.output, &status),
    };
    match arguments.output {
        Output::Json => {
            let shards: Vec<_> = listed
                .iter()
                .map(|shard| {
                    json!({
                        "shard": shard.shard_id,
                        "agent": shard.agent_id,
                        "agent_version": (!shard.agent_version.is_empty()).then_some(&shard.agent_version),
                        "current_version": shard.current_version,
                        "health": health_name(shard.health),
                        "lifecycle": lifecycle_of(shard.lifecycle),
                        "lifecycle_source": shard.lifecycle_source,
                        "labels": shard.labels,
                        "schema_fingerprint": (!shard.schema_fingerprint.is_empty()).then_some(&shard.schema_fingerprint),
                        "host": shard.host.as_ref().map(|host| json!({
                            "hostname": host.hostname,
                            "cpus": host.cpus,
                            "memory_bytes": host.memory_bytes,
                        })),
                        "server": shard.server.as_ref().map(|server| json!({
                            "system_identifier": (!server.system_identifier.is_empty()).then_some(&server.system_identifier),
                            "address": server.address,
                            "version": server.version,
                        })),
                    })
                })
                .collect();
            println!("{}", json!({ "shards": shards }));
        }
        Output::Human => {
            println!(
                "{:<24} {:<28} {:<20} {:<28} {:<24} {:<20} {:<13} {:<12} LABELS",
                "SHARD",
                "AGENT (VERSION)",
                "HOST",
                "SERVER",
                "VERSION",
                "HEALTH",
                "LIFECYCLE",
                "SCHEMA"
            );
            for shard in &listed {
                let mut labels: Vec<String> = shard
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                labels.sort();
                let agent = if shard.agent_version.is_empty() {
                    shard.agent_id.clone()
                } else {
                    format!("{} ({})", shard.agent_id, shard.agent_version)
                };
                println!(
                    "{:<24} {:<28} {:<20} {:<28} {:<24} {:<20} {:<13} {:<12} {}",
                    shard.shard_id,
                    agent,
                    shard
                        .host
                        .as_ref()
                        .map_or("-", |host| host.hostname.as_str()),
                    server_name(shard.server.as_ref()),
                    if shard.current_version.is_empty() {
                        "-"
                    } else {
                        &shard.current_version
                    },
                    health_name(shard.health),
                    lifecycle_of(shard.lifecycle),
                    shard.schema_fingerprint.get(..12).unwrap_or("-"),
                    labels.join(",")
                );
            }
            println!("{} shard(s)", listed.len());
        }
    }
    ExitCode::from(exit::OK)
}

fn lifecycle_of(lifecycle: i32) -> &'static str {
    lifecycle_name(ShardLifecycle::try_from(lifecycle).unwrap_or(ShardLifecycle::Unspecified))
}

fn health_name(health: i32) -> &'static str {
    match ShardHealth::try_from(health).unwrap_or(ShardHealth::Unspecified) {
        ShardHealth::Healthy => "healthy",
        ShardHealth::Unreachable => "unreachable",
        ShardHealth::AgentDisconnected => "agent-disconnected",
        ShardHealth::UnfinishedRevision => "unfinished-revision",
        ShardHealth::Unspecified => "unknown",
    }
}

/// `address (version)`, or `-` when the agent does not say.
fn server_name(server: Option<&ServerFacts>) -> String {
    match server {
        Some(server) if server.version.is_empty() => server.address.clone(),
        Some(server) => format!("{} ({})", server.address, server.version),
        None => "-".to_owned(),
    }
}
