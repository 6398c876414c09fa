//! `fleetshift replicas`: every replica `--coordinator` names, whether it answers, and which
//! one leads, as each replica sees the election. Exits non-zero when one of them does not
//! answer (the first such replica's kind: unreachable, not authorised, …), so a script can
//! tell a degraded control plane.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::Output;
use super::fleet::{Connection, Described, Unanswered};
use crate::exit;

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// One replica's row: its address, and its standing or why it did not answer.
struct Row<'a> {
    address: &'a str,
    answer: Result<Described, Unanswered>,
}

pub async fn run(arguments: ReplicasArgs) -> ExitCode {
    let connection = &arguments.connection;
    let addresses = connection.addresses();
    if addresses.is_empty() {
        eprintln!("--coordinator names no address");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let mut rows = Vec::with_capacity(addresses.len());
    for (index, address) in addresses.iter().enumerate() {
        rows.push(Row {
            address,
            answer: connection.describe(index).await,
        });
    }
    print(&rows, arguments.output);
    let failed = rows.iter().find_map(|row| row.answer.as_ref().err());
    ExitCode::from(failed.map_or(exit::OK, |unanswered| unanswered.exit))
}

fn print(rows: &[Row<'_>], output: Output) {
    match output {
        Output::Json => {
            let listed: Vec<_> = rows
                .iter()
                .map(|row| match &row.answer {
                    Ok(described) => json!({
                        "address": row.address,
                        "coordinator": described.standing.coordinator_id,
                        "leading": described.standing.leading,
                        "leader": described.standing.leader_id,
                        "epoch": described.standing.epoch,
                    }),
                    Err(unanswered) => {
                        json!({ "address": row.address, "error": unanswered.message })
                    }
                })
                .collect();
            println!("{}", json!({ "replicas": listed }));
        }
        Output::Human => {
            for row in rows {
                match &row.answer {
                    Ok(described) => {
                        let standing = &described.standing;
                        let role = if standing.leading {
                            format!("leads (epoch {})", standing.epoch)
                        } else if standing.leader_id.is_empty() {
                            "knows no leader (the store is unreachable or an election is under way)"
                                .to_owned()
                        } else {
                            format!("follows {}", standing.leader_id)
                        };
                        println!("{} {}: {role}", row.address, standing.coordinator_id);
                    }
                    Err(unanswered) => {
                        println!("{}: no answer: {}", row.address, unanswered.message);
                    }
                }
            }
        }
    }
}
