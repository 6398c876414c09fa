//! Recognising `CREATE [UNIQUE] INDEX CONCURRENTLY`, the statement whose failure leaves an
//! INVALID index behind and so needs catalog verification instead of trust.

use super::{word_spans, words};

/// A parsed `CREATE INDEX CONCURRENTLY` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBuild {
    /// The index name as PostgreSQL stores it (unquoted identifiers folded to lower case);
    /// `None` when the statement lets the server choose a name.
    pub index_name: Option<String>,
    pub if_not_exists: bool,
    /// The table as written (`demo.buyer`, `"Orders"`): the index is created in its schema,
    /// which need not be on the search path.
    pub table: String,
    pub unique: bool,
    /// The statement after the table's name (` USING btree (c) WHERE …`), as written.
    pub definition: String,
}

impl IndexBuild {
    pub(super) fn parse(sql: &str) -> Option<Self> {
        let upper_words: Vec<String> = words(sql).take(16).collect();
        let mut position = 0;
        let expect = |word: &str, position: &mut usize| {
            let found = upper_words.get(*position).is_some_and(|w| w == word);
            if found {
                *position += 1;
            }
            found
        };
        if !expect("CREATE", &mut position) {
            return None;
        }
        let unique = expect("UNIQUE", &mut position);
        if !(expect("INDEX", &mut position) && expect("CONCURRENTLY", &mut position)) {
            return None;
        }
        let if_not_exists = expect("IF", &mut position);
        if if_not_exists && !(expect("NOT", &mut position) && expect("EXISTS", &mut position)) {
            return None;
        }
        let index_name = if upper_words.get(position).is_some_and(|w| w == "ON") {
            None
        } else {
            let (start, end) = word_spans(sql).nth(position)?;
            position += 1;
            Some(identifier_as_stored(&sql[start..end]))
        };
        if !expect("ON", &mut position) {
            return None;
        }
        expect("ONLY", &mut position);
        let (table, end) = qualified_name(sql, position)?;
        Some(Self {
            index_name,
            if_not_exists,
            table,
            unique,
            definition: sql[end..].to_owned(),
        })
    }
}

/// The possibly schema-qualified name starting at token `position`, as written, and the
/// byte offset where it ends.
fn qualified_name(sql: &str, position: usize) -> Option<(String, usize)> {
    let mut tokens = word_spans(sql).skip(position);
    let (start, mut end) = tokens.next()?;
    let mut name = sql[start..end].to_owned();
    while let Some((dot_start, dot_end)) = tokens.next()
        && &sql[dot_start..dot_end] == "."
    {
        let (part_start, part_end) = tokens.next()?;
        name.push('.');
        name.push_str(&sql[part_start..part_end]);
        end = part_end;
    }
    Some((name, end))
}

/// PostgreSQL keeps at most this many bytes of an identifier (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The identifier as the catalog stores it: unquoted ones folded to lower case, and any
/// longer than 63 bytes cut there on a character boundary, as PostgreSQL cuts them.
fn identifier_as_stored(raw: &str) -> String {
    let mut stored = match raw
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => raw.to_ascii_lowercase(),
    };
    if stored.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !stored.is_char_boundary(end) {
            end -= 1;
        }
        stored.truncate(end);
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_options() {
        let build = IndexBuild::parse(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS Index_Users_Canon ON users (lower(name))",
        );
        assert_eq!(
            build,
            Some(IndexBuild {
                index_name: Some("index_users_canon".to_owned()),
                if_not_exists: true,
                table: "users".to_owned(),
                unique: false,
                definition: " (lower(name))".to_owned(),
            })
        );
        let quoted = IndexBuild::parse("create unique index concurrently \"MixedCase\" on t (c)");
        assert_eq!(
            quoted.and_then(|b| b.index_name),
            Some("MixedCase".to_owned())
        );
        let unnamed = IndexBuild::parse("CREATE INDEX CONCURRENTLY ON t (c)");
        assert_eq!(unnamed.map(|b| b.index_name), Some(None));
        let qualified = IndexBuild::parse(
            "create index concurrently if not exists i_buyer_id_phone on demo.buyer (id, phone)",
        );
        assert_eq!(qualified.map(|b| b.table), Some("demo.buyer".to_owned()));
        let long = IndexBuild::parse(
            "CREATE UNIQUE INDEX CONCURRENTLY idx_courier_phone_and_email_should_be_unique_very_long_name_that_will_be_truncated ON demo.courier (phone, email)",
        );
        assert_eq!(
            long.and_then(|b| b.index_name),
            Some("idx_courier_phone_and_email_should_be_unique_very_long_name_tha".to_owned()),
            "cut at 63 bytes, as PostgreSQL stores it"
        );
        let only =
            IndexBuild::parse("CREATE INDEX CONCURRENTLY i ON ONLY \"Sales\".\"Orders\" (c)");
        assert_eq!(
            only.map(|b| (b.table, b.definition)),
            Some(("\"Sales\".\"Orders\"".to_owned(), " (c)".to_owned()))
        );
        let partial = IndexBuild::parse(
            "CREATE UNIQUE INDEX CONCURRENTLY i ON s.t USING btree (a, b) WHERE c IS NULL",
        )
        .expect("a build");
        assert!(partial.unique);
        assert_eq!(partial.definition, " USING btree (a, b) WHERE c IS NULL");
    }

    #[test]
    fn other_statements_are_not_index_builds() {
        assert_eq!(IndexBuild::parse("CREATE INDEX i ON t (c)"), None);
        assert_eq!(IndexBuild::parse("DROP INDEX CONCURRENTLY i"), None);
    }
}
