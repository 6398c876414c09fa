//! `fleetshift`: the operator CLI, local migration commands and the demo.

use std::process::ExitCode;

use clap::Parser;

mod alembic;
mod cli;
mod demo;
mod exit;

fn main() -> ExitCode {
    let arguments = cli::Cli::parse();
    // The demo prints its own progress; per-revision logs would drown it.
    let default_level = match arguments.command {
        cli::Command::Demo(_) => "warn",
        cli::Command::Migrate(_) | cli::Command::Certs(_) | cli::Command::Serve(_) => "info",
        cli::Command::Lint(_)
        | cli::Command::Shards(_)
        | cli::Command::Lifecycle(_)
        | cli::Command::Plan(_)
        | cli::Command::Approve(_)
        | cli::Command::Gate(_)
        | cli::Command::Apply(_)
        | cli::Command::Watch(_)
        | cli::Command::Events(_)
        | cli::Command::Status(_)
        | cli::Command::Pause(_)
        | cli::Command::Resume(_)
        | cli::Command::Cancel(_)
        | cli::Command::Rollback(_)
        | cli::Command::Backups(_)
        | cli::Command::Rehearse(_)
        | cli::Command::Schema(_)
        | cli::Command::Throttle(_)
        | cli::Command::Replicas(_)
        | cli::Command::Retry(_)
        | cli::Command::Target(_)
        | cli::Command::Baseline(_)
        | cli::Command::Completions(_)
        | cli::Command::Man(_) => "warn",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let service = match arguments.command {
        cli::Command::Serve(_) => "fleetshift-coordinator",
        // One process holding the coordinator and the agents: its trace shows both sides.
        cli::Command::Demo(_) => "fleetshift-demo",
        _ => "fleetshift-cli",
    };
    let traces = {
        let _entered = runtime.enter();
        fleetshift_common::telemetry::logging::init(
            arguments.logging.format,
            default_level,
            service,
            None,
        )
    };
    let traces = match traces {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let code = runtime.block_on(cli::run(arguments));
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}
