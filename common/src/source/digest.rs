//! A migration set's digest: what a plan pins, so agents run exactly what was planned.

use sha2::{Digest, Sha256};

use super::{AlembicHistory, Engine, Revision, Script};

/// The digest of a set whose engines run different files: each engine's revisions with the
/// files they run, so the digest a plan pins names what every engine will execute.
pub(super) fn engines_digest<'r>(
    engines: impl Iterator<Item = (Engine, &'r Vec<Revision>)>,
) -> String {
    let mut hasher = Sha256::new();
    for (engine, revisions) in engines {
        hasher.update(format!("engine {engine}\n").as_bytes());
        for revision in revisions {
            let file = |script: &Script| {
                script
                    .path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let down = revision.down.as_ref().map_or_else(|| "-".to_owned(), file);
            hasher.update(format!("{}\0{}\n", file(&revision.up), down).as_bytes());
        }
        hasher.update(digest(revisions).as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// An Alembic set's digest: its revisions and the graph and version-table settings the
/// agents act on.
pub(super) fn alembic_digest(revisions: &[Revision], history: &AlembicHistory) -> String {
    let mut hasher = Sha256::new();
    hasher.update(history.fingerprint().as_bytes());
    hasher.update(digest(revisions).as_bytes());
    hex::encode(hasher.finalize())
}

pub(super) fn digest(revisions: &[Revision]) -> String {
    let mut hasher = Sha256::new();
    for revision in revisions {
        let down = revision
            .down
            .as_ref()
            .map_or_else(|| "-".to_owned(), Script::checksum);
        // Marked only where set, so the digests of every other set stay as they were.
        let tolerated = if revision.failure_tolerated {
            "\0failure-tolerated"
        } else {
            ""
        };
        hasher.update(
            format!(
                "{}\0{}\0{}\0{}\0{}{tolerated}\n",
                revision.version, revision.name, revision.transactional, revision.checksum, down
            )
            .as_bytes(),
        );
    }
    hex::encode(hasher.finalize())
}
