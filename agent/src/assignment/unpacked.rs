//! Migration sets this agent has unpacked and verified, kept by what names them (digest,
//! layout and origin): every shard of a plan runs the same set, and unpacking one writes every
//! file to a fresh directory and reads it back, so it is done once per set, not once per run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use fleetshift_common::proto::v1;
use fleetshift_common::shipped::{self, ShippedError};
use fleetshift_common::source::MigrationSet;

/// How many sets are kept: the plans running at once, and a rollback's after them.
const KEPT: usize = 4;

/// What makes two shipped sets load the same: the digest covers every revision; the layout
/// and the origin change how they are read and named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    digest: String,
    format: String,
    origin: String,
}

impl Key {
    fn of(shipped: &v1::MigrationSet) -> Self {
        Self {
            digest: shipped.digest.clone(),
            format: shipped.format.clone(),
            origin: shipped.origin.clone(),
        }
    }
}

/// The sets unpacked lately, newest last.
#[derive(Debug, Default)]
pub struct UnpackedSets {
    recent: Mutex<VecDeque<(Key, Arc<MigrationSet>)>>,
}

/// Why a shipped set could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot create a working directory: {0}")]
    Directory(std::io::Error),
    #[error(transparent)]
    Shipped(#[from] ShippedError),
}

impl UnpackError {
    /// Whether the set itself is at fault (as opposed to the local disk).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Directory(_) => false,
            Self::Shipped(error) => error.is_bad_input(),
        }
    }
}

impl UnpackedSets {
    /// `shipped`, loaded and checked against its digest: from the sets kept when one with the
    /// same key was verified before, else unpacked into a directory removed once it is loaded.
    pub fn get(&self, shipped: &v1::MigrationSet) -> Result<Arc<MigrationSet>, UnpackError> {
        let key = Key::of(shipped);
        if let Some(set) = self.kept(&key) {
            return Ok(set);
        }
        let directory = tempfile::Builder::new()
            .prefix("fleetshift-set-")
            .tempdir()
            .map_err(UnpackError::Directory)?;
        let set = Arc::new(shipped::unpack(shipped, directory.path())?);
        let mut recent = self.recent();
        if !recent.iter().any(|(kept, _)| *kept == key) {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back((key, Arc::clone(&set)));
        }
        Ok(set)
    }

    fn kept(&self, key: &Key) -> Option<Arc<MigrationSet>> {
        let mut recent = self.recent();
        let position = recent.iter().position(|(kept, _)| kept == key)?;
        let entry = recent.remove(position)?;
        let set = Arc::clone(&entry.1);
        recent.push_back(entry);
        Some(set)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, Arc<MigrationSet>)>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(script: &str) -> v1::MigrationSet {
        let source = tempfile::tempdir().expect("dir");
        std::fs::write(source.path().join("1_users.up.sql"), script).expect("write");
        let set = MigrationSet::load(source.path(), None).expect("load");
        shipped::pack(&set).expect("pack")
    }

    #[test]
    fn a_set_is_unpacked_once_and_a_wrong_digest_is_still_refused() {
        let sets = UnpackedSets::default();
        let packed = shipped("CREATE TABLE users (id int);");
        let first = sets.get(&packed).expect("unpacked");
        let again = sets.get(&packed).expect("kept");
        assert!(Arc::ptr_eq(&first, &again), "the second run reuses the set");
        let mut tampered = shipped("CREATE TABLE users (id bigint);");
        tampered.digest = "0".repeat(64);
        let refused = sets.get(&tampered).expect_err("digest mismatch");
        assert!(refused.is_bad_input(), "{refused}");
    }

    #[test]
    fn the_oldest_set_makes_room_for_a_new_one() {
        let sets = UnpackedSets::default();
        let packed: Vec<_> = (0..=KEPT)
            .map(|table| shipped(&format!("CREATE TABLE t{table} (id int);")))
            .collect();
        let first = sets.get(&packed[0]).expect("unpacked");
        for set in &packed[1..] {
            sets.get(set).expect("unpacked");
        }
        assert_eq!(sets.recent().len(), KEPT);
        let reloaded = sets.get(&packed[0]).expect("unpacked again");
        assert!(!Arc::ptr_eq(&first, &reloaded), "the oldest was let go");
    }
}
