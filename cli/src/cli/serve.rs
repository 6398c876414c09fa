//! `fleetshift serve`: run one coordinator replica until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fleetshift_coordinator::config::CoordinatorConfig;
use fleetshift_coordinator::serve;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Coordinator configuration file (TOML).
    #[arg(
        long,
        env = "FLEETSHIFT_COORDINATOR_CONFIG",
        default_value = "/etc/fleetshift/coordinator.toml"
    )]
    config: PathBuf,
}

pub async fn run(arguments: ServeArgs) -> ExitCode {
    let config = match CoordinatorConfig::load(&arguments.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match serve::run_coordinator(config, shutdown_requested()).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_requested() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the coordinator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
