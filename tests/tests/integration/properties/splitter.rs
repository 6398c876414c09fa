//! The statement splitter: statements built from PostgreSQL's lexical pieces (strings with
//! `''` and `E'\''` escapes, quoted identifiers, dollar quotes, nested comments, identifiers
//! with `$`), each able to hold a `;`, come back exactly as written, at the line each starts
//! on; and on any text at all, every statement is a trimmed piece of the script, in order, at
//! its true line.

use fleetshift_common::statements::split;
use proptest::prelude::*;

/// A code token of a statement, as written.
fn code() -> impl Strategy<Value = String> {
    let text = "[a-z ;$'\"\\\\/*\\-\n]{0,12}";
    prop_oneof![
        "[a-z_][a-z0-9_]{0,8}",
        "[a-z_][a-z0-9_]{0,4}\\$[a-z0-9_$]{0,4}",
        "[0-9]{1,6}",
        "\\$[1-9]",
        text.prop_map(|body| format!("'{}'", body.replace('\'', "''"))),
        text.prop_map(|body| format!("E'{}'", body.replace('\\', "\\\\").replace('\'', "\\'"))),
        text.prop_map(|body| format!("\"{}\"", body.replace('"', "\"\""))),
        ("[a-z]{0,3}", text).prop_filter_map("the body holds its own tag", |(tag, body)| {
            let delimiter = format!("${tag}$");
            (!format!("{body}$").contains(&delimiter))
                .then(|| format!("{delimiter}{body}{delimiter}"))
        }),
        prop_oneof![
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(",".to_owned()),
            Just("::".to_owned()),
            Just("=".to_owned()),
            Just(".".to_owned()),
        ],
    ]
}

/// Whitespace or a comment between tokens.
fn trivia() -> impl Strategy<Value = String> {
    let text = "[a-z ;$'\"]{0,10}";
    prop_oneof![
        4 => Just(" ".to_owned()),
        2 => Just("\n".to_owned()),
        1 => text.prop_map(|body| format!(" -- {body}\n")),
        1 => (text, text).prop_map(|(outer, inner)| format!(
            "/* {outer} /* {inner} */ {outer} */"
        )),
    ]
}

/// A statement: code tokens with trivia between them, beginning and ending with code.
fn statement() -> impl Strategy<Value = String> {
    (code(), prop::collection::vec((trivia(), code()), 0..8)).prop_map(|(first, rest)| {
        let mut text = first;
        for (between, token) in rest {
            // Spaced, so that two tokens never run together into one (`a` `b` → `ab`).
            text.push(' ');
            text.push_str(&between);
            text.push(' ');
            text.push_str(&token);
        }
        text
    })
}

fn line_at(script: &str, offset: usize) -> usize {
    1 + script[..offset].matches('\n').count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn statements_come_back_as_written_at_their_lines(
        pieces in prop::collection::vec((trivia(), statement()), 1..6),
        trailing in prop::bool::ANY,
    ) {
        let mut script = String::new();
        let mut expected = Vec::new();
        for (index, (before, statement)) in pieces.iter().enumerate() {
            script.push_str(before);
            expected.push((line_at(&script, script.len()), statement.clone()));
            script.push_str(statement);
            if index + 1 < pieces.len() || trailing {
                script.push_str(";\n");
            }
        }
        let split: Vec<(usize, String)> = split(&script)
            .into_iter()
            .map(|statement| (statement.line, statement.sql))
            .collect();
        prop_assert_eq!(split, expected, "script:\n{}", script);
    }

    #[test]
    fn any_text_splits_into_trimmed_pieces_in_order_at_their_lines(script in "\\PC{0,200}") {
        let mut from = 0;
        for statement in split(&script) {
            prop_assert!(!statement.sql.is_empty());
            prop_assert_eq!(statement.sql.trim_end(), statement.sql.as_str());
            let offset = script[from..]
                .find(&statement.sql)
                .map(|at| from + at);
            prop_assert!(offset.is_some(), "{:?} is not in the script after {}", statement.sql, from);
            let offset = offset.unwrap_or_default();
            prop_assert_eq!(statement.line, line_at(&script, offset));
            from = offset + statement.sql.len();
        }
    }
}
