//! Phases of a zero-downtime change: `-- fleetshift:phase expand|backfill|contract` in a
//! revision's up script. The application is deployed between phases: expand adds the new
//! shape beside the old, backfill fills it, contract removes the old. A fleet plan runs phase
//! by phase across every shard, each later phase behind a gate (see the coordinator's
//! rollout). A revision without the directive is in the phase of the revision before it;
//! revisions before the first marked one are in none.

use std::fmt;
use std::str::FromStr;

use super::{Revision, SourceProblem};

/// The comment that puts a revision in a phase.
pub const DIRECTIVE: &str = "fleetshift:phase";

/// A phase of a zero-downtime change, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Expand,
    Backfill,
    Contract,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Expand => "expand",
            Self::Backfill => "backfill",
            Self::Contract => "contract",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "expand" => Ok(Self::Expand),
            "backfill" => Ok(Self::Backfill),
            "contract" => Ok(Self::Contract),
            other => Err(format!(
                "unknown phase {other:?}; expected expand, backfill or contract"
            )),
        }
    }
}

/// Gives every revision its phase, in order; a phase that goes back (`expand` after
/// `contract`) or is not one is a problem at its line.
pub(super) fn mark(revisions: &mut [Revision], problems: &mut Vec<SourceProblem>) {
    let mut current: Option<(Phase, String)> = None;
    for revision in revisions {
        match read(revision) {
            Ok(Some(phase)) => {
                if let Some((before, label)) = &current
                    && phase < *before
                {
                    problems.push(SourceProblem::new(
                        &revision.up.path,
                        format!(
                            "phase {phase} comes after phase {before} (revision {label}); phases run expand, backfill, contract: move this revision before the {before} phase"
                        ),
                    ));
                }
                current = Some((phase, revision.label()));
            }
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
        revision.phase = current.as_ref().map(|(phase, _)| *phase);
    }
}

fn read(revision: &Revision) -> Result<Option<Phase>, SourceProblem> {
    let script = &revision.up;
    let mut directives = script.sql.lines().enumerate().filter_map(|(index, line)| {
        let comment = line.trim_start().strip_prefix("--")?.trim_start();
        let phase = comment.strip_prefix(DIRECTIVE)?;
        Some((script.file_line(index + 1), phase.trim()))
    });
    let Some((line, phase)) = directives.next() else {
        return Ok(None);
    };
    if let Some((again, _)) = directives.next() {
        return Err(SourceProblem::at_line(
            &script.path,
            again,
            format!(
                "a second `{DIRECTIVE}` directive (the first is on line {line}); a revision is in one phase"
            ),
        ));
    }
    phase
        .parse()
        .map(Some)
        .map_err(|error: String| SourceProblem::at_line(&script.path, line, error))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::source::{Script, Version};

    fn revision(version: &str, sql: &str) -> Revision {
        let up = Script::new(
            PathBuf::from(format!("{version}_r.up.sql")),
            1,
            sql.to_owned(),
        );
        Revision::new(
            Version::integer(version).expect("version"),
            "r",
            up,
            None,
            true,
        )
    }

    fn phases(scripts: &[&str]) -> (Vec<Option<Phase>>, Vec<String>) {
        let mut revisions: Vec<Revision> = scripts
            .iter()
            .enumerate()
            .map(|(index, sql)| revision(&(index + 1).to_string(), sql))
            .collect();
        let mut problems = Vec::new();
        mark(&mut revisions, &mut problems);
        (
            revisions.iter().map(|revision| revision.phase).collect(),
            problems.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn unmarked_revisions_are_in_the_phase_before_them() {
        let (found, problems) = phases(&[
            "CREATE TABLE t (a int);",
            "-- fleetshift:phase expand\nALTER TABLE t ADD b int;",
            "CREATE INDEX CONCURRENTLY i ON t (b);",
            "--fleetshift:phase backfill\nUPDATE t SET b = a;",
            "-- fleetshift:phase contract\nALTER TABLE t DROP a;",
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            found,
            [
                None,
                Some(Phase::Expand),
                Some(Phase::Expand),
                Some(Phase::Backfill),
                Some(Phase::Contract)
            ]
        );
    }

    #[test]
    fn phases_out_of_order_or_unknown_are_problems() {
        let (_, problems) = phases(&[
            "-- fleetshift:phase contract\nSELECT 1;",
            "-- fleetshift:phase expand\nSELECT 1;",
            "-- fleetshift:phase migrate\nSELECT 1;",
            "-- fleetshift:phase expand\n-- fleetshift:phase backfill\nSELECT 1;",
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("2_r.up.sql: phase expand comes after phase contract (revision 1_r)"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("3_r.up.sql:1: unknown phase \"migrate\""),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("4_r.up.sql:2: a second"),
            "{problems:?}"
        );
    }
}
