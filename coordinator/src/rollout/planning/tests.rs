//! Plans made from requests and announced shards: checks, waves, findings and targets.

use super::*;

fn shards(count: usize) -> Vec<Candidate> {
    (0..count)
        .map(|index| Candidate {
            shard_id: format!("s{index:03}"),
            agent_id: "a".to_owned(),
            host: "h".to_owned(),
            environment: None,
            tables: Vec::new(),
            observed_at: None,
            windows_label: None,
        })
        .collect()
}

fn sizes(waves: &[Wave]) -> Vec<usize> {
    waves.iter().map(|wave| wave.shards.len()).collect()
}

#[test]
fn a_request_is_checked_where_it_arrives_naming_what_is_wrong() {
    let missing = PlanRequest::try_from(CreatePlanRequest::default()).expect_err("no set");
    assert!(missing.to_string().contains("migration_set"), "{missing}");
    let unordered = CreatePlanRequest {
        migration_set: Some(v1::MigrationSet::default()),
        waves: Some(WavePolicy {
            percentages: vec![50, 20],
            ..WavePolicy::default()
        }),
        ..CreatePlanRequest::default()
    };
    let error = PlanRequest::try_from(unordered).expect_err("percentages");
    assert!(error.to_string().contains("wave percentages"), "{error}");
    let defaults = CreatePlanRequest {
        migration_set: Some(v1::MigrationSet::default()),
        ..CreatePlanRequest::default()
    };
    let checked = PlanRequest::try_from(defaults).expect("valid");
    assert_eq!(checked.policy.percentages.last(), Some(&100));
    assert_eq!(checked.limits, ExecutionLimits::default());
}

#[test]
fn canary_then_cumulative_percentages_cover_every_shard_once() {
    let policy = policy(Some(WavePolicy {
        canary_shards: 2,
        percentages: vec![25, 50],
        ..WavePolicy::default()
    }))
    .expect("policy");
    assert_eq!(policy.percentages, [25, 50, 100], "100 is implied");
    let planned = waves(&shards(10), &policy);
    assert_eq!(sizes(&planned), [2, 2, 2, 4]);
    let placed: Vec<&str> = planned
        .iter()
        .flat_map(|wave| wave.shards.iter().map(|task| task.shard_id.as_str()))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = placed.iter().copied().collect();
    assert_eq!((placed.len(), distinct.len()), (10, 10), "each shard once");
    assert!(
        planned
            .iter()
            .enumerate()
            .all(|(index, wave)| wave.index as usize == index)
    );
}

#[test]
fn small_fleets_skip_empty_waves() {
    let policy = policy(Some(WavePolicy {
        canary_shards: 3,
        percentages: vec![10, 100],
        ..WavePolicy::default()
    }))
    .expect("policy");
    assert_eq!(sizes(&waves(&shards(2), &policy)), [2]);
    assert_eq!(sizes(&waves(&shards(4), &policy)), [3, 1]);
}

#[test]
fn decreasing_percentages_are_refused() {
    let refused = policy(Some(WavePolicy {
        percentages: vec![50, 25],
        ..WavePolicy::default()
    }));
    assert!(matches!(refused, Err(RolloutError::BadRequest(_))));
}

#[test]
fn a_shard_announced_twice_is_refused() {
    let hello = |agent: &str| Hello {
        agent_id: agent.to_owned(),
        shards: vec![fleetshift_common::proto::v1::ShardFacts {
            shard_id: "s1".to_owned(),
            ..Default::default()
        }],
        ..Hello::default()
    };
    let agents = vec![("a".to_owned(), hello("a")), ("b".to_owned(), hello("b"))];
    assert!(matches!(
        candidates(&agents, &HashMap::new()),
        Err(RolloutError::BadRequest(message)) if message.contains("a and b")
    ));
}

#[test]
fn a_plan_keeps_the_lint_findings_of_the_revisions_it_applies_with_their_reasons() {
    let directory = tempfile::tempdir().expect("tempdir");
    let files = [
        (
            "1_index.up.sql",
            "-- fleetshift:allow require-concurrent-index-creation 40 rows per shard\nCREATE INDEX i ON t (c);\n",
        ),
        ("1_index.down.sql", "DROP INDEX i;\n"),
        ("2_wipe.up.sql", "DELETE FROM sessions;\n"),
        ("2_wipe.down.sql", "SELECT 1;\n"),
    ];
    for (name, content) in files {
        std::fs::write(directory.path().join(name), content).expect("write");
    }
    let set = fleetshift_common::source::MigrationSet::load(directory.path(), None).expect("set");
    let hello = Hello {
        agent_id: "a".to_owned(),
        shards: vec![fleetshift_common::proto::v1::ShardFacts {
            shard_id: "s1".to_owned(),
            ..Default::default()
        }],
        ..Hello::default()
    };
    let request = |target: &str| CreatePlanRequest {
        migration_set: Some(shipped::pack(&set).expect("pack")),
        target_version: target.to_owned(),
        ..CreatePlanRequest::default()
    };
    let agents = [("a".to_owned(), hello)];
    let checked = |target: &str| PlanRequest::try_from(request(target)).expect("valid");
    let planned = plan(checked("1"), "ops", &agents).expect("plan to 1");
    let rules: Vec<(&str, &str, &str)> = planned
        .findings
        .iter()
        .map(|finding| {
            (
                finding.file.as_str(),
                finding.rule.as_str(),
                finding.allowed.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [(
            "1_index.up.sql",
            "require-concurrent-index-creation",
            "40 rows per shard"
        )],
        "revision 2 is beyond the target"
    );
    let planned = plan(checked(""), "ops", &agents).expect("plan to the end");
    assert!(
        planned
            .findings
            .iter()
            .any(|finding| finding.rule == "unbounded-update-delete" && finding.allowed.is_empty())
    );
}

#[test]
fn baselines_an_agent_could_not_run_or_compare_are_refused() {
    use fleetshift_common::proto::v1::{BaselinePolicy, BaselineQuery};

    let query = |name: &str, sql: &str| BaselineQuery {
        name: name.to_owned(),
        sql: sql.to_owned(),
    };
    let duties = |queries: Vec<BaselineQuery>, runs: u32, threshold: f64| HostDuties {
        baselines: Some(BaselinePolicy {
            queries,
            runs,
            degradation_threshold: threshold,
            noise_floor: None,
        }),
        ..HostDuties::default()
    };
    let refusal = |duties: HostDuties| {
        check_duties(Some(&duties))
            .expect_err("refused")
            .to_string()
    };
    assert!(check_duties(None).is_ok());
    assert!(check_duties(Some(&duties(vec![query("a", "SELECT 1")], 0, 0.0))).is_ok());
    assert!(refusal(duties(vec![query("", "SELECT 1")], 5, 1.5)).contains("needs a name and SQL"));
    assert!(refusal(duties(vec![query("a", " ")], 5, 1.5)).contains("needs a name and SQL"));
    assert!(
        refusal(duties(
            vec![query("a", "SELECT 1"), query("a", "SELECT 2")],
            5,
            1.5
        ))
        .contains("baseline query a is named twice")
    );
    assert!(refusal(duties(vec![query("a", "SELECT 1")], 1_001, 1.5)).contains("above the limit"));
    assert!(refusal(duties(vec![query("a", "SELECT 1")], 5, 0.9)).contains("above 1.0"));
    assert!(refusal(duties(vec![query("a", "SELECT 1")], 5, f64::NAN)).contains("above 1.0"));
}
