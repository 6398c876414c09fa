//! `fleetshift schema drift|show|diff` (viewer): the fleet's schemas as their agents last read
//! them. Drift groups the shards of each version by fingerprint: the fingerprint most of them
//! have is the version's majority, every other shard an outlier, shown with what differs from
//! the majority object by object. Exit 0: no drift (or the two shards agree); 3: drift.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetshift_common::proto::v1::{GetSchemaRequest, ListShardsRequest, ShardSummary};
use fleetshift_common::schema::drift::{self, ShardSchema};
use fleetshift_common::schema::{Fingerprint, Snapshot};
use serde_json::json;

use super::Output;
use super::fleet::{Connection, client, parse_label, refused};
use super::progress::FleetClient;
use crate::exit;

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Group shards by version and schema fingerprint: each version's majority and every
    /// shard that differs from it, with the differences. Exit 3 when a shard differs.
    Drift {
        #[command(flatten)]
        connection: Connection,
        /// Only shards whose labels match, e.g. `--selector env=production` (repeatable).
        #[arg(long = "selector", value_parser = parse_label)]
        selector: Vec<(String, String)>,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// A shard's schema as its canonical snapshot (the text its fingerprint hashes).
    Show {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        shard: String,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// What differs between two shards' schemas: `--shard A --shard B`, A's objects against
    /// B's. Exit 3 when they differ.
    Diff {
        #[command(flatten)]
        connection: Connection,
        #[arg(long = "shard", num_args = 1, required = true)]
        shards: Vec<String>,
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

pub async fn run(arguments: SchemaArgs) -> ExitCode {
    let (connection, output) = match &arguments.command {
        SchemaCommand::Drift {
            connection, output, ..
        }
        | SchemaCommand::Show {
            connection, output, ..
        }
        | SchemaCommand::Diff {
            connection, output, ..
        } => (connection, *output),
    };
    let client = match client(connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mut schemas = Schemas {
        client,
        read: HashMap::new(),
    };
    let result = match &arguments.command {
        SchemaCommand::Drift { selector, .. } => drift(&mut schemas, selector, output).await,
        SchemaCommand::Show { shard, .. } => show(&mut schemas, shard, output).await,
        SchemaCommand::Diff { shards, .. } => diff(&mut schemas, shards, output).await,
    };
    match result {
        Ok(code) => code,
        Err(Refusal::Status(status)) => refused(connection, output, &status),
        Err(Refusal::Input(message)) => {
            super::render::failure(
                output,
                &message,
                fleetshift_common::error::ErrorKind::BadInput,
            );
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

enum Refusal {
    Status(tonic::Status),
    Input(String),
}

impl From<tonic::Status> for Refusal {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// The coordinator's shards and snapshots, each snapshot fetched once.
struct Schemas {
    client: FleetClient,
    read: HashMap<Fingerprint, Snapshot>,
}

impl Schemas {
    async fn shards(
        &mut self,
        selector: &[(String, String)],
    ) -> Result<Vec<ShardSummary>, Refusal> {
        let request = ListShardsRequest {
            selector: selector.iter().cloned().collect(),
        };
        Ok(self.client.list_shards(request).await?.into_inner().shards)
    }

    async fn snapshot(&mut self, fingerprint: &Fingerprint) -> Result<&Snapshot, Refusal> {
        if !self.read.contains_key(fingerprint) {
            let request = GetSchemaRequest {
                fingerprint: fingerprint.to_string(),
            };
            let canonical = self
                .client
                .get_schema(request)
                .await?
                .into_inner()
                .canonical;
            let snapshot = Snapshot::parse(&canonical).map_err(|error| {
                Refusal::Input(format!("the coordinator's snapshot {fingerprint}: {error}"))
            })?;
            self.read.insert(fingerprint.clone(), snapshot);
        }
        self.read
            .get(fingerprint)
            .ok_or_else(|| Refusal::Input(format!("snapshot {fingerprint} went missing")))
    }
}

/// The fingerprint of `shard`'s schema in `listed`, or why there is none.
fn fingerprint_of(listed: &[ShardSummary], shard: &str) -> Result<Fingerprint, Refusal> {
    let Some(found) = listed.iter().find(|listed| listed.shard_id == shard) else {
        return Err(Refusal::Input(format!(
            "no shard {shard} in the fleet; `fleetshift shards` lists them"
        )));
    };
    Fingerprint::from_hex(&found.schema_fingerprint).ok_or_else(|| {
        Refusal::Input(format!(
            "shard {shard}: its agent has not read its schema yet (it does every `schema_check`, and on connecting)"
        ))
    })
}

async fn drift(
    schemas: &mut Schemas,
    selector: &[(String, String)],
    output: Output,
) -> Result<ExitCode, Refusal> {
    let listed = schemas.shards(selector).await?;
    let mut shards = Vec::new();
    let mut unchecked = Vec::new();
    for shard in &listed {
        match ShardSchema::reported(
            &shard.shard_id,
            &shard.current_version,
            &shard.schema_fingerprint,
        ) {
            Some(read) => shards.push(read),
            None => unchecked.push(shard.shard_id.as_str()),
        }
    }
    let versions = drift::by_version(&shards);
    let mut reported = Vec::new();
    let mut drifted = false;
    for version in &versions {
        let mut outliers = Vec::new();
        for outlier in &version.outliers {
            drifted = true;
            let majority = schemas.snapshot(&version.majority).await?.clone();
            let differences: Vec<String> = schemas
                .snapshot(&outlier.fingerprint)
                .await?
                .diff(&majority)
                .iter()
                .map(ToString::to_string)
                .collect();
            outliers.push(json!({
                "shard": outlier.shard_id,
                "fingerprint": outlier.fingerprint,
                "differences": differences,
            }));
        }
        reported.push(json!({
            "version": version.version,
            "majority": version.majority,
            "majority_shards": version.majority_shards,
            "contested": version.contested,
            "outliers": outliers,
        }));
    }
    match output {
        Output::Json => println!(
            "{}",
            json!({ "drifted": drifted, "versions": reported, "unchecked": unchecked })
        ),
        Output::Human => print_drift(&reported, &unchecked),
    }
    Ok(ExitCode::from(if drifted { exit::DRIFT } else { exit::OK }))
}

fn print_drift(versions: &[serde_json::Value], unchecked: &[&str]) {
    for version in versions {
        let majority = version["majority"].as_str().unwrap_or_default();
        println!(
            "version {}: {} shard(s) at {}{}",
            version["version"].as_str().unwrap_or_default(),
            version["majority_shards"],
            majority.get(..12).unwrap_or(majority),
            if version["contested"] == true {
                " (contested: another schema has as many shards)"
            } else {
                ""
            }
        );
        for outlier in version["outliers"].as_array().into_iter().flatten() {
            let fingerprint = outlier["fingerprint"].as_str().unwrap_or_default();
            println!(
                "  DRIFTED {} at {}:",
                outlier["shard"].as_str().unwrap_or_default(),
                fingerprint.get(..12).unwrap_or(fingerprint)
            );
            for difference in outlier["differences"].as_array().into_iter().flatten() {
                println!("    {}", difference.as_str().unwrap_or_default());
            }
        }
    }
    if !unchecked.is_empty() {
        println!("not read yet: {}", unchecked.join(", "));
    }
}

async fn show(schemas: &mut Schemas, shard: &str, output: Output) -> Result<ExitCode, Refusal> {
    let listed = schemas.shards(&[]).await?;
    let fingerprint = fingerprint_of(&listed, shard)?;
    let snapshot = schemas.snapshot(&fingerprint).await?;
    match output {
        Output::Json => println!(
            "{}",
            json!({ "shard": shard, "fingerprint": fingerprint, "objects": snapshot.len(), "canonical": snapshot.canonical() })
        ),
        Output::Human => {
            println!("-- shard {shard}, schema {fingerprint}");
            print!("{}", snapshot.canonical());
        }
    }
    Ok(ExitCode::from(exit::OK))
}

async fn diff(
    schemas: &mut Schemas,
    shards: &[String],
    output: Output,
) -> Result<ExitCode, Refusal> {
    let [ours, reference] = shards else {
        return Err(Refusal::Input(format!(
            "schema diff compares two shards (`--shard A --shard B`), not {}",
            shards.len()
        )));
    };
    let listed = schemas.shards(&[]).await?;
    let mine = fingerprint_of(&listed, ours)?;
    let theirs = fingerprint_of(&listed, reference)?;
    let against = schemas.snapshot(&theirs).await?.clone();
    let differences: Vec<String> = schemas
        .snapshot(&mine)
        .await?
        .diff(&against)
        .iter()
        .map(ToString::to_string)
        .collect();
    match output {
        Output::Json => println!(
            "{}",
            json!({ "shard": ours, "reference": reference, "fingerprint": mine, "reference_fingerprint": theirs, "differences": differences })
        ),
        Output::Human if differences.is_empty() => {
            println!(
                "{ours} and {reference} have the same schema ({})",
                mine.short()
            );
        }
        Output::Human => {
            println!(
                "{ours} ({}) against {reference} ({}):",
                mine.short(),
                theirs.short()
            );
            for difference in &differences {
                println!("  {difference}");
            }
        }
    }
    Ok(ExitCode::from(if differences.is_empty() {
        exit::OK
    } else {
        exit::DRIFT
    }))
}
