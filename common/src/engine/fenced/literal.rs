//! Values written into the ledger's own SQL as literals instead of bound as parameters, so a
//! fenced transaction's bookkeeping travels in one simple-protocol batch (one round trip to the
//! server) instead of one extended-protocol exchange per statement. Only the ledger's templates
//! go through here; migration scripts are sent as they are.

use std::fmt::Write as _;

/// One value of a ledger statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Literal<'a> {
    Integer(i64),
    Boolean(bool),
    Text(&'a str),
    /// PostgreSQL only: `ARRAY[…]` of the values.
    Array(&'a [Literal<'a>]),
    Null,
}

impl<'a> From<Option<&'a str>> for Literal<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Literal::Null, Literal::Text)
    }
}

impl From<Option<i64>> for Literal<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Literal::Null, Literal::Integer)
    }
}

/// How a database spells literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// Why a template could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LiteralError {
    /// No database text can hold a NUL character, and the wire protocol would cut the batch
    /// there.
    #[error("a ledger value contains a NUL character: {0:?}")]
    Nul(String),
    #[error("the ledger statement refers to ${0}, which has no value")]
    Missing(usize),
    #[error("SQLite has no array values")]
    Array,
}

impl Dialect {
    fn write(self, value: Literal<'_>, out: &mut String) -> Result<(), LiteralError> {
        match value {
            Literal::Integer(number) => {
                let _ = write!(out, "{number}");
            }
            Literal::Boolean(flag) => out.push_str(match (self, flag) {
                (Dialect::Postgres, true) => "true",
                (Dialect::Postgres, false) => "false",
                (Dialect::Sqlite, true) => "1",
                (Dialect::Sqlite, false) => "0",
            }),
            Literal::Null => out.push_str("NULL"),
            Literal::Text(text) => self.write_text(text, out)?,
            Literal::Array(_) if self == Dialect::Sqlite => return Err(LiteralError::Array),
            Literal::Array(values) => {
                out.push_str("ARRAY[");
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    self.write(*value, out)?;
                }
                out.push(']');
            }
        }
        Ok(())
    }

    /// A string literal: quotes doubled; in PostgreSQL a text with a backslash is written as
    /// an escape string (`E'…'`, backslashes doubled), which reads the same whatever
    /// `standard_conforming_strings` says. SQLite has no backslash escapes.
    fn write_text(self, text: &str, out: &mut String) -> Result<(), LiteralError> {
        if text.contains('\0') {
            return Err(LiteralError::Nul(text.replace('\0', "\\0")));
        }
        let escape = self == Dialect::Postgres && text.contains('\\');
        if escape {
            out.push('E');
        }
        out.push('\'');
        for character in text.chars() {
            match character {
                '\'' => out.push_str("''"),
                '\\' if escape => out.push_str("\\\\"),
                other => out.push(other),
            }
        }
        out.push('\'');
        Ok(())
    }

    /// `template` with every `$n` replaced by `values[n - 1]` written as a literal. The
    /// templates are the ledger's own statements, which hold no `$` anywhere else.
    pub(crate) fn render(
        self,
        template: &str,
        values: &[Literal<'_>],
    ) -> Result<String, LiteralError> {
        let mut out = String::with_capacity(template.len() + 16 * values.len());
        let mut rest = template;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let number: usize = after[..digits]
                .parse()
                .map_err(|_| LiteralError::Missing(0))?;
            let value = number
                .checked_sub(1)
                .and_then(|index| values.get(index))
                .ok_or(LiteralError::Missing(number))?;
            self.write(*value, &mut out)?;
            rest = &after[digits..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_each_dialect_reads_them() {
        let values = [
            Literal::Integer(-7),
            Literal::Boolean(true),
            Literal::Text("it's"),
            Literal::Null,
            Literal::Text(r"C:\dir"),
        ];
        let template = "VALUES ($1, $2, $3, $4, $5) -- $1 again: $1";
        assert_eq!(
            Dialect::Postgres
                .render(template, &values)
                .expect("rendered"),
            r"VALUES (-7, true, 'it''s', NULL, E'C:\\dir') -- -7 again: -7"
        );
        assert_eq!(
            Dialect::Sqlite.render(template, &values).expect("rendered"),
            r"VALUES (-7, 1, 'it''s', NULL, 'C:\dir') -- -7 again: -7"
        );
    }

    #[test]
    fn two_digit_parameters_are_not_read_as_one_digit() {
        let values: Vec<Literal> = (1..=12).map(Literal::Integer).collect();
        assert_eq!(
            Dialect::Postgres
                .render("$1,$10,$12,$2", &values)
                .expect("rendered"),
            "1,10,12,2"
        );
    }

    #[test]
    fn a_nul_or_a_missing_value_is_refused() {
        assert!(matches!(
            Dialect::Postgres.render("$1", &[Literal::Text("a\0b")]),
            Err(LiteralError::Nul(_))
        ));
        assert_eq!(
            Dialect::Sqlite.render("$2", &[Literal::Null]),
            Err(LiteralError::Missing(2))
        );
        assert_eq!(
            Dialect::Sqlite.render("$0", &[]),
            Err(LiteralError::Missing(0))
        );
    }

    #[test]
    fn arrays_are_postgres_only() {
        let values = [Literal::Text("a"), Literal::Text("b'c")];
        assert_eq!(
            Dialect::Postgres
                .render(
                    "$1::text[], $2::text[]",
                    &[Literal::Array(&values), Literal::Array(&[])]
                )
                .expect("rendered"),
            "ARRAY['a', 'b''c']::text[], ARRAY[]::text[]"
        );
        assert_eq!(
            Dialect::Sqlite.render("$1", &[Literal::Array(&values)]),
            Err(LiteralError::Array)
        );
    }

    #[test]
    fn a_dollar_without_digits_stays() {
        assert_eq!(
            Dialect::Postgres.render("$$x$$", &[]).expect("rendered"),
            "$$x$$"
        );
    }
}
