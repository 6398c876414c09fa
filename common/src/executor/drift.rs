//! An operator's decision to proceed past drift (an applied revision whose file changed),
//! recorded in the shard's audit table under the run's fence, one entry per drifted revision.

use super::{Executor, ShardStatus};
use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::ledger::{AuditRecord, Writer};

impl<E: ShardEngine> Executor<'_, E> {
    pub(super) async fn record_drift_overrides(
        &self,
        status: &ShardStatus,
        reason: &str,
        writer: &Writer,
    ) -> Result<(), ExecError> {
        for drifted in &status.drifted {
            let audit = AuditRecord {
                action: "allow-drift".to_owned(),
                version: Some(drifted.version.clone()),
                reason: format!(
                    "{reason} (applied checksum {}, file checksum {})",
                    drifted.applied_checksum, drifted.source_checksum
                ),
            };
            let work = FencedTransaction {
                audit: Some(&audit),
                ..FencedTransaction::fence_only()
            };
            self.engine
                .fenced_transaction(writer, work)
                .await
                .map_err(|error| {
                    self.bookkeeping_error(error, writer, "recording the drift override")
                })?;
            tracing::warn!(shard = %self.engine.shard(), revision = %drifted.version, reason, "proceeding despite drift");
        }
        Ok(())
    }
}
