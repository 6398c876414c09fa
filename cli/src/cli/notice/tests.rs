//! The built-in notices and a user's template rendered from a plan's context.

use fleetshift_common::proto::v1::{
    Approval, DataCheck, HostDuties, RehearsalFinding, RiskAssessment, RollbackPolicy,
    SchemaChange, ShardAnalysis, ShardTask, TableFacts, ValidationReport, Wave,
};

use fleetshift_common::proto::v1::RiskLevel;

use super::*;
use fleetshift_common::proto::v1::{
    BaselinePolicy, BaselineQuery, Engine, Plan, PreflightPolicy, RehearsalSummary, ServerFacts,
    ShardSummary,
};
use serde_json::json;

fn plan() -> Plan {
    let change = |table: &str, operation: &str, lock: &str, statement: &str| SchemaChange {
        revision: "3_orders".to_owned(),
        table: table.to_owned(),
        operation: operation.to_owned(),
        lock: lock.to_owned(),
        statement: statement.to_owned(),
    };
    Plan {
        plan_id: "p-1".to_owned(),
        target_version: "3".to_owned(),
        selector: [("env".to_owned(), "production".to_owned())].into(),
        waves: vec![Wave {
            index: 0,
            shards: vec![
                ShardTask {
                    shard_id: "s1".to_owned(),
                    validation: Some(ValidationReport {
                        passed: true,
                        ..ValidationReport::default()
                    }),
                    ..ShardTask::default()
                },
                ShardTask {
                    shard_id: "s2".to_owned(),
                    validation: Some(ValidationReport {
                        failures: vec!["--verify-data orders: the data changed".to_owned()],
                        ..ValidationReport::default()
                    }),
                    ..ShardTask::default()
                },
            ],
        }],
        changes: vec![
            change(
                "orders",
                "ALTER TABLE",
                "ACCESS EXCLUSIVE",
                "ALTER TABLE orders ADD COLUMN note text",
            ),
            change(
                "orders",
                "UPDATE",
                "ROW EXCLUSIVE",
                "UPDATE orders SET note = ''",
            ),
            change(
                "items",
                "CREATE INDEX",
                "SHARE UPDATE EXCLUSIVE",
                "CREATE INDEX CONCURRENTLY i ON items (id)",
            ),
        ],
        risk: Some(RiskAssessment {
            score: 85,
            level: RiskLevel::Critical.into(),
            approvals_required: 2,
            ..RiskAssessment::default()
        }),
        analyses: vec![ShardAnalysis {
            shard_id: "s1".to_owned(),
            tables: vec![TableFacts {
                table: "orders".to_owned(),
                estimated_rows: 120_000,
                ..TableFacts::default()
            }],
            ..ShardAnalysis::default()
        }],
        duties: Some(HostDuties {
            verify_data: vec![DataCheck {
                table: "orders".to_owned(),
                columns: vec!["id".to_owned(), "total".to_owned()],
            }],
            rollback: Some(RollbackPolicy {
                on_failure: true,
                ..RollbackPolicy::default()
            }),
            ..HostDuties::default()
        }),
        approvals: vec![Approval {
            approver: "spiffe://fleet.example/operator/bob".to_owned(),
            at: None,
            comment: "checked".to_owned(),
            capacity: "dba".to_owned(),
        }],
        rehearsals: vec![RehearsalSummary {
            shard_id: "s1".to_owned(),
            shard_version: "2".to_owned(),
            hints: vec!["E4".to_owned()],
            findings: vec![RehearsalFinding {
                hint: "E4".to_owned(),
                relation: "public.orders".to_owned(),
                lock_mode: "AccessExclusiveLock".to_owned(),
                estimated_hold: Some(prost_types::Duration {
                    seconds: 12,
                    nanos: 300_000_000,
                }),
                ..RehearsalFinding::default()
            }],
            ..RehearsalSummary::default()
        }],
        ..Plan::default()
    }
}

#[test]
fn a_user_template_uses_defaults_for_what_the_plan_cannot_know_and_loops_over_tables() {
    let template = "{{ subject }}\n{{ affected_services or \"services: n/a\" }} / {{ support_contact or \"ask #dba\" }}\n\
        {% for table in affected_tables %}{{ table.name }}={{ table.operation }} ({{ table.downtime_estimate }}); {% endfor %}";
    let announcement = Announcement {
        start: Some("2026-12-01 02:00 UTC".to_owned()),
        ..Announcement::default()
    };
    let text = notice(template, &context(&plan(), &[], &announcement)).expect("rendered");
    assert_eq!(
        text,
        "Database maintenance: schema version 3 on 2 shard(s) (production)\n\
         services: n/a / ask #dba\n\
         items=CREATE INDEX (none: built concurrently); orders=ALTER TABLE, UPDATE (reads and writes wait while it runs); "
    );
}

#[test]
fn the_built_in_notice_covers_every_section() {
    let announcement = Announcement {
        start: Some("2026-12-01 02:00 UTC".to_owned()),
        support_contact: Some("dba@example.com".to_owned()),
        ..Announcement::default()
    };
    let text = notice(MARKDOWN, &context(&plan(), &[], &announcement)).expect("rendered");
    for expected in [
        "## Summary",
        "Risk: **CRITICAL** (85/100)",
        "Start: 2026-12-01 02:00 UTC",
        "Expected duration: to be announced",
        "`orders`: ALTER TABLE, UPDATE; estimated rows: 120000; downtime: reads and writes wait",
        "`items`: CREATE INDEX; estimated rows: not assessed",
        "ALTER TABLE `orders`: `ALTER TABLE orders ADD COLUMN note text`",
        "fleetshift cancel p-1",
        "spiffe://fleet.example/operator/bob",
        "Support: dba@example.com",
        "Emergency: dba@example.com",
        "rehearsed: AccessExclusiveLock for ~12.3 s on s1 (E4)",
        "- `s1` at version 2: E4 public.orders (AccessExclusiveLock ~12.3 s)",
        "## Post-migration validation\nEvery shard is checked after its revisions; a failed check fails the shard and rolls it back.",
        "- data checksum of orders:id,total before and after: a difference fails the shard",
        "- Results: 1 of 2 shard(s) passed; `s2` failed: --verify-data orders: the data changed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let text = notice(TEXT, &context(&plan(), &[], &announcement)).expect("rendered");
    assert!(text.contains("REHEARSALS\n- s1 at version 2: E4"), "{text}");
    let unrehearsed = Plan {
        rehearsals: Vec::new(),
        ..plan()
    };
    let text = notice(MARKDOWN, &context(&unrehearsed, &[], &announcement)).expect("rendered");
    assert!(text.contains("- none (`fleetshift rehearse p-1`"), "{text}");
}

#[test]
fn a_broken_template_names_its_line() {
    let error = notice("fine\n{% for x in %}", &json!({})).expect_err("syntax error");
    assert!(error.contains("line 2"), "{error}");
}

/// Every variable of the brief's notice, by name.
const VARIABLES: &[&str] = &[
    "subject",
    "maintenance_type",
    "maintenance_id",
    "migration_id",
    "migration_type",
    "migration_version",
    "migration_format",
    "migration_command",
    "rollback_command",
    "cancel_command",
    "environment",
    "start_time",
    "duration",
    "end_time",
    "shard_count",
    "wave_count",
    "error_threshold",
    "timestamp",
    "support_contact",
    "emergency_contact",
    "database_engine",
    "previous_version",
    "rollback_timeout",
    "performance_threshold",
    "database_url_masked",
    "pool_size",
    "pool_timeout",
    "pool_recycle",
    "max_overflow",
    "pool_pre_ping",
    "baseline_db_query",
    "baseline_connections",
    "dba_approval",
    "eng_approval",
    "ops_approval",
    "sec_approval",
];

/// The fixture plan with every fact a notice can use, over shards as their agents announce
/// them.
fn plan_with_every_fact() -> (Plan, Vec<ShardSummary>) {
    let mut plan = plan();
    plan.set_format = "sqlx".to_owned();
    plan.analyses[0].tables.push(TableFacts {
        table: "items".to_owned(),
        estimated_rows: 5_000,
        ..TableFacts::default()
    });
    for (task, previous) in plan.waves[0].shards.iter_mut().zip(["2", ""]) {
        task.previous_version = previous.to_owned();
    }
    let duties = plan.duties.get_or_insert_with(HostDuties::default);
    duties.rollback = Some(RollbackPolicy {
        on_failure: true,
        on_degradation: true,
        revision_time_limit: Some(prost_types::Duration {
            seconds: 1800,
            nanos: 0,
        }),
    });
    duties.baselines = Some(BaselinePolicy {
        queries: vec![BaselineQuery {
            name: "by_account".to_owned(),
            sql: "SELECT count(*) FROM orders WHERE account_id = 42".to_owned(),
        }],
        degradation_threshold: 2.0,
        ..BaselinePolicy::default()
    });
    duties.preflight = Some(PreflightPolicy {
        max_connections_percent: 80,
        ..PreflightPolicy::default()
    });
    plan.approvals = ["dba", "eng", "ops", "sec"]
        .into_iter()
        .map(|capacity| Approval {
            approver: format!("spiffe://fleet.example/operator/{capacity}-lead"),
            at: Some(prost_types::Timestamp {
                seconds: 1_796_000_000,
                nanos: 0,
            }),
            comment: "ok".to_owned(),
            capacity: capacity.to_owned(),
        })
        .collect();
    let shard = |id: &str, version: &str| ShardSummary {
        shard_id: id.to_owned(),
        current_version: version.to_owned(),
        engine: Engine::Postgres.into(),
        server: Some(ServerFacts {
            version: "16.4".to_owned(),
            masked_url: format!("postgres://app:***@db-1:5432/{id}"),
            ..ServerFacts::default()
        }),
        ..ShardSummary::default()
    };
    (
        plan,
        vec![shard("s1", "2"), shard("s2", ""), shard("elsewhere", "9")],
    )
}

#[test]
fn every_variable_renders_what_the_plan_knows() {
    let (plan, shards) = plan_with_every_fact();
    let announcement = Announcement {
        start: Some("2026-12-24 01:00 UTC".to_owned()),
        duration: Some("2h".to_owned()),
        end: Some("2026-12-24 03:00 UTC".to_owned()),
        support_contact: Some("dba@example.com".to_owned()),
        emergency_contact: Some("+1 555 0100".to_owned()),
    };
    let context = context(&plan, &shards, &announcement);
    let mut template: String = VARIABLES
        .iter()
        .map(|name| format!("{name}=[{{{{ {name} }}}}]\n"))
        .collect();
    template.push_str(
        "{% for table in affected_tables %}{{ table.name }}.estimated_rows=[{{ table.estimated_rows }}]\n{{ table.name }}.downtime_estimate=[{{ table.downtime_estimate }}]\n{% endfor %}\
         {% for trigger in rollback_triggers %}trigger=[{{ trigger }}]\n{% endfor %}",
    );
    let text = notice(&template, &context).expect("rendered");
    for line in text.lines() {
        assert!(!line.ends_with("=[]"), "{line} renders empty:\n{text}");
    }
    for expected in [
        "database_engine=[PostgreSQL 16.4]",
        "previous_version=[2, base]",
        "rollback_timeout=[30m]",
        "performance_threshold=[2x a baseline query's median before the migration]",
        "database_url_masked=[postgres://app:***@db-1:5432/s1 (and 1 more)]",
        "pool_size=[2]",
        "pool_timeout=[10s]",
        "pool_recycle=[30m]",
        "max_overflow=[0]",
        "pool_pre_ping=[after 1s idle]",
        "baseline_db_query=[by_account: SELECT count(*) FROM orders WHERE account_id = 42]",
        "baseline_connections=[below 80% of max_connections on each shard (checked before its first DDL)]",
        "sec_approval=[approved by spiffe://fleet.example/operator/sec-lead at 2026-11-30T00:53:20Z: ok]",
        "orders.estimated_rows=[120000]",
        "items.downtime_estimate=[none: built concurrently]",
        "trigger=[a revision runs longer than 30m]",
        "trigger=[a baseline query's median grows past 2x its value before the migration]",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("elsewhere"),
        "a shard outside the plan: {text}"
    );
}
