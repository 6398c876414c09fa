use super::*;

fn counted(rows: i64) -> Option<RowCount> {
    Some(RowCount {
        rows,
        estimated: false,
    })
}

fn summed(rows: i64, sum: &str) -> ChecksumRead {
    Ok(Some(Checksum {
        rows,
        sum: sum.to_owned(),
    }))
}

fn orders() -> Vec<DataCheck> {
    vec![DataCheck {
        table: "orders".to_owned(),
        columns: vec!["id".to_owned(), "total".to_owned()],
    }]
}

#[test]
fn only_what_the_revisions_broke_fails_the_report() {
    let before = Observed {
        broken_indexes: [("old_idx".to_owned(), "invalid".to_owned())].into(),
        not_validated: ["orders.legacy_fk".to_owned()].into(),
        rows: [("orders".to_owned(), counted(10))].into(),
        checksums: vec![summed(10, "42")],
        ..Observed::default()
    };
    let after = Observed {
        broken_indexes: [
            ("old_idx".to_owned(), "invalid".to_owned()),
            ("orders_total_idx".to_owned(), "invalid".to_owned()),
        ]
        .into(),
        not_validated: [
            "orders.legacy_fk".to_owned(),
            "orders.customer_fk".to_owned(),
        ]
        .into(),
        rows: [
            ("orders".to_owned(), counted(10)),
            ("notes".to_owned(), counted(0)),
        ]
        .into(),
        checksums: vec![summed(10, "42")],
        ..Observed::default()
    };
    let report = compare(&before, &after, &orders(), Vec::new());
    assert!(!report.passed);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        report.failures[0].starts_with("index orders_total_idx is invalid after the revisions")
    );
    let notes = report.notes.join("\n");
    assert!(notes.contains("index old_idx was invalid before the revisions and still is"));
    assert!(
        notes.contains("constraint orders.customer_fk is NOT VALID (left so by the revisions)")
    );
    assert!(notes.contains("constraint orders.legacy_fk is NOT VALID (as before the revisions)"));
    let notes_table = &report.row_counts[0];
    assert_eq!(
        (
            notes_table.table.as_str(),
            notes_table.before,
            notes_table.after
        ),
        ("notes", None, Some(0)),
        "a table the revisions created has no count before"
    );
    assert!(report.checksums[0].equal);
}

#[test]
fn changed_or_missing_data_fails_and_names_the_table() {
    let before = Observed {
        checksums: vec![summed(10, "4242424242424242424242")],
        ..Observed::default()
    };
    let changed = Observed {
        checksums: vec![summed(9, "1717")],
        ..Observed::default()
    };
    let report = compare(&before, &changed, &orders(), Vec::new());
    assert!(!report.passed);
    assert_eq!(
        report.failures,
        [
            "--verify-data orders:id,total: the data changed: 10 row(s) before, 9 after, checksum 4242424242424242 before, 1717 after after the revisions; the plan says they must not change it"
        ]
    );
    assert!(!report.checksums[0].equal);
    let gone = Observed {
        checksums: vec![Ok(None)],
        ..Observed::default()
    };
    let report = compare(&before, &gone, &orders(), Vec::new());
    assert_eq!(
        report.failures,
        [
            "--verify-data orders:id,total: the table is gone after the revisions; the plan says they must not change it"
        ]
    );
}

#[test]
fn a_table_that_cannot_be_checksummed_before_refuses_the_run() {
    let checks = orders();
    let plan = Checks {
        touched: &[],
        verify_data: &checks,
        lock_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
    };
    let missing = Observed {
        checksums: vec![Ok(None)],
        ..Observed::default()
    };
    assert_eq!(
        missing.refusal(&plan).as_deref(),
        Some(
            "--verify-data orders:id,total: no such table before the revisions; fix the plan's table name"
        )
    );
    let bad_column = Observed {
        checksums: vec![Err("column t.total does not exist".to_owned())],
        ..Observed::default()
    };
    assert!(
        bad_column
            .refusal(&plan)
            .is_some_and(|refusal| refusal.contains("column t.total does not exist"))
    );
    let fine = Observed {
        checksums: vec![summed(1, "1")],
        ..Observed::default()
    };
    assert_eq!(fine.refusal(&plan), None);
}

#[test]
fn violating_rows_of_an_unvalidated_key_are_noted_not_failed() {
    let keys = vec![
        ForeignKeyCheck {
            constraint: "orders.orders_customer_fk".to_owned(),
            violating_rows: 3,
            examples: vec!["(7)".to_owned(), "(9)".to_owned()],
            error: String::new(),
        },
        ForeignKeyCheck {
            constraint: "orders.clean_fk".to_owned(),
            ..ForeignKeyCheck::default()
        },
    ];
    let report = compare(&Observed::default(), &Observed::default(), &[], keys);
    assert!(report.passed);
    assert_eq!(
        report.notes,
        [
            "foreign key orders.orders_customer_fk: 3 row(s) violate it (first: (7), (9)); fix them before the key is validated"
        ]
    );
}

#[test]
fn an_integrity_failure_that_stood_before_is_a_note() {
    let broken = Observed {
        integrity: Some("row 3 missing from index i".to_owned()),
        ..Observed::default()
    };
    let report = compare(&broken, &broken, &[], Vec::new());
    assert!(report.passed);
    let report = compare(&Observed::default(), &broken, &[], Vec::new());
    assert_eq!(
        report.failures,
        ["integrity check failed after the revisions: row 3 missing from index i"]
    );
}
