//! Alembic's version table on shards the team also runs Alembic on: kept current by each
//! revision's own transaction when the set asks for it and the shard has the table.

use super::{Direction, Executor};
use crate::engine::foreign::ForeignApplied;
use crate::engine::{ForeignHistory, ForeignTool, ShardEngine, VersionTableRows};
use crate::error::ExecError;
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
    /// The rows once revision `index` of `set` is applied (up) or reverted (down).
    /// Revisions apply strictly in order, so every revision before it is applied.
    pub(super) fn after(
        &self,
        set: &MigrationSet,
        index: usize,
        direction: Direction,
    ) -> VersionTableRows {
        let end = match direction {
            Direction::Up => index + 1,
            Direction::Down => index,
        };
        let applied = set.revisions[..end]
            .iter()
            .map(|revision| revision.version.as_str());
        VersionTableRows {
            table: self.history.version_table.clone(),
            heads: self.history.heads_of(applied),
        }
    }
}
