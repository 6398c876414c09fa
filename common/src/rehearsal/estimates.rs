//! From the sample to the shard: a statement that rewrites, scans or indexes a table does work
//! in proportion to the table's rows, so its time on the sample is scaled by the table's
//! sampling factor (rows in the shard per row kept in the sample); a statement that only
//! changes the catalog takes as long on the shard as on the sample. Linear scaling is a floor
//! for an index build (n log n) and a fair guide for scans and rewrites.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::effects::Effects;
use super::findings::RevisionTrace;
use super::scratch::SampleReport;

/// Each sampled table's factor.
#[derive(Debug, Clone, Default)]
pub struct Scale {
    factors: BTreeMap<String, f64>,
}

impl Scale {
    pub fn from_sample(sample: &SampleReport) -> Self {
        Self {
            factors: sample
                .tables
                .iter()
                .map(|table| (table.table.clone(), table.factor()))
                .collect(),
        }
    }

    /// The table whose size the statement's time grows with (the largest factor among those
    /// it rewrote, scanned or indexed), and that factor; 1 when it only changed the catalog.
    pub fn of(&self, effects: &Effects) -> (Option<&str>, f64) {
        effects
            .rewritten
            .iter()
            .chain(&effects.scanned)
            .chain(effects.indexes_built.iter().map(|index| &index.table))
            .filter_map(|table| {
                self.factors
                    .get_key_value(table)
                    .map(|(name, factor)| (name.as_str(), *factor))
            })
            .max_by(|left, right| left.1.total_cmp(&right.1))
            .map_or((None, 1.0), |(table, factor)| (Some(table), factor))
    }
}

/// One statement's time on the sample and as estimated on the shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementEstimate {
    pub revision: String,
    pub place: String,
    /// The table its time grows with.
    pub table: String,
    pub factor: f64,
    pub sample_us: u64,
    pub estimated_us: u64,
    /// The partitions whose indexes the statement built (a partitioned table's index, one per
    /// partition beside the parent's); 0 for any other statement.
    #[serde(default)]
    pub partitions: u32,
}

/// The statements whose time grows with a table, estimated for the shard.
pub fn estimates(revisions: &[RevisionTrace], scale: &Scale) -> Vec<StatementEstimate> {
    let mut estimates = Vec::new();
    for revision in revisions {
        for statement in revision.runs.iter().flat_map(|run| &run.statements) {
            let (Some(table), factor) = scale.of(&statement.effects) else {
                continue;
            };
            estimates.push(StatementEstimate {
                revision: revision.version.clone(),
                place: statement.place.clone(),
                table: table.to_owned(),
                factor,
                sample_us: statement.elapsed_us,
                estimated_us: scaled(statement.elapsed_us, factor),
                partitions: u32::try_from(statement.effects.indexes_built.len().saturating_sub(1))
                    .unwrap_or(u32::MAX),
            });
        }
    }
    estimates
}

/// `micros` × `factor`, rounded, saturating.
pub fn scaled(micros: u64, factor: f64) -> u64 {
    let product = (micros as f64 * factor).round();
    if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}
