use super::*;

const UPGRADE: &str = include_str!("upgrade.sql");
const UPGRADE_PER_MIGRATION: &str = include_str!("upgrade_per_migration.sql");
const DOWNGRADE_RAISES: &str = include_str!("downgrade_raises.sql");

fn summary(rendered: &Rendered) -> Vec<(&str, Vec<&str>, bool)> {
    rendered
        .sections
        .iter()
        .map(|section| {
            let parents = section.parents.iter().map(String::as_str).collect();
            (section.id.as_str(), parents, section.transactional)
        })
        .collect()
}

#[test]
fn an_upgrade_splits_into_revisions_without_alembics_bookkeeping() {
    for output in [UPGRADE, UPGRADE_PER_MIGRATION] {
        let rendered = split(output, Direction::Upgrade);
        assert_eq!(rendered.version_table, "alembic_version");
        assert_eq!(
            summary(&rendered),
            [
                ("aaa1", vec![], true),
                ("ccc3", vec!["aaa1"], true),
                ("bbb2", vec!["aaa1"], false),
                ("ddd4", vec!["bbb2", "ccc3"], true),
            ]
        );
        let sql: Vec<&str> = rendered
            .sections
            .iter()
            .map(|section| section.sql.as_str())
            .collect();
        assert!(sql[0].starts_with("CREATE TABLE account ("), "{}", sql[0]);
        assert!(sql[0].trim_end().ends_with(");"), "{}", sql[0]);
        assert_eq!(
            sql[1],
            "ALTER TABLE account ADD COLUMN note TEXT;\n\n\
             UPDATE account SET note = 'it''s; here' WHERE note IS NULL;\n"
        );
        assert_eq!(
            sql[2],
            "CREATE INDEX CONCURRENTLY account_name_idx ON account (name);\n"
        );
        assert_eq!(sql[3], "", "a merge revision does nothing of its own");
        for section in &rendered.sections {
            assert!(!section.sql.contains("alembic_version"), "{section:?}");
            assert!(!section.sql.contains("BEGIN"), "{section:?}");
            assert!(!section.sql.contains("COMMIT"), "{section:?}");
        }
    }
}

#[test]
fn a_downgrade_that_raised_ends_with_the_revision_that_raised() {
    let rendered = split(DOWNGRADE_RAISES, Direction::Downgrade);
    assert_eq!(
        summary(&rendered),
        [
            ("ddd4", vec!["bbb2", "ccc3"], true),
            ("bbb2", vec!["aaa1"], false),
            ("ccc3", vec!["aaa1"], true),
        ]
    );
    assert_eq!(rendered.sections[0].sql, "");
    assert_eq!(
        rendered.sections[1].sql,
        "DROP INDEX CONCURRENTLY account_name_idx;\n"
    );
}

#[test]
fn a_version_table_of_another_name_is_found_and_left_out() {
    let output = "BEGIN;\n\nCREATE TABLE shard_revisions (\n    version_num VARCHAR(32) NOT NULL\n);\n\n\
        -- Running upgrade  -> a1\n\nCREATE TABLE t (id int);\n\n\
        INSERT INTO shard_revisions (version_num) VALUES ('a1');\n\nCOMMIT;\n";
    let rendered = split(output, Direction::Upgrade);
    assert_eq!(rendered.version_table, "shard_revisions");
    assert_eq!(rendered.sections[0].sql, "CREATE TABLE t (id int);\n");
}

#[test]
fn a_schema_qualified_version_table_is_found_and_left_out() {
    let output = "BEGIN;\n\nCREATE TABLE shards.alembic_version (\n    version_num VARCHAR(32) NOT NULL\n);\n\n\
        -- Running upgrade  -> a1\n\nCREATE TABLE t (id int);\n\n\
        INSERT INTO shards.alembic_version (version_num) VALUES ('a1');\n\n\
        -- Running upgrade a1 -> b2\n\nALTER TABLE t ADD COLUMN n int;\n\n\
        UPDATE shards.alembic_version SET version_num='b2' WHERE shards.alembic_version.version_num = 'a1';\n\nCOMMIT;\n";
    let rendered = split(output, Direction::Upgrade);
    assert_eq!(rendered.version_table, "shards.alembic_version");
    assert_eq!(rendered.sections[0].sql, "CREATE TABLE t (id int);\n");
    assert_eq!(
        rendered.sections[1].sql,
        "ALTER TABLE t ADD COLUMN n int;\n"
    );
}
