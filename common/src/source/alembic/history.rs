//! The revision graph of a rendered Alembic set: which revisions an `alembic_version` row
//! stands for, and which rows stand for a set of applied revisions.

use std::collections::{BTreeMap, BTreeSet};

use super::Manifest;

/// The graph and the version table of a rendered Alembic set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlembicHistory {
    pub version_table: String,
    pub keep_version_table: bool,
    /// Each revision's parents, by id.
    parents: BTreeMap<String, Vec<String>>,
}

impl AlembicHistory {
    /// Refuses parents the set does not hold: the graph would be cut.
    pub(super) fn new(manifest: &Manifest) -> Result<Self, Vec<String>> {
        let parents: BTreeMap<String, Vec<String>> = manifest
            .revisions
            .iter()
            .map(|revision| (revision.id.clone(), revision.parents.clone()))
            .collect();
        let cut: Vec<String> = parents
            .iter()
            .flat_map(|(id, its_parents)| {
                its_parents
                    .iter()
                    .filter(|parent| !parents.contains_key(*parent))
                    .map(move |missing| {
                        format!("revision {id} follows {missing}, which the set does not hold; render the Alembic project again")
                    })
            })
            .collect();
        if !cut.is_empty() {
            return Err(cut);
        }
        Ok(Self {
            version_table: manifest.version_table.clone(),
            keep_version_table: manifest.keep_version_table,
            parents,
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.parents.contains_key(id)
    }

    /// The revisions a database whose version table holds `heads` has applied: every head
    /// and all its ancestors.
    pub fn applied_below(&self, heads: &[String]) -> BTreeSet<String> {
        let mut applied = BTreeSet::new();
        let mut pending: Vec<&str> = heads.iter().map(String::as_str).collect();
        while let Some(id) = pending.pop() {
            if !applied.insert(id.to_owned()) {
                continue;
            }
            if let Some(parents) = self.parents.get(id) {
                pending.extend(parents.iter().map(String::as_str));
            }
        }
        applied
    }

    /// The rows Alembic keeps for `applied`: the applied revisions no applied revision
    /// follows, in id order.
    pub fn heads_of<'a>(&self, applied: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let applied: BTreeSet<&str> = applied.into_iter().collect();
        let followed: BTreeSet<&str> = applied
            .iter()
            .filter_map(|id| self.parents.get(*id))
            .flatten()
            .map(String::as_str)
            .collect();
        applied
            .difference(&followed)
            .map(|id| (*id).to_owned())
            .collect()
    }

    /// A fingerprint of the graph and the version-table settings, for the set's digest.
    pub fn fingerprint(&self) -> String {
        let mut text = format!(
            "alembic\0{}\0{}\n",
            self.version_table, self.keep_version_table
        );
        for (id, parents) in &self.parents {
            text.push_str(&format!("{id}\0{}\n", parents.join(",")));
        }
        text
    }
}
