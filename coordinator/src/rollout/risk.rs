//! How risky a plan is: a score from 0 to 100 for each revision it applies on each shard it
//! covers, from named factors that each say what they add and why; the plan takes its riskiest
//! pair. The level sets the approvals the plan needs before it can start: CRITICAL needs two
//! distinct approvers, neither of them the plan's author; every other level needs one.
//!
//! Factors: open lint findings (the worst severity, more for several errors); locks that block
//! the table (ACCESS EXCLUSIVE, or SHARE for a plain index build); no down script; a production
//! shard (`env` / `environment` label); no verified backup required before the first DDL on a
//! production shard; the size of the largest existing table it changes, the objects that
//! depend on the changed tables, and the objects that use a column it renames, drops or
//! retypes, and the sessions holding or awaiting locks on the changed tables (more when one
//! has had a transaction open for a minute), from the shard's catalog as its agent last
//! reported it (when there are no facts, a `catalog` factor adds nothing and says so).

use fleetshift_common::engine::catalog::{activity_age, describe_activity};
use fleetshift_common::proto::v1::{
    LintFinding, RiskAssessment, RiskFactor, RiskLevel, TableActivity, TableFacts,
};
use fleetshift_common::source::Revision;
use fleetshift_common::statements::Statement;
use fleetshift_common::touched::{altered_columns, touched};

pub mod measured;

/// A shard the plan covers, as risk sees it.
#[derive(Debug, Clone)]
pub struct ShardContext {
    pub shard_id: String,
    /// The `env` (or `environment`) label, when set.
    pub environment: Option<String>,
    /// Its tables as its agent last reported them; empty when unknown.
    pub tables: Vec<TableFacts>,
    /// When the agent read them.
    pub observed_at: Option<prost_types::Timestamp>,
    /// Whether the plan has the shard's agent take a verified backup before the first DDL.
    pub backup_required: bool,
}

impl ShardContext {
    fn is_production(&self) -> bool {
        self.environment
            .as_deref()
            .is_some_and(|environment| matches!(environment, "production" | "prod"))
    }
}

pub fn level_of(score: u32) -> RiskLevel {
    match score {
        0..=30 => RiskLevel::Low,
        31..=60 => RiskLevel::Medium,
        61..=80 => RiskLevel::High,
        _ => RiskLevel::Critical,
    }
}

/// The plan's assessment: the riskiest revision on the riskiest shard.
pub fn assess(
    revisions: &[Revision],
    findings: &[LintFinding],
    shards: &[ShardContext],
) -> RiskAssessment {
    let mut riskiest: Option<(u32, String, String, Vec<RiskFactor>)> = None;
    for revision in revisions {
        let label = revision.label();
        let own: Vec<&LintFinding> = findings
            .iter()
            .filter(|finding| finding.revision == label)
            .collect();
        for shard in shards {
            let factors = factors(revision, &own, shard);
            let score = factors
                .iter()
                .map(|factor| factor.points)
                .sum::<u32>()
                .min(100);
            if riskiest.as_ref().is_none_or(|(best, ..)| score > *best) {
                riskiest = Some((score, label.clone(), shard.shard_id.clone(), factors));
            }
        }
    }
    let Some((score, revision, shard_id, factors)) = riskiest else {
        return RiskAssessment {
            level: RiskLevel::Low.into(),
            approvals_required: 1,
            author_may_approve: true,
            ..RiskAssessment::default()
        };
    };
    let level = level_of(score);
    let critical = level == RiskLevel::Critical;
    RiskAssessment {
        score,
        level: level.into(),
        revision,
        shard_id,
        factors,
        approvals_required: if critical { 2 } else { 1 },
        author_may_approve: !critical,
    }
}

fn factor(name: &str, points: u32, explanation: String) -> RiskFactor {
    RiskFactor {
        name: name.to_owned(),
        points,
        explanation,
    }
}

fn factors(
    revision: &Revision,
    findings: &[&LintFinding],
    shard: &ShardContext,
) -> Vec<RiskFactor> {
    let mut factors = vec![lint(findings), locks(revision.up.statements())];
    if revision.down.is_none() {
        factors.push(factor(
            "reversibility",
            15,
            "no down script: the revision cannot be reverted".to_owned(),
        ));
    }
    if shard.is_production() {
        factors.push(factor(
            "environment",
            20,
            format!("{} is a production shard", shard.shard_id),
        ));
    }
    if shard.is_production() && !shard.backup_required {
        factors.push(factor(
            "backup",
            10,
            "no verified backup is taken before the first DDL (plan with --require-backup)"
                .to_owned(),
        ));
    }
    factors.extend(catalog(revision.up.statements(), shard));
    factors.retain(|factor| factor.points > 0 || factor.name == "catalog");
    factors
}

/// The tables a revision changes that exist already (a table it creates is new and empty).
pub fn changed_tables(statements: &[Statement]) -> Vec<String> {
    let mut tables: Vec<String> = statements
        .iter()
        .filter_map(touched)
        .filter(|touch| touch.operation != "CREATE TABLE")
        .map(|touch| touch.table)
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// Size and dependents of the changed tables on this shard, from its catalog facts.
fn catalog(statements: &[Statement], shard: &ShardContext) -> Vec<RiskFactor> {
    if shard.tables.is_empty() {
        return vec![factor(
            "catalog",
            0,
            format!(
                "no catalog facts from {}'s agent: table sizes and dependents unknown",
                shard.shard_id
            ),
        )];
    }
    let changed: Vec<&TableFacts> = changed_tables(statements)
        .iter()
        .filter_map(|name| shard.tables.iter().find(|facts| &facts.table == name))
        .collect();
    let mut factors = Vec::new();
    if let Some(largest) = changed.iter().max_by_key(|facts| facts.estimated_rows) {
        let points = match largest.estimated_rows {
            1_000_000.. => 15,
            100_000.. => 10,
            10_000.. => 5,
            _ => 0,
        };
        factors.push(factor(
            "size",
            points,
            format!(
                "{} holds about {} rows ({} MiB) on {}",
                largest.table,
                largest.estimated_rows,
                largest.total_bytes / (1024 * 1024),
                shard.shard_id
            ),
        ));
    }
    let dependents: Vec<&str> = changed
        .iter()
        .flat_map(|facts| &facts.dependents)
        .map(String::as_str)
        .filter(|dependent| !dependent.starts_with("index "))
        .collect();
    if !dependents.is_empty() {
        factors.push(factor(
            "dependents",
            if dependents.len() >= 5 { 10 } else { 5 },
            format!("depended on by {}", dependents.join(", ")),
        ));
    }
    factors.extend(broken_by_columns(statements, shard));
    factors.extend(in_use(&changed, shard));
    factors
}

/// A transaction open this long on a changed table holds its DDL back until it ends.
const LONG_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(60);

/// Sessions that held or awaited a lock on a changed table when the facts were read: the DDL
/// waits for them (and, while it waits, holds back every later query on the table).
fn in_use(changed: &[&TableFacts], shard: &ShardContext) -> Option<RiskFactor> {
    let users: Vec<(&str, &TableActivity)> = changed
        .iter()
        .flat_map(|facts| {
            facts
                .activity
                .iter()
                .map(|activity| (facts.table.as_str(), activity))
        })
        .collect();
    if users.is_empty() {
        return None;
    }
    let long = users
        .iter()
        .any(|(_, activity)| activity_age(activity).is_some_and(|age| age >= LONG_TRANSACTION));
    let when = shard.observed_at.map_or_else(
        || "when its agent last looked".to_owned(),
        |at| format!("at {at}"),
    );
    let sessions: Vec<String> = users
        .iter()
        .map(|(table, activity)| format!("{table}: {}", describe_activity(activity)))
        .collect();
    Some(factor(
        "in use",
        if long { 10 } else { 5 },
        format!(
            "in use on {} {when}: {}",
            shard.shard_id,
            sessions.join("; ")
        ),
    ))
}

/// Objects that use a column the revision renames, drops or retypes: they break or their SQL
/// must change (views follow a rename by themselves; function bodies do not).
fn broken_by_columns(statements: &[Statement], shard: &ShardContext) -> Option<RiskFactor> {
    let mut broken = Vec::new();
    for statement in statements {
        let Some(table) = touched(statement).map(|touch| touch.table) else {
            continue;
        };
        let Some(facts) = shard.tables.iter().find(|facts| facts.table == table) else {
            continue;
        };
        for (column, action) in altered_columns(statement) {
            let users = facts
                .columns
                .iter()
                .find(|facts| facts.column == column)
                .map(|facts| facts.dependents.as_slice())
                .unwrap_or_default();
            let affected: Vec<&str> = users
                .iter()
                .map(String::as_str)
                .filter(|user| action != "renamed" || user.starts_with("function "))
                .collect();
            if !affected.is_empty() {
                broken.push(format!(
                    "{table}.{column} {action}: {}",
                    affected.join(", ")
                ));
            }
        }
    }
    (!broken.is_empty()).then(|| {
        factor(
            "columns",
            10,
            format!("objects that must change: {}", broken.join("; ")),
        )
    })
}

/// The worst open finding: error 30 (+5 for each further error, at most +15), warning 10.
fn lint(findings: &[&LintFinding]) -> RiskFactor {
    let open: Vec<&&LintFinding> = findings
        .iter()
        .filter(|finding| finding.allowed.is_empty())
        .collect();
    let errors: Vec<&str> = open
        .iter()
        .filter(|finding| finding.severity == "error")
        .map(|finding| finding.rule.as_str())
        .collect();
    let warnings = open
        .iter()
        .filter(|finding| finding.severity == "warning")
        .count();
    if !errors.is_empty() {
        let extra = u32::try_from(errors.len() - 1)
            .unwrap_or(u32::MAX)
            .saturating_mul(5)
            .min(15);
        return factor(
            "lint",
            30 + extra,
            format!("{} open lint error(s): {}", errors.len(), errors.join(", ")),
        );
    }
    if warnings > 0 {
        return factor("lint", 10, format!("{warnings} open lint warning(s)"));
    }
    factor("lint", 0, "no open lint errors or warnings".to_owned())
}

/// Statements that block the table while they run.
fn locks(statements: &[Statement]) -> RiskFactor {
    let mut exclusive = 0;
    let mut share = 0;
    for statement in statements {
        let words = statement.leading_words(3);
        let word = |index: usize| words.get(index).map(String::as_str);
        let concurrently = statement
            .tokens()
            .any(|token| token.eq_ignore_ascii_case("CONCURRENTLY"));
        match (word(0), word(1)) {
            (Some("ALTER" | "DROP"), Some("TABLE"))
            | (Some("TRUNCATE" | "LOCK" | "CLUSTER"), _) => exclusive += 1,
            (Some("DROP"), Some("INDEX")) | (Some("REINDEX"), _) if !concurrently => exclusive += 1,
            (Some("VACUUM"), Some("FULL")) => exclusive += 1,
            (Some("CREATE"), Some("INDEX" | "UNIQUE")) if !concurrently => share += 1,
            _ => {}
        }
    }
    if exclusive > 0 {
        factor(
            "locks",
            20,
            format!(
                "{exclusive} statement(s) take an ACCESS EXCLUSIVE lock (reads and writes wait)"
            ),
        )
    } else if share > 0 {
        factor(
            "locks",
            10,
            format!("{share} index build(s) without CONCURRENTLY block writes"),
        )
    } else {
        factor("locks", 0, "no table-blocking locks".to_owned())
    }
}

#[cfg(test)]
mod tests;
