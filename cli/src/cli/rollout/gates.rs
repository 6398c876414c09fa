//! `fleetshift plan`'s gates for a phased set: which later phases start without one
//! (`--no-gate contract`), and which also open by themselves once an old application version
//! has left every shard (`--gate-when-quiet contract=billing-v1*@10m`). A phase named in
//! neither waits for an approver's `fleetshift gate open`.

use std::time::Duration;

use clap::Args;
use fleetshift_common::proto::v1::GateRequest;

#[derive(Debug, Args)]
pub struct GateArgs {
    /// A phase that starts as soon as every shard finished the phase before it (repeatable),
    /// e.g. `--no-gate backfill`. Later phases otherwise wait for `fleetshift gate open`.
    #[arg(long = "no-gate", value_name = "PHASE")]
    no_gate: Vec<String>,
    /// A phase whose gate also opens by itself once no shard of the plan has had a session
    /// whose application_name matches PATTERN (`*`: any characters) for DURATION, as the
    /// agents report them, e.g. `contract=billing-v1*@10m` (repeatable).
    #[arg(long = "gate-when-quiet", value_name = "PHASE=PATTERN@DURATION", value_parser = parse_quiet)]
    when_quiet: Vec<(String, String, Duration)>,
}

impl GateArgs {
    /// The gates as the plan request carries them.
    pub fn requests(&self) -> Vec<GateRequest> {
        let none = self.no_gate.iter().map(|phase| GateRequest {
            phase: phase.clone(),
            none: true,
            ..GateRequest::default()
        });
        let quiet = self
            .when_quiet
            .iter()
            .map(|(phase, pattern, quiet_for)| GateRequest {
                phase: phase.clone(),
                none: false,
                quiet_application: pattern.clone(),
                quiet_for: prost_types::Duration::try_from(*quiet_for).ok(),
            });
        none.chain(quiet).collect()
    }
}

/// `PHASE=PATTERN@DURATION`.
fn parse_quiet(text: &str) -> Result<(String, String, Duration), String> {
    let usage =
        || format!("{text:?}: expected PHASE=PATTERN@DURATION, e.g. contract=billing-v1*@10m");
    let (phase, rest) = text.split_once('=').ok_or_else(usage)?;
    let (pattern, duration) = rest.rsplit_once('@').ok_or_else(usage)?;
    if phase.is_empty() || pattern.is_empty() {
        return Err(usage());
    }
    let duration = fleetshift_common::duration::parse(duration)?;
    Ok((phase.to_owned(), pattern.to_owned(), duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_gates_name_a_phase_a_pattern_and_a_period() {
        assert_eq!(
            parse_quiet("contract=billing-v1*@10m"),
            Ok((
                "contract".to_owned(),
                "billing-v1*".to_owned(),
                Duration::from_secs(600)
            ))
        );
        assert!(
            parse_quiet("contract=billing-v1*")
                .is_err_and(|error| error.contains("PHASE=PATTERN@DURATION"))
        );
        assert!(parse_quiet("=x@1m").is_err());
    }
}
