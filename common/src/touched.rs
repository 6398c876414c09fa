//! Which table a statement changes, how, and the lock PostgreSQL takes on it: read from the
//! statement's leading words, for notices and risk (a guide for people, not a parser: a
//! statement it does not recognise touches nothing).

use crate::source::Script;
use crate::statements::Statement;

/// A table a statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// As written (schema-qualified when the statement qualifies it), unquoted.
    pub table: String,
    /// `CREATE TABLE`, `ALTER TABLE`, `DROP TABLE`, `CREATE INDEX`, `DROP INDEX`, `UPDATE`,
    /// `DELETE`, `INSERT`, `TRUNCATE`.
    pub operation: &'static str,
    /// The lock the statement holds on the table while it runs.
    pub lock: &'static str,
}

const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
const ROW_EXCLUSIVE: &str = "ROW EXCLUSIVE";
const SHARE: &str = "SHARE";
const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE";

/// Words that may sit between a statement's verb and the table's name.
const NOISE: [&str; 7] = ["IF", "NOT", "EXISTS", "ONLY", "TABLE", "FROM", "INTO"];

pub fn touched(statement: &Statement) -> Option<Touch> {
    let tokens: Vec<&str> = statement.tokens().collect();
    let upper: Vec<String> = tokens
        .iter()
        .map(|token| token.to_ascii_uppercase())
        .collect();
    let word = |index: usize| upper.get(index).map(String::as_str);
    let concurrently = upper.iter().any(|token| token == "CONCURRENTLY");
    let (operation, lock, after) = match (word(0), word(1)) {
        (Some("CREATE"), Some("TABLE")) => ("CREATE TABLE", ACCESS_EXCLUSIVE, 2),
        (Some("CREATE"), Some("UNLOGGED" | "TEMP" | "TEMPORARY")) => {
            ("CREATE TABLE", ACCESS_EXCLUSIVE, 3)
        }
        (Some("ALTER"), Some("TABLE")) => ("ALTER TABLE", ACCESS_EXCLUSIVE, 2),
        (Some("DROP"), Some("TABLE")) => ("DROP TABLE", ACCESS_EXCLUSIVE, 2),
        (Some("TRUNCATE"), _) => ("TRUNCATE", ACCESS_EXCLUSIVE, 1),
        (Some("UPDATE"), _) => ("UPDATE", ROW_EXCLUSIVE, 1),
        (Some("DELETE"), Some("FROM")) => ("DELETE", ROW_EXCLUSIVE, 2),
        (Some("INSERT"), Some("INTO")) => ("INSERT", ROW_EXCLUSIVE, 2),
        (Some("CREATE"), Some("INDEX" | "UNIQUE")) => {
            let on = upper.iter().position(|token| token == "ON")?;
            let lock = if concurrently {
                SHARE_UPDATE_EXCLUSIVE
            } else {
                SHARE
            };
            ("CREATE INDEX", lock, on + 1)
        }
        _ => return None,
    };
    let position = (after..tokens.len()).find(|&index| {
        upper
            .get(index)
            .is_some_and(|word| !NOISE.contains(&word.as_str()))
    })?;
    let name = tokens.get(position)?;
    // `schema . table` arrives as three tokens.
    let table = match (tokens.get(position + 1), tokens.get(position + 2)) {
        (Some(&"."), Some(rest)) => format!("{}.{}", unquote(name), unquote(rest)),
        _ => unquote(name),
    };
    Some(Touch {
        table,
        operation,
        lock,
    })
}

/// The tables `scripts` change, as the catalog names them (`public.` left off), sorted, once
/// each.
pub fn tables_of<'s>(scripts: impl IntoIterator<Item = &'s Script>) -> Vec<String> {
    let mut tables: Vec<String> = scripts
        .into_iter()
        .flat_map(|script| script.statements().iter().filter_map(touched))
        .map(|touch| match touch.table.strip_prefix("public.") {
            Some(table) => table.to_owned(),
            None => touch.table,
        })
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// Columns an `ALTER TABLE` renames, drops or retypes, with what it does to them: what depends
/// on such a column breaks or must be rewritten.
pub fn altered_columns(statement: &Statement) -> Vec<(String, &'static str)> {
    let tokens: Vec<&str> = statement.tokens().collect();
    let upper: Vec<String> = tokens
        .iter()
        .map(|token| token.to_ascii_uppercase())
        .collect();
    if upper.first().map(String::as_str) != Some("ALTER")
        || upper.get(1).map(String::as_str) != Some("TABLE")
    {
        return Vec::new();
    }
    let word = |index: usize| upper.get(index).map(String::as_str);
    let name_after = |mut index: usize| {
        while matches!(word(index), Some("COLUMN" | "IF" | "EXISTS")) {
            index += 1;
        }
        tokens.get(index).map(|token| unquote(token))
    };
    let mut altered = Vec::new();
    // After `ALTER TABLE <name>`.
    for index in 3..upper.len() {
        let action = match (word(index), word(index + 1)) {
            (Some("RENAME"), Some("COLUMN")) => Some(("renamed", index + 1)),
            (Some("RENAME"), Some(next)) if next != "TO" && next != "CONSTRAINT" => {
                Some(("renamed", index + 1))
            }
            (Some("DROP"), Some("COLUMN")) => Some(("dropped", index + 1)),
            (Some("ALTER"), Some(_))
                if upper[index + 1..]
                    .iter()
                    .take(5)
                    .any(|token| token == "TYPE") =>
            {
                Some(("retyped", index + 1))
            }
            _ => None,
        };
        if let Some((action, at)) = action
            && let Some(column) = name_after(at)
        {
            altered.push((column, action));
        }
    }
    altered
}

/// A `FOREIGN KEY (…) REFERENCES …` clause of an `ALTER TABLE`: the columns it constrains
/// and what they reference (names as written, unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyClause {
    pub table: String,
    pub columns: Vec<String>,
    pub referenced: String,
    /// Empty: the referenced table's primary key.
    pub referenced_columns: Vec<String>,
}

/// The table-level foreign keys an `ALTER TABLE` adds.
pub fn added_foreign_keys(statement: &Statement) -> Vec<ForeignKeyClause> {
    let Some(touch) = touched(statement).filter(|touch| touch.operation == "ALTER TABLE") else {
        return Vec::new();
    };
    let tokens: Vec<&str> = statement.tokens().collect();
    let upper: Vec<String> = tokens
        .iter()
        .map(|token| token.to_ascii_uppercase())
        .collect();
    let mut clauses = Vec::new();
    for index in 0..upper.len() {
        if upper[index] != "FOREIGN" || upper.get(index + 1).map(String::as_str) != Some("KEY") {
            continue;
        }
        let (columns, after) = parenthesised(&tokens, index + 2);
        if columns.is_empty() || upper.get(after).map(String::as_str) != Some("REFERENCES") {
            continue;
        }
        let Some(name) = tokens.get(after + 1) else {
            continue;
        };
        let (referenced, next) = match (tokens.get(after + 2), tokens.get(after + 3)) {
            (Some(&"."), Some(rest)) => (format!("{}.{}", unquote(name), unquote(rest)), after + 4),
            _ => (unquote(name), after + 2),
        };
        let (referenced_columns, _) = parenthesised(&tokens, next);
        clauses.push(ForeignKeyClause {
            table: touch.table.clone(),
            columns,
            referenced,
            referenced_columns,
        });
    }
    clauses
}

/// `( a , b )` starting at `start`: the names, and the index after the `)`; nothing when
/// `start` is not a `(`.
fn parenthesised(tokens: &[&str], start: usize) -> (Vec<String>, usize) {
    if tokens.get(start) != Some(&"(") {
        return (Vec::new(), start);
    }
    let mut names = Vec::new();
    for (offset, token) in tokens[start + 1..].iter().enumerate() {
        match *token {
            ")" => return (names, start + offset + 2),
            "," => {}
            name => names.push(unquote(name)),
        }
    }
    (Vec::new(), start)
}

fn unquote(name: &str) -> String {
    name.trim_matches('"').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::split;

    #[test]
    fn the_foreign_keys_an_alter_table_adds_are_read_with_their_columns() {
        let statements = split(
            "ALTER TABLE shop.books ADD CONSTRAINT fk FOREIGN KEY (author_id, \"Region\") REFERENCES shop.authors (id, region) NOT VALID;
             ALTER TABLE books ADD FOREIGN KEY (author_id) REFERENCES authors;
             ALTER TABLE books ADD COLUMN shelf integer REFERENCES shelves;
             CREATE TABLE x (a integer, FOREIGN KEY (a) REFERENCES y (b));",
        );
        let keys: Vec<Vec<ForeignKeyClause>> = statements.iter().map(added_foreign_keys).collect();
        assert_eq!(
            keys[0],
            [ForeignKeyClause {
                table: "shop.books".to_owned(),
                columns: vec!["author_id".to_owned(), "Region".to_owned()],
                referenced: "shop.authors".to_owned(),
                referenced_columns: vec!["id".to_owned(), "region".to_owned()],
            }]
        );
        assert_eq!(keys[1][0].referenced, "authors");
        assert!(keys[1][0].referenced_columns.is_empty());
        assert!(
            keys[2].is_empty(),
            "a new column is NULL everywhere: nothing to close"
        );
        assert!(keys[3].is_empty(), "a new table is empty");
    }

    fn touch(sql: &str) -> Option<(String, &'static str, &'static str)> {
        touched(&split(sql)[0]).map(|touch| (touch.table, touch.operation, touch.lock))
    }

    #[test]
    fn tables_operations_and_locks() {
        assert_eq!(
            touch("ALTER TABLE IF EXISTS ONLY public.users ADD COLUMN a int"),
            Some(("public.users".to_owned(), "ALTER TABLE", ACCESS_EXCLUSIVE))
        );
        assert_eq!(
            touch("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON \"Orders\" (id)"),
            Some(("Orders".to_owned(), "CREATE INDEX", SHARE_UPDATE_EXCLUSIVE))
        );
        assert_eq!(
            touch("create index i on versions (crate_id)"),
            Some(("versions".to_owned(), "CREATE INDEX", SHARE))
        );
        assert_eq!(
            touch("DELETE FROM sessions WHERE expired"),
            Some(("sessions".to_owned(), "DELETE", ROW_EXCLUSIVE))
        );
        assert_eq!(
            touch("CREATE TABLE IF NOT EXISTS t (id int)"),
            Some(("t".to_owned(), "CREATE TABLE", ACCESS_EXCLUSIVE))
        );
        assert_eq!(touch("SELECT 1"), None);
    }

    #[test]
    fn columns_renamed_dropped_or_retyped() {
        let altered = |sql: &str| altered_columns(&split(sql)[0]);
        assert_eq!(
            altered("ALTER TABLE users RENAME COLUMN email TO mail"),
            [("email".to_owned(), "renamed")]
        );
        assert_eq!(
            altered(
                "ALTER TABLE users DROP COLUMN IF EXISTS \"legacy\", ALTER COLUMN age TYPE bigint"
            ),
            [
                ("legacy".to_owned(), "dropped"),
                ("age".to_owned(), "retyped")
            ]
        );
        assert_eq!(
            altered("ALTER TABLE users ALTER COLUMN age SET DATA TYPE bigint"),
            [("age".to_owned(), "retyped")]
        );
        assert!(altered("ALTER TABLE users ADD COLUMN note text").is_empty());
        assert!(altered("ALTER TABLE users RENAME TO people").is_empty());
    }
}
