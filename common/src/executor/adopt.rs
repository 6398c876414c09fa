//! Adoption: importing the history another tool kept, so a team switching to fleetshift
//! re-runs nothing. The foreign table is left untouched.

use sha2::{Digest, Sha384};

mod liquibase;

use super::{Executor, RunReport};
use crate::engine::foreign::ForeignApplied;
use crate::engine::{FencedTransaction, ForeignHistory, ShardEngine};
use crate::error::{DriftedRevision, ExecError};
use crate::ledger::{AuditRecord, Expect, Guard, LedgerRecord, RevisionStatus, Writer};
use crate::source::{MigrationSet, Revision};

/// Ledger rows recording `revisions` as applied (run by someone else, or built another way),
/// and the guard that none of them is recorded yet: what adoption and seeding write.
pub(super) fn recorded_as_applied<'r>(
    revisions: impl Iterator<Item = &'r Revision>,
) -> (Vec<LedgerRecord>, Guard) {
    let records: Vec<LedgerRecord> = revisions
        .map(|revision| LedgerRecord {
            version: revision.version.to_string(),
            name: revision.name.clone(),
            checksum: revision.checksum.clone(),
            status: RevisionStatus::Applied,
            transactional: revision.transactional,
            keep_started_at: false,
            duration_ms: None,
            statements_run: 0,
            error: None,
        })
        .collect();
    let guard = records.iter().fold(Guard::default(), |guard, record| {
        guard.require(&record.version, Expect::NotApplied)
    });
    (records, guard)
}

impl<E: ShardEngine> Executor<'_, E> {
    /// Imports the one foreign history in the database into an empty fleetshift ledger.
    pub async fn adopt(&self, set: &MigrationSet, reason: &str) -> Result<RunReport, ExecError> {
        let set = set.for_engine(E::ENGINE);
        self.with_migrator_lock(|writer| self.adopt_locked(set, reason, writer))
            .await
    }

    async fn adopt_locked(
        &self,
        set: &MigrationSet,
        reason: &str,
        writer: Writer,
    ) -> Result<RunReport, ExecError> {
        let needs_operator = |reason: String| ExecError::NeedsOperator {
            shard: self.shard(),
            reason,
        };
        let ledger = self.engine.read_ledger().await?;
        if !ledger.is_empty() {
            return Err(needs_operator(format!(
                "the fleetshift ledger already has {} revision(s); adoption only fills an empty ledger",
                ledger.len()
            )));
        }
        let mut histories = self.engine.foreign_histories().await?;
        histories.extend(self.alembic_history(set).await?);
        let history = match histories.len() {
            0 => return Err(needs_operator("no history of another migration tool was found (looked for _sqlx_migrations, flyway_schema_history, schema_migrations, __diesel_schema_migrations, schema_migration, databasechangelog, and alembic_version for an Alembic set)".to_owned())),
            1 => histories.remove(0),
            _ => {
                let tables: Vec<&str> = histories.iter().map(|history| history.tool.table()).collect();
                return Err(needs_operator(format!(
                    "several migration histories were found ({}); remove the stale ones before adopting",
                    tables.join(", ")
                )));
            }
        };
        let adopted = with_skipped_no_ops(set, self.match_revisions(set, &history)?);
        let (records, guard) = recorded_as_applied(adopted.iter().copied());
        let audit = AuditRecord {
            action: "adopt".to_owned(),
            version: adopted.last().map(|revision| revision.version.to_string()),
            reason: format!(
                "imported {} revision(s) from {}: {reason}",
                records.len(),
                history.tool.table()
            ),
        };
        let work = FencedTransaction {
            records: &records,
            audit: Some(&audit),
            ..FencedTransaction::guarded(&guard)
        };
        self.engine
            .fenced_transaction(&writer, work)
            .await
            .map_err(|error| self.bookkeeping_error(error, &writer, "importing the history"))?;
        tracing::info!(shard = %self.engine.shard(), table = history.tool.table(), revisions = records.len(), "history adopted");
        self.finish(set, Vec::new(), &writer, None).await
    }

    /// `up` on an empty ledger: refused while another tool's history is in the database.
    pub(super) async fn refuse_unadopted_history(
        &self,
        set: &MigrationSet,
    ) -> Result<(), ExecError> {
        let mut foreign = self.engine.foreign_histories().await?;
        foreign.extend(self.alembic_history(set).await?);
        if foreign.is_empty() {
            return Ok(());
        }
        let tables: Vec<&str> = foreign.iter().map(|history| history.tool.table()).collect();
        Err(ExecError::NeedsOperator {
            shard: self.shard(),
            reason: format!(
                "this database was migrated by another tool ({}) and fleetshift has no history for it yet; applying now could re-run revisions\nnext: run `fleetshift migrate adopt` to import that history",
                tables.join(", ")
            ),
        })
    }

    /// The set's revisions the foreign history records as applied; refuses versions the set
    /// lacks and (for sqlx, which keeps checksums) scripts that changed since.
    fn match_revisions<'s>(
        &self,
        set: &'s MigrationSet,
        history: &ForeignHistory,
    ) -> Result<Vec<&'s Revision>, ExecError> {
        let shard = self.shard();
        match &history.applied {
            ForeignApplied::UpTo {
                version,
                dirty: true,
            } => Err(ExecError::NeedsOperator {
                shard,
                reason: format!(
                    "golang-migrate left version {version} dirty (half applied); repair it and clear the dirty flag before adopting"
                ),
            }),
            ForeignApplied::UpTo {
                version,
                dirty: false,
            } => {
                let last = set.format.parse_version(&version.to_string());
                Ok(set
                    .revisions
                    .iter()
                    .filter(|revision| last.as_ref().is_some_and(|last| revision.version <= *last))
                    .collect())
            }
            ForeignApplied::Heads(heads) => alembic_heads(set, heads)
                .map_err(|reason| ExecError::NeedsOperator { shard, reason }),
            ForeignApplied::Changesets(changesets) => {
                let (adopted, unknown) = liquibase::matched(set, changesets);
                if unknown.is_empty() {
                    Ok(adopted)
                } else {
                    Err(ExecError::NeedsOperator {
                        shard,
                        reason: format!(
                            "databasechangelog records changesets the migration set does not contain: {}\nnext: point --dir at the changelog this database was migrated with",
                            unknown.join(", ")
                        ),
                    })
                }
            }
            ForeignApplied::Versions(foreign) => {
                let mut adopted = Vec::new();
                let mut unknown = Vec::new();
                let mut drifted = Vec::new();
                for entry in foreign {
                    let parsed = set.format.parse_version(&entry.version);
                    let Some(revision) = set
                        .revisions
                        .iter()
                        .find(|revision| parsed.as_ref() == Some(&revision.version))
                    else {
                        unknown.push(entry.version.clone());
                        continue;
                    };
                    if let Some(expected) = &entry.sha384 {
                        let actual = Sha384::digest(revision.up.sql.as_bytes());
                        if actual[..] != expected[..] {
                            drifted.push(DriftedRevision {
                                version: revision.version.to_string(),
                                name: revision.name.clone(),
                                applied_checksum: hex::encode(expected),
                                source_checksum: hex::encode(actual),
                            });
                        }
                    }
                    adopted.push(revision);
                }
                if !unknown.is_empty() {
                    return Err(ExecError::NeedsOperator {
                        shard,
                        reason: format!(
                            "{} records versions the migration set does not contain: {}\nnext: point --dir at the set this database was migrated with",
                            history.tool.table(),
                            unknown.join(", ")
                        ),
                    });
                }
                if !drifted.is_empty() {
                    return Err(ExecError::Drift { shard, drifted });
                }
                Ok(adopted)
            }
        }
    }
}

/// The revisions an Alembic version table holding `heads` stands for: the heads and all their
/// ancestors.
fn alembic_heads<'s>(set: &'s MigrationSet, heads: &[String]) -> Result<Vec<&'s Revision>, String> {
    let Some(history) = &set.alembic else {
        return Err("alembic_version was found but the migration set is not an Alembic project\nnext: point --dir at the Alembic project this database was migrated with".to_owned());
    };
    let unknown: Vec<&str> = heads
        .iter()
        .filter(|head| !history.contains(head))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{} records revisions the migration set does not contain: {}\nnext: point --dir at the Alembic project this database was migrated with",
            history.version_table,
            unknown.join(", ")
        ));
    }
    let applied = history.applied_below(heads);
    Ok(set
        .revisions
        .iter()
        .filter(|revision| applied.contains(revision.version.as_str()))
        .collect())
}

/// `adopted`, with every no-op revision below the last of them: a revision that does nothing
/// on this engine (a pop version for other dialects, a Liquibase changeset for another
/// `dbms`) was never run here by the other tool, yet must not stay pending behind applied ones.
fn with_skipped_no_ops<'s>(set: &'s MigrationSet, adopted: Vec<&'s Revision>) -> Vec<&'s Revision> {
    let Some(last) = adopted.iter().map(|revision| &revision.version).max() else {
        return adopted;
    };
    set.revisions
        .iter()
        .filter(|revision| {
            adopted
                .iter()
                .any(|chosen| chosen.version == revision.version)
                || (revision.is_no_op() && revision.version < *last)
        })
        .collect()
}
