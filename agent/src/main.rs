//! `fleetshift-agent`: the sidecar that runs next to every database host.

use std::process::ExitCode;

use clap::Parser;
use fleetshift_agent::cli;

fn main() -> ExitCode {
    let arguments = cli::Cli::parse();
    fleetshift_common::telemetry::logging::init(arguments.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(arguments))
}
