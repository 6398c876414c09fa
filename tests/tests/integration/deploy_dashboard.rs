//! The shipped Grafana dashboard (`deploy/grafana/fleetshift.json`) queries only metrics the
//! binaries expose: every `fleetshift_*` name in its expressions (less the `_bucket`, `_sum`,
//! `_count` and `_total` suffixes of the exposition) is a family seen in real scrapes of a
//! coordinator and an agent (the telemetry test scrapes them during a rollout and calls
//! [`assert_queries_only`]); and every panel reads the dashboard's Prometheus data source.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// The families named by `# TYPE` lines of a scrape.
pub fn families_in(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `fleetshift_…` identifiers in a PromQL expression.
fn metric_names(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expression;
    while let Some(start) = rest.find("fleetshift_") {
        let tail = &rest[start..];
        let end = tail
            .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn family_of(series: &str) -> &str {
    ["_bucket", "_sum", "_count", "_total"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

/// Asserts that every panel reads the dashboard's data source and that every metric the
/// dashboard queries is among `families` (seen in real scrapes).
pub fn assert_queries_only(families: &BTreeSet<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/fleetshift.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().expect("title");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            let expression = target["expr"].as_str().expect("expr");
            let names = metric_names(expression);
            assert!(!names.is_empty(), "{title}: {expression}");
            for name in names {
                let family = family_of(&name);
                assert!(
                    families.contains(family),
                    "{title}: {name} is not exposed (families: {families:?})"
                );
                queried.insert(family.to_owned());
            }
        }
    }
    // The views: fleet progress, per-shard state, lock waits, backup durations,
    // degradation ratios.
    for needed in [
        "fleetshift_rollout_shards",
        "fleetshift_agent_lock_retries",
        "fleetshift_agent_backup_duration_seconds",
        "fleetshift_agent_baseline_p50_ratio",
        "fleetshift_store_request_duration_seconds",
    ] {
        assert!(queried.contains(needed), "the dashboard shows no {needed}");
    }
}
