//! Alembic's version table on shards the team also runs Alembic on: kept current by each
//! revision's own transaction when the set asks for it and the shard has the table.

use super::status::ShardStatus;
use super::{Direction, Executor};
use crate::engine::foreign::ForeignApplied;
use crate::engine::{ForeignHistory, ForeignTool, ShardEngine, VersionTableRows};
use crate::error::ExecError;
use crate::ledger::RevisionStatus;
use crate::source::{AlembicHistory, MigrationSet};

/// A version table this run keeps current.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeptTable<'s> {
    history: &'s AlembicHistory,
}

impl<E: ShardEngine> Executor<'_, E> {
    /// The set's Alembic version table, when the set keeps it current and the shard has it.
    pub(super) async fn kept_version_table<'s>(
        &self,
        set: &'s MigrationSet,
    ) -> Result<Option<KeptTable<'s>>, ExecError> {
        let Some(history) = set
            .alembic
            .as_ref()
            .filter(|history| history.keep_version_table)
        else {
            return Ok(None);
        };
        let rows = self
            .engine
            .version_table_rows(&history.version_table)
            .await?;
        Ok(rows.map(|_| KeptTable { history }))
    }

    /// The Alembic history in the shard, when the set is an Alembic set and the shard's
    /// version table has rows (an empty one means Alembic is at its base).
    pub(super) async fn alembic_history(
        &self,
        set: &MigrationSet,
    ) -> Result<Option<ForeignHistory>, ExecError> {
        let Some(history) = &set.alembic else {
            return Ok(None);
        };
        let rows = self
            .engine
            .version_table_rows(&history.version_table)
            .await?;
        Ok(rows
            .filter(|rows| !rows.is_empty())
            .map(|heads| ForeignHistory {
                tool: ForeignTool::Alembic,
                applied: ForeignApplied::Heads(heads),
            }))
    }
}

impl KeptTable<'_> {
    /// The rows once revision `version` is applied (up) or reverted (down) on a shard where
    /// `applied` are.
    pub(super) fn after(
        &self,
        applied: &[&str],
        version: &str,
        direction: Direction,
    ) -> VersionTableRows {
        let others = applied.iter().copied().filter(|other| *other != version);
        let heads = match direction {
            Direction::Up => self.history.heads_of(others.chain([version])),
            Direction::Down => self.history.heads_of(others),
        };
        VersionTableRows {
            table: self.history.version_table.clone(),
            heads,
        }
    }
}

/// The versions `status` finds applied, in the set's order.
pub(super) fn applied<'s>(set: &'s MigrationSet, status: &ShardStatus) -> Vec<&'s str> {
    set.revisions
        .iter()
        .zip(&status.revisions)
        .filter(|(_, state)| state.status == Some(RevisionStatus::Applied))
        .map(|(revision, _)| revision.version.as_str())
        .collect()
}
