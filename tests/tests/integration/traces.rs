//! One trace per rollout, across processes: a `fleetshift serve` replica, a
//! `fleetshift-agent run` agent and the CLI, all exporting OTLP over gRPC to a collector on
//! loopback (a real tonic server), during a rollout on real PostgreSQL through real etcd.
//!
//! The trace must read rollout → wave → shard task (coordinator) → assignment → pre-flight,
//! backup, revision → statement (agent), every span in the rollout's trace with the expected
//! parent, and the CLI's `fleetshift plan` must be the parent of the coordinator's span of
//! the `CreatePlan` call it made (trace context in the gRPC metadata). No span carries the
//! database URL or its password.

use std::time::Duration;

use fleetshift_tests::binary;
use fleetshift_tests::collector::{Collector, ReceivedSpan};
use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;

use super::cli_fleet::CliFleet;
use super::support::assert_exit;

const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY);";

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span expected: {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_one_trace_across_cli_coordinator_and_agent() {
    let collector = Collector::start().await;
    let fleet = CliFleet::start_with(
        "traced",
        ACCOUNTS,
        |database| {
            let binaries = database.cluster.binaries();
            format!(
                "[backups]\ndirectory = \"backups\"\npg_dump = \"{}\"\npg_restore = \"{}\"\n",
                binaries.join("pg_dump").display(),
                binaries.join("pg_restore").display(),
            )
        },
        collector.environment(),
    )
    .await;
    let migrations = fixtures::migrations(&[
        (
            "1_orders.up.sql",
            "ALTER TABLE accounts ADD COLUMN email text;\nCREATE TABLE orders (id int PRIMARY KEY);",
        ),
        (
            "1_orders.down.sql",
            "DROP TABLE orders;\nALTER TABLE accounts DROP COLUMN email;",
        ),
        (
            "2_index.up.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY accounts_email ON accounts (email);",
        ),
        ("2_index.down.sql", "DROP INDEX accounts_email;"),
    ]);
    let directory = migrations.path().to_str().expect("path");
    let (plan, applied) = fleet
        .cli
        .planned_and_applied(&[directory, "--require-backup"])
        .await;
    assert_exit(&applied, 0);

    // The rollout's span is recorded when the leader ends the plan; the agent's when its run
    // ends; both are exported within the 100 ms batch delay.
    let complete = wait_until(Duration::from_secs(20), || {
        let spans = collector.spans();
        async move {
            named(&spans, "rollout").len() == 1
                && named(&spans, "assignment").len() == 1
                && named(&spans, "fleetshift plan").len() == 1
        }
    })
    .await;
    let spans = collector.spans();
    assert!(complete, "{spans:#?}\n{}", fleet.diagnose());

    // The coordinator's side: rollout (root) → wave → shard task.
    let rollout = only(&spans, "rollout");
    assert_eq!(rollout.service, "fleetshift-coordinator");
    assert_eq!(
        rollout.parent_span_id, "",
        "the rollout is the trace's root"
    );
    assert_eq!(rollout.attribute("fleetshift.plan"), Some(plan.as_str()));
    assert_eq!(
        rollout.attribute("fleetshift.state"),
        Some("PLAN_STATE_SUCCEEDED")
    );
    let trace = rollout.trace_id.clone();
    let wave = only(&spans, "wave");
    assert_eq!(
        (wave.trace_id.as_str(), wave.parent_span_id.as_str()),
        (trace.as_str(), rollout.span_id.as_str())
    );
    let task = only(&spans, "shard task");
    assert_eq!(task.service, "fleetshift-coordinator");
    assert_eq!(
        (task.trace_id.as_str(), task.parent_span_id.as_str()),
        (trace.as_str(), wave.span_id.as_str())
    );
    assert_eq!(
        task.attribute("fleetshift.shard"),
        Some(fleet.shard.as_str())
    );
    assert_eq!(
        task.attribute("fleetshift.state"),
        Some("SHARD_STATE_SUCCEEDED")
    );

    // The agent's side hangs under the shard task: the assignment carried its context.
    let run = only(&spans, "assignment");
    assert_eq!(run.service, "fleetshift-agent");
    assert_eq!(
        (run.trace_id.as_str(), run.parent_span_id.as_str()),
        (trace.as_str(), task.span_id.as_str()),
        "the agent's run must continue the coordinator's trace"
    );
    let mut steps: Vec<&str> = children(&spans, run)
        .iter()
        .map(|span| span.name.as_str())
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, ["backup", "preflight", "revision", "revision"]);
    let revisions = named(&spans, "revision");
    let revision = |version: &str| {
        *revisions
            .iter()
            .find(|span| span.attribute("fleetshift.version") == Some(version))
            .unwrap_or_else(|| panic!("no revision {version}: {revisions:#?}"))
    };
    let locations = |revision: &ReceivedSpan| {
        let mut found: Vec<String> = children(&spans, revision)
            .iter()
            .filter(|span| span.name == "statement")
            .map(|span| {
                let location = span.attribute("fleetshift.location").unwrap_or_default();
                location.rsplit('/').next().unwrap_or_default().to_owned()
            })
            .collect();
        found.sort_unstable();
        found
    };
    assert_eq!(
        locations(revision("1")),
        ["1_orders.up.sql:1", "1_orders.up.sql:2"]
    );
    assert_eq!(locations(revision("2")), ["2_index.up.sql:2"]);
    let in_rollout: Vec<&ReceivedSpan> =
        spans.iter().filter(|span| span.trace_id == trace).collect();
    assert!(
        in_rollout.len() >= 11,
        "rollout, wave, task, run, pre-flight, backup, 2 revisions, 3 statements: {in_rollout:#?}"
    );

    // The CLI's call joins the CLI's trace through the gRPC metadata.
    let command = only(&spans, "fleetshift plan");
    assert_eq!(command.service, "fleetshift-cli");
    let call = spans
        .iter()
        .find(|span| span.name == "fleetshift.v1.FleetService/CreatePlan")
        .unwrap_or_else(|| panic!("no CreatePlan span: {spans:#?}"));
    assert_eq!(call.service, "fleetshift-coordinator");
    assert_eq!(
        (call.trace_id.as_str(), call.parent_span_id.as_str()),
        (command.trace_id.as_str(), command.span_id.as_str())
    );

    // A failing rollout: its trace says where it failed, at every level.
    std::fs::write(migrations.path().join("3_broken.up.sql"), "SELECT 1/0;").expect("file");
    std::fs::write(migrations.path().join("3_broken.down.sql"), "SELECT 1;").expect("file");
    let (broken, applied) = fleet.cli.planned_and_applied(&[directory]).await;
    assert_exit(&applied, 1);
    let recorded = wait_until(Duration::from_secs(20), || {
        let spans = collector.spans();
        async move { named(&spans, "rollout").len() == 2 && named(&spans, "assignment").len() == 2 }
    })
    .await;
    let spans = collector.spans();
    assert!(recorded, "{spans:#?}\n{}", fleet.diagnose());
    let halted = named(&spans, "rollout")
        .into_iter()
        .find(|span| span.attribute("fleetshift.plan") == Some(broken.as_str()))
        .expect("the failed rollout's span");
    assert_eq!(
        halted.attribute("fleetshift.state"),
        Some("PLAN_STATE_HALTED")
    );
    let failed: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == halted.trace_id && span.status_code == 2)
        .collect();
    let mut failed_names: Vec<&str> = failed.iter().map(|span| span.name.as_str()).collect();
    failed_names.sort_unstable();
    assert_eq!(
        failed_names,
        [
            "assignment",
            "revision",
            "rollout",
            "shard task",
            "statement",
            "wave"
        ],
        "{failed:#?}"
    );
    let statement = failed
        .iter()
        .find(|span| span.name == "statement")
        .expect("statement");
    assert!(
        statement.status_message.contains("division by zero"),
        "{statement:#?}"
    );
    assert!(
        statement
            .attribute("fleetshift.location")
            .is_some_and(|location| location.ends_with("3_broken.up.sql:1")),
        "{statement:#?}"
    );

    // Nothing secret in any attribute.
    let url = fleet.database.url.clone();
    for span in &spans {
        for value in span.attributes.values() {
            assert!(
                !value.contains(&url) && !value.contains("postgres://"),
                "{span:#?}"
            );
        }
    }
}

#[test]
fn an_otlp_protocol_fleetshift_cannot_speak_is_refused_at_start() {
    let commands = [
        (binary::fleetshift(), vec!["lint", "/nonexistent"]),
        (
            binary::agent(),
            vec!["--config", "/nonexistent/agent.toml", "check"],
        ),
    ];
    for (program, arguments) in commands {
        let output = std::process::Command::new(&program)
            .args(&arguments)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .output()
            .expect("run");
        assert_exit(&output, 2);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains("OTLP over gRPC only") && said.contains("4317"),
            "{}: {said}",
            program.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exports_its_rollout_as_one_trace() {
    let collector = Collector::start().await;
    let mut command = std::process::Command::new(binary::fleetshift());
    command
        .args(["demo", "--shards", "2", "--output", "json"])
        .envs(collector.environment());
    let output = tokio::task::spawn_blocking(move || command.output().expect("run the demo"))
        .await
        .expect("demo finished");
    assert!(output.status.success(), "{}", binary::printed(&output));
    // The demo flushes its exporter before it exits.
    let spans = collector.spans();
    let rollout = only(&spans, "rollout");
    assert_eq!(rollout.service, "fleetshift-demo");
    let runs = named(&spans, "assignment");
    assert_eq!(runs.len(), 2, "{spans:#?}");
    for run in runs {
        assert_eq!(run.trace_id, rollout.trace_id, "{run:#?}");
    }
}
