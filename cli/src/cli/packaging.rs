//! `fleetshift completions <shell>` and `fleetshift man --dir DIR`: shell completions and man
//! pages generated from the commands' own definitions (clap's), so they never drift from them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use super::{Cli, render};
use crate::exit;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; write the script where it looks for completions, e.g.
    /// `fleetshift completions bash > /etc/bash_completion.d/fleetshift`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where the pages go (created when missing): fleetshift.1, one page per subcommand
    /// (fleetshift-plan.1, …), and fleetshift-agent's.
    #[arg(long, default_value = "man")]
    dir: PathBuf,
}

pub fn completions(arguments: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    // Generated into memory: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(arguments.shell, &mut command, "fleetshift", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => ExitCode::from(exit::OK),
        // The reader stopped early (`| head`): nothing is wrong with the script.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: cannot write the completion script: {error}");
            ExitCode::from(exit::FAILED)
        }
    }
}

pub fn man(arguments: &ManArgs) -> ExitCode {
    let written = std::fs::create_dir_all(&arguments.dir)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), &arguments.dir))
        .and_then(|()| {
            clap_mangen::generate_to(fleetshift_agent::cli::Cli::command(), &arguments.dir)
        });
    match written {
        Ok(()) => {
            println!("man pages written to {}", arguments.dir.display());
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            let message = format!(
                "cannot write man pages to {}: {error}",
                arguments.dir.display()
            );
            render::failure(
                super::Output::Human,
                &message,
                fleetshift_common::error::ErrorKind::Failed,
            );
            ExitCode::from(exit::FAILED)
        }
    }
}
