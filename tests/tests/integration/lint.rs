//! `fleetshift lint` on crates.io's real history and on sets written for the test: squawk's
//! findings under squawk's names on the right files and lines, fleetshift's own rules,
//! reviewed regions and allow comments honoured, SARIF for code-scanning UIs, and an exit
//! code that follows `--fail-on`.

use std::process::{Command, Output};

use fleetshift_tests::{binary, fixtures};
use serde_json::Value;

use super::support;

fn lint(directory: &std::path::Path, arguments: &[&str]) -> Output {
    Command::new(binary::fleetshift())
        .arg("lint")
        .arg(directory)
        .args(arguments)
        .output()
        .expect("run fleetshift lint")
}

fn findings(output: &Output) -> Vec<Value> {
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    report["findings"].as_array().cloned().unwrap_or_default()
}

fn at<'a>(findings: &'a [Value], file: &str, rule: &str) -> Vec<&'a Value> {
    findings
        .iter()
        .filter(|finding| finding["file"] == file && finding["rule"] == rule)
        .collect()
}

#[test]
fn crates_io_findings_land_on_the_right_files_and_lines_and_reviewed_regions_are_honoured() {
    let output = lint(
        &fixtures::crates_io(),
        &["--output", "json", "--fail-on", "never"],
    );
    support::assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["revisions"], 285);
    let findings = findings(&output);

    // A plain CREATE INDEX on an existing table.
    let index = at(
        &findings,
        "20161115111853_dumped_migration_117/up.sql",
        "require-concurrent-index-creation",
    );
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(index[0]["line"], 1);
    assert_eq!(index[0]["severity"], "error");
    assert!(index[0]["allowed"].is_null());

    // SET NOT NULL scans the table under an exclusive lock.
    let not_null = at(
        &findings,
        "2018-01-18-172821_use_jsonb_for_features/up.sql",
        "adding-not-nullable-field",
    );
    assert_eq!(not_null.len(), 1, "{not_null:?}");
    assert_eq!(not_null[0]["line"], 3);

    // The same statement inside `-- safety-assured:start/end` is reviewed, not open; a finding
    // below the region stays open.
    let reviewed = at(
        &findings,
        "2026-06-17-105325-0000_versions_tar_sha256_not_null/up.sql",
        "adding-not-nullable-field",
    );
    assert_eq!(reviewed.len(), 1, "{reviewed:?}");
    assert_eq!(reviewed[0]["allowed"], "reviewed region (safety-assured)");
    let below = at(
        &findings,
        "2026-06-17-105325-0000_versions_tar_sha256_not_null/up.sql",
        "ban-drop-constraint",
    );
    assert!(below.iter().all(|finding| finding["allowed"].is_null()));

    // fleetshift's own rules fire on real history too.
    for rule in ["unbatched-backfill", "irreversible-revision"] {
        assert!(
            findings.iter().any(|finding| finding["rule"] == rule),
            "{rule} found somewhere in crates.io's history"
        );
    }

    // With the default --fail-on error, open errors fail the command.
    support::assert_exit(&lint(&fixtures::crates_io(), &[]), 11);
}

#[test]
fn allow_comments_need_a_reason_and_sarif_carries_the_suppression() {
    let directory = fixtures::migrations(&[
        (
            "1_accounts.up.sql",
            "CREATE TABLE accounts (id bigint PRIMARY KEY, plan text);\n",
        ),
        ("1_accounts.down.sql", "DROP TABLE accounts;\n"),
        (
            "2_index.up.sql",
            "-- fleetshift:allow require-concurrent-index-creation accounts holds 40 rows on every shard\n\
             CREATE INDEX accounts_plan ON accounts (plan);\n\
             -- fleetshift:allow unbounded-update-delete\n\
             UPDATE accounts SET plan = 'free';\n",
        ),
        ("2_index.down.sql", "DROP INDEX accounts_plan;\n"),
    ]);
    let output = lint(directory.path(), &["--output", "json"]);
    let findings = findings(&output);
    let index = at(
        &findings,
        "2_index.up.sql",
        "require-concurrent-index-creation",
    );
    assert_eq!(
        index[0]["allowed"], "accounts holds 40 rows on every shard",
        "{findings:?}"
    );
    let unexplained = at(&findings, "2_index.up.sql", "allow-without-reason");
    assert_eq!(unexplained.len(), 1, "{findings:?}");
    assert_eq!(unexplained[0]["line"], 3);
    let update = at(&findings, "2_index.up.sql", "unbounded-update-delete");
    assert!(
        update[0]["allowed"].is_null(),
        "an allow without a reason allows nothing"
    );
    support::assert_exit(&output, 11);

    let sarif = lint(
        directory.path(),
        &["--output", "sarif", "--fail-on", "never"],
    );
    support::assert_exit(&sarif, 0);
    let sarif: Value = serde_json::from_slice(&sarif.stdout).expect("SARIF JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), findings.len());
    let suppressed = results
        .iter()
        .find(|result| result["ruleId"] == "require-concurrent-index-creation")
        .expect("the index finding");
    assert_eq!(
        suppressed["suppressions"][0]["justification"],
        "accounts holds 40 rows on every shard"
    );
    assert_eq!(
        suppressed["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "2_index.up.sql"
    );
}

#[test]
fn a_malformed_set_is_bad_input_naming_the_file() {
    let directory = fixtures::migrations(&[("1_a.sql", "SELECT 1;"), ("1_b.sql", "SELECT 2;")]);
    let output = lint(directory.path(), &[]);
    support::assert_exit(&output, 2);
    assert!(
        binary::printed(&output).contains("1_"),
        "{}",
        binary::printed(&output)
    );
}
