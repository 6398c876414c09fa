//! `fleetshift lint PATH…`: migration directories, SQL files, glob patterns and standard
//! input, linted the way squawk users lint. A directory is a migration set (each revision in
//! its own transaction mode); a file inside one is linted as its revision; any other file, or
//! standard input, as one script (in a transaction only with `--assume-in-transaction`, as
//! squawk does). A set's bad input (duplicate versions, misnamed files…) is reported beside
//! the findings. Findings for people (statement, file:line, fix hint), as JSON, as SARIF 2.1.0
//! for code-scanning UIs, or one line each (`file:line:col: rule: message`) for editors and
//! CI annotations; the exit code says whether there was bad input (2) or open findings reach
//! `--fail-on` (11).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::source::{Reading, Revision, Script, SourceFormat, SourceProblem};
use fleetshift_coordinator::lint::{self, Finding, LintReport, Severity};
use serde_json::json;

use self::settings::{Configured, parse_pg_version};
use super::migrate::parse_format;
use super::render;
use crate::cli::Output;
use crate::cli::sources::{self, AlembicArgs};
use crate::exit;

mod settings;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Migration directories, SQL files, glob patterns (quote them: 'db/**/*.sql') or `-` for
    /// standard input. A file inside a migration directory is linted as its revision; any
    /// other file as one script.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Migration layout: sqlx, golang-migrate, diesel, flyway, dbmate, pop, liquibase or alembic;
    /// detected from file names (an Alembic project from `alembic.ini` or `migrations/env.py`)
    /// when omitted.
    #[arg(long, value_parser = parse_format, env = "FLEETSHIFT_MIGRATIONS_FORMAT")]
    format: Option<SourceFormat>,
    #[command(flatten)]
    alembic: AlembicArgs,
    /// Lint scripts that belong to no migration set (files, standard input) as if they ran
    /// inside a transaction, as squawk's flag of the same name does; a revision always
    /// follows its own transaction mode.
    #[arg(long)]
    assume_in_transaction: bool,
    /// The PostgreSQL version squawk's rules assume, e.g. `13.0` (default 15), as squawk's
    /// flag.
    #[arg(long, value_parser = parse_pg_version)]
    pg_version: Option<squawk_linter::Version>,
    /// Rules to turn off, squawk's or fleetshift's names, comma-separated or repeated, as
    /// squawk's flag. fleetshift itself leaves out squawk's require-timeout-settings,
    /// require-lock-timeout and require-statement-timeout: it sets both timeouts in every
    /// session it runs revisions in.
    #[arg(long, short = 'e', value_delimiter = ',', value_name = "RULE")]
    exclude: Vec<String>,
    /// Files not to lint: paths or patterns, matched against each path as given, as squawk's
    /// flag.
    #[arg(long, value_name = "PATH")]
    exclude_path: Vec<String>,
    /// squawk's configuration file; default: `.squawk.toml` in this directory or the
    /// nearest one above it (pg_version, excluded_rules, assume_in_transaction and
    /// excluded_paths are read; flags add to or override them).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Open findings at this severity or above make the exit code 11.
    #[arg(long, value_enum, default_value = "error")]
    fail_on: FailOn,
    /// Also list findings allowed by a `fleetshift:allow` comment or a reviewed region.
    #[arg(long)]
    show_allowed: bool,
    /// Human-readable findings, one JSON document, SARIF 2.1.0, or one line per finding
    /// (`file:line:col: rule: message`).
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
    Compact,
}

/// What one path on the command line stands for.
#[derive(Debug)]
enum Input {
    Directory(PathBuf),
    File(PathBuf),
    Stdin,
}

/// The name standard input goes by in findings.
const STDIN: &str = "<stdin>";

/// The rule name bad input is reported under, beside the findings.
const BAD_INPUT: &str = "bad-input";

pub fn run(arguments: LintArgs) -> ExitCode {
    let prepared = Configured::from(&arguments)
        .and_then(|configured| inputs(&arguments.paths).map(|inputs| (configured, inputs)));
    let (configured, inputs) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => {
            let output = match arguments.output {
                LintOutput::Human | LintOutput::Compact => Output::Human,
                LintOutput::Json | LintOutput::Sarif => Output::Json,
            };
            render::failure(output, &message, ErrorKind::BadInput);
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let mut linted = Linted {
        format: arguments.format,
        alembic: arguments.alembic.clone(),
        configured,
        report: LintReport::empty(),
        problems: Vec::new(),
        sets: HashMap::new(),
    };
    for input in inputs {
        linted.lint(input);
    }
    let Linted {
        report, problems, ..
    } = linted;
    match arguments.output {
        LintOutput::Human => human(&report, &problems, arguments.show_allowed),
        LintOutput::Json => {
            let mut document = json!(report);
            document["problems"] = json!(problems.iter().map(problem_json).collect::<Vec<_>>());
            println!("{document}");
        }
        LintOutput::Sarif => println!("{}", sarif(&report, &problems)),
        LintOutput::Compact => compact(&report, &problems, arguments.show_allowed),
    }
    let threshold = match arguments.fail_on {
        FailOn::Info => Some(Severity::Info),
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Error => Some(Severity::Error),
        FailOn::Never => None,
    };
    if !problems.is_empty() {
        return ExitCode::from(exit::BAD_INPUT);
    }
    match threshold {
        Some(severity) if report.open_at_or_above(severity) > 0 => ExitCode::from(exit::FINDINGS),
        _ => ExitCode::from(exit::OK),
    }
}

/// The command line's paths as inputs, in order, glob patterns expanded.
fn inputs(paths: &[String]) -> Result<Vec<Input>, String> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let matched: Vec<PathBuf> = if path.contains(['*', '?', '[']) {
            let pattern = glob::glob(path)
                .map_err(|error| format!("{path}: not a valid glob pattern: {error}"))?;
            let matched: Vec<PathBuf> = pattern.filter_map(Result::ok).collect();
            if matched.is_empty() {
                return Err(format!("{path}: the pattern matches no file"));
            }
            matched
        } else {
            vec![PathBuf::from(path)]
        };
        for path in matched {
            if path.is_dir() {
                inputs.push(Input::Directory(path));
            } else if path.is_file() {
                inputs.push(Input::File(path));
            } else {
                return Err(format!(
                    "{}: no such file or directory; give a migration directory, SQL files, a quoted glob pattern or - for standard input",
                    path.display()
                ));
            }
        }
    }
    Ok(inputs)
}

/// What has been linted so far.
struct Linted {
    format: Option<SourceFormat>,
    alembic: AlembicArgs,
    configured: Configured,
    report: LintReport,
    problems: Vec<SourceProblem>,
    /// Directories read while looking for a file's revisions: their revisions by the
    /// canonical path of the up script (none when the directory is not a migration set).
    sets: HashMap<PathBuf, HashMap<PathBuf, Vec<Revision>>>,
}

impl Linted {
    fn lint(&mut self, input: Input) {
        match input {
            Input::Directory(given) => match sources::reading(&given, self.format, &self.alembic) {
                Ok((directory, reading)) => {
                    let kept: Vec<Revision> = reading
                        .revisions
                        .into_iter()
                        .filter(|revision| !self.configured.skips(&revision.up.path))
                        .collect();
                    let mut report = lint::lint_revisions_with(&kept, &self.configured.settings);
                    for finding in &mut report.findings {
                        finding.file = relative(&finding.file, &directory);
                    }
                    self.report.absorb(report);
                    self.problems
                        .extend(reading.problems.into_iter().map(|problem| SourceProblem {
                            path: relative(&problem.path, &directory),
                            ..problem
                        }));
                }
                Err(problems) => self.problems.extend(problems),
            },
            Input::File(path) if self.configured.skips(&path) => {}
            Input::File(path) => {
                if let Some(revisions) = self.revisions_of(&path) {
                    let mut report =
                        lint::lint_revisions_with(&revisions, &self.configured.settings);
                    for finding in &mut report.findings {
                        finding.file.clone_from(&path);
                    }
                    self.report.absorb(report);
                    return;
                }
                match std::fs::read(&path) {
                    Ok(bytes) => self.lint_script(path, &bytes),
                    Err(error) => self.problems.push(SourceProblem::new(
                        &path,
                        format!("cannot read file: {error}"),
                    )),
                }
            }
            Input::Stdin => {
                let mut bytes = Vec::new();
                match std::io::stdin().read_to_end(&mut bytes) {
                    Ok(_) => self.lint_script(PathBuf::from(STDIN), &bytes),
                    Err(error) => self.problems.push(SourceProblem::new(
                        Path::new(STDIN),
                        format!("cannot read standard input: {error}"),
                    )),
                }
            }
        }
    }

    /// Lints `bytes` as one script named `path`.
    fn lint_script(&mut self, path: PathBuf, bytes: &[u8]) {
        let Ok(sql) = String::from_utf8(bytes.to_vec()) else {
            self.problems.push(SourceProblem::new(
                &path,
                "not valid UTF-8; save it as UTF-8",
            ));
            return;
        };
        let label = path.display().to_string();
        let script = Script::new(path, 1, sql);
        self.report.absorb(lint::lint_script(
            &script,
            self.configured.in_transaction,
            &label,
            &self.configured.settings,
        ));
    }

    /// The revisions whose up script `path` is (one, or every changeset of a Liquibase
    /// changelog), when its directory (or, for diesel, the one above) is a migration set.
    fn revisions_of(&mut self, path: &Path) -> Option<Vec<Revision>> {
        let wanted = path.canonicalize().ok()?;
        for directory in path.ancestors().skip(1).take(2) {
            let directory = if directory.as_os_str().is_empty() {
                Path::new(".")
            } else {
                directory
            };
            let format = self.format;
            let revisions = self
                .sets
                .entry(directory.to_path_buf())
                .or_insert_with(|| revisions_by_path(directory, format));
            if let Some(found) = revisions.get(&wanted) {
                return Some(found.clone());
            }
        }
        None
    }
}

/// The revisions of the migration set in `directory` by the canonical path of their up
/// scripts; none when it is no migration set.
fn revisions_by_path(
    directory: &Path,
    format: Option<SourceFormat>,
) -> HashMap<PathBuf, Vec<Revision>> {
    let mut by_path: HashMap<PathBuf, Vec<Revision>> = HashMap::new();
    let Ok(reading) = Reading::of(directory, format) else {
        return by_path;
    };
    for revision in reading.revisions {
        if let Ok(path) = revision.up.path.canonicalize() {
            by_path.entry(path).or_default().push(revision);
        }
    }
    by_path
}

fn relative(file: &Path, directory: &Path) -> PathBuf {
    file.strip_prefix(directory).unwrap_or(file).to_path_buf()
}

fn problem_json(problem: &SourceProblem) -> serde_json::Value {
    json!({
        "file": problem.path,
        "line": problem.line,
        "message": problem.message,
    })
}

/// `file:line:col: rule: message`, one per open finding (and allowed ones when asked) and one
/// per bad input.
fn compact(report: &LintReport, problems: &[SourceProblem], show_allowed: bool) {
    for problem in problems {
        println!(
            "{}:{}:1: {BAD_INPUT}: {}",
            problem.path.display(),
            problem.line.unwrap_or(1),
            problem.message.replace('\n', " ")
        );
    }
    for finding in report
        .findings
        .iter()
        .filter(|finding| show_allowed || finding.is_open())
    {
        println!(
            "{}:{}:1: {}: {}",
            finding.file.display(),
            finding.line,
            finding.rule,
            finding.message
        );
    }
}

fn human(report: &LintReport, problems: &[SourceProblem], show_allowed: bool) {
    for problem in problems {
        println!("{problem} [{BAD_INPUT}]");
    }
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
    let scripts = if report.scripts == 0 {
        String::new()
    } else {
        format!(", {} script(s)", report.scripts)
    };
    let bad = if problems.is_empty() {
        String::new()
    } else {
        format!("; {} bad input problem(s)", problems.len())
    };
    println!(
        "{} revisions{scripts}, {} statements: {} error(s), {} warning(s), {} info, {allowed} allowed{bad}",
        report.revisions,
        report.statements,
        open(Severity::Error),
        open(Severity::Warning),
        open(Severity::Info)
    );
}

/// SARIF 2.1.0: one run, the rules that fired, one result per finding (allowed ones carry an
/// accepted suppression with its reason).
fn sarif(report: &LintReport, problems: &[SourceProblem]) -> serde_json::Value {
    let mut rules: Vec<&str> = report
        .findings
        .iter()
        .map(|finding| finding.rule.as_str())
        .chain(problems.first().map(|_| BAD_INPUT))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    let bad_input = problems.iter().map(|problem| {
        json!({
            "ruleId": BAD_INPUT,
            "level": "error",
            "message": { "text": problem.message },
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": { "uri": problem.path.to_string_lossy() },
                    "region": { "startLine": problem.line.unwrap_or(1) },
                }
            }],
        })
    });
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
        .chain(bad_input)
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
