//! squawk's PostgreSQL rules, run on one script with the revision's own transaction mode; its
//! violations become findings under squawk's rule names.

use fleetshift_common::source::Script;
use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;

use super::{RawFinding, Severity};

/// Rules about what fleetshift does for every revision already: it sets `lock_timeout` and
/// `statement_timeout` in every session, so asking the script for them is noise.
const HANDLED_BY_FLEETSHIFT: [Rule; 3] = [
    Rule::RequireTimeoutSettings,
    Rule::RequireLockTimeout,
    Rule::RequireStatementTimeout,
];

/// squawk's name for a concurrent index build inside a transaction.
pub(super) const CONCURRENT_INDEX_IN_TRANSACTION: &str =
    "ban-concurrent-index-creation-in-transaction";

pub(super) fn check(script: &Script, transactional: bool) -> Vec<RawFinding> {
    let parse = SourceFile::parse(&script.sql);
    let mut linter = Linter::with_rules(&[], &HANDLED_BY_FLEETSHIFT);
    linter.settings.assume_in_transaction = transactional;
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
        let found = check(&script("SELECT 1;\n\nCREATE INDEX i ON t (c);\n"), true);
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
        let found = check(&script("ALTER TABLE t ADD COLUMN c int;\n"), true);
        assert!(
            found
                .iter()
                .all(|finding| !finding.rule.contains("timeout")),
            "{found:?}"
        );
    }
}
