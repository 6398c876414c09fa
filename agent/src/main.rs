//! `fleetshift-agent`: the sidecar that runs next to every database host.

use std::process::ExitCode;

use clap::Parser;
use fleetshift_agent::cli;
use fleetshift_agent::metrics::AcquireTimes;

fn main() -> ExitCode {
    let arguments = cli::Cli::parse();
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
    let acquire_times = AcquireTimes::default();
    let traces = {
        let _entered = runtime.enter();
        fleetshift_common::telemetry::logging::init(
            arguments.logging.format,
            "info",
            "fleetshift-agent",
            Some(Box::new(acquire_times.layer())),
        )
    };
    let traces = match traces {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(cli::BAD_CONFIG);
        }
    };
    let code = runtime.block_on(cli::run(arguments, acquire_times));
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}
