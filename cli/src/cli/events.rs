//! `fleetshift events` (and `watch --all`): every event of the fleet, or of one plan, as it
//! happens, one line each (JSON lines with `--output json`, field names in
//! docs/configuration.md), each with its sequence. The stream moves on to another replica
//! when its own goes away and continues after the last sequence seen; `--since` does the
//! same across runs of the command.

use std::process::ExitCode;

use clap::Args;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{PlanState, RolloutEvent, ShardState};
use fleetshift_common::rollout_names::{plan_state_name, shard_state_name};

use super::Output;
use super::fleet::{Connection, client, refused};
use super::progress::resume::{Resumable, Watched};
use super::progress::{FleetClient, event_json, progress_line};
use crate::exit;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this plan's events (the stream then ends with the plan's rollout).
    #[arg(long)]
    plan: Option<String>,
    /// Continue after this sequence (the last one seen, from any replica); 0: begin with the
    /// current state of every plan.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Also every statement as it finishes.
    #[arg(long)]
    statements: bool,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// A stream to print.
#[derive(Debug)]
pub struct Stream<'c> {
    pub connection: &'c Connection,
    pub watched: Watched,
    pub since: u64,
    pub statements: bool,
    pub output: Output,
}

pub async fn run(arguments: EventsArgs) -> ExitCode {
    let client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let watched = match arguments.plan {
        Some(plan) => Watched::Plan(plan),
        None => Watched::Fleet,
    };
    let stream = Stream {
        connection: &arguments.connection,
        watched,
        since: arguments.since,
        statements: arguments.statements,
        output: arguments.output,
    };
    self::stream(client, stream).await
}

/// Prints `stream` until it ends or the operator interrupts it.
pub async fn stream(client: FleetClient, stream: Stream<'_>) -> ExitCode {
    let Stream {
        connection,
        watched,
        since,
        statements,
        output,
    } = stream;
    let mut events = Resumable::new(client, Some(connection), watched, statements, since);
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => return ExitCode::from(exit::OK),
        };
        match next {
            Ok(Some(event)) => match output {
                Output::Json => println!("{}", event_json(&event)),
                Output::Human => println!("{}", line(&event)),
            },
            Ok(None) => return ExitCode::from(exit::OK),
            Err(status) => return refused(connection, output, &status),
        }
    }
}

/// `1234567 p1796… a-db0 running`: the sequence, the plan, then what happened.
fn line(event: &RolloutEvent) -> String {
    let what = match &event.event {
        Some(Event::PlanState(changed)) => {
            let state = plan_state_name(PlanState::try_from(changed.state).unwrap_or_default());
            if changed.reason.is_empty() {
                format!("plan {state}")
            } else {
                format!("plan {state} ({})", changed.reason)
            }
        }
        Some(Event::ShardState(changed)) => {
            let state = shard_state_name(ShardState::try_from(changed.state).unwrap_or_default());
            match &changed.error {
                Some(error) => format!("{} {state}: {}", changed.shard_id, error.message),
                None => format!("{} {state}", changed.shard_id),
            }
        }
        Some(Event::Progress(progress)) => {
            let what = progress_line(progress).unwrap_or_else(|| "revision started".to_owned());
            format!("{} {what}", progress.shard_id)
        }
        None => "(an event this version does not know)".to_owned(),
    };
    format!("{} {} {what}", event.sequence, event.plan_id)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    fn parses(arguments: &[&str]) -> bool {
        let connection = [
            "--coordinator",
            "https://a:7443,https://b:7443",
            "--certificate",
            "op.pem",
            "--private-key",
            "op.key",
            "--trust-bundle",
            "ca.pem",
        ];
        let all = ["fleetshift"].iter().chain(arguments).chain(&connection);
        Cli::try_parse_from(all).is_ok()
    }

    #[test]
    fn watch_follows_a_plan_or_the_whole_fleet_and_events_can_resume() {
        assert!(parses(&["watch", "p1"]));
        assert!(parses(&["watch", "--all", "--since", "42"]));
        assert!(!parses(&["watch"]), "a plan or --all");
        assert!(!parses(&["watch", "p1", "--all"]), "not both");
        assert!(parses(&["watch", "p1", "--since", "42"]));
        assert!(parses(&["events", "--since", "42", "--output", "json"]));
        assert!(parses(&["events", "--plan", "p1", "--statements"]));
    }
}
