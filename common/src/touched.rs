//! Which table a statement changes, how, and the lock PostgreSQL takes on it: read from the
//! statement's leading words, for notices and risk (a guide for people, not a parser: a
//! statement it does not recognise touches nothing).

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

fn unquote(name: &str) -> String {
    name.trim_matches('"').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::split;

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
