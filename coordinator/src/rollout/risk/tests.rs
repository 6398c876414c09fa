//! The risk score on plans made up for each rule.

use std::path::PathBuf;

use fleetshift_common::source::{Script, Version};

use super::*;

fn revision(sql: &str, down: bool) -> Revision {
    Revision {
        version: Version::integer("1").expect("version"),
        name: "change".to_owned(),
        up: Script::new(PathBuf::from("1_change.up.sql"), 1, sql.to_owned()),
        down: down.then(|| {
            Script::new(
                PathBuf::from("1_change.down.sql"),
                1,
                "SELECT 1;".to_owned(),
            )
        }),
        transactional: true,
        checksum: String::new(),
        failure_tolerated: false,
        irreversible: None,
        backfill: None,
        phase: None,
    }
}

fn finding(rule: &str, severity: &str, allowed: &str) -> LintFinding {
    LintFinding {
        rule: rule.to_owned(),
        severity: severity.to_owned(),
        revision: "1_change".to_owned(),
        allowed: allowed.to_owned(),
        ..LintFinding::default()
    }
}

fn shard(environment: Option<&str>) -> ShardContext {
    ShardContext {
        shard_id: "s1".to_owned(),
        environment: environment.map(str::to_owned),
        tables: Vec::new(),
        observed_at: None,
        backup_required: false,
    }
}

fn with_table(rows: i64, dependents: &[&str]) -> ShardContext {
    ShardContext {
        tables: vec![TableFacts {
            table: "t".to_owned(),
            estimated_rows: rows,
            total_bytes: rows * 100,
            dependents: dependents.iter().map(|name| (*name).to_owned()).collect(),
            columns: Vec::new(),
            activity: Vec::new(),
            partitions: 0,
        }],
        ..shard(Some("staging"))
    }
}

#[test]
fn a_required_backup_removes_the_backup_factor_on_production() {
    let change = revision("ALTER TABLE t ADD COLUMN c int;", true);
    let unprotected = assess(std::slice::from_ref(&change), &[], &[shard(Some("prod"))]);
    let protected = assess(
        std::slice::from_ref(&change),
        &[],
        &[ShardContext {
            backup_required: true,
            ..shard(Some("prod"))
        }],
    );
    assert_eq!(unprotected.score - protected.score, 10);
    assert!(
        !protected
            .factors
            .iter()
            .any(|factor| factor.name == "backup")
    );
}

#[test]
fn a_table_in_use_adds_risk_and_a_long_transaction_on_it_more() {
    let change = revision("ALTER TABLE t ADD COLUMN c int;", true);
    let used_for = |seconds: u64| {
        let mut context = with_table(10, &[]);
        context.tables[0].activity = vec![TableActivity {
            pid: 4242,
            mode: "RowExclusiveLock".to_owned(),
            granted: true,
            state: "idle in transaction".to_owned(),
            transaction_age: prost_types::Duration::try_from(std::time::Duration::from_secs(
                seconds,
            ))
            .ok(),
            query: "UPDATE t SET c = 1".to_owned(),
        }];
        context
    };
    let score = |context: ShardContext| assess(std::slice::from_ref(&change), &[], &[context]);
    let idle = score(with_table(10, &[]));
    let brief = score(used_for(2));
    let long = score(used_for(600));
    assert_eq!((brief.score - idle.score, long.score - idle.score), (5, 10));
    let in_use = long
        .factors
        .iter()
        .find(|factor| factor.name == "in use")
        .unwrap_or_else(|| panic!("{long:?}"));
    assert!(
        in_use.explanation.contains("pid 4242")
            && in_use.explanation.contains("for 600s")
            && in_use.explanation.contains("UPDATE t SET c = 1"),
        "{}",
        in_use.explanation
    );
}

#[test]
fn the_same_revision_scores_higher_where_its_table_is_large_and_depended_on() {
    let change = revision("CREATE INDEX i ON t (c);", true);
    let empty = assess(std::slice::from_ref(&change), &[], &[with_table(0, &[])]);
    let large = assess(
        std::slice::from_ref(&change),
        &[],
        &[with_table(
            5_000_000,
            &["view public.v", "trigger audit", "index i2"],
        )],
    );
    assert_eq!((empty.score, large.score), (10, 30));
    assert!(
        large
            .factors
            .iter()
            .any(|factor| factor.name == "dependents"
                && factor.explanation.contains("view public.v")
                && !factor.explanation.contains("index")),
        "{large:?}"
    );
}

#[test]
fn a_blocking_irreversible_change_on_production_is_critical_with_its_reasons() {
    let risky = revision("ALTER TABLE users ALTER COLUMN email SET NOT NULL;", false);
    let findings = [
        finding("adding-not-nullable-field", "error", ""),
        finding("changing-column-type", "error", ""),
    ];
    let assessed = assess(&[risky], &findings, &[shard(Some("production"))]);
    assert_eq!(assessed.score, 100);
    assert_eq!(assessed.level, i32::from(RiskLevel::Critical));
    assert_eq!(
        (assessed.approvals_required, assessed.author_may_approve),
        (2, false)
    );
    let names: Vec<(&str, u32)> = assessed
        .factors
        .iter()
        .map(|factor| (factor.name.as_str(), factor.points))
        .collect();
    assert_eq!(
        names,
        [
            ("lint", 35),
            ("locks", 20),
            ("reversibility", 15),
            ("environment", 20),
            ("backup", 10),
            ("catalog", 0)
        ]
    );
}

#[test]
fn the_same_revision_is_less_risky_off_production_and_allowed_findings_do_not_count() {
    let change = revision("CREATE INDEX i ON t (c);", true);
    let open = [finding("require-concurrent-index-creation", "error", "")];
    let allowed = [finding(
        "require-concurrent-index-creation",
        "error",
        "tiny table",
    )];
    let production = assess(std::slice::from_ref(&change), &open, &[shard(Some("prod"))]);
    let staging = assess(
        std::slice::from_ref(&change),
        &open,
        &[shard(Some("staging"))],
    );
    let reviewed = assess(
        std::slice::from_ref(&change),
        &allowed,
        &[shard(Some("staging"))],
    );
    assert_eq!(
        (production.score, staging.score, reviewed.score),
        (70, 40, 10)
    );
    assert_eq!(production.level, i32::from(RiskLevel::High));
    assert_eq!(staging.level, i32::from(RiskLevel::Medium));
    assert_eq!(reviewed.level, i32::from(RiskLevel::Low));
    assert!(production.author_may_approve);
}

#[test]
fn renaming_a_column_a_function_names_is_a_factor_views_are_not() {
    let rename = revision("ALTER TABLE t RENAME COLUMN email TO mail;", true);
    let shard = ShardContext {
        tables: vec![TableFacts {
            table: "t".to_owned(),
            columns: vec![fleetshift_common::proto::v1::ColumnFacts {
                column: "email".to_owned(),
                dependents: vec![
                    "view public.v".to_owned(),
                    "function notify_owner()".to_owned(),
                ],
            }],
            ..TableFacts::default()
        }],
        ..shard(Some("staging"))
    };
    let assessed = assess(&[rename], &[], &[shard]);
    let columns = assessed
        .factors
        .iter()
        .find(|factor| factor.name == "columns")
        .expect("a columns factor");
    assert_eq!(columns.points, 10);
    assert!(
        columns
            .explanation
            .contains("t.email renamed: function notify_owner()")
            && !columns.explanation.contains("view"),
        "{columns:?}"
    );
}

#[test]
fn levels_follow_the_bands() {
    assert_eq!(level_of(30), RiskLevel::Low);
    assert_eq!(level_of(31), RiskLevel::Medium);
    assert_eq!(level_of(61), RiskLevel::High);
    assert_eq!(level_of(81), RiskLevel::Critical);
}
