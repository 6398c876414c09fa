//! Command-line interface of the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use fleetshift_common::telemetry::endpoint;
use fleetshift_common::telemetry::logging::LogOptions;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::AcquireTimes;
use crate::session::SessionTelemetry;
use crate::{check, config, rehearse, session, tenants};

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

    #[command(flatten)]
    pub logging: LogOptions,

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
    /// Hold a session with the fleet's coordinators until SIGTERM or Ctrl-C.
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Runs the command; `acquire_times` is filled by the layer `main` installed, and shown with
/// the agent's other metrics.
pub async fn run(cli: Cli, acquire_times: AcquireTimes) -> ExitCode {
    let mut config = match config::AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    if let Err(why) = tenants::discover(&mut config).await {
        eprintln!("error: {}: {why}", cli.config.display());
        return ExitCode::from(BAD_CONFIG);
    }
    match cli.command {
        Command::Check { output } => check::run(&config, output).await,
        Command::Run => {
            let Some(link) = config.coordinator.clone() else {
                eprintln!(
                    "error: {}: `run` needs [coordinator] and [tls] sections",
                    cli.config.display()
                );
                return ExitCode::from(BAD_CONFIG);
            };
            fleetshift_common::tls::mtls::install_crypto_provider();
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let mut registry = Registry::default();
            let telemetry = SessionTelemetry::new(&mut registry);
            acquire_times.register(&mut registry);
            if let Some(address) = config.telemetry_listen {
                let serving = endpoint::spawn(
                    address,
                    Arc::new(registry),
                    telemetry.readiness.subscribe(),
                    shutdown.clone(),
                )
                .await;
                if let Err(error) = serving {
                    eprintln!("error: cannot serve telemetry on {address}: {error}");
                    return ExitCode::from(BAD_CONFIG);
                }
            }
            rehearse::drop_leftovers(&config).await;
            session::run(Arc::new(config), &link, &telemetry, shutdown).await;
            ExitCode::SUCCESS
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    shutdown.cancel();
}
