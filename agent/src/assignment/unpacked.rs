//! Migration sets this agent has unpacked and verified, kept by exactly what was shipped (the
//! files' bytes, the digest, layout and origin): every shard of a plan runs the same set, and
//! unpacking one writes every file to a fresh directory and reads it back, so it is done once
//! per set, not once per run. Hashing the shipped bytes is cheap next to that, and it keeps
//! the check honest: files that differ from the verified ones (damaged or tampered with on the
//! way) are unpacked and refused for their digest, never swapped for the kept set.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use fleetshift_common::proto::v1::{self, ErrorKind};
use fleetshift_common::shipped::{self, ShippedError};
use fleetshift_common::source::MigrationSet;
use sha2::{Digest, Sha256};

/// How many sets are kept: the plans running at once, and a rollback's after them.
const KEPT: usize = 4;

/// What makes two shipped sets load the same: the same files, pinned to the same digest, read
/// in the same layout and named under the same origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    files: [u8; 32],
    digest: String,
    format: String,
    origin: String,
}

impl Key {
    fn of(shipped: &v1::MigrationSet) -> Self {
        let mut files = Sha256::new();
        for file in &shipped.files {
            for part in [file.path.as_bytes(), &file.content] {
                files.update((part.len() as u64).to_le_bytes());
                files.update(part);
            }
        }
        Self {
            files: files.finalize().into(),
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

    /// The error kind a run that cannot start for it reports.
    pub fn kind(&self) -> ErrorKind {
        if self.is_bad_input() {
            ErrorKind::BadInput
        } else {
            ErrorKind::Failed
        }
    }
}

/// `shipped`, written to a fresh directory (removed once it is loaded), loaded and checked
/// against its digest.
pub(crate) fn unpack(shipped: &v1::MigrationSet) -> Result<MigrationSet, UnpackError> {
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-set-")
        .tempdir()
        .map_err(UnpackError::Directory)?;
    Ok(shipped::unpack(shipped, directory.path())?)
}

impl UnpackedSets {
    /// `shipped`, loaded and checked against its digest: from the sets kept when one with the
    /// same key was verified before, else unpacked into a directory removed once it is loaded.
    pub fn get(&self, shipped: &v1::MigrationSet) -> Result<Arc<MigrationSet>, UnpackError> {
        let key = Key::of(shipped);
        if let Some(set) = self.kept(&key) {
            return Ok(set);
        }
        let set = Arc::new(unpack(shipped)?);
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
    fn a_set_is_unpacked_once_and_its_tampered_copy_is_refused() {
        let sets = UnpackedSets::default();
        let packed = shipped("CREATE TABLE users (id int);");
        let first = sets.get(&packed).expect("unpacked");
        let again = sets.get(&packed).expect("kept");
        assert!(Arc::ptr_eq(&first, &again), "the second run reuses the set");
        // Same digest pinned, other bytes: checked afresh, not served from the kept set.
        let mut tampered = packed.clone();
        tampered.files[0].content = b"DROP TABLE users;".to_vec();
        let refused = sets.get(&tampered).expect_err("digest mismatch");
        assert!(refused.is_bad_input(), "{refused}");
        assert!(refused.to_string().contains("hashes to"), "{refused}");
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
