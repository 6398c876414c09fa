//! Splitting a migration script into statements, and recognising the few statement kinds
//! the executor must treat specially (index builds outside a transaction).
//!
//! The splitter understands PostgreSQL's lexical structure well enough to find statement
//! boundaries: single-quoted strings (with `''` and `E'\''` escapes), quoted identifiers,
//! dollar-quoted bodies (`$$ … $$`, `$tag$ … $tag$`), line comments and nested block comments.

mod index_build;

pub use index_build::IndexBuild;

/// One statement of a script, with the 1-based line (within the script) where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub sql: String,
}

impl Statement {
    /// The statement's first words, upper-cased and separated by single spaces, comments skipped.
    pub fn leading_words(&self, count: usize) -> Vec<String> {
        words(&self.sql).take(count).collect()
    }

    /// The statement's code tokens as written (words, literals with their quotes, quoted
    /// identifiers, punctuation), comments skipped.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        word_spans(&self.sql).map(|(start, end)| &self.sql[start..end])
    }

    /// BEGIN, COMMIT, ROLLBACK and friends: they would end fleetshift's own transaction
    /// half-way through a revision.
    pub fn controls_transaction(&self) -> bool {
        let leading = self.leading_words(2);
        match leading.first().map(String::as_str) {
            Some("BEGIN" | "COMMIT" | "ROLLBACK" | "ABORT" | "END") => true,
            Some("START") => leading.get(1).is_some_and(|word| word == "TRANSACTION"),
            _ => false,
        }
    }

    /// Whether PostgreSQL refuses the statement inside a transaction block (`CONCURRENTLY`
    /// index work, `VACUUM`, databases and tablespaces, `ALTER SYSTEM`).
    pub fn refused_in_transaction(&self) -> bool {
        let words = self.leading_words(2);
        let first = words.first().map(String::as_str);
        let second = words.get(1).map(String::as_str);
        match (first, second) {
            (Some("CREATE" | "DROP"), Some("DATABASE" | "TABLESPACE")) => true,
            (Some("CREATE" | "DROP" | "REINDEX"), _) => self
                .tokens()
                .any(|token| token.eq_ignore_ascii_case("CONCURRENTLY")),
            (Some("VACUUM"), _) => true,
            (Some("ALTER"), Some("SYSTEM")) => true,
            _ => false,
        }
    }

    /// A plain `BEGIN` / `START TRANSACTION` (`Some(true)`) or `COMMIT` / `END` (`Some(false)`),
    /// without options; `None` for anything else (other transaction control included).
    pub fn plain_transaction_boundary(&self) -> Option<bool> {
        let words = self.leading_words(3);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["BEGIN"] | ["BEGIN", "TRANSACTION" | "WORK"] | ["START", "TRANSACTION"] => Some(true),
            ["COMMIT" | "END"] | ["COMMIT" | "END", "TRANSACTION" | "WORK"] => Some(false),
            _ => None,
        }
    }

    /// A CREATE INDEX CONCURRENTLY statement, parsed; `None` for anything else.
    pub fn index_build(&self) -> Option<IndexBuild> {
        IndexBuild::parse(&self.sql)
    }

    /// Byte ranges of each `:name` placeholder in the statement's code (not in literals,
    /// quoted identifiers or comments; `::name`, a cast, is none).
    pub fn placeholder_spans(&self, name: &str) -> Vec<(usize, usize)> {
        let spans: Vec<(usize, usize)> = word_spans(&self.sql).collect();
        spans
            .windows(2)
            .enumerate()
            .filter(|(index, pair)| {
                let ((colon_start, colon_end), (word_start, word_end)) = (pair[0], pair[1]);
                let cast = *index > 0 && {
                    let (before_start, before_end) = spans[index - 1];
                    before_end == colon_start && &self.sql[before_start..before_end] == ":"
                };
                &self.sql[colon_start..colon_end] == ":"
                    && colon_end == word_start
                    && self.sql[word_start..word_end].eq_ignore_ascii_case(name)
                    && !cast
            })
            .map(|(_, pair)| (pair[0].0, pair[1].1))
            .collect()
    }

    /// The statement with every `:name` placeholder replaced by `replacement`.
    pub fn with_placeholder(&self, name: &str, replacement: &str) -> Statement {
        let mut sql = String::with_capacity(self.sql.len() + replacement.len());
        let mut copied = 0;
        for (start, end) in self.placeholder_spans(name) {
            sql.push_str(&self.sql[copied..start]);
            sql.push_str(replacement);
            copied = end;
        }
        sql.push_str(&self.sql[copied..]);
        Statement {
            line: self.line,
            sql,
        }
    }

    /// Whether repeating the statement after an interrupted earlier attempt is harmless.
    pub fn is_repeatable(&self) -> bool {
        let leading = self.leading_words(3);
        let first = leading.first().map(String::as_str);
        let upper = self.sql.to_ascii_uppercase();
        matches!(
            first,
            Some("VACUUM" | "ANALYZE" | "REINDEX" | "SET" | "RESET")
        ) || upper.contains("IF NOT EXISTS")
            || upper.contains("IF EXISTS")
            || self
                .index_build()
                .is_some_and(|build| build.index_name.is_some())
    }
}

/// Splits a script into its statements. Comment-only fragments are dropped.
pub fn split(script: &str) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut scanner = Scanner::new(script);
    let mut start: Option<(usize, usize)> = None; // (byte offset, line) of the first token
    while let Some(token) = scanner.next_token() {
        match token {
            Token::Semicolon => {
                if let Some((offset, line)) = start.take() {
                    push_statement(&mut statements, &script[offset..scanner.token_start], line);
                }
            }
            Token::Code => {
                if start.is_none() {
                    start = Some((scanner.token_start, scanner.token_line));
                }
            }
            Token::Trivia => {}
        }
    }
    if let Some((offset, line)) = start {
        push_statement(&mut statements, &script[offset..], line);
    }
    statements
}

fn push_statement(statements: &mut Vec<Statement>, text: &str, line: usize) {
    let sql = text.trim_end().to_owned();
    if !sql.is_empty() {
        statements.push(Statement { line, sql });
    }
}

/// Upper-cased words of a statement, skipping comments.
fn words(sql: &str) -> impl Iterator<Item = String> + '_ {
    word_spans(sql).map(|(start, end)| sql[start..end].to_ascii_uppercase())
}

/// Byte ranges of a statement's words (and other code tokens), skipping comments.
fn word_spans(sql: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut scanner = Scanner::new(sql);
    std::iter::from_fn(move || {
        loop {
            match scanner.next_token()? {
                Token::Code => return Some((scanner.token_start, scanner.position)),
                Token::Trivia | Token::Semicolon => continue,
            }
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Whitespace or a comment.
    Trivia,
    Semicolon,
    /// A word, literal, quoted identifier, dollar-quoted body or punctuation.
    Code,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    position: usize,
    line: usize,
    token_start: usize,
    token_line: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            position: 0,
            line: 1,
            token_start: 0,
            token_line: 1,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.position + ahead).copied()
    }

    fn advance(&mut self) {
        if self.bytes.get(self.position) == Some(&b'\n') {
            self.line += 1;
        }
        self.position += 1;
    }

    fn next_token(&mut self) -> Option<Token> {
        let first = self.peek(0)?;
        self.token_start = self.position;
        self.token_line = self.line;
        let token = match first {
            b';' => {
                self.advance();
                Token::Semicolon
            }
            byte if byte.is_ascii_whitespace() => {
                while self.peek(0).is_some_and(|b| b.is_ascii_whitespace()) {
                    self.advance();
                }
                Token::Trivia
            }
            b'-' if self.peek(1) == Some(b'-') => {
                while self.peek(0).is_some_and(|b| b != b'\n') {
                    self.advance();
                }
                Token::Trivia
            }
            b'/' if self.peek(1) == Some(b'*') => {
                self.skip_block_comment();
                Token::Trivia
            }
            b'\'' => {
                let backslash_escapes = self.token_start > 0
                    && matches!(self.bytes[self.token_start - 1], b'e' | b'E')
                    && !self.preceded_by_word_char(self.token_start - 1);
                self.skip_quoted(b'\'', backslash_escapes);
                Token::Code
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                Token::Code
            }
            b'$' => {
                self.skip_dollar();
                Token::Code
            }
            byte if is_word_byte(byte) => {
                while self.peek(0).is_some_and(|b| is_word_byte(b) || b == b'$') {
                    self.advance();
                }
                Token::Code
            }
            _ => {
                self.advance();
                Token::Code
            }
        };
        Some(token)
    }

    fn preceded_by_word_char(&self, index: usize) -> bool {
        index > 0 && is_word_byte(self.bytes[index - 1])
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(byte) = self.peek(0) {
            if byte == b'/' && self.peek(1) == Some(b'*') {
                depth += 1;
                self.advance();
                self.advance();
            } else if byte == b'*' && self.peek(1) == Some(b'/') {
                depth -= 1;
                self.advance();
                self.advance();
                if depth == 0 {
                    return;
                }
            } else {
                self.advance();
            }
        }
    }

    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        self.advance();
        while let Some(byte) = self.peek(0) {
            if backslash_escapes && byte == b'\\' {
                self.advance();
                self.advance();
            } else if byte == quote {
                self.advance();
                if self.peek(0) == Some(quote) {
                    self.advance();
                } else {
                    return;
                }
            } else {
                self.advance();
            }
        }
    }

    /// `$n` parameters, `$tag$ … $tag$` bodies, or a lone `$`.
    fn skip_dollar(&mut self) {
        let tag_end = self.bytes[self.position + 1..]
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .map(|length| self.position + 1 + length);
        let opens_body = tag_end.is_some_and(|end| {
            self.bytes[end] == b'$'
                && !self
                    .bytes
                    .get(self.position + 1)
                    .is_some_and(u8::is_ascii_digit)
        });
        let Some(end) = tag_end.filter(|_| opens_body) else {
            self.advance();
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.advance();
            }
            return;
        };
        let delimiter = self.bytes[self.position..=end].to_vec();
        while self.position <= end {
            self.advance();
        }
        while self.position < self.bytes.len() {
            if self.bytes[self.position..].starts_with(&delimiter) {
                for _ in 0..delimiter.len() {
                    self.advance();
                }
                return;
            }
            self.advance();
        }
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<(usize, String)> {
        split(script).into_iter().map(|s| (s.line, s.sql)).collect()
    }

    #[test]
    fn placeholders_are_found_in_code_only() {
        let statement = Statement {
            line: 3,
            sql: "UPDATE t SET x = y::batch, note = ':batch' -- :batch\n WHERE :batch AND \":batch\" AND :BATCH".to_owned(),
        };
        assert_eq!(statement.placeholder_spans("batch").len(), 2);
        let rendered = statement.with_placeholder("batch", "(id > 1)");
        assert_eq!(
            rendered.sql,
            "UPDATE t SET x = y::batch, note = ':batch' -- :batch\n WHERE (id > 1) AND \":batch\" AND (id > 1)"
        );
        assert_eq!(rendered.line, 3);
    }

    #[test]
    fn splits_on_semicolons_and_records_lines() {
        let script = "-- header\nCREATE TABLE a (id int);\n\n  INSERT INTO a VALUES (1);\nSELECT 1";
        assert_eq!(
            texts(script),
            vec![
                (2, "CREATE TABLE a (id int)".to_owned()),
                (4, "INSERT INTO a VALUES (1)".to_owned()),
                (5, "SELECT 1".to_owned()),
            ]
        );
    }

    #[test]
    fn semicolons_inside_literals_comments_and_bodies_do_not_split() {
        let script = r#"INSERT INTO t VALUES ('a;b', 'it''s;', E'\';x');
CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;
CREATE FUNCTION g() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
/* a; /* nested; */ still; */ SELECT "odd;name" FROM t; -- trailing; comment
SELECT $1::int"#;
        let statements = split(script);
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert!(statements[1].sql.ends_with("LANGUAGE plpgsql"));
        assert_eq!(statements[3].line, 4);
        assert!(statements[3].sql.contains("\"odd;name\""));
        assert_eq!(statements[4].sql, "SELECT $1::int");
    }

    #[test]
    fn comment_only_scripts_have_no_statements() {
        assert!(split("-- nothing here\n/* or here */\n;\n").is_empty());
    }

    #[test]
    fn transaction_control_is_recognised() {
        let controls: Vec<bool> = split(
            "BEGIN; START TRANSACTION; COMMIT; ROLLBACK; START something; \
             CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        )
        .iter()
        .map(Statement::controls_transaction)
        .collect();
        assert_eq!(controls, [true, true, true, true, false, false]);
    }

    #[test]
    fn leading_words_skip_comments() {
        let statement = &split("/* x */ create -- y\n unique index concurrently i on t (c)")[0];
        assert_eq!(
            statement.leading_words(3),
            vec!["CREATE", "UNIQUE", "INDEX"]
        );
    }
}
