//! A SQLite shard's snapshot, from `sqlite_schema` and the table pragmas: tables (strict,
//! without rowid), columns by name (type, not null, default, primary-key position, generated),
//! foreign keys and unique constraints (from `pragma_foreign_key_list` and
//! `pragma_index_list`), `CHECK` constraints (taken from the table's SQL, which is the only
//! place SQLite keeps them), and indexes, views and triggers by their SQL with its whitespace
//! folded. SQLite's own objects and fleetshift's ledger tables (`fleetshift_*`) are left out.

use std::collections::BTreeMap;

use sqlx::{Connection, Row, SqliteConnection};

use super::{ObjectKind, Snapshot, attributes};

const OBJECTS: &str = r"
SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema
WHERE name NOT LIKE 'sqlite\_%' ESCAPE '\' AND tbl_name NOT LIKE 'fleetshift\_%' ESCAPE '\'
ORDER BY name";

/// Reads the snapshot of the database `connection` is connected to.
pub async fn read(connection: &mut SqliteConnection) -> Result<Snapshot, sqlx::Error> {
    let mut transaction = connection.begin().await?;
    let rows = sqlx::query(OBJECTS).fetch_all(&mut *transaction).await?;
    let mut snapshot = Snapshot::default();
    for row in rows {
        let kind: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let sql: String = row.try_get(3)?;
        match kind.as_str() {
            "table" => table(&mut transaction, &mut snapshot, &name, &sql).await?,
            "index" | "view" | "trigger" => {
                let kind = match kind.as_str() {
                    "index" => ObjectKind::Index,
                    "view" => ObjectKind::View,
                    _ => ObjectKind::Trigger,
                };
                snapshot.insert(kind, name, attributes([("definition", folded(&sql))]));
            }
            _ => {}
        }
    }
    transaction.commit().await?;
    Ok(snapshot)
}

/// A table, its columns and its constraints.
async fn table(
    connection: &mut SqliteConnection,
    snapshot: &mut Snapshot,
    table: &str,
    sql: &str,
) -> Result<(), sqlx::Error> {
    let shape =
        sqlx::query("SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?")
            .bind(table)
            .fetch_optional(&mut *connection)
            .await?;
    let flag = |set: bool| {
        if set {
            "true".to_owned()
        } else {
            String::new()
        }
    };
    let (without_rowid, strict) = match shape {
        Some(row) => (
            row.try_get::<i64, _>(0)? != 0,
            row.try_get::<i64, _>(1)? != 0,
        ),
        None => (false, false),
    };
    snapshot.insert(
        ObjectKind::Table,
        table,
        attributes([
            ("without_rowid", flag(without_rowid)),
            ("strict", flag(strict)),
        ]),
    );
    let columns = sqlx::query(
        r#"SELECT name, type, "notnull", coalesce(dflt_value, ''), pk, hidden FROM pragma_table_xinfo(?)"#,
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    for column in columns {
        let name: String = column.try_get(0)?;
        let default: String = column.try_get(3)?;
        let primary_key: i64 = column.try_get(4)?;
        let hidden: i64 = column.try_get(5)?;
        snapshot.insert(
            ObjectKind::Column,
            format!("{table}.{name}"),
            attributes([
                ("type", column.try_get::<String, _>(1)?.to_ascii_lowercase()),
                ("not_null", flag(column.try_get::<i64, _>(2)? != 0)),
                ("default", default),
                (
                    "primary_key",
                    if primary_key > 0 {
                        primary_key.to_string()
                    } else {
                        String::new()
                    },
                ),
                ("generated", flag(matches!(hidden, 2 | 3))),
            ]),
        );
    }
    foreign_keys(connection, snapshot, table).await?;
    unique_constraints(connection, snapshot, table).await?;
    for check in checks(sql) {
        snapshot.insert(
            ObjectKind::Constraint,
            format!("{table}.check {check}"),
            attributes([("definition", format!("CHECK {check}"))]),
        );
    }
    Ok(())
}

async fn foreign_keys(
    connection: &mut SqliteConnection,
    snapshot: &mut Snapshot,
    table: &str,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        r#"SELECT id, "table", "from", coalesce("to", ''), on_update, on_delete
           FROM pragma_foreign_key_list(?) ORDER BY id, seq"#,
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    let mut keys: BTreeMap<i64, (String, Vec<String>, Vec<String>, String)> = BTreeMap::new();
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let referenced: String = row.try_get(1)?;
        let actions = format!(
            "ON UPDATE {} ON DELETE {}",
            row.try_get::<String, _>(4)?,
            row.try_get::<String, _>(5)?
        );
        let key = keys
            .entry(id)
            .or_insert_with(|| (referenced, Vec::new(), Vec::new(), actions));
        key.1.push(row.try_get(2)?);
        key.2.push(row.try_get(3)?);
    }
    for (referenced, from, to, actions) in keys.into_values() {
        let from = from.join(", ");
        snapshot.insert(
            ObjectKind::Constraint,
            format!("{table}.foreign key ({from})"),
            attributes([(
                "definition",
                format!(
                    "FOREIGN KEY ({from}) REFERENCES {referenced}({}) {actions}",
                    to.join(", ")
                ),
            )]),
        );
    }
    Ok(())
}

/// `UNIQUE` in the table's definition: SQLite keeps these as automatic indexes.
async fn unique_constraints(
    connection: &mut SqliteConnection,
    snapshot: &mut Snapshot,
    table: &str,
) -> Result<(), sqlx::Error> {
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_index_list(?) WHERE origin = 'u'")
            .bind(table)
            .fetch_all(&mut *connection)
            .await?;
    for index in indexes {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(name, '') FROM pragma_index_info(?) ORDER BY seqno",
        )
        .bind(&index)
        .fetch_all(&mut *connection)
        .await?;
        let columns = columns.join(", ");
        snapshot.insert(
            ObjectKind::Constraint,
            format!("{table}.unique ({columns})"),
            attributes([("definition", format!("UNIQUE ({columns})"))]),
        );
    }
    Ok(())
}

/// SQL with its whitespace folded to single spaces.
fn folded(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parenthesised expression of every `CHECK` in a `CREATE TABLE` statement, folded.
fn checks(sql: &str) -> Vec<String> {
    let characters: Vec<char> = sql.chars().collect();
    let mut found = Vec::new();
    let mut index = 0;
    while index < characters.len() {
        match characters[index] {
            quote @ ('\'' | '"' | '`') => index = skip_quoted(&characters, index, quote),
            '[' => index = skip_quoted(&characters, index, ']'),
            character if character.is_ascii_alphabetic() => {
                let start = index;
                while index < characters.len()
                    && (characters[index].is_ascii_alphanumeric() || characters[index] == '_')
                {
                    index += 1;
                }
                let word: String = characters[start..index].iter().collect();
                if word.eq_ignore_ascii_case("check")
                    && let Some((expression, end)) = parenthesised(&characters, index)
                {
                    found.push(folded(&expression));
                    index = end;
                }
            }
            _ => index += 1,
        }
    }
    found
}

/// The index just past the quoted text that opens at `start`.
fn skip_quoted(characters: &[char], start: usize, close: char) -> usize {
    let mut index = start + 1;
    while index < characters.len() && characters[index] != close {
        index += 1;
    }
    index + 1
}

/// The balanced parenthesised text starting at the first `(` after `from` (only whitespace
/// between), with the index just past it.
fn parenthesised(characters: &[char], from: usize) -> Option<(String, usize)> {
    let mut index = from;
    while index < characters.len() && characters[index].is_whitespace() {
        index += 1;
    }
    if characters.get(index) != Some(&'(') {
        return None;
    }
    let start = index;
    let mut depth = 0usize;
    while index < characters.len() {
        match characters[index] {
            quote @ ('\'' | '"' | '`') => {
                index = skip_quoted(characters, index, quote);
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((characters[start..=index].iter().collect(), index + 1));
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::checks;

    #[test]
    fn checks_are_found_outside_quotes_with_nested_parentheses() {
        let sql = "CREATE TABLE t (a int CHECK (a > 0), b text DEFAULT 'check (no)', \
                   CONSTRAINT both_set CHECK ((a IS NULL) = (b IS NULL)), \"check\" int)";
        assert_eq!(checks(sql), ["(a > 0)", "((a IS NULL) = (b IS NULL))"]);
    }
}
