//! Printing results: aligned text for people, one JSON document for scripts.

use fleetshift_common::error::ErrorKind;
use fleetshift_common::executor::{RunReport, ShardStatus};
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, Revision};
use serde_json::json;

use super::Output;

pub fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot encode the result as JSON: {error}"),
    }
}

pub fn failure(output: Output, message: &str, kind: ErrorKind) {
    match output {
        Output::Human => eprintln!("error: {message}"),
        Output::Json => {
            print_json(&json!({ "error": { "kind": format!("{kind:?}"), "message": message } }))
        }
    }
}

pub fn status(output: Output, set: &MigrationSet, status: &ShardStatus) {
    if output == Output::Json {
        print_json(&json!({ "format": set.format, "status": status }));
        return;
    }
    println!("shard:    {}", status.shard);
    println!(
        "set:      {} ({} format, {} revisions, digest {})",
        set.directory.display(),
        set.format,
        set.revisions.len(),
        &set.digest[..16]
    );
    println!(
        "current:  {}",
        status
            .current_version
            .as_deref()
            .unwrap_or("(none applied)")
    );
    let name_width = status
        .revisions
        .iter()
        .map(|state| state.name.len())
        .max()
        .unwrap_or(4)
        .min(48);
    let version_width = status
        .revisions
        .iter()
        .map(|state| state.version.len())
        .max()
        .unwrap_or(7);
    println!(
        "\n  {:<version_width$}  {:<name_width$}  {:<9}  {:<6}  FINISHED",
        "VERSION", "NAME", "STATUS", "MODE"
    );
    for state in &status.revisions {
        let status_text = match (state.status, state.drifted) {
            (_, true) => "DRIFTED".to_owned(),
            (Some(status), false) => status.to_string(),
            (None, false) => "pending".to_owned(),
        };
        let mode = if state.transactional { "tx" } else { "no-tx" };
        let name: String = state.name.chars().take(name_width).collect();
        println!(
            "  {:<version_width$}  {:<name_width$}  {:<9}  {:<6}  {}",
            state.version,
            name,
            status_text,
            mode,
            state.finished_at.as_deref().unwrap_or("-")
        );
        if let Some(error) = &state.error {
            println!(
                "      last error: {}",
                error.lines().next().unwrap_or_default()
            );
        }
    }
    let count = |wanted: RevisionStatus| {
        status
            .revisions
            .iter()
            .filter(|state| state.status == Some(wanted))
            .count()
    };
    println!(
        "\nsummary: {} applied, {} pending, {} started (unfinished), {} failed, {} drifted",
        count(RevisionStatus::Applied),
        status.pending().count(),
        count(RevisionStatus::Started),
        count(RevisionStatus::Failed),
        status.drifted.len()
    );
    for entry in &status.unknown {
        println!(
            "warning: the shard has revision {}_{} which the set does not contain",
            entry.version, entry.name
        );
    }
}

pub fn report(output: Output, report: &RunReport) {
    if output == Output::Json {
        print_json(&json!(report));
        return;
    }
    for step in &report.steps {
        let retries = if step.lock_retries > 0 {
            format!(", {} lock retries", step.lock_retries)
        } else {
            String::new()
        };
        println!(
            "{:<12} {}_{} ({} statements, {} ms{retries})",
            format!("{:?}", step.outcome).to_lowercase(),
            step.version,
            step.name,
            step.statements_run,
            step.duration_ms
        );
        if let Some(failure) = &step.tolerated_failure {
            println!("             failed, and recorded as applied (failOnError:false): {failure}");
        }
    }
    if report.steps.is_empty() {
        println!("nothing to do");
    }
    println!(
        "shard {} is at {} (fence token {})",
        report.shard,
        report
            .current_version
            .as_deref()
            .unwrap_or("(none applied)"),
        report.fence_token
    );
    if let Some(schema) = &report.schema {
        println!(
            "schema {} -> {} ({} object(s) changed)",
            schema.before.short(),
            schema.after.short(),
            schema.objects_changed
        );
    }
}

/// The revisions whose up script has no statements.
fn no_ops(set: &MigrationSet) -> impl Iterator<Item = &Revision> {
    set.revisions.iter().filter(|revision| revision.is_no_op())
}

/// For a set whose engines run different files (pop, Liquibase `dbms:`): the files each
/// engine runs, revision
/// by revision.
fn engine_files(set: &MigrationSet) -> serde_json::Map<String, serde_json::Value> {
    set.engine_variants()
        .map(|(engine, variant)| {
            let revisions: Vec<_> = variant
                .revisions
                .iter()
                .map(|revision| {
                    json!({
                        "version": revision.version.as_str(),
                        "up": revision.up.path,
                        "down": revision.down.as_ref().map(|script| &script.path),
                        "transactional": revision.transactional,
                        "no_op": revision.is_no_op(),
                    })
                })
                .collect();
            (engine.name().to_owned(), json!(revisions))
        })
        .collect()
}

pub fn verified(output: Output, set: &MigrationSet, status: Option<&ShardStatus>) {
    if output == Output::Json {
        print_json(&json!({
            "directory": set.directory,
            "format": set.format,
            "revisions": set.revisions.len(),
            "digest": set.digest,
            "ignored": set.ignored,
            "no_ops": no_ops(set).map(|revision| &revision.up.path).collect::<Vec<_>>(),
            "engines": engine_files(set),
            "drifted": status.map(|status| &status.drifted),
        }));
        return;
    }
    println!(
        "{}: {} revisions in {} format, digest {}",
        set.directory.display(),
        set.revisions.len(),
        set.format,
        set.digest
    );
    for path in &set.ignored {
        println!("ignored (not a revision): {}", path.display());
    }
    for (engine, variant) in set.engine_variants() {
        let count = |wanted: fn(&Revision) -> bool| {
            variant
                .revisions
                .iter()
                .filter(|revision| wanted(revision))
                .count()
        };
        println!(
            "{engine} runs its own files: {} revisions, {} of them no-ops, {} outside a transaction",
            variant.revisions.len(),
            count(Revision::is_no_op),
            count(|revision| !revision.transactional)
        );
    }
    const NO_OPS_SHOWN: usize = 10;
    for revision in no_ops(set).take(NO_OPS_SHOWN) {
        println!(
            "no-op revision {} (no statements; applied and recorded like any other): {}",
            revision.label(),
            revision.up.path.display()
        );
    }
    let more = no_ops(set).count().saturating_sub(NO_OPS_SHOWN);
    if more > 0 {
        println!("… and {more} more no-op revisions (--output json lists them all)");
    }
    if let Some(status) = status {
        if status.drifted.is_empty() {
            println!(
                "shard {}: every applied revision matches its file",
                status.shard
            );
        }
        for drifted in &status.drifted {
            println!(
                "DRIFT {}_{}: applied {} but the file hashes to {}",
                drifted.version, drifted.name, drifted.applied_checksum, drifted.source_checksum
            );
        }
    }
}
