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

/// Runs `fleetshift lint` with `arguments` and `stdin` on its standard input.
fn lint_with_input(arguments: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(binary::fleetshift())
        .arg("lint")
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fleetshift lint");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("lint ends")
}

/// `file:line:col: rule: message` lines as (file, line, rule).
fn compact_lines(output: &Output) -> Vec<(String, usize, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(5, ':');
            let file = parts.next().expect("file").to_owned();
            let number = parts.next().expect("line").parse().expect("a line number");
            let column: usize = parts.next().expect("column").parse().expect("a column");
            assert_eq!(column, 1, "{line}");
            let rule = parts.next().expect("rule").trim().to_owned();
            assert!(
                parts
                    .next()
                    .is_some_and(|message| !message.trim().is_empty()),
                "{line}"
            );
            (file, number, rule)
        })
        .collect()
}

#[test]
fn a_file_with_begin_and_commit_is_still_linted_with_squawks_findings_and_fleetshifts() {
    let home = tempfile::tempdir().expect("home");
    let file = home.path().join("change.sql");
    std::fs::write(
        &file,
        "BEGIN;\nCREATE INDEX i ON t (c);\nALTER TABLE t ADD COLUMN d bigint NOT NULL;\nCOMMIT;\n",
    )
    .expect("write");
    let output = lint(&file, &["--output", "compact"]);
    support::assert_exit(&output, 11);
    let name = file.display().to_string();
    let found = compact_lines(&output);
    for (line, rule) in [
        (1, "transaction-control-in-revision"),
        (2, "require-concurrent-index-creation"),
        (3, "adding-required-field"),
        (4, "transaction-control-in-revision"),
    ] {
        assert!(
            found.contains(&(name.clone(), line, rule.to_owned())),
            "{rule} at line {line}: {found:?}"
        );
    }
    // Revision rules do not apply to a lone script.
    assert!(
        found
            .iter()
            .all(|(_, _, rule)| rule != "irreversible-revision"),
        "{found:?}"
    );
}

#[test]
fn standard_input_globs_and_files_inside_a_set_are_linted_each_the_right_way() {
    let from_stdin = lint_with_input(
        &["-", "--output", "json", "--fail-on", "never"],
        "CREATE INDEX k ON t (c);\n",
    );
    support::assert_exit(&from_stdin, 0);
    let report: Value = serde_json::from_slice(&from_stdin.stdout).expect("JSON");
    assert_eq!(report["scripts"], 1);
    let from_stdin = findings(&from_stdin);
    let rules: Vec<&str> = from_stdin
        .iter()
        .filter(|finding| finding["file"] == "<stdin>")
        .filter_map(|finding| finding["rule"].as_str())
        .collect();
    assert!(
        rules.contains(&"require-concurrent-index-creation"),
        "{rules:?}"
    );
    // Outside a transaction by default, as squawk; inside one when asked.
    let inside = lint_with_input(
        &[
            "-",
            "--output",
            "json",
            "--fail-on",
            "never",
            "--assume-in-transaction",
        ],
        "CREATE INDEX CONCURRENTLY k ON t (c);\n",
    );
    let rules: Vec<String> = findings(&inside)
        .iter()
        .filter_map(|finding| finding["rule"].as_str().map(str::to_owned))
        .collect();
    assert!(
        rules.contains(&"non-transactional-in-transaction".to_owned()),
        "{rules:?}"
    );
    let outside = lint_with_input(
        &["-", "--output", "json", "--fail-on", "never"],
        "CREATE INDEX CONCURRENTLY k ON t (c);\n",
    );
    assert!(
        findings(&outside)
            .iter()
            .all(|finding| finding["rule"] != "non-transactional-in-transaction"),
        "{}",
        binary::printed(&outside)
    );

    // A file of a set is linted as its revision: its own (autocommit) mode, revision rules.
    let set = fixtures::migrations(&[
        (
            "1_a.up.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);",
        ),
        ("2_b.up.sql", "UPDATE t SET x = 1;"),
    ]);
    let pattern = format!("{}/*.up.sql", set.path().display());
    let output = Command::new(binary::fleetshift())
        .args([
            "lint",
            &pattern,
            "--output",
            "compact",
            "--fail-on",
            "never",
        ])
        .output()
        .expect("lint");
    support::assert_exit(&output, 0);
    let found = compact_lines(&output);
    let first = set.path().join("1_a.up.sql").display().to_string();
    let second = set.path().join("2_b.up.sql").display().to_string();
    assert!(
        found.contains(&(first.clone(), 2, "irreversible-revision".to_owned()))
            && found.contains(&(second, 1, "unbounded-update-delete".to_owned())),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|(file, _, rule)| *file == first
            && rule == "ban-concurrent-index-creation-in-transaction"),
        "the revision runs outside a transaction: {found:?}"
    );

    let nothing = Command::new(binary::fleetshift())
        .args(["lint", &format!("{}/*.yaml", set.path().display())])
        .output()
        .expect("lint");
    support::assert_exit(&nothing, 2);
    assert!(binary::printed(&nothing).contains("matches no file"));
}

#[test]
fn a_sets_bad_input_is_reported_beside_its_findings() {
    let directory = fixtures::migrations(&[
        ("1_a.up.sql", "CREATE INDEX i ON t (c);"),
        ("1_b.up.sql", "SELECT 1;"),
        ("2_c.up.sql", "BEGIN;\nUPDATE t SET x = 1;\nCOMMIT;"),
    ]);
    let output = lint(directory.path(), &["--output", "json"]);
    support::assert_exit(&output, 2);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("duplicate version 1"))
    );
    let found = findings(&output);
    assert!(
        !at(&found, "1_a.up.sql", "require-concurrent-index-creation").is_empty(),
        "{found:?}"
    );
    assert_eq!(
        at(&found, "2_c.up.sql", "transaction-control-in-revision").len(),
        2,
        "{found:?}"
    );
    assert!(
        !at(&found, "2_c.up.sql", "unbounded-update-delete").is_empty(),
        "{found:?}"
    );
}

mod squawk_parity;
