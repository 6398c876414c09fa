//! Histories written by the benchmarks: many small DDL revisions, as a long-lived service
//! accumulates them.

use std::path::Path;

use anyhow::Context;

/// Writes `count` revisions of small DDL into `directory` in sqlx's layout
/// (`0001_<name>.sql`, each run in its own transaction): every five revisions create a table,
/// add a column, index it, add a check constraint and comment on it.
pub fn small_ddl_history(directory: &Path, count: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory)?;
    for index in 0..count {
        let table = format!("generated_{}", index / 5);
        let (name, sql) = match index % 5 {
            0 => (
                "create",
                format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL);\n"),
            ),
            1 => (
                "add_created_at",
                format!(
                    "ALTER TABLE {table} ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();\n"
                ),
            ),
            2 => (
                "index_name",
                format!("CREATE INDEX {table}_name ON {table} (name);\n"),
            ),
            3 => (
                "check_name",
                format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {table}_name_length CHECK (length(name) < 200);\n"
                ),
            ),
            _ => (
                "comment",
                format!(
                    "COMMENT ON TABLE {table} IS 'generated table {}';\n",
                    index / 5
                ),
            ),
        };
        let file = directory.join(format!("{:04}_{table}_{name}.sql", index + 1));
        std::fs::write(&file, sql).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}
