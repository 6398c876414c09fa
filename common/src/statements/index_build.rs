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
}

impl IndexBuild {
    pub(super) fn parse(sql: &str) -> Option<Self> {
        let upper_words: Vec<String> = words(sql).take(9).collect();
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
        expect("UNIQUE", &mut position);
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
            Some(identifier_as_stored(&sql[start..end]))
        };
        Some(Self {
            index_name,
            if_not_exists,
        })
    }
}

fn identifier_as_stored(raw: &str) -> String {
    match raw
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => raw.to_ascii_lowercase(),
    }
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
                if_not_exists: true
            })
        );
        let quoted = IndexBuild::parse("create unique index concurrently \"MixedCase\" on t (c)");
        assert_eq!(
            quoted.and_then(|b| b.index_name),
            Some("MixedCase".to_owned())
        );
        let unnamed = IndexBuild::parse("CREATE INDEX CONCURRENTLY ON t (c)");
        assert_eq!(unnamed.map(|b| b.index_name), Some(None));
    }

    #[test]
    fn other_statements_are_not_index_builds() {
        assert_eq!(IndexBuild::parse("CREATE INDEX i ON t (c)"), None);
        assert_eq!(IndexBuild::parse("DROP INDEX CONCURRENTLY i"), None);
    }
}
