//! The linter's entry point on generated scripts, in and out of a transaction: it never
//! panics, every finding's line is one the script has, and the statement count is the
//! splitter's.

use std::path::PathBuf;

use fleetshift_common::source::Script;
use fleetshift_coordinator::lint::{LintSettings, lint_script};
use proptest::prelude::*;

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CREATE TABLE t (id bigint PRIMARY KEY, c text)".to_owned()),
        Just("ALTER TABLE t ADD COLUMN d int NOT NULL DEFAULT 0".to_owned()),
        Just("ALTER TABLE t ALTER COLUMN c TYPE varchar(10)".to_owned()),
        Just("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (id) REFERENCES u (id)".to_owned()),
        Just("CREATE INDEX i ON t (c)".to_owned()),
        Just("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c)".to_owned()),
        Just("DROP TABLE t".to_owned()),
        Just("UPDATE t SET c = 'x'".to_owned()),
        Just("BEGIN".to_owned()),
        Just("COMMIT".to_owned()),
        Just("VACUUM t".to_owned()),
        Just("-- squawk-ignore ban-drop-table\nDROP TABLE u".to_owned()),
        Just("DO $$ BEGIN PERFORM 1; END $$".to_owned()),
        "[A-Za-z_ ();,'$0-9\n]{0,40}",
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn linting_any_script_names_lines_it_has(
        statements in prop::collection::vec(statement(), 0..6),
        in_transaction in prop::bool::ANY,
    ) {
        let sql = statements.join(";\n");
        let script = Script::new(PathBuf::from("fuzz.sql"), 1, sql.clone());
        let report = lint_script(&script, in_transaction, "fuzz.sql", &LintSettings::default());
        prop_assert_eq!(report.statements, script.statements().len());
        let lines = sql.split('\n').count().max(1);
        for finding in &report.findings {
            prop_assert!(
                (1..=lines).contains(&finding.line),
                "{:?} names line {} of {}:\n{}", finding.rule, finding.line, lines, sql
            );
        }
    }
}
