//! Statements as `watch` and `events` tell them: one running (inside its revision's
//! transaction: uncommitted), then committed, or rolled back by a lock conflict or with its
//! revision.

use fleetshift_common::proto::v1::{LockRetry, StatementFinished, StatementRunning};
use serde_json::json;

use super::{duration_of, humane};

/// The most of a statement's text a line shows: its first line, cut here.
const LINE_TEXT: usize = 80;

/// What a running statement's state is called.
fn running_state(statement: &StatementRunning) -> &'static str {
    if statement.in_transaction {
        "running (uncommitted)"
    } else {
        "running"
    }
}

/// `3 3_index.sql:2 running (uncommitted) 12.0s, holds AccessExclusiveLock on public.items:
/// ALTER TABLE items …`; as it starts, without the time and the locks.
pub(super) fn running_line(statement: &StatementRunning) -> String {
    let elapsed = duration_of(statement.elapsed).unwrap_or_default();
    let mut line = format!(
        "{} {} {}",
        statement.version,
        statement.location,
        running_state(statement)
    );
    if !elapsed.is_zero() {
        line.push_str(&format!(" {}", humane(elapsed)));
    }
    let (waits, holds): (Vec<&String>, Vec<&String>) = statement
        .locks
        .iter()
        .partition(|lock| lock.starts_with("waiting for "));
    if !waits.is_empty() {
        line.push_str(&format!(", {}", join(&waits)));
    }
    if !holds.is_empty() {
        line.push_str(&format!(", holds {}", join(&holds)));
    }
    let first_line = statement.text.lines().next().unwrap_or_default();
    let shown: String = first_line.chars().take(LINE_TEXT).collect();
    let cut = shown.len() < statement.text.len();
    line.push_str(&format!(": {shown}{}", if cut { " …" } else { "" }));
    line
}

fn join(locks: &[&String]) -> String {
    locks
        .iter()
        .map(|lock| lock.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3 3_index.sql:2 committed in 12.4s`.
pub(super) fn finished_line(statement: &StatementFinished) -> String {
    format!(
        "{} {} committed in {}",
        statement.version,
        statement.location,
        humane(duration_of(statement.duration).unwrap_or_default())
    )
}

/// `3 lock wait at 3_index.sql:2 (attempt 1, 55P03): rolled back, retrying`.
pub(super) fn retried_line(retry: &LockRetry) -> String {
    format!(
        "{} lock wait at {} (attempt {}, {}): rolled back, retrying",
        retry.version, retry.location, retry.attempt, retry.sqlstate
    )
}

/// A running statement's fields in an event's JSON line.
pub(super) fn running_json(statement: &StatementRunning) -> serde_json::Value {
    json!({
        "version": statement.version,
        "location": statement.location,
        "state": running_state(statement),
        "in_transaction": statement.in_transaction,
        "elapsed_ms": duration_of(statement.elapsed).map(|elapsed| elapsed.as_millis()),
        "locks": statement.locks,
        "text": statement.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_statement_says_what_it_holds_and_waits_for() {
        let mut statement = StatementRunning {
            version: "3".to_owned(),
            location: "3_items.sql:2".to_owned(),
            text: "ALTER TABLE items\n  ADD COLUMN note text".to_owned(),
            elapsed: None,
            locks: Vec::new(),
            in_transaction: true,
        };
        assert_eq!(
            running_line(&statement),
            "3 3_items.sql:2 running (uncommitted): ALTER TABLE items …"
        );
        statement.elapsed =
            prost_types::Duration::try_from(std::time::Duration::from_secs(12)).ok();
        statement.locks = vec![
            "waiting for AccessExclusiveLock on public.items".to_owned(),
            "RowExclusiveLock on public.notes".to_owned(),
        ];
        statement.in_transaction = false;
        assert_eq!(
            running_line(&statement),
            "3 3_items.sql:2 running 12.0s, waiting for AccessExclusiveLock on public.items, holds RowExclusiveLock on public.notes: ALTER TABLE items …"
        );
    }
}
