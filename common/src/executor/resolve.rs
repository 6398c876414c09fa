//! Recording an operator's decision about an interrupted revision.

use super::{Executor, Resolution, RunReport};
use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::ledger::{AuditRecord, Expect, Guard, RevisionStatus, Writer};
use crate::source::MigrationSet;

impl<E: ShardEngine> Executor<'_, E> {
    pub(super) async fn resolve_locked(
        &self,
        set: &MigrationSet,
        version: &str,
        resolution: Resolution,
        reason: &str,
        writer: Writer,
    ) -> Result<RunReport, ExecError> {
        let revision = set
            .revision(version)
            .ok_or_else(|| ExecError::NeedsOperator {
                shard: self.shard(),
                reason: format!("version {version} is not in the migration set"),
            })?;
        let status = match resolution {
            Resolution::Applied => RevisionStatus::Applied,
            Resolution::Failed => RevisionStatus::Failed,
        };
        let record = self.record(
            revision,
            status,
            true,
            None,
            0,
            Some(format!("resolved by operator: {reason}")),
        );
        let audit = AuditRecord {
            action: format!("resolve-{status}"),
            version: Some(version.to_owned()),
            reason: reason.to_owned(),
        };
        let guard = Guard::default().require(version, Expect::Started);
        let work = FencedTransaction {
            records: std::slice::from_ref(&record),
            audit: Some(&audit),
            ..FencedTransaction::guarded(&guard)
        };
        self.engine
            .fenced_transaction(&writer, work)
            .await
            .map_err(|error| self.bookkeeping_error(error, &writer, "resolving the revision"))?;
        self.finish(set, Vec::new(), &writer, None).await
    }
}
