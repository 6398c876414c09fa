//! One Liquibase "formatted SQL" changelog: a `--liquibase formatted sql` first line, then
//! `--changeset author:id [attribute:value…]` blocks whose SQL runs up, with `--rollback`
//! lines or `/* liquibase rollback … */` blocks holding the SQL that reverts them.
//!
//! What fleetshift cannot honour is refused by name, never skipped: preconditions, changelog
//! properties, includes inside SQL, contexts and labels (chosen at run time, where fleetshift
//! runs every revision), `runAlways`/`runOnChange` (fleetshift applies a revision once),
//! and statement delimiters other than `;`. `failOnError:false` is honoured: a failure of
//! the changeset is recorded with it, and the run goes on.

use std::path::{Path, PathBuf};

use super::super::{Engine, Script, SourceProblem};

/// The first line that makes a `.sql` file a formatted changelog.
pub fn is_header(line: &str) -> bool {
    directive(line).is_some_and(|rest| {
        let words: Vec<String> = rest
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        words.first().is_some_and(|word| word == "liquibase")
            && words
                .get(1)
                .is_some_and(|word| word.starts_with("formatted"))
    })
}

/// The text after `--` when the line is a comment line, trimmed at the start.
fn directive(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("--").map(str::trim_start)
}

/// `keyword` at the start of a directive, case-insensitively, followed by whitespace or
/// the end; the rest of the line.
fn keyword<'l>(rest: &'l str, keyword: &str) -> Option<&'l str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let tail = &rest[keyword.len()..];
    (tail.is_empty() || tail.starts_with(char::is_whitespace)).then(|| tail.trim())
}

/// Which engines a changeset runs on (`dbms:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dbms {
    only: Option<Vec<String>>,
    except: Vec<String>,
}

impl Dbms {
    const EVERY: Self = Self {
        only: None,
        except: Vec::new(),
    };

    fn parse(value: &str) -> Self {
        let mut only: Option<Vec<String>> = None;
        let mut except = Vec::new();
        for name in value
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
        {
            match name.as_str() {
                "" | "all" => {}
                "none" => only = Some(Vec::new()),
                negated if negated.starts_with('!') => except.push(negated[1..].to_owned()),
                named => only.get_or_insert_with(Vec::new).push(named.to_owned()),
            }
        }
        Self { only, except }
    }

    /// Liquibase's short name of an engine.
    fn short_name(engine: Engine) -> &'static str {
        match engine {
            Engine::Postgres => "postgresql",
            Engine::Sqlite => "sqlite",
        }
    }

    pub fn runs_on(&self, engine: Engine) -> bool {
        let name = Self::short_name(engine);
        let listed = |names: &[String]| names.iter().any(|listed| listed == name);
        self.only.as_deref().is_none_or(listed) && !listed(&self.except)
    }
}

/// What reverts a changeset.
#[derive(Debug, Clone)]
pub enum Rollback {
    /// No rollback written: the changeset cannot be reverted.
    Missing,
    /// `--rollback empty` / `--rollback not required`: reverting does nothing.
    Nothing,
    Sql(Script),
}

#[derive(Debug, Clone)]
pub struct Changeset {
    pub author: String,
    pub id: String,
    /// The file and the line of its `--changeset` line.
    pub path: PathBuf,
    pub line: usize,
    pub up: Script,
    pub rollback: Rollback,
    pub transactional: bool,
    pub dbms: Dbms,
    /// `ignore:true`: Liquibase neither runs nor records it.
    pub ignored: bool,
    /// `failOnError:false`: a failure is recorded and the run goes on.
    pub failure_tolerated: bool,
}

impl Changeset {
    /// `author:id`, as Liquibase identifies a changeset.
    pub fn name(&self) -> String {
        format!("{}:{}", self.author, self.id)
    }
}

/// A changeset being read: its header and the lines seen so far.
struct Open {
    changeset: Changeset,
    body: Vec<String>,
    rollback_lines: Vec<(usize, String)>,
    rollback_nothing: bool,
}

/// Reads the changesets of one formatted changelog; every problem is reported with its line.
pub fn changesets(path: &Path, text: &str, problems: &mut Vec<SourceProblem>) -> Vec<Changeset> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    match lines.next() {
        Some((_, first)) if is_header(first.trim_start_matches('\u{feff}')) => {}
        _ => {
            problems.push(SourceProblem::at_line(
                path,
                1,
                "a Liquibase SQL changelog must begin with the line `--liquibase formatted sql`",
            ));
            return Vec::new();
        }
    }
    let mut done = Vec::new();
    let mut open: Option<Open> = None;
    let mut rollback_block: Option<usize> = None;
    for (number, line) in lines {
        let unsupported = |what: &str, why: &str| {
            SourceProblem::at_line(path, number, format!("{what} is not supported: {why}"))
        };
        if rollback_block.is_some() {
            let (sql, closes) = match line.trim_end().strip_suffix("*/") {
                Some(before) => (before, true),
                None => (line, false),
            };
            if let Some(open) = &mut open {
                open.rollback_lines.push((number, sql.to_owned()));
                open.body.push(String::new());
            }
            if closes {
                rollback_block = None;
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("/*")
            && rest
                .split_whitespace()
                .map(str::to_ascii_lowercase)
                .eq(["liquibase", "rollback"])
        {
            rollback_block = Some(number);
            if let Some(open) = &mut open {
                open.body.push(String::new());
            }
            continue;
        }
        let Some(rest) = directive(line) else {
            match &mut open {
                Some(open) => open.body.push(line.to_owned()),
                None if trimmed.is_empty() => {}
                None => problems.push(SourceProblem::at_line(
                    path,
                    number,
                    "SQL before the first `--changeset` line belongs to no changeset; start it with `--changeset author:id`",
                )),
            }
            continue;
        };
        if let Some(header) = keyword(rest, "changeset") {
            done.extend(open.take().map(close));
            open = Some(Open {
                changeset: parse_header(path, number, header, problems),
                body: Vec::new(),
                rollback_lines: Vec::new(),
                rollback_nothing: false,
            });
            continue;
        }
        if let Some(sql) = keyword(rest, "rollback") {
            rollback_line(open.as_mut(), path, number, sql, problems);
            continue;
        }
        if let Some((name, why)) = refused(rest) {
            problems.push(unsupported(&format!("`--{name}`"), why));
            continue;
        }
        if let Some(open) = &mut open {
            open.body.push(line.to_owned());
        }
    }
    if let Some(line) = rollback_block {
        problems.push(SourceProblem::at_line(
            path,
            line,
            "this `/* liquibase rollback` block is never closed with `*/`",
        ));
    }
    done.extend(open.map(close));
    duplicates(&done, problems);
    done
}

/// A `--rollback` line with `sql`, for the changeset `open`.
fn rollback_line(
    open: Option<&mut Open>,
    path: &Path,
    number: usize,
    sql: &str,
    problems: &mut Vec<SourceProblem>,
) {
    let Some(open) = open else {
        problems.push(SourceProblem::at_line(
            path,
            number,
            "a `--rollback` line before the first `--changeset` belongs to no changeset",
        ));
        return;
    };
    open.body.push(String::new());
    let lower = sql.to_ascii_lowercase();
    if lower == "empty" || lower == "not required" {
        open.rollback_nothing = true;
    } else if lower.contains("changesetid:") {
        problems.push(SourceProblem::at_line(
            path,
            number,
            "a rollback that names another changeset (`changeSetId:`) is not supported: write the SQL that reverts this changeset on `--rollback` lines",
        ));
    } else if !sql.is_empty() {
        open.rollback_lines.push((number, sql.to_owned()));
    }
}

/// A directive fleetshift cannot honour, with its name and what to do instead.
fn refused(rest: &str) -> Option<(&'static str, &'static str)> {
    const PRECONDITION: &str = "fleetshift runs every revision of a set in order, unconditionally; check the condition before planning, or remove the precondition";
    const INCLUDE: &str = "fleetshift reads includes from an XML or YAML master changelog only";
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase();
    // What follows the word, as Liquibase requires it for the directive (anything else is
    // a plain comment that happens to start with the word).
    let after = &rest[word.len()..];
    let then_attribute = after.starts_with(char::is_whitespace) && after.contains(':');
    let refusal = match word.as_str() {
        "preconditions" => ("preconditions", PRECONDITION),
        precondition if precondition.starts_with("precondition-") => {
            ("precondition-…", PRECONDITION)
        }
        "property" if then_attribute => (
            "property",
            "fleetshift does not substitute changelog properties; write the value into the SQL",
        ),
        "include" if then_attribute => ("include", INCLUDE),
        "includeall" if then_attribute => ("includeAll", INCLUDE),
        "ignorelines" if after.starts_with(':') => ("ignoreLines", "remove the lines instead"),
        "rollbacksqlfile" if then_attribute => (
            "rollbackSqlFile",
            "write the rollback on `--rollback` lines",
        ),
        "tagdatabase" if after.starts_with(':') => (
            "tagDatabase",
            "fleetshift records every revision; tags are not needed",
        ),
        _ => return None,
    };
    Some(refusal)
}

fn close(open: Open) -> Changeset {
    let Open {
        mut changeset,
        body,
        rollback_lines,
        rollback_nothing,
    } = open;
    changeset.up = Script::new(changeset.path.clone(), changeset.line + 1, body.join("\n"));
    changeset.rollback = match rollback_lines.first() {
        Some(&(first, _)) => {
            // Keep each rollback line on its own line of the file, for messages.
            let mut sql = Vec::new();
            for (number, text) in &rollback_lines {
                while first + sql.len() < *number {
                    sql.push(String::new());
                }
                sql.push(text.clone());
            }
            Rollback::Sql(Script::new(changeset.path.clone(), first, sql.join("\n")))
        }
        None if rollback_nothing => Rollback::Nothing,
        None => Rollback::Missing,
    };
    changeset
}

/// The same `author:id` twice in one file: Liquibase refuses it, and so does fleetshift.
fn duplicates(changesets: &[Changeset], problems: &mut Vec<SourceProblem>) {
    for (index, changeset) in changesets.iter().enumerate() {
        if let Some(first) = changesets[..index]
            .iter()
            .find(|earlier| earlier.author == changeset.author && earlier.id == changeset.id)
        {
            problems.push(SourceProblem::at_line(
                &changeset.path,
                changeset.line,
                format!(
                    "changeset {} is already defined on line {}; give each changeset of a file its own author:id",
                    changeset.name(),
                    first.line
                ),
            ));
        }
    }
}

/// `author:id attribute:value…` after `--changeset`.
fn parse_header(
    path: &Path,
    line: usize,
    header: &str,
    problems: &mut Vec<SourceProblem>,
) -> Changeset {
    let mut changeset = Changeset {
        author: String::new(),
        id: String::new(),
        path: path.to_path_buf(),
        line,
        up: Script::new(path.to_path_buf(), line + 1, String::new()),
        rollback: Rollback::Missing,
        transactional: true,
        dbms: Dbms::EVERY,
        ignored: false,
        failure_tolerated: false,
    };
    let Some((author, id, attributes)) = identity(header) else {
        problems.push(SourceProblem::at_line(
            path,
            line,
            format!(
                "`--changeset {header}` does not name the changeset: write `--changeset author:id`"
            ),
        ));
        return changeset;
    };
    changeset.author = author;
    changeset.id = id;
    for token in tokens(attributes) {
        let problem = |message: String| SourceProblem::at_line(path, line, message);
        let Some((key, value)) = token.split_once(':') else {
            problems.push(problem(format!(
                "`{token}` is not an attribute (`name:value`); only the changeset's author:id and its attributes may follow `--changeset`"
            )));
            continue;
        };
        let value = value.trim_matches('"');
        let flag = |value: &str| value.eq_ignore_ascii_case("true");
        match key.to_ascii_lowercase().as_str() {
            "runintransaction" => changeset.transactional = flag(value) || value.is_empty(),
            "dbms" => changeset.dbms = Dbms::parse(value),
            "ignore" => changeset.ignored = flag(value),
            // fleetshift splits statements itself (dollar quotes, comments and all) and keeps
            // comments, which do not change what runs; the logical path names no file.
            "splitstatements" | "rollbacksplitstatements" | "stripcomments" | "logicalfilepath" | "created" | "author" | "id" => {}
            "enddelimiter" | "rollbackenddelimiter" if value.is_empty() || value == ";" => {}
            "enddelimiter" | "rollbackenddelimiter" => problems.push(problem(format!(
                "`{key}:{value}` is not supported: fleetshift ends statements at `;` (outside quotes, dollar quotes and comments); use `;`"
            ))),
            "failonerror" => changeset.failure_tolerated = value.eq_ignore_ascii_case("false"),
            "runalways" | "runonchange" if !flag(value) => {}
            "runalways" | "runonchange" => problems.push(problem(format!(
                "`{key}:{value}` is not supported: fleetshift applies each revision exactly once; put repeatable work in a new changeset"
            ))),
            "context" | "contextfilter" | "labels" if value.is_empty() => {}
            "context" | "contextfilter" | "labels" => problems.push(problem(format!(
                "`{key}:{value}` is not supported: Liquibase picks these changesets at run time, fleetshift runs every revision of the set; keep such changesets in a set of their own"
            ))),
            _ => problems.push(problem(format!(
                "unknown changeset attribute `{key}`; the attributes are runInTransaction, dbms, ignore, splitStatements, stripComments, endDelimiter, failOnError, runAlways, runOnChange, context, labels"
            ))),
        }
    }
    changeset
}

/// `author:id` and the attributes after it. As in Liquibase, the author runs to the first
/// `:` (spaces included) unless quoted, and the id is quoted or runs to the next space.
fn identity(header: &str) -> Option<(String, String, &str)> {
    let (author, rest) = match header.strip_prefix('"') {
        Some(quoted) => {
            let (author, rest) = quoted.split_once('"')?;
            (author, rest.trim_start().strip_prefix(':')?)
        }
        None => header.split_once(':')?,
    };
    let rest = rest.trim_start();
    let (id, attributes) = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"')?,
        None => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
    };
    let author = author.trim();
    (!author.is_empty() && !id.is_empty()).then(|| (author.to_owned(), id.to_owned(), attributes))
}

/// Splits at whitespace outside double quotes.
fn tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for character in text.chars() {
        match character {
            '"' => {
                quoted = !quoted;
                current.push(character);
            }
            space if space.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            other => current.push(other),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}
