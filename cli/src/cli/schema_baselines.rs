//! `fleetshift baseline create|verify|list`: schema baselines, a shard's schema at one version
//! of a set, so new, empty shards are seeded with one transaction instead of replaying every
//! revision. A plan uses the newest verified baseline of its set at or below its target.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::{
    CreateBaselineRequest, ListBaselinesRequest, SchemaBaseline, VerifyBaselineRequest,
};
use fleetshift_common::shipped;
use fleetshift_common::source::SourceFormat;
use serde_json::{Value, json};

use super::fleet::{Connection, client, one_call, refused};
use super::progress::FleetClient;
use super::sources::{self, AlembicArgs};
use super::{Output, render};
use crate::exit;

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    command: BaselineCommand,
}

#[derive(Debug, Subcommand)]
enum BaselineCommand {
    /// Take a shard's schema at its version (operator): its agent runs `pg_dump
    /// --schema-only` (no ledger, owners or privileges) and fingerprints it. The shard must be
    /// exactly at the version, as the set describes it.
    Create {
        #[command(flatten)]
        connection: Connection,
        /// The migration directory the version belongs to.
        directory: PathBuf,
        /// The shard to take it from.
        #[arg(long)]
        from_shard: String,
        /// The version (default: the set's newest revision).
        #[arg(long)]
        version: Option<String>,
        /// The directory's layout, when detection is not wanted.
        #[arg(long)]
        format: Option<SourceFormat>,
        #[command(flatten)]
        alembic: AlembicArgs,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Prove a baseline (operator): a shard's agent builds two scratch databases on its
    /// server, one by replaying the set up to the version and one seeded from the baseline,
    /// and compares their fingerprints with the baseline's. Only a verified baseline is used.
    /// Exits 3 when it does not hold.
    Verify {
        #[command(flatten)]
        connection: Connection,
        /// The baseline.
        baseline: String,
        /// The shard whose server builds the scratch databases (default: the one it was taken
        /// from; its user needs CREATEDB).
        #[arg(long)]
        on_shard: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// The fleet's baselines, newest first (viewer).
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

pub async fn run(arguments: BaselineArgs) -> ExitCode {
    match arguments.command {
        BaselineCommand::Create {
            connection,
            directory,
            from_shard,
            version,
            format,
            alembic,
            output,
        } => {
            let packed = sources::load(&directory, format, &alembic)
                .and_then(|set| shipped::pack(&set).map_err(|error| error.to_string()));
            let packed = match packed {
                Ok(packed) => packed,
                Err(message) => {
                    render::failure(output, &message, ErrorKind::BadInput);
                    return ExitCode::from(exit::BAD_INPUT);
                }
            };
            let request = CreateBaselineRequest {
                shard_id: from_shard,
                migration_set: Some(packed),
                version: version.unwrap_or_default(),
            };
            let create = async |client: &mut FleetClient| client.create_baseline(request).await;
            one_call(&connection, output, create, |baseline| {
                print(&[baseline], output);
            })
            .await
        }
        BaselineCommand::Verify {
            connection,
            baseline,
            on_shard,
            output,
        } => {
            let mut client = match client(&connection, output).await {
                Ok(client) => client,
                Err(code) => return code,
            };
            let request = VerifyBaselineRequest {
                baseline_id: baseline,
                shard_id: on_shard.unwrap_or_default(),
            };
            match client.verify_baseline(request).await {
                Ok(response) => {
                    let baseline = response.into_inner();
                    print(std::slice::from_ref(&baseline), output);
                    if baseline.verification.is_some_and(|v| v.holds) {
                        ExitCode::from(exit::OK)
                    } else {
                        ExitCode::from(exit::DRIFT)
                    }
                }
                Err(status) => refused(&connection, output, &status),
            }
        }
        BaselineCommand::List { connection, output } => {
            let list = async |client: &mut FleetClient| {
                client.list_baselines(ListBaselinesRequest {}).await
            };
            one_call(&connection, output, list, |listed| {
                print(&listed.baselines, output);
            })
            .await
        }
    }
}

fn verified(baseline: &SchemaBaseline) -> &'static str {
    match &baseline.verification {
        None => "not verified",
        Some(verification) if verification.holds => "verified",
        Some(_) => "FAILED verification",
    }
}

fn described(baseline: &SchemaBaseline) -> Value {
    json!({
        "baseline": baseline.baseline_id,
        "version": baseline.version,
        "set_digest": baseline.set_digest,
        "fingerprint": baseline.fingerprint,
        "source_shard": baseline.source_shard,
        "taken_by": baseline.taken_by,
        "taken_at": baseline.taken_at.map(|at| at.to_string()),
        "verification": baseline.verification.as_ref().map(|verification| json!({
            "holds": verification.holds,
            "replayed": verification.replayed,
            "seeded": verification.seeded,
            "on_shard": verification.on_shard,
            "verified_by": verification.verified_by,
            "at": verification.at.map(|at| at.to_string()),
        })),
    })
}

fn print(baselines: &[SchemaBaseline], output: Output) {
    match output {
        Output::Json => {
            let listed: Vec<Value> = baselines.iter().map(described).collect();
            println!("{}", json!({ "baselines": listed }));
        }
        Output::Human => {
            if baselines.is_empty() {
                println!(
                    "no schema baseline; `fleetshift baseline create <dir> --from-shard <shard>` takes one"
                );
            }
            for baseline in baselines {
                println!(
                    "{} version {} of {} from {} ({}; fingerprint {})",
                    baseline.baseline_id,
                    baseline.version,
                    baseline
                        .set_digest
                        .get(..12)
                        .unwrap_or(&baseline.set_digest),
                    baseline.source_shard,
                    verified(baseline),
                    baseline
                        .fingerprint
                        .get(..12)
                        .unwrap_or(&baseline.fingerprint),
                );
                if let Some(verification) = baseline.verification.as_ref().filter(|v| !v.holds) {
                    println!(
                        "  replayed {} and seeded {}: the baseline does not build the set's schema; take it again",
                        verification.replayed, verification.seeded
                    );
                }
            }
        }
    }
}
