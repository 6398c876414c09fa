//! fleetshift's lint against the squawk CLI itself, file by file: the same findings under the
//! same names, rule by rule, with squawk's own configuration file and PostgreSQL version.

use std::process::Command;

use fleetshift_tests::{binary, fixtures};
use serde_json::Value;

use super::findings;
use crate::integration::support;

/// The squawk CLI `scripts/test` installs (`.tools/squawk`), or `FLEETSHIFT_SQUAWK`: the
/// version of the squawk-linter crate fleetshift links.
fn squawk_binary() -> std::path::PathBuf {
    std::env::var_os("FLEETSHIFT_SQUAWK").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/squawk/bin/squawk"),
        std::path::PathBuf::from,
    )
}

/// (file name, rule, 1-based line) of every finding, sorted.
type Found = Vec<(String, String, u64)>;

fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// squawk's own findings on `files` with its default semantics, the timeout rules fleetshift
/// leaves out (it sets both timeouts itself) aside.
fn squawks(files: &[std::path::PathBuf]) -> Found {
    squawks_in(files, std::path::Path::new("."))
}

/// [`squawks`], run in `directory` (where squawk looks for `.squawk.toml`).
fn squawks_in(files: &[std::path::PathBuf], directory: &std::path::Path) -> Found {
    let squawk = squawk_binary();
    assert!(
        squawk.is_file(),
        "{} is missing: scripts/test installs it (squawk-cli from PyPI)",
        squawk.display()
    );
    let output = Command::new(&squawk)
        .current_dir(directory)
        .args(["--reporter", "json"])
        .args(files)
        .output()
        .expect("run squawk");
    let violations: Vec<Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("squawk's JSON: {error}\n{}", binary::printed(&output)));
    let left_out: Vec<String> = fleetshift_coordinator::lint::HANDLED_BY_FLEETSHIFT
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut found: Found = violations
        .iter()
        .map(|violation| {
            (
                file_name(violation["file"].as_str().unwrap_or_default()),
                violation["rule_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                violation["line"].as_u64().unwrap_or_default() + 1,
            )
        })
        .filter(|(_, rule, _)| !left_out.contains(rule))
        .collect();
    found.sort();
    found
}

/// `fleetshift lint`'s findings under squawk's names on `files`, each linted as a file.
fn fleetshifts(files: &[std::path::PathBuf]) -> Found {
    fleetshifts_in(files, std::path::Path::new("."))
}

/// [`fleetshifts`], run in `directory` (where fleetshift looks for `.squawk.toml`).
fn fleetshifts_in(files: &[std::path::PathBuf], directory: &std::path::Path) -> Found {
    let output = Command::new(binary::fleetshift())
        .current_dir(directory)
        .args(["lint", "--output", "json", "--fail-on", "never"])
        .args(files)
        .output()
        .expect("run fleetshift lint");
    support::assert_exit(&output, 0);
    let own = fleetshift_coordinator::lint::OWN_RULES;
    let mut found: Found = findings(&output)
        .iter()
        .map(|finding| {
            (
                file_name(finding["file"].as_str().unwrap_or_default()),
                finding["rule"].as_str().unwrap_or_default().to_owned(),
                finding["line"].as_u64().unwrap_or_default(),
            )
        })
        .filter(|(_, rule, _)| !own.contains(&rule.as_str()))
        .collect();
    found.sort();
    found
}

/// Writes each (name, SQL) as `<name>.sql` in a directory that is no migration set.
fn lone_files(files: &[(String, String)]) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let directory = tempfile::tempdir().expect("tempdir");
    let paths = files
        .iter()
        .map(|(name, sql)| {
            let path = directory.path().join(format!("{name}.sql"));
            std::fs::write(&path, sql).expect("write");
            path
        })
        .collect();
    (directory, paths)
}

#[test]
fn crates_io_scripts_linted_as_files_get_exactly_squawks_findings() {
    let set = fleetshift_common::source::MigrationSet::load(&fixtures::crates_io(), None)
        .expect("crates.io");
    let scripts: Vec<(String, String)> = set
        .revisions
        .iter()
        .map(|revision| {
            (
                format!("crates-io-{}", revision.label()),
                revision.up.sql.clone(),
            )
        })
        .collect();
    let (_directory, files) = lone_files(&scripts);
    let expected = squawks(&files);
    assert!(
        expected.len() > 100,
        "crates.io exercises squawk: {}",
        expected.len()
    );
    assert_eq!(fleetshifts(&files), expected);
}

/// For every default squawk rule crates.io does not exercise (but `prefer-repack`, which
/// needs PostgreSQL 19: see the configuration test): a file that fires the rule and one that
/// does not, each compared with squawk itself.
const RULE_CASES: &[(&str, &str, &str)] = &[
    (
        "require-concurrent-index-deletion",
        "DROP INDEX i;",
        "DROP INDEX CONCURRENTLY IF EXISTS i;",
    ),
    (
        "constraint-missing-not-valid",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0);",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;",
    ),
    (
        "adding-serial-primary-key-field",
        "ALTER TABLE t ADD COLUMN id serial PRIMARY KEY;",
        "CREATE TABLE IF NOT EXISTS t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
    ),
    (
        "renaming-table",
        "ALTER TABLE t RENAME TO u;",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS x text;",
    ),
    (
        "syntax-error",
        "SELECT 1;\nALTER TABLE t RENAME COLUMN IF EXISTS x TO x;\nDROP TABLE t;",
        "SELECT 1;",
    ),
    ("ban-drop-database", "DROP DATABASE d;", "SELECT 1;"),
    (
        "prefer-bigint-over-smallint",
        "CREATE TABLE t (x smallint);",
        "CREATE TABLE t (x bigint);",
    ),
    (
        "prefer-timestamp-tz",
        "CREATE TABLE t (at timestamp);",
        "CREATE TABLE t (at timestamptz);",
    ),
    (
        "ban-char-field",
        "CREATE TABLE t (c char(10));",
        "CREATE TABLE t (c text);",
    ),
    (
        "ban-drop-not-null",
        "ALTER TABLE t ALTER COLUMN c DROP NOT NULL;",
        "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1;",
    ),
    ("ban-truncate-cascade", "TRUNCATE t CASCADE;", "TRUNCATE t;"),
    (
        "ban-create-domain-with-constraint",
        "CREATE DOMAIN d AS int CHECK (VALUE > 0);",
        "CREATE DOMAIN d AS int;",
    ),
    (
        "ban-drop-view",
        "DROP VIEW v;",
        "CREATE VIEW v AS SELECT 1;",
    ),
    (
        "ban-drop-schema",
        "DROP SCHEMA s;",
        "CREATE SCHEMA IF NOT EXISTS s;",
    ),
    ("ban-set-schema", "ALTER TABLE t SET SCHEMA s;", "SELECT 1;"),
    (
        "prefer-text-field",
        "CREATE TABLE t (name varchar(100));",
        "CREATE TABLE t (name text);",
    ),
    (
        "transaction-nesting",
        "BEGIN;\nBEGIN;\nSELECT 1;\nCOMMIT;\nCOMMIT;",
        "BEGIN;\nSELECT 1;\nCOMMIT;",
    ),
    (
        "ban-concurrent-index-creation-in-transaction",
        "BEGIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);\nCOMMIT;",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);",
    ),
    (
        "unused-ignore",
        "-- squawk-ignore-next-statement ban-drop-table\nSELECT 1;",
        "SELECT 1;",
    ),
    (
        "ban-alter-domain-with-add-constraint",
        "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0);",
        "ALTER DOMAIN d SET DEFAULT 0;",
    ),
    (
        "ban-uncommitted-transaction",
        "BEGIN;\nSELECT 1;",
        "BEGIN;\nSELECT 1;\nCOMMIT;",
    ),
    (
        "require-enum-value-ordering",
        "ALTER TYPE e ADD VALUE 'x';",
        "ALTER TYPE e ADD VALUE 'x' AFTER 'w';",
    ),
    (
        "identifier-too-long",
        "CREATE TABLE t (a_column_name_that_is_very_long_and_longer_than_sixty_three_characters bigint);",
        "CREATE TABLE t (short_name bigint);",
    ),
    (
        "require-concurrent-partition-detach",
        "ALTER TABLE p DETACH PARTITION c;",
        "ALTER TABLE p DETACH PARTITION c CONCURRENTLY;",
    ),
    (
        "require-concurrent-reindex",
        "REINDEX INDEX i;",
        "REINDEX INDEX CONCURRENTLY i;",
    ),
    (
        "ban-duplicate-column-assignments",
        "UPDATE t SET a = 1, a = 2 WHERE id = 1;",
        "UPDATE t SET a = 1, b = 2 WHERE id = 1;",
    ),
    (
        "ban-drop-sequence",
        "DROP SEQUENCE s;",
        "CREATE SEQUENCE IF NOT EXISTS s;",
    ),
    ("ban-drop-domain", "DROP DOMAIN d;", "SELECT 1;"),
    (
        "ban-drop-generated-expression",
        "ALTER TABLE t ALTER COLUMN c DROP EXPRESSION;",
        "SELECT 1;",
    ),
    (
        "ban-alter-identity",
        "ALTER TABLE t ALTER COLUMN id DROP IDENTITY;",
        "SELECT 1;",
    ),
    (
        "ban-drop-extension",
        "DROP EXTENSION e;",
        "CREATE EXTENSION IF NOT EXISTS e;",
    ),
];

#[test]
fn each_squawk_rule_fires_where_squawk_fires_it_and_nowhere_else() {
    let mut cases = Vec::new();
    for (rule, fires, quiet) in RULE_CASES {
        cases.push((format!("{rule}-fires"), (*fires).to_owned()));
        cases.push((format!("{rule}-quiet"), (*quiet).to_owned()));
    }
    let (_directory, files) = lone_files(&cases);
    let expected = squawks(&files);
    for (rule, _, _) in RULE_CASES {
        let fired = |suffix: &str| {
            expected
                .iter()
                .any(|(file, found, _)| *file == format!("{rule}-{suffix}.sql") && found == rule)
        };
        assert!(
            fired("fires"),
            "squawk fires {rule} on its case: {expected:?}"
        );
        assert!(
            !fired("quiet"),
            "squawk is quiet about {rule} on its other case: {expected:?}"
        );
    }
    assert_eq!(fleetshifts(&files), expected);
}

#[test]
fn squawks_configuration_file_means_the_same_to_fleetshift() {
    let (directory, files) = lone_files(&[
        // adding-field-with-default fires before PostgreSQL 11 only.
        (
            "old-server".to_owned(),
            "ALTER TABLE t ADD COLUMN c bigint DEFAULT 1;".to_owned(),
        ),
        // Only a wrapping transaction makes this a concurrent build in a transaction.
        (
            "in-transaction".to_owned(),
            "CREATE TABLE t (id bigint);\nCREATE INDEX CONCURRENTLY i ON t (id);".to_owned(),
        ),
        ("skip-me".to_owned(), "DROP TABLE t;".to_owned()),
    ]);
    std::fs::write(
        directory.path().join(".squawk.toml"),
        "pg_version = \"10.0\"\nexcluded_rules = [\"prefer-robust-stmts\"]\nassume_in_transaction = true\nexcluded_paths = [\"skip-*.sql\"]\n",
    )
    .expect("config");
    // Paths as given, relative to where both tools run: excluded_paths match them so.
    let files: Vec<std::path::PathBuf> = files
        .iter()
        .filter_map(|file| file.file_name().map(std::path::PathBuf::from))
        .collect();
    let expected = squawks_in(&files, directory.path());
    let rules: Vec<&str> = expected.iter().map(|(_, rule, _)| rule.as_str()).collect();
    assert!(
        rules.contains(&"adding-field-with-default")
            && rules.contains(&"ban-concurrent-index-creation-in-transaction")
            && !rules.contains(&"prefer-robust-stmts")
            && !rules.contains(&"ban-drop-table"),
        "the configuration changes squawk's findings: {expected:?}"
    );
    assert_eq!(fleetshifts_in(&files, directory.path()), expected);

    let typo = Command::new(binary::fleetshift())
        .current_dir(directory.path())
        .args(["lint", "--exclude", "prefer-robust-statements"])
        .arg(&files[0])
        .output()
        .expect("lint");
    support::assert_exit(&typo, 2);
    assert!(
        binary::printed(&typo).contains("unknown rule \"prefer-robust-statements\""),
        "{}",
        binary::printed(&typo)
    );
}

#[test]
fn a_newer_postgres_version_turns_on_the_rules_that_need_it_for_both_tools() {
    let (directory, files) = lone_files(&[("full".to_owned(), "VACUUM FULL t;".to_owned())]);
    let files: Vec<std::path::PathBuf> = files
        .iter()
        .filter_map(|file| file.file_name().map(std::path::PathBuf::from))
        .collect();
    let before = squawks_in(&files, directory.path());
    assert!(
        before.iter().all(|(_, rule, _)| rule != "prefer-repack"),
        "{before:?}"
    );
    assert_eq!(fleetshifts_in(&files, directory.path()), before);
    std::fs::write(
        directory.path().join(".squawk.toml"),
        "pg_version = \"19\"\n",
    )
    .expect("config");
    let after = squawks_in(&files, directory.path());
    assert!(
        after.iter().any(|(_, rule, _)| rule == "prefer-repack"),
        "{after:?}"
    );
    assert_eq!(fleetshifts_in(&files, directory.path()), after);
}
