//! The file `fleetshift plan --baselines` reads: named read-only queries, each under a
//! `-- name: <name>` line, one statement each.
//!
//! ```sql
//! -- name: by_account
//! SELECT count(*) FROM events WHERE account_id = 42;
//! ```

use std::path::Path;

use fleetshift_common::proto::v1::BaselineQuery;
use fleetshift_common::statements;

const HEADER: &str = "-- name:";

/// The queries of the file at `path`; the error names the file, the line and what to fix.
pub fn load(path: &Path) -> Result<Vec<BaselineQuery>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read baselines file {}: {error}", path.display()))?;
    parse(&text).map_err(|(line, problem)| format!("{}:{line}: {problem}", path.display()))
}

/// A section of the file: its header's line, name and body.
struct Section<'a> {
    line: usize,
    name: &'a str,
    body: String,
}

fn parse(text: &str) -> Result<Vec<BaselineQuery>, (usize, String)> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(name) = line.trim().strip_prefix(HEADER) {
            let name = name.trim();
            if name.is_empty() {
                return Err((number, format!("`{HEADER}` needs a name after it")));
            }
            if let Some(first) = sections.iter().find(|section| section.name == name) {
                return Err((
                    number,
                    format!("baseline {name} is already named on line {}", first.line),
                ));
            }
            sections.push(Section {
                line: number,
                name,
                body: String::new(),
            });
            continue;
        }
        match sections.last_mut() {
            Some(section) => {
                section.body.push_str(line);
                section.body.push('\n');
            }
            None if statements::split(line).is_empty() => {}
            None => {
                return Err((
                    number,
                    format!("SQL before the first `{HEADER} <name>` line; name every query"),
                ));
            }
        }
    }
    if sections.is_empty() {
        return Err((
            1,
            format!("no queries; put each under a `{HEADER} <name>` line"),
        ));
    }
    sections
        .into_iter()
        .map(|section| {
            let mut found = statements::split(&section.body);
            match (found.pop(), found.is_empty()) {
                (Some(statement), true) => Ok(BaselineQuery {
                    name: section.name.to_owned(),
                    sql: statement.sql,
                }),
                (None, _) => Err((section.line, format!("baseline {} has no SQL", section.name))),
                (Some(_), false) => Err((
                    section.line,
                    format!(
                        "baseline {} has more than one statement; give each its own `{HEADER}` line",
                        section.name
                    ),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_query_is_one_statement() {
        let queries = parse(
            "-- Timed on every shard.\n\n-- name: by_account\nSELECT count(*)\n  FROM events WHERE account_id = 42;\n\n-- name: newest\nSELECT id FROM events ORDER BY id DESC LIMIT 10\n",
        )
        .expect("parses");
        let named: Vec<(&str, &str)> = queries
            .iter()
            .map(|query| (query.name.as_str(), query.sql.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "by_account",
                    "SELECT count(*)\n  FROM events WHERE account_id = 42"
                ),
                ("newest", "SELECT id FROM events ORDER BY id DESC LIMIT 10"),
            ]
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        let error = |text| parse(text).expect_err("refused");
        assert_eq!(error("SELECT 1;\n-- name: a\nSELECT 2;").0, 1);
        assert_eq!(error("-- name: a\n").0, 1);
        let twice = error("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;");
        assert_eq!(twice.0, 3);
        assert!(twice.1.contains("already named on line 1"), "{}", twice.1);
        let two = error("-- name: a\nSELECT 1; SELECT 2;");
        assert!(two.1.contains("more than one statement"), "{}", two.1);
        assert_eq!(error("").0, 1);
        assert_eq!(error("-- name:\nSELECT 1;").0, 1);
    }
}
