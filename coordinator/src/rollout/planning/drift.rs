//! Shards whose schema differs from the fleet's majority at their version: a plan refuses
//! them, naming each with what to run, unless its author allows them with a reason, which the
//! plan keeps. The majority is the whole fleet's (every announced shard at that version, not
//! only the selected ones). A version where two schemas have as many shards is contested:
//! no shard there counts as drifted, since neither schema is known to be the right one.

use std::collections::BTreeSet;

use fleetshift_common::proto::v1::{DriftAllowance, Hello};
use fleetshift_common::schema::drift::{self, ShardSchema};

use super::Candidate;
use crate::rollout::RolloutError;

/// The selected shards whose schema differs from their version's majority, refused when
/// `allowance` (the author's reason) is empty, else recorded with it.
pub fn allowances(
    agents: &[(String, Hello)],
    selected: &[Candidate],
    allowance: &str,
) -> Result<Vec<DriftAllowance>, RolloutError> {
    let fleet: Vec<ShardSchema> = agents
        .iter()
        .flat_map(|(_, hello)| &hello.shards)
        .filter_map(|shard| {
            ShardSchema::reported(
                &shard.shard_id,
                &shard.current_version,
                &shard.schema_fingerprint,
            )
        })
        .collect();
    let selected: BTreeSet<&str> = selected
        .iter()
        .map(|shard| shard.shard_id.as_str())
        .collect();
    let mut drifted = Vec::new();
    for version in drift::by_version(&fleet)
        .into_iter()
        .filter(|version| !version.contested)
    {
        let example = fleet
            .iter()
            .find(|shard| shard.version == version.version && shard.fingerprint == version.majority)
            .map(|shard| shard.shard_id.clone())
            .unwrap_or_default();
        for outlier in version
            .outliers
            .iter()
            .filter(|outlier| selected.contains(outlier.shard_id.as_str()))
        {
            drifted.push((
                example.clone(),
                version.majority_shards,
                DriftAllowance {
                    shard_id: outlier.shard_id.clone(),
                    version: version.version.clone(),
                    fingerprint: outlier.fingerprint.to_string(),
                    majority: version.majority.to_string(),
                    reason: allowance.to_owned(),
                },
            ));
        }
    }
    if drifted.is_empty() || !allowance.trim().is_empty() {
        return Ok(drifted.into_iter().map(|(_, _, allowed)| allowed).collect());
    }
    let named: Vec<String> = drifted
        .iter()
        .map(|(example, majority_shards, shard)| {
            format!(
                "{} (version {}: schema {} where {majority_shards} shard(s) of the fleet have {}; see `fleetshift schema diff --shard {} --shard {example}`)",
                shard.shard_id,
                shard.version,
                shard.fingerprint.get(..12).unwrap_or_default(),
                shard.majority.get(..12).unwrap_or_default(),
                shard.shard_id
            )
        })
        .collect();
    Err(RolloutError::BadRequest(format!(
        "{} shard(s) differ from the fleet's schema at their version: {}; repair them, leave them out with --selector, or plan them anyway with --allow-drift-shards \"<reason>\"",
        drifted.len(),
        named.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::ShardFacts;

    use super::*;

    fn hello(shards: &[(&str, &str, char)]) -> Hello {
        Hello {
            shards: shards
                .iter()
                .map(|(id, version, digit)| ShardFacts {
                    shard_id: (*id).to_owned(),
                    current_version: (*version).to_owned(),
                    schema_fingerprint: digit.to_string().repeat(64),
                    ..ShardFacts::default()
                })
                .collect(),
            ..Hello::default()
        }
    }

    fn candidate(id: &str) -> Candidate {
        Candidate {
            shard_id: id.to_owned(),
            agent_id: "a".to_owned(),
            host: "a".to_owned(),
            environment: None,
            tables: Vec::new(),
            observed_at: None,
            windows_label: None,
        }
    }

    #[test]
    fn a_drifted_shard_is_refused_by_name_unless_allowed_with_a_reason() {
        // s3 drifted at version 2; s4 and s5 disagree at version 1 (contested).
        let agents = [
            (
                "a".to_owned(),
                hello(&[("s1", "2", 'a'), ("s2", "2", 'a'), ("s3", "2", 'b')]),
            ),
            ("b".to_owned(), hello(&[("s4", "1", 'c'), ("s5", "1", 'd')])),
        ];
        let all: Vec<Candidate> = ["s1", "s2", "s3", "s4", "s5"].map(candidate).into();
        let refused = allowances(&agents, &all, "").expect_err("refused");
        let message = refused.to_string();
        assert!(
            message.contains("1 shard(s) differ")
                && message.contains("s3 (version 2: schema bbbbbbbbbbbb where 2 shard(s) of the fleet have aaaaaaaaaaaa")
                && message.contains("fleetshift schema diff --shard s3 --shard s1")
                && message.contains("--allow-drift-shards"),
            "{message}"
        );
        let allowed = allowances(&agents, &all, "hotfix 4711 stays").expect("allowed");
        assert_eq!(allowed.len(), 1);
        assert_eq!(
            (allowed[0].shard_id.as_str(), allowed[0].reason.as_str()),
            ("s3", "hotfix 4711 stays")
        );

        // Leaving the drifted shard out needs no reason; the fleet's majority still counts it.
        let others: Vec<Candidate> = ["s1", "s2", "s4", "s5"].map(candidate).into();
        assert_eq!(allowances(&agents, &others, "").expect("no drift"), []);
    }
}
