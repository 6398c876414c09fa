//! Alembic's offline output (`upgrade … --sql`, `downgrade … --sql`) split into revisions.
//!
//! Alembic writes `-- Running upgrade <parents> -> <id>` (or `-- Running downgrade <id> ->
//! <parents>`) before each revision's SQL, wraps the run in `BEGIN;` … `COMMIT;`, and keeps
//! its version table current with statements of its own. What is kept of each revision is its
//! own SQL; a revision with statements Alembic puts outside the transaction (an
//! `autocommit_block()`: `COMMIT;` before them, `BEGIN;` after) is not transactional.

use fleetshift_common::statements::{self, Statement};

/// The version table when the output does not create one.
pub const DEFAULT_VERSION_TABLE: &str = "alembic_version";

/// One revision's part of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub id: String,
    /// The revisions it follows, as the marker names them (empty for the first).
    pub parents: Vec<String>,
    /// Its own statements, each ending with `;`, separated by blank lines.
    pub sql: String,
    /// False when a statement of it ran outside Alembic's transaction.
    pub transactional: bool,
}

/// A whole offline run, as far as it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub version_table: String,
    /// Every revision whose marker was written, in order. When the run failed, the last one
    /// is the revision that raised: its SQL is incomplete.
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upgrade,
    Downgrade,
}

/// A marker line's revision and parents.
fn marker(line: &str, direction: Direction) -> Option<(String, Vec<String>)> {
    let ids = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match direction {
        Direction::Upgrade => {
            let rest = line.strip_prefix("-- Running upgrade ")?;
            let (from, to) = rest.split_once("->")?;
            Some((to.trim().to_owned(), ids(from)))
        }
        Direction::Downgrade => {
            let rest = line.strip_prefix("-- Running downgrade ")?;
            let (from, to) = rest.split_once("->")?;
            Some((from.trim().to_owned(), ids(to)))
        }
    }
}

/// Splits `output` at its markers and keeps each revision's own statements.
pub fn split(output: &str, direction: Direction) -> Rendered {
    let mut preamble = String::new();
    let mut raw: Vec<(String, Vec<String>, String)> = Vec::new();
    for line in output.lines() {
        if let Some((id, parents)) = marker(line, direction) {
            raw.push((id, parents, String::new()));
            continue;
        }
        let text = match raw.last_mut() {
            Some((_, _, text)) => text,
            None => &mut preamble,
        };
        text.push_str(line);
        text.push('\n');
    }
    let preamble = statements::split(&preamble);
    let version_table = preamble
        .iter()
        .find_map(created_version_table)
        .unwrap_or_else(|| DEFAULT_VERSION_TABLE.to_owned());
    // Alembic's transaction as it stands at each point of the output.
    let mut open = preamble.iter().fold(false, |open, statement| {
        statement.plain_transaction_boundary().unwrap_or(open)
    });
    let sections = raw
        .into_iter()
        .map(|(id, parents, text)| {
            let mut kept = Vec::new();
            let mut transactional = true;
            for statement in statements::split(&text) {
                if let Some(opens) = statement.plain_transaction_boundary() {
                    open = opens;
                    continue;
                }
                if touches_table(&statement, &version_table) {
                    continue;
                }
                transactional &= open;
                kept.push(terminated(&statement));
            }
            Section {
                id,
                parents,
                sql: kept.join("\n"),
                transactional,
            }
        })
        .collect();
    Rendered {
        version_table,
        sections,
    }
}

/// The statement's text ending with `;` and a newline.
fn terminated(statement: &Statement) -> String {
    let text = statement.sql.trim();
    if text.ends_with(';') {
        format!("{text}\n")
    } else {
        format!("{text};\n")
    }
}

/// The table a `CREATE TABLE <name> (version_num …` statement creates (schema-qualified
/// when `env.py` sets `version_table_schema`).
fn created_version_table(statement: &Statement) -> Option<String> {
    let tokens: Vec<&str> = statement.tokens().take(8).collect();
    let [create, table, rest @ ..] = tokens.as_slice() else {
        return None;
    };
    let (name, next) = qualified_name(rest);
    let creates = create.eq_ignore_ascii_case("CREATE") && table.eq_ignore_ascii_case("TABLE");
    (creates && next == Some("(") && statement.sql.contains("version_num")).then_some(name)
}

/// Whether the statement is Alembic's bookkeeping in `table`: `INSERT INTO`, `UPDATE`,
/// `DELETE FROM`, `CREATE TABLE` or `DROP TABLE` of it.
fn touches_table(statement: &Statement, table: &str) -> bool {
    let tokens: Vec<&str> = statement.tokens().take(8).collect();
    let named = |rest: &[&str]| {
        qualified_name(rest)
            .0
            .eq_ignore_ascii_case(&unquoted(table))
    };
    match tokens.as_slice() {
        [verb, rest @ ..] if verb.eq_ignore_ascii_case("UPDATE") => named(rest),
        [verb, keyword, rest @ ..] => {
            let pair = (verb.to_ascii_uppercase(), keyword.to_ascii_uppercase());
            matches!(
                (pair.0.as_str(), pair.1.as_str()),
                ("INSERT", "INTO") | ("DELETE", "FROM") | ("CREATE", "TABLE") | ("DROP", "TABLE")
            ) && named(rest)
        }
        _ => false,
    }
}

/// The (possibly schema-qualified) name the tokens start with, unquoted, and the token after it.
fn qualified_name<'t>(tokens: &[&'t str]) -> (String, Option<&'t str>) {
    let mut name = String::new();
    let mut rest = tokens.iter();
    let mut expect_part = true;
    for token in rest.by_ref() {
        if expect_part {
            name.push_str(token.trim_matches('"'));
            expect_part = false;
        } else if *token == "." {
            name.push('.');
            expect_part = true;
        } else {
            return (name, Some(token));
        }
    }
    (name, None)
}

fn unquoted(name: &str) -> String {
    name.replace('"', "")
}

#[cfg(test)]
mod tests;
