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

pub use rules::ALL as OWN_RULES;
pub use squawk::HANDLED_BY_FLEETSHIFT;

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
    /// Scripts linted on their own (files that belong to no migration set, standard input).
    pub scripts: usize,
    pub statements: usize,
    pub findings: Vec<Finding>,
}

impl LintReport {
    /// Nothing linted yet.
    pub fn empty() -> Self {
        Self {
            revisions: 0,
            scripts: 0,
            statements: 0,
            findings: Vec::new(),
        }
    }

    /// Adds `other`'s counts and findings to this report.
    pub fn absorb(&mut self, other: Self) {
        self.revisions += other.revisions;
        self.scripts += other.scripts;
        self.statements += other.statements;
        self.findings.extend(other.findings);
    }

    /// Open findings at `severity` or above.
    pub fn open_at_or_above(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.is_open() && finding.severity >= severity)
            .count()
    }
}

/// How the rules run, as squawk users set it (`--pg-version`, `--exclude`, `.squawk.toml`);
/// plans lint with the defaults.
#[derive(Debug, Clone, Default)]
pub struct LintSettings {
    /// The PostgreSQL version squawk's rules assume (squawk's default, 15, when `None`).
    pub pg_version: Option<squawk_linter::Version>,
    /// Rules that report nothing: squawk's names or fleetshift's.
    pub excluded_rules: Vec<String>,
}

impl LintSettings {
    /// Refuses a rule name that is neither squawk's nor fleetshift's, saying which exist.
    pub fn check_rule(name: &str) -> Result<(), String> {
        if rules::ALL.contains(&name)
            || name == squawk::SYNTAX_ERROR
            || name.parse::<squawk_linter::Rule>().is_ok()
        {
            return Ok(());
        }
        Err(format!(
            "unknown rule {name:?}: use a squawk rule name (https://squawkhq.com/docs/rules) or one of fleetshift's: {}",
            rules::ALL.join(", ")
        ))
    }

    fn excludes(&self, rule: &str) -> bool {
        self.excluded_rules.iter().any(|excluded| excluded == rule)
    }
}

/// Lints every revision's up script (and notes revisions without a down script).
pub fn lint_set(set: &MigrationSet) -> LintReport {
    lint_revisions(&set.revisions)
}

/// Lints one script that belongs to no migration set, the way squawk lints a file: squawk's
/// rules and fleetshift's statement rules, run in a transaction when `in_transaction` says
/// so; `label` names it in findings.
pub fn lint_script(
    script: &Script,
    in_transaction: bool,
    label: &str,
    settings: &LintSettings,
) -> LintReport {
    let mut raw = squawk::check(script, in_transaction, settings);
    raw.extend(without_squawks(
        &raw,
        rules::check_statements(script.statements(), in_transaction),
    ));
    raw.retain(|finding| !settings.excludes(&finding.rule));
    LintReport {
        revisions: 0,
        scripts: 1,
        statements: script.statements().len(),
        findings: located(script, raw, label, &allowances::Allowances::read(script)),
    }
}

/// Lints these revisions (a plan lints those it applies) with the default settings.
pub fn lint_revisions(revisions: &[Revision]) -> LintReport {
    lint_revisions_with(revisions, &LintSettings::default())
}

/// Lints these revisions with `settings`.
pub fn lint_revisions_with(revisions: &[Revision], settings: &LintSettings) -> LintReport {
    let mut findings = Vec::new();
    let mut statements = 0;
    for revision in revisions {
        statements += revision.up.statements().len();
        findings.extend(lint_revision(revision, settings));
    }
    LintReport {
        revisions: revisions.len(),
        scripts: 0,
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

fn lint_revision(revision: &Revision, settings: &LintSettings) -> Vec<Finding> {
    let script = &revision.up;
    let mut raw: Vec<RawFinding> = squawk::check(script, revision.transactional, settings);
    raw.extend(without_squawks(&raw, rules::check(revision)));
    raw.retain(|finding| !settings.excludes(&finding.rule));
    let allowances = allowances::Allowances::read(script);
    let mut findings = located(script, raw, &revision.label(), &allowances);
    findings.extend(allowances.mistakes(revision));
    findings
}

/// fleetshift's `own` findings but those squawk already made: squawk names a concurrent
/// index build in a transaction itself; say it once.
fn without_squawks(squawks: &[RawFinding], own: Vec<RawFinding>) -> Vec<RawFinding> {
    let said_by_squawk = |finding: &RawFinding| {
        finding.rule == rules::NOT_IN_TRANSACTION
            && squawks.iter().any(|other| {
                other.rule == squawk::CONCURRENT_INDEX_IN_TRANSACTION
                    && other.script_line == finding.script_line
            })
    };
    own.into_iter()
        .filter(|finding| !said_by_squawk(finding))
        .collect()
}

/// `raw` findings of `script` in line order, placed in the file, with their statements and
/// what `allowances` allows; `label` names the revision (or script).
fn located(
    script: &Script,
    mut raw: Vec<RawFinding>,
    label: &str,
    allowances: &allowances::Allowances,
) -> Vec<Finding> {
    raw.sort_by_key(|finding| finding.script_line);
    raw.into_iter()
        .map(|raw| {
            let statement = statement_at(script, raw.script_line);
            let allowed = statement
                .and_then(|statement| allowances.allows(&raw.rule, statement, raw.script_line));
            Finding {
                rule: raw.rule,
                severity: raw.severity,
                file: script.path.clone(),
                line: script.file_line(raw.script_line),
                revision: label.to_owned(),
                message: raw.message,
                hint: raw.hint,
                statement: statement.map(first_line).unwrap_or_default(),
                allowed,
            }
        })
        .collect()
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
