//! The migration source readers on generated directories: file names of every layout
//! (sqlx, golang-migrate, dbmate, Flyway, diesel, pop, Liquibase) and near misses, versions
//! up to 25 digits, scripts with markers, transaction control and bytes that are not UTF-8.
//! Reading never panics; a refusal lists problems that each name a file of the directory (or
//! the directory) and, with a line, one the file has; a set that loads has one revision per
//! version, in order.

use std::collections::BTreeSet;
use std::path::Path;

use fleetshift_common::source::MigrationSet;
use proptest::prelude::*;

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        "[1-9][0-9]{0,3}",
        "20[0-9]{12}",
        "0{1,3}[1-9]",
        "[1-9][0-9]{19,24}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_]{0,10}", "[a-z]{1,4}[-. ][a-z]{1,4}"]
}

/// A file's path within the set's directory.
fn path() -> impl Strategy<Value = String> {
    (version(), name(), 0..12u8, version()).prop_map(
        |(version, name, layout, other)| match layout {
            0 => format!("{version}_{name}.sql"),
            1 => format!("{version}_{name}.up.sql"),
            2 => format!("{version}_{name}.down.sql"),
            3 => format!("V{version}__{name}.sql"),
            4 => format!("U{version}__{name}.sql"),
            5 => format!("R__{name}.sql"),
            6 => format!("{version}_{name}/up.sql"),
            7 => format!("{version}_{name}/down.sql"),
            8 => format!("{version}_{name}.up.fizz"),
            9 => format!("{version}_{name}.postgres.up.sql"),
            10 => format!("V{version}.{other}__{name}.sql"),
            _ => format!("{name}{version}.sql"),
        },
    )
}

fn script() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("CREATE TABLE t (id int);".to_owned()),
        Just("ALTER TABLE t ADD COLUMN c int;".to_owned()),
        Just("CREATE INDEX CONCURRENTLY i ON t (c);".to_owned()),
        Just("-- migrate:up".to_owned()),
        Just("-- migrate:down".to_owned()),
        Just("-- +goose Up".to_owned()),
        Just("-- no-transaction".to_owned()),
        Just("BEGIN;".to_owned()),
        Just("COMMIT;".to_owned()),
        Just("create_table(\"t\") {\n  t.Column(\"c\", \"int\", {})\n}".to_owned()),
        Just("<databaseChangeLog><changeSet id=\"1\" author=\"a\"><sql>SELECT 1</sql></changeSet></databaseChangeLog>".to_owned()),
        "\\PC{0,40}",
    ];
    (
        prop::collection::vec(line, 0..6),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..8)),
    )
        .prop_map(|(lines, junk)| {
            let mut bytes = lines.join("\n").into_bytes();
            if let Some(junk) = junk {
                bytes.extend(junk);
            }
            bytes
        })
}

fn lines_of(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.split(|byte| *byte == b'\n').count())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_directory_loads_or_each_problem_names_its_file_and_line(
        files in prop::collection::vec((path(), script()), 0..8),
    ) {
        let directory = tempfile::tempdir().expect("directory");
        let mut written = BTreeSet::new();
        for (path, script) in &files {
            let full = directory.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("subdirectory");
            }
            std::fs::write(&full, script).expect("file");
            written.insert(full);
        }
        match MigrationSet::load(directory.path(), None) {
            Ok(set) => {
                let versions: Vec<&str> = set
                    .revisions
                    .iter()
                    .map(|revision| revision.version.as_str())
                    .collect();
                let distinct: BTreeSet<&str> = versions.iter().copied().collect();
                prop_assert_eq!(distinct.len(), versions.len(), "{:?}", versions);
            }
            Err(error) => {
                prop_assert!(!error.problems.is_empty(), "{}", error);
                for problem in &error.problems {
                    let named = &problem.path;
                    prop_assert!(
                        named.starts_with(directory.path()),
                        "{} is outside the directory: {}", named.display(), error
                    );
                    if let Some(line) = problem.line {
                        prop_assert!(line >= 1, "{}", error);
                        prop_assert!(
                            line <= lines_of(named).max(1),
                            "line {} past the end of {}: {}", line, named.display(), error
                        );
                    }
                }
            }
        }
    }
}
