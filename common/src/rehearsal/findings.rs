//! Hazards read off a rehearsal's trace: each names the statement (file and line), the
//! relation, the lock mode and how long the lock was held. Where eugene has a hint for the
//! hazard its id is kept, so its users recognise it; the wording is fleetshift's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::effects::{Effects, LockTaken};
use super::estimates::{Scale, scaled};
use super::tracer::{TracedRun, TracedStatement};

/// The hazards a trace shows, by eugene's hint ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Hint {
    E1,
    E2,
    E3,
    E4,
    E5,
    E6,
    E7,
    E8,
    E9,
    E10,
    E11,
    E15,
    W12,
    W13,
    W14,
}

impl Hint {
    pub const ALL: [Self; 15] = [
        Self::E1,
        Self::E2,
        Self::E3,
        Self::E4,
        Self::E5,
        Self::E6,
        Self::E7,
        Self::E8,
        Self::E9,
        Self::E10,
        Self::E11,
        Self::E15,
        Self::W12,
        Self::W13,
        Self::W14,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::E1 => "E1",
            Self::E2 => "E2",
            Self::E3 => "E3",
            Self::E4 => "E4",
            Self::E5 => "E5",
            Self::E6 => "E6",
            Self::E7 => "E7",
            Self::E8 => "E8",
            Self::E9 => "E9",
            Self::E10 => "E10",
            Self::E11 => "E11",
            Self::E15 => "E15",
            Self::W12 => "W12",
            Self::W13 => "W13",
            Self::W14 => "W14",
        }
    }

    /// What the hazard is, in a few words.
    pub fn title(self) -> &'static str {
        match self {
            Self::E1 => "a new constraint validated by scanning the table",
            Self::E2 => "a column made NOT NULL by scanning the table",
            Self::E3 => "a new json column (json has no equality operator)",
            Self::E4 => "more statements after taking an ACCESS EXCLUSIVE lock",
            Self::E5 => "a type change that rewrites the table",
            Self::E6 => "an index built without CONCURRENTLY on an existing table",
            Self::E7 => "a new unique constraint builds its index under lock",
            Self::E8 => "a new exclusion constraint",
            Self::E9 => "a blocking lock taken with lock_timeout disabled",
            Self::E10 => "a relation rewritten while holding a blocking lock",
            Self::E11 => "a SERIAL, identity or GENERATED STORED column added",
            Self::E15 => "a foreign key without an index on its columns",
            Self::W12 => "several ALTER TABLEs on one table where one would do",
            Self::W13 => "a new enum type",
            Self::W14 => "a primary key added on an index whose columns were nullable",
        }
    }

    /// E-class hazards block traffic on the table; W-class ones are worth a look.
    pub fn is_hazard(self) -> bool {
        self.id().starts_with('E')
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.id())
    }
}

/// One hazard at one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub hint: Hint,
    pub revision: String,
    /// `file:line` of the statement.
    pub place: String,
    pub statement: String,
    /// The table (or index, or type) concerned.
    pub relation: String,
    /// The strongest lock the transaction held on the relation by then, if any.
    pub lock_mode: Option<String>,
    /// How long that lock was held, until the transaction ended.
    pub held_us: Option<u64>,
    /// How long it would be held on the shard: each statement's time scaled to the shard's
    /// size (see [`super::estimates`]).
    pub estimated_hold_us: Option<u64>,
    /// What happened, in fleetshift's words.
    pub detail: String,
}

/// The traced runs of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionTrace {
    pub version: String,
    pub runs: Vec<TracedRun>,
}

/// A foreign key the rehearsal added that no index leads with, at the end of the rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnindexedForeignKey {
    pub table: String,
    pub name: String,
}

/// PostgreSQL's table lock modes, weakest first.
const LOCK_MODES: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

fn strength(mode: &str) -> usize {
    LOCK_MODES
        .iter()
        .position(|known| *known == mode)
        .unwrap_or(0)
}

/// A lock that blocks writes to its relation (SHARE and stronger), or reads too.
pub fn blocks_writes(mode: &str) -> bool {
    strength(mode) >= strength("ShareLock")
}

/// The strongest of `locks` on each relation, in the order the relations first appear.
pub fn strongest_locks(locks: &[LockTaken]) -> Vec<&LockTaken> {
    let mut strongest: Vec<&LockTaken> = Vec::new();
    for lock in locks {
        match strongest
            .iter_mut()
            .find(|kept| kept.relation == lock.relation)
        {
            Some(kept) if strength(&kept.mode) < strength(&lock.mode) => *kept = lock,
            Some(_) => {}
            None => strongest.push(lock),
        }
    }
    strongest
}

/// Every finding of a rehearsal's trace, in the order the statements ran.
pub fn findings(
    revisions: &[RevisionTrace],
    unindexed: &[UnindexedForeignKey],
    scale: &Scale,
) -> Vec<Finding> {
    let mut found = Vec::new();
    for revision in revisions {
        let mut altered: BTreeMap<String, usize> = BTreeMap::new();
        for run in &revision.runs {
            let locks = RunLocks::of(run, scale);
            for (index, statement) in run.statements.iter().enumerate() {
                let at = At {
                    revision: &revision.version,
                    statement,
                    index,
                    locks: &locks,
                };
                statement_findings(&at, unindexed, &mut found);
                if let Some(first) = locks.first_access_exclusive(index)
                    && index == first.statement + 1
                {
                    at.push(
                        &mut found,
                        Hint::E4,
                        &first.relation,
                        format!(
                            "{} statement(s) ran after {} took ACCESS EXCLUSIVE on {}: reads and writes waited for all of them",
                            run.statements.len() - index,
                            run.statements[first.statement].place,
                            first.relation
                        ),
                    );
                }
                for table in altered_tables(&statement.effects) {
                    let count = altered.entry(table.clone()).or_default();
                    *count += 1;
                    if *count == 2 {
                        at.push(
                            &mut found,
                            Hint::W12,
                            &table,
                            format!("{table} is altered again by a separate statement; one ALTER TABLE with both changes scans and locks it once"),
                        );
                    }
                }
            }
        }
    }
    found
}

fn altered_tables(effects: &Effects) -> Vec<String> {
    let mut tables: Vec<String> = effects
        .columns_added
        .iter()
        .map(|column| column.table.clone())
        .chain(
            effects
                .types_changed
                .iter()
                .map(|change| change.table.clone()),
        )
        .chain(
            effects
                .constraints_added
                .iter()
                .filter(|constraint| constraint.existing_table)
                .map(|constraint| constraint.table.clone()),
        )
        .chain(
            effects
                .not_null_set
                .iter()
                .filter_map(|column| column.rsplit_once('.').map(|(table, _)| table.to_owned())),
        )
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

fn statement_findings(at: &At<'_>, unindexed: &[UnindexedForeignKey], found: &mut Vec<Finding>) {
    constraint_findings(at, unindexed, found);
    column_findings(at, found);
    lock_findings(at, found);
}

/// E1, E7, E8, W14 and E15: what the constraints a statement added did.
fn constraint_findings(at: &At<'_>, unindexed: &[UnindexedForeignKey], found: &mut Vec<Finding>) {
    let effects = &at.statement.effects;
    for constraint in &effects.constraints_added {
        let table = constraint.table.as_str();
        let scan = if effects.scanned.iter().any(|scanned| scanned == table) {
            "scanned"
        } else {
            "validated"
        };
        match constraint.kind.as_str() {
            "check" | "foreign key" if constraint.existing_table && constraint.validated => {
                at.push(found, Hint::E1, table, format!("{} constraint {} was {scan} row by row as it was added; add it NOT VALID and VALIDATE CONSTRAINT in a later transaction", constraint.kind, constraint.name));
            }
            "unique" if constraint.existing_table && !constraint.using_existing_index => {
                at.push(found, Hint::E7, table, format!("unique constraint {} built its index while writes to {table} waited; build the index CONCURRENTLY and add the constraint USING INDEX", constraint.name));
            }
            "exclusion" if constraint.existing_table => {
                at.push(found, Hint::E8, table, format!("exclusion constraint {} built its index and checked every row while {table} was locked", constraint.name));
            }
            "primary key"
                if constraint.using_existing_index && !constraint.made_not_null.is_empty() =>
            {
                at.push(found, Hint::W14, table, format!("primary key {} made {} NOT NULL by scanning {table}; make the columns NOT NULL (after a validated CHECK) first", constraint.name, constraint.made_not_null.join(", ")));
            }
            _ => {}
        }
        if constraint.kind == "foreign key"
            && unindexed
                .iter()
                .any(|key| key.table == table && key.name == constraint.name)
        {
            at.push(found, Hint::E15, table, format!("no index on {table} leads with the columns of foreign key {} ({}): every delete or key update of the referenced table scans {table}", constraint.name, constraint.columns.join(", ")));
        }
    }
}

/// E2, E3, E11 and E5: what the statement did to columns.
fn column_findings(at: &At<'_>, found: &mut Vec<Finding>) {
    let effects = &at.statement.effects;
    for column in &effects.not_null_set {
        let table = column
            .rsplit_once('.')
            .map_or(column.as_str(), |(table, _)| table);
        if effects.scanned.iter().any(|scanned| scanned == table) {
            at.push(found, Hint::E2, table, format!("{column} was made NOT NULL by scanning {table}; add CHECK ({} IS NOT NULL) NOT VALID, validate it, then SET NOT NULL without a scan", column.rsplit('.').next().unwrap_or(column)));
        }
    }
    for column in &effects.columns_added {
        if column.type_name == "json" {
            at.push(found, Hint::E3, &column.table, format!("column {} is json, which has no equality operator (DISTINCT, UNION and comparisons fail); use jsonb", column.column));
        }
        if column.generated_stored || column.identity || column.serial() {
            let what = if column.generated_stored {
                "GENERATED STORED"
            } else if column.identity {
                "identity"
            } else {
                "serial"
            };
            at.push(found, Hint::E11, &column.table, format!("{what} column {} fills every existing row of {} under an ACCESS EXCLUSIVE lock", column.column, column.table));
        }
    }
    for change in &effects.types_changed {
        if effects.rewritten.contains(&change.table) {
            at.push(
                found,
                Hint::E5,
                &change.table,
                format!(
                    "{}.{} changed from {} to {}, which rewrote the table",
                    change.table, change.column, change.from, change.to
                ),
            );
        }
    }
}

/// E6, E10, E9 and W13: index builds, rewrites under lock, unbounded lock waits, enums.
fn lock_findings(at: &At<'_>, found: &mut Vec<Finding>) {
    let effects = &at.statement.effects;
    for index in &effects.indexes_built {
        if !index.concurrently && !index.for_constraint {
            at.push(found, Hint::E6, &index.table, format!("index {} was built in a transaction, blocking writes to {}; use CREATE INDEX CONCURRENTLY", index.name, index.table));
        }
    }
    for relation in &effects.rewritten {
        if at
            .locks
            .strongest(relation, at.index)
            .is_some_and(|hold| blocks_writes(&hold.mode))
        {
            at.push(
                found,
                Hint::E10,
                relation,
                format!(
                    "{relation} was rewritten (new storage) while the lock blocked other sessions"
                ),
            );
        }
    }
    if effects.lock_timeout_disabled {
        for lock in effects
            .locks
            .iter()
            .filter(|lock| blocks_writes(&lock.mode))
        {
            at.push(found, Hint::E9, &lock.relation, format!("{} taken with lock_timeout = 0: behind a long transaction it would have waited forever, and every query on {} behind it", lock.mode, lock.relation));
        }
    }
    for name in &effects.enums_created {
        at.push(found, Hint::W13, name, format!("enum {name}: its values can be added but not removed or reordered in a transaction; a lookup table is easier to change"));
    }
}

/// Where a finding is, and the locks its transaction took.
struct At<'a> {
    revision: &'a str,
    statement: &'a TracedStatement,
    index: usize,
    locks: &'a RunLocks,
}

impl At<'_> {
    fn push(&self, found: &mut Vec<Finding>, hint: Hint, relation: &str, detail: String) {
        let held = self.locks.strongest(relation, self.index);
        found.push(Finding {
            hint,
            revision: self.revision.to_owned(),
            place: self.statement.place.clone(),
            statement: self.statement.sql.trim().to_owned(),
            relation: relation.to_owned(),
            lock_mode: held.map(|hold| hold.mode.clone()),
            held_us: held.map(|hold| hold.held_us),
            estimated_hold_us: held.map(|hold| hold.estimated_us),
            detail,
        });
    }
}

/// A lock a transaction took: at which statement, and how long it was held from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHold {
    pub relation: String,
    pub mode: String,
    /// The statement (index in its run) that took it.
    pub statement: usize,
    /// From the start of that statement to the end of the transaction.
    pub held_us: u64,
    /// The same on the shard, each statement's time scaled to the shard's size.
    pub estimated_us: u64,
}

/// The locks of one run, each with its hold time.
#[derive(Debug, Clone, Default)]
pub struct RunLocks {
    pub holds: Vec<LockHold>,
}

impl RunLocks {
    /// A transaction's locks are held to its end: from the statement that took each one, the
    /// time of that statement and every later one.
    pub fn of(run: &TracedRun, scale: &Scale) -> Self {
        let mut holds = Vec::new();
        for (index, statement) in run.statements.iter().enumerate() {
            let later = &run.statements[index..];
            let held_us = later.iter().map(|later| later.elapsed_us).sum();
            let estimated_us = later
                .iter()
                .map(|later| scaled(later.elapsed_us, scale.of(&later.effects).1))
                .fold(0_u64, u64::saturating_add);
            for lock in &statement.effects.locks {
                holds.push(LockHold {
                    relation: lock.relation.clone(),
                    mode: lock.mode.clone(),
                    statement: index,
                    held_us,
                    estimated_us,
                });
            }
        }
        Self { holds }
    }

    /// The strongest lock held on `relation` once statement `index` ran.
    pub fn strongest(&self, relation: &str, index: usize) -> Option<&LockHold> {
        self.holds
            .iter()
            .filter(|hold| hold.relation == relation && hold.statement <= index)
            .max_by_key(|hold| strength(&hold.mode))
    }

    /// The first ACCESS EXCLUSIVE lock taken before statement `index`.
    fn first_access_exclusive(&self, index: usize) -> Option<&LockHold> {
        self.holds
            .iter()
            .find(|hold| hold.statement < index && hold.mode == "AccessExclusiveLock")
    }
}

#[cfg(test)]
mod tests;
