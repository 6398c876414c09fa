//! Backfill jobs: a revision whose up script is one data statement (`UPDATE`, `INSERT …
//! SELECT`, `DELETE`) marked `-- fleetshift:backfill key=id batch=5000`, run by the executor in
//! batches of the key's range, each its own short fenced transaction that also records how far
//! the job got. The statement says where the batch's range goes with the `:batch` placeholder
//! (`… WHERE email_lower IS NULL AND :batch`); fleetshift replaces it with `(id > '…' AND id
//! <= '…')` for each batch. The table whose keys are split is the statement's own for `UPDATE`
//! and `DELETE`, and named with `table=` otherwise (the source of an `INSERT … SELECT`).

use super::{Revision, SourceProblem};
use crate::statements::Statement;

/// The comment that makes a revision a backfill job.
pub const DIRECTIVE: &str = "fleetshift:backfill";

/// Where a batch's key range goes in the statement: `:batch`.
pub const PLACEHOLDER: &str = "batch";

/// Rows per batch when the directive does not say.
pub const DEFAULT_BATCH: u64 = 5000;

/// The most rows one batch may take: a batch is one transaction holding its rows' locks.
const MAX_BATCH: u64 = 1_000_000;

/// How a backfill revision is split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    /// The table whose key the batches split, as written (possibly schema-qualified).
    pub table: String,
    /// The key column, as written; unique and not null (a primary key), ordered.
    pub key: String,
    /// Keys per batch.
    pub batch: u64,
}

impl Backfill {
    /// The condition selecting one batch: keys after `after` (from the first key when
    /// `None`) up to and including `upto`. Keys travel as text literals, which the database
    /// reads as the key's own type.
    pub fn range(&self, after: Option<&str>, upto: &str) -> String {
        let upto = quoted(upto);
        match after {
            Some(after) => format!(
                "({key} > {after} AND {key} <= {upto})",
                key = self.key,
                after = quoted(after)
            ),
            None => format!("({key} <= {upto})", key = self.key),
        }
    }

    /// The query for the batch after `after` (from the first key when `None`): one row of its
    /// last key, as text, and how many keys it covers; no row when no key is left. Written
    /// in SQL both PostgreSQL and SQLite run; the key's column is read from the table itself,
    /// whatever the statement qualifies it with. The batch's last key is the greatest by the
    /// key's own order (`keys.k`), never by its text.
    pub fn next_batch_query(&self, after: Option<&str>) -> String {
        let column = self.key.rsplit('.').next().unwrap_or(&self.key);
        let rest = after
            .map(|after| format!(" WHERE {column} > {}", quoted(after)))
            .unwrap_or_default();
        format!(
            "SELECT CAST(keys.k AS TEXT) AS upto, count(*) OVER () AS keys FROM (SELECT {column} AS k FROM {table}{rest} ORDER BY {column} LIMIT {batch}) AS keys ORDER BY keys.k DESC LIMIT 1",
            table = self.table,
            batch = self.batch
        )
    }

    /// The key's column as the catalog stores it (the last part of `key`, unquoted, or
    /// folded to lower case).
    pub fn key_column(&self) -> String {
        let column = self.key.rsplit('.').next().unwrap_or(&self.key);
        match column
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(quoted) => quoted.to_owned(),
            None => column.to_ascii_lowercase(),
        }
    }

    /// `statement` restricted to one batch.
    pub fn statement(&self, statement: &Statement, after: Option<&str>, upto: &str) -> Statement {
        statement.with_placeholder(PLACEHOLDER, &self.range(after, upto))
    }
}

fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Reads each revision's directive; a revision that has one becomes a backfill job (run
/// outside one transaction), and whatever keeps it from being one is a problem.
pub(super) fn mark(revisions: &mut [Revision], problems: &mut Vec<SourceProblem>) {
    for revision in revisions {
        match read(revision) {
            Ok(None) => {}
            Ok(Some(backfill)) => {
                revision.transactional = false;
                revision.backfill = Some(backfill);
            }
            Err(problem) => problems.push(problem),
        }
    }
}

fn read(revision: &Revision) -> Result<Option<Backfill>, SourceProblem> {
    let script = &revision.up;
    let mut directives = script.sql.lines().enumerate().filter_map(|(index, line)| {
        let comment = line.trim_start().strip_prefix("--")?.trim_start();
        let attributes = comment.strip_prefix(DIRECTIVE)?;
        Some((script.file_line(index + 1), attributes))
    });
    let Some((line, attributes)) = directives.next() else {
        return Ok(None);
    };
    let problem = |message: String| SourceProblem::at_line(&script.path, line, message);
    if let Some((again, _)) = directives.next() {
        return Err(problem(format!(
            "a second `{DIRECTIVE}` directive (line {again}); a revision is one backfill job"
        )));
    }
    let mut key = None;
    let mut table = None;
    let mut batch = DEFAULT_BATCH;
    for attribute in attributes.split_whitespace() {
        match attribute.split_once('=') {
            Some(("key", value)) => key = Some(name(value, "key").map_err(problem)?),
            Some(("table", value)) => table = Some(name(value, "table").map_err(problem)?),
            Some(("batch", value)) => {
                batch = value
                    .parse()
                    .ok()
                    .filter(|rows| (1..=MAX_BATCH).contains(rows))
                    .ok_or_else(|| {
                        problem(format!(
                            "batch={value}: expected a number of rows from 1 to {MAX_BATCH}"
                        ))
                    })?;
            }
            _ => {
                return Err(problem(format!(
                    "unknown attribute {attribute:?} of `{DIRECTIVE}`; expected key=<column>, batch=<rows>, table=<table>"
                )));
            }
        }
    }
    let key = key.ok_or_else(|| {
        problem(format!(
            "`{DIRECTIVE}` needs the key to split the rows by: add key=<column> (a primary key)"
        ))
    })?;
    let statements = script.statements();
    let [statement] = statements else {
        return Err(problem(format!(
            "a backfill job is one statement; this script has {}: put the others in revisions of their own",
            statements.len()
        )));
    };
    let at_statement = |message: String| {
        SourceProblem::at_line(&script.path, script.file_line(statement.line), message)
    };
    if statement.placeholder_spans(PLACEHOLDER).is_empty() {
        return Err(at_statement(format!(
            "the backfill statement does not say where each batch's key range goes: add `AND :{PLACEHOLDER}` to its WHERE clause (fleetshift replaces it with `({key} > … AND {key} <= …)`)"
        )));
    }
    let table = match table.or_else(|| own_table(statement)) {
        Some(table) => table,
        None => {
            return Err(at_statement(format!(
                "fleetshift cannot tell which table's keys to split: add table=<table> to `{DIRECTIVE}` (for INSERT … SELECT, the table the rows are read from)"
            )));
        }
    };
    match statement.leading_words(1).first().map(String::as_str) {
        Some("UPDATE" | "INSERT" | "DELETE" | "WITH") => Ok(Some(Backfill { table, key, batch })),
        _ => Err(at_statement(
            "a backfill job runs an UPDATE, INSERT … SELECT or DELETE statement".to_owned(),
        )),
    }
}

/// A table or column name as the directive may give it: identifiers, plain or double-quoted,
/// joined by dots; anything else could change the statement fleetshift builds from it.
fn name(value: &str, attribute: &str) -> Result<String, String> {
    let plain = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let quoted = |part: &str| {
        part.len() > 2
            && part.starts_with('"')
            && part.ends_with('"')
            && !part[1..part.len() - 1].contains('"')
    };
    if !value.is_empty() && value.split('.').all(|part| plain(part) || quoted(part)) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{attribute}={value}: expected a name (letters, digits, `_`, optionally schema-qualified or double-quoted without dots)"
        ))
    }
}

/// The table an `UPDATE [ONLY] t` or `DELETE FROM [ONLY] t` statement changes.
fn own_table(statement: &Statement) -> Option<String> {
    let tokens: Vec<&str> = statement.tokens().collect();
    let upper = |index: usize| tokens.get(index).map(|token| token.to_ascii_uppercase());
    let mut index = match upper(0)?.as_str() {
        "UPDATE" => 1,
        "DELETE" if upper(1).as_deref() == Some("FROM") => 2,
        _ => return None,
    };
    if upper(index).as_deref() == Some("ONLY") {
        index += 1;
    }
    let mut table = (*tokens.get(index)?).to_owned();
    while tokens.get(index + 1) == Some(&".") {
        table.push('.');
        table.push_str(tokens.get(index + 2)?);
        index += 2;
    }
    name(&table, "table").ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::source::{Script, Version};

    fn revision(sql: &str) -> Revision {
        let up = Script::new(PathBuf::from("3_fill.up.sql"), 1, sql.to_owned());
        Revision::new(
            Version::integer("3").expect("version"),
            "fill",
            up,
            None,
            true,
        )
    }

    fn marked(sql: &str) -> Result<Revision, Vec<String>> {
        let mut revisions = [revision(sql)];
        let mut problems = Vec::new();
        mark(&mut revisions, &mut problems);
        if problems.is_empty() {
            let [revision] = revisions;
            Ok(revision)
        } else {
            Err(problems.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn an_update_is_split_by_its_own_table() {
        let revision = marked(
            "-- fleetshift:backfill key=id batch=500\nUPDATE ONLY public.users SET email_lower = lower(email)\n WHERE email_lower IS NULL AND :batch;\n",
        )
        .expect("a backfill");
        assert!(!revision.transactional);
        let backfill = revision.backfill.expect("marked");
        assert_eq!(
            backfill,
            Backfill {
                table: "public.users".to_owned(),
                key: "id".to_owned(),
                batch: 500
            }
        );
        let statement = &revision.up.statements()[0];
        assert!(
            backfill
                .statement(statement, Some("10"), "it's")
                .sql
                .ends_with("AND (id > '10' AND id <= 'it''s')")
        );
        assert_eq!(backfill.key_column(), "id");
        assert!(
            backfill
                .statement(statement, None, "7")
                .sql
                .ends_with("AND (id <= '7')")
        );
    }

    #[test]
    fn an_insert_select_names_its_source_table() {
        let sql = "--fleetshift:backfill key=o.id table=orders\nINSERT INTO order_totals SELECT o.id, o.total FROM orders o WHERE :batch ON CONFLICT DO NOTHING;";
        let backfill = marked(sql).expect("a backfill").backfill.expect("marked");
        assert_eq!(backfill.table, "orders");
        assert_eq!(backfill.key_column(), "id");
        assert_eq!(backfill.batch, DEFAULT_BATCH);
        let problems =
            marked(&sql.replace(" table=orders", "")).expect_err("which table is unknown");
        assert!(
            problems[0].starts_with("3_fill.up.sql:2:") && problems[0].contains("add table="),
            "{problems:?}"
        );
    }

    #[test]
    fn a_directive_that_cannot_be_run_is_a_problem_at_its_line() {
        let cases = [
            (
                "-- fleetshift:backfill batch=10\nUPDATE t SET a = 1 WHERE :batch;",
                "1:",
                "add key=<column>",
            ),
            (
                "-- fleetshift:backfill key=id batch=0\nUPDATE t SET a = 1 WHERE :batch;",
                "1:",
                "batch=0",
            ),
            (
                "-- fleetshift:backfill key=id size=10\nUPDATE t SET a = 1 WHERE :batch;",
                "1:",
                "unknown attribute \"size=10\"",
            ),
            (
                "-- fleetshift:backfill key=id;drop\nUPDATE t SET a = 1 WHERE :batch;",
                "1:",
                "key=id;drop: expected a name",
            ),
            (
                "-- fleetshift:backfill key=id\nUPDATE t SET a = 1;",
                "2:",
                "add `AND :batch`",
            ),
            (
                "-- fleetshift:backfill key=id\nUPDATE t SET a = 1 WHERE :batch;\nUPDATE u SET b = 2;",
                "1:",
                "this script has 2",
            ),
            (
                "-- fleetshift:backfill key=id table=t\nCREATE TABLE t AS SELECT :batch;",
                "2:",
                "UPDATE, INSERT",
            ),
            (
                "-- fleetshift:backfill key=id\n-- fleetshift:backfill key=id\nUPDATE t SET a = 1 WHERE :batch;",
                "1:",
                "second",
            ),
        ];
        for (sql, line, expected) in cases {
            let problems = marked(sql).expect_err(sql);
            assert!(
                problems[0].starts_with(&format!("3_fill.up.sql:{line}"))
                    && problems[0].contains(expected),
                "{sql}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_revision_without_the_directive_is_left_as_it_is() {
        let revision = marked("UPDATE t SET a = 1;").expect("plain");
        assert!(revision.transactional);
        assert!(revision.backfill.is_none());
    }
}
