//! What the agent does on a shard around its revisions (the plan's host duties): the pre-flight
//! checks, then a verified backup when the plan requires one (a failure of either stops the
//! shard before any DDL); performance baselines before and after; and the triggers of an
//! automatic rollback. Each step is reported as it ends.

pub mod backup;
pub mod preflight;
pub mod restore;
pub mod restore_test;
pub mod rollback;
pub mod sqlite_backup;

use fleetshift_common::baseline::BaselineError;
use fleetshift_common::engine::{self, DatabaseMessage, PostgresShard, SqliteShard};
use fleetshift_common::ledger::{LedgerEntry, RevisionStatus};
use fleetshift_common::proto::v1::{
    BaselineMeasured, DatabaseOutage, Direction, HostDuties, PreflightCheck, RollbackStarted,
};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::{MigrationSet, Revision, Script};
use fleetshift_common::touched;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use self::backup::{BackupSettings, Manifest, Subject};
use self::preflight::{Scope, Thresholds};

/// Why a shard did not get past its duties.
#[derive(Debug)]
pub enum DutyFailure {
    Stopped,
    /// The step that failed and why; nothing ran on the shard.
    Refused(String),
    /// The connection to the database server went away under the step (a restart, a
    /// failover, a dropped link): the step runs again once the server answers.
    ConnectionLost(String),
}

impl From<BaselineError> for DutyFailure {
    fn from(error: BaselineError) -> Self {
        match error {
            BaselineError::Stopped => Self::Stopped,
            BaselineError::Refused(detail) => Self::Refused(detail),
            BaselineError::ConnectionLost(detail) => Self::ConnectionLost(detail),
        }
    }
}

impl DutyFailure {
    /// A database error while `doing` something: a lost connection, or the step's refusal as
    /// `refusal` words it.
    pub fn from_database(
        doing: &str,
        error: &sqlx::Error,
        refusal: impl FnOnce(String) -> DutyFailure,
    ) -> Self {
        let detail = DatabaseMessage(error).to_string();
        if engine::connection_lost(error) {
            Self::ConnectionLost(format!("{doing}: {detail}"))
        } else {
            refusal(detail)
        }
    }
}

/// One shard's duties for one assignment.
#[derive(Debug, Clone, Copy)]
pub struct ShardDuties<'a> {
    pub shard_id: &'a str,
    pub plan_id: &'a str,
    pub url: &'a DatabaseUrl,
    pub duties: &'a HostDuties,
    /// `None` when the agent's configuration has no `[backups]` section.
    pub backups: Option<&'a BackupSettings>,
}

impl<'a> ShardDuties<'a> {
    /// Where the required backup goes; refused when the agent has no `[backups]`.
    fn backup_settings(&self) -> Result<&'a BackupSettings, DutyFailure> {
        self.backups.ok_or_else(|| {
            DutyFailure::Refused(format!(
                "the plan requires a backup of shard {} but this agent has no [backups] directory configured; add one and retry",
                self.shard_id
            ))
        })
    }

    /// A duty's failure, as the shard's: named, and saying nothing ran.
    fn nothing_ran(&self, failure: DutyFailure) -> DutyFailure {
        match failure {
            DutyFailure::Refused(message) => {
                DutyFailure::Refused(format!("shard {}: {message}; nothing ran", self.shard_id))
            }
            stopped => stopped,
        }
    }
}

/// What a run reports as it goes: its duties' steps, a rollback, the database going away and
/// coming back.
pub trait DutyReport: Sync {
    fn check(&self, check: PreflightCheck);
    fn backup(&self, manifest: &Manifest);
    fn baseline(&self, measured: &BaselineMeasured);
    fn rollback_started(&self, started: &RollbackStarted);
    fn database_outage(&self, outage: &DatabaseOutage);
}

/// Runs the pre-flight checks and, when required, the backup; the backup taken, if any.
pub async fn before_revisions(
    engine: &PostgresShard,
    shard: ShardDuties<'_>,
    tables: &[String],
    report: &dyn DutyReport,
    stop: &CancellationToken,
) -> Result<Option<Manifest>, DutyFailure> {
    let backups = if shard.duties.require_backup {
        Some(shard.backup_settings()?)
    } else {
        None
    };
    let directory = backups.map(|settings| backup::shard_directory(settings, shard.shard_id));
    let scope = Scope {
        tables,
        backup_directory: directory.as_deref(),
    };
    let thresholds = Thresholds::from_policy(shard.duties.preflight.as_ref());
    let on_shard = |failure| shard.nothing_ran(failure);
    let database_bytes = preflight::run(engine.pool(), scope, thresholds, report, stop)
        .instrument(tracing::info_span!("preflight"))
        .await
        .map_err(on_shard)?;
    let Some(settings) = backups else {
        return Ok(None);
    };
    let subject = Subject {
        shard_id: shard.shard_id,
        plan_id: shard.plan_id,
        url: shard.url,
        database_bytes,
        restore_test: shard.duties.restore_test.then(|| engine.pool()),
    };
    let manifest = backup::take(settings, subject, stop)
        .instrument(tracing::info_span!("backup"))
        .await
        .map_err(on_shard)?;
    report.backup(&manifest);
    Ok(Some(manifest))
}

/// Takes the backup a plan requires of a SQLite shard (pre-flight's PostgreSQL checks do not
/// apply; free space is checked by the backup itself).
pub async fn back_up_sqlite(
    engine: &SqliteShard,
    shard: ShardDuties<'_>,
    report: &dyn DutyReport,
) -> Result<Manifest, DutyFailure> {
    let settings = shard.backup_settings()?;
    let database_bytes: i64 = sqlx::query_scalar(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
    )
    .fetch_one(engine.pool())
    .await
    .map_err(|error| {
        DutyFailure::Refused(format!(
            "shard {}: cannot read the database's size: {error}",
            shard.shard_id
        ))
    })?;
    let subject = Subject {
        shard_id: shard.shard_id,
        plan_id: shard.plan_id,
        url: shard.url,
        database_bytes: u64::try_from(database_bytes).unwrap_or_default(),
        restore_test: None,
    };
    let manifest = sqlite_backup::take(settings, subject, engine.pool())
        .await
        .map_err(|failure| shard.nothing_ran(failure))?;
    report.backup(&manifest);
    Ok(manifest)
}

/// The tables the revisions this assignment would run touch (up: those not applied yet, up to
/// `target`; down: those applied above `target`), as the catalog names them.
pub fn touched_tables(
    set: &MigrationSet,
    ledger: &[LedgerEntry],
    direction: Direction,
    target: Option<&str>,
) -> Vec<String> {
    let applied = |revision: &&Revision| {
        ledger.iter().any(|entry| {
            entry.version == revision.version.as_str() && entry.status == RevisionStatus::Applied
        })
    };
    let position = target
        .filter(|target| *target != "base")
        .and_then(|target| set.position(target));
    let scripts: Vec<&Script> = match direction {
        Direction::Up => set.revisions[..position.map_or(set.revisions.len(), |index| index + 1)]
            .iter()
            .filter(|revision| !applied(revision))
            .map(|revision| &revision.up)
            .collect(),
        Direction::Down => set.revisions[position.map_or(0, |index| index + 1)..]
            .iter()
            .filter(applied)
            .filter_map(|revision| revision.down.as_ref())
            .collect(),
        Direction::Unspecified => Vec::new(),
    };
    touched::tables_of(scripts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::fence::FenceToken;

    fn set() -> (tempfile::TempDir, MigrationSet) {
        let directory = tempfile::tempdir().expect("tempdir");
        for (name, sql) in [
            ("1_users.up.sql", "CREATE TABLE users (id int);"),
            ("1_users.down.sql", "DROP TABLE users;"),
            (
                "2_orders.up.sql",
                "ALTER TABLE public.orders ADD COLUMN note text;",
            ),
            ("2_orders.down.sql", "ALTER TABLE orders DROP COLUMN note;"),
            (
                "3_audit.up.sql",
                "ALTER TABLE audit.events ADD COLUMN at timestamptz;",
            ),
            (
                "3_audit.down.sql",
                "ALTER TABLE audit.events DROP COLUMN at;",
            ),
        ] {
            std::fs::write(directory.path().join(name), sql).expect("write");
        }
        let set = MigrationSet::load(directory.path(), None).expect("set");
        (directory, set)
    }

    fn applied(version: &str) -> LedgerEntry {
        LedgerEntry {
            version: version.to_owned(),
            name: String::new(),
            checksum: String::new(),
            status: RevisionStatus::Applied,
            transactional: true,
            fence_token: FenceToken::from_raw(1),
            plan_id: None,
            agent_id: "a".to_owned(),
            started_at: String::new(),
            finished_at: None,
            duration_ms: None,
            statements_run: 1,
            error: None,
        }
    }

    #[test]
    fn the_tables_are_those_of_the_revisions_that_would_run() {
        let (_directory, set) = set();
        let ledger = [applied("1")];
        let up = |target| touched_tables(&set, &ledger, Direction::Up, target);
        assert_eq!(up(None), ["audit.events", "orders"]);
        assert_eq!(up(Some("2")), ["orders"], "nothing past the target");
        let ledger = [applied("1"), applied("2")];
        let down = |target| touched_tables(&set, &ledger, Direction::Down, target);
        assert_eq!(down(Some("1")), ["orders"], "only applied ones above it");
        assert_eq!(down(Some("base")), ["orders", "users"]);
        assert_eq!(down(None), ["orders", "users"]);
    }
}
