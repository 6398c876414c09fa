//! What one statement did, read as the difference between the catalog state before and after
//! it (see [`super::catalog_state`]): the locks it took, the relations it rewrote, the tables it
//! scanned, and the constraints, columns, indexes and types it added or changed.
//!
//! "Existing" always means: there at the start of the revision. A table the revision itself
//! creates is nobody else's yet, so its locks and rewrites block no one and are not reported.

use serde::{Deserialize, Serialize};

use super::catalog_state::{CatalogState, Oid};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Locks taken by this statement on existing relations.
    pub locks: Vec<LockTaken>,
    /// Existing tables and indexes whose storage was replaced.
    pub rewritten: Vec<String>,
    /// Tables this statement read in full (a validation, a rewrite, a check).
    pub scanned: Vec<String>,
    pub constraints_added: Vec<ConstraintAdded>,
    /// `NOT VALID` constraints this statement validated.
    pub constraints_validated: Vec<String>,
    /// Columns added to existing tables.
    pub columns_added: Vec<ColumnAdded>,
    /// Existing columns this statement made `NOT NULL`, as `table.column`.
    pub not_null_set: Vec<String>,
    pub types_changed: Vec<TypeChange>,
    /// Indexes built on existing tables (in a transaction: not concurrently).
    pub indexes_built: Vec<IndexBuilt>,
    pub enums_created: Vec<String>,
    /// `lock_timeout` was 0 after this statement: a lock wait would never end.
    pub lock_timeout_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTaken {
    pub relation: String,
    /// As PostgreSQL names it (`AccessExclusiveLock`, …).
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintAdded {
    pub table: String,
    pub name: String,
    /// `check`, `foreign key`, `primary key`, `unique`, `exclusion`.
    pub kind: String,
    /// Valid as soon as added (not `NOT VALID`).
    pub validated: bool,
    /// The table existed at the start of the revision.
    pub existing_table: bool,
    /// Built on an index that existed before the statement (`USING INDEX`).
    pub using_existing_index: bool,
    /// The columns it constrains, in order.
    pub columns: Vec<String>,
    /// Columns its statement made `NOT NULL` on the way (a primary key's).
    pub made_not_null: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnAdded {
    pub table: String,
    pub column: String,
    pub type_name: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub generated_stored: bool,
    pub identity: bool,
}

impl ColumnAdded {
    /// A `serial` column: its default draws from a sequence.
    pub fn serial(&self) -> bool {
        self.default
            .as_deref()
            .is_some_and(|default| default.starts_with("nextval("))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeChange {
    pub table: String,
    pub column: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBuilt {
    pub table: String,
    pub name: String,
    pub unique: bool,
    /// Built outside a transaction (`CREATE INDEX CONCURRENTLY`).
    pub concurrently: bool,
    /// Built for a constraint the same statement added.
    pub for_constraint: bool,
}

/// The three readings a statement's effects are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Readings<'a> {
    /// At the start of the revision.
    pub origin: &'a CatalogState,
    pub before: &'a CatalogState,
    pub after: &'a CatalogState,
}

impl Readings<'_> {
    fn existed(&self, oid: Oid) -> bool {
        self.origin.relations.contains_key(&oid)
    }

    fn column_name(&self, table: Oid, number: i16) -> String {
        self.after
            .columns
            .get(&(table, number))
            .map_or_else(|| format!("#{number}"), |column| column.name.clone())
    }

    /// What the statement between `before` and `after` did; `concurrently` when it ran outside
    /// a transaction.
    pub fn effects(&self, concurrently: bool) -> Effects {
        let (before, after) = (self.before, self.after);
        let locks = after
            .locks
            .difference(&before.locks)
            .filter(|(oid, _)| self.existed(*oid))
            .map(|(oid, mode)| LockTaken {
                relation: after.name_of(*oid),
                mode: mode.clone(),
            })
            .collect();
        let rewritten = after
            .relations
            .iter()
            .filter(|(oid, relation)| {
                self.existed(**oid)
                    && before
                        .relations
                        .get(oid)
                        .is_some_and(|earlier| earlier.filenode != relation.filenode)
            })
            .map(|(_, relation)| relation.name.clone())
            .collect();
        let scanned = after
            .scans
            .iter()
            .filter(|(oid, scans)| {
                self.existed(**oid) && before.scans.get(oid).copied().unwrap_or(0) < **scans
            })
            .map(|(oid, _)| after.name_of(*oid))
            .collect();
        Effects {
            locks,
            rewritten,
            scanned,
            constraints_added: self.constraints_added(),
            constraints_validated: self.constraints_validated(),
            columns_added: self.columns_added(),
            not_null_set: self.not_null_set(),
            types_changed: self.types_changed(),
            indexes_built: self.indexes_built(concurrently),
            enums_created: after
                .enums
                .iter()
                .filter(|(oid, _)| !before.enums.contains_key(oid))
                .map(|(_, name)| name.clone())
                .collect(),
            lock_timeout_disabled: after.lock_timeout_disabled,
        }
    }

    fn constraints_added(&self) -> Vec<ConstraintAdded> {
        let (before, after) = (self.before, self.after);
        after
            .constraints
            .iter()
            .filter(|(oid, constraint)| {
                !before.constraints.contains_key(oid) && constraint.kind != 't'
            })
            .map(|(_, constraint)| {
                let columns = constraint
                    .columns
                    .iter()
                    .map(|number| self.column_name(constraint.table, *number))
                    .collect();
                let made_not_null = constraint
                    .columns
                    .iter()
                    .filter(|number| {
                        let key = (constraint.table, **number);
                        before
                            .columns
                            .get(&key)
                            .is_some_and(|column| !column.not_null)
                            && after
                                .columns
                                .get(&key)
                                .is_some_and(|column| column.not_null)
                    })
                    .map(|number| self.column_name(constraint.table, *number))
                    .collect();
                ConstraintAdded {
                    table: after.name_of(constraint.table),
                    name: constraint.name.clone(),
                    kind: constraint_kind(constraint.kind).to_owned(),
                    validated: constraint.validated,
                    existing_table: self.existed(constraint.table),
                    using_existing_index: matches!(constraint.kind, 'p' | 'u' | 'x')
                        && before.indexes.contains_key(&constraint.index),
                    columns,
                    made_not_null,
                }
            })
            .collect()
    }

    fn constraints_validated(&self) -> Vec<String> {
        self.after
            .constraints
            .iter()
            .filter(|(oid, constraint)| {
                constraint.validated
                    && self
                        .before
                        .constraints
                        .get(oid)
                        .is_some_and(|earlier| !earlier.validated)
            })
            .map(|(_, constraint)| constraint.name.clone())
            .collect()
    }

    fn columns_added(&self) -> Vec<ColumnAdded> {
        self.after
            .columns
            .iter()
            .filter(|((table, number), _)| {
                self.existed(*table) && !self.before.columns.contains_key(&(*table, *number))
            })
            .map(|((table, _), column)| ColumnAdded {
                table: self.after.name_of(*table),
                column: column.name.clone(),
                type_name: column.type_name.clone(),
                not_null: column.not_null,
                default: column.default.clone(),
                generated_stored: column.generated_stored,
                identity: column.identity,
            })
            .collect()
    }

    fn changed_columns(
        &self,
    ) -> impl Iterator<
        Item = (
            Oid,
            &super::catalog_state::Column,
            &super::catalog_state::Column,
        ),
    > {
        self.after
            .columns
            .iter()
            .filter(|((table, _), _)| self.existed(*table))
            .filter_map(|(key, column)| Some((key.0, self.before.columns.get(key)?, column)))
    }

    fn not_null_set(&self) -> Vec<String> {
        self.changed_columns()
            .filter(|(_, before, after)| !before.not_null && after.not_null)
            .map(|(table, _, column)| format!("{}.{}", self.after.name_of(table), column.name))
            .collect()
    }

    fn types_changed(&self) -> Vec<TypeChange> {
        self.changed_columns()
            .filter(|(_, before, after)| before.type_name != after.type_name)
            .map(|(table, before, after)| TypeChange {
                table: self.after.name_of(table),
                column: after.name.clone(),
                from: before.type_name.clone(),
                to: after.type_name.clone(),
            })
            .collect()
    }

    fn indexes_built(&self, concurrently: bool) -> Vec<IndexBuilt> {
        let (before, after) = (self.before, self.after);
        after
            .indexes
            .iter()
            .filter(|(oid, index)| !before.indexes.contains_key(oid) && self.existed(index.table))
            .map(|(oid, index)| IndexBuilt {
                table: after.name_of(index.table),
                name: after.name_of(*oid),
                unique: index.unique,
                concurrently,
                for_constraint: after.constraints.iter().any(|(constraint, owner)| {
                    owner.index == *oid && !before.constraints.contains_key(constraint)
                }),
            })
            .collect()
    }
}

fn constraint_kind(kind: char) -> &'static str {
    match kind {
        'c' => "check",
        'f' => "foreign key",
        'p' => "primary key",
        'u' => "unique",
        'x' => "exclusion",
        _ => "other",
    }
}
