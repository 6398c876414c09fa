//! fleetshift's own rules, for what squawk does not look at: whole-table writes, backfills in
//! one statement, statements that cannot run in the revision's transaction, revisions without a
//! down script, enum values used in the transaction that adds them, transaction control
//! statements, and (for information) revisions whose up script has no statements.

use fleetshift_common::source::{BACKFILL_PLACEHOLDER, Revision};
use fleetshift_common::statements::Statement;

use super::{RawFinding, Severity};

pub const UNBOUNDED_WRITE: &str = "unbounded-update-delete";
pub const UNBATCHED_BACKFILL: &str = "unbatched-backfill";
pub const NOT_IN_TRANSACTION: &str = "non-transactional-in-transaction";
pub const IRREVERSIBLE: &str = "irreversible-revision";
pub const ENUM_VALUE_USED: &str = "enum-value-used-in-same-revision";
pub const EMPTY_REVISION: &str = "empty-revision";
pub const TRANSACTION_CONTROL: &str = "transaction-control-in-revision";

/// Every rule of fleetshift's own.
pub const ALL: [&str; 7] = [
    UNBOUNDED_WRITE,
    UNBATCHED_BACKFILL,
    NOT_IN_TRANSACTION,
    IRREVERSIBLE,
    ENUM_VALUE_USED,
    EMPTY_REVISION,
    TRANSACTION_CONTROL,
];

const OUTSIDE_TRANSACTION_HINT: &str = "move it to a revision of its own that runs outside a transaction (sqlx: first line `-- no-transaction`; dbmate: `-- migrate:up transaction:false`; diesel: `run_in_transaction = false` in metadata.toml; pop: `.autocommit.` in the file name; Liquibase: `runInTransaction:false`)";

pub(super) fn check(revision: &Revision) -> Vec<RawFinding> {
    let statements = revision.up.statements();
    let mut found = Vec::new();
    if revision.is_no_op() {
        found.push(RawFinding {
            rule: EMPTY_REVISION.to_owned(),
            severity: Severity::Info,
            script_line: 1,
            message: "the up script has no statements: the revision is applied as a no-op and recorded in the ledger like any other".to_owned(),
            hint: Some("nothing to do when it keeps a version's place (a placeholder for another dialect, a numbering step); otherwise write its SQL".to_owned()),
        });
    }
    // A repeatable script is never reverted: it runs again when it changes.
    if revision.down.is_none() && !revision.is_repeatable() {
        found.push(RawFinding {
            rule: IRREVERSIBLE.to_owned(),
            severity: Severity::Warning,
            script_line: statements.first().map_or(1, |statement| statement.line),
            message: match &revision.irreversible {
                None => "the revision has no down script: it cannot be reverted, so a failed rollout cannot be rolled back automatically".to_owned(),
                Some(why) => format!("the revision has no down script ({why}): it cannot be reverted, so a failed rollout cannot be rolled back automatically"),
            },
            hint: Some("write a down script, or mark a deliberate no-op with `-- fleetshift:nothing-to-undo`".to_owned()),
        });
    }
    for statement in revision.up.folded() {
        found.push(RawFinding {
            rule: TRANSACTION_CONTROL.to_owned(),
            severity: Severity::Info,
            script_line: statement.line,
            message: "folded, not run: the revision already runs in ONE transaction, which holds this BEGIN … COMMIT block; the script applies all or nothing".to_owned(),
            hint: None,
        });
    }
    found.extend(check_statements(statements, revision.transactional));
    found
}

/// The rules about statements alone (a lone script has no revision to judge), run in a
/// transaction or not.
pub(super) fn check_statements(statements: &[Statement], transactional: bool) -> Vec<RawFinding> {
    let mut found = Vec::new();
    for statement in statements {
        found.extend(unbounded_or_unbatched(statement));
        found.extend(transaction_control(statement));
        if transactional {
            found.extend(not_in_transaction(statement));
        }
    }
    if transactional {
        found.extend(enum_values_used(statements));
    }
    found
}

/// `BEGIN`, `COMMIT` and their kin cannot stand in a revision: fleetshift opens and ends its
/// transactions itself.
fn transaction_control(statement: &Statement) -> Option<RawFinding> {
    statement.controls_transaction().then(|| RawFinding {
        rule: TRANSACTION_CONTROL.to_owned(),
        severity: Severity::Error,
        script_line: statement.line,
        message: "transaction control cannot run inside a fleetshift revision: fleetshift runs each transactional revision in ONE transaction and each statement of a non-transactional one on its own".to_owned(),
        hint: Some(format!("remove it; if the statements must not share a transaction, {OUTSIDE_TRANSACTION_HINT}")),
    })
}

fn has_token(statement: &Statement, word: &str) -> bool {
    statement
        .tokens()
        .any(|token| token.eq_ignore_ascii_case(word))
}

/// How to write a backfill so that fleetshift runs it in batches.
const BACKFILL_JOB_HINT: &str = "make it a backfill job: a revision of its own whose script starts with `-- fleetshift:backfill key=<primary key> batch=5000` and whose WHERE ends with `AND :batch`; fleetshift runs it in key-range batches, each its own short transaction, throttled and resumable";

/// UPDATE or DELETE of a whole table (no WHERE); an UPDATE with a WHERE but no batching. A
/// backfill job's statement (with its `:batch` range) is batched by fleetshift.
fn unbounded_or_unbatched(statement: &Statement) -> Option<RawFinding> {
    let verb = statement.leading_words(1).into_iter().next()?;
    if verb != "UPDATE" && verb != "DELETE" {
        return None;
    }
    if !statement.placeholder_spans(BACKFILL_PLACEHOLDER).is_empty() {
        return None;
    }
    if !has_token(statement, "WHERE") {
        return Some(RawFinding {
            rule: UNBOUNDED_WRITE.to_owned(),
            severity: Severity::Error,
            script_line: statement.line,
            message: format!(
                "{verb} without WHERE writes every row of the table in one statement, holding row locks (and bloating it) until the revision commits"
            ),
            hint: Some(format!(
                "add the WHERE you mean; for a backfill, {BACKFILL_JOB_HINT}"
            )),
        });
    }
    let batched = ["LIMIT", "BETWEEN", "CTID"]
        .iter()
        .any(|word| has_token(statement, word));
    (verb == "UPDATE" && !batched).then(|| RawFinding {
        rule: UNBATCHED_BACKFILL.to_owned(),
        severity: Severity::Warning,
        script_line: statement.line,
        message:
            "a backfill in a single UPDATE locks every row it touches until the revision commits"
                .to_owned(),
        hint: Some(BACKFILL_JOB_HINT.to_owned()),
    })
}

/// Statements PostgreSQL refuses inside a transaction block.
fn not_in_transaction(statement: &Statement) -> Option<RawFinding> {
    statement.refused_in_transaction().then(|| RawFinding {
        rule: NOT_IN_TRANSACTION.to_owned(),
        severity: Severity::Error,
        script_line: statement.line,
        message: "this statement cannot run inside a transaction block, and the revision runs in one: it fails on every shard".to_owned(),
        hint: Some(OUTSIDE_TRANSACTION_HINT.to_owned()),
    })
}

/// `ALTER TYPE … ADD VALUE 'v'` followed, in the same transaction, by a statement using `'v'`.
fn enum_values_used(statements: &[Statement]) -> Vec<RawFinding> {
    let mut added: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for statement in statements {
        let words = statement.leading_words(2);
        let adds_value = words.first().map(String::as_str) == Some("ALTER")
            && words.get(1).map(String::as_str) == Some("TYPE")
            && has_token(statement, "ADD")
            && has_token(statement, "VALUE");
        if adds_value {
            if let Some(value) = statement
                .tokens()
                .filter(|token| token.starts_with('\''))
                .last()
            {
                added.push(value.to_owned());
            }
            continue;
        }
        if let Some(value) = added
            .iter()
            .find(|value| statement.tokens().any(|token| token == value.as_str()))
        {
            found.push(RawFinding {
                rule: ENUM_VALUE_USED.to_owned(),
                severity: Severity::Error,
                script_line: statement.line,
                message: format!(
                    "enum value {value} is used in the transaction that adds it; PostgreSQL refuses that (\"unsafe use of new value\")"
                ),
                hint: Some(
                    "add the value in one revision and use it in a later one, or run this revision outside a transaction".to_owned(),
                ),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use fleetshift_common::source::{Script, Version};

    use super::*;

    fn revision(sql: &str, transactional: bool, down: bool) -> Revision {
        let path = PathBuf::from("2_change.up.sql");
        Revision {
            version: Version::integer("2").expect("version"),
            name: "change".to_owned(),
            up: Script::new(path.clone(), 1, sql.to_owned()),
            down: down.then(|| {
                Script::new(
                    PathBuf::from("2_change.down.sql"),
                    1,
                    "SELECT 1;".to_owned(),
                )
            }),
            transactional,
            checksum: String::new(),
            failure_tolerated: false,
            irreversible: None,
            backfill: None,
            phase: None,
        }
    }

    fn rules(sql: &str, transactional: bool) -> Vec<(String, usize)> {
        check(&revision(sql, transactional, true))
            .into_iter()
            .map(|finding| (finding.rule, finding.script_line))
            .collect()
    }

    #[test]
    fn whole_table_writes_and_single_statement_backfills() {
        assert_eq!(
            rules(
                "UPDATE users SET plan = 'free';\nDELETE FROM sessions;\nUPDATE users SET a = 1 WHERE b IS NULL;\nUPDATE users SET a = 1 WHERE id BETWEEN 1 AND 1000;\nDELETE FROM t WHERE id = 1;\nUPDATE users SET a = 1 WHERE b IS NULL AND :batch;",
                true
            ),
            [
                (UNBOUNDED_WRITE.to_owned(), 1),
                (UNBOUNDED_WRITE.to_owned(), 2),
                (UNBATCHED_BACKFILL.to_owned(), 3),
            ]
        );
    }

    #[test]
    fn statements_refused_in_a_transaction_only_when_the_revision_has_one() {
        let sql = "CREATE INDEX CONCURRENTLY i ON t (c);\nVACUUM t;\nALTER SYSTEM SET work_mem = '64MB';\nCREATE INDEX j ON t (d);";
        assert_eq!(
            rules(sql, true),
            [
                (NOT_IN_TRANSACTION.to_owned(), 1),
                (NOT_IN_TRANSACTION.to_owned(), 2),
                (NOT_IN_TRANSACTION.to_owned(), 3),
            ]
        );
        assert!(rules(sql, false).is_empty());
    }

    #[test]
    fn a_new_enum_value_used_in_its_own_transaction() {
        let sql = "ALTER TYPE plan ADD VALUE 'team';\nUPDATE accounts SET plan = 'team' WHERE id = 1 AND id BETWEEN 1 AND 2;\nSELECT 'other';";
        assert_eq!(rules(sql, true), [(ENUM_VALUE_USED.to_owned(), 2)]);
        assert!(
            rules(sql, false).is_empty(),
            "autocommit: the value is committed first"
        );
    }

    #[test]
    fn an_up_script_without_statements_is_told_as_information() {
        let found = check(&revision("-- placeholder for MySQL\n", true, true));
        let found: Vec<(&str, Severity)> = found
            .iter()
            .map(|finding| (finding.rule.as_str(), finding.severity))
            .collect();
        assert_eq!(found, [(EMPTY_REVISION, Severity::Info)]);
        assert!(check(&revision("SELECT 1;", true, true)).is_empty());
    }

    #[test]
    fn a_revision_without_a_down_script_is_irreversible() {
        let found = check(&revision("\n\nCREATE TABLE t (id int);", true, false));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rule.as_str(), found[0].script_line),
            (IRREVERSIBLE, 3)
        );
    }
}
