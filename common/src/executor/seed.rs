//! Seeding: a new, empty shard initialised from a schema baseline in one fenced transaction
//! (the baseline's schema, a ledger row for every revision of the set up to its version, an
//! audit entry naming it, and its fingerprint), instead of replaying every revision. The
//! revisions after the baseline then run as usual.

use super::{Executor, RunReport};
use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::ledger::{AuditRecord, VersionFingerprint};
use crate::schema_baseline::SchemaBaseline;
use crate::source::MigrationSet;

/// What every new PostgreSQL database has (from `template1`): not a reason to refuse.
const NEW_DATABASE: [&str; 2] = ["schema public", "extension plpgsql"];

impl<E: ShardEngine> Executor<'_, E> {
    /// Initialises the empty shard from `baseline`: refused when its ledger has any revision or
    /// its schema any object (a baseline never lands on a shard with something to lose), or
    /// when the baseline belongs to another set.
    pub async fn seed(
        &self,
        set: &MigrationSet,
        baseline: &SchemaBaseline,
        reason: &str,
    ) -> Result<RunReport, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.with_migrator_lock(|writer| async move {
            let needs_operator = |reason: String| ExecError::NeedsOperator {
                shard: self.shard(),
                reason,
            };
            if baseline.set_digest != set.digest {
                return Err(needs_operator(format!(
                    "the baseline belongs to set {}, not to the one being applied ({})",
                    baseline.set_digest, set.digest
                )));
            }
            let ledger = self.engine.read_ledger().await?;
            if !ledger.is_empty() {
                return Err(needs_operator(format!(
                    "the ledger has {} revision(s); a baseline initialises only an empty shard",
                    ledger.len()
                )));
            }
            let snapshot = self.engine.schema_snapshot().await?;
            let objects = snapshot
                .objects()
                .filter(|(id, _)| !NEW_DATABASE.contains(&id.to_string().as_str()))
                .count();
            if objects > 0 {
                return Err(needs_operator(format!(
                    "the database has {objects} schema object(s) but no ledger; a baseline initialises only an empty database (adopt its history, or empty it)"
                )));
            }
            let upto = set.position(&baseline.version).ok_or_else(|| {
                needs_operator(format!(
                    "the baseline's version {} is not in the set",
                    baseline.version
                ))
            })?;
            let seeded = &set.revisions[..=upto];
            let (records, guard) = super::adopt::recorded_as_applied(seeded.iter());
            let audit = AuditRecord {
                action: "baseline".to_owned(),
                version: Some(baseline.version.clone()),
                reason: format!(
                    "seeded {} revision(s) from the schema baseline at {} (fingerprint {}): {reason}",
                    records.len(),
                    baseline.version,
                    baseline.fingerprint
                ),
            };
            let fingerprint = VersionFingerprint {
                version: baseline.version.clone(),
                fingerprint: baseline.fingerprint.clone(),
            };
            let body = baseline.statements();
            let work = FencedTransaction {
                body: &body,
                records: &records,
                audit: Some(&audit),
                fingerprint: Some(&fingerprint),
                batched: true,
                ..FencedTransaction::guarded(&guard)
            };
            self.engine
                .fenced_transaction(&writer, work)
                .await
                .map_err(|error| self.bookkeeping_error(error, &writer, "seeding from the baseline"))?;
            tracing::info!(shard = %self.engine.shard(), version = %baseline.version, revisions = records.len(), "seeded from a schema baseline");
            self.finish(set, Vec::new(), &writer, None).await
        })
        .await
    }
}
