//! `fleetshift plan notice PLAN`: a maintenance notification rendered from the plan with a
//! Jinja-compatible engine (minijinja): the built-in template (markdown or text), a user's
//! template, or the context itself as JSON. Variables the plan cannot know (pool settings,
//! affected services, per-role approvals…) are left undefined, so `{{ x or "default" }}` works
//! in a user's template.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::{GetPlanRequest, Plan, RehearsalSummary};
use serde_json::{Value, json};

use super::fleet::{Connection, client, refused};
use super::progress::risk_json;
use super::validation;
use super::{Output, render};
use crate::exit;
use fleetshift_coordinator::rollout::waves;

mod schedule;

const MARKDOWN: &str = include_str!("notice/notice.md.j2");
const TEXT: &str = include_str!("notice/notice.txt.j2");

#[derive(Debug, Args)]
pub struct NoticeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan to announce.
    plan: String,
    /// A Jinja template of your own instead of the built-in one.
    #[arg(long)]
    template: Option<PathBuf>,
    /// The built-in template's flavour, or the template context as JSON.
    #[arg(long, value_enum, default_value = "markdown")]
    format: NoticeFormat,
    /// When the maintenance starts, as you want it printed.
    #[arg(long)]
    start: Option<String>,
    /// How long it is expected to take, as you want it printed.
    #[arg(long)]
    duration: Option<String>,
    /// When it ends, as you want it printed.
    #[arg(long)]
    end: Option<String>,
    /// Who to contact with questions.
    #[arg(long, env = "FLEETSHIFT_SUPPORT_CONTACT")]
    support_contact: Option<String>,
    /// Who to call when it goes wrong.
    #[arg(long, env = "FLEETSHIFT_EMERGENCY_CONTACT")]
    emergency_contact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NoticeFormat {
    Text,
    Markdown,
    Json,
}

/// What the schedule and contact flags add to the plan.
#[derive(Debug, Default)]
struct Announcement {
    start: Option<String>,
    duration: Option<String>,
    end: Option<String>,
    support_contact: Option<String>,
    emergency_contact: Option<String>,
}

pub async fn run(arguments: NoticeArgs) -> ExitCode {
    let output = if arguments.format == NoticeFormat::Json {
        Output::Json
    } else {
        Output::Human
    };
    let template = match &arguments.template {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                let message = format!("{}: cannot read the template: {error}", path.display());
                render::failure(output, &message, ErrorKind::BadInput);
                return ExitCode::from(exit::BAD_INPUT);
            }
        },
        None => None,
    };
    let mut client = match client(&arguments.connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let plan = match client
        .get_plan(GetPlanRequest {
            plan_id: arguments.plan.clone(),
        })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&arguments.connection, output, &status),
    };
    let announcement = Announcement {
        start: arguments.start,
        duration: arguments.duration,
        end: arguments.end,
        support_contact: arguments.support_contact,
        emergency_contact: arguments.emergency_contact,
    };
    let context = context(&plan, &announcement);
    let source = match (&template, arguments.format) {
        (_, NoticeFormat::Json) => {
            println!("{context}");
            return ExitCode::from(exit::OK);
        }
        (Some(text), _) => text.as_str(),
        (None, NoticeFormat::Markdown) => MARKDOWN,
        (None, NoticeFormat::Text) => TEXT,
    };
    match notice(source, &context) {
        Ok(text) => {
            print!("{text}");
            ExitCode::from(exit::OK)
        }
        Err(message) => {
            render::failure(output, &message, ErrorKind::BadInput);
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

/// Renders `source` with `context`; template mistakes come back with their line.
fn notice(source: &str, context: &Value) -> Result<String, String> {
    minijinja::Environment::new()
        .render_str(source, minijinja::value::Serde(context))
        .map_err(|error| match error.line() {
            Some(line) => format!("the notice template, line {line}: {error}"),
            None => format!("the notice template: {error}"),
        })
}

/// What waits on a table while a statement holding `lock` runs.
fn impact(lock: &str) -> &'static str {
    match lock {
        "ACCESS EXCLUSIVE" => "reads and writes wait while it runs",
        "SHARE" => "writes wait while it runs",
        "SHARE UPDATE EXCLUSIVE" => "none: built concurrently",
        _ => "none: row locks only",
    }
}

/// The longest blocking lock a rehearsal held on `table`, at its shard's size: `ShareLock
/// for ~12.3 s on shard-7 (E6)`.
fn measured_hold(plan: &Plan, table: &str) -> Option<String> {
    let qualified = format!(".{table}");
    plan.rehearsals
        .iter()
        .flat_map(|rehearsal| {
            rehearsal
                .findings
                .iter()
                .map(move |finding| (rehearsal, finding))
        })
        .filter(|(_, finding)| {
            !finding.lock_mode.is_empty()
                && (finding.relation == table || finding.relation.ends_with(&qualified))
        })
        .max_by_key(|(_, finding)| {
            finding
                .estimated_hold
                .map(|hold| (hold.seconds, hold.nanos))
        })
        .map(|(rehearsal, finding)| {
            format!(
                "{} for ~{} on {} ({})",
                finding.lock_mode,
                seconds(finding.estimated_hold),
                rehearsal.shard_id,
                finding.hint
            )
        })
}

fn seconds(duration: Option<prost_types::Duration>) -> String {
    duration.map_or_else(
        || "an unknown time".to_owned(),
        |duration| {
            format!(
                "{:.1} s",
                duration.seconds as f64 + f64::from(duration.nanos) / 1e9
            )
        },
    )
}

/// A kept rehearsal as the template sees it.
fn rehearsal_context(rehearsal: &RehearsalSummary) -> Value {
    json!({
        "shard": rehearsal.shard_id,
        "shard_version": rehearsal.shard_version,
        "passed": rehearsal.passed,
        "failure": rehearsal.failure,
        "rehearsed_at": rehearsal.rehearsed_at.map(|at| at.to_string()),
        "findings": rehearsal.findings.iter().map(|finding| json!({
            "hint": finding.hint,
            "title": finding.title,
            "relation": finding.relation,
            "place": finding.place,
            "lock_mode": finding.lock_mode,
            "estimated_hold": seconds(finding.estimated_hold),
        })).collect::<Vec<_>>(),
    })
}

/// How strongly a lock blocks, for picking a table's worst.
fn strength(lock: &str) -> u8 {
    match lock {
        "ACCESS EXCLUSIVE" => 3,
        "SHARE" => 2,
        "SHARE UPDATE EXCLUSIVE" => 1,
        _ => 0,
    }
}

/// The template's variables. Absent keys stay undefined on purpose.
fn context(plan: &Plan, announcement: &Announcement) -> Value {
    let environment = plan
        .selector
        .get("env")
        .or_else(|| plan.selector.get("environment"));
    let shard_count = waves::shard_count(plan);
    let mut tables: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::new();
    for change in &plan.changes {
        let entry = tables
            .entry(change.table.as_str())
            .or_insert((Vec::new(), ""));
        if !entry.0.contains(&change.operation.as_str()) {
            entry.0.push(change.operation.as_str());
        }
        if strength(&change.lock) >= strength(entry.1) {
            entry.1 = change.lock.as_str();
        }
    }
    let affected_tables: Vec<Value> = tables
        .iter()
        .map(|(name, (operations, lock))| {
            let mut table = json!({
                "name": name,
                "operation": operations.join(", "),
                "downtime_estimate": impact(lock),
            });
            // The largest shard's estimate, when the shards' catalogs reported the table.
            let rows = plan
                .analyses
                .iter()
                .flat_map(|analysis| &analysis.tables)
                .filter(|facts| facts.table == *name)
                .map(|facts| facts.estimated_rows)
                .max();
            if let (Some(rows), Some(object)) = (rows, table.as_object_mut()) {
                object.insert("estimated_rows".to_owned(), json!(rows));
            }
            if let (Some(hold), Some(object)) = (measured_hold(plan, name), table.as_object_mut()) {
                object.insert("measured_hold".to_owned(), json!(hold));
            }
            table
        })
        .collect();
    let schema_changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|change| {
            json!({
                "type": change.operation,
                "table": change.table,
                "description": change.statement,
                "impact": impact(&change.lock),
                "revision": change.revision,
            })
        })
        .collect();
    let mut context = json!({
        "subject": format!(
            "Database maintenance: schema version {} on {shard_count} shard(s){}",
            plan.target_version,
            environment.map(|environment| format!(" ({environment})")).unwrap_or_default()
        ),
        "maintenance_type": "schema migration",
        "maintenance_id": plan.plan_id,
        "migration_id": plan.plan_id,
        "migration_type": "schema",
        "migration_version": plan.target_version,
        "migration_format": plan.set_format,
        "migration_command": format!("fleetshift apply {} --watch", plan.plan_id),
        "rollback_command": format!("fleetshift cancel {} --reason \"<why>\"", plan.plan_id),
        "shard_count": shard_count,
        "wave_count": plan.waves.len(),
        "error_threshold": plan.policy.as_ref().map_or(1, |policy| policy.failure_threshold),
        "affected_tables": affected_tables,
        "schema_changes": schema_changes,
        "risk": risk_json(&plan.risk.clone().unwrap_or_default()),
        "rehearsals": plan.rehearsals.iter().map(rehearsal_context).collect::<Vec<_>>(),
        "validation": validation::notice_context(plan),
        "rollback_automatic": plan
            .duties
            .as_ref()
            .and_then(|duties| duties.rollback.as_ref())
            .is_some_and(|rollback| rollback.on_failure),
        "approvals": plan.approvals.iter().map(|approval| json!({
            "approver": approval.approver,
            "at": approval.at.map(|at| at.to_string()),
            "comment": approval.comment,
        })).collect::<Vec<_>>(),
        "timestamp": prost_types::Timestamp::from(SystemTime::now()).to_string(),
        "windows": plan.schedule.as_ref().map(|schedule| schedule.windows.clone()).unwrap_or_default(),
    });
    let expected = schedule::expected(plan, jiff::Timestamp::now());
    let optional = [
        ("environment", environment.cloned()),
        ("start_time", announcement.start.clone().or(expected.start)),
        (
            "duration",
            announcement.duration.clone().or(expected.duration),
        ),
        ("end_time", announcement.end.clone().or(expected.end)),
        ("support_contact", announcement.support_contact.clone()),
        ("emergency_contact", announcement.emergency_contact.clone()),
    ];
    if let Some(object) = context.as_object_mut() {
        for (key, value) in optional {
            if let Some(value) = value {
                object.insert(key.to_owned(), Value::String(value));
            }
        }
    }
    context
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{
        Approval, DataCheck, HostDuties, RehearsalFinding, RiskAssessment, RollbackPolicy,
        SchemaChange, ShardAnalysis, ShardTask, TableFacts, ValidationReport, Wave,
    };

    use fleetshift_common::proto::v1::RiskLevel;

    use super::*;

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
        let template = "{{ subject }}\n{{ pool_size or \"pool: n/a\" }} / {{ support_contact or \"ask #dba\" }}\n\
            {% for table in affected_tables %}{{ table.name }}={{ table.operation }} ({{ table.downtime_estimate }}); {% endfor %}";
        let announcement = Announcement {
            start: Some("2026-12-01 02:00 UTC".to_owned()),
            ..Announcement::default()
        };
        let text = notice(template, &context(&plan(), &announcement)).expect("rendered");
        assert_eq!(
            text,
            "Database maintenance: schema version 3 on 2 shard(s) (production)\n\
             pool: n/a / ask #dba\n\
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
        let text = notice(MARKDOWN, &context(&plan(), &announcement)).expect("rendered");
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
        let text = notice(TEXT, &context(&plan(), &announcement)).expect("rendered");
        assert!(text.contains("REHEARSALS\n- s1 at version 2: E4"), "{text}");
        let unrehearsed = Plan {
            rehearsals: Vec::new(),
            ..plan()
        };
        let text = notice(MARKDOWN, &context(&unrehearsed, &announcement)).expect("rendered");
        assert!(text.contains("- none (`fleetshift rehearse p-1`"), "{text}");
    }

    #[test]
    fn a_broken_template_names_its_line() {
        let error = notice("fine\n{% for x in %}", &json!({})).expect_err("syntax error");
        assert!(error.contains("line 2"), "{error}");
    }
}
