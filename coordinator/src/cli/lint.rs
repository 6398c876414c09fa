//! `fleetshift lint DIR`: the set's findings for people (statement, file:line, fix hint), as
//! JSON, or as SARIF 2.1.0 for code-scanning UIs; the exit code says whether open findings
//! reach `--fail-on`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_coordinator::lint::{self, Finding, LintReport, Severity};
use serde_json::json;

use super::migrate::parse_format;
use super::render;
use crate::cli::Output;
use crate::exit;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Migration directory.
    directory: PathBuf,
    /// Migration layout: sqlx, golang-migrate, diesel, flyway or dbmate; detected from file
    /// names when omitted.
    #[arg(long, value_parser = parse_format, env = "FLEETSHIFT_MIGRATIONS_FORMAT")]
    format: Option<SourceFormat>,
    /// Open findings at this severity or above make the exit code 11.
    #[arg(long, value_enum, default_value = "error")]
    fail_on: FailOn,
    /// Also list findings allowed by a `fleetshift:allow` comment or a reviewed region.
    #[arg(long)]
    show_allowed: bool,
    /// Human-readable findings, one JSON document, or SARIF 2.1.0.
    #[arg(long, value_enum, default_value = "human", env = "FLEETSHIFT_OUTPUT")]
    output: LintOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    Info,
    Warning,
    Error,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LintOutput {
    Human,
    Json,
    Sarif,
}

pub fn run(arguments: LintArgs) -> ExitCode {
    let set = match MigrationSet::load(&arguments.directory, arguments.format) {
        Ok(set) => set,
        Err(error) => {
            let output = if arguments.output == LintOutput::Human {
                Output::Human
            } else {
                Output::Json
            };
            render::failure(output, &error.to_string(), ErrorKind::BadInput);
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let mut report = lint::lint_set(&set);
    for finding in &mut report.findings {
        finding.file = relative(&finding.file, &arguments.directory);
    }
    match arguments.output {
        LintOutput::Human => human(&report, arguments.show_allowed),
        LintOutput::Json => println!("{}", json!(report)),
        LintOutput::Sarif => println!("{}", sarif(&report)),
    }
    let threshold = match arguments.fail_on {
        FailOn::Info => Some(Severity::Info),
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Error => Some(Severity::Error),
        FailOn::Never => None,
    };
    match threshold {
        Some(severity) if report.open_at_or_above(severity) > 0 => ExitCode::from(exit::FINDINGS),
        _ => ExitCode::from(exit::OK),
    }
}

fn relative(file: &Path, directory: &Path) -> PathBuf {
    file.strip_prefix(directory).unwrap_or(file).to_path_buf()
}

fn human(report: &LintReport, show_allowed: bool) {
    for finding in report
        .findings
        .iter()
        .filter(|finding| show_allowed || finding.is_open())
    {
        println!(
            "{}:{}: {} [{}] {}",
            finding.file.display(),
            finding.line,
            finding.severity.name(),
            finding.rule,
            finding.message
        );
        if !finding.statement.is_empty() {
            println!("    {}", finding.statement);
        }
        if let Some(reason) = &finding.allowed {
            println!("    allowed: {reason}");
        } else if let Some(hint) = &finding.hint {
            println!("    fix: {hint}");
        }
    }
    let open = |severity| {
        report
            .findings
            .iter()
            .filter(|finding: &&Finding| finding.is_open() && finding.severity == severity)
            .count()
    };
    let allowed = report.findings.len()
        - report
            .findings
            .iter()
            .filter(|finding| finding.is_open())
            .count();
    println!(
        "{} revisions, {} statements: {} error(s), {} warning(s), {} info, {allowed} allowed",
        report.revisions,
        report.statements,
        open(Severity::Error),
        open(Severity::Warning),
        open(Severity::Info)
    );
}

/// SARIF 2.1.0: one run, the rules that fired, one result per finding (allowed ones carry an
/// accepted suppression with its reason).
fn sarif(report: &LintReport) -> serde_json::Value {
    let mut rules: Vec<&str> = report
        .findings
        .iter()
        .map(|finding| finding.rule.as_str())
        .collect();
    rules.sort_unstable();
    rules.dedup();
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|finding| {
            let level = match finding.severity {
                Severity::Info => "note",
                Severity::Warning => "warning",
                Severity::Error => "error",
            };
            let mut result = json!({
                "ruleId": finding.rule,
                "level": level,
                "message": { "text": match &finding.hint {
                    Some(hint) => format!("{} Fix: {hint}", finding.message),
                    None => finding.message.clone(),
                }},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": finding.file.to_string_lossy() },
                        "region": { "startLine": finding.line },
                    }
                }],
            });
            if let Some(reason) = &finding.allowed {
                result["suppressions"] =
                    json!([{ "kind": "inSource", "status": "accepted", "justification": reason }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "fleetshift",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://squawkhq.com/docs/rules",
                "rules": rules.iter().map(|rule| json!({ "id": rule })).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}
