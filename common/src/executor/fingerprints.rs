//! The schema a run found and the schema it left: a snapshot before the first revision and
//! one after the last, when the run has revisions to take. The fingerprint of the schema left
//! is recorded in the ledger against the version the shard is now at, in a fenced transaction
//! of its own (a stale run cannot record one).

use serde::Serialize;

use super::Executor;
use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::ledger::{VersionFingerprint, Writer};
use crate::schema::{Fingerprint, Snapshot};

/// The shard's schema before and after a run, and how many objects differ between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaFingerprints {
    pub before: Fingerprint,
    pub after: Fingerprint,
    pub objects_changed: usize,
    /// The schema the run left, for whoever compares it with another shard's.
    #[serde(skip)]
    pub left: Snapshot,
}

impl<E: ShardEngine> Executor<'_, E> {
    /// The schema before a run with `steps` revisions to take; none when it has none.
    pub(super) async fn schema_before(&self, steps: usize) -> Result<Option<Snapshot>, ExecError> {
        if steps == 0 {
            return Ok(None);
        }
        self.engine.schema_snapshot().await.map(Some)
    }

    /// Reads the schema the run left and records its fingerprint for `version` (nothing is
    /// recorded when the run left no revision applied).
    pub(super) async fn schema_after(
        &self,
        before: &Snapshot,
        version: Option<&str>,
        writer: &Writer,
    ) -> Result<SchemaFingerprints, ExecError> {
        let after = self.engine.schema_snapshot().await?;
        let change = SchemaFingerprints {
            before: before.fingerprint(),
            after: after.fingerprint(),
            objects_changed: after.diff(before).len(),
            left: after,
        };
        if let Some(version) = version {
            let recorded = VersionFingerprint {
                version: version.to_owned(),
                fingerprint: change.after.clone(),
            };
            let work = FencedTransaction {
                fingerprint: Some(&recorded),
                ..FencedTransaction::fence_only()
            };
            self.engine
                .fenced_transaction(writer, work)
                .await
                .map_err(|error| {
                    self.bookkeeping_error(error, writer, "recording the schema fingerprint")
                })?;
        }
        Ok(change)
    }
}
