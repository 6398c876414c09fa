use super::*;
use crate::rehearsal::effects::{ColumnAdded, LockTaken};
use crate::rehearsal::estimates::estimates;
use crate::rehearsal::scratch::{SampleReport, SampledTable};

fn statement(place: &str, elapsed_us: u64, effects: Effects) -> TracedStatement {
    TracedStatement {
        place: place.to_owned(),
        line: 1,
        sql: format!("-- {place}"),
        elapsed_us,
        effects,
    }
}

fn lock(relation: &str, mode: &str) -> LockTaken {
    LockTaken {
        relation: relation.to_owned(),
        mode: mode.to_owned(),
    }
}

/// Orders: 1000 rows in the shard, 100 in the sample.
fn orders_ten_times_larger() -> Scale {
    Scale::from_sample(&SampleReport {
        tables: vec![SampledTable {
            table: "public.orders".to_owned(),
            rows_in_shard: 1000,
            bytes_in_shard: 1 << 20,
            rows_sampled: 100,
            rows_removed: 0,
            whole: false,
        }],
        ..SampleReport::default()
    })
}

fn revision(statements: Vec<TracedStatement>) -> Vec<RevisionTrace> {
    vec![RevisionTrace {
        version: "2".to_owned(),
        runs: vec![TracedRun {
            in_transaction: true,
            committed: true,
            statements,
        }],
    }]
}

#[test]
fn a_lock_is_held_from_the_statement_that_took_it_to_the_end_of_the_transaction() {
    let trace = revision(vec![
        statement("2_a.sql:1", 100, Effects::default()),
        statement(
            "2_a.sql:2",
            30,
            Effects {
                locks: vec![lock("public.orders", "ShareLock")],
                ..Effects::default()
            },
        ),
        statement(
            "2_a.sql:3",
            7,
            Effects {
                locks: vec![lock("public.orders", "AccessExclusiveLock")],
                rewritten: vec!["public.orders".to_owned()],
                ..Effects::default()
            },
        ),
        statement("2_a.sql:4", 5, Effects::default()),
    ]);
    let scale = orders_ten_times_larger();
    let locks = RunLocks::of(&trace[0].runs[0], &scale);
    let hold = |index| {
        locks
            .strongest("public.orders", index)
            .map(|hold| (hold.mode.as_str(), hold.held_us, hold.estimated_us))
    };
    assert_eq!(hold(0), None);
    // Statement 3 rewrote orders: ten times its 7 µs on the shard.
    assert_eq!(hold(1), Some(("ShareLock", 42, 30 + 70 + 5)));
    assert_eq!(hold(3), Some(("AccessExclusiveLock", 12, 70 + 5)));
    let found = findings(&trace, &[], &scale);
    let e4: Vec<&Finding> = found.iter().filter(|f| f.hint == Hint::E4).collect();
    assert_eq!(
        e4.len(),
        1,
        "once per lock, at the next statement: {found:#?}"
    );
    assert_eq!(e4[0].place, "2_a.sql:4");
    assert_eq!(e4[0].lock_mode.as_deref(), Some("AccessExclusiveLock"));
    assert_eq!(e4[0].held_us, Some(12));
    assert_eq!(e4[0].estimated_hold_us, Some(75));
    let estimated = estimates(&trace, &scale);
    assert_eq!(estimated.len(), 1, "{estimated:?}");
    assert_eq!(
        (estimated[0].place.as_str(), estimated[0].estimated_us),
        ("2_a.sql:3", 70)
    );
}

#[test]
fn a_not_null_without_a_scan_and_a_second_alter_are_told_apart() {
    let added = |column: &str| ColumnAdded {
        table: "public.users".to_owned(),
        column: column.to_owned(),
        type_name: "text".to_owned(),
        not_null: false,
        default: None,
        generated_stored: false,
        identity: false,
    };
    let trace = revision(vec![
        statement(
            "3.sql:1",
            1,
            Effects {
                not_null_set: vec!["public.users.email".to_owned()],
                ..Effects::default()
            },
        ),
        statement(
            "3.sql:2",
            1,
            Effects {
                not_null_set: vec!["public.users.name".to_owned()],
                scanned: vec!["public.users".to_owned()],
                columns_added: vec![added("nick")],
                ..Effects::default()
            },
        ),
    ]);
    let found = findings(&trace, &[], &Scale::default());
    let hints: Vec<(Hint, &str)> = found.iter().map(|f| (f.hint, f.place.as_str())).collect();
    assert_eq!(hints, vec![(Hint::E2, "3.sql:2"), (Hint::W12, "3.sql:2")]);
    assert!(found[0].detail.contains("public.users.name"), "{found:#?}");
}

#[test]
fn every_hint_has_an_id_a_title_and_a_class() {
    for hint in Hint::ALL {
        assert!(!hint.title().is_empty());
        assert_eq!(hint.is_hazard(), hint.id().starts_with('E'));
        assert_eq!(hint.to_string(), hint.id());
    }
    assert!(blocks_writes("ShareLock") && blocks_writes("AccessExclusiveLock"));
    assert!(!blocks_writes("ShareUpdateExclusiveLock") && !blocks_writes("RowExclusiveLock"));
}
