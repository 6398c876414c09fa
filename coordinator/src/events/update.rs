//! A store change as the event streams read it: its record decoded once, however many
//! streams follow it.

use fleetshift_common::proto::v1::{JournalBatch, Plan, ShardTask};

use crate::rollout::records::decode;
use crate::store::{Change, keys};

/// One change of the store, decoded.
#[derive(Debug)]
pub struct Update {
    pub revision: i64,
    pub record: Record,
}

/// What a change wrote, as far as the event streams care.
#[derive(Debug)]
pub enum Record {
    /// A plan written, or deleted (`None`). Plans and tasks are boxed: each is many times
    /// the size of the other records.
    Plan { id: String, plan: Option<Box<Plan>> },
    /// A task written; a deleted task tells a stream nothing.
    Task {
        plan_id: String,
        task: Box<ShardTask>,
    },
    /// A journal batch written, or gone with its lease (`None`).
    Journal(Option<JournalBatch>),
    /// A record that does not decode, and the plan it belongs to (`None`: any plan's, as a
    /// journal batch may carry every plan's events).
    Malformed {
        plan_id: Option<String>,
        error: String,
    },
    /// Any other key: it still takes a place in the stream's numbering.
    Other,
}

impl Update {
    /// `key` written with `value` (or deleted, `None`) at `revision`.
    pub fn of(key: &str, value: Option<&[u8]>, revision: i64) -> Self {
        Self {
            revision,
            record: Record::of(key, value),
        }
    }
}

impl From<&Change> for Update {
    fn from(change: &Change) -> Self {
        Self::of(&change.key, change.value.as_deref(), change.revision)
    }
}

impl Record {
    fn of(key: &str, value: Option<&[u8]>) -> Self {
        if key.starts_with(&keys::journal_prefix()) {
            return match value.map(|value| decode::<JournalBatch>(key, value)) {
                None => Self::Journal(None),
                Some(Ok(batch)) => Self::Journal(Some(batch)),
                Some(Err(error)) => Self::Malformed {
                    plan_id: None,
                    error: error.to_string(),
                },
            };
        }
        if let Some(id) = key.strip_prefix(&keys::plans_prefix()) {
            return match value.map(|value| decode::<Plan>(key, value)) {
                None => Self::Plan {
                    id: id.to_owned(),
                    plan: None,
                },
                Some(Ok(plan)) => Self::Plan {
                    id: id.to_owned(),
                    plan: Some(Box::new(plan)),
                },
                Some(Err(error)) => Self::malformed(id, &error),
            };
        }
        let task = key
            .strip_prefix(&keys::all_tasks_prefix())
            .and_then(|rest| rest.split_once('/'))
            .zip(value);
        match task {
            Some(((plan_id, _), value)) => match decode::<ShardTask>(key, value) {
                Ok(task) => Self::Task {
                    plan_id: plan_id.to_owned(),
                    task: Box::new(task),
                },
                Err(error) => Self::malformed(plan_id, &error),
            },
            None => Self::Other,
        }
    }

    fn malformed(plan_id: &str, error: &impl std::fmt::Display) -> Self {
        Self::Malformed {
            plan_id: Some(plan_id.to_owned()),
            error: error.to_string(),
        }
    }
}
