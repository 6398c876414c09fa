//! Findings allowed in the SQL itself. `-- fleetshift:allow <rule> <reason>` allows that rule's
//! findings on the next statement (or the one starting on the same line); the reason is
//! required and travels with the finding. Lines between `-- safety-assured:start` and
//! `-- safety-assured:end` (crates.io's convention) are reviewed: every finding in them is
//! allowed. An allow comment without a reason is itself a finding.

use fleetshift_common::source::{Revision, Script};
use fleetshift_common::statements::Statement;

use super::{Finding, Severity};

const ALLOW: &str = "fleetshift:allow";
const REVIEWED_START: &str = "safety-assured:start";
const REVIEWED_END: &str = "safety-assured:end";
pub const ALLOW_WITHOUT_REASON: &str = "allow-without-reason";

#[derive(Debug, Default)]
pub(super) struct Allowances {
    /// (script line of the statement allowed, rule, reason).
    allows: Vec<(usize, String, String)>,
    /// Allow comments that name no reason: (script line, the comment).
    unexplained: Vec<(usize, String)>,
    /// Reviewed regions as inclusive script-line ranges.
    reviewed: Vec<(usize, usize)>,
}

impl Allowances {
    pub(super) fn read(script: &Script) -> Self {
        let mut allowances = Self::default();
        let mut open_region: Option<usize> = None;
        for (index, line) in script.sql.lines().enumerate() {
            let number = index + 1;
            let Some(comment) = line.find("--").map(|at| line[at + 2..].trim()) else {
                continue;
            };
            if comment.starts_with(REVIEWED_START) {
                open_region = Some(number);
            } else if comment.starts_with(REVIEWED_END) {
                if let Some(start) = open_region.take() {
                    allowances.reviewed.push((start, number));
                }
            } else if let Some(rest) = comment.strip_prefix(ALLOW) {
                let mut words = rest.split_whitespace();
                let rule = words.next().unwrap_or_default().to_owned();
                let reason = words.collect::<Vec<_>>().join(" ");
                if rule.is_empty() || reason.is_empty() {
                    allowances.unexplained.push((number, comment.to_owned()));
                } else if let Some(target) = script
                    .statements()
                    .iter()
                    .find(|statement| statement.line >= number)
                {
                    allowances.allows.push((target.line, rule, reason));
                }
            }
        }
        // An unterminated region reviews the rest of the script.
        if let Some(start) = open_region {
            allowances.reviewed.push((start, usize::MAX));
        }
        allowances
    }

    /// Why a finding of `rule` at `line` on `statement` is allowed, if it is.
    pub(super) fn allows(&self, rule: &str, statement: &Statement, line: usize) -> Option<String> {
        if self
            .reviewed
            .iter()
            .any(|(start, end)| (*start..=*end).contains(&line))
        {
            return Some("reviewed region (safety-assured)".to_owned());
        }
        self.allows
            .iter()
            .find(|(target, allowed, _)| *target == statement.line && allowed == rule)
            .map(|(_, _, reason)| reason.clone())
    }

    /// Allow comments that cannot be honoured, as findings of their own.
    pub(super) fn mistakes(&self, revision: &Revision) -> Vec<Finding> {
        self.unexplained
            .iter()
            .map(|(line, comment)| Finding {
                rule: ALLOW_WITHOUT_REASON.to_owned(),
                severity: Severity::Error,
                file: revision.up.path.clone(),
                line: revision.up.file_line(*line),
                revision: revision.label(),
                message: format!("`-- {comment}` names no rule or no reason, so it allows nothing"),
                hint: Some("write `-- fleetshift:allow <rule> <why it is safe here>`".to_owned()),
                statement: String::new(),
                allowed: None,
            })
            .collect()
    }
}
