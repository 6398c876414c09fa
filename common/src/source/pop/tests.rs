use std::path::Path;

use crate::source::{Engine, MigrationSet, SourceFormat, SourceProblem};

fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(directory.path().join(name), content).expect("write fixture");
    }
    directory
}

fn problems(directory: &Path, format: Option<SourceFormat>) -> Vec<SourceProblem> {
    MigrationSet::load(directory, format)
        .expect_err("invalid migration set")
        .problems
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .expect("name")
}

/// Each revision of the engine's set: version, up file name, down file name, transactional.
fn runs(set: &MigrationSet, engine: Engine) -> Vec<(String, String, Option<String>, bool)> {
    set.for_engine(engine)
        .revisions
        .iter()
        .map(|revision| {
            (
                revision.version.to_string(),
                file_name(&revision.up.path).to_owned(),
                revision
                    .down
                    .as_ref()
                    .map(|script| file_name(&script.path).to_owned()),
                revision.transactional,
            )
        })
        .collect()
}

fn owned(
    version: &str,
    up: &str,
    down: Option<&str>,
    transactional: bool,
) -> (String, String, Option<String>, bool) {
    (
        version.to_owned(),
        up.to_owned(),
        down.map(str::to_owned),
        transactional,
    )
}

#[test]
fn each_engine_runs_its_dialect_file_else_the_file_for_every_dialect() {
    let directory = fixture(&[
        (
            "20150100000001000000_networks.postgres.up.sql",
            "CREATE TABLE networks (id uuid);",
        ),
        (
            "20150100000001000000_networks.postgres.down.sql",
            "DROP TABLE networks;",
        ),
        (
            "20150100000001000000_networks.sqlite3.up.sql",
            "CREATE TABLE networks (id text);",
        ),
        (
            "20150100000001000000_networks.sqlite3.down.sql",
            "DROP TABLE networks;",
        ),
        (
            "20150100000001000000_networks.mysql.up.sql",
            "CREATE TABLE networks (id char(36));",
        ),
        (
            "20150100000001000000_networks.cockroach.up.sql",
            "CREATE TABLE networks (id uuid);",
        ),
        (
            "20220420102701000000_metadata.up.sql",
            "ALTER TABLE networks ADD COLUMN note text;",
        ),
        (
            "20220420102701000000_metadata.down.sql",
            "ALTER TABLE networks DROP COLUMN note;",
        ),
        (
            "20220420102701000000_metadata.sqlite.up.sql",
            "ALTER TABLE networks ADD note text;",
        ),
        (
            "20241029153900000001_index.autocommit.up.sql",
            "CREATE INDEX CONCURRENTLY i ON networks (id);",
        ),
        (
            "20241029153900000001_index.autocommit.down.sql",
            "DROP INDEX CONCURRENTLY i;",
        ),
        (
            "20241101000000000000_mysql_only.mysql.up.sql",
            "ALTER TABLE networks ENGINE=InnoDB;",
        ),
        ("20241101000000000000_mysql_only.mysql.down.sql", ""),
        (
            "20241102000000000000_empty_down.postgres.up.sql",
            "DELETE FROM networks;",
        ),
        (
            "20241102000000000000_empty_down.postgres.down.sql",
            "-- nothing to restore\n",
        ),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("a pop set");
    assert_eq!(set.format, SourceFormat::Pop);
    assert_eq!(
        runs(&set, Engine::Postgres),
        [
            owned(
                "20150100000001000000",
                "20150100000001000000_networks.postgres.up.sql",
                Some("20150100000001000000_networks.postgres.down.sql"),
                true
            ),
            owned(
                "20220420102701000000",
                "20220420102701000000_metadata.up.sql",
                Some("20220420102701000000_metadata.down.sql"),
                true
            ),
            owned(
                "20241029153900000001",
                "20241029153900000001_index.autocommit.up.sql",
                Some("20241029153900000001_index.autocommit.down.sql"),
                false
            ),
            owned(
                "20241101000000000000",
                "20241101000000000000_mysql_only.postgres.up.sql",
                Some("20241101000000000000_mysql_only.postgres.down.sql"),
                true
            ),
            owned(
                "20241102000000000000",
                "20241102000000000000_empty_down.postgres.up.sql",
                Some("20241102000000000000_empty_down.postgres.down.sql"),
                true
            ),
        ]
    );
    assert_eq!(
        runs(&set, Engine::Sqlite),
        [
            owned(
                "20150100000001000000",
                "20150100000001000000_networks.sqlite3.up.sql",
                Some("20150100000001000000_networks.sqlite3.down.sql"),
                true
            ),
            owned(
                "20220420102701000000",
                "20220420102701000000_metadata.sqlite.up.sql",
                Some("20220420102701000000_metadata.down.sql"),
                true
            ),
            owned(
                "20241029153900000001",
                "20241029153900000001_index.autocommit.up.sql",
                Some("20241029153900000001_index.autocommit.down.sql"),
                false
            ),
            owned(
                "20241101000000000000",
                "20241101000000000000_mysql_only.sqlite3.up.sql",
                Some("20241101000000000000_mysql_only.sqlite3.down.sql"),
                true
            ),
            owned(
                "20241102000000000000",
                "20241102000000000000_empty_down.sqlite3.up.sql",
                Some("20241102000000000000_empty_down.sqlite3.down.sql"),
                true
            ),
        ]
    );
    // A version with files for other dialects only does nothing here, both ways, and the
    // file it names for this engine does not exist.
    let mysql_only = &set.for_engine(Engine::Sqlite).revisions[3];
    assert!(mysql_only.is_no_op() && !mysql_only.up.path.exists());
    // Every engine's set pins the same digest; the other formats have one set for all.
    assert_eq!(set.for_engine(Engine::Sqlite).digest, set.digest);
    assert_eq!(set.engine_variants().count(), 2);
}

#[test]
fn the_digest_covers_the_files_of_every_engine() {
    let files = [
        (
            "1_accounts.postgres.up.sql",
            "CREATE TABLE accounts (id bigint);",
        ),
        (
            "1_accounts.sqlite3.up.sql",
            "CREATE TABLE accounts (id integer);",
        ),
    ];
    let directory = fixture(&files);
    let before = MigrationSet::load(directory.path(), None)
        .expect("pop")
        .digest;
    std::fs::write(
        directory.path().join("1_accounts.sqlite3.up.sql"),
        "CREATE TABLE accounts (id integer, name text);",
    )
    .expect("edit");
    let after = MigrationSet::load(directory.path(), None)
        .expect("pop")
        .digest;
    assert_ne!(
        before, after,
        "a change only SQLite runs changes the digest"
    );
    // The same scripts as a dialect-less file: a different file for PostgreSQL, another digest.
    let moved = fixture(&[
        ("1_accounts.up.sql", "CREATE TABLE accounts (id bigint);"),
        (
            "1_accounts.sqlite3.up.sql",
            "CREATE TABLE accounts (id integer, name text);",
        ),
    ]);
    let renamed = MigrationSet::load(moved.path(), None).expect("pop").digest;
    assert_ne!(
        after, renamed,
        "the digest names the files each engine runs"
    );
}

#[test]
fn dialect_less_scripts_alone_stay_golang_migrate_unless_pop_is_named() {
    let directory = fixture(&[
        ("1_accounts.up.sql", "CREATE TABLE accounts (id bigint);"),
        ("1_accounts.down.sql", "DROP TABLE accounts;"),
    ]);
    let detected = MigrationSet::load(directory.path(), None).expect("sqlx");
    assert_eq!(detected.format, SourceFormat::Sqlx);
    assert_eq!(detected.engine_variants().count(), 0);
    let named = MigrationSet::load(directory.path(), Some(SourceFormat::Pop)).expect("pop");
    assert_eq!(named.format, SourceFormat::Pop);
    assert_eq!(
        runs(&named, Engine::Sqlite),
        [owned(
            "1",
            "1_accounts.up.sql",
            Some("1_accounts.down.sql"),
            true
        )]
    );
    assert_eq!("popx".parse::<SourceFormat>(), Ok(SourceFormat::Pop));
}

#[test]
fn every_pop_mistake_names_its_file_and_what_to_do() {
    let directory = fixture(&[
        ("1_a.postgres.up.sql", "SELECT 1;"),
        ("1_b.sqlite3.up.sql", "SELECT 1;"),
        ("2_c.sqlite.up.sql", "SELECT 1;"),
        ("2_c.sqlite3.up.sql", "SELECT 1;"),
        (
            "3_d.autocommit.up.sql",
            "CREATE INDEX CONCURRENTLY i ON t (c);",
        ),
        ("3_d.down.sql", "DROP INDEX i;"),
        ("4_e.postgres.down.sql", "SELECT 1;"),
        ("4_e.mysql.up.sql", "SELECT 1;"),
        ("5_f.oracle.up.sql", "SELECT 1;"),
        ("5_f.postgres.up.sql", "SELECT 1;"),
        ("6_g.up.fizz", "create_table(\"g\") {}"),
    ]);
    let found = problems(directory.path(), Some(SourceFormat::Pop));
    let said = |file: &str| -> String {
        found
            .iter()
            .filter(|problem| file_name(&problem.path) == file)
            .map(|problem| problem.message.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let expected = [
        (
            "1_b.sqlite3.up.sql",
            "the same version is named `b` here and `a`",
        ),
        ("2_c.sqlite3.up.sql", "a second up script for sqlite3"),
        ("3_d.down.sql", "is `.autocommit` but this script is not"),
        (
            "4_e.postgres.down.sql",
            "down script without an up script for postgres",
        ),
        ("5_f.oracle.up.sql", "`oracle` is not a dialect pop knows"),
        ("6_g.up.fizz", "fizz is pop's own language, not SQL"),
    ];
    for (file, message) in expected {
        assert!(said(file).contains(message), "{file}: {found:?}");
    }
    assert_eq!(
        found.len(),
        6,
        "each mistake once, though two engines read it: {found:?}"
    );
}
