//! Drift across a fleet: shards at the same version grouped by fingerprint; the fingerprint
//! most of them have is the version's majority, and every other shard is an outlier.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Fingerprint;

/// One shard's version and schema, as its agent last reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSchema {
    pub shard_id: String,
    /// `base` when no revision is applied.
    pub version: String,
    pub fingerprint: Fingerprint,
}

impl ShardSchema {
    /// A shard as its agent reports it: `version` empty means none applied (`base`);
    /// `None` when the fingerprint is not a read one (empty: never read).
    pub fn reported(shard_id: &str, version: &str, fingerprint: &str) -> Option<Self> {
        Some(Self {
            shard_id: shard_id.to_owned(),
            version: if version.is_empty() { "base" } else { version }.to_owned(),
            fingerprint: Fingerprint::from_hex(fingerprint)?,
        })
    }
}

/// The shards at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSchemas {
    pub version: String,
    /// The fingerprint most shards at this version have.
    pub majority: Fingerprint,
    /// How many have it.
    pub majority_shards: usize,
    /// Another fingerprint has as many shards: which one is right is not clear.
    pub contested: bool,
    /// The shards with another fingerprint, by shard id.
    pub outliers: Vec<Outlier>,
}

/// A shard whose schema differs from its version's majority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlier {
    pub shard_id: String,
    pub fingerprint: Fingerprint,
}

/// Each version's majority and outliers, in version order.
pub fn by_version(shards: &[ShardSchema]) -> Vec<VersionSchemas> {
    let mut versions: BTreeMap<&str, BTreeMap<&Fingerprint, Vec<&str>>> = BTreeMap::new();
    for shard in shards {
        versions
            .entry(&shard.version)
            .or_default()
            .entry(&shard.fingerprint)
            .or_default()
            .push(&shard.shard_id);
    }
    versions
        .into_iter()
        .filter_map(|(version, groups)| {
            let mut ranked: Vec<(&Fingerprint, Vec<&str>)> = groups.into_iter().collect();
            // Most shards first; among equals, the smaller fingerprint, so the answer is stable.
            ranked
                .sort_by(|left, right| right.1.len().cmp(&left.1.len()).then(left.0.cmp(right.0)));
            let mut ranked = ranked.into_iter();
            let (majority, holders) = ranked.next()?;
            let rest: Vec<(&Fingerprint, Vec<&str>)> = ranked.collect();
            let contested = rest
                .first()
                .is_some_and(|(_, other)| other.len() == holders.len());
            let mut outliers: Vec<Outlier> = rest
                .iter()
                .flat_map(|(fingerprint, shards)| {
                    shards.iter().map(|shard| Outlier {
                        shard_id: (*shard).to_owned(),
                        fingerprint: (*fingerprint).clone(),
                    })
                })
                .collect();
            outliers.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
            Some(VersionSchemas {
                version: version.to_owned(),
                majority: majority.clone(),
                majority_shards: holders.len(),
                contested,
                outliers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(digit: char) -> Fingerprint {
        Fingerprint::from_hex(&digit.to_string().repeat(64)).expect("hex")
    }

    fn shard(id: &str, version: &str, digit: char) -> ShardSchema {
        ShardSchema {
            shard_id: id.to_owned(),
            version: version.to_owned(),
            fingerprint: fingerprint(digit),
        }
    }

    #[test]
    fn each_version_has_its_majority_and_its_outliers() {
        let shards = [
            shard("s1", "2", 'a'),
            shard("s2", "2", 'b'),
            shard("s3", "2", 'a'),
            shard("s4", "1", 'c'),
            shard("s5", "1", 'd'),
        ];
        let versions = by_version(&shards);
        assert_eq!(versions.len(), 2);
        let (one, two) = (&versions[0], &versions[1]);
        assert_eq!(
            (two.version.as_str(), &two.majority, two.majority_shards),
            ("2", &fingerprint('a'), 2)
        );
        assert!(!two.contested);
        assert_eq!(
            two.outliers,
            [Outlier {
                shard_id: "s2".to_owned(),
                fingerprint: fingerprint('b')
            }]
        );
        assert!(one.contested, "one shard each: no majority to trust");
        assert_eq!(one.majority, fingerprint('c'));
        assert_eq!(one.outliers.len(), 1);
    }
}
