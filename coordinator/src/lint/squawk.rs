//! squawk's PostgreSQL rules, run on one script with the revision's own transaction mode; its
//! violations become findings under squawk's rule names.

use fleetshift_common::source::Script;
use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;

use super::{LintSettings, RawFinding, Severity};

/// Rules about what fleetshift does for every revision already: it sets `lock_timeout` and
/// `statement_timeout` in every session, so asking the script for them is noise.
pub const HANDLED_BY_FLEETSHIFT: [Rule; 3] = [
    Rule::RequireTimeoutSettings,
    Rule::RequireLockTimeout,
    Rule::RequireStatementTimeout,
];

/// squawk's name for SQL its parser cannot read; the CLI reports those and nothing else of
/// the script, and so does fleetshift.
pub const SYNTAX_ERROR: &str = "syntax-error";

/// squawk's name for a concurrent index build inside a transaction.
pub(super) const CONCURRENT_INDEX_IN_TRANSACTION: &str =
    "ban-concurrent-index-creation-in-transaction";

pub(super) fn check(
    script: &Script,
    transactional: bool,
    settings: &LintSettings,
) -> Vec<RawFinding> {
    let parse = SourceFile::parse(&script.sql);
    let errors = parse.errors();
    if !errors.is_empty() {
        return errors
            .iter()
            .map(|error| {
                let offset = usize::from(error.range().start()).min(script.sql.len());
                RawFinding {
                    rule: SYNTAX_ERROR.to_owned(),
                    severity: Severity::Warning,
                    script_line: line_of(&script.sql, offset),
                    message: format!("squawk cannot parse this: {}", error.message()),
                    hint: Some("squawk checks nothing else in a script it cannot parse; check the SQL, or lint the statement squawk's parser does not know on its own".to_owned()),
                }
            })
            .filter(|finding| !settings.excludes(&finding.rule))
            .collect();
    }
    let excluded: Vec<Rule> = HANDLED_BY_FLEETSHIFT
        .into_iter()
        .chain(
            settings
                .excluded_rules
                .iter()
                .filter_map(|name| name.parse().ok()),
        )
        .collect();
    let mut linter = Linter::with_rules(&[], &excluded);
    linter.settings.assume_in_transaction = transactional;
    if let Some(version) = settings.pg_version {
        linter.settings.pg_version = version;
    }
    linter
        .lint(&parse, &script.sql)
        .into_iter()
        .map(|violation| {
            let offset = usize::from(violation.text_range.start()).min(script.sql.len());
            RawFinding {
                rule: violation.code.to_string(),
                severity: severity(violation.code),
                script_line: line_of(&script.sql, offset),
                message: violation.message,
                hint: violation.help,
            }
        })
        .collect()
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// Blocking locks on busy tables, rewrites and lost data are errors; style advice is info;
/// the rest warns.
fn severity(rule: Rule) -> Severity {
    use Rule::*;
    match rule {
        RequireConcurrentIndexCreation
        | RequireConcurrentIndexDeletion
        | ConstraintMissingNotValid
        | AddingFieldWithDefault
        | AddingForeignKeyConstraint
        | ChangingColumnType
        | AddingNotNullableField
        | AddingSerialPrimaryKeyField
        | AddingRequiredField
        | DisallowedUniqueConstraint
        | BanDropDatabase
        | BanDropTable
        | BanDropColumn
        | BanConcurrentIndexCreationInTransaction
        | BanTruncateCascade
        | BanUncommittedTransaction
        | TransactionNesting
        | RenamingColumn
        | RenamingTable => Severity::Error,
        PreferBigintOverInt
        | PreferBigintOverSmallint
        | PreferIdentity
        | PreferRepack
        | PreferRobustStmts
        | PreferTextField
        | PreferTimestampTz
        | BanCharField
        | IdentifierTooLong
        | RequireTableSchema
        | UnusedIgnore => Severity::Info,
        _ => Severity::Warning,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn script(sql: &str) -> Script {
        Script::new(PathBuf::from("1_x.sql"), 1, sql.to_owned())
    }

    #[test]
    fn squawk_names_and_lines_are_kept() {
        let found = check(
            &script("SELECT 1;\n\nCREATE INDEX i ON t (c);\n"),
            true,
            &LintSettings::default(),
        );
        let index: Vec<(&str, usize, Severity)> = found
            .iter()
            .map(|finding| (finding.rule.as_str(), finding.script_line, finding.severity))
            .filter(|(rule, _, _)| *rule == "require-concurrent-index-creation")
            .collect();
        assert_eq!(
            index,
            [("require-concurrent-index-creation", 3, Severity::Error)]
        );
    }

    #[test]
    fn the_concurrent_index_rule_is_named_as_squawk_names_it() {
        assert_eq!(
            Rule::BanConcurrentIndexCreationInTransaction.to_string(),
            CONCURRENT_INDEX_IN_TRANSACTION
        );
    }

    #[test]
    fn timeout_rules_are_left_to_fleetshift() {
        let found = check(
            &script("ALTER TABLE t ADD COLUMN c int;\n"),
            true,
            &LintSettings::default(),
        );
        assert!(
            found
                .iter()
                .all(|finding| !finding.rule.contains("timeout")),
            "{found:?}"
        );
    }
}
