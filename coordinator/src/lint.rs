//! Lint of a migration set before anything runs: squawk's PostgreSQL rules (their names kept as
//! finding ids, so existing knowledge and suppressions carry over) plus fleetshift's own rules
//! for what squawk does not see (whole-table writes, statements that cannot run in the
//! revision's transaction, missing down scripts, enum values used where they are added,
//! unbatched backfills). Findings can be allowed in the SQL itself with a reason
//! (`-- fleetshift:allow <rule> <reason>`), and crates.io-style `-- safety-assured:start/end`
//! regions count as reviewed.
//!
//! - [`squawk`]: squawk's violations as findings, with their severity.
//! - [`rules`]: fleetshift's own rules.
//! - [`allowances`]: allow comments and reviewed regions.

mod allowances;
mod rules;
mod squawk;

use std::path::PathBuf;

use fleetshift_common::source::{MigrationSet, Revision, Script};
use fleetshift_common::statements::Statement;
use serde::Serialize;

/// How much a finding matters; ordered, so `--fail-on` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing found in one statement (or one revision).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// squawk's rule name, or one of fleetshift's (`unbounded-update-delete`, …).
    pub rule: String,
    pub severity: Severity,
    /// The script, as the set names it.
    pub file: PathBuf,
    /// 1-based line in that file.
    pub line: usize,
    pub revision: String,
    pub message: String,
    /// What to do instead.
    pub hint: Option<String>,
    /// The statement's first line.
    pub statement: String,
    /// Why it is allowed, when an allow comment or a reviewed region covers it.
    pub allowed: Option<String>,
}

impl Finding {
    /// Counts against `--fail-on`: not allowed.
    pub fn is_open(&self) -> bool {
        self.allowed.is_none()
    }
}

/// Every finding of a set, in file order, and how much was read.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub revisions: usize,
    pub statements: usize,
    pub findings: Vec<Finding>,
}

impl LintReport {
    /// Open findings at `severity` or above.
    pub fn open_at_or_above(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.is_open() && finding.severity >= severity)
            .count()
    }
}

/// Lints every revision's up script (and notes revisions without a down script).
pub fn lint_set(set: &MigrationSet) -> LintReport {
    lint_revisions(&set.revisions)
}

/// Lints these revisions (a plan lints those it applies).
pub fn lint_revisions(revisions: &[Revision]) -> LintReport {
    let mut findings = Vec::new();
    let mut statements = 0;
    for revision in revisions {
        statements += revision.up.statements().len();
        findings.extend(lint_revision(revision));
    }
    LintReport {
        revisions: revisions.len(),
        statements,
        findings,
    }
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl Finding {
    /// As a plan keeps it, with `file` relative to `directory`.
    pub fn to_wire(
        &self,
        directory: &std::path::Path,
    ) -> fleetshift_common::proto::v1::LintFinding {
        fleetshift_common::proto::v1::LintFinding {
            rule: self.rule.clone(),
            severity: self.severity.name().to_owned(),
            file: self
                .file
                .strip_prefix(directory)
                .unwrap_or(&self.file)
                .display()
                .to_string(),
            line: u32::try_from(self.line).unwrap_or(u32::MAX),
            revision: self.revision.clone(),
            message: self.message.clone(),
            hint: self.hint.clone().unwrap_or_default(),
            statement: self.statement.clone(),
            allowed: self.allowed.clone().unwrap_or_default(),
        }
    }
}

fn lint_revision(revision: &Revision) -> Vec<Finding> {
    let script = &revision.up;
    let mut raw: Vec<RawFinding> = squawk::check(script, revision.transactional);
    let own = rules::check(revision);
    // squawk names a concurrent index build in a transaction itself; say it once.
    let said_by_squawk = |finding: &RawFinding| {
        finding.rule == rules::NOT_IN_TRANSACTION
            && raw.iter().any(|other| {
                other.rule == squawk::CONCURRENT_INDEX_IN_TRANSACTION
                    && other.script_line == finding.script_line
            })
    };
    let own: Vec<RawFinding> = own
        .into_iter()
        .filter(|finding| !said_by_squawk(finding))
        .collect();
    raw.extend(own);
    raw.sort_by_key(|finding| finding.script_line);
    let allowances = allowances::Allowances::read(script);
    let mut findings: Vec<Finding> = raw
        .into_iter()
        .map(|raw| {
            let statement = statement_at(script, raw.script_line);
            let allowed = statement
                .and_then(|statement| allowances.allows(&raw.rule, statement, raw.script_line));
            Finding {
                rule: raw.rule,
                severity: raw.severity,
                file: script.path.clone(),
                line: script.file_line(raw.script_line),
                revision: revision.label(),
                message: raw.message,
                hint: raw.hint,
                statement: statement.map(first_line).unwrap_or_default(),
                allowed,
            }
        })
        .collect();
    findings.extend(allowances.mistakes(revision));
    findings
}

/// A finding before allowances, located by its line in the script.
#[derive(Debug, Clone)]
struct RawFinding {
    rule: String,
    severity: Severity,
    script_line: usize,
    message: String,
    hint: Option<String>,
}

/// The statement that contains `script_line` (the last one starting at or before it).
fn statement_at(script: &Script, script_line: usize) -> Option<&Statement> {
    script
        .statements()
        .iter()
        .take_while(|statement| statement.line <= script_line)
        .last()
        .or_else(|| script.statements().first())
}

/// A statement's first line, at most 120 characters.
fn first_line(statement: &Statement) -> String {
    let line = statement.sql.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
