use std::path::Path;

use crate::source::{Engine, MigrationSet, SourceFormat, SourceProblem};

fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        let path = directory.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write fixture");
    }
    directory
}

fn problems(directory: &Path) -> Vec<SourceProblem> {
    MigrationSet::load(directory, None)
        .expect_err("invalid changelog")
        .problems
}

fn said(problems: &[SourceProblem]) -> Vec<String> {
    problems
        .iter()
        .map(|problem| {
            let file = problem
                .path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("?");
            match problem.line {
                Some(line) => format!("{file}:{line}: {}", problem.message),
                None => format!("{file}: {}", problem.message),
            }
        })
        .collect()
}

const CHANGELOG: &str = "-- liquibase formatted sql

-- changeset alice:create-accounts
-- comment: the accounts table
CREATE TABLE accounts (id bigint PRIMARY KEY);
CREATE TABLE audit (id bigint);
--rollback DROP TABLE audit;
--rollback DROP TABLE accounts;

--changeSet bob:index runInTransaction:false splitStatements:false
CREATE INDEX CONCURRENTLY accounts_id ON accounts (id)
/* liquibase rollback
DROP INDEX CONCURRENTLY accounts_id;
*/

--changeset \"carol smith\":seed
INSERT INTO accounts VALUES (1);
--rollback empty

--changeset Dave Jones:forever
ALTER TABLE accounts ADD COLUMN note text;
";

#[test]
fn changesets_are_revisions_in_order_named_author_and_id() {
    let directory = fixture(&[("changelog.sql", CHANGELOG)]);
    let set = MigrationSet::load(directory.path(), None).expect("a Liquibase changelog");
    assert_eq!(set.format, SourceFormat::Liquibase);
    let listed: Vec<(String, String, bool)> = set
        .revisions
        .iter()
        .map(|revision| {
            (
                revision.version.to_string(),
                revision.name.clone(),
                revision.transactional,
            )
        })
        .collect();
    let expected = [
        ("1", "alice:create-accounts", true),
        ("2", "bob:index", false),
        ("3", "carol smith:seed", true),
        ("4", "Dave Jones:forever", true),
    ]
    .map(|(version, name, transactional)| (version.to_owned(), name.to_owned(), transactional));
    assert_eq!(listed, expected);
    let first = &set.revisions[0];
    let statements: Vec<String> = first
        .up
        .statements()
        .iter()
        .map(|statement| first.up.locate(statement))
        .collect();
    let file = directory.path().join("changelog.sql");
    assert_eq!(
        statements,
        [
            format!("{}:5", file.display()),
            format!("{}:6", file.display())
        ],
        "statements are located on their lines of the file"
    );
    assert!(
        !first.up.sql.contains("DROP"),
        "rollback lines are not run up"
    );
    let down = first.down.as_ref().expect("a rollback");
    assert_eq!(down.statements().len(), 2);
    assert_eq!(
        down.locate(&down.statements()[1]),
        format!("{}:8", file.display())
    );
    let block = set.revisions[1].down.as_ref().expect("a rollback block");
    assert_eq!(block.sql.trim(), "DROP INDEX CONCURRENTLY accounts_id;");
    let nothing = set.revisions[2]
        .down
        .as_ref()
        .expect("`--rollback empty` reverts nothing");
    assert!(nothing.statements().is_empty());
    assert!(set.revisions[3].down.is_none(), "no rollback: irreversible");
    assert_eq!(
        set.engine_variants().count(),
        0,
        "every engine runs the same"
    );
}

#[test]
fn a_master_changelog_orders_the_files_it_includes() {
    let directory = fixture(&[
        (
            "db.changelog-master.yaml",
            "databaseChangeLog:\n  - include:\n      file: db/changelog/sql/schema.sql\n  - include:\n      file: sql/accounts.sql\n  - includeAll:\n      path: more/\n      relativeToChangelogFile: true\n",
        ),
        (
            "sql/accounts.sql",
            "--liquibase formatted sql\n--changeset a:accounts\nCREATE TABLE s.accounts (id int);\n",
        ),
        (
            "sql/schema.sql",
            "--liquibase formatted sql\n--changeset a:schema\nCREATE SCHEMA s;\n",
        ),
        (
            "more/b.sql",
            "--liquibase formatted sql\n--changeset a:b\nCREATE TABLE s.b (id int);\n",
        ),
        (
            "more/a.sql",
            "--liquibase formatted sql\n--changeset a:a\nCREATE TABLE s.a (id int);\n",
        ),
        ("README.md", "notes"),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("a master changelog");
    let names: Vec<&str> = set
        .revisions
        .iter()
        .map(|revision| revision.name.as_str())
        .collect();
    assert_eq!(names, ["a:schema", "a:accounts", "a:a", "a:b"]);
    let ignored: Vec<&str> = set
        .ignored
        .iter()
        .filter_map(|path| path.file_name().and_then(|name| name.to_str()))
        .collect();
    assert_eq!(
        ignored,
        ["README.md"],
        "the folders the master reads are not ignored"
    );

    let xml = fixture(&[
        (
            "changelog.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?>
<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog">
    <include file="changes/2.sql" relativeToChangelogFile="true"/>
    <include file="changes/1.sql" relativeToChangelogFile="true"/>
</databaseChangeLog>"#,
        ),
        (
            "changes/1.sql",
            "--liquibase formatted sql\n--changeset a:one\nSELECT 1;\n",
        ),
        (
            "changes/2.sql",
            "--liquibase formatted sql\n--changeset a:two\nSELECT 2;\n",
        ),
    ]);
    let set = MigrationSet::load(xml.path(), None).expect("an XML master changelog");
    let names: Vec<&str> = set
        .revisions
        .iter()
        .map(|revision| revision.name.as_str())
        .collect();
    assert_eq!(names, ["a:two", "a:one"]);
}

#[test]
fn a_changeset_for_another_database_is_a_no_op_there() {
    let directory = fixture(&[(
        "changelog.sql",
        "--liquibase formatted sql\n--changeset a:1 dbms:postgresql\nCREATE EXTENSION citext;\n--changeset a:2 dbms:!postgresql\nSELECT 2;\n--changeset a:3 ignore:true\nSELECT 3;\n--changeset a:4 dbms:all\nSELECT 4;\n",
    )]);
    let set = MigrationSet::load(directory.path(), None).expect("load");
    let runs = |engine: Engine| -> Vec<(String, bool)> {
        set.for_engine(engine)
            .revisions
            .iter()
            .map(|revision| (revision.name.clone(), revision.is_no_op()))
            .collect()
    };
    let owned =
        |items: [(&str, bool); 3]| items.map(|(name, no_op)| (name.to_owned(), no_op)).to_vec();
    assert_eq!(
        runs(Engine::Postgres),
        owned([("a:1", false), ("a:2", true), ("a:4", false)])
    );
    assert_eq!(
        runs(Engine::Sqlite),
        owned([("a:1", true), ("a:2", false), ("a:4", false)])
    );
    assert_eq!(set.engine_variants().count(), 2);
}

#[test]
fn what_fleetshift_cannot_honour_is_refused_by_name_and_line() {
    let directory = fixture(&[(
        "changelog.sql",
        "--liquibase formatted sql
CREATE TABLE early (id int);
--changeset a:1
--preconditions onFail:MARK_RAN
--precondition-sql-check expectedResult:0 SELECT count(*) FROM t
SELECT 1;
--changeset a:2 context:dev labels:demo
SELECT 2;
--changeset a:3 runAlways:true endDelimiter:/
SELECT 3;
--changeset nobody
SELECT 4;
--changeset a:1
SELECT 5;
--changeset a:6 colour:blue
SELECT 6;
/* liquibase rollback
SELECT 7;
",
    )]);
    let found = said(&problems(directory.path()));
    let expected = [
        "changelog.sql:2: SQL before the first `--changeset` line",
        "changelog.sql:4: `--preconditions` is not supported",
        "changelog.sql:5: `--precondition-…` is not supported",
        "changelog.sql:7: `context:dev` is not supported",
        "changelog.sql:7: `labels:demo` is not supported",
        "changelog.sql:9: `runAlways:true` is not supported",
        "changelog.sql:9: `endDelimiter:/` is not supported",
        "changelog.sql:11: `--changeset nobody` does not name the changeset",
        "changelog.sql:13: changeset a:1 is already defined on line 3",
        "changelog.sql:15: unknown changeset attribute `colour`",
        "changelog.sql:17: this `/* liquibase rollback` block is never closed",
    ];
    for expected in expected {
        assert!(
            found.iter().any(|problem| problem.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn a_master_changelog_that_points_nowhere_or_holds_changesets_is_refused() {
    let directory = fixture(&[
        (
            "changelog.xml",
            r#"<databaseChangeLog>
    <include file="missing.sql"/>
    <include file="../outside.sql"/>
    <include file="plain.sql" relativeToChangelogFile="true"/>
    <changeSet id="1" author="a"><createTable tableName="t"/></changeSet>
</databaseChangeLog>"#,
        ),
        ("plain.sql", "CREATE TABLE t (id int);\n"),
    ]);
    let found = said(&problems(directory.path()));
    let expected = [
        "changelog.xml: the include `missing.sql` names nothing in the migration directory",
        "changelog.xml: the include `../outside.sql` leaves the migration directory",
        "changelog.xml: line 5: <changeSet> is not supported",
        "plain.sql:1: a Liquibase SQL changelog must begin with the line `--liquibase formatted sql`",
    ];
    for expected in expected {
        assert!(
            found.iter().any(|problem| problem.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}
