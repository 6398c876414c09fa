//! Phased plans: a set whose revisions are marked `-- fleetshift:phase expand|backfill|contract`
//! rolls out phase by phase across the whole fleet. Each phase takes every shard to its last
//! revision; the next phase starts only when every shard of the plan finished the one before
//! and its **gate** is open: opened by an approver (`fleetshift gate open`, or a deploy
//! pipeline's `OpenGate` call), or by its condition (no session of the old application on any
//! shard for a while, as the agents' facts show), or none at all (`--no-gate`).
//!
//! The leader keeps a waiting gate's state in the plan (`quiet_since`, `waiting_for`), so a new
//! leader goes on where the last one was, and status shows what the gate waits for.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fleetshift_common::proto::v1::{GateRequest, PhaseGate, Plan, PlanPhase, ShardFacts};
use fleetshift_common::source::{MigrationSet, Phase};

use super::RolloutError;

/// Who opens a gate whose condition held.
pub const BY_CONDITION: &str = "condition";

/// The shortest quiet period a gate may ask for: the agents' facts come every few seconds.
const MIN_QUIET: Duration = Duration::from_secs(1);

/// The phases of `set`'s revisions up to `target` (its index), with the gates `requested`;
/// empty when none of them is in a phase. Revisions before the first phased one run in the
/// first phase.
pub fn planned(
    set: &MigrationSet,
    target: usize,
    requested: &[GateRequest],
) -> Result<Vec<PlanPhase>, RolloutError> {
    let mut phases: Vec<(Phase, String)> = Vec::new();
    for revision in set.revisions.iter().take(target + 1) {
        let Some(phase) = revision.phase else {
            continue;
        };
        match phases.last_mut() {
            Some((last, version)) if *last == phase => *version = revision.version.to_string(),
            _ => phases.push((phase, revision.version.to_string())),
        }
    }
    if phases.is_empty() {
        if let Some(gate) = requested.first() {
            return Err(RolloutError::BadRequest(format!(
                "--gate for phase {:?}: no revision up to the target is in a phase (`-- fleetshift:phase …`)",
                gate.phase
            )));
        }
        return Ok(Vec::new());
    }
    // Unphased revisions before the first phase run with it; the last phase ends at the target.
    if let Some((_, version)) = phases.last_mut() {
        *version = set.revisions[target].version.to_string();
    }
    for gate in requested {
        let index = phases
            .iter()
            .position(|(phase, _)| phase.name() == gate.phase)
            .ok_or_else(|| {
                let names: Vec<&str> = phases.iter().map(|(phase, _)| phase.name()).collect();
                RolloutError::BadRequest(format!(
                    "--gate for phase {:?}: the plan's phases are {}",
                    gate.phase,
                    names.join(", ")
                ))
            })?;
        if index == 0 {
            return Err(RolloutError::BadRequest(format!(
                "--gate for phase {}: the first phase has no gate (it starts with the rollout)",
                gate.phase
            )));
        }
        check_quiet(gate)?;
    }
    Ok(phases
        .into_iter()
        .enumerate()
        .map(|(index, (phase, last_version))| {
            let gate = (index > 0).then(|| {
                let requested = requested.iter().find(|gate| gate.phase == phase.name());
                PhaseGate {
                    none: requested.is_some_and(|gate| gate.none),
                    quiet_application: requested
                        .map(|gate| gate.quiet_application.clone())
                        .unwrap_or_default(),
                    quiet_for: requested.and_then(|gate| gate.quiet_for),
                    ..PhaseGate::default()
                }
            });
            PlanPhase {
                name: phase.name().to_owned(),
                last_version,
                gate,
                started_at: None,
            }
        })
        .collect())
}

fn check_quiet(gate: &GateRequest) -> Result<(), RolloutError> {
    if gate.none && !gate.quiet_application.is_empty() {
        return Err(RolloutError::BadRequest(format!(
            "phase {}: a gate is either none or waits on an application, not both",
            gate.phase
        )));
    }
    if gate.quiet_application.is_empty() {
        return Ok(());
    }
    let quiet_for = gate
        .quiet_for
        .and_then(|quiet| Duration::try_from(quiet).ok())
        .unwrap_or_default();
    if quiet_for < MIN_QUIET {
        return Err(RolloutError::BadRequest(format!(
            "phase {}: the quiet period must be at least {}s (the agents report sessions every few seconds)",
            gate.phase,
            MIN_QUIET.as_secs()
        )));
    }
    Ok(())
}

/// Where the plan takes each shard now: its current phase's last revision, else its target.
pub fn target(plan: &Plan) -> &str {
    plan.phases
        .get(plan.current_phase as usize)
        .map_or(&plan.target_version, |phase| &phase.last_version)
}

/// The index of the phase after the current one, when there is one.
pub fn next(plan: &Plan) -> Option<usize> {
    let next = plan.current_phase as usize + 1;
    (next < plan.phases.len()).then_some(next)
}

/// Opens `phase`'s gate for `who`, `why`.
pub fn open(
    plan: &mut Plan,
    phase: &str,
    who: &str,
    why: &str,
    at: SystemTime,
) -> Result<(), RolloutError> {
    if why.trim().is_empty() {
        return Err(RolloutError::BadRequest(
            "say why the gate opens (--reason): what was deployed or checked".to_owned(),
        ));
    }
    let plan_id = plan.plan_id.clone();
    let current = plan.current_phase as usize;
    let names: Vec<String> = plan.phases.iter().map(|phase| phase.name.clone()).collect();
    let Some((index, found)) = plan
        .phases
        .iter_mut()
        .enumerate()
        .find(|(_, found)| found.name == phase)
    else {
        return Err(RolloutError::BadRequest(if names.is_empty() {
            format!(
                "plan {plan_id} has no phases: its revisions are not marked `-- fleetshift:phase`"
            )
        } else {
            format!(
                "plan {plan_id} has phases {}; no {phase:?}",
                names.join(", ")
            )
        }));
    };
    if index == 0 || (index <= current && found.started_at.is_some()) {
        return Err(RolloutError::NotNow(format!(
            "phase {phase} of plan {plan_id} has started already; no gate to open"
        )));
    }
    let gate = found.gate.get_or_insert_with(PhaseGate::default);
    if gate.opened || gate.none {
        return Ok(());
    }
    gate.opened = true;
    gate.opened_by = who.to_owned();
    gate.reason = why.to_owned();
    gate.opened_at = Some(at.into());
    gate.waiting_for.clear();
    Ok(())
}

/// A gate as the fleet stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The gate as it should be stored: its waiting state, or opened by its condition.
    pub gate: PhaseGate,
    pub open: bool,
}

/// Judges `gate` at `now` from the latest facts of the plan's `shards`.
pub fn judge(
    gate: &PhaseGate,
    shards: &[&str],
    facts: &HashMap<&str, &ShardFacts>,
    now: SystemTime,
) -> Judged {
    let mut gate = gate.clone();
    if gate.none || gate.opened {
        return Judged { gate, open: true };
    }
    let approver = "an approver (`fleetshift gate open <plan> <phase> --reason …`)".to_owned();
    if gate.quiet_application.is_empty() {
        gate.waiting_for = approver;
        return Judged { gate, open: false };
    }
    let pattern = gate.quiet_application.clone();
    let mut busy = Vec::new();
    let mut unknown = Vec::new();
    let mut oldest: Option<SystemTime> = None;
    for shard in shards {
        match facts.get(shard).filter(|facts| facts.applications_read) {
            None => unknown.push(*shard),
            Some(facts) => {
                let sessions: u32 = facts
                    .applications
                    .iter()
                    .filter(|seen| matches(&pattern, &seen.application_name))
                    .map(|seen| seen.sessions)
                    .sum();
                if sessions > 0 {
                    busy.push(format!("{sessions} on {shard}"));
                }
                let observed = facts
                    .observed_at
                    .and_then(|at| SystemTime::try_from(at).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                oldest = Some(oldest.map_or(observed, |oldest| oldest.min(observed)));
            }
        }
    }
    if !busy.is_empty() || !unknown.is_empty() {
        gate.quiet_since = None;
        let mut waits = Vec::new();
        if !busy.is_empty() {
            waits.push(format!(
                "sessions of {pattern} to end ({})",
                busy.join(", ")
            ));
        }
        if !unknown.is_empty() {
            waits.push(format!(
                "the sessions of {} to be known",
                unknown.join(", ")
            ));
        }
        waits.push(format!("or {approver}"));
        gate.waiting_for = waits.join("; ");
        return Judged { gate, open: false };
    }
    let quiet_for = gate
        .quiet_for
        .and_then(|quiet| Duration::try_from(quiet).ok())
        .unwrap_or_default();
    let since = gate
        .quiet_since
        .and_then(|since| SystemTime::try_from(since).ok())
        .unwrap_or(now);
    gate.quiet_since = Some(since.into());
    let due = since + quiet_for;
    // Open once the quiet period has passed and every shard was seen quiet after it.
    if oldest.is_some_and(|oldest| oldest >= due) && now >= due {
        gate.opened = true;
        gate.opened_by = BY_CONDITION.to_owned();
        gate.reason = format!(
            "no session of {pattern} on any of the plan's {} shards for {}s",
            shards.len(),
            quiet_for.as_secs()
        );
        gate.opened_at = Some(now.into());
        gate.waiting_for.clear();
        return Judged { gate, open: true };
    }
    gate.waiting_for = format!(
        "no session of {pattern} on any shard for {}s (quiet since it says); or {approver}",
        quiet_for.as_secs()
    );
    Judged { gate, open: false }
}

/// Whether `name` matches `pattern`, where `*` stands for any characters.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests;
