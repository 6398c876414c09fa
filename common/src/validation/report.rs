//! The report two observations make: what the revisions broke fails it; what stands on
//! purpose or stood before is noted.

use crate::proto::v1::{DataCheck, ForeignKeyCheck, TableChecksum, TableRows, ValidationReport};

use super::{ChecksumRead, Observed, change};

/// The validation report of a run that found the shard as `before` and left it as `after`,
/// with the foreign keys checked afterwards.
pub fn compare(
    before: &Observed,
    after: &Observed,
    verify_data: &[DataCheck],
    foreign_keys: Vec<ForeignKeyCheck>,
) -> ValidationReport {
    let mut report = ValidationReport {
        foreign_keys,
        ..ValidationReport::default()
    };
    integrity(before, after, &mut report);
    report.row_counts = after
        .rows
        .iter()
        .map(|(table, counted)| {
            let earlier = before.rows.get(table).copied().flatten();
            TableRows {
                table: table.clone(),
                before: earlier.map(|count| count.rows),
                after: counted.map(|count| count.rows),
                estimated: earlier.is_some_and(|count| count.estimated)
                    || counted.is_some_and(|count| count.estimated),
            }
        })
        .collect();
    for (index, check) in verify_data.iter().enumerate() {
        let earlier = before.checksums.get(index);
        let now = after.checksums.get(index);
        if let (Some(earlier), Some(now)) = (earlier, now) {
            checksums(check, earlier, now, &mut report);
        }
    }
    for key in &report.foreign_keys {
        let note = if key.error.is_empty() {
            (key.violating_rows > 0).then(|| {
                format!(
                    "foreign key {}: {} row(s) violate it (first: {}); fix them before the key is validated",
                    key.constraint,
                    key.violating_rows,
                    key.examples.join(", ")
                )
            })
        } else {
            Some(format!(
                "foreign key {} could not be checked: {}",
                key.constraint, key.error
            ))
        };
        report.notes.extend(note);
    }
    report.passed = report.failures.is_empty();
    report
}

/// Indexes, constraints and the engine's own integrity check.
fn integrity(before: &Observed, after: &Observed, report: &mut ValidationReport) {
    for (index, why) in &after.broken_indexes {
        if before.broken_indexes.get(index) == Some(why) {
            report.notes.push(format!(
                "index {index} was {why} before the revisions and still is"
            ));
        } else {
            report.failures.push(format!(
                "index {index} is {why} after the revisions (a concurrent build failed part-way): drop it and build it again, or roll back"
            ));
        }
    }
    for constraint in &after.not_validated {
        let when = if before.not_validated.contains(constraint) {
            "as before the revisions"
        } else {
            "left so by the revisions"
        };
        report.notes.push(format!(
            "constraint {constraint} is NOT VALID ({when}); validate it with ALTER TABLE … VALIDATE CONSTRAINT"
        ));
    }
    match (&before.integrity, &after.integrity) {
        (_, None) => {}
        (Some(earlier), Some(now)) if earlier == now => report.notes.push(format!(
            "integrity check failed before the revisions too: {now}"
        )),
        (_, Some(now)) => report
            .failures
            .push(format!("integrity check failed after the revisions: {now}")),
    }
}

/// One `--verify-data` table, before and after.
fn checksums(
    check: &DataCheck,
    before: &ChecksumRead,
    after: &ChecksumRead,
    report: &mut ValidationReport,
) {
    let Ok(Some(before)) = before else {
        // Refused before the revisions ran (see `Observed::refusal`).
        return;
    };
    let mut row = TableChecksum {
        table: check.table.clone(),
        columns: check.columns.clone(),
        rows_before: before.rows,
        before: before.sum.clone(),
        ..TableChecksum::default()
    };
    if let Ok(Some(after)) = after {
        row.rows_after = after.rows;
        row.after.clone_from(&after.sum);
        row.equal = after == before;
    }
    if let Some(change) = change(check, before, after) {
        report.failures.push(format!(
            "{change} after the revisions; the plan says they must not change it"
        ));
    }
    report.checksums.push(row);
}
