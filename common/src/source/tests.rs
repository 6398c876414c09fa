use std::path::{Path, PathBuf};

use super::*;

fn write(root: &Path, relative: &str, content: impl AsRef<[u8]>) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create fixture dir");
    }
    std::fs::write(path, content).expect("write fixture");
}

fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("tempdir");
    for (relative, content) in files {
        write(directory.path(), relative, content);
    }
    directory
}

fn load(directory: &Path) -> MigrationSet {
    MigrationSet::load(directory, None).expect("valid migration set")
}

fn problems(directory: &Path, format: Option<SourceFormat>) -> Vec<SourceProblem> {
    MigrationSet::load(directory, format)
        .expect_err("invalid migration set")
        .problems
}

fn versions(set: &MigrationSet) -> Vec<&str> {
    set.revisions.iter().map(|r| r.version.as_str()).collect()
}

#[test]
fn sqlx_up_down_and_single_files() {
    let directory = fixture(&[
        (
            "10_second.up.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);",
        ),
        ("10_second.down.sql", "DROP INDEX CONCURRENTLY i;"),
        ("2_first.sql", "CREATE TABLE t (c int);"),
        ("README.md", "notes"),
    ]);
    let set = load(directory.path());
    assert_eq!(set.format, SourceFormat::Sqlx);
    assert_eq!(versions(&set), ["2", "10"]);
    assert!(set.revisions[0].transactional && set.revisions[0].down.is_none());
    assert!(!set.revisions[1].transactional && set.revisions[1].down.is_some());
    assert_eq!(set.ignored, vec![directory.path().join("README.md")]);
}

#[test]
fn diesel_directories_with_metadata() {
    let directory = fixture(&[
        ("2017-08-31-230457_b/up.sql", "SELECT 2;"),
        ("2017-08-31-230457_b/down.sql", "SELECT -2;"),
        (
            "2017-08-31-230457_b/metadata.toml",
            "run_in_transaction = false\n",
        ),
        ("20140924113530_a/up.sql", "SELECT 1;"),
        ("seed.sql", "INSERT INTO x VALUES (1);"),
    ]);
    let set = load(directory.path());
    assert_eq!(set.format, SourceFormat::Diesel);
    assert_eq!(versions(&set), ["20140924113530", "2017-08-31-230457"]);
    assert!(set.revisions[0].transactional);
    assert!(!set.revisions[1].transactional);
}

#[test]
fn flyway_versions_undo_and_conf() {
    let directory = fixture(&[
        ("V1.2.10__later.sql", "SELECT 3;"),
        ("V1.2.9__earlier.sql", "SELECT 2;"),
        ("U1.2.9__earlier.sql", "SELECT -2;"),
        ("V1__init.sql", "SELECT 1;"),
        ("V1__init.sql.conf", "executeInTransaction=false\n"),
    ]);
    let set = load(directory.path());
    assert_eq!(set.format, SourceFormat::Flyway);
    assert_eq!(versions(&set), ["1", "1.2.9", "1.2.10"]);
    assert!(!set.revisions[0].transactional);
    assert!(set.revisions[1].down.is_some() && set.revisions[2].down.is_none());
}

#[test]
fn dbmate_sections_and_transaction_option() {
    let directory = fixture(&[
        (
            "20200101000000_create.sql",
            "-- migrate:up\nCREATE TABLE t (c int);\n\n-- migrate:down\nDROP TABLE t;\n",
        ),
        (
            "20200102000000_index.sql",
            "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (c);\n-- migrate:down\n",
        ),
    ]);
    let set = load(directory.path());
    assert_eq!(set.format, SourceFormat::Dbmate);
    let create = &set.revisions[0];
    assert_eq!(create.up.sql.trim(), "CREATE TABLE t (c int);");
    assert_eq!(create.up.first_line, 2);
    assert_eq!(
        create.down.as_ref().map(|d| d.sql.trim()),
        Some("DROP TABLE t;")
    );
    assert!(!set.revisions[1].transactional);
    assert!(
        set.revisions[1].down.is_none(),
        "an empty down section means no down"
    );
}

#[test]
fn checksums_and_digest_follow_content() {
    let directory = fixture(&[("1_a.sql", "SELECT 1;"), ("2_b.sql", "SELECT 2;")]);
    let before = load(directory.path());
    assert_eq!(
        before.revisions[0].checksum,
        "17db4fd369edb9244b9f91d9aeed145c3d04ad8ba6e95d06247f07a63527d11a"
    );
    write(directory.path(), "2_b.sql", "SELECT 22;");
    let after = load(directory.path());
    assert_eq!(before.revisions[0].checksum, after.revisions[0].checksum);
    assert_ne!(before.revisions[1].checksum, after.revisions[1].checksum);
    assert_ne!(before.digest, after.digest);
}

#[test]
fn every_problem_is_reported_at_once_with_its_location() {
    let directory = fixture(&[
        ("1_a.up.sql", "SELECT 1;"),
        ("001_again.sql", "SELECT 1;"),
        ("2_orphan.down.sql", "SELECT 1;"),
        ("4_binary.up.sql", ""),
    ]);
    write(
        directory.path(),
        "4_binary.up.sql",
        b"SELECT 1;\nSELECT '\xff';\n",
    );
    std::os::unix::fs::symlink(
        directory.path().join("gone.sql"),
        directory.path().join("5_dangling.up.sql"),
    )
    .expect("dangling symlink");
    let found = problems(directory.path(), None);
    let rendered: Vec<String> = found.iter().map(ToString::to_string).collect();
    let has = |file: &str, text: &str| {
        rendered
            .iter()
            .any(|line| line.contains(file) && line.contains(text))
    };
    assert!(
        has("1_a.up.sql", "duplicate version") || has("001_again.sql", "duplicate version"),
        "{rendered:#?}"
    );
    assert!(
        has("2_orphan.down.sql", "without an up script"),
        "{rendered:#?}"
    );
    assert!(has("4_binary.up.sql:2", "not valid UTF-8"), "{rendered:#?}");
    assert!(
        has("5_dangling.up.sql", "cannot read file"),
        "{rendered:#?}"
    );
    assert_eq!(found.len(), 4, "{rendered:#?}");
}

#[test]
fn missing_up_scripts_are_refused_in_every_format() {
    let diesel = fixture(&[
        ("2017-08-31-230457_b/down.sql", "SELECT 1;"),
        ("20140924113530_a/up.sql", "SELECT 1;"),
    ]);
    assert!(
        problems(diesel.path(), None)[0]
            .message
            .contains("up script missing")
    );
    let flyway = fixture(&[("U2__b.sql", "SELECT 1;"), ("V1__a.sql", "SELECT 1;")]);
    assert!(
        problems(flyway.path(), None)[0]
            .message
            .contains("undo script without")
    );
    let dbmate = fixture(&[
        ("1_a.sql", "-- migrate:down\nSELECT 1;"),
        ("2_b.sql", "-- migrate:up\nSELECT 1;"),
    ]);
    assert!(
        problems(dbmate.path(), None)[0]
            .message
            .contains("no `-- migrate:up` section")
    );
}

#[test]
fn transaction_control_inside_a_revision_is_refused_with_its_line() {
    let directory = fixture(&[(
        "1_a.sql",
        "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);",
    )]);
    let found = problems(directory.path(), None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, Some(2));
    assert!(found[0].message.contains("transaction control"));
}

#[test]
fn mixed_and_unrecognised_layouts_are_refused() {
    let mixed = fixture(&[("V1__a.sql", "SELECT 1;"), ("2_b.up.sql", "SELECT 1;")]);
    let found = problems(mixed.path(), None);
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|p| p.message.contains("mixed layout")));
    let unknown = fixture(&[("notes.txt", "hello")]);
    assert!(
        problems(unknown.path(), None)[0]
            .message
            .contains("unrecognised layout")
    );
    let named = fixture(&[("V1__a.sql", "SELECT 1;")]);
    assert!(
        problems(named.path(), Some(SourceFormat::Sqlx))[0]
            .message
            .contains("does not belong to the sqlx layout")
    );
}

#[test]
fn invalid_metadata_names_its_line() {
    let directory = fixture(&[
        ("20140924113530_a/up.sql", "SELECT 1;"),
        (
            "20140924113530_a/metadata.toml",
            "# comment\nrun_in_transaction = maybe\n",
        ),
    ]);
    let found = problems(directory.path(), None);
    assert_eq!(found[0].line, Some(2), "{found:?}");
}

#[test]
fn unreadable_directory_is_reported() {
    let missing = PathBuf::from("/nonexistent/fleetshift/migrations");
    assert!(
        problems(&missing, None)[0]
            .message
            .contains("cannot read migration directory")
    );
}

#[test]
fn crates_io_history_loads_in_diesel_order() {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/crates.io/migrations");
    let set = load(&corpus);
    assert_eq!(set.format, SourceFormat::Diesel);
    assert_eq!(set.revisions.len(), 285);
    assert_eq!(set.revisions[0].version.as_str(), "00000000000000");
    assert_eq!(set.revisions.iter().filter(|r| !r.transactional).count(), 7);
    assert!(
        set.revisions
            .windows(2)
            .all(|pair| pair[0].version < pair[1].version)
    );
    assert_eq!(set.ignored.len(), 1, "data_oauth_github.sql is seed data");
    let irreversible: Vec<String> = set
        .revisions
        .iter()
        .filter(|r| r.down.is_none())
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(
        irreversible.len(),
        9,
        "comment-only and empty downs: {irreversible:?}"
    );
}

#[test]
fn twenty_digit_versions_load_in_order_and_are_found_however_spelled() {
    let directory = fixture(&[
        ("20150101000001000000_b.up.sql", "SELECT 2;"),
        ("20150100000001000000_a.up.sql", "SELECT 1;"),
        ("100000000000000000000000_c.up.sql", "SELECT 3;"),
    ]);
    let set = load(directory.path());
    assert_eq!(
        versions(&set),
        [
            "20150100000001000000",
            "20150101000001000000",
            "100000000000000000000000"
        ]
    );
    assert_eq!(set.position("20150101000001000000"), Some(1));
    assert_eq!(
        set.position("0020150101000001000000"),
        Some(1),
        "leading zeros"
    );
    assert_eq!(set.position("20150101000001000001"), None);
    assert_eq!(set.position("not-a-version"), None);
    let flyway = fixture(&[("V1.2__a.sql", "SELECT 1;"), ("V1.10__b.sql", "SELECT 2;")]);
    let set = load(flyway.path());
    assert_eq!(
        set.position("1.2.0"),
        Some(0),
        "Flyway's trailing zero parts"
    );
    assert_eq!(set.position("1.10"), Some(1));
}

#[test]
fn a_file_named_almost_like_a_migration_is_told_what_is_wrong() {
    let cases = [
        ("1a_users.up.sql", "the version `1a` is not a number"),
        ("users.up.sql", "has no `_`"),
        (
            "_users.down.sql",
            "the version before the first `_` is empty",
        ),
        ("1_.up.sql", "the name after the first `_` is empty"),
        (
            "2024-01-31_users.sql",
            "the version `2024-01-31` is not a number",
        ),
        ("V1_init.sql", "two underscores"),
        ("R_views.sql", "two underscores"),
    ];
    for (name, reason) in cases {
        // Alone, it is what almost matched (never "unrecognised layout")...
        let alone = fixture(&[(name, "SELECT 1;")]);
        let found = problems(alone.path(), None);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert!(
            found[0].path.ends_with(name) && found[0].message.contains(reason),
            "{name}: {found:?}"
        );
        assert!(!found[0].message.contains("unrecognised"), "{name}");
        // ...and beside valid revisions it is reported, not ignored.
        let beside = fixture(&[("1_ok.up.sql", "SELECT 1;"), (name, "SELECT 1;")]);
        let found = problems(beside.path(), None);
        assert!(
            found
                .iter()
                .any(|problem| problem.path.ends_with(name) && problem.message.contains(reason)),
            "{name}: {found:?}"
        );
    }
    let diesel = fixture(&[
        ("2017-08-31-230457_ok/up.sql", "SELECT 1;"),
        ("2017-08-3x_bad/up.sql", "SELECT 1;"),
    ]);
    let found = problems(diesel.path(), None);
    assert!(
        found
            .iter()
            .any(|problem| problem.path.ends_with("2017-08-3x_bad")
                && problem.message.contains("digits and dashes")),
        "{found:?}"
    );
    // What is not named like a migration stays ignored and listed.
    let seeded = fixture(&[
        ("1_ok.up.sql", "SELECT 1;"),
        ("data_seed.sql", "SELECT 1;"),
        ("README.md", "x"),
    ]);
    let set = load(seeded.path());
    assert_eq!(set.ignored.len(), 2);
}

#[test]
fn an_up_script_without_statements_is_a_no_op_revision_in_every_format() {
    let sqlx = fixture(&[
        ("1_a.up.sql", "SELECT 1;"),
        (
            "2_placeholder.up.sql",
            "-- kept for numbering: this step only exists for MySQL\n",
        ),
        ("3_empty.up.sql", ""),
        ("4_b.up.sql", "SELECT 2;"),
    ]);
    let set = load(sqlx.path());
    let no_ops: Vec<&str> = set
        .revisions
        .iter()
        .filter(|revision| revision.is_no_op())
        .map(|revision| revision.version.as_str())
        .collect();
    assert_eq!(no_ops, ["2", "3"]);
    let dbmate = fixture(&[(
        "1_a.sql",
        "-- migrate:up\n-- nothing here\n-- migrate:down\n",
    )]);
    assert!(load(dbmate.path()).revisions[0].is_no_op());
    let flyway = fixture(&[("V1__a.sql", "/* placeholder */")]);
    assert!(load(flyway.path()).revisions[0].is_no_op());
}

#[test]
fn flyway_runs_a_script_of_concurrent_index_builds_without_a_transaction_as_flyway_does() {
    let directory = fixture(&[
        ("V1__table.sql", "CREATE TABLE t (c int);"),
        (
            "V2__indexes.sql",
            "CREATE INDEX CONCURRENTLY i ON t (c);\nDROP INDEX CONCURRENTLY IF EXISTS old;",
        ),
        ("V3__explicit.sql", "CREATE INDEX CONCURRENTLY j ON t (c);"),
        ("V3__explicit.sql.conf", "executeInTransaction=true\n"),
    ]);
    let set = load(directory.path());
    let modes: Vec<bool> = set.revisions.iter().map(|r| r.transactional).collect();
    assert_eq!(modes, [true, false, true], "a .sql.conf still decides");

    // A mix stays transactional: lint names the statement that would fail.
    let mixed = fixture(&[(
        "V1__mixed.sql",
        "CREATE TABLE t (c int);\nCREATE INDEX CONCURRENTLY i ON t (c);",
    )]);
    assert!(load(mixed.path()).revisions[0].transactional);
}

#[test]
fn plain_begin_commit_blocks_fold_into_the_revisions_transaction_and_nothing_else_does() {
    let directory = fixture(&[
        (
            "1_blocks.up.sql",
            "CREATE TABLE a (id int);\nBEGIN;\nALTER TABLE a ADD b int;\nCOMMIT;\nSTART TRANSACTION;\nALTER TABLE a ADD c int;\nEND;",
        ),
        (
            "1_blocks.down.sql",
            "BEGIN WORK;\nDROP TABLE a;\nCOMMIT WORK;",
        ),
    ]);
    let set = load(directory.path());
    let revision = &set.revisions[0];
    let run: Vec<&str> = revision
        .up
        .statements()
        .iter()
        .map(|s| s.sql.trim())
        .collect();
    assert_eq!(
        run,
        [
            "CREATE TABLE a (id int)",
            "ALTER TABLE a ADD b int",
            "ALTER TABLE a ADD c int"
        ]
    );
    let folded: Vec<usize> = revision.up.folded().iter().map(|s| s.line).collect();
    assert_eq!(folded, [2, 4, 5, 7]);
    let down = revision.down.as_ref().expect("down");
    assert_eq!(down.statements().len(), 1);
    assert_eq!(down.folded().len(), 2);

    for (sql, what) in [
        ("BEGIN;\nSELECT 1;\nROLLBACK;", "a rollback"),
        ("BEGIN;\nSELECT 1;", "an unclosed block"),
        (
            "BEGIN;\nBEGIN;\nSELECT 1;\nCOMMIT;\nCOMMIT;",
            "nested blocks",
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;",
            "options",
        ),
        (
            "-- no-transaction\nBEGIN;\nSELECT 1;\nCOMMIT;",
            "a non-transactional revision",
        ),
    ] {
        let directory = fixture(&[("1_x.up.sql", sql)]);
        let found = problems(directory.path(), None);
        assert!(
            !found.is_empty()
                && found
                    .iter()
                    .all(|problem| problem.message == TRANSACTION_CONTROL),
            "{what} must stay refused: {found:?}"
        );
    }
}

#[test]
fn an_up_down_script_of_concurrent_index_builds_runs_without_a_transaction() {
    let directory = fixture(&[
        ("1_index.up.sql", "CREATE INDEX CONCURRENTLY i ON t (c);"),
        ("1_index.down.sql", "DROP INDEX CONCURRENTLY i;"),
        ("2_plain.up.sql", "CREATE TABLE u (id int);"),
    ]);
    let set = load(directory.path());
    let modes: Vec<bool> = set.revisions.iter().map(|r| r.transactional).collect();
    assert_eq!(modes, [false, true]);
    let mixed = fixture(&[(
        "1_mixed.up.sql",
        "CREATE TABLE t (c int);\nCREATE INDEX CONCURRENTLY i ON t (c);",
    )]);
    assert!(load(mixed.path()).revisions[0].transactional);
}

#[test]
fn flyway_repeatable_scripts_follow_every_versioned_one_named_by_their_content() {
    let directory = fixture(&[
        ("V2__b.sql", "CREATE TABLE b (id int);"),
        ("V10__c.sql", "CREATE TABLE c (id int);"),
        ("R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;"),
        (
            "R__functions.sql",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        ("R__.sql", "SELECT 1;"),
    ]);
    let found = problems(directory.path(), None);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].message.contains("needs a description"),
        "{found:?}"
    );
    std::fs::remove_file(directory.path().join("R__.sql")).expect("remove");
    let set = load(directory.path());
    let labels: Vec<String> = set.revisions.iter().map(Revision::label).collect();
    assert_eq!(labels[..2], ["2_b", "10_c"]);
    let checksum = &set.revisions[2].checksum;
    assert_eq!(labels[2], format!("R__functions#{}", &checksum[..12]));
    assert!(labels[3].starts_with("R__views#"), "{labels:?}");
    assert!(
        set.revisions[2..]
            .iter()
            .all(|r| r.is_repeatable() && r.down.is_none())
    );
    // Another content is another version: pending again.
    std::fs::write(
        directory.path().join("R__views.sql"),
        "CREATE OR REPLACE VIEW v AS SELECT 2;",
    )
    .expect("edit");
    let changed = load(directory.path());
    assert_ne!(
        changed.revisions[3].version.as_str(),
        set.revisions[3].version.as_str()
    );
    assert_ne!(changed.digest, set.digest);
}

#[test]
fn dbmate_takes_the_leading_digits_as_the_version_whatever_follows() {
    let directory = fixture(&[
        (
            "20220807151154-faucet_users.sql",
            "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n",
        ),
        (
            "20220813151154_solana_init-users.sql",
            "-- migrate:up\nSELECT 3;\n",
        ),
        ("20220901000000.sql", "-- migrate:up\nSELECT 4;\n"),
    ]);
    let set = load(directory.path());
    assert_eq!(set.format, SourceFormat::Dbmate);
    let named: Vec<(&str, &str)> = set
        .revisions
        .iter()
        .map(|r| (r.version.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            ("20220807151154", "faucet_users"),
            ("20220813151154", "solana_init-users"),
            ("20220901000000", "20220901000000"),
        ]
    );
}
