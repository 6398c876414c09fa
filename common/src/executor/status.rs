//! Comparing a migration set with a shard's ledger, and planning what `up` and `down` do.
//! Pure functions: every refusal here happens before anything touches the shard.

use serde::Serialize;

use super::{Direction, Request};
use crate::error::{DriftedRevision, ExecError};
use crate::fence::FenceToken;
use crate::ledger::{LedgerEntry, RevisionStatus};
use crate::source::{MigrationSet, Revision, Version};

/// One revision of the set, as the shard sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionState {
    pub version: String,
    pub name: String,
    pub transactional: bool,
    pub reversible: bool,
    /// A Flyway repeatable script: out of the versioned order, never reverted.
    pub repeatable: bool,
    /// `None`: never attempted on this shard (pending).
    pub status: Option<RevisionStatus>,
    pub drifted: bool,
    pub finished_at: Option<String>,
    pub fence_token: Option<FenceToken>,
    pub error: Option<String>,
}

/// A shard's ledger compared with a migration set.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub shard: String,
    pub set_digest: String,
    /// The last revision (in set order) that is applied.
    pub current_version: Option<String>,
    pub revisions: Vec<RevisionState>,
    pub drifted: Vec<DriftedRevision>,
    /// Applied or started on the shard but absent from the set.
    pub unknown: Vec<LedgerEntry>,
}

/// A ledger entry for an earlier content of a repeatable script the set still has: its
/// current content is the set's revision, pending or applied.
fn superseded(set: &MigrationSet, entry: &LedgerEntry) -> bool {
    Version::repeatable_description(&entry.version).is_some_and(|description| {
        set.revisions
            .iter()
            .any(|revision| revision.is_repeatable() && revision.name == description)
    })
}

impl ShardStatus {
    /// The revisions of `set` (this engine's files) a run in `direction` would apply, in
    /// order, or revert, newest first.
    pub fn revisions_to_run<'s>(
        &self,
        set: &'s MigrationSet,
        direction: Direction,
        request: &Request,
    ) -> Result<Vec<&'s Revision>, ExecError> {
        let target = request.target.as_deref();
        let allow_drift = request.allow_drift.is_some();
        let steps = match direction {
            Direction::Up => self.plan_up(set, target, allow_drift)?,
            Direction::Down => self.plan_down(set, target, allow_drift)?,
        };
        Ok(steps
            .into_iter()
            .map(|index| &set.revisions[index])
            .collect())
    }

    pub fn compare(shard: &str, set: &MigrationSet, ledger: &[LedgerEntry]) -> Self {
        let entries: Vec<(&LedgerEntry, _)> = ledger
            .iter()
            .map(|entry| (entry, set.names(&entry.version)))
            .collect();
        let find = |revision: &Revision| {
            entries
                .iter()
                .find(|(_, names)| names(&revision.version))
                .map(|(entry, _)| *entry)
        };
        let mut drifted = Vec::new();
        let revisions: Vec<RevisionState> = set
            .revisions
            .iter()
            .map(|revision| {
                let entry = find(revision);
                let drift = entry.is_some_and(|entry| {
                    entry.status == RevisionStatus::Applied && entry.checksum != revision.checksum
                });
                if let (true, Some(entry)) = (drift, entry) {
                    drifted.push(DriftedRevision {
                        version: revision.version.to_string(),
                        name: revision.name.clone(),
                        applied_checksum: entry.checksum.clone(),
                        source_checksum: revision.checksum.clone(),
                    });
                }
                RevisionState {
                    version: revision.version.to_string(),
                    name: revision.name.clone(),
                    transactional: revision.transactional,
                    reversible: revision.down.is_some(),
                    repeatable: revision.is_repeatable(),
                    status: entry.map(|entry| entry.status),
                    drifted: drift,
                    finished_at: entry.and_then(|entry| entry.finished_at.clone()),
                    fence_token: entry.map(|entry| entry.fence_token),
                    error: entry.and_then(|entry| entry.error.clone()),
                }
            })
            .collect();
        let unknown = ledger
            .iter()
            .filter(|entry| {
                matches!(
                    entry.status,
                    RevisionStatus::Applied | RevisionStatus::Started
                )
            })
            .filter(|entry| set.revision(&entry.version).is_none() && !superseded(set, entry))
            .cloned()
            .collect();
        let current_version = revisions
            .iter()
            .rev()
            .find(|state| state.status == Some(RevisionStatus::Applied) && !state.repeatable)
            .map(|state| state.version.clone());
        Self {
            shard: shard.to_owned(),
            set_digest: set.digest.clone(),
            current_version,
            revisions,
            drifted,
            unknown,
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = &RevisionState> {
        self.revisions
            .iter()
            .filter(|state| state.status != Some(RevisionStatus::Applied))
    }

    fn needs_operator(&self, reason: String) -> ExecError {
        ExecError::NeedsOperator {
            shard: self.shard.clone(),
            reason,
        }
    }

    /// Refusals shared by `up` and `down`: unknown history, and drift unless overridden.
    fn check_consistent(&self, allow_drift: bool) -> Result<(), ExecError> {
        if !self.unknown.is_empty() {
            let versions: Vec<&str> = self
                .unknown
                .iter()
                .map(|entry| entry.version.as_str())
                .collect();
            return Err(self.needs_operator(format!(
                "the shard has applied revisions that the migration set does not contain: {}\nnext: point --dir at the set this shard was migrated with",
                versions.join(", ")
            )));
        }
        if !self.drifted.is_empty() && !allow_drift {
            return Err(ExecError::Drift {
                shard: self.shard.clone(),
                drifted: self.drifted.clone(),
            });
        }
        Ok(())
    }

    /// Index (exclusive) up to which `target` reaches in `set`; all revisions when `None`.
    fn target_end(&self, set: &MigrationSet, target: Option<&str>) -> Result<usize, ExecError> {
        match target {
            None => Ok(self.revisions.len()),
            Some(version) => set.position(version).map(|index| index + 1).ok_or_else(|| {
                self.needs_operator(format!(
                    "target version {version} is not in the migration set"
                ))
            }),
        }
    }

    /// Indexes of the revisions `up` applies, in order.
    pub fn plan_up(
        &self,
        set: &MigrationSet,
        target: Option<&str>,
        allow_drift: bool,
    ) -> Result<Vec<usize>, ExecError> {
        self.check_consistent(allow_drift)?;
        let end = self.target_end(set, target)?;
        // Repeatable scripts run after the versioned ones whenever they change: they never
        // make a versioned revision out of order.
        let last_applied = self
            .revisions
            .iter()
            .rposition(|state| state.status == Some(RevisionStatus::Applied) && !state.repeatable);
        let mut steps = Vec::new();
        for (index, state) in self.revisions.iter().enumerate().take(end) {
            if state.status == Some(RevisionStatus::Applied) {
                continue;
            }
            if let Some(later) = self.applied_after(set, index, last_applied) {
                return Err(self.needs_operator(format!(
                    "revision {} is pending but the later revision {} is already applied; fleetshift applies revisions strictly in order\nnext: give the new revision a version after {}",
                    label(state),
                    label(&self.revisions[later]),
                    self.revisions[later].version
                )));
            }
            if state.status == Some(RevisionStatus::Started) {
                self.check_resumable(&set.revisions[index], state)?;
            }
            steps.push(index);
        }
        Ok(steps)
    }

    /// An applied revision after `index` that forbids applying it now: the last applied one,
    /// as revisions apply strictly in order; in an Alembic set, only one built on it, as
    /// Alembic applies the branches of its graph in any order.
    fn applied_after(
        &self,
        set: &MigrationSet,
        index: usize,
        last_applied: Option<usize>,
    ) -> Option<usize> {
        let Some(history) = &set.alembic else {
            return last_applied.filter(|later| *later > index);
        };
        let pending = self.revisions[index].version.as_str();
        self.revisions
            .iter()
            .enumerate()
            .skip(index + 1)
            .filter(|(_, state)| state.status == Some(RevisionStatus::Applied))
            .map(|(later, _)| later)
            .find(|later| {
                history
                    .applied_below(std::slice::from_ref(&self.revisions[*later].version))
                    .contains(pending)
            })
    }

    /// A `started` revision is resumed only when every statement is safe to repeat, or when
    /// it is a backfill job (which resumes after its last committed batch).
    fn check_resumable(&self, revision: &Revision, state: &RevisionState) -> Result<(), ExecError> {
        let unsafe_statement = if revision.backfill.is_some() {
            None
        } else if revision.transactional {
            revision.up.statements().iter().next()
        } else {
            revision
                .up
                .statements()
                .iter()
                .find(|statement| !statement.is_repeatable())
        };
        match unsafe_statement {
            None => Ok(()),
            Some(statement) => Err(self.needs_operator(format!(
                "revision {} was started (fence {}) and did not finish; its statement at {} may have run and is not safe to repeat\nnext: inspect the shard, finish or undo the revision by hand, then record the outcome with `fleetshift migrate resolve --version {} --as applied|failed --reason \"…\"`",
                label(state),
                state.fence_token.unwrap_or(FenceToken::INITIAL),
                revision.up.locate(statement),
                state.version
            ))),
        }
    }

    /// Indexes of the revisions `down` reverts, newest first. `target`: the version to
    /// return to (`None`: revert only the newest applied revision; `Some("base")`: all).
    pub fn plan_down(
        &self,
        set: &MigrationSet,
        target: Option<&str>,
        allow_drift: bool,
    ) -> Result<Vec<usize>, ExecError> {
        self.check_consistent(allow_drift)?;
        if let Some(started) = self
            .revisions
            .iter()
            .find(|state| state.status == Some(RevisionStatus::Started))
        {
            return Err(self.needs_operator(format!(
                "revision {} is started and unfinished; resume it with `up` or resolve it before reverting",
                label(started)
            )));
        }
        let applied: Vec<usize> = self
            .revisions
            .iter()
            .enumerate()
            .filter(|(_, state)| state.status == Some(RevisionStatus::Applied) && !state.repeatable)
            .map(|(index, _)| index)
            .collect();
        let steps: Vec<usize> = match target {
            None => applied.last().copied().into_iter().collect(),
            Some("base") => applied.into_iter().rev().collect(),
            Some(version) => {
                let keep = self.target_end(set, Some(version))?;
                applied
                    .into_iter()
                    .filter(|index| *index >= keep)
                    .rev()
                    .collect()
            }
        };
        let missing: Vec<String> = steps
            .iter()
            .filter(|index| set.revisions[**index].down.is_none())
            .map(|index| set.revisions[*index].label())
            .collect();
        if !missing.is_empty() {
            return Err(ExecError::MissingDownScripts {
                shard: self.shard.clone(),
                revisions: missing,
            });
        }
        Ok(steps)
    }
}

fn label(state: &RevisionState) -> String {
    format!("{}_{}", state.version, state.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MigrationSet;

    fn set(files: &[(&str, &str)]) -> (tempfile::TempDir, MigrationSet) {
        let directory = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(directory.path().join(name), content).expect("write");
        }
        let set = MigrationSet::load(directory.path(), None).expect("set");
        (directory, set)
    }

    fn entry(set: &MigrationSet, version: &str, status: RevisionStatus) -> LedgerEntry {
        let checksum = set.revision(version).map_or_else(
            || "unknown".to_owned(),
            |revision| revision.checksum.clone(),
        );
        LedgerEntry {
            version: version.to_owned(),
            name: "n".to_owned(),
            checksum,
            status,
            transactional: true,
            fence_token: FenceToken::from_raw(1),
            plan_id: None,
            agent_id: "a".to_owned(),
            started_at: "t".to_owned(),
            finished_at: None,
            duration_ms: None,
            statements_run: 0,
            error: None,
        }
    }

    fn three() -> (tempfile::TempDir, MigrationSet) {
        set(&[
            ("1_a.sql", "SELECT 1;"),
            ("2_b.sql", "SELECT 2;"),
            ("3_c.sql", "SELECT 3;"),
        ])
    }

    #[test]
    fn up_plans_pending_revisions_up_to_the_target() {
        let (_directory, set) = three();
        let ledger = [entry(&set, "1", RevisionStatus::Applied)];
        let status = ShardStatus::compare("s", &set, &ledger);
        assert_eq!(status.plan_up(&set, None, false).expect("plan"), [1, 2]);
        assert_eq!(status.plan_up(&set, Some("2"), false).expect("plan"), [1]);
        assert!(status.plan_up(&set, Some("9"), false).is_err());
    }

    #[test]
    fn a_pending_revision_older_than_an_applied_one_is_refused() {
        let (_directory, set) = three();
        let ledger = [
            entry(&set, "1", RevisionStatus::Applied),
            entry(&set, "3", RevisionStatus::Applied),
        ];
        let status = ShardStatus::compare("s", &set, &ledger);
        let error = status.plan_up(&set, None, false).expect_err("out of order");
        assert!(error.to_string().contains("strictly in order"), "{error}");
    }

    #[test]
    fn revisions_the_set_lacks_and_drift_are_refused() {
        let (_directory, set) = three();
        let ledger = [entry(&set, "7", RevisionStatus::Applied)];
        let status = ShardStatus::compare("s", &set, &ledger);
        assert!(
            status
                .plan_up(&set, None, false)
                .expect_err("unknown")
                .to_string()
                .contains("7")
        );
        let mut drifted = entry(&set, "1", RevisionStatus::Applied);
        drifted.checksum = "old".to_owned();
        let status = ShardStatus::compare("s", &set, &[drifted]);
        assert!(matches!(
            status.plan_up(&set, None, false),
            Err(ExecError::Drift { .. })
        ));
        assert_eq!(
            status.plan_up(&set, None, true).expect("overridden"),
            [1, 2]
        );
    }

    #[test]
    fn an_unfinished_revision_is_resumed_only_when_safe_to_repeat() {
        let (_directory, set) = set(&[
            (
                "1_index.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);",
            ),
            (
                "2_backfill.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY j ON t (c);\nUPDATE t SET c = c + 1;",
            ),
        ]);
        let started = [entry(&set, "1", RevisionStatus::Started)];
        let status = ShardStatus::compare("s", &set, &started);
        assert_eq!(
            status.plan_up(&set, None, false).expect("resumable"),
            [0, 1]
        );
        let started = [
            entry(&set, "1", RevisionStatus::Applied),
            entry(&set, "2", RevisionStatus::Started),
        ];
        let status = ShardStatus::compare("s", &set, &started);
        let error = status
            .plan_up(&set, None, false)
            .expect_err("not repeatable")
            .to_string();
        assert!(
            error.contains("2_backfill.sql:3") && error.contains("migrate resolve"),
            "{error}"
        );
    }

    #[test]
    fn down_lists_every_missing_down_script_before_running_anything() {
        let (_directory, set) = three();
        let ledger: Vec<LedgerEntry> = ["1", "2", "3"]
            .iter()
            .map(|version| entry(&set, version, RevisionStatus::Applied))
            .collect();
        let status = ShardStatus::compare("s", &set, &ledger);
        match status.plan_down(&set, Some("base"), false) {
            Err(ExecError::MissingDownScripts { revisions, .. }) => {
                assert_eq!(revisions, ["3_c", "2_b", "1_a"])
            }
            other => panic!("expected missing downs, got {other:?}"),
        }
    }

    /// Versions of a Flyway set with two versioned scripts (with undo) and two repeatables.
    fn flyway(view: &str) -> (tempfile::TempDir, MigrationSet) {
        set(&[
            ("V1__a.sql", "CREATE TABLE a (id int);"),
            ("U1__a.sql", "DROP TABLE a;"),
            ("V2__b.sql", "CREATE TABLE b (id int);"),
            ("U2__b.sql", "DROP TABLE b;"),
            ("R__b_view.sql", view),
            (
                "R__a_view.sql",
                "CREATE OR REPLACE VIEW av AS SELECT * FROM a;",
            ),
        ])
    }

    fn applied(set: &MigrationSet, upto: usize) -> Vec<LedgerEntry> {
        set.revisions[..upto]
            .iter()
            .map(|revision| entry(set, revision.version.as_str(), RevisionStatus::Applied))
            .collect()
    }

    #[test]
    fn repeatable_scripts_run_after_the_versioned_ones_and_again_when_they_change() {
        let (_directory, set) = flyway("CREATE OR REPLACE VIEW bv AS SELECT * FROM b;");
        let order: Vec<String> = set.revisions.iter().map(Revision::label).collect();
        assert_eq!(order[..2], ["1_a", "2_b"]);
        assert!(
            order[2].starts_with("R__a_view#") && order[3].starts_with("R__b_view#"),
            "{order:?}"
        );
        let status = ShardStatus::compare("s", &set, &[]);
        assert_eq!(
            status.plan_up(&set, None, false).expect("plan"),
            [0, 1, 2, 3]
        );

        // Everything applied, then b_view changes: only it is pending, the ledger row of its
        // earlier content is no unknown history, and the versioned revision stays current.
        let ledger = applied(&set, 4);
        let (_changed_directory, changed) =
            flyway("CREATE OR REPLACE VIEW bv AS SELECT id FROM b;");
        let status = ShardStatus::compare("s", &changed, &ledger);
        assert!(status.unknown.is_empty(), "{:?}", status.unknown);
        assert_eq!(status.plan_up(&changed, None, false).expect("plan"), [3]);
        assert_eq!(status.current_version.as_deref(), Some("2"));
    }

    #[test]
    fn a_new_versioned_revision_is_not_out_of_order_behind_applied_repeatables() {
        let (_directory, before) = flyway("CREATE OR REPLACE VIEW bv AS SELECT * FROM b;");
        let ledger = applied(&before, 4);
        let (_after_directory, after) = set(&[
            ("V1__a.sql", "CREATE TABLE a (id int);"),
            ("U1__a.sql", "DROP TABLE a;"),
            ("V2__b.sql", "CREATE TABLE b (id int);"),
            ("U2__b.sql", "DROP TABLE b;"),
            ("V3__c.sql", "CREATE TABLE c (id int);"),
            ("U3__c.sql", "DROP TABLE c;"),
            (
                "R__b_view.sql",
                "CREATE OR REPLACE VIEW bv AS SELECT * FROM b;",
            ),
            (
                "R__a_view.sql",
                "CREATE OR REPLACE VIEW av AS SELECT * FROM a;",
            ),
        ]);
        let status = ShardStatus::compare("s", &after, &ledger);
        assert_eq!(status.plan_up(&after, None, false).expect("plan"), [2]);
        // Down reverts versioned revisions only, newest first, past the repeatables.
        let mut ledger = ledger;
        ledger.push(entry(&after, "3", RevisionStatus::Applied));
        let status = ShardStatus::compare("s", &after, &ledger);
        assert_eq!(status.plan_down(&after, None, false).expect("plan"), [2]);
        assert_eq!(
            status.plan_down(&after, Some("base"), false).expect("plan"),
            [2, 1, 0]
        );
    }

    #[test]
    fn a_repeatable_script_the_set_no_longer_has_is_unknown_history() {
        let (_directory, before) = flyway("CREATE OR REPLACE VIEW bv AS SELECT * FROM b;");
        let ledger = applied(&before, 4);
        let (_after_directory, after) = set(&[
            ("V1__a.sql", "CREATE TABLE a (id int);"),
            ("V2__b.sql", "CREATE TABLE b (id int);"),
            (
                "R__a_view.sql",
                "CREATE OR REPLACE VIEW av AS SELECT * FROM a;",
            ),
        ]);
        let status = ShardStatus::compare("s", &after, &ledger);
        let unknown: Vec<&str> = status
            .unknown
            .iter()
            .map(|entry| entry.version.as_str())
            .collect();
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].starts_with("R__b_view#"), "{unknown:?}");
        assert!(status.plan_up(&after, None, false).is_err());
    }
}
