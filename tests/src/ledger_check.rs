//! The after-fault checker: what a shard's ledger must look like whatever happened to the
//! migrators — each revision applied once, in the set's order, no gap, nothing left unfinished,
//! and fencing tokens never going backwards along the order of application.

use fleetshift_common::fence::FenceToken;
use fleetshift_common::ledger::{LedgerEntry, RevisionStatus};
use fleetshift_common::source::MigrationSet;

/// Checks `ledger` against `set` when the shard should be at `target` (the set's last
/// revision when `None`); returns every violation found.
pub fn check(
    set: &MigrationSet,
    ledger: &[LedgerEntry],
    target: Option<&str>,
) -> Result<(), Vec<String>> {
    let mut violations = Vec::new();
    let end = match target {
        Some(version) => set
            .revisions
            .iter()
            .position(|revision| revision.version.as_str() == version)
            .map(|index| index + 1),
        None => Some(set.revisions.len()),
    };
    let Some(end) = end else {
        return Err(vec![format!("target {target:?} is not in the set")]);
    };
    let mut last_token = FenceToken::INITIAL;
    for (index, revision) in set.revisions.iter().enumerate() {
        let rows: Vec<&LedgerEntry> = ledger
            .iter()
            .filter(|entry| entry.version == revision.version.as_str())
            .collect();
        let expected_applied = index < end;
        match rows.as_slice() {
            [] if expected_applied => violations.push(format!(
                "{}: missing (a gap before the target)",
                revision.label()
            )),
            [] => {}
            [row] => {
                if row.checksum != revision.checksum {
                    violations.push(format!(
                        "{}: applied checksum differs from the file",
                        revision.label()
                    ));
                }
                match (row.status, expected_applied) {
                    (RevisionStatus::Applied, true) => {
                        if row.fence_token < last_token {
                            violations.push(format!(
                                "{}: fence token {} is older than {} used for an earlier revision",
                                revision.label(),
                                row.fence_token,
                                last_token
                            ));
                        }
                        last_token = row.fence_token;
                    }
                    (RevisionStatus::Applied, false) => {
                        violations.push(format!("{}: applied beyond the target", revision.label()));
                    }
                    (status, true) => {
                        violations.push(format!("{}: {status}, expected applied", revision.label()))
                    }
                    (RevisionStatus::Started, false) => {
                        violations.push(format!("{}: left started (unfinished)", revision.label()));
                    }
                    (_, false) => {}
                }
            }
            _ => violations.push(format!("{}: {} history rows", revision.label(), rows.len())),
        }
    }
    for entry in ledger {
        if set.revision(&entry.version).is_none() {
            violations.push(format!(
                "{}: in the ledger but not in the set",
                entry.version
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> (tempfile::TempDir, MigrationSet) {
        let directory = crate::fixtures::migrations(&[
            ("1_a.sql", "SELECT 1;"),
            ("2_b.sql", "SELECT 2;"),
            ("3_c.sql", "SELECT 3;"),
        ]);
        let set = MigrationSet::load(directory.path(), None).expect("set");
        (directory, set)
    }

    fn row(set: &MigrationSet, version: &str, status: RevisionStatus, token: i64) -> LedgerEntry {
        LedgerEntry {
            version: version.to_owned(),
            name: "n".to_owned(),
            checksum: set
                .revision(version)
                .map(|revision| revision.checksum.clone())
                .unwrap_or_default(),
            status,
            transactional: true,
            fence_token: FenceToken::from_raw(token),
            plan_id: None,
            agent_id: "a".to_owned(),
            started_at: "t".to_owned(),
            finished_at: None,
            duration_ms: None,
            statements_run: 1,
            error: None,
        }
    }

    #[test]
    fn a_clean_ledger_passes() {
        let (_directory, set) = set();
        let ledger = [
            row(&set, "1", RevisionStatus::Applied, 5),
            row(&set, "2", RevisionStatus::Applied, 5),
            row(&set, "3", RevisionStatus::Applied, 9),
        ];
        assert_eq!(check(&set, &ledger, None), Ok(()));
        assert_eq!(check(&set, &ledger[..2], Some("2")), Ok(()));
    }

    #[test]
    fn every_kind_of_damage_is_reported() {
        let (_directory, set) = set();
        let gap = [
            row(&set, "1", RevisionStatus::Applied, 1),
            row(&set, "3", RevisionStatus::Applied, 1),
        ];
        assert!(check(&set, &gap, None).expect_err("gap")[0].contains("missing"));
        let backwards = [
            row(&set, "1", RevisionStatus::Applied, 7),
            row(&set, "2", RevisionStatus::Applied, 3),
            row(&set, "3", RevisionStatus::Applied, 7),
        ];
        assert!(
            check(&set, &backwards, None).expect_err("token went back")[0].contains("older than")
        );
        let unfinished = [
            row(&set, "1", RevisionStatus::Applied, 1),
            row(&set, "2", RevisionStatus::Started, 1),
        ];
        assert!(
            check(&set, &unfinished, Some("1")).expect_err("started")[0].contains("left started")
        );
        let beyond = [
            row(&set, "1", RevisionStatus::Applied, 1),
            row(&set, "2", RevisionStatus::Applied, 1),
        ];
        assert!(
            check(&set, &beyond, Some("1")).expect_err("beyond")[0].contains("beyond the target")
        );
        let mut edited = row(&set, "1", RevisionStatus::Applied, 1);
        edited.checksum = "other".to_owned();
        assert!(check(&set, &[edited], Some("1")).expect_err("checksum")[0].contains("checksum"));
        let stranger = [
            row(&set, "1", RevisionStatus::Applied, 1),
            row(&set, "9", RevisionStatus::Applied, 1),
        ];
        assert!(
            check(&set, &stranger, Some("1"))
                .expect_err("unknown")
                .iter()
                .any(|v| v.contains("not in the set"))
        );
    }
}
