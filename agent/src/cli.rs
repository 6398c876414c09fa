//! Command-line interface of the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{check, config};

/// Exit code when the configuration is unusable.
pub const BAD_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "fleetshift-agent",
    version,
    about = "fleetshift sidecar: runs migration work on the database shards of this host",
    after_help = "Exit codes: 0 every shard reachable, 2 bad configuration, 6 a shard is unreachable."
)]
pub struct Cli {
    /// Agent configuration file (TOML).
    #[arg(
        long,
        env = "FLEETSHIFT_AGENT_CONFIG",
        default_value = "/etc/fleetshift/agent.toml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and report every shard's ledger (version, fence, health).
    Check {
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

pub async fn run(cli: Cli) -> ExitCode {
    let config = match config::AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    match cli.command {
        Command::Check { output } => check::run(&config, output).await,
    }
}
