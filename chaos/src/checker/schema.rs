//! Shards that hold the same revisions hold the same schema: the application's tables,
//! columns and indexes (with their validity) as the campaign reads them from the catalog,
//! compared between every shard whose ledger applied the same versions and left nothing
//! `started`. A fault that left an invalid index, a half-made table or a column too many
//! shows here even where each shard's own ledger looks whole.

use std::collections::{BTreeMap, BTreeSet};

use fleetshift_common::ledger::RevisionStatus;

use super::{Check, ShardRecord, Violation};

/// Every object a shard holds that another shard with the same applied versions lacks.
pub fn check(shards: &[ShardRecord]) -> Vec<Violation> {
    let mut by_versions: BTreeMap<Vec<&str>, Vec<&ShardRecord>> = BTreeMap::new();
    for shard in shards {
        if shard
            .ledger
            .iter()
            .any(|entry| entry.status == RevisionStatus::Started)
        {
            continue;
        }
        let mut applied: Vec<&str> = shard
            .ledger
            .iter()
            .filter(|entry| entry.status == RevisionStatus::Applied)
            .map(|entry| entry.version.as_str())
            .collect();
        applied.sort_unstable();
        by_versions.entry(applied).or_default().push(shard);
    }
    let mut violations = Vec::new();
    for (versions, group) in by_versions {
        let Some(majority) = majority(&group) else {
            continue;
        };
        for shard in group.iter().filter(|shard| shard.schema != *majority) {
            let extra: Vec<&String> = shard.schema.difference(majority).collect();
            let lacking: Vec<&String> = majority.difference(&shard.schema).collect();
            violations.push(Violation::on(
                Check::SchemaDivergence,
                &shard.shard,
                format!(
                    "with revisions {} applied like other shards, its schema has {extra:?} where theirs has {lacking:?}",
                    versions.join(",")
                ),
            ));
        }
    }
    violations
}

/// The schema most of `group` has, if more shards have it than any other.
fn majority<'a>(group: &[&'a ShardRecord]) -> Option<&'a BTreeSet<String>> {
    let mut counts: BTreeMap<&BTreeSet<String>, usize> = BTreeMap::new();
    for shard in group {
        *counts.entry(&shard.schema).or_default() += 1;
    }
    let mut ranked: Vec<(&BTreeSet<String>, usize)> = counts.into_iter().collect();
    ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    match ranked.as_slice() {
        [(only, _)] => Some(only),
        [(first, most), (_, next), ..] if most > next => Some(first),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, applied: &[&str], schema: &[&str]) -> ShardRecord {
        ShardRecord {
            shard: name.to_owned(),
            ledger: applied
                .iter()
                .map(|version| crate::checker::test_row(version, RevisionStatus::Applied, 1, ""))
                .collect(),
            schema: schema.iter().map(|object| (*object).to_owned()).collect(),
            ..ShardRecord::default()
        }
    }

    /// Two revisions applied, and the schema they leave.
    const APPLIED: &[&str] = &["1", "2"];
    const WHOLE: &[&str] = &["table accounts", "index accounts_c2 valid"];

    #[test]
    fn shards_with_the_same_revisions_and_schema_pass() {
        let fleet = [
            shard("a", APPLIED, WHOLE),
            shard("b", APPLIED, WHOLE),
            shard("c", &["1"], &["table accounts"]),
        ];
        assert_eq!(check(&fleet), []);
    }

    #[test]
    fn the_shard_that_differs_from_its_peers_is_named_with_the_objects() {
        let invalid = ["table accounts", "index accounts_c2 invalid"];
        let fleet = [
            shard("a", APPLIED, WHOLE),
            shard("b", APPLIED, &invalid),
            shard("c", APPLIED, WHOLE),
        ];
        let violations = check(&fleet);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].check, Check::SchemaDivergence);
        assert_eq!(violations[0].shard.as_deref(), Some("b"));
        assert!(
            violations[0].detail.contains("index accounts_c2 invalid"),
            "{}",
            violations[0].detail
        );
    }

    #[test]
    fn a_tie_names_no_one() {
        let fleet = [
            shard("a", &["1"], &["table accounts"]),
            shard("b", &["1"], &["table accounts", "table stray"]),
        ];
        assert_eq!(check(&fleet), []);
    }
}
