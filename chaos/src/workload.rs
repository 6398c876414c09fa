//! The campaign's migration set (sqlx's layout, ups and downs): every transactional revision
//! inserts a row naming its version into `witness` in its own transaction, so a revision that
//! ran twice leaves two rows and one recorded without running leaves none; the revisions run
//! outside a transaction build indexes concurrently on `accounts` (the index, valid, is their
//! witness). Some revisions sleep (slow statements) and some take `accounts`' strongest lock,
//! which the application load contends for.

use std::path::Path;

use anyhow::Context;

/// The set's last version; versions run `1..=LAST`.
pub const LAST: u32 = 8;

/// How a revision's effect is seen on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// One row in `witness` naming the version.
    Witness,
    /// A valid index of this name.
    Index(&'static str),
}

/// What revision `version` leaves behind.
pub fn evidence(version: u32) -> Evidence {
    match version {
        3 => Evidence::Index("accounts_balance"),
        6 => Evidence::Index("accounts_c2"),
        _ => Evidence::Witness,
    }
}

/// `(file name, script)` for every up and down script.
fn scripts() -> Vec<(String, String)> {
    let revisions: [(u32, &str, &str, &str); LAST as usize] = [
        (
            1,
            "base",
            "CREATE TABLE witness (version int NOT NULL);\n\
             CREATE TABLE accounts (id bigserial PRIMARY KEY, balance int NOT NULL DEFAULT 0);\n\
             INSERT INTO witness VALUES (1);\n",
            "",
        ),
        (
            2,
            "add_c2",
            "INSERT INTO witness VALUES (2);\nSELECT pg_sleep(0.3);\n\
             ALTER TABLE accounts ADD COLUMN c2 int;\n",
            "ALTER TABLE accounts DROP COLUMN c2;\nDELETE FROM witness WHERE version = 2;\n",
        ),
        (
            3,
            "index_balance",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY accounts_balance ON accounts (balance);\n",
            "-- no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS accounts_balance;\n",
        ),
        (
            4,
            "sample",
            "INSERT INTO witness VALUES (4);\n\
             CREATE TABLE sample_4 AS SELECT id FROM accounts WHERE id % 50 = 0;\n\
             SELECT pg_sleep(1);\n",
            "DROP TABLE sample_4;\nDELETE FROM witness WHERE version = 4;\n",
        ),
        (
            5,
            "add_c5",
            "INSERT INTO witness VALUES (5);\nALTER TABLE accounts ADD COLUMN c5 text;\n",
            "ALTER TABLE accounts DROP COLUMN c5;\nDELETE FROM witness WHERE version = 5;\n",
        ),
        (
            6,
            "index_c2",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY accounts_c2 ON accounts (c2);\n",
            "-- no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS accounts_c2;\n",
        ),
        (
            7,
            "default_c5",
            "INSERT INTO witness VALUES (7);\nSELECT pg_sleep(0.5);\n\
             ALTER TABLE accounts ALTER COLUMN c5 SET DEFAULT 'seven';\n",
            "ALTER TABLE accounts ALTER COLUMN c5 DROP DEFAULT;\nDELETE FROM witness WHERE version = 7;\n",
        ),
        (
            8,
            "notes",
            "INSERT INTO witness VALUES (8);\nCREATE TABLE notes_8 (id bigint PRIMARY KEY, body text);\n",
            "DROP TABLE notes_8;\nDELETE FROM witness WHERE version = 8;\n",
        ),
    ];
    let mut files = Vec::new();
    for (version, name, up, down) in revisions {
        files.push((format!("{version}_{name}.up.sql"), up.to_owned()));
        if !down.is_empty() {
            files.push((format!("{version}_{name}.down.sql"), down.to_owned()));
        }
    }
    files
}

/// Writes the set into `directory` (which must exist).
pub fn write(directory: &Path) -> anyhow::Result<()> {
    for (name, script) in scripts() {
        let path = directory.join(&name);
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The application's rows, loaded once revision 1 made the table: enough that an index
/// build on `accounts` takes a while.
pub fn fill_statement(rows: u64) -> String {
    format!("INSERT INTO accounts (balance) SELECT g % 1000 FROM generate_series(1, {rows}) g")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::source::MigrationSet;

    #[test]
    fn the_set_loads_with_every_revision_reversible_but_the_first() {
        let directory = tempfile::tempdir().expect("directory");
        write(directory.path()).expect("written");
        let set = MigrationSet::load(directory.path(), None).expect("the set loads");
        assert_eq!(set.revisions.len(), LAST as usize);
        for revision in &set.revisions {
            let version: u32 = revision.version.as_str().parse().expect("numeric");
            assert_eq!(revision.down.is_some(), version > 1, "{}", revision.label());
            let outside = matches!(evidence(version), Evidence::Index(_));
            assert_eq!(!revision.transactional, outside, "{}", revision.label());
        }
    }
}
